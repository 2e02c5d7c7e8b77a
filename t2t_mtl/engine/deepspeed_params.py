"""What an optimizer or LR scheduler of a DeepSpeed config needs: the kernel DeepSpeed builds for one of its own
optimizer types and whether the accelerator has it (the CPU has no FusedLamb nor FusedLion), and the kinds of value
its params take, read from its class's constructor. DeepSpeed passes the params as given, and Python reads true as 1
and any string but "" as true, so `lr: true` trains at lr 1.0 and SGD's `nesterov: "no"` turns Nesterov momentum on,
with no error anywhere. A param whose default is true/false must be true or false, and one whose default (or, without
one, annotation) is a number a number (or a list of numbers, one per param group).
"""
from __future__ import annotations

import inspect
from typing import Any, List, Mapping, NamedTuple, Optional, Tuple

__all__ = ["KERNEL_TYPES", "Kernel", "implements", "kernel_of", "mistyped_param", "working_types"]


def _kind_of(parameter: inspect.Parameter) -> Optional[str]:
    """"true or false" or "a number": what `parameter` takes, from its default, or, where its default is None or it
    has none, "a number" from an int or float annotation (a class, or its name where the module postpones
    annotations, as torch's LR schedulers do: StepLR's step_size is 'int'; no class checked here annotates a switch
    without a true/false default); None where neither says."""
    default = parameter.default
    if default is not inspect.Parameter.empty and default is not None:
        if isinstance(default, bool):
            return "true or false"
        return "a number" if isinstance(default, (int, float)) else None
    annotation = parameter.annotation
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", None)
    return "a number" if name in ("int", "float") else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fits(kind: str, value: Any, lists: bool) -> bool:
    """Whether `value` is of `kind` (`_kind_of`'s); with `lists`, a number's place also takes a list of numbers, one
    per param group, as WarmupLR's warmup_max_lr or ReduceLROnPlateau's min_lr do (the class's own build refuses it
    where not)."""
    if kind == "true or false":
        return isinstance(value, bool)
    if lists and isinstance(value, list):
        return bool(value) and all(_is_number(item) for item in value)
    return _is_number(value)


def mistyped_param(cls: type, params: Mapping[str, Any], *, lists: bool = True) -> Optional[Tuple[str, str]]:
    """(name, kind) of the first of `params` whose keyword in `cls`'s constructor takes values of a kind (`_kind_of`)
    that its value is not of (null passes where it is the default); None where all fit (a name the constructor does
    not take is left to its own check). `lists` false: a number's place takes no list of numbers (a class that is not
    built to check one: DeepSpeed's kernels, which take one number)."""
    parameters = inspect.signature(cls).parameters
    for name, value in params.items():
        kind = _kind_of(parameters[name]) if name in parameters else None
        if (kind is not None and not _fits(kind, value, lists)
                and not (value is None and parameters[name].default is None)):
            return name, kind
    return None


class Kernel(NamedTuple):
    """One of DeepSpeed's own optimizer kernels: its class and the name of the op builder that compiles it."""

    cls: type
    builder: str


def kernel_of(own: str, offloaded: bool) -> Optional[Kernel]:
    """The kernel DeepSpeed's optimizer type `own` (lower case) builds without torch_adam, with the optimizer
    offloaded or not (as `DeepSpeedEngine._configure_basic_optimizer` picks it), imported without building it; None
    for a type it builds otherwise (a torch class, mup's, muon's)."""
    if own in ("adam", "adamw"):
        from deepspeed.ops.adam import DeepSpeedCPUAdam, FusedAdam

        return Kernel(DeepSpeedCPUAdam, "CPUAdamBuilder") if offloaded else Kernel(FusedAdam, "FusedAdamBuilder")
    if own == "lamb":
        from deepspeed.ops.lamb import FusedLamb

        return Kernel(FusedLamb, "FusedLambBuilder")
    if own == "lion":
        from deepspeed.ops.lion import DeepSpeedCPULion, FusedLion

        return Kernel(DeepSpeedCPULion, "CPULionBuilder") if offloaded else Kernel(FusedLion, "FusedLionBuilder")
    if own == "adagrad" and offloaded:
        from deepspeed.ops.adagrad import DeepSpeedCPUAdagrad

        return Kernel(DeepSpeedCPUAdagrad, "CPUAdagradBuilder")
    return None


def implements(accelerator: Any, kernel: Kernel) -> bool:
    """Whether DeepSpeed's `accelerator` (`deepspeed.accelerator.get_accelerator()`) has an op builder for `kernel`:
    the CPU's answers every op it lacks (FusedLamb, FusedLion) with its NotImplementedBuilder, whose load raises
    "This op had not been implemented on CPU backend" in deepspeed.initialize; CUDA's has them all."""
    builder = accelerator.get_op_builder(kernel.builder)
    return builder is not None and builder.__name__ != "NotImplementedBuilder"


#: DeepSpeed's optimizer types built by a kernel of their own (`kernel_of`), in its documentation's order
KERNEL_TYPES = ("adam", "adamw", "adagrad", "lamb", "lion")


def working_types(accelerator: Any, offloaded: bool) -> List[str]:
    """DeepSpeed's optimizer types of `KERNEL_TYPES` that run on `accelerator` with the optimizer offloaded or not."""
    out = []
    for own in KERNEL_TYPES:
        kernel = kernel_of(own, offloaded)
        if kernel is None or implements(accelerator, kernel):
            out.append(own)
    return out
