"""Few-shot prompts: solved demonstrations in front of an input, for k-shot evaluation and mixed training.

A demonstration is a rendered example written "input\\ntarget"; a prompt is the demonstrations and the query
joined by blank lines (FLAN's exemplar format). `few_shot_prompt` drops demonstrations from the front until
the tokenized prompt fits, so the query itself is never truncated away for them.

`data.few_shot` mixes few-shot prompts into training, as the Flan Collection trains on zero-shot and few-shot
templates together (Longpre et al. 2023): a `rate` share of each task's training examples gets k demonstrations
(k uniform in [1, `max_shots`]): other rows of the same split rendered with the same template. Which rows get
them, how many and which is drawn from `random.Random(f"{seed}:few-shot:{task}:{row}")` — the task name in it,
so the tasks of a mixture do not share one pattern — and the training examples are a pure function of the task,
the rendered split and the settings (cached with the tokenized split; a resumed run reads the same examples).
For a task with `group_by` a demonstration never comes from the example's own group (MultiRC: the other answers
to its question, with their labels), nor is it ever a row whose input is the example's own (a duplicate would show
its answer), as in k-shot evaluation (`t2t_mtl.evaluation.few_shot`). An example whose
demonstrations cannot fit stays zero-shot (counted and logged).
"""
from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

logger = logging.getLogger(__name__)

DEMONSTRATION_SEPARATOR = "\n\n"

__all__ = ["DEMONSTRATION_SEPARATOR", "FewShotConfigError", "FewShotMix", "add_demonstrations",
           "demonstration_text", "few_shot_prompt", "fit_demonstrations", "fitted_prompt", "joined_prompt"]


def demonstration_text(inputs: str, targets: str) -> str:
    """One solved demonstration: the rendered input, a newline, the target."""
    return f"{inputs}\n{targets}"


def joined_prompt(demonstrations: Sequence[str], query: str) -> str:
    """The demonstrations and the query joined by blank lines."""
    return DEMONSTRATION_SEPARATOR.join([*demonstrations, query])


def fit_demonstrations(demonstrations: Sequence[str], query: str, tokenizer: Any, max_input_length: int,
                       wrap: Callable[[str], str] = lambda prompt: prompt, *, append_eos: bool = False,
                       join: Callable[[Sequence[str], str], str] = joined_prompt) -> List[str]:
    """The last demonstrations that fit: the first ones are dropped until the tokenized `few_shot_prompt` fits
    `max_input_length` (possibly none). The prompt is counted as it will be tokenized: with the tokenizer's special
    tokens, or with `append_eos` as `task_registry.tokenize` does for training (its ids without them, and EOS).
    `join` writes the prompt of demonstrations and query (a task's `FewShotFormat.prompt`; default blank lines)."""
    return _fit(demonstrations, query, tokenizer, max_input_length, wrap, append_eos, join)[0]


def _fit(demonstrations: Sequence[str], query: str, tokenizer: Any, max_input_length: int, wrap: Callable[[str], str],
         append_eos: bool, join: Callable[[Sequence[str], str], str]) -> Tuple[List[str], int]:
    """(`fit_demonstrations`' result, the length in tokens of the prompt with all of `demonstrations`, 0 without
    any: the fitting's first pass)."""
    demos, lengths = list(demonstrations), []
    while demos:
        ids = tokenizer(wrap(join(demos, query)), add_special_tokens=not append_eos, verbose=False)["input_ids"]
        lengths.append(len(ids) + int(append_eos))
        if lengths[-1] <= max_input_length:
            break
        demos.pop(0)
    return demos, lengths[0] if lengths else 0


def few_shot_prompt(demonstrations: Sequence[str], query: str, tokenizer: Any, max_input_length: int,
                    wrap: Callable[[str], str] = lambda prompt: prompt) -> str:
    """`wrap` of `demonstrations` and `query` joined by blank lines, dropping demonstrations from the front until
    the tokenized result fits `max_input_length` (the wrapped query alone may still be longer: it is truncated as
    usual). `wrap` adds what goes in front of the whole prompt, e.g. a TE⊕ENC task token."""
    return fitted_prompt(demonstrations, query, tokenizer, max_input_length, wrap)[0]


