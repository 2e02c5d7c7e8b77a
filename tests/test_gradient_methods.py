"""t2t_mtl.gradients: every Gram-space method equals its textbook full-vector version (same random order) to
1e-5 relative; method-specific optimality checks; `GradientSurgery` on a real model's backward."""
from __future__ import annotations

import contextlib
import re
import unittest.mock
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, Optional

import numpy as np
import pytest
import torch

from t2t_kernels.gradproj import combine, gram
from t2t_mtl.gradients import (GradientMethod, GradientMethodError, GradientSurgery, build_method, cagrad_weights,
                               gradvac_weights, mgda_weights, nashmtl_weights, pcgrad_weights, random_orders)
from t2t_mtl.gradients import textbook
from t2t_mtl.gradients.nashmtl import nashmtl_solve

RTOL = 1e-5


def conflicting_grads(num_tasks: int, num_params: int, seed: int) -> torch.Tensor:
    """fp64 task gradients sharing a component, with task 1 pointing against task 0 (PCGrad has work to do)."""
    gen = torch.Generator().manual_seed(seed)
    shared = torch.randn(num_params, generator=gen, dtype=torch.float64)
    g = torch.randn(num_tasks, num_params, generator=gen, dtype=torch.float64) + 0.4 * shared
    g[1] = -0.9 * g[0] + 0.3 * torch.randn(num_params, generator=gen, dtype=torch.float64)
    return g * torch.logspace(-1, 1, num_tasks, dtype=torch.float64)[:, None]  # unequal norms


def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = RTOL) -> None:
    err = float((actual - expected).norm() / expected.norm())
    assert err < rtol, f"relative error {err:.3e} >= {rtol}"


def host_gram(g: torch.Tensor) -> np.ndarray:
    return gram(g).numpy()


CASES = [(2, 50, 0), (3, 300, 1), (5, 400, 2), (8, 1000, 3)]


@pytest.mark.parametrize("num_tasks,num_params,seed", CASES)
def test_pcgrad_gram_space_equals_textbook(num_tasks, num_params, seed):
    g = conflicting_grads(num_tasks, num_params, seed)
    orders = random_orders(np.random.default_rng(seed), num_tasks)
    update = combine(pcgrad_weights(host_gram(g), orders), g)
    assert_rel_close(update, textbook.pcgrad(g, orders))
    assert float((update - g.sum(0)).norm()) > 1e-3 * float(g.sum(0).norm())  # projections happened


def test_pcgrad_order_matters_and_orders_exclude_self():
    orders = random_orders(np.random.default_rng(0), 6)
    assert all(sorted(o) == [j for j in range(6) if j != i] for i, o in enumerate(orders))
    g = conflicting_grads(3, 100, 0)
    g[2] = -0.5 * g[0] - 0.5 * g[1]  # task 0 conflicts with both others
    a = combine(pcgrad_weights(host_gram(g), [[1, 2], [0, 2], [0, 1]]), g)
    b = combine(pcgrad_weights(host_gram(g), [[2, 1], [0, 2], [0, 1]]), g)
    assert_rel_close(a, textbook.pcgrad(g, [[1, 2], [0, 2], [0, 1]]))
    assert_rel_close(b, textbook.pcgrad(g, [[2, 1], [0, 2], [0, 1]]))
    assert float((a - b).norm()) > 1e-6 * float(a.norm())


def test_pcgrad_two_tasks_closed_form():
    g = conflicting_grads(2, 64, 5)
    g0, g1 = g
    d = float(g0 @ g1)
    assert d < 0
    expected = (g0 - d / float(g1 @ g1) * g1) + (g1 - d / float(g0 @ g0) * g0)
    assert_rel_close(combine(build_method("pcgrad", 2).weights(host_gram(g)), g), expected)


def test_pcgrad_state_round_trip_reproduces_orders():
    method = build_method({"method": "pcgrad", "seed": 3}, 5)
    G = host_gram(conflicting_grads(5, 100, 0))
    method.weights(G)
    state = method.state_dict()
    expected = method.weights(G)
    orders = method.last_orders
    fresh = build_method({"method": "pcgrad", "seed": 99}, 5)
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(fresh.weights(G), expected)
    assert fresh.last_orders == orders



@pytest.mark.parametrize("name", ["pcgrad", "gradvac"])
def test_the_seed_option_chooses_the_orders(name):
    G = host_gram(conflicting_grads(5, 100, 0))

    def orders(seed: int) -> list[list[list[int]]]:
        method = build_method({"method": name, "seed": seed}, 5)
        steps = []
        for _ in range(3):
            method.weights(G)
            steps.append(method.last_orders)
        return steps

    assert orders(7) == orders(7)
    assert orders(7) != orders(8)


@pytest.mark.parametrize("num_tasks,num_params,seed", CASES)
def test_gradvac_gram_space_equals_textbook_over_steps(num_tasks, num_params, seed):
    beta = 0.3
    targets_gram, targets_text = np.zeros((num_tasks, num_tasks)), np.zeros((num_tasks, num_tasks))
    rng = np.random.default_rng(seed)
    for step in range(3):
        g = conflicting_grads(num_tasks, num_params, seed + 10 * step)
        orders = random_orders(rng, num_tasks)
        update = combine(gradvac_weights(host_gram(g), orders, targets_gram, beta), g)
        assert_rel_close(update, textbook.gradvac(g, orders, targets_text, beta))
        np.testing.assert_allclose(targets_gram, targets_text, rtol=1e-9, atol=1e-12)
    assert np.any(targets_gram != 0)


def test_gradvac_leaves_gradients_equal_to_rounding_as_they_are():
    # was: once the EMA target of two tasks whose gradients agree to rounding reached 1.0, a cosine one ulp below it
    # met the 1e-8 floor of √(1−φ̂²) against a rounding-level √(1−φ²) ~ 2e-8: an O(1) coefficient, weights up to 4.2
    rng = np.random.default_rng(0)
    method = build_method({"method": "gradvac", "beta": 0.5}, 2)
    base = rng.standard_normal(1000)
    for _ in range(100):
        g = np.stack([base, base + 1e-9 * float(np.linalg.norm(base)) / 30 * rng.standard_normal(1000)])
        np.testing.assert_allclose(method.weights(g @ g.T), 1.0, atol=1e-6)
    assert method.targets[0, 0, 1] >= 1.0  # the target did saturate (rounding may put it one ulp above)


def test_gradvac_per_layer_equals_textbook_and_keeps_state():
    num_tasks, offsets = 4, [0, 100, 160, 400]
    method = build_method({"method": "gradvac", "per_layer": True, "beta": 0.5, "seed": 1}, num_tasks)
    targets_text = np.zeros((3, num_tasks, num_tasks))
    for step in range(3):
        g = conflicting_grads(num_tasks, 400, step)
        weights = method.weights(gram(g, offsets).numpy())
        assert weights.shape == (3, num_tasks)
        update = combine(weights, g, segment_offsets=offsets)
        assert_rel_close(update, textbook.gradvac(g, method.last_orders, targets_text, 0.5, offsets))
    np.testing.assert_allclose(method.targets, targets_text, rtol=1e-9, atol=1e-12)
    restored = build_method({"method": "gradvac", "per_layer": True, "beta": 0.5}, num_tasks)
    restored.load_state_dict(method.state_dict())
    G = gram(conflicting_grads(num_tasks, 400, 7), offsets).numpy()
    np.testing.assert_array_equal(restored.weights(G), method.weights(G))



@pytest.mark.parametrize("textbook_version", [False, True])
def test_gradvac_two_tasks_by_hand(textbook_version):
    """The paper's formula worked by hand (the textbook version shares `gradvac_coefficient`, so comparing the two
    cannot check it): g_0 = (1, 0), g_1 = (0, 2), φ_01 = φ_10 = 0 below the targets φ̂ = 0.5, so
    C_01 = ‖g_0‖(φ̂·1 − 0)/(‖g_1‖ √(1−φ̂²)) = 1/(2√3) and C_10 = 2/√3; the targets then move to (1−β)·0.5."""
    g = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    targets = np.array([[0.0, 0.5], [0.5, 0.0]])
    root3 = np.sqrt(3.0)
    if textbook_version:
        update = textbook.gradvac(g, [[1], [0]], targets, 0.25)
    else:
        update = combine(gradvac_weights(host_gram(g), [[1], [0]], targets, 0.25), g)
    # g_0' + g_1' = (1, 1/√3) + (2/√3, 2)
    torch.testing.assert_close(update, torch.tensor([1 + 2 / root3, 2 + 1 / root3], dtype=torch.float64))
    np.testing.assert_allclose(targets, [[0.0, 0.375], [0.375, 0.0]], rtol=1e-12)


