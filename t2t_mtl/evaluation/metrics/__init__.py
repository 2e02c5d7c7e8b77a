"""Metrics shipped as local `evaluate` modules (`metrics/<name>/<name>.py`), loadable offline, and metrics that a
Python function computes (`register_metric`, seqio's `metric_fns`; e.g. from a task module).

`load_metric(name)` returns the `evaluate.Metric` for a name or alias (e.g. promptsource's "Accuracy");
`METRICS[name]` says what the metric consumes (`kind`), which of its outputs is the task score
(`primary`), the factor that puts that score on a 0-100 scale (`scale`), what a random pick among the answer
choices scores on it (`chance`) and whether always giving one answer is a meaningful baseline (`majority`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
import math
import numbers
import operator
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

from t2t_mtl.evaluation.errors import MetricRegistrationError, UnknownMetricError

if TYPE_CHECKING:  # evaluate (and the datasets it imports) loads with the first metric, not with this module: predict
    import evaluate  # and the CLI's other commands compute none

METRICS_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class MetricSpec:
    """How to call one metric module.

    kind: "label" (int label ids), "group_label" (int label ids scored per group of examples: the task's
    `group_by`), "number" (floats), "text" (str predictions, list-of-str references),
    "target" (str predictions, the target str), "tags" (tag sequences), "choice_scores" (chosen index,
    per-choice target scores).
    chance: "uniform" — the expected score of a uniformly random answer choice (1/#choices per example for
    accuracy/exact match, the mean target score for multiple_choice_grade); "zero" — random guessing scores 0
    in expectation (Matthews correlation); None — no chance level on this metric's scale.
    majority: False where a constant prediction has no defined score (correlations).
    function: a registered metric's function (`register_metric`), computed in place of a module (`module` None).
    """

    module: Optional[str]
    kind: str
    primary: str
    scale: float = 100.0
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    chance: Optional[str] = None
    majority: bool = True
    function: Optional[Callable[..., Mapping[str, Any]]] = None


METRICS: dict[str, MetricSpec] = {
    "accuracy": MetricSpec("accuracy", "label", "accuracy", chance="uniform"),
    "f1": MetricSpec("f1", "label", "f1", kwargs={"average": "binary"}),
    "f1_macro": MetricSpec("f1", "label", "f1", kwargs={"average": "macro"}),
    "group_exact_match": MetricSpec("group_exact_match", "group_label", "group_exact_match"),
    "matthews_correlation": MetricSpec("matthews_correlation", "label", "matthews_correlation", chance="zero"),
    "pearsonr": MetricSpec("pearsonr", "number", "pearsonr", majority=False),
    "spearmanr": MetricSpec("spearmanr", "number", "spearmanr", majority=False),
    "exact_match": MetricSpec("exact_match", "text", "exact_match", chance="uniform"),
    "squad": MetricSpec("squad", "text", "f1"),
    "squad_exact_match": MetricSpec("squad", "text", "exact_match"),
    "entity_f1": MetricSpec("entity_f1", "target", "f1"),
    "rouge": MetricSpec("rouge", "text", "rougeL"),
    "bleu": MetricSpec("bleu", "text", "bleu", scale=1.0),
    "bleu_zh": MetricSpec("bleu", "text", "bleu", scale=1.0, kwargs={"tokenize": "zh"}),  # sacreBLEU's tokenizers
    "bleu_intl": MetricSpec("bleu", "text", "bleu", scale=1.0, kwargs={"tokenize": "intl"}),
    "bleu_char": MetricSpec("bleu", "text", "bleu", scale=1.0, kwargs={"tokenize": "char"}),
    "seqeval": MetricSpec("seqeval", "tags", "f1"),
    "multiple_choice_grade": MetricSpec("multiple_choice_grade", "choice_scores", "multiple_choice_grade",
                                        chance="uniform"),
}

#: the metrics this package ships (the others in METRICS were registered by `register_metric`)
SHIPPED = frozenset(METRICS)
#: what a metric may consume (MetricSpec.kind)
KINDS = ("label", "group_label", "number", "text", "target", "tags", "choice_scores")

ALIASES: dict[str, str] = {
    "acc": "accuracy",
    "f1_binary": "f1",
    "macro_f1": "f1_macro",
    "mcc": "matthews_correlation",
    "matthews_corrcoef": "matthews_correlation",
    "pearson": "pearsonr",
    "pearson_correlation": "pearsonr",
    "spearman": "spearmanr",
    "spearman_correlation": "spearmanr",
    "em": "exact_match",
    "group_em": "group_exact_match",
    "squad_f1": "squad",
    "squad_em": "squad_exact_match",
    "ner_f1": "entity_f1",
    "sacrebleu": "bleu",
    "span_f1": "seqeval",
    "mc_grade": "multiple_choice_grade",
}


def _metric_key(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def canonical_metric_name(name: str) -> str:
    """Map a metric name or alias ("Accuracy", "Pearson Correlation", "sacrebleu") to its METRICS key."""
    key = ALIASES.get(_metric_key(name), _metric_key(name))
    if key not in METRICS:
        known = ", ".join(sorted(SHIPPED))
        registered = sorted(set(METRICS) - SHIPPED)
        also = f"; registered: {', '.join(registered)}" if registered else ""
        from task_registry.errors import close_matches

        close = close_matches(_metric_key(name), [*METRICS, *ALIASES], n=1, cutoff=0.6, substrings=False)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownMetricError(f"unknown metric {name!r}{hint}: the shipped metrics are {known} "
                                 f"(aliases: {', '.join(sorted(ALIASES))}){also}; a Python function becomes a metric "
                                 f"through t2t_mtl.evaluation.register_metric, called in a module that a training "
                                 f"config's data.task_modules or a command's --task-module imports")
    return key


def register_metric(name: str, function: Callable[..., Mapping[str, Any]], *, kind: str = "text",
                    primary: Optional[str] = None, scale: float = 100.0, chance: Optional[str] = None,
                    majority: bool = True, overwrite: bool = False) -> str:
    """Make `function(predictions=[...], references=[...]) -> {output: number}` the metric `name` (seqio's
    `metric_fns`), usable wherever a shipped metric's name is (`Task(metrics=...)`, YAML `metrics:`); returns its
    METRICS key. `kind` says what it is given (as MetricSpec: "text" — str predictions, each a list of str gold
    answers; "label" — int predicted and gold label ids; ...); `primary` names the output that is the task's score
    (default: the key), `scale` puts it on 0-100 (100 for a fraction, 1 for a percentage; a primary output the scale
    puts outside -100..100 is refused when computed, unless the scale is 1). Register it on every rank and in `eval` —
    from a task module (`data.task_modules`, `--task-module`). A shipped name or alias, a name registered to another
    function (unless `overwrite`), an unknown kind or a function its signature says cannot take the keywords it is
    called with (predictions, references; groups for group_label) is a `MetricRegistrationError`."""
    if not callable(function):
        raise MetricRegistrationError(f"register_metric({name!r}): give a function predictions, references -> "
                                      f"{{output: number}}, got {function!r}")
    key = _metric_key(name) if isinstance(name, str) else ""
    if not key:
        raise MetricRegistrationError(f"register_metric: give the metric a name, got {name!r}")
    if key in SHIPPED or key in ALIASES:
        raise MetricRegistrationError(f"register_metric({name!r}): {key!r} is a shipped metric (or an alias of one); "
                                      f"give yours another name")
    if kind not in KINDS:
        raise MetricRegistrationError(f"register_metric({name!r}): kind {kind!r} is none of {', '.join(KINDS)}")
    if problem := _signature_problem(function, kind):
        raise MetricRegistrationError(f"register_metric({name!r}): {problem}")
    if chance not in (None, "uniform", "zero"):
        raise MetricRegistrationError(f"register_metric({name!r}): chance must be None, 'uniform' or 'zero', got "
                                      f"{chance!r}")
    taken = METRICS.get(key)
    if taken is not None and taken.function is not function and not overwrite:
        raise MetricRegistrationError(f"register_metric({name!r}): {key!r} is already registered to "
                                      f"{taken.function!r}; pass overwrite=True to replace it")
    METRICS[key] = MetricSpec(None, kind, primary or key, scale=scale, chance=chance, majority=majority,
                              function=function)
    return key


def _signature_problem(function: Callable[..., Any], kind: str) -> Optional[str]:
    """Why `function` cannot be called as a metric of `kind` is (keywords `predictions`, `references`, and `groups`
    for "group_label"), from its signature; None when it can, or has no signature to read."""
    from task_registry.signatures import binding_error

    keywords = ["predictions", "references", *(["groups"] if kind == "group_label" else [])]
    problem = binding_error(function, **dict.fromkeys(keywords, []))
    if problem is None:
        return None
    signature, error = problem
    return (f"the function {getattr(function, '__qualname__', function)!r}{signature} cannot be called with the "
            f"keywords {', '.join(keywords)} a metric is given ({error}); name its parameters so (seqio's metric_fns "
            f"take targets, predictions: write predictions, references)")


def metric_spec(name: str) -> MetricSpec:
    """The MetricSpec of a metric name or alias."""
    return METRICS[canonical_metric_name(name)]


def task_metric_problems(task: Any) -> list[tuple[str, str]]:
    """The `task_registry.TaskCheck` of a task's `metrics`: one ("metrics", message) per metric that no shipped
    module computes, or that scores groups of examples while the task has no `group_by`."""
    problems = []
    for metric in task.metrics:
        try:
            spec = metric_spec(metric)
        except UnknownMetricError as error:
            problems.append(("metrics", f"task {task.name!r}: {error}"))
            continue
        if spec.kind == "group_label" and task.group_by is None:
            problems.append(("metrics", f"task {task.name!r}: metric {metric!r} scores groups of examples and the "
                                        f"task has no `group_by` (a Jinja expression naming each row's group, e.g. "
                                        f"idx.question)"))
    return problems


@functools.lru_cache(maxsize=None)
def _load_module(module: str) -> evaluate.EvaluationModule:
    import evaluate

    return evaluate.load(str(METRICS_DIR / module), keep_in_memory=True)


def load_metric(name: str) -> evaluate.EvaluationModule:
    """Load the shipped `evaluate` module for a metric name or alias, offline (no hub access); a registered
    function's metric has none (`compute_metric` computes it)."""
    spec = metric_spec(name)
    if spec.module is None:
        raise UnknownMetricError(f"metric {name!r} is a function registered by register_metric, not an evaluate "
                                 f"module: compute it with compute_metric")
    return _load_module(spec.module)


