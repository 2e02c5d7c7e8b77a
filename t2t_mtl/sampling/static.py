"""Samplers whose probabilities depend only on task sizes, explicit rates and the epoch."""
from __future__ import annotations

import math
from typing import Mapping, Optional

import numpy as np

from t2t_mtl.sampling.base import MixtureSampler
from t2t_mtl.sampling.errors import InvalidRateError, SamplingError
from t2t_mtl.sampling.rates import check_rates, size_rates
from t2t_mtl.sampling.schedules import annealed_alpha, dynamic_alpha

#: seqio's size-rate knobs plus T0's per-template caps, shared by every size-based strategy
SIZE_PARAMS = ("cap", "scale", "templates", "template_cap", "dataset_cap", "sizes_count_templates", "template_sizes")


class UniformSampler(MixtureSampler):
    """p_t = 1/M."""

    strategy = "uniform"

    def _compute_probabilities(self) -> np.ndarray:
        return np.full(len(self.tasks), 1.0 / len(self.tasks))


class RoundRobinSampler(UniformSampler):
    """p_t = 1/M, drawn in cycles: each M draws hold every task once, in a new seeded order per cycle.

    Under gradient surgery with training.grad_accum M (or a multiple), every step holds every task; a block is a
    whole number of cycles (sampling.block_size a multiple of M).

    Args:
        shuffle: a new random order in each cycle; false: the tasks' own order, every cycle.
    """

    strategy = "round_robin"
    PARAMS = ("shuffle",)

    def __init__(self, task_sizes: Mapping[str, int], *, shuffle: bool = True, **common) -> None:
        if not isinstance(shuffle, bool):
            raise SamplingError(f"sampling.shuffle (round_robin) must be true or false, got {shuffle!r}")
        block_size = common.pop("block_size", None)
        cycle = max(len(task_sizes), 1)
        super().__init__(task_sizes, block_size=max(self.DEFAULT_BLOCK_SIZE // cycle, 1) * cycle if block_size is None
                         else block_size, **common)
        if self.block_size % cycle:
            raise SamplingError(f"sampling.block_size {self.block_size} is not a multiple of the {cycle} tasks: "
                                f"round_robin draws whole cycles of every task; leave it unset or give a multiple")
        self.shuffle = shuffle

    def _draw_block(self, size: int) -> np.ndarray:
        """`size // M` cycles, each every task once (shuffled per cycle when `shuffle`)."""
        cycles = np.tile(np.arange(len(self.tasks)), (size // len(self.tasks), 1))
        if self.shuffle:
            cycles = self._rng.permuted(cycles, axis=1)
        return cycles.reshape(-1)


class ExplicitRatesSampler(MixtureSampler):
    """p_t ∝ the given rate (e.g. `Mixture.flatten()`); every task needs a rate.

    Args:
        rates: {task: rate} of every task of the mixture (a run fills in the mixture's own where unset).
    """

    strategy = "explicit"
    PARAMS = ("rates",)

    def __init__(self, task_sizes: Mapping[str, int], *, rates: Mapping[str, float], **common) -> None:
        super().__init__(task_sizes, **common)
        rates = check_rates(rates)
        missing = [t for t in self.tasks if t not in rates]
        extra = [t for t in rates if t not in self.task_sizes]
        if missing or extra:
            raise InvalidRateError(f"sampling.rates (explicit) must name exactly the mixture's tasks; "
                                   f"missing: {missing or 'none'}; not in the mixture: {extra or 'none'}")
        self.rates = rates

    def _compute_probabilities(self) -> np.ndarray:
        return np.array([self.rates[t] for t in self.tasks], dtype=np.float64)


class SizeRateSampler(MixtureSampler):
    """p_t ∝ seqio rate of n_t (scale, clip at `cap`, ** 1/alpha); `alpha()` may follow a schedule.

    Args:
        cap: examples cap K, each size clipped at it after `scale` (seqio's maximum); 0 or unset: none.
        scale: multiplies each size before the cap (seqio's scale).
        templates: {task: number of templates}: the task counts as that many seqio tasks, one per template
            (a run with T0's caps or data.all_templates fills it in from the templates each task trains with).
        template_cap: T0's cap on the examples of each template of a task (needs templates).
        dataset_cap: T0's cap on a task's examples, split evenly over its templates (needs templates).
        sizes_count_templates: a size counts each row once per template (a run sets it with data.all_templates).
        template_sizes: {task: {template: examples}}: each template's own count (a run fills it in with
            data.all_templates, from the rows each template renders).
    """

    def __init__(self, task_sizes: Mapping[str, int], *, cap: Optional[float] = None, scale: float = 1.0,
                 templates: Optional[Mapping[str, int]] = None, template_cap: Optional[float] = None,
                 dataset_cap: Optional[float] = None, sizes_count_templates: bool = False,
                 template_sizes: Optional[Mapping[str, Mapping[str, int]]] = None, **common) -> None:
        super().__init__(task_sizes, **common)
        self._epoch_alpha: Optional[float] = None
        self.size_params = dict(maximum=cap, scale=float(scale), templates=templates, template_cap=template_cap,
                                dataset_cap=dataset_cap, sizes_count_templates=sizes_count_templates,
                                template_sizes=template_sizes)
        self._compute_probabilities()  # validate now, not at the first draw

    def alpha(self) -> float:
        """Temperature alpha at the current epoch."""
        return 1.0

    def _on_epoch(self) -> bool:
        """The rates change only when alpha does (schedules: at whole epochs)."""
        previous, self._epoch_alpha = self._epoch_alpha, self.alpha()
        return previous != self._epoch_alpha

    def _compute_probabilities(self) -> np.ndarray:
        rates = size_rates(self.task_sizes, temperature=self.alpha(), **self.size_params)
        return np.array([rates[t] for t in self.tasks], dtype=np.float64)


class ProportionalSampler(SizeRateSampler):
    """Examples-proportional with cap K (T5): p_t = min(n_t, K) / Σ_s min(n_s, K)."""

    strategy = "proportional"
    PARAMS = SIZE_PARAMS


class TemperatureSampler(SizeRateSampler):
    """p_t ∝ min(n_t, K)^(1/alpha): alpha 1 is proportional, alpha → ∞ uniform.

    Args:
        alpha: the temperature (> 0): 1 is proportional, larger flattens the rates towards uniform.
    """

    strategy = "temperature"
    PARAMS = ("alpha",) + SIZE_PARAMS

    def __init__(self, task_sizes: Mapping[str, int], *, alpha: float = 1.0, **kwargs) -> None:
        self._alpha = float(alpha)
        super().__init__(task_sizes, **kwargs)

    def alpha(self) -> float:
        """The constant `alpha`."""
        return self._alpha


class AnnealedSampler(SizeRateSampler):
    """Stickland & Murray annealed sampling: temperature alpha(e) = 1/(1 - 0.8 (e-1)/(E-1)).

    Args:
        epochs: E, the epoch at which alpha reaches 5 (from 1 at the first epoch).
    """

    strategy = "annealed"
    PARAMS = ("epochs",) + SIZE_PARAMS

    def __init__(self, task_sizes: Mapping[str, int], *, epochs: int, **kwargs) -> None:
        self.total_epochs = int(epochs)
        annealed_alpha(1, self.total_epochs)  # validate
        super().__init__(task_sizes, **kwargs)

    def alpha(self) -> float:
        """alpha(e) of the current whole epoch, e counted from 1."""
        return annealed_alpha(math.floor(self.epoch) + 1.0, self.total_epochs)


class DynamicTemperatureSampler(SizeRateSampler):
    """Wang et al. dynamic temperature: alpha(e) = min(alpha_max, (e-1)(alpha_max-alpha_0)/M + alpha_0).

    Args:
        alpha_0: the temperature of the first epoch.
        alpha_max: the temperature it grows to.
        warmup_epochs: M, the epochs it takes to grow from alpha_0 to alpha_max.
    """

    strategy = "dynamic_temperature"
    PARAMS = ("alpha_0", "alpha_max", "warmup_epochs") + SIZE_PARAMS

    def __init__(self, task_sizes: Mapping[str, int], *, alpha_0: float = 1.0, alpha_max: float = 5.0,
                 warmup_epochs: float = 5.0, **kwargs) -> None:
        self.alpha_0, self.alpha_max, self.warmup_epochs = float(alpha_0), float(alpha_max), float(warmup_epochs)
        dynamic_alpha(1, self.alpha_0, self.alpha_max, self.warmup_epochs)  # validate
        super().__init__(task_sizes, **kwargs)

    def alpha(self) -> float:
        """alpha(e) of the current whole epoch, e counted from 1."""
        return dynamic_alpha(math.floor(self.epoch) + 1.0, self.alpha_0, self.alpha_max, self.warmup_epochs)