@pytest.mark.parametrize("textbook_version", [False, True])
def test_gradvac_vaccinating_against_an_antiparallel_gradient_leaves_the_zero_vector(textbook_version):
    """was: the floored sine √(1−φ²) (1e-6 for φ = −1) left g_0' = g_0 + C_01 g_1 a 6e-7 residual along −g_0, whose
    cosine −0.6 with g_2 moved φ̂_02 (and Gram-space cosines of such residuals are rounding). By hand: g_0 = (1, 0),
    g_1 = −2 g_0, g_2 = (0.6, 0.8), all targets 0.5, β = 0.5. Rows 0 and 1 meet φ = −1: the formula's g_i + ‖g_i‖/‖g_j‖
    g_j is 0, so C_0 = C_1 = 0 and their second pairs are skipped (φ̂_02 = φ̂_12 = 0.5 stay). Row 2: φ_20 = 0.6 is
    above its target; φ_21 = −0.6 gives C_21 = ‖g_2‖(0.5·0.8 + 0.6·√3/2)/(‖g_1‖ √3/2) = 0.3 + 0.4/√3."""
    g = torch.tensor([[1.0, 0.0], [-2.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    targets = np.full((3, 3), 0.5)
    orders = [[1, 2], [0, 2], [0, 1]]
    c21 = 0.3 + 0.4 / np.sqrt(3.0)
    if textbook_version:
        update = textbook.gradvac(g, orders, targets, 0.5)
    else:
        weights = gradvac_weights(host_gram(g), orders, targets, 0.5)
        np.testing.assert_allclose(weights, [0.0, c21, 1.0], rtol=1e-12, atol=1e-15)
        update = combine(weights, g)
    torch.testing.assert_close(update, g[2] + c21 * g[1], rtol=1e-12, atol=1e-15)
    assert float(update @ g[1]) / float(update.norm() * g[1].norm()) == pytest.approx(0.5, abs=1e-12)
    expected = [[0.5, 0.25 - 0.5, 0.5], [0.25 - 0.5, 0.5, 0.5], [0.25 + 0.3, 0.25 - 0.3, 0.5]]
    np.testing.assert_allclose(targets, expected, rtol=1e-12)


@pytest.mark.parametrize("seed", range(8))
def test_gradvac_gram_space_equals_textbook_with_antiparallel_and_parallel_gradients(seed):
    """was: after an exact cancellation (g_1 = −a g_0) the Gram-space norm and cosines of the residual g_i' were
    rounding, so targets drifted from the textbook's (some past 1), and later steps' weights reached 2e3 (err ~80)."""
    rng = np.random.default_rng(seed)
    num_tasks = 5
    g = torch.from_numpy(rng.standard_normal((num_tasks, 64)))
    g[1] = -rng.uniform(0.01, 3) * g[0]
    g[3] = rng.uniform(0.01, 3) * g[0]
    g[4] = g[2]
    targets_gram = rng.uniform(-1, 1, (num_tasks, num_tasks))
    targets_text = targets_gram.copy()
    for _ in range(3):
        orders = random_orders(rng, num_tasks)
        beta = float(rng.choice([0.01, 0.5, 1.0]))
        update = combine(gradvac_weights(host_gram(g), orders, targets_gram, beta), g)
        assert_rel_close(update, textbook.gradvac(g, orders, targets_text, beta))
        np.testing.assert_allclose(targets_gram, targets_text, rtol=1e-9, atol=1e-12)
        assert np.abs(targets_gram).max() <= 1.0 + 1e-15


@pytest.mark.parametrize("seed", range(4))
def test_gradvac_moves_each_cosine_onto_its_target(seed):
    """What the coefficient is for (Wang et al. eq. 4): after g_i' = g_i + C_ij g_j the cosine of g_i' and g_j is the
    target φ̂_ij, whatever the norms and signs."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((2, 20)) * np.array([[0.3], [5.0]])
    phi = g[0] @ g[1] / np.linalg.norm(g[0]) / np.linalg.norm(g[1])
    goal = np.clip(phi + rng.uniform(0.1, 0.8), -0.95, 0.95)  # above φ: GradVac acts
    assert goal > phi
    targets = np.full((2, 2), goal)
    weights = gradvac_weights(g @ g.T, [[1], [0]], targets, 0.1)  # w_0 = 1 + C_10, w_1 = 1 + C_01
    for i, j in ((0, 1), (1, 0)):
        moved = g[i] + (weights[i ^ 1] - 1.0) * g[j]
        assert moved @ g[j] / np.linalg.norm(moved) / np.linalg.norm(g[j]) == pytest.approx(goal, abs=1e-9)


@pytest.mark.parametrize("num_tasks,num_params,seed", CASES)
@pytest.mark.parametrize("c", [0.0, 0.4, 0.9])
def test_cagrad_gram_space_equals_textbook(num_tasks, num_params, seed, c):
    g = conflicting_grads(num_tasks, num_params, seed)
    update = combine(cagrad_weights(host_gram(g), c, True), g)
    assert_rel_close(update, textbook.cagrad(g, c, True))
    if c == 0.0:
        assert_rel_close(update, g.mean(0))



def _cagrad_by_line_searches(g: np.ndarray, c: float) -> np.ndarray:
    """CAGrad's update (Liu et al.; ÷ (1 + c²), ε = 1e-4 RMS task-gradient norms as the authors' code) with x found by
    nested bounded Brent searches over the simplex of T ≤ 3 tasks, not by SLSQP (which both versions share): F is
    convex, so its minimum over x_1 is convex in x_0."""
    from scipy.optimize import minimize_scalar

    g0 = g.mean(0)
    s = c * np.linalg.norm(g0)

    def value(x: np.ndarray) -> float:
        return float((x @ g) @ g0 + s * np.linalg.norm(x @ g))

    def line(f, high):
        return minimize_scalar(f, bounds=(0.0, high), method="bounded", options={"xatol": 1e-10})

    if len(g) == 2:
        u = line(lambda u: value(np.array([u, 1 - u])), 1.0).x
        x = np.array([u, 1 - u])
    else:
        inner = lambda u: line(lambda v: value(np.array([u, v, 1 - u - v])), 1 - u)  # noqa: E731
        u = line(lambda u: inner(u).fun, 1.0).x
        v = inner(u).x
        x = np.array([u, v, 1 - u - v])
    g_x = x @ g
    eps = 1e-4 * np.sqrt(np.mean(np.sum(g * g, axis=1)))
    return (g0 + s * g_x / (np.linalg.norm(g_x) + eps)) / (1 + c ** 2)


@pytest.mark.parametrize("grads", [conflicting_grads(2, 50, 0), conflicting_grads(3, 300, 1),
                                   conflicting_grads(3, 40, 5), torch.tensor([[1.0, 0.0], [-0.5, 1.0]])])
@pytest.mark.parametrize("c", [0.4, 0.9])
def test_cagrad_solves_its_simplex_problem(grads, c):
    """Both versions against an independent solve of x = argmin_simplex g_xᵀg0 + c‖g0‖‖g_x‖ (on the simplex's
    boundary for the conflicting gradients: x_2 = 0)."""
    g = grads.double()
    expected = torch.from_numpy(_cagrad_by_line_searches(g.numpy(), c))
    assert_rel_close(combine(cagrad_weights(host_gram(g), c, True), g), expected, rtol=1e-4)
    assert_rel_close(textbook.cagrad(g, c, True), expected, rtol=1e-4)


def test_cagrad_keeps_its_bound_when_zero_lies_in_the_convex_hull():
    # g, -g and a third task: the optimum x puts g_x at 0, where the step s/‖g_x‖ had no bound (weights ~5e8),
    # and a float32 combine turned the cancellation into an update far outside ‖d - g0‖ <= c‖g0‖
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(3, 2000, generator=gen, dtype=torch.float64)
    g[1] = -g[0]
    g[2] -= (g[2] @ g[0]) / (g[0] @ g[0]) * g[0]  # orthogonal to the others: F(x) >= 0 = F at g_x = 0
    c = 0.4
    weights = cagrad_weights(host_gram(g.float().double()), c, False)
    assert np.abs(weights).max() < 1 / 3 + 1e5
    g0 = g.mean(0)
    for precision in (torch.float64, torch.float32):
        update = combine(weights, g.to(precision)).double()
        assert float((update - g0).norm()) <= c * float(g0.norm()) * (1 + 1e-3), precision
    assert_rel_close(combine(weights, g), textbook.cagrad(g, c, False))


@pytest.mark.parametrize("c", [0.4, 5.0])
@pytest.mark.parametrize("rescale", [False, True])
def test_cagrad_at_the_kink_steps_along_the_mean_gradient(c, rescale):
    """0 in the hull with F(x) = g_xᵀg0 + c‖g0‖‖g_x‖ >= 0 = F at g_x = 0: g_0 = (1, 0, 0), g_1 = −g_0, g_2 = (0, 1, 0)
    give F(x) = x_2/3 + c‖g0‖‖(x_0 − x_1, x_2)‖, least at x = (½, ½, 0). There d = g0 + c‖g0‖ g_x/(‖g_x‖ + ε) is
    g0 = (0, ⅓, 0) (÷ (1 + c²)), weights 1/3 each. was: SLSQP stopped ~1e-9 short of g_x = 0 and the step scaled that
    rounding direction by c‖g0‖/ε (weights ~1e4, d off by up to 1e-4 c‖g0‖, the two versions apart by as much)."""
    g = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    g = g @ torch.from_numpy(np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))[0])  # generic rounding
    divisor = 1 + c ** 2 if rescale else 1.0
    weights = cagrad_weights(host_gram(g), c, rescale)
    np.testing.assert_allclose(weights, np.full(3, 1 / 3 / divisor), rtol=1e-12)
    expected = g[2] / 3 / divisor
    assert_rel_close(combine(weights, g), expected, rtol=1e-12)
    assert_rel_close(textbook.cagrad(g, c, rescale), expected, rtol=1e-12)


@pytest.mark.parametrize("seed", range(12))
def test_cagrad_gram_space_equals_textbook_when_zero_lies_in_the_convex_hull(seed):
    """was: up to 4e-4 apart (a third of such draws above 1e-6): at the kink each version's SLSQP stopped at its own
    rounding-level g_x, which the step scaled by c‖g0‖/ε."""
    rng = np.random.default_rng(seed)
    num_tasks = 2 + seed % 4
    g = rng.standard_normal((num_tasks, 50))
    if seed % 3 == 0:
        g[1] = -rng.uniform(0.1, 3) * g[0]
    elif seed % 3 == 1:
        g[-1] = -(rng.uniform(0.1, 1, num_tasks - 1) @ g[:-1])
    else:
        g[1] = -g[0]
        g[2:] -= np.outer(g[2:] @ g[0], g[0]) / (g[0] @ g[0])
    g = torch.from_numpy(g * np.exp(rng.uniform(-2, 2, (num_tasks, 1))))
    c = 5.0 if seed % 2 else 0.9
    assert_rel_close(combine(cagrad_weights(host_gram(g), c, True), g), textbook.cagrad(g, c, True))


@pytest.mark.parametrize("num_tasks,num_params,seed", CASES)
def test_mgda_gram_space_equals_textbook_and_is_min_norm(num_tasks, num_params, seed):
    g = conflicting_grads(num_tasks, num_params, seed)
    G = host_gram(g)
    alpha = mgda_weights(G, 1000, 1e-10)
    update = combine(alpha, g)
    assert_rel_close(update, textbook.mgda(g, 1000, 1e-10), rtol=1e-5)
    assert abs(alpha.sum() - 1) < 1e-12 and np.all(alpha >= 0)
    # optimality: no vertex is more opposed to the min-norm point than the point itself
    v_dot_g = g @ update
    assert float(v_dot_g.min()) >= float(update @ update) * (1 - 1e-3)


def _min_norm_by_enumeration(G: np.ndarray) -> float:
    """The exact min of αᵀGα on the simplex: the best feasible affine minimiser over every support."""
    import itertools

    best = np.inf
    for size in range(1, len(G) + 1):
        for support in map(list, itertools.combinations(range(len(G)), size)):
            kkt = np.block([[G[np.ix_(support, support)], np.ones((size, 1))], [np.ones((1, size)), np.zeros((1, 1))]])
            y = np.linalg.lstsq(kkt, np.r_[np.zeros(size), 1.0], rcond=None)[0][:size]
            if np.all(y >= -1e-12):
                alpha = np.zeros(len(G))
                alpha[support] = np.clip(y, 0, None) / np.clip(y, 0, None).sum()
                best = min(best, float(alpha @ G @ alpha))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_mgda_is_the_exact_min_norm_point_for_nearly_dependent_gradients_of_unequal_norms(seed):
    """was: pairwise Frank–Wolfe stopped at max_iter = 1000 with up to 100x the minimum norm when the task
    gradients were nearly dependent (a near Pareto-stationary point) and their norms differed."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((8, 3)) @ rng.standard_normal((3, 500)) + 0.05 * rng.standard_normal((8, 500))
    g *= np.logspace(0, 3, 8)[:, None]
    if seed % 2:
        g[1] = -2.0 * g[0]  # 0 in the hull: the min norm is 0
    G = g @ g.T
    alpha = build_method("mgda", 8).weights(G)
    assert abs(alpha.sum() - 1) < 1e-12 and np.all(alpha >= 0)
    assert float(alpha @ G @ alpha) - _min_norm_by_enumeration(G) <= 1e-12 * float(np.max(np.diag(G)))
    np.testing.assert_allclose(build_method("mgda", 8).weights(G * 1e-60), alpha, atol=1e-12)  # scale-free



def test_mgda_is_the_exact_min_norm_point_of_nearly_collinear_gradients_in_two_dimensions():
    """Four gradients of unequal norms in a plane, nearly (anti)parallel, where the min norm is tiny against the
    largest gradient: Wolfe's stopping test must be relative to v·v (an absolute gap left up to 2.5e-11 of the
    largest squared norm) and must stop once the Frank–Wolfe vertex is already in the support (a vertex added twice
    to the support made the minor cycle loop forever)."""
    for seed in range(100):
        rng = np.random.default_rng(seed)
        g = rng.standard_normal((4, 2)) * rng.uniform(0.1, 10, size=(4, 1))
        g[1:] = g[0] * rng.uniform(-1, 1, (3, 1)) + 1e-3 * rng.standard_normal((3, 2))
        G = g @ g.T
        alpha = mgda_weights(G, 1000, 1e-10)
        assert abs(alpha.sum() - 1) < 1e-12 and np.all(alpha >= 0), seed
        assert float(alpha @ G @ alpha) - _min_norm_by_enumeration(G) <= 1e-12 * float(np.max(np.diag(G))), seed


@pytest.mark.parametrize("g0,g1", [([1.0, 0.0], [0.995, 0.5]),  # nearly parallel: v·v − v·g_1 is only 0.005 v·v
                                   ([1.0, 0.0], [-0.5, 2.0]), ([3.0, 1.0], [-1.0, 0.5]),
                                   ([1.0, 0.0], [2.0, 1.0])])  # the clip: the smaller gradient alone
def test_mgda_two_tasks_closed_form(g0, g1):
    """Sener & Koltun's two-task solution: γ = clip((g_1 − g_0)·g_1 / ‖g_0 − g_1‖², 0, 1), α = (γ, 1 − γ)."""
    g = torch.tensor([g0, g1], dtype=torch.float64)
    diff = g[1] - g[0]
    gamma = min(max(float(diff @ g[1]) / float(diff @ diff), 0.0), 1.0)
    np.testing.assert_allclose(build_method("mgda", 2).weights(host_gram(g)), [gamma, 1 - gamma], atol=1e-12)
    expected = gamma * g[0] + (1 - gamma) * g[1]
    torch.testing.assert_close(textbook.mgda(g, 1000, 1e-10), expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("num_tasks,num_params,seed", CASES)
def test_nashmtl_gram_space_equals_textbook_and_solves_bargaining(num_tasks, num_params, seed):
    g = conflicting_grads(num_tasks, num_params, seed)
    G = host_gram(g)
    alpha = nashmtl_weights(G, 0.0, 100, 1e-12)
    assert_rel_close(combine(alpha, g), textbook.nashmtl(g, 0.0, 100, 1e-12))
    np.testing.assert_allclose(alpha * (G / np.linalg.norm(G) @ alpha), 1.0, rtol=1e-8)


@pytest.mark.parametrize("scale", [1e-300, 1e-200, 1e160, 1e300])
def test_nashmtl_weights_do_not_depend_on_the_gradients_scale(scale):
    """G is normalised by ‖G‖_F, so α(s·G) = α(G) for any s > 0 whose s·G float64 holds. was: ‖G‖_F squared the
    entries, which underflowed to 0 below ~1e-154 (all weights 0: a zero update) or overflowed above ~1e154 (‖G‖_F
    = inf, the normalised G zero, every α = 1/√ridge ~ 1e3)."""
    G = host_gram(conflicting_grads(3, 40, 0))
    np.testing.assert_allclose(build_method("nashmtl", 3).weights(G * scale), build_method("nashmtl", 3).weights(G),
                               rtol=1e-10)


def test_nashmtl_without_ridge_on_dependent_gradients_names_the_option():
    """Opposite gradients: G α = 1/α has no solution without the ridge; the error says to set it, not numpy's
    LinAlgError; the default ridge solves it."""
    opposite = np.array([[1.0, -1.0], [-1.0, 1.0]])
    with pytest.raises(GradientMethodError, match=r"no solution .* gradient_surgery.ridge = 0.0; set ridge > 0"):
        build_method({"method": "nashmtl", "ridge": 0.0}, 2).weights(opposite)
    assert np.all(np.isfinite(build_method("nashmtl", 2).weights(opposite)))


def test_nashmtl_warns_once_when_max_iter_ends_its_solve_above_tol(caplog):
    # was: the last Newton iterate was returned silently when max_iter steps had not brought the residual below tol
    G = host_gram(conflicting_grads(3, 10, 0))
    method = build_method({"method": "nashmtl", "max_iter": 1}, 3)
    normalised = G / np.linalg.norm(G) + 1e-6 * np.eye(3)
    with caplog.at_level("WARNING", logger="t2t_mtl.gradients.nashmtl"):
        first = method.weights(G)
        np.testing.assert_array_equal(method.weights(G), first)
    residual = float(np.max(np.abs(first * (normalised @ first) - 1.0)))
    assert residual >= 1e-12
    np.testing.assert_array_equal(first, nashmtl_weights(G, 1e-6, 1, 1e-12))  # the weights are unchanged
    assert len(caplog.records) == 1  # once, not at every step
    message = caplog.records[0].getMessage()
    assert "1 Newton steps (gradient_surgery.max_iter)" in message and "gradient_surgery.tol = 1e-12" in message
    assert f"max_i |α_i (Gα)_i − 1| at {residual:.3g}" in message
    caplog.clear()
    opposite = np.outer([1.0, -0.5], [1.0, -0.5])  # ridge-conditioned: float64's limit lies above tol
    with caplog.at_level("WARNING", logger="t2t_mtl.gradients.nashmtl"):
        alpha = build_method("nashmtl", 2).weights(opposite)
    # the defaults end at float64's limit, just above tol, where full steps stop shrinking λ: not max_iter's doing
    normalised = opposite / np.linalg.norm(opposite) + 1e-6 * np.eye(2)
    assert 1e-12 <= float(np.max(np.abs(alpha * (normalised @ alpha) - 1.0))) < 1e-10
    np.testing.assert_array_equal(alpha, nashmtl_weights(opposite, 1e-6, 1000, 1e-12))
    assert not caplog.records


@pytest.mark.parametrize("seed", [84, 264, 285])
def test_nashmtl_solves_to_float64s_limit_near_the_solution(seed):
    # was: Armijo backtracking could not see f's decrease (~λ², below f's float64 resolution) near the solution,
    # shrank the step until α stopped changing and took that for float64's limit: residuals up to 7e-6, no warning
    rng = np.random.default_rng(seed)
    num_tasks = int(rng.integers(2, 9))
    g = rng.standard_normal((num_tasks, 32)) * np.exp(rng.uniform(-3, 3, (num_tasks, 1)))
    g[1] = g[0] * rng.uniform(-2, 2)  # two collinear tasks: the ridge alone keeps G α = 1/α solvable
    G = g @ g.T
    alpha = nashmtl_weights(G, 1e-6, 100, 1e-12)
    normalised = G / np.linalg.norm(G) + 1e-6 * np.eye(num_tasks)
    assert float(np.max(np.abs(alpha * (normalised @ alpha) - 1.0))) < 1e-9


def _nash_normalised(G: np.ndarray, ridge: float = 1e-6) -> np.ndarray:
    return G / np.linalg.norm(G) + ridge * np.eye(G.shape[0])


def _nash_newton(gram_n: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, float]:
    """The Newton step of f(α) = ½ αᵀGα − Σ log α_i at α and its decrement λ = √(∇fᵀ H⁻¹ ∇f)."""
    grad = gram_n @ alpha - 1.0 / alpha
    step = -np.linalg.solve(gram_n + np.diag(1.0 / alpha ** 2), grad)
    return step, float(np.sqrt(max(-float(grad @ step), 0.0)))


# nearly orthogonal gradients (256 parameters) of unequal norms: the start 1/√diag(G) has λ < 1/4
WELL_CONDITIONED = [(2, 0), (3, 1), (5, 0), (8, 1)]


@pytest.mark.parametrize("num_tasks,seed", WELL_CONDITIONED)
def test_nashmtl_converges_quadratically_within_its_iteration_budget(num_tasks, seed):
    """f is self-concordant (a convex quadratic plus −Σ log α_i), so a full Newton step from λ < 1 leaves
    λ⁺ ≤ (λ / (1 − λ))² (Nesterov; Boyd & Vandenberghe §9.6.4). From λ < 1/4 that bounds λ by 0.111, 0.0156,
    2.5e-4, 6.2e-8, 3.9e-15 after 1..5 steps, and the residual max_i |α_i ∇f_i| ≤ ‖diag(α) ∇f‖ ≤
    √(1 + λ_max(diag(α) G diag(α))) λ (as H ⪯ (1 + λ_max) diag(α)⁻²), so 5 of the 100 default steps reach the
    default tol 1e-12. was: a step halved near the solution (λ⁺ ≈ λ / 2) passed, needing ~40 steps instead."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((num_tasks, 256)) * rng.uniform(0.5, 2.0, (num_tasks, 1))
    G = g @ g.T
    gram_n = _nash_normalised(G)
    decrements = [_nash_newton(gram_n, 1.0 / np.sqrt(np.diag(gram_n)))[1]]
    assert decrements[0] < 0.25  # the case's premise: the quadratic region from the start
    for steps in range(1, 6):
        decrements.append(_nash_newton(gram_n, nashmtl_solve(G, 1e-6, steps, 1e-300).alpha)[1])
        bound = (decrements[-2] / (1 - decrements[-2])) ** 2
        assert decrements[-1] <= bound + 1e-15, (steps, decrements)
    solved = nashmtl_solve(G, 1e-6, 5, 1e-12)
    scaled = np.diag(solved.alpha) @ gram_n @ np.diag(solved.alpha)
    assert solved.residual <= np.sqrt(1 + np.linalg.eigvalsh(scaled)[-1]) * (decrements[-1] + 1e-15)
    assert solved.residual < 1e-12 and not solved.cut_short
    np.testing.assert_allclose(solved.alpha * (gram_n @ solved.alpha), 1.0, rtol=1e-12)


@pytest.mark.parametrize("num_tasks,num_params,seed", CASES)
def test_nashmtl_damped_step_is_the_full_newton_step_where_armijo_accepts_it(num_tasks, num_params, seed):
    """Far from the solution (λ ≥ 1/4) backtracking starts from the full step (Boyd & Vandenberghe Algorithm
    9.2, t = 1) and keeps it where it stays in α > 0 and decreases f by Armijo's 1e-4 t ∇fᵀΔ: the first step of
    these conflicting gradients is then the Newton step itself. was: a backtracking started from t = 1/2 passed."""
    G = host_gram(conflicting_grads(num_tasks, num_params, seed))
    gram_n = _nash_normalised(G, 0.0)
    start = 1.0 / np.sqrt(np.diag(gram_n))
    step, decrement = _nash_newton(gram_n, start)
    grad = gram_n @ start - 1.0 / start

    def objective(alpha: np.ndarray) -> float:
        return 0.5 * float(alpha @ gram_n @ alpha) - float(np.sum(np.log(alpha)))

    assert decrement >= 0.25 and np.all(start + step > 0)  # the case's premise: a damped step, Armijo holds
    assert objective(start + step) <= objective(start) + 1e-4 * float(grad @ step)
    np.testing.assert_allclose(nashmtl_solve(G, 0.0, 1, 1e-12).alpha, start + step, rtol=1e-12)


@contextlib.contextmanager
def _slsqp_ending(status: Optional[int], message: Optional[str]) -> Iterator[list[int]]:
    """scipy's minimize as CAGrad calls it, reporting SLSQP's exit as `status` / `message` (its point unchanged;
    None: as SLSQP ended); yields the statuses SLSQP itself ended with."""
    from scipy.optimize import minimize
    statuses: list[int] = []

    def patched(*args: Any, **kwargs: Any) -> Any:
        result = minimize(*args, **kwargs)
        statuses.append(int(result.status))
        if status is not None:
            result.status, result.success, result.message = status, status == 0, message
        return result
    with unittest.mock.patch("t2t_mtl.gradients.cagrad.minimize", patched):
        yield statuses


def test_cagrad_warns_once_when_slsqp_ends_unsuccessfully(caplog):
    # was: SLSQP's success flag was ignored, its last iterate used silently
    G = host_gram(conflicting_grads(3, 10, 0))
    expected = cagrad_weights(G, 0.4, True)
    method = build_method("cagrad", 3)
    with _slsqp_ending(9, "Iteration limit reached"), caplog.at_level("WARNING", logger="t2t_mtl.gradients.cagrad"):
        np.testing.assert_array_equal(method.weights(G), expected)  # the weights are unchanged
        np.testing.assert_array_equal(method.weights(G), expected)
    assert len(caplog.records) == 1  # once, not at every step
    message = caplog.records[0].getMessage()
    assert "(gradient_surgery.c = 0.4): Iteration limit reached; the step used its last iterate" in message


def test_cagrad_does_not_warn_at_float64s_limit(caplog):
    """SLSQP's "no decrease in the line search" exit, and its iteration limit at the kink ‖g_x‖ = 0 (0 in the hull
    of exactly dependent gradients, c = 5), end where float64 lets it: not reported."""
    G = host_gram(conflicting_grads(3, 10, 0))
    rng = np.random.default_rng(5)
    g = rng.normal(size=(3, 8))
    g[0] = -1.5 * (0.3 * g[1] + 0.7 * g[2])
    with caplog.at_level("WARNING", logger="t2t_mtl.gradients.cagrad"):
        with _slsqp_ending(8, "Positive directional derivative for linesearch"):
            build_method("cagrad", 3).weights(G)
        # (scipy < 1.17's SLSQP ended this solve at its own iteration limit; 1.17's converges: the exit is given)
        with _slsqp_ending(9, "Iteration limit reached") as statuses:
            build_method({"method": "cagrad", "c": 5.0}, 3).weights(g @ g.T)
    assert len(statuses) == 1
    assert not caplog.records


def test_mgda_warns_once_when_max_iter_ends_its_solve_above_tol(caplog):
    # was: Wolfe's algorithm stopped at max_iter silently, above its tolerance
    G = host_gram(conflicting_grads(4, 10, 0))
    method = build_method({"method": "mgda", "max_iter": 1}, 4)
    with caplog.at_level("WARNING", logger="t2t_mtl.gradients.mgda"):
        first = method.weights(G)
        np.testing.assert_array_equal(method.weights(G), first)
    np.testing.assert_array_equal(first, mgda_weights(G, 1, 1e-10))  # the weights are unchanged
    v = first @ (G / np.max(np.diag(G)))
    gap = (v @ first - v.min()) / (v @ first)
    assert gap > 1e-10
    assert len(caplog.records) == 1  # once, not at every step
    message = caplog.records[0].getMessage()
    assert "mgda: 1 major steps (gradient_surgery.max_iter)" in message and "gradient_surgery.tol = 1e-10" in message
    assert f"(v·v − min_r v·g_r) / v·v at {gap:.3g}" in message


def test_mgda_does_not_warn_at_float64s_limit(caplog):
    """0 in the hull (g_1 = −2 g_0): v·v reaches 0 to rounding, where the relative gap is rounding over rounding and
    the default 1000 steps end without the stopping test holding (α cycles): float64's limit, not reported."""
    g = np.random.default_rng(24).normal(size=(5, 8)) * np.exp(2 * np.random.default_rng(24).normal(size=(5, 1)))
    g[1] = -2 * g[0]
    G = g @ g.T
    with caplog.at_level("WARNING", logger="t2t_mtl.gradients.mgda"):
        alpha = build_method("mgda", 5).weights(G)
    np.testing.assert_array_equal(alpha, mgda_weights(G, 1000, 1e-10))
    v = alpha @ (G / np.max(np.diag(G)))
    assert not v @ alpha - v.min() <= 1e-10 * (v @ alpha)  # the stopping test still fails
    assert not caplog.records


def test_sum_and_mean():
    G = host_gram(conflicting_grads(3, 10, 0))
    np.testing.assert_array_equal(build_method("sum", 3).weights(G), [1, 1, 1])
    np.testing.assert_allclose(build_method("mean", 3).weights(G), [1 / 3] * 3)


@pytest.mark.parametrize("cfg,match", [
    ({"method": "pcgard"}, "did you mean 'pcgrad'"),
    ({"method": ["pcgrad"]}, r"gradient_surgery.method: unknown method \['pcgrad'\]"),  # was "unhashable type"
    ({"method": "cagrad", "alpha": 0.5}, "gradient_surgery.alpha: unknown option"),
    ({}, "needs a `method` key"),
    # was: only "needs a `method` key", not naming the misspelt key the method was given under
    ({"methd": "pcgrad", "seed": 0}, r"needs a `method` key .*; is gradient_surgery.methd meant to be it\?"),
    ({"method": "gradvac", "beta": 0}, "beta must be in"),
    ({"method": "nashmtl", "max_iter": 0}, r"gradient_surgery.max_iter must be >= 1 for nashmtl, got 0"),
    ({"method": "nashmtl", "tol": 0}, r"gradient_surgery.tol must be > 0 for nashmtl, got 0"),
    ({"method": "mgda", "tol": 0}, r"gradient_surgery.tol must be > 0 for mgda, got 0"),
    ({"method": "nashmtl", "ridge": -1}, r"gradient_surgery.ridge must be >= 0 for nashmtl, got -1"),
    # were read as true (the authors' code's rescale 2, dividing by 1 + c, silently divided by 1 + c²)
    ({"method": "cagrad", "rescale": 2}, r"gradient_surgery.rescale must be true or false for cagrad .* got 2"),
    ({"method": "cagrad", "rescale": "false"}, r"gradient_surgery.rescale must be true or false .* got 'false'"),
])
def test_config_errors_are_clear(cfg, match):
    with pytest.raises(GradientMethodError, match=match):
        build_method(cfg, 3)


@pytest.mark.parametrize("cfg,match", [
    ({"method": "cagrad", "c": "abc"}, r"gradient_surgery.c must be a number for method 'cagrad', got 'abc'"),
    ({"method": "pcgrad", "seed": None}, r"gradient_surgery.seed must be a number .* got None"),
    ({"method": "mgda", "max_iter": 2.5}, r"gradient_surgery.max_iter must be an integer .* got 2.5"),
    # were accepted and made every weight NaN
    ({"method": "cagrad", "c": float("inf")}, r"gradient_surgery.c must be a finite number for method 'cagrad'"),
    ({"method": "nashmtl", "ridge": "nan"}, r"gradient_surgery.ridge must be a finite number .* got 'nan'"),
    # were numpy's bare "expected non-negative integer"
    ({"method": "pcgrad", "seed": -1}, r"gradient_surgery.seed must be an integer >= 0 for method 'pcgrad', got -1"),
    ({"method": "gradvac", "seed": -2}, r"gradient_surgery.seed must be an integer >= 0 for method 'gradvac'"),
])
def test_option_values_of_the_wrong_type_name_the_option(cfg, match):
    with pytest.raises(GradientMethodError, match=match):
        build_method(cfg, 3)


def test_yaml_exponent_strings_are_numbers():
    """PyYAML reads `max_iter: 1e3` and `tol: 1e-8` as strings: they are the numbers they spell."""
    import yaml

    cfg = yaml.safe_load("method: mgda\nmax_iter: 1e3\ntol: 1e-8")
    assert build_method(cfg, 3).options == {"max_iter": 1000, "tol": 1e-8}
    assert build_method({"method": "pcgrad", "seed": 2 ** 64 + 1}, 3).options["seed"] == 2 ** 64 + 1


def test_nonfinite_gram_is_refused():
    with pytest.raises(GradientMethodError, match="NaN/inf"):
        build_method("pcgrad", 2).weights(np.array([[1.0, np.nan], [np.nan, 1.0]]))


@pytest.mark.parametrize("poison", [float("nan"), float("inf"), 1e30])
@pytest.mark.parametrize("cfg", [{"method": "pcgrad"}, {"method": "gradvac", "per_layer": "tensor"}])
def test_a_nonfinite_gram_names_the_tasks_whose_gradients_gave_it(poison, cfg):
    """was: "the Gram matrix has NaN/inf entries", naming no task. Task 'b' gets a NaN, an inf or a float32 gradient
    whose squared norm (1e60) overflows the float32 Gram; 'a' and 'c' are fine and must not be named."""
    params = [("w1", torch.zeros(3)), ("w2", torch.zeros(2))]
    surgery = GradientSurgery(cfg, params, ["a", "b", "c"])
    for task, row in (("a", [1.0, 2.0, 0.0, 1.0, 0.0]), ("b", [1.0, poison, 0.0, 0.0, 1.0]),
                      ("c", [0.0, 1.0, 1.0, 0.0, 2.0])):
        surgery.row(task).copy_(torch.tensor(row))
    with pytest.raises(GradientMethodError, match=r"\(" + cfg["method"] + r"\): the gradients of tasks \['b'\] are"):
        surgery.weights()


class TwoHeads(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Linear(6, 8)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.body(x)))


def _task_losses(model: TwoHeads, tasks: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    dtype = model.body.weight.dtype
    x = torch.randn(tasks, 5, 6, generator=gen, dtype=torch.float64).to(dtype)
    y = torch.randn(tasks, 5, 3, generator=gen, dtype=torch.float64).to(dtype)
    return [((model(x[t]) - (-1) ** t * y[t]) ** 2).mean() for t in range(tasks)]


def test_surgery_backward_fills_buffer_in_place_and_combines_like_textbook():
    torch.manual_seed(0)
    model = TwoHeads().double()
    tasks = ["nli", "qa", "sum"]
    surgery = GradientSurgery({"method": "pcgrad", "seed": 4}, model.named_parameters(), tasks)
    buffer_ptr = surgery.buffer.data_ptr()
    expected_rows = []
    for t in range(3):
        with surgery.accumulate(tasks[t]):
            for _ in range(2):  # two micro-batches of the same task accumulate
                _task_losses(model, 3)[t].backward()
        grads = torch.autograd.grad(_task_losses(model, 3)[t], list(model.parameters()))
        expected_rows.append(2 * torch.cat([x.flatten() for x in grads]))
        assert all(p.grad is None for p in model.parameters())
    assert surgery.buffer.data_ptr() == buffer_ptr
    g = torch.stack(expected_rows)
    torch.testing.assert_close(surgery.buffer, g, rtol=1e-12, atol=1e-12)

    surgery.weights()
    orders = surgery.method.last_orders
    flat = torch.empty(surgery.num_params, dtype=torch.float64)
    surgery.combine_into(flat)
    assert_rel_close(flat, textbook.pcgrad(g, orders))

    stats = surgery.stats()
    norms = g.norm(dim=1)
    np.testing.assert_allclose(stats["grad_norms"], norms.numpy(), rtol=1e-10)
    np.testing.assert_allclose(np.array(stats["grad_cosine"]), ((g @ g.T) / torch.outer(norms, norms)).numpy(),
                               rtol=1e-10, atol=1e-12)
    surgery.combine_into_grads(scale=0.5)
    torch.testing.assert_close(torch.cat([p.grad.flatten() for p in model.parameters()]), 0.5 * flat)


@pytest.mark.parametrize("cfg", [{"method": "pcgrad", "seed": 3}, {"method": "gradvac", "per_layer": True},
                                 {"method": "mgda"}])
def test_rows_are_slots_a_step_with_fewer_tasks_equals_the_full_gram(cfg):
    """Steps holding 3 of 6 tasks, arriving out of order, in a buffer of 3 rows (max_tasks_per_step): the Gram
    and combine over those rows, placed into the 6×6 Gram, equal the method run by hand on the full [6, P]
    gradient matrix with zero rows for the absent tasks — weights, combined gradient and method state."""
    model = TwoHeads().double()
    tasks = [f"t{i}" for i in range(6)]
    losses = _task_losses(model, 6)
    grads = torch.stack([torch.cat([g.flatten() for g in torch.autograd.grad(
        losses[t], list(model.parameters()), retain_graph=True)]) for t in range(6)])
    slots = GradientSurgery(cfg, model.named_parameters(), tasks, max_tasks_per_step=3,
                            segment_of=lambda name: name.split(".")[0])
    assert slots.buffer.shape[0] == 3
    reference = build_method(cfg, 6)
    bounds = slots.segment_offsets if reference.segmented else [0, slots.num_params]
    for present in ([4, 1, 5], [5, 0, 2], [3]):  # zero_() frees the rows; the method state carries over
        for t in present:
            slots.row(tasks[t]).copy_(grads[t])
        full = torch.zeros_like(grads)
        full[present] = grads[present]
        grams = np.stack([(full[:, lo:hi] @ full[:, lo:hi].T).numpy() for lo, hi in zip(bounds, bounds[1:])])
        weights = reference.weights(grams if reference.segmented else grams[0])
        rows = np.atleast_2d(weights)
        expected = torch.cat([torch.from_numpy(rows[k]) @ full[:, lo:hi] for k, (lo, hi) in
                              enumerate(zip(bounds, bounds[1:]))])
        assert slots.active == present
        np.testing.assert_allclose(slots.weights(), weights, rtol=1e-9, atol=1e-12)
        assert_rel_close(slots.combine_into(), expected, rtol=1e-9)
        norms = slots.stats()["grad_norms"]  # a task the step did not hold has no norm (it was 0.0: no gradient)
        assert [norm is None for norm in norms] == [t not in present for t in range(6)]
        np.testing.assert_allclose([norms[t] for t in present], full[present].norm(dim=1).numpy(), rtol=1e-10)
        slots.zero_()
    got, want = slots.method.state_dict(), reference.state_dict()
    assert got.keys() == want.keys()
    for key in got:
        if isinstance(want[key], np.ndarray):
            np.testing.assert_allclose(got[key], want[key], rtol=1e-9, atol=1e-15)
        else:
            assert got[key] == want[key], key
    with pytest.raises(GradientMethodError, match=r"'t0' is the 4th task of this step, but the buffer has 3 rows"):
        for t in (4, 1, 5, 0):
            slots.row(tasks[t])


def test_surgery_per_layer_segments_and_checkpoint_state():
    model = TwoHeads().double()
    tasks = ["a", "b"]
    cfg = {"method": "gradvac", "per_layer": True, "beta": 0.5}
    surgery = GradientSurgery(cfg, model.named_parameters(), tasks, segment_of=lambda name: name.split(".")[0])
    assert surgery.segment_offsets == [0, 56, surgery.num_params]
    for t in range(2):
        with surgery.accumulate(t):
            _task_losses(model, 2)[t].backward()
    weights = surgery.weights()
    assert weights.shape == (2, 2)
    targets = np.zeros((2, 2, 2))
    expected = textbook.gradvac(surgery.buffer.clone(), surgery.method.last_orders, targets, 0.5,
                                surgery.segment_offsets)
    assert_rel_close(surgery.combine_into(), expected)
    other = GradientSurgery(cfg, model.named_parameters(), tasks, segment_of=lambda name: name.split(".")[0])
    other.load_state_dict(surgery.state_dict())
    np.testing.assert_allclose(surgery.method.targets, targets, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(other.method.targets, surgery.method.targets)
    with pytest.raises(GradientMethodError, match="over tasks"):
        GradientSurgery(cfg, model.named_parameters(), ["a", "c"]).load_state_dict(surgery.state_dict())
    with pytest.raises(KeyError, match="not one of the gradient-surgery tasks"):
        surgery.row("zzz")
    # without segment_of: one segment per module (layer), or per tensor with per_layer "tensor"
    modules = [name.rsplit(".", 1)[0] for name, _ in model.named_parameters()]
    by_layer = GradientSurgery(cfg, model.named_parameters(), tasks)
    assert len(by_layer.segment_offsets) - 1 == len(dict.fromkeys(modules)) < len(modules)
    by_tensor = GradientSurgery({**cfg, "per_layer": "tensor"}, model.named_parameters(), tasks)
    assert by_tensor.segment_offsets == by_tensor.param_offsets


def test_an_fp64_buffer_gives_an_fp64_gram_with_or_without_tasks():
    # 1 + 2^-30 is 1.0 in fp32: a Gram accumulated or stored in fp32 would lose the 2^-29 of its square
    x = 1 + 2 ** -30
    surgery = GradientSurgery("sum", [torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))], ["a", "b"])
    assert surgery.gram().dtype == torch.float64 and surgery.gram().shape == (0, 0)
    surgery.row("b").copy_(torch.tensor([x, 1.0], dtype=torch.float64))
    gram_b = surgery.gram()
    assert gram_b.dtype == torch.float64 and gram_b.tolist() == [[x * x + 1.0]]


def test_the_gram_the_methods_read_is_exactly_symmetric_and_follows_a_row_written_after_it():
    """The Gram the methods and the stats read equals the rows' Gram and is symmetric bit for bit (the kernels'
    G[i, j] and G[j, i] may differ in their last bits, on the CPU too), so each logged cosine reads the same both
    ways; a row handed out after a Gram was made drops it, so the next Gram sees the row's new values."""
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(3, 100_003, generator=gen, dtype=torch.float64)
    surgery = GradientSurgery("mean", [torch.nn.Parameter(torch.zeros(rows.shape[1], dtype=torch.float64))],
                              ["a", "b", "c"])
    for task, row in zip("abc", rows):
        surgery.row(task).copy_(row)
    reference = (rows @ rows.T).numpy()
    whole = surgery.whole_gram()
    np.testing.assert_allclose(whole, reference, rtol=1e-12, atol=1e-9)
    assert np.array_equal(whole, whole.T)
    cosine = surgery.stats()["grad_cosine"]
    assert all(cosine[i][j] == cosine[j][i] for i in range(3) for j in range(3))
    surgery.row("b").mul_(-2.0)
    reference[1] *= -2.0
    reference[:, 1] *= -2.0
    np.testing.assert_allclose(surgery.whole_gram(), reference, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("cfg", [{"method": "mgda"}, {"method": "nashmtl"}, {"method": "cagrad"}, {"method": "mean"},
                                 {"method": "pcgrad", "seed": 2}, {"method": "gradvac", "beta": 0.5, "seed": 2}])
def test_task_absent_from_the_step_gets_zero_weight_and_others_are_unaffected(cfg):
    g = conflicting_grads(4, 300, 9)
    with_absent = g.clone()
    with_absent[2] = 0.0  # task 2 had no micro-batch this step
    full = build_method(cfg, 4)
    sub = build_method(cfg, 3)
    weights = full.weights(host_gram(with_absent))
    assert weights[2] == 0.0 and np.all(np.isfinite(weights))
    present = g[[0, 1, 3]]
    assert_rel_close(combine(weights, with_absent), combine(sub.weights(host_gram(present)), present))
    if cfg["method"] == "gradvac":
        assert np.all(full.targets[0][2] == 0) and np.all(full.targets[0][:, 2] == 0)
        np.testing.assert_allclose(full.targets[0][np.ix_([0, 1, 3], [0, 1, 3])], sub.targets[0], rtol=1e-12)
    if cfg["method"] in ("pcgrad", "gradvac"):  # the orders name tasks (were: positions among the present ones)
        ids = [0, 1, 3]
        assert full.last_orders[2] == []
        assert [full.last_orders[i] for i in ids] == [[ids[j] for j in order] for order in sub.last_orders]
        expected = (textbook.pcgrad(with_absent, full.last_orders) if cfg["method"] == "pcgrad" else
                    textbook.gradvac(with_absent, full.last_orders, np.zeros((4, 4)), cfg["beta"]))
        assert_rel_close(combine(weights, with_absent), expected)


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph")
def test_accumulate_handles_out_of_place_accumulation_and_restores_grads():
    model = TwoHeads().double()
    surgery = GradientSurgery("sum", model.named_parameters(), ["a", "b"])
    previous = [torch.full_like(p, 7.0) for p in model.parameters()]
    for p, g in zip(model.parameters(), previous):
        p.grad = g
    with surgery.accumulate("b"):
        for _ in range(2):  # create_graph=True makes autograd accumulate out of place
            _task_losses(model, 2)[1].backward(create_graph=True)
    expected = 2 * torch.cat([x.flatten() for x in torch.autograd.grad(_task_losses(model, 2)[1],
                                                                          list(model.parameters()))])
    torch.testing.assert_close(surgery.row("b"), expected, rtol=1e-12, atol=1e-12)
    assert torch.count_nonzero(surgery.row("a")) == 0
    assert all(p.grad is g for p, g in zip(model.parameters(), previous))


class _FakeEngine:
    """What the step hook reads from a DeepSpeed engine: `.module`, the ZeRO stage and the precision."""

    def __init__(self, module: torch.nn.Module, stage: int, precision: str = "fp32", optimizer: Any = None) -> None:
        self.module, self.stage, self.precision, self.optimizer = module, stage, precision, optimizer

    def zero_optimization_stage(self) -> int:
        return self.stage

    def bfloat16_enabled(self) -> bool:
        return self.precision == "bf16"

    def fp16_enabled(self) -> bool:
        return self.precision == "fp16"


def test_step_hook_one_process_hands_back_the_combined_gradient():
    from t2t_mtl.gradients import build_step_hook

    model = TwoHeads()
    tasks = ["a", "b", "c"]
    engine = _FakeEngine(model, 0)
    hook = build_step_hook({"method": "pcgrad", "seed": 5}, engine, tasks)
    hook.begin_step(engine)
    rows = []
    for t, task in enumerate(tasks):
        loss = _task_losses(model, 3)[t]
        before = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
        loss.backward()  # stage 0: the gradients accumulate in .grad, as under engine.backward
        rows.append(torch.cat([(p.grad - b).flatten() for p, b in zip(model.parameters(), before)]))
        hook.after_backward(engine, task)
    hook.before_optimizer_step(engine)
    g = torch.stack(rows).double()
    expected = textbook.pcgrad(g, hook.surgery.method.last_orders)
    got = torch.cat([p.grad.flatten() for p in model.parameters()]).double()
    assert_rel_close(got, expected, rtol=1e-5)
    assert hook.stats()["tasks"] == tasks and len(hook.stats()["grad_cosine"]) == 3
    hook.remove()


@pytest.mark.parametrize("per_layer, segments", [(True, ["body", "head"]),
                                                 ("tensor", ["body.weight", "body.bias", "head.weight", "head.bias"])])
def test_a_per_layer_methods_logged_weights_name_their_layers(per_layer, segments):
    # was: weights [K][T] without a word of which row weighs which layer
    from t2t_mtl.gradients import build_step_hook
    from t2t_mtl.gradients.surgery import GradientSurgery

    model = TwoHeads()
    engine = _FakeEngine(model, 0)
    method = {"method": "gradvac", "per_layer": per_layer}
    hook = build_step_hook(method, engine, ["a", "b"])
    direct = GradientSurgery(method, model.named_parameters(), ["a", "b"])
    for surgery in (hook, direct):
        if surgery is hook:
            hook.begin_step(engine)
        for t, task in enumerate(["a", "b"]):
            model.zero_grad()
            _task_losses(model, 2)[t].backward()
            if surgery is hook:
                hook.after_backward(engine, task)
            else:
                direct.row(task).copy_(torch.cat([p.grad.flatten() for p in model.parameters()]))
        if surgery is hook:
            hook.before_optimizer_step(engine)
        else:
            direct.weights()
        stats = surgery.stats()
        assert stats["segments"] == segments and len(stats["weights"]) == len(segments)
    hook.remove()
    assert "segments" not in GradientSurgery({"method": "gradvac"}, model.named_parameters(), ["a", "b"]).stats()


def test_segments_are_named_in_buffer_order_and_names_that_do_not_fit_their_offsets_are_refused():
    # a key met again after another (weights and biases taken apart) starts a segment of its own, named again
    from t2t_mtl.gradients.surgery import GradientSurgery

    model = TwoHeads()
    kinds = GradientSurgery({"method": "gradvac", "per_layer": True}, model.named_parameters(), ["a", "b"],
                            segment_of=lambda name: name.rpartition(".")[2])
    assert kinds.segment_offsets == [0, 48, 56, 80, 83]
    assert kinds.stats()["segments"] == ["weight", "bias", "weight", "bias"]
    flat = [torch.zeros(83)]
    named = GradientSurgery({"method": "gradvac", "per_layer": True}, flat, ["a", "b"], segment_offsets=[0, 56, 83],
                            segment_names=["body", "head"])
    assert named.stats()["segments"] == ["body", "head"]
    with pytest.raises(GradientMethodError, match="^segment_names must name the 2 segments of segment_offsets, got 3 "
                                                  "names$"):
        GradientSurgery({"method": "gradvac", "per_layer": True}, flat, ["a", "b"], segment_offsets=[0, 56, 83],
                        segment_names=["body", "head", "extra"])


def test_step_hook_adds_up_a_tasks_micro_batches_and_starts_each_step_from_zero():
    """With more micro-batches than tasks a step holds several micro-batches of one task: their gradients add up in
    the task's row, and every step's rows hold that step's gradients alone. With method `sum` the gradient handed
    back is the sum of the step's micro-batch gradients, and each task's logged norm is that of its own
    micro-batches' sum (autograd, one loss at a time)."""
    from t2t_mtl.gradients import build_step_hook

    torch.manual_seed(0)
    model = TwoHeads().double()
    engine = _FakeEngine(model, 0)
    hook = build_step_hook({"method": "sum"}, engine, ["a", "b"])

    def gradient(i: int) -> torch.Tensor:
        loss = _task_losses(model, 5)[i]
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(model.parameters()))])

    for step in ([("a", 0), ("a", 1), ("b", 2)], [("a", 3), ("b", 4), ("b", 0)]):
        for p in model.parameters():
            p.grad = None  # DeepSpeed's step clears the gradients
        hook.begin_step(engine)
        for task, i in step:
            _task_losses(model, 5)[i].backward()
            hook.after_backward(engine, task)
        hook.before_optimizer_step(engine)
        expected = {task: sum(gradient(i) for t, i in step if t == task) for task in ("a", "b")}
        assert_rel_close(torch.cat([p.grad.flatten() for p in model.parameters()]).double(),
                         expected["a"] + expected["b"])
        np.testing.assert_allclose(hook.stats()["grad_norms"], [float(expected[t].norm()) for t in ("a", "b")],
                                   rtol=1e-5)
    hook.remove()


