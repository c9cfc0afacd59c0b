"""What each unit is, read over a collection of images (above :mod:`kernelviz.data`, the collection room).

``scan`` (one pass over a collection: every unit's top, mean and bottom images and class means; shards merged),
``examples`` (one filter's dataset examples, cropped at the receptive field), ``concepts`` (a layer's concepts:
NMF directions, their codes, importance and patches), ``trust`` (is a unit's picture processed like its natural
examples: the path check).
"""
