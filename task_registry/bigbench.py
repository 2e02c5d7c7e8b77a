"""BIG-bench JSON tasks (`task.json`) as registered, evaluation-only multiple-choice tasks.

A task.json holds `examples` with `input` and `target_scores` (answer choice → score) and optional
formatting keys. The prompt follows BIG-bench's JSON-task formatting for zero-shot use:

    task_prefix + example_input_prefix + input [+ choice_prefix + choice_prefix.join(listed choices)]
    + example_output_prefix

with BIG-bench's defaults (`example_input_prefix` "\\nQ: ", `example_output_prefix` "\\nA: ",
`choice_prefix` "\\n  choice: ", `append_choices_to_input` true, `task_prefix` ""). Like every
template, the rendered input and target are stripped of surrounding whitespace.

The answer choices are the `target_scores` keys in the order BIG-bench lists them in its prompts (bigbench/api/
json_task.py, `default_format_fn`): sorted, then permuted by a numpy `RandomState` seeded afresh for every example
with BIG-bench's default seed, 42 (`listed_choices`), so examples with as many choices list them in one permutation
of their sorted order. The choices are scored in that order too, so BIG-bench files' habit of listing the correct
answer first cannot leak into a majority-position baseline; a tie between choices' log-likelihoods is broken as
BIG-bench's `multiple_choice_grade` breaks it (`BigBenchEvalProtocol.pick`: by a hash of the scores in the file's
order, normalised over the choices unless the file sets `absolute_normalization`). The row keeps the choices' scores
as the list
`target_scores` (for `multiple_choice_grade`: the mean score of the chosen answer) and the best-scoring
choice as `target` (of several, the first in the file's `target_scores`, as BIG-bench takes it, whatever the
listed order). Tasks are `eval_only=True` (the registry refuses them in any training mixture), `held_out=True`,
cluster `bigbench`, one split `test` holding every distinct example: as BIG-bench does before scoring, an example
whose JSON repeats an earlier one's exactly is dropped (it would count twice in the score, and be its copy's
demonstration); the rows keep their examples' indices in the file as `idx`.

The prefixes become literal template text, never substituted values, so promptsource-style truncation
of substituted values (2048 characters) cannot cut them (a `}` of one is written as an expression of its own, so a
prefix may hold any text, `}}` and `{% endraw %}` too); the input, the listed choices and the target are
substituted in 2000-character parts for the same reason (a longer choice is listed, and is the target, whole). A
`|||` in the input or a prefix is kept as text: like the pipe protection of row values, it is written as
promptsource's protector token and restored after the split into input and target.

Templates strip the answer choices and the target, and tokenizers collapse whitespace, so an example whose
choices differ only in whitespace (`"yes"` and `"yes "`) would score two spellings as one choice, and a choice
of whitespace alone would render an empty target (a skipped row): `read_task_json` refuses both, naming the file,
the example and the choices. It refuses too, as BIG-bench does, an example without an explicit `target` none of
whose choices scores above the others (its one choice: above 0), whose answer would be the file's first choice.

k-shot prompts (`t2t-mtl eval --shots K`) are BIG-bench's too (`BigBenchFewShotFormat`, the task's
`few_shot_format`), not the project's "input\\ntarget" blocks. BIG-bench's JSON tasks (bigbench/api/json_task.py:
`default_format_fn`, `make_nshot_dataset`, and the task prefix added by the task) build them so:

- each example, demonstration or query, is formatted as the zero-shot prompt is without the task prefix:
  `example_input_prefix + input [+ choice_prefix + choice_prefix.join(listed choices)] + example_output_prefix`;
- a demonstration is that text directly followed by its target, with nothing in between (the output prefix holds
  the spacing): the example's explicit `target` where it has one (a list: one of them, drawn for each use), else the
  first choice in the file with the best score;
- the demonstrations and then the query are joined by the task's `few_shot_example_separator` (default "\\n");
- `task_prefix` comes once, in front of the whole prompt, not before each demonstration;
- the k demonstrations are drawn from the task's other examples as BIG-bench draws them with its default seed
  (`BigBenchFewShotFormat.draw`: one `numpy.random.RandomState(42)` draws the order the examples are queried in,
  then for each query in turn k others and for each of those one of its targets), so a k-shot prompt shows the
  examples BIG-bench's shows, whatever the evaluation seed or the examples' order of evaluation.
  BIG-bench also passes over an example equal to the query but for the order of its JSON keys (none of the shared
  tasks has one) and refuses a task of fewer than k + 1 examples, which here gets every other example.

Here the whole prompt is stripped at its ends, as every rendered input is, so a prompt left with no demonstration
(they did not fit `max_input_length`) is exactly the zero-shot input.

An input longer than `max_input_length` tokens keeps its end (`BigBenchEvalProtocol`: truncation_side "left"), as
BIG-bench's Hugging Face model wrapper (bigbench/models/huggingface_models.py) keeps it: `generate_text` tokenizes the
context and keeps its last tokens, `cond_log_prob` keeps the last tokens of context and target together, so the
question, the listed choices and the output prefix at an input's end are what the model sees. Here the encoder's input
holds at most `max_input_length` tokens, its last text tokens and T5's final EOS (the decoder-only wrapper keeps at
most one token fewer than the model's context length, and in `cond_log_prob` the target shares them; T5's answer
choices go to the decoder). Other tasks keep the beginning, as T0's evaluation and seqio do.

`max_examples` N (`t2t-mtl eval --max-examples`) scores the N examples BIG-bench's JsonTask scores given
`max_examples` N (`BigBenchEvalProtocol.example_rows`; json_task.make_nshot_dataset draws them with a `choice` of N
without replacement from a fresh `numpy.random.RandomState(42)`, zero-shot and k-shot alike), not the file's first N,
so a score on N examples is one on BIG-bench's sample of the task. With k shots those N are the first queries of
BIG-bench's draw, and each gets the demonstrations it gets in the run of the whole task (drawn from every example).

Tasks are scored by `multiple_choice_grade` alone (the preferred score of every shared task). Generative metrics a
file lists beside it (`exact_str_match`, `bleu`, `rouge`: BIG-bench scores generated text against an example's
explicit `target`) are not computed; an explicit `target` is read only as what demonstrations show (strategyqa's is
the answer with its explanation). A file whose `metrics` leave out
`multiple_choice_grade`, or whose `preferred_score` is another metric, is refused: its reported score would not be
BIG-bench's.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from pathlib import Path
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Mapping, Optional, Sequence, Tuple, Union

import numpy

from .errors import DataSourceError, DuplicateRegistrationError, TaskDefinitionError
from .eval_protocol import EvalProtocol
from .few_shot_format import FewShotFormat
from .lazy_modules import LazyModule
from .registry import get_task, register_task
from .sources import Source
from .task import Task
from .template import PIPE_PROTECTOR, SEPARATOR, Template

datasets = LazyModule("datasets")  # (imported where a task is loaded: knowing its protocol needs none)

CLUSTER = "bigbench"
SPLIT = "test"
NAME_PREFIX = "bigbench_"
TEMPLATE_NAME = "bigbench_zero_shot"  # the one template of every imported task
DEFAULT_INPUT_PREFIX = "\nQ: "
DEFAULT_OUTPUT_PREFIX = "\nA: "
DEFAULT_CHOICE_PREFIX = "\n  choice: "
DEFAULT_FEW_SHOT_SEPARATOR = "\n"
INPUT_PART_CHARS = 2000
BIGBENCH_SEED = 42  # JsonTask's default random_seed, which seeds the choice listing of each example
GRADE = "multiple_choice_grade"
#: the task.json keys of text put into every prompt (a JSON null: none)
PREFIX_KEYS = ("task_prefix", "example_input_prefix", "example_output_prefix", "choice_prefix",
               "few_shot_example_separator")

PathLike = Union[str, os.PathLike]


def _task_file(path: PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / "task.json"
    if not path.is_file():
        raise DataSourceError(f"BIG-bench task file {str(path)!r} does not exist (expected <task dir>/task.json)")
    return path


def read_task_json(path: PathLike) -> dict[str, Any]:
    """The parsed task.json, checked: `examples` is a non-empty list, each with a string `input` and `target_scores`
    (without an explicit `target`, one choice scoring above the others, as BIG-bench requires); its prefixes
    (`PREFIX_KEYS`) are strings or null; its `metrics` and `preferred_score`, when given, name
    `multiple_choice_grade`. A task with subtasks (no `examples`,
    `<subtask>/task.json` folders beside it) is refused naming them: each subtask's folder is imported on its own."""
    path = _task_file(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise TaskDefinitionError(f"{str(path)!r} is not valid JSON: {error}") from None
    except UnicodeDecodeError as error:
        raise TaskDefinitionError(f"{str(path)!r} is not UTF-8 text ({error}); save it as UTF-8") from None
    examples = data.get("examples") if isinstance(data, dict) else None
    subtasks = sorted(file.parent.name for file in path.parent.glob("*/task.json"))
    if isinstance(data, dict) and "examples" not in data and subtasks:
        raise TaskDefinitionError(
            f"{str(path)!r} has no 'examples': it is a BIG-bench task with subtasks ({', '.join(subtasks)}), which "
            f"are not imported as one task; import a subtask's folder instead (e.g. --bigbench "
            f"{str(path.parent / subtasks[0])!r})")
    if not isinstance(examples, list) or not examples:
        raise TaskDefinitionError(f"{str(path)!r}: key 'examples' must be a non-empty list of examples")
    for index, example in enumerate(examples):
        if not isinstance(example, dict) or "input" not in example:
            raise TaskDefinitionError(f"{str(path)!r}: example {index} has no 'input'")
        if not isinstance(example["input"], str):
            raise TaskDefinitionError(f"{str(path)!r}: example {index}: 'input' must be a string (the text the "
                                      f"example asks), got {example['input']!r}")
        scores = example.get("target_scores")
        if not isinstance(scores, dict) or not scores:
            raise TaskDefinitionError(
                f"{str(path)!r}: example {index} has no 'target_scores' (answer choice → score); only "
                f"multiple-choice BIG-bench tasks can be imported")
        spellings: dict[str, str] = {}
        for choice, score in scores.items():
            collapsed = " ".join(choice.split())
            if not collapsed:
                raise TaskDefinitionError(f"{str(path)!r}: example {index}: answer choice {choice!r} is empty once "
                                          f"stripped of whitespace; give it text or drop it")
            if collapsed in spellings:
                raise TaskDefinitionError(
                    f"{str(path)!r}: example {index}: answer choices {spellings[collapsed]!r} and {choice!r} differ "
                    f"only in whitespace, which templates strip and tokenizers collapse, so they would be scored as "
                    f"one choice; keep one of them in 'target_scores'")
            spellings[collapsed] = choice
            if SEPARATOR in choice:
                raise TaskDefinitionError(f"{str(path)!r}: example {index}: answer choice {choice!r} contains "
                                          f"the template separator {SEPARATOR!r}")
            if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
                raise TaskDefinitionError(f"{str(path)!r}: example {index}: target score of {choice!r} is "
                                          f"{score!r}, not a finite number")
        _check_explicit_target(example.get("target"), index, path)
        if "target" not in example:
            _check_a_best_choice(scores, index, path)
    append = data.get("append_choices_to_input", True)
    if not isinstance(append, bool):
        raise TaskDefinitionError(f"{str(path)!r}: 'append_choices_to_input' must be true or false, got {append!r}")
    absolute = data.get("absolute_normalization", False)
    if not isinstance(absolute, bool):
        raise TaskDefinitionError(f"{str(path)!r}: 'absolute_normalization' must be true or false, got {absolute!r}")
    for key in PREFIX_KEYS:
        if not isinstance(data.get(key, ""), (str, type(None))):
            raise TaskDefinitionError(f"{str(path)!r}: {key!r} must be a string (or null: none), got {data[key]!r}")
    _check_scored_by_grade(data, path)
    return data


def _check_explicit_target(target: Any, index: int, path: Path) -> None:
    """Refuse an explicit `target` (what k-shot demonstrations show) that is not a string or a non-empty list of
    strings, as BIG-bench's schema has it."""
    targets = target if isinstance(target, list) else [target]
    if target is not None and (not targets or not all(isinstance(t, str) for t in targets)):
        raise TaskDefinitionError(f"{str(path)!r}: example {index}: 'target' must be a string or a non-empty list of "
                                  f"strings (the answer its k-shot demonstrations show), got {target!r}; fix it or "
                                  f"drop it (the best-scoring choice is shown then)")


def _check_a_best_choice(scores: Mapping[str, float], index: int, path: Path) -> None:
    """Refuse, as BIG-bench does, an example without an explicit `target` none of whose answer choices scores above
    the others (its one choice: above 0): its answer would be whichever choice the file lists first."""
    best, worst = max(scores.values()), min(scores.values())
    if best <= worst if len(scores) > 1 else best == 0:
        only = " (its only choice scores 0)" if len(scores) == 1 else ""
        raise TaskDefinitionError(f"{str(path)!r}: example {index}: no answer choice scores above the others{only} "
                                  f"in 'target_scores' {dict(scores)!r}; give the correct choice a higher score, as "
                                  f"BIG-bench requires")


def _check_scored_by_grade(data: dict[str, Any], path: Path) -> None:
    """Refuse a file whose `metrics` (when given) leave out `multiple_choice_grade`, or whose `preferred_score` (when
    given) is another metric: the import scores that metric alone, which would stand for a score BIG-bench does not
    report for the task."""
    metrics = data.get("metrics")
    if metrics is not None and GRADE not in (metrics if isinstance(metrics, list) else [metrics]):
        raise TaskDefinitionError(f"{str(path)!r}: 'metrics' {metrics!r} do not list {GRADE!r}, the only metric "
                                  f"BIG-bench imports are scored by; add it to score the task by its answer choices")
    preferred = data.get("preferred_score")
    if preferred is not None and preferred != GRADE:
        raise TaskDefinitionError(f"{str(path)!r}: 'preferred_score' is {preferred!r}, but BIG-bench imports are "
                                  f"scored by {GRADE!r} alone; set it to {GRADE!r} to report that as the task's score")


def _split_text(text: str) -> list[str]:
    return [text[i:i + INPUT_PART_CHARS] for i in range(0, len(text), INPUT_PART_CHARS)] or [""]


def task_json_name(data: dict[str, Any], path: PathLike) -> str:
    """The task's name: its task.json's `name`, else (a file without one) the name of the folder holding it."""
    return str(data.get("name") or _task_file(path).parent.name)


def distinct_examples(examples: Sequence[Any]) -> list[tuple[int, Any]]:
    """(index, example) of each example whose JSON text (`json.dumps`, key order included) repeats no earlier one's,
    as BIG-bench keeps them: a repeat would count twice in the score and be its copy's demonstration."""
    seen: set[str] = set()
    kept = []
    for index, example in enumerate(examples):
        text = json.dumps(example)
        if text not in seen:
            seen.add(text)
            kept.append((index, example))
    return kept


@functools.lru_cache(maxsize=None)
def _listing_permutation(count: int) -> tuple[int, ...]:
    return tuple(int(i) for i in numpy.random.RandomState(BIGBENCH_SEED).permutation(count))


def listed_choices(choices: Iterable[str]) -> list[str]:
    """`choices` in the order BIG-bench lists an example's answer choices: sorted, then permuted by
    `numpy.random.RandomState(42).permutation`, the generator seeded afresh for every example (legacy `RandomState`
    streams never change across numpy versions)."""
    ordered = sorted(choices)
    return [ordered[i] for i in _listing_permutation(len(ordered))]


def bigbench_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per distinct example (`distinct_examples`; `idx` is its index in the file): input, input_parts,
    choices, choice_parts, target_scores (aligned with choices), choice_file_positions (each choice's position in
    the file's `target_scores`), target, target_parts, demonstration_targets.

    `input_parts` are the input's 2000-character parts with `|||` written as the pipe protector (a row's list
    items are not protected by the template, only its strings); `choice_parts` and `target_parts` are the
    choices' and the target's parts (choices hold no `|||`).

    `choices` are the answer choices in BIG-bench's order (`listed_choices`); the prompt lists them in this order
    too (when the task appends choices to the input).

    `demonstration_targets` are the answers the example may show as a k-shot demonstration (one is drawn for each
    use): its explicit `target` (a list, or one string), else `target`.
    """
    rows = []
    for index, example in distinct_examples(data["examples"]):
        scores = example["target_scores"]
        choices = listed_choices(scores)
        best = max(scores.values())
        text = example["input"]
        target = next(c for c in scores if scores[c] == best)
        shown = example.get("target", target)
        rows.append({"idx": index, "input": text,
                     "input_parts": _split_text(text.replace(SEPARATOR, PIPE_PROTECTOR)), "choices": choices,
                     "choice_parts": [_split_text(c) for c in choices],
                     "target_scores": [float(scores[c]) for c in choices],
                     "choice_file_positions": [list(scores).index(c) for c in choices],
                     "target": target, "target_parts": _split_text(target),
                     "demonstration_targets": shown if isinstance(shown, list) else [shown]})
    return rows


def _literal(text: str) -> str:
    """`text` as literal template text: `{% raw %}` blocks holding no `}`, each `}` of it an expression of its own,
    so neither promptsource's textual truncation rewrite (every `}}` of a template) nor the end of a raw block
    (`{% endraw %}`) can be written by it."""
    pieces = text.replace(SEPARATOR, PIPE_PROTECTOR).split("}")
    return '{{ "}" }}'.join(f"{{% raw %}}{piece}{{% endraw %}}" if piece else "" for piece in pieces)


def _prefix(data: dict[str, Any], key: str, default: str) -> str:
    """The task's `key` prefix, `default` when absent; a JSON null is no prefix (not the text "None")."""
    value = data.get(key, default)
    return "" if value is None else value


def bigbench_template(data: dict[str, Any]) -> Template:
    """The template that formats an example as BIG-bench does (see the module docstring)."""
    task_prefix = _prefix(data, "task_prefix", "")
    input_prefix = _prefix(data, "example_input_prefix", DEFAULT_INPUT_PREFIX)
    output_prefix = _prefix(data, "example_output_prefix", DEFAULT_OUTPUT_PREFIX)
    choice_prefix = _prefix(data, "choice_prefix", DEFAULT_CHOICE_PREFIX)
    append_choices = data.get("append_choices_to_input", True)
    jinja = (_literal(task_prefix) + _literal(input_prefix)
             + "{% for part in input_parts %}{{ part }}{% endfor %}")
    if append_choices:
        jinja += ("{% for choice in choice_parts %}" + _literal(choice_prefix)
                  + "{% for part in choice %}{{ part }}{% endfor %}{% endfor %}")
    jinja += (_literal(output_prefix)
              + " ||| {% for part in target_parts %}{{ part }}{% endfor %}")
    metadata = {"original_task": True, "choices_in_prompt": append_choices, "metrics": ["multiple_choice_grade"],
                "languages": ["en"]}
    return Template(TEMPLATE_NAME, jinja, answer_choices='{{ choices | join("|||") }}', metadata=metadata)


@dataclass(frozen=True)
class BigBenchFewShotFormat(FewShotFormat):
    """BIG-bench's k-shot prompt of one task.json (see the module docstring), written from `bigbench_rows` rows."""

    task_prefix: str = ""
    input_prefix: str = DEFAULT_INPUT_PREFIX
    output_prefix: str = DEFAULT_OUTPUT_PREFIX
    choice_prefix: str = DEFAULT_CHOICE_PREFIX
    append_choices: bool = True
    separator: str = DEFAULT_FEW_SHOT_SEPARATOR

    @classmethod
    def from_task_json(cls, data: dict[str, Any]) -> "BigBenchFewShotFormat":
        """The format of a checked task.json (`read_task_json`), with BIG-bench's defaults for absent keys."""
        return cls(task_prefix=_prefix(data, "task_prefix", ""),
                   input_prefix=_prefix(data, "example_input_prefix", DEFAULT_INPUT_PREFIX),
                   output_prefix=_prefix(data, "example_output_prefix", DEFAULT_OUTPUT_PREFIX),
                   choice_prefix=_prefix(data, "choice_prefix", DEFAULT_CHOICE_PREFIX),
                   append_choices=data.get("append_choices_to_input", True),
                   separator=_prefix(data, "few_shot_example_separator", DEFAULT_FEW_SHOT_SEPARATOR))

    def query(self, row: Mapping[str, Any]) -> str:
        """Input prefix, input, the listed choices (when appended), output prefix."""
        choices = self.choice_prefix + self.choice_prefix.join(row["choices"]) if self.append_choices else ""
        return f"{self.input_prefix}{row['input']}{choices}{self.output_prefix}"

    def draw(self, rows: Sequence[Mapping[str, Any]], k: int) -> list[list[str]]:
        """Every row's demonstrations as BIG-bench's `make_nshot_dataset` draws them with its default seed: from
        one `numpy.random.RandomState(42)`, the order the rows are queried in (`choice` of all rows without
        replacement), then for each query in that order k of the other rows (`choice` without replacement, kept in
        the order drawn), each demonstrated by one of its `demonstration_targets` (`choice`). With fewer than k + 1
        rows (BIG-bench refuses the task) every other row is drawn."""
        rng = numpy.random.RandomState(BIGBENCH_SEED)
        queries = [self.query(row) for row in rows]
        drawn: list[list[str]] = [[] for _ in rows]
        for query in rng.choice(len(rows), len(rows), replace=False) if len(rows) > 1 else ():
            for position in rng.choice(len(rows) - 1, min(k, len(rows) - 1), replace=False):
                shown = position + (position >= query)  # the position among the rows other than the query
                targets = rows[shown]["demonstration_targets"]
                drawn[query].append(queries[shown] + targets[rng.choice(len(targets))])
        return drawn

    def prompt(self, demonstrations: Sequence[str], query: str) -> str:
        """The task prefix, then the demonstrations and the query joined by the separator; stripped at its ends."""
        return (self.task_prefix + self.separator.join([*demonstrations, query])).strip()


@dataclass(frozen=True)
class BigBenchEvalProtocol(EvalProtocol):
    """How BIG-bench's own harness treats a JSON task's examples (see the module docstring): an over-long input keeps
    its end (`truncation_side` "left"), `max_examples` keeps the examples BIG-bench draws, and a tie between answer
    choices is broken as BIG-bench breaks it (`pick`; `absolute_normalization`: the task.json's key of that name)."""

    truncation_side: str = "left"
    absolute_normalization: bool = False
    pick_fields: ClassVar[Tuple[str, ...]] = ("choice_file_positions",)

    def example_rows(self, count: int, max_examples: int) -> list[int]:
        """The examples JsonTask scores with `max_examples` (json_task.make_nshot_dataset, with its default seed): a
        `choice` of `max_examples` of the `count` distinct examples without replacement, from a fresh
        `numpy.random.RandomState(42)` (zero-shot and k-shot alike: k-shot, the first queries of its draw, each shown
        the demonstrations it gets in the whole task's run); all of them when there are no more. In file order."""
        if max_examples >= count:
            return list(range(count))
        drawn = numpy.random.RandomState(BIGBENCH_SEED).choice(count, max_examples, replace=False)
        return sorted(int(i) for i in drawn)

    def pick(self, scores: Sequence[float], row: Mapping[str, Any]) -> int:
        """The listed choice BIG-bench's `multiple_choice_grade` picks (task_metrics.argmax) for these log-likelihoods:
        JsonTask scores the choices in the order of the file's `target_scores` (the row's `choice_file_positions`)
        and, unless the task sets `absolute_normalization`, normalises them over the choices (less their logsumexp);
        the highest wins, and of several the one at the sha256 hash of the scores' float64 bytes modulo their
        count. Scores without a highest (a NaN among them, or all -inf before the normalisation: BIG-bench's argmax
        then divides by zero) get the default pick, the first listed of the highest, as any other task's."""
        positions = row["choice_file_positions"]
        in_file = numpy.empty(len(scores))
        in_file[positions] = scores
        if not self.absolute_normalization:
            from scipy.special import logsumexp  # (scipy: a dependency of the metrics)

            with numpy.errstate(invalid="ignore"):  # (all -inf: NaN, left to the default pick below)
                in_file = in_file - logsumexp(in_file)
        best = numpy.flatnonzero(in_file == in_file.max())
        if not len(best):  # (a model whose outputs are not finite: scored as the default scores it, not a crash)
            return super().pick(scores, row)
        chosen = best[int(hashlib.sha256(in_file.tobytes()).hexdigest(), 16) % len(best)]
        return positions.index(int(chosen))

    @property
    def kept_part(self) -> str:
        """What the model sees of an over-long input: its end, as BIG-bench's model wrapper keeps it."""
        return "end, as BIG-bench keeps it"


class BigBenchSource(Source):
    """The examples of one BIG-bench task.json as rows (see `bigbench_rows`), all in split `test`."""

    def __init__(self, path: PathLike):
        self.path = _task_file(path)
        self._rows: Optional[list[dict[str, Any]]] = None

    def rows(self) -> list[dict[str, Any]]:
        """The task.json's rows, read once and kept."""
        if self._rows is None:
            data = read_task_json(self.path)
            self._rows = bigbench_rows(data)
        return self._rows

    def load(self, split: str, *, streaming: bool = False) -> Union[datasets.Dataset, datasets.IterableDataset]:
        """All rows for split `test`; raises `DataSourceError` for any other split."""
        if split != SPLIT:
            raise DataSourceError(f"BIG-bench task {str(self.path)!r} has only the split {SPLIT!r}, not {split!r}")
        dataset = datasets.Dataset.from_list(self.rows(), split=datasets.NamedSplit(SPLIT))
        return dataset.to_iterable_dataset() if streaming else dataset

    def describe(self) -> str:
        """`BIG-bench <task.json path>`."""
        return f"BIG-bench {self.path}"

    def to_config(self) -> dict[str, Any]:
        """`{"bigbench": <task.json path>}`."""
        return {"bigbench": str(self.path)}


def load_bigbench_task(path: PathLike, *, name: Optional[str] = None) -> Task:
    """A `Task` (not registered) for one BIG-bench task dir or task.json; named `bigbench_<task_json_name>`."""
    file = _task_file(path)
    data = read_task_json(file)
    task_name = name or NAME_PREFIX + task_json_name(data, file)
    return Task(task_name, BigBenchSource(file), [bigbench_template(data)],
                metrics=("multiple_choice_grade",), task_type="multiple_choice", cluster=CLUSTER, held_out=True,
                splits=(SPLIT,), eval_only=True, description=str(data.get("description", "")),
                few_shot_format=BigBenchFewShotFormat.from_task_json(data),
                eval_protocol=BigBenchEvalProtocol(absolute_normalization=data.get("absolute_normalization", False)))


def import_bigbench(directory: PathLike, *, overwrite: bool = False) -> list[str]:
    """Register every `<task>/task.json` under `directory` (or the one task.json it names); returns names.

    A task already registered from the same file is kept (the import is idempotent); another task of the
    same name is an error unless `overwrite` (another task.json's naming both files).
    """
    directory = Path(directory)
    if directory.is_file() or (directory / "task.json").is_file():
        files = [_task_file(directory)]
    elif directory.is_dir():
        files = sorted(directory.glob("*/task.json"))
    else:
        raise DataSourceError(f"BIG-bench folder {str(directory)!r} does not exist")
    if not files:
        raise DataSourceError(f"BIG-bench folder {str(directory)!r} has no <task>/task.json files")
    names = []
    for file in files:
        task = load_bigbench_task(file)
        try:
            existing = get_task(task.name)
        except KeyError:
            existing = None
        from_bigbench = isinstance(getattr(existing, "source", None), BigBenchSource)
        same_file = from_bigbench and existing.source.path.resolve() == file.resolve()
        if existing is None or overwrite:
            register_task(task, overwrite=overwrite)
        elif from_bigbench and not same_file:
            raise DuplicateRegistrationError(
                f"BIG-bench task files {str(existing.source.path)!r} and {str(file)!r} both make the task "
                f"{task.name!r} (named by a task.json's 'name', else by its folder); give one of them another 'name'")
        elif not same_file:
            register_task(task)  # raises DuplicateRegistrationError naming the task
        names.append(task.name)
    return names
