"""Uncertainty selection (CA-MTL), its EMA variant, bandits and worst-task-first."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.special import beta as beta_fn, betainc
from scipy.stats import entropy as scipy_entropy

from t2t_mtl.sampling import (InvalidRateError, SamplingError, build_sampler, classification_entropy,
                              generation_entropy, select_uncertain, token_entropy, uncertainty_scores)

SIZES = {"a": 1000, "b": 1000, "c": 1000}


# ----- entropy helpers -----
def test_classification_entropy_matches_scipy_and_masks_padding():
    scores = torch.tensor([[0.0, 0.0, 0.0], [2.0, -1.0, 0.5], [1.0, 3.0, -1e9]])
    mask = torch.tensor([[True, True, True], [True, True, True], [True, True, False]])
    got = classification_entropy(scores, mask)
    for row, m, value in zip(scores, mask, got):
        p = torch.softmax(row[m], -1).numpy()
        assert float(value) == pytest.approx(scipy_entropy(p), abs=1e-6)
    assert float(got[0]) == pytest.approx(math.log(3))


def test_generation_entropy_mean_per_token_over_log_vocab():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 11)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    got = generation_entropy(logits, mask)
    for i in range(2):
        per_token = [scipy_entropy(torch.softmax(logits[i, j], -1).numpy()) for j in range(4) if mask[i, j]]
        assert float(got[i]) == pytest.approx(np.mean(per_token) / math.log(11), rel=1e-5)
    assert float(generation_entropy(torch.zeros(1, 3, 11))[0]) == pytest.approx(1.0)
    raw = generation_entropy(logits, mask, normalise=False)
    assert torch.allclose(raw, got * math.log(11))


def test_token_entropy_of_logits_with_blocked_tokens():
    # a token whose logit is -inf (a masked vocabulary entry) has p = 0 and adds 0 to the entropy; it gave
    # 0 * -inf = NaN, and a NaN entropy made the CA-MTL selection refuse the whole candidate pool
    logits = torch.tensor([[[0.0, 1.0, float("-inf"), -2.0], [0.5, float("-inf"), float("-inf"), 0.5]]])
    got = token_entropy(logits)
    for j in range(2):
        p = torch.softmax(logits[0, j], -1).numpy()
        assert float(got[0, j]) == pytest.approx(scipy_entropy(p), abs=1e-6)
    assert float(generation_entropy(logits)[0]) == pytest.approx(float(got.mean()) / math.log(4), abs=1e-6)


# ----- CA-MTL selector -----
def test_selector_keeps_exactly_the_highest_u_candidates():
    entropies = {"cls": [0.6, 0.1, 0.65], "gen": [3.0, 2.0, 1.0]}
    sizes = {"cls": 2, "gen": 1000}
    s_hat = max(np.mean(v) for v in entropies.values())  # 2.0
    expected_u = {t: [s / (s_hat * math.log(sizes[t])) for s in v] for t, v in entropies.items()}
    ranked = sorted(((u, t, i) for t, us in expected_u.items() for i, u in enumerate(us)), reverse=True)
    expected = [(t, i) for _, t, i in ranked[:3]]
    assert select_uncertain(entropies, sizes, 3) == expected == [("cls", 2), ("cls", 0), ("gen", 0)]
    scores = uncertainty_scores(entropies, sizes)
    for t in entropies:
        np.testing.assert_allclose(scores[t].numpy(), expected_u[t])
    # raw entropies would have picked the generation task only: the normalisation matters
    raw = sorted(((s, t, i) for t, v in entropies.items() for i, s in enumerate(v)), reverse=True)[:3]
    assert {(t, i) for _, t, i in raw} != set(expected)


def test_uncertainty_sampler_pool_and_selection_counts():
    sampler = build_sampler({"strategy": "uncertainty", "pool_per_task": 2, "mode": "mixed"}, SIZES, seed=0)
    assert sampler.candidate_pool() == {"a": 2, "b": 2, "c": 2}
    chosen = sampler.select({"a": torch.tensor([0.1, 0.2]), "b": torch.tensor([0.9, 0.8]),
                             "c": torch.tensor([0.5, 0.0])}, {"a": 4, "b": 4, "c": 4})
    assert chosen == [("b", 0), ("b", 1)]
    assert sampler.selected() == {"a": 0, "b": 2, "c": 0}
    resumed = build_sampler({"strategy": "uncertainty", "pool_per_task": 2, "mode": "mixed"}, SIZES, seed=0)
    resumed.load_state_dict(sampler.state_dict())
    assert resumed.selected() == {"a": 0, "b": 2, "c": 0}  # the counts survive a resume
    with pytest.raises(SamplingError, match="answer-space size for task 'c'"):
        sampler.select({"c": [0.1, 0.2]}, {"a": 2})
    with pytest.raises(InvalidRateError, match="'a'"):
        sampler.select({"a": [float("nan"), 0.2]}, {"a": 2})


def test_uncertainty_ema_blends_prior_with_floor():
    sizes = {"a": 10_000, "b": 100, "c": 100}
    sampler = build_sampler({"strategy": "uncertainty_ema", "alpha": 2.0, "lam": 0.5, "floor": 0.05,
                             "momentum": 0.5}, sizes, seed=0)
    prior = np.sqrt([10_000, 100, 100]) / np.sqrt([10_000, 100, 100]).sum()
    np.testing.assert_allclose(list(sampler.probabilities().values()), 0.05 + 0.85 * prior)
    sampler.update({"entropy": {"a": 0.0, "b": 0.8, "c": 0.2}})
    sampler.update({"entropy": {"a": 0.0, "b": 0.4, "c": 0.2}})
    ema = np.array([0.0, 0.6, 0.2])  # 0.5 * 0.8 + 0.5 * 0.4
    expected = 0.05 + 0.85 * (0.5 * prior + 0.5 * ema / ema.sum())
    np.testing.assert_allclose(list(sampler.probabilities().values()), expected)
    assert min(sampler.probabilities().values()) >= 0.05
    with pytest.raises(SamplingError, match="'zzz'"):
        sampler.update({"entropy": {"zzz": 0.1}})



def test_uncertainty_ema_momentum_lambda_and_unseen_tasks_by_hand():
    # momentum 0.5 and lam 0.5 above cannot tell a coefficient from its complement: here 0.9 and 0.25
    sizes = {"a": 10_000, "b": 100, "c": 100}
    sampler = build_sampler({"strategy": "uncertainty_ema", "alpha": 2.0, "lam": 0.25, "floor": 0.02,
                             "momentum": 0.9}, sizes, seed=0)
    sampler.update({"entropy": {"a": 0.2, "b": 0.6}})
    sampler.update({"entropy": {"a": 0.4}})
    ema = np.array([0.9 * 0.2 + 0.1 * 0.4, 0.6, (0.22 + 0.6) / 2])  # c, not seen yet: the mean of the others
    prior = np.array([100.0, 10.0, 10.0]) / 120  # sqrt of the sizes
    expected = 0.02 + 0.94 * (0.75 * prior + 0.25 * ema / ema.sum())
    np.testing.assert_allclose(list(sampler.probabilities().values()), expected, rtol=1e-12)
    confident = build_sampler({"strategy": "uncertainty_ema", "alpha": 2.0, "floor": 0.02}, sizes, seed=0)
    confident.update({"entropy": {"a": 0.0, "b": 0.0, "c": 0.0}})  # no uncertainty anywhere: p_unc is the prior
    np.testing.assert_allclose(list(confident.probabilities().values()), 0.02 + 0.94 * prior, rtol=1e-12)


# ----- bandits and worst-task-first -----
def run_bandit(sampler, rounds=40, draws=50):
    scores = {t: 0.0 for t in sampler.tasks}
    sampler.update({"val_score": dict(scores)})  # baselines
    for _ in range(rounds):
        tasks = sampler.sample_tasks(draws)
        scores["good"] += 0.05 + 0.001 * tasks.count("good")
        scores["bad"] -= 0.01
        sampler.update({"val_score": dict(scores)})
    return sampler.probabilities()


def test_softmax_bandit_moves_mass_to_best_arm_and_matches_q_formula():
    sizes = {"good": 100, "bad": 100, "flat": 100}
    sampler = build_sampler({"strategy": "bandit_softmax", "tau": 0.02, "step": 0.5, "mode": "mixed"}, sizes, seed=0)
    assert sampler.probabilities()["good"] == pytest.approx(1 / 3)
    probs = run_bandit(sampler)
    assert probs["good"] > 0.9
    q = sampler.q
    np.testing.assert_allclose(np.exp(q / 0.02) / np.exp(q / 0.02).sum(), list(probs.values()))
    # Q recursion unrolled: Q_e = (1-a)^e Q_0 + Σ_k a (1-a)^(e-k) R_k for a constant reward R
    fresh = build_sampler({"strategy": "bandit_softmax", "step": 0.3, "initial_q": 1.0}, sizes, seed=0)
    fresh.update({"val_score": {"bad": 0.0}})
    for k in range(1, 6):
        fresh.update({"val_score": {"bad": -0.2 * k}})
    expected = 0.7 ** 5 * 1.0 + sum(0.3 * 0.7 ** (5 - k) * -0.2 for k in range(1, 6))
    assert fresh.q[1] == pytest.approx(expected)


def test_thompson_bandit_moves_mass_to_best_arm():
    sizes = {"good": 100, "bad": 100, "flat": 100}
    sampler = build_sampler({"strategy": "bandit_thompson", "mode": "mixed"}, sizes, seed=0)
    probs = run_bandit(sampler)
    assert probs["good"] > 0.9
    assert sampler.alpha.tolist() == [41.0, 1.0, 1.0] and sampler.beta.tolist() == [1.0, 41.0, 41.0]


@pytest.mark.parametrize("strategy", ["bandit_thompson", "bandit_softmax", "uncertainty_ema", "worst_task"])
def test_updates_take_effect_at_the_next_draw(strategy):
    sizes = {"good": 100, "bad": 100, "flat": 100}
    sampler = build_sampler({"strategy": strategy, "tau": 0.01} if strategy == "bandit_softmax" else
                            {"strategy": strategy}, sizes, seed=0)
    sampler.next_task()  # a block drawn from the initial distribution is buffered
    for step in range(40):
        sampler.update({"val_score": {"good": 0.1 * step, "bad": -0.1 * step, "flat": 0.0},
                        "entropy": {"good": 1.0, "bad": 0.0, "flat": 0.0},
                        "val_loss": {"good": 1.0, "bad": 1.0 / (step + 1), "flat": 1.0 / (step + 1)}})
    assert sampler.probabilities()["good"] > 0.6
    assert sampler.sample_tasks(200).count("good") > 100


def test_thompson_with_target_credits_the_arms_that_were_drawn():
    sizes = {"primary": 100, "helper": 100, "noise": 100}
    sampler = build_sampler({"strategy": "bandit_thompson", "target": "primary", "mode": "mixed"}, sizes, seed=1)
    score = 0.0
    sampler.update({"val_score": {"primary": score}})
    for _ in range(60):
        tasks = sampler.sample_tasks(30)
        shares = {t: tasks.count(t) for t in sizes}
        score += 0.1 if shares["helper"] == max(shares.values()) else -0.1  # helper-heavy rounds help
        sampler.update({"val_score": {"primary": score}})
    probs = sampler.probabilities()
    assert probs["helper"] > 0.6 and probs["helper"] == max(probs.values())



def test_softmax_bandit_on_validation_losses_rewards_a_falling_loss():
    sampler = build_sampler({"strategy": "bandit_softmax", "tau": 0.1, "step": 0.5, "metric": "val_loss"}, SIZES,
                            seed=0)
    sampler.update({"val_loss": {"a": 2.0, "b": 2.0, "c": 2.0}})  # baselines
    sampler.update({"val_loss": {"a": 1.0, "b": 2.5, "c": 2.0}})  # rewards +1, -0.5, 0
    z = np.exp(np.array([0.5, -0.25, 0.0]) / 0.1)
    np.testing.assert_allclose(list(sampler.probabilities().values()), z / z.sum(), rtol=1e-12)


def test_thompson_decay_shrinks_the_counts_towards_the_prior():
    sampler = build_sampler({"strategy": "bandit_thompson", "prior_alpha": 2.0, "prior_beta": 3.0, "decay": 0.5},
                            {"good": 10, "bad": 10}, seed=0)
    for score in (0.0, 1.0, 2.0):  # baselines, then "good" improves and "bad" worsens twice
        sampler.update({"val_score": {"good": score, "bad": -score}})
    # second update: alpha = 2 + 0.5 (alpha - 2), beta = 3 + 0.5 (beta - 3), then the new wins and losses
    assert sampler.alpha.tolist() == [2 + 0.5 * (3 - 2) + 1, 2.0]
    assert sampler.beta.tolist() == [3.0, 3 + 0.5 * (4 - 3) + 1]


def test_thompson_with_target_credits_homogeneous_draws_across_a_resume():
    # the default mode draws with next_task: its draws are the ones credited, by their shares since the last update
    import json

    sizes = {"primary": 100, "helper": 100, "noise": 100}
    config = {"strategy": "bandit_thompson", "target": "primary"}
    sampler = build_sampler(config, sizes, seed=3)
    sampler.update({"val_score": {"primary": 0.0}})
    first = [sampler.next_task() for _ in range(20)]
    assert sampler.drawn() == {t: first.count(t) for t in sizes}
    sampler.update({"val_score": {"primary": 1.0}})  # a win, shared by the 20 draws
    np.testing.assert_allclose(sampler.alpha, [1 + first.count(t) / 20 for t in sizes], rtol=1e-12)
    second = [sampler.next_task() for _ in range(12)]
    resumed = build_sampler(config, sizes, seed=4)
    resumed.load_state_dict(json.loads(json.dumps(sampler.state_dict())))
    second += [resumed.next_task() for _ in range(8)]
    resumed.update({"val_score": {"primary": 0.5}})  # a loss, shared by the 20 draws since the last update
    np.testing.assert_allclose(resumed.beta, [1 + second.count(t) / 20 for t in sizes], rtol=1e-12)


def test_thompson_with_target_keeps_the_draws_of_an_update_without_the_target():
    # validation leaves a non-finite target score out (finite_validation): the target's next improvement, measured
    # from its last score, is credited to every draw since that score, not only to those after the gap
    sizes = {"primary": 100, "helper": 100, "noise": 100}
    sampler = build_sampler({"strategy": "bandit_thompson", "target": "primary"}, sizes, seed=5)
    sampler.update({"val_score": {"primary": 0.0, "helper": 0.0}})
    before = [sampler.next_task() for _ in range(10)]
    sampler.update({"val_score": {"helper": 1.0}})  # the target's score is missing this time
    np.testing.assert_array_equal(sampler.alpha, [1.0, 1.0, 1.0])  # nothing credited yet
    after = [sampler.next_task() for _ in range(6)]
    sampler.update({"val_score": {"primary": 1.0, "helper": 1.0}})  # a win over 0.0, shared by all 16 draws
    drawn = before + after
    np.testing.assert_allclose(sampler.alpha, [1 + drawn.count(t) / 16 for t in sizes], rtol=1e-12)
    np.testing.assert_array_equal(sampler.beta, [1.0, 1.0, 1.0])


def test_worst_task_first_tchebycheff_weights():
    sizes = {"a": 10, "b": 10, "c": 10}
    sampler = build_sampler({"strategy": "worst_task"}, sizes, seed=0)
    sampler.update({"val_loss": {"a": 2.0, "b": 1.0}})
    assert sampler.probabilities() == {"a": 0.0, "b": 0.0, "c": 1.0}  # unseen task first
    sampler.update({"val_loss": {"c": 4.0}})
    sampler.update({"val_loss": {"a": 1.0, "b": 0.9, "c": 2.0}})
    inv = np.array([1 / 2.0, 1 / 1.0, 1 / 4.0])
    expected_scores = np.array([1.0, 0.9, 2.0]) * inv / inv.sum()
    np.testing.assert_allclose(sampler.weighted_losses(), expected_scores)
    assert sampler.probabilities() == {"a": 0.0, "b": 1.0, "c": 0.0}  # b: 0.9/1.0 is the worst relative loss
    assert set(sampler.sample_tasks(100)) == {"b"}
    soft = build_sampler({"strategy": "worst_task", "tau": 0.1, "floor": 0.02}, sizes, seed=0)
    soft.update({"val_loss": {"a": 2.0, "b": 1.0, "c": 4.0}})
    soft.update({"val_loss": {"a": 1.0, "b": 0.9, "c": 2.0}})
    z = np.exp(expected_scores / 0.1)
    np.testing.assert_allclose(list(soft.probabilities().values()), 0.02 + 0.94 * z / z.sum())


def test_worst_task_on_training_losses():
    sampler = build_sampler({"strategy": "worst_task", "metric": "loss"}, SIZES, seed=0)
    sampler.update({"loss": {"a": 2.0, "b": 2.0, "c": 2.0}, "val_loss": {"a": 9.0}})
    sampler.update({"loss": {"a": 1.0, "b": 1.5, "c": 0.5}})
    assert sampler.probabilities() == {"a": 0.0, "b": 1.0, "c": 0.0}


def test_worst_task_takes_a_task_fitted_exactly():
    # was: a loss of exactly 0 (fp32 cross-entropy of a memorised task) was refused, which ended the training run
    sampler = build_sampler({"strategy": "worst_task", "metric": "loss"}, SIZES, seed=0)
    sampler.update({"loss": {"a": 2.0, "b": 2.0, "c": 2.0}})
    sampler.update({"loss": {"a": 0.0, "b": 1.5, "c": 0.5}})
    assert sampler.probabilities() == {"a": 0.0, "b": 1.0, "c": 0.0}
    sampler.update({"loss": {"a": 0.0, "b": 0.0, "c": 0.0}})  # every task fitted: they tie
    assert sampler.probabilities() == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    for first in ({"a": 0.0}, {"a": -1.0}):
        with pytest.raises(SamplingError, match="task 'a' has loss -?[01].0: .*the first one > 0"):
            build_sampler({"strategy": "worst_task", "metric": "loss"}, SIZES, seed=0).update({"loss": first})


def test_feedback_errors_name_the_task():
    sampler = build_sampler({"strategy": "bandit_softmax"}, SIZES, seed=0)
    with pytest.raises(SamplingError, match="'zz'"):
        sampler.update({"val_score": {"zz": 1.0}})
    with pytest.raises(SamplingError, match="'a'"):
        sampler.update({"val_score": {"a": float("nan")}})
    with pytest.raises(SamplingError, match="'nope'"):
        build_sampler({"strategy": "bandit_thompson", "target": "nope"}, SIZES, seed=0)


def test_worst_task_first_losses_tie_whatever_their_rounding():
    # was: λ_t L_t was computed as L_t · (1/l_t) / Σ, and x · (1/x) is not always 1 in floating point, so at the
    # first validation (every task at its first loss, all tied) `tau` 0 gave the mass to an arbitrary subset
    sizes = {"a": 10, "b": 10, "c": 10, "d": 10}
    first = {"a": 2.210720462416014, "b": 0.22042226383104735, "c": 1.0, "d": 0.4140191999240306}
    sampler = build_sampler({"strategy": "worst_task"}, sizes, seed=0)
    sampler.update({"val_loss": first})
    assert sampler.probabilities() == pytest.approx({t: 0.25 for t in sizes})
    sampler.update({"val_loss": {t: 0.5 * v for t, v in first.items()}})  # every task halved: still tied
    assert sampler.probabilities() == pytest.approx({t: 0.25 for t in sizes})


@pytest.mark.parametrize("tau, initial_q, scores, expected", [
    (0.1, 1e308, [], [1 / 3, 1 / 3, 1 / 3]),  # equal Q: uniform, whatever Q/τ
    (1e-309, 0.0, [{"a": 0.0, "b": 0.0}, {"a": 1.0, "b": 0.5}], [1.0, 0.0, 0.0]),  # τ -> 0: greedy on Q
])
def test_softmax_bandit_probabilities_stay_finite_where_q_over_tau_overflows(tau, initial_q, scores, expected):
    # π = exp(Q/τ) / Σ exp(Q/τ) written out: Q/τ overflowed to inf, inf - inf = NaN probabilities, and every draw
    # went to the first task
    sampler = build_sampler({"strategy": "bandit_softmax", "tau": tau, "initial_q": initial_q}, SIZES, seed=0)
    for score in scores:
        sampler.update({"val_score": score})
    assert list(sampler.probabilities().values()) == expected
    n, p = 30_000, expected[0]
    assert abs(sampler.sample_tasks(n).count("a") - n * p) <= 5 * math.sqrt(n * p * (1 - p))  # 5-sigma binomial


def thompson_win_probability(k, a, b):
    """P(θ_k is the largest of θ_j ~ Beta(a_j, b_j)) = ∫ f_k Π_{j≠k} F_j, over (0, 1/2] with x = t^(1/a_k) and over
    [1/2, 1) with 1 - x = s^(1/b_k): the substitutions take out f_k's integrable singularities at 0 and 1 (within
    1e-7 of a 30-digit mpmath integration for the parameters below)."""
    others, norm = [j for j in range(len(a)) if j != k], beta_fn(a[k], b[k])

    def low(t):
        x = t ** (1 / a[k])
        return (1 - x) ** (b[k] - 1) * np.prod([betainc(a[j], b[j], x) for j in others]) / (a[k] * norm)

    def high(s):
        u = s ** (1 / b[k])  # 1 - x; 1 - θ_j ~ Beta(b_j, a_j)
        return (1 - u) ** (a[k] - 1) * np.prod([1 - betainc(b[j], a[j], u) for j in others]) / (b[k] * norm)
    return quad(low, 0, 0.5 ** a[k])[0] + quad(high, 0, 0.5 ** b[k])[0]


@pytest.mark.parametrize("prior, decay, scores, a, b", [
    ((1.0, 1.0), 1.0, [], [1.0] * 3, [1.0] * 3),
    ((0.01, 0.01), 1.0, [], [0.01] * 3, [0.01] * 3),  # θ = 1.0 in float64 about a third of the time
    ((0.01, 0.01), 1.0, [{"a": 0, "b": 0, "c": 0}, {"a": 1, "b": 1, "c": -1}], [1.01, 1.01, 0.01], [0.01, 0.01, 1.01]),
    # a loses (b_a = 1.01), then decays to 0.01 + 0.005 * 1 as b wins: ties at 1.0 between tails (1-θ)^(b-1) that differ
    ((0.01, 0.01), 0.005, [{"a": 0, "b": 0, "c": 0}, {"a": -1}, {"b": 1}], [0.01, 1.01, 0.01], [0.015, 0.01, 0.01]),
])
def test_thompson_draws_each_arm_as_often_as_it_has_the_largest_beta_sample(prior, decay, scores, a, b):
    # a plain argmax gave every tie of θ's rounded to 1.0 (small Beta parameters) to the first arm: with a
    # Beta(0.01, 0.01) prior, task a was drawn 44% of the time instead of a third
    sampler = build_sampler({"strategy": "bandit_thompson", "prior_alpha": prior[0], "prior_beta": prior[1],
                             "decay": decay, "mode": "mixed"}, SIZES, seed=0)
    for score in scores:
        sampler.update({"val_score": score})
    np.testing.assert_allclose(sampler.alpha, a, rtol=1e-12)
    np.testing.assert_allclose(sampler.beta, b, rtol=1e-12)
    expected = np.array([thompson_win_probability(k, a, b) for k in range(3)])
    assert expected.sum() == pytest.approx(1.0, abs=1e-6)
    n = 60_000
    counts = np.bincount(sampler.sample_task_indices(n), minlength=3)
    assert np.all(np.abs(counts - n * expected) <= 5 * np.sqrt(n * expected * (1 - expected)))  # 5-sigma binomial
    estimate = np.array(list(sampler.probabilities().values()))  # from estimate_samples = 4000 draws
    assert np.all(np.abs(estimate - expected) <= 5 * np.sqrt(expected * (1 - expected) / 4000))


def test_thompson_arms_whose_beta_samples_all_underflow_to_zero_win_as_the_untruncated_samples_would():
    """Beta(a_k, 1) has CDF x^(a_k), so P(θ_k is the largest) = a_k / Σ_j a_j exactly. With a_k ~ 1e-4, θ_k =
    V^(1/a_k) is 0.0 in float64 most of the time (every arm at once in about two draws of three): the tie at 0 is
    decided as the unrounded samples would be (θ_k = δ V^(1/a_k), the largest wins), not for the first arm nor
    uniformly among the tied arms, and the draws' frequencies match a_k / Σ a_j (chi-square, 2 degrees of
    freedom, below 20: p < 5e-5, on the sampler's fixed seed)."""
    a = np.array([1e-4, 2e-4, 3e-4])
    all_zero = np.all(np.random.default_rng(0).beta(a, 1.0, size=(10_000, 3)) == 0.0, axis=1).mean()
    assert all_zero > 0.5  # the case's premise: most draws are a tie of every arm at 0.0
    sampler = build_sampler({"strategy": "bandit_thompson", "prior_alpha": 1e-4, "prior_beta": 1.0,
                             "mode": "mixed"}, SIZES, seed=0)
    state = sampler.state_dict()
    state["extra"]["alpha"] = a.tolist()
    sampler.load_state_dict(state)
    expected = a / a.sum()
    n = 30_000
    counts = np.bincount(sampler.sample_task_indices(n), minlength=3)
    assert float(np.sum((counts - n * expected) ** 2 / (n * expected))) < 20.0, counts
    estimate = np.array(list(sampler.probabilities().values()))  # from estimate_samples = 4000 draws
    assert np.all(np.abs(estimate - expected) <= 5 * np.sqrt(expected * (1 - expected) / 4000))


