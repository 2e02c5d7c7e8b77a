"""Zero-shot evaluation (T0 protocol): rank classification or generation, shipped offline metrics,
per-template results with median/mean per task, decaScore and macro average, JSON/Markdown/PNG reports,
sharded over ranks; and `predict` for free-form inputs.

The names below are importable from here (`from t2t_mtl.evaluation import evaluate_tasks`); each is the object of the
module it is defined in, which is imported on first use: the modules that need no model (metrics, reports,
settings) load without torch or transformers, and so do the commands using them alone (`t2t-mtl list metrics`,
`compare`, `tasks validate`).
"""
from __future__ import annotations

import sys
import types
from typing import Any

from t2t_mtl.lazy_package import lazy_exports

#: public name -> the module that defines it (imported when the name is first read: PEP 562)
_EXPORTS = {
    **dict.fromkeys(("TaskSummary", "compare", "summarize", "summarize_task"), "t2t_mtl.evaluation.aggregate"),
    **dict.fromkeys(("checkpoint_meta", "load_checkpoint"), "t2t_mtl.evaluation.checkpoint"),
    **dict.fromkeys(("CheckpointError", "EvaluationError", "MetricRegistrationError", "NoAnswerChoicesError",
                     "RankFailedError", "RanksStoppedError", "UnknownMetricError"), "t2t_mtl.evaluation.errors"),
    "EvalSettings": "t2t_mtl.evaluation.eval_settings",
    "generate_texts": "t2t_mtl.evaluation.generation",
    **dict.fromkeys(("METRICS", "compute_metric", "load_metric", "register_metric"), "t2t_mtl.evaluation.metrics"),
    "predict": "t2t_mtl.evaluation.predict",
    **dict.fromkeys(("Prediction", "PredictRequest", "read_requests"), "t2t_mtl.evaluation.predict_requests"),
    **dict.fromkeys(("rank_classify", "score_choices"), "t2t_mtl.evaluation.rank_classification"),
    **dict.fromkeys(("comparison_markdown", "plot_task", "read_report", "report_to_dict", "to_markdown",
                     "write_report"), "t2t_mtl.evaluation.report"),
    **dict.fromkeys(("EvalReport", "TemplateResult"), "t2t_mtl.evaluation.results"),
    **dict.fromkeys(("evaluate_tasks", "init_distributed_from_env"), "t2t_mtl.evaluation.runner"),
    "score_predictions": "t2t_mtl.evaluation.scoring",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


class _EvaluationPackage(types.ModuleType):
    """This package's module type. Importing a submodule binds it on its package under its own name, and `predict`
    names both the function this package exports and the module defining it: where `t2t_mtl.evaluation.predict` is
    imported before the package's `predict` is read, the package keeps the function there, as it did when it imported
    every module at once."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and value.__name__ == _EXPORTS.get(name) == f"{__name__}.{name}":
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _EvaluationPackage
