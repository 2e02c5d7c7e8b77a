"""Whether a run produces the signals its parts learn from (`check_signal_config`): periodic held-in validation for
what needs its results (`validation_users`: an adaptive sampler, a weighting's KPIs, training.keep_best), per-task
micro-batches for gradient surgery, and the `evaluation:` section checked before any training. Errors are ConfigErrors
naming the key."""
from __future__ import annotations

from typing import TYPE_CHECKING, List

from t2t_mtl.config import Config, ConfigError

if TYPE_CHECKING:
    from t2t_mtl.sampling import MixtureSampler

__all__ = ["check_signal_config", "validation_users"]


def validation_users(cfg: Config, sampler: MixtureSampler) -> List[str]:
    """What in the run needs periodic held-in validation's results, as `key 'value'`: the run's `sampler` or its
    weighting class where it declares `needs_validation`, and training.keep_best."""
    from t2t_mtl.weighting.registry import METHODS

    method, users = cfg.weighting.get("method"), []
    if sampler.needs_validation:
        users.append(f"sampling.strategy {sampler.strategy!r}")
    if isinstance(method, str) and method in METHODS and METHODS[method].needs_validation:  # (unknown: refused)
        users.append(f"weighting.method {method!r} (its KPIs are validation exact match)")
    if cfg.training.keep_best:
        users.append(f"training.keep_best {cfg.training.keep_best!r}")
    return users


def check_signal_config(cfg: Config, sampler: MixtureSampler) -> None:
    """Signals the run's `sampler` (as `check_component_configs` built it) and weighting need must be produced:
    validation-driven ones (the sampler's or the weighting class's `needs_validation`, keep_best) need
    `training.validate_every > 0`; CA-MTL selection builds mixed micro-batches (no gradient surgery).
    Also validates the `evaluation:` section before any training."""
    from t2t_mtl.engine.validation import evaluation_plan

    strategy = sampler.strategy
    needs_validation = validation_users(cfg, sampler)
    if needs_validation and cfg.training.validate_every <= 0:
        raise ConfigError(f"{' and '.join(needs_validation)} need(s) periodic held-in validation: set "
                          f"training.validate_every to a positive number of steps")
    if strategy == "uncertainty" and cfg.gradient_surgery:
        raise ConfigError("sampling.strategy 'uncertainty' trains on mixed-task selections; gradient_surgery "
                          "needs per-task micro-batches: use another strategy or drop gradient_surgery")
    if cfg.training.early_stopping and not cfg.training.keep_best:
        raise ConfigError("training.early_stopping counts validations without a new best of training.keep_best: "
                          "set training.keep_best (val_score or val_loss) too")
    if cfg.training.validate_every > 0 and cfg.training.validate_examples < 1:
        raise ConfigError(f"training.validate_examples must be >= 1, got {cfg.training.validate_examples}")
    evaluation_plan(cfg)
