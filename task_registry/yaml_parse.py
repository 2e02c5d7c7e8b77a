"""Parsing one YAML task file into a `Task` (the schema: `task_registry.yaml_tasks`), with every problem reported
as `file:line: message`: a loader that keeps each key's and value's line, and `TaskFileParser`, which checks the
schema, builds the source, preprocessors and templates, and runs an optional `TaskCheck`."""
from __future__ import annotations

import os
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Callable, Optional, Union

import yaml

from .data_paths import (is_pattern, is_saved_dataset, matched_files, split_folders, unmatched_pattern,
                         written_as_local_path)
from .errors import TaskDefinitionError, TaskRegistryError, close_matches
from .file_formats import is_file_builder, misspelt_reader_problem
from .preprocessors import Preprocessor, compile_expression, from_config as preprocessor_from_config
from .promptsource import TEMPLATES_FILENAME, HyphensToUnderscores, import_promptsource
from .sources import HFSource, LocalFileSource, Source
from .task import Task
from .task_definition_checks import repeated_names, sliced_split_problem
from .template import Template
from .yaml_keys import check_written_keys
from .yaml_limits import BoundedComposition

__all__ = ["PROMPTSOURCE_KEYS", "ROW_EXPRESSION_KEYS", "SOURCE_KINDS", "TASK_KEYS", "TEMPLATE_KEYS", "TaskCheck",
           "TaskFileParser", "template_location"]

TASK_KEYS = {"name", "description", "task_type", "cluster", "held_out", "eval_only", "splits", "metrics",
             "group_by", "postprocess", "source", "preprocessors", "templates"}
TEMPLATE_KEYS = {"name", "jinja", "answer_choices", "references", "instruction", "context", "metadata", "reference",
                 "id"}
PROMPTSOURCE_KEYS = {"promptsource", "dataset", "subset", "names"}
SOURCE_KINDS = {"hf": {"hf", "name", "data_files"}, "files": {"files"}}
#: task keys holding a Jinja expression evaluated on rows or answers only when a run evaluates (validation checks them)
ROW_EXPRESSION_KEYS = ("group_by", "postprocess")

TaskCheck = Callable[[Task], list[tuple[str, str]]]
"""A check of a parsed task that the registry cannot make itself (e.g. evaluation's metric names): one
(YAML key the problem is about, message) pair per problem; loading reports each at that key's line."""


class _LineMapping(dict):
    """A YAML mapping that remembers its line, the line of each key and the line where each value starts (1-based),
    and each value that is a scalar, or a list of them, as written (`yes` of a value YAML reads as True)."""

    line: int = 0
    key_lines: dict[str, int]
    value_lines: dict[str, int]
    written: dict[str, Union[str, list[str]]]