def test_uncertainty_rates_table_shows_the_candidates_scored_and_kept():
    """The rates table a run logs at its start and at a resume shows what CA-MTL selection drew: each task's
    candidates scored (`drawn`: b per task and selection on every rank, counted over the ranks) and kept (`selected`,
    this rank's, and their share), not the 0 draws of `next_task`, which the selection never calls."""
    sampler = build_sampler({"strategy": "uncertainty", "pool_per_task": 2}, SIZES, seed=0, rank=1, world_size=2,
                            log=False)
    spaces = {t: 4 for t in SIZES}
    assert sampler.select({"a": [0.1, 0.2], "b": [0.9, 0.8], "c": [0.5, 0.0]}, spaces) == [("b", 0), ("b", 1)]
    assert sampler.select({"a": [0.7, 0.2], "b": [0.1, 0.8], "c": [0.5, 0.0]}, spaces) == [("b", 1), ("a", 0)]
    with pytest.raises(SamplingError, match="answer-space size"):  # a refused selection counts nothing
        sampler.select({"a": [0.1, 0.2]}, {"b": 4})
    assert sampler.drawn() == {"a": 8, "b": 8, "c": 8}  # 2 selections x 2 candidates x 2 ranks
    expected = ["uncertainty sampler (selected candidates, tasks mixed), epoch 0",  # (its mode is not read)
                "task        size      prob       drawn  realised    selected  sel.share",
                "a           1000    0.3333           8    0.3333           1     0.2500",
                "b           1000    0.3333           8    0.3333           3     0.7500",
                "c           1000    0.3333           8    0.3333           0     0.0000"]
    assert sampler.describe().split("\n") == expected
    resumed = build_sampler({"strategy": "uncertainty", "pool_per_task": 2}, SIZES, seed=0, rank=1, world_size=2,
                            log=False)
    resumed.load_state_dict(sampler.state_dict())
    assert resumed.describe().split("\n") == expected


