"""Writing a checkpoint (`t2t_mtl.engine.checkpoint_saving`): the renames that publish it fsynced, a failure on one
rank raised on every rank, a crash or kill at any point leaving `latest` (and `best`) on a whole checkpoint, what it
left cleared by the next save or resume, and pruning among the checkpoints up to the step saved."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch

from t2t_mtl.engine import checkpoint as ck
from t2t_mtl.engine import checkpoint_saving
from t2t_mtl.engine.distributed import DistEnv

from engine_helpers import forked_ranks

ENV = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend="gloo")


class FakeEngine:
    """Writes files the way engine.save_checkpoint does; can crash half-way."""

    def __init__(self, crash: bool = False, error: Exception = None):
        self.crash, self.error = crash, error

    def save_checkpoint(self, save_dir, tag, save_latest=True):
        path = Path(save_dir) / tag
        path.mkdir(parents=True)
        (path / "mp_rank_00_model_states.pt").write_bytes(b"weights")
        if self.crash:
            raise KeyboardInterrupt("killed mid-write")
        if self.error is not None:
            raise self.error


def save(run, step, crash=False, error=None):
    return checkpoint_saving.save_checkpoint(FakeEngine(crash, error), run, step, trainer_state={"step": step},
                                             rank_state={"r": 0}, meta={"zero_stage": 0}, env=ENV, keep=2)


def test_the_renames_that_publish_a_checkpoint_are_fsynced_in_their_directory(tmp_path, monkeypatch):
    # was: only the files were fsynced; a power loss after the save could lose the rename into step-N, the new
    # `latest` or `best` (directory entries reach the disk with an fsync of the directory itself)
    events = []
    real_fsync, real_rename, real_replace = os.fsync, os.rename, os.replace

    def fsync(fd):
        info = os.fstat(fd)
        events.append(("fsync", (info.st_dev, info.st_ino)))
        return real_fsync(fd)

    def rename(src, dst):
        events.append(("rename", Path(dst).name))
        return real_rename(src, dst)

    def replace(src, dst):
        events.append(("replace", Path(dst).name))
        return real_replace(src, dst)

    save(tmp_path, 10)  # (creates checkpoints/)
    root = tmp_path / ck.CHECKPOINTS
    root_id = (root.stat().st_dev, root.stat().st_ino)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "replace", replace)
    checkpoint_saving.save_checkpoint(FakeEngine(), tmp_path, 20, trainer_state={"step": 20}, rank_state={"r": 0},
                                      meta={"zero_stage": 0}, env=ENV, keep=2, best_step=10)
    published = [i for i, e in enumerate(events) if e in (("rename", "step-00000020"), ("replace", ck.LATEST),
                                                         ("replace", ck.BEST))]
    assert len(published) == 3
    for at in published:  # each followed by an fsync of checkpoints/ before anything else is published
        following = [e for e in events[at + 1:] if e[0] == "fsync" or e in [events[p] for p in published]]
        assert following and following[0] == ("fsync", root_id), (events[at], events)
    step_dir = root / "step-00000020"  # the folders inside the checkpoint are flushed too (their new entries)
    assert ("fsync", (step_dir.stat().st_dev, step_dir.stat().st_ino)) in events
    latest = (root / ck.LATEST).stat()  # the new pointer's text is on disk before it replaces the old one
    assert ("fsync", (latest.st_dev, latest.st_ino)) in events[:events.index(("replace", ck.LATEST))]


class _Zero3Optimizer:
    """Gathers the persistent parameters again after a save, as ZeRO-3's optimizer does (a collective)."""

    def checkpoint_event_epilogue(self):
        torch.distributed.all_reduce(torch.zeros(1))


class _BarrierEngine:
    """Writes its part, then runs ZeRO-3's epilogue and waits at a barrier, as DeepSpeed's save_checkpoint ends; can
    fail (disk full) in its write."""

    optimizer = _Zero3Optimizer()

    def __init__(self, fail: bool):
        self.fail = fail

    def save_checkpoint(self, save_dir, tag, save_latest=True):
        if self.fail:
            raise OSError(28, "No space left on device")
        path = Path(save_dir) / tag
        path.mkdir(parents=True, exist_ok=True)
        (path / f"zero_pp_rank_{torch.distributed.get_rank()}_optim_states.pt").write_bytes(b"partition")
        self.optimizer.checkpoint_event_epilogue()
        torch.distributed.barrier()


