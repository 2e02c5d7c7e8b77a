"""The "auto" values of a DeepSpeed config, filled from the training section as transformers' Trainer fills them.

A DeepSpeed JSON written for the HF Trainer says "auto" where the trainer's arguments decide (lr, betas, clipping,
bf16/fp16, the warmup scheduler's steps). DeepSpeed itself reads "auto" only in its batch keys: elsewhere it took
the string as the value and failed inside `deepspeed.initialize` (CPUAdam got lr 'auto' and betas 'a', 'u'), after
the data and the model were built. `fill_auto_values` fills those the training section gives and refuses the others
(ZeRO's bucket sizes, which the Trainer derives from the model's hidden size), naming each.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Set, Tuple

from t2t_mtl.config import Config, ConfigError

__all__ = ["fill_auto_values", "auto_filled_training_keys"]

BATCH_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")


def auto_sources(cfg: Config, precision: Callable[[], str]) -> Dict[Tuple[str, ...], Callable[[], Any]]:
    """What fills "auto" at each key path of a DeepSpeed config for `cfg` (`precision()`: the precision it trains
    in, resolved only where a bf16/fp16 `enabled` asks)."""
    t = cfg.training
    return {("gradient_clipping",): lambda: t.clip,
            ("optimizer", "params", "lr"): lambda: t.lr, ("optimizer", "params", "betas"): lambda: list(t.betas),
            ("optimizer", "params", "eps"): lambda: 1e-8,
            ("optimizer", "params", "weight_decay"): lambda: t.weight_decay,
            ("bf16", "enabled"): lambda: precision() == "bf16", ("bfloat16", "enabled"): lambda: precision() == "bf16",
            ("fp16", "enabled"): lambda: precision() == "fp16",
            ("scheduler", "params", "warmup_min_lr"): lambda: 0.0,
            ("scheduler", "params", "warmup_max_lr"): lambda: t.lr,
            ("scheduler", "params", "warmup_num_steps"): lambda: t.warmup,
            ("scheduler", "params", "total_num_steps"): lambda: t.steps}


AUTO_TRAINING_KEYS = {("gradient_clipping",): "clip", ("optimizer", "params", "lr"): "lr",
                      ("optimizer", "params", "betas"): "betas",
                      ("optimizer", "params", "weight_decay"): "weight_decay",
                      ("scheduler", "params", "warmup_max_lr"): "lr",
                      ("scheduler", "params", "warmup_num_steps"): "warmup",
                      ("scheduler", "params", "total_num_steps"): "steps"}  # (key path: the training key it takes)


def auto_filled_training_keys(ds: Mapping[str, Any]) -> Set[str]:
    """The training keys (`lr`, `clip`, ...) whose values `fill_auto_values` puts in place of an "auto" of `ds`."""
    def at(path: Tuple[str, ...]) -> Any:
        value: Any = ds
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    return {key for path, key in AUTO_TRAINING_KEYS.items() if at(path) == "auto"}


def fill_auto_values(ds: Mapping[str, Any], cfg: Config, precision: Callable[[], str], source: str) -> Dict[str, Any]:
    """`ds` with each "auto" value (outside the batch keys, which `with_batch_keys` fills) replaced by the training
    section's (`auto_sources`: training.lr, betas, weight_decay, clip, warmup, steps; `precision()` for bf16/fp16).
    Raises ConfigError naming every other "auto" key path, prefixed by `source` (where `ds` was written)."""
    sources = auto_sources(cfg, precision)
    unfilled: List[str] = []

    def fill(value: Any, path: Tuple[str, ...]) -> Any:
        if isinstance(value, dict):
            return {key: fill(item, (*path, str(key))) for key, item in value.items()}
        if value != "auto" or path[0] in BATCH_KEYS:
            return value
        if path in sources:
            return sources[path]()
        unfilled.append(".".join(path))
        return value

    filled = fill(dict(ds), ())
    if unfilled:
        known = ", ".join(sorted({".".join(path) for path in sources}))
        raise ConfigError(f"{source}{', '.join(unfilled)}: 'auto' is filled in only where the training section "
                          f"gives the value ({known}, and the batch keys); give a number instead (DeepSpeed's "
                          f"default for a bucket size is 500000000) or remove the key")
    return filled
