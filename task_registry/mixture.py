"""Mixtures: named sets of tasks (or other mixtures) with sampling rates.

A rate is a non-negative number or a function `rate(task) -> float` (e.g. `rate_num_examples(cap)`, the
T5 examples-proportional rate). `Mixture.flatten()` resolves names through the registry and expands nested
mixtures by weight: a sub-mixture with rate w contributes w · r_t / Σ_s r_s to each of its tasks t (rates
normalised within the sub-mixture); a task reached twice gets the sum.
"""
from __future__ import annotations

import math
import numbers
from typing import Callable, Iterable, Mapping, Optional, Sequence, Union

from .errors import TaskDefinitionError
from .task import Task

Rate = Union[float, int, Callable[[Task], float]]
Member = Union[str, Task, "Mixture"]


def rate_num_examples(maximum: Optional[int] = None, split: str = "train", scale: float = 1.0,
                      temperature: float = 1.0) -> Callable[[Task], float]:
    """Examples-proportional rate: `min(scale · num_rows(split), maximum) ** (1 / temperature)`, seqio's
    `mixing_rate_num_examples` order (scale, then cap, then temperature; as `sampling.scale` with `sampling.maximum`
    and the temperature sampler's `alpha`); `maximum` None: no cap (a cap must be positive: seqio reads 0 as no cap,
    `min` would make every rate 0); `temperature` > 0 (1: proportional, larger: flatter rates, as T5's T = 2)."""
    if maximum is not None and not maximum > 0:
        raise TaskDefinitionError(f"rate_num_examples: maximum must be a positive number of examples (None for no "
                                  f"cap), got {maximum!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not 0 < temperature < math.inf:
        raise TaskDefinitionError(f"rate_num_examples: temperature must be a finite number > 0 (1: proportional to "
                                  f"the examples), got {temperature!r}")
    return _ExamplesRate(maximum, split, scale, float(temperature))


class _ExamplesRate:
    """The rate `rate_num_examples` returns: a picklable callable (a closure is not), shown as that call."""

    def __init__(self, maximum: Optional[int], split: str, scale: float, temperature: float = 1.0):
        self.maximum, self.split, self.scale, self.temperature = maximum, split, scale, temperature

    def __call__(self, task: Task) -> float:
        if not isinstance(task, Task):
            raise TaskDefinitionError(f"{self!r} rates tasks by their size, not the mixture {task.name!r}; "
                                      f"give the mixture a number as its rate")
        rate = self.scale * float(task.num_rows(self.split))
        rate = min(rate, float(self.maximum)) if self.maximum is not None else rate
        return rate ** (1.0 / self.temperature) if self.temperature != 1.0 else rate

    def __repr__(self) -> str:
        temperature = f", temperature={self.temperature}" if self.temperature != 1.0 else ""
        return f"rate_num_examples(maximum={self.maximum}, split={self.split!r}, scale={self.scale}{temperature})"


class Mixture:
    """`Mixture(name, tasks_and_rates)`: members are task names, `Task`s or `Mixture`s (or their names).

    `tasks_and_rates` is a mapping member → rate, a list of (member, rate) pairs, or a list of members
    (each with `default_rate`, 1.0 unless given).
    """

    def __init__(self, name: str, tasks_and_rates: Union[Mapping[Member, Rate], Sequence[Union[Member, tuple]]],
                 default_rate: Rate = 1.0, description: str = ""):
        if not isinstance(name, str) or not name:
            raise TaskDefinitionError(f"a mixture needs a non-empty string name, got {name!r}")
        if isinstance(tasks_and_rates, str):  # a string is a sequence of letters, not of task names
            raise TaskDefinitionError(f"mixture {name!r}: members must be a list or a {{name: rate}} mapping, got "
                                      f"the string {tasks_and_rates!r} (write [{tasks_and_rates!r}])")
        if not isinstance(tasks_and_rates, Iterable):
            raise TaskDefinitionError(f"mixture {name!r}: members must be a list or a {{name: rate}} mapping, got "
                                      f"{tasks_and_rates!r}")
        items = list(tasks_and_rates.items()) if isinstance(tasks_and_rates, Mapping) else [
            tuple(entry) if isinstance(entry, (tuple, list)) else (entry, default_rate) for entry in tasks_and_rates]
        if not items:
            raise TaskDefinitionError(f"mixture {name!r} has no members")
        self.name = name
        self.description = description
        self.members: list[tuple[Member, Rate]] = []
        for entry in items:
            if len(entry) != 2:
                raise TaskDefinitionError(f"mixture {name!r}: expected (member, rate) pairs, got {entry!r}")
            member, rate = entry
            if not isinstance(member, (str, Task, Mixture)):
                raise TaskDefinitionError(f"mixture {name!r}: member {member!r} is not a task/mixture or name")
            if not callable(rate) and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate < 0
                                       or not math.isfinite(rate)):
                raise TaskDefinitionError(f"mixture {name!r}: rate of {_member_name(member)!r} must be a finite "
                                          f"number ≥ 0 or a function of the task, got {rate!r}")
            self.members.append((member, rate))
        if all(not callable(rate) and rate == 0 for _, rate in self.members):  # nothing to draw from
            raise TaskDefinitionError(f"mixture {name!r}: every rate is 0; give at least one member a rate > 0")

    @property
    def member_names(self) -> list[str]:
        """The members' names, in order (nested mixtures not expanded)."""
        return [_member_name(member) for member, _ in self.members]

    def flatten(self) -> dict[str, float]:
        """Task name → rate, nested mixtures expanded by weight (see module docstring)."""
        return _flatten(self, stack=())

    def __repr__(self) -> str:
        return f"Mixture(name={self.name!r}, members={self.member_names})"


