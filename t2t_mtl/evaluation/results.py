"""Result records of an evaluation run: one `TemplateResult` per (task, template), an `EvalReport` per model."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from t2t_mtl.wording import counted


@dataclasses.dataclass(repr=False)
class TemplateResult:
    """Scores of one template of one task.

    `score` is the primary metric (`primary_metric`, the output `primary_key` of the first metric computed)
    on a 0-100 scale; `majority_baseline` is that metric for always predicting the most common target,
    `chance_baseline` what random guessing scores on it (see `baselines.baselines`), both `None` where they do
    not apply. `unsupported_metrics` names promptsource metadata metrics with no shipped module;
    `skipped_metrics` maps metadata metrics that cannot score this template to the reason.
    `num_skipped` rows rendered no target (promptsource's skip case) or no input and `num_errors` rows failed to
    render (first message in `error`); neither is in `num_examples`. `score` is `None` when no row was left.
    `incomplete_groups` counts the groups (the task's `group_by`) that group metrics left out because some of
    their rows were not scored (cut by `max_examples`, skipped or failed to render); when that leaves no group,
    group metrics are not in `metrics` and a group primary metric leaves `score` `None`. `num_truncated` of the
    `num_examples` inputs were longer than `max_input_length` tokens and scored on their beginning only (the task's
    `truncation_side` "right"), or on their end ("left": BIG-bench's tasks, as BIG-bench keeps it); k-shot
    (`num_shots` k), `num_fewer_shots` of them got fewer than k demonstrations (too few renderable rows in the
    demonstration split, or the rest did not fit `max_input_length`); `num_dropped_shots` demonstrations were dropped
    (from the front of their prompts) to fit it, and `shots_fit_length` is the limit that would hold every input with
    all of its drawn demonstrations (`None` when none was dropped). Scored by generation, `num_long_answers` of them
    have no gold answer that fits `max_new_tokens` tokens, where generation stops: none can be written whole. An MoE
    model routing by token with an expert capacity dropped `num_moe_dropped` of the `num_moe_choices` (token, slot)
    choices its layers routed while scoring (both 0 for any other model): a dropped choice gets no expert output.

    Its repr is one line (task, template, scores, counts), not its predictions.
    """

    task: str
    template: str
    split: str
    scoring: str
    num_examples: int
    metrics: dict[str, dict[str, float]]
    primary_metric: str
    primary_key: str
    score: Optional[float]
    majority_baseline: Optional[float] = None
    chance_baseline: Optional[float] = None
    num_skipped: int = 0
    num_errors: int = 0
    error: Optional[str] = None
    unsupported_metrics: list[str] = dataclasses.field(default_factory=list)
    skipped_metrics: dict[str, str] = dataclasses.field(default_factory=dict)
    incomplete_groups: int = 0
    num_truncated: int = 0
    truncation_side: str = "right"
    num_fewer_shots: int = 0
    num_dropped_shots: int = 0
    shots_fit_length: Optional[int] = None
    num_long_answers: int = 0
    num_moe_dropped: int = 0
    num_moe_choices: int = 0
    predictions: Optional[list[dict[str, Any]]] = None

    @property
    def metric_label(self) -> str:
        """What `score` is, for people: the primary metric's name, with `.primary_key` only where the key is another
        name (`accuracy`, `rouge.rougeL`, `f1_macro.f1`)."""
        if self.primary_key == self.primary_metric:
            return self.primary_metric
        return f"{self.primary_metric}.{self.primary_key}"

    def __repr__(self) -> str:
        """`TemplateResult('rte', 'does it follow that', accuracy 52.3, f1_macro 48.0, 277 examples)`: the primary
        score (`—` for none) and the other metrics' (`report.other_scores`), then the rows skipped and failed to
        render where there are any."""
        from t2t_mtl.evaluation.report import other_scores, score_text

        scores = {self.metric_label: self.score, **other_scores(self)}
        parts = [repr(self.task), repr(self.template), *(f"{name} {score_text(v)}" for name, v in scores.items()),
                 counted(self.num_examples, "example")]
        parts += [f"{self.num_skipped} skipped"] if self.num_skipped else []
        parts += [counted(self.num_errors, "render error")] if self.num_errors else []
        return f"TemplateResult({', '.join(parts)})"

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain data (the JSON form of a report)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TemplateResult":
        """The inverse of `to_dict`; a key that is not a field raises `TypeError`."""
        return cls(**data)


#: the most task medians an `EvalReport`'s repr lists (the rest are counted)
REPR_TASKS = 8


@dataclasses.dataclass(repr=False)
class EvalReport:
    """Every template result of one model, with the settings that produced them. `unseen_tasks` maps each evaluated
    task that a task-conditioned model (task-routed MoE, per-task LoRA) was not trained on to how it was served (the
    unseen-task route: model.moe.unseen_task_routing, the mean LoRA update).

    Its repr is one line (name, counts, task medians, macro average); a notebook shows its report.md tables
    (`to_markdown`)."""

    name: str
    results: list[TemplateResult]
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    unseen_tasks: dict[str, str] = dataclasses.field(default_factory=dict)

    def tasks(self) -> list[str]:
        """Task names in first-seen order."""
        return list(dict.fromkeys(r.task for r in self.results))

    def for_task(self, task: str) -> list[TemplateResult]:
        """The results of `task`, in report order."""
        return [r for r in self.results if r.task == task]

    def __repr__(self) -> str:
        """`EvalReport('NAME', 3 tasks, 7 templates, task medians {rte: 52.3, ...}, macro average 48.8)`: the first
        `REPR_TASKS` tasks' medians, the others counted; an unscored one `—`."""
        from t2t_mtl.evaluation.aggregate import summarize
        from t2t_mtl.evaluation.report import score_text

        summary = summarize(self)
        medians = [f"{task}: {score_text(s.median)}" for task, s in summary["tasks"].items()]
        if len(medians) > REPR_TASKS:
            medians[REPR_TASKS:] = [f"… {len(medians) - REPR_TASKS} more"]
        return (f"EvalReport({self.name!r}, {counted(len(summary['tasks']), 'task')}, "
                f"{counted(len(self.results), 'template')}, task medians {{{', '.join(medians)}}}, "
                f"macro average {score_text(summary['macro_average'])})")

    def _repr_markdown_(self) -> str:
        """The report's Markdown (`to_markdown`: per-task and per-template tables), which a notebook displays."""
        from t2t_mtl.evaluation.report import to_markdown

        return to_markdown(self)

    def to_dict(self) -> dict[str, Any]:
        """`{"name", "settings", "results", "unseen_tasks"}`, each result as `TemplateResult.to_dict`."""
        return {"name": self.name, "settings": self.settings, "results": [r.to_dict() for r in self.results],
                "unseen_tasks": dict(self.unseen_tasks)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EvalReport":
        """The inverse of `to_dict`; `settings` and `unseen_tasks` may be absent."""
        return cls(name=data["name"], settings=dict(data.get("settings", {})),
                   results=[TemplateResult.from_dict(r) for r in data["results"]],
                   unseen_tasks=dict(data.get("unseen_tasks", {})))
