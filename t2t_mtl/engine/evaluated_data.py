"""The warnings a run gives of the data its zero-shot evaluation (the `evaluation:` section) reads: an evaluated task
reading what a trained task trains on, and, for `held_out: true`, two evaluated tasks reading the same data. `train`
prints them as it starts, `mixture show --config` before its table."""
from __future__ import annotations

from typing import List, Sequence

from t2t_mtl.config import Config
from t2t_mtl.evaluation.shared_data import repeated_data_warnings, shared_data_warnings


def evaluated_data_warnings(cfg: Config, evaluated: Sequence[str], trained: Sequence[str]) -> List[str]:
    """The run's warnings, without their "warning: ", of the tasks of `evaluated` (its evaluation plan's) whose data
    a task of `trained` trains on (`shared_data_warnings`), then, where `cfg.evaluation` sets `held_out` (tasks that
    evaluation.tasks names together are the user's choice), of the ones reading an earlier one's data
    (`repeated_data_warnings`); each ends in what to change in the config."""
    warnings = shared_data_warnings(evaluated, trained, "drop it from the evaluation section (or its cluster from "
                                    "data.held_out_clusters), or that task from the training")
    if (cfg.evaluation or {}).get("held_out"):
        warnings += repeated_data_warnings(evaluated, "give one of them another cluster, or name the tasks to score "
                                                      "in evaluation.tasks with held_out: false")
    return warnings
