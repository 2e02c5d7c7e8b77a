"""The checks of a DeepSpeed config's `optimizer` and `scheduler` sections: their {type, params} shape, and that
DeepSpeed can build what they name on this accelerator, with params of the kinds its class takes. DeepSpeed would fail
on them only in `deepspeed.initialize` or the first step, after the data and the model, or misread them silently."""
from __future__ import annotations

import importlib.util
import inspect
from typing import Any, Dict, Mapping, Optional

import torch

from t2t_mtl.config import ConfigError
from t2t_mtl.engine.deepspeed_params import Kernel, implements, kernel_of, mistyped_param, working_types
from t2t_mtl.engine.deepspeed_settings import json_offloads_optimizer, json_precision, json_zero_stage


#: DeepSpeed's sections of the form {type: NAME, params: {...}}, whose shape its config parser reads unchecked
TYPED_SECTIONS = ("optimizer", "scheduler")


def check_typed_sections(ds: Mapping[str, Any], source: str) -> None:
    """Refuse an `optimizer` or `scheduler` section of `ds` (written under `source`) that is not a mapping, whose
    `type` is not a name or whose `params` are not a mapping (a typed scheduler's given: DeepSpeed passes them as
    `**params`): DeepSpeed's parser raised a raw AttributeError on them, and a type null or '' built no optimizer."""
    for name in TYPED_SECTIONS:
        if name not in ds:
            continue
        section = ds[name]
        if not isinstance(section, Mapping):
            raise ConfigError(f"{source}{name} must be a mapping {{type: NAME, params: {{...}}}}, got {section!r}")
        if "type" in section and not (isinstance(section["type"], str) and section["type"].strip()):
            raise ConfigError(f"{source}{name}.type must be the name of a DeepSpeed or torch {name} class, got "
                              f"{section['type']!r}")
        if section.get("params") is not None and not isinstance(section["params"], Mapping):
            raise ConfigError(f"{source}{name}.params must be a mapping of the {name}'s keyword arguments, got "
                              f"{section['params']!r}")
        if name == "scheduler" and section.get("type") and section.get("params") is None:
            raise ConfigError(f"{source}scheduler.params must be given, a mapping of the scheduler's keyword "
                              f"arguments ({{}} for its defaults): DeepSpeed builds a scheduler of type "
                              f"{section['type']!r} as type(optimizer, **params), which fails without them")


def check_scheduler(ds: Dict[str, Any], source: str) -> None:
    """Refuse a `scheduler` section of `ds` that DeepSpeed could not build (it would fail only in
    deepspeed.initialize, after the data and the model): a type that is neither one of DeepSpeed's schedulers
    nor torch's, a torch one DeepSpeed would build on its ZeRO or bf16/fp16 optimizer wrapper (no torch Optimizer),
    params its class does not take (an unknown one, a required one missing) or values its constructor
    refuses (WarmupLR's warmup_num_steps 0), found by building it on a throwaway optimizer; and params it would
    misread: of another kind than its constructor takes (`mistyped_param`: warmup_num_steps true, read as 1), a
    DeepSpeed scheduler's warmup_type other than log / linear (it warms up by log in its place)."""
    scheduler = ds.get("scheduler")
    if not isinstance(scheduler, dict) or not scheduler.get("type"):
        return  # (deepspeed.extra's is checked by lr_scheduler; a whole JSON's untyped one builds none)
    from deepspeed.runtime import lr_schedules

    name = scheduler["type"]
    cls = getattr(lr_schedules, str(name), None) or getattr(torch.optim.lr_scheduler, str(name), None)
    if not isinstance(cls, type):
        raise ConfigError(f"{source}scheduler.type {name!r} is neither a DeepSpeed LR scheduler "
                          f"({', '.join(lr_schedules.VALID_LR_SCHEDULES)}) nor one of torch.optim.lr_scheduler's")
    from task_registry.signatures import binding_error

    params = scheduler.get("params") or {}
    problem = binding_error(cls, None, **params)  # (None: the optimizer)
    error = problem[1] if problem is not None else _construction_error(cls, params)
    if error is not None:
        raise ConfigError(f"{source}scheduler.params do not fit {name}: {error}; give the params its constructor "
                          f"takes (https://www.deepspeed.ai/docs/config-json/#scheduler-parameters)")
    _check_param_kinds(cls, params, f"{source}scheduler", name)
    stage = json_zero_stage(ds)
    wrapped = (isinstance(stage, int) and stage > 0) or json_precision(ds) != "fp32"  # (DeepSpeed's optimizer wrapper)
    if cls.__module__ == torch.optim.lr_scheduler.__name__ and wrapped:
        raise ConfigError(f"{source}scheduler.type {name!r} is one of torch.optim.lr_scheduler's, which DeepSpeed "
                          f"builds on its ZeRO or bf16/fp16 optimizer wrapper, no torch Optimizer (it fails to start): "
                          f"use one of DeepSpeed's schedulers ({', '.join(lr_schedules.VALID_LR_SCHEDULES)}) or "
                          f"training.schedule, or train at ZeRO stage 0 in fp32")
    warmup = params.get(lr_schedules.WARMUP_TYPE, lr_schedules.WARMUP_LOG_RATE)
    rates = (lr_schedules.WARMUP_LOG_RATE, lr_schedules.WARMUP_LINEAR_RATE)
    if cls.__module__ == lr_schedules.__name__ and warmup not in rates:  # (DeepSpeed warns, and warms up by log)
        raise ConfigError(f"{source}scheduler.params.warmup_type must be {' or '.join(map(repr, rates))}, got "
                          f"{warmup!r}: {name} warms up by {rates[0]!r} in place of any other value; give one of them")


