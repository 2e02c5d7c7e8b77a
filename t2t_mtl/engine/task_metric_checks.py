"""The metrics of a run's tasks, checked before training: a Python-built task's `metrics` are first read when the run
evaluates it, after training (a YAML task's are checked when its folder loads)."""
from __future__ import annotations

from typing import Sequence

from t2t_mtl.config import ConfigError


def check_task_metrics(task_names: Sequence[str]) -> None:
    """Refuse a run task (trained or evaluated) whose `metrics` name one no module computes, or a group metric
    without its `group_by` (`task_metric_problems`, the check loading a YAML task makes), naming the task and the
    metric."""
    import task_registry
    from t2t_mtl.evaluation.metrics import task_metric_problems

    for name in dict.fromkeys(task_names):
        problems = task_metric_problems(task_registry.get_task(name))
        if problems:
            raise ConfigError(f"{problems[0][1]}; the run would meet it when it evaluates the task, after training: "
                              f"correct the task's `metrics`")
