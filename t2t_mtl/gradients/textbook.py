"""Textbook implementations on full gradient vectors, as the papers write them (pairwise loops over tasks).

Used only by tests (as the independent oracle of the Gram-space methods) and benchmarks (as the baseline).
Each function takes the per-task gradients `grads` [T, P] and returns the combined update [P]; every inner
product is taken between full vectors at the moment the algorithm needs it.
"""
from __future__ import annotations

import numpy as np
import torch

from .cagrad import NORM_FLOOR, solve_simplex, step_size
from .gradvac import SINE_FLOOR, gradvac_coefficient


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.dot(a, b))


def pcgrad(grads: torch.Tensor, orders: list[list[int]]) -> torch.Tensor:
    """Yu et al. Algorithm 1: project g_i^PC off every conflicting original g_j, j in `orders[i]`; sum."""
    update = torch.zeros_like(grads[0])
    for i in range(grads.shape[0]):
        g_pc = grads[i].clone()
        for j in orders[i]:
            g_j = grads[j]
            dot, norm_sq = _dot(g_pc, g_j), _dot(g_j, g_j)
            if dot < 0 and norm_sq > 0:
                g_pc -= (dot / norm_sq) * g_j
        update += g_pc
    return update


def gradvac(grads: torch.Tensor, orders: list[list[int]], targets: np.ndarray, beta: float,
            segment_offsets: list[int] | None = None) -> torch.Tensor:
    """Wang et al.'s GradVac, per segment of P when `segment_offsets` is given; `targets` [K, T, T] (or
    [T, T] without segments) is updated in place."""
    offsets = segment_offsets if segment_offsets is not None else [0, grads.shape[1]]
    targets_k = targets if segment_offsets is not None else targets[None]
    update = torch.zeros_like(grads[0])
    for k in range(len(offsets) - 1):
        g = grads[:, offsets[k]:offsets[k + 1]]
        for i in range(g.shape[0]):
            g_vac = g[i].clone()
            for j in orders[i]:
                norm_i, norm_j = float(g_vac.norm()), float(g[j].norm())
                if norm_i == 0 or norm_j == 0:
                    continue
                phi = _dot(g_vac, g[j]) / (norm_i * norm_j)
                target = targets_k[k, i, j]
                if phi < target and phi < 0 and 1.0 - phi * phi < SINE_FLOOR ** 2:
                    g_vac.zero_()  # antiparallel: the formula's g_i + ‖g_i‖/‖g_j‖ g_j is the zero vector
                elif phi < target:
                    g_vac += float(gradvac_coefficient(norm_i, phi, target, norm_j)) * g[j]
                targets_k[k, i, j] = (1.0 - beta) * target + beta * phi
            update[offsets[k]:offsets[k + 1]] += g_vac
    return update


def cagrad(grads: torch.Tensor, c: float, rescale: bool) -> torch.Tensor:
    """Liu et al.'s CAGrad: d = g0 + c‖g0‖ g_x/(‖g_x‖ + ε) with x = argmin_simplex g_xᵀg0 + c‖g0‖‖g_x‖ (ε as the
    authors' code, relative to the RMS task-gradient norm; ‖g_x‖ shrunk by its cancellation's rounding, as
    `t2t_mtl.gradients.cagrad.step_size`)."""
    num_tasks = grads.shape[0]
    scale = float(sum(_dot(g, g) for g in grads)) / num_tasks
    g0 = grads.mean(0)
    if scale <= 0:
        return g0
    g = grads / np.sqrt(scale)
    g0n = g0 / np.sqrt(scale)
    s = c * float(g0n.norm())

    def combination(x: np.ndarray) -> torch.Tensor:
        return sum(float(x[k]) * g[k] for k in range(num_tasks))

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        gx = combination(x)
        norm = np.sqrt(_dot(gx, gx) + NORM_FLOOR)
        value = _dot(gx, g0n) + s * norm
        grad = np.array([_dot(g[k], g0n) + s * _dot(g[k], gx) / norm for k in range(num_tasks)])
        return value, grad

    x = solve_simplex(objective, num_tasks).x
    gx = combination(x)
    cancelled = sum(float(x[k]) * float(g[k].norm()) for k in range(num_tasks))
    direction = g0n + step_size(s, float(gx.norm()), cancelled) * gx
    update = direction * np.sqrt(scale)
    return update / (1.0 + c ** 2) if rescale else update


