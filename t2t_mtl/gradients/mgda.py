"""MGDA (Sener & Koltun 2018): the min-norm point of the convex hull of the task gradients, by Wolfe's
min-norm-point algorithm on G (the fully corrective Frank–Wolfe method: exact in finitely many steps; pairwise
Frank–Wolfe, which this replaced, converges linearly only at a rate set by G's conditioning and, after its 1000
steps, returned points with up to 100× the minimum norm when the gradients were nearly dependent, as near a
Pareto-stationary point, and their norms differed).

α starts at the vertex of smallest norm, v = Σ α_k g_k, and the support S = {that vertex}. Each major step takes
the Frank–Wolfe vertex t = argmin_r v·g_r and stops once v·v − v·g_t ≤ tol · v·v (the Frank–Wolfe gap, so α is
then optimal to that tolerance), when t is already in S, or after `max_iter` steps; otherwise t joins S and the
minor cycle re-optimises over S: the affine minimiser y of ‖Σ_S y_s g_s‖ with Σ y = 1 (a least-squares solve of
its KKT system, so dependent gradients are fine) becomes α if y > 0; else α moves toward y until a weight reaches
0, that vertex leaves S, and the cycle repeats. Weights: α (sum 1).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import GradientMethod, GradientMethodError, register_method


def affine_minimizer(gram: np.ndarray, support: list[int]) -> np.ndarray:
    """y minimising yᵀ G_SS y subject to Σ y = 1 over the tasks `support` (S)."""
    k = len(support)
    kkt = np.zeros((k + 1, k + 1))
    kkt[:k, :k] = gram[np.ix_(support, support)]
    kkt[:k, k] = kkt[k, :k] = 1.0
    rhs = np.zeros(k + 1)
    rhs[k] = 1.0
    return np.linalg.lstsq(kkt, rhs, rcond=None)[0][:k]


def mgda_weights(gram: np.ndarray, max_iter: int, tol: float) -> np.ndarray:
    """Min-norm weights α [T] (on the simplex) for Gram `gram` [T, T]."""
    scale = float(np.max(np.diag(gram)))
    if scale <= 0:
        return np.full(gram.shape[0], 1.0 / gram.shape[0])
    gram = gram / scale  # α is invariant to the scale; the KKT solves are not (their other entries are 1)
    alpha = np.zeros(gram.shape[0])
    start = int(np.argmin(np.diag(gram)))
    alpha[start] = 1.0
    support = [start]
    for _ in range(max_iter):
        g_alpha = gram @ alpha
        norm_sq = float(alpha @ g_alpha)
        t = int(np.argmin(g_alpha))
        if norm_sq - g_alpha[t] <= tol * norm_sq or t in support:
            break
        support.append(t)
        while True:  # minor cycle: every pass either ends or drops a vertex from the support
            y = affine_minimizer(gram, support)
            current = alpha[support]
            alpha[:] = 0.0
            if np.all(y > 0):
                alpha[support] = y / y.sum()
                break
            shrink = np.flatnonzero(y <= 0)
            gaps = current[shrink] - y[shrink]  # > 0 unless a vertex just added got y = 0: no move then
            steps = np.divide(current[shrink], gaps, out=np.zeros(len(shrink)), where=gaps > 0)
            moved = current + float(steps.min()) * (y - current)
            keep = moved > 0
            keep[shrink[np.argmin(steps)]] = False
            support = [s for s, kept in zip(support, keep) if kept]
            alpha[support] = moved[keep] / moved[keep].sum()
    return alpha


@register_method
class MGDA(GradientMethod):
    """Options: max_iter (major steps of Wolfe's algorithm), tol (relative Frank–Wolfe gap)."""

    name = "mgda"
    defaults = {"max_iter": 1000, "tol": 1e-10}

    def __init__(self, num_tasks: int, **options: Any) -> None:
        super().__init__(num_tasks, **options)
        if int(self.options["max_iter"]) < 1:
            raise GradientMethodError(f"gradient_surgery.max_iter must be >= 1 for mgda, got {self.options['max_iter']}")

    def _weights(self, gram: np.ndarray, tasks: np.ndarray) -> np.ndarray:
        return mgda_weights(gram, int(self.options["max_iter"]), float(self.options["tol"]))
