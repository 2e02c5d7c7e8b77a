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
    stale: int = 0  # validations taken since the best one (all of them while there is none)

    def task_mean(self, results: Mapping[str, Mapping[str, float]]) -> float:
        """The mean over tasks of this metric in validation `results` ({"val_score": {task: x}, ...})."""
        per_task = results[self.metric]
        return sum(per_task.values()) / len(per_task)

    def update(self, step: int, value: float) -> bool:
        """Take the task mean of `step`'s validation; True when it is the new best (a non-finite mean never is)."""
        higher_is_better = METRICS[self.metric]
        if not math.isfinite(value) or (
                self.value is not None and not (value > self.value if higher_is_better else value < self.value)):
            self.stale += 1
            return False
        self.value, self.step, self.stale = value, step, 0
        return True

    def state_dict(self) -> Dict[str, Any]:
        """The metric, best value and step, and the validations since, as plain data."""
        return asdict(self)

    def load_state_dict(self, state: Optional[Mapping[str, Any]]) -> None:
        """Restore a saved best and its count of validations since (one selected on another metric is not
        comparable: it is dropped, and the count starts again)."""
        if state and state.get("metric") == self.metric:
            self.value, self.step, self.stale = state["value"], state["step"], int(state.get("stale", 0))