def compute_metric(name: str, predictions: Sequence[Any], references: Sequence[Any],
                   **kwargs: Any) -> dict[str, float]:
    """Compute a metric (its default keyword arguments, overridden by `kwargs`) on one or more predictions, each with
    its reference, and return its results. A shipped module's inputs of the wrong shape that `evaluate` would refuse
    naming no metric (a "text" reference or "tags" given as one string, not a list) or misread (a label id or chosen
    index that is no whole number, which it would cut to one) are a ValueError naming it."""
    spec = metric_spec(name)
    if len(predictions) != len(references):
        raise ValueError(f"metric {name!r}: {len(predictions)} predictions for {len(references)} references")
    if not predictions:  # (some metrics scored nothing as 0.0, others failed deep in sklearn or nltk)
        raise ValueError(f"metric {name!r}: no predictions to score; give at least one prediction and reference")
    arguments = {**spec.kwargs, **kwargs}
    if spec.function is None:
        if problem := (_list_given_as_string(spec.kind, predictions, references)
                       or _index_not_whole(spec.kind, predictions, references)):
            raise ValueError(f"metric {name!r}: {problem}")
        result = load_metric(name).compute(predictions=list(predictions), references=list(references), **arguments)
        return {key: float(value) for key, value in result.items()}
    return _function_result(name, spec, list(predictions), list(references), arguments)


