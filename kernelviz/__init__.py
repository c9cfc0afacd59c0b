"""kernelviz: see what the filters of a trained CNN respond to.

Quick use::

    import kernelviz
    model = kernelviz.load_model("vgg16")             # pretrained, with its preprocessing
    result = kernelviz.visualize(model, "conv3_2:17")  # gradient ascent on the pixels
    result.save("vgg16_conv3_2_0017.png")
"""

from importlib.metadata import PackageNotFoundError, version

from . import objectives, params, transforms
from .capture import activations, capture
from .errors import KernelvizError
from .guard import guarded
from .io import load_image
from .layers import LayerInfo, count_depth, layer_names, list_layers, resolve_layer
from .models import ModelMeta, load_checkpoint, load_model, model_meta, set_model_meta
from .objectives import Objective, channel, class_logit, class_logprob, direction, diversity, neuron
from .render import NonFiniteObjectiveError, VisResult, visualize

# Exporters and figure sets import matplotlib (and captum) on first use, not with the package.
_LAZY = {
    "feature_maps": "maps",
    "plot_feature_maps": "maps",
    "attribute": "heatmaps",
    "heatmap": "heatmaps",
    "plot_heatmap": "heatmaps",
    "overlay": "heatmaps",
    "predict": "heatmaps",
    "kernel_weights": "kernels",
    "plot_kernels": "kernels",
    "layer_grid": "figures",
    "plot_grid": "figures",
    "find_examples": "examples",
    "plot_examples": "examples",
}
_SUBMODULES = {"maps", "heatmaps", "kernels", "figures", "atlas", "examples", "zoo", "perf", "cli"}


def __getattr__(name: str) -> object:
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'kernelviz' has no attribute {name!r}")


try:
    __version__ = version("kernelviz")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "KernelvizError",
    "LayerInfo",
    "ModelMeta",
    "NonFiniteObjectiveError",
    "Objective",
    "VisResult",
    "__version__",
    "activations",
    "capture",
    "channel",
    "class_logit",
    "class_logprob",
    "count_depth",
    "direction",
    "diversity",
    "guarded",
    "layer_names",
    "list_layers",
    "load_checkpoint",
    "load_image",
    "load_model",
    "model_meta",
    "neuron",
    "objectives",
    "params",
    "resolve_layer",
    "set_model_meta",
    "transforms",
    "visualize",
    *_LAZY,
]
