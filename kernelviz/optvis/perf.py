"""Process-level speed settings.

:func:`keep_heap` stops glibc's allocator from handing large buffers back to
the operating system after every step. Gradient ascent allocates and frees
the same activation buffers hundreds of times; by default glibc serves
buffers over 128 KiB-32 MiB with ``mmap`` and unmaps them on free, so each
step pays page faults to map and zero them again. Measured on 2 AVX2 cores,
VGG-16 conv3_2 at 224 px: 9% less time per step for one image and 33% less
per image-step for a batch of 8 (minor page faults /9), peak memory about the same.

It changes the whole process (the heap keeps its high-water mark), so
:func:`kernelviz.visualize` applies it once unless the environment variable
``KERNELVIZ_KEEP_HEAP=0`` is set. It does nothing off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["keep_heap"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_applied: bool | None = None


def keep_heap() -> bool:
    """Serve every allocation from the heap and never trim it (glibc ``mallopt``); idempotent.

    Returns:
        Whether the setting is in effect.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("KERNELVIZ_KEEP_HEAP", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl without mallopt)
        return False
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**30))
    return _applied
