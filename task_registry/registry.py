"""The global registry of tasks and mixtures, and the held-out protocol hook `training_rates`.

Names are unique within tasks and within mixtures; registering a name twice raises
`DuplicateRegistrationError` unless `overwrite=True` or the definitions are the same (a notebook cell run again).
Lookups of unknown names raise with close matches.
"""
from __future__ import annotations

import contextlib
import importlib
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

from .errors import (
    DuplicateRegistrationError,
    EvalOnlyTaskError,
    HeldOutTaskError,
    TaskDefinitionError,
    UnknownMixtureError,
    UnknownTaskError,
    repeated_items,
)
from .mixture import Mixture
from .sources import GeneratorSource
from .task import Task
from .template import Template

_TASKS: dict[str, Task] = {}
_MIXTURES: dict[str, Mixture] = {}
BUILTIN_PACKAGE = "task_registry.builtin"


def register_task(task: Task, overwrite: bool = False) -> Task:
    """Add `task` to the global registry; a name taken by another definition raises unless `overwrite=True` (one of
    the same definition, as a notebook cell run again registers, is replaced by `task`)."""
    if not isinstance(task, Task):
        raise TaskDefinitionError(f"register_task expects a Task, got {type(task).__name__}")
    if task.name in _TASKS and not overwrite and not same_task_definition(_TASKS[task.name], task):
        raise DuplicateRegistrationError(
            f"a task named {task.name!r} is already registered ({_TASKS[task.name]!r}); pass overwrite=True "
            f"to replace it")
    _TASKS[task.name] = task
    return task


def same_task_definition(registered: Task, task: Task) -> bool:
    """Whether `task` defines what `registered` does: the same object, or the same rows, templates and scoring
    (`definition_digest`), settings (`describe`) and evaluation rules (a cell registering it run again)."""
    return registered is task or (
        registered.describe() == task.describe() and registered.definition_digest() == task.definition_digest()
        and registered.few_shot_format == task.few_shot_format and registered.eval_protocol == task.eval_protocol)


def get_task(name: str) -> Task:
    """The registered task `name`; unknown names raise `UnknownTaskError` listing close matches."""
    try:
        return _TASKS[name]
    except KeyError:
        raise UnknownTaskError(name, _TASKS, is_mixture=name in _MIXTURES) from None


def registered_task(name: str) -> Optional[Task]:
    """The task registered as `name` now, or None where none is (one dict lookup, no close-match search)."""
    return _TASKS.get(name)


def list_tasks(cluster: Optional[str] = None, task_type: Optional[str] = None) -> list[str]:
    """Sorted names of the registered tasks, optionally only one cluster and/or task type."""
    return sorted(name for name, task in _TASKS.items()
                  if (cluster is None or task.cluster == cluster)
                  and (task_type is None or task.task_type == task_type))


def register_mixture(mixture: Mixture, overwrite: bool = False) -> Mixture:
    """Add `mixture` to the global registry; a name taken by another definition raises unless `overwrite=True` (one
    of the same members, rates and description is replaced by `mixture`)."""
    if not isinstance(mixture, Mixture):
        raise TaskDefinitionError(f"register_mixture expects a Mixture, got {type(mixture).__name__}")
    if mixture.name in _MIXTURES and not overwrite and not _same_mixture(_MIXTURES[mixture.name], mixture):
        raise DuplicateRegistrationError(
            f"a mixture named {mixture.name!r} is already registered; pass overwrite=True to replace it")
    _MIXTURES[mixture.name] = mixture
    return mixture


def _same_mixture(registered: Mixture, mixture: Mixture) -> bool:
    """Whether `mixture` has `registered`'s description and members (a `Task` or `Mixture` member by its definition)
    at the same rates (a function rate by its repr, which `rate_num_examples` writes with its arguments)."""
    return registered is mixture or (
        registered.description == mixture.description and len(registered.members) == len(mixture.members)
        and all(_same_member(a, b) and _same_rate(rate_a, rate_b)
                for (a, rate_a), (b, rate_b) in zip(registered.members, mixture.members)))


def _same_member(a: Any, b: Any) -> bool:
    if isinstance(a, Task):
        return isinstance(b, Task) and same_task_definition(a, b)
    if isinstance(a, Mixture):
        return isinstance(b, Mixture) and _same_mixture(a, b)
    return a == b


def _same_rate(a: Any, b: Any) -> bool:
    return repr(a) == repr(b) if callable(a) or callable(b) else a == b


def get_mixture(name: str) -> Mixture:
    """The registered mixture `name`; unknown names raise `UnknownMixtureError` listing close matches."""
    try:
        return _MIXTURES[name]
    except KeyError:
        raise UnknownMixtureError(name, _MIXTURES, is_task=name in _TASKS) from None


def list_mixtures() -> list[str]:
    """Sorted names of the registered mixtures."""
    return sorted(_MIXTURES)


def resolve(name: str, where: str = "") -> Union[Task, Mixture]:
    """A mixture by that name, else a task; raises `UnknownTaskError` with matches from both (its message starts
    with `where`, e.g. the mixture that names it, when given)."""
    if name in _MIXTURES:
        return _MIXTURES[name]
    if name in _TASKS:
        return _TASKS[name]
    raise UnknownTaskError(name, _TASKS, where=where, mixtures=_MIXTURES)


