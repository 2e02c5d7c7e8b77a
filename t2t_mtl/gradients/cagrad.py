"""CAGrad (Liu et al. 2021) in Gram space.

With g0 = mean gradient and s = c‖g0‖, find x on the simplex minimising F(x) = g_xᵀ g0 + s‖g_x‖ (g_x = Σ x_k g_k),
then d = g0 + (s / (‖g_x‖ + ε)) g_x, optionally divided by 1 + c² (`rescale`, as the authors' code). Weights:
w = 1/T + s x / (‖g_x‖ + ε) (÷ (1 + c²)). The problem is solved in float64 with SLSQP after normalising G by its
mean diagonal (the weights are invariant to that scale). ε (`STEP_EPS`, the authors' code adds 1e-4 to ‖g_x‖ too)
is relative to the RMS task-gradient norm: when 0 lies in the convex hull ‖g_x‖ → 0, and without it the weights
grew without bound (~1e8) and cancellation in a float32 combine broke the bound ‖d − g0‖ ≤ c‖g0‖; with it the
added term keeps that bound and the weights stay below 1/T + s/ε.

Where the minimum is the kink g_x = 0 (0 in the hull, F ≥ 0 = F there), the paper's d = g0 + s g_x/‖g_x‖ is 0/0
and the authors' ε makes it g0; but SLSQP stops ~1e-8 short of the kink and x·Gx cannot resolve ‖g_x‖ below
~√(T·eps) of the norms that cancel in it, so g_x/(‖g_x‖ + ε) was a rounding direction scaled by up to 1e-4 s
(d off by that much, and by ~1e-4 from the textbook version). The step therefore shrinks ‖g_x‖ by τ =
`CANCELLED` · Σ x_k ‖g_k‖ first: d = g0 + s (‖g_x‖ − τ)₊ g_x / (‖g_x‖ ((‖g_x‖ − τ)₊ + ε)), continuous in g_x, exactly
g0 (weights 1/T) within τ of the kink, and changing other steps by s τ ε / (‖g_x‖ + ε)² at most.

Where SLSQP ends unsuccessfully (e.g. its iteration limit), the step uses its last iterate and `CAGrad` warns once
(logger `t2t_mtl.gradients.cagrad`) with SLSQP's message. Two such exits are float64's limit, not reported: a line
search that finds no decrease (SLSQP's exit 8), and any exit within τ of the objective's kink ‖g_x‖ = 0 (0 lies in
the hull to the Gram's precision, where SLSQP's steps need not settle, F varies by rounding only and d is g0 whatever
x is, as it is for c = 0).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from scipy.optimize import minimize

from .base import GradientMethod, GradientMethodError, register_method


NORM_FLOOR = 1e-20  # keeps √(xᵀGx) differentiable when 0 lies in the convex hull
STEP_EPS = 1e-4  # added to ‖g_x‖ in the step (units of the RMS task-gradient norm), as the authors' code does
NO_DECREASE = 8  # SLSQP's exit "Positive directional derivative for linesearch": no step lowers F in float64
CANCELLED = 1e-6  # ‖g_x‖ within this fraction of Σ x_k ‖g_k‖ is 0 (x·Gx's rounding is ~√(T·eps) of it)

class SimplexSolve(NamedTuple):
    """SLSQP's point x on the simplex, its exit status (0: success) and message."""

    x: np.ndarray
    status: int
    message: str


def solve_simplex(objective: Callable[[np.ndarray], tuple[float, np.ndarray]], num_tasks: int) -> SimplexSolve:
    """argmin over the probability simplex of a smooth convex `objective` (value, gradient), from uniform."""
    result = minimize(objective, np.full(num_tasks, 1.0 / num_tasks), jac=True, method="SLSQP",
                      bounds=[(0.0, 1.0)] * num_tasks,
                      constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1.0, "jac": lambda x: np.ones_like(x)}],
                      options={"ftol": 1e-15, "maxiter": 500})
    x = np.clip(result.x, 0.0, None)
    return SimplexSolve(x / x.sum(), int(result.status), str(result.message))


