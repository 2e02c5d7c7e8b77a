"""Aggregates over templates and tasks (T0 protocol), and side-by-side comparison of several models.

A task's score is the median over its templates of the template scores (0-100, the task's primary
metric); the mean, min and max are reported beside it. Over tasks: the decaScore-style sum of the task
scores (decaNLP sums its ten 0-100 task metrics) and the macro average (their mean), beside the macro average
of the same tasks' chance levels (none when a scored task has no chance level, e.g. a generation task: an
average over some of the tasks would not compare with the macro average over all of them). Templates with no
examples left (score None) and tasks with no scored template are listed, not averaged; so is a non-finite
score (NaN from a report written before correlations were guarded), which is never averaged. With no task
scored, the decaScore is None as the macro average is (no score, not a score of 0).
"""
from __future__ import annotations

import dataclasses
import json
import math
import statistics
from typing import Any, Optional, Sequence

from t2t_mtl.evaluation.results import EvalReport, TemplateResult


@dataclasses.dataclass
class TaskSummary:
    """One task's template scores summarised (`summarize_task`), on the primary metric's 0-100 scale.

    `median`/`mean`/`min`/`max` are over the `num_scored_templates` templates with a finite score (`None` when
    there are none); the baselines are the medians of the templates' finite ones; `num_examples` is the largest
    template's.
    """

    task: str
    primary_metric: str
    num_templates: int
    num_scored_templates: int
    median: Optional[float]
    mean: Optional[float]
    min: Optional[float]
    max: Optional[float]
    majority_baseline: Optional[float]
    chance_baseline: Optional[float]
    num_examples: int

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain data."""
        return dataclasses.asdict(self)


def finite(value: Any) -> bool:
    """True for a real number that is not NaN or infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _median(values: Sequence[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def summarize_task(results: Sequence[TemplateResult]) -> TaskSummary:
    """Median/mean/min/max over the templates of one task (all `results` must be of that task); its
    `primary_metric` is the templates' `metric_label`, every one, comma-separated, when they differ (promptsource
    metadata can score one template by accuracy and another by BLEU: the median then mixes them)."""
    if not results:
        raise ValueError("summarize_task needs at least one template result")
    tasks = {r.task for r in results}
    if len(tasks) != 1:
        raise ValueError(f"summarize_task got results of several tasks: {sorted(tasks)}")
    scores = [r.score for r in results if finite(r.score)]
    majority = [r.majority_baseline for r in results if finite(r.majority_baseline)]
    chance = [r.chance_baseline for r in results if finite(r.chance_baseline)]
    return TaskSummary(
        task=results[0].task, primary_metric=", ".join(dict.fromkeys(r.metric_label for r in results)),
        num_templates=len(results), num_scored_templates=len(scores), median=_median(scores),
        mean=statistics.fmean(scores) if scores else None, min=min(scores) if scores else None,
        max=max(scores) if scores else None, majority_baseline=_median(majority), chance_baseline=_median(chance),
        num_examples=max(r.num_examples for r in results))


def summarize(report: EvalReport) -> dict[str, Any]:
    """{"tasks": {task: TaskSummary}, "decascore", "macro_average", "chance", "num_tasks", "unscored_tasks"};
    "decascore", "macro_average" and "chance" are None when no task is scored."""
    tasks = {task: summarize_task(report.for_task(task)) for task in report.tasks()}
    scored = [s for s in tasks.values() if s.median is not None]
    medians = [s.median for s in scored]
    chance = [s.chance_baseline for s in scored]
    return {
        "tasks": tasks,
        "decascore": sum(medians) if medians else None,
        "macro_average": statistics.fmean(medians) if medians else None,
        "chance": statistics.fmean(chance) if chance and None not in chance else None,
        "num_tasks": len(medians),
        "unscored_tasks": [name for name, s in tasks.items() if s.median is None],
    }


#: evaluation settings that leave a dense model's scores as they are: how many examples share a forward pass, and
#: whether report.json keeps the predictions
SCORE_NEUTRAL_SETTINGS = ("batch_size", "keep_predictions")


def dropped_over_capacity(reports: Sequence[EvalReport]) -> bool:
    """Whether the MoE layers of a model of `reports` dropped (token, slot) choices over expert capacity while
    scoring: which ones they drop depends on the examples a batch holds, so there `batch_size` changes scores (a
    model that dropped none in any report scored as a dropless one does, whatever its batches)."""
    return any(result.num_moe_dropped for report in reports for result in report.results)


def differing_settings(reports: Sequence[EvalReport]) -> dict[str, dict[str, Any]]:
    """The settings that change scores (all but `SCORE_NEUTRAL_SETTINGS`; `batch_size` too where
    `dropped_over_capacity`) and differ between `reports`, as {key: {model name: value}} in settings order; only
    keys every report records are compared (a report built in Python may record none), and `split` only where a task
    they all score was scored on different splits (the default split is recorded as None)."""
    neutral = [key for key in SCORE_NEUTRAL_SETTINGS if key != "batch_size" or not dropped_over_capacity(reports)]
    keys = [key for key in dict.fromkeys(key for r in reports for key in r.settings)
            if key not in neutral and all(key in r.settings for r in reports)]
    differing = {key: {r.name: r.settings[key] for r in reports} for key in keys
                 if len({json.dumps(r.settings[key], sort_keys=True, default=str) for r in reports}) > 1}
    if "split" in differing and _same_splits_scored(reports):  # (`--split validation` and the default, validation)
        del differing["split"]
    return differing


def _same_splits_scored(reports: Sequence[EvalReport]) -> bool:
    """Whether every task all `reports` score was scored on one split in all of them (at least one such task)."""
    splits = [{r.task: r.split for r in report.results} for report in reports]
    shared = set(splits[0]).intersection(*splits[1:])
    return bool(shared) and all(len({scored[task] for scored in splits}) == 1 for task in shared)


def compare(reports: Sequence[EvalReport]) -> dict[str, Any]:
    """Task medians of several models side by side: {"models", "tasks": {task: {model: median}}, ...}.

    A task missing from a model's report is `None` for that model; the decaScore and macro average of
    each model cover its own scored tasks, `common_tasks` lists those every model scored and
    `common_decascore` / `common_macro_average` are each model's over those alone (None where there are none);
    `differing_settings` is `differing_settings(reports)`.
    """
    names = [r.name for r in reports]
    if len(set(names)) != len(names):
        raise ValueError(f"compare: model names must be unique, got {names}")
    summaries = {r.name: summarize(r) for r in reports}
    order = list(dict.fromkeys(task for r in reports for task in r.tasks()))
    table = {task: {name: (summaries[name]["tasks"][task].median if task in summaries[name]["tasks"] else None)
                    for name in names} for task in order}
    common = [task for task, row in table.items() if all(v is not None for v in row.values())]
    return {
        "models": names,
        "tasks": table,
        "decascore": {name: summaries[name]["decascore"] for name in names},
        "macro_average": {name: summaries[name]["macro_average"] for name in names},
        "common_tasks": common,
        "common_decascore": {name: sum(table[t][name] for t in common) if common else None for name in names},
        "common_macro_average": {name: statistics.fmean(table[t][name] for t in common) if common else None
                                 for name in names},
        "differing_settings": differing_settings(reports),
    }