@pytest.mark.parametrize("optimizer", [SimpleNamespace(cur_scale=1024.0),  # ZeRO 1-3
                                       SimpleNamespace(loss_scale_config=SimpleNamespace(cur_scale=1024.0))])
def test_step_hook_logs_the_gradient_norms_without_the_fp16_loss_scale(optimizer):
    """Under fp16 DeepSpeed's backward multiplies the loss by its loss scale: the logged per-task norms are the
    true ones, equal to an fp32 step's (were: 1024× too large); cosines and weights do not depend on the scale."""
    from t2t_mtl.gradients import build_step_hook

    stats = {}
    for precision, scale in (("fp32", 1.0), ("fp16", 1024.0)):
        torch.manual_seed(0)
        model = TwoHeads().double()
        engine = _FakeEngine(model, 1, precision, optimizer)
        hook = build_step_hook({"method": "pcgrad", "seed": 5}, engine, ["a", "b"])
        hook.begin_step(engine)
        for t, task in enumerate(["a", "b"]):
            (scale * _task_losses(model, 2)[t]).backward()
            hook.after_backward(engine, task)
        with unittest.mock.patch("deepspeed.utils.safe_set_full_grad"):
            hook.before_optimizer_step(engine)
        stats[precision] = hook.stats()
        hook.remove()
    torch.manual_seed(0)
    model = TwoHeads().double()
    expected = [torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(model.parameters()))]).norm()
                for loss in _task_losses(model, 2)]
    np.testing.assert_allclose(stats["fp32"]["grad_norms"], expected, rtol=1e-6)  # (the rows are fp32)
    np.testing.assert_allclose(stats["fp16"]["grad_norms"], stats["fp32"]["grad_norms"], rtol=1e-12)
    np.testing.assert_allclose(np.array(stats["fp16"]["grad_cosine"], dtype=float),
                               np.array(stats["fp32"]["grad_cosine"], dtype=float), rtol=1e-12)
    np.testing.assert_allclose(stats["fp16"]["weights"], stats["fp32"]["weights"], rtol=1e-12)


