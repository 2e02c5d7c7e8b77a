"""Mixture sampling: which task the next micro-batch (or example) comes from, and which rows.

`build_sampler(config, task_sizes, seed=..., rank=..., world_size=...)` returns a `MixtureSampler`;
`TaskStreams` hands out per-task row indices. Strategies: see `STRATEGIES`; `register_sampler` adds one's own.
The entropy functions, which need torch, are imported on first use: the CLI's parsers import this package without
loading torch.
"""
import importlib
from typing import Any

from t2t_mtl.sampling.base import MixtureSampler
from t2t_mtl.sampling.errors import (EmptyTaskError, InvalidRateError, SamplerRegistrationError, SamplingError,
                                     UnknownParameterError, UnknownStrategyError)
from t2t_mtl.sampling.factory import build_sampler
from t2t_mtl.sampling.registry import STRATEGIES, register_sampler
from t2t_mtl.sampling.rates import normalise, seqio_rate, size_rates
from t2t_mtl.sampling.report import rates_over_epochs, starved_tasks
from t2t_mtl.sampling.schedules import annealed_alpha, dynamic_alpha
from t2t_mtl.sampling.streams import TaskStreams
from t2t_mtl.sampling.uncertainty import select_uncertain, uncertainty_scores

__all__ = [
    "MixtureSampler", "build_sampler", "STRATEGIES", "register_sampler", "TaskStreams", "SamplingError",
    "UnknownStrategyError", "SamplerRegistrationError", "UnknownParameterError", "InvalidRateError", "EmptyTaskError",
    "normalise", "seqio_rate", "size_rates",
    "annealed_alpha", "dynamic_alpha", "classification_entropy", "generation_entropy", "token_entropy",
    "select_uncertain", "uncertainty_scores", "rates_over_epochs", "starved_tasks",
]
_ENTROPIES = ("classification_entropy", "generation_entropy", "token_entropy")


def __getattr__(name: str) -> Any:
    if name in _ENTROPIES:
        return getattr(importlib.import_module("t2t_mtl.sampling.entropy"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
