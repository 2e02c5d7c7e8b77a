"""The DeepSpeed JSON config of a run: generated from our YAML, or a user's whole JSON file.

Generated: batch sizes from `training`, `gradient_clipping`, bf16/fp16 (fp32 when neither), ZeRO stage and
CPU offload from `deepspeed`, an AdamW optimizer (or the other type `deepspeed.extra` names, with training.lr and
weight_decay), then `deepspeed.extra` merged on top (any DeepSpeed key; its batch keys, ZeRO stage, optimizer
offload and precision must agree with `training` / `deepspeed.zero_stage` / `deepspeed.offload_optimizer`);
the warmup + constant/linear/cosine schedule is `lr_schedule.lr_scheduler`, handed to `deepspeed.initialize` (a
`scheduler` in `deepspeed.extra` replaces it). A whole JSON (`deepspeed.config: path`) is used as is,
except that its batch keys must agree with `training` (they are filled in when absent) and its other "auto"
values are filled from `training` as the HF Trainer fills them (`deepspeed_auto`); the optimizer and scheduler it
names are DeepSpeed's.

What `training.precision: auto` resolves to on this machine is `host_precision`'s; what a config dict sets, as
DeepSpeed reads it (precision, ZeRO stage, optimizer offload), `deepspeed_settings`'; the checks of its optimizer and
scheduler sections, `deepspeed_optimizer_checks`'; of values DeepSpeed's parser passes and its engine fails on,
`deepspeed_value_checks`'; which training keys the config replaces, `deepspeed_replaced_keys`'.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Dict, FrozenSet, Mapping, NamedTuple, Optional

import torch

from t2t_mtl.config import Config, ConfigError, deep_merge
from t2t_mtl.engine.deepspeed_auto import auto_filled_training_keys, fill_auto_values
from t2t_mtl.engine.deepspeed_optimizer_checks import ADAM_TYPES, check_optimizer, check_scheduler, check_typed_sections
from t2t_mtl.engine.deepspeed_settings import json_offloads_optimizer, json_precision, json_zero_stage
from t2t_mtl.engine.deepspeed_value_checks import (check_checkpoint_format, check_mapping_sections,
                                                   check_offload_switch, check_precision_switches,
                                                   check_unchecked_values)
from t2t_mtl.engine.distributed import trains_on_gpu
from t2t_mtl.engine.host_precision import PrecisionError, resolve_precision


def precision_left_to_auto(precision: str, json_config: Optional[Mapping[str, Any]]) -> bool:
    """Whether `training.precision` `precision` "auto" chose what a DeepSpeed config trains in: a generated one
    (`json_config` None), or a deepspeed.config JSON `json_config` (deepspeed.extra merged over it, its "auto" values
    not yet filled) whose `bf16` (or `bfloat16`) `enabled` is "auto", which auto's choice fills; a JSON's explicit
    sections decide themselves."""
    if precision != "auto":
        return False
    return json_config is None or json_leaves_precision(json_config)


def extra_bf16_key(extra: Mapping[str, Any]) -> Optional[str]:
    """The bf16 section ("bf16" or "bfloat16") that deepspeed.extra `extra` enables itself (not "auto"), which then
    chooses bf16 over training.precision and a deepspeed.config JSON's section; None if none."""
    return next((key for key in ("bf16", "bfloat16")
                 if isinstance(extra.get(key), Mapping) and extra[key].get("enabled") not in (None, False, "auto")),
                None)


def json_leaves_precision(json_config: Mapping[str, Any]) -> bool:
    """Whether a deepspeed.config JSON `json_config` (deepspeed.extra merged over it, its "auto" values not yet
    filled) leaves the precision to training.precision: its `bf16` (or `bfloat16`) `enabled` is "auto", which
    training.precision's choice fills."""
    return any(isinstance(json_config.get(key), Mapping) and json_config[key].get("enabled") == "auto"
               for key in ("bf16", "bfloat16"))


def check_batch_keys(ds: Dict[str, Any], batch: Dict[str, int], source: str, world_size: int) -> None:
    """Refuse batch keys of `ds` (a user's JSON, `deepspeed.extra`) that disagree with `batch`, the training
    section's: the loop runs training.grad_accum micro-batches of training.micro_batch_size per step, whatever
    DeepSpeed is told ("auto" and absent keys are filled in)."""
    for key, value in batch.items():
        if key in ds and ds[key] != "auto" and ds[key] != value:
            raise ConfigError(f"{source}{key}={ds[key]} disagrees with the training section ({key}={value} from "
                              f"micro_batch_size/grad_accum/world size {world_size}): set training.micro_batch_size "
                              f"and training.grad_accum instead, or remove {key}")


