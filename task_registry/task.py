"""A task: a data source, preprocessors, templates and metadata, rendered to text-to-text `datasets`.

`Task.to_dataset(split)` gives columns `inputs`, `targets`, `answer_choices` (list of str, `[]` if the
template has none), `references` (every acceptable gold answer: the template's `references`, else
`[targets]`), `task` and `template`. Each row is rendered with one of the selected templates, chosen
uniformly from `random.Random(f"{seed}:{row_index}")` (the same generator seeds the `choice` and `random` filters), or
with `every_template=True` with each of them in turn (`random.Random(f"{seed}:{row_index}:{template_name}")`), so
the output is a pure function of (rows, templates, seed) and map-style results are cached by datasets
fingerprint (which also names the Jinja environment's version). Rows whose template renders no target
(promptsource's "skip") or no input (T0 drops those from its training data too) are dropped, counted in
`task.render_stats[split]` and logged; rows a filter preprocessor drops are counted in
`task.preprocess_stats[split]` and logged.

How a row is rendered (the columns, the `Renderer` mapped over the rows) is `row_renderer`'s; the checks of a task's
definition, `task_definition_checks`'; its group_by and postprocess expressions, `task_expressions`'.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union

from .code_digests import code_digest
from .errors import DataSourceError, TaskDefinitionError, TemplateRenderError, UnknownTemplateError
from .eval_protocol import EvalProtocol
from .few_shot_format import FewShotFormat
from .lazy_modules import LazyModule
from .preprocessors import Preprocessor, callable_name, step_identity
from .row_renderer import SKIP_COLUMN, Renderer
from .sources import GeneratorSource, Source
from .task_definition_checks import (check_count, check_evaluation_rules, check_expressions, check_name, check_settings,
                                     check_source, checked_names, checked_preprocessors, checked_templates)
from .task_expressions import compiled_expression, expression_value, group_key
from .template import Template

datasets = LazyModule("datasets")
pc = LazyModule("pyarrow.compute")
logger = logging.getLogger(__name__)


@dataclasses.dataclass
class RenderStats:
    """Renderings of one split's rows — one a row, or `per_row` (its templates, `to_dataset(every_template=True)`) —:
    `rows` of them, `skipped` ones had an empty target or input and were dropped, `empty_inputs` of those a target
    but an empty input; `skipped_by_template` and `kept_by_template` count them by template name."""

    task: str
    split: str
    per_row: int = 1
    rows: int = 0
    kept: int = 0
    skipped: int = 0
    skipped_by_template: dict[str, int] = dataclasses.field(default_factory=dict)
    empty_inputs: int = 0
    kept_by_template: dict[str, int] = dataclasses.field(default_factory=dict)

    def count(self, template: str, skipped: bool, empty_input: bool) -> None:
        """Record one row rendered with `template`: kept, or `skipped` (with an empty input when `empty_input`)."""
        self.rows += 1
        if skipped:
            self.skipped += 1
            self.empty_inputs += empty_input
            self.skipped_by_template[template] = self.skipped_by_template.get(template, 0) + 1
        else:
            self.kept += 1
            self.kept_by_template[template] = self.kept_by_template.get(template, 0) + 1

    def kept_of(self, templates: Sequence[str]) -> dict[str, int]:
        """{template: renderings kept} for each of `templates`, in that order (0 for one that kept none)."""
        return {name: self.kept_by_template.get(name, 0) for name in templates}

    def renderings(self) -> str:
        """What was rendered: "N rows", or with `per_row` > 1 "N examples (R rows x k templates)"."""
        if self.per_row == 1:
            return f"{self.rows} rows"
        return f"{self.rows} examples ({self.rows // self.per_row} rows x {self.per_row} templates)"

    def log(self) -> None:
        """Warn of the skipped renderings (nothing when none was)."""
        if self.skipped:
            logger.warning("task %r split %r: %d of %s skipped (%d empty target, %d empty input) by template(s) %s",
                           self.task, self.split, self.skipped, self.renderings(), self.skipped - self.empty_inputs,
                           self.empty_inputs, self.skipped_by_template)


@dataclasses.dataclass
class PreprocessStats:
    """Rows before and after the preprocessors of one split (map-style loads only)."""

    task: str
    split: str
    rows_in: int
    rows_out: int
    dropped_by: dict[str, int]


@contextlib.contextmanager
def _naming_task_and_split(task: str, split: str) -> Iterator[None]:
    """A preprocessor's error on a row, raised again naming the task and split (chained to a Python function's own
    error); an error reading the source's rows (its message names the split), raised again naming the task."""
    try:
        yield
    except TemplateRenderError as error:  # a preprocessor's expression or function failed on a row
        raise TemplateRenderError(f"split {split!r}: {error}", task=task) from error.__cause__
    except TaskDefinitionError as error:  # e.g. a map whose values change type across rows
        raise TaskDefinitionError(f"task {task!r}: split {split!r}: {error}") from None
    except DataSourceError as error:  # a missing or unreadable file, loaded or streamed
        raise DataSourceError(f"task {task!r}: {error}") from error.__cause__


