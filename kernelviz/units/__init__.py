"""What each unit is, read over a collection of images (above :mod:`kernelviz.data`, the collection room).

``scan`` (one pass over a collection: every unit's top, mean and bottom images and class means; shards merged),
``scores`` (every unit's score on every image of a scan, memory-mapped beside its checkpoint), ``statistics`` (what each
unit is: frequency, mean, max, dead or dense, histogram, quantile images, labels with their AUC), ``ablation`` (does a
unit matter: switched off, held at its mean or scaled over a collection), ``importance`` (what each unit matters for:
every unit's first-order share of each class's probability, in one pass), ``examples`` (one filter's dataset
examples, cropped at the receptive field), ``concepts`` (a layer's concepts: NMF directions, their codes, importance
and patches), ``trust`` (is a unit's picture processed like its natural examples: the path check, calibrated).
"""
