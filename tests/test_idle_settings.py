"""The warnings of settings a run leaves idle (`engine.idle_settings.config_warnings`) met at their edges: the unused
rates a warning lists, the periods as long as the run that are not warned of."""
from __future__ import annotations

import pytest

from t2t_mtl.config import load_config
from t2t_mtl.engine.idle_settings import config_warnings


def test_the_unused_rates_of_a_mixture_of_more_than_four_tasks_are_shown_for_four():
    import task_registry

    rates = {"parity": 5.0, "count_word": 4.0, "reverse_words": 3.0, "sort_words": 2.0, "sort_numbers": 1.0}
    with task_registry.isolated_registry():
        task_registry.load_builtin_tasks()
        task_registry.register_mixture(task_registry.Mixture("five", rates))
        cfg = load_config("quickstart", ["data.mixture=five", "sampling.strategy=uniform"])
        (warning,) = [w for w in config_warnings(cfg) if w.startswith("data.mixture")]
    assert warning.startswith("data.mixture 'five' gives its tasks rates (parity 0.333, count_word 0.267, "
                              "reverse_words 0.2, sort_words 0.133, … (5 tasks)), but sampling.strategy 'uniform'")


@pytest.mark.parametrize("key, warned", [
    ("training.warmup", "training.warmup (11) >= training.steps (10): the learning rate never leaves warm-up"),
    ("training.validate_every", "training.validate_every (11) > training.steps (10): no periodic validation runs"),
    ("evaluation.every", "evaluation.every (11) > training.steps (10): no zero-shot evaluation during training"),
])
def test_a_period_of_the_runs_length_is_not_warned_of_and_a_longer_one_is(key, warned):
    def warnings(length):
        cfg = load_config("quickstart", ["training.steps=10", "training.warmup=0", "evaluation.tasks=[parity]",
                                         f"{key}={length}"])
        return [w for w in config_warnings(cfg) if w.startswith(key)]

    assert warnings(9) == []
    if key == "training.warmup":  # warm-up for all the steps never reaches the peak learning rate
        assert warnings(10) == [warned.replace("(11)", "(10)")]
    else:  # the last step still validates or evaluates
        assert warnings(10) == []
    assert len(warnings(11)) == 1 and warnings(11)[0].startswith(warned)


def test_one_expert_is_warned_of_and_two_are_not():
    # was accepted without a word: top-k routing over one expert sends every token to it, a dense feed-forward layer
    # behind a gate (a softmax over one logit is 1), with a router and auxiliary losses that change nothing
    def warnings(*moe):
        cfg = load_config("quickstart", ["model.moe.top_k=1", *moe])
        return [w for w in config_warnings(cfg) if w.startswith("model.moe.num_experts")]

    assert warnings("model.moe.num_experts=1") == [
        "model.moe.num_experts 1: every token goes to the one expert, so the routing chooses nothing and each MoE "
        "layer is its dense feed-forward layer behind a gate (1 under score softmax), with the routing's parameters "
        "and auxiliary losses on top; give at least 2 experts, or set model.moe to null for a dense model"]
    assert len(warnings("model.moe.num_experts=1", "model.moe.routing=task", "model.moe.task_names=[a, b]")) == 1
    assert warnings("model.moe.num_experts=2") == warnings() == []  # (unset: 8)


def test_renormalised_top_1_gates_are_warned_of_as_they_give_the_routing_no_gradient():
    # was accepted without a word: a token's one gate renormalised over its one expert is 1 whatever the router's
    # logits, so the training loss never reaches the router (nor the task gate rows) and only the aux losses train it
    import torch
    from transformers import T5Config

    from t2t_mtl.model.moe_config import MoEConfig
    from t2t_mtl.model.moe_layer import MoEFeedForward

    def router_grad(renormalize):
        torch.manual_seed(0)
        layer = MoEFeedForward(T5Config(d_model=8, d_ff=16, dropout_rate=0.0),
                               MoEConfig(num_experts=4, top_k=1, renormalize=renormalize, backend="reference"))
        layer.reset_parameters()
        layer(torch.randn(2, 3, 8)).square().sum().backward()  # (the output alone: no aux loss)
        return layer.router.weight.grad.abs().max().item()

    assert router_grad(True) < 1e-6 * router_grad(None)  # (zero up to the rounding of p / p)

    def warnings(*moe):
        cfg = load_config("quickstart", [*moe])
        return [w for w in config_warnings(cfg) if w.startswith("model.moe.renormalize")]

    message = ("model.moe.renormalize true with top_k 1: each token's one gate is renormalised to 1, so the training "
               "loss gives {} no gradient and only the auxiliary losses move them; leave renormalize unset (top-1 "
               "gates then stay the experts' scores, as in Switch) or set it false")
    assert warnings("model.moe.top_k=1", "model.moe.renormalize=true") == [message.format("the router")]
    assert warnings("model.moe.top_k=1", "model.moe.renormalize=true", "model.moe.routing=task",
                    "model.moe.task_names=[a, b]") == [message.format("the task gate rows")]
    assert warnings("model.moe.top_k=1", "model.moe.renormalize=true", "model.moe.routing=hybrid",
                    "model.moe.task_names=[a, b]") == [message.format("the router and the task gate rows")]
    assert warnings("model.moe.top_k=1") == warnings("model.moe.top_k=1", "model.moe.renormalize=false") == []
    assert warnings("model.moe.top_k=2", "model.moe.renormalize=true") == []
    # one expert is warned of already (its one gate is 1 under softmax however it is normalised)
    assert warnings("model.moe.num_experts=1", "model.moe.top_k=1", "model.moe.renormalize=true") == []


