"""Which keys of a run's training section, set away from their defaults, its DeepSpeed config replaces (a whole
deepspeed.config JSON, or deepspeed.extra's scheduler, optimizer params or gradient_clipping), for the warnings a run
start gives; a key that fills an "auto" there is used, not replaced."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

from t2t_mtl.config import Config, ConfigError, changed_keys
from t2t_mtl.engine.deepspeed_config import auto_training_keys, read_deepspeed_json
from t2t_mtl.engine.deepspeed_optimizer_checks import ADAM_TYPES


def replaced_training_keys(cfg: Config, filled: Optional[FrozenSet[str]] = None) -> List[Tuple[List[str], str]]:
    """(training keys, why) for the keys of the training section set away from their defaults that the DeepSpeed
    config replaces: a whole `deepspeed.config` JSON (its optimizer, scheduler and clipping), or in
    `deepspeed.extra` a scheduler, an optimizer's own params, an optimizer of another type than Adam (no betas)
    or a gradient_clipping of another value. A key that fills an "auto" there (`filled`, the run's
    `DeepSpeedAutos.auto_training_keys`; None: read here) is used, so not listed."""
    t, extra = cfg.training, cfg.deepspeed.extra
    if filled is None:
        filled = auto_training_keys(cfg, user_json(cfg.deepspeed.config) if cfg.deepspeed.config is not None else None)
    if cfg.deepspeed.config is not None:
        why = "deepspeed.config names a whole DeepSpeed JSON, used as is (its optimizer, scheduler and clipping)"
        keys = [key for key in changed_keys(t, ("lr", "betas", "weight_decay", "clip", "schedule", "warmup"))
                if key not in filled]
        return [(keys, why)] if keys else []
    optimizer = extra.get("optimizer") if isinstance(extra.get("optimizer"), dict) else {}
    params = optimizer.get("params") if isinstance(optimizer.get("params"), dict) else {}
    own = [key for key in changed_keys(t, ("lr", "betas", "weight_decay"))
           if key in params and params[key] != getattr(t, key) and key not in filled]
    out = [(changed_keys(t, ("schedule", "warmup")) if "scheduler" in extra else [],
            "deepspeed.extra.scheduler replaces the schedule"), (own, "deepspeed.extra.optimizer.params gives its own")]
    kind = optimizer.get("type")
    if kind is not None and str(kind).lower() not in ADAM_TYPES and "betas" not in params:
        out.append((changed_keys(t, ("betas",)), f"deepspeed.extra.optimizer {kind} takes no betas"))
    if extra.get("gradient_clipping", t.clip) != t.clip and "clip" not in filled:
        out.append((changed_keys(t, ("clip",)), "deepspeed.extra.gradient_clipping replaces it"))
    return [(keys, why) for keys, why in out if keys]


def user_json(path: str) -> Dict[str, Any]:
    """The DeepSpeed JSON object at `path`, or {} where it cannot be read as one (`build_deepspeed_config` names
    why)."""
    try:
        return read_deepspeed_json(Path(path))
    except ConfigError:
        return {}
