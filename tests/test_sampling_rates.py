"""Static samplers: realised frequencies of 100k draws agree with each rate formula (chi-square)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chisquare

from t2t_mtl.sampling import (EmptyTaskError, InvalidRateError, SamplingError, UnknownParameterError,
                              UnknownStrategyError, build_sampler, seqio_rate, size_rates)

SIZES = {"big": 200_000, "mid": 30_000, "small": 4_000, "tiny": 150}
N_DRAWS = 100_000


def counts_of(sampler, n=N_DRAWS, vectorised=True):
    tasks = sampler.sample_tasks(n) if vectorised else [sampler.next_task() for _ in range(n)]
    return np.array([tasks.count(t) for t in SIZES], dtype=np.float64)


def assert_matches(counts, expected_probs):
    expected = np.asarray(expected_probs) / np.sum(expected_probs) * counts.sum()
    assert chisquare(counts, expected).pvalue > 1e-3


def assert_rejects(counts, wrong_probs):
    expected = np.asarray(wrong_probs) / np.sum(wrong_probs) * counts.sum()
    assert chisquare(counts, expected).pvalue < 1e-6


def formula(sizes, alpha=1.0, cap=None, scale=1.0):
    n = np.array(list(sizes.values()), dtype=np.float64) * scale
    if cap:
        n = np.minimum(n, cap)
    return n ** (1.0 / alpha)


@pytest.mark.parametrize("config, expected", [
    ({"strategy": "uniform"}, np.ones(4)),
    ({"strategy": "proportional"}, formula(SIZES)),
    ({"strategy": "proportional", "cap": 20_000}, formula(SIZES, cap=20_000)),
    ({"strategy": "temperature", "alpha": 2.0}, formula(SIZES, alpha=2.0)),
    ({"strategy": "temperature", "alpha": 3.0, "cap": 50_000}, formula(SIZES, alpha=3.0, cap=50_000)),
    ({"strategy": "temperature", "alpha": 2.0, "cap": 2_000, "scale": 0.1}, formula(SIZES, 2.0, 2_000, 0.1)),
    ({"strategy": "explicit", "rates": {"big": 1.0, "mid": 2.0, "small": 3.0, "tiny": 4.0}}, [1, 2, 3, 4]),
])
def test_draw_frequencies_match_formula(config, expected):
    sampler = build_sampler(config, SIZES, seed=1234)
    np.testing.assert_allclose(list(sampler.probabilities().values()), expected / np.sum(expected), rtol=1e-12)
    counts = counts_of(sampler)
    assert_matches(counts, expected)
    if not np.allclose(expected / np.sum(expected), 0.25):
        assert_rejects(counts, np.ones(4))  # the test has power: uniform is rejected


def test_next_task_and_mixed_draws_follow_the_same_distribution():
    expected = formula(SIZES, alpha=2.0)
    homogeneous = build_sampler({"strategy": "temperature", "alpha": 2.0}, SIZES, seed=5)
    assert_matches(counts_of(homogeneous, vectorised=False), expected)
    mixed = build_sampler({"strategy": "temperature", "alpha": 2.0, "mode": "mixed"}, SIZES, seed=5)
    assert_matches(counts_of(mixed), expected)


def test_realised_proportions_are_reported():
    sampler = build_sampler({"strategy": "proportional", "cap": 20_000}, SIZES, seed=0)
    sampler.sample_tasks(50_000)
    table = {row["task"]: row for row in sampler.rates_table()}
    assert sum(row["drawn"] for row in table.values()) == 50_000
    for task, prob in sampler.probabilities().items():
        assert abs(table[task]["realised"] - prob) < 0.01
    text = sampler.describe()
    assert "realised" in text and "tiny" in text


def test_seqio_rate_order_scale_then_clip_then_temperature():
    # clip happens after scaling and before temperature: (min(1000*0.5, 300)) ** (1/2)
    assert seqio_rate(1000, maximum=300, scale=0.5, temperature=2.0) == pytest.approx(300 ** 0.5)
    assert seqio_rate(1000, maximum=800, scale=0.5, temperature=2.0) == pytest.approx(500 ** 0.5)
    assert seqio_rate(1000, maximum=None, temperature=1.0) == 1000
    assert seqio_rate(1000, maximum=0) == 1000  # seqio: a falsy maximum means no cap


def test_t0_caps_of_sizes_that_count_each_row_once_per_template():
    # data.all_templates renders a row in each of its k templates, so a task's size n counts k examples a row: each
    # template's seqio task has n / k rows, capped per template — T0's rate sum_t min(rows, c) ** (1/T)
    sizes = {"a": 10 * 100_000, "b": 4 * 1_000}
    templates = {"a": 10, "b": 4}
    rates = size_rates(sizes, templates=templates, dataset_cap=500_000, sizes_count_templates=True)
    assert rates == {"a": 10 * 50_000, "b": 4 * 1_000}
    rates = size_rates(sizes, templates=templates, template_cap=800, temperature=2.0, sizes_count_templates=True)
    assert rates["a"] == pytest.approx(10 * 800 ** 0.5) and rates["b"] == pytest.approx(4 * 800 ** 0.5)
    rates = size_rates(sizes, templates=templates, temperature=2.0, sizes_count_templates=True)  # no cap
    assert rates["a"] == pytest.approx(10 * 100_000 ** 0.5) and rates["b"] == pytest.approx(4 * 1_000 ** 0.5)
    assert size_rates(sizes, sizes_count_templates=True) == {"a": 1_000_000, "b": 4_000}  # no templates: whole tasks
    sampler = build_sampler({"strategy": "proportional", "templates": templates, "dataset_cap": 500_000,
                             "sizes_count_templates": True}, sizes, seed=0)
    assert sampler.probabilities()["a"] == pytest.approx(500_000 / 504_000)
    with pytest.raises(InvalidRateError, match="sampling.sizes_count_templates must be true or false, got 'yes'"):
        size_rates(sizes, templates=templates, sizes_count_templates="yes")


def test_templates_that_skip_rows_are_rated_at_their_own_counts():
    # was: a task's templates were each taken to hold the mean n / k: with glue/mrpc's paraphrase template keeping 30
    # of 100 rows, both templates were rated at 65 rows; T0 rated each template's seqio task at its own count
    sizes = {"a": 100 + 30, "b": 50}
    templates = {"a": 2, "b": 1}
    own = {"a": {"all": 100, "some": 30}}
    rates = size_rates(sizes, templates=templates, temperature=2.0, sizes_count_templates=True, template_sizes=own)
    assert rates["a"] == pytest.approx(100 ** 0.5 + 30 ** 0.5, rel=1e-12) and rates["b"] == pytest.approx(50 ** 0.5)
    rates = size_rates(sizes, templates=templates, template_cap=40, sizes_count_templates=True, template_sizes=own)
    assert rates == {"a": 40 + 30, "b": 40}
    probabilities = build_sampler({"strategy": "temperature", "alpha": 2.0, "templates": templates,
                                   "sizes_count_templates": True, "template_sizes": own}, sizes, seed=0).probabilities()
    hand = {"a": 10 + 30 ** 0.5, "b": 50 ** 0.5}
    assert probabilities == pytest.approx({t: r / sum(hand.values()) for t, r in hand.items()}, rel=1e-12)
    ema = build_sampler({"strategy": "uncertainty_ema", "alpha": 2.0, "floor": 0.0, "templates": templates,
                         "sizes_count_templates": True, "template_sizes": own}, sizes, seed=0)
    assert dict(zip(ema.tasks, ema.prior)) == pytest.approx({t: r / sum(hand.values()) for t, r in hand.items()},
                                                            rel=1e-12)


@pytest.mark.parametrize("template_sizes, sizes_count_templates, message", [
    ({"a": {"all": 100, "some": 31}}, True, r"sampling\.template_sizes gives task 'a' 2 templates with 131 examples; "
                                            r"it has 2 templates \(sampling\.templates\) and 130 examples"),
    ({"a": {"all": 130}}, True, r"gives task 'a' 1 template with 130 examples; it has 2 templates"),
    ({"a": {"all": 100, "some": -1}}, True, r"of task 'a' must map each of its templates to its number of examples"),
    ({"b": {"all": 50}}, True, r"gives task 'b''s templates, but sampling\.templates gives it no number"),
    ({"c": {"all": 5}}, True, r"names task 'c', which is not in the mixture"),
    ({"a": {"all": 100, "some": 30}}, False, r"it needs sampling\.sizes_count_templates: true"),
    ([100, 30], True, r"must map task names to \{template: examples\}"),
])
def test_template_sizes_that_do_not_fit_the_task_are_refused(template_sizes, sizes_count_templates, message):
    with pytest.raises(InvalidRateError, match=message):
        size_rates({"a": 130, "b": 50}, templates={"a": 2}, sizes_count_templates=sizes_count_templates,
                   template_sizes=template_sizes)


def test_t0_per_template_caps():
    sizes = {"a": 100_000, "b": 1_000}
    templates = {"a": 10, "b": 4}
    # T0: every template is a seqio task with the dataset's rows, capped at dataset_cap // k
    rates = size_rates(sizes, templates=templates, dataset_cap=500_000)
    assert rates["a"] == pytest.approx(10 * min(100_000, 50_000))
    assert rates["b"] == pytest.approx(4 * min(1_000, 125_000))
    rates = size_rates(sizes, templates=templates, template_cap=800, temperature=2.0)
    assert rates["a"] == pytest.approx(10 * 800 ** 0.5)
    assert rates["b"] == pytest.approx(4 * 800 ** 0.5)
    sampler = build_sampler({"strategy": "temperature", "alpha": 2.0, "templates": templates,
                             "template_cap": 800}, sizes, seed=0)
    assert sampler.probabilities()["a"] == pytest.approx(10 / 14)
    # templates without a per-template cap: every template is capped at `cap`
    assert size_rates(sizes, templates=templates, maximum=5_000) == {"a": 10 * 5_000, "b": 4 * 1_000}


def test_a_dataset_cap_below_the_template_count_is_refused():
    # dataset_cap // k was 0 for k > dataset_cap, and seqio reads a cap of 0 as none: a 100k-row task with 12
    # templates got 12 * 100k under dataset_cap 11 (a cap of 12 gave it 12)
    sizes = {"a": 100_000, "b": 50}
    assert size_rates(sizes, templates={"a": 12, "b": 2}, dataset_cap=12) == {"a": 12.0, "b": 12.0}
    with pytest.raises(InvalidRateError, match=r"dataset_cap 11 is smaller than task 'a''s 12 templates.*no cap"):
        size_rates(sizes, templates={"a": 12, "b": 2}, dataset_cap=11)
    with pytest.raises(SamplingError, match="raise sampling.dataset_cap to at least 12"):
        build_sampler({"strategy": "proportional", "templates": {"a": 12, "b": 2}, "dataset_cap": 11}, sizes, seed=0)


def test_per_template_caps_without_templates_are_refused():
    # were silently ignored: without templates every task fell back to `cap` (none), so a 100k-row task kept its
    # uncapped rate under dataset_cap 500 and sampling.dataset_cap did nothing
    sizes = {"a": 100_000, "b": 1_000}
    for key in ("dataset_cap", "template_cap"):
        with pytest.raises(InvalidRateError, match=f"{key} caps each template.*needs templates"):
            size_rates(sizes, **{key: 500})
        with pytest.raises(SamplingError, match=f"{key} caps each template"):
            build_sampler({"strategy": "proportional", key: 500}, sizes, seed=0)
    assert size_rates(sizes, templates={"a": 1, "b": 1}, dataset_cap=500) == {"a": 500.0, "b": 500.0}


def test_nested_mixture_rates_via_explicit_strategy():
    import task_registry
    from task_registry import GeneratorSource, Mixture, Task, Template

    def rows(split, num_rows, seed):
        return ({"x": str(i)} for i in range(num_rows))

    template = Template("t", "{{x}} ||| {{x}}")
    with task_registry.isolated_registry():
        tasks = [Task(f"sampling_nested_{i}", GeneratorSource(rows, num_rows=10), [template]) for i in range(3)]
        for task in tasks:
            task_registry.register_task(task)
        inner = Mixture("sampling_nested_inner", {tasks[1]: 1.0, tasks[2]: 3.0})
        rates = Mixture("sampling_nested_outer", {tasks[0]: 2.0, inner: 2.0}).flatten()
    sampler = build_sampler({"strategy": "explicit", "rates": rates}, {t.name: 10 for t in tasks}, seed=0)
    probs = sampler.probabilities()
    # the sub-mixture's weight 2 is split 1:3 between its tasks
    assert probs == pytest.approx({"sampling_nested_0": 0.5, "sampling_nested_1": 0.125, "sampling_nested_2": 0.375})


@pytest.mark.parametrize("config, error, words", [
    ({"strategy": "temprature"}, UnknownStrategyError, ["'temperature'", "uniform", "bandit_thompson"]),
    # a list or mapping (`strategy: [uniform]`) was a raw "unhashable type" TypeError
    ({"strategy": ["uniform"]}, UnknownStrategyError, ["unknown sampling strategy ['uniform']", "Valid strategies"]),
    ({"strategy": "temperature", "alpah": 2}, UnknownParameterError, ["'alpha'", "cap"]),
    ({"strategy": "explicit", "rates": {"big": 1, "mid": -1, "small": 1, "tiny": 1}}, InvalidRateError, ["'mid'"]),
    ({"strategy": "explicit", "rates": {"big": 1, "mid": float("nan"), "small": 1, "tiny": 1}}, InvalidRateError,
     ["'mid'"]),
    ({"strategy": "explicit", "rates": {"big": 0, "mid": 0, "small": 0, "tiny": 0}}, InvalidRateError,
     ["zero"]),
    ({"strategy": "explicit", "rates": {"big": 1, "mid": 1, "small": 1}}, InvalidRateError, ["tiny"]),
    ({"strategy": "temperature", "alpha": 0}, InvalidRateError, ["alpha"]),
    ({"strategy": "uniform", "mode": "mixd"}, ValueError, ["homogeneous", "mixed"]),
    ({"strategy": "proportional", "cap": -5}, InvalidRateError, ["cap must be >= 0"]),
    ({"strategy": "temperature", "scale": 0}, InvalidRateError, ["scale must be > 0"]),
    ({"strategy": "temperature", "templates": {t: 1 for t in SIZES}, "template_cap": -1}, InvalidRateError,
     ["template_cap must be > 0"]),
    ({"strategy": "bandit_softmax", "tau": "abc"}, SamplingError, ["'tau' must be a number", "'abc'"]),
    ({"strategy": "annealed", "epochs": 2.5}, SamplingError, ["'epochs' must be an integer"]),
    ({"strategy": "temperature", "alpha": True}, SamplingError, ["'alpha' must be a number"]),
    # a null for a parameter that takes no null (`alpha:` left empty in a file) was a raw TypeError from float(None)
    ({"strategy": "temperature", "alpha": None}, SamplingError, ["'alpha' must be a number, got null"]),
    ({"strategy": "bandit_thompson", "estimate_samples": None}, SamplingError,
     ["'estimate_samples' must be an integer, got null"]),
    ({"strategy": "temperature", "alpha": 0.01}, InvalidRateError, ["'big'", "overflows", "alpha 0.01"]),
    ({"strategy": "temperature", "alpha": 1e-320}, InvalidRateError, ["'big'", "overflows", "larger alpha"]),
    ({"strategy": "uncertainty_ema", "alpha": 0.01}, InvalidRateError, ["'big'", "overflows"]),
    ({"strategy": "explicit", "rates": {"big": 1e308, "mid": 1e308, "small": 0, "tiny": 0}}, InvalidRateError,
     ["largest float"]),
    ({"strategy": "bandit_softmax", "tau": float("nan")}, SamplingError, ["tau must be > 0"]),
    ({"strategy": "bandit_softmax", "initial_q": float("inf")}, SamplingError, ["initial_q", "finite"]),
    ({"strategy": "bandit_thompson", "prior_alpha": float("nan")}, SamplingError, ["prior_alpha"]),
    ({"strategy": "bandit_thompson", "prior_beta": float("inf")}, SamplingError, ["prior_beta"]),
    ({"strategy": "bandit_thompson", "estimate_samples": 0}, SamplingError, ["estimate_samples must be >= 1"]),
    ({"strategy": "worst_task", "tau": float("nan")}, SamplingError, ["tau must be >= 0"]),
    ({"strategy": "dynamic_temperature", "warmup_epochs": float("nan")}, SamplingError, ["warmup_epochs > 0"]),
    # were raw AttributeErrors / TypeErrors
    ({"strategy": "explicit", "rates": [1, 2, 3, 4]}, InvalidRateError, ["rates must map task names", "[1, 2, 3, 4]"]),
    ({"strategy": "temperature", "templates": [1, 2]}, InvalidRateError, ["templates must map task names"]),
    ({"strategy": "temperature", "templates": 3}, InvalidRateError, ["templates must map task names", "got 3"]),
    ({"strategy": "bandit_thompson", "target": ["big"]}, SamplingError, ["target task ['big'] is not in the mixture"]),
])
def test_bad_config_errors(config, error, words):
    with pytest.raises(error) as info:
        build_sampler(config, SIZES, seed=0)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("config, key", [
    ({"strategy": "temperature", "alpha": -1}, "alpha"),  # was "temperature/alpha must be > 0"
    ({"strategy": "proportional", "cap": -5}, "cap"),
    ({"strategy": "temperature", "scale": 0}, "scale"),
    ({"strategy": "uniform", "mode": "mixd"}, "mode"),
    ({"strategy": "uniform", "block_size": 0}, "block_size"),
    ({"strategy": "explicit", "rates": [1, 2]}, "rates"),
    ({"strategy": "annealed", "epochs": 0}, "epochs"),
    ({"strategy": "dynamic_temperature", "warmup_epochs": 0}, "warmup_epochs"),
    ({"strategy": "dynamic_temperature", "alpha_0": -1}, "alpha_0"),
    ({"strategy": "bandit_softmax", "tau": 0}, "tau"),
    ({"strategy": "bandit_softmax", "step": 2}, "step"),
    ({"strategy": "bandit_softmax", "metric": "acc"}, "metric"),
    ({"strategy": "bandit_thompson", "decay": 0}, "decay"),
    ({"strategy": "bandit_thompson", "prior_alpha": 0}, "prior_alpha"),
    ({"strategy": "bandit_thompson", "target": "nope"}, "target"),
    ({"strategy": "worst_task", "tau": -1}, "tau"),
    ({"strategy": "worst_task", "floor": 0.5}, "floor"),
    ({"strategy": "worst_task", "metric": "val_score"}, "metric"),
    ({"strategy": "uncertainty", "pool_per_task": 0}, "pool_per_task"),
    ({"strategy": "uncertainty_ema", "lam": 2}, "lam"),
    ({"strategy": "uncertainty_ema", "momentum": 1}, "momentum"),
    ({"strategy": "uncertainty_ema", "floor": 0.3}, "floor"),
    ({"strategy": "round_robin", "block_size": 6}, "block_size"),  # not whole cycles of the 4 tasks
    ({"strategy": "round_robin", "shuffle": "yes"}, "shuffle"),
])
def test_bad_values_name_their_config_key(config, key):
    # the train command prints these as they are: "tau must be > 0" did not say which section's tau, and a
    # negative alpha said "temperature/alpha"
    with pytest.raises(SamplingError, match=rf"\bsampling\.{key}\b"):
        build_sampler(config, SIZES, seed=0)


def test_numeric_strings_are_numbers():
    # PyYAML reads `1e-3` (no dot) as a string; config files and `--set` pass it through as one
    sampler = build_sampler({"strategy": "bandit_softmax", "tau": "1e-1", "step": "0.5"}, SIZES, seed=0)
    assert (sampler.tau, sampler.step) == (0.1, 0.5)
    assert build_sampler({"strategy": "annealed", "epochs": "3"}, SIZES, seed=0).total_epochs == 3
    templates = {t: 2 for t in SIZES}
    for strategy in ("temperature", "uncertainty_ema"):  # every size-based strategy, T0's caps included
        quoted = build_sampler({"strategy": strategy, "templates": templates, "dataset_cap": "5e4"}, SIZES, seed=0)
        number = build_sampler({"strategy": strategy, "templates": templates, "dataset_cap": 5e4}, SIZES, seed=0)
        assert quoted.probabilities() == number.probabilities()
    with pytest.raises(SamplingError, match="'template_cap' must be a number"):
        build_sampler({"strategy": "uncertainty_ema", "templates": templates, "template_cap": "abc"}, SIZES, seed=0)


def test_a_null_is_the_default_only_where_a_parameter_takes_none():
    # cap and block_size default to None, so null is theirs to take: the same sampler as without the keys
    given = build_sampler({"strategy": "temperature", "alpha": 2, "cap": None, "block_size": None}, SIZES, seed=0)
    default = build_sampler({"strategy": "temperature", "alpha": 2}, SIZES, seed=0)
    assert given.probabilities() == default.probabilities()


def test_bad_task_sizes_name_the_task():
    with pytest.raises(EmptyTaskError, match="'empty'"):
        build_sampler({"strategy": "uniform"}, {"ok": 10, "empty": 0}, seed=0)
    with pytest.raises(InvalidRateError, match="'neg'"):
        build_sampler({"strategy": "proportional"}, {"ok": 10, "neg": -3}, seed=0)
    with pytest.raises(InvalidRateError, match="'nan'"):
        build_sampler({"strategy": "proportional"}, {"ok": 10, "nan": float("nan")}, seed=0)
    with pytest.raises(InvalidRateError, match="task 'inf' has invalid size inf"):  # was a raw OverflowError
        build_sampler({"strategy": "uniform"}, {"ok": 10, "inf": float("inf")}, seed=0)
    with pytest.raises(InvalidRateError, match="no tasks"):
        build_sampler({"strategy": "uniform"}, {}, seed=0)


def test_repr_names_the_strategy_tasks_mode_and_seed():
    # was the default `<t2t_mtl.sampling.static.TemperatureSampler object at 0x...>`
    sampler = build_sampler({"strategy": "temperature", "alpha": 2, "mode": "mixed"}, {"a": 10, "b": 20}, seed=3)
    assert repr(sampler) == ("TemperatureSampler(strategy='temperature', tasks=['a', 'b'], mode='mixed', seed=3, "
                             "epoch=0)")


@pytest.mark.parametrize("kwargs,match", [
    # were a raw ValueError (int('x')) / TypeError, or silently truncated (seed 1.5 drew seed 1's sequence)
    ({"seed": "x"}, r"the sampling seed \(training.seed\) must be an integer >= 0, got x"),
    ({"seed": None}, r"must be an integer >= 0, got None"),
    ({"seed": 1.5}, r"must be an integer >= 0, got 1.5"),
    ({"seed": 0, "rank": 0.5, "world_size": 2}, r"rank 0.5 is not in \[0, world_size=2\)"),
])
def test_seed_and_rank_of_the_wrong_type_are_named(kwargs, match):
    with pytest.raises(SamplingError, match=match):
        build_sampler({"strategy": "uniform"}, {"a": 10, "b": 20}, **kwargs)


@pytest.mark.parametrize("n", [2.5, "2", None])
def test_sample_tasks_needs_an_integer_count(n):
    sampler = build_sampler({"strategy": "uniform", "mode": "mixed"}, {"a": 10, "b": 20}, seed=0)
    with pytest.raises(SamplingError, match=rf"number of tasks to draw must be an integer >= 0, got {n!r}"):
        sampler.sample_tasks(n)


@pytest.mark.parametrize("sizes", [["a", "b"], [100, 10], "ab"])
def test_task_sizes_that_are_not_a_mapping_are_named(sizes):
    # were raw AttributeErrors ('list' object has no attribute 'items')
    with pytest.raises(InvalidRateError, match=r"task_sizes must map task names to their numbers of training rows"):
        build_sampler({"strategy": "uniform"}, sizes, seed=0)


def test_integer_tensors_are_integers_for_the_seed_and_the_count():
    # refused since the seed and the count are checked ('must be an integer >= 0, got 3'), though a 0-d integer
    # tensor (a count summed from a mask, a seed drawn by torch) drew as its int does before
    import torch

    def draws(seed, n):
        sampler = build_sampler({"strategy": "uniform", "mode": "mixed"}, {"a": 10, "b": 20, "c": 5}, seed=seed)
        return sampler.sample_tasks(n) + sampler.sample_tasks(n)

    assert draws(torch.tensor(3), torch.tensor(6)) == draws(3, 6)
    assert len(draws(np.int64(3), torch.tensor(6, dtype=torch.int32))) == 12
    for seed, n in ((torch.tensor(1.0), 2), (0, torch.tensor(2.0)), (True, 2)):  # floats and bools stay refused
        with pytest.raises(SamplingError, match="must be an integer >= 0"):
            draws(seed, n)


@pytest.mark.parametrize("shuffle", [True, False])
def test_round_robin_draws_every_task_once_in_each_cycle_of_as_many_draws(shuffle):
    # gradient surgery's textbook step: one micro-batch of every task (grad_accum = the number of tasks); a uniform
    # draw of 4 tasks for 4 micro-batches holds them all in 4!/4^4 = 9% of the steps
    config = {"strategy": "round_robin", "shuffle": shuffle, "block_size": 8}  # blocks of 2 cycles: refills crossed
    sampler = build_sampler(config, SIZES, seed=3)
    draws = [sampler.next_task() for _ in range(4 * 30)]
    cycles = [tuple(draws[k:k + 4]) for k in range(0, len(draws), 4)]
    assert all(sorted(cycle) == sorted(SIZES) for cycle in cycles)
    assert len(set(cycles)) > 1 if shuffle else set(cycles) == {tuple(SIZES)}  # shuffle false: the tasks' order
    ranks = [build_sampler(config, SIZES, seed=3, rank=r, world_size=2) for r in range(2)]
    for _ in range(10):  # mixed batches of 2 examples a rank: each global batch of 4 is one cycle
        assert sorted(ranks[0].sample_tasks(2) + ranks[1].sample_tasks(2)) == sorted(SIZES)
    assert build_sampler({"strategy": "round_robin"}, SIZES, seed=0).block_size == 8192  # a multiple of 4
    assert build_sampler({"strategy": "round_robin"}, {"a": 1, "b": 1, "c": 1}, seed=0).block_size == 8190


def test_round_robin_draws_a_new_order_in_each_cycle_of_a_block():
    # a block of 30 cycles drawn in one order (one permutation of the tasks per block) would give a rank of a mixed
    # batch the same tasks for the whole block: rank 0 of two, drawing 2 of the 4 tasks, never saw the other two
    sampler = build_sampler({"strategy": "round_robin", "block_size": 4 * 30}, SIZES, seed=3)
    cycles = [tuple(sampler.sample_tasks(4)) for _ in range(30)]  # the one block
    assert all(sorted(cycle) == sorted(SIZES) for cycle in cycles)
    assert len(set(cycles)) > 5  # 30 draws of 24 orders: 17 distinct on average, 12 at seed 3; the mutant 1
    assert {cycle[:2] for cycle in cycles} != {cycles[0][:2]}