def test_thompson_with_target_credits_the_examples_trained_since_the_last_update_where_updates_give_them():
    """In mixed mode the batch builder draws the tasks of `data.bucket_batches` micro-batches at once, ahead of
    training: credited by the draws since the last update, a whole bucket went to the first update after it was drawn
    and the target's next wins and losses, with no draw since, were dropped (3 credits in a 30-step run fed the
    target's loss every step). Training gives each update the examples of each task it trained (`trained`, summed
    over the ranks): those are credited, by their shares since the last credit, across a resume too."""
    import json

    config = {"strategy": "bandit_thompson", "metric": "loss", "target": "a", "mode": "mixed"}
    sampler = build_sampler(config, SIZES, seed=0, log=False)
    sampler.sample_tasks(8)  # a bucket of draws, ahead of the steps below, which draw nothing
    sampler.update({"loss": {"a": 4.0, "b": 2.0}, "trained": {"a": 1, "b": 1}})  # the target's baseline
    sampler.update({"loss": {"a": 3.0}, "trained": {"a": 2}})  # a win: a's 2 examples
    sampler.update({"loss": {"b": 2.0, "c": 1.0}, "trained": {"b": 1, "c": 1}})  # no target loss: kept for the next
    resumed = build_sampler(config, SIZES, seed=0, log=False)
    resumed.load_state_dict(json.loads(json.dumps(sampler.state_dict())))
    resumed.update({"loss": {"a": 3.5, "c": 1.0}, "trained": {"a": 1, "c": 1}})  # a loss: a 1, b 1, c 2 of 4
    resumed.update({"loss": {"a": 3.2, "b": 1.0}, "trained": {"a": 2, "b": 2}})  # a win: a 2, b 2 of 4
    np.testing.assert_allclose(resumed.alpha, [1 + 1 + 0.5, 1 + 0.5, 1], rtol=1e-12)
    np.testing.assert_allclose(resumed.beta, [1 + 0.25, 1 + 0.25, 1 + 0.5], rtol=1e-12)
    with pytest.raises(SamplingError, match="trained given for task 'z', which is not in the mixture"):
        resumed.update({"trained": {"z": 1}})


