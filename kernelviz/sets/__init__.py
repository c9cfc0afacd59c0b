"""Figure sets on disk: the atlas folder's layout (``folder``), the resumable, shardable atlas of a whole model
(``atlas``), its static site (``site``), a dataset scan written into it (``examples``), a filter's variants
(``variants``) and a concepts folder with the one reader of its ``concepts.json`` (``concepts``)."""
