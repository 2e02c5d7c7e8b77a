"""`METHODS`, the loss-weighting classes a config's `weighting.method` names, and `register_weighting`, which adds a
method of one's own (from a `data.task_modules` module, so that every rank, `--print-config` and a resume have it
before the config is checked)."""
from __future__ import annotations

from typing import TypeVar

from t2t_mtl.class_registry import ClassRegistry, register_class
from t2t_mtl.weighting.base import LossWeighting
from t2t_mtl.weighting.errors import WeightingRegistrationError
from t2t_mtl.weighting.methods import (CurriculumWeighting, DynamicTaskPrioritization, EqualWeighting,
                                       SizeWeighting, TchebycheffWeighting, UncertaintyWeighting)

METHODS: dict[str, type[LossWeighting]] = {cls.method: cls for cls in (
    EqualWeighting, SizeWeighting, UncertaintyWeighting, DynamicTaskPrioritization, TchebycheffWeighting,
    CurriculumWeighting)}

#: the methods t2t-mtl ships, which `register_weighting` does not replace
SHIPPED_METHODS = frozenset(METHODS)

_REGISTRY = ClassRegistry(METHODS, SHIPPED_METHODS, LossWeighting, "method", "combine", build_args=([], None),
                          common={}, register="register_weighting", error=WeightingRegistrationError)

Weighting = TypeVar("Weighting", bound=type[LossWeighting])


def register_weighting(cls: Weighting, *, overwrite: bool = False) -> Weighting:
    """Make the `LossWeighting` subclass `cls` the method a config's `weighting.method: <cls.method>` builds, with
    the config's other keys (those of `cls.PARAMS`) as keyword arguments: `cls(task_names, task_sizes, **params)`.
    Returns `cls` (a class decorator).

    The class implements `combine(losses, *, epoch, stats)` (its formula over the step's present tasks, e.g. through
    `weighted_sum`). It is an `nn.Module`: its parameters are trained with the model's lr, and its parameters,
    buffers and `get_extra_state()` (PyTorch's hook for other values) are its `state_dict`, saved in checkpoints and
    restored on a resume (a run's checks refuse a method whose losses differ after that round trip). One that
    learns from `stats["kpi"]` (held-in validation exact match) declares `needs_validation`, as dtp does.

    Raises `WeightingRegistrationError` for a class that is no `LossWeighting`, has no `method` of its own or a
    shipped one, lacks `combine`, or whose constructor cannot take its `PARAMS`; and for a method registered to
    another class, unless `overwrite`."""
    return register_class(_REGISTRY, cls, overwrite=overwrite)
