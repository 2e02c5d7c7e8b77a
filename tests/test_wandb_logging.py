"""`training.wandb`: a run's scalars reach Weights & Biases exactly as its JSONL logs hold them (a recording
stand-in for the wandb module), one W&B run per t2t-mtl run across a resume, the real wandb package in offline
mode, and config errors."""
from __future__ import annotations

import json
import sys
import time
import types

import pytest
import yaml

from t2t_mtl.config import ConfigError
from t2t_mtl.engine.logging import read_held_out, read_metrics
from t2t_mtl.engine.trainer import train
from t2t_mtl.engine.wandb_logging import RUN_ID_FILE, check_wandb_section

from engine_helpers import TASKS, tiny_config, train_tiny_tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


class _Recorder:
    """Stands in for the `wandb` module: records init arguments, logged rows and finish calls."""

    def __init__(self):
        self.inits, self.rows, self.metrics, self.exit_codes = [], [], [], []

    def init(self, **kwargs):
        self.inits.append(kwargs)
        recorder = self
        return types.SimpleNamespace(
            log=lambda data, step=None: recorder.rows.append((step, dict(data))),
            define_metric=lambda name, step_metric=None: recorder.metrics.append((name, step_metric)),
            finish=lambda exit_code=None: recorder.exit_codes.append(exit_code))


def _expected_rows(run_dir):
    """The rows W&B should get, computed from the run's own logs: every training record at its step, every
    zero-shot evaluation on the held_out/step axis."""
    rows = []
    for r in read_metrics(run_dir / "logs"):
        scalars = {"train/loss": r["loss"], "train/lr": r["lr"], "train/tokens_per_s": r["tokens_per_s"]}
        for key in ("task_loss", "task_examples", "val_loss", "val_score"):
            scalars.update({f"{key}/{task}": v for task, v in r.get(key, {}).items()})
        rows.append((r["step"], scalars))
    held_out = [(None, {**{f"held_out/{t}": v for t, v in r["tasks"].items() if v is not None},
                        "held_out/macro_average": r["macro_average"], "held_out/step": r["step"]})
                for r in read_held_out(run_dir / "logs")]
    return rows, held_out


def test_wandb_gets_the_logged_scalars_and_a_resume_continues_its_run(tmp_path, tok, monkeypatch):
    recorder = _Recorder()
    monkeypatch.setitem(sys.modules, "wandb", recorder)
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache",
                      training={"steps": 4, "validate_every": 2, "validate_examples": 2, "checkpoint_every": 2,
                                "wandb": {"project": "t2t-tests", "tags": ["tiny"], "mode": "offline"}},
                      evaluation={"tasks": [TASKS[1]], "every": 2, "max_examples": 2, "scoring": "auto"})
    train(cfg)
    run_dir = tmp_path / "run"
    rows, held_out = _expected_rows(run_dir)
    assert len(rows) == 4 and [r[1]["held_out/step"] for r in held_out] == [2, 4]  # step 2, then after training
    assert [r for r in recorder.rows if r[0] is not None] == rows
    assert [r for r in recorder.rows if r[0] is None] == held_out
    assert any("val_score/" in k for _, scalars in rows for k in scalars)  # validation steps included
    (init,) = recorder.inits
    run_id = (run_dir / "logs" / RUN_ID_FILE).read_text()
    assert init["id"] == run_id and init["resume"] == "allow" and init["project"] == "t2t-tests"
    assert init["tags"] == ["tiny"] and init["mode"] == "offline" and init["dir"] == str(run_dir / "logs")
    assert init["config"] == yaml.safe_load((run_dir / "config.yaml").read_text())
    assert ("held_out/*", "held_out/step") in recorder.metrics and recorder.exit_codes == [0]

    cfg["training"]["steps"] = 6
    train(cfg, resume="auto")
    assert [i["id"] for i in recorder.inits] == [run_id, run_id] and recorder.exit_codes == [0, 0]
    assert [step for step, _ in recorder.rows if step is not None][-2:] == [5, 6]


def test_a_failing_run_still_finishes_its_wandb_run(tmp_path, tok, monkeypatch):
    from t2t_mtl.engine import trainer as trainer_mod

    recorder = _Recorder()
    monkeypatch.setitem(sys.modules, "wandb", recorder)
    monkeypatch.setattr(trainer_mod, "forward_losses", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"wandb": {"project": "p"}})
    with pytest.raises(RuntimeError, match="boom"):
        train(cfg)
    assert recorder.exit_codes == [1]  # marked failed in W&B


def test_a_wandb_that_cannot_start_is_a_config_error_and_leaves_no_handler(tmp_path, tok, monkeypatch):
    import signal

    def refuse(**kwargs):
        raise RuntimeError("No API key configured")

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=refuse))
    handler = signal.getsignal(signal.SIGTERM)
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"wandb": {"project": "p"}})
    with pytest.raises(ConfigError, match=r"W&B could not start the run \(RuntimeError: No API key configured\); "
                                          r"log in .*or set training.wandb.mode: offline"):
        train(cfg)
    assert signal.getsignal(signal.SIGTERM) is handler


def test_the_real_wandb_package_logs_offline(tmp_path, tok, monkeypatch):
    pytest.importorskip("wandb", reason="pip install 't2t-mtl[wandb]' (the dev extra installs it)")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache",
                      training={"steps": 3, "wandb": {"project": "t2t-tests", "mode": "offline"}})
    result = train(cfg)
    run_id = (tmp_path / "run" / "logs" / RUN_ID_FILE).read_text()
    files = sorted((tmp_path / "run" / "logs" / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 1, sorted(str(p) for p in (tmp_path / "run" / "logs").rglob("*"))
    deadline = time.monotonic() + 60  # offline, wandb's service process writes the file after finish() returns
    while b"train/loss" not in files[0].read_bytes() and time.monotonic() < deadline:
        time.sleep(0.2)
    data = files[0].read_bytes()
    last = read_metrics(tmp_path / "run" / "logs")[-1]
    assert last["step"] == result.step == 3
    for tag in ("train/loss", *(f"task_loss/{t}" for t in last["task_loss"])):
        assert tag.encode() in data
    assert json.dumps(last["loss"]).encode() in data, (last["loss"], len(data))  # the logged value itself


@pytest.mark.parametrize("section,message", [
    ({"entity": "me"}, "training.wandb needs at least a project"),
    ({"project": "p", "projct": "q"}, "unknown key training.wandb.projct; did you mean 'project'"),
    ({"project": "p", "mode": "cloud"}, "training.wandb.mode='cloud': use one of online, offline, disabled"),
    ({"project": "p", "tags": "a"}, "training.wandb.tags='a': must be a list of strings"),
    ({"project": 3}, "training.wandb.project=3: must be a string"),
])
def test_bad_wandb_sections_are_refused(section, message):
    with pytest.raises(ConfigError, match=message):
        check_wandb_section(section)


def test_a_missing_wandb_package_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 't2t-mtl\[wandb\]'"):
        check_wandb_section({"project": "p"})
    assert check_wandb_section(None) is None and check_wandb_section(False) is None
