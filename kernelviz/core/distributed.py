"""``torch.distributed`` as kernelviz uses it: the rank and world size under ``torchrun``, a barrier, every
rank's result gathered on every rank, and the one rule that shares work out among processes (:class:`Shard`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from ..errors import KernelvizError

__all__ = ["Shard", "barrier", "distributed_shard", "gather"]

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's share of a job cut into pieces (batches of images, batches of filters).

    The one sharing rule of the package: piece ``i`` belongs to process ``i % world``. The pieces are cut before
    they are shared out, so 1 or N processes compute the same pieces the same way, and their results are equal.

    Attributes:
        rank: this process's share, ``0 <= rank < world``.
        world: how many shares.
        distributed: whether the share comes from ``torchrun`` (the processes then meet at barriers and gather
            their results with ``torch.distributed``) rather than from an explicit ``shard=(i, n)`` (job arrays:
            each process writes its own part, the last to finish merges).
    """

    rank: int = 0
    world: int = 1
    distributed: bool = False

    @classmethod
    def of(cls, shard: tuple[int, int] | None) -> Shard:
        """The share asked for: ``shard=(i, n)`` when given, else this rank's under ``torchrun``, else everything.

        Raises:
            KernelvizError: ``i`` is not in ``0 .. n - 1``.
        """
        if shard is None:
            found = distributed_shard()
            return cls() if found is None else cls(found[0], found[1], True)
        rank, world = shard
        if not 0 <= rank < world:
            raise KernelvizError(f"shard {rank}/{world} is not valid: use i/n with 0 <= i < n")
        return cls(rank, world)

    @property
    def pair(self) -> tuple[int, int]:
        """``(rank, world)``."""
        return self.rank, self.world

    def owns(self, piece: int) -> bool:
        """Whether piece number ``piece`` is this process's."""
        return piece % self.world == self.rank

    def mine(self, pieces: Sequence[T]) -> list[T]:
        """The pieces of ``pieces`` that are this process's, in order."""
        return [p for i, p in enumerate(pieces) if self.owns(i)]


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
