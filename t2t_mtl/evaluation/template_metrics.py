"""Which metrics score a template (`task_metrics`): the task's own, else its promptsource metadata's, else accuracy
or exact match; and of those, the ones that can score its rendered examples (`applicable_metrics`)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from t2t_mtl.evaluation.errors import EvaluationError
from t2t_mtl.evaluation.metrics import UnknownMetricError, canonical_metric_name
from t2t_mtl.evaluation.rendered_examples import EvalExample
from t2t_mtl.evaluation.scoring import metric_problem

if TYPE_CHECKING:  # task_registry (and datasets) load only when a task is resolved
    from task_registry.task import Task
    from task_registry.template import Template


def task_metrics(task: Task, template: Template) -> tuple[list[str], list[str]]:
    """(metrics to compute, metric names with no shipped module).

    The task's `metrics` (an unknown one is an error), else the template's promptsource metadata metrics
    (unknown ones such as "Other" are reported, not computed), else accuracy for a template with answer
    choices and exact match otherwise (`default_metrics`).
    """
    declared = [m if isinstance(m, str) else getattr(m, "name", str(m)) for m in (getattr(task, "metrics", ()) or ())]
    if declared:
        try:
            return list(dict.fromkeys(canonical_metric_name(m) for m in declared)), []
        except UnknownMetricError as error:
            raise UnknownMetricError(f"task {task.name!r}: {error}") from None
    metadata = getattr(template, "metadata", None)
    known, unknown = [], []
    for name in (getattr(metadata, "metrics", None) or []):
        try:
            known.append(canonical_metric_name(name))
        except UnknownMetricError:
            unknown.append(name)
    if known:
        return list(dict.fromkeys(known)), unknown
    return default_metrics(template), unknown


def default_metrics(template: Template) -> list[str]:
    """Accuracy for a template with answer choices, exact match otherwise."""
    return ["accuracy"] if template.answer_choices is not None else ["exact_match"]


def applicable_metrics(task: Task, template: Template, metrics: Sequence[str], examples: Sequence[EvalExample]
                       ) -> tuple[list[str], dict[str, str]]:
    """(metrics to compute, {metric: why it is skipped}) for a template's rendered examples.

    A metric that cannot score the examples (`scoring.metric_problem`: a non-numeric target under a
    correlation, binary F1 without answer choices, ...) is an `EvaluationError` naming the task, template and
    metric when the task declares it in `metrics` — a contract — and is skipped with its reason when it comes
    from the template's promptsource metadata, a hint (promptsource's app_reviews lists Spearman correlation
    on templates with text targets). When every metadata metric is skipped, the defaults are used.
    """
    declared = bool(getattr(task, "metrics", ()) or ())
    targets, choices = [e.targets for e in examples], [e.answer_choices for e in examples]
    rows = [e.row_index for e in examples]
    skipped: dict[str, str] = {}
    for metric in metrics:
        problem = metric_problem(metric, targets, choices, rows=rows, groups=[e.group for e in examples])
        if problem and declared:
            raise EvaluationError(f"task {task.name!r} template {template.name!r}: metric {metric!r} cannot score "
                                  f"it: {problem} (or drop {metric!r} from the task's metrics)")
        if problem:
            skipped[metric] = problem
    kept = [m for m in metrics if m not in skipped]
    return (kept or default_metrics(template)), skipped