def _member_name(member: Member) -> str:
    return member if isinstance(member, str) else member.name


def _flatten(mixture: Mixture, stack: tuple[str, ...]) -> dict[str, float]:
    from .registry import resolve  # the registry imports this module

    if mixture.name in stack:
        raise TaskDefinitionError(f"mixture cycle: {' → '.join(stack + (mixture.name,))}")
    rates: dict[str, float] = {}
    where = "mixture " + " → ".join(repr(name) for name in stack + (mixture.name,))
    for member, rate in mixture.members:
        resolved = resolve(member, where=where) if isinstance(member, str) else member
        if isinstance(resolved, Task):
            _check_registered(resolved, where)
        weight = float(rate(resolved) if callable(rate) else rate)  # type: ignore[arg-type]
        if weight < 0 or not math.isfinite(weight):
            kind = "mixture" if isinstance(resolved, Mixture) else "task"
            raise TaskDefinitionError(f"mixture {mixture.name!r}: rate function gave {weight!r} for {kind} "
                                      f"{resolved.name!r}")
        if isinstance(resolved, Mixture):
            inner = _flatten(resolved, stack + (mixture.name,))
            total = sum(inner.values())
            if total <= 0:
                raise TaskDefinitionError(f"mixture {resolved.name!r} (inside {mixture.name!r}) has total rate 0")
            for task_name, inner_rate in inner.items():
                rates[task_name] = rates.get(task_name, 0.0) + weight * inner_rate / total
        else:
            rates[resolved.name] = rates.get(resolved.name, 0.0) + weight
    return rates


def _check_registered(task: Task, where: str) -> None:
    """The flattened rates name tasks, which the registry resolves: a `Task` member must be the registered task
    of its name, or one of its definition (a notebook cell registering it run again): another task of that name would
    be trained in its place."""
    from .registry import get_task, same_task_definition

    try:
        registered = get_task(task.name)
    except KeyError:
        raise TaskDefinitionError(f"{where}: task {task.name!r} is not registered; the mixture's rates name their "
                                  f"tasks, so register it first (task_registry.register_task)") from None
    if not same_task_definition(registered, task):
        raise TaskDefinitionError(f"{where}: its task {task.name!r} is not the registered task of that name "
                                  f"({registered!r}), which its rate would train in its place; register it with "
                                  f"overwrite=True or give it another name")


def normalize(rates: Mapping[str, float]) -> dict[str, float]:
    """Rates (each a finite number >= 0, at least one > 0) scaled to sum to one."""
    for name, rate in rates.items():
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 <= rate < math.inf:
            raise TaskDefinitionError(f"rate of {name!r} must be a finite number >= 0, got {rate!r}")
    total = sum(rates.values())
    if total <= 0:
        raise TaskDefinitionError(f"rates sum to {total}; at least one must be positive")
    return {name: rate / total for name, rate in rates.items()}