def test_a_routing_backend_under_task_routing_is_warned_of_as_it_runs_no_routing_kernel():
    # was accepted without a word: task routing picks a task's experts from its gate row with the PyTorch reference
    # (one [tasks, E] table per batch), whatever model.moe.backend says
    from unittest import mock

    import torch
    from transformers import T5Config

    from t2t_kernels.moe import route
    from t2t_mtl.model.moe_config import MoEConfig
    from t2t_mtl.model.moe_layer import MoEFeedForward

    layer = MoEFeedForward(T5Config(d_model=8, d_ff=16, dropout_rate=0.0),
                           MoEConfig(num_experts=4, top_k=2, routing="task", task_names=["a", "b"], backend="triton"))
    layer.task_ids = torch.tensor([0, 1])
    with mock.patch("t2t_mtl.model.moe_layer.route", wraps=route) as routed:
        layer(torch.randn(2, 3, 8))
    assert [call.kwargs["backend"] for call in routed.call_args_list] == ["reference"]

    def warnings(*moe):
        cfg = load_config("quickstart", [*moe])
        return [w for w in config_warnings(cfg) if w.startswith("model.moe.backend")]

    assert warnings("model.moe.routing=task", "model.moe.task_names=[a, b]", "model.moe.backend=triton") == [
        "model.moe.backend: routing task runs no routing kernel (a task's experts are the top_k of its gate row, "
        "chosen once per batch by the PyTorch reference), so it has no effect (it applies to routing token and "
        "hybrid)"]
    assert warnings("model.moe.routing=task", "model.moe.task_names=[a, b]") == []
    assert warnings("model.moe.routing=hybrid", "model.moe.task_names=[a, b]", "model.moe.backend=reference") == []
    assert warnings("model.moe.backend=reference") == []


def test_a_sampling_schedule_the_run_never_moves_is_warned_of_at_its_edge():
    # annealed over 32 examples (8 and 24): alpha 1 until epoch 1 starts; a last step that starts before it draws at
    # alpha 1 throughout, one that starts at it draws at alpha 5/3 (epoch 2 of 3)
    from t2t_mtl.engine.idle_settings import idle_schedule_warning
    from t2t_mtl.sampling import build_sampler

    sizes = {"small": 8, "large": 24}
    annealed = build_sampler({"strategy": "annealed", "epochs": 3}, sizes, seed=0, log=False)
    assert idle_schedule_warning(annealed, 28 / 32, 32) == (
        "sampling.strategy 'annealed' changes its rates over the epochs of the mixture's 32 examples, but the run's "
        "last step starts at epoch 0.875 of them, before its first change: it draws at its rates of epoch 0 "
        "throughout, so the schedule has no effect; train longer, or on fewer examples (data.max_examples_per_task)")
    assert idle_schedule_warning(annealed, 1.0, 32) is None
    assert annealed.epoch == 0 and annealed.probabilities()["small"] == 0.25  # (the sampler itself never moved)
    dynamic = build_sampler({"strategy": "dynamic_temperature", "alpha_0": 2, "alpha_max": 4, "warmup_epochs": 2},
                            sizes, seed=0, log=False)
    assert idle_schedule_warning(dynamic, 0.5, 32) is not None and idle_schedule_warning(dynamic, 1.5, 32) is None
    # no schedule to leave idle: rates constant over the epochs, learned ones, tasks of one size
    for config, task_sizes in (({"strategy": "temperature", "alpha": 2}, sizes),
                               ({"strategy": "bandit_softmax", "metric": "loss"}, sizes),
                               ({"strategy": "annealed", "epochs": 3}, {"a": 16, "b": 16})):
        assert idle_schedule_warning(build_sampler(config, task_sizes, seed=0, log=False), 0.1, 32) is None


