"""The DeepSpeed engine of a run: starting it, the settings a checkpoint must share with it, and the step-level
operations `train` performs around it (a poisoned step's skip, the learned weighting's own step)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from t2t_mtl.config import Config, ConfigError
from t2t_mtl.engine import resume_checks
from t2t_mtl.engine.deepspeed_settings import json_precision, json_zero_stage
from t2t_mtl.engine.deepspeed_value_checks import check_fp16_zero_stage
from t2t_mtl.engine.distributed import sum_over_ranks
from t2t_mtl.engine.lr_schedule import lr_scheduler


def initialize_deepspeed(model: torch.nn.Module, ds_config: Dict[str, Any], cfg: Config) -> Any:
    """`deepspeed.initialize` on `ds_config` with the run's lr schedule (`lr_scheduler`); DeepSpeed's own config
    validation errors (an unknown or ill-typed key in deepspeed.extra / a deepspeed.config JSON) become a
    ConfigError naming that section."""
    import deepspeed
    from deepspeed.runtime.config import DeepSpeedConfigError
    from pydantic import ValidationError

    check_fp16_zero_stage(ds_config)
    try:
        engine, _, _, _ = deepspeed.initialize(model=model, config=ds_config, lr_scheduler=lr_scheduler(cfg),
                                               model_parameters=[p for p in model.parameters() if p.requires_grad])
    except (ValidationError, DeepSpeedConfigError) as err:
        raise refused_config_error(err, cfg) from None
    forget_state_making_step(engine)
    return engine


def refused_config_error(err: Union[Exception, str], cfg: Config) -> ConfigError:
    """The ConfigError for DeepSpeed's own refusal `err` of the config made from `cfg`, naming its section."""
    source = f"deepspeed.config ({cfg.deepspeed.config})" if cfg.deepspeed.config is not None else "deepspeed.extra"
    return ConfigError(f"DeepSpeed refused the config generated from {source}: {err}\nfix or remove the "
                       f"offending key(s) (keys: https://www.deepspeed.ai/docs/config-json/)")


def check_deepspeed_accepts(ds_config: Dict[str, Any], cfg: Config) -> List[Tuple[str, Optional[str]]]:
    """Parse `ds_config` with DeepSpeed's own config parser, as `deepspeed.initialize` will, so that a key it
    refuses inside a section (`zero_optimization.overlap_com`) or a scalar of the wrong type it reads unchecked, at
    the top level or in a section (`gradient_clipping: "1.0"`, `checkpoint.use_node_local_storage: "no"`), is named by
    the run's checks and `--print-config`, not after the data and the model are built; returns the top-level keys it
    never read, from the same parse (`deepspeed_keys.parse_keys`). Any error of the parse is its refusal: besides
    pydantic's ValidationError and its DeepSpeedConfigError, it raises a raw TypeError, ValueError, AttributeError or
    AssertionError on some values it reads unchecked (communication_data_type: fp8, checkpoint.tag_validation: 3),
    named by their key where the parse finds it (`ParsedKeys.culprit`). (Without train_batch_size, which DeepSpeed
    derives for the world size it sees, here perhaps none yet.)"""
    from deepspeed.runtime.config import DeepSpeedConfigError
    from pydantic import ValidationError

    from t2t_mtl.engine.deepspeed_keys import parse_keys, value_at

    parsed = parse_keys(ds_config)
    if parsed.mistyped:
        key, kind, value = parsed.mistyped[0]
        raise ConfigError(f"{deepspeed_key_source(cfg, key)} must be {kind}, got {value!r}: DeepSpeed reads "
                          f"it unchecked, and would fail only in deepspeed.initialize or training, after the data and "
                          f"the model, or misread it (true as 1, any text but \"\" as true); give {kind}, or remove "
                          f"the key for DeepSpeed's default")
    if isinstance(parsed.error, (ValidationError, DeepSpeedConfigError)):
        raise refused_config_error(parsed.error, cfg)
    if parsed.culprit is not None:  # (a value its parser reads unchecked: the error names no key)
        _, value = value_at(ds_config, tuple(parsed.culprit.split(".")))
        raise ConfigError(f"{deepspeed_key_source(cfg, parsed.culprit)}: DeepSpeed's parser fails on {value!r} with "
                          f"{type(parsed.error).__name__}: {parsed.error}; give the value its documentation names "
                          f"(https://www.deepspeed.ai/docs/config-json/), or remove the key")
    if parsed.error is not None:
        raise refused_config_error(f"{type(parsed.error).__name__}: {parsed.error}", cfg)
    return parsed.unread


def deepspeed_key_source(cfg: Config, key: str) -> str:
    """Where the DeepSpeed key `key` (dotted where it is a section's) of the config made from `cfg` was written:
    `deepspeed.extra.KEY`, or `deepspeed.config PATH: KEY` (the whole JSON's)."""
    section: Any = cfg.deepspeed.extra
    for name in key.split("."):
        if not (isinstance(section, Mapping) and name in section):
            return f"deepspeed.config {cfg.deepspeed.config}: {key}"
        section = section[name]
    return f"deepspeed.extra.{key}"


