"""`evaluation.bigbench`: BIG-bench JSON tasks in a training config's evaluation, scored after training as
`t2t-mtl eval --bigbench DIR` scores them; a value that names no BIG-bench task is refused naming the key."""
from __future__ import annotations

import json
import shutil

import pytest

import task_registry
from t2t_mtl.cli import main as cli_main
from t2t_mtl.config import ConfigError, config_from_dict
from t2t_mtl.engine.trainer import train
from t2t_mtl.engine.validation import evaluation_plan

from engine_helpers import tiny_config, train_tiny_tokenizer

SMALL = {"model": {"dims": {"d_model": 8}}, "data": {"tasks": ["parity"]}}


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


def _results(report_json, task):
    """A report.json's evaluation settings and its per-template results of `task`."""
    report = json.loads(report_json.read_text())
    return report["settings"], [result for result in report["results"] if result["task"] == task]


def test_post_training_evaluation_scores_bigbench_tasks_as_eval_does(tmp_path, tok, bigbench_dir, capsys):
    # was: evaluation.bigbench refused as an unknown key; a run's evaluation had no way to BIG-bench tasks but a
    # --task-module calling import_bigbench
    folder = tmp_path / "bigbench"
    shutil.copytree(bigbench_dir / "anachronisms", folder / "anachronisms")
    run = tmp_path / "run"
    cfg = tiny_config(run, tok, tmp_path / "cache", training={"steps": 2},
                      evaluation={"tasks": ["parity"], "bigbench": str(folder), "max_examples": 3, "scoring": "rank"})
    with task_registry.isolated_registry():
        result = train(cfg, evaluate_held_in=False)
    assert sorted(result.held_out_scores) == ["bigbench_anachronisms", "parity"]
    out = tmp_path / "reference"
    with task_registry.isolated_registry():  # the reference: eval --bigbench of the run, with its evaluation settings
        assert cli_main(["eval", "--checkpoint", str(run), "--bigbench", str(folder), "--out", str(out),
                         "--no-progress"]) == 0, capsys.readouterr().err
    settings, results = _results(run / "eval" / "report.json", "bigbench_anachronisms")
    assert (settings, results) == _results(out / "report.json", "bigbench_anachronisms")
    assert [(r["template"], r["num_examples"], r["truncation_side"]) for r in results] == [
        ("bigbench_zero_shot", 3, "left")]  # (BIG-bench's draw of 3 examples, each keeping its end as BIG-bench does)


def test_evaluation_bigbench_takes_a_folder_or_a_list_of_task_folders(bigbench_dir):
    # as `t2t-mtl eval --bigbench DIR`: a folder of <task>/task.json, or one task's folder; a list chooses tasks
    with task_registry.isolated_registry():
        one = {"bigbench": str(bigbench_dir / "navigate")}  # (one task's folder)
        names, _ = evaluation_plan(config_from_dict({**SMALL, "evaluation": one}))
        assert names == ["bigbench_navigate"]
        folders = [str(bigbench_dir / "navigate"), str(bigbench_dir / "anachronisms")]
        names, _ = evaluation_plan(config_from_dict({**SMALL, "evaluation": {"tasks": ["parity"],
                                                                             "bigbench": folders}}))
        assert names == ["parity", "bigbench_navigate", "bigbench_anachronisms"]


