"""Hugging Face datasets' progress bars in the command line: hidden, but in `train` while training.progress_bar is on,
unless HF_DATASETS_DISABLE_PROGRESS_BARS decides; a command or a run called from Python leaves them as it found them."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import datasets
import pytest
from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
from datasets.utils.logging import is_progress_bar_enabled

import task_registry
from engine_helpers import tiny_config, train_tiny_tokenizer
from t2t_mtl.cli import main
from t2t_mtl.cli.progress_bars import DATASETS_SWITCH

TASK_YAML = """\
name: bars_qa
splits: [train]
source: {hf: bars_demo}
templates:
  - name: plain
    jinja: "question: {{q}} ||| {{a}}"
"""


def bar_lines(stderr: str) -> list[str]:
    """The lines (tqdm redraws a bar after a carriage return) that are datasets' progress bars: 'Map: 100%|...|',
    'Generating train split: 3 examples [00:00, ...examples/s]'."""
    return [line for line in stderr.replace("\r", "\n").splitlines() if "%|" in line or "examples/s" in line]


@pytest.fixture()
def workspace(tmp_path):
    """A data dir holding the hub id `bars_demo` (new files: datasets loads and renders them afresh, with its bars)
    and a folder with one YAML task reading it."""
    folder = tmp_path / "data" / "bars_demo" / "default"
    folder.mkdir(parents=True)
    (folder / "train.jsonl").write_text("".join(json.dumps({"q": f"q{i}", "a": f"a{i}"}) + "\n" for i in range(3)))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "bars_qa.yaml").write_text(TASK_YAML)
    return tmp_path


@pytest.fixture()
def datasets_bars(monkeypatch):
    """datasets' bars shown at the start (no switch in the environment) and as they were after the test."""
    if datasets.config.HF_DATASETS_DISABLE_PROGRESS_BARS is not None:  # (read at its import: it would win)
        pytest.skip(f"{DATASETS_SWITCH} is set for this test run")
    monkeypatch.delenv(DATASETS_SWITCH, raising=False)
    hidden = are_progress_bars_disabled()
    enable_progress_bars()
    yield
    (disable_progress_bars if hidden else enable_progress_bars)()


def preview_command(workspace) -> list[str]:
    return ["tasks", "preview", "bars_qa", "-n", "2", "--data-dir", str(workspace / "data"),
            "--tasks-dir", str(workspace / "tasks")]


def run_preview_in_process(workspace) -> int:
    """`main` of `preview_command`, its tasks registered and data folder set for the call only."""
    with task_registry.isolated_registry():
        previous = task_registry.get_data_dir()
        try:
            return main(preview_command(workspace))
        finally:
            task_registry.set_data_dir(previous)


def test_a_command_run_from_the_shell_draws_no_datasets_bar(workspace):
    # was: 'Generating train split: 3 examples [...]' and 'render bars_qa/train: 100%|...| 2/2' on stderr around
    # a two-row preview (mixture overlap and tokenizer train drew one per split they read)
    env = {key: value for key, value in os.environ.items() if key != DATASETS_SWITCH}
    done = subprocess.run([sys.executable, "-m", "t2t_mtl", *preview_command(workspace)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "question: q1" in done.stdout and bar_lines(done.stderr) == [], done.stderr


@pytest.mark.parametrize("switch, bars", [(None, False), ("0", True)])
def test_a_command_run_in_process_draws_no_datasets_bar_unless_the_switch_asks(switch, bars, workspace, datasets_bars,
                                                                                monkeypatch, capsys):
    if switch is not None:  # (datasets read it at its import: here the switch keeps the bars it found shown)
        monkeypatch.setenv(DATASETS_SWITCH, switch)
    assert run_preview_in_process(workspace) == 0
    captured = capsys.readouterr()
    assert "question: q1" in captured.out
    shown = bar_lines(captured.err)
    assert (any(line.startswith("render bars_qa/train") for line in shown) if bars else shown == []), captured.err


@pytest.mark.parametrize("progress_bar, bars", [(True, True), (False, False)])
def test_train_draws_datasets_bars_only_with_its_own_progress_bar(progress_bar, bars, datasets_bars, monkeypatch,
                                                                   capsys, tmp_path):
    # was: `--set training.progress_bar=false` turned off the training bar, yet a first start still drew a bar per
    # task rendered and tokenized
    from t2t_mtl.engine import distributed, trainer

    def rendering_train(*args, **kwargs):  # the datasets work of a first start, without the training
        datasets.Dataset.from_dict({"q": ["a", "b"]}).map(lambda row: row, desc="render demo/train")
        raise KeyboardInterrupt  # (train's own exit: nothing more to stub)

    monkeypatch.setattr(trainer, "_train", rendering_train)  # (train() itself decides on the bars)
    monkeypatch.setattr(distributed, "leave_process_group", lambda: None)
    monkeypatch.delenv("RANK", raising=False)
    assert main(["train", "--set", f"training.output_dir={tmp_path / 'run'}",
                 "--set", f"training.progress_bar={str(progress_bar).lower()}"]) == 130
    shown = bar_lines(capsys.readouterr().err)
    assert (any(line.startswith("render demo/train") for line in shown) if bars else shown == [])


@pytest.mark.parametrize("shown", [True, False])
def test_a_command_run_in_process_leaves_datasets_bars_as_it_found_them(shown, workspace, datasets_bars):
    # was: main([...]) of any command but train called datasets' disable_progress_bars for the rest of the process
    (enable_progress_bars if shown else disable_progress_bars)()
    assert run_preview_in_process(workspace) == 0
    assert is_progress_bar_enabled() is shown


def test_train_from_python_without_its_progress_bar_draws_no_datasets_bar_and_leaves_them_shown(datasets_bars, capsys,
                                                                                                 tmp_path):
    # was: train(config) with training.progress_bar false (the switch was the command line's only) drew a
    # 'tokenize TASK/train: 100%|...|' bar per task it tokenized at a first start
    from t2t_mtl.engine.trainer import train

    tokenizer = train_tiny_tokenizer(tmp_path / "tok")
    capsys.readouterr()
    train(tiny_config(tmp_path / "run", tokenizer, tmp_path / "cache", data={"tasks": ["parity"]},
                      training={"steps": 1}))
    assert bar_lines(capsys.readouterr().err) == []
    assert is_progress_bar_enabled()


def test_the_process_wide_hiding_leaves_the_bars_to_a_switch_the_user_set(datasets_bars, monkeypatch):
    # mutation testing: hide_datasets_progress_bars hiding the bars whatever the user's DATASETS_SWITCH passed every
    # test, whose shell runs left it unset; HF_DATASETS_DISABLE_PROGRESS_BARS=0 asks for the bars and gets them
    from t2t_mtl.cli.progress_bars import hide_datasets_progress_bars

    monkeypatch.setenv(DATASETS_SWITCH, "0")
    hide_datasets_progress_bars()  # (datasets is imported here: it would call disable_progress_bars)
    assert os.environ[DATASETS_SWITCH] == "0" and is_progress_bar_enabled()
