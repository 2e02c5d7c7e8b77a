"""Commands that read no rows (listing, showing tasks, a mixture's rates) import neither datasets nor pyarrow nor
pandas: task_registry imports them where rows are loaded, rendered or tokenized. Commands that load no model (the
help, listings, `compare`, `tasks validate`) import neither torch nor transformers nor DeepSpeed nor Triton, which
take seconds to import; nor does an `eval` or `predict` refused before its model loads import transformers."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("datasets", "pyarrow", "pandas", "torch")
#: what loading, training or scoring a model imports, seconds of a command's start
MODEL_MODULES = ("torch", "transformers", "deepspeed", "triton")


def _command_imports(*args: str, from_python: bool = False, heavy: tuple = HEAVY) -> tuple:
    """(exit code, the `heavy` modules imported) of `t2t-mtl ARGS` run as the console script runs it (`from_python`:
    as `main(ARGS)` called from Python runs it; `--help`'s exit is its code)."""
    call = "main(sys.argv[1:])" if from_python else "main()"
    code = (f"import sys\nfrom t2t_mtl.cli import main\ntry:\n    code = {call}\nexcept SystemExit as end:\n"
            f"    code = end.code\nprint(code, sorted(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300)
    return done.returncode, (done.stderr.splitlines() or [""])[-1]


@pytest.mark.parametrize("args", [
    # were: task_registry imported datasets (and with it pyarrow and pandas) at the top of its modules, about 1 s of
    # `tasks list`'s 1.9 s on an idle 2-core machine
    ("tasks", "list"),
    ("tasks", "show", "parity"),
    ("mixture", "show", "procedural", "--held-out-clusters", "comparison", "--sampler", "temperature", "--alpha", "2"),
])
def test_a_command_reading_no_rows_imports_no_datasets(args):
    assert _command_imports(*args) == (0, "0 []")


def test_a_command_reading_no_dataset_called_from_python_imports_none():
    # mutation testing: main(argv) importing datasets to scope the bars of a command that reads no dataset (merge,
    # compare, predict, export) passed every test, whose commands reading none ran as the console script
    _, imported = _command_imports("merge", "a", "b", "--out", "o", "--density", "0.5", from_python=True)
    assert imported.startswith("2 ") and "datasets" not in imported, imported  # (merge loads torch, a bad --density)


@pytest.mark.parametrize("args", [
    ("--help",), ("train", "--help"), ("list", "samplers"),
    # were: t2t_mtl.evaluation imported every module of the package, the model's scoring with torch and transformers
    # among them, for its metrics and reports alone (`list metrics` 6.3 s -> 0.5 s on a 2-core machine at load 4)
    ("list", "metrics"), ("compare", "{reports}/first", "{reports}/second"), ("tasks", "validate", "{tasks}"),
], ids=" ".join)
def test_a_command_that_loads_no_model_imports_no_torch(args, tmp_path):
    from t2t_mtl.evaluation.report import write_report
    from t2t_mtl.evaluation.results import EvalReport, TemplateResult

    for name in ("first", "second"):
        result = TemplateResult("parity", "plain", "validation", "generate", 10, {"exact_match": {"exact_match": 50.0}},
                                "exact_match", "exact_match", 50.0)
        write_report(EvalReport(name, [result]), tmp_path / "reports" / name, plots=False)
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "my_task.jsonl").write_text('{"question": "a?", "answer": "yes"}\n')
    (tmp_path / "tasks" / "my_task.yaml").write_text(
        "name: my_task\nsplits: [validation]\nsource: {files: {validation: my_task.jsonl}}\nmetrics: [accuracy]\n"
        "templates:\n  - {name: plain, jinja: '{{question}} ||| {{answer}}', answer_choices: 'yes ||| no'}\n")
    argv = [arg.format(reports=tmp_path / "reports", tasks=tmp_path / "tasks") for arg in args]
    assert _command_imports(*argv, heavy=MODEL_MODULES) == (0, "0 []")


@pytest.mark.parametrize("args", [("--checkpoint", "{tmp}/runs/quikstart", "--tasks", "parity"),
                                  ("--checkpoint", "{tmp}", "--tasks", "parity", "--num-beams", "0")], ids=" ".join)
def test_an_eval_refused_before_its_model_loads_imports_no_transformers(args, tmp_path):
    # was: eval imported its scoring (transformers) before checking its options and checkpoint path (the missing one:
    # 6.0 s -> 1.6 s on a 2-core machine at load 4); it imports torch first, to tell a torchrun job's ranks it stopped
    argv = [arg.format(tmp=tmp_path) for arg in args]
    assert _command_imports("eval", *argv, heavy=MODEL_MODULES) == (0, "2 ['torch']")



def _checkpoints(tmp_path: Path) -> None:
    """Under `tmp_path`: a run without a complete checkpoint (`empty_run`), a run's checkpoint (`run/checkpoints/
    step-1`) and an exported model folder (`folder`), none holding weights: what a command reads before loading one."""
    (tmp_path / "empty_run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "step-1").mkdir(parents=True)
    (tmp_path / "run" / "config.yaml").write_text("model: {dims: {d_model: 8}}\ndata: {tasks: [parity]}\n")
    (tmp_path / "run" / "checkpoints" / "step-1" / "meta.json").write_text('{"step": 1}')
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "config.json").write_text('{"model_type": "t5", "vocab_size": 100}')
    (tmp_path / "folder" / "t2t_mtl_meta.json").write_text('{"tasks": ["parity"]}')


@pytest.mark.parametrize("args", [("--checkpoint", "{tmp}/empty_run", "--tasks", "parity"),
                                  ("--checkpoint", "{tmp}/run/checkpoints/step-1", "--tasks", "no_such_task"),
                                  ("--checkpoint", "{tmp}/folder", "--tasks", "no_such_task")], ids=" ".join)
def test_an_eval_refused_after_reading_its_checkpoint_imports_no_transformers(args, tmp_path):
    # was: eval read the checkpoint's meta through t2t_mtl.engine.export, which imports transformers (a run without a
    # checkpoint 5.6 s -> 1.5 s, an unknown task 4.4 s -> 1.8 s on a 2-core machine at load 3.5, medians of 5); it
    # imports torch first, as above
    _checkpoints(tmp_path)
    argv = [arg.format(tmp=tmp_path) for arg in args]
    assert _command_imports("eval", *argv, heavy=MODEL_MODULES) == (0, "2 ['torch']")


@pytest.mark.parametrize("args, imported", [
    (("x", "--batch-size", "0"), []),
    # (torch: --device is resolved before the inputs are read)
    (("--input", "{tmp}/missing.txt"), ["torch"]), (("--input", "{tmp}/bad.jsonl"), ["torch"]),
    (("x", "--num-beams", "200"), ["torch"]),  # (more beams than the folder's config.json's vocabulary)
], ids=lambda value: " ".join(value) if isinstance(value, tuple) else None)
def test_a_predict_refused_before_its_model_loads_imports_no_transformers(args, imported, tmp_path):
    # was: predict imported its scoring (transformers) before checking its options and inputs, and read a model
    # folder's meta through t2t_mtl.engine.export (transformers too): --batch-size 0 3.8 s -> 0.2 s, a missing --input
    # 3.9 s -> 1.3 s, a malformed line 6.9 s -> 1.6 s on a 2-core machine at load 3.5, medians of 5
    _checkpoints(tmp_path)
    (tmp_path / "bad.jsonl").write_text('{"inputs": "a"}\nnot json\n')
    argv = [arg.format(tmp=tmp_path) for arg in args]
    assert _command_imports("predict", "--checkpoint", str(tmp_path / "folder"), *argv,
                            heavy=MODEL_MODULES) == (0, f"2 {imported}")


def test_a_predict_on_a_run_without_a_checkpoint_imports_no_transformers(tmp_path):
    # was: predict went to t2t_mtl.engine.export (transformers) to find the run's checkpoint (4.0 s -> 1.4 s on a 2-core
    # machine at load 2.5, medians of 5)
    _checkpoints(tmp_path)
    assert _command_imports("predict", "--checkpoint", str(tmp_path / "empty_run"), "x",
                            heavy=MODEL_MODULES) == (0, "2 ['torch']")

def test_a_preview_reads_rows_with_datasets():
    assert _command_imports("tasks", "preview", "parity", "-n", "1") == (0, "0 ['datasets', 'pandas', 'pyarrow']")


def test_the_rendered_rows_features_are_still_exported():
    import datasets

    import task_registry
    from task_registry import OUTPUT_FEATURES

    assert OUTPUT_FEATURES is task_registry.OUTPUT_FEATURES and isinstance(OUTPUT_FEATURES, datasets.Features)
    assert sorted(OUTPUT_FEATURES) == ["answer_choices", "inputs", "references", "targets", "task", "template"]
