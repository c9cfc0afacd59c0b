"""What a trained network does with one image, as tensors (no drawing here).

``maps`` (a layer's channels for an image), ``methods`` (every heatmap method as one row), ``heatmaps``
(``attribute``: every method behind one signature), ``cams`` (the CAM family), ``rollout`` (a vision transformer's
attention), ``guided`` (guided backprop and deconvolution on every rectifier), ``deeplift`` (DeepLift's Rescale
rule), ``baselines`` (reference images), ``faithfulness`` (deletion, insertion, ROAD, sanity), ``kernels`` (the
learned weights), ``wiring`` (which units feed a unit and which it feeds, by the weights).

Reading units over a whole collection of images is :mod:`kernelviz.units`.
"""
