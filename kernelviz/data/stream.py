"""Reading a collection's images in batches: the one data loop of the package.

The collection is cut into batches first (:func:`plan_batches`); a process reads the batches it owns
(:class:`~kernelviz.core.distributed.Shard`), decoded in DataLoader workers at the model's input side
(:func:`stream`). Files that cannot be read are skipped and reported with the batch, never fatal. Scans, concepts
and every pass over a collection go through here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..errors import KernelvizError
from ..files.images import load_image
from .collection import Collection

__all__ = ["Batch", "Reading", "default_batch_size", "default_workers", "plan_batches", "stream"]


def default_batch_size(device: torch.device) -> int:
    """Images per forward pass: 8 on a CPU (ResNet-50's forward on 2 cores: 15.8 images/s at 8, 10.0 at 32, its
    activations then fitting the caches; VGG-16's the same at 4 to 32), 64 on a GPU."""
    return 8 if device.type == "cpu" else 64


def default_workers(device: torch.device) -> int:
    """Data-loading processes. On a GPU, half the CPU cores (1 to 8): decoding is what the GPU waits for. On a CPU,
    a quarter (at most 8): the forward's threads use the cores, and a worker competing with them costs more than it
    saves (2 cores, 2048 JPEGs: ResNet-18 29.3 images/s with none, 25.9 with one; ResNet-50 11.9 and 11.4)."""
    cores = os.cpu_count() or 2
    return max(1, min(8, cores // 2)) if device.type == "cuda" else min(8, cores // 4)


@dataclass(frozen=True)
class Reading:
    """How a collection is read: the settings every pass over images shares.

    Attributes:
        batch_size: images per forward pass; ``None``: :func:`default_batch_size`. The batches are cut before
            they are shared out among processes, so results do not depend on the number of processes.
        workers: data-loading processes; ``None``: :func:`default_workers`; 0 decodes in this process.
        size: the input side images are resized and center-cropped to; ``None``: the model's.
    """

    batch_size: int | None = None
    workers: int | None = None
    size: int | None = None

    def resolved(self, device: torch.device, input_size: int) -> Reading:
        """Every setting filled in for a model on ``device`` taking ``input_size`` pixels.

        Raises:
            KernelvizError: a batch size or side below 1, or negative workers.
        """
        done = replace(
            self,
            batch_size=self.batch_size or default_batch_size(device),
            workers=default_workers(device) if self.workers is None else self.workers,
            size=self.size or input_size,
        )
        if int(done.batch_size or 0) < 1 or int(done.size or 0) < 1 or int(done.workers or 0) < 0:
            raise KernelvizError(
                f"batch size and size must be >= 1 and workers >= 0 (got {done.batch_size}, {done.size}, "
                f"{done.workers})"
            )
        return done


def plan_batches(count: int, batch_size: int) -> list[list[int]]:
    """The collection's ``count`` images cut into batches of ``batch_size`` consecutive indices."""
    return [list(range(i, min(i + batch_size, count))) for i in range(0, count, batch_size)]


@dataclass
class Batch:
    """One batch of a collection, decoded.

    Attributes:
        number: the batch's index in the plan.
        files: ``(B,)`` int64: the collection indices of every file of the batch.
        images: ``(b, 3, S, S)`` in ``[0, 1]``: the readable ones (``b <= B``).
        readable: ``(b,)`` int64: their collection indices.
        skipped: ``(file, why)`` of the files that could not be read.
    """

    number: int
    files: torch.Tensor
    images: torch.Tensor
    readable: torch.Tensor
    skipped: list[tuple[Path, str]] = field(default_factory=list)


class _Decoded(torch.utils.data.Dataset):
    """The collection's images at one side: ``(index, (3, size, size) image, "")``, or a zero image and why when
    the file cannot be read."""

    def __init__(self, files: list[Path], size: int) -> None:
        self.files, self.size = files, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, str]:
        try:
            return i, load_image(self.files[i], self.size), ""
        except KernelvizError as err:
            return i, torch.zeros(3, self.size, self.size), str(err)


def stream(
    found: Collection,
    batches: Sequence[Sequence[int]],
    numbers: Sequence[int],
    reading: Reading,
    device: torch.device,
) -> Iterator[Batch]:
    """Decode the batches ``numbers`` of ``batches`` (a plan of the collection's indices), in that order.

    Args:
        found: the collection.
        batches: every batch of the collection (:func:`plan_batches`).
        numbers: the batches to read (this process's, not done yet).
        reading: the settings, resolved (:meth:`Reading.resolved`).
        device: where the images go (pinned memory for CUDA).

    Yields:
        One :class:`Batch` per number.
    """
    if not numbers:
        return
    if reading.size is None or reading.workers is None:
        raise KernelvizError("stream() needs resolved reading settings (Reading.resolved)")
    loader = torch.utils.data.DataLoader(
        _Decoded(found.files, reading.size),
        batch_sampler=[list(batches[i]) for i in numbers],
        num_workers=min(reading.workers, len(numbers)),
        pin_memory=device.type == "cuda",
    )
    for number, (indices, images, errors) in zip(numbers, loader, strict=True):
        readable = [j for j, why in enumerate(errors) if not why]
        rows = torch.tensor(readable, dtype=torch.int64)
        yield Batch(
            number=number,
            files=indices,
            images=images[rows].to(device, non_blocking=True) if readable else images[:0].to(device),
            readable=indices[rows] if readable else indices[:0],
            skipped=[(found.files[int(indices[j])], why) for j, why in enumerate(errors) if why],
        )
