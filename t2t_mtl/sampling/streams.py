"""`TaskStreams`: per-task row-index iterators, reshuffled every epoch, disjoint across ranks.

Task t's order in epoch e is a permutation of range(n_t) that depends only on (seed, task name, e), so
nothing but (epoch, position, seen) per task is stored and every rank computes the same permutation.
When W ranks do not divide n_t, the order is extended by its first (−n_t mod W) rows (as torch's
DistributedSampler pads), so every rank's share has ⌈n_t / W⌉ rows and ranks drawing alike stay in the
same epoch. Rank r takes positions r, r + W, r + 2W, ... of it: together the ranks cover every row each
epoch, and they never share an example within an epoch except those fewer than W repeated rows (with
unequal shares, a rank would run ahead into later epochs and draw the rows the others are drawing).
Rows are never materialised or mixed ahead of time. A resume under another world size (`resharded_state`)
deals the rows of the interrupted epoch that no old rank handed out to the new ranks the same way, then goes on
with the next epochs.
"""
from __future__ import annotations

import zlib
from typing import Any, Mapping, Sequence, Tuple

import numpy as np

from t2t_mtl.sampling.base import check_seed
from t2t_mtl.sampling.errors import EmptyTaskError, SamplingError
from t2t_mtl.sampling.rates import check_task_sizes
from t2t_mtl.wording import counted


class TaskStreams:
    """Hands out row indices of each task; counts epochs and examples seen on this rank."""

    def __init__(self, task_sizes: Mapping[str, int], seed: int, rank: int = 0, world_size: int = 1) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise SamplingError(f"rank {rank} is not in [0, world_size={world_size})")
        check_seed(seed)
        self.task_sizes = check_task_sizes(task_sizes)
        for task, size in self.task_sizes.items():
            if size < world_size:
                raise EmptyTaskError(f"task {task!r} has {counted(size, 'row')}, fewer than the {world_size} ranks: "
                                     f"some rank would get none of its examples")
        self.seed, self.rank, self.world_size = int(seed), rank, world_size
        self._epoch = {t: 0 for t in self.task_sizes}
        self._position = {t: 0 for t in self.task_sizes}
        self._seen = {t: 0 for t in self.task_sizes}
        self._rest: dict[str, np.ndarray] = {}  # a current epoch's rows dealt anew (`resharded_state`)
        self._shard: dict[str, np.ndarray] = {}

    def permutation(self, task: str, epoch: int) -> np.ndarray:
        """The global order of task `task`'s rows in `epoch` (identical on every rank)."""
        key = zlib.crc32(task.encode("utf-8"))
        rng = np.random.default_rng([self.seed, key, epoch])
        return rng.permutation(self.task_sizes[task])

    def epoch_order(self, task: str) -> np.ndarray:
        """The global order of the rows task `task`'s current epoch deals to the ranks: the epoch's permutation,
        or after a resume under another world size the rows of it no old rank had handed out."""
        rest = self._rest.get(task)
        return rest if rest is not None else self.permutation(task, self._epoch[task])

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
                self._rest.pop(task, None)
        self._seen[task] += n
        return out

    def seen(self) -> dict[str, int]:
        """Examples of each task handed out on this rank."""
        return dict(self._seen)

    def epochs(self) -> dict[str, int]:
        """Completed passes over this rank's share of each task."""
        return dict(self._epoch)

    def state_dict(self) -> dict[str, Any]:
        """Where each task's stream stands on this rank (epoch, position, examples seen, an epoch's rows dealt anew
        by `resharded_state`), with the seed, rank, world size and task sizes it belongs to."""
        return {"seed": self.seed, "rank": self.rank, "world_size": self.world_size,
                "task_sizes": dict(self.task_sizes), "epoch": dict(self._epoch),
                "position": dict(self._position), "seen": dict(self._seen),
                "rest": dict(self._rest)}  # (arrays: a large task's rest pickles as its bytes)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a `state_dict()` of the same tasks, seed, rank and world size."""
        for key in ("seed", "rank", "world_size", "task_sizes"):
            if state[key] != getattr(self, key):
                raise SamplingError(f"stream state has {key}={state[key]!r}, these streams {getattr(self, key)!r}")
        self._epoch = {t: int(v) for t, v in state["epoch"].items()}
        self._position = {t: int(v) for t, v in state["position"].items()}
        self._seen = {t: int(v) for t, v in state["seen"].items()}
        self._rest = {t: np.asarray(rows) for t, rows in state.get("rest", {}).items()}
        self._shard.clear()

    def _current_shard(self, task: str) -> np.ndarray:
        shard = self._shard.get(task)
        if shard is None:
            order = _padded(self.epoch_order(task), self.world_size)[self.rank::self.world_size]
            shard = order.astype(np.int32) if len(order) and order.max() < 2 ** 31 else order
            self._shard[task] = shard
        return shard


