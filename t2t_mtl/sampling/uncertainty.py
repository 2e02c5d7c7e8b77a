"""Uncertainty-based task selection: CA-MTL's candidate-pool selector and a cheap EMA variant.

CA-MTL (Pilault et al. 2021): draw b candidates per task (b×M pool), score each with
U(x) = S_i(x) / (Ŝ · S'_i) where S_i(x) is the entropy (nats) of the model's prediction on x from task i,
Ŝ the maximum over tasks of the mean entropy of its b candidates, and S'_i = log |answer space of task i|
(the entropy of the uniform distribution over it; the vocabulary size V for free generation); keep the
b candidates with the highest U.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union

import numpy as np

from t2t_mtl.sampling.base import MixtureSampler
from t2t_mtl.sampling.errors import InvalidRateError, SamplingError, check_floor
from t2t_mtl.sampling.static import SIZE_PARAMS
from t2t_mtl.sampling.rates import size_rates

if TYPE_CHECKING:
    import torch

Entropies = Mapping[str, Union["torch.Tensor", Sequence[float]]]

#: uncertainty_ema's default sampling.floor
EMA_FLOOR = 0.01


def uncertainty_scores(entropies: Entropies, answer_space_sizes: Mapping[str, int]) -> dict[str, torch.Tensor]:
    """U(x) for every candidate: {task: [b_task] tensor of S_i(x) / (Ŝ · log |answer space_i|)}."""
    import torch  # (here, not at the top: the CLI lists the strategies without loading torch)

    if not entropies:
        raise SamplingError("uncertainty selection needs at least one task's candidate entropies")
    values = {}
    for task, ent in entropies.items():
        ent = torch.as_tensor(ent, dtype=torch.float64).detach().cpu().reshape(-1)
        if ent.numel() == 0:
            raise SamplingError(f"task {task!r} has no candidates in the uncertainty pool")
        if not torch.isfinite(ent).all() or (ent < 0).any():
            raise InvalidRateError(f"task {task!r} has entropies that are negative, NaN or infinite")
        if task not in answer_space_sizes:
            raise SamplingError(f"no answer-space size for task {task!r}: give the number of answer choices "
                                f"(classification) or the vocabulary size (generation)")
        size = answer_space_sizes[task]
        if size is None or size < 2:
            raise SamplingError(f"task {task!r} has answer-space size {size!r}: it must be >= 2")
        values[task] = (ent, math.log(size))
    s_hat = max(float(ent.mean()) for ent, _ in values.values())
    if s_hat == 0.0:
        return {task: torch.zeros_like(ent) for task, (ent, _) in values.items()}
    return {task: ent / (s_hat * s_prime) for task, (ent, s_prime) in values.items()}


def select_uncertain(entropies: Entropies, answer_space_sizes: Mapping[str, int], k: int) -> list[tuple[str, int]]:
    """The `k` candidates with the highest U(x), as (task, position in that task's pool), highest first.

    Ties keep pool order (tasks in the order given, then position).
    """
    import torch

    scores = uncertainty_scores(entropies, answer_space_sizes)
    owners = [(task, i) for task, u in scores.items() for i in range(u.numel())]
    if not 0 < k <= len(owners):
        raise SamplingError(f"cannot keep {k} of {len(owners)} candidates")
    flat = torch.cat(list(scores.values()))
    order = torch.sort(flat, descending=True, stable=True).indices[:k]
    return [owners[i] for i in order.tolist()]


class UncertaintySelectionSampler(MixtureSampler):
    """CA-MTL: the pool holds `pool_per_task` candidates of every task; `select()` keeps the top b by U.

    The engine draws b candidates per task (TaskStreams), scores them with a no-grad forward pass and trains on
    `select()`'s choice, which counts the candidates scored as the tasks' draws: training calls no `next_task` /
    `sample_tasks` (uniform, as the pool is).

    Args:
        pool_per_task: b, the candidates of each task scored, of which the b most uncertain are kept (a run fills
            in training.micro_batch_size, the paper's b, where unset).
    """

    strategy = "uncertainty"
    PARAMS = ("pool_per_task",)
    RANK_OWN_STATE = ("selected",)

    def __init__(self, task_sizes: Mapping[str, int], *, pool_per_task: int = 1, **common) -> None:
        super().__init__(task_sizes, **common)
        if int(pool_per_task) < 1:
            raise SamplingError(f"sampling.pool_per_task must be >= 1, got {pool_per_task}")
        self.pool_per_task = int(pool_per_task)
        self._selected = [0] * len(self.tasks)

    def candidate_pool(self) -> dict[str, int]:
        """How many candidates of each task to score: b per task (b×M in all)."""
        return {t: self.pool_per_task for t in self.tasks}

    def select(self, entropies: Entropies, answer_space_sizes: Mapping[str, int],
               k: Optional[int] = None) -> list[tuple[str, int]]:
        """Keep the `k` (default b) highest-U candidates; counts them per task (`selected`), and the candidates
        scored as the task's draws (`drawn`: every rank scores a pool of the same make-up, so this rank's count
        times the world size), for `rates_table()`."""
        import torch

        unknown = [t for t in entropies if t not in self.task_sizes]
        if unknown:
            raise SamplingError(f"entropies given for tasks not in the mixture: {', '.join(map(str, unknown))}")
        chosen = select_uncertain(entropies, answer_space_sizes, self.pool_per_task if k is None else k)
        position = {t: i for i, t in enumerate(self.tasks)}
        for task, ent in entropies.items():
            self._drawn[position[task]] += torch.as_tensor(ent).numel() * self.world_size
        for task, _ in chosen:
            self._selected[position[task]] += 1
        return chosen

    def selected(self) -> dict[str, int]:
        """How many selected candidates came from each task (this rank)."""
        return dict(zip(self.tasks, self._selected))

    def rates_table(self) -> list[dict[str, Any]]:
        """The base table, plus each task's `selected` count and `selected_share` of all selected."""
        rows, total = super().rates_table(), sum(self._selected)
        for row, count in zip(rows, self._selected):
            row.update(selected=count, selected_share=count / total if total else 0.0)
        return rows

    def describe(self) -> str:
        """The base table with two more columns: each task's candidates kept (`selected`, this rank's) and their
        share of all kept, what the selection trains on; its heading says the micro-batches mix the kept candidates'
        tasks (sampling.mode is not read)."""
        lines = super().describe().split("\n")
        lines[0] = f"{self.strategy} sampler (selected candidates, tasks mixed), epoch {self.epoch:g}"
        lines[1] += f"  {'selected':>10}  {'sel.share':>9}"
        for i, row in enumerate(self.rates_table(), start=2):
            lines[i] += f"  {row['selected']:>10}  {row['selected_share']:>9.4f}"
        return "\n".join(lines)

    def _compute_probabilities(self) -> np.ndarray:
        return np.full(len(self.tasks), 1.0 / len(self.tasks))

    def _extra_state(self) -> dict:
        return {"selected": list(self._selected)}

    def _load_extra_state(self, state: dict) -> None:
        self._selected = [int(c) for c in state["selected"]]


class UncertaintyEMASampler(MixtureSampler):
    """Cheap CA-MTL variant: p = floor + (1 - M·floor) · ((1-λ) p_T + λ p_unc).

    p_T is the temperature prior (seqio rates with `alpha`, `cap`, ...); p_unc ∝ a per-task EMA of the
    normalised entropies of training forward passes, fed as ``update({"entropy": {task: value}})``
    (e.g. `generation_entropy(..., normalise=True).mean()`); tasks not yet seen get the mean EMA of the
    others (p_unc = p_T before any entropy). The floor keeps every task's probability >= floor.

    Args:
        alpha: the temperature of the prior p_T.
        lam: λ in [0, 1], the share of p_unc in the blend.
        floor: every task's least probability (floor times the number of tasks < 1).
        momentum: the EMA's weight of the previous value, in [0, 1).
        cap, scale, templates, template_cap, dataset_cap, sizes_count_templates, template_sizes: the prior's size
            rates, as the temperature strategy's.
    """

    strategy = "uncertainty_ema"
    DEFAULT_BLOCK_SIZE = 256
    needs_entropy = True
    PARAMS = ("alpha", "lam", "floor", "momentum") + SIZE_PARAMS

    def __init__(self, task_sizes: Mapping[str, int], *, alpha: float = 1.0, lam: float = 0.5,
                 floor: float = EMA_FLOOR, momentum: float = 0.9, cap: Optional[float] = None, scale: float = 1.0,
                 templates: Optional[Mapping[str, int]] = None, template_cap: Optional[float] = None,
                 dataset_cap: Optional[float] = None, sizes_count_templates: bool = False,
                 template_sizes: Optional[Mapping[str, Mapping[str, int]]] = None, **common) -> None:
        super().__init__(task_sizes, **common)
        if not 0.0 <= lam <= 1.0:
            raise SamplingError(f"sampling.lam must be in [0, 1], got {lam}")
        if not 0.0 <= momentum < 1.0:
            raise SamplingError(f"sampling.momentum must be in [0, 1), got {momentum}")
        self.lam, self.momentum = float(lam), float(momentum)
        self.floor = check_floor(floor, len(self.tasks), EMA_FLOOR)
        prior = size_rates(self.task_sizes, temperature=float(alpha), maximum=cap, scale=scale,
                           templates=templates, template_cap=template_cap, dataset_cap=dataset_cap,
                           sizes_count_templates=sizes_count_templates, template_sizes=template_sizes)
        self.prior = np.array([prior[t] for t in self.tasks]) / sum(prior.values())
        self.ema = np.full(len(self.tasks), np.nan)

    def _on_update(self, stats: Mapping[str, Any]) -> bool:
        entropy = stats.get("entropy")
        if not entropy:
            return False
        position = {t: i for i, t in enumerate(self.tasks)}
        for task, value in entropy.items():
            if task not in position:
                raise SamplingError(f"entropy given for task {task!r}, which is not in the mixture")
            value = float(value)
            if not math.isfinite(value) or value < 0:
                raise InvalidRateError(f"task {task!r} has entropy {value}: it must be finite and >= 0")
            i = position[task]
            old = self.ema[i]
            self.ema[i] = value if np.isnan(old) else self.momentum * old + (1 - self.momentum) * value
        return True

    def uncertainty_probabilities(self) -> np.ndarray:
        """p_unc in task order (the prior while no entropy has been seen)."""
        known = ~np.isnan(self.ema)
        if not known.any() or self.ema[known].sum() == 0:
            return self.prior.copy()
        filled = np.where(known, self.ema, self.ema[known].mean())
        return filled / filled.sum()

    def _compute_probabilities(self) -> np.ndarray:
        mixed = (1 - self.lam) * self.prior + self.lam * self.uncertainty_probabilities()
        return self.floor + (1 - len(self.tasks) * self.floor) * mixed

    def _extra_state(self) -> dict:
        return {"ema": [None if np.isnan(v) else float(v) for v in self.ema]}

    def _load_extra_state(self, state: dict) -> None:
        self.ema = np.array([np.nan if v is None else v for v in state["ema"]], dtype=np.float64)
