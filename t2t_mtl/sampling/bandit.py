"""Bandit task scheduling with rewards from validation improvements.

Feed validation results as ``update({"val_score": {task: score}})`` (higher is better) or
``update({"val_loss": {...}})`` with ``metric: val_loss``. The first value seen for a task is its baseline. Training
also feeds every step's ``{"loss": {...}, "trained": {task: examples}}``: bandit_thompson with a target credits the
tasks by their examples trained. Each records its learned state (`logged_state`: Q, or the Beta parameters).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import numpy as np

from t2t_mtl.sampling.base import MixtureSampler
from t2t_mtl.sampling.errors import SamplingError
from t2t_mtl.sampling.feedback import check_metric, improvement, read_scores


class _FeedbackSampler(MixtureSampler):
    """A bandit rewarded by the improvement of a task's feedback metric between two updates.

    Args:
        metric: the feedback: val_score (default; higher is better), val_loss, or loss (the training losses, fed
            every step: no periodic validation needed).
    """

    DEFAULT_BLOCK_SIZE = 256
    needs_validation = True

    def __init__(self, task_sizes: Mapping[str, int], *, metric: str = "val_score", **common) -> None:
        super().__init__(task_sizes, **common)
        self.metric = check_metric(metric)
        self.needs_validation = self.metric != "loss"  # (the training loss is fed every step)
        self.last_scores: dict[str, float] = {}

    def _rewards(self, stats: Mapping[str, Any]) -> Optional[dict[str, float]]:
        """Improvement of each task given since its previous value (tasks seen for the first time: none)."""
        scores = read_scores(stats, self.metric, self.tasks)
        if scores is None:
            return None
        rewards = {t: improvement(v, self.last_scores[t], self.metric)
                   for t, v in scores.items() if t in self.last_scores}
        self.last_scores.update(scores)
        return rewards

    def _extra_state(self) -> dict:
        return {"last_scores": dict(self.last_scores), "metric": self.metric}

    def _load_extra_state(self, state: dict) -> None:
        """The saved last values are the baselines of the next rewards in the saved metric (states before
        2026-12-05 lack it): under another `sampling.metric` the baselines start anew, the estimates stay."""
        same_metric = state.get("metric", self.metric) == self.metric
        self.last_scores = {t: float(v) for t, v in state["last_scores"].items()} if same_metric else {}


class SoftmaxBanditSampler(_FeedbackSampler):
    """Guo et al. (2019): π(t) = softmax(Q/τ), Q_t ← (1-α) Q_t + α R_t with R_t task t's improvement.

    Unrolled: Q_{e,t} = (1-α)^e Q_{0,t} + Σ_k α (1-α)^{e-k} R_k.

    Args:
        tau: τ > 0, the softmax temperature (smaller: greedier).
        step: α in (0, 1], the weight of each new reward in Q.
        initial_q: Q_0 of every task.
    """

    strategy = "bandit_softmax"
    PARAMS = ("tau", "step", "initial_q", "metric")

    def __init__(self, task_sizes: Mapping[str, int], *, tau: float = 0.1, step: float = 0.3,
                 initial_q: float = 0.0, **kwargs) -> None:
        super().__init__(task_sizes, **kwargs)
        if not tau > 0:
            raise SamplingError(f"sampling.tau must be > 0, got {tau}")
        if not 0 < step <= 1:
            raise SamplingError(f"sampling.step (alpha) must be in (0, 1], got {step}")
        if not math.isfinite(initial_q):
            raise SamplingError(f"sampling.initial_q must be a finite number, got {initial_q}")
        self.tau, self.step = float(tau), float(step)
        self.q = np.full(len(self.tasks), float(initial_q))

    def _on_update(self, stats: Mapping[str, Any]) -> bool:
        rewards = self._rewards(stats)
        if not rewards:
            return False
        for task, reward in rewards.items():
            i = self.tasks.index(task)
            self.q[i] = (1 - self.step) * self.q[i] + self.step * reward
        return True

    def _compute_probabilities(self) -> np.ndarray:
        """softmax(Q/τ) as exp((Q - max Q)/τ): no Q/τ to overflow (a small τ, a large Q) into NaN probabilities; a
        (Q - max Q)/τ that overflows is -inf, probability 0."""
        with np.errstate(over="ignore"):
            z = np.exp((self.q - self.q.max()) / self.tau)
        return z / z.sum()

    def logged_state(self) -> dict[str, dict[str, float]]:
        """Each task's value Q_t as bandit_q."""
        return {"bandit_q": dict(zip(self.tasks, self.q.tolist()))}

    def _extra_state(self) -> dict:
        return {**super()._extra_state(), "q": self.q.tolist()}

    def _load_extra_state(self, state: dict) -> None:
        super()._load_extra_state(state)
        self.q = np.array(state["q"], dtype=np.float64)


