"""One live run per run folder (`engine.run_lock`): a run started into a folder another process trains is refused."""
from __future__ import annotations

import os
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
    # (a new folder's lock is taken once the run made it, and names the process that trained there)
    assert (tmp_path / "run" / "run.lock").read_text().startswith(f"process {os.getpid()} on ")
    metrics = (tmp_path / "run" / "logs" / "metrics.jsonl").read_text()
    saving = tmp_path / "run" / "checkpoints" / ".tmp-step-3"  # the running run's save in progress
    saving.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "run" / "run.lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        resumed = {**cfg, "training": {**cfg["training"], "steps": 4}}
        with pytest.raises(CheckpointError, match=r"^training\.output_dir .*run is being trained by process 4242 on "
                                              r"elsewhere \(it holds .*run\.lock\): stop that run first"):
            train(resumed, resume="auto", evaluate_held_in=False)
        assert (tmp_path / "run" / "logs" / "metrics.jsonl").read_text() == metrics  # nothing trained
        assert saving.is_dir()  # nor cleared as a killed save's leftovers
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


def _take_together_worker(rank: int, port: int, run_dir: str, out: str) -> None:
    """Rank `rank` of two taking the lock of new folder `run_dir` together (`take_together`), then the next collective
    the trainer runs (the data's `failed_ranks`); writes what it ended with to out.<rank>."""
    import os
    from pathlib import Path

    from t2t_mtl.engine.distributed import failed_ranks, join_gloo_group
    from t2t_mtl.engine.run_lock import RunLock, take_together

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    env = join_gloo_group()
    try:
        take_together(RunLock(), Path(run_dir), env)
        failed_ranks(False, env, "training data read")
        result = "locked"
    except CheckpointError as err:
        result = str(err)
    Path(f"{out}.{rank}").write_text(result)


@pytest.mark.slow
def test_two_ranks_started_into_a_new_folder_another_run_took_first_both_stop_naming_it(tmp_path):
    # was: rank 0 raised after the process group existed while rank 1 waited at a barrier for it (a gloo connection
    # error at best, once rank 0's process ended) when two runs started into one new folder at the same time
    from engine_helpers import forked_ranks, free_port

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir / "run.lock")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        port = free_port()
        codes = forked_ranks(_take_together_worker, [(rank, port, str(run_dir), str(tmp_path / "out"))
                                                     for rank in (0, 1)], timeout=60)
    finally:
        holder.kill()
        holder.wait()
    ended = [(tmp_path / f"out.{rank}").read_text() if (tmp_path / f"out.{rank}").exists() else "hung"
             for rank in (0, 1)]
    assert codes == [0, 0], ended
    assert ended == [f"training.output_dir {run_dir} is being trained by process 4242 on elsewhere (it holds "
                     f"{run_dir / 'run.lock'}): stop that run first — a launcher killed with kill -9 leaves its ranks "
                     f"running, end them by their process ids — or train into another training.output_dir",
                     f"rank 0 of 2 found training.output_dir {run_dir} trained by another process (see its error): "
                     f"stop that run first, or train into another training.output_dir"]
    # the holder gone, both go on together (rank 0 held the lock until its process ended)
    port = free_port()
    assert forked_ranks(_take_together_worker, [(rank, port, str(run_dir), str(tmp_path / "again"))
                                                for rank in (0, 1)], timeout=60) == [0, 0]
    assert [(tmp_path / f"again.{rank}").read_text() for rank in (0, 1)] == ["locked", "locked"]


def test_a_run_lock_refuses_a_second_taker_naming_its_holder_and_lets_go_on_release(tmp_path):
    # two runs of this package into one folder (the second a resume of the first, whose ranks outlived their
    # launcher), here two locks of one process, each its own open file as each run's rank 0 has
    import fcntl
    import socket

    from t2t_mtl.engine.run_lock import RunLock

    first, second = RunLock(), RunLock()
    first.take(tmp_path)
    holder = f"process {os.getpid()} on {socket.gethostname()}"
    with pytest.raises(CheckpointError) as refused:
        second.take(tmp_path)
    assert str(refused.value).startswith(f"training.output_dir {tmp_path} is being trained by {holder} (it holds "
                                         f"{tmp_path / 'run.lock'}): stop that run first")
    assert second.handle is None
    first.release()
    second.take(tmp_path)  # (first let go, though its object lives on)
    assert second.handle is not None
    second.release()
    first.take(tmp_path)  # a lock released can be taken again
    with pytest.raises(CheckpointError) as refused:
        RunLock().take(tmp_path)
    assert f"is being trained by {holder} (it holds" in str(refused.value)
    first.release()
    # a holder that has not written its name yet (it locks, then writes) is named as another process
    with open(tmp_path / "run.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(CheckpointError, match=r"is being trained by another process \(it holds "):
            RunLock().take(tmp_path)


def test_a_run_that_failed_lets_its_folder_go_while_its_error_is_kept(tmp_path):
    # a notebook keeps the last error's traceback, and with it the failed run's frames: the folder's lock must not
    # live on with them, refusing the next run into that folder as one trained by this very process
    tok = train_tiny_tokenizer(tmp_path / "tok")
    (tmp_path / "run").mkdir()  # (an existing folder: locked before the run's checks)
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", data={"tasks": ["no_such_task"]})
    errors = []
    for _ in range(2):
        with pytest.raises(Exception) as raised:
            train(cfg, evaluate_held_in=False)
        errors.append(raised)  # (kept: its traceback holds the failed run's frames)
    assert [type(error.value).__name__ for error in errors] == ["ConfigError"] * 2, errors[1].value
