"""Image collections, the room every pass over a user's images goes through.

``collection`` (what a collection is: a folder, a list file, ``ImageFolder`` classes), ``stream`` (the one data
loop: batches planned before they are shared out, decoded in DataLoader workers, unreadable files skipped and
counted). Scans, dataset examples, concepts and the explorer's picker read images through here; the sharing rule
is :class:`~kernelviz.core.distributed.Shard`'s.
"""
