"""Python task modules (`task_registry.import_task_modules`, `data.task_modules`, `--task-module`): a task written in
Python reaches the command line and a training config, as seqio's `--module_import`."""
from __future__ import annotations

import sys
import uuid

import pytest

import task_registry
from t2t_mtl import config as C
from t2t_mtl.cli import main

MODULE = """\
import task_registry
from task_registry import GeneratorSource, Task, Template


def rows(split, num_rows, seed):
    for i in range(num_rows):
        yield {{"q": f"{{split}} q{{i}}", "a": f"a{{i}}"}}


task_registry.register_task(Task("{task}", GeneratorSource(rows, num_rows=4), Template("t", "{{{{q}}}} ||| {{{{a}}}}"),
                                 cluster="module_cluster"))
"""


@pytest.fixture()
def fresh(monkeypatch):
    """An isolated registry, and the modules a test imports forgotten afterwards (each test names its own)."""
    before = set(sys.modules)
    with task_registry.isolated_registry():
        yield
    for name in set(sys.modules) - before:
        monkeypatch.delitem(sys.modules, name)


def _module(folder, body: str = MODULE) -> tuple:
    """(module name, task name, path) of a new module file in `folder` registering one task."""
    name = f"tm_{uuid.uuid4().hex[:10]}"
    path = folder / f"{name}.py"
    path.write_text(body.format(task=f"{name}_task"))
    return name, f"{name}_task", path


