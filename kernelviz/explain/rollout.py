"""Heatmaps read from a vision transformer's attention: attention rollout and its gradient-weighted form.

* ``rollout`` (Abnar and Zuidema, 2020): each block's attention, averaged over heads, with the residual connection
  added as the identity (``0.5 A + 0.5 I``, rows renormalized), multiplied from the first block to the last; the
  class token's row (or, for a model that averages its patch tokens, the mean of the patch tokens' rows) says how
  much of each patch reached the output. No target: the same map for every class.
* ``attention_gradient`` (Chefer, Gur and Wolf, ICCV 2021, "Generic attention-model explainability"): each block's
  attention weighted by its gradient for the target, ``mean_heads(relu(dA * A))``, accumulated as
  ``R <- R + A_bar R`` from ``R = I``; class-specific.

Chosen over relevance propagation (Chefer et al., CVPR 2021) because both need only the attention probabilities
(and their gradient), which every global self-attention has, whereas relevance propagation needs a rule per module
(LayerNorm, GELU, softmax, the matrix products) that a model from timm or torchvision does not carry.

The probabilities are read from timm's attention modules (their fused kernel switched off inside the block, so the
probabilities exist as a tensor; switched back on exit) and from ``nn.MultiheadAttention`` (asked for per-head
weights). Window attention (Swin) attends within windows only: refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..core.layout import layout_of
from ..errors import KernelvizError

__all__ = ["ROLLOUT_METHODS", "attention_probabilities", "reads_attention", "rollout"]

ROLLOUT_METHODS = ("rollout", "attention_gradient")


def _global_attention(model: nn.Module) -> list[nn.Module]:
    """The model's self-attention modules over all tokens, in registration order."""
    found = []
    windowed = any(type(m).__name__.endswith("WindowAttention") for m in model.modules())
    for module in model.modules():
        if windowed:
            break
        if isinstance(module, nn.MultiheadAttention) or (
            hasattr(module, "fused_attn") and isinstance(getattr(module, "attn_drop", None), nn.Module)
        ):
            found.append(module)
    if not found:
        raise KernelvizError(
            "attention rollout needs self-attention over all patch tokens (ViT, DeiT, BEiT, EVA): "
            + (
                "this model attends within windows (Swin); use a CAM (gradcam)"
                if windowed
                else "this model has no attention module kernelviz can read (timm's or nn.MultiheadAttention)"
            )
        )
    return found


def reads_attention(model: nn.Module) -> bool:
    """Whether the model has self-attention over all patch tokens that :data:`ROLLOUT_METHODS` can read."""
    try:
        _global_attention(model)
    except KernelvizError:
        return False
    return True


@contextlib.contextmanager
def attention_probabilities(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Inside the block, each global self-attention of ``model`` appends its probabilities ``(B, heads, N, N)``
    (``(B * heads, N, N)`` from ``nn.MultiheadAttention``) at each call, in the order they run; the score's gradient
    flows through them.

    Raises:
        KernelvizError: the model has no such attention (Swin's windows, or none at all).
    """
    seen: list[torch.Tensor] = []
    handles = []
    fused: list[tuple[nn.Module, bool]] = []
    try:
        for module in _global_attention(model):
            if isinstance(module, nn.MultiheadAttention):

                def ask(m: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
                    return args, {**kwargs, "need_weights": True, "average_attn_weights": False}

                def take(m: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
                    weights = output[1] if isinstance(output, tuple) else None
                    if isinstance(weights, torch.Tensor):
                        # the returned weights are a view made after they were used, (B, heads, N, N) of the
                        # (B * heads, N, N) the output was computed from: that one has a gradient
                        seen.append(weights._base if weights._base is not None else weights)

                handles.append(module.register_forward_pre_hook(ask, with_kwargs=True))
                handles.append(module.register_forward_hook(take, with_kwargs=True))
            else:
                fused.append((module, bool(module.fused_attn)))
                setattr(module, "fused_attn", False)  # noqa: B010 - timm's flag, not a declared attribute
                drop = module.get_submodule("attn_drop")
                handles.append(drop.register_forward_hook(lambda m, i, o: seen.append(o)))
        yield seen
    finally:
        for handle in handles:
            handle.remove()
        for module, was in fused:
            setattr(module, "fused_attn", was)  # noqa: B010


def _readout(model: nn.Module) -> str:
    """``"token"`` when the head reads the class token, ``"avg"`` when it averages the patch tokens."""
    pool = getattr(model, "global_pool", None)
    return "avg" if isinstance(pool, str) and pool.startswith("avg") else "token"


def rollout(
    model: nn.Module,
    run: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    prefix: int,
    gradient: bool = False,
) -> torch.Tensor:
    """Attention rollout (``gradient=False``) or its gradient-weighted form of each image, upsampled (bilinear).

    Args:
        model: the transformer (its attention modules are read).
        run: ``(B, 3, H, W) -> (B,)``, the target score of each image (the forward pass happens here).
        x: ``(B, 3, H, W)`` images in ``[0, 1]``.
        prefix: the tokens before the patch tokens (:func:`~kernelviz.core.layout.prefix_tokens`).
        gradient: weight each attention by its gradient for the target (Chefer et al., 2021).

    Returns:
        ``(B, H, W)``, non-negative.
    """
    with attention_probabilities(model) as maps:
        if gradient:
            y = run(x)
        else:
            with torch.no_grad():
                y = run(x)
    if not maps:
        raise KernelvizError("no attention ran in the forward pass: nothing to roll out")
    b, n = x.shape[0], maps[0].shape[-1]
    maps = [a for a in maps if a.shape[-2:] == (n, n)]  # self-attention only (not an attention-pooling head's)
    grads = torch.autograd.grad(y.sum(), maps) if gradient else [None] * len(maps)
    eye = torch.eye(n, device=maps[0].device, dtype=torch.float32).expand(b, n, n)
    relevance = eye.clone()
    for a, g in zip(maps, grads, strict=True):
        a = a.detach().float().view(b, -1, n, n)  # (B, heads, N, N)
        if g is None:
            mixed = 0.5 * a.mean(1) + 0.5 * eye
            relevance = (mixed / mixed.sum(-1, keepdim=True)) @ relevance
        else:
            weighted = (g.detach().float().view(b, -1, n, n) * a).clamp(min=0).mean(1)  # (B, N, N)
            relevance = relevance + weighted @ relevance
    if _readout(model) == "avg" or prefix == 0:
        row = relevance[:, prefix:, prefix:].mean(1)  # (B, patches)
    else:
        row = relevance[:, 0, prefix:]
    layout = layout_of((b, n, 1), (x.shape[-2], x.shape[-1]), prefix)
    if layout.kind != "tokens" or layout.prefix != prefix:
        raise KernelvizError(f"the attention's {n} tokens, less {prefix} prefix tokens, make no patch grid")
    assert layout.grid is not None
    small = row.view(b, 1, *layout.grid)
    return F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
