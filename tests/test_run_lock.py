"""One live run per run folder (`engine.run_lock`): a run started into a folder another process trains is refused."""
from __future__ import annotations

import subprocess
import sys

import pytest

from engine_helpers import tiny_config, train_tiny_tokenizer
from t2t_mtl.engine.checkpoint import CheckpointError
from t2t_mtl.engine.trainer import train

# a process that holds a folder's lock as a training rank 0 would (flock on run.lock), written out independently
HOLDER = """
import fcntl, sys, time
handle = open(sys.argv[1], "a+")
fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
handle.seek(0)
handle.truncate()
handle.write("process 4242 on elsewhere\\n")
handle.flush()
print("held", flush=True)
time.sleep(120)
"""


def test_a_run_folder_another_process_trains_refuses_a_resume_until_that_process_is_gone(tmp_path):
    # was: `deepspeed ... train` killed with kill -9 leaves its ranks training, and `--resume RUN` started a second
    # run beside them into the same logs and checkpoints (seen: both wrote runs/K's metrics.jsonl and checkpoints)
    tok = train_tiny_tokenizer(tmp_path / "tok")
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": 2})
    assert train(cfg, evaluate_held_in=False).step == 2
    metrics = (tmp_path / "run" / "logs" / "metrics.jsonl").read_text()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "run" / "run.lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        resumed = {**cfg, "training": {**cfg["training"], "steps": 4}}
        with pytest.raises(CheckpointError, match=r"^training\.output_dir .*run is being trained by process 4242 on "
                                              r"elsewhere \(it holds .*run\.lock\): stop that run first"):
            train(resumed, resume="auto", evaluate_held_in=False)
        assert (tmp_path / "run" / "logs" / "metrics.jsonl").read_text() == metrics  # nothing trained
    finally:
        holder.kill()  # (SIGKILL: the kernel drops its lock)
        holder.wait()
    assert train(resumed, resume="auto", evaluate_held_in=False).step == 4
    lock = (tmp_path / "run" / "run.lock").read_text()
    assert lock.startswith("process ") and "4242" not in lock  # the resumed run's own process
    # let go at the end of train(): the next run in this process takes it
    assert train({**cfg, "training": {**cfg["training"], "steps": 5}}, resume="auto", evaluate_held_in=False).step == 5


def test_a_folder_that_cannot_be_locked_is_trained_unlocked(tmp_path, monkeypatch):
    # a lock file it cannot open (the run's check of training.output_dir names an unwritable folder), or a filesystem
    # without flock (Lustre mounted without it): the run is neither refused nor stopped by a raw OSError
    import errno

    from t2t_mtl.engine import run_lock

    def refused(*args, **kwargs):
        raise OSError(errno.ENOLCK, "No locks available")

    for name in ("open", "fcntl.flock"):
        with monkeypatch.context() as patch:
            if name == "open":
                patch.setattr(run_lock, "open", refused, raising=False)
            else:
                patch.setattr(run_lock.fcntl, "flock", refused)
            lock = run_lock.RunLock()
            lock.take(tmp_path)
            assert lock.handle is None
    lock = run_lock.RunLock()
    lock.take(tmp_path)  # (and where it can: held)
    assert lock.handle is not None
    lock.release()
