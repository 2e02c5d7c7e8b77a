"""The checks of values in a DeepSpeed config that DeepSpeed's parser passes and its engine then fails on, misreads or
runs wrongly: a section that is no mapping, a precision or offload switch written as text, a checkpoint format its
zero_to_fp32 cannot read, values it fails on in a step (`steps_per_print`, `data_types.grad_accum_dtype`, ...), and
fp16 without ZeRO. Each raises a ConfigError (fp16 a PrecisionError) naming the key where it is written."""
from __future__ import annotations

import json
from typing import Any, Dict, Mapping

from t2t_mtl.config import ConfigError
from t2t_mtl.engine.deepspeed_settings import json_precision, json_zero_stage, zero_setting
from t2t_mtl.engine.host_precision import PrecisionError


def check_fp16_zero_stage(ds_config: Dict[str, Any]) -> None:
    """fp16 without ZeRO is refused: DeepSpeed's `engine.backward` scales the loss only for its ZeRO optimizers,
    while the stage-0 fp16 optimizer's `step` still divides the gradients by the loss scale, so every update
    would be the loss scale (2^16 at the start) times too small (deepspeedai/DeepSpeed PR 8393, open)."""
    fp16 = ds_config.get("fp16", {}).get("enabled", False)
    if fp16 and json_zero_stage(ds_config) == 0:
        raise PrecisionError("fp16 with deepspeed.zero_stage 0: DeepSpeed's fp16 optimizer without ZeRO divides the "
                             "gradients by a loss scale its backward never applied, so updates would be ~65536× too "
                             "small; use zero_stage 1 or higher (ZeRO-1 costs nothing extra on one GPU) or bf16")


#: DeepSpeed sections its config parser (and this module's checks) read as mappings, failing with a raw TypeError or
#: AttributeError on any other value; those of NULLABLE_SECTIONS it reads as left out when null
MAPPING_SECTIONS = ("fp16", "bf16", "bfloat16", "zero_optimization", "activation_checkpointing", "flops_profiler",
                    "comms_logger", "checkpoint", "data_types", "aio")


NULLABLE_SECTIONS = ("bf16", "aio")


def check_mapping_sections(ds: Mapping[str, Any], source: str) -> None:
    """Refuse a `MAPPING_SECTIONS` section of `ds` (written under `source`) that is no mapping (null allowed for
    `NULLABLE_SECTIONS`), naming it, before the precision / offload checks and DeepSpeed's parser read it."""
    for name in MAPPING_SECTIONS:
        section = ds.get(name)
        if name in ds and not isinstance(section, Mapping) and not (section is None and name in NULLABLE_SECTIONS):
            raise ConfigError(f"{source}{name} must be a mapping of the section's keys, got {section!r}: write "
                              f"its keys under it (https://www.deepspeed.ai/docs/config-json/), or remove it")


def check_unchecked_values(ds: Mapping[str, Any], source: str) -> None:
    """Refuse values of `ds` (written under `source`) that DeepSpeed's parser passes and its engine fails on, in
    deepspeed.initialize or a training step, with a raw error: a `steps_per_print` that is no positive integer (it
    prints when the step count modulo it is 0; null prints never), a `gradient_predivide_factor` that is no positive
    number (it divides the gradients by it) and a `data_types.grad_accum_dtype` that names no dtype it knows, or at
    ZeRO stage 0 another than the precision the run trains in, or fp32 in a bf16 run at ZeRO stage 1 (DeepSpeed's bf16
    optimizer) with `zero_optimization.compute_grad_norm: false`; and a negative `gradient_clipping`, on which it runs
    without clipping (as for 0)."""
    steps = ds.get("steps_per_print")
    if steps is not None and not (isinstance(steps, int) and not isinstance(steps, bool) and steps > 0):
        raise ConfigError(f"{source}steps_per_print must be a positive integer (DeepSpeed logs every that many "
                          f"steps) or null, got {steps!r}")
    clip = ds.get("gradient_clipping", 0.0)
    if isinstance(clip, (int, float)) and not isinstance(clip, bool) and clip < 0:
        raise ConfigError(f"{source}gradient_clipping must be 0 or more (the largest gradient norm; 0 does not clip, "
                          f"as training.clip), got {clip!r}: DeepSpeed clips only above 0, so a negative value turns "
                          f"clipping off with no message; give 0 to turn it off")
    factor = ds.get("gradient_predivide_factor", 1.0)
    if isinstance(factor, (int, float)) and not isinstance(factor, bool) and not factor > 0:
        raise ConfigError(f"{source}gradient_predivide_factor must be a positive number (DeepSpeed divides the "
                          f"gradients by it before averaging them; 1.0 by default), got {factor!r}")
    dtype = (ds.get("data_types") or {}).get("grad_accum_dtype")
    if dtype is not None:
        from deepspeed.runtime.config import DtypeEnum

        try:
            accumulated = DtypeEnum(dtype)  # (as the engine reads it)
        except ValueError:
            raise ConfigError(f"{source}data_types.grad_accum_dtype must name a dtype DeepSpeed knows (e.g. "
                              f"{', '.join(member.name for member in DtypeEnum)}) or be null for the model's, got "
                              f"{dtype!r}") from None
        precision, stage = json_precision(ds), json_zero_stage(ds)
        if stage == 0 and accumulated.name != precision:
            raise ConfigError(f"{source}data_types.grad_accum_dtype is {dtype!r} at ZeRO stage 0 in a {precision} "
                              f"run: without ZeRO DeepSpeed accumulates gradients in the model's precision only and "
                              f"refuses any other ('unsupported mix'); remove the key, or train at zero_stage 1 or "
                              f"more")
        zero = ds.get("zero_optimization") or {}
        offload = zero.get("offload_optimizer") or {}  # (one that is no mapping: left to DeepSpeed's parser, naming it)
        offloaded = (zero.get("cpu_offload") is True or not isinstance(offload, Mapping)
                     or offload.get("device") == "cpu")
        if (stage == 1 and (precision, accumulated.name) == ("bf16", "fp32") and not offloaded
                and zero_setting(ds, "compute_grad_norm") is False):
            raise ConfigError(f"{source}zero_optimization.compute_grad_norm is false at ZeRO stage 1 in a bf16 run "
                              f"accumulating gradients in fp32 (data_types.grad_accum_dtype {dtype!r}), which "
                              f"DeepSpeed trains with its bf16 optimizer and refuses the key for; remove it, or the "
                              f"grad_accum_dtype")


