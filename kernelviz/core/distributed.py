"""``torch.distributed`` as kernelviz uses it: the rank and world size under ``torchrun``, a barrier, and
every rank's result gathered on every rank."""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["barrier", "distributed_shard", "gather"]


def distributed_shard() -> tuple[int, int] | None:
    """``(rank, world_size)`` when running under ``torchrun`` (initializing the process group), else ``None``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or "RANK" not in os.environ:
        return None
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def barrier() -> None:
    """Wait until every rank of the process group gets here."""
    import torch.distributed as dist

    dist.barrier()


def gather(value: Any) -> list[Any]:
    """Every rank's ``value`` (picklable: tensors are moved to the CPU first), in rank order, on every rank."""
    import torch.distributed as dist

    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values
