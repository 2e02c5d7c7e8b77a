"""MGDA (Sener & Koltun 2018): the min-norm point of the convex hull of the task gradients, by pairwise
Frank–Wolfe on G (the Frank–Wolfe variant with linear convergence on the simplex; plain Frank–Wolfe stalls for
hours of iterations when the task gradients' norms differ by orders of magnitude).

α starts uniform, v = Σ α_k g_k. Each iteration takes the toward vertex t = argmin_r v·g_r and the away vertex
s = argmax_{r: α_r > 0} v·g_r, moves γ of weight from s to t with the exact line search
γ = (v·g_s − v·g_t) / ‖g_t − g_s‖² clipped to [0, α_s], and stops once v·g_s − v·g_t ≤ tol · v·v (this bounds
the Frank–Wolfe gap, so α is then optimal to that tolerance) or after `max_iter` steps. Weights: α (sum 1).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import GradientMethod, GradientMethodError, register_method


def mgda_weights(gram: np.ndarray, max_iter: int, tol: float) -> np.ndarray:
    """Min-norm weights α [T] (on the simplex) for Gram `gram` [T, T]."""
    num_tasks = gram.shape[0]
    alpha = np.full(num_tasks, 1.0 / num_tasks)
    for _ in range(max_iter):
        g_alpha = gram @ alpha
        t = int(np.argmin(g_alpha))
        active = np.flatnonzero(alpha > 0)
        s = int(active[np.argmax(g_alpha[active])])
        gap = float(g_alpha[s] - g_alpha[t])
        denom = float(gram[t, t] - 2.0 * gram[t, s] + gram[s, s])
        if gap <= tol * float(alpha @ g_alpha) or denom <= 0:
            break
        gamma = min(float(alpha[s]), gap / denom)
        alpha[t] += gamma
        alpha[s] = 0.0 if gamma == alpha[s] else alpha[s] - gamma
    return alpha


@register_method
class MGDA(GradientMethod):
    """Options: max_iter (Frank–Wolfe steps), tol (relative Frank–Wolfe gap)."""

    name = "mgda"
    defaults = {"max_iter": 1000, "tol": 1e-10}

    def __init__(self, num_tasks: int, **options: Any) -> None:
        super().__init__(num_tasks, **options)
        if int(self.options["max_iter"]) < 1:
            raise GradientMethodError(f"gradient_surgery.max_iter must be >= 1 for mgda, got {self.options['max_iter']}")

    def _weights(self, gram: np.ndarray, tasks: np.ndarray) -> np.ndarray:
        return mgda_weights(gram, int(self.options["max_iter"]), float(self.options["tol"]))
