"""Errors raised by the task registry.

Every error names what it is about (task, template, field, row, file, line) and what to do. Errors about
missing names subclass `KeyError`, errors about bad content subclass `ValueError`; all subclass
`TaskRegistryError`, so one `except` catches the family.
"""
from __future__ import annotations

import collections
import difflib
from typing import Hashable, Iterable, Optional


class TaskRegistryError(Exception):
    """Base class of every task-registry error."""

    def __str__(self) -> str:  # KeyError would otherwise print the repr of its message
        return str(self.args[0]) if self.args else ""


def close_matches(name: str, candidates: Iterable[str], n: int = 5, *, cutoff: float = 0.5,
                  substrings: bool = True) -> list[str]:
    """The "did you mean" of an unknown name: the at most `n` of `candidates` closest to `name`, best first, by
    difflib ratio ignoring case (at least `cutoff`), then with `substrings` the candidates that contain it (`boolq`
    → `super_glue_boolq`). Candidates differing only in case count once (the first given)."""
    by_lower: dict[str, str] = {}
    for candidate in candidates:
        by_lower.setdefault(candidate.lower(), candidate)
    wanted = str(name).lower()
    matches = difflib.get_close_matches(wanted, list(by_lower), n=n, cutoff=cutoff)
    if substrings:
        matches += [c for c in by_lower if len(wanted) > 1 and wanted in c and c not in matches]
    return [by_lower[m] for m in matches[:n]]


def repeated_items(items: Iterable[Hashable]) -> list:
    """The items that occur more than once in `items`, each once, sorted: the names of a list given twice."""
    counts = collections.Counter(list(items))  # (a mapping: its keys, not its values as counts)
    return sorted(item for item, count in counts.items() if count > 1)


def _suggestion(matches: list[str]) -> str:
    """`; did you mean ...?` naming `matches` (`close_matches`), or nothing when there are none."""
    return f"; did you mean {', '.join(repr(m) for m in matches)}?" if matches else ""


class UnknownTaskError(TaskRegistryError, KeyError):
    """A task name that is not registered; the message lists close matches."""

    def __init__(self, name: str, known: Iterable[str], where: str = "", mixtures: Optional[Iterable[str]] = None,
                 is_mixture: bool = False):
        """`mixtures`: where a mixture name would do too (given, even empty), the registered mixtures;
        `is_mixture`: `name` is a registered mixture, given where only a task will do."""
        known, mixtures = sorted(known), None if mixtures is None else sorted(mixtures)
        candidates = known + (mixtures or [])
        self.name = name
        self.suggestions = close_matches(name, candidates)
        what, registered = ("task", f"{len(known)} tasks") if mixtures is None else \
            ("task or mixture", f"{len(known)} tasks and {len(mixtures)} mixtures")
        prefix = f"{where}: " if where else ""
        if is_mixture:
            super().__init__(f"{prefix}{name!r} is a mixture, not a task (`t2t-mtl mixture show {name}` lists its "
                             f"tasks)")
            return
        super().__init__(
            f"{prefix}unknown {what} {name!r}{_suggestion(self.suggestions)} "
            f"({registered} registered; `t2t-mtl tasks list` shows them, `task_registry.load_builtin_tasks()` "
            f"registers the built-ins)"
        )


class UnknownMixtureError(TaskRegistryError, KeyError):
    """A mixture name that is not registered; the message lists close matches."""

    def __init__(self, name: str, known: Iterable[str], is_task: bool = False):
        """`is_task`: `name` is a registered task, given where only a mixture will do."""
        known = sorted(known)
        self.name = name
        self.suggestions = close_matches(name, known)
        super().__init__(f"{name!r} is a task, not a mixture (name it where tasks are taken: `--tasks`, data.tasks)"
                         if is_task else f"unknown mixture {name!r}{_suggestion(self.suggestions)} ({len(known)} "
                                         f"mixtures registered)")