def test_a_floor_the_tasks_leave_no_room_for_names_the_largest_they_allow():
    # was: 'sampling.floor 0.01 times 100 tasks must be in [0, 1)' for a config that never set it (uncertainty_ema's
    # default floor over a mixture of 100 tasks), with no word of what to give
    many = {f"t{i}": 10 for i in range(100)}
    with pytest.raises(SamplingError) as refused:
        build_sampler({"strategy": "uncertainty_ema"}, many, seed=0, log=False)
    assert str(refused.value) == ("sampling.floor 0.01 times 100 tasks must be in [0, 1): give a floor >= 0 below "
                                  "1/100 = 0.01; the default, 0.01, is too large for 100")
    assert build_sampler({"strategy": "uncertainty_ema", "floor": 0.005}, many, seed=0, log=False).floor == 0.005
    with pytest.raises(SamplingError) as refused:
        build_sampler({"strategy": "worst_task", "floor": 0.5}, {"a": 10, "b": 10}, seed=0, log=False)
    assert str(refused.value) == "sampling.floor 0.5 times 2 tasks must be in [0, 1): give a floor >= 0 below 1/2 = 0.5"


def test_a_negative_floor_is_refused_and_a_zero_floor_taken():
    # kills check_floor mutants that its tests let live: the lower bound dropped (a negative floor taken, its
    # probabilities below 0) or made strict (a floor of 0, no task held up, refused)
    for strategy in ("worst_task", "uncertainty_ema"):
        with pytest.raises(SamplingError) as refused:
            build_sampler({"strategy": strategy, "floor": -0.1}, {"a": 10, "b": 10}, seed=0, log=False)
        assert str(refused.value) == ("sampling.floor -0.1 times 2 tasks must be in [0, 1): give a floor >= 0 below "
                                      "1/2 = 0.5")
        taken = build_sampler({"strategy": strategy, "floor": 0}, {"a": 10, "b": 10}, seed=0, log=False).floor
        assert taken == 0.0 and type(taken) is float


