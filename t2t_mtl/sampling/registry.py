"""`STRATEGIES`, the sampler classes a config's `sampling.strategy` names, and `register_sampler`, which adds a
strategy of one's own (from a `data.task_modules` module, so that every rank, `--print-config` and a resume have it
before the config is checked)."""
from __future__ import annotations

from typing import TypeVar

from t2t_mtl.class_registry import ClassRegistry, register_class
from t2t_mtl.sampling.bandit import SoftmaxBanditSampler, ThompsonBanditSampler
from t2t_mtl.sampling.base import MixtureSampler
from t2t_mtl.sampling.errors import SamplerRegistrationError
from t2t_mtl.sampling.static import (AnnealedSampler, DynamicTemperatureSampler, ExplicitRatesSampler,
                                     ProportionalSampler, RoundRobinSampler, TemperatureSampler,
                                     UniformSampler)
from t2t_mtl.sampling.uncertainty import UncertaintyEMASampler, UncertaintySelectionSampler
from t2t_mtl.sampling.worst_task import WorstTaskSampler

STRATEGIES: dict[str, type[MixtureSampler]] = {cls.strategy: cls for cls in (
    UniformSampler, RoundRobinSampler, ProportionalSampler, TemperatureSampler, ExplicitRatesSampler, AnnealedSampler,
    DynamicTemperatureSampler, UncertaintySelectionSampler, UncertaintyEMASampler, SoftmaxBanditSampler,
    ThompsonBanditSampler, WorstTaskSampler)}

#: the strategies t2t-mtl ships, which `register_sampler` does not replace
SHIPPED_STRATEGIES = frozenset(STRATEGIES)

#: keys every strategy accepts
COMMON_PARAMS = ("strategy", "mode", "block_size")

_REGISTRY = ClassRegistry(STRATEGIES, SHIPPED_STRATEGIES, MixtureSampler, "strategy", "_compute_probabilities",
                          build_args=({},), common={"seed": 0, "rank": 0, "world_size": 1, "mode": "homogeneous",
                                                    "block_size": None},
                          register="register_sampler", error=SamplerRegistrationError)

Sampler = TypeVar("Sampler", bound=type[MixtureSampler])


def register_sampler(cls: Sampler, *, overwrite: bool = False) -> Sampler:
    """Make the `MixtureSampler` subclass `cls` the strategy a config's `sampling.strategy: <cls.strategy>` builds,
    with the config's other keys (those of `cls.PARAMS`, besides `mode` and `block_size`) as keyword arguments:
    `cls(task_sizes, seed=, rank=, world_size=, mode=, block_size=, **params)`. Returns `cls` (a class decorator).

    The class implements `_compute_probabilities()` (weights in `self.tasks` order) and, where its draws depend on
    what it learns, `_on_update(stats)` / `_on_epoch()`; whatever it learns is saved in checkpoints through
    `_extra_state()` (plain, picklable values) and restored by `_load_extra_state(state)`, so a resumed run draws
    as the uninterrupted one (a run's checks refuse a strategy whose draws differ after that round trip), and
    compared over the ranks but for the keys it lists in `RANK_OWN_STATE` (figures of its rank's own). What it
    learns from besides the training losses it declares, as the shipped ones do: `needs_validation` (refused with
    `training.validate_every` 0) and `needs_entropy` (fed each step's training-forward entropies).

    Raises `SamplerRegistrationError` for a class that is no `MixtureSampler`, has no `strategy` of its own or a
    shipped one, lacks `_compute_probabilities`, or whose constructor cannot take its `PARAMS`; and for a
    strategy registered to another class, unless `overwrite`."""
    return register_class(_REGISTRY, cls, overwrite=overwrite)
