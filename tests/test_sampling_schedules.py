"""Annealed (Stickland & Murray) and dynamic (Wang et al.) temperature schedules over epochs."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chisquare

from t2t_mtl.sampling import SamplingError, annealed_alpha, build_sampler, dynamic_alpha, rates_over_epochs

SIZES = {"a": 100_000, "b": 10_000, "c": 500}
N = np.array(list(SIZES.values()), dtype=np.float64)


def probs_at(alpha, cap=None):
    n = np.minimum(N, cap) if cap else N
    r = n ** (1.0 / alpha)
    return r / r.sum()


@pytest.mark.parametrize("e, total, expected", [(1, 10, 1.0), (10, 10, 5.0), (4, 10, 1 / (1 - 0.8 * 3 / 9)),
                                                (2.5, 4, 1 / (1 - 0.8 * 1.5 / 3)), (1, 1, 1.0)])
def test_annealed_alpha_formula(e, total, expected):
    assert annealed_alpha(e, total) == pytest.approx(expected)


@pytest.mark.parametrize("e, expected", [(1, 1.0), (2, 1.8), (4, 3.4), (6, 5.0), (9, 5.0), (0, 1.0), (0.5, 1.0)])
def test_dynamic_alpha_formula(e, expected):
    # alpha_0 = 1, alpha_max = 5, M = 5: alpha(e) = min(5, (e-1) * 4/5 + 1); epochs are >= 1 (e < 1 counts as 1)
    assert dynamic_alpha(e, 1.0, 5.0, 5.0) == pytest.approx(expected)


def test_annealed_sampler_follows_schedule_over_epochs():
    sampler = build_sampler({"strategy": "annealed", "epochs": 5, "cap": 50_000}, SIZES, seed=3)
    for epoch in range(5):  # set_epoch is 0-based; the paper's e = epoch + 1
        sampler.set_epoch(epoch)
        alpha = 1.0 / (1.0 - 0.8 * epoch / 4)
        np.testing.assert_allclose(list(sampler.probabilities().values()), probs_at(alpha, 50_000), rtol=1e-12)
    sampler.set_epoch(2)
    tasks = sampler.sample_tasks(100_000)
    counts = [tasks.count(t) for t in SIZES]
    assert chisquare(counts, probs_at(1 / (1 - 0.8 * 2 / 4), 50_000) * 100_000).pvalue > 1e-3


def test_dynamic_sampler_follows_schedule_over_epochs():
    sampler = build_sampler({"strategy": "dynamic_temperature", "alpha_0": 1.0, "alpha_max": 4.0,
                             "warmup_epochs": 3}, SIZES, seed=3)
    # fractional epochs (the engine sets seen/total every step) use the current whole epoch
    for epoch, alpha in [(0, 1.0), (0.7, 1.0), (1, 2.0), (2, 3.0), (3, 4.0), (7, 4.0), (1.5, 2.0)]:
        sampler.set_epoch(epoch)
        np.testing.assert_allclose(list(sampler.probabilities().values()), probs_at(alpha), rtol=1e-12)


def test_schedule_changes_the_draws():
    sampler = build_sampler({"strategy": "annealed", "epochs": 3}, SIZES, seed=0)
    first = sampler.sample_tasks(20_000).count("c")
    sampler.set_epoch(2)
    last = sampler.sample_tasks(20_000).count("c")
    assert last > 10 * first  # the small task gains mass as alpha goes 1 -> 5


def test_schedule_errors():
    with pytest.raises(SamplingError, match="epochs"):
        build_sampler({"strategy": "annealed"}, SIZES, seed=0)
    with pytest.raises(SamplingError, match="warmup_epochs"):
        build_sampler({"strategy": "dynamic_temperature", "warmup_epochs": 0}, SIZES, seed=0)
    with pytest.raises(SamplingError, match="alpha_0 5.0 > alpha_max 1.0"):
        build_sampler({"strategy": "dynamic_temperature", "alpha_0": 5, "alpha_max": 1}, SIZES, seed=0)
    sampler = build_sampler({"strategy": "annealed", "epochs": 3}, SIZES, seed=0)
    with pytest.raises(SamplingError, match="epoch"):
        sampler.set_epoch(-1)


def test_schedule_logs_the_new_rates_at_each_whole_epoch(caplog):
    sampler = build_sampler({"strategy": "annealed", "epochs": 3}, SIZES, seed=0)
    with caplog.at_level("INFO", logger="t2t_mtl.sampling"):
        sampler.set_epoch(0.5)
        assert not caplog.records  # same whole epoch: same rates
        sampler.set_epoch(1.0)
    assert len(caplog.records) == 1 and "epoch 1" in caplog.text and "realised" in caplog.text


def test_rates_over_epochs_follow_the_schedule_and_refuse_no_epochs_as_a_sampling_error():
    # annealed over E = 3: alpha 1, 1 / (1 - 0.4) = 5/3, 5 at epochs 0, 1, 2; p ∝ n^(1/alpha)
    sizes = {"a": 900, "b": 100}
    table = rates_over_epochs({"strategy": "annealed", "epochs": 3}, sizes, 3, draws=0)
    for epoch, alpha in enumerate((1.0, 5 / 3, 5.0)):
        rates = {t: n ** (1 / alpha) for t, n in sizes.items()}
        assert table["probabilities"]["a"][epoch] == pytest.approx(rates["a"] / sum(rates.values()))
    assert table["epochs"] == [0, 1, 2] and table["realised"] == {"a": [], "b": []}
    with pytest.raises(SamplingError, match="epochs must be >= 1, got 0"):  # was a bare ValueError
        rates_over_epochs({"strategy": "uniform"}, sizes, 0)


@pytest.mark.parametrize("key", ["alpha_0", "alpha_max"])
def test_an_infinite_dynamic_alpha_is_refused_by_name_not_read_as_uniform_from_the_first_epoch(key):
    # alpha_max = inf made (e-1)(alpha_max - alpha_0)/M at e = 1 a 0 * inf = NaN, and min(inf, NaN) is inf: the first
    # epoch drew uniformly instead of at alpha_0 (proportionally)
    config = {"strategy": "dynamic_temperature", "alpha_0": 1.0, "alpha_max": 5.0, key: float("inf")}
    with pytest.raises(SamplingError, match=r"sampling.alpha_0 and sampling.alpha_max > 0 and finite, got"):
        build_sampler(config, SIZES, seed=0)
    with pytest.raises(SamplingError, match="and finite"):
        dynamic_alpha(1, 1.0, float("inf"), 5.0)


def test_a_resumed_schedule_logs_its_rates_at_the_whole_epochs_the_uninterrupted_run_does(caplog):
    # the engine sets a fractional epoch every step; a sampler resumed inside an epoch logs nothing until the next
    # whole epoch changes its rates, as the uninterrupted one
    sampler = build_sampler({"strategy": "annealed", "epochs": 3}, SIZES, seed=0)
    sampler.set_epoch(1.2)
    resumed = build_sampler({"strategy": "annealed", "epochs": 3}, SIZES, seed=0)
    resumed.load_state_dict(sampler.state_dict())
    with caplog.at_level("INFO", logger="t2t_mtl.sampling"):
        for epoch in (1.3, 1.6, 1.9):
            resumed.set_epoch(epoch)
        assert not caplog.records
        resumed.set_epoch(2.1)
    assert len(caplog.records) == 1 and "epoch 2.1" in caplog.text


def test_the_probabilities_at_an_epoch_follow_the_schedule_and_leave_the_sampler_where_it_is():
    # kills mutants of MixtureSampler.probabilities_at that its tests let live: the moved copy kept the probabilities
    # the sampler had computed (so every epoch gave the current ones, and a run that had asked for its rates was never
    # warned of a schedule it ends before), and a negative epoch taken
    sampler = build_sampler({"strategy": "annealed", "epochs": 5, "cap": 50_000}, SIZES, seed=3, log=False)
    start = sampler.probabilities()  # (computed, as a run has by the time it asks)
    for epoch in (0, 2, 3.5, 1e9):
        alpha = 1.0 / (1.0 - 0.8 * min(int(epoch), 4) / 4)
        np.testing.assert_allclose(list(sampler.probabilities_at(epoch).values()), probs_at(alpha, 50_000),
                                   rtol=1e-12)
    assert sampler.epoch == 0 and sampler.probabilities() == start  # (a copy was moved)
    for epoch in (-0.5, float("nan")):
        with pytest.raises(SamplingError) as refused:
            sampler.probabilities_at(epoch)
        assert str(refused.value) == f"epoch must be >= 0, got {epoch}"