@pytest.mark.parametrize("precision, stage", [("fp16", 0), ("bf16", 0), ("fp32", 0), ("fp32", 1)])
def test_step_hook_leaves_an_overflowed_step_to_deepspeed(precision, stage):
    """A task gradient that overflowed (fp16 loss scaling: finite loss, inf gradient) must not crash the step:
    DeepSpeed's own gradients stay, so its overflow check skips the step (ZeRO checks at every precision, its
    bf16 and fp16 optimizers at stage 0 too), and the step logs no stats (not the last good step's).
    Without that check (fp32, stage 0) the method's clear error stands."""
    from t2t_mtl.gradients import build_step_hook

    model = TwoHeads()
    engine = _FakeEngine(model, stage, precision, SimpleNamespace(cur_scale=1.0))
    hook = build_step_hook({"method": "pcgrad"}, engine, ["a", "b"])
    hook.begin_step(engine)  # a good step first: its stats must not stand for the overflowed one
    for t, task in enumerate(["a", "b"]):
        _task_losses(model, 2)[t].backward()
        hook.after_backward(engine, task)
    with unittest.mock.patch("deepspeed.utils.safe_set_full_grad"):
        hook.before_optimizer_step(engine)
    assert hook.stats() is not None
    model.zero_grad(set_to_none=True)
    hook.begin_step(engine)
    for t, task in enumerate(["a", "b"]):
        loss = _task_losses(model, 2)[t]
        loss.backward(torch.tensor(float("inf") if t == 1 else 1.0))
        hook.after_backward(engine, task)
    before = [p.grad.clone() for p in model.parameters()]
    if (precision, stage) == ("fp32", 0):
        with pytest.raises(GradientMethodError, match="NaN/inf"):
            hook.before_optimizer_step(engine)
    else:
        hook.before_optimizer_step(engine)
        for p, b in zip(model.parameters(), before):  # DeepSpeed's gradient, untouched
            torch.testing.assert_close(p.grad, b, rtol=0, atol=0, equal_nan=True)
        assert hook.stats() is None
    hook.remove()


