"""kernelviz: see what the filters of a trained CNN respond to.

Quick use::

    import kernelviz
    model = kernelviz.load_model("vgg16")             # pretrained, with its preprocessing
    result = kernelviz.visualize(model, "conv3_2:17")  # gradient ascent on the pixels
    result.save("vgg16_conv3_2_0017.png")

The package is layered, in this order (each layer imports only those above it; ``tests/test_package.py``):

* ``core``: models and weights, layer names and the layer table, activation capture, the model guard, the
  sharing rule of processes, the one progress protocol;
* ``files``: atomic writes, image input, JSON records, HTML pages from templates that escape every value;
* ``data``: image collections (folders, file lists, ``ImageFolder`` classes) and the one data loop over them;
* ``optvis``: the optimizer (objectives, parameterizations, transforms, settings, batches, pictures from a photo);
* ``explain``: one image through the network: feature maps, heatmaps (one registry of methods), kernels, the wiring
  of a unit to its neighbours, as tensors;
* ``units``: what each unit is, read over a collection: dataset scans and examples, a layer's concepts, the path
  check of a picture;
* ``plot``: every matplotlib figure;
* ``sets``: the atlas folder, the atlas and its static site, variants, concepts folders;
* ``jobs``: what a front-end asks for, computed and written in one call;
* ``serve``: the live explorer (pages, routes, one worker thread);
* ``cli``: the ``kernelviz`` command, a thin shell over ``jobs`` and ``sets``.
"""

from importlib.metadata import PackageNotFoundError, version

from .core.capture import activations, capture
from .core.guard import guarded
from .core.layers import LayerInfo, count_depth, list_layers
from .core.models import ModelMeta, load_checkpoint, load_model, model_meta, set_model_meta
from .core.names import layer_names, resolve_layer
from .data.collection import Collection, collection
from .data.labels import LabelSet, collection_labels
from .errors import KernelvizError, KernelvizTypeError, NonFiniteObjectiveError, NotFoundError
from .explain.faithfulness import faithfulness, sanity_check
from .explain.heatmaps import METHODS, attribute, heatmap, predict
from .explain.kernels import kernel_weights
from .explain.maps import feature_maps
from .files.images import load_image
from .optvis import objectives, params, transforms
from .optvis.batch import GridResult, layer_grid
from .optvis.objectives import Objective, channel, class_logit, class_logprob, direction, diversity, neuron
from .optvis.photo import accentuate, caricature_of, dream, photo_activation
from .optvis.render import VisResult, visualize
from .optvis.settings import DEFAULTS, OptimSettings
from .sets.atlas import atlas
from .units.ablation import Ablation, Outcome, ablate, ablated_logits, scaling_curve
from .units.concepts import Concepts, concept_maps, find_concepts
from .units.examples import find_examples
from .units.importance import Importance, unit_importance
from .units.scan import UnitScan, load_scan, merge_scans, scan_units
from .units.statistics import Label, LayerUnits, UnitStats, unit_statistics
from .units.trust import Calibration, PathCheck, Trust, collection_check, path_similarity

# Drawing functions import matplotlib on first use, not with the package.
_PLOTS = ("overlay", "plot_concepts", "plot_examples", "plot_feature_maps", "plot_grid", "plot_heatmap", "plot_kernels")


def __getattr__(name: str) -> object:
    if name in _PLOTS:
        from . import plot

        return getattr(plot, name)
    raise AttributeError(f"module 'kernelviz' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


try:
    __version__ = version("kernelviz")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "Ablation",
    "Calibration",
    "Collection",
    "Concepts",
    "DEFAULTS",
    "GridResult",
    "Importance",
    "KernelvizError",
    "KernelvizTypeError",
    "Label",
    "LabelSet",
    "LayerInfo",
    "LayerUnits",
    "METHODS",
    "ModelMeta",
    "NonFiniteObjectiveError",
    "NotFoundError",
    "Objective",
    "OptimSettings",
    "Outcome",
    "PathCheck",
    "Trust",
    "UnitScan",
    "UnitStats",
    "VisResult",
    "__version__",
    "ablate",
    "ablated_logits",
    "accentuate",
    "activations",
    "atlas",
    "attribute",
    "capture",
    "caricature_of",
    "channel",
    "class_logit",
    "class_logprob",
    "collection",
    "collection_check",
    "collection_labels",
    "concept_maps",
    "count_depth",
    "direction",
    "diversity",
    "dream",
    "faithfulness",
    "feature_maps",
    "find_concepts",
    "find_examples",
    "guarded",
    "heatmap",
    "kernel_weights",
    "layer_grid",
    "layer_names",
    "list_layers",
    "load_checkpoint",
    "load_image",
    "load_model",
    "load_scan",
    "merge_scans",
    "model_meta",
    "neuron",
    "objectives",
    "params",
    "path_similarity",
    "photo_activation",
    "predict",
    "resolve_layer",
    "sanity_check",
    "scaling_curve",
    "scan_units",
    "set_model_meta",
    "transforms",
    "unit_importance",
    "unit_statistics",
    "visualize",
    *_PLOTS,
]
