"""k-shot prompts for evaluation (`num_shots`): each example's input preceded by k solved demonstrations.

Demonstrations are rows of another split of the same task (train by default), rendered with the example's own
template as "input\\ntarget" and joined by blank lines before the example's input (FLAN's exemplar format,
GPT-3's sampling): each example draws its own k rows from `random.Random(f"{seed}:shots:{task}:{row}")` (the
evaluation seed, the task name and the example's row), so every run, template order and rank sees the same
prompts, and two tasks' examples of the same row do not draw the same positions. Rows a template skips or
cannot render are passed over, and when the demonstrations come from the evaluated split itself, the example's
own row is never one (nor, for a task with `group_by`, a row of its group: MultiRC's other answers to the same
question). Nor is any row whose rendered input is the example's own (a duplicate of the example, in the
evaluated split or in train, would show its answer).
A prompt longer than `max_input_length` tokens drops its first demonstrations until it fits, so the example's
input is never truncated away (`fit_prompts`); the evaluation counts and reports the inputs left with fewer than k, the
demonstrations dropped and the limit that would hold every input with all of its own.
A task with a `few_shot_format` (BIG-bench JSON tasks) draws its demonstrations from the evaluated split and writes
them, its query and the prompt from its rows as its benchmark does instead (the evaluation seed does not change that
draw); they are fitted alike.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from t2t_mtl.data.few_shot import demonstration_text, few_shot_prompt, fitted_prompt, joined_prompt
from t2t_mtl.evaluation.errors import EvaluationError

__all__ = ["Demonstrations", "ShotsFit", "demonstration_split", "few_shot_prompt", "fit_prompts", "fitted_prompt",
           "joined_prompt"]


def demonstration_split(task: Any, eval_split: str, requested: Optional[str] = None) -> str:
    """The split demonstrations come from: `requested`, else train, else the first other split, else the
    evaluated split itself (its example's own row excluded)."""
    splits = list(getattr(task, "splits", ()) or ())
    if requested is not None:
        if splits and requested not in splits:
            raise EvaluationError(f"task {task.name!r} has no split {requested!r} for demonstrations (shots_split); "
                                  f"its splits are {splits}")
        return requested
    if "train" in splits and eval_split != "train":
        return "train"
    others = [s for s in splits if s != eval_split]
    return others[0] if others else eval_split


class Demonstrations:
    """Rendered demonstrations of one template from `rows`, drawn per evaluated example."""

    def __init__(self, task: Any, template: Any, rows: Sequence[Any], *, same_split: bool, seed: int = 0) -> None:
        self.task, self.template, self.rows = task, template, rows
        self.same_split = same_split
        self.seed = seed
        self.format = getattr(task, "few_shot_format", None)  # (a task's own, else "input\\ntarget")
        if self.format is not None and not same_split:
            raise EvaluationError(f"task {task.name!r} draws its k-shot demonstrations from the evaluated split, as "
                                  f"its benchmark does; leave shots_split unset or name the evaluated split")
        self._rendered: Dict[int, Optional[Tuple[str, str]]] = {}  # row -> (its input, its demonstration)
        self._format_draws: Dict[int, List[List[str]]] = {}  # k -> every row's demonstrations (a task's own format)
        self._group_rows: Optional[Dict[str, List[int]]] = None

    def _own_rows(self, row_index: int) -> set:
        """The rows an example of `rows` itself may not see: its own, and with the task's `group_by` its whole
        group's (MultiRC: the other answers to its question, with their gold labels)."""
        if getattr(self.task, "group_by", None) is None:
            return {row_index}
        if self._group_rows is None:
            self._group_rows = {}
            for index in range(len(self.rows)):
                self._group_rows.setdefault(self.task.group_key(self.rows[index], index), []).append(index)
        return {row_index, *self._group_rows[self.task.group_key(self.rows[row_index], row_index)]}

    def _render(self, index: int) -> Optional[Tuple[str, str]]:
        """Row `index`'s rendered input and its demonstration ("input\\ntarget"), or None when the row is skipped (no
        target or no input, as `render_examples` skips it) or cannot be rendered."""
        from task_registry.errors import TemplateRenderError

        if index not in self._rendered:
            try:
                out = self.template.render(self.rows[index], task=self.task.name, row_index=index,
                                           rng=random.Random(f"{self.seed}:{index}"))
                if out.skipped:
                    self._rendered[index] = None
                else:
                    self._rendered[index] = (out.inputs, demonstration_text(out.inputs, out.targets))
            except TemplateRenderError:
                self._rendered[index] = None
        return self._rendered[index]

    def draw(self, row_index: int, k: int, query: Optional[str] = None) -> List[str]:
        """Up to k demonstrations for the example of row `row_index` whose rendered input is `query` (fewer only
        when the split has fewer); rows rendering to the input `query` are passed over. A task's own `few_shot_format`
        draws them itself, for every row at once."""
        if self.format is not None:
            if k not in self._format_draws:
                self._format_draws[k] = self.format.draw(list(self.rows), k)
            return self._format_draws[k][row_index]
        rng = random.Random(f"{self.seed}:shots:{self.task.name}:{row_index}")
        n = len(self.rows)
        excluded = self._own_rows(row_index) if self.same_split and 0 <= row_index < n else set()
        tried: set = set()
        out: List[str] = []
        while len(out) < k and len(tried) < n - len(excluded):  # random rows without repeats, no full shuffle
            index = rng.randrange(n)
            if index in tried or index in excluded:
                continue
            tried.add(index)
            rendered = self._render(index)
            if rendered is not None and rendered[0] != query:
                out.append(rendered[1])
        return out


@dataclass
class ShotsFit:
    """How one template's k-shot prompts fitted the input limit: `fewer` inputs got fewer than k demonstrations
    (too few rows to draw from, or dropped to fit); `dropped` demonstrations were dropped to fit, by `cut` inputs;
    `needed` is the limit (tokens) that holds every input with all of its drawn demonstrations, 0 when none was
    dropped."""

    fewer: int = 0
    cut: int = 0
    dropped: int = 0
    needed: int = 0


def fit_prompts(examples: Sequence[Any], demonstrations: Demonstrations, k: int, tokenizer: Any,
                max_input_length: int, wrap: Callable[[str], str] = lambda prompt: prompt) -> ShotsFit:
    """Set each of `examples` (`row_index` its row's index in the evaluated split, `inputs` its rendered input) to its
    k-shot prompt: the demonstrations drawn for it, the first ones dropped until the `wrap`ped prompt fits
    `max_input_length` tokens (special tokens counted), then its query (a task's own `few_shot_format` writes both from
    the row, of `demonstrations.rows`: the evaluated split, where such a format draws). A prompt that fits is left
    whole; a query too long on its own is left to be truncated as a zero-shot input is."""
    own_format = demonstrations.format
    join = own_format.prompt if own_format is not None else joined_prompt
    fit = ShotsFit()
    for example in examples:
        drawn = demonstrations.draw(example.row_index, k, query=example.inputs)
        query = own_format.query(demonstrations.rows[example.row_index]) if own_format is not None else example.inputs
        example.inputs, kept, whole = fitted_prompt(drawn, query, tokenizer, max_input_length, wrap=wrap, join=join)
        fit.fewer += kept < k
        if kept < len(drawn):
            fit.cut, fit.dropped, fit.needed = fit.cut + 1, fit.dropped + len(drawn) - kept, max(fit.needed, whole)
    return fit
