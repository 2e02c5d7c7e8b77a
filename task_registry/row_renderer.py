"""How a task's rows are rendered into examples: the columns of a rendered example (`output_features`, with the
optional GROUP_COLUMN and ROW_COLUMN, and SKIP_COLUMN, which marks the renderings to drop), and the `Renderer` that
`Task.to_dataset` maps over a split's rows, choosing each row's template from the seed and the row's index."""
from __future__ import annotations

import functools
import random
from typing import Any, Mapping, Optional, Sequence

from .jinja_env import environment_version
from .lazy_modules import LazyModule
from .task_expressions import group_key
from .template import Template

datasets = LazyModule("datasets")


@functools.cache
def output_features() -> datasets.Features:
    """The columns of every rendered row (OUTPUT_FEATURES)."""
    return datasets.Features({
        "inputs": datasets.Value("string"),
        "targets": datasets.Value("string"),
        "answer_choices": datasets.Sequence(datasets.Value("string")),
        "references": datasets.Sequence(datasets.Value("string")),
        "task": datasets.Value("string"),
        "template": datasets.Value("string"),
    })


def __getattr__(name: str) -> Any:
    """OUTPUT_FEATURES, built (importing datasets) when first read (PEP 562)."""
    if name == "OUTPUT_FEATURES":
        return output_features()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


SKIP_COLUMN = "_skipped"


GROUP_COLUMN = "group"


ROW_COLUMN = "row"


class Renderer:
    """Renders rows with templates chosen per row index — or, with `every_template`, with each template in turn (a
    row's examples in template order); picklable, stateless apart from its inputs. With `group_by` (a task's
    expression) each rendered row also carries its group key in GROUP_COLUMN; with `row_index`, the index of the row
    it renders in ROW_COLUMN."""

    def __init__(self, task: str, templates: Sequence[Template], seed: int, group_by: Optional[str] = None,
                 every_template: bool = False, row_index: bool = False):
        self.task = task
        self.templates = list(templates)
        self.seed = seed
        self.group_by = group_by
        self.every_template = every_template
        self.row_index = row_index

    @property
    def features(self) -> datasets.Features:
        """The columns of a rendered row."""
        group = {GROUP_COLUMN: datasets.Value("string")} if self.group_by is not None else {}
        row = {ROW_COLUMN: datasets.Value("int64")} if self.row_index else {}
        return datasets.Features({**output_features(), **group, **row})

    def fingerprint_parts(self) -> tuple:
        return (self.task, self.seed, [(t.name, t.jinja, t.answer_choices, t.references, t.instruction, t.context)
                                        for t in self.templates], "render-v3", environment_version(), self.group_by,
                *(("every-template",) if self.every_template else ()), *(("row-index",) if self.row_index else ()))

    def render_row(self, row: Mapping[str, Any], index: int) -> list[dict[str, Any]]:
        """The examples of one row: one, with a template drawn from the seed and the row's index, or one per template
        (each with its own draws, from the seed, the index and the template's name)."""
        if self.every_template:
            return [self._render(template, row, index, random.Random(f"{self.seed}:{index}:{template.name}"))
                    for template in self.templates]
        rng = random.Random(f"{self.seed}:{index}")
        template = self.templates[rng.randrange(len(self.templates))] if len(self.templates) > 1 else self.templates[0]
        return [self._render(template, row, index, rng)]

    def _render(self, template: Template, row: Mapping[str, Any], index: int, rng: random.Random) -> dict[str, Any]:
        example = template.render(row, task=self.task, row_index=index, rng=rng)
        group = {GROUP_COLUMN: group_key(self.task, self.group_by, row, index)} if self.group_by is not None else {}
        row_index = {ROW_COLUMN: index} if self.row_index else {}
        return {"inputs": example.inputs, "targets": example.targets,
                "answer_choices": example.answer_choices or [], "references": example.gold_references,
                "task": self.task, "template": template.name, **group, **row_index,
                SKIP_COLUMN: example.skipped}

    def __call__(self, batch: Mapping[str, list], indices: list[int]) -> dict[str, list]:
        columns = list(batch)
        out: dict[str, list] = {name: [] for name in (*self.features, SKIP_COLUMN)}
        for position, index in enumerate(indices):
            for rendered in self.render_row({c: batch[c][position] for c in columns}, index):
                for key, value in rendered.items():
                    out[key].append(value)
        return out
