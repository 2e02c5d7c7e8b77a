"""`build_sampler(config, task_sizes, ...)`: a sampler from a config dict such as
``{"strategy": "temperature", "alpha": 2.0, "cap": 65536, "mode": "homogeneous"}``."""
from __future__ import annotations

import inspect
from typing import Any, Mapping

from t2t_mtl.param_types import coerce_numeric_params
from t2t_mtl.sampling.base import MixtureSampler
from t2t_mtl.sampling.errors import SamplingError, UnknownStrategyError, check_keys
from t2t_mtl.sampling.registry import COMMON_PARAMS, SHIPPED_STRATEGIES, STRATEGIES
from t2t_mtl.wording import did_you_mean


def required_params(cls: type) -> list[str]:
    """Keyword-only constructor parameters of `cls` without a default."""
    return [p.name for p in inspect.signature(cls.__init__).parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.default is p.empty]


def build_sampler(config: Mapping[str, Any], task_sizes: Mapping[str, int], *, seed: int, rank: int = 0,
                  world_size: int = 1, log: bool = True) -> MixtureSampler:
    """Build the sampler named by `config["strategy"]`, validating every key; logs its rates table (`log`)."""
    if not isinstance(config, Mapping):
        raise SamplingError(f"sampler config must be a dict, got {type(config).__name__}")
    name = config.get("strategy")
    if not isinstance(name, str) or name not in STRATEGIES:  # (a list or mapping would not even hash)
        shipped = [strategy for strategy in STRATEGIES if strategy in SHIPPED_STRATEGIES]
        registered = [strategy for strategy in STRATEGIES if strategy not in SHIPPED_STRATEGIES]
        raise UnknownStrategyError(
            f"unknown sampling strategy {name!r}.{did_you_mean(str(name), STRATEGIES)} "
            f"Valid strategies: {', '.join(shipped)}"
            + (f"; registered: {', '.join(registered)}" if registered else "")
            + ". A sampler class of your own becomes a strategy through t2t_mtl.sampling.register_sampler, in a "
              "module a training config imports (data.task_modules)."
        )
    cls = STRATEGIES[name]
    check_keys(config, COMMON_PARAMS + cls.PARAMS, f"sampling strategy {name!r}")
    missing = [p for p in required_params(cls) if p not in config and p != "seed"]
    if missing:
        raise SamplingError(f"sampling strategy {name!r} needs {', '.join(map(repr, missing))} "
                            f"(parameters: {', '.join(cls.PARAMS)})")
    config = coerce_numeric_params(config, cls, f"sampling strategy {name!r}", SamplingError)
    kwargs = {k: v for k, v in config.items() if k != "strategy"}
    sampler = cls(task_sizes, seed=seed, rank=rank, world_size=world_size, **kwargs)
    if log:
        sampler.log_rates()
    return sampler
