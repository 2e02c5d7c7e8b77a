"""The names a Python user imports from the top of the package (`from t2t_mtl import train`): each is the object its
module defines, and `import t2t_mtl` alone stays light."""
from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import t2t_mtl

REPO = Path(__file__).resolve().parent.parent


def _printed(code: str) -> str:
    """What Python `code` prints, run by a fresh interpreter in the repository; the test fails with its error if it
    fails."""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.parametrize("name, module", [
    ("Config", "t2t_mtl.config"), ("ConfigError", "t2t_mtl.config"), ("config_from_dict", "t2t_mtl.config"),
    ("load_config", "t2t_mtl.config"), ("train", "t2t_mtl.engine.trainer"), ("TrainResult", "t2t_mtl.engine.trainer"),
    ("TrainingAbortedError", "t2t_mtl.engine.trainer"), ("load_trained_model", "t2t_mtl.engine.export"),
    ("export_model", "t2t_mtl.engine.export"), ("EvalSettings", "t2t_mtl.evaluation"),
    ("EvalReport", "t2t_mtl.evaluation"), ("evaluate_tasks", "t2t_mtl.evaluation"), ("predict", "t2t_mtl.evaluation"),
    ("PredictRequest", "t2t_mtl.evaluation"), ("Prediction", "t2t_mtl.evaluation"),
    ("read_report", "t2t_mtl.evaluation"), ("write_report", "t2t_mtl.evaluation"),
])
def test_a_top_level_name_is_its_modules_object(name, module):
    # was: `from t2t_mtl import train` (or load_config, evaluate_tasks, ...) was an ImportError: the package exported
    # only __version__, and a notebook had to find each function's module
    assert name in t2t_mtl.__all__ and name in dir(t2t_mtl)
    assert getattr(t2t_mtl, name) is getattr(importlib.import_module(module), name)


def test_every_top_level_name_is_listed_and_an_unknown_one_is_an_attribute_error():
    assert sorted(t2t_mtl.__all__) == sorted({"__version__", *t2t_mtl._EXPORTS})
    with pytest.raises(AttributeError, match=r"^module 't2t_mtl' has no attribute 'trian'$"):
        t2t_mtl.trian


def test_importing_the_package_loads_neither_torch_nor_its_modules():
    code = ("import sys, t2t_mtl; assert t2t_mtl.__version__; print(sorted(m for m in sys.modules "
            "if m in ('torch', 'deepspeed', 'datasets') or m.startswith('t2t_mtl.') and m != 't2t_mtl.lazy_package'))")
    # (t2t_mtl.lazy_package, the lazy exports themselves, imports nothing but the standard library)
    assert _printed(code).strip() == "[]"


@pytest.mark.parametrize("first", ["from t2t_mtl.evaluation.predict import PredictRequest", "import t2t_mtl.evaluation",
                                   "from t2t_mtl.evaluation import predict"])
def test_the_evaluation_packages_predict_is_the_function_whichever_import_came_first(first):
    # t2t_mtl.evaluation imports its modules when a name is first read; importing a submodule binds it on its package,
    # and the module t2t_mtl.evaluation.predict would then have hidden the function the package exports as `predict`
    code = (f"{first}\nimport types\nimport t2t_mtl, t2t_mtl.evaluation\nfrom t2t_mtl.evaluation import predict\n"
            "from t2t_mtl.evaluation.predict import predict as defined\n"
            "print(isinstance(predict, types.FunctionType), predict is defined is t2t_mtl.evaluation.predict "
            "is t2t_mtl.predict)")
    assert _printed(code).split() == ["True", "True"]


def test_the_evaluation_packages_names_are_its_modules_objects_and_its_metrics_and_settings_load_no_torch():
    # (settings check their generation sizes, which generation.py, with torch, defined)
    code = ("import sys, importlib, t2t_mtl.evaluation as ev\n"
            "from t2t_mtl.evaluation import METRICS, EvalSettings, read_report\nEvalSettings(max_new_tokens=8)\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
            "print(all(getattr(ev, n) is getattr(importlib.import_module(m), n) for n, m in ev._EXPORTS.items()), "
            "sorted(ev.__all__) == sorted(ev._EXPORTS) and set(ev.__all__) <= set(dir(ev)))")
    assert _printed(code).splitlines() == ["[]", "True True"]


def test_requests_to_predict_are_built_and_read_without_torch():
    # was: PredictRequest and read_requests were defined beside predict, which imports torch and transformers
    code = ("import sys\nfrom t2t_mtl.evaluation import PredictRequest, read_requests\n"
            "requests = read_requests(['{\"inputs\": \"a?\", \"answer_choices\": [\"yes\", \"no\"]}'], jsonl=True, "
            "source='lines')\nprint(requests == [PredictRequest('a?', ['yes', 'no'], row={'inputs': 'a?', "
            "'answer_choices': ['yes', 'no']})], sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    assert _printed(code).strip() == "True []"


def test_the_packages_dir_lists_their_own_names_beside_the_exports_and_a_name_can_be_patched():
    # dir() is what a notebook completes from: a package's own names (__version__) belong there beside the lazy ones;
    # and a test double patched over an exported name (unittest.mock.patch, whose objects have no __name__) is taken
    from unittest import mock

    import t2t_mtl.evaluation as evaluation

    assert {"__version__", "__all__", "train"} <= set(dir(t2t_mtl))
    assert {"__all__", "_EXPORTS", "METRICS"} <= set(dir(evaluation))
    double = mock.MagicMock()
    with mock.patch("t2t_mtl.evaluation.METRICS", double), mock.patch("t2t_mtl.evaluation.evaluate_tasks", {}):
        assert evaluation.METRICS is double and evaluation.evaluate_tasks == {}
    assert evaluation.METRICS is importlib.import_module("t2t_mtl.evaluation.metrics").METRICS


def test_a_train_results_repr_is_one_line_not_its_task_sequence():
    # was the dataclass's repr: every field, the task of each of the run's micro-batches among them (thousands of
    # names in a notebook cell ending with `train(cfg)`)
    from t2t_mtl import TrainResult

    result = TrainResult(run_dir=Path("runs/quickstart"), step=2500, final_loss=1.23456, task_losses={"a": 1.2},
                         examples_seen={"a": 80000}, skipped_steps=0, tokens_per_second=1e4, wall_time_s=60.0,
                         checkpoint=None, held_in_accuracy=0.5213, held_in_per_task={"a": 0.5213}, chance_accuracy=0.1,
                         task_sequence=["a"] * 2500, held_out_scores={"rte": 48.04}, held_out_accuracy=48.04)
    assert repr(result) == str(result) == (
        "TrainResult('runs/quickstart', step 2500, final loss 1.235, held-in exact match 52.1%, held-out macro "
        "average 48.0)")
    stopped = TrainResult(run_dir=Path("r"), step=7, final_loss=float("nan"), task_losses={}, examples_seen={},
                          skipped_steps=0, tokens_per_second=0.0, wall_time_s=0.0, checkpoint=None, interrupted=True,
                          stopped_early=True, held_out_scores={"rte": None})
    assert repr(stopped) == (
        "TrainResult('r', step 7, final loss nan, held-out macro average —, interrupted, stopped early)")
