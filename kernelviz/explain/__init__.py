"""What a trained network does with real images, as tensors (no drawing here).

``maps`` (a layer's channels for an image), ``heatmaps`` (which input regions drive a class or a filter, with
captum; every method one row of ``methods``), ``kernels`` (the learned weights), ``examples`` (the natural
images that excite a filter most, cropped at its receptive field).
"""