@pytest.mark.parametrize("value, message", [
    ("{tmp}/missing", r"^evaluation.bigbench: BIG-bench folder '{tmp}/missing' does not exist; name the folder "
                      r"holding BIG-bench tasks as <task>/task.json \(or one task's folder\), as `t2t-mtl eval "
                      r"--bigbench DIR` takes it"),
    (["{tmp}/tasks", "{tmp}/missing"], r"^evaluation.bigbench\[1\]: BIG-bench folder '{tmp}/missing' does not exist"),
    ("{tmp}/empty", r"^evaluation.bigbench: BIG-bench folder '{tmp}/empty' has no <task>/task.json files; name the "
                    r"folder holding BIG-bench tasks"),
    ("relative/missing", r"does not exist \(a relative path in a config is read from the working directory"),
    (3, r"^evaluation.bigbench must be the folder holding BIG-bench tasks .* \(null or \[\] for none, as "
        r"evaluation.tasks\), got 3$"),
    (["{tmp}/tasks", ""], r"^evaluation.bigbench must be the folder .*got \['{tmp}/tasks', ''\]$"),
    ("", r"^evaluation.bigbench must be the folder holding BIG-bench tasks .*got ''$"),  # (not the section off)
    (["{tmp}/tasks", "{tmp}/tasks"], r"^evaluation.bigbench names '{tmp}/tasks' more than once"),
])
def test_an_evaluation_bigbench_naming_no_tasks_is_refused_naming_the_key(value, message, tmp_path, bigbench_dir):
    # (before: refused as an unknown key of the evaluation section, whatever its value)
    (tmp_path / "empty").mkdir()
    shutil.copytree(bigbench_dir / "anachronisms", tmp_path / "tasks" / "anachronisms")
    fill = {str: lambda v: v.replace("{tmp}", str(tmp_path)), list: lambda v: [f.replace("{tmp}", str(tmp_path))
                                                                               for f in v]}
    value = fill.get(type(value), lambda v: v)(value)
    cfg = config_from_dict({**SMALL, "evaluation": {"held_out": False, "bigbench": value}})
    with task_registry.isolated_registry(), pytest.raises(ConfigError, match=message.replace("{tmp}", str(tmp_path))):
        evaluation_plan(cfg)


def test_an_evaluation_bigbench_task_json_that_cannot_be_imported_is_refused_naming_the_key_and_the_file(tmp_path):
    # a config error naming the key, as for a folder that is not there, not the registry's own error alone
    broken = tmp_path / "tasks" / "broken" / "task.json"
    broken.parent.mkdir(parents=True)
    broken.write_text("{")
    cfg = config_from_dict({**SMALL, "evaluation": {"held_out": False, "bigbench": [str(tmp_path / "tasks")]}})
    with task_registry.isolated_registry(), pytest.raises(ConfigError) as refused:
        evaluation_plan(cfg)
    assert str(refused.value).startswith(f"evaluation.bigbench[0]: {str(broken)!r} is not valid JSON")


@pytest.mark.parametrize("section", [{"tasks": ["parity"]}, {"held_out": False}, {"max_examples": 3},
                                     {"held_out": False, "max_examples": 3}])
def test_an_empty_evaluation_bigbench_list_means_none_as_null_does_and_as_an_empty_task_list_does(section):
    # was: bigbench: [] refused ("must be the folder holding BIG-bench tasks ..., got []"), where tasks: [] means no
    # task, so a layer could not clear a base config's BIG-bench folders as it clears its tasks
    def plan(**keys):
        try:
            names, settings = evaluation_plan(config_from_dict({**SMALL, "evaluation": {**section, **keys}}))
        except ConfigError as error:
            return str(error)
        return names, settings

    with task_registry.isolated_registry():
        assert plan(bigbench=[]) == plan(bigbench=None) == plan(tasks=section.get("tasks", []))


def test_evaluation_tasks_may_name_a_bigbench_task_that_evaluation_bigbench_imports(bigbench_dir):
    # was: "evaluation.tasks: unknown task 'bigbench_navigate'" though evaluation.bigbench imports it (the names were
    # checked before the import)
    navigate = str(bigbench_dir / "navigate")
    with task_registry.isolated_registry():
        names, _ = evaluation_plan(config_from_dict({**SMALL, "evaluation": {
            "tasks": ["bigbench_navigate", "parity"], "bigbench": [navigate, str(bigbench_dir / "anachronisms")]}}))
    assert names == ["bigbench_navigate", "parity", "bigbench_anachronisms"]  # (each once, evaluation.tasks first)


