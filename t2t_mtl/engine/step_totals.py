"""One optimizer step's figures: each micro-batch's losses kept on the device, read once and combined over the ranks
in one collective at the end of the step.

The training loop hands each micro-batch's weighted loss and task losses to `add_micro_batch`, which decides on the
device whether the micro-batch is bad (a non-finite loss, or every task loss exactly zero) and returns the loss to
back-propagate: NaN for a bad one, so that the step is skipped (DeepSpeed's overflow check, or `guarded_skip_step`).
Nothing is read from the device there. `reduce` reads the step's losses (one transfer), gathers every rank's
per-micro-batch figures (one collective) and sums the micro-batches that are good on every rank into a
`StepFigures`: per-task mean losses, the mean-task and weighted losses, real tokens, examples drawn and trained per
task, whether any rank was asked to stop, and whether the step is poisoned (a micro-batch bad on any rank).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Sequence

import torch

from t2t_mtl.engine.distributed import gather_over_ranks


@dataclass
class StepFigures:
    """A step's figures over all ranks; `loss` and `weighted_loss` are NaN when no micro-batch was good."""

    task_loss: Dict[str, float]  # mean over the micro-batches that trained each task (tasks without any left out)
    loss: float  # mean over good micro-batches of the mean of their task losses
    weighted_loss: float  # mean over good micro-batches of the loss the weighting returned
    good: int  # micro-batches with a finite, non-zero loss on every rank
    tokens: int  # real (non-padding) tokens of the good micro-batches
    drawn: float  # examples drawn, good micro-batches or not
    task_examples: Dict[str, int]  # examples of the good micro-batches per task (tasks without any left out)
    stop_requested: bool  # SIGTERM, SIGUSR1 or Ctrl-C on any rank
    poisoned: bool  # a micro-batch was bad on some rank: the step is skipped on every rank


class StepTotals:
    """A step's micro-batches, summed by `reduce` into one float64 vector per rank laid out as
    [task loss sums (T) | task micro-batch counts (T) | mean-task loss | weighted loss | good micro-batches |
    stop requested | real tokens | examples drawn | task examples (T)], and those added over the ranks."""

    def __init__(self, task_names: Sequence[str]) -> None:
        self.task_names = list(task_names)
        self._index = {name: i for i, name in enumerate(self.task_names)}
        self._losses: List[torch.Tensor] = []  # per micro-batch: [weighted loss, its task losses], float32
        self._tasks: List[List[str]] = []  # per micro-batch: the tasks of its task losses, in order
        self._tokens: List[int] = []
        self._example_task_ids: List[torch.Tensor] = []  # per micro-batch, on the host
        self._drawn = 0
        self._stop_requested = False

    def add_micro_batch(self, loss: torch.Tensor, task_losses: Mapping[str, torch.Tensor], tokens: int,
                        example_task_ids: torch.Tensor) -> torch.Tensor:
        """Keep a micro-batch's weighted `loss` and `task_losses` (scalar tensors, not read here), its real tokens
        and its examples' task ids (host), and return the loss to back-propagate: `loss` (times 1) or, when the
        micro-batch is bad, NaN, which makes the step's optimizer step skip. Bad: a non-finite weighted loss or
        every task loss exactly zero (targets without tokens; not a weighting giving the tasks zero weight, as
        curriculum does before a task's start epoch)."""
        values = torch.stack([v.detach().float() for v in (loss, *task_losses.values())])
        self._losses.append(values)
        self._tasks.append(list(task_losses))
        self._tokens.append(tokens)
        self._example_task_ids.append(example_task_ids)
        bad = values[0].isfinite().logical_not() | values[1:].eq(0).all()
        return loss * torch.where(bad, math.nan, 1.0).to(loss.dtype)

    def set_drawn(self, examples: int) -> None:
        """This rank's examples drawn in the step (packed micro-batches hold varying numbers)."""
        self._drawn = examples

    def set_stop_requested(self, requested: bool) -> None:
        """Whether this rank was asked to stop (SIGTERM or a first Ctrl-C) during the step."""
        self._stop_requested = requested

    def reduce(self) -> StepFigures:
        """Read the step's losses from the device (one transfer), gather every rank's micro-batch figures (a
        collective: every rank calls it, after its last micro-batch) and return the step's figures: a micro-batch
        bad on any rank is left out on every rank. Each rank's good micro-batches are summed in order and the
        ranks' sums added in rank order."""
        every_rank = gather_over_ranks(self._rows()).tolist()  # [ranks][micro-batches + 1][1 + sums]
        bad = [any(rows[k][0] > 0 for rows in every_rank) for k in range(len(self._losses))]
        sums = [0.0] * (len(every_rank[0][-1]) - 1)  # (float64 adds in Python, in the order a tensor's took them)
        for rows in every_rank:
            own = [0.0] * len(sums)
            for row, is_bad in zip(rows[:-1], bad):
                if not is_bad:
                    own = [a + b for a, b in zip(own, row[1:])]
            sums = [total + (a + b) for total, a, b in zip(sums, own, rows[-1][1:])]
        return self._figures(sums, poisoned=any(bad))

    def _rows(self) -> torch.Tensor:
        """This rank's figures, one float64 row per micro-batch ([bad, its sums' increments]) and a last row with
        the examples drawn and the stop request; the losses are read from the device here, in one transfer. The rows
        are Python lists made a tensor once: writing a tensor's items one by one took ~2 ms a step of 12 tasks."""
        T = len(self.task_names)
        values = torch.cat(self._losses).tolist() if self._losses else []
        rows = []
        at = 0
        for tasks, tokens, example_task_ids in zip(self._tasks, self._tokens, self._example_task_ids):
            value, losses = values[at], values[at + 1:at + 1 + len(tasks)]
            at += 1 + len(tasks)
            task_losses, task_counts = [0.0] * T, [0.0] * T
            for name, loss in zip(tasks, losses):
                task_losses[self._index[name]] = loss
                task_counts[self._index[name]] = 1.0
            bad = 1.0 if not math.isfinite(value) or not any(losses) else 0.0
            rows.append([bad, *task_losses, *task_counts, sum(losses) / len(losses), value, 1.0, 0.0, tokens, 0.0,
                         *torch.bincount(example_task_ids, minlength=T).tolist()])
        last = [0.0] * (1 + 3 * T + 6)
        last[1 + 2 * T + 3] = 1.0 if self._stop_requested else 0.0
        last[1 + 2 * T + 5] = self._drawn
        return torch.tensor(rows + [last], dtype=torch.float64)

    def _figures(self, s: List[float], poisoned: bool) -> StepFigures:
        """The figures of the step's sums `s` over the ranks."""
        T = len(self.task_names)
        good = int(s[2 * T + 2])
        return StepFigures(
            task_loss={name: s[i] / s[T + i] for i, name in enumerate(self.task_names) if s[T + i] > 0},
            loss=s[2 * T] / good if good else float("nan"),
            weighted_loss=s[2 * T + 1] / good if good else float("nan"),
            good=good, tokens=int(s[2 * T + 4]), drawn=s[2 * T + 5],
            task_examples={name: int(s[2 * T + 6 + i]) for i, name in enumerate(self.task_names) if s[2 * T + 6 + i]},
            stop_requested=s[2 * T + 3] > 0, poisoned=poisoned)