def fitted_prompt(demonstrations: Sequence[str], query: str, tokenizer: Any, max_input_length: int,
                  wrap: Callable[[str], str] = lambda prompt: prompt, *,
                  join: Callable[[Sequence[str], str], str] = joined_prompt) -> Tuple[str, int, int]:
    """(`few_shot_prompt`, how many of the demonstrations it kept, the length in tokens of the prompt with all of
    them: 0 without any), the prompt written by `join` (see `fit_demonstrations`)."""
    kept, whole = _fit(demonstrations, query, tokenizer, max_input_length, wrap, False, join)
    return wrap(join(kept, query)), len(kept), whole


class FewShotConfigError(ValueError):
    """A `data.few_shot` key or value is invalid."""


@dataclass(frozen=True)
class FewShotMix:
    """The `data.few_shot` section: the share `rate` of training examples given demonstrations, and at most
    `max_shots` demonstrations each."""

    rate: float = 0.5
    max_shots: int = 3

    @classmethod
    def from_config(cls, section: Any) -> Optional["FewShotMix"]:
        """The validated section, or None when off (unset, false, or rate 0); true = the defaults. Errors name
        the key."""
        from t2t_mtl.config_types import unknown_key_message

        if section is None or section is False:
            return None
        data = {} if section is True else section
        if not isinstance(data, Mapping):
            raise FewShotConfigError(f"data.few_shot must be a mapping such as {{rate: 0.5, max_shots: 3}} (or true "
                                     f"for those defaults), not {section!r}")
        unknown = unknown_key_message("data.few_shot", data, ["rate", "max_shots"])
        if unknown:
            raise FewShotConfigError(unknown)
        mix = cls(**data)
        if isinstance(mix.rate, bool) or not isinstance(mix.rate, (int, float)) or not 0 <= mix.rate <= 1:
            raise FewShotConfigError(f"data.few_shot.rate={mix.rate!r}: must be a number in [0, 1] (the share of "
                                     f"training examples given demonstrations)")
        if isinstance(mix.max_shots, bool) or not isinstance(mix.max_shots, int) or mix.max_shots < 1:
            raise FewShotConfigError(f"data.few_shot.max_shots={mix.max_shots!r}: must be an integer >= 1")
        return mix if mix.rate > 0 else None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


