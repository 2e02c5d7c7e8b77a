"""Checkpoint selection on held-in validation (`training.keep_best`), as T0 chose its checkpoints: never on
the held-out tasks, which must stay unseen."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping, Optional

#: the periodic validation figures a run can select on, and whether higher is better
METRICS = {"val_score": True, "val_loss": False}


@dataclass
class BestValidation:
    """The step whose mean over tasks of `metric` (`val_score`: held-in exact match, higher is better;
    `val_loss`: held-in loss, lower is better) is the best so far; a tie keeps the earlier step."""

    metric: str
    value: Optional[float] = None
    step: Optional[int] = None

    def task_mean(self, results: Mapping[str, Mapping[str, float]]) -> float:
        """The mean over tasks of this metric in validation `results` ({"val_score": {task: x}, ...})."""
        per_task = results[self.metric]
        return sum(per_task.values()) / len(per_task)

    def update(self, step: int, value: float) -> bool:
        """Take the task mean of `step`'s validation; True when it is the new best (a non-finite mean never is)."""
        if not math.isfinite(value):
            return False
        higher_is_better = METRICS[self.metric]
        if self.value is not None and not (value > self.value if higher_is_better else value < self.value):
            return False
        self.value, self.step = value, step
        return True

    def validations_since_best(self, step: int, validate_every: int) -> int:
        """How many validations (every `validate_every` steps) have passed since the best one, up to and
        including `step`'s; all of them when none has been taken yet."""
        return (step - (self.step or 0)) // validate_every

    def state_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: Optional[Mapping[str, Any]]) -> None:
        """Restore a saved best (one selected on another metric is not comparable: it is dropped)."""
        if state and state.get("metric") == self.metric:
            self.value, self.step = state["value"], state["step"]
