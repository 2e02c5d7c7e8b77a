"""`evaluation.every`: zero-shot evaluations of the held-out tasks during training — each scores the model of
its step, none changes the training, all are logged (held_out.jsonl, reports, plot); bad values are refused."""
from __future__ import annotations

import json

import pytest

import task_registry
from t2t_mtl.config import ConfigError, config_from_dict, load_config
from t2t_mtl.engine.export import load_trained_model
from t2t_mtl.engine.final_evaluation import evaluation_label
from t2t_mtl.engine.logging import read_held_out
from t2t_mtl.engine.signal_checks import check_signal_config
from t2t_mtl.engine.trainer import train
from t2t_mtl.engine.validation import evaluation_every, evaluation_plan
from t2t_mtl.evaluation import evaluate_tasks
from t2t_mtl.evaluation.aggregate import summarize
from t2t_mtl.sampling import build_sampler
from t2t_mtl.sampling.static import UniformSampler

from engine_helpers import TASKS, step_records, tiny_config, train_tiny_tokenizer

UNIFORM = UniformSampler({"parity": 1}, seed=0)  # (a sampler that learns from no validation)
EVALUATION = {"held_out": True, "max_examples": 2, "batch_size": 8}
SECTIONS = {"data": {"held_out_clusters": ["comparison"]},
            "training": {"steps": 6, "checkpoint_every": 2, "keep_checkpoints": 5}}


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


@pytest.mark.parametrize("stage", [0, 3])  # ZeRO-3: the evaluation gathers partitioned parameters, then trains on
def test_periodic_evaluations_score_the_model_of_their_step_and_change_nothing(tmp_path, tok, stage):
    model = tiny_config(tmp_path, tok, tmp_path)["model"]
    # dropout on: an evaluation that drew from the training RNG would change the training losses
    sections = {**SECTIONS, "deepspeed": {"zero_stage": stage},
                "model": {**model, "dims": {**model["dims"], "dropout_rate": 0.1}}}
    plain_cfg = tiny_config(tmp_path / "plain", tok, tmp_path / "cache", evaluation=EVALUATION, **sections)
    periodic_cfg = tiny_config(tmp_path / "periodic", tok, tmp_path / "cache", evaluation={**EVALUATION, "every": 2},
                               **sections)
    periodic_cfg["training"]["plot"] = True
    plain = train(plain_cfg, evaluate_held_in=False)
    periodic = train(periodic_cfg, evaluate_held_in=False)

    # evaluating during training changes nothing in training
    losses = [[step_records(cfg["training"]["output_dir"])[s]["loss"] for s in range(1, 7)]
              for cfg in (plain_cfg, periodic_cfg)]
    assert losses[0] == losses[1]
    assert plain.held_out_scores == periodic.held_out_scores

    run = tmp_path / "periodic"
    records = read_held_out(run / "logs")
    assert [r["step"] for r in records] == [2, 4, 6]
    assert [r["step"] for r in read_held_out(tmp_path / "plain" / "logs")] == [6]  # the after-training one only
    assert records[-1]["tasks"] == periodic.held_out_scores
    assert records[-1]["macro_average"] == periodic.held_out_accuracy
    assert len({json.dumps(r["tasks"]) for r in records}) > 1  # the model changed between evaluations

    # independent check: each periodic record is the evaluation of that step's checkpoint, loaded afresh
    names, settings = evaluation_plan(config_from_dict(periodic_cfg))
    for record in records[:-1]:
        model, tokenizer, meta = load_trained_model(run / "checkpoints" / f"step-{record['step']:08d}")
        assert meta["step"] == record["step"]
        summary = summarize(evaluate_tasks(model, tokenizer, names, settings, progress=False))
        assert record["tasks"] == {task: s.median for task, s in summary["tasks"].items()}
        assert record["macro_average"] == summary["macro_average"]
        report_dir = run / "eval" / f"step-{record['step']:08d}"
        assert record["report"] == str(report_dir / "report.json")
        assert (report_dir / "report.md").exists() and not (report_dir / "plots").exists()
    assert (run / "eval" / "report.json").exists()  # the after-training report stays where it was
    assert (run / "logs" / "held_out.png").stat().st_size > 1000


@pytest.mark.parametrize("every", [-1, "2", True, 1.5])
def test_bad_every_values_are_refused_naming_the_key(every):
    cfg = config_from_dict({"model": {"dims": {"d_model": 8}}, "data": {"tasks": ["parity"],
                            "held_out_clusters": ["comparison"]}, "evaluation": {**EVALUATION, "every": every}})
    with pytest.raises(ConfigError, match="evaluation.every"):
        check_signal_config(cfg, UNIFORM)