def with_batch_keys(ds: Dict[str, Any], batch: Dict[str, int]) -> Dict[str, Any]:
    """`ds` with the training section's batch keys (checked by `check_batch_keys`) in place of "auto"/absent."""
    return {**ds, **batch}


def check_extra_precision(ds: Dict[str, Any], asked: str, precision: str) -> None:
    """Refuse a generated config `ds` whose bf16/fp16 sections, as deepspeed.extra left them, train in another
    precision than `precision` (training.precision `asked`, resolved): the precision checks (fp16 on CPU,
    fp16 without ZeRO) read training.precision, so it alone chooses."""
    enabled = {name for name, keys in (("bf16", ("bf16", "bfloat16")), ("fp16", ("fp16",)))
               if any((ds.get(key) or {}).get("enabled") for key in keys)}
    if enabled == {precision} - {"fp32"}:
        return
    trained = next(iter(enabled - {precision}), "fp32")
    shown = asked if asked == precision else f"{asked} ({precision} here)"
    raise ConfigError(f"deepspeed.extra trains in {trained}, but training.precision is {shown}: set "
                      f"training.precision: {trained} instead, and remove the bf16/fp16 'enabled' key from "
                      f"deepspeed.extra")


def check_extra_offload(ds: Dict[str, Any], flag: bool) -> None:
    """Refuse a generated config `ds` whose optimizer offload, as deepspeed.extra left it, is not
    deepspeed.offload_optimizer (`flag`), which the checks and the choice of AdamW read: without the flag AdamW is
    torch's (`torch_adam`), and DeepSpeed steps a config's torch AdamW on offloaded states in place of its CPU Adam
    (its `zero_force_ds_cpu_optimizer` guard refuses only a client optimizer)."""
    offloads = json_offloads_optimizer(ds)
    if offloads == flag:
        return
    if offloads:
        raise ConfigError("deepspeed.extra.zero_optimization offloads the optimizer, but deepspeed.offload_optimizer "
                          "is false, and without it AdamW is torch's (DeepSpeed would step it on the offloaded states "
                          "in place of its CPU Adam): set deepspeed.offload_optimizer: true instead (offload_optimizer "
                          "in deepspeed.extra may still give its other settings, e.g. pin_memory or nvme_path)")
    raise ConfigError("deepspeed.extra.zero_optimization turns off the optimizer offload that "
                      "deepspeed.offload_optimizer: true asks for: set deepspeed.offload_optimizer: false instead")


def auto_training_keys(cfg: Config, json_config: Optional[Mapping[str, Any]]) -> FrozenSet[str]:
    """The training keys (`lr`, `clip`, ...) whose values fill an "auto" of `cfg`'s deepspeed.extra or of its
    deepspeed.config JSON `json_config` as written (None: none), `auto_filled_training_keys`: used, not replaced."""
    return frozenset(auto_filled_training_keys(cfg.deepspeed.extra) | auto_filled_training_keys(json_config or {}))


