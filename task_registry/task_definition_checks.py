"""The checks of a Task's definition, in the order `Task.__init__` makes them, each raising a TaskDefinitionError
naming the task: its name (it names a folder), source, templates, preprocessors, splits and metrics, settings,
group_by and postprocess expressions and evaluation rules; and of the row counts its loads take."""
from __future__ import annotations

import numbers
import re
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from .errors import TaskDefinitionError, repeated_items
from .eval_protocol import EvalProtocol
from .few_shot_format import FewShotFormat
from .preprocessors import Preprocessor, callable_name, one_argument_problem
from .sources import GeneratorSource, Source
from .task_expressions import compiled_expression
from .template import Template


#: the longest task name, in UTF-8 bytes: it names a folder (file systems take 255)
MAX_NAME_BYTES = 200


def check_name(task: str) -> None:
    """A task's name names its folder of tokenized rows (`/` written `__`): refuse one that would name another folder
    or none (`.`, `..`, a control character such as NUL, more than `MAX_NAME_BYTES` bytes)."""
    problem = ("is '.' or '..', which name folders already" if task in (".", "..") else
               "holds a control character" if any(ord(c) < 32 or ord(c) == 127 for c in task) else
               f"is longer than {MAX_NAME_BYTES} bytes" if len(task.encode(errors="surrogatepass")) > MAX_NAME_BYTES
               else None)
    if problem:
        raise TaskDefinitionError(f"task name {task!r} {problem}: a task's name is its folder's, where its rows are "
                                  f"kept tokenized; name it with letters, digits and _ - . /")


def check_source(task: str, source: Any) -> None:
    """`source` must be a `Source`; a `GeneratorSource`'s function must take the split."""
    if not isinstance(source, Source):
        raise TaskDefinitionError(f"task {task!r}: source must be an HFSource, LocalFileSource or "
                                  f"GeneratorSource, got {type(source).__name__}")
    if isinstance(source, GeneratorSource) and (why := source.signature_problem()):
        raise TaskDefinitionError(f"task {task!r}: {why}")


def checked_templates(task: str, templates: Union[Template, Sequence[Template]]) -> list[Template]:
    """`templates` (one, or a sequence) as a non-empty list of uniquely named `Template`s that can render a target;
    a Jinja string, or anything else that is no list of them, is refused with how to write one."""
    if isinstance(templates, str):  # (its letters are no templates)
        raise TaskDefinitionError(f"task {task!r}: templates must be a list of Template objects, got the string "
                                  f"{templates!r}: write [Template('NAME', {templates!r})]")
    if isinstance(templates, Mapping) or not isinstance(templates, (Template, Iterable)):
        raise TaskDefinitionError(f"task {task!r}: templates must be a list of Template objects, got {templates!r}")
    templates = [templates] if isinstance(templates, Template) else list(templates)
    if not templates:
        raise TaskDefinitionError(f"task {task!r} needs at least one template")
    seen: set[str] = set()
    for template in templates:
        if not isinstance(template, Template):
            raise TaskDefinitionError(f"task {task!r}: templates must be Template objects, got {template!r}")
        if template.name in seen:
            raise TaskDefinitionError(f"task {task!r}: two templates are named {template.name!r}")
        if why := template.target_problem():
            raise TaskDefinitionError(f"task {task!r}: template {template.name!r} {why}")
        seen.add(template.name)
    return templates


def checked_preprocessors(task: str, preprocessors: Any) -> list[Preprocessor]:
    """`preprocessors` (one step, or an iterable of them) as a list of `Preprocessor`s; a plain function is refused
    with how to make it a step."""
    if isinstance(preprocessors, Preprocessor) or callable(preprocessors):  # (one step, not a list of them)
        preprocessors = [preprocessors]
    elif isinstance(preprocessors, (str, Mapping)) or not isinstance(preprocessors, Iterable):
        raise TaskDefinitionError(f"task {task!r}: preprocessors must be a list of Preprocessor objects (Rename, "
                                  f"Filter, Map), got {preprocessors!r}")
    preprocessors = list(preprocessors)
    for step in preprocessors:  # (a generator is read once, above: checked as kept)
        if not isinstance(step, Preprocessor):
            raise TaskDefinitionError(f"task {task!r}: preprocessors must be Preprocessor objects "
                                      f"(Rename, Filter, Map), got {step!r}{_function_step_hint(step)}")
    return preprocessors