def test_every_without_tasks_to_evaluate_is_refused():
    cfg = config_from_dict({"model": {"dims": {"d_model": 8}}, "data": {"tasks": ["parity"]},
                            "evaluation": {"every": 100}})
    with pytest.raises(ConfigError, match=r"held_out: true, tasks: \[..\] or bigbench: DIR to say what"):
        check_signal_config(cfg, UNIFORM)


@pytest.mark.parametrize("tasks, message", [
    ("parity", "evaluation.tasks must be a list of task names.*got 'parity'"),  # was: unknown task 'p'
    (["parity", "sort_words", "parity"], "evaluation.tasks names parity more than once"),  # was: scored twice
])
def test_evaluation_tasks_must_be_a_list_of_distinct_names(tasks, message):
    cfg = config_from_dict({"model": {"dims": {"d_model": 8}}, "data": {"tasks": ["dedup_words"]},
                            "evaluation": {"tasks": tasks}})
    with pytest.raises(ConfigError, match=message):
        evaluation_plan(cfg)


def test_an_unknown_evaluation_task_names_the_key():
    # was: "unknown task 'partiy'; did you mean 'parity'? ..." without saying which config key names it
    cfg = config_from_dict({"model": {"dims": {"d_model": 8}}, "data": {"tasks": ["dedup_words"]},
                            "evaluation": {"tasks": ["partiy"]}})
    with pytest.raises(task_registry.UnknownTaskError, match=r"^evaluation\.tasks: unknown task 'partiy'; did you "
                                                             r"mean 'parity'"):
        evaluation_plan(cfg)


@pytest.mark.parametrize("settings, message", [
    ({"scoring": "generate", "length_normalize": True}, "evaluation.length_normalize .* no effect with"),
    ({"scoring": "rank", "num_beams": 4}, "evaluation.num_beams .* no effect with"),
    # was accepted and ignored, though `t2t-mtl eval` refuses --max-new-tokens with --scoring rank
    ({"scoring": "rank", "max_new_tokens": 8}, "evaluation.max_new_tokens limits generation; it has no effect with "
                                               "evaluation.scoring: rank"),
])
def test_evaluation_settings_the_scoring_would_ignore_are_refused(settings, message):
    # were accepted and ignored (the eval command refuses the same options)
    cfg = config_from_dict({"model": {"dims": {"d_model": 8}}, "data": {"tasks": ["dedup_words"]},
                            "evaluation": {"tasks": ["parity"], **settings}})
    with pytest.raises(ConfigError, match=message):
        evaluation_plan(cfg)


@pytest.mark.parametrize("held_out", ["false", "flase", 1])
def test_evaluation_held_out_must_be_a_bool(held_out):
    # was: bool(value), so the string "false" (or a typo) evaluated the held-out clusters
    cfg = config_from_dict({"model": {"dims": {"d_model": 8}}, "data": {"tasks": ["parity"],
                            "held_out_clusters": ["comparison"]}, "evaluation": {"held_out": held_out}})
    with pytest.raises(ConfigError, match="evaluation.held_out must be true or false, got"):
        evaluation_plan(cfg)


def test_held_out_false_turns_a_base_configs_section_off():
    # the quickstart's section (held_out, max_examples, scoring) could not be switched off from the command line:
    # `--set evaluation.held_out=false` was refused for the settings left, `evaluation={}` merges nothing
    cfg = load_config("quickstart", ["evaluation.held_out=false", "evaluation.every=100"])
    check_signal_config(cfg, build_sampler(cfg.sampling, {"parity": 1}, seed=0))
    assert evaluation_plan(cfg) == ([], None) and evaluation_every(cfg) == 0


def test_evaluation_max_input_length_sets_the_evaluation_limit():
    # was: refused as an unknown key, although README and eval/predict --help read the run's limit from it
    cfg = {"model": {"dims": {"d_model": 8}}, "data": {"tasks": ["dedup_words"], "max_input_length": 96}}
    _, settings = evaluation_plan(config_from_dict({**cfg, "evaluation": {"tasks": ["parity"],
                                                                          "max_input_length": 200}}))
    assert settings.max_input_length == 200
    _, settings = evaluation_plan(config_from_dict({**cfg, "evaluation": {"tasks": ["parity"]}}))
    assert settings.max_input_length == 96  # default: data.max_input_length


def test_evaluation_label_names_trained_tasks_and_shots():
    assert evaluation_label(["a", "b"], ["c"], 0) == "held-out zero-shot"
    assert evaluation_label(["a", "b"], ["c"], 3) == "held-out 3-shot"
    assert evaluation_label(["a", "c"], ["c", "d"], 0) == "zero-shot (trained: c)"
    assert evaluation_label(["a", "d", "c"], ["c", "d"], 0) == "zero-shot (trained: d, c)"  # evaluation order
    assert evaluation_label(["c", "d"], ["d", "c"], 2) == "2-shot (trained tasks)"


