"""Loss weightings against their formulas (Chen et al. 2024 §3.1)."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from t2t_mtl.weighting import UnknownWeightingError, WeightingError, build_weighting

TASKS = ["a", "b", "c"]
SIZES = {"a": 100, "b": 400, "c": 1000}


def value(tensor: torch.Tensor) -> float:
    return tensor.detach().item()


def losses(**values):
    return {t: torch.tensor(v, requires_grad=True) for t, v in values.items()}


def test_equal_weighting():
    w = build_weighting({"method": "equal"}, TASKS, SIZES)
    assert value(w(losses(a=1.0, b=2.0, c=3.0))) == pytest.approx(6.0 / 3)
    assert value(w(losses(b=2.0))) == pytest.approx(2.0 / 3)  # a homogeneous step: weight 1/M


def test_size_weighting():
    w = build_weighting({"method": "size"}, TASKS, SIZES)
    inv = {t: 1 / n for t, n in SIZES.items()}
    lam = {t: v / sum(inv.values()) for t, v in inv.items()}
    assert value(w(losses(a=1.0, b=2.0, c=3.0))) == pytest.approx(lam["a"] + 2 * lam["b"] + 3 * lam["c"])
    assert w.last_weights == pytest.approx(lam)


def test_uncertainty_weighting_formula_gradients_and_state():
    w = build_weighting({"method": "uncertainty"}, TASKS, SIZES)
    with torch.no_grad():
        w.log_variance.copy_(torch.tensor([0.5, -1.0, 2.0]))
    step = losses(a=1.0, c=3.0)
    total = w(step)
    expected = math.exp(-0.5) * 1.0 + 0.5 + math.exp(-2.0) * 3.0 + 2.0
    assert value(total) == pytest.approx(expected, rel=1e-6)
    assert w.last_weights == pytest.approx({"a": math.exp(-0.5), "c": math.exp(-2.0)})  # λ_t = exp(-s_t), present tasks
    total.backward()
    # d/ds (exp(-s) L + s) = 1 - exp(-s) L ; b absent from the step: zero gradient
    expected_grad = [1 - math.exp(-0.5) * 1.0, 0.0, 1 - math.exp(-2.0) * 3.0]
    assert w.log_variance.grad.tolist() == pytest.approx(expected_grad, rel=1e-6)
    assert value(step["a"].grad) == pytest.approx(math.exp(-0.5), rel=1e-6)
    assert [name for name, _ in w.named_parameters()] == ["log_variance"]
    fresh = build_weighting({"method": "uncertainty"}, TASKS, SIZES)
    fresh.load_state_dict(w.state_dict())
    assert torch.equal(fresh.log_variance, w.log_variance)


def test_uncertainty_init_is_the_starting_log_variance():
    w = build_weighting({"method": "uncertainty", "init": 1.5}, TASKS, SIZES)
    assert value(w(losses(a=2.0))) == pytest.approx(math.exp(-1.5) * 2.0 + 1.5, rel=1e-6)


def test_uncertainty_weights_are_learned_by_an_optimizer():
    w = build_weighting({"method": "uncertainty"}, TASKS, SIZES)
    opt = torch.optim.SGD(w.parameters(), lr=0.5)
    for _ in range(80):
        opt.zero_grad()
        w(losses(a=4.0, b=1.0, c=0.25)).backward()
        opt.step()
    # the optimum of exp(-s) L + s is s = log L
    assert w.log_variance.tolist() == pytest.approx([math.log(4.0), 0.0, math.log(0.25)], abs=1e-2)



def test_a_learned_weightings_step_takes_the_mean_over_the_ranks_of_its_unscaled_gradients(monkeypatch):
    # the training loop's step of uncertainty's log σ² (step_weighting), on two ranks whose backward carried the loss
    # scale S: the gradient it applies is the mean over the ranks of d/ds (e^-s L + s) = 1 - L at s = 0, at the lr
    # of the step; the other rank's scaled gradients come in through the all-reduce
    from types import SimpleNamespace

    from t2t_mtl.engine import deepspeed_engine

    w = build_weighting({"method": "uncertainty"}, TASKS, SIZES)
    optimizer = torch.optim.SGD(w.parameters(), lr=0.1)
    scale = 8.0
    (w(losses(a=3.0, b=0.5)) * scale).backward()  # this rank: 1 - L of a and b, no loss of c
    other_rank = torch.tensor([1 - 1.0, 1 - 2.0, 1 - 5.0]) * scale
    monkeypatch.setattr(deepspeed_engine, "sum_over_ranks", lambda t: t.add_(other_rank))
    engine = SimpleNamespace(was_step_applied=lambda: True)
    deepspeed_engine.step_weighting(optimizer, [w.log_variance], engine, lr=0.5, loss_scale=scale, world_size=2,
                                    skip=False)
    mean = [((1 - 3.0) + (1 - 1.0)) / 2, ((1 - 0.5) + (1 - 2.0)) / 2, (0 + (1 - 5.0)) / 2]
    assert w.log_variance.tolist() == pytest.approx([-0.5 * g for g in mean], rel=1e-6)
    assert w.log_variance.grad is None  # zeroed for the next step


def test_dynamic_task_prioritization():
    w = build_weighting({"method": "dtp", "gamma": 2.0}, TASKS, SIZES)
    total = w(losses(a=1.0, b=2.0), stats={"kpi": {"a": 0.9, "b": 0.2}})
    lam = {"a": -(1 - 0.9) ** 2 * math.log(0.9), "b": -(1 - 0.2) ** 2 * math.log(0.2)}
    assert value(total) == pytest.approx(lam["a"] * 1.0 + lam["b"] * 2.0)
    assert w.last_weights["b"] > w.last_weights["a"]  # the harder task gets priority
    # no KPI yet for c: initial_kpi 0.5
    assert value(w(losses(c=1.0))) == pytest.approx(-(0.5 ** 2) * math.log(0.5))
    smooth = build_weighting({"method": "dtp", "gamma": 1.0, "momentum": 0.5}, TASKS, SIZES)
    smooth(losses(a=1.0), stats={"kpi": {"a": 0.9}})
    k = 0.5 * 0.9 + 0.5 * 0.5
    assert value(smooth(losses(a=1.0))) == pytest.approx(-(1 - k) * math.log(k))
    with pytest.raises(WeightingError, match="'a'"):
        w(losses(a=1.0), stats={"kpi": {"a": 1.5}})


def test_dtp_smoothed_kpis_survive_a_resume():
    w = build_weighting({"method": "dtp", "gamma": 2.0, "momentum": 0.5}, TASKS, SIZES)
    w(losses(a=1.0), stats={"kpi": {"a": 0.9}})  # k_a = 0.5 * 0.9 + 0.5 * 0.5
    resumed = build_weighting({"method": "dtp", "gamma": 2.0, "momentum": 0.5}, TASKS, SIZES)
    resumed.load_state_dict(w.state_dict())
    assert value(resumed(losses(a=1.0))) == pytest.approx(-(0.3 ** 2) * math.log(0.7))


def test_dtp_clamps_a_kpi_of_0_or_1_to_eps():
    w = build_weighting({"method": "dtp", "gamma": 2.0, "eps": 1e-3}, TASKS, SIZES)
    assert value(w(losses(a=1.0), stats={"kpi": {"a": 0.0}})) == pytest.approx(-(0.999 ** 2) * math.log(1e-3))
    assert value(w(losses(b=1.0), stats={"kpi": {"b": 1.0}})) == pytest.approx(-(1e-3 ** 2) * math.log(0.999))


def test_tchebycheff():
    w = build_weighting({"method": "tchebycheff"}, TASKS, SIZES)
    w(losses(a=2.0, b=4.0, c=1.0))  # first losses become the references l_t
    total = w(losses(a=1.0, b=3.0, c=0.9))
    inv = [1 / 2.0, 1 / 4.0, 1 / 1.0]
    lam = [v / sum(inv) for v in inv]
    expected = max(lam[0] * 1.0, lam[1] * 3.0, lam[2] * 0.9)
    assert value(total) == pytest.approx(expected)
    assert w.last_weights == pytest.approx(dict(zip(TASKS, lam)))
    ref = build_weighting({"method": "tchebycheff"}, TASKS, SIZES)
    total = ref(losses(a=1.0, b=1.0), stats={"ref_loss": {"a": 1.0, "b": 2.0, "c": 4.0}})
    inv = [1.0, 0.5, 0.25]
    assert value(total) == pytest.approx(max(inv[0] / sum(inv), inv[1] / sum(inv)))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.0, -1.0])
def test_tchebycheff_refuses_an_unusable_given_reference(bad):
    # was: an infinite ref_loss passed the > 0 check and silently gave its task weight 0 for the rest of the run
    w = build_weighting({"method": "tchebycheff"}, TASKS, SIZES)
    with pytest.raises(WeightingError, match="ref_loss for task 'a' must be finite and > 0"):
        w(losses(a=1.0), stats={"ref_loss": {"a": bad}})


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.0])
def test_tchebycheff_takes_no_unusable_first_loss_as_reference(bad):
    # the engine skips a step whose loss is non-finite or zero; such a first loss must not abort the run or
    # become l_t (inf: the task's weight would be 0 from then on)
    w = build_weighting({"method": "tchebycheff"}, TASKS, SIZES)
    assert math.isnan(value(w(losses(a=bad, b=4.0))))
    assert torch.isnan(w.ref_loss).all()
    w(losses(a=2.0))  # the next losses become the references: l_a = 2, then l_b = 4
    assert value(w(losses(a=1.0, b=4.0))) == pytest.approx(max(2 / 3 * 1.0, 1 / 3 * 4.0))
    assert w.ref_loss.tolist()[:2] == [2.0, 4.0]


def test_tchebycheff_references_are_the_same_on_every_rank():
    # each rank took its own first losses as l_t, but a checkpoint keeps rank 0's: after a resume the other
    # ranks' weights changed. Two ranks in threads, summing through a shared slot list:
    import threading

    barrier, slots, calls = threading.Barrier(2), [None, None], [0, 0]

    def all_reduce_sum(rank):
        def reduce(tensor):
            calls[rank] += 1
            slots[rank] = tensor.clone()
            barrier.wait()
            total = slots[0] + slots[1]
            barrier.wait()
            return total
        return reduce

    ranks = [build_weighting({"method": "tchebycheff"}, TASKS, SIZES) for _ in range(2)]

    def step(first, second):
        ranks[0](losses(**first))
        ranks[1](losses(**second))
        threads = [threading.Thread(target=w.synchronize, args=(all_reduce_sum(r),)) for r, w in enumerate(ranks)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    step({"a": 2.0}, {"a": 4.0, "b": 1.0})
    for w in ranks:  # a: the mean of the two first losses; b: rank 1's; c: unseen
        assert w.ref_loss[:2].tolist() == [3.0, 1.0] and math.isnan(w.ref_loss[2])
    step({"c": 5.0}, {"b": 7.0})
    assert ranks[0].ref_loss.tolist() == ranks[1].ref_loss.tolist() == [3.0, 1.0, 5.0]
    step({"a": 1.0}, {"c": 2.0})  # every rank knows every reference: no more collectives
    assert calls == [2, 2] and ranks[0].state_dict()["ref_loss"].tolist() == [3.0, 1.0, 5.0]


def test_tchebycheff_loaded_with_every_reference_makes_no_collective():
    # a resume set `_synchronized` back to False, so the first step averaged the ranks' equal references once more:
    # over three ranks (0.1 + 0.1 + 0.1) / 3 = 0.10000000000000002, so the resumed run's weights left the
    # uninterrupted run's by an ulp
    saved = build_weighting({"method": "tchebycheff"}, TASKS, SIZES)
    saved.ref_loss.copy_(torch.tensor([0.1, 0.7, 1.3], dtype=torch.float64))
    calls = []

    def three_equal_ranks(tensor):
        calls.append(tensor)
        return tensor + tensor + tensor

    resumed = build_weighting({"method": "tchebycheff"}, TASKS, SIZES)
    resumed.load_state_dict(saved.state_dict())
    resumed.synchronize(three_equal_ranks)
    assert calls == [] and resumed.ref_loss.tolist() == [0.1, 0.7, 1.3]

    partial = build_weighting({"method": "tchebycheff"}, TASKS, SIZES)  # a reference still unknown: ranks must agree
    partial.ref_loss[0] = 0.5
    resumed.load_state_dict(partial.state_dict())
    resumed.synchronize(three_equal_ranks)
    assert len(calls) == 1 and resumed.ref_loss[0].item() == 0.5 and torch.isnan(resumed.ref_loss[1:]).all()


def test_curriculum_sigmoid():
    w = build_weighting({"method": "curriculum", "start_epochs": {"b": 2.0, "c": 5.0}, "alpha": 0.5,
                         "base": "size"}, TASKS, SIZES)
    inv = {t: 1 / n for t, n in SIZES.items()}
    base = {t: v / sum(inv.values()) for t, v in inv.items()}
    e = 3.0
    lam = {t: base[t] / (1 + math.exp((s - e) / 0.5)) for t, s in {"a": 0.0, "b": 2.0, "c": 5.0}.items()}
    total = w(losses(a=1.0, b=1.0, c=1.0), epoch=e)
    assert value(total) == pytest.approx(sum(lam.values()))
    assert w(losses(c=1.0), epoch=0.0) < w(losses(c=1.0), epoch=10.0)
    late = build_weighting({"method": "curriculum", "start_epochs": {"b": 30.0, "c": 1000.0}}, TASKS, SIZES)
    late(losses(b=1.0))  # (the loss is float32: the weight is read from last_weights, in float64)
    assert late.last_weights == pytest.approx({"b": 1 / 3 / (1 + math.exp(30.0))}, rel=1e-12, abs=0)  # tiny, not 0
    assert value(late(losses(c=1.0))) == 0.0  # exp(1000) would overflow: the weight is 0 to float64


@pytest.mark.parametrize("config, error, words", [
    ({"method": "uncertanty"}, UnknownWeightingError, ["'uncertainty'", "tchebycheff"]),
    # a list or mapping was a raw "unhashable type" TypeError
    ({"method": {"equal": 1}}, UnknownWeightingError, ["unknown loss weighting {'equal': 1}", "Valid methods"]),
    ({"method": "dtp", "gama": 1}, WeightingError, ["'gamma'", "momentum"]),
    # was: no suggestion for a misspelt `method` (layered over default.yaml's `method: equal`)
    ({"method": "equal", "methd": "size"}, WeightingError, ["'methd'", "Did you mean 'method'?"]),
    ({"method": "curriculum", "start_epochs": {"zz": 1}}, WeightingError, ["zz"]),
    ({"method": "dtp", "gamma": "abc"}, WeightingError, ["'gamma' must be a number", "'abc'"]),
    ({"method": "uncertainty", "init": [0.0]}, WeightingError, ["'init' must be a number"]),
    ({"method": "dtp", "gamma": None}, WeightingError, ["'gamma' must be a number, got null"]),  # was a TypeError
    ({"method": "uncertainty", "init": float("inf")}, WeightingError, ["init", "finite"]),
    ({"method": "dtp", "gamma": float("nan")}, WeightingError, ["gamma", "nan"]),
    ({"method": "dtp", "eps": 0}, WeightingError, ["eps", "(0, 0.5)"]),
    ({"method": "curriculum", "alpha": float("nan")}, WeightingError, ["alpha must be > 0"]),
    ({"method": "curriculum", "alpha": "inf"}, WeightingError, ["alpha must be > 0 and finite"]),  # was: accepted
    # were raw TypeErrors ("sequence item 0: expected str instance, int found")
    ({"method": "curriculum", "start_epochs": [0, 1, 2]}, WeightingError, ["start_epochs must map task names",
                                                                          "[0, 1, 2]"]),
    ({"method": "curriculum", "start_epochs": 5}, WeightingError, ["start_epochs must map task names"]),
    ({"method": "curriculum", "start_epochs": {"b": "soon"}}, WeightingError, ["start_epochs['b']", "'soon'"]),
    # was "unknown base weights 'sizes'", naming neither the method nor the key
    ({"method": "curriculum", "base": "sizes"}, WeightingError, ["curriculum base", "must be 'equal' or 'size'",
                                                                 "got 'sizes'"]),
])
def test_bad_config(config, error, words):
    with pytest.raises(error) as info:
        build_weighting(config, TASKS, SIZES)
    for word in words:
        assert word in str(info.value)


def test_numeric_strings_are_numbers():
    # PyYAML reads `1e-1` (no dot) as a string; the config passes it through as one
    assert build_weighting({"method": "dtp", "gamma": "1e-1"}, TASKS, SIZES).gamma == pytest.approx(0.1)
    assert build_weighting({"method": "curriculum", "start_epochs": {"b": "2e0"}}, TASKS, SIZES).start_epochs["b"] == 2


def test_bad_inputs_name_the_task():
    with pytest.raises(WeightingError, match="'b'"):
        build_weighting({"method": "size"}, TASKS, {"a": 1, "c": 1})
    w = build_weighting({"method": "equal"}, TASKS, SIZES)
    with pytest.raises(WeightingError, match="'zz'"):
        w(losses(zz=1.0))
    with pytest.raises(WeightingError, match="no per-task losses"):
        w({})


def test_task_names_and_sizes_must_be_collections():
    # a string was split into one task per letter ("ab" → tasks 'a', 'b'); a list of sizes was a raw TypeError
    with pytest.raises(WeightingError, match="task_names must be a list of task names.*'ab'"):
        build_weighting({"method": "equal"}, "ab")
    with pytest.raises(WeightingError, match="task_sizes must be a .* mapping or None, got list"):
        build_weighting({"method": "size"}, TASKS, [100, 400, 1000])


def test_repr_names_the_tasks():
    # was "EqualWeighting()", the same for every mixture
    assert repr(build_weighting({"method": "equal"}, TASKS, SIZES)) == "EqualWeighting(tasks=['a', 'b', 'c'])"
    assert repr(build_weighting({"method": "uncertainty"}, ["x"])) == "UncertaintyWeighting(tasks=['x'])"


@pytest.mark.parametrize("config", [{"method": "equal"}, {"method": "size"}, {"method": "uncertainty", "init": 0.3},
                                    {"method": "dtp", "momentum": 0.25}, {"method": "tchebycheff"},
                                    {"method": "curriculum", "start_epochs": {"b": 2.0}, "alpha": 0.5}])
def test_task_weights_are_what_the_next_call_weights_each_task_by(config):
    # what a training record logs as task_weight (was: no record held a weighting's weights)
    w = build_weighting(config, TASKS, SIZES)
    with torch.no_grad():
        for p in w.parameters():
            p.copy_(torch.tensor([0.5, -1.0, 2.0]))
    w(losses(a=1.0, b=2.0, c=4.0), epoch=1.0)  # tchebycheff's references, 1, 2 and 4
    stats = {"kpi": {"a": 0.9, "c": 0.2}} if config["method"] == "dtp" else {}
    logged = w.task_weights(1.5, stats)
    state = w.state_dict()
    assert w.task_weights(1.5, stats) == logged  # it changes nothing
    for task in TASKS:  # the weight of each task alone in the next call, after the logged stats are folded in
        fresh = build_weighting(config, TASKS, SIZES)
        fresh.load_state_dict(state)
        fresh(losses(**{task: 1.0}), epoch=1.5, stats=stats)
        assert logged[task] == pytest.approx(fresh.last_weights[task], rel=1e-12), task
    assert set(logged) == set(TASKS)


def test_tchebycheff_logs_the_weights_of_the_tasks_whose_reference_loss_it_knows():
    # before a task's first loss its reference is unknown: the weights of the others, λ_t = 1/(l_t Σ_i 1/l_i) over
    # the known references 1 and 2, not NaN for every task (mut44: the unknown references kept passed every test)
    w = build_weighting({"method": "tchebycheff"}, TASKS, SIZES)
    assert w.task_weights(0.0, {}) == {}
    w(losses(a=1.0, b=2.0), epoch=0.5)
    assert w.task_weights(0.5, {}) == pytest.approx({"a": 1 / (1 * 1.5), "b": 1 / (2 * 1.5)}, rel=1e-12)


def test_a_weighting_of_its_own_logs_no_task_weights():
    from t2t_mtl.weighting import LossWeighting

    class Halves(LossWeighting):
        def combine(self, losses, *, epoch, stats):
            return self.weighted_sum(losses, {t: 0.5 for t in losses})

    assert Halves(TASKS).task_weights(0.0, {}) == {}


def test_tchebycheff_logs_no_weight_for_a_task_before_its_first_loss():
    # (its weights divide by each task's reference loss, unknown until the task's first loss: a NaN for it would
    # make every task's weight NaN)
    w = build_weighting({"method": "tchebycheff"}, TASKS, SIZES)
    assert w.task_weights(0.0, {}) == {}
    w(losses(a=2.0, c=6.0), epoch=0.0)
    assert w.task_weights(0.0, {}) == pytest.approx({"a": 0.75, "c": 0.25})  # 1/(2(1/2 + 1/6)), 1/(6(1/2 + 1/6))


def test_dtp_weighs_a_micro_batch_without_reading_its_buffer_from_the_device():
    # was: every call read the smoothed KPIs from the weighting's buffer (float(self.kpi[i])), on a GPU a read that
    # waits for the micro-batch's forward queued just before; the meta device, which holds no values, stands in
    config = {"method": "dtp", "gamma": 2.0, "momentum": 0.5}
    host = build_weighting(config, TASKS, SIZES)
    device = build_weighting(config, TASKS, SIZES).to("meta")
    for stats in ({"kpi": {"a": 0.9, "c": 0.2}}, {}, {"kpi": {"a": 0.4}}):
        loss = device({t: torch.tensor(1.0, device="meta") for t in ("a", "b")}, stats=stats)
        assert loss.device.type == "meta"
        host(losses(a=1.0, b=1.0), stats=stats)
        assert device.last_weights == host.last_weights
        assert device.task_weights(0.0, {"kpi": {"b": 0.7}}) == host.task_weights(0.0, {"kpi": {"b": 0.7}})
    k_a = 0.5 * 0.4 + 0.5 * (0.5 * 0.9 + 0.5 * 0.5)
    assert host.last_weights["a"] == pytest.approx(-((1 - k_a) ** 2) * math.log(k_a))
    assert host.kpi.tolist() == pytest.approx([k_a, 0.5, 0.5 * 0.2 + 0.5 * 0.5])  # (the buffer a checkpoint keeps)


def test_tchebycheff_weighs_a_micro_batch_without_reading_its_buffer_from_the_device():
    # was: every call read its reference losses from the weighting's buffer (torch.isnan(...) per task, the norm, each
    # reference), on a GPU reads that wait for the micro-batch's forward queued just before; once the references are
    # known (the first losses, read as they must be), the meta device, which holds no values, stands in
    host = build_weighting({"method": "tchebycheff"}, TASKS, SIZES)
    device = build_weighting({"method": "tchebycheff"}, TASKS, SIZES)
    for w in (host, device):
        w(losses(a=2.0, b=4.0), stats={"ref_loss": {"c": 0.5}})
        w.synchronize(lambda tensor: tensor)  # (one rank)
    device.to("meta")
    for present in (("a", "b", "c"), ("b",)):
        loss = device({t: torch.tensor(1.0, device="meta") for t in present})
        assert loss.device.type == "meta"
        host(losses(**dict.fromkeys(present, 1.0)))
        assert device.last_weights == host.last_weights
        assert device.task_weights(0.0, {}) == host.task_weights(0.0, {})
    norm = 1 / 2.0 + 1 / 4.0 + 1 / 0.5
    assert host.last_weights == {"b": pytest.approx(1 / (4.0 * norm))}
    assert host.ref_loss.tolist() == [2.0, 4.0, 0.5]  # (the buffer a checkpoint keeps)


@pytest.mark.parametrize("size, shown", [("400", "'400'"), (math.inf, "inf"), (True, "True")])
def test_a_size_that_is_no_finite_number_of_rows_is_refused_naming_the_task(size, shown):
    # a string was a raw TypeError ('>' not supported between 'str' and 'int'); inf became a silent weight 0 (1/inf),
    # True a task of one row
    for config in ({"method": "size"}, {"method": "curriculum", "base": "size"}):
        with pytest.raises(WeightingError, match=f"task 'b' has size {re.escape(shown)}: sizes must be finite "
                                                 f"numbers > 0 .the rows of each task"):
            build_weighting(config, TASKS, {"a": 100, "b": size, "c": 1000})
    assert build_weighting({"method": "size"}, TASKS, {"a": np.int64(1), "b": np.float32(1), "c": 2}).weights == {
        "a": 0.4, "b": 0.4, "c": 0.2}  # (numpy's numbers are numbers)


def test_dtp_task_weights_refuse_a_kpi_of_an_unknown_task_or_out_of_range_as_a_step_does():
    # was: task_weights (the weights a step would take, as logged) raised a raw KeyError 'zz' for a KPI of a task the
    # weighting has not, and took a KPI of 1.5 without a word, where the step itself refuses both naming the task
    w = build_weighting({"method": "dtp", "gamma": 2.0, "momentum": 0.5}, TASKS, SIZES)
    with pytest.raises(WeightingError, match="^KPI given for unknown task 'zz'$"):
        w.task_weights(0.0, {"kpi": {"a": 0.9, "zz": 0.5}})
    with pytest.raises(WeightingError, match=r"^task 'a' has KPI 1.5: KPIs must be in \[0, 1\]$"):
        w.task_weights(0.0, {"kpi": {"a": 1.5}})
    with pytest.raises(WeightingError, match="unknown task 'zz'"):
        w(losses(a=1.0), stats={"kpi": {"a": 0.9, "zz": 0.5}})
    k = 0.5 * 0.9 + 0.5 * 0.5  # (neither refusal folded the valid KPI before it in)
    assert w.task_weights(0.0, {"kpi": {"a": 0.9}})["a"] == pytest.approx(-((1 - k) ** 2) * math.log(k))


@pytest.mark.parametrize("size", [0, 0.0, -3])
def test_a_size_of_no_rows_or_fewer_is_refused_naming_the_task(size):
    # kills a mutant of _check_sizes (a size of 0 let through, to a raw ZeroDivisionError in base_weights) the tests
    # let live
    with pytest.raises(WeightingError, match=rf"^task 'b' has size {size!r}: sizes must be finite numbers > 0 \(the "
                                             rf"rows of each task\)$"):
        build_weighting({"method": "size"}, TASKS, {"a": 100, "b": size, "c": 1000})