def checked_names(task: str, splits: Any, metrics: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(splits, metrics) as tuples of names: splits non-empty and whole (no datasets slicing), neither repeating a
    name; a generator is read once, here."""
    names_of_splits, names_of_metrics = _names(splits), _names(metrics)
    if not isinstance(names_of_splits, tuple) or not names_of_splits or \
            not all(isinstance(split, str) for split in names_of_splits):
        raise TaskDefinitionError(f"task {task!r}: splits must be a non-empty list of names, got {splits!r}")
    if isinstance(names_of_metrics, str):  # one metric name, not its letters
        raise TaskDefinitionError(f"task {task!r}: metrics must be a list of metric names, got the string "
                                  f"{names_of_metrics!r} (write [{names_of_metrics!r}])")
    if not isinstance(names_of_metrics, tuple) or not all(isinstance(metric, str) for metric in names_of_metrics):
        raise TaskDefinitionError(f"task {task!r}: metrics must be a list of metric names, got {metrics!r}")
    if problem := sliced_split_problem(names_of_splits):
        raise TaskDefinitionError(f"task {task!r}: {problem}")
    for key, names in (("splits", names_of_splits), ("metrics", names_of_metrics)):
        if problem := repeated_names(names):  # (a split would be read and rendered, a metric scored, once each)
            raise TaskDefinitionError(f"task {task!r}: {key} {problem}")
    return names_of_splits, names_of_metrics


def check_settings(task: str, **settings: Any) -> None:
    """`task_type`, `cluster` (or None) and `description` must be strings (the first two not empty), `held_out` and
    `eval_only` booleans."""
    kinds = {"task_type": str, "cluster": (str, type(None)), "description": str, "held_out": bool, "eval_only": bool}
    for key, value in settings.items():
        if not isinstance(value, kinds[key]):  # (bool("false") is True: a held-out flag must be one)
            what = "true or false" if kinds[key] is bool else "a string"
            raise TaskDefinitionError(f"task {task!r}: {key} must be {what}, got {value!r}")
        if key in ("task_type", "cluster") and isinstance(value, str) and not value.strip():  # ('' read as unset)
            unset = " (or None: the task type)" if key == "cluster" else ""
            raise TaskDefinitionError(f"task {task!r}: {key} must be a non-empty string{unset}, got {value!r}")


def check_expressions(task: str, group_by: Any, postprocess: Any) -> None:
    """`group_by` (None, or a Jinja expression) and `postprocess` (None, a Jinja expression, or a function of one
    text) must be what they say; an expression is compiled (and cached) here."""
    if group_by is not None:
        if not isinstance(group_by, str) or not group_by.strip():
            raise TaskDefinitionError(f"task {task!r}: group_by must be a Jinja expression over a row naming its "
                                      f"group (e.g. 'idx.question'), got {group_by!r}")
        compiled_expression(group_by, f"task {task!r}: group_by")
    if isinstance(postprocess, str):
        compiled_expression(postprocess, f"task {task!r}: postprocess")
    elif postprocess is not None and not callable(postprocess):
        raise TaskDefinitionError(f"task {task!r}: postprocess must be a function text -> text, or a Jinja "
                                  f"expression over `text` (applied to predictions and gold answers before the "
                                  f"metrics), got {postprocess!r}")
    elif postprocess is not None and (problem := one_argument_problem(postprocess, "the text")):
        raise TaskDefinitionError(f"task {task!r}: postprocess {problem} (seqio's postprocess_fn(output, "
                                  f"example=None, is_target=False) can be)")


def check_evaluation_rules(task: str, few_shot_format: Any, eval_protocol: Any) -> None:
    """`few_shot_format` must be None or a `FewShotFormat`, `eval_protocol` None or an `EvalProtocol`."""
    if few_shot_format is not None and not isinstance(few_shot_format, FewShotFormat):
        raise TaskDefinitionError(f"task {task!r}: few_shot_format must be a FewShotFormat, got {few_shot_format!r}")
    if eval_protocol is not None and not isinstance(eval_protocol, EvalProtocol):
        raise TaskDefinitionError(f"task {task!r}: eval_protocol must be an EvalProtocol, got {eval_protocol!r}")


def _function_step_hint(step: Any) -> str:
    """For a plain function given as a preprocessor (seqio's preprocessors are functions): how to make it one."""
    if not callable(step):
        return ""
    fn = callable_name(step)
    return (f"; a function of one row is a step as Map({fn}) (it returns the row's new or changed fields) or "
            f"Filter({fn}) (it returns whether to keep the row); a seqio preprocessor of a whole dataset is "
            f"rewritten as such a function of one row")


def repeated_names(names: Sequence[str]) -> str:
    """"names 'a', 'b' more than once; list each once" for the names `names` holds more than once, or ""."""
    repeated = repeated_items(names)
    return f"names {', '.join(map(repr, repeated))} more than once; list each once" if repeated else ""


def sliced_split_problem(splits: Sequence[str]) -> Optional[str]:
    """Why `splits` cannot be a task's, where one is written in datasets' split slicing (`train[:10%]`,
    `train+validation`), with what to write; None when each names a whole split. Such a split was read as a name: a
    data dir's file `train[:10%].jsonl`, a `files:` mapping's key, and never training's split 'train'."""
    sliced = [split for split in splits if isinstance(split, str) and ("[" in split or "+" in split)]
    if not sliced:
        return None
    whole = re.split(r"[\[+]", sliced[0])[0]
    return (f"splits name whole splits of the source; {sliced[0]!r} is datasets' split slicing, which a task does not "
            f"read (training reads its split 'train'): list {whole!r} and cap the rows a "
            f"run reads with data.max_examples_per_task (training), data.validation_examples, or "
            f"evaluation.max_examples / eval --max-examples")


def _names(value: Any) -> Any:
    """A list of names (`splits`, `metrics`) as a tuple, so that checking it does not use up a generator; a string or
    a value that is no iterable is returned as given, for the checks to refuse."""
    return tuple(value) if isinstance(value, Iterable) and not isinstance(value, str) else value


def check_count(key: str, value: Optional[int], task: str) -> None:
    """A row count (`max_examples`, `max_rows`) must be None or an integer >= 0 (a negative one kept no row)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0):
        raise TaskDefinitionError(f"task {task!r}: {key} must be a number of rows >= 0 or None (all), got {value!r}")
