"""Rules of a run's checks (`engine.run_checks.check_run_config`) met at their edges: the split check of evaluated
tasks, gradient surgery's per-task adapters, CA-MTL's pool and periodic validation's examples (the tasks data.tasks
picks: test_run_mixture; gradient surgery's ZeRO-3 offload: test_checked_deepspeed; the warnings of idle settings:
test_idle_settings)."""
from __future__ import annotations

import pytest

from t2t_mtl.config import load_config


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


def test_a_python_tasks_unknown_metric_is_refused_before_training_as_a_yaml_tasks_is(tmp_path):
    # was: Task(..., metrics=["acuracy"]) from a task module trained (train --print-config passed), and only the
    # evaluation after training, or a later `t2t-mtl eval`, met the name; a YAML task's is refused when it loads
    import task_registry
    from t2t_mtl.config import ConfigError, config_from_dict
    from t2t_mtl.engine.run_checks import check_run_config
    from t2t_mtl.evaluation.metrics import task_metric_problems

    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"q": "a", "a": "b"}\n')
    template = task_registry.Template("t", "{{ q }} ||| {{ a }}")
    with task_registry.isolated_registry():
        for name, metrics in (("trained", ("accuracy",)), ("misspelt", ("acuracy",))):
            task_registry.register_task(task_registry.Task(name, task_registry.LocalFileSource(rows), [template],
                                                           metrics=metrics))
        reference = task_metric_problems(task_registry.get_task("misspelt"))[0][1]  # (what loading a YAML task says)
        for data, evaluation in (({"tasks": ["misspelt"]}, {}), ({"tasks": ["trained"]}, {"tasks": ["misspelt"]})):
            cfg = config_from_dict({"model": {"dims": {"d_model": 8}}, "tokenizer": {"path": "tok"}, "data": data,
                                    "evaluation": evaluation})
            with pytest.raises(ConfigError) as caught:
                check_run_config(cfg)
            assert str(caught.value) == (f"{reference}; the run would meet it when it evaluates the task, after "
                                         f"training: correct the task's `metrics`")
        check_run_config(config_from_dict({"model": {"dims": {"d_model": 8}}, "tokenizer": {"path": "tok"},
                                           "data": {"tasks": ["trained"]}}))


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


def test_the_checks_log_no_rates_of_their_placeholder_sizes(caplog):
    # was: the checks' sampler, built on 1000 rows a task before any data is read, logged its rates table on
    # t2t_mtl.sampling: with INFO logging on (logging.basicConfig in a notebook), train() printed a table of sizes
    # 1000 and their rates before the run's own
    import logging

    from t2t_mtl.engine.run_checks import check_run_config

    cfg = load_config("quickstart", ["data.tasks={parity: 1, count_word: 3}", "sampling.strategy=explicit"])
    with caplog.at_level(logging.INFO, logger="t2t_mtl.sampling"):
        sampler = check_run_config(cfg).sampler
    assert sampler.probabilities() == {"parity": 0.25, "count_word": 0.75}  # (it was built: its rates are right)
    assert [r.getMessage() for r in caplog.records if r.name == "t2t_mtl.sampling"] == []