def _two_rank_save_worker(rank: int, port: int, run: str, fail: str, failing_rank: int, out: str) -> None:
    from t2t_mtl.engine.distributed import join_gloo_group, leave_process_group

    # joined as a run joins: the default group (its timeout DEEPSPEED_TIMEOUT minutes), and the waiting group
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), DEEPSPEED_TIMEOUT="1")
    env = join_gloo_group()
    try:
        for step in (5, 10):
            failing = step == 10 and rank == failing_rank
            if failing and fail == "rank_state":
                def full(*args, **kwargs):
                    raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos")
                # (this process's torch: the rank state, written after DeepSpeed's part)
                checkpoint_saving.torch.save = full
            started = time.perf_counter()
            try:
                checkpoint_saving.save_checkpoint(_BarrierEngine(failing and fail == "deepspeed"), Path(run), step,
                                                  trainer_state={"step": step}, rank_state={"r": rank},
                                                  meta={"zero_stage": 2}, env=env)
                result = "saved"
            except ck.CheckpointError as err:
                result = f"CheckpointError: {err}"
            Path(f"{out}.{rank}.{step}").write_text(f"{time.perf_counter() - started:.1f} {result}")
    finally:
        leave_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("fail, failing_rank", [("deepspeed", 0), ("deepspeed", 1), ("rank_state", 1)])
def test_a_save_failing_on_one_rank_raises_on_every_rank_at_once(tmp_path, fail, failing_rank):
    # was: the failing rank raised its CheckpointError alone; the other waited at the next barrier until the job was
    # killed. Then, failing inside DeepSpeed's save, it waited for the others in the waiting group's barrier while they
    # waited in ZeRO-3's epilogue and DeepSpeed's closing barrier (the default group's) until that group's timeout (here
    # 60 s), and both ranks then died in gloo
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "result")
    assert forked_ranks(_two_rank_save_worker, [(rank, port, str(tmp_path / "run"), fail, failing_rank, out)
                                                for rank in range(2)], timeout=120) == [0, 0]
    results = {rank: {step: Path(f"{out}.{rank}.{step}").read_text().split(" ", 1) for step in (5, 10)}
               for rank in range(2)}
    assert results[0][5][1] == results[1][5][1] == "saved"
    assert max(float(results[rank][10][0]) for rank in range(2)) < 30, results  # not the group's timeout
    cause = "No space left on device" if fail == "deepspeed" else "enforce fail"
    failed, other = results[failing_rank][10][1], results[1 - failing_rank][10][1]
    assert failed.startswith("CheckpointError: could not write checkpoint step-00000010") and cause in failed, results
    assert other.startswith("CheckpointError: could not write checkpoint step-00000010") and \
        f"rank(s) [{failing_rank}] could not write their part" in other, results
    root = tmp_path / "run" / ck.CHECKPOINTS
    assert ck.latest_checkpoint(tmp_path / "run").name == "step-00000005"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-00000005"]  # the partial folder removed


def test_crash_mid_write_keeps_latest_and_prunes(tmp_path):
    first = save(tmp_path, 10)
    assert ck.latest_checkpoint(tmp_path) == first
    assert (first / "meta.json").exists() and (first / "rank_00000.pt").exists()
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, 20, crash=True)
    assert ck.latest_checkpoint(tmp_path) == first  # the half-written one is invisible
    assert (tmp_path / "checkpoints" / ".tmp-step-00000020").exists()
    assert not (tmp_path / "checkpoints" / "step-00000020").exists()
    save(tmp_path, 30)
    assert not (tmp_path / "checkpoints" / ".tmp-step-00000020").exists()  # stale temp removed
    save(tmp_path, 40)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*"))
    assert names == ["step-00000030", "step-00000040"]  # keep=2
    assert ck.resolve_checkpoint("auto", tmp_path).name == "step-00000040"
    assert ck.resolve_checkpoint(str(tmp_path), tmp_path / "other").name == "step-00000040"
    assert ck.resolve_checkpoint(str(tmp_path / "checkpoints" / "step-00000030"), tmp_path).name == "step-00000030"
    assert ck.resolve_checkpoint("auto", tmp_path / "fresh") is None
    assert ck.resumes_in_place("auto", tmp_path) and ck.resumes_in_place(str(tmp_path), tmp_path)
    assert ck.resumes_in_place(str(tmp_path / "checkpoints" / "step-00000030"), tmp_path)
    assert not ck.resumes_in_place(str(tmp_path), tmp_path / "other")
    with pytest.raises(ck.CheckpointError, match="not a checkpoint"):
        ck.resolve_checkpoint(str(tmp_path / "checkpoints"), tmp_path)
    (tmp_path / "checkpoints" / "latest").write_text("step-00000099\n")
    with pytest.raises(ck.CheckpointError, match="missing or incomplete"):
        ck.latest_checkpoint(tmp_path)


