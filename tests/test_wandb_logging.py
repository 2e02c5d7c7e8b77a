"""`training.wandb`: a run's scalars reach Weights & Biases exactly as its JSONL logs hold them (a recording
stand-in for the wandb module), one W&B run per t2t-mtl run across a resume, the real wandb package in offline
mode, and config errors."""
from __future__ import annotations

import json
import logging
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
    """Stands in for the `wandb` module: records init arguments, logged rows (with the index of their init) and
    finish calls."""

    def __init__(self):
        self.inits, self.rows, self.metrics, self.exit_codes, self.process = [], [], [], [], []

    def init(self, **kwargs):
        self.inits.append(kwargs)
        recorder = self
        return types.SimpleNamespace(
            log=lambda data, step=None: (recorder.rows.append((step, dict(data))),
                                         recorder.process.append(len(recorder.inits) - 1)),
            define_metric=lambda name, step_metric=None: recorder.metrics.append((name, step_metric)),
            finish=lambda exit_code=None: recorder.exit_codes.append(exit_code))


def _expected_rows(run_dir):
    """The rows W&B should get, computed from the run's own logs: every training record at its step, every
    zero-shot evaluation on the held_out/step axis."""
    rows = []
    for r in read_metrics(run_dir / "logs"):
        scalars = {"train/loss": r["loss"], "train/lr": r["lr"], "train/tokens_per_s": r["tokens_per_s"]}
        for key in ("task_loss", "task_examples", "task_probability", "task_weight", "val_loss", "val_score"):
            scalars.update({f"{key}/{task}": v for task, v in r.get(key, {}).items()})
        rows.append((r["step"], scalars))
    held_out = [{**{f"held_out/{t}": v for t, v in r["tasks"].items() if v is not None},
                 "held_out/macro_average": r["macro_average"], "held_out/step": r["step"]}
                for r in read_held_out(run_dir / "logs")]
    return rows, held_out


def _check_monotonic(recorder):
    """W&B's rule for the rows of one run across processes: every row at an explicit step, never below a step
    an earlier process sent, non-decreasing within a process (a step repeated there merges into its row)."""
    earlier, last = -1, -1
    for (step, _), process, previous in zip(recorder.rows, recorder.process, [None] + recorder.process):
        if process != previous:
            earlier = last
        assert step is not None and step > earlier and step >= last, (step, earlier, last)
        last = step


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
    assert len(rows) == 4 and [r["held_out/step"] for r in held_out] == [2, 4]  # step 2, then after training
    assert [r for r in recorder.rows if "held_out/step" not in r[1]] == rows
    assert [r[1] for r in recorder.rows if "held_out/step" in r[1]] == held_out
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
    assert [step for step, row in recorder.rows if "train/loss" in row][-2:] == [5, 6]
    _check_monotonic(recorder)


