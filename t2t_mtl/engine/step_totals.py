"""One optimizer step's figures, summed over its micro-batches on each rank and then over ranks in one all-reduce.

The training loop adds each good micro-batch (`add_micro_batch`), notes the examples drawn and a stop request,
and `reduce` turns the all-reduced sums into a `StepFigures`: per-task mean losses, the mean-task and weighted
losses, real tokens, examples drawn and trained per task, and whether any rank was asked to stop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Sequence

import torch

from t2t_mtl.engine.distributed import sum_over_ranks


@dataclass
class StepFigures:
    """A step's figures over all ranks; `loss` and `weighted_loss` are NaN when no micro-batch was good."""

    task_loss: Dict[str, float]  # mean over the micro-batches that trained each task (tasks without any left out)
    loss: float  # mean over good micro-batches of the mean of their task losses
    weighted_loss: float  # mean over good micro-batches of the loss the weighting returned
    good: int  # micro-batches with a finite, non-zero loss
    tokens: int  # real (non-padding) tokens of the good micro-batches
    drawn: float  # examples drawn, good micro-batches or not
    task_examples: Dict[str, int]  # examples of the good micro-batches per task (tasks without any left out)
    stop_requested: bool  # SIGTERM or Ctrl-C on any rank


class StepTotals:
    """Sums for one step in one float64 vector laid out as
    [task loss sums (T) | task micro-batch counts (T) | mean-task loss | weighted loss | good micro-batches |
    stop requested | real tokens | examples drawn | task examples (T)], so one all-reduce carries them all."""

    def __init__(self, task_names: Sequence[str]) -> None:
        self.task_names = list(task_names)
        self._index = {name: i for i, name in enumerate(self.task_names)}
        self._sums = torch.zeros(3 * len(self.task_names) + 6, dtype=torch.float64)

    def add_micro_batch(self, task_losses: Mapping[str, float], weighted_loss: float, tokens: int,
                        example_task_ids: torch.Tensor) -> None:
        """Count a good micro-batch: its per-task losses, weighted loss, real tokens and examples' task ids."""
        T = len(self.task_names)
        for name, value in task_losses.items():
            self._sums[self._index[name]] += value
            self._sums[T + self._index[name]] += 1
        self._sums[2 * T] += sum(task_losses.values()) / len(task_losses)
        self._sums[2 * T + 1] += weighted_loss
        self._sums[2 * T + 2] += 1
        self._sums[2 * T + 4] += tokens
        self._sums[2 * T + 6:] += torch.bincount(example_task_ids, minlength=T).to(torch.float64)

    def set_drawn(self, examples: int) -> None:
        """This rank's examples drawn in the step (packed micro-batches hold varying numbers)."""
        self._sums[2 * len(self.task_names) + 5] = examples

    def set_stop_requested(self, requested: bool) -> None:
        """Whether this rank was asked to stop (SIGTERM or a first Ctrl-C) during the step."""
        self._sums[2 * len(self.task_names) + 3] = 1.0 if requested else 0.0

    def reduce(self) -> StepFigures:
        """All-reduce the sums over the ranks (a collective: every rank calls it) and return the step's figures."""
        sums, T = sum_over_ranks(self._sums), len(self.task_names)
        good = int(sums[2 * T + 2])
        return StepFigures(
            task_loss={name: float(sums[i] / sums[T + i]) for i, name in enumerate(self.task_names) if sums[T + i] > 0},
            loss=float(sums[2 * T] / good) if good else float("nan"),
            weighted_loss=float(sums[2 * T + 1] / good) if good else float("nan"),
            good=good, tokens=int(sums[2 * T + 4]), drawn=float(sums[2 * T + 5]),
            task_examples={name: int(sums[2 * T + 6 + i]) for i, name in enumerate(self.task_names)
                           if sums[2 * T + 6 + i]},
            stop_requested=bool(sums[2 * T + 3] > 0))