def read_deepspeed_json(path: Path) -> Dict[str, Any]:
    """The JSON object of DeepSpeed keys in the file `deepspeed.config` names; ConfigError saying why it is not one
    (missing, unreadable, not UTF-8, not JSON, not an object)."""
    try:
        ds = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"deepspeed.config: {path} does not exist") from None
    except OSError as err:  # a folder, no permission
        raise ConfigError(f"deepspeed.config: {path} cannot be read ({err.strerror}); name a DeepSpeed JSON "
                          f"file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"deepspeed.config: {path} is not UTF-8 text ({err.reason}); save it as UTF-8") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"deepspeed.config: {path} is not valid JSON ({err})") from None
    if not isinstance(ds, dict):
        raise ConfigError(f"deepspeed.config: {path} must hold a JSON object of DeepSpeed keys, got a "
                          f"{type(ds).__name__}")
    return ds


def generated_optimizer(cfg: Config) -> Dict[str, Any]:
    """The generated `optimizer` section (deepspeed.extra's merges over it): AdamW with training.lr, betas and
    weight_decay (eps 1e-8; torch's fused kernel unless offloaded). An optimizer of another type in
    deepspeed.extra replaces AdamW: it gets only training.lr and weight_decay (betas, eps and the torch-AdamW
    switches are Adam's), under its own params; a torch.optim class that takes no weight_decay (Rprop) none, and
    a ConfigError naming training.weight_decay where that is not 0."""
    t = cfg.training
    extra = cfg.deepspeed.extra.get("optimizer")
    extra_type = extra.get("type") if isinstance(extra, dict) else None
    if extra_type is not None and str(extra_type).lower() not in ADAM_TYPES:
        cls = getattr(torch.optim, str(extra_type), None)
        if not isinstance(cls, type) or "weight_decay" in inspect.signature(cls).parameters:
            return {"type": extra_type, "params": {"lr": t.lr, "weight_decay": t.weight_decay}}
        if t.weight_decay:
            raise ConfigError(f"training.weight_decay is {t.weight_decay}, but deepspeed.extra.optimizer.type "
                              f"{extra_type!r} takes no weight_decay: set training.weight_decay to 0, or name an "
                              f"optimizer that decays weights")
        return {"type": extra_type, "params": {"lr": t.lr}}
    params: Dict[str, Any] = {"lr": t.lr, "betas": list(t.betas), "eps": 1e-8, "weight_decay": t.weight_decay}
    if not cfg.deepspeed.offload_optimizer:
        params["torch_adam"] = True  # no JIT build of FusedAdam/CPUAdam needed
        params["fused"] = True  # torch's fused AdamW kernel (CPU and GPU): one kernel, not one per tensor
    return {"type": "AdamW", "params": params}


class DeepSpeedAutos(NamedTuple):
    """What a run's DeepSpeed config left to its training section, which the config no longer shows once its "auto"
    values are filled (`build_deepspeed`): whether training.precision auto chose the precision it trains in
    (`precision_by_auto`, `precision_left_to_auto`: a resume on another kind of machine is told why its precision
    differs), the training keys whose values fill an "auto" as written (`auto_training_keys`: not warned of as
    replaced), and what chose that precision if training.precision did not (`precision_chosen_by`, for the
    emulated-bf16 warning's advice): "deepspeed.extra.<section>" where deepspeed.extra's bf16 section enables it
    (`extra_bf16_key`), else "deepspeed.config" where the JSON's own sections do (not left to
    training.precision, `json_leaves_precision`); None where training.precision chose."""

    precision_by_auto: bool
    auto_training_keys: FrozenSet[str]
    precision_chosen_by: Optional[str]


def precision_chosen_by(extra: Mapping[str, Any], otherwise: Optional[str]) -> Optional[str]:
    """`DeepSpeedAutos.precision_chosen_by`: deepspeed.extra's section that enables bf16 ("deepspeed.extra.bf16"),
    else `otherwise` (what chose the precision without deepspeed.extra)."""
    key = extra_bf16_key(extra)
    return f"deepspeed.extra.{key}" if key is not None else otherwise


class BuiltDeepSpeed(NamedTuple):
    """A run's DeepSpeed `config` dict (`build_deepspeed`) and what it left to the training section (`autos`)."""

    config: Dict[str, Any]
    autos: DeepSpeedAutos


def build_deepspeed_config(cfg: Config, world_size: int) -> Dict[str, Any]:
    """The DeepSpeed config dict for `cfg` with `world_size` data-parallel ranks."""
    return build_deepspeed(cfg, world_size).config


def build_deepspeed(cfg: Config, world_size: int) -> BuiltDeepSpeed:
    """The DeepSpeed config of `cfg` with `world_size` data-parallel ranks, and what its "auto" values were."""
    t = cfg.training
    batch = {"train_micro_batch_size_per_gpu": t.micro_batch_size, "gradient_accumulation_steps": t.grad_accum,
             "train_batch_size": t.micro_batch_size * t.grad_accum * world_size}
    check_batch_keys(cfg.deepspeed.extra, batch, "deepspeed.extra.", world_size)
    check_mapping_sections(cfg.deepspeed.extra, "deepspeed.extra.")  # (it replaces a section it gives otherwise)
    if cfg.deepspeed.config is not None:
        path = Path(cfg.deepspeed.config)
        ds = read_deepspeed_json(path)
        check_mapping_sections(ds, f"deepspeed.config {path}: ")
        check_batch_keys(ds, batch, f"deepspeed.config {path}: ", world_size)
        training_autos = auto_training_keys(cfg, ds)
        ds = deep_merge(ds, cfg.deepspeed.extra)
        precision_by_auto = precision_left_to_auto(t.precision, ds)
        chosen_by = precision_chosen_by(cfg.deepspeed.extra, "deepspeed.config" if not json_leaves_precision(ds)
                                        else None)
        ds = fill_auto_values(ds, cfg, lambda: resolve_precision(t.precision, on_gpu=trains_on_gpu()),
                              f"deepspeed.config {path}: ")
        check_typed_sections(ds, f"deepspeed.config {path}: ")
        check_precision_switches(ds, f"deepspeed.config {path}: ")
        check_offload_switch(ds, f"deepspeed.config {path}: ")
        check_checkpoint_format(ds, f"deepspeed.config {path}: ")
        optimizer = ds.get("optimizer") or {}
        if not optimizer.get("type"):  # DeepSpeed would build none (nor from a section without a type): the run
            what = "an optimizer without a type" if optimizer else "no optimizer"  # would die at its first step
            raise ConfigError(f"deepspeed.config {path} names {what} (training.lr, betas and weight_decay do not "
                              f"apply to a whole JSON): add an \"optimizer\" section with its type, e.g. {{\"type\": "
                              f"\"AdamW\", \"params\": {{\"lr\": {t.lr}}}}}, or remove deepspeed.config to use the "
                              f"training section")
        check_optimizer(ds, f"deepspeed.config {path}: ")
        check_unchecked_values(ds, f"deepspeed.config {path}: ")
        check_scheduler(ds, f"deepspeed.config {path}: ")
        own = json_precision(ds)
        if own == "fp16" and not trains_on_gpu():
            raise PrecisionError(f"deepspeed.config {path} enables fp16, which needs a GPU (DeepSpeed refuses it on "
                                 f"CPU, and T5 is known to overflow in fp16): use its bf16 section, or none (fp32)")
        if t.precision not in ("auto", own):
            raise ConfigError(f"training.precision is {t.precision}, but deepspeed.config {path} trains in {own} (its "
                              f"bf16/fp16 sections decide): set training.precision to auto or {own}, or change the "
                              f"JSON")
        return BuiltDeepSpeed(with_batch_keys(ds, batch), DeepSpeedAutos(precision_by_auto, training_autos, chosen_by))

    written = cfg.deepspeed.extra.get("zero_optimization") or {}
    if "stage" in written and json_zero_stage(cfg.deepspeed.extra) != cfg.deepspeed.zero_stage:
        # (the offload, gradient-surgery and resume checks read deepspeed.zero_stage; "1" is stage 1 to DeepSpeed)
        raise ConfigError(f"deepspeed.extra.zero_optimization.stage={written['stage']} disagrees with "
                          f"deepspeed.zero_stage={cfg.deepspeed.zero_stage}: set deepspeed.zero_stage instead")
    zero: Dict[str, Any] = {"stage": cfg.deepspeed.zero_stage}
    if cfg.deepspeed.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": trains_on_gpu()}
    if cfg.deepspeed.offload_param:
        zero["offload_param"] = {"device": "cpu", "pin_memory": trains_on_gpu()}
    if cfg.deepspeed.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = False
    precision = resolve_precision(t.precision, on_gpu=trains_on_gpu())
    ds = {
        **batch,
        "gradient_clipping": t.clip,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16", "loss_scale": 0, "initial_scale_power": 16},
        "zero_optimization": zero,
        "optimizer": generated_optimizer(cfg),
        "steps_per_print": 10 ** 9,
        "wall_clock_breakdown": False,
    }
    ds = fill_auto_values(deep_merge(ds, cfg.deepspeed.extra), cfg, lambda: precision, "deepspeed.extra.")
    check_offload_switch(ds, "deepspeed.extra.")
    check_checkpoint_format(ds, "deepspeed.extra.")
    check_extra_offload(ds, cfg.deepspeed.offload_optimizer)
    check_precision_switches(ds, "deepspeed.extra.")
    check_extra_precision(ds, t.precision, precision)
    check_typed_sections(ds, "deepspeed.extra.")
    check_optimizer(ds, "deepspeed.extra.")
    check_unchecked_values(ds, "deepspeed.extra.")
    check_scheduler(ds, "deepspeed.extra.")
    autos = DeepSpeedAutos(precision_left_to_auto(t.precision, None), auto_training_keys(cfg, None),
                           precision_chosen_by(cfg.deepspeed.extra, None))
    return BuiltDeepSpeed(with_batch_keys(ds, batch), autos)