def step_size(s: float, norm: float, cancelled: float) -> float:
    """The coefficient of g_x in d for s = c‖g0‖, `norm` ‖g_x‖ and `cancelled` Σ x_k ‖g_k‖ (all in units of the RMS
    task-gradient norm): s (‖g_x‖ − τ)₊ / (‖g_x‖ ((‖g_x‖ − τ)₊ + ε)), τ = `CANCELLED` · `cancelled`; 0 within τ."""
    shrunk = max(norm - CANCELLED * cancelled, 0.0)
    return s * shrunk / (norm * (shrunk + STEP_EPS)) if shrunk > 0 else 0.0


class CAGradSolve(NamedTuple):
    """The weights, whether SLSQP ended unsuccessfully short of float64's limit (see the module docstring), and
    SLSQP's message."""

    weights: np.ndarray
    cut_short: bool
    message: str


def cagrad_weights(gram: np.ndarray, c: float, rescale: bool) -> np.ndarray:
    """Weights w [T] of CAGrad's update for Gram `gram` [T, T]."""
    return cagrad_solve(gram, c, rescale).weights


def cagrad_solve(gram: np.ndarray, c: float, rescale: bool) -> CAGradSolve:
    """CAGrad's weights for Gram `gram` [T, T] and how SLSQP's solve for them ended."""
    num_tasks = gram.shape[0]
    scale = float(np.mean(np.diag(gram)))
    if scale <= 0:
        return CAGradSolve(np.full(num_tasks, 1.0 / num_tasks), False, "")
    gram = gram / scale
    g0_dots = gram.mean(axis=1)  # g_k · g0
    s = c * np.sqrt(max(float(g0_dots.mean()), 0.0))  # c‖g0‖

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        gx = gram @ x
        norm = np.sqrt(max(float(x @ gx), 0.0) + NORM_FLOOR)
        return float(x @ g0_dots + s * norm), g0_dots + s * gx / norm

    solved = solve_simplex(objective, num_tasks)
    x = solved.x
    step = step_size(s, np.sqrt(max(float(x @ gram @ x), 0.0)), float(x @ np.sqrt(np.diag(gram))))
    weights = 1.0 / num_tasks + step * x
    cut_short = solved.status not in (0, NO_DECREASE) and step > 0
    return CAGradSolve(weights / (1.0 + c ** 2) if rescale else weights, cut_short, solved.message)


@register_method
class CAGrad(GradientMethod):
    """Options: c (conflict-averse radius, paper 0.4/0.5), rescale (divide by 1 + c², the authors' default). The
    first step whose SLSQP solve ends unsuccessfully short of float64's limit is logged (a warning, once per method)."""

    name = "cagrad"
    defaults = {"c": 0.4, "rescale": True}

    def __init__(self, num_tasks: int, **options: Any) -> None:
        super().__init__(num_tasks, **options)
        if float(self.options["c"]) < 0:
            raise GradientMethodError(f"gradient_surgery.c must be >= 0 for cagrad, got {self.options['c']}")
        if not isinstance(self.options["rescale"], bool):
            raise GradientMethodError(f"gradient_surgery.rescale must be true or false for cagrad (divide the update "
                                      f"by 1 + c²), got {self.options['rescale']!r}")

    def _weights(self, gram: np.ndarray, tasks: np.ndarray) -> np.ndarray:
        c = float(self.options["c"])
        solved = cagrad_solve(gram, c, self.options["rescale"])
        if solved.cut_short:
            self.warn_once("cagrad: SLSQP did not solve for the simplex point x of the conflict-averse update "
                           "(gradient_surgery.c = %.3g): %s; the step used its last iterate (later such steps are "
                           "not reported)", c, solved.message)
        return solved.weights
