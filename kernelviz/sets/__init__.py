"""Figure sets on disk: the atlas folder's layout (``folder``), the resumable, shardable atlas of a whole model
(``atlas``) and its static site (``site``)."""
