"""`build_weighting(config, task_names, task_sizes)` from a config such as ``{"method": "uncertainty"}``."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

from t2t_mtl.param_types import coerce_numeric_params
from t2t_mtl.weighting.base import LossWeighting
from t2t_mtl.weighting.errors import UnknownWeightingError, UnknownWeightingParameterError, WeightingError
from t2t_mtl.weighting.registry import METHODS, SHIPPED_METHODS
from t2t_mtl.wording import did_you_mean


def build_weighting(config: Mapping[str, Any], task_names: Iterable[str],
                    task_sizes: Optional[Mapping[str, int]] = None) -> LossWeighting:
    """Build the weighting named by `config["method"]` over the tasks `task_names` (a list of names, in the
    order of their weights), validating every key; `task_sizes` ({task: rows}) feeds size-based methods."""
    if not isinstance(config, Mapping):
        raise WeightingError(f"weighting config must be a dict, got {type(config).__name__}")
    name = config.get("method")
    if not isinstance(name, str) or name not in METHODS:  # (a list or mapping would not even hash)
        shipped = [method for method in METHODS if method in SHIPPED_METHODS]
        registered = [method for method in METHODS if method not in SHIPPED_METHODS]
        raise UnknownWeightingError(f"unknown loss weighting {name!r}.{did_you_mean(str(name), METHODS)} "
                                    f"Valid methods: {', '.join(shipped)}"
                                    + (f"; registered: {', '.join(registered)}" if registered else "")
                                    + ". A LossWeighting class of your own becomes a method through "
                                      "t2t_mtl.weighting.register_weighting, in a module a training config imports "
                                      "(data.task_modules).")
    cls = METHODS[name]
    for key in config:
        if key != "method" and key not in cls.PARAMS:
            valid = ", ".join(cls.PARAMS) or "none"
            raise UnknownWeightingParameterError(f"unknown parameter {key!r} for loss weighting {name!r}."
                                                 f"{did_you_mean(key, (*cls.PARAMS, 'method'))} Valid parameters: "
                                                 f"{valid}.", key=key)
    config = coerce_numeric_params(config, cls, f"loss weighting {name!r}", WeightingError)
    kwargs = {k: v for k, v in config.items() if k != "method"}
    return cls(task_names, task_sizes, **kwargs)