#: DeepSpeed's precision sections, whose `enabled` the run's checks read to tell what a config trains in
PRECISION_SECTIONS = ("bf16", "bfloat16", "fp16")


def check_precision_switches(ds: Mapping[str, Any], source: str) -> None:
    """Refuse a precision section's `enabled` in `ds` (written under `source`, "auto" filled in) that is not true or
    false: DeepSpeed's parser (pydantic) reads "false", "no" or "off" as false, where `json_precision` and the
    precision checks read any text but "" as true, so a run would train in another precision than its checks and
    checkpoints say."""
    for name in PRECISION_SECTIONS:
        enabled = (ds.get(name) or {}).get("enabled", False)
        if not isinstance(enabled, bool):
            raise ConfigError(f"{source}{name}.enabled must be true or false, got {enabled!r}: DeepSpeed reads "
                              f"\"false\" or \"no\" as false, where the run's precision checks read any text as "
                              f"true (and would record another precision than it trains in); give true or false")


def check_offload_switch(ds: Mapping[str, Any], source: str) -> None:
    """Refuse a deprecated `zero_optimization.cpu_offload` in `ds` (written under `source`) that is not true or false:
    DeepSpeed's parser reads "false" or "no" as false, where `json_offloads_optimizer` would read any text as an
    offload (choosing the optimizer and refusing the config for a switch DeepSpeed reads as off)."""
    switch = (ds.get("zero_optimization") or {}).get("cpu_offload")
    if switch is not None and not isinstance(switch, bool):
        raise ConfigError(f"{source}zero_optimization.cpu_offload must be true or false, got {switch!r}: DeepSpeed "
                          f"reads \"false\" or \"no\" as false, where the run's checks would read any text as an "
                          f"optimizer offload; give true or false, or use deepspeed.offload_optimizer (cpu_offload is "
                          f"DeepSpeed's deprecated name of an optimizer offload)")


def check_checkpoint_format(ds: Mapping[str, Any], source: str) -> None:
    """Refuse `checkpoint.checkpoint_serialization: false` in `ds` (written under `source`), or any value torch reads
    as false (0, null, ""; DeepSpeed hands it to `torch.save` as given), at ZeRO stage 1-3: DeepSpeed then writes the
    optimizer's weight partitions in torch's legacy format, which its `zero_to_fp32` (how export, eval, predict and
    merge gather a ZeRO run's weights) memory-maps and cannot read, so the run's checkpoints could be resumed but
    never used."""
    stage = json_zero_stage(ds)
    section = ds.get("checkpoint") or {}
    if "checkpoint_serialization" in section and not section["checkpoint_serialization"] and stage in (1, 2, 3):
        raise ConfigError(f"{source}checkpoint.checkpoint_serialization is "
                          f"{json.dumps(section['checkpoint_serialization'])} at ZeRO stage {stage}: DeepSpeed "
                          f"would write the weight partitions in torch's legacy format, which its zero_to_fp32 "
                          f"cannot read (it memory-maps them), so export, eval, predict and merge could not load the "
                          f"run; remove the key (true is DeepSpeed's default), or train at zero_stage 0")