ADAM_TYPES = ("adam", "adamw")  # DeepSpeed's optimizer types that take AdamW's params (it reads types in any case)

#: the keys of a DeepSpeed adam/adamw optimizer's params that DeepSpeed takes out before building it
DEEPSPEED_ADAM_SWITCHES = ("torch_adam", "adam_w_mode", "fp32_optimizer_states")


def check_optimizer(ds: Mapping[str, Any], source: str) -> None:
    """Refuse an `optimizer` section of `ds` that DeepSpeed could not build (it would fail only in
    deepspeed.initialize or the first step, after the data and the model): a type that is neither one of
    DeepSpeed's optimizers (any case) nor a torch.optim optimizer (its exact name), a mup one without mup
    installed, a max_grad_norm param (DeepSpeed clips by gradient_clipping), and where DeepSpeed builds a torch
    optimizer (a torch.optim type, adam/adamw with torch_adam, adagrad without offload) a class whose step needs a
    closure (LBFGS), params its class does not take or whose values it refuses, found by building it and stepping it
    on a throwaway parameter; where it builds a kernel of its own, one the accelerator lacks (`check_kernel`); and
    params it would misread, of another kind than the class's constructor takes (`mistyped_param`: lr true, read as
    1) or adam/adamw switches that are not true or false (torch_adam "false", read as true)."""
    optimizer = ds.get("optimizer")
    if not isinstance(optimizer, Mapping) or not optimizer.get("type"):
        return  # (check_typed_sections and the JSON's missing-type check name these)
    from deepspeed.runtime.config import DEEPSPEED_OPTIMIZERS

    name, params = optimizer["type"], dict(optimizer.get("params") or {})
    own = name.lower() if name.lower() in DEEPSPEED_OPTIMIZERS else None
    cls = getattr(torch.optim, name, None) if own is None else None
    if own is None and not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError(f"{source}optimizer.type {name!r} is neither one of DeepSpeed's optimizers "
                          f"({', '.join(DEEPSPEED_OPTIMIZERS)}; in any case) nor a torch.optim optimizer (its exact "
                          f"name, e.g. SGD, RMSprop, Adafactor)")
    if own in ("muadam", "muadamw", "musgd") and importlib.util.find_spec("mup") is None:
        raise ConfigError(f"{source}optimizer.type {name!r} is mup's, which is not installed: pip install mup, or "
                          f"name another optimizer")
    if "max_grad_norm" in params:
        raise ConfigError(f"{source}optimizer.params.max_grad_norm is refused by DeepSpeed, which clips gradients "
                          f"itself: remove it and set training.clip (deepspeed.extra.gradient_clipping) instead")
    if own in ADAM_TYPES:
        _check_adam_switches(params, source)
    offloaded = json_offloads_optimizer(ds)
    if own in ADAM_TYPES and params.get("torch_adam"):
        adamw = own == "adamw" or params.get("adam_w_mode", True)
        cls, params = (torch.optim.AdamW if adamw else torch.optim.Adam), {
            key: value for key, value in params.items() if key not in DEEPSPEED_ADAM_SWITCHES}
    elif own == "adagrad" and not offloaded:
        cls = torch.optim.Adagrad
    if cls is None:  # (one of DeepSpeed's own kernels: building it here could mean compiling it)
        from deepspeed.accelerator import get_accelerator

        kernel = kernel_of(own, offloaded)
        if kernel is not None:
            check_kernel(get_accelerator(), kernel, offloaded, f"{source}optimizer.type {name!r}")
            _check_param_kinds(kernel.cls, {key: value for key, value in params.items()
                                            if key not in DEEPSPEED_ADAM_SWITCHES}, f"{source}optimizer", name,
                               lists=False)
        return
    _check_param_kinds(cls, params, f"{source}optimizer", name)
    closure = inspect.signature(cls.step).parameters.get("closure")
    if closure is not None and closure.default is inspect.Parameter.empty:
        raise ConfigError(f"{source}optimizer.type {name!r} steps only with a closure that recomputes the loss, which "
                          f"DeepSpeed's step does not pass: name another optimizer")
    error = _optimizer_error(cls, params)
    if error is not None:
        first_line = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
        raise ConfigError(f"{source}optimizer.params do not fit {name} (DeepSpeed builds torch.optim."
                          f"{cls.__name__}): {first_line}; give the params its constructor takes "
                          f"(https://pytorch.org/docs/stable/optim.html)")