def _preprocessed_rows(rows: datasets.IterableDataset, task: str, split: str) -> Iterator[dict[str, Any]]:
    """The rows of a streamed split, whose preprocessors run (and fail, naming the task and split as map-style
    loading does) while they are iterated."""
    with _naming_task_and_split(task, split):
        yield from rows


def _stream_rendered(rows: datasets.IterableDataset, renderer: Renderer, stats: RenderStats,
                     max_examples: Optional[int]) -> Iterator[dict[str, Any]]:
    """The rendered rows of one pass over `rows`; `stats` counts this pass (each new pass starts it afresh)."""
    stats.rows = stats.kept = stats.skipped = stats.empty_inputs = 0
    stats.skipped_by_template, stats.kept_by_template = {}, {}
    for index, row in enumerate(rows):
        if max_examples is not None and index >= max_examples:
            break
        for rendered in renderer.render_row(row, index):
            skipped = rendered.pop(SKIP_COLUMN)
            stats.count(rendered["template"], skipped, empty_input=skipped and rendered["targets"] != "")
            if not skipped:
                yield rendered
    stats.log()


class Task:
    """A named text-to-text task: `source` rows → `preprocessors` → one of `templates` per row.

    `group_by` (optional): a sandboxed Jinja expression over a row whose value names the row's group, for
    metrics that score groups of examples together (`group_exact_match`; MultiRC: `idx.question`).
    `postprocess` (optional, seqio's `postprocess_fn`): a function text -> text, or a sandboxed Jinja expression over
    `text` (YAML's `postprocess:`, e.g. `text.split('####')[-1] | trim`), applied to each generated prediction
    and to each gold answer (target, references; answer choices too, which label metrics index) before the metrics
    score them — in evaluation by generation and in held-in validation's exact match; e.g. the number after `####` of
    a GSM8K solution. Rank classification picks among the answer choices as written, unprocessed.
    `few_shot_format` (optional, `FewShotFormat`): how k-shot evaluation writes the task's prompts, from its rows, in
    place of the project's "input\\ntarget" blocks joined by blank lines (BIG-bench JSON tasks: BIG-bench's own).
    `eval_protocol` (optional, `EvalProtocol`; default the project's, T0's): how evaluation treats the task's examples
    where its benchmark has its own rule (BIG-bench JSON tasks: an over-long input keeps its end).
    """

    def __init__(self, name: str, source: Source, templates: Union[Template, Sequence[Template]],
                 preprocessors: Sequence[Preprocessor] = (), metrics: Sequence[str] = (),
                 task_type: str = "generation", cluster: Optional[str] = None, held_out: bool = False,
                 splits: Sequence[str] = ("train", "validation"), eval_only: bool = False, description: str = "",
                 group_by: Optional[str] = None, postprocess: Union[None, str, Callable[[str], str]] = None,
                 few_shot_format: Optional[FewShotFormat] = None, eval_protocol: Optional[EvalProtocol] = None):
        if not isinstance(name, str) or not name:
            raise TaskDefinitionError(f"a task needs a non-empty string name, got {name!r}")
        check_name(name)
        check_source(name, source)
        templates = checked_templates(name, templates)
        preprocessors = checked_preprocessors(name, preprocessors)
        splits, metrics = checked_names(name, splits, metrics)
        check_settings(name, task_type=task_type, cluster=cluster, description=description, held_out=held_out,
                        eval_only=eval_only)
        check_expressions(name, group_by, postprocess)
        check_evaluation_rules(name, few_shot_format, eval_protocol)
        self.name = name
        self.source = source
        self.templates = templates
        self.preprocessors = preprocessors
        self.metrics = tuple(metrics)
        self.task_type = task_type
        self.cluster = cluster or task_type
        self.held_out = bool(held_out)
        self.splits = tuple(splits)
        self.eval_only = bool(eval_only)
        self.description = description
        self.group_by = group_by
        self.postprocess = postprocess
        self.few_shot_format = few_shot_format
        self.eval_protocol = eval_protocol if eval_protocol is not None else EvalProtocol()
        self.render_stats: dict[str, RenderStats] = {}
        self.preprocess_stats: dict[str, PreprocessStats] = {}

    # -- templates ---------------------------------------------------------------------------------------
    @property
    def template_names(self) -> list[str]:
        """The templates' names, in order."""
        return [t.name for t in self.templates]

    def get_template(self, name: str) -> Template:
        """The template named `name`; raises `UnknownTemplateError` (listing the names) when there is none."""
        for template in self.templates:
            if template.name == name:
                return template
        raise UnknownTemplateError(self.name, name, self.template_names)

    def splits_without_files(self) -> list[str]:
        """The task's `splits` that its source's split → files mapping does not name: each fails when first read
        (a validation split only after training); [] when the source does not fix its splits by files."""
        named = self.source.file_splits()
        return [] if named is None else [split for split in self.splits if split not in named]

    def select_templates(self, names: Optional[Iterable[str]] = None) -> list[Template]:
        """The named templates (all when `names` is None)."""
        if names is None:
            return list(self.templates)
        if isinstance(names, str):
            names = [names]
        selected = [self.get_template(n) for n in names]
        if not selected:
            raise TaskDefinitionError(f"task {self.name!r}: an empty template selection")
        return selected

    # -- rows --------------------------------------------------------------------------------------------
    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise DataSourceError(f"task {self.name!r} has no split {split!r}; its splits are {list(self.splits)}")

    def load_rows(self, split: str, *, streaming: bool = False, max_rows: Optional[int] = None
                  ) -> Union[datasets.Dataset, datasets.IterableDataset]:
        """Raw rows of `split` after the preprocessors (filter drops are counted in `preprocess_stats`).

        `max_rows` keeps the first rows of the result (selected before the preprocessors when they all keep
        rows one-to-one). Streamed, the rows are read and preprocessed while they are iterated, and fail then with
        the errors map-style loading raises.
        """
        self._check_split(split)
        check_count("max_rows", max_rows, self.name)
        with _naming_task_and_split(self.name, split):
            rows = self.source.load(split, streaming=streaming)
        counted = not streaming and isinstance(rows, datasets.Dataset)
        keeps_rows = all(step.keeps_rows for step in self.preprocessors)
        if max_rows is not None and counted and keeps_rows and max_rows < len(rows):
            rows = rows.select(range(max_rows))
        rows_in = len(rows) if counted else -1
        dropped: dict[str, int] = {}
        for step in self.preprocessors:
            before = len(rows) if counted else 0
            with _naming_task_and_split(self.name, split):
                rows = step(rows)
            if counted and not step.keeps_rows and len(rows) < before:
                dropped[step.describe()] = before - len(rows)
                logger.warning("task %r split %r: %s dropped %d of %d rows", self.name, split, step.describe(),
                               before - len(rows), before)
            elif counted and len(rows) > before:  # e.g. span corruption cutting long texts into chunks
                logger.info("task %r split %r: %s made %d rows of %d", self.name, split, step.describe(),
                            len(rows), before)
        if counted:
            self.preprocess_stats[split] = PreprocessStats(self.name, split, rows_in, len(rows), dropped)
            if max_rows is not None and max_rows < len(rows):
                rows = rows.select(range(max_rows))
        elif max_rows is not None:
            rows = rows.take(max_rows)
        if counted:
            return rows
        return datasets.IterableDataset.from_generator(
            _preprocessed_rows, features=rows.features, gen_kwargs={"rows": rows, "task": self.name, "split": split})

    def num_rows(self, split: str) -> int:
        """Rows of `split` after preprocessors (before template skips)."""
        self._check_split(split)
        if isinstance(self.source, GeneratorSource) and not self.preprocessors:
            return self.source.rows_for(split)
        return len(self.load_rows(split))

    def group_key(self, row: Mapping[str, Any], row_index: int) -> Optional[str]:
        """The group of a row for group metrics (`group_by` evaluated on it, as JSON text); None without
        `group_by`. A failing expression is a `TemplateRenderError` naming the task and row."""
        return None if self.group_by is None else group_key(self.name, self.group_by, row, row_index)

    def postprocessed(self, texts: Sequence[str]) -> list[str]:
        """`texts` (predictions or gold answers) through `postprocess` (unchanged without one); a failure or a value
        that is not a string is a `TaskDefinitionError` naming the task and the text."""
        if self.postprocess is None:
            return list(texts)
        if isinstance(self.postprocess, str):
            compiled = compiled_expression(self.postprocess, f"task {self.name!r}: postprocess")
            function: Callable[[str], Any] = functools.partial(expression_value, compiled)
        else:
            function = self.postprocess
        out = []
        for text in texts:
            try:
                value = function(text)
            except Exception as error:  # the user's function or expression: any failure, named with its input
                raise TaskDefinitionError(f"task {self.name!r}: postprocess failed on {text!r} "
                                          f"({type(error).__name__}: {error}); it must take every generated text, "
                                          f"an empty or malformed one included") from error
            if not isinstance(value, str):
                raise TaskDefinitionError(f"task {self.name!r}: postprocess must return a string, got {value!r} "
                                          f"for {text!r}")
            out.append(value)
        return out

    # -- rendering ---------------------------------------------------------------------------------------
    def to_dataset(self, split: str, templates: Optional[Sequence[str]] = None, streaming: bool = False,
                   max_examples: Optional[int] = None, seed: int = 0, with_groups: bool = False,
                   every_template: bool = False, with_row_index: bool = False
                   ) -> Union[datasets.Dataset, datasets.IterableDataset]:
        """Rendered examples of `split` (of its first `max_examples` rows), skips dropped and counted: a row in one
        of `templates` (all by default) drawn per row from `seed`, or with `every_template` a row in each of them
        (rows x templates examples, a row's in template order; T0's training mixture). `with_groups` adds a
        GROUP_COLUMN column, each row's `group_key`, when the task has a `group_by`; `with_row_index` a ROW_COLUMN
        column, the index of the (preprocessed) row each example renders."""
        check_count("max_examples", max_examples, self.name)
        group_by = self.group_by if with_groups else None
        renderer = Renderer(self.name, self.select_templates(templates), seed, group_by, every_template,
                             with_row_index)
        stats = RenderStats(self.name, split, per_row=len(renderer.templates) if every_template else 1)
        self.render_stats[split] = stats
        if streaming:
            rows = self.load_rows(split, streaming=True)
            return datasets.IterableDataset.from_generator(
                _stream_rendered, features=renderer.features,
                gen_kwargs={"rows": rows, "renderer": renderer, "stats": stats, "max_examples": max_examples})
        rows = self.load_rows(split, max_rows=max_examples)
        if len(rows) == 0:  # `Dataset.map` would drop the output columns of an empty dataset
            return datasets.Dataset.from_dict({name: [] for name in renderer.features}, features=renderer.features)
        rendered = rows.map(
            renderer, batched=True, with_indices=True, remove_columns=rows.column_names,
            features=datasets.Features({**renderer.features, SKIP_COLUMN: datasets.Value("bool")}),
            new_fingerprint=datasets.fingerprint.Hasher.hash((rows._fingerprint, renderer.fingerprint_parts())),
            desc=f"render {self.name}/{split}")
        table = rendered.data.table
        skip_mask, template = table.column(SKIP_COLUMN), table.column("template")
        stats.rows = len(rendered)
        stats.skipped = int(pc.sum(skip_mask).as_py() or 0)
        stats.kept = stats.rows - stats.skipped
        stats.kept_by_template = _value_counts(pc.filter(template, pc.invert(skip_mask)) if stats.skipped else template)
        if stats.skipped:
            stats.skipped_by_template = _value_counts(pc.filter(template, skip_mask))
            with_target = pc.not_equal(table.column("targets"), "")
            stats.empty_inputs = int(pc.sum(pc.and_(skip_mask, with_target)).as_py() or 0)
            stats.log()
            kept = datasets.fingerprint.Hasher.hash((rendered._fingerprint, "drop-skipped"))
            rendered = rendered.filter(lambda skipped: not skipped, input_columns=SKIP_COLUMN, new_fingerprint=kept)
        return rendered.remove_columns(SKIP_COLUMN)

    def definition_digest(self) -> str:
        """A hash of what the task's examples and scores depend on: its templates (each field rendering uses, and
        their metadata), its source (`Source.identity`: a generator's code too), its preprocessors
        (`Preprocessor.identity`: a Python function's code too), metrics, task type, splits and group_by. Equal in
        every process for an unchanged definition; the rows of data files are not read."""
        definition = {
            "templates": [{"name": t.name, "jinja": t.jinja, "answer_choices": t.answer_choices,
                           "references": t.references, "instruction": t.instruction, "context": t.context,
                           "metadata": t.metadata.to_dict()} for t in self.templates],
            "source": [_qualified_name(type(self.source)), self.source.identity()],
            "preprocessors": [[_qualified_name(type(step)), step.identity()] for step in self.preprocessors],
            "metrics": list(self.metrics), "task_type": self.task_type, "splits": list(self.splits),
            "group_by": self.group_by,
            **({"postprocess": _identity_of(self.postprocess)} if self.postprocess is not None else {}),
        }
        text = json.dumps(definition, sort_keys=True, default=_stable_value)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """A plain-data summary (for `t2t-mtl tasks show`)."""
        return {
            "name": self.name, "task_type": self.task_type, "cluster": self.cluster, "held_out": self.held_out,
            "eval_only": self.eval_only, "splits": list(self.splits), "metrics": list(self.metrics),
            **({"group_by": self.group_by} if self.group_by is not None else {}),
            **({"postprocess": _shown_postprocess(self.postprocess)} if self.postprocess is not None else {}),
            "description": self.description, "source": self.source.shown_config(),
            "preprocessors": [p.describe() for p in self.preprocessors],
            "templates": [{"name": t.name, "jinja": t.jinja, "answer_choices": t.answer_choices,
                           **({"references": t.references} if t.references is not None else {}),
                           "metadata": {k: v for k, v in t.metadata.to_dict().items() if v is not None}}
                          for t in self.templates],
        }

    def __repr__(self) -> str:
        return (f"Task(name={self.name!r}, source={self.source.describe()!r}, templates={self.template_names}, "
                f"task_type={self.task_type!r}, cluster={self.cluster!r}, held_out={self.held_out})")


