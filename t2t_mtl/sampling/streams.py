"""`TaskStreams`: per-task row-index iterators, reshuffled every epoch, disjoint across ranks.

Task t's order in epoch e is a permutation of range(n_t) that depends only on (seed, task name, e), so
nothing but (epoch, position, seen) per task is stored and every rank computes the same permutation.
When W ranks do not divide n_t, the order is extended by its first (−n_t mod W) rows (as torch's
DistributedSampler pads), so every rank's share has ⌈n_t / W⌉ rows and ranks drawing alike stay in the
same epoch. Rank r takes positions r, r + W, r + 2W, ... of it: together the ranks cover every row each
epoch, and they never share an example within an epoch except those fewer than W repeated rows (with
unequal shares, a rank would run ahead into later epochs and draw the rows the others are drawing).
Rows are never materialised or mixed ahead of time.
"""
from __future__ import annotations

import zlib
from typing import Any, Mapping

import numpy as np

from t2t_mtl.sampling.base import check_seed
from t2t_mtl.sampling.errors import EmptyTaskError, SamplingError
from t2t_mtl.sampling.rates import check_task_sizes


class TaskStreams:
    """Hands out row indices of each task; counts epochs and examples seen on this rank."""

    def __init__(self, task_sizes: Mapping[str, int], seed: int, rank: int = 0, world_size: int = 1) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise SamplingError(f"rank {rank} is not in [0, world_size={world_size})")
        check_seed(seed)
        self.task_sizes = check_task_sizes(task_sizes)
        for task, size in self.task_sizes.items():
            if size < world_size:
                raise EmptyTaskError(f"task {task!r} has {size} rows, fewer than the {world_size} ranks: "
                                     f"some rank would get none of its examples")
        self.seed, self.rank, self.world_size = int(seed), rank, world_size
        self._epoch = {t: 0 for t in self.task_sizes}
        self._position = {t: 0 for t in self.task_sizes}
        self._seen = {t: 0 for t in self.task_sizes}
        self._shard: dict[str, np.ndarray] = {}

    def permutation(self, task: str, epoch: int) -> np.ndarray:
        """The global order of task `task`'s rows in `epoch` (identical on every rank)."""
        key = zlib.crc32(task.encode("utf-8"))
        rng = np.random.default_rng([self.seed, key, epoch])
        return rng.permutation(self.task_sizes[task])

    def next_indices(self, task: str, n: int) -> list[int]:
        """The next `n` row indices of `task` for this rank; crosses epochs (reshuffling) as needed."""
        if task not in self.task_sizes:
            raise SamplingError(f"unknown task {task!r}: streams exist for {', '.join(self.task_sizes)}")
        if n < 0:
            raise SamplingError(f"cannot take a negative number of rows ({n})")
        out: list[int] = []
        while len(out) < n:
            shard = self._current_shard(task)
            start = self._position[task]
            chunk = shard[start:start + n - len(out)]
            out.extend(chunk.tolist())
            self._position[task] = start + len(chunk)
            if self._position[task] >= len(shard):
                self._epoch[task] += 1
                self._position[task] = 0
                self._shard.pop(task, None)
        self._seen[task] += n
        return out

    def seen(self) -> dict[str, int]:
        """Examples of each task handed out on this rank."""
        return dict(self._seen)

    def epochs(self) -> dict[str, int]:
        """Completed passes over this rank's share of each task."""
        return dict(self._epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "rank": self.rank, "world_size": self.world_size,
                "task_sizes": dict(self.task_sizes), "epoch": dict(self._epoch),
                "position": dict(self._position), "seen": dict(self._seen)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a `state_dict()` of the same tasks, seed, rank and world size."""
        for key in ("seed", "rank", "world_size", "task_sizes"):
            if state[key] != getattr(self, key):
                raise SamplingError(f"stream state has {key}={state[key]!r}, these streams {getattr(self, key)!r}")
        self._epoch = {t: int(v) for t, v in state["epoch"].items()}
        self._position = {t: int(v) for t, v in state["position"].items()}
        self._seen = {t: int(v) for t, v in state["seen"].items()}
        self._shard.clear()

    def _current_shard(self, task: str) -> np.ndarray:
        shard = self._shard.get(task)
        if shard is None:
            order = self.permutation(task, self._epoch[task])
            order = np.concatenate([order, order[:-len(order) % self.world_size]])[self.rank::self.world_size]
            shard = order.astype(np.int32) if len(order) and order.max() < 2 ** 31 else order
            self._shard[task] = shard
        return shard
