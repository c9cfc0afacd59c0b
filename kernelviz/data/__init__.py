"""Image collections, the room every pass over a user's images goes through.

``collection`` (what a collection is: a folder, a list file, ``ImageFolder`` classes with the names to show for them),
``stream`` (the one data loop: batches planned before they are shared out, decoded in DataLoader workers, unreadable
files skipped and counted), ``imagenet`` (ImageNet-1k's classes and their WordNet groups, offline, from
``imagenet.json``), ``labels`` (what the images are labelled with: classes, WordNet groups, a CSV label file). Scans,
dataset examples, concepts and the explorer's picker read images through here; the sharing rule is
:class:`~kernelviz.core.distributed.Shard`'s.
"""