def test_a_resume_sends_wandb_each_step_once_at_increasing_steps(tmp_path, tok, monkeypatch, caplog):
    # was: a run resumed after a crash sent again the steps after its checkpoint (W&B refuses steps below its
    # last: online it dropped them with warnings; offline the resumed folder overlapped the first), and the
    # zero-shot evaluation a SIGTERM deferred to the resumed run went to W&B's next automatic step, after which
    # W&B refused the resumed run's first training step
    import os
    import signal

    from t2t_mtl.engine import trainer as trainer_mod

    recorder = _Recorder()
    monkeypatch.setitem(sys.modules, "wandb", recorder)
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache",
                      training={"steps": 8, "checkpoint_every": 2, "wandb": {"project": "p", "mode": "offline"}},
                      evaluation={"tasks": [TASKS[1]], "every": 4, "max_examples": 2, "scoring": "auto"})
    real = trainer_mod.forward_losses
    calls = {"n": 0}

    def crash_at_4_then_sigterm_at_4(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4 and not crash_at_4_then_sigterm_at_4.crashed:
            crash_at_4_then_sigterm_at_4.crashed = True
            raise RuntimeError("crash")  # after steps 1, 2 (checkpointed) and 3 were sent
        if calls["n"] == 2 and crash_at_4_then_sigterm_at_4.crashed:
            os.kill(os.getpid(), signal.SIGTERM)  # during step 4, an evaluation step: the resumed run evaluates
        return real(*args, **kwargs)

    crash_at_4_then_sigterm_at_4.crashed = False
    monkeypatch.setattr(trainer_mod, "forward_losses", crash_at_4_then_sigterm_at_4)
    with pytest.raises(RuntimeError, match="crash"):
        train(cfg, evaluate_held_in=False)
    calls["n"] = 0
    with caplog.at_level(logging.WARNING, logger="t2t_mtl.engine.wandb_logging"):
        assert train(cfg, resume="auto", evaluate_held_in=False).step == 4
    assert "W&B already has the steps up to 3 (sent before this resume" in caplog.text and "steps 3-3" in caplog.text
    train(cfg, resume="auto", evaluate_held_in=False)
    assert len(recorder.inits) == 3 and len({init["id"] for init in recorder.inits}) == 1
    _check_monotonic(recorder)
    training = [step for step, row in recorder.rows if "train/loss" in row]
    assert training == list(range(1, 9))  # each step once (step 3 twice before: sent, then again after the resume)
    held_out = [(step, row["held_out/step"]) for step, row in recorder.rows if "held_out/step" in row]
    assert held_out == [(5, 4), (8, 8)]  # the deferred step-4 evaluation shares the resumed run's first row
    rows, _ = _expected_rows(tmp_path / "run")
    sent = [r for r in recorder.rows if "train/loss" in r[1]]
    assert sent[:2] == rows[:2]
    assert sent[2][1]["train/loss"] == rows[2][1]["train/loss"]  # step 3 as sent first, as the resume reproduced it


def test_a_fresh_run_over_one_that_died_before_its_first_checkpoint_starts_a_new_wandb_run(tmp_path, tok,
                                                                                           monkeypatch):
    from t2t_mtl.engine import trainer as trainer_mod

    recorder = _Recorder()
    monkeypatch.setitem(sys.modules, "wandb", recorder)
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": 3, "wandb": {"project": "p"}})
    real = trainer_mod.forward_losses
    calls = {"n": 0}

    def crash_at_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_mod, "forward_losses", crash_at_3)
    with pytest.raises(RuntimeError, match="crash"):
        train(cfg, evaluate_held_in=False)
    monkeypatch.setattr(trainer_mod, "forward_losses", real)
    train(cfg, evaluate_held_in=False)  # (its logs start over, as metrics.jsonl does)
    assert recorder.inits[0]["id"] != recorder.inits[1]["id"]
    assert [step for step, _ in recorder.rows] == [1, 2, 1, 2, 3]


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
    # was: "needs at least a project", not naming the misspelt key the project was given under
    ({"projct": "q", "entity": "me"}, "unknown key training.wandb.projct; did you mean 'project'"),
    ({"project": "p", "mode": "cloud"}, "training.wandb.mode='cloud': use one of online, offline, disabled"),
    ({"project": "p", "tags": "a"}, "training.wandb.tags='a': must be a list of strings"),
    ({"project": 3}, "training.wandb.project=3: must be a string"),
    ({"project": "p", "notes": 3}, "training.wandb.notes=3: must be a string"),
    ({"project": "p", "tags": ["a", 1]}, r"training.wandb.tags=\['a', 1\]: must be a list of strings"),
])
def test_bad_wandb_sections_are_refused(section, message):
    with pytest.raises(ConfigError, match=message):
        check_wandb_section(section)


def test_a_missing_wandb_package_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 't2t-mtl\[wandb\]'"):
        check_wandb_section({"project": "p"})
    assert check_wandb_section(None) is None and check_wandb_section(False) is None


def test_a_wandb_section_is_completed_with_its_defaults():
    assert check_wandb_section({"project": "p"}) == {"project": "p", "tags": [], "mode": "online"}
    given = {"project": "p", "tags": ["x"], "mode": "offline"}
    assert check_wandb_section(given) == given


def test_the_wandb_run_gets_every_setting_of_the_section_and_the_held_out_axis(tmp_path, monkeypatch):
    from t2t_mtl.engine.wandb_logging import WandbWriter

    recorder = _Recorder()
    monkeypatch.setitem(sys.modules, "wandb", recorder)
    section = {"project": "p", "entity": "team", "name": "first", "group": "g", "tags": ["t"], "notes": "n",
               "mode": "offline"}
    WandbWriter(section, tmp_path, {"seed": 1}, resumed=False)
    (init,) = recorder.inits
    assert {key: init[key] for key in section} == section and init["config"] == {"seed": 1}
    assert recorder.metrics == [("held_out/step", None), ("held_out/*", "held_out/step")]


def test_a_resumed_wandb_writer_skips_the_steps_wandb_has_with_one_warning(tmp_path, monkeypatch, caplog):
    from t2t_mtl.engine.wandb_logging import STEP_FILE, WandbWriter

    recorder = _Recorder()
    monkeypatch.setitem(sys.modules, "wandb", recorder)
    (tmp_path / RUN_ID_FILE).write_text("abc")
    (tmp_path / STEP_FILE).write_text("5")  # W&B got the steps up to 5 before this resume
    writer = WandbWriter({"project": "p"}, tmp_path, {})
    with caplog.at_level(logging.WARNING, logger="t2t_mtl.engine.wandb_logging"):
        for step in (3, 4, 5, 6):
            writer.add_scalars({"train/loss": float(step)}, step)
    assert recorder.inits[0]["id"] == "abc" and recorder.rows == [(6, {"train/loss": 6.0})]
    assert len(caplog.records) == 1 and "W&B already has the steps up to 5" in caplog.text
    assert "steps 3-5 keep the values sent first" in caplog.text
    assert (tmp_path / STEP_FILE).read_text() == "6"