def test_a_save_prunes_and_keeps_among_the_checkpoints_up_to_its_step_only(tmp_path):
    # a run resumed in place from an earlier checkpoint saves over the later ones as it reaches their steps: they
    # are neither pruned nor counted among the `keep` newest it keeps of those up to the step it saves
    def save_keeping(step, keep):
        checkpoint_saving.save_checkpoint(FakeEngine(), tmp_path, step, trainer_state={"step": step},
                                          rank_state={"r": 0}, meta={"zero_stage": 0}, env=ENV, keep=keep)

    for step in (10, 20, 30, 40):
        save_keeping(step, keep=5)
    save_keeping(20, keep=2)  # resumed from step 10, at step 20 again
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*"))
    assert names == ["step-00000010", "step-00000020", "step-00000030", "step-00000040"]
    save_keeping(30, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*"))
    assert names == ["step-00000020", "step-00000030", "step-00000040"]


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"),  # torch.save, disk full
    OSError(28, "No space left on device"),
    PermissionError(13, "Permission denied")])
def test_a_failed_write_names_the_folder_and_keeps_the_last_good_checkpoint(tmp_path, error):
    # was: a full disk surfaced as torch's "[enforce fail at inline_container.cc] unexpected pos" traceback, which
    # names neither the file nor the folder nor the cause, and the half-written folder kept filling the disk
    first = save(tmp_path, 10)
    with pytest.raises(ck.CheckpointError, match=r"could not write checkpoint step-00000020 into .*checkpoints.*"
                                                 r"full.*read-only.*step-00000010 is intact.*--resume auto"):
        save(tmp_path, 20, error=error)
    assert ck.latest_checkpoint(tmp_path) == first and (first / "ds" / "mp_rank_00_model_states.pt").exists()
    assert not (tmp_path / "checkpoints" / ".tmp-step-00000020").exists()  # its space is given back


def test_a_crash_while_a_step_is_saved_again_leaves_latest_on_a_whole_checkpoint(tmp_path, monkeypatch):
    # was: saving a step that already has a checkpoint (a run resumed in place from an earlier checkpoint reaches
    # the step `latest` names) deleted the old folder before the new one was renamed in: a crash during that
    # deletion left `latest` naming a half-deleted checkpoint (meta.json kept, ds/ gone)
    save(tmp_path, 10)
    save(tmp_path, 20)
    real_rmtree = checkpoint_saving.shutil.rmtree

    def killed_mid_delete(path, *args, **kwargs):
        if (Path(path) / "ds").is_dir():
            real_rmtree(Path(path) / "ds")
        raise KeyboardInterrupt("killed mid-delete")

    monkeypatch.setattr(checkpoint_saving.shutil, "rmtree", killed_mid_delete)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, 20)
    monkeypatch.undo()
    latest = ck.latest_checkpoint(tmp_path)
    assert latest.name == "step-00000020" and (latest / "ds" / "mp_rank_00_model_states.pt").exists()
    assert (latest / "rank_00000.pt").exists() and (latest / "trainer_state.pt").exists()
    save(tmp_path, 30)  # what the crash left is cleared with the other stale temporaries
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step-00000020",
                                                                            "step-00000030"]


def test_a_step_saved_again_whose_rename_fails_puts_the_old_folder_back(tmp_path, monkeypatch):
    # the old folder of the step, moved aside for the new one, returns under its name when the new one cannot be
    # renamed in (a full disk): `latest` keeps naming a whole checkpoint there, and no folder is left aside
    save(tmp_path, 10)
    old = save(tmp_path, 20)
    real_rename = os.rename

    def full_disk_for_the_new_folder(src, dst):
        if Path(src).name == ".tmp-step-00000020":
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", full_disk_for_the_new_folder)
    with pytest.raises(ck.CheckpointError, match="No space left on device"):
        save(tmp_path, 20)
    monkeypatch.undo()
    assert ck.latest_checkpoint(tmp_path) == old and (old / "ds" / "mp_rank_00_model_states.pt").exists()
    assert sorted(p.name for p in old.parent.iterdir()) == ["latest", "step-00000010", "step-00000020"]


