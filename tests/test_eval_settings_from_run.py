"""`EvalSettings.from_run`: a finished run's own evaluation settings for the Python API, as `t2t-mtl eval` of the run
takes them when given no option (one derivation, `t2t_mtl.evaluation.run_settings`), checked against the
settings the command hands `evaluate_tasks` and against the run's config written in the test."""
from __future__ import annotations

import dataclasses
import json

import pytest

from t2t_mtl.cli import main as cli_main
from t2t_mtl.evaluation import CheckpointError, EvalSettings, EvaluationError

from engine_helpers import tiny_config, train_tiny_tokenizer

#: the run's evaluation section: every setting off its EvalSettings default
EVALUATION = {"tasks": ["parity"], "split": "test", "max_examples": 3, "scoring": "generate",
              "num_beams": 2, "max_new_tokens": 5, "batch_size": 4, "num_shots": 1, "shots_split": "validation",
              "original_task_only": False}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from t2t_mtl import train

    root = tmp_path_factory.mktemp("from_run")
    tokenizer = train_tiny_tokenizer(root / "tok")
    cfg = tiny_config(root / "run", tokenizer, root / "cache", data={"tasks": ["parity"], "max_input_length": 24},
                      training={"steps": 1, "seed": 7}, evaluation=EVALUATION)
    return train(cfg, evaluate_held_in=False).run_dir


def _settings_eval_uses(run, monkeypatch) -> EvalSettings:
    """The EvalSettings `t2t-mtl eval --checkpoint RUN --tasks parity` hands evaluate_tasks (stopped there)."""
    import t2t_mtl.evaluation as evaluation

    seen = []

    def stop(model, tokenizer, tasks, settings, **kwargs):
        seen.append(settings)
        raise ValueError("stop here")

    monkeypatch.setattr(evaluation, "evaluate_tasks", stop)
    assert cli_main(["eval", "--checkpoint", str(run), "--tasks", "parity"]) == 2
    return seen[0]


def test_from_run_is_what_eval_of_the_run_scores_with(run_dir, tmp_path, monkeypatch, capsys):
    # was: no way from Python to take a run's evaluation settings; EvalSettings() scored 512 input tokens, 64 new
    # ones, greedy and zero-shot whatever the run evaluated with, unlike `t2t-mtl eval` of the run
    written = EvalSettings(split="test", max_examples=3, scoring="generate", num_beams=2,
                           max_new_tokens=5, batch_size=4, max_input_length=24, seed=7, num_shots=1,
                           shots_split="validation")  # the run's config, as written above
    settings = EvalSettings.from_run(run_dir)
    assert settings == written == _settings_eval_uses(run_dir, monkeypatch)
    checkpoint = sorted((run_dir / "checkpoints").glob("step-*"))[-1]
    from t2t_mtl import load_trained_model

    _, _, meta = load_trained_model(run_dir)
    assert EvalSettings.from_run(checkpoint) == EvalSettings.from_run(meta) == written
    # a folder exported from the run carries its config
    assert cli_main(["export", str(run_dir), "--out", str(tmp_path / "export")]) == 0
    assert EvalSettings.from_run(tmp_path / "export") == written == _settings_eval_uses(tmp_path / "export",
                                                                                         monkeypatch)
    assert dataclasses.replace(settings, max_examples=None).max_examples is None


def test_from_run_of_a_folder_that_is_no_run_names_it(run_dir, tmp_path):
    with pytest.raises(CheckpointError, match=f"checkpoint '{tmp_path / 'nope'}' does not exist"):
        EvalSettings.from_run(tmp_path / "nope")
    plain = tmp_path / "plain"  # a Hugging Face model folder from elsewhere: no run config
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(EvaluationError, match=f"'{plain}' holds no t2t-mtl run's config .* build EvalSettings"):
        EvalSettings.from_run(plain)
    with pytest.raises(EvaluationError, match="this meta holds no t2t-mtl run's config"):
        EvalSettings.from_run({"path": str(plain)})
