"""`MixtureSampler`: the interface every strategy implements, with vectorised, resumable draws.

Draws come from one seeded `numpy.random.Generator`, in blocks of `block_size` tasks kept in a buffer;
the RNG state at the start of the block and the position in it are part of `state_dict()`, so a resumed
run redraws the same block and continues the identical sequence. Every rank is built with the same seed
and sees the same `update()` stats (the engine all-reduces them), so every rank draws the same tasks:
`next_task()` (homogeneous step) is identical on all ranks, and `sample_tasks(n)` draws the whole
`n * world_size` global batch and returns this rank's slice. When `set_epoch` or `update` changes what
the block would hold (its draw key, normally the probabilities), the rest of the block is discarded.
"""
from __future__ import annotations

import copy
import logging
import math
import operator
from typing import Any, Mapping, Optional

import numpy as np

from t2t_mtl.sampling.errors import SamplingError
from t2t_mtl.sampling.rates import check_task_sizes

logger = logging.getLogger("t2t_mtl.sampling")

MODES = ("homogeneous", "mixed")


def _is_int(value: Any) -> bool:
    """An integer: Python's, numpy's or a one-element integer tensor's (what `operator.index` takes), not a bool."""
    if isinstance(value, (bool, np.bool_)):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def check_seed(seed: int) -> None:
    """numpy's generators take only seeds >= 0: refuse others by name (not numpy's bare 'non-negative integer')."""
    if not _is_int(seed) or seed < 0:
        raise SamplingError(f"the sampling seed (training.seed) must be an integer >= 0, got {seed}")


