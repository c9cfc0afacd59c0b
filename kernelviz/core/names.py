"""Layer names: VGG-style aliases and module paths, and the one function that resolves them.

Each entry point resolves the name it is given (:func:`resolve_layer`; a typo fails there, with close names),
and a call that passes a name on resolves it again: cheap (a walk of the module tree), so a layer is carried
down as the user's name, never as a module.

Every layer can be named by its module path (``"features.12"``), as
``model.named_modules()`` spells it. VGG models (any torchvision VGG variant,
or any network built the same way: a ``features`` ``nn.Sequential`` of
conv/bn/relu/pool and a ``classifier`` of linear/relu/dropout) also get the
classic names: ``conv3_2`` is the output of the second convolution of the
third block **before** its ReLU, ``relu3_2`` the same after it, ``bn3_2`` the
batch norm of ``_bn`` variants, ``pool3`` the max pool that ends block 3, and
``fc6``, ``relu6``, ``fc7``, ``relu7``, ``fc8`` the classifier. ``"logits"`` is
the model's own output.
"""

from __future__ import annotations

from torch import nn

from ..errors import KernelvizError, NotFoundError, close_matches
from .guard import check_model

__all__ = ["INPUT_SUFFIX", "LOGITS", "get_module", "layer_names", "resolve_layer", "split_call", "split_input"]

#: Name of the model's own output (the class logits of a classifier).
LOGITS = "logits"
#: A layer name ending in this means the layer's input rather than its output (``"avgpool:input"``; for an activation,
#: its pre-activation: ``"_swish#2:input"``).
INPUT_SUFFIX = ":input"


def split_input(name: str) -> tuple[str, bool]:
    """``"_swish#2:input"`` → ``("_swish#2", True)``: the layer, and whether its input is meant."""
    return (name.removesuffix(INPUT_SUFFIX), True) if name.endswith(INPUT_SUFFIX) else (name, False)


def _vgg_aliases(model: nn.Module) -> dict[str, str]:
    """Map VGG-style names to module paths, or return ``{}`` for a non-VGG layout."""
    features = getattr(model, "features", None)
    classifier = getattr(model, "classifier", None)
    if not isinstance(features, nn.Sequential) or not any(isinstance(m, nn.Conv2d) for m in features):
        return {}
    allowed = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d)
    if not all(isinstance(m, allowed) for m in features):
        return {}
    aliases: dict[str, str] = {}
    block, k = 1, 0
    for idx, module in features.named_children():
        path = f"features.{idx}"
        if isinstance(module, nn.Conv2d):
            k += 1
            aliases[f"conv{block}_{k}"] = path
        elif isinstance(module, nn.BatchNorm2d):
            aliases[f"bn{block}_{k}"] = path
        elif isinstance(module, nn.ReLU):
            aliases[f"relu{block}_{k}"] = path
        else:  # MaxPool2d ends the block
            aliases[f"pool{block}"] = path
            block, k = block + 1, 0
    if isinstance(classifier, nn.Sequential):
        fc = 5  # VGG's fully connected layers are numbered fc6, fc7, fc8
        for idx, module in classifier.named_children():
            path = f"classifier.{idx}"
            if isinstance(module, nn.Linear):
                fc += 1
                aliases[f"fc{fc}"] = path
            elif isinstance(module, nn.ReLU):
                aliases[f"relu{fc}"] = path
            elif isinstance(module, nn.Dropout):
                aliases[f"drop{fc}"] = path
    return aliases


def layer_names(model: nn.Module) -> dict[str, str]:
    """All names a layer of ``model`` can be called by, mapped to module paths.

    Returns:
        ``{name: module_path}``: the VGG aliases (when the model has a VGG
        layout), then every named submodule's own path, then ``"logits"``
        (the model output, path ``""``).
    """
    names = _vgg_aliases(check_model(model))
    for path, _ in model.named_modules():
        if path:
            names.setdefault(path, path)
    names[LOGITS] = ""
    return names


def split_call(name: str) -> tuple[str, int | None]:
    """``"layer1.0.relu#2"`` → ``("layer1.0.relu", 2)``: the second run of a module that runs several times
    per forward pass (ResNet uses one ``relu`` module at two or three places of a block); ``"conv3_2"`` →
    ``("conv3_2", None)``.

    Raises:
        KernelvizError: a ``#`` not followed by a run number >= 1.
    """
    base, mark, call = name.rpartition("#")
    if not mark:
        return name, None
    if not call.isdigit() or int(call) < 1:
        raise KernelvizError(f"cannot read layer {name!r}: write NAME#N for the N-th run of a module, N >= 1")
    return base, int(call)


def resolve_layer(model: nn.Module, name: str) -> str:
    """Turn a layer name or module path into a module path (a run number ``#N`` is allowed and dropped).

    Raises:
        KernelvizError: the name is unknown; the message suggests close names
            and points to ``kernelviz layers``.
    """
    name, _ = split_call(split_input(name)[0])
    names = layer_names(model)
    if name in names:
        return names[name]
    hint = close_matches(name, names)
    raise NotFoundError(
        f"unknown layer {name!r}.{hint} Run `kernelviz layers MODEL` "
        "(or kernelviz.list_layers(model)) to see every layer name."
    )


def get_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at ``path`` (``""`` is the model itself)."""
    return model.get_submodule(path) if path else model