def check_kernel(accelerator: Any, kernel: Kernel, offloaded: bool, what: str) -> None:
    """Refuse `what` (an optimizer type, as written) whose DeepSpeed `kernel` (with the optimizer `offloaded` or not)
    `accelerator` does not implement (`implements`): deepspeed.initialize would fail loading it, after the data and
    the model. The message names the types that run there."""
    if implements(accelerator, kernel):
        return
    name, here = accelerator.device_name(), working_types(accelerator, offloaded)
    more = [] if offloaded else [own for own in working_types(accelerator, True) if own not in here]
    also = f" ({', '.join(more)} too with the optimizer offloaded)" if more else ""
    raise ConfigError(f"{what} needs DeepSpeed's {kernel.cls.__name__} kernel, which the {name} accelerator does not "
                      f"implement (deepspeed.initialize would fail loading it): on {name}, name one of DeepSpeed's "
                      f"{', '.join(here)}{also}, or a torch.optim optimizer")


def _check_adam_switches(params: Mapping[str, Any], source: str) -> None:
    """Refuse a `DEEPSPEED_ADAM_SWITCHES` param of an adam/adamw optimizer that is not true or false (null too for
    fp32_optimizer_states, its default): DeepSpeed reads each as `if value:`, so "false" or "no" turns it on."""
    for key in DEEPSPEED_ADAM_SWITCHES:
        value = params.get(key)
        if key in params and not isinstance(value, bool) and not (value is None and key == "fp32_optimizer_states"):
            raise ConfigError(f"{source}optimizer.params.{key} must be true or false, got {value!r}: DeepSpeed reads "
                              f"any value but false, 0, null and \"\" as true; give true or false, or remove it")


def _check_param_kinds(cls: type, params: Mapping[str, Any], section: str, name: str, *, lists: bool = True) -> None:
    """Refuse a param of `section` (an optimizer or scheduler of type `name`, built as `cls`) whose value is not of
    the kind its keyword takes (`mistyped_param`): true or false where it is a switch, a number (not true/false)
    where it is one; without `lists` (DeepSpeed's kernels, which are not built here) a number, not a list of one per
    param group. `cls` runs with such a value, reading true as 1 and a string as true."""
    mistyped = mistyped_param(cls, params, lists=lists)
    if mistyped is not None:
        key, kind = mistyped
        built = name if name == cls.__name__ else f"{name} ({cls.__name__})"
        if isinstance(params[key], list):
            takes = ("one number for every param group, not a list" if not lists else
                     "a number, or a list of numbers, one per param group")
            raise ConfigError(f"{section}.params.{key} must be {kind}, got {params[key]!r}: {built} takes {takes}; "
                              f"give {kind}")
        why = "reads true as 1 and false as 0" if kind == "a number" else "reads any text but \"\" as true"
        raise ConfigError(f"{section}.params.{key} must be {kind}, got {params[key]!r}: {built} {why}, with no "
                          f"error; give {kind}")


def _optimizer_error(cls: type, params: Mapping[str, Any]) -> Optional[Exception]:
    """The error that building the torch optimizer `cls` with `params` on a throwaway parameter and stepping it on a
    zero gradient raises (its own value checks, some of which only its step makes); None where both work. The
    parameter is on the CPU, so a `capturable` the class takes (CUDA graph capture: several classes assert a GPU
    parameter for it) is built as false: it says where the step runs, not what it computes."""
    weight = torch.zeros(1, requires_grad=True)
    if params.get("capturable") and "capturable" in inspect.signature(cls).parameters:
        params = {**params, "capturable": False}
    try:
        optimizer = cls([weight], **params)
        weight.grad = torch.zeros(1)
        optimizer.step()
    except (TypeError, ValueError, IndexError, KeyError, RuntimeError, ArithmeticError) as error:
        return error
    return None


def _construction_error(cls: type, params: Mapping[str, Any]) -> Optional[Exception]:
    """The TypeError or ValueError that building the scheduler `cls` with `params` on a throwaway optimizer raises
    (its own value checks); None where it builds."""
    try:
        cls(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), **params)
    except (TypeError, ValueError) as error:
        return error
    return None
