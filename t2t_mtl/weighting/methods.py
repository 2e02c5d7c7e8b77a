"""The loss-weighting methods (formulas from the survey, Chen et al. 2024 §3.1)."""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import torch
from torch import nn

from t2t_mtl.weighting.base import LossWeighting
from t2t_mtl.weighting.errors import WeightingError


def _check_sizes(task_names, task_sizes) -> None:
    for task in task_names:
        size = (task_sizes or {}).get(task)
        if size is None:
            raise WeightingError(f"size-based weighting needs the size of task {task!r}")
        if isinstance(size, bool) or not isinstance(size, numbers.Real) or not 0 < size < math.inf:
            raise WeightingError(f"task {task!r} has size {size!r}: sizes must be finite numbers > 0 (the rows of "
                                 f"each task)")


def base_weights(kind: str, task_names: Sequence[str], task_sizes: Optional[Mapping[str, int]]) -> dict[str, float]:
    """Constant weights summing to 1: 'equal' (1/M) or 'size' (λ_t ∝ 1/|D_t|)."""
    if kind == "equal":
        return {t: 1.0 / len(task_names) for t in task_names}
    if kind == "size":
        _check_sizes(task_names, task_sizes)
        inverse = {t: 1.0 / task_sizes[t] for t in task_names}
        total = math.fsum(inverse.values())
        return {t: v / total for t, v in inverse.items()}
    raise WeightingError(f"curriculum base (its constant weights λ_t^const) must be 'equal' or 'size', got {kind!r}")


class EqualWeighting(LossWeighting):
    """Σ_t L_t / M."""

    method = "equal"

    def __init__(self, task_names: Iterable[str], task_sizes: Optional[Mapping[str, int]] = None) -> None:
        super().__init__(task_names, task_sizes)
        self.weights = base_weights("equal", self.task_names, task_sizes)

    def combine(self, losses: dict[str, torch.Tensor], *, epoch: float, stats: Mapping[str, Any]) -> torch.Tensor:
        """Fixed weights 1/M."""
        return self.weighted_sum(losses, self.weights)

    def task_weights(self, epoch: float, stats: Mapping[str, Any]) -> dict[str, float]:
        """1/M for every task."""
        return dict(self.weights)


class SizeWeighting(LossWeighting):
    """Σ_t λ_t L_t with λ_t = (1/|D_t|) / Σ_s (1/|D_s|)."""

    method = "size"

    def __init__(self, task_names: Iterable[str], task_sizes: Optional[Mapping[str, int]] = None) -> None:
        super().__init__(task_names, task_sizes)
        self.weights = base_weights("size", self.task_names, task_sizes)

    def combine(self, losses: dict[str, torch.Tensor], *, epoch: float, stats: Mapping[str, Any]) -> torch.Tensor:
        """Fixed weights ∝ 1/|D_t|."""
        return self.weighted_sum(losses, self.weights)

    def task_weights(self, epoch: float, stats: Mapping[str, Any]) -> dict[str, float]:
        """λ_t ∝ 1/|D_t| for every task."""
        return dict(self.weights)


class UncertaintyWeighting(LossWeighting):
    """Kendall et al. (2018): Σ_t exp(-s_t) L_t + s_t with learned s_t = log σ_t² (parameter `log_variance`).

    `log_variance` is an nn.Parameter [M] in task order: the optimizer trains it with the model and it is
    saved in the module's state_dict (so in checkpoints).

    Args:
        init: every task's starting log σ² (a finite number).
    """

    method = "uncertainty"
    PARAMS = ("init",)

    def __init__(self, task_names: Iterable[str], task_sizes: Optional[Mapping[str, int]] = None, *,
                 init: float = 0.0) -> None:
        super().__init__(task_names, task_sizes)
        if not math.isfinite(init):
            raise WeightingError(f"uncertainty init (log σ²) must be a finite number, got {init}")
        self.log_variance = nn.Parameter(torch.full((len(self.task_names),), float(init)))
        self._last_log_variance: Optional[torch.Tensor] = None  # the log σ² of the last call (a copy, not read)
        self._last_tasks: list[str] = []

    def combine(self, losses: dict[str, torch.Tensor], *, epoch: float, stats: Mapping[str, Any]) -> torch.Tensor:
        """Σ_t exp(-s_t) L_t + s_t; `last_weights` holds exp(-s_t)."""
        terms = []
        for task, loss in losses.items():
            s = self.log_variance[self.index(task)]
            terms.append(torch.exp(-s) * loss.reshape(()) + s)
        self._last_log_variance, self._last_tasks = self.log_variance.detach().clone(), list(losses)
        return torch.stack(terms).sum()

    def task_weights(self, epoch: float, stats: Mapping[str, Any]) -> dict[str, float]:
        """exp(-s_t) of every task, of the log σ² it holds now (read from the device)."""
        return dict(zip(self.task_names, torch.exp(-self.log_variance.detach().double()).tolist()))

    @property
    def last_weights(self) -> dict[str, float]:  # type: ignore[override]
        """exp(-s_t) of the last call's tasks, of the log σ² that call used, read from the device when asked: the
        training loop does not ask, so its micro-batches do not wait for it."""
        if self._last_log_variance is None:
            return {}
        log_variance = self._last_log_variance.tolist()
        return {t: math.exp(-log_variance[self.index(t)]) for t in self._last_tasks}


