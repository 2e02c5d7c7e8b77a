"""Worst-task-first scheduling (Tchebycheff-style, on validation loss)."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from t2t_mtl.sampling.base import MixtureSampler
from t2t_mtl.sampling.errors import SamplingError, check_floor
from t2t_mtl.sampling.feedback import read_scores


#: worst_task's default sampling.floor
WORST_TASK_FLOOR = 0.0


class WorstTaskSampler(MixtureSampler):
    """Favour the task with the largest weighted validation loss λ_t L_t, λ_t = 1/(l_t Σ_i 1/l_i).

    Losses are ``stats[metric]`` with `metric` "val_loss" (default) or "loss" (training losses).
    l_t is task t's first validation loss (so λ_t L_t is its loss relative to where it started; a task fitted
    exactly, L_t = 0, has λ_t L_t = 0). With `tau` 0 the worst task gets all the mass (ties share it); with
    `tau` > 0, p ∝ exp(λ_t L_t / tau).
    Tasks with no validation loss yet are treated as worst (explored first); before any loss, uniform.
    `floor` mixes in a minimum probability per task: p = floor + (1 - M·floor) p.

    Args:
        tau: >= 0; 0 gives the worst task all the mass, larger spreads it (p ∝ exp(λ_t L_t / tau)).
        floor: every task's least probability (floor times the number of tasks < 1).
        metric: val_loss (default) or loss (the training losses, fed every step: no periodic validation needed).
    """

    strategy = "worst_task"
    DEFAULT_BLOCK_SIZE = 256
    PARAMS = ("tau", "floor", "metric")
    needs_validation = True

    def __init__(self, task_sizes: Mapping[str, int], *, tau: float = 0.0, floor: float = WORST_TASK_FLOOR,
                 metric: str = "val_loss", **common) -> None:
        super().__init__(task_sizes, **common)
        if metric not in ("val_loss", "loss"):
            raise SamplingError(f"sampling.metric must be 'val_loss' or 'loss' for worst_task, got {metric!r}")
        self.metric = metric
        self.needs_validation = metric != "loss"  # (the training loss is fed every step)
        if not tau >= 0:
            raise SamplingError(f"sampling.tau must be >= 0, got {tau}")
        self.tau, self.floor = float(tau), check_floor(floor, len(self.tasks), WORST_TASK_FLOOR)
        self.initial_loss = np.full(len(self.tasks), np.nan)
        self.loss = np.full(len(self.tasks), np.nan)

    def _on_update(self, stats: Mapping[str, Any]) -> bool:
        losses = read_scores(stats, self.metric, self.tasks)
        if losses is None:
            return False
        for task, value in losses.items():
            i = self.tasks.index(task)
            if value < 0 or (value == 0 and np.isnan(self.initial_loss[i])):
                raise SamplingError(f"task {task!r} has {self.metric} {value}: worst-task-first needs losses >= 0, "
                                    f"the first one > 0 (it divides by it)")
            self.loss[i] = value
            if np.isnan(self.initial_loss[i]):
                self.initial_loss[i] = value
        return True

    def weighted_losses(self) -> np.ndarray:
        """λ_t L_t per task (NaN where no loss was seen), computed as (L_t / l_t) / Σ_i 1/l_i: tasks whose losses
        relative to their first are equal get equal values to the bit (a task's first loss gives exactly 1 / Σ),
        so `tau` 0's ties are found."""
        if np.isnan(self.initial_loss).all():
            return self.loss.copy()
        return (self.loss / self.initial_loss) / np.nansum(1.0 / self.initial_loss)

    def _compute_probabilities(self) -> np.ndarray:
        m = len(self.tasks)
        unseen = np.isnan(self.loss)
        if unseen.all():
            p = np.full(m, 1.0 / m)
        elif unseen.any():
            p = unseen / unseen.sum()
        else:
            score = self.weighted_losses()
            if self.tau == 0:
                p = (score == score.max()).astype(np.float64)
            else:
                p = np.exp((score - score.max()) / self.tau)
            p = p / p.sum()
        return self.floor + (1 - m * self.floor) * p

    def _extra_state(self) -> dict:
        as_list = lambda a: [None if np.isnan(v) else float(v) for v in a]  # noqa: E731
        return {"loss": as_list(self.loss), "initial_loss": as_list(self.initial_loss), "metric": self.metric}

    def _load_extra_state(self, state: dict) -> None:
        """The saved losses are of the saved metric (states before 2026-12-05 lack it): under another
        `sampling.metric` they start anew (the first loss in it is the task's l_t)."""
        if state.get("metric", self.metric) != self.metric:
            return
        as_array = lambda v: np.array([np.nan if x is None else x for x in v], dtype=np.float64)  # noqa: E731
        self.loss, self.initial_loss = as_array(state["loss"]), as_array(state["initial_loss"])