def _list_given_as_string(kind: str, predictions: Sequence[Any], references: Sequence[Any]) -> Optional[str]:
    """Where a module of `kind` takes a list per example (a "text" reference: its gold answers; "tags": its tags) and
    is given one string, which `evaluate` refuses naming no metric: which one, and the list to write; else None."""
    sides = {"text": [("reference", references, "gold answers")],
             "tags": [("prediction", predictions, "tags"), ("reference", references, "tags")]}.get(kind, [])
    for side, values, items in sides:
        at = next((index for index, value in enumerate(values) if isinstance(value, str)), None)
        if at is not None:
            written = [values[at]] if kind == "text" else values[at].split()
            return (f"{side} {at} is the string {values[at]!r}; a {side} is the list of an example's {items}: write "
                    f"{written!r}")
    return None


def _index_not_whole(kind: str, predictions: Sequence[Any], references: Sequence[Any]) -> Optional[str]:
    """Where a module of `kind` takes label ids ("label", "group_label") or a chosen index ("choice_scores") and is
    given a value that is no whole number, which `evaluate`'s int64 column would cut (1.5 read as label 1) or refuse
    naming no metric (a string): which one; else None."""
    sides = {"label": [("prediction", predictions), ("reference", references)],
             "group_label": [("prediction", predictions), ("reference", references)],
             "choice_scores": [("prediction", predictions)]}.get(kind, [])
    for side, values in sides:
        at = next((index for index, value in enumerate(values) if not _whole_number(value)), None)
        if at is not None:
            what = "a choice index" if kind == "choice_scores" else "a label id"
            return (f"{side} {at} is {values[at]!r}, not {what}: give whole numbers (-1 for a prediction outside the "
                    f"answer choices)")
    return None