def test_a_module_name_on_sys_path_registers_its_tasks_once_per_process(fresh, tmp_path, monkeypatch):
    name, task, _ = _module(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (module,) = task_registry.import_task_modules(name)
    assert module.__name__ == name and task_registry.get_task(task).cluster == "module_cluster"
    # imported again (a second command of one process): the import cache answers, nothing is registered twice
    assert task_registry.import_task_modules([name]) == [module]
    assert task_registry.get_task(task).to_dataset("train")["inputs"][:2] == ["train q0", "train q1"]


def test_a_module_name_in_the_working_directory_is_found_as_python_m_finds_it(fresh, tmp_path, monkeypatch):
    # (`python -m t2t_mtl` has the working directory on sys.path, the `t2t-mtl` script not)
    name, task, _ = _module(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    task_registry.import_task_modules(name)
    assert task in task_registry.list_tasks()


def test_a_py_file_path_registers_its_tasks_under_its_stem(fresh, tmp_path):
    name, task, path = _module(tmp_path)
    (module,) = task_registry.import_task_modules([str(path)])
    assert sys.modules[name] is module and task in task_registry.list_tasks()
    assert task_registry.import_task_modules(str(path)) == [module]  # the same file: the module already imported
    assert len(task_registry.get_task(task).definition_digest()) == 16  # its generator's code is found by name


def test_a_module_that_cannot_be_imported_is_an_error_naming_it_and_what_to_do(fresh, tmp_path):
    errors = {}
    for module in ("no_such_task_module_xyz", str(tmp_path / "missing.py"), str(tmp_path), ""):
        with pytest.raises(task_registry.TaskModuleError) as caught:
            task_registry.import_task_modules([module])
        errors[module] = str(caught.value)
    unknown = errors["no_such_task_module_xyz"]
    assert "is not importable" in unknown and "PYTHONPATH" in unknown
    assert errors[str(tmp_path / "missing.py")].endswith(
        f"does not exist: give the path of a .py file (relative to the working directory, {tmp_path.cwd()}), or a "
        f"module name on sys.path")
    assert f"{str(tmp_path)!r} is not a file" in errors[str(tmp_path)]
    assert "give a module name" in errors[""]


@pytest.mark.parametrize("modules", ["", " ", [""]])
def test_a_blank_module_is_refused_given_alone_as_in_a_list(fresh, modules):
    # was: data.task_modules: "" (a string, not a list) imported nothing and said nothing, as if it were null
    with pytest.raises(task_registry.TaskModuleError, match="^task module '.*': give a module name"):
        task_registry.import_task_modules(modules)
    assert task_registry.import_task_modules(None) == task_registry.import_task_modules([]) == []


def test_a_module_whose_import_raises_names_the_error_and_where_it_was_raised(fresh, tmp_path):
    path = tmp_path / "tm_raises.py"
    path.write_text("import task_registry\n\nrows = 1 / 0\n")
    with pytest.raises(task_registry.TaskModuleError) as caught:
        task_registry.import_task_modules(str(path))
    assert str(caught.value) == (f"task module {str(path)!r}: importing it raised ZeroDivisionError: division by "
                                 f"zero ({path}:3)")
    assert "tm_raises" not in sys.modules  # a failed import leaves no half-made module behind
    # a task registered twice (the module's name taken by a built-in): the registry's own error, named
    path.write_text(MODULE.format(task="parity"))
    task_registry.load_builtin_tasks()
    with pytest.raises(task_registry.TaskModuleError, match="raised DuplicateRegistrationError: a task named 'parity'"):
        task_registry.import_task_modules(str(path))


def test_a_module_that_does_not_parse_is_named_at_its_own_line(fresh, tmp_path):
    # was: "... raised IndentationError: expected an indented block after 'for' statement on line 2 (tm_broken.py,
    # line 2) (<frozen importlib._bootstrap>:241)": the last frame of the traceback is the import machinery's
    path = tmp_path / "tm_broken.py"
    path.write_text("import task_registry\nfor name in []:\nx = 1\n")
    with pytest.raises(task_registry.TaskModuleError) as caught:
        task_registry.import_task_modules(str(path))
    assert str(caught.value) == (f"task module {str(path)!r}: importing it raised IndentationError: expected an "
                                 f"indented block after 'for' statement on line 2 ({path}:3)")


def test_a_file_named_like_an_imported_module_is_refused_rather_than_read_as_it(fresh, tmp_path):
    (tmp_path / "json.py").write_text("raise SystemExit('never run')\n")
    with pytest.raises(task_registry.TaskModuleError, match="a module named 'json' is already imported"):
        task_registry.import_task_modules(str(tmp_path / "json.py"))


def test_the_tasks_commands_list_and_show_a_modules_tasks(fresh, tmp_path, capsys):
    _, task, path = _module(tmp_path)
    assert main(["tasks", "list", "--task-module", str(path), "--cluster", "module_cluster"]) == 0
    assert task in capsys.readouterr().out
    assert main(["tasks", "--task-module", str(path), "show", task]) == 0  # (the group's option too)
    assert f"name: {task}" in capsys.readouterr().out
    assert main(["tasks", "show", "tm_not_a_module_task", "--task-module", str(tmp_path / "nope.py")]) == 2
    assert "error: task module" in capsys.readouterr().err
    assert main(["tasks", "--tasks-dir", str(tmp_path), "validate", str(tmp_path)]) == 2
    assert "--tasks-dir registers tasks for list, show and preview" in capsys.readouterr().err


METRIC_MODULE = """\
from t2t_mtl.evaluation import register_metric

register_metric("{name}", lambda predictions, references: {{"{name}": 1.0}})
"""

YAML_TASK = """\
name: uses_{name}
source: {{files: rows.jsonl}}
splits: [train]
metrics: [{name}]
templates:
  - name: t
    jinja: "{{{{q}}}} ||| {{{{a}}}}"
"""


def test_tasks_validate_imports_task_modules_for_the_metrics_a_yaml_task_names(fresh, tmp_path, capsys,
                                                                               monkeypatch):
    # a YAML task may name a metric a task module registers (loading imports the modules first): validate, which
    # makes the checks loading makes, takes the modules too; without them the name is unknown
    from t2t_mtl.evaluation import metrics

    monkeypatch.setattr(metrics, "METRICS", dict(metrics.METRICS))  # (registrations are process-wide)
    name = f"tm_metric_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(METRIC_MODULE.format(name=name))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "rows.jsonl").write_text('{"q": "x", "a": "y"}\n')
    (tasks / "task.yaml").write_text(YAML_TASK.format(name=name))
    assert main(["tasks", "validate", str(tasks)]) == 1
    assert f"unknown metric {name!r}" in capsys.readouterr().err
    assert main(["tasks", "validate", str(tasks), "--task-module", str(tmp_path / f"{name}.py")]) == 0
    assert capsys.readouterr().out == "ok: 1 task file valid\n"
    assert main(["tasks", "validate", str(tasks), "--task-module", str(tmp_path / "nope.py")]) == 2
    assert capsys.readouterr().err.startswith(f"error: task module {str(tmp_path / 'nope.py')!r} does not exist")


def test_a_training_config_registers_data_task_modules_before_resolving_its_tasks(fresh, tmp_path):
    from t2t_mtl.engine.run_mixture import training_rates

    _, task, path = _module(tmp_path)
    data = {"tasks": [task, "parity"], "task_modules": [str(path)]}
    assert set(training_rates(C.config_from_dict({"model": {"dims": {"d_model": 8}}, "data": data}))) == {task,
                                                                                                         "parity"}
    data = {"tasks": ["parity"], "task_modules": "no_such_task_module_xyz"}
    with pytest.raises(C.ConfigError, match="^data.task_modules: task module 'no_such_task_module_xyz' is not "):
        training_rates(C.config_from_dict({"model": {"dims": {"d_model": 8}}, "data": data}))


def test_eval_imports_the_runs_task_modules_unless_told_others(fresh, tmp_path):
    import argparse

    from t2t_mtl.cli.eval import register_run_tasks

    _, task, path = _module(tmp_path)
    meta = {"config": {"data": {"task_modules": [str(path)], "tasks_dir": None}}}
    register_run_tasks(argparse.Namespace(task_modules=None, tasks_dir=None), meta)
    assert task in task_registry.list_tasks()
    gone = {"config": {"data": {"task_modules": [str(tmp_path / "moved.py")]}}}
    with pytest.raises(ValueError, match=r"^the run's data.task_modules: task module .*moved.py' does not exist"):
        register_run_tasks(argparse.Namespace(task_modules=None, tasks_dir=None), gone)
    _, other, other_path = _module(tmp_path)
    register_run_tasks(argparse.Namespace(task_modules=[str(other_path)], tasks_dir=None), gone)  # (not the run's)
    assert other in task_registry.list_tasks()


def test_eval_of_a_run_that_recorded_task_modules_empty_imports_none(fresh, tmp_path):
    # a run trained before data.task_modules: "" was refused (9924a65) imported no module: eval of it, or of a folder
    # exported from it, was refused since ("the run's data.task_modules: task module '': give a module name")
    import argparse

    from t2t_mtl.cli.eval import register_run_tasks

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    before = task_registry.list_tasks()
    for meta in ({"config": {"data": {"task_modules": "", "tasks_dir": None}}},
                 {"path": str(folder), "config": {"data": {"task_modules": ""}}}):
        register_run_tasks(argparse.Namespace(task_modules=None, tasks_dir=None), meta)
        assert task_registry.list_tasks() == before


def test_eval_of_a_model_folder_does_not_import_the_modules_its_meta_names(fresh, tmp_path, capsys):
    # a model folder (exported, safetensors) may come from someone else: the data.task_modules its
    # t2t_mtl_meta.json names would run their code on `eval FOLDER` / `predict FOLDER`; a run's are imported
    import argparse

    from t2t_mtl.cli.eval import register_run_tasks

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    _, task, path = _module(folder, MODULE + "\nopen(__file__ + '.ran', 'w').close()\n")
    meta = {"path": str(folder), "config": {"data": {"task_modules": [str(path)], "tasks_dir": None}}}
    register_run_tasks(argparse.Namespace(task_modules=None, tasks_dir=None), meta)
    assert task not in task_registry.list_tasks() and not (folder / f"{path.name}.ran").exists()
    warning = capsys.readouterr().err
    assert warning.startswith(f"warning: not importing data.task_modules [{str(path)!r}], which model folder "
                              f"{folder}'s t2t_mtl_meta.json names") and "pass --task-module MODULE" in warning
    register_run_tasks(argparse.Namespace(task_modules=[str(path)], tasks_dir=None), meta)  # (given: imported)
    assert task in task_registry.list_tasks() and (folder / f"{path.name}.ran").exists()


def test_a_studys_base_config_gets_the_task_modules_it_is_given(tmp_path):
    from t2t_mtl.analysis.engine_run import base_config_dict

    base = base_config_dict(None, ["data.task_modules=[a.tasks]"], task_modules=["b.py", "a.tasks"])
    assert base["data"]["task_modules"] == ["a.tasks", "b.py"]
    assert base_config_dict(None, task_modules=["b.py"])["data"]["task_modules"] == "b.py"
    assert base_config_dict(None)["data"]["task_modules"] is None


def test_export_knows_a_task_of_the_runs_task_modules_as_registered(fresh, tmp_path):
    # (export --task of a held-out task the model was not trained on: registered by the run's data section)
    from t2t_mtl.engine.export import _is_registered_task

    _, task, path = _module(tmp_path)
    assert not _is_registered_task(task, {"task_modules": None, "tasks_dir": None})
    # (a run trained before data.task_modules: "" was refused imported none: was "task module '': give a module name")
    assert not _is_registered_task(task, {"task_modules": "", "tasks_dir": None})
    assert _is_registered_task(task, {"task_modules": [str(path)], "tasks_dir": None})


def test_a_run_trains_a_modules_task_from_the_command_line_and_eval_finds_it_through_the_run(tmp_path):
    # the whole way, in fresh processes as a launcher starts them: `train` imports data.task_modules, and `eval` of
    # the run imports them again without being told (its task and its metric)
    import json
    import subprocess

    import yaml
    from engine_helpers import subprocess_env, tiny_config, train_command, train_tiny_tokenizer

    # the module registers a metric of its own too (a registered function, scored by name)
    metric = """
from t2t_mtl.evaluation.metrics import register_metric


def always_half(predictions, references):
    return {{"always_half": 0.5}}


register_metric("always_half", always_half)
"""
    _, task, path = _module(tmp_path, (MODULE + metric).replace('cluster="module_cluster"',
                                                                'cluster="module_cluster", metrics=("always_half",)'))
    with task_registry.isolated_registry():
        tokenizer = train_tiny_tokenizer(tmp_path / "tok")
    cfg = tiny_config(tmp_path / "run", tokenizer, tmp_path / "cache", training={"steps": 2, "log_every": 1},
                      data={"tasks": [task, "parity"], "task_modules": [str(path)]})
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    trained = subprocess.run(train_command(tmp_path / "cfg.yaml"), env=subprocess_env(), capture_output=True,
                             text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr[-3000:]
    evaluated = subprocess.run([sys.executable, "-m", "t2t_mtl", "eval", "--checkpoint", str(tmp_path / "run"),
                                "--tasks", task, "--max-examples", "2", "--no-progress", "--out", str(tmp_path / "e")],
                               env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert list(report["summary"]["tasks"]) == [task] and report["summary"]["num_tasks"] == 1
    assert report["summary"]["tasks"][task]["median"] == 50.0  # the module's metric, 0.5 on the 0-100 scale


def test_eval_of_a_model_folder_asking_for_a_task_of_its_unimported_modules_says_to_pass_task_module(fresh, tmp_path,
                                                                                                     capsys):
    # was: "unknown task 'tm_..._task'; did you mean 'list_contains'?", a built-in task alike only in letters, for a
    # task the folder was trained on whose module (its data.task_modules) eval does not import from a model folder
    import argparse

    from t2t_mtl.cli.eval import select_tasks

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    _, task, path = _module(tmp_path)
    meta = {"path": str(folder), "tasks": [task],
            "config": {"data": {"task_modules": [str(path)], "tasks_dir": None}}}

    def ask(name: str, modules=None) -> list:
        return select_tasks(argparse.Namespace(task_modules=modules, tasks_dir=None, bigbench=None, tasks=name,
                                               mixture=None, held_out_clusters=None), meta)

    with pytest.raises(ValueError) as refused:
        ask(task)
    assert str(refused.value) == (
        f"--tasks: task {task!r}, which model folder {folder} was trained on, is not registered: its data.task_modules "
        f"[{str(path)!r}] were not imported (a model folder may come from someone else); pass --task-module MODULE to "
        f"import the one you trust that registers it")
    with pytest.raises(task_registry.UnknownTaskError, match=r"^unknown task 'ag_nwes'; did you mean 'ag_news'[,?]"):
        ask("ag_nwes")  # (a task the folder was not trained on: a misspelt built-in's guess stays, first of those
        # close enough among the tasks registered so far in this process)
    assert ask(task, [str(path)]) == [task]


def test_eval_of_a_model_folder_held_out_on_a_cluster_of_its_unimported_modules_says_to_pass_task_module(fresh,
                                                                                                        tmp_path,
                                                                                                        capsys):
    # was: "no registered task is in cluster(s) ['module_clustr']; did you mean 'closed_book_qa'? ..." (a built-in
    # alike in letters; cluster name spelt to draw the guess) for the run's own cluster of a module eval did not
    # import from a model folder, and only "a YAML task's cluster needs its --tasks-dir"
    import argparse

    from t2t_mtl.cli.eval import select_tasks

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    _, _, path = _module(tmp_path, MODULE.replace("module_cluster", "module_clustr"))
    meta = {"path": str(folder), "config": {"data": {"task_modules": [str(path)], "tasks_dir": None,
                                                     "held_out_clusters": ["module_clustr"]}}}

    def held_out(modules=None) -> list:
        return select_tasks(argparse.Namespace(task_modules=modules, tasks_dir=None, bigbench=None, tasks=None,
                                               mixture=None, held_out_clusters=None), meta)

    with pytest.raises(ValueError) as refused:
        held_out()
    message = str(refused.value)
    assert "did you mean" not in message and message.endswith(
        f"(model folder {folder}'s data.task_modules [{str(path)!r}], not imported, may register them: pass "
        f"--task-module MODULE to import the one you trust; a YAML task's cluster needs its --tasks-dir)")
    assert len(held_out([str(path)])) == 1
