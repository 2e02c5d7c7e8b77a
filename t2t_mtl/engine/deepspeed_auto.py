"""The "auto" values of a DeepSpeed config, filled from the training section and the model as transformers' Trainer
fills them.

A DeepSpeed JSON written for the HF Trainer says "auto" where the trainer's arguments decide (lr, betas, clipping,
bf16/fp16, the warmup scheduler's steps) and where the model's hidden size does (ZeRO's bucket sizes). DeepSpeed
itself reads "auto" only in its batch keys and its typed sections (where it drops the key for its own default): in
the optimizer and scheduler params it took the string as the value and failed inside `deepspeed.initialize` (CPUAdam
got lr 'auto' and betas 'a', 'u'), after the data and the model were built. `fill_auto_values` fills those the
training section and the model section give and refuses the others, naming each.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, Mapping, Set, Tuple

from t2t_mtl.config import Config, ConfigError

__all__ = ["fill_auto_values", "auto_filled_training_keys"]

BATCH_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")


def hidden_size(cfg: Config) -> int:
    """The hidden size the Trainer sizes ZeRO's buckets by (its model's `config.hidden_size`): T5's `d_model`, of
    `model.dims` or of the pretrained model's config.json; an MoE model's too (its experts are T5 FFNs between
    d_model-wide layers, and its config is the T5 config it was converted from)."""
    from t2t_mtl.model.t5 import model_config  # (read only where an "auto" asks: a pretrained model's config.json)

    return int(model_config(cfg.model).d_model)


def _as_is(value: Any) -> Any:
    return value


#: key path: (the training key whose value fills its "auto", how the value is written there)
TRAINING_FILLS: Dict[Tuple[str, ...], Tuple[str, Callable[[Any], Any]]] = {
    ("gradient_clipping",): ("clip", _as_is),
    ("optimizer", "params", "lr"): ("lr", _as_is),
    ("optimizer", "params", "betas"): ("betas", list),
    ("optimizer", "params", "weight_decay"): ("weight_decay", _as_is),
    ("scheduler", "params", "warmup_max_lr"): ("lr", _as_is),
    # at least 1, as the Trainer fills it: DeepSpeed refuses 0, training.warmup's default
    ("scheduler", "params", "warmup_num_steps"): ("warmup", lambda warmup: max(1, warmup)),
    ("scheduler", "params", "total_num_steps"): ("steps", _as_is)}

#: key path: the training key it takes (`TRAINING_FILLS`' keys)
AUTO_TRAINING_KEYS = {path: key for path, (key, _) in TRAINING_FILLS.items()}


def auto_sources(cfg: Config, precision: Callable[[], str]) -> Dict[Tuple[str, ...], Callable[[], Any]]:
    """What fills "auto" at each key path of a DeepSpeed config for `cfg` (`precision()`: the precision it trains
    in, resolved only where a bf16/fp16 `enabled` asks): the training keys of `TRAINING_FILLS`, constants, the
    precision and ZeRO's bucket sizes, which follow the Trainer's rule on the hidden size h: reduce_bucket_size h²,
    stage3_prefetch_bucket_size int(0.9·h²), stage3_param_persistence_threshold 10·h (filled at any stage:
    DeepSpeed reads the stage3_ ones at ZeRO-3 only, where the Trainer fills them); the warmup scheduler's
    warmup_num_steps is max(1, training.warmup), the Trainer's max(1, warmup steps)."""
    t, zero = cfg.training, "zero_optimization"
    size = functools.cache(lambda: hidden_size(cfg))  # (a pretrained model's config.json read once)

    def training_value(key: str, write: Callable[[Any], Any]) -> Callable[[], Any]:
        return lambda: write(getattr(t, key))

    training = {path: training_value(key, write) for path, (key, write) in TRAINING_FILLS.items()}
    return {**training,
            ("optimizer", "params", "eps"): lambda: 1e-8,
            ("bf16", "enabled"): lambda: precision() == "bf16", ("bfloat16", "enabled"): lambda: precision() == "bf16",
            ("fp16", "enabled"): lambda: precision() == "fp16",
            ("scheduler", "params", "warmup_min_lr"): lambda: 0.0,
            (zero, "reduce_bucket_size"): lambda: size() ** 2,
            (zero, "stage3_prefetch_bucket_size"): lambda: int(0.9 * size() ** 2),
            (zero, "stage3_param_persistence_threshold"): lambda: 10 * size()}


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
    section's (`auto_sources`: training.lr, betas, weight_decay, clip, warmup, steps; `precision()` for bf16/fp16)
    or, for ZeRO's bucket sizes, by the model's hidden size's. Raises ConfigError naming every other "auto" key path,
    prefixed by `source` (where `ds` was written)."""
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
        raise ConfigError(f"{source}{', '.join(unfilled)}: 'auto' is filled in only where the training or model "
                          f"section gives the value ({known}, and the batch keys); give the value instead, or "
                          f"remove the key for DeepSpeed's default")
    return filled
