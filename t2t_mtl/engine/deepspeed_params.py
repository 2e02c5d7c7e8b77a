"""The kinds of value the params of an optimizer or LR scheduler of a DeepSpeed config take, read from its class's
constructor (for one of DeepSpeed's own optimizer types, the kernel class it builds). DeepSpeed passes the params as
given, and Python reads true as 1 and any string but "" as true, so `lr: true` trains at lr 1.0 and SGD's
`nesterov: "no"` turns Nesterov momentum on, with no error anywhere. A param whose default (or, without one,
annotation) is true/false must be true or false, and one whose default is a number a number.
"""
from __future__ import annotations

import inspect
from typing import Any, Mapping, Optional, Tuple

__all__ = ["kernel_class", "mistyped_param"]


def _kind_of(parameter: inspect.Parameter) -> Optional[str]:
    """"true or false" or "a number": what `parameter` takes, from its default, or its annotation where its default
    is None or it has none; None where neither says."""
    default = parameter.default
    if default is not inspect.Parameter.empty and default is not None:
        if isinstance(default, bool):
            return "true or false"
        return "a number" if isinstance(default, (int, float)) else None
    annotation = parameter.annotation
    if annotation is bool:
        return "true or false"
    return "a number" if annotation in (int, float) else None


def _fits(kind: str, value: Any) -> bool:
    """Whether `value` is of `kind` (`_kind_of`'s)."""
    if kind == "true or false":
        return isinstance(value, bool)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def mistyped_param(cls: type, params: Mapping[str, Any]) -> Optional[Tuple[str, str]]:
    """(name, kind) of the first of `params` whose keyword in `cls`'s constructor takes values of a kind (`_kind_of`)
    that its value is not of; None where all fit (a name the constructor does not take is left to its own check)."""
    parameters = inspect.signature(cls).parameters
    for name, value in params.items():
        kind = _kind_of(parameters[name]) if name in parameters else None
        if kind is not None and not _fits(kind, value):
            return name, kind
    return None


def kernel_class(own: str, offloaded: bool) -> Optional[type]:
    """The class of DeepSpeed's own kernel that its optimizer type `own` (lower case) builds without torch_adam, with
    the optimizer offloaded or not (as `DeepSpeedEngine._configure_basic_optimizer` picks it), imported without
    building it; None for a type it builds otherwise (a torch class, mup's, muon's)."""
    if own in ("adam", "adamw"):
        from deepspeed.ops.adam import DeepSpeedCPUAdam, FusedAdam

        return DeepSpeedCPUAdam if offloaded else FusedAdam
    if own == "lamb":
        from deepspeed.ops.lamb import FusedLamb

        return FusedLamb
    if own == "lion":
        from deepspeed.ops.lion import DeepSpeedCPULion, FusedLion

        return DeepSpeedCPULion if offloaded else FusedLion
    if own == "adagrad" and offloaded:
        from deepspeed.ops.adagrad import DeepSpeedCPUAdagrad

        return DeepSpeedCPUAdagrad
    return None
