"""A data dir given to one call (`--data-dir` of a command run by `t2t_mtl.cli.main`, `data.data_dir` of a `train`
run) lasts for that call alone; one the user set with `task_registry.set_data_dir` holds around it."""
from __future__ import annotations

import json

import pytest

import task_registry
import task_registry.sources
from t2t_mtl.cli import main

TASK_YAML = """\
name: scope_qa
source: {hf: scope_demo}
templates:
  - name: plain
    jinja: "question: {{q}} ||| {{a}}"
"""


@pytest.fixture()
def data_dirs(tmp_path, monkeypatch):
    """Two data dirs, `a` and `b`, each holding the hub id `scope_demo` with rows naming their folder, and a folder
    `tasks` with a YAML task reading it; no data dir set, in the process or the environment."""
    for name in ("a", "b"):
        folder = tmp_path / name / "scope_demo" / "default"
        folder.mkdir(parents=True)
        for split in ("train", "validation"):
            (folder / f"{split}.jsonl").write_text(json.dumps({"q": f"row of {name}", "a": "yes"}) + "\n")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "scope_qa.yaml").write_text(TASK_YAML)
    monkeypatch.delenv(task_registry.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(task_registry.sources, "_data_dir", None)  # (the process's, as the test found it, after)
    with task_registry.isolated_registry():
        yield tmp_path


def _previewed(tmp_path, capsys, *data_dir: str) -> str:
    """The row `tasks preview scope_qa` shows (its exit code 0), with the options `data_dir`."""
    assert main(["tasks", "preview", "scope_qa", "-n", "1", "--tasks-dir", str(tmp_path / "tasks"), *data_dir]) == 0
    out = capsys.readouterr().out
    return next(word for word in ("row of a", "row of b") if word in out)


def test_a_commands_data_dir_lasts_for_that_command(data_dirs, capsys, monkeypatch):
    # was: main(["tasks", "preview", ..., "--data-dir", a]) left a set for the process, so a second command without
    # --data-dir read a's rows where the README says $T2T_MTL_DATA_DIR decides
    assert _previewed(data_dirs, capsys, "--data-dir", str(data_dirs / "a")) == "row of a"
    assert task_registry.get_data_dir() is None
    monkeypatch.setenv(task_registry.DATA_DIR_ENV, str(data_dirs / "b"))
    assert _previewed(data_dirs, capsys) == "row of b"


def test_a_data_dir_the_user_set_holds_around_a_command_given_another(data_dirs, capsys):
    task_registry.set_data_dir(data_dirs / "a")
    assert _previewed(data_dirs, capsys, "--data-dir", str(data_dirs / "b")) == "row of b"
    assert _previewed(data_dirs, capsys) == "row of a"
    assert task_registry.get_data_dir() == data_dirs / "a"


@pytest.mark.parametrize("set_before", [False, True])
def test_a_runs_data_data_dir_lasts_for_that_run(data_dirs, set_before):
    # was: train() of a config with data.data_dir left it set for the process, after a run and after a refused one
    from t2t_mtl import ConfigError, train

    if set_before:
        task_registry.set_data_dir(data_dirs / "a")
    cfg = {"base": "quickstart", "data": {"mixture": None, "tasks": ["scope_qa", "no_such_task"],
                                          "tasks_dir": str(data_dirs / "tasks"), "data_dir": str(data_dirs / "b")},
           "training": {"output_dir": str(data_dirs / "run")}}
    with pytest.raises(ConfigError, match="no_such_task"):  # (refused once the run's tasks are registered)
        train(cfg)
    assert task_registry.get_data_dir() == (data_dirs / "a" if set_before else None)


def test_a_commands_data_dir_lasts_for_that_command_where_it_imported_the_task_registry_first(data_dirs):
    # a fresh process's first command imports task_registry itself: its --data-dir is unset again when it ends
    import os
    import subprocess
    import sys

    script = ("import sys\nfrom t2t_mtl.cli import main\nassert 'task_registry.sources' not in sys.modules\n"
              f"assert main(['tasks', 'preview', 'scope_qa', '-n', '1', '--tasks-dir', {str(data_dirs / 'tasks')!r}, "
              f"'--data-dir', {str(data_dirs / 'a')!r}]) == 0\n"
              "import task_registry\nprint('data dir after:', task_registry.get_data_dir())\n")
    env = {name: value for name, value in os.environ.items() if name != task_registry.DATA_DIR_ENV}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "row of a" in done.stdout and done.stdout.endswith("data dir after: None\n")
