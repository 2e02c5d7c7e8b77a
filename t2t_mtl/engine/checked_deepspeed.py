"""A run's DeepSpeed config as its checks build and parse it, once (`check_deepspeed`, `CheckedDeepSpeed`): refused
where DeepSpeed would fail on it (a key its parser refuses, fp16 at ZeRO stage 0, gradient surgery beside ZeRO-3's
offloaded optimizer), with a warning for each key it leaves unread (`unread_key_warnings`, `idle_section_warnings`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from t2t_mtl.config import Config, ConfigError
from t2t_mtl.engine.deepspeed_config import DeepSpeedAutos, build_deepspeed, build_deepspeed_config
from t2t_mtl.engine.deepspeed_engine import check_deepspeed_accepts, deepspeed_key_source
from t2t_mtl.engine.deepspeed_settings import json_zero_stage
from t2t_mtl.engine.deepspeed_value_checks import check_fp16_zero_stage
from t2t_mtl.engine.lr_schedule import lr_scheduler

__all__ = ["CheckedDeepSpeed", "check_deepspeed", "check_surgery_zero", "deepspeed_key_warnings",
           "idle_section_warnings", "unread_key_warnings"]


@dataclass(frozen=True)
class CheckedDeepSpeed:
    """The DeepSpeed config of a run as its checks built and parsed it (`check_deepspeed`): `config`, what
    `deepspeed.initialize` is given (and RUN/deepspeed_config.json holds), `warnings`, one for each of its
    top-level keys DeepSpeed does not read (`unread_key_warnings`), and `autos`, what it left to the training section
    (`DeepSpeedAutos`)."""

    config: Dict[str, Any]
    warnings: List[str]
    autos: DeepSpeedAutos


def check_deepspeed(cfg: Config, world_size: int) -> CheckedDeepSpeed:
    """The DeepSpeed config of `cfg` on `world_size` ranks, built once (`build_deepspeed_config`: a file that is no
    DeepSpeed JSON, batch keys that disagree, ...) and parsed once by DeepSpeed's own parser (a key it refuses inside
    a section; the top-level keys it never reads), and checked against fp16 at ZeRO stage 0 and gradient surgery.
    ConfigError naming the key."""
    lr_scheduler(cfg)  # a deepspeed.extra.scheduler without a type
    ds_config, autos = build_deepspeed(cfg, world_size)
    check_fp16_zero_stage(ds_config)  # (a GPU run: refused here, not once the data and the model are built)
    unread = check_deepspeed_accepts(ds_config, cfg)
    if cfg.gradient_surgery:
        check_surgery_zero(ds_config)
    return CheckedDeepSpeed(ds_config, unread_key_warnings(cfg, unread) + idle_section_warnings(cfg, ds_config), autos)


def deepspeed_key_warnings(cfg: Config, world_size: int) -> List[str]:
    """A warning for each top-level key of `deepspeed.extra` or of the `deepspeed.config` JSON that DeepSpeed does not
    read (a misspelt section it would ignore), for a caller without the run's `CheckedDeepSpeed`; none where the
    run's own checks refuse the config."""
    from t2t_mtl.engine.deepspeed_keys import unread_keys

    try:
        ds_config = build_deepspeed_config(cfg, world_size)
    except ConfigError:  # (the run's own checks refuse it)
        return []
    return unread_key_warnings(cfg, unread_keys(ds_config)) + idle_section_warnings(cfg, ds_config)


def idle_section_warnings(cfg: Config, ds_config: Mapping[str, Any]) -> List[str]:
    """A warning for an `activation_checkpointing` section of the DeepSpeed config `ds_config`: DeepSpeed's parser
    reads it, but only `deepspeed.checkpointing.configure` applies it, to a model whose blocks call
    `deepspeed.checkpointing.checkpoint`, and t2t-mtl's T5 does neither (model.activation_checkpointing checkpoints
    its blocks through transformers)."""
    if "activation_checkpointing" not in ds_config:
        return []
    return [f"{deepspeed_key_source(cfg, 'activation_checkpointing')}: DeepSpeed applies it only to a model whose "
            f"blocks call deepspeed.checkpointing, which t2t-mtl's T5 does not, so it has no effect; "
            f"model.activation_checkpointing: true checkpoints the blocks"]


def unread_key_warnings(cfg: Config, unread: Sequence[Tuple[str, Optional[str]]]) -> List[str]:
    """The warnings of `unread` ((top-level key, the closest key DeepSpeed reads or None), `unread_keys`), each naming
    where the key was written: `deepspeed.extra` or the `deepspeed.config` JSON."""
    import deepspeed

    out = []
    for key, close in unread:
        where = deepspeed_key_source(cfg, key)
        hint = f"; did you mean {close!r}?" if close else ""
        out.append(f"{where}: DeepSpeed {deepspeed.__version__} reads no top-level key {key!r}, so it has no "
                   f"effect{hint}")
    return out


def check_surgery_zero(ds_config: Mapping[str, Any]) -> None:
    """Gradient surgery reads each micro-batch's gradient pieces after its backward; ZeRO-3 with an offloaded
    optimizer moves them to the CPU only at the step boundary. Read from the final DeepSpeed config, so a whole
    `deepspeed.config` JSON is checked like the generated one."""
    zero = ds_config.get("zero_optimization") or {}
    offload = (zero.get("offload_optimizer") or {}).get("device", "none") not in (None, "none")
    if json_zero_stage(ds_config) == 3 and offload:
        raise ConfigError("gradient_surgery reads each micro-batch's gradient pieces after its backward, but "
                          "ZeRO-3 with an offloaded optimizer (deepspeed.offload_optimizer, or offload_optimizer "
                          "in deepspeed.config's zero_optimization) moves them to the CPU only at the step boundary "
                          "(the rows would lag a micro-batch): offload with ZeRO-1/2, or use ZeRO-3 without it")