def test_thompson_takes_a_task_that_trained_no_example_and_refuses_a_count_that_is_not_one():
    # kills mutants of ThompsonBanditSampler's trained counts that its tests let live: a task given 0 examples
    # refused (the bound made strict), an infinite count taken (the upper bound dropped), and an empty `trained`
    # starting to credit by examples (none) instead of by the draws
    config = {"strategy": "bandit_thompson", "metric": "loss", "target": "a", "mode": "mixed"}
    sampler = build_sampler(config, SIZES, seed=0, log=False)
    sampler.update({"loss": {"a": 4.0}, "trained": {"a": 1, "b": 0}})  # the target's baseline
    sampler.update({"loss": {"a": 3.0}, "trained": {"a": 3, "b": 0}})  # a win: a's 3 of 3
    np.testing.assert_allclose(sampler.alpha, [2, 1, 1], rtol=1e-12)
    for count in (math.inf, -1):
        with pytest.raises(SamplingError) as refused:
            sampler.update({"trained": {"b": count}})
        assert str(refused.value) == f"task 'b' has trained {count}: it must be a number of examples >= 0"
    drawn = build_sampler(config, SIZES, seed=0, log=False)
    drawn.update({"loss": {"a": 4.0}, "trained": {}})
    tasks = drawn.sample_tasks(4)
    drawn.update({"loss": {"a": 3.0}, "trained": {}})  # a win, credited to the 4 draws, as without `trained`
    np.testing.assert_allclose(drawn.alpha, [1 + tasks.count(t) / 4 for t in sorted(SIZES)], rtol=1e-12)