class _LineLoader(BoundedComposition, yaml.SafeLoader):
    """SafeLoader whose mappings carry line numbers and whose duplicate keys are an error, within `yaml_limits`'
    bounds (nesting, aliases)."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _LineMapping:
    check_written_keys(loader, node)
    loader.flatten_mapping(node)  # merged keys first, so the mapping's own keys override them
    mapping = _LineMapping()
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {}
    mapping.value_lines = {}
    mapping.written = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError(None, None, f"a key must be a name, got {key!r}",
                                                    key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = key_node.start_mark.line + 1
        if isinstance(value_node, yaml.ScalarNode):  # where the text starts (block scalars: the next line)
            block = value_node.style in ("|", ">")
            mapping.value_lines[key] = value_node.start_mark.line + 1 + (1 if block else 0)
            mapping.written[key] = value_node.value
        else:  # a nested mapping/list: the line of its key
            mapping.value_lines[key] = key_node.start_mark.line + 1
            if isinstance(value_node, yaml.SequenceNode) and all(isinstance(item, yaml.ScalarNode)
                                                                 for item in value_node.value):
                mapping.written[key] = [item.value for item in value_node.value]
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _unknown_keys(mapping: dict, allowed: set[str], reported: frozenset = frozenset()) -> list[tuple[int, str]]:
    """(line of the key, message) for each key of `mapping` not in `allowed`, but those the caller has `reported`."""
    problems = []
    for key in mapping:
        if key not in allowed and key not in reported:
            close = close_matches(str(key), sorted(allowed), n=1, cutoff=0.6, substrings=False)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (allowed: {sorted(allowed)})"
            line = mapping.key_lines[key] if isinstance(mapping, _LineMapping) else 1
            problems.append((line, f"unknown key {key!r}{hint}"))
    return problems


class TaskFileParser:
    """Turns one YAML task document into a Task, collecting problems as `file:line: message`."""

    def __init__(self, path: Path, check: Optional[TaskCheck] = None):
        self.path = path
        self.check = check
        self.errors: list[str] = []
        self.imports_promptsource = False
        self.name_line = 1
        self.expression_lines: dict[str, int] = {}  # line of each of group_by / postprocess the file writes
        # `file:line: message` per data file that does not exist: not an error, as the machine that loads a folder
        # may lack the files of tasks it does not use
        self.missing_files: list[str] = []

    def error(self, line: int, message: str) -> None:
        """Record `message` as a problem at `line` of the file (`file:line: message` in `errors`)."""
        self.errors.append(f"{self.path}:{line}: {message}")

    def line_of(self, mapping: Any, key: Optional[str] = None) -> int:
        """The line where `mapping[key]`'s value starts, or `mapping`'s own line without `key` (or when the key is
        absent); 1 for a value the loader gave no lines (not a mapping)."""
        if isinstance(mapping, _LineMapping):
            return mapping.value_lines.get(key, mapping.line) if key else mapping.line
        return 1

    def parse(self) -> Optional[Task]:
        """The file's Task, or None with every problem found recorded in `errors` (not raised): the YAML, the
        schema's keys and types, the source, preprocessors and templates, the Task's own checks and `check`'s."""
        try:
            text = self.path.read_text(encoding="utf-8")
            document = yaml.load(text, Loader=_LineLoader)  # noqa: S506
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            line = mark.line + 1 if mark else 1
            self.error(line, f"not valid YAML: {getattr(error, 'problem', error)}{_quote_hint(text, line)}")
            return None
        except OSError as error:
            self.errors.append(f"{self.path}: cannot read: {error}")
            return None
        except UnicodeDecodeError as error:
            self.errors.append(f"{self.path}: not UTF-8 text ({error}); save it as UTF-8")
            return None
        if not isinstance(document, dict):
            self.error(1, "a task file must be a mapping with at least `name`, `source` and `templates`")
            return None
        for line, problem in _unknown_keys(document, TASK_KEYS):
            self.error(line, problem)
        for key in ("name", "source", "templates"):
            if key not in document:
                self.error(document.line, f"missing required key {key!r}")
        name = document.get("name")
        self.name_line = self.line_of(document, "name")
        self.expression_lines = {key: self.line_of(document, key) for key in ROW_EXPRESSION_KEYS if key in document}
        if "name" in document and (not isinstance(name, str) or not name):
            self.error(self.line_of(document, "name"), f"`name` must be a non-empty string, got {name!r}")
        options = self.options(document)
        source = self.source(document.get("source"), self.line_of(document, "source")) if "source" in document else None
        self.split_problems(document, source)
        preprocessors = self.preprocessors(document)
        templates = self.templates(document)
        for template in templates:  # (before the Task, which refuses them without the file's line)
            if why := template.target_problem():
                self.errors.append(f"{template_location(template, self.path)}: template {template.name!r} {why}")
        if self.imports_promptsource:  # promptsource's templates read `a-b` columns as `a_b`, as promptsource_task
            preprocessors.insert(0, HyphensToUnderscores())
        if self.errors or source is None or not isinstance(name, str):
            return None
        try:
            task = Task(name, source, templates, preprocessors=preprocessors, **options)
        except TaskRegistryError as error:
            self.error(document.line, str(error))
            return None
        self.task_problems(document, task)
        return None if self.errors else task

    def task_problems(self, document: dict, task: Task) -> None:
        """Report the problems `check` finds."""
        for key, message in self.check(task) if self.check else ():
            self.error(self.line_of(document, key), message)

    def options(self, document: dict) -> dict[str, Any]:
        """The Task keyword arguments of the document's optional keys (description, task_type, cluster, held_out,
        eval_only, group_by, postprocess, splits, metrics) that are well-formed; each ill-formed one is reported at
        its line and left out."""
        options: dict[str, Any] = {}
        for key, kind in (("description", str), ("task_type", str), ("cluster", str), ("held_out", bool),
                          ("eval_only", bool), ("group_by", str), ("postprocess", str)):
            if key in document:
                if not isinstance(document[key], kind):
                    self.error(self.line_of(document, key), f"`{key}` must be a {kind.__name__}, got "
                                                            f"{document[key]!r}{_read_as_bool(document, key)}")
                elif key in ("group_by", "postprocess") and self.expression_problem(document, key):
                    continue
                else:
                    options[key] = document[key]
        for key in ("splits", "metrics"):
            if key in document:
                value = document[key]
                strings = isinstance(value, list) and all(isinstance(v, str) for v in value)
                if not strings or (key == "splits" and not value):
                    self.error(self.line_of(document, key), f"`{key}` must be a list of strings, got {value!r}")
                elif problem := repeated_names(value):
                    self.error(self.line_of(document, key), f"`{key}` {problem}")
                elif key == "splits" and (problem := sliced_split_problem(value)):
                    self.error(self.line_of(document, key), problem)
                else:
                    options[key] = tuple(value)
        return options

    def expression_problem(self, document: dict, key: str) -> bool:
        """Whether `document[key]` is not a Jinja expression (reported at its line)."""
        try:
            compile_expression(document[key], f"`{key}`")
        except TaskDefinitionError as error:
            self.error(self.line_of(document, key), str(error))
            return True
        return False

    def split_problems(self, document: dict, source: Optional[Source]) -> None:
        """Report at the `splits` line (or the `source` line when it is not given) each split that a split → files
        mapping (`files:`, or an `hf:` source's `data_files:`, whose keys are its splits; `data_files:` as a path or
        list is datasets' split `train` alone) has no files for."""
        named = source.file_splits() if source is not None else None
        splits = document.get("splits", ["train", "validation"])
        if named is None or not isinstance(splits, list) or sliced_split_problem(splits):  # (reported by `options`)
            return
        key = "data_files" if isinstance(source, HFSource) else "files"
        at = self.line_of(document, "splits" if "splits" in document else "source")
        if isinstance(source, HFSource) and not isinstance(source.data_files, dict):
            if splits != ["train"]:
                self.error(at, f"`source: data_files:` as a path or a list is datasets' split 'train' alone, but the "
                               f"task has the splits {splits} (`splits` default to [train, validation]): map each "
                               f"split to its files (`data_files: {{train: ..., validation: ...}}`) or set "
                               f"`splits: [train]`")
            return
        missing = [split for split in splits if split not in named]
        if missing:
            written = document["source"][key]  # (one path: a DatasetDict's folder, whose splits are `named`)
            read_as = split_folders(written, missing, [s for s in named if s not in splits]) \
                if isinstance(written, str) else {}
            folders = ", or read a split's folder as a split of the task: files: {" + ", ".join(
                f"{split}: {path}" for split, path in read_as.items()) + "}" if read_as else ""
            self.error(at, f"`source: {key}:` has no file for the split(s) {missing}; it has "
                           f"{sorted(named)} (`splits` default to [train, validation]: list the ones the "
                           f"files hold{folders})")

    def source(self, config: Any, line: int) -> Optional[Source]:
        """The `source:` mapping `config` (at `line`) as an `HFSource` or a `LocalFileSource`, its paths relative to
        the YAML file; None, with the problems reported, when it is ill-formed."""
        if not isinstance(config, dict):
            self.error(line, f"`source` must be a mapping with `hf:` or `files:`, got {config!r}")
            return None
        kinds = [kind for kind in SOURCE_KINDS if kind in config]
        if len(kinds) != 1:
            self.error(line, f"`source` needs exactly one of {sorted(SOURCE_KINDS)}, got keys {sorted(config)}")
            return None
        kind = kinds[0]
        if "streaming" in config:  # (datasets' load_dataset(..., streaming=True): a wish this schema names)
            self.error(self.line_of(config, "streaming"), "source: `streaming` is not supported: training reads each "
                                                          "task's rows map-style, tokenized and cached by datasets; "
                                                          "drop it (in Python, Task.to_dataset(split, streaming=True) "
                                                          "streams a task's rows)")
        for key_line, problem in _unknown_keys(config, SOURCE_KINDS[kind], reported=frozenset({"streaming"})):
            self.error(key_line, f"source: {problem}")
        if kind == "hf" and config.get("name") is not None and not isinstance(config["name"], str):
            self.error(line, f"source: `name` is the hub config name, a string, got {config['name']!r}")
            return None
        if kind == "hf" and not (isinstance(config["hf"], str) and config["hf"].strip()):
            self.error(self.line_of(config, "hf"), f"source: `hf` is the hub dataset id (e.g. glue, or owner/name) or "
                                                   f"a local folder, a non-empty string; got {config['hf']!r}")
            return None
        saved = self.saved_folder(config["hf"]) if kind == "hf" else None
        if saved is not None:
            self.error(self.line_of(config, "hf"), f"source: `hf:` names a hub dataset, but {config['hf']!r} is a "
                                                   f"folder saved by save_to_disk ({saved!r}): write `files: "
                                                   f"{os.path.relpath(saved, self.path.parent)}` (relative to the "
                                                   f"YAML file)")
            return None
        try:
            if kind == "hf":
                data_files = config.get("data_files")
                if data_files is not None:  # a file reader's paths are on this machine, a hub repo's in the repo
                    misspelt = misspelt_reader_problem(config["hf"])
                    if misspelt is not None:
                        self.error(self.line_of(config, "hf"), f"source: hf: {misspelt}")
                        return None
                    data_files = self.resolve_files(config, "data_files", relative=is_file_builder(config["hf"]))
                return HFSource(self.local_folder(config), config.get("name"), data_files=data_files)
            return LocalFileSource(self.resolve_files(config, "files"))
        except TaskRegistryError as error:
            self.error(line, f"source: {error}")
            return None

    def local_folder(self, config: dict) -> str:
        """`config["hf"]`, or where it is written as a local path (starting with '.', '/' or '~', or with more than one
        '/': not a hub id), that path relative to the YAML file (~ and $VARS expanded), as `files:` paths are; a
        folder that does not exist is noted in `missing_files`."""
        written = config["hf"]
        if not written_as_local_path(written):
            return written
        path = Path(os.path.expanduser(os.path.expandvars(written)))
        resolved = path if path.is_absolute() else self.path.parent / path
        if not resolved.is_dir():
            self.missing_files.append(f"{self.path}:{self.line_of(config, 'hf')}: source: hf: {written!r} is read as a "
                                      f"local folder (it starts with '.', '/' or '~', or has more than one '/'), "
                                      f"and {str(resolved)!r} is not one; a hub id is 'name' or 'owner/name'")
        return str(resolved)

    def saved_folder(self, hub_path: Any) -> Optional[str]:
        """The folder `save_to_disk` wrote that the `hf:` value names, relative to the YAML file or the working
        directory (as `files:` would read it, or as load_dataset would); None when it names none."""
        if not isinstance(hub_path, str) or not hub_path:
            return None
        path = Path(os.path.expanduser(os.path.expandvars(hub_path)))
        found = [folder for folder in (self.path.parent / path, path) if is_saved_dataset(folder)]
        return str(found[0]) if found else None

    def resolve_files(self, config: dict, key: str, relative: bool = True) -> Any:
        """`config[key]` (a path, a list, or split → path or list) with each path relative to the YAML file (~ and
        $VARS expanded), a file that does not exist noted in `missing_files`; `relative=False` only checks that they
        are strings."""
        files = config[key]

        def resolve(p: Any, line: int) -> Any:
            if not isinstance(p, str):
                raise TaskDefinitionError(f"file paths must be strings, got {p!r}")
            if not relative:
                return p
            path = Path(os.path.expanduser(os.path.expandvars(p)))
            resolved = path if path.is_absolute() else self.path.parent / path
            if is_pattern(resolved):
                if not matched_files(resolved):
                    self.missing_files.append(f"{self.path}:{line}: source: {key}: {unmatched_pattern(p)} (relative to "
                                              f"the YAML file's folder: {str(resolved)!r})")
            elif not resolved.exists():
                self.missing_files.append(f"{self.path}:{line}: {self.missing_file(p, path, resolved, key)}")
            return str(resolved)

        line = self.line_of(config, key)
        if isinstance(files, dict):
            return {split: [resolve(p, self.line_of(files, split)) for p in v] if isinstance(v, list)
                    else resolve(v, self.line_of(files, split)) for split, v in files.items()}
        return [resolve(p, line) for p in files] if isinstance(files, list) else resolve(files, line)

    def missing_file(self, written: str, path: Path, resolved: Path, key: str) -> str:
        """Why the file `written` under `key` was not found, and, where the path was meant relative to the working
        directory (a file is there), how to write it."""
        if path.is_absolute():
            return f"source: {key}: the file {written!r} does not exist"
        where = (f"source: {key}: the file {written!r} does not exist relative to the YAML file's folder, where paths "
                 f"are read from ({str(resolved)!r})")
        if not path.exists():
            return where
        from_yaml = os.path.relpath(path, self.path.parent)
        return (f"{where}; it exists relative to the working directory: write {from_yaml!r} (relative to the YAML "
                f"file) or {str(path.resolve())!r}")

    def preprocessors(self, document: dict) -> list[Preprocessor]:
        """The `preprocessors:` list's steps (`preprocessors.from_config`); an entry that is no step (or a value that
        is no list) is reported at its line and left out."""
        entries = document.get("preprocessors", [])
        if not isinstance(entries, list):
            self.error(self.line_of(document, "preprocessors"), "`preprocessors` must be a list")
            return []
        result = []
        for entry in entries:
            try:
                result.append(preprocessor_from_config(entry))
            except TaskRegistryError as error:
                self.error(self.line_of(entry), str(error))
        return result

    def templates(self, document: dict) -> list[Template]:
        """The `templates:` list's templates, inline ones and those imported from promptsource files, in order; an
        ill-formed entry or a second template of one name is reported at its line and left out."""
        entries = document.get("templates", [])
        if not isinstance(entries, list) or not entries:
            if "templates" in document:
                self.error(self.line_of(document, "templates"), "`templates` must be a non-empty list")
            return []
        templates: list[Template] = []
        for entry in entries:
            if not isinstance(entry, dict):
                self.error(self.line_of(document, "templates"), f"a template must be a mapping, got {entry!r}")
                continue
            added = self.promptsource_templates(entry) if "promptsource" in entry else [self.inline_template(entry)]
            for template in added:
                if template is not None and template.name in {t.name for t in templates}:
                    self.error(self.line_of(entry), f"a second template named {template.name!r}: template names "
                                                    f"must be unique within a task")
                elif template is not None:
                    templates.append(template)
        return templates

    def inline_template(self, entry: dict) -> Optional[Template]:
        """The Template an entry with `name` and `jinja` (TEMPLATE_KEYS) defines; None, with its problems reported,
        when it is ill-formed."""
        problems = _unknown_keys(entry, TEMPLATE_KEYS)
        problems += [(self.line_of(entry), f"template lacks {key!r}") for key in ("name", "jinja") if key not in entry]
        if "{{" in str(entry.get("reference", "")) and "references" not in entry:
            problems.append((self.line_of(entry),
                             "`reference` is promptsource's free-text note on the prompt's source; to list the "
                             "acceptable gold answers use `references` (a `|||`-separated Jinja string)"))
        for line, problem in problems:
            self.error(line, problem)
        if problems:
            return None
        choices = entry.get("answer_choices")
        if isinstance(choices, list) and isinstance(entry, _LineMapping):  # (refused, told as one string: as written)
            choices = entry.written.get("answer_choices", choices)
        try:
            return Template(entry["name"], entry["jinja"], answer_choices=choices,
                            references=entry.get("references"), metadata=entry.get("metadata"), id=entry.get("id"),
                            reference=entry.get("reference", ""),
                            instruction=entry.get("instruction"), context=entry.get("context"),
                            source_file=str(self.path), source_line=self.line_of(entry, "jinja"))
        except TaskRegistryError as error:
            message = str(error)
            if message.startswith(f"{self.path}:"):
                self.errors.append(message)
            else:
                self.error(self.line_of(entry), message)
            return None

    def promptsource_templates(self, entry: dict) -> list[Template]:
        """The templates a `promptsource:` entry imports (PROMPTSOURCE_KEYS: the file or folder, its dataset and
        subset, the `names` to keep, all by default); [] with the problems reported when they cannot be read."""
        self.imports_promptsource = True
        for line, problem in _unknown_keys(entry, PROMPTSOURCE_KEYS):
            self.error(line, problem)
        names = entry.get("names")
        if isinstance(names, str):  # one template name, not its letters
            names = [names]
        wrong = [f"promptsource: `{key}` must be a string, got {entry.get(key)!r}" for key in PROMPTSOURCE_KEYS
                 if key != "names" and (key == "promptsource" or entry.get(key) is not None)
                 and not isinstance(entry.get(key), str)]
        if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            wrong.append(f"promptsource: `names` must be a template name or a list of them, got {entry['names']!r}")
        elif names == []:  # (would import no template, with no word)
            wrong.append("promptsource: `names` is an empty list, which imports no template: name the templates to "
                         "import, or leave `names` out for all of them")
        for problem in wrong:
            self.error(self.line_of(entry), problem)
        if wrong:
            return []
        location = Path(os.path.expanduser(os.path.expandvars(str(entry["promptsource"]))))
        location = location if location.is_absolute() else self.path.parent / location
        if entry.get("dataset") is None and location.is_dir() and not (location / TEMPLATES_FILENAME).is_file():
            self.error(self.line_of(entry, "promptsource"),
                       f"promptsource: {location} is a collection of promptsource templates (a {TEMPLATES_FILENAME} "
                       f"per dataset or subset): add `dataset:` (and `subset:`) beside `promptsource:` naming the one "
                       f"to import, e.g. `dataset: super_glue` and `subset: cb`")
            return []
        try:
            imported = import_promptsource(location, dataset=entry.get("dataset"), subset=entry.get("subset"))
        except TaskRegistryError as error:
            self.error(self.line_of(entry, "promptsource"), str(error))
            return []
        if names is None:
            return imported
        by_name = {t.name: t for t in imported}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            self.error(self.line_of(entry, "names"), f"promptsource templates {unknown} not found; available: "
                                                     f"{sorted(by_name)}")
        return [by_name[n] for n in names if n in by_name]


