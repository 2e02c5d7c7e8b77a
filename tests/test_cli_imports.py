"""Commands that read no rows (listing, showing tasks, a mixture's rates) import neither datasets nor pyarrow nor
pandas: task_registry imports them where rows are loaded, rendered or tokenized."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("datasets", "pyarrow", "pandas", "torch")


def _command_imports(*args: str, from_python: bool = False) -> tuple:
    """(exit code, the HEAVY modules imported) of `t2t-mtl ARGS` run as the console script runs it (`from_python`:
    as `main(ARGS)` called from Python runs it)."""
    call = "main(sys.argv[1:])" if from_python else "main()"
    code = (f"import sys; from t2t_mtl.cli import main; sys.argv[1:] = sys.argv[1:]; code = {call}; "
            f"print(code, sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)")
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

def test_a_preview_reads_rows_with_datasets():
    assert _command_imports("tasks", "preview", "parity", "-n", "1") == (0, "0 ['datasets', 'pandas', 'pyarrow']")


def test_the_rendered_rows_features_are_still_exported():
    import datasets

    import task_registry
    from task_registry import OUTPUT_FEATURES

    assert OUTPUT_FEATURES is task_registry.OUTPUT_FEATURES and isinstance(OUTPUT_FEATURES, datasets.Features)
    assert sorted(OUTPUT_FEATURES) == ["answer_choices", "inputs", "references", "targets", "task", "template"]