def mgda(grads: torch.Tensor, max_iter: int, tol: float) -> torch.Tensor:
    """Sener & Koltun's min-norm point by pairwise Frank–Wolfe, carrying the combined vector v explicitly."""
    num_tasks = grads.shape[0]
    alpha = [1.0 / num_tasks] * num_tasks
    v = grads.mean(0)
    for _ in range(max_iter):
        dots = [_dot(v, grads[r]) for r in range(num_tasks)]
        t = min(range(num_tasks), key=lambda r: dots[r])
        s = max((r for r in range(num_tasks) if alpha[r] > 0), key=lambda r: dots[r])
        gap = dots[s] - dots[t]
        diff = grads[t] - grads[s]
        denom = _dot(diff, diff)
        if gap <= tol * _dot(v, v) or denom <= 0:
            break
        gamma = min(alpha[s], gap / denom)
        alpha[t] += gamma
        alpha[s] = 0.0 if gamma == alpha[s] else alpha[s] - gamma
        v = v + gamma * diff
    return v


def nashmtl(grads: torch.Tensor, ridge: float, max_iter: int, tol: float) -> torch.Tensor:
    """Navon et al.'s Nash bargaining update Σ α_i g_i with (GᵀG-normalised + ridge) α = 1/α, by Newton steps
    whose products with G are taken through the vectors and whose linear solves use conjugate gradients."""
    num_tasks = grads.shape[0]
    frobenius = np.sqrt(sum(_dot(grads[i], grads[j]) ** 2 for i in range(num_tasks) for j in range(num_tasks)))
    if frobenius <= 0:
        return torch.zeros_like(grads[0])
    g = grads / np.sqrt(frobenius)

    def gram_times(u: np.ndarray) -> np.ndarray:
        combined = sum(float(u[k]) * g[k] for k in range(num_tasks))
        return np.array([_dot(g[i], combined) for i in range(num_tasks)]) + ridge * u

    def objective(a: np.ndarray) -> float:
        return 0.5 * float(a @ gram_times(a)) - float(np.sum(np.log(a)))

    def solve(diag: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        x, r = np.zeros(num_tasks), rhs.copy()
        p, rr = r.copy(), float(rhs @ rhs)
        for _ in range(4 * num_tasks):
            if rr <= 1e-30 * float(rhs @ rhs):
                break
            hp = gram_times(p) + diag * p
            step = rr / float(p @ hp)
            x, r = x + step * p, r - step * hp
            rr_new = float(r @ r)
            p, rr = r + (rr_new / rr) * p, rr_new
        return x

    alpha = 1.0 / np.sqrt(np.array([_dot(g[k], g[k]) for k in range(num_tasks)]) + ridge)
    for _ in range(max_iter):
        g_alpha = gram_times(alpha)
        if np.max(np.abs(alpha * g_alpha - 1.0)) < tol:
            break
        grad = g_alpha - 1.0 / alpha
        step = solve(1.0 / alpha ** 2, -grad)
        size = 1.0
        while np.any(alpha + size * step <= 0):
            size *= 0.5
        f0, slope = objective(alpha), float(grad @ step)
        while objective(alpha + size * step) > f0 + 1e-4 * size * slope and size > 1e-12:
            size *= 0.5
        alpha = alpha + size * step
    return sum(float(alpha[k]) * grads[k] for k in range(num_tasks))
