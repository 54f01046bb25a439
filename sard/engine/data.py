"""Deterministic, resumable data streams for the built-in trainer.

Training order: epoch ``e`` visits the dataset in ``randperm(n, seed + e)``; the global batch of
iteration ``it`` is the slice ``[it * B, (it + 1) * B)`` of the concatenated epochs, and process
``r`` of ``k`` takes its ``B / k`` consecutive share, so a DDP run sees exactly the global batches
of a one-process run. Every sample is mapped under an RNG seeded by (seed, iteration, position), so
augmentations and prompts do not depend on worker count, and ``--resume`` from iteration ``it``
replays the very batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import random
from typing import Callable, Dict, Iterator, List, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info


def global_indices(n: int, seed: int, start: int, count: int) -> List[int]:
    """Positions ``start .. start+count`` of ``randperm(n, seed) ++ randperm(n, seed+1) ++ ...``."""
    out: List[int] = []
    epoch, offset = divmod(start, n)
    while len(out) < count:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        out.extend(perm[offset : offset + count - len(out)])
        epoch, offset = epoch + 1, 0
    return out


def map_with_seed(mapper: Callable[[Dict], Dict], record: Dict, seed: int) -> Dict:
    """Call ``mapper(record)`` with the python/numpy/torch RNGs seeded by ``seed``, then restore."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            return mapper(dict(record))
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class TrainStream(IterableDataset):
    """Yields this process's mapped samples for iterations ``start_iter, start_iter + 1, ...``."""

    def __init__(
        self,
        records: Sequence[Dict],
        mapper: Callable[[Dict], Dict],
        global_batch: int,
        seed: int,
        start_iter: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not records:
            raise ValueError("the training dataset is empty")
        if global_batch % world_size:
            raise ValueError(
                f"SOLVER.IMS_PER_BATCH={global_batch} is not divisible by {world_size} processes"
            )
        self.records = records
        self.mapper = mapper
        self.global_batch = global_batch
        self.local_batch = global_batch // world_size
        self.seed = seed
        self.start_iter = start_iter
        self.rank = rank

    def batch_for_iteration(self, it: int) -> List[Dict]:
        first = it * self.global_batch + self.rank * self.local_batch
        idx = global_indices(len(self.records), self.seed, first, self.local_batch)
        return [
            map_with_seed(self.mapper, self.records[i], _sample_seed(self.seed, it, first + j))
            for j, i in enumerate(idx)
        ]

    def __iter__(self) -> Iterator[List[Dict]]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info else (0, 1)
        # The DataLoader polls workers round-robin, so worker w serves iterations w, w+k, ...
        it = self.start_iter + worker
        while True:
            yield self.batch_for_iteration(it)
            it += n_workers


def _sample_seed(seed: int, it: int, position: int) -> int:
    return (seed * 1_000_003 + it * 10_007 + position) % (2**63 - 1)


def _identity(batch):
    return batch


def build_train_loader(stream: TrainStream, num_workers: int) -> DataLoader:
    # A private generator: creating the iterator must not draw from the global RNG, or a resumed
    # run (whose RNG state was restored before this call) would drift from an uninterrupted one.
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=num_workers,
        collate_fn=_identity,
        generator=torch.Generator().manual_seed(stream.seed),
    )


def build_test_loader(
    records: Sequence[Dict], mapper: Callable[[Dict], Dict], rank: int = 0, world_size: int = 1
) -> Iterator[List[Dict]]:
    """One mapped image per batch, images ``rank, rank+k, ...`` (deterministic mapper)."""
    for i in range(rank, len(records), world_size):
        yield [mapper(dict(records[i]))]