@pytest.mark.parametrize("bigbench, message", [
    (None, "set it to the folder holding that task's <task>/task.json (or the task's folder)"),
    ("anachronisms", "its folders import bigbench_anachronisms, not 'bigbench_navigate': add the folder holding that "
                     "task's task.json")])
def test_evaluation_tasks_naming_a_bigbench_task_not_imported_points_to_evaluation_bigbench(bigbench, message,
                                                                                            bigbench_dir):
    # was: "evaluation.tasks: unknown task 'bigbench_navigate'; did you mean ...", with no word of evaluation.bigbench
    section = {"tasks": ["bigbench_navigate"], "bigbench": bigbench and str(bigbench_dir / bigbench)}
    with task_registry.isolated_registry(), pytest.raises(ConfigError) as refused:
        evaluation_plan(config_from_dict({**SMALL, "evaluation": section}))
    assert str(refused.value) == (f"evaluation.tasks names 'bigbench_navigate', a BIG-bench task's name, which no "
                                  f"registered task has: BIG-bench tasks are imported by evaluation.bigbench, and "
                                  f"{message}; its tasks are scored whether or not evaluation.tasks names them")


def test_a_missing_evaluation_bigbench_folder_stops_the_run_before_training(tmp_path, tok):
    cache = tmp_path / "cache"
    cfg = tiny_config(tmp_path / "run", tok, cache, evaluation={"bigbench": str(tmp_path / "missing")})
    with task_registry.isolated_registry(), pytest.raises(ConfigError, match=r"^evaluation.bigbench: BIG-bench "
                                                                              r"folder .* does not exist"):
        train(cfg, evaluate_held_in=False)
    assert not cache.exists() and not (tmp_path / "run").exists()


def test_eval_held_out_of_a_run_scores_its_bigbench_tasks_as_the_run_did(tmp_path, tok, bigbench_dir, capsys):
    # was: `eval --checkpoint RUN --held-out` scored the held-out clusters' tasks alone, leaving out the BIG-bench
    # tasks the run's own evaluation scored beside them (evaluation.bigbench), without a word
    folder = tmp_path / "bigbench"
    shutil.copytree(bigbench_dir / "anachronisms", folder / "anachronisms")
    run = tmp_path / "run"
    cfg = tiny_config(run, tok, tmp_path / "cache", training={"steps": 2}, data={"held_out_clusters": ["comparison"]},
                      evaluation={"held_out": True, "bigbench": str(folder), "max_examples": 2, "scoring": "rank"})
    with task_registry.isolated_registry():
        train(cfg, evaluate_held_in=False)

    def held_out(*options):
        with task_registry.isolated_registry():
            code = cli_main(["eval", "--checkpoint", str(run), "--held-out", *options, "--no-progress"])
        return code, capsys.readouterr().err

    def scored(report_json):
        report = json.loads(report_json.read_text())
        return report["settings"], sorted(report["results"], key=lambda r: (r["task"], r["template"]))

    code, err = held_out("--out", str(tmp_path / "again"))
    assert code == 0, err
    assert "; --held-out's BIG-bench tasks bigbench_anachronisms (the run's evaluation.bigbench)" in err
    expected = scored(run / "eval" / "report.json")  # the reference: the run's own report after training
    assert "bigbench_anachronisms" in {r["task"] for r in expected[1]} and scored(tmp_path / "again" / "report.json") \
        == expected
    # --held-out-clusters chooses the clusters (an option given wins): the run's BIG-bench tasks are not added
    code, err = held_out("--held-out-clusters", "comparison", "--out", str(tmp_path / "clusters"))
    assert code == 0 and "BIG-bench" not in err, err
    assert scored(tmp_path / "clusters" / "report.json")[1] == [r for r in expected[1]
                                                                if r["task"] != "bigbench_anachronisms"]
    # --template chooses the clusters' templates; the BIG-bench tasks keep their one (was: 'task
    # 'bigbench_anachronisms' has no template 'yes_no'', after the model loaded)
    code, err = held_out("--template", "yes_no", "--out", str(tmp_path / "yes_no"))
    assert code == 0, err
    assert ("; --held-out's BIG-bench tasks bigbench_anachronisms (the run's evaluation.bigbench, each scored with its "
            "one template bigbench_zero_shot: --template chooses the other tasks' templates)") in err
    assert scored(tmp_path / "yes_no" / "report.json")[1] == [
        r for r in expected[1] if r["template"] in ("yes_no", "bigbench_zero_shot")]
    # the run's folder gone: refused before the model loads, naming it and what to do
    folder.rename(tmp_path / "moved")
    code, err = held_out()
    assert (code, err) == (2, f"error: the run's evaluation.bigbench folder {str(folder)!r}, whose BIG-bench tasks "
                              f"--held-out scores as the run's evaluation did, is not there: run eval from where the "
                              f"run was trained, or pass --held-out-clusters to score the held-out clusters alone "
                              f"(--bigbench DIR scores BIG-bench tasks)\n")
    # there, but emptied since the run: refused naming what the import found
    folder.mkdir()
    code, err = held_out()
    assert (code, err) == (2, f"error: the run's evaluation.bigbench: BIG-bench folder {str(folder)!r} has no "
                              f"<task>/task.json files: run eval from where the run was trained, or pass "
                              f"--held-out-clusters to score the held-out clusters alone (--bigbench DIR scores "
                              f"BIG-bench tasks)\n")


