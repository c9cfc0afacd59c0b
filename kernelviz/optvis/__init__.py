"""Feature visualization: the optimizer and its three swappable parts (Lucid's ``optvis``).

``objectives`` (what to maximize), ``params`` (how the image is represented), ``transforms`` (random
views each step), ``relu`` (the redirected gradient for dead units), ``settings`` (one settings object
for a run), ``render`` (the loop: :func:`~kernelviz.optvis.render.visualize`), ``batch`` (many filters
of a layer, several per optimization), ``photo`` (pictures seeded by a photo: caricature, DeepDream, accentuation),
``perf`` (process-level speed settings).
"""
