"""Borrow a user's model without changing it.

:func:`guarded` puts a model in the state feature visualization needs and puts
everything back on exit, also when the block raises:

* ``eval()`` mode, so dropout is off and batch norm uses (and never updates)
  its running statistics;
* ``requires_grad=False`` on every parameter, so no weight gradient is ever
  computed (the optimizer only needs gradients with respect to the pixels);
* ``inplace=False`` on in-place activations (torchvision's VGG uses
  ``ReLU(inplace=True)``), so a captured pre-activation tensor is not
  overwritten by the activation that follows it (:func:`no_inplace`).

It also turns a model that cannot run on the input it is given (an image too small for its
pooling, a channel count it does not take) into a one-line :class:`~kernelviz.errors.KernelvizError`
that says what to try, the original error chained; and it refuses weights that are not materialized
(the ``meta`` device).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from ..errors import KernelvizError

__all__ = ["guarded", "no_inplace"]


@contextmanager
def no_inplace(model: nn.Module) -> Iterator[nn.Module]:
    """Context manager: every in-place activation of ``model`` computes out of place; restored on exit."""
    switched: list[Any] = [m for m in model.modules() if getattr(m, "inplace", None) is True]
    try:
        for m in switched:
            m.inplace = False
        yield model
    finally:
        for m in switched:
            m.inplace = True


@contextmanager
def guarded(model: nn.Module) -> Iterator[nn.Module]:
    """Context manager: eval mode, frozen weights, no in-place activations; restored on exit."""
    modules = list(model.modules())
    training = [m.training for m in modules]
    params = list(model.parameters())
    if any(p.is_meta for p in params):
        raise KernelvizError(
            "the model's weights are on the meta device (shapes only, no values): load real weights "
            "(--weights PATH, or load_state_dict(..., assign=True)) before visualizing"
        )
    requires_grad = [p.requires_grad for p in params]
    try:
        with no_inplace(model):
            model.eval()
            for p in params:
                p.requires_grad_(False)
            try:
                yield model
            except (RuntimeError, AssertionError) as err:  # torchvision checks input sizes with asserts
                if not _raised_in_a_module(err):  # a caller's callback, or kernelviz itself: not the model
                    raise
                raise KernelvizError(_cannot_run(err)) from err
    finally:
        for m, flag in zip(modules, training, strict=True):
            m.training = flag
        for p, flag in zip(params, requires_grad, strict=True):
            p.requires_grad_(flag)


def _raised_in_a_module(err: BaseException) -> bool:
    """Whether ``err`` came out of a module's forward (a frame of ``nn.Module.__call__`` on its way)."""
    tb = err.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name in ("_call_impl", "_wrapped_call_impl") and code.co_filename.endswith("module.py"):
            return True
        tb = tb.tb_next
    return False


def _cannot_run(err: BaseException) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (
        f"the model could not run on this input ({first}). Common causes: an image smaller than the network "
        "can take (give a larger --size, e.g. the size it was trained at), a model that does not take "
        "3-channel RGB images, or an input on another device than the weights."
    )