class DynamicTaskPrioritization(LossWeighting):
    """Guo et al. (2018): λ_t = -(1 - k_t)^γ log k_t, k_t a task KPI in (0, 1).

    KPIs come from ``stats={"kpi": {task: value}}`` (e.g. accuracy), smoothed as
    k ← (1-momentum) k_new + momentum k; a task with no KPI yet uses `initial_kpi`.

    Args:
        gamma: γ >= 0, the focusing exponent.
        momentum: in [0, 1), the smoothed KPI's weight of its previous value.
        initial_kpi: in (0, 1), the KPI of a task before its first validation.
        eps: in (0, 0.5), the clamp keeping k in [eps, 1 - eps] (log k finite).
    """

    method = "dtp"
    PARAMS = ("gamma", "momentum", "initial_kpi", "eps")
    needs_validation = True

    def __init__(self, task_names: Iterable[str], task_sizes: Optional[Mapping[str, int]] = None, *,
                 gamma: float = 2.0, momentum: float = 0.0, initial_kpi: float = 0.5, eps: float = 1e-6) -> None:
        super().__init__(task_names, task_sizes)
        if not 0 <= gamma < math.inf:
            raise WeightingError(f"dtp gamma must be a finite number >= 0, got {gamma}")
        if not 0 <= momentum < 1:
            raise WeightingError(f"dtp momentum must be in [0, 1), got {momentum}")
        if not 0 < initial_kpi < 1:
            raise WeightingError(f"dtp initial_kpi must be in (0, 1), got {initial_kpi}")
        if not 0 < eps < 0.5:
            raise WeightingError(f"dtp eps (the KPI clamp, keeping log k finite) must be in (0, 0.5), got {eps}")
        self.gamma, self.momentum, self.eps = float(gamma), float(momentum), float(eps)
        self.register_buffer("kpi", torch.full((len(self.task_names),), float(initial_kpi), dtype=torch.float64))
        # the buffer's values on the host, which every call reads: a read of the buffer on a GPU (float()) waited
        # for the micro-batch's forward queued before it, every micro-batch
        self._kpi = [float(initial_kpi)] * len(self.task_names)
        self.register_load_state_dict_post_hook(_kpis_loaded)

    def update_kpis(self, kpis: Mapping[str, float]) -> None:
        """Fold new KPI values (in [0, 1]) into the smoothed KPIs."""
        self._kpi = self._folded(kpis)
        # (a host tensor nothing reuses: copied without waiting for the device)
        self.kpi.copy_(torch.tensor(self._kpi, dtype=torch.float64), non_blocking=True)

    def task_weight(self, task: str, kpi: Optional[float] = None) -> float:
        """λ_t from the task's smoothed KPI (or `kpi`), clamped to [eps, 1 - eps]."""
        k = self._kpi[self.index(task)] if kpi is None else kpi
        k = min(max(k, self.eps), 1 - self.eps)
        return -((1 - k) ** self.gamma) * math.log(k)

    def task_weights(self, epoch: float, stats: Mapping[str, Any]) -> dict[str, float]:
        """λ_t of every task, from the KPIs smoothed with `stats["kpi"]` folded in (as the next call folds them)."""
        smoothed = self._folded(stats.get("kpi") or {})
        return {t: self.task_weight(t, k) for t, k in zip(self.task_names, smoothed)}

    def _folded(self, kpis: Mapping[str, float]) -> list[float]:
        """The smoothed KPIs (in task order) with `kpis` folded in, the stored ones left as they are; a
        WeightingError naming a task this weighting has not, or a KPI outside [0, 1]."""
        smoothed = list(self._kpi)
        for task, value in kpis.items():
            if task not in self._index:
                raise WeightingError(f"KPI given for unknown task {task!r}")
            value = float(value)
            if not 0.0 <= value <= 1.0:
                raise WeightingError(f"task {task!r} has KPI {value}: KPIs must be in [0, 1]")
            i = self.index(task)
            smoothed[i] = (1 - self.momentum) * value + self.momentum * smoothed[i]
        return smoothed

    def combine(self, losses: dict[str, torch.Tensor], *, epoch: float, stats: Mapping[str, Any]) -> torch.Tensor:
        """Folds `stats["kpi"]` in (when given), then weights each loss by `task_weight`."""
        if stats.get("kpi"):
            self.update_kpis(stats["kpi"])
        return self.weighted_sum(losses, {t: self.task_weight(t) for t in losses})


