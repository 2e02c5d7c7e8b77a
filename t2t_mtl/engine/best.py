"""Checkpoint selection on held-in validation (`training.keep_best`), as T0 chose its checkpoints: never on
the held-out tasks, which must stay unseen."""
from __future__ import annotations

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

    def update(self, step: int, results: Mapping[str, Mapping[str, float]]) -> bool:
        """Take the validation `results` ({"val_score": {task: x}, "val_loss": {...}}) of `step`; True when
        they are the new best."""
        per_task = results[self.metric]
        value = sum(per_task.values()) / len(per_task)
        higher_is_better = METRICS[self.metric]
        if self.value is not None and not (value > self.value if higher_is_better else value < self.value):
            return False
        self.value, self.step = value, step
        return True

    def state_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: Optional[Mapping[str, Any]]) -> None:
        """Restore a saved best (one selected on another metric is not comparable: it is dropped)."""
        if state and state.get("metric") == self.metric:
            self.value, self.step = state["value"], state["step"]
