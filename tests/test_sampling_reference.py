"""Every sampler's probabilities against the formula written out here in plain Python (DESIGN.md "Mixture
sampling"), to 1e-12, edge cases included; and realised frequencies over a save/restore against them."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import chisquare

from t2t_mtl.sampling import build_sampler

SIZE_SETS = [{"a": 1}, {"a": 10, "b": 1000, "c": 100_000}, {"x": 7, "y": 7}, {"a": 1, "b": 2 ** 40}]


def size_rate(n, alpha=1.0, cap=None, scale=1.0, k=None, template_cap=None, dataset_cap=None):
    """seqio: n·scale, clipped at the cap (0/None: none), ** 1/alpha (alpha = inf: 1); T0: k templates, each capped."""
    cap = template_cap if k and template_cap is not None else dataset_cap // k if k and dataset_cap else cap
    rate = min(n * scale, cap) if cap else n * scale
    return (k or 1) * (1.0 if alpha == math.inf else rate ** (1.0 / alpha))


def normalised(rates):
    total = sum(rates)
    return [r / total for r in rates]


def assert_probabilities(sampler, expected):
    got = list(sampler.probabilities().values())
    assert max(abs(g - e) for g, e in zip(got, expected)) <= 1e-12, (got, expected)


@pytest.mark.parametrize("sizes", SIZE_SETS)
@pytest.mark.parametrize("alpha", [0.2, 1.0, 2.0, 3.7, 1e3, 1e12, math.inf])
@pytest.mark.parametrize("cap, scale", [(None, 1.0), (0, 1.0), (5, 1.0), (500, 0.5), (500, 3.0)])
def test_temperature_with_cap_and_scale(sizes, alpha, cap, scale):
    sampler = build_sampler({"strategy": "temperature", "alpha": alpha, "cap": cap, "scale": scale}, sizes, seed=0)
    assert_probabilities(sampler, normalised([size_rate(n, alpha, cap, scale) for n in sizes.values()]))


def test_temperature_tends_to_uniform_and_proportional_is_alpha_1():
    sizes = SIZE_SETS[1]
    far = build_sampler({"strategy": "temperature", "alpha": 1e300}, sizes, seed=0)
    assert_probabilities(far, [1 / 3] * 3)
    proportional = build_sampler({"strategy": "proportional", "cap": 500}, sizes, seed=0)
    assert_probabilities(proportional, normalised([min(n, 500) for n in sizes.values()]))


@pytest.mark.parametrize("template_cap, dataset_cap", [(50, None), (None, 40), (None, 9), (None, 3)])
def test_per_template_caps(template_cap, dataset_cap):
    sizes, templates = SIZE_SETS[1], {"a": 3, "b": 1}
    config = {"strategy": "temperature", "alpha": 2.0, "cap": 700, "templates": templates,
              "template_cap": template_cap, "dataset_cap": dataset_cap}
    expected = [size_rate(n, 2.0, 700, 1.0, templates.get(t), template_cap, dataset_cap) for t, n in sizes.items()]
    assert_probabilities(build_sampler(config, sizes, seed=0), normalised(expected))


@pytest.mark.parametrize("total", [1, 2, 5, 10])
def test_annealed_at_the_first_epoch_the_last_and_past_the_end(total):
    sampler = build_sampler({"strategy": "annealed", "epochs": total, "cap": 5000}, SIZE_SETS[1], seed=0)
    for epoch in [0, 0.5, 0.999, 1, 2.3, total - 1, total - 0.01, total, total + 3, 1e6]:
        sampler.set_epoch(epoch)
        e = min(math.floor(epoch) + 1, total)  # the paper's e = 1..E, held at E past the end
        alpha = 1.0 if total == 1 else 1 / (1 - 0.8 * (e - 1) / (total - 1))
        assert_probabilities(sampler, normalised([size_rate(n, alpha, 5000) for n in SIZE_SETS[1].values()]))


@pytest.mark.parametrize("alpha_0, alpha_max, warmup", [(1, 5, 5), (2, 2, 1), (0.5, 10, 0.3), (1, 5, 1e9)])
def test_dynamic_temperature(alpha_0, alpha_max, warmup):
    config = {"strategy": "dynamic_temperature", "alpha_0": alpha_0, "alpha_max": alpha_max, "warmup_epochs": warmup}
    sampler = build_sampler(config, SIZE_SETS[1], seed=0)
    for epoch in [0, 0.7, 1, 2, 4.5, 5, 6, 100]:
        sampler.set_epoch(epoch)
        alpha = min(alpha_max, math.floor(epoch) * (alpha_max - alpha_0) / warmup + alpha_0)
        assert_probabilities(sampler, normalised([size_rate(n, alpha) for n in SIZE_SETS[1].values()]))


def test_softmax_bandit_q_recursion_over_random_feedback():
    sizes, rng = SIZE_SETS[1], np.random.default_rng(1)
    for tau, step, q0, metric in [(0.1, 0.3, 0.0, "val_score"), (1.0, 1.0, 2.0, "val_loss"), (1e-3, 0.05, -1, "loss")]:
        sampler = build_sampler({"strategy": "bandit_softmax", "tau": tau, "step": step, "initial_q": q0,
                                 "metric": metric}, sizes, seed=0)
        q, last = {t: float(q0) for t in sizes}, {}
        for _ in range(12):
            values = {t: float(rng.normal(0, 2)) for t in sizes if rng.random() < 0.7}
            sampler.update({metric: values})
            for t, v in values.items():
                if t in last:  # reward: the improvement since the task's previous value (negative: worse)
                    q[t] = (1 - step) * q[t] + step * ((v - last[t]) if metric == "val_score" else (last[t] - v))
                last[t] = v
            top = max(q.values())
            assert_probabilities(sampler, normalised([math.exp((q[t] - top) / tau) for t in sizes]))


@pytest.mark.parametrize("tau, floor, metric", [(0, 0, "val_loss"), (0.5, 0.05, "loss"), (3, 0.3, "val_loss")])
def test_worst_task_with_unseen_tasks_a_loss_of_zero_and_ties(tau, floor, metric):
    sizes = SIZE_SETS[1]
    sampler = build_sampler({"strategy": "worst_task", "tau": tau, "floor": floor, "metric": metric}, sizes, seed=0)
    assert_probabilities(sampler, [1 / 3] * 3)
    first, now = {}, {}
    for losses in [{"a": 2.0}, {"b": 4.0, "c": 1.0}, {"a": 1.0}, {"a": 0.0, "b": 4.0}, {"c": 0.5, "b": 2.0},
                   {"a": 3.0, "b": 3.0, "c": 3.0}]:
        sampler.update({metric: losses})
        for t, v in losses.items():
            first.setdefault(t, v)
            now[t] = v
        if len(now) < 3:  # unseen tasks first
            p = [float(t not in now) / (3 - len(now)) for t in sizes]
        else:  # λ_t L_t, λ_t = 1 / (l_t Σ_i 1/l_i)
            score = [now[t] / (first[t] * sum(1 / first[s] for s in sizes)) for t in sizes]
            p = normalised([float(s == max(score)) if tau == 0 else math.exp((s - max(score)) / tau) for s in score])
        assert_probabilities(sampler, [floor + (1 - 3 * floor) * x for x in p])


@pytest.mark.parametrize("alpha, lam, floor, momentum", [(1, 0.5, 0.01, 0.9), (2, 1.0, 0.0, 0.0), (3, 0.0, 0.2, 0.5)])
def test_uncertainty_ema_with_unseen_tasks_and_all_zero_entropies(alpha, lam, floor, momentum):
    sizes = SIZE_SETS[1]
    sampler = build_sampler({"strategy": "uncertainty_ema", "alpha": alpha, "lam": lam, "floor": floor,
                             "momentum": momentum}, sizes, seed=0)
    prior, ema = normalised([size_rate(n, alpha) for n in sizes.values()]), {}
    for entropies in [{}, {"a": 0.3}, {"b": 0.0}, {"a": 0.9, "c": 0.1}, {"a": 0, "b": 0, "c": 0}, {"b": 2.5}]:
        sampler.update({"entropy": entropies})
        for t, v in entropies.items():
            ema[t] = v if t not in ema else momentum * ema[t] + (1 - momentum) * v
        if sum(ema.values()) == 0:  # nothing (or only zeros) seen: the prior
            uncertain = prior
        else:  # an unseen task counts as the mean of the others
            uncertain = normalised([ema.get(t, sum(ema.values()) / len(ema)) for t in sizes])
        assert_probabilities(sampler, [floor + (1 - 3 * floor) * ((1 - lam) * p + lam * u)
                                       for p, u in zip(prior, uncertain)])


@pytest.mark.parametrize("mode, world_size", [("homogeneous", 1), ("mixed", 2)])
@pytest.mark.parametrize("config, expected", [
    ({"strategy": "temperature", "alpha": 2.5}, normalised([n ** 0.4 for n in (10, 1000, 100_000, 3)])),
    ({"strategy": "explicit", "rates": {"a": 1, "b": 0, "c": 2, "d": 0.5}}, [1 / 3.5, 0, 2 / 3.5, 0.5 / 3.5]),
    ({"strategy": "worst_task", "tau": 0.3, "floor": 0.02}, None),
])
def test_draws_over_a_save_and_restore_follow_the_probabilities(mode, world_size, config, expected):
    sizes = {"a": 10, "b": 1000, "c": 100_000, "d": 3}
    make = lambda: build_sampler({**config, "mode": mode, "block_size": 1000}, sizes, seed=5,  # noqa: E731
                                 rank=world_size - 1, world_size=world_size)
    sampler = make()
    sampler.update({"val_loss": {"a": 2.0, "b": 1.0, "c": 3.0, "d": 1.0}})
    sampler.update({"val_loss": {"a": 1.0, "b": 0.9, "c": 2.0, "d": 0.2}})
    if expected is None:  # λ_t L_t = (L_t / l_t) / Σ 1/l: 0.5, 0.9, 2/3, 0.2 over 1/2 + 1 + 1/3 + 1 = 17/6
        score = [x / (17 / 6) for x in (0.5, 0.9, 2 / 3, 0.2)]
        expected = [0.02 + 0.92 * p for p in normalised([math.exp((s - max(score)) / 0.3) for s in score])]
    n = 40_000

    def draw(s, count):
        return [s.next_task() for _ in range(count)] if mode == "homogeneous" else s.sample_tasks(count)
    first = draw(sampler, n // 2 + 123)  # stops inside a block
    restored = make()
    restored.load_state_dict(json.loads(json.dumps(sampler.state_dict())))
    rest = draw(restored, n // 2 - 123)
    assert rest == draw(sampler, n // 2 - 123)  # the uninterrupted sampler draws the same
    counts = np.array([(first + rest).count(t) for t in sizes], dtype=np.float64)
    expected = np.array(expected)
    assert counts[expected == 0].sum() == 0
    seen = expected > 0
    assert chisquare(counts[seen], expected[seen] / expected[seen].sum() * n).pvalue > 1e-4
