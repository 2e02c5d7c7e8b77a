"""Nash-MTL (Navon et al. 2022): the bargaining solution α > 0 of G α = 1/α.

G is first normalised by its Frobenius norm, as the authors' code does (so the update is invariant to the
gradients' scale), plus `ridge`·I so a solution exists when the gradients are linearly dependent. G α = 1/α is the
stationarity condition of the strictly convex f(α) = ½ αᵀGα − Σ log α_i, solved by damped Newton steps (kept
inside α > 0, Armijo backtracking) until max_i |α_i (Gα)_i − 1| < tol. Weights: α.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import GradientMethod, GradientMethodError, register_method


def nash_objective(gram: np.ndarray, alpha: np.ndarray) -> float:
    return 0.5 * float(alpha @ gram @ alpha) - float(np.sum(np.log(alpha)))


def nashmtl_weights(gram: np.ndarray, ridge: float, max_iter: int, tol: float) -> np.ndarray:
    """α [T] solving (G/‖G‖_F + ridge·I) α = 1/α."""
    num_tasks = gram.shape[0]
    frobenius = float(np.linalg.norm(gram))
    if frobenius <= 0:
        return np.zeros(num_tasks)
    gram = gram / frobenius + ridge * np.eye(num_tasks)
    alpha = 1.0 / np.sqrt(np.diag(gram))
    for _ in range(max_iter):
        g_alpha = gram @ alpha
        if np.max(np.abs(alpha * g_alpha - 1.0)) < tol:
            break
        grad = g_alpha - 1.0 / alpha
        try:
            step = -np.linalg.solve(gram + np.diag(1.0 / alpha ** 2), grad)
        except np.linalg.LinAlgError:  # α diverged: G α = 1/α has no solution
            raise GradientMethodError(
                f"nashmtl: G α = 1/α has no solution for this step's task gradients (they are linearly dependent, "
                f"e.g. two of them opposite) with gradient_surgery.ridge = {ridge}; set ridge > 0 "
                f"(default {NashMTL.defaults['ridge']})") from None
        size = 1.0
        while np.any(alpha + size * step <= 0):
            size *= 0.5
        f0, slope = nash_objective(gram, alpha), float(grad @ step)
        while nash_objective(gram, alpha + size * step) > f0 + 1e-4 * size * slope and size > 1e-12:
            size *= 0.5
        alpha = alpha + size * step
    return alpha


@register_method
class NashMTL(GradientMethod):
    """Options: ridge (added to the normalised G), max_iter (Newton steps), tol (on α_i (Gα)_i = 1)."""

    name = "nashmtl"
    defaults = {"ridge": 1e-6, "max_iter": 100, "tol": 1e-12}

    def __init__(self, num_tasks: int, **options: Any) -> None:
        super().__init__(num_tasks, **options)
        if float(self.options["ridge"]) < 0:
            raise GradientMethodError(f"gradient_surgery.ridge must be >= 0 for nashmtl, got {self.options['ridge']}")
        if int(self.options["max_iter"]) < 1:
            raise GradientMethodError(f"gradient_surgery.max_iter must be >= 1 for nashmtl, "
                                      f"got {self.options['max_iter']}")
        if float(self.options["tol"]) <= 0:
            raise GradientMethodError(f"gradient_surgery.tol must be > 0 for nashmtl, got {self.options['tol']}")

    def _weights(self, gram: np.ndarray, tasks: np.ndarray) -> np.ndarray:
        return nashmtl_weights(gram, float(self.options["ridge"]), int(self.options["max_iter"]),
                               float(self.options["tol"]))
