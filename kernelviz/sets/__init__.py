"""Figure sets on disk: the resumable, shardable atlas of a whole model and its static site."""
