"""Every matplotlib function: they take tensors, return a ``Figure`` and never show it.

``grid`` (contact sheets), ``maps`` (feature maps), ``heatmaps`` (overlays), ``kernels`` (weights),
``examples`` (dataset examples beside a synthesized image), ``concepts`` (a layer's concepts: picture and patches),
``colors`` (the color maps and the symmetric scale of signed values).
"""

from .concepts import plot_concepts
from .examples import plot_examples
from .grid import plot_grid
from .heatmaps import overlay, plot_heatmap
from .kernels import plot_kernels
from .maps import plot_feature_maps

__all__ = [
    "overlay",
    "plot_concepts",
    "plot_examples",
    "plot_feature_maps",
    "plot_grid",
    "plot_heatmap",
    "plot_kernels",
]