def test_step_hook_keeps_a_row_per_micro_batch_of_the_step_not_per_task():
    # the engine's gradient accumulation (2 micro-batches) caps the distinct tasks of a step: 2 rows for 3 tasks
    from t2t_mtl.gradients import build_step_hook

    model = TwoHeads()
    engine = _FakeEngine(model, 0)
    engine.gradient_accumulation_steps = lambda: 2
    hook = build_step_hook({"method": "sum"}, engine, ["a", "b", "c"])
    assert hook.surgery.buffer.shape[0] == 2
    hook.remove()


@pytest.mark.parametrize("name,layer", [
    ("encoder.block.3.layer.0.SelfAttention.q.weight", "encoder.block.3"),
    ("decoder.block.11.layer.2.DenseReluDense.experts.4.wi.weight", "decoder.block.11"),
    ("shared.weight", "shared"),
    ("encoder.final_layer_norm.weight", "encoder.final_layer_norm"),
    ("transformer.h.0.attn.c_attn.weight", "transformer.h.0"),
])
def test_layer_key_names_the_transformer_layer(name, layer):
    from t2t_mtl.gradients.gradvac import layer_key

    assert layer_key(name) == layer


@pytest.mark.parametrize("per_layer", [True, "layer", "tensor"])
def test_step_hook_segments_gradvac_per_transformer_layer_or_tensor(per_layer):
    from transformers import T5Config, T5ForConditionalGeneration

    from t2t_mtl.gradients import build_step_hook

    model = T5ForConditionalGeneration(T5Config(vocab_size=32, d_model=8, d_kv=4, d_ff=16, num_layers=2,
                                                num_decoder_layers=1, num_heads=2, decoder_start_token_id=0))
    hook = build_step_hook({"method": "gradvac", "per_layer": per_layer}, _FakeEngine(model, 0), ["a", "b"])
    named = [(n, p.numel()) for n, p in model.named_parameters()]
    if per_layer == "tensor":
        expected_groups = [n for n, _ in named]
    else:  # T5: a block's parameters are `<stack>.block.<i>.…`; everything else is its own module
        expected_groups = []
        for n, _ in named:
            parts = n.split(".")
            group = ".".join(parts[:3]) if len(parts) > 2 and parts[1] == "block" else ".".join(parts[:-1])
            if not expected_groups or expected_groups[-1] != group:
                expected_groups.append(group)
        assert expected_groups == ["shared", "encoder.block.0", "encoder.block.1", "encoder.final_layer_norm",
                                   "decoder.block.0", "decoder.final_layer_norm"]
    offsets = hook.surgery.segment_offsets
    assert len(offsets) == len(expected_groups) + 1 and offsets[-1] == sum(size for _, size in named)
    hook.remove()