def _read_as_bool(mapping: dict, key: str) -> str:
    """For a value of `mapping[key]` that YAML read as a bool from a word (`on`, `No`): that it did, and the word to
    quote; else ""."""
    written = mapping.written.get(key) if isinstance(mapping, _LineMapping) else None
    if not isinstance(mapping[key], bool) or not isinstance(written, str):
        return ""
    return f" (YAML reads an unquoted {written} as a bool: write {written!r})"


def _quote_hint(text: str, line: int) -> str:
    """For a YAML error at a `key: value` line whose value holds Jinja unquoted (YAML reads `{{x}}` as a mapping,
    `|` after it as a block scalar, `: ` inside it as another key): how to write the value quoted; else ""."""
    lines = text.splitlines()
    written = lines[line - 1].strip() if 0 < line <= len(lines) else ""
    key, colon, value = written.removeprefix("- ").partition(": ")
    value = value.strip()
    if not colon or not key.isidentifier() or not ("{{" in value or "{%" in value) or value[:1] in ("'", '"'):
        return ""  # (a flow mapping `{name: t, jinja: ...}` on one line is left to YAML's message)
    quoted = f'"{value}"' if '"' not in value else "'" + value.replace("'", "''") + "'"
    return f"; Jinja in a YAML value must be quoted: write {key}: {quoted}"


def template_location(template: Any, path: Union[str, os.PathLike]) -> str:
    """Where `template`'s text starts, `file:line` (a YAML task file's or a promptsource file's), else `path`."""
    return f"{template.source_file}:{template.source_line}" if template.source_line else str(path)