def forget_state_making_step(engine: Any) -> None:
    """Undo the optimizer step that DeepSpeed's low-precision optimizer without ZeRO (FP16_UnfusedOptimizer: bf16 at
    stage 0) takes on zero gradients in its constructor to make the optimizer's state: with it, AdamW's bias
    corrections ran one step ahead (the first update 0.74 lr instead of lr) and the fp32 master weights were
    decayed once before training. After this the state is empty (torch's optimizers make it at the first step)
    and each master weight is its model weight again, as the constructor copied them."""
    from deepspeed.runtime.fp16.unfused_optimizer import FP16_UnfusedOptimizer

    optimizer = engine.optimizer
    if not isinstance(optimizer, FP16_UnfusedOptimizer):
        return
    optimizer.optimizer.state.clear()
    with torch.no_grad():
        for low, masters in zip(optimizer.fp16_groups, optimizer.fp32_groups):
            for param, master in zip(low, masters):
                master.copy_(param)


def loads_through_universal(meta: Mapping[str, Any], ds_config: Mapping[str, Any], world_size: int) -> bool:
    """Whether a checkpoint (`meta`) loads into the engine of `ds_config` on `world_size` ranks through DeepSpeed's
    universal format: a ZeRO checkpoint under another world size, or one of ZeRO-1 into ZeRO-2 and back (their
    optimizer files differ). Stage 0 keeps whole states, which load under any world size."""
    saved, stage = int(meta["zero_stage"]), int(json_zero_stage(dict(ds_config)))
    return saved > 0 and (int(meta["world_size"]) != world_size or {saved, stage} == {1, 2})


def check_engine_settings(ckpt: Path, meta: Mapping[str, Any], ds_config: Mapping[str, Any], universal: bool,
                          auto_reason: Optional[str] = None) -> None:
    """Refuse to resume `ckpt` (`meta`) into the DeepSpeed config `ds_config` of another precision or ZeRO stage
    (loaded through the universal format (`universal`), ZeRO-1 and -2 load into each other, not into stage 0 nor
    to or from ZeRO-3), before the checkpoint is converted or the engine started. `auto_reason`: where
    training.precision auto chose `ds_config`'s precision, what it chose here and why (`auto_precision_reason`),
    so that a checkpoint of another precision (a run moved to another kind of machine) is told to name its own."""
    stage = int(json_zero_stage(ds_config))
    interchangeable = universal and {stage, int(meta["zero_stage"])} <= {1, 2}
    resume_checks.check_compatible(ckpt, dict(meta), precision=json_precision(dict(ds_config)),
                                   auto_reason=auto_reason, zero_stage=None if interchangeable else stage)


def engine_precision(engine: Any) -> str:
    """"bf16", "fp16" or "fp32": what the DeepSpeed engine trains in (training.precision, or a whole
    deepspeed.config JSON's own bf16/fp16 sections)."""
    return "bf16" if engine.bfloat16_enabled() else "fp16" if engine.fp16_enabled() else "fp32"


def has_overflow_check(engine: Any) -> bool:
    """DeepSpeed skips steps with non-finite gradients itself except for fp32 at ZeRO stage 0."""
    return engine.zero_optimization_stage() > 0 or engine.bfloat16_enabled() or engine.fp16_enabled()


def step_weighting(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor], engine: Any, *, lr: float,
                   loss_scale: float, world_size: int, skip: bool) -> None:
    """The learned weighting's step (uncertainty's log σ²), after the model's: left out, as the model's, when the
    step is poisoned (`skip`) or DeepSpeed did not apply it (an fp16 overflow); else its gradients, summed over
    the ranks, are divided by `world_size` and by the `loss_scale` their backward carried, and it steps at `lr`
    (the model's schedule at this step)."""
    if not skip and engine.was_step_applied():
        for p in params:
            if p.grad is not None:
                sum_over_ranks(p.grad).div_(world_size * loss_scale)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def guarded_skip_step(engine: Any) -> None:
    """The optimizer step of a poisoned step where DeepSpeed has no overflow check (fp32, ZeRO stage 0):
    zero the gradients, step with lr 0 (so DeepSpeed's step counter advances), then restore the optimizer's
    moments and lrs and the LR schedule — the parameters, the optimizer state and the schedule end exactly as
    they were, as after a step DeepSpeed's overflow check skips (a skipped step does not advance the schedule)."""
    optimizer = engine.optimizer
    for p in engine.module.parameters():
        if p.grad is not None:
            p.grad.zero_()
    saved = copy.deepcopy(optimizer.state_dict())
    schedule = copy.deepcopy(engine.lr_scheduler.state_dict()) if engine.lr_scheduler is not None else None
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    engine.step()
    optimizer.load_state_dict(saved)
    if schedule is not None:
        engine.lr_scheduler.load_state_dict(schedule)