def test_gradvac_per_layer_value_is_checked():
    with pytest.raises(GradientMethodError, match="per_layer must be one of"):
        build_method({"method": "gradvac", "per_layer": "block"}, 3)


@pytest.mark.parametrize("build,match", [
    # were raw TypeErrors from dict() / `<`, or accepted (num_tasks 2.5)
    (lambda: build_method(None, 3), r"gradient_surgery must be a mapping .* got None"),
    (lambda: build_method(["pcgrad"], 3), r"gradient_surgery must be a mapping .* got \['pcgrad'\]"),
    (lambda: build_method("pcgrad", "3"), r"needs num_tasks, an integer >= 1, got '3'"),
    (lambda: build_method("pcgrad", 2.5), r"needs num_tasks, an integer >= 1, got 2.5"),
    # was split into one task per letter
    (lambda: GradientSurgery("pcgrad", [torch.nn.Parameter(torch.ones(2))], "ab"),
     r"task_names must be a list of task names, got the string 'ab'"),
])
def test_arguments_of_the_wrong_type_are_named(build, match):
    with pytest.raises(GradientMethodError, match=match):
        build()


def test_repr_names_the_method_and_its_options():
    # was the default `<t2t_mtl.gradients.pcgrad.PCGrad object at 0x...>`
    assert repr(build_method({"method": "pcgrad", "seed": 3}, 2)) == "PCGrad(num_tasks=2, seed=3)"
    assert repr(build_method("sum", 4)) == "SumMethod(num_tasks=4)"
    assert repr(build_method({"method": "gradvac", "beta": 0.5}, 3)).startswith("GradVac(num_tasks=3, ")