def test_a_registered_samplers_schedule_is_not_looked_at():
    # its instance may hold what a copy cannot take (a lock here): the run's start must not fail on a warning
    import threading

    from t2t_mtl.engine.idle_settings import idle_schedule_warning
    from t2t_mtl.sampling.registry import STRATEGIES
    from t2t_mtl.sampling.static import AnnealedSampler

    class LockedAnnealed(AnnealedSampler):
        strategy = "locked_annealed"

        def __init__(self, task_sizes, **kwargs):
            super().__init__(task_sizes, **kwargs)
            self.lock = threading.Lock()

    sampler = LockedAnnealed({"small": 8, "large": 24}, epochs=3, seed=0)
    assert "locked_annealed" not in STRATEGIES and idle_schedule_warning(sampler, 0.5, 32) is None


def test_a_resumed_run_past_a_schedules_first_change_is_not_warned_of():
    # resumed at epoch 1.5 of an annealed schedule over 3 (alpha 5/3 since epoch 1), its last step at 1.9: the run
    # moved the rates at epoch 1, so the schedule had its effect; the steps left draw at alpha 5/3 until epoch 2
    from t2t_mtl.engine.idle_settings import idle_schedule_warning
    from t2t_mtl.sampling import build_sampler

    sampler = build_sampler({"strategy": "annealed", "epochs": 3}, {"small": 8, "large": 24}, seed=0, log=False)
    sampler.set_epoch(1.5)
    assert idle_schedule_warning(sampler, 1.9, 32) is None


def test_the_sampling_keys_ca_mtl_selection_leaves_unread_are_warned_of():
    # was accepted without a word: the uncertainty strategy's micro-batches are the most uncertain candidates of a pool
    # of every task whatever sampling.mode says, and it draws no tasks from blocks; tchebycheff's max then spans tasks
    def warnings(*settings):
        cfg = load_config("quickstart", ["sampling.strategy=uncertainty", *settings])
        return [w for w in config_warnings(cfg) if w.startswith(("sampling.", "weighting."))]

    assert warnings("sampling.mode=homogeneous", "sampling.block_size=64") == [
        "sampling.mode and sampling.block_size: sampling.strategy 'uncertainty' keeps the most uncertain candidates "
        "of a pool of every task for each micro-batch, so its micro-batches mix tasks and it draws no tasks: they "
        "have no effect"]
    assert warnings("sampling.mode=mixed") == warnings("sampling.mode=mixed", "weighting.method=tchebycheff") == []
    (only,) = warnings("sampling.mode=homogeneous", "weighting.method=tchebycheff")  # (its max spans tasks here)
    assert only.startswith("sampling.mode: sampling.strategy 'uncertainty' keeps") and only.endswith("it has no effect")


def test_a_curriculum_task_whose_start_epoch_the_last_step_reaches_is_not_warned_of():
    # kills a mutant of idle_curriculum_warning that the engine test let live (its start epoch lay past the run):
    # a task starting at the very epoch of the last step (there at half its weight, not below) named as late
    import math

    from t2t_mtl.engine.idle_settings import idle_curriculum_warning
    from t2t_mtl.weighting.methods import CurriculumWeighting, EqualWeighting

    weighting = CurriculumWeighting(["a", "b", "c"], start_epochs={"b": 1.5, "c": 2.0})
    assert idle_curriculum_warning(weighting, 1.5, 40) == (
        f"weighting.method curriculum fades each task in around its start epoch, but the run's last step starts at "
        f"epoch 1.5 of the mixture's 40 examples, before the start epoch of c (2: {1 / (1 + math.exp(0.5)):.3g} of its "
        f"full weight there): such a task trains at less than half its full loss weight throughout; lower its "
        f"weighting.start_epochs, train longer, or on fewer examples (data.max_examples_per_task)")
    assert idle_curriculum_warning(weighting, 2.0, 40) is None
    assert idle_curriculum_warning(EqualWeighting(["a", "b"]), 0.5, 40) is None


def test_the_ema_uncertainty_sampler_draws_tasks_and_is_not_told_its_mode_is_unread():
    # kills a mutant of sampling_warnings that its tests let live: uncertainty_ema (which draws a task per
    # micro-batch by its rates, unlike CA-MTL's selection) read as selecting, its sampling.mode and block_size said to
    # have no effect and tchebycheff's one-task warning dropped
    cfg = load_config("quickstart", ["sampling.strategy=uncertainty_ema", "sampling.mode=homogeneous",
                                     "sampling.block_size=64", "weighting.method=tchebycheff"])
    assert [w for w in config_warnings(cfg) if w.startswith(("sampling.", "weighting."))] == [
        "weighting.method tchebycheff takes the max over the tasks of one micro-batch, and under sampling.mode "
        "homogeneous (the default) each micro-batch holds one task, so it reduces to the weighted sum of the tasks' "
        "losses; sampling.mode: mixed gives the max over tasks"]