def _whole_number(value: Any) -> bool:
    """An int (Python's, numpy's: anything with `__index__`) or a finite real number with no fractional part."""
    try:
        operator.index(value)
        return True
    except TypeError:
        return isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer()


def _function_result(name: str, spec: MetricSpec, predictions: list, references: list,
                     arguments: Mapping[str, Any]) -> dict[str, float]:
    """A registered function's results, checked: a mapping of numbers holding its primary output. A failure names
    the metric and its function."""
    where = f"metric {name!r} (function {getattr(spec.function, '__qualname__', spec.function)!r})"
    try:
        result = spec.function(predictions=predictions, references=references, **arguments)
    except Exception as error:  # the user's function: named with the metric
        raise ValueError(f"{where} failed: {type(error).__name__}: {error}") from error
    if not isinstance(result, Mapping) or spec.primary not in result:
        raise ValueError(f"{where} must return a mapping of output name to number holding {spec.primary!r} (its "
                         f"primary output), got {result!r}")
    try:
        values = {str(key): float(value) for key, value in result.items()}
    except (TypeError, ValueError):
        raise ValueError(f"{where} must return numbers, got {result!r}") from None
    if not math.isfinite(values[spec.primary]):
        raise ValueError(f"{where} returned {spec.primary!r} = {values[spec.primary]}, not a finite number")
    scaled = values[spec.primary] * spec.scale
    if spec.scale != 1.0 and abs(scaled) > 100.0 * (1 + 1e-9):  # reports read scores as 0-100 (a baseline of 2500)
        raise ValueError(f"{where} returned {spec.primary!r} = {values[spec.primary]:g}, which its scale "
                         f"{spec.scale:g} puts at {scaled:g} on the reports' 0-100 scale; scale={spec.scale:g} is for "
                         f"a fraction in [0, 1]: register a function that returns a percentage, as seqio's metric_fns "
                         f"do, with register_metric(..., scale=1.0)")
    return values
