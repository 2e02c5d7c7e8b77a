"""A template's rows rendered into the examples evaluation scores (`render_examples`): each row's input, target,
answer choices, gold answers, per-choice target scores and group, with the rows skipped and those that failed to
render counted, and the groups (a task's `group_by`) that are not scored whole."""
from __future__ import annotations

import collections
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

from t2t_mtl.evaluation.errors import EvaluationError

if TYPE_CHECKING:  # task_registry (and datasets) load only when a task is resolved
    import datasets

    from task_registry.task import Task
    from task_registry.template import Template


@dataclass
class EvalExample:
    """One rendered row of a template, as it is scored (`position`: its place among the template's examples)."""

    row_index: int
    inputs: str
    targets: str
    answer_choices: list[str]
    choice_scores: Optional[list[float]] = None
    position: int = 0
    references: Optional[list[str]] = None  # the template's gold answers; None: [targets]
    group: Optional[str] = None  # the row's group (the task's `group_by`) for group metrics

    @property
    def gold(self) -> list[str]:
        """The gold answers: the template's `references`, else the target."""
        return self.references if self.references is not None else [self.targets]


@dataclass
class RenderedExamples:
    """A template's examples, with the rows skipped and those that failed to render (the first failure's message)."""

    examples: list[EvalExample] = field(default_factory=list)
    skipped: int = 0
    errors: int = 0
    first_error: Optional[str] = None
    groups: int = 0  # with the task's `group_by`: the groups of the scored examples
    incomplete_groups: set[str] = field(default_factory=set)  # those with rows that are not scored


def render_examples(task: Task, template: Template, rows: datasets.Dataset, *, seed: int = 0,
                    group_sizes: Optional[Mapping[str, int]] = None,
                    row_ids: Optional[Sequence[int]] = None) -> RenderedExamples:
    """Render every row; skipped rows (no target or no input) and render failures are counted (failures keep the
    first message). `row_ids` are the rows' indices in their split (default their positions: `rows` are the split or
    its first rows; a drawn part of it needs them), each example's `row_index`, which seeds its rendering as it seeds
    the whole split's.

    A row field `target_scores` (a list aligned with the rendered answer choices, as BIG-bench imports
    have) gives per-choice scores for `multiple_choice_grade`; a task's `group_by` gives each row's group. A group
    is incomplete when fewer of its rows are scored than it has: in `rows`, or in `group_sizes` (row counts per
    group of the whole split, when `rows` are part of it only: its first rows or a drawn part).
    """
    from task_registry.errors import TemplateRenderError

    out = RenderedExamples()
    grouped = getattr(task, "group_by", None) is not None
    keys: list[str] = []
    for at in range(len(rows)):
        row, index = rows[at], row_ids[at] if row_ids is not None else at
        if grouped:
            keys.append(task.group_key(row, index))
        try:
            rendered = template.render(row, task=task.name, row_index=index, rng=random.Random(f"{seed}:{index}"))
        except TemplateRenderError as error:
            out.errors += 1
            out.first_error = out.first_error or str(error)
            continue
        if rendered.skipped:
            out.skipped += 1
            continue
        choices = list(rendered.answer_choices or [])
        scores = row.get("target_scores") if isinstance(row, Mapping) else None
        if scores is not None and len(scores) != len(choices):
            raise EvaluationError(f"task {task.name!r} template {template.name!r} row {index}: "
                                  f"{len(scores)} target_scores for {len(choices)} answer choices")
        out.examples.append(EvalExample(index, rendered.inputs, rendered.targets, choices,
                                     [float(s) for s in scores] if scores is not None else None,
                                     position=len(out.examples), references=rendered.references,
                                     group=keys[at] if grouped else None))
    if grouped:
        scored = collections.Counter(e.group for e in out.examples)
        sizes = group_sizes if group_sizes is not None else collections.Counter(keys)
        out.groups = len(scored)
        out.incomplete_groups = {group for group, count in scored.items() if count < sizes[group]}
    return out


def group_sizes(task: Task, rows: datasets.Dataset) -> collections.Counter[str]:
    """The number of rows of each group (the task's `group_by`) in `rows`."""
    return collections.Counter(task.group_key(row, index) for index, row in enumerate(rows))


def choice_scores(examples: Sequence[EvalExample]) -> Optional[list[list[float]]]:
    """Every example's per-choice target scores (`multiple_choice_grade`'s), or None unless each has them."""
    if examples and all(e.choice_scores is not None for e in examples):
        return [e.choice_scores for e in examples]
    return None