def test_gradvac_on_a_float32_gram_of_nearly_parallel_tasks_keeps_the_float64_weights():
    # was: the sine floor (1e-6) was sized for float64 cosines; a float32 Gram (fp32/bf16/fp16 gradients) holds two
    # nearly parallel tasks' cosine (≈ 1 − 1e-6) only to ~1e-6, its targets reached 1 and weights ~2e3
    size, steps = 100_000, 60
    base = torch.randn(size, generator=torch.Generator().manual_seed(0))
    weights = {}
    for dtype in (torch.float32, torch.float64):
        surgery = GradientSurgery({"method": "gradvac", "beta": 0.5, "seed": 0},
                                  [torch.nn.Parameter(torch.zeros(size, dtype=dtype))], ["a", "b"])
        weights[dtype] = []
        for step in range(steps):
            gen = torch.Generator().manual_seed(step + 1)
            surgery.zero_()
            for task in ("a", "b"):
                surgery.row(task).copy_(base + 1e-3 * torch.randn(size, generator=gen))
            weights[dtype].append(surgery.weights())
    assert np.abs(np.array(weights[torch.float64]) - 1.0).max() < 0.01  # the float64 reference: ~1
    np.testing.assert_allclose(weights[torch.float32], weights[torch.float64], atol=0.01)


