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
