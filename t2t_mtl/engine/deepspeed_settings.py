"""What a DeepSpeed config dict sets, read as DeepSpeed reads it: the precision it trains in, its ZeRO stage (and any
other `zero_optimization` key, as its parser validates it), and whether it offloads the optimizer."""
from __future__ import annotations

from enum import Enum
from typing import Any, Mapping


def json_precision(ds: Mapping[str, Any]) -> str:
    """"bf16", "fp16" or "fp32": what a DeepSpeed config trains in (`bf16`, or its old name `bfloat16`; `fp16`)."""
    if (ds.get("bf16") or ds.get("bfloat16") or {}).get("enabled"):
        return "bf16"
    return "fp16" if (ds.get("fp16") or {}).get("enabled") else "fp32"


def json_zero_stage(ds: Mapping[str, Any]) -> Any:
    """The ZeRO stage a DeepSpeed config asks for (`zero_optimization.stage`; 0 without one) as DeepSpeed reads it
    (`zero_setting`: "1", 1.0 or true is stage 1), or as written where DeepSpeed's parser refuses it."""
    return zero_setting(ds, "stage")


def zero_setting(ds: Mapping[str, Any], key: str) -> Any:
    """`zero_optimization.<key>` of the DeepSpeed config `ds` as DeepSpeed's parser reads it: validated as its
    `DeepSpeedZeroConfig` field in pydantic's lax mode (stage "1" or 1.0 is 1; a switch 0, "false", "no" or "off" is
    false), that field's default where absent; the value as written where the parser refuses it (its refusal, in the
    run's checks, names the key)."""
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
    from pydantic import TypeAdapter, ValidationError

    zero = ds.get("zero_optimization") or {}
    field = DeepSpeedZeroConfig.model_fields[key]
    if key not in zero:
        return field.default
    try:
        value = TypeAdapter(field.annotation).validate_python(zero[key])
    except ValidationError:
        return zero[key]
    return value.value if isinstance(value, Enum) else value  # (the stage's ZeroStageEnum, as the parser keeps it)


def json_offloads_optimizer(ds: Mapping[str, Any]) -> bool:
    """Whether a DeepSpeed config offloads the optimizer: `zero_optimization.offload_optimizer.device` cpu or nvme
    (DeepSpeed then steps it on the CPU), or the deprecated `zero_optimization.cpu_offload`."""
    zero = ds.get("zero_optimization") or {}
    offload = zero.get("offload_optimizer")  # (one that is no mapping is DeepSpeed's parser's to refuse)
    return (isinstance(offload, Mapping) and offload.get("device") in ("cpu", "nvme")) or bool(zero.get("cpu_offload"))