def _value_counts(column: Any) -> dict[str, int]:
    """{value: rows holding it} of an Arrow column, in the order the values first appear."""
    return {entry["values"].as_py(): entry["counts"].as_py() for entry in pc.value_counts(column)}


def _identity_of(fn: Union[str, Callable[[str], str]]) -> str:
    """A postprocess expression, or a function's name with `code_digest` of its code (`definition_digest`)."""
    return step_identity(_shown_postprocess(fn), fn)


def _shown_postprocess(fn: Union[str, Callable[[str], str]]) -> str:
    """A postprocess as `tasks show` prints it: the Jinja expression, or the function's name."""
    return fn if isinstance(fn, str) else callable_name(fn)


def _qualified_name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def _stable_value(value: Any) -> Any:
    """A value JSON cannot write (in a generator's `gen_kwargs`, a source's `load_kwargs`), as data equal in every
    process: a set sorted, a path as text, else its type with datasets' hash of it, and a function's `code_digest`
    (never a repr, which may hold a memory address)."""
    if isinstance(value, (set, frozenset)):
        return sorted(json.dumps(item, sort_keys=True, default=_stable_value) for item in value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    code = f" code={code_digest(value)}" if callable(value) else ""
    try:
        return f"{_qualified_name(type(value))} {datasets.fingerprint.Hasher.hash(value)}{code}"
    except Exception:  # (datasets' own fallback for what it cannot pickle catches as widely)
        return f"{_qualified_name(type(value))}{code}"
