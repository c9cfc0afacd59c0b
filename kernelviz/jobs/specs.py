"""Reading what a user types: filter lists, shards, "all | N | list" choices, the device under torchrun.

Front-ends (the CLI, the explorer) hand these strings over as they are; the parsing and its error
messages live here, once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

import torch

from ..errors import KernelvizError

__all__ = [
    "MAX_FILTERS",
    "format_filters",
    "parse_filter_choice",
    "parse_filters",
    "parse_numbers",
    "parse_shard",
    "runtime_device",
]

#: The most filter indices one list may name: far above any layer's width (VGG-16's widest has 4,096 units),
#: far below what a Python list of them costs (a range such as 0-99999999999 would exhaust memory).
MAX_FILTERS = 1 << 20

_RANGE = re.compile(r"^(\d+)-(\d+)$")
_SHARD = re.compile(r"^(\d+)/(\d+)$")


def parse_filters(values: str | Iterable[str]) -> list[int]:
    """``("0-3", "17", "5,6")`` → ``[0, 1, 2, 3, 17, 5, 6]`` (order kept, duplicates dropped).

    Raises:
        KernelvizError: a negative index, a range that ends before it starts, or anything else that is
            not a number or a range.
    """
    out: list[int] = []
    for value in [values] if isinstance(values, str) else values:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            match = _RANGE.match(part)
            if match:
                lo, hi = int(match[1]), int(match[2])
                if hi < lo:
                    raise KernelvizError(f"bad filter range {part!r}: the end is before the start")
                if hi - lo + 1 > MAX_FILTERS or len(out) + hi - lo + 1 > MAX_FILTERS:
                    raise KernelvizError(
                        f"filter range {part!r} lists {hi - lo + 1:,} filters: at most {MAX_FILTERS:,} can be "
                        "asked for at once (kernelviz layers MODEL shows how many each layer has)"
                    )
                out.extend(range(lo, hi + 1))
            elif part.startswith("--"):
                raise KernelvizError(f"no such option {part!r}; see --help")
            elif part.lstrip("-").isdigit():
                n = int(part)
                if n < 0:
                    raise KernelvizError(f"filter index must be >= 0, got {n}")
                out.append(n)
            else:
                raise KernelvizError(f"cannot read filter {part!r}: use numbers and ranges such as 0-15 17")
    return list(dict.fromkeys(out))


def format_filters(filters: Iterable[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` → ``"0-2,5,7-8"``: the inverse of :func:`parse_filters` (sorted)."""
    runs: list[list[int]] = []
    for n in sorted(set(filters)):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def parse_numbers(value: str | None, what: str) -> tuple[float, ...] | None:
    """``"0.5,0.5,0.5"`` (or ``"0.5"``) → ``(0.5, 0.5, 0.5)``; ``None`` → ``None``.

    Raises:
        KernelvizError: something that is not a comma-separated list of numbers.
    """
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise KernelvizError(
            f"cannot read {what} {value!r}: write numbers separated by commas, e.g. 0.5,0.5,0.5"
        ) from None


def parse_filter_choice(value: str) -> int | list[int] | None:
    """An atlas's ``--filters``: ``"all"`` → ``None``, ``"16"`` → the first 16, ``"0-7,12"`` → those.

    Raises:
        KernelvizError: ``"0"`` (no filters) or an unreadable list.
    """
    value = value.strip()
    if value == "all":
        return None
    if value.isdigit():
        if int(value) == 0:
            raise KernelvizError("--filters 0 asks for no filters: give N >= 1, a list such as 0-7,12, or all")
        return int(value)
    return parse_filters(value)


def parse_shard(value: str | None) -> tuple[int, int] | None:
    """``"3/8"`` → ``(3, 8)``: the 4th of 8 shares; ``None`` → ``None``.

    Raises:
        KernelvizError: not ``i/n`` with ``0 <= i < n``.
    """
    if value is None:
        return None
    match = _SHARD.fullmatch(value.strip())
    if not match:
        raise KernelvizError(f"cannot read shard {value!r}: write i/n, e.g. 0/4")
    i, n = int(match[1]), int(match[2])
    if not 0 <= i < n:
        raise KernelvizError(f"shard {i}/{n} is not valid: use i/n with 0 <= i < n")
    return i, n


def runtime_device(device: str) -> str:
    """The device to load a model on: under ``torchrun`` with CUDA, ``"auto"`` means this rank's GPU
    (``cuda:LOCAL_RANK``), so each process uses its own card; otherwise ``device`` unchanged."""
    if device == "auto" and "LOCAL_RANK" in os.environ and torch.cuda.is_available():
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return device
