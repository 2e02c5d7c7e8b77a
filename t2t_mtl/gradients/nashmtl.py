"""Nash-MTL (Navon et al. 2022): the bargaining solution α > 0 of G α = 1/α.

G is first normalised by its Frobenius norm, as the authors' code does (so the update is invariant to the
gradients' scale), plus `ridge`·I so a solution exists when the gradients are linearly dependent. G α = 1/α is the
stationarity condition of the strictly convex, self-concordant f(α) = ½ αᵀGα − Σ log α_i, solved by Newton steps
until max_i |α_i (Gα)_i − 1| < tol: damped (kept inside α > 0, Armijo backtracking) while the Newton decrement
λ = √(∇fᵀH⁻¹∇f) is at least `QUADRATIC_DECREMENT`, full below it, where self-concordance keeps the full step
inside α > 0 and λ falls quadratically (there f's decrease, ~λ², is below float64's resolution of f, so Armijo
could not accept the step: backtracking had stopped such solves with residuals up to ~1e-5). Weights: α — after
max_iter steps the last iterate; where the solve was still moving α then, `NashMTL` warns once (logger
`t2t_mtl.gradients.nashmtl`). The solve also ends at float64's limit, not reported: a full step that does not
shrink λ (e.g. a residual ~1e-10 for nearly dependent gradients against the default tol 1e-12), or a damped
step that leaves α unchanged.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .base import GradientMethod, GradientMethodError, register_method


def nash_objective(gram: np.ndarray, alpha: np.ndarray) -> float:
    """f(α) = ½ αᵀGα − Σ log α_i for `gram` G [T, T] and `alpha` [T] > 0."""
    return 0.5 * float(alpha @ gram @ alpha) - float(np.sum(np.log(alpha)))


def nashmtl_weights(gram: np.ndarray, ridge: float, max_iter: int, tol: float) -> np.ndarray:
    """α [T] solving (G/‖G‖_F + ridge·I) α = 1/α."""
    return nashmtl_solve(gram, ridge, max_iter, tol).alpha


class NashSolve(NamedTuple):
    """α, its residual max_i |α_i (Gα)_i − 1| (in the normalised G + ridge·I), and whether `max_iter` cut the solve
    short (the residual above tol though the solve had not reached float64's limit: see the module docstring)."""

    alpha: np.ndarray
    residual: float
    cut_short: bool


def _residual(gram: np.ndarray, alpha: np.ndarray) -> float:
    return float(np.max(np.abs(alpha * (gram @ alpha) - 1.0)))


QUADRATIC_DECREMENT = 0.25  # Newton decrement λ below which full steps stay in α > 0 and converge quadratically


def _newton_step(gram: np.ndarray, alpha: np.ndarray, grad: np.ndarray, ridge: float) -> np.ndarray:
    """The Newton step −(G + diag(1/α²))⁻¹ ∇f at α; refuses, naming `ridge`, a G α = 1/α without a solution."""
    try:
        return -np.linalg.solve(gram + np.diag(1.0 / alpha ** 2), grad)
    except np.linalg.LinAlgError:  # α diverged: G α = 1/α has no solution
        raise GradientMethodError(
            f"nashmtl: G α = 1/α has no solution for this step's task gradients (they are linearly dependent, "
            f"e.g. two of them opposite) with gradient_surgery.ridge = {ridge}; set ridge > 0 "
            f"(default {NashMTL.defaults['ridge']})") from None


def _damped_size(gram: np.ndarray, alpha: np.ndarray, grad: np.ndarray, step: np.ndarray) -> float:
    """The size of a Newton `step` far from the solution: halved into α > 0, then until Armijo's sufficient
    decrease of f holds (at most down to 1e-12)."""
    size = 1.0
    while np.any(alpha + size * step <= 0):
        size *= 0.5
    f0, slope = nash_objective(gram, alpha), float(grad @ step)
    while nash_objective(gram, alpha + size * step) > f0 + 1e-4 * size * slope and size > 1e-12:
        size *= 0.5
    return size


def nashmtl_solve(gram: np.ndarray, ridge: float, max_iter: int, tol: float) -> NashSolve:
    """Newton steps on (G/‖G‖_F + ridge·I) α = 1/α until the residual is below `tol` or float64's limit, at most
    `max_iter` of them."""
    num_tasks = gram.shape[0]
    peak = float(np.max(np.abs(gram)))  # ‖G‖_F of G/peak: its squares neither overflow nor underflow
    frobenius = peak * float(np.linalg.norm(gram / peak)) if peak > 0 else 0.0
    if frobenius <= 0:
        return NashSolve(np.zeros(num_tasks), 0.0, False)
    gram = gram / frobenius + ridge * np.eye(num_tasks)
    alpha = 1.0 / np.sqrt(np.diag(gram))
    stalled = False
    last_decrement = np.inf  # λ² of the previous full Newton step
    for _ in range(max_iter):
        if _residual(gram, alpha) < tol:
            break
        grad = gram @ alpha - 1.0 / alpha
        step = _newton_step(gram, alpha, grad, ridge)
        decrement = -float(grad @ step)  # λ², the Newton decrement squared
        if decrement < QUADRATIC_DECREMENT ** 2:
            stalled = decrement >= last_decrement
            if stalled:  # full steps no longer shrink λ: float64's limit
                break
            alpha, last_decrement = alpha + step, decrement
            continue
        alpha, previous, last_decrement = alpha + _damped_size(gram, alpha, grad, step) * step, alpha, np.inf
        stalled = np.array_equal(alpha, previous)
        if stalled:  # a fixed point in float64: every further step would leave α as it is
            break
    residual = _residual(gram, alpha)
    return NashSolve(alpha, residual, residual >= tol and not stalled)


@register_method
class NashMTL(GradientMethod):
    """Options: ridge (added to the normalised G), max_iter (Newton steps), tol (on α_i (Gα)_i = 1). The first step
    whose solve max_iter cuts short is logged (a warning, once per method)."""

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
        solved = nashmtl_solve(gram, float(self.options["ridge"]), int(self.options["max_iter"]),
                               float(self.options["tol"]))
        if solved.cut_short:
            self.warn_max_iter("Newton steps", "the bargaining solution's max_i |α_i (Gα)_i − 1|", solved.residual)
        return solved.alpha