class ThompsonBanditSampler(_FeedbackSampler):
    """AutoSeM (Guo et al. 2019): each draw samples θ_k ~ Beta(a_k, b_k) and picks argmax_k θ_k.

    Reward 1 when the validation score improved, else 0: without `target`, task k's own score decides its
    arm; with `target` (a primary task), the target's improvement is credited to the tasks trained since the
    previous credit, in proportion to their share of the examples trained (``update({"trained": {task: examples}})``,
    which training gives every step: in mixed mode the tasks are drawn a bucket of micro-batches ahead of training),
    or where no update gives them, to the arms drawn since then by their share of those draws. `decay` < 1 shrinks
    the counts towards the prior before each update (non-stationary rewards).

    Args:
        prior_alpha: a > 0, the Beta prior's first parameter, of every arm.
        prior_beta: b > 0, the Beta prior's second parameter, of every arm.
        decay: in (0, 1], the share of the counts kept before each update.
        target: a primary task whose improvement rewards the arms drawn (unset: each task's own).
        estimate_samples: the Monte Carlo draws estimating the probabilities shown and logged.
    """

    strategy = "bandit_thompson"
    DEFAULT_BLOCK_SIZE = 16  # each draw costs M Beta samples, and every update redraws
    PARAMS = ("prior_alpha", "prior_beta", "decay", "target", "metric", "estimate_samples")

    def __init__(self, task_sizes: Mapping[str, int], *, prior_alpha: float = 1.0, prior_beta: float = 1.0,
                 decay: float = 1.0, target: Optional[str] = None, estimate_samples: int = 4000,
                 **kwargs) -> None:
        super().__init__(task_sizes, **kwargs)
        if not (0 < prior_alpha < math.inf and 0 < prior_beta < math.inf):
            raise SamplingError(f"the Beta prior needs finite sampling.prior_alpha, sampling.prior_beta > 0, "
                                f"got {prior_alpha}, {prior_beta}")
        if not 0 < decay <= 1:
            raise SamplingError(f"sampling.decay must be in (0, 1], got {decay}")
        if int(estimate_samples) < 1:
            raise SamplingError(f"sampling.estimate_samples must be >= 1, got {estimate_samples}")
        if target is not None and (not isinstance(target, str) or target not in self.task_sizes):
            raise SamplingError(f"sampling.target task {target!r} is not in the mixture ({', '.join(self.tasks)})")
        self.prior = np.array([prior_alpha, prior_beta], dtype=np.float64)
        self.decay, self.target, self.estimate_samples = float(decay), target, int(estimate_samples)
        self.alpha = np.full(len(self.tasks), float(prior_alpha))
        self.beta = np.full(len(self.tasks), float(prior_beta))
        self._drawn_at_update = [0] * len(self.tasks)
        self._trained: Optional[np.ndarray] = None  # examples of each task trained since the last credit
        self._updates = 0

    def _on_update(self, stats: Mapping[str, Any]) -> bool:
        self._count_trained(stats.get("trained"))
        had_baseline = self.target in self.last_scores
        rewards = self._rewards(stats)
        if rewards is None:
            return False
        if self.target is not None and had_baseline and self.target not in rewards:
            return False  # no target score (a non-finite one left out): its next win/loss credits these draws
        drawn = self._since_last_credit()
        if self.target is None:
            credit = {t: (1.0, float(r > 0)) for t, r in rewards.items()}
        elif self.target in rewards and drawn.sum() > 0:
            win = float(rewards[self.target] > 0)
            credit = {t: (share, win) for t, share in zip(self.tasks, drawn / drawn.sum()) if share > 0}
        else:
            return False
        self.alpha = self.prior[0] + self.decay * (self.alpha - self.prior[0])
        self.beta = self.prior[1] + self.decay * (self.beta - self.prior[1])
        for task, (weight, win) in credit.items():
            i = self.tasks.index(task)
            self.alpha[i] += weight * win
            self.beta[i] += weight * (1 - win)
        self._updates += 1
        return True

    def _count_trained(self, trained: Optional[Mapping[str, int]]) -> None:
        """Add an update's `trained` ({task: examples trained}) to the examples since the last credit."""
        if not trained:
            return
        if self._trained is None:
            self._trained = np.zeros(len(self.tasks))
        for task, count in trained.items():
            if task not in self.task_sizes:
                raise SamplingError(f"trained given for task {task!r}, which is not in the mixture")
            if not 0 <= count < math.inf:
                raise SamplingError(f"task {task!r} has trained {count}: it must be a number of examples >= 0")
            self._trained[self.tasks.index(task)] += float(count)

    def _since_last_credit(self) -> np.ndarray:
        """What each task had since the last credit, starting a new window: its examples trained where updates give
        them, else its draws."""
        drawn = np.array(self._drawn, dtype=np.float64) - np.array(self._drawn_at_update, dtype=np.float64)
        self._drawn_at_update = list(self._drawn)
        if self._trained is None:
            return drawn
        trained, self._trained = self._trained, np.zeros(len(self.tasks))
        return trained

    def _draw_key(self) -> np.ndarray:
        return np.concatenate([self.alpha, self.beta])

    def _draw_block(self, size: int) -> np.ndarray:
        return self._winners(self._rng, size)

    def _winners(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """argmax_k θ_k of `size` draws of θ_k ~ Beta(a_k, b_k).

        With a small a_k or b_k, θ_k is 1.0 (or 0.0) in float64 with a sizeable probability (Beta(0.01, 0.01):
        about a third), and a plain argmax would give every such tie to the first arm. A tie at 1.0 is decided by
        where the tied θ_k lie below 1: there Beta's density is ∝ (1-θ)^(b_k-1), so 1-θ_k is δ V^(1/b_k) with V
        uniform, and the smallest wins; a tie at 0.0, by θ_k = δ V^(1/a_k), the largest wins. The extra uniforms are
        drawn only for rows with a tie.
        """
        theta = rng.beta(self.alpha, self.beta, size=(size, len(self.tasks)))
        winners = theta.argmax(axis=1)
        best = theta.max(axis=1, keepdims=True)
        tied = theta == best
        rows = np.flatnonzero(tied.sum(axis=1) > 1)
        if rows.size:
            at_one = best[rows] > 0.5
            with np.errstate(divide="ignore"):  # (a uniform of 0: log -inf, that arm wins or loses outright)
                log_v = np.log(rng.random((rows.size, len(self.tasks))))
            key = np.where(at_one, -log_v / self.beta, log_v / self.alpha)  # log(1/V^(1/b)) | log(V^(1/a))
            winners[rows] = np.where(tied[rows], key, -np.inf).argmax(axis=1)
        return winners

    def _compute_probabilities(self) -> np.ndarray:
        """P(arm k has the largest θ), a Monte Carlo estimate from its own fixed-seed generator."""
        rng = np.random.default_rng([self.seed, self._updates, 7919])
        return np.bincount(self._winners(rng, self.estimate_samples), minlength=len(self.tasks)) / self.estimate_samples

    def logged_state(self) -> dict[str, dict[str, float]]:
        """Each arm's Beta parameters a_k, b_k as bandit_alpha and bandit_beta."""
        return {"bandit_alpha": dict(zip(self.tasks, self.alpha.tolist())),
                "bandit_beta": dict(zip(self.tasks, self.beta.tolist()))}

    def _extra_state(self) -> dict:
        return {**super()._extra_state(), "alpha": self.alpha.tolist(), "beta": self.beta.tolist(),
                "drawn_at_update": list(self._drawn_at_update), "updates": self._updates,
                "trained": None if self._trained is None else self._trained.tolist()}

    def _load_extra_state(self, state: dict) -> None:
        super()._load_extra_state(state)
        self.alpha = np.array(state["alpha"], dtype=np.float64)
        self.beta = np.array(state["beta"], dtype=np.float64)
        self._drawn_at_update = [int(c) for c in state["drawn_at_update"]]
        self._updates = int(state["updates"])
        trained = state.get("trained")  # (states before 2026-12-07 lack it: credited by draws until an update gives it)
        self._trained = None if trained is None else np.array(trained, dtype=np.float64)
