"""YAML task files: a user adds a task without writing Python (one task per `*.yaml` or `*.yml` file).

Schema (keys other than these are an error, reported with close matches)::

    name: my_rte                      # required, unique in the registry
    description: RTE with my prompts  # optional
    task_type: nli                    # optional, default "generation"
    cluster: nli                      # optional, default = task_type (held-out evaluation holds out clusters)
    held_out: false                   # optional; true = never train on it unless its cluster is held out/forced
    eval_only: false                  # optional; true = evaluation only, never in a training mixture
    splits: [train, validation]       # optional, default [train, validation]
    metrics: [accuracy]               # optional, names understood by the evaluation module
    # group_by: idx.question          # optional Jinja expression naming a row's group, for group metrics
                                      #   (group_exact_match: MultiRC's EM counts a question only when all
                                      #   its candidate answers are right)
    # postprocess: "text.split('####')[-1] | trim"  # optional Jinja expression over `text`: each generated
                                      #   prediction and gold answer as the metrics score it (seqio's
                                      #   postprocess_fn; rank classification is unaffected)
    source:                           # required, exactly one of `hf`, `files`
      hf: glue                        #   hub id; `name:` config, optional `data_files:`; the data-dir
      name: rte                       #   override maps it to <data_dir>/glue/rte/<split>.jsonl; a local
                                      #   folder of data files (hf: ./data: starting with ., / or ~, or
                                      #   with more than one /) is relative to the YAML file, data dir or not
      # data_files: {train: train.jsonl}  # with a file reader (`hf: json`, csv, parquet, text, ...): paths
                                      #   relative to the YAML file, as for `files:`; with a hub repo: paths
                                      #   inside the repo. A source with data_files ignores the data-dir override
                                      #   (a .tsv file: list it under `files:`, `hf: csv` splits at commas)
      # files: {train: train.jsonl, validation: dev.csv}   # local jsonl/json/csv/tsv/parquet; paths are
                                      #   relative to the YAML file (~ and $VARS expanded); a single path
                                      #   or list serves every split; a glob pattern (shards/*.jsonl) reads
                                      #   the files it matches, as data_files matches them; a folder that
                                      #   save_to_disk wrote is read with load_from_disk (a DatasetDict's
                                      #   splits are the task's)
    preprocessors:                    # optional, applied in order; expressions are sandboxed Jinja
      - rename: {sentence1: premise, sentence2: hypothesis}
      - filter: "label != -1"
      - map: {both: "premise ~ ' ' ~ hypothesis"}
      # - span_corruption: {field: text}  # T5's denoising objective: adds `corrupted` and `spans` fields
    templates:                        # required, at least one
      - name: t5                      # a template written inline
        jinja: "rte premise: {{premise}} hypothesis: {{hypothesis}} ||| {{ answer_choices[label] }}"
        answer_choices: "entailment ||| not_entailment"       # optional, `|||`-separated Jinja
        # references: "{{ answers | join(' ||| ') }}"  # optional, `|||`-separated Jinja: every acceptable
                                      #   gold answer for the text metrics (default: the target)
        instruction: "Does the premise entail the hypothesis?"  # optional decaNLP parts (Jinja)
        context: "{{premise}} {{hypothesis}}"
        metadata: {original_task: true, choices_in_prompt: false, metrics: [Accuracy]}
      - promptsource: ../promptsource-templates   # templates imported from a promptsource collection:
        dataset: super_glue                       #   a templates.yaml file, its folder, or a collection
        subset: rte                               #   root with dataset/subset; `names:` picks some
        names: [GPT-3 style, can we infer]        #   (as promptsource does, a task that imports any renames
                                                  #   columns with `-` to `_` before its preprocessors run)

Errors name the file and the line. Loading a folder and `validate_task_files` parse and check each file the same
way (`parse_task_files`: the schema, a split that `files:` or `data_files:` lacks, a template that renders no
target, a name that two files define, and an optional `TaskCheck`); validation also reports a data file of
`files:` / `data_files:` that does not exist (loading warns of it: the task fails only when its rows are read, so
a folder's other tasks still load where its files are absent), saying how to write a path meant relative to the
working directory, and renders the first rows of each split with each template when the rows are reachable — local
files or an active data dir — reporting a template whose every checked row of a train or validation split renders
an input but no target, such a split without rows (its filters dropped them all), and a `group_by` or
`postprocess` that fails on those rows or their targets (a run meets them only when it evaluates).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

from .path_hints import path_hint
from .errors import TaskDefinitionError, TaskFileError, TaskRegistryError, TemplateRenderError
from .file_formats import is_file_builder
from .registry import register_task, registered_task
from .sources import HFSource, LocalFileSource, get_data_dir
from .task import Task
from .template import RenderedExample, Template
from .yaml_parse import TaskCheck, TaskFileParser, template_location

#: splits whose rows carry their answers (`validate_task_files` checks that a template renders a target for them);
#: test splits often hold none
LABELLED_SPLITS = ("train", "validation")

__all__ = ["HUB_FILES", "NO_DATA_DIR", "ParsedTask", "TaskCheck", "check_task_files", "load_task_dir", "load_task_dirs",
           "parse_task_file", "parse_task_files", "task_files", "validate_task_file", "validate_task_files"]

logger = logging.getLogger(__name__)

def parse_task_file(path: Union[str, os.PathLike], check: Optional[TaskCheck] = None) -> Task:
    """The `Task` a YAML file defines (not registered); raises `TaskFileError` listing every problem (those of
    `check` included)."""
    parsed, errors = parse_task_files([Path(path)], check)
    if errors:
        raise TaskFileError(str(path), errors)
    return parsed[0].task


@dataclass(frozen=True)
class ParsedTask:
    """A task parsed from a YAML file, with the file and the line of its `name`, and `file:line: message` for each of
    its data files that does not exist (an error of `validate_task_files`, a warning of loading)."""

    path: Path
    name_line: int
    task: Task
    missing_files: tuple[str, ...] = ()
    expression_lines: tuple[tuple[str, int], ...] = ()  # (key, line) of its group_by / postprocess

    @property
    def location(self) -> str:
        return f"{self.path}:{self.name_line}"


def parse_task_files(paths: Sequence[Path], check: Optional[TaskCheck] = None) -> tuple[list[ParsedTask], list[str]]:
    """Parse each YAML file once: (the tasks of the files without problems, every problem as `file:line:
    message`, a task name that several files define included). The one parse that loading a folder and
    `tasks validate` share."""
    parsed, errors = [], []
    for path in paths:
        parser = TaskFileParser(path, check)
        task = parser.parse()
        if task is None:
            errors.extend(parser.errors)
        else:
            parsed.append(ParsedTask(path, parser.name_line, task, tuple(parser.missing_files),
                                     tuple(parser.expression_lines.items())))
    return parsed, errors + _duplicate_names(parsed)


def _duplicate_names(parsed: Sequence[ParsedTask]) -> list[str]:
    """One problem per task name that several files define, naming each file and the line of its `name`."""
    by_name: dict[str, list[str]] = {}
    for entry in parsed:
        by_name.setdefault(entry.task.name, []).append(entry.location)
    return [f"{where[0]}: task name {name!r} is defined by more than one file: {', '.join(where)}"
            for name, where in by_name.items() if len(where) > 1]


#: why `check_task_files` left a task's rows unrendered: a hub id with no data dir active, or data_files of a hub
#: repository (loaded as given, from the hub alone, data dir or not)
NO_DATA_DIR, HUB_FILES = "no data dir", "hub files"


def _unreachable(task: Task) -> Optional[str]:
    """Why the rows of `task` are not reachable offline (`NO_DATA_DIR`, `HUB_FILES`), or None where they are (local
    files, a file reader's data_files, a local folder, a hub id under an active data dir) or made by code."""
    source = task.source
    if isinstance(source, HFSource) and source.data_files is not None:
        return None if is_file_builder(source.path) else HUB_FILES
    if isinstance(source, HFSource):
        return None if source.reads_local_folder() or get_data_dir() is not None else NO_DATA_DIR
    return None if isinstance(source, LocalFileSource) else NO_DATA_DIR


def validate_task_files(paths: Sequence[Union[str, os.PathLike]], check_rows: int = 3,
                        check: Optional[TaskCheck] = None) -> list[str]:
    """Every problem of the YAML files as `file:line: message` (empty list = valid): what loading them as one
    folder reports, then — where the rows are reachable offline (local files, a file reader's `data_files`, or a
    hub id under an active data dir) — what rendering the first `check_rows` rows of each split with every
    template (and `group_by` / `postprocess` on those rows) finds, so a missing field is caught here."""
    return check_task_files(paths, check_rows, check)[0]


def check_task_files(paths: Sequence[Union[str, os.PathLike]], check_rows: int = 3,
                     check: Optional[TaskCheck] = None) -> tuple[list[str], dict[str, str]]:
    """(`validate_task_files`' problems, task name → why it left the task's rows unrendered, not reachable offline:
    `NO_DATA_DIR` for a hub id without an active data dir, `HUB_FILES` for a hub repository's data_files; none when
    `check_rows` is 0)."""
    parsed, problems = parse_task_files([Path(p) for p in paths], check)
    unrendered = {}
    for entry in parsed:
        problems += entry.missing_files
        if check_rows > 0 and not entry.missing_files:  # (reading them would only repeat that they are missing)
            problems += _row_problems(entry, check_rows)
            why = _unreachable(entry.task)
            if why is not None:
                unrendered[entry.task.name] = why
    return problems, unrendered


def validate_task_file(path: Union[str, os.PathLike], check_rows: int = 3,
                       check: Optional[TaskCheck] = None) -> list[str]:
    """Every problem in one file as `file:line: message` (empty list = valid); see `validate_task_files`."""
    return validate_task_files([path], check_rows, check)


def _row_problems(entry: ParsedTask, check_rows: int) -> list[str]:
    """What rendering the first `check_rows` rows of each split of a parsed task finds (none when its rows are
    not reachable offline): a render problem once per template, with the rows it hit (`_render_problem`)."""
    task, path = entry.task, entry.path
    if _unreachable(task) is not None:
        return []
    problems, hits, expression_hits, checked_rows = [], {}, {}, 0
    for split in task.splits:
        try:
            rows = task.load_rows(split)
        except TaskRegistryError as error:  # its message names the split
            problems.append(f"{path}: {error}")
            continue
        if not len(rows) and split.startswith(LABELLED_SPLITS):
            problems.append(_no_rows_problem(task, split, path))
            continue
        checked = min(check_rows, len(rows))
        checked_rows += checked
        rendered: list[list[RenderedExample]] = [[] for _ in task.templates]
        for index in range(checked):
            targets = []
            for number, (template, examples) in enumerate(zip(task.templates, rendered)):
                try:
                    examples.append(template.render(rows[index], task=task.name, row_index=index))
                    targets.append(examples[-1].targets)
                except TaskRegistryError as error:  # (the location names the template's file and line already)
                    text = error.describe(with_origin=False, with_row=False) \
                        if isinstance(error, TemplateRenderError) else str(error)
                    hits.setdefault((number, text), []).append((split, index))
            for key, text in _expression_problems(task, rows[index], index, targets):
                first = expression_hits.setdefault(key, (text, []))
                first[1].append((split, index))
        for template, examples in zip(task.templates, rendered):
            if split.startswith(LABELLED_SPLITS) and len(examples) == checked > 0 and \
                    all(example.inputs and not example.targets for example in examples):
                problems.append(_empty_targets_problem(task, template, split, checked, path))
    found = [_render_problem(template_location(task.templates[number], path), text, where, checked_rows)
             for (number, text), where in hits.items()]
    lines = dict(entry.expression_lines)
    found += [_render_problem(f"{path}:{lines.get(key, entry.name_line)}", text, where, checked_rows)
              for key, (text, where) in expression_hits.items()]
    return found + problems


def _expression_problems(task: Task, row: dict, index: int, targets: list[str]) -> list[tuple[str, str]]:
    """(key, problem) for the task's `group_by` evaluated on `row` (number `index`) and its `postprocess` applied to
    the `targets` rendered from the row, where either fails: a run meets them only when it evaluates."""
    found = []
    for key, evaluate in (("group_by", lambda: task.group_key(row, index)),
                          ("postprocess", lambda: task.postprocessed(targets))):
        try:
            evaluate()
        except TaskRegistryError as error:
            found.append((key, str(error)))
    return found


def _render_problem(location: str, text: str, where: list[tuple[str, int]], checked_rows: int) -> str:
    """One render problem of a template, with the (split, row) pairs it hit among the `checked_rows` rendered:
    `split 'train', row 0` for one, else how many, in which splits, and the first."""
    (split, row), splits = where[0], list(dict.fromkeys(s for s, _ in where))
    if len(where) == 1:
        return f"{location}: split {split!r}, row {row}: {text}"
    return (f"{location}: {len(where)} of the {checked_rows} rows checked ({'split' if len(splits) == 1 else 'splits'} "
            f"{', '.join(map(repr, splits))}; first: split {split!r}, row {row}): {text}")


def _no_rows_problem(task: Task, split: str, path: Path) -> str:
    """The problem of a labelled split without rows: its preprocessors' drops where they dropped them all, else its
    data files to check."""
    stats = task.preprocess_stats.get(split)
    where = f"{path}: split {split!r}: task {task.name!r} has no rows"
    if stats is None or not stats.dropped_by:
        return f"{where}, so training and evaluation would read none: check its data files"
    dropped = ", ".join(f"{step} dropped {count}" for step, count in stats.dropped_by.items())
    return (f"{where} after its preprocessors (of its {stats.rows_in} rows, {dropped}), so training and evaluation "
            f"would read none: check them against the rows (a test split's rows are not checked)")


def _empty_targets_problem(task: Task, template: Template, split: str, checked: int, path: Path) -> str:
    """The problem of a template whose every checked row of a labelled split renders an input but no target: each
    would be dropped as a skipped row, which a template bug (a field that holds no answer) rather than promptsource's
    skip case explains."""
    fields = ", ".join(map(repr, sorted(template.target_variables))) or "no field"
    return (f"{template_location(template, path)}: split {split!r}: task {task.name!r}, template {template.name!r}: "
            f"all {checked} checked rows render an empty target (the Jinja after '|||', reading {fields}), so "
            f"training and evaluation would drop every one; make the target render the answer (a test split's empty "
            f"targets are not checked)")


def task_files(directory: Union[str, os.PathLike]) -> list[Path]:
    """The YAML task files of a folder (`*.yaml` and `*.yml`), sorted by name."""
    return sorted(p for p in Path(directory).iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def load_task_dir(directory: Union[str, os.PathLike], register: bool = True, overwrite: bool = False,
                  check: Optional[TaskCheck] = None) -> list[Task]:
    """Parse every `*.yaml` / `*.yml` in `directory` (sorted by name) and register them; all problems reported
    at once."""
    parsed = _load_parsed(Path(directory), check)
    if register:
        for entry in parsed:
            register_task(entry.task, overwrite=overwrite)
    return [entry.task for entry in parsed]


def _load_parsed(directory: Path, check: Optional[TaskCheck] = None) -> list[ParsedTask]:
    """Every YAML file of the folder `directory`, parsed; every problem, a task name that two files define
    included, raised at once in one `TaskFileError`; TaskDefinitionError for a folder that is missing, a file, or
    holds no YAML task file."""
    if directory.is_file():
        raise TaskDefinitionError(f"task directory {directory} is a file, not a folder: pass the folder that holds "
                                  f"the YAML task files (*.yaml / *.yml)")
    if not directory.is_dir():
        raise TaskDefinitionError(f"task directory {directory} does not exist{path_hint(directory)}")
    files = task_files(directory)
    if not files:
        raise TaskDefinitionError(f"task directory {directory} holds no YAML task files (*.yaml / *.yml): pass the "
                                  f"folder that holds them (files in its subfolders are not read)")
    parsed, errors = parse_task_files(files, check)
    if errors:
        raise TaskFileError(str(directory), errors)
    for entry in parsed:
        for missing in entry.missing_files:
            logger.warning("%s", missing)
    return parsed


def load_task_dirs(directories: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]],
                   overwrite: bool = True, check: Optional[TaskCheck] = None) -> list[Task]:
    """Parse every `*.yaml` / `*.yml` of one folder or several and register them (the `--tasks-dir` options and the
    `data.tasks_dir` config key); `check` adds problems the registry cannot find itself (see `TaskCheck`).

    Every problem of every folder is reported at once in one `TaskFileError` (each `file:line: message`) and
    then nothing is registered; a task name defined twice, in one folder or across them, is a problem too.
    `overwrite=True` (default) replaces a registered task of the same name, so loading the same folders again
    (the next run in one process) is harmless; replacing a task not loaded from that same file (a built-in one,
    one registered from Python or from another folder) is logged as a warning naming both.
    """
    dirs = [directories] if isinstance(directories, (str, os.PathLike)) else list(directories)
    parsed: list[ParsedTask] = []
    errors: list[str] = []
    for directory in dirs:
        try:
            parsed.extend(_load_parsed(Path(directory), check))
        except TaskFileError as error:
            errors.extend(error.errors)
        except TaskDefinitionError as error:  # a missing folder
            errors.append(str(error))
    errors += _duplicate_names(parsed)  # across folders (a folder's own repeats are in its errors already)
    if errors:
        raise TaskFileError(", ".join(str(d) for d in dirs), errors)
    for entry in parsed:
        _warn_if_replacing(entry, overwrite)
        register_task(entry.task, overwrite=overwrite)
        _LOADED_FROM[entry.task.name] = (entry.path.resolve(), entry.task)
    return [entry.task for entry in parsed]


_LOADED_FROM: dict[str, tuple[Path, Task]] = {}  # task name -> (YAML file, task) `load_task_dirs` last registered


def yaml_task_file(name: str) -> Optional[Path]:
    """The YAML file (resolved) that registered task `name` as it is registered now; None for a task registered
    otherwise (built in, from Python) or replaced since its file was loaded."""
    origin, loaded = _LOADED_FROM.get(name, (None, None))
    return origin if loaded is not None and registered_task(name) is loaded else None


def _warn_if_replacing(entry: ParsedTask, overwrite: bool) -> None:
    """Log that `entry` replaces a registered task of its name that came from elsewhere than its own file."""
    name = entry.task.name
    if not overwrite or registered_task(name) is None:
        return
    origin = yaml_task_file(name)  # None: replaced since (from Python) or dropped with an isolated registry
    if origin == entry.path.resolve():
        return
    replaced = f"the one from {origin}" if origin is not None else "the built-in one (or one registered from Python)"
    logger.warning("%s: task %r replaces %s of that name; rename it to keep both", entry.location, name, replaced)