def test_a_run_evaluating_a_trained_task_does_not_call_it_held_out(tmp_path, tok, capsys):
    trained = TASKS[0]
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache",
                      evaluation={"tasks": [trained], "max_examples": 2, "batch_size": 8, "every": 2},
                      training={**tiny_config(tmp_path, tok, tmp_path)["training"], "steps": 3})
    train(cfg, evaluate_held_in=False)
    out = capsys.readouterr().out
    assert "held-out" not in out
    assert "step 2: zero-shot (trained tasks) macro average" in out
    assert "zero-shot (trained tasks) macro average over 1 task:" in out


def test_the_evaluation_plan_adds_the_held_out_clusters_tasks_after_the_named_ones_once_with_the_runs_defaults():
    clusters = ["comparison"]
    cfg = config_from_dict({"model": {"dims": {"d_model": 8}}, "training": {"seed": 7},
                            "data": {"tasks": ["parity"], "held_out_clusters": clusters, "max_target_length": 24},
                            "evaluation": {"held_out": True, "tasks": ["sort_words", "compare_numbers"]}})
    names, settings = evaluation_plan(cfg)
    held_out = task_registry.list_tasks(cluster="comparison")
    assert "compare_numbers" in held_out and "sort_words" not in held_out
    assert names == ["sort_words", "compare_numbers", *(n for n in held_out if n != "compare_numbers")]
    # defaults from the run: its target length bounds the generations, its seed the evaluation's draws
    assert (settings.max_new_tokens, settings.seed) == (24, 7)


def test_a_periodic_evaluations_warning_of_its_rows_is_logged_once_while_its_words_stay_the_same(tmp_path, tok,
                                                                                                   caplog):
    # was: the warning of the inputs an evaluation truncated was logged again, word for word, at every
    # evaluation.every and after training (a filter's dropped rows were logged once already)
    import logging

    from engine_helpers import write_yaml_task

    tasks = write_yaml_task(tmp_path / "tasks", "held_q", held_out=True, eval_only=True, cluster="held_c")
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", data={"tasks_dir": str(tasks),
                      "held_out_clusters": ["held_c"]}, evaluation={**EVALUATION, "every": 2, "max_input_length": 6})
    with caplog.at_level(logging.WARNING):
        train(cfg, evaluate_held_in=False)
    assert [r["step"] for r in read_held_out(tmp_path / "run" / "logs")] == [2, 4, 6]
    truncated = [r.getMessage() for r in caplog.records if "are truncated" in r.getMessage()]
    assert len(truncated) == 1, truncated
    assert truncated[0].startswith("task 'held_q': inputs longer than max_input_length=6 tokens are truncated (the "
                                   "model sees only their beginning) in 1 template: 'plain' 2 of 2;")


def test_warned_once_logs_a_warning_again_when_its_words_differ(caplog):
    # (an MoE model's drops while scoring change with its weights: each new count is news)
    import logging

    from t2t_mtl.repeated_warnings import EVAL_ROWS_LOGGER, warned_once

    log = logging.getLogger(EVAL_ROWS_LOGGER)
    with caplog.at_level(logging.INFO, EVAL_ROWS_LOGGER), warned_once():
        for dropped in (3, 3, 5, 3):
            log.warning("the MoE layers dropped %d", dropped)
        log.info("an info line")
        log.info("an info line")
    log.warning("the MoE layers dropped %d", 3)  # (after the block: logged)
    assert [r.getMessage() for r in caplog.records] == [
        "the MoE layers dropped 3", "the MoE layers dropped 5", "an info line", "an info line",
        "the MoE layers dropped 3"]


@pytest.mark.parametrize("evaluation, what_to_do", [
    ({"held_out": True}, "list evaluation.tasks"),
    ({"held_out": True, "tasks": ["compare_numbers"]},
     "set evaluation.held_out: false to score evaluation.tasks alone")])
def test_held_out_evaluation_without_held_out_clusters_is_refused_saying_what_to_change(evaluation, what_to_do):
    # was "... or list evaluation.tasks" where they were listed: a config on the quickstart (held_out: true) that
    # names its own tasks to score and holds out no cluster
    cfg = config_from_dict({"model": {"dims": {"d_model": 8}}, "data": {"tasks": ["parity"], "held_out_clusters": []},
                            "evaluation": evaluation})
    with pytest.raises(ConfigError) as error:
        evaluation_plan(cfg)
    assert str(error.value) == ("evaluation.held_out is true but data.held_out_clusters is empty: name the clusters to "
                                f"hold out, or {what_to_do}")