class UnknownTemplateError(TaskRegistryError, KeyError):
    """A template name that the task does not have."""

    def __init__(self, task: str, name: str, known: Iterable[str]):
        known = list(known)
        super().__init__(
            f"task {task!r} has no template {name!r}{_suggestion(close_matches(name, known))}; its templates: {known}"
        )


class DuplicateRegistrationError(TaskRegistryError, ValueError):
    """A task or mixture name registered twice without `overwrite=True`."""


class TaskDefinitionError(TaskRegistryError, ValueError):
    """A task, template, source or mixture definition that is malformed (message names the file/key)."""


class TemplateSyntaxError(TaskDefinitionError):
    """A Jinja template that does not parse; names the template, the file and the line."""

    def __init__(self, message: str, *, template: str, lineno: Optional[int] = None,
                 filename: Optional[str] = None, file_lineno: Optional[int] = None):
        self.template = template
        self.lineno = lineno
        self.filename = filename
        self.file_lineno = file_lineno
        where = f"{filename}:{file_lineno}: " if filename and file_lineno else (f"{filename}: " if filename else "")
        jinja_line = f" (line {lineno} of the template)" if lineno else ""
        super().__init__(f"{where}template {template!r} has a Jinja syntax error{jinja_line}: {message}")


class TemplateRenderError(TaskRegistryError, ValueError):
    """Rendering a template on a row failed; names the task, the template (and `origin`: the file and line it was
    read from, the id it was given) and the row index (with `row_shown`, the row's values, where they are what
    finds it: a null field's row)."""

    def __init__(self, message: str, *, task: Optional[str] = None, template: Optional[str] = None,
                 row_index: Optional[int] = None, field: Optional[str] = None, origin: Optional[str] = None,
                 row_shown: Optional[str] = None):
        self.task = task
        self.template = template
        self.row_index = row_index
        self.field = field
        self.origin = origin
        self.row_shown = row_shown
        self.reason = message
        super().__init__(self.describe())

    def describe(self, with_origin: bool = True, with_row: bool = True) -> str:
        """The message: task, template (with its `origin` unless `with_origin` is false, for a caller that names
        where the template is already) and row (unless `with_row` is false, for a caller that counts the rows one
        problem hit), then what went wrong."""
        origin = f" ({self.origin})" if self.origin and with_origin else ""
        where = ", ".join(
            part for part in (
                f"task {self.task!r}" if self.task else "",
                f"template {self.template!r}{origin}" if self.template else "",
                f"row {self.row_index}{f' ({self.row_shown})' if self.row_shown else ''}"
                if self.row_index is not None and with_row else "",
            ) if part
        )
        return f"{where}: {self.reason}" if where else self.reason


class MissingFieldError(TemplateRenderError):
    """A template used a variable (field) that the row does not have."""


class AnswerNotInChoicesError(TemplateRenderError):
    """A rendered target that is not one of the rendered answer choices."""


class SandboxViolationError(TemplateRenderError):
    """A template tried to reach Python internals (`__class__`, `__globals__`, ...); refused."""


class DataSourceError(TaskRegistryError, ValueError):
    """A task's data could not be found or loaded; names the source, split and path."""


class HeldOutTaskError(TaskRegistryError, ValueError):
    """A held-out (or evaluation-only) task would enter a training mixture."""

    def __init__(self, message: str, *, task: str, cluster: Optional[str] = None):
        self.task = task
        self.cluster = cluster
        super().__init__(message)


class EvalOnlyTaskError(HeldOutTaskError):
    """An evaluation-only task (e.g. a BIG-bench import) would enter a training mixture; never allowed."""


class TaskFileError(TaskDefinitionError):
    """A YAML task file with one or more problems; `errors` lists each as `file:line: message`."""

    def __init__(self, path: str, errors: list[str]):
        self.path = path
        self.errors = list(errors)
        super().__init__(f"{path}: {len(errors)} problem(s):\n" + "\n".join(f"  - {e}" for e in errors))
