"""How a task writes its k-shot prompts, where it has a format of its own.

By default a k-shot prompt is the project's (`t2t_mtl.data.few_shot`): each demonstration the rendered input, a
newline and the target, the blocks and the query's rendered input joined by blank lines, the demonstrations drawn by
the project's seeded draw (`t2t_mtl.evaluation.few_shot`). A task given a `FewShotFormat`
(`Task(..., few_shot_format=...)`) is prompted as its benchmark prompts it instead, written from the source rows
themselves and drawn as the benchmark draws them: BIG-bench JSON tasks (`task_registry.bigbench.BigBenchFewShotFormat`).
"""
from __future__ import annotations

import abc
from typing import Any, List, Mapping, Sequence


class FewShotFormat(abc.ABC):
    """A task's own k-shot prompts: the example of row i of the evaluated split `rows` is prompted with
    `prompt(draw(rows, k)[i], query(rows[i]))`."""

    @abc.abstractmethod
    def draw(self, rows: Sequence[Mapping[str, Any]], k: int) -> List[List[str]]:
        """Every row's demonstrations, written out and solved, drawn from the other rows of `rows` (the evaluated
        split's): k of them, fewer only when `rows` has fewer than k + 1."""

    @abc.abstractmethod
    def query(self, row: Mapping[str, Any]) -> str:
        """The evaluated example written from its source row, as it follows the demonstrations."""

    @abc.abstractmethod
    def prompt(self, demonstrations: Sequence[str], query: str) -> str:
        """The whole prompt: `demonstrations` (possibly none) and then `query`; with no demonstration it must be the
        example's zero-shot input, as its template renders it."""
