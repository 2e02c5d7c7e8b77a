"""Reading validation feedback out of `update()` stats."""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

from t2t_mtl.sampling.errors import SamplingError

#: stats key -> True when higher is better ("loss": the per-task training losses the engine feeds every step)
METRICS = {"val_score": True, "val_loss": False, "loss": False}


def check_metric(metric: str) -> str:
    """`metric` when it is one of `METRICS`; else a `SamplingError` listing them."""
    if metric not in METRICS:
        raise SamplingError(f"sampling.metric: unknown feedback metric {metric!r}; valid are {', '.join(METRICS)}")
    return metric


def read_scores(stats: Mapping[str, Any], metric: str, tasks: list[str]) -> Optional[dict[str, float]]:
    """{task: value} of `stats[metric]`, validated (known tasks, finite numbers); None when absent."""
    values = stats.get(metric)
    if not values:
        return None
    scores = {}
    for task, value in values.items():
        if task not in tasks:
            raise SamplingError(f"{metric} given for task {task!r}, which is not in the mixture")
        value = float(value)
        if not math.isfinite(value):
            raise SamplingError(f"task {task!r} has {metric} {value}: it must be a finite number")
        scores[task] = value
    return scores


def improvement(new: float, old: float, metric: str) -> float:
    """How much `new` is better than `old` (positive = better) for this metric's direction."""
    return new - old if METRICS[metric] else old - new