def _padded(order: np.ndarray, world_size: int) -> np.ndarray:
    """`order` extended by its first rows (repeated, for a rest shorter than `world_size`) to a multiple of
    `world_size`."""
    return np.resize(order, -(-len(order) // world_size) * world_size)


def resharded_state(states: Sequence[Mapping[str, Any]], untrained: Sequence[Tuple[str, int]], *, rank: int,
                    world_size: int) -> dict[str, Any]:
    """The `TaskStreams` state of rank `rank` of `world_size` that continues `states`, the states of all ranks
    (in rank order) of another world size: each task's current epoch deals, in the same way, first its
    `untrained` rows (handed out by the old ranks but not trained: micro-batches a batch builder held), then the
    rows of its global order no old rank had handed out (of every epoch some old rank had not finished), and the
    next epochs follow as usual; no row is skipped or taken twice. `seen` counts carry over per rank number."""
    if not states or [int(s["rank"]) for s in states] != list(range(len(states))) or \
            any(int(s["world_size"]) != len(states) for s in states):
        raise SamplingError(f"resharding needs the stream states of every rank in rank order, got ranks "
                            f"{[s['rank'] for s in states]} of world sizes {sorted({s['world_size'] for s in states})}")
    first = states[0]
    epoch_orders = TaskStreams(first["task_sizes"], seed=first["seed"])
    epochs, rest = {}, {}
    for task in epoch_orders.task_sizes:
        at = [int(s["epoch"][task]) for s in states]
        rows = [int(i) for t, i in untrained if t == task]
        for epoch in range(min(at), max(at) + 1):
            rows += _not_handed_out(epoch_orders, task, epoch, states)
        # (never empty: each rank stands before the end of its share of epoch max(at), since reaching it moves it on,
        # so the old ranks handed out at most W·(share - 1) of that epoch's positions, fewer than its rows)
        epochs[task] = max(at)
        if rows != epoch_orders.permutation(task, max(at)).tolist():
            rest[task] = np.asarray(rows, dtype=np.int32 if max(rows) < 2 ** 31 else np.int64)
    seen = states[rank]["seen"] if rank < len(states) else {t: 0 for t in epochs}
    return {"seed": first["seed"], "rank": rank, "world_size": world_size, "task_sizes": dict(first["task_sizes"]),
            "epoch": epochs, "position": {t: 0 for t in epochs}, "seen": dict(seen), "rest": rest}


def _not_handed_out(epoch_orders: TaskStreams, task: str, epoch: int, states: Sequence[Mapping[str, Any]]) -> list:
    """The rows of `task`'s `epoch`, in its global order, that none of the ranks of `states` handed out."""
    at_epoch = [s["rest"][task] for s in states if int(s["epoch"][task]) == epoch and task in s.get("rest", {})]
    order = np.asarray(at_epoch[0]) if at_epoch else epoch_orders.permutation(task, epoch)
    world_size = len(states)
    share = len(_padded(order, world_size)) // world_size
    taken = np.zeros(len(order), dtype=bool)
    for rank, state in enumerate(states):
        now = int(state["epoch"][task])
        count = share if now > epoch else int(state["position"][task]) if now == epoch else 0
        taken[(rank + world_size * np.arange(count)) % len(order)] = True
    return order[~taken].tolist()
