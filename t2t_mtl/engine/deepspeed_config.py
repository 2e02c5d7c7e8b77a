"""The DeepSpeed JSON config of a run: generated from our YAML, or a user's whole JSON file.

Generated: batch sizes from `training`, `gradient_clipping`, bf16/fp16 (fp32 when neither), ZeRO stage and
CPU offload from `deepspeed`, an AdamW optimizer and a warmup + constant/linear/cosine schedule, then
`deepspeed.extra` merged on top (any DeepSpeed key). A whole JSON (`deepspeed.config: path`) is used as is,
except that its batch keys must agree with `training` (they are filled in when absent); the optimizer and
scheduler it names are DeepSpeed's.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from t2t_mtl.config import Config, ConfigError, deep_merge


class PrecisionError(ConfigError):
    """The requested precision cannot run on this device."""


def resolve_precision(precision: str, on_gpu: bool) -> str:
    """`training.precision` as trained: "auto" is bf16 where the hardware runs it natively (a GPU with bf16
    support; a CPU with AVX512-BF16 or AMX — elsewhere bf16 matmuls are emulated, ~10× slower than fp32) and
    fp32 otherwise; explicit values are returned as given."""
    if precision != "auto":
        return precision
    if on_gpu:
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bf16" if native else "fp32"


def check_precision(precision: str, on_gpu: bool) -> None:
    """fp16 needs a GPU: DeepSpeed refuses it on CPU, and T5 overflows in fp16 anyway (use bf16)."""
    if precision == "fp16" and not on_gpu:
        raise PrecisionError("training.precision: fp16 is not supported on CPU (DeepSpeed refuses it) and T5 is "
                             "known to overflow in fp16; use auto (the default), bf16 or fp32")


def _scheduler(cfg: Config) -> Optional[Dict[str, Any]]:
    """DeepSpeed's warmup schedulers; without warmup the warmup phase starts (and stays) at the peak lr."""
    t = cfg.training
    warmup = max(t.warmup, 1)
    start_lr = 0.0 if t.warmup > 0 else t.lr
    if t.schedule == "constant":
        if t.warmup == 0:
            return None
        return {"type": "WarmupLR", "params": {"warmup_min_lr": start_lr, "warmup_max_lr": t.lr,
                                               "warmup_num_steps": warmup, "warmup_type": "linear"}}
    total = max(t.steps, warmup + 1)
    if t.schedule == "linear":
        return {"type": "WarmupDecayLR", "params": {"warmup_min_lr": start_lr, "warmup_max_lr": t.lr,
                                                    "warmup_num_steps": warmup, "total_num_steps": total,
                                                    "warmup_type": "linear"}}
    return {"type": "WarmupCosineLR", "params": {"total_num_steps": total, "warmup_num_steps": warmup,
                                                 "warmup_min_ratio": 0.0 if t.warmup > 0 else 1.0,
                                                 "cos_min_ratio": 0.0, "warmup_type": "linear"}}


def build_deepspeed_config(cfg: Config, world_size: int) -> Dict[str, Any]:
    """The DeepSpeed config dict for `cfg` with `world_size` data-parallel ranks."""
    t = cfg.training
    batch = {"train_micro_batch_size_per_gpu": t.micro_batch_size, "gradient_accumulation_steps": t.grad_accum,
             "train_batch_size": t.micro_batch_size * t.grad_accum * world_size}
    if cfg.deepspeed.config is not None:
        path = Path(cfg.deepspeed.config)
        try:
            ds = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"deepspeed.config: {path} does not exist") from None
        except json.JSONDecodeError as err:
            raise ConfigError(f"deepspeed.config: {path} is not valid JSON ({err})") from None
        for key, value in batch.items():
            if key in ds and ds[key] != "auto" and ds[key] != value:
                raise ConfigError(f"deepspeed.config {path}: {key}={ds[key]} disagrees with the training section "
                                  f"({key}={value} from micro_batch_size/grad_accum/world size {world_size})")
            ds[key] = value
        return deep_merge(ds, cfg.deepspeed.extra)

    zero: Dict[str, Any] = {"stage": cfg.deepspeed.zero_stage}
    if cfg.deepspeed.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    if cfg.deepspeed.offload_param:
        zero["offload_param"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    if cfg.deepspeed.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = False
    precision = resolve_precision(t.precision, on_gpu=torch.cuda.is_available())
    optimizer_params: Dict[str, Any] = {"lr": t.lr, "betas": list(t.betas), "eps": 1e-8, "weight_decay": t.weight_decay}
    if not cfg.deepspeed.offload_optimizer:
        optimizer_params["torch_adam"] = True  # no JIT build of FusedAdam/CPUAdam needed
        optimizer_params["fused"] = True  # torch's fused AdamW kernel (CPU and GPU): one kernel, not one per tensor
    ds = {
        **batch,
        "gradient_clipping": t.clip,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16", "loss_scale": 0, "initial_scale_power": 16},
        "zero_optimization": zero,
        "optimizer": {"type": "AdamW", "params": optimizer_params},
        "steps_per_print": 10 ** 9,
        "wall_clock_breakdown": False,
    }
    scheduler = _scheduler(cfg)
    if scheduler is not None:
        ds["scheduler"] = scheduler
    return deep_merge(ds, cfg.deepspeed.extra)
