"""Every unit's score on every image of a scan: the per-image maximum that ranks it (:attr:`Ranking.scores`
of the top ranking), ``(N, C)`` per layer, what a unit's statistics and labels are computed from.

A collection of 50,000 images through every convolution of ResNet-50 is 26,000 units x 50,000 images: 5 GB of
float32, more than a laptop holds. So a scan with a checkpoint folder keeps them on disk, one memory-mapped file per
layer (``<scan-id>-scores/<layer index>.f32``, rows in the collection's order, each process writing the rows of its
own batches), and the statistics read them a block of units at a time; a scan without one keeps them in memory.
Which rows hold a score is the scan's to say (its done batches, less the files it skipped:
:meth:`~kernelviz.units.scan.UnitScan.read_rows`); the others are 0.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

__all__ = ["ScoreStore"]


class ScoreStore:
    """Per-image scores of each layer of a scan.

    Args:
        folder: where the files are (``None``: in memory).
        units: ``{layer: units}`` in the scan's layer order.
        count: images in the collection.
    """

    def __init__(self, folder: str | os.PathLike | None, units: Mapping[str, int], count: int) -> None:
        self.folder = None if folder is None else Path(folder)
        self.units = dict(units)
        self.count = count
        self._arrays: dict[str, np.ndarray] = {}
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)

    def __getstate__(self) -> dict[str, object]:
        """Pickled (a scan gathered over ``torch.distributed``): a store on disk travels as its folder, its files
        shared by every rank; one in memory with its arrays."""
        state = dict(self.__dict__)
        if self.folder is not None:
            state["_arrays"] = {}
        return state

    def _file(self, layer: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{list(self.units).index(layer)}.f32"

    def array(self, layer: str) -> np.ndarray:
        """The ``(N, C)`` float32 array of ``layer`` (a memory map when on disk)."""
        if layer not in self._arrays:
            shape = (self.count, self.units[layer])
            if self.folder is None:
                self._arrays[layer] = np.zeros(shape, dtype=np.float32)
            else:
                path = self._file(layer)
                # opened, never truncated: other processes (shards) write their own rows into the same file
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
                try:
                    if os.fstat(fd).st_size < 4 * shape[0] * shape[1]:
                        os.ftruncate(fd, 4 * shape[0] * shape[1])  # a sparse file of zeros
                finally:
                    os.close(fd)
                self._arrays[layer] = np.memmap(path, dtype=np.float32, mode="r+", shape=shape)
        return self._arrays[layer]

    def write(self, layer: str, images: torch.Tensor, scores: torch.Tensor) -> None:
        """Set the rows ``images`` ``(B,)`` of ``layer`` to ``scores`` ``(B, C)``."""
        self.array(layer)[images.cpu().numpy()] = scores.detach().float().cpu().numpy()

    def flush(self) -> None:
        """Write what is mapped to disk (before a checkpoint names it done)."""
        for array in self._arrays.values():
            if isinstance(array, np.memmap):
                array.flush()

    def read(self, layer: str, units: slice | None = None) -> torch.Tensor:
        """``(N, c)`` float32 scores of ``layer``'s units ``units`` (all by default), a copy in memory."""
        block = self.array(layer)[:, units if units is not None else slice(None)]
        return torch.from_numpy(np.array(block, dtype=np.float32))

    def merged(self, parts: list[tuple[ScoreStore, list[int]]]) -> ScoreStore:
        """One store from those of disjoint shards, each with the rows it filled. On disk: this store's files, the
        rows of parts kept elsewhere (in memory, another folder) written into them (rows no other shard writes); in
        memory: a copy holding each part's rows."""
        if self.folder is None:
            merged = ScoreStore(None, self.units, self.count)
            for layer in self.units:
                merged._arrays[layer] = np.zeros((self.count, self.units[layer]), dtype=np.float32)
        else:
            merged = self
        for store, rows in parts:
            if store is merged or (store.folder is not None and store.folder == merged.folder):
                continue
            for layer in self.units:
                merged.array(layer)[rows] = store.array(layer)[rows]
        merged.flush()
        return merged
