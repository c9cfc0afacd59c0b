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

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from os import PathLike
from typing import Any

import torch
from torch import nn

from ..errors import KernelvizError, KernelvizTypeError

__all__ = [
    "available_memory",
    "check_allocation",
    "check_finite",
    "check_images",
    "check_model",
    "guarded",
    "no_inplace",
]


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


def check_model(model: object, what: str = "model") -> nn.Module:
    """``model`` itself when it is a ``torch.nn.Module``; else a clear error naming what was given.

    Raises:
        KernelvizTypeError: anything else (a name, a path, ``None``, a state dict).
    """
    if isinstance(model, nn.Module):
        return model
    hint = " (load it first: kernelviz.load_model(name))" if isinstance(model, str | PathLike) else ""
    if isinstance(model, dict):
        hint = " (a state dict: build the model and load it with kernelviz.load_checkpoint)"
    raise KernelvizTypeError(f"{what} must be a torch.nn.Module, got {type(model).__name__}{hint}")


def check_images(images: object, what: str = "images", unit: bool = True) -> torch.Tensor:
    """``images`` as a ``(B, C, H, W)`` float batch (a ``(C, H, W)`` image gets a batch of one), checked.

    Args:
        images: a ``(B, 3, H, W)`` or ``(3, H, W)`` tensor.
        what: its name in messages (``"images"``, ``"init"``).
        unit: whether values must lie in ``[0, 1]`` (RGB images; ``False`` for inputs already normalized).

    Raises:
        KernelvizTypeError: not a tensor (a path, a PIL image, a NumPy array).
        KernelvizError: not 3 or 4 dimensions, NaN or infinite values, or (``unit``) values outside ``[0, 1]``,
            such as an image in 0-255.
    """
    if not isinstance(images, torch.Tensor):
        hint = " (read a file with kernelviz.load_image(path))" if isinstance(images, str | PathLike) else ""
        raise KernelvizTypeError(f"{what} must be a torch.Tensor (B, 3, H, W), got {type(images).__name__}{hint}")
    if images.dim() not in (3, 4):
        raise KernelvizError(f"{what} must be (3, H, W) or (B, 3, H, W), got shape {tuple(images.shape)}")
    batch = images if images.dim() == 4 else images.unsqueeze(0)
    if batch.dtype == torch.uint8:
        raise KernelvizError(f"{what} hold 8-bit integers (0-255): pass images.float() / 255, in [0, 1]")
    if not batch.is_floating_point():
        raise KernelvizError(f"{what} must hold floats in [0, 1], got {batch.dtype}")
    check_finite(batch, what)
    if unit and batch.numel():
        low, high = float(batch.min()), float(batch.max())
        if low < -1e-3 or high > 1 + 1e-3:
            hint = ": divide by 255" if high > 1.5 and low >= 0 else ""
            raise KernelvizError(f"{what} must be RGB in [0, 1], but span {low:.4g} to {high:.4g}{hint}")
    return batch


def check_finite(values: torch.Tensor, what: str, why: str = "") -> torch.Tensor:
    """``values`` unchanged when every element is finite; else a one-line error counting the bad ones."""
    bad = ~torch.isfinite(values.detach())
    if bool(bad.any()):
        count = int(bad.sum())
        raise KernelvizError(f"{what} hold {count} NaN or infinite value(s) of {values.numel()}{why}")
    return values


def available_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on ``device`` (free GPU memory; the system's available memory for the
    CPU), or ``None`` when it cannot be told."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_allocation(nbytes: int, what: str, device: torch.device, advice: str) -> None:
    """Refuse, before allocating, work that needs at least ``nbytes`` when ``device`` has less available.

    Raises:
        KernelvizError: naming ``what``, the memory it needs, what is available and ``advice``.
    """
    free = available_memory(device)
    if free is not None and nbytes > free:
        raise KernelvizError(
            f"{what} needs at least {nbytes / 2**30:.1f} GiB, but {device.type} has {free / 2**30:.1f} GiB "
            f"available: {advice}"
        )


@contextmanager
def guarded(model: nn.Module, keep_inplace: bool = False) -> Iterator[nn.Module]:
    """Context manager: eval mode, frozen weights, no in-place activations; restored on exit.

    Args:
        keep_inplace: leave in-place activations on (for hooks that read each output as soon as it is
            computed, before an in-place activation can change it).
    """
    check_model(model)
    modules = list(model.modules())
    training = [m.training for m in modules]
    params = list(model.parameters())
    if any(p.is_meta for p in params):
        raise KernelvizError(
            "the model's weights are on the meta device (shapes only, no values): load real weights "
            "(load_state_dict(..., assign=True), or weights=PATH; --weights PATH) before visualizing"
        )
    requires_grad = [p.requires_grad for p in params]
    try:
        with contextlib.nullcontext(model) if keep_inplace else no_inplace(model):
            model.eval()
            for p in params:
                p.requires_grad_(False)
            try:
                yield model
            except MemoryError as err:
                raise KernelvizError(_out_of_memory(err)) from err
            except KernelvizError:
                raise
            # torchvision checks input sizes with asserts; a user's model may raise anything of these
            except (RuntimeError, AssertionError, ValueError, TypeError, IndexError) as err:
                if not _raised_in_a_module(err):  # a caller's callback, or kernelviz itself: not the model
                    raise
                if isinstance(err, RuntimeError) and _is_out_of_memory(err):
                    raise KernelvizError(_out_of_memory(err)) from err
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


def _is_out_of_memory(err: BaseException) -> bool:
    text = str(err)
    return isinstance(err, torch.OutOfMemoryError) or "can't allocate memory" in text or "out of memory" in text


def _out_of_memory(err: BaseException) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (
        f"not enough memory for this run ({first}): use a smaller image size or batch size (size=, batch_size=; "
        "--size, --batch-size on the command line), or fewer images at once"
    )


def _cannot_run(err: BaseException) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (
        f"the model could not run on this input ({first}). Common causes: an image smaller "
        "than the network can take (give a larger image size, e.g. the size it was trained at: size=, --size), a "
        "model that does not take 3-channel RGB images, or an input on another device than the weights."
    )
