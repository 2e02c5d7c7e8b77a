"""Rules of a run's checks (`engine.run_checks`) met at their edges: the unused rates a warning lists, the periods as
long as the run that are not warned of, the split check of evaluated tasks, gradient surgery's per-task adapters,
CA-MTL's pool and periodic validation's examples (the tasks data.tasks picks: test_run_mixture; gradient surgery's
ZeRO-3 offload: test_checked_deepspeed)."""
from __future__ import annotations

import pytest

from t2t_mtl.config import load_config
from t2t_mtl.engine.run_checks import config_warnings


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


def test_the_split_check_covers_the_tasks_the_run_evaluates_as_well_as_those_it_trains(tmp_path):
    import task_registry
    from t2t_mtl.config import ConfigError, config_from_dict
    from t2t_mtl.engine.run_checks import check_run_config

    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"q": "a", "a": "b"}\n')
    template = task_registry.Template("t", "{{ q }} ||| {{ a }}")
    with task_registry.isolated_registry():
        for name, splits in (("trained", ("train",)), ("evaluated", ("train", "validation"))):
            task_registry.register_task(task_registry.Task(name, task_registry.LocalFileSource({"train": rows}),
                                                           [template], splits=splits))
        cfg = config_from_dict({"model": {"dims": {"d_model": 8}}, "tokenizer": {"path": "tok"},
                                "data": {"tasks": ["trained"]}, "evaluation": {"tasks": ["evaluated"]}})
        with pytest.raises(ConfigError, match=r"^task 'evaluated' has the split\(s\) \['validation'\]"):
            check_run_config(cfg)


def test_camtl_refuses_a_pool_of_one_micro_batch_and_takes_a_larger_one():
    from t2t_mtl.config import ConfigError
    from t2t_mtl.engine.run_checks import check_run_config

    def cfg(pool_per_task):
        return load_config("quickstart", ["data.tasks=[parity, count_word]", "training.micro_batch_size=4",
                                          "sampling.strategy=uncertainty", f"sampling.pool_per_task={pool_per_task}"])

    with pytest.raises(ConfigError, match=r"pool_per_task x tasks = 4 candidates, so it selects nothing: raise "
                                          r"sampling.pool_per_task above 2"):
        check_run_config(cfg(2))  # (2 tasks x 2 = 4 candidates for a micro-batch of 4)
    check_run_config(cfg(3))


def test_gradient_surgery_takes_per_task_adapters_beside_trained_shared_parameters():
    # (with model.lora.trainable the tasks' gradients meet on the shared layer norms: something to combine)
    from t2t_mtl.engine.run_checks import check_run_config

    check_run_config(load_config("quickstart", [
        "data.tasks=[parity, count_word]", "sampling.mode=homogeneous", "gradient_surgery.method=pcgrad",
        "training.grad_accum=2", "model.lora={per_task: true, trainable: [layer_norm]}"]))


def test_periodic_validation_needs_at_least_one_example():
    from t2t_mtl.config import ConfigError
    from t2t_mtl.engine.run_checks import check_run_config

    def cfg(examples):
        return load_config("quickstart", ["data.tasks=[parity]", "training.validate_every=2",
                                          f"training.validate_examples={examples}"])

    with pytest.raises(ConfigError, match=r"^training.validate_examples must be >= 1, got 0$"):
        check_run_config(cfg(0))
    check_run_config(cfg(1))