class MixtureSampler:
    """Chooses the task of the next micro-batch (`next_task`) or of each example (`sample_tasks`).

    Args:
        mode: homogeneous (one task per micro-batch, the same on every rank; gradient surgery needs it) or mixed
            (one task per example).
        block_size: tasks drawn at once (default: the strategy's DEFAULT_BLOCK_SIZE); a resume needs the same.
    """

    strategy: str = ""
    #: config keys the strategy accepts (besides the common `strategy`, `mode`, `block_size`)
    PARAMS: tuple[str, ...] = ()
    #: draws per block; strategies whose probabilities change at every update use smaller blocks
    DEFAULT_BLOCK_SIZE = 8192
    #: whether it learns from periodic held-in validation (`update({"val_loss": ..., "val_score": ...})`): a run
    #: with `training.validate_every` 0 is then refused. Set on the instance where a parameter decides it.
    needs_validation: bool = False
    #: whether it learns from the per-task mean normalised prediction entropy of each step's training forwards
    #: (`update({"entropy": {task: value}})`), which training computes only for such a sampler
    needs_entropy: bool = False
    #: keys of `_extra_state()` holding this rank's own figures, which the ranks need not share (uncertainty's counts
    #: of the candidates its rank kept): left out where the ranks' states are compared (`training_state.shared_parts`)
    RANK_OWN_STATE: tuple[str, ...] = ()

    def __init__(self, task_sizes: Mapping[str, int], *, seed: int, rank: int = 0, world_size: int = 1,
                 mode: str = "homogeneous", block_size: Optional[int] = None) -> None:
        block_size = self.DEFAULT_BLOCK_SIZE if block_size is None else block_size
        if mode not in MODES:
            raise SamplingError(f"sampling.mode: unknown mode {mode!r}; valid modes are {', '.join(MODES)}")
        if not _is_int(rank) or not _is_int(world_size) or world_size < 1 or not 0 <= rank < world_size:
            raise SamplingError(f"rank {rank} is not in [0, world_size={world_size})")
        if int(block_size) < 1:
            raise SamplingError(f"sampling.block_size must be >= 1, got {block_size}")
        check_seed(seed)
        self.task_sizes = check_task_sizes(task_sizes)
        self.tasks: list[str] = list(self.task_sizes)
        self.seed, self.rank, self.world_size, self.mode = int(seed), rank, world_size, mode
        self.block_size = int(block_size)
        self.epoch = 0.0
        self._rng = np.random.default_rng(self.seed)
        self._drawn = [0] * len(self.tasks)
        self._probs: Optional[np.ndarray] = None
        self._logged_probs: Optional[np.ndarray] = None
        self._clear_block()

    # ----- what strategies implement -----
    def _compute_probabilities(self) -> np.ndarray:
        """Non-negative weights in `self.tasks` order (normalised by the caller)."""
        raise NotImplementedError

    def _on_update(self, stats: Mapping[str, Any]) -> bool:
        """Consume training/validation stats; return True when the sampler's state changed."""
        return False

    def _on_epoch(self) -> bool:
        """React to `self.epoch` having changed; return True when the probabilities may have changed."""
        return False

    def _extra_state(self) -> dict:
        return {}

    def _load_extra_state(self, state: dict) -> None:
        pass

    def _draw_key(self) -> np.ndarray:
        """Everything `_draw_block` depends on besides the RNG: a buffered block stays valid while it is equal."""
        return self._probabilities()

    def _draw_block(self, size: int) -> np.ndarray:
        """`size` task indices drawn i.i.d. from the current probabilities (inverse CDF)."""
        cdf = np.cumsum(self._probabilities())
        cdf[-1] = 1.0
        idx = np.searchsorted(cdf, self._rng.random(size), side="right")
        return np.minimum(idx, len(self.tasks) - 1)

    # ----- public interface -----
    def probabilities(self) -> dict[str, float]:
        """Current target probability of each task."""
        return dict(zip(self.tasks, self._probabilities().tolist()))

    def logged_state(self) -> dict[str, dict[str, float]]:
        """What the strategy has learned, per task, for a run's records beside `task_probability` ({name: {task:
        value}}, each name a record key and a TensorBoard and W&B tag prefix, <name>/<task>, as the bandits'
        `bandit_q`, `bandit_alpha` and `bandit_beta` are): none by default."""
        return {}

    def probabilities_at(self, epoch: float) -> dict[str, float]:
        """The probability of each task at `epoch` (as `set_epoch` takes it), all else as now: where a schedule
        takes the rates. The sampler itself stays where it is (a copy is moved, logging nothing)."""
        if math.isnan(epoch) or epoch < 0:
            raise SamplingError(f"epoch must be >= 0, got {epoch}")
        moved = copy.deepcopy(self)
        moved.epoch = float(epoch)
        if moved._on_epoch():
            moved._probs = None
        return moved.probabilities()

    def next_task(self) -> str:
        """Task of the next homogeneous micro-batch (identical on every rank)."""
        if self._pos >= len(self._block_list):
            self._refill()
        index = self._block_list[self._pos]
        self._pos += 1
        self._drawn[index] += 1
        return self.tasks[index]

    def sample_tasks(self, n: int) -> list[str]:
        """Tasks of the `n` examples of this rank's share of a mixed batch (`n * world_size` drawn)."""
        indices = self.sample_task_indices(n)
        tasks = self.tasks
        return [tasks[i] for i in indices.tolist()]

    def sample_task_indices(self, n: int) -> np.ndarray:
        """Like `sample_tasks` but returns positions in `self.tasks` (int64 array)."""
        if not _is_int(n) or n < 0:
            raise SamplingError(f"the number of tasks to draw must be an integer >= 0, got {n!r}")
        n = operator.index(n)  # (a tensor's count as an int: it slices the draws)
        drawn = self._take(n * self.world_size)
        for i, count in enumerate(np.bincount(drawn, minlength=len(self.tasks)).tolist()):
            self._drawn[i] += count
        return drawn[self.rank * n:(self.rank + 1) * n]

    def update(self, stats: Mapping[str, Any]) -> None:
        """Feed per-task stats (e.g. {"loss": {...}, "entropy": {...}, "val_score": {...}}).

        Keys a strategy does not use are ignored. Stats must be identical on every rank.
        """
        if not isinstance(stats, Mapping):
            raise SamplingError(f"update() takes a dict of stats, got {type(stats).__name__}")
        if self._on_update(stats):
            self._changed()

    def set_epoch(self, epoch: float) -> None:
        """Set the current (0-based, possibly fractional) epoch.

        Schedules change at whole epochs: they use the paper's epoch e = floor(epoch) + 1.
        """
        if math.isnan(epoch) or epoch < 0:
            raise SamplingError(f"epoch must be >= 0, got {epoch}")
        if float(epoch) == self.epoch:
            return
        self.epoch = float(epoch)
        if self._on_epoch():
            self._changed()
            if self._logged_probs is None or not np.array_equal(self._logged_probs, self._probabilities()):
                self.log_rates()

    def drawn(self) -> dict[str, int]:
        """How many times each task was drawn so far (global counts, identical on every rank)."""
        return dict(zip(self.tasks, self._drawn))

    def realised(self) -> dict[str, float]:
        """Share of the draws so far that went to each task (0 before any draw)."""
        total = sum(self._drawn)
        return {t: (c / total if total else 0.0) for t, c in zip(self.tasks, self._drawn)}

    def rates_table(self) -> list[dict[str, Any]]:
        """One row per task: size, target probability, draws and realised share."""
        probs, realised = self.probabilities(), self.realised()
        return [{"task": t, "size": self.task_sizes[t], "probability": probs[t], "drawn": d,
                 "realised": realised[t]} for t, d in zip(self.tasks, self._drawn)]

    def describe(self) -> str:
        """Human-readable rates table (normalised probabilities, not raw rates)."""
        rows = self.rates_table()
        width = max(4, *(len(r["task"]) for r in rows))
        lines = [f"{self.strategy} sampler ({self.mode}), epoch {self.epoch:g}",
                 f"{'task':<{width}}  {'size':>10}  {'prob':>8}  {'drawn':>10}  {'realised':>8}"]
        for r in rows:
            lines.append(f"{r['task']:<{width}}  {r['size']:>10}  {r['probability']:>8.4f}  {r['drawn']:>10}  "
                         f"{r['realised']:>8.4f}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(strategy={self.strategy!r}, tasks={self.tasks}, mode={self.mode!r}, "
                f"seed={self.seed}, epoch={self.epoch:g})")

    def log_rates(self, level: int = logging.INFO) -> None:
        """Log `describe()` on the `t2t_mtl.sampling` logger (rank 0 only)."""
        self._logged_probs = self._probabilities()
        if self.rank == 0:
            logger.log(level, "%s", self.describe())

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the identical sequence (plain Python types)."""
        return {
            "strategy": self.strategy, "tasks": list(self.tasks), "seed": self.seed,
            "block_size": self.block_size, "epoch": self.epoch, "drawn": list(self._drawn),
            "rng_state": self._rng.bit_generator.state, "block_rng_state": self._block_rng_state,
            "position": self._pos, "extra": self._extra_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a `state_dict()` taken from a sampler with the same strategy and tasks."""
        if state.get("strategy") != self.strategy:
            raise SamplingError(f"sampler state is for strategy {state.get('strategy')!r}, "
                                f"this sampler is {self.strategy!r}")
        if list(state.get("tasks", ())) != self.tasks:
            raise SamplingError(f"sampler state has tasks {state.get('tasks')}, this sampler has {self.tasks}")
        if int(state["block_size"]) != self.block_size:
            raise SamplingError(f"the sampler state was saved with sampling.block_size {state['block_size']}, this "
                                f"run has {self.block_size}: resume with the same sampling.block_size (the saved "
                                f"draws are a block of that size)")
        self.seed = int(state["seed"])
        self.epoch = float(state["epoch"])
        self._on_epoch()
        self._load_extra_state(dict(state.get("extra", {})))
        self._drawn = [int(c) for c in state["drawn"]]
        self._probs = None
        self._clear_block()
        if state["block_rng_state"] is not None:
            self._rng.bit_generator.state = state["block_rng_state"]
            self._refill()
            self._pos = int(state["position"])
        self._rng.bit_generator.state = state["rng_state"]

    # ----- internals -----
    def _probabilities(self) -> np.ndarray:
        if self._probs is None:
            probs = np.asarray(self._compute_probabilities(), dtype=np.float64)
            self._probs = probs / probs.sum()
        return self._probs

    def _changed(self) -> None:
        """The state changed: recompute the probabilities; drop the buffered block if its draws would differ."""
        self._probs = None
        if self._block_key is None or not np.array_equal(self._block_key, self._draw_key()):
            self._clear_block()

    def _clear_block(self) -> None:
        self._block = np.empty(0, dtype=np.int64)
        self._block_list: list[int] = []
        self._block_rng_state: Optional[dict] = None
        self._block_key: Optional[np.ndarray] = None
        self._pos = 0

    def _refill(self) -> None:
        self._block_rng_state = self._rng.bit_generator.state
        self._block_key = np.array(self._draw_key(), copy=True)
        self._block = self._draw_block(self.block_size).astype(np.int64)
        self._block_list = self._block.tolist()
        self._pos = 0

    def _take(self, count: int) -> np.ndarray:
        pieces, need = [], count
        while need > 0:
            if self._pos >= len(self._block):
                self._refill()
            chunk = self._block[self._pos:self._pos + need]
            self._pos += len(chunk)
            need -= len(chunk)
            pieces.append(chunk)
        return np.concatenate(pieces) if pieces else np.empty(0, dtype=np.int64)