@pytest.mark.parametrize("cfg,match", [
    ({"method": "cagrad", "c": True}, r"gradient_surgery.c must be a number for method 'cagrad', got True"),
    ({"method": "gradvac", "beta": True}, r"gradient_surgery.beta must be a number for method 'gradvac', got True"),
    ({"method": "pcgrad", "seed": True}, r"gradient_surgery.seed must be a number for method 'pcgrad', got True"),
    ({"method": "mgda", "tol": False}, r"gradient_surgery.tol must be a number for method 'mgda', got False"),
])
def test_a_yes_or_no_is_refused_where_an_option_takes_a_number(cfg, match):
    # were read as 1 and 0 (YAML's `c: yes` ran cagrad at c = 1.0, `seed: true` seeded 1), unlike weighting's and
    # sampling's numbers, which refuse them
    with pytest.raises(GradientMethodError, match=match):
        build_method(cfg, 3)


def test_logged_cosines_of_parallel_gradients_stay_within_one():
    # were up to 1.00000055 (a float32 Gram's G_ab / (‖a‖‖b‖) for b = 3.7 a), logged to the record, TensorBoard and W&B
    # as a cosine no two vectors have
    worst = 0.0
    for seed in range(10):
        g = torch.randn(100_003, generator=torch.Generator().manual_seed(seed))
        surgery = GradientSurgery("sum", [("w", torch.zeros(100_003))], ["a", "b", "c"])
        for task, factor in (("a", 1.0), ("b", 3.7), ("c", -0.3)):
            surgery.row(task).copy_(g * factor)
        cosine = np.array(surgery.stats()["grad_cosine"], dtype=np.float64)
        worst = max(worst, float(np.abs(cosine).max()))
        assert cosine == pytest.approx(np.array([[1, 1, -1], [1, 1, -1], [-1, -1, 1]]), abs=1e-5)
    assert worst <= 1.0



@pytest.mark.parametrize("returned, shown", [
    (lambda k: np.ones(k + 1), "shape [4]"), (lambda k: np.full(k, np.nan), "[nan, nan, nan]"),
    (lambda k: ["x"] * k, "['x', 'x', 'x']")])
def test_a_method_whose_weights_are_not_one_finite_number_per_task_is_refused_naming_it(returned, shown):
    # were used as given: 4 weights for 3 tasks silently, NaN weights a NaN update (numpy's bare broadcast error where
    # a task was absent from the step)
    class Odd(GradientMethod):
        name = "odd_weights"

        def _weights(self, gram, tasks):
            return returned(len(tasks))

    for absent in ([], [3]):
        gram = np.eye(3 + len(absent))
        gram[absent, absent] = 0.0
        with pytest.raises(GradientMethodError, match=rf"gradient method 'odd_weights': _weights returned "
                                                      rf"{re.escape(shown)} for the 3 tasks present in the step; it "
                                                      rf"must return one finite weight per present task, shape \[3\]"):
            Odd(len(gram)).weights(gram)


@pytest.mark.parametrize("method", ["pcgrad", "gradvac"])
def test_a_gradient_surgery_state_saved_with_another_seed_is_refused_naming_it(method):
    # was: loaded, so a resume with another gradient_surgery.seed went on with the saved task orders: the new seed
    # silently unused (a resume with another training.seed is refused as well)
    model = TwoHeads().double()
    saved = GradientSurgery({"method": method, "seed": 3}, model.named_parameters(), ["a", "b"]).state_dict()
    with pytest.raises(GradientMethodError) as refused:
        GradientSurgery({"method": method, "seed": 4}, model.named_parameters(), ["a", "b"]).load_state_dict(saved)
    assert str(refused.value) == (f"the gradient-surgery state was saved with gradient_surgery.seed 3, this run has "
                                  f"4: resume with the same seed (the saved {method} state goes on with its "
                                  f"sequence of task orders)")
    GradientSurgery({"method": method, "seed": 3}, model.named_parameters(), ["a", "b"]).load_state_dict(saved)
    del saved["seed"]  # (states before 2026-12-08 lack it)
    GradientSurgery({"method": method, "seed": 4}, model.named_parameters(), ["a", "b"]).load_state_dict(saved)


@pytest.mark.parametrize("per_layer", [0, 1, 1.0, 0.0])
def test_gradvac_per_layer_refuses_a_number_for_true_or_false(per_layer):
    # was: 0 and 1 (== False and True in Python) passed the choices check and trained as false / true, where the
    # project refuses numbers for switches elsewhere (cagrad's rescale)
    with pytest.raises(GradientMethodError) as refused:
        build_method({"method": "gradvac", "per_layer": per_layer}, 2)
    assert str(refused.value) == (f"gradient_surgery.per_layer must be one of [False, True, 'layer', 'tensor'] for "
                                  f"gradvac, got {per_layer!r}")
    assert build_method({"method": "gradvac", "per_layer": bool(per_layer)}, 2).segmented is bool(per_layer)


def test_a_segmented_method_returning_one_row_of_weights_is_refused_naming_the_shape_it_must_return():
    # kills 2 mutants of GradientMethod._returned the tests let live: only the last axis of the shape checked (a
    # segmented method's one row [3] taken for its [2, 3], broadcast to every segment where a task was absent), and
    # the message showing the weights instead of the shape they have
    class OneRow(GradientMethod):
        name = "one_row"

        @property
        def segmented(self):
            return True

        def _weights(self, gram, tasks):
            return np.ones(len(tasks))

    for absent in ([], [3]):
        gram = np.stack([np.eye(3 + len(absent))] * 2)
        gram[:, absent, absent] = 0.0
        with pytest.raises(GradientMethodError, match=r"^gradient method 'one_row': _weights returned shape \[3\] for "
                                                      r"the 3 tasks present in the step; it must return one finite "
                                                      r"weight per present task, shape \[2, 3\]$"):
            OneRow(len(gram[0])).weights(gram)
