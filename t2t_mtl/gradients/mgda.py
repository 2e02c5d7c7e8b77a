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
0, that vertex leaves S, and the cycle repeats. Weights: α (sum 1). Where `max_iter` steps end with the gap still
above tol, `MGDA` warns once (logger `t2t_mtl.gradients.mgda`), except at float64's limit, not reported: a gap
within the rounding of v·v and v·g_t (`ROUNDING` · T, |G_ij| ≤ 1 after scaling; e.g. 0 in the hull, where α may
cycle between two float64 points), or a last step that left α unchanged (t joined S with weight 0 and left it).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .base import GradientMethod, GradientMethodError, register_method


ROUNDING = 4 * float(np.finfo(np.float64).eps)  # per task: float64's error in v·v − v·g_t (|G_ij| ≤ 1)


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
    return mgda_solve(gram, max_iter, tol).alpha


class MGDASolve(NamedTuple):
    """α, its Frank–Wolfe gap relative to v·v ((v·v − min_r v·g_r) / v·v), and whether `max_iter` cut the solve
    short (the stopping test still failing above float64's rounding though the last step moved α)."""

    alpha: np.ndarray
    gap: float
    cut_short: bool


def _stops(gram: np.ndarray, alpha: np.ndarray, support: list[int], tol: float) -> tuple[bool, int, float]:
    """Whether Wolfe's algorithm stops at α (gap within tol, or the Frank–Wolfe vertex t already in S), t, and the
    absolute gap v·v − v·g_t."""
    g_alpha = gram @ alpha
    norm_sq = float(alpha @ g_alpha)
    t = int(np.argmin(g_alpha))
    gap = norm_sq - float(g_alpha[t])
    return gap <= tol * norm_sq or t in support, t, gap


def mgda_solve(gram: np.ndarray, max_iter: int, tol: float) -> MGDASolve:
    """Wolfe's min-norm point on `gram` [T, T]: at most `max_iter` major steps, until the stopping test holds."""
    scale = float(np.max(np.diag(gram)))
    if scale <= 0:
        return MGDASolve(np.full(gram.shape[0], 1.0 / gram.shape[0]), 0.0, False)
    gram = gram / scale  # α is invariant to the scale; the KKT solves are not (their other entries are 1)
    alpha = np.zeros(gram.shape[0])
    start = int(np.argmin(np.diag(gram)))
    alpha[start] = 1.0
    support = [start]
    progressed = True
    for _ in range(max_iter):
        stops, t, _ = _stops(gram, alpha, support, tol)
        if stops:
            break
        previous = alpha.copy()
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
        progressed = not np.array_equal(alpha, previous)
    stops, _, gap = _stops(gram, alpha, support, tol)
    norm_sq = float(alpha @ gram @ alpha)
    relative = gap / norm_sq if norm_sq > 0 else float("inf")
    return MGDASolve(alpha, relative, not stops and progressed and gap > ROUNDING * len(alpha))


@register_method
class MGDA(GradientMethod):
    """Options: max_iter (major steps of Wolfe's algorithm), tol (relative Frank–Wolfe gap). The first step whose
    solve max_iter cuts short is logged (a warning, once per method)."""

    name = "mgda"
    defaults = {"max_iter": 1000, "tol": 1e-10}

    def __init__(self, num_tasks: int, **options: Any) -> None:
        super().__init__(num_tasks, **options)
        if int(self.options["max_iter"]) < 1:
            raise GradientMethodError(f"gradient_surgery.max_iter must be >= 1 for mgda, got "
                                      f"{self.options['max_iter']}")
        if float(self.options["tol"]) <= 0:
            raise GradientMethodError(f"gradient_surgery.tol must be > 0 for mgda, got {self.options['tol']}")

    def _weights(self, gram: np.ndarray, tasks: np.ndarray) -> np.ndarray:
        solved = mgda_solve(gram, int(self.options["max_iter"]), float(self.options["tol"]))
        if solved.cut_short:
            self.warn_max_iter("major steps", "the min-norm point's Frank–Wolfe gap (v·v − min_r v·g_r) / v·v",
                               solved.gap)
        return solved.alpha