def test_eval_of_a_run_adds_its_bigbench_tasks_to_held_out_alone_and_names_a_folder_emptied_since(
        tmp_path, tok, bigbench_dir, capsys):
    # (mut44: adding them to any task selection, the first folder's alone, a task two folders import twice, and an
    # emptied folder's import error without the run's folder and what to do, passed every test)
    folder = tmp_path / "bigbench"
    shutil.copytree(bigbench_dir / "anachronisms", folder / "anachronisms")
    shutil.copytree(bigbench_dir / "navigate", tmp_path / "more" / "navigate")
    run = tmp_path / "run"
    folders = [str(folder), str(folder / "anachronisms"), str(tmp_path / "more")]  # (the second: a task again)
    cfg = tiny_config(run, tok, tmp_path / "cache", training={"steps": 1}, data={"held_out_clusters": ["comparison"]},
                      evaluation={"tasks": ["parity"], "bigbench": folders, "max_examples": 2, "scoring": "rank"})
    with task_registry.isolated_registry():
        train(cfg, evaluate_held_in=False)
    capsys.readouterr()

    def evaluate(*options):
        with task_registry.isolated_registry():
            code = cli_main(["eval", "--checkpoint", str(run), *options, "--no-progress"])
        return code, capsys.readouterr().err

    code, err = evaluate("--tasks", "parity", "--out", str(tmp_path / "parity"))
    assert code == 0 and "BIG-bench" not in err, err
    assert {r["task"] for r in json.loads((tmp_path / "parity" / "report.json").read_text())["results"]} == {"parity"}
    code, err = evaluate("--held-out", "--out", str(tmp_path / "held_out"))
    assert code == 0 and "; --held-out's BIG-bench tasks bigbench_anachronisms, bigbench_navigate (the run's " \
                         "evaluation.bigbench)" in err, err
    scored = [(r["task"], r["template"]) for r in json.loads((tmp_path / "held_out" / "report.json").read_text())[
        "results"] if r["task"].startswith("bigbench_")]
    assert sorted(scored) == [("bigbench_anachronisms", "bigbench_zero_shot"), ("bigbench_navigate",
                                                                                 "bigbench_zero_shot")]
    (folder / "anachronisms" / "task.json").unlink()
    code, err = evaluate("--held-out")
    assert code == 2 and err.startswith("error: the run's evaluation.bigbench: ") and str(folder) in err, err
    assert err.endswith(": run eval from where the run was trained, or pass --held-out-clusters to score the held-out "
                        "clusters alone (--bigbench DIR scores BIG-bench tasks)\n"), err
