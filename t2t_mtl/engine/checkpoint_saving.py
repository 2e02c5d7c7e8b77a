"""Writing a checkpoint atomically (`save_checkpoint`), pointing `latest` and `best` at it and pruning the older ones
(the layout: `engine.checkpoint`).

Every rank writes into `.tmp-step-XXXXXXXX`; once the ranks agree that every write succeeded (an all-reduce: a
failure on any rank raises the CheckpointError on all of them) rank 0 fsyncs it (files and folders), renames the
folder to its final name (an atomic rename on one filesystem) and then replaces `latest` atomically
(`os.replace`), fsyncing `checkpoints/` after each rename so that a power loss cannot undo it. A crash at any
point leaves the previous `latest` checkpoint intact; stale `.tmp-*` folders (and a new `latest` or `best` left
beside the old one) are removed on the next save or resume. A step
saved again (a run resumed in place from an earlier checkpoint) moves its old folder aside (`.tmp-replaced-step-N`),
not deleting it before the new one is in place and named by `latest`; a kill between the two renames leaves
`latest` resolving to the folder aside, which the next save or resume puts back under its name.
`best` is replaced the same way (a new symlink renamed over it), after `latest`: a resume in place re-points it at
the restored selection, which a kill between the two left it behind; pruning never removes the checkpoint it names.
Multi-node runs need the run directory on a filesystem shared by all nodes (as DeepSpeed itself does).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Set

import torch

from t2t_mtl.engine.checkpoint import (BEST, CHECKPOINTS, DS_TAG, LATEST, MOVED_ASIDE, CheckpointError, best_checkpoint,
                                       complete_checkpoints, latest_checkpoint, moved_aside, rank_file, step_name)
from t2t_mtl.engine.distributed import DistEnv, failed_ranks
from t2t_mtl.engine.durable_writes import fsync_path, fsync_tree, write_text_atomic


def save_checkpoint(engine: Any, run_dir: Path, step: int, *, trainer_state: Dict[str, Any],
                    rank_state: Dict[str, Any], meta: Dict[str, Any], env: DistEnv, keep: int = 2,
                    best_step: Optional[int] = None) -> Path:
    """Collective: write checkpoint `step` atomically and point `latest` at it; with `best_step` (the best
    validation's step, `training.keep_best`) point `best` at that step's checkpoint. Keeps the newest `keep`
    and the best. A write that fails on any rank (a full disk) raises the CheckpointError on every rank."""
    root = Path(run_dir) / CHECKPOINTS
    final = root / step_name(step)
    tmp = root / f".tmp-{step_name(step)}"
    error: Optional[Exception] = None
    try:
        if env.is_main:
            root.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(run_dir, env)
            tmp.mkdir()
    except OSError as err:
        error = err
    _agree(error, tmp, run_dir, env, "a checkpoint's folder made")
    try:
        engine.save_checkpoint(str(tmp), tag=DS_TAG, save_latest=False)
    except (OSError, RuntimeError) as err:  # torch.save reports a full disk as a RuntimeError without the path
        error = err
        _finish_failed_save(engine)
    try:
        if error is None:
            torch.save(rank_state, rank_file(tmp, env.rank))
            if env.is_main:
                torch.save(trainer_state, tmp / "trainer_state.pt")
    except (OSError, RuntimeError) as err:
        error = err
    _agree(error, tmp, run_dir, env, "a checkpoint's parts written")
    if env.is_main:
        error = _publish(tmp, final, root, step, meta, env, keep, best_step, run_dir)
    _agree(error, tmp, run_dir, env, "a checkpoint published")
    return final


def _finish_failed_save(engine: Any) -> None:
    """Do on this rank what DeepSpeed's `save_checkpoint` still does collectively after the write that failed here
    (rank 0's model states, a rank's ZeRO partition), where the other ranks wait for it: ZeRO-3's epilogue (gathering
    the persistent parameters again) and the closing barrier, the default group's. (Joining `barrier`'s waiting group
    instead, or skipping the epilogue, left them waiting out the group's timeout; every rank then died in gloo.)"""
    import torch.distributed as dist

    epilogue = getattr(getattr(engine, "optimizer", None), "checkpoint_event_epilogue", None)
    if epilogue is not None:
        epilogue()
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def remove_stale_temporaries(run_dir: Path, env: DistEnv) -> None:
    """Rank 0: clear what a kill mid-save left in the run's checkpoints/ — half-written or half-pruned `.tmp-*`
    folders and a new `latest` / `best` beside the old one — and put a checkpoint moved aside for a step saved
    again back under its name when the kill came before the new one replaced it (`latest` names that step)."""
    root = Path(run_dir) / CHECKPOINTS
    if not env.is_main or not root.is_dir():
        return
    for stale in root.glob(".tmp-*"):
        home = root / stale.name.removeprefix(MOVED_ASIDE)  # (itself for other temporaries)
        if home != stale and not home.exists() and (stale / "meta.json").exists():
            os.rename(stale, home)
            fsync_path(root)
        else:
            shutil.rmtree(stale, ignore_errors=True)
    for stale in (*root.glob(f".{LATEST}.tmp*"), *root.glob(f".{BEST}.tmp*")):
        stale.unlink(missing_ok=True)