def comma_separated(text: str, where: str, what: str = "names") -> list[str]:
    """The comma-separated `what` of `text` (a command-line value), each stripped of spaces. No name at all, or an
    empty one (`a,,b`, a comma at an end), is a `TaskDefinitionError` naming `where` (the option) and the empty
    item's position: every comma-list value of the command line is read by this one function."""
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise TaskDefinitionError(f"{where} {text!r} names nothing; give comma-separated {what}, e.g. a,b")
    if "" in items:
        raise TaskDefinitionError(f"{where} {text!r}: item {items.index('') + 1} of {len(items)} is empty (',,' or a "
                                  f"comma at an end); give comma-separated {what}, none of them empty")
    return items


def resolve_selection(spec: str, where: str = "the selection") -> Union[Task, Mixture]:
    """What a command-line selection names: a registered mixture or task, or a mixture (rate 1 each) of
    comma-separated mixture / task names (`comma_separated`, its errors naming `where`); an unknown name raises
    `UnknownTaskError` with close matches."""
    names = comma_separated(spec, where, "mixture or task names")
    repeated = repeated_items(names)
    if repeated:  # (a mixture holds each member once: the repeat would silently collapse)
        raise TaskDefinitionError(f"{spec!r} names {', '.join(repeated)} more than once; name each mixture or task "
                                  f"once")
    if len(names) == 1:
        return resolve(names[0])
    for member in names:
        resolve(member)
    return Mixture(spec, names)


def task(name: Optional[str] = None, *, templates: Sequence[Template],
         num_rows: Union[int, dict[str, int]] = 1000, seed: int = 0, overwrite: bool = False,
         **task_kwargs: Any) -> Callable[[Callable], Callable]:
    """Decorator: register a row generator `fn(split, num_rows, seed)` as a task (default name: fn name).

    Other keywords (`task_type`, `cluster`, `held_out`, `splits`, `metrics`, ...) go to `Task`.
    """
    def decorate(fn: Callable) -> Callable:
        register_task(Task(name or fn.__name__, GeneratorSource(fn, num_rows=num_rows, seed=seed),
                           templates, **task_kwargs), overwrite=overwrite)
        return fn
    return decorate


def load_builtin_tasks() -> list[str]:
    """Register the built-in tasks and mixtures (`task_registry.builtin`) whose names are free; idempotent,
    and again after an `isolated_registry()` block has dropped them.

    Returns the names of all registered tasks.
    """
    importlib.import_module(BUILTIN_PACKAGE).register_builtin_tasks()
    return list_tasks()


@contextlib.contextmanager
def isolated_registry() -> Iterator[None]:
    """Run a block against a copy of the registry and restore the original afterwards (for tests)."""
    tasks, mixtures = dict(_TASKS), dict(_MIXTURES)
    try:
        yield
    finally:
        _TASKS.clear()
        _TASKS.update(tasks)
        _MIXTURES.clear()
        _MIXTURES.update(mixtures)


def training_rates(mixture_or_name: Union[str, Mixture, Task], held_out_clusters: Union[str, Iterable[str]] = (),
                   force: bool = False) -> dict[str, float]:
    """Task → rate for training: the mixture flattened, every task of a held-out cluster dropped.

    A remaining task flagged `held_out=True` raises `HeldOutTaskError` (naming task and cluster) unless
    `force=True`; a remaining `eval_only=True` task always raises `EvalOnlyTaskError`.
    """
    if isinstance(held_out_clusters, str):  # one cluster name, not its letters
        held_out_clusters = [held_out_clusters]
    if not isinstance(held_out_clusters, Iterable):
        raise TaskDefinitionError(f"held_out_clusters must be a cluster name or a list of them, got "
                                  f"{held_out_clusters!r}")
    target = resolve(mixture_or_name) if isinstance(mixture_or_name, str) else mixture_or_name
    if not isinstance(target, (Task, Mixture)):
        raise TaskDefinitionError(f"training_rates takes a mixture or task (or its name), got {target!r}")
    rates = target.flatten() if isinstance(target, Mixture) else {target.name: 1.0}
    held_out = set(held_out_clusters)
    kept: dict[str, float] = {}
    for name, rate in rates.items():
        task_obj = get_task(name)
        if task_obj.cluster in held_out:
            continue
        if task_obj.eval_only:
            raise EvalOnlyTaskError(
                f"task {name!r} (cluster {task_obj.cluster!r}) is evaluation-only and can never be trained on; "
                f"remove it from {target.name!r} or hold out its cluster", task=name, cluster=task_obj.cluster)
        if task_obj.held_out and not force:
            raise HeldOutTaskError(
                f"task {name!r} is flagged held_out but its cluster {task_obj.cluster!r} is not in the held-out "
                f"clusters {sorted(held_out)}; add the cluster to held_out_clusters or pass force=True",
                task=name, cluster=task_obj.cluster)
        kept[name] = rate
    if not kept:
        raise TaskDefinitionError(f"{target.name!r} has no task left after holding out clusters {sorted(held_out)}")
    return kept