def _kpis_loaded(module: DynamicTaskPrioritization, incompatible_keys: Any) -> None:
    """After a load: the host copy of the smoothed KPIs is the loaded buffer's (read once here)."""
    module._kpi = module.kpi.tolist()


class TchebycheffWeighting(LossWeighting):
    """max_t λ_t L_t with λ_t = 1/(l_t Σ_i 1/l_i), l_t a reference loss per task.

    l_t is ``stats["ref_loss"][t]`` when given, else the task's first observed loss (with several ranks, the
    mean of the ranks' first losses from the end of that step on: `synchronize`); Σ_i runs over the
    tasks whose l is known. The maximum is over the tasks present in the step. A first loss that is not
    finite and > 0 cannot be a reference: the call returns NaN (the engine skips such a step, as it skips
    any non-finite loss) and the task's next loss is tried.
    """

    method = "tchebycheff"

    def __init__(self, task_names: Iterable[str], task_sizes: Optional[Mapping[str, int]] = None) -> None:
        super().__init__(task_names, task_sizes)
        self.register_buffer("ref_loss", torch.full((len(self.task_names),), float("nan"), dtype=torch.float64))
        self._ref = [math.nan] * len(self.task_names)  # the buffer's values on the host, which calls read (as dtp's)
        self._synchronized = False  # every rank holds every reference (see `synchronize`)
        self.register_load_state_dict_post_hook(_references_complete)

    def combine(self, losses: dict[str, torch.Tensor], *, epoch: float, stats: Mapping[str, Any]) -> torch.Tensor:
        """max_t λ_t L_t; raises `WeightingError` for a `stats["ref_loss"]` entry of an unknown task, or one that is
        not finite and > 0."""
        for task, value in (stats.get("ref_loss") or {}).items():
            if task not in self._index or not 0 < float(value) < math.inf:
                raise WeightingError(f"ref_loss for task {task!r} must be finite and > 0 and the task known, "
                                     f"got {value}")
            self.ref_loss[self.index(task)] = self._ref[self.index(task)] = float(value)
        first = {t: float(loss.detach()) for t, loss in losses.items() if math.isnan(self._ref[self.index(t)])}
        if not all(0 < v < math.inf for v in first.values()):
            self.last_weights = {t: math.nan for t in losses}
            return torch.stack([loss.reshape(()) for loss in losses.values()]).sum() * math.nan
        for task, value in first.items():
            self.ref_loss[self.index(task)] = self._ref[self.index(task)] = value
        every_weight = self.task_weights(epoch, stats)  # (from the host copy: nothing waits for the device)
        weights = {t: every_weight[t] for t in losses}
        weighted = torch.stack([weights[t] * loss.reshape(()) for t, loss in losses.items()])
        self.last_weights = weights
        return weighted.max()

    def task_weights(self, epoch: float, stats: Mapping[str, Any]) -> dict[str, float]:
        """λ_t of every task whose reference loss is known (none before a task's first loss)."""
        known = {t: v for t, v in zip(self.task_names, self._ref) if not math.isnan(v)}
        norm = math.fsum(1.0 / v for v in known.values())
        return {t: 1.0 / (v * norm) for t, v in known.items()}

    def synchronize(self, all_reduce_sum: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Each rank takes its own first losses as references: they become the mean over the ranks that know
        them (a task no rank has seen stays unknown). Once every rank knows every task's reference, they agree
        and stay so: no more collectives."""
        if self._synchronized:
            return
        known = ~torch.isnan(self.ref_loss)
        totals = all_reduce_sum(torch.stack([torch.where(known, self.ref_loss, torch.zeros_like(self.ref_loss)),
                                             known.to(self.ref_loss.dtype)]))
        seen = totals[1] > 0
        mean = torch.where(seen, totals[0] / totals[1].clamp(min=1), torch.full_like(totals[0], math.nan))
        self.ref_loss.copy_(mean)
        self._ref = mean.tolist()  # (the step's one read of the device)
        self._synchronized = not any(math.isnan(v) for v in self._ref)


def _references_complete(module: TchebycheffWeighting, incompatible_keys: Any) -> None:
    """After a load: references saved with none missing were saved synchronized (a checkpoint is written after a
    step's `synchronize`), so the ranks agree and a resume makes no collective — one that averaged the equal
    values again could move them by an ulp (3·x/3 ≠ x in floating point)."""
    module._ref = module.ref_loss.tolist()
    module._synchronized = not any(math.isnan(v) for v in module._ref)


def _start_epoch(task: str, value) -> float:
    """A curriculum start epoch e'_t as a finite float (YAML may give a number as a string)."""
    try:
        epoch = float(value)
    except (TypeError, ValueError):
        epoch = math.nan
    if not math.isfinite(epoch):
        raise WeightingError(f"curriculum start_epochs[{task!r}] must be a finite number (an epoch), got {value!r}")
    return epoch


class CurriculumWeighting(LossWeighting):
    """λ_t(e) = λ_t^const / (1 + exp((e'_t - e)/α)): task t fades in around epoch e'_t.

    `start_epochs` {task: e'_t} (default 0), `alpha` the width, `base` 'equal' or 'size' for λ^const.

    Args:
        start_epochs: {task: e'_t}, the epoch around which each task fades in (unlisted tasks: 0).
        alpha: α > 0, the width of the fade-in, in epochs.
        base: equal or size, the constant weights λ^const faded in.
    """

    method = "curriculum"
    PARAMS = ("start_epochs", "alpha", "base")

    def __init__(self, task_names: Iterable[str], task_sizes: Optional[Mapping[str, int]] = None, *,
                 start_epochs: Optional[Mapping[str, float]] = None, alpha: float = 1.0, base: str = "equal") -> None:
        super().__init__(task_names, task_sizes)
        if not 0 < alpha < math.inf:
            raise WeightingError(f"curriculum alpha must be > 0 and finite, got {alpha}")
        if start_epochs is not None and not isinstance(start_epochs, Mapping):
            raise WeightingError(f"curriculum start_epochs must map task names to their start epochs, e.g. "
                                 f"{{{self.task_names[0]}: 2}}; got {start_epochs!r}")
        unknown = [t for t in (start_epochs or {}) if t not in self._index]
        if unknown:
            raise WeightingError(f"start_epochs names unknown tasks: {', '.join(unknown)}")
        self.start_epochs = {t: _start_epoch(t, (start_epochs or {}).get(t, 0.0)) for t in self.task_names}
        self.alpha = float(alpha)
        self.base = base_weights(base, self.task_names, task_sizes)

    def task_weight(self, task: str, epoch: float) -> float:
        """λ_t(epoch); 0.0 long before the task's start epoch (where exp would overflow)."""
        z = (self.start_epochs[task] - epoch) / self.alpha
        return self.base[task] / (1.0 + math.exp(z)) if z < 700 else 0.0

    def combine(self, losses: dict[str, torch.Tensor], *, epoch: float, stats: Mapping[str, Any]) -> torch.Tensor:
        """Weights each loss by `task_weight(task, epoch)`."""
        return self.weighted_sum(losses, {t: self.task_weight(t, epoch) for t in losses})

    def task_weights(self, epoch: float, stats: Mapping[str, Any]) -> dict[str, float]:
        """λ_t(epoch) of every task."""
        return {t: self.task_weight(t, epoch) for t in self.task_names}