def _agree(error: Optional[Exception], tmp: Path, run_dir: Path, env: DistEnv, phase: str) -> None:
    """Collective at `phase`, in place of a barrier: raise the CheckpointError of `tmp` on every rank when the writes
    so far failed on any rank (`error`: this rank's failure, or None)."""
    failed = failed_ranks(error is not None, env, phase)
    if failed:
        cause = error if error is not None else OSError(f"rank(s) {failed} could not write their part (their own "
                                                         f"error names the cause)")
        raise _write_failed(cause, tmp, run_dir, env) from None


def _publish(tmp: Path, final: Path, root: Path, step: int, meta: Dict[str, Any], env: DistEnv, keep: int,
             best_step: Optional[int], run_dir: Path) -> Optional[OSError]:
    """Rank 0: complete `tmp` (meta.json, fsync), rename it to `final`, point `latest` (and `best`) at it and
    prune. Returns the OSError that stopped it (None: done); the previous checkpoint stays `latest` then."""
    replaced = None
    try:
        (tmp / "meta.json").write_text(json.dumps({**meta, "step": step, "world_size": env.world_size}, indent=1))
        fsync_tree(tmp)
        if final.exists():  # the same step saved again (a run resumed in place from an earlier checkpoint):
            replaced = moved_aside(final)  # deleted once `latest` names the new one
            os.rename(final, replaced)
        os.rename(tmp, final)
        fsync_path(root)  # the rename on disk before `latest` names it
        write_text_atomic(root / LATEST, final.name + "\n")  # (fsyncs root again)
    except OSError as err:
        if replaced is not None and not final.exists():
            os.rename(replaced, final)  # (the new one is not in place: `latest` keeps naming the old)
        return err
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)
    linked = best_checkpoint(run_dir)  # without a selection now (keep_best dropped), the link keeps its target
    best_name = step_name(best_step) if best_step is not None else (linked.name if linked else None)
    if best_name is not None:
        link_best(run_dir, best_name)  # re-pointed on every save: it follows the saved best
    _prune(root, keep, protect={final.name} | ({best_name} if best_name else set()), newest=final.name)
    return None


def link_best(run_dir: Path, name: str) -> None:
    """Rank 0: point `checkpoints/best` at the run's checkpoint folder `name` (atomically: a new symlink renamed
    over it), unless that checkpoint is incomplete or missing. A resume in place calls it with the restored
    selection: a kill after a save named its checkpoint `latest` but before the link followed it leaves the link
    on the previous best, and a resumed run with nothing left to train saves nothing that would re-point it."""
    root = Path(run_dir) / CHECKPOINTS
    if not (root / name / "meta.json").exists():
        return
    link = root / f".{BEST}.tmp{os.getpid()}"
    if link.is_symlink():
        link.unlink()
    os.symlink(name, link)
    os.replace(link, root / BEST)
    fsync_path(root)


def _write_failed(err: Exception, tmp: Path, run_dir: Path, env: DistEnv) -> CheckpointError:
    """The CheckpointError of a checkpoint that could not be written into `tmp` (a full disk, a read-only
    folder): names the folder, the cause and the last good checkpoint, which the failed write never touches.
    Rank 0 removes the half-written folder (a full disk gets its space back)."""
    if env.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        last = latest_checkpoint(run_dir)
    except CheckpointError:
        last = None
    kept = f"the last good checkpoint {last} is intact" if last is not None else "there is no earlier checkpoint"
    name = tmp.name[len(".tmp-"):]
    return CheckpointError(f"could not write checkpoint {name} into {tmp.parent} ({type(err).__name__}: {err}): is "
                           f"the disk full or the folder read-only? {kept}; free space or make {tmp.parent} "
                           f"writable, then resume with --resume auto")


def _prune(root: Path, keep: int, protect: Set[str], newest: str) -> None:
    """Delete the complete checkpoints of steps up to `newest` (the one just saved) but the last `keep` of them and
    those in `protect`. Later steps are left alone: a run resumed in place from an earlier checkpoint saves over
    them as it reaches their steps (`later_checkpoints`), and they must not count among the `keep` it keeps."""
    done = [p for p in complete_checkpoints(root) if p.name <= newest]
    for old in done[:-keep] if keep > 0 else []:
        if old.name not in protect:
            doomed = root / f".tmp-pruned-{old.name}"  # a deletion a crash cuts short: a stale temporary, removed
            try:                                       # by the next save (not a step-N folder without meta.json)
                os.rename(old, doomed)
            except OSError:
                doomed = old
            shutil.rmtree(doomed, ignore_errors=True)
