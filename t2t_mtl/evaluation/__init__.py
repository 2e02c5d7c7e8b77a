"""Zero-shot evaluation (T0 protocol): rank classification or generation, shipped offline metrics,
per-template results with median/mean per task, decaScore and macro average, JSON/Markdown/PNG reports,
sharded over ranks; and `predict` for free-form inputs.
"""
from t2t_mtl.evaluation.aggregate import TaskSummary, compare, summarize, summarize_task
from t2t_mtl.evaluation.checkpoint import checkpoint_meta, load_checkpoint
from t2t_mtl.evaluation.errors import (CheckpointError, EvaluationError, MetricRegistrationError, NoAnswerChoicesError,
                                       RankFailedError, RanksStoppedError, UnknownMetricError)
from t2t_mtl.evaluation.eval_settings import EvalSettings
from t2t_mtl.evaluation.generation import generate_texts
from t2t_mtl.evaluation.metrics import METRICS, compute_metric, load_metric, register_metric
from t2t_mtl.evaluation.predict import Prediction, PredictRequest, predict, read_requests
from t2t_mtl.evaluation.rank_classification import rank_classify, score_choices
from t2t_mtl.evaluation.report import (comparison_markdown, plot_task, read_report, report_to_dict, to_markdown,
                                       write_report)
from t2t_mtl.evaluation.results import EvalReport, TemplateResult
from t2t_mtl.evaluation.runner import evaluate_tasks, init_distributed_from_env
from t2t_mtl.evaluation.scoring import score_predictions

__all__ = [
    "TaskSummary", "compare", "summarize", "summarize_task", "checkpoint_meta", "load_checkpoint",
    "CheckpointError", "EvaluationError", "MetricRegistrationError", "NoAnswerChoicesError", "RankFailedError",
    "RanksStoppedError", "UnknownMetricError",
    "generate_texts", "METRICS", "compute_metric", "load_metric", "register_metric", "rank_classify", "score_choices",
    "comparison_markdown",
    "plot_task", "read_report", "report_to_dict", "to_markdown", "write_report", "EvalReport", "TemplateResult",
    "EvalSettings", "evaluate_tasks", "init_distributed_from_env", "score_predictions", "Prediction",
    "PredictRequest", "predict", "read_requests",
]