def test_a_kill_between_the_renames_of_a_step_saved_again_resumes_from_the_old_folder(tmp_path, monkeypatch):
    # was: saving a step `latest` names again moves the old folder aside, then renames the new one in; a kill
    # between the two renames left `latest` naming a missing folder (`--resume auto` refused the run, pointing at
    # an earlier step) and the next save deleted the moved-aside checkpoint with the other temporaries
    save(tmp_path, 10)
    save(tmp_path, 20)
    real_rename = os.rename

    def killed_before_second_rename(src, dst):
        if Path(src).name == ".tmp-step-00000020":
            raise KeyboardInterrupt("killed")
        return real_rename(src, dst)

    with monkeypatch.context() as patch:
        patch.setattr(os, "rename", killed_before_second_rename)
        with pytest.raises(KeyboardInterrupt):
            save(tmp_path, 20)
    root = tmp_path / "checkpoints"
    assert not (root / "step-00000020").exists()
    resumed = ck.resolve_checkpoint("auto", tmp_path)
    assert ck.read_meta(resumed)["step"] == 20 and (resumed / "ds" / "mp_rank_00_model_states.pt").exists()
    save(tmp_path, 30)  # the old folder is put back under its name, not cleared as a temporary
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-00000020", "step-00000030"]
    assert ck.read_meta(root / "step-00000020")["step"] == 20


def test_removing_stale_temporaries_on_resume_clears_a_half_pruned_checkpoint(tmp_path):
    # was: a kill mid-prune left `.tmp-pruned-step-N`, removed only by a later save: a resume with nothing left to
    # train (the kill came in the final save) never saved again and kept it
    save(tmp_path, 10)
    save(tmp_path, 20)
    root = tmp_path / "checkpoints"
    os.rename(root / "step-00000010", root / ".tmp-pruned-step-00000010")
    checkpoint_saving.remove_stale_temporaries(tmp_path, ENV)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-00000020"]


def test_an_old_checkpoint_a_crash_left_half_pruned_is_removed_by_the_next_save(tmp_path, monkeypatch):
    # was: pruning deleted old checkpoints in place; a crash mid-delete that had already taken meta.json left a
    # step-N folder no later save took for a checkpoint, so it was never pruned and kept its disk space
    save(tmp_path, 10)
    save(tmp_path, 20)

    def killed_mid_delete(path, *args, **kwargs):
        (Path(path) / "meta.json").unlink(missing_ok=True)
        raise KeyboardInterrupt("killed mid-delete")

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint_saving.shutil, "rmtree", killed_mid_delete)
        with pytest.raises(KeyboardInterrupt):
            save(tmp_path, 30)  # keep=2: prunes step-10
    assert ck.latest_checkpoint(tmp_path).name == "step-00000030"
    save(tmp_path, 40)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step-00000030",
                                                                            "step-00000040"]


@pytest.mark.parametrize("pointer", [ck.LATEST, ck.BEST])
def test_a_pointer_a_kill_left_half_replaced_is_removed_by_the_next_save(tmp_path, monkeypatch, pointer):
    # was: a kill between writing the new `latest` (or `best` link) beside the old one and renaming it over it left
    # `.latest.tmp<pid>` (`.best.tmp<pid>`) in checkpoints/ for good: the next save, in the resumed run's process
    # (another pid), removed only `.tmp-*` folders
    def save_best(step):
        return checkpoint_saving.save_checkpoint(FakeEngine(), tmp_path, step, trainer_state={}, rank_state={}, meta={},
                                                 env=ENV, best_step=10)

    save_best(10)
    real_replace = os.replace

    def killed_before_rename(src, dst, *args, **kwargs):
        if Path(dst).name == pointer:
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", killed_before_rename)
        with pytest.raises(KeyboardInterrupt):
            save_best(20)
    left = [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(f".{pointer}.tmp")]
    assert left, "the kill left no temporary: the test no longer reaches the window"
    monkeypatch.setattr(os, "getpid", lambda: 4242)  # the next save is made by the resumed run's process
    save_best(30)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["best", "latest", "step-00000010", "step-00000020", "step-00000030"]
    assert ck.best_checkpoint(tmp_path).name == "step-00000010"