class _AddDemonstrations:
    """The `Dataset.map` function of `add_demonstrations` (batched, with indices). Its index of `rendered`'s rows (the
    demonstrations, each template's rows, the group and input counts) is built at its first call: a map datasets
    finds cached never calls it, and a run reading its cached prompts spent seconds a task building it."""

    def __init__(self, task: str, rendered: Any, mix: FewShotMix, seed: int, tokenizer: Any,
                 max_input_length: int) -> None:
        self.task, self.rendered = task, rendered
        self.mix, self.seed = mix, seed
        self.tokenizer, self.max_input_length = tokenizer, max_input_length
        self.indexed = False

    def _index(self) -> None:
        """Read `rendered`'s columns and count its rows by template, group and input (`shots` draws from them)."""
        from task_registry.row_renderer import GROUP_COLUMN

        rendered = self.rendered
        inputs, targets, templates = rendered["inputs"], rendered["targets"], rendered["template"]
        groups = rendered[GROUP_COLUMN] if GROUP_COLUMN in rendered.column_names else None
        self.inputs = inputs
        self.demonstrations = [demonstration_text(i, t) for i, t in zip(inputs, targets)]
        self.groups: Sequence[Any] = groups if groups is not None else range(len(inputs))  # no group_by: each row
        self.rows_of: Dict[str, List[int]] = defaultdict(list)
        self.group_sizes: Counter = Counter()  # rows of each (template, group)
        self.input_sizes: Counter = Counter()  # rows of each (template, input)
        self.both_sizes: Counter = Counter()  # rows of each (template, group, input)
        for index, template in enumerate(templates):
            self.rows_of[template].append(index)
            self.group_sizes[template, self.groups[index]] += 1
            self.input_sizes[template, inputs[index]] += 1
            self.both_sizes[template, self.groups[index], inputs[index]] += 1
        self.indexed = True

    def shots(self, index: int, template: str) -> Optional[List[str]]:
        """The demonstrations drawn for row `index` (fewer than drawn when its template has fewer rows outside
        the row's group whose input differs from the row's); None for a row left zero-shot."""
        rng = random.Random(f"{self.seed}:few-shot:{self.task}:{index}")
        if rng.random() >= self.mix.rate:
            return None
        k = rng.randint(1, self.mix.max_shots)
        others, group, query = self.rows_of[template], self.groups[index], self.inputs[index]
        own = (self.group_sizes[template, group] + self.input_sizes[template, query]
               - self.both_sizes[template, group, query])  # rows of the row's group or rendering to its input
        picked: List[int] = []
        while len(picked) < min(k, len(others) - own):  # distinct rows of the template, never one of `own`
            row = others[rng.randrange(len(others))]
            if self.groups[row] != group and self.inputs[row] != query and row not in picked:
                picked.append(row)
        return [self.demonstrations[row] for row in picked]

    def __call__(self, batch: Mapping[str, list], indices: List[int]) -> Dict[str, list]:
        if not self.indexed:
            self._index()
        inputs, shots = [], []
        for query, template, index in zip(batch["inputs"], batch["template"], indices):
            drawn = self.shots(index, template)
            kept = fit_demonstrations(drawn, query, self.tokenizer, self.max_input_length,
                                      append_eos=True) if drawn else []  # as `tokenize_task` tokenizes it
            inputs.append(DEMONSTRATION_SEPARATOR.join([*kept, query]))
            shots.append(-1 if drawn is None else len(kept))
        return {"inputs": inputs, "num_shots": shots}


def corrupts_spans(task: Any) -> bool:
    """Whether `task`'s inputs are span-corrupted (a `SpanCorruption` preprocessor): such a task stays zero-shot in
    the training mix, since every demonstration would use the same sentinels as the example's own spans."""
    from task_registry.span_corruption import SpanCorruption

    return any(isinstance(step, SpanCorruption) for step in task.preprocessors)


def add_demonstrations(rendered: Any, mix: FewShotMix, tokenizer: Any, max_input_length: int, *, seed: int,
                       tokenizer_key: str, task: str) -> Any:
    """`rendered` (a map-style `Task.to_dataset` result of the task named `task`) with demonstrations in front of a
    `mix.rate` share of its inputs (see the module docstring); cached by datasets under a fingerprint of the input,
    the task, the settings, the tokenizer and the length limit. Logs how many examples got demonstrations.

    With a `group` column (`to_dataset(with_groups=True)` of a task with `group_by`) no demonstration comes from
    the example's own group, as in k-shot evaluation (MultiRC: another answer to its question); the column is
    dropped from the result."""
    from datasets.fingerprint import Hasher
    from task_registry.row_renderer import GROUP_COLUMN

    function = _AddDemonstrations(task, rendered, mix, seed, tokenizer, max_input_length)
    fingerprint = Hasher.hash((rendered._fingerprint, "few-shot-v4", task, mix.to_dict(), seed, tokenizer_key,
                               max_input_length))
    mixed = rendered.map(function, batched=True, with_indices=True, new_fingerprint=fingerprint,
                         desc=f"few-shot {task}")
    shots = mixed["num_shots"]
    drawn = sum(s >= 0 for s in shots)
    given = [s for s in shots if s > 0]
    logger.warning("task %s: %d of %d training examples few-shot (%.2f demonstrations on average); %d drawn left "
                   "zero-shot (no demonstration fits max_input_length=%d or the template has one row)", task,
                   len(given), len(shots), sum(given) / max(len(given), 1), drawn - len(given), max_input_length)
    return mixed.remove_columns(["num_shots", *([GROUP_COLUMN] if GROUP_COLUMN in rendered.column_names else [])])
