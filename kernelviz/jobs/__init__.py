"""What a front-end asks for, done in one call: parse the user's strings (``specs``), check and name the
outputs (``outputs``), compute and write files with their records: filter pictures, sheets and dataset examples
(``optimize``), the layer table, feature maps, heatmaps and kernels (``inspect``), pictures from a photo
(``photo``), a layer's concepts (``concepts``); and the single figures a front-end shows instead of writing
(``inspect.heatmap_figure``, ``photo.photo_figure``...).

The CLI, notebooks and the explorer call these; none of them repeats their logic.
"""
