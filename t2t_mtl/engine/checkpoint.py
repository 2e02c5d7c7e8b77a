"""A run's checkpoints: where they and their files are, which checkpoint `latest`, `best`, `--resume auto` or a path
names, and its meta.json; a `CheckpointError` names one that is missing, incomplete or incompatible.

Layout of a run directory's checkpoints::

    <run>/checkpoints/step-00000200/ds/...            DeepSpeed checkpoint (model, ZeRO partitions, optimizer,
                                                        LR scheduler) written by `engine.save_checkpoint`
    <run>/checkpoints/step-00000200/trainer_state.pt  step, sampler, weighting (+ its optimizer), skip counter
    <run>/checkpoints/step-00000200/rank_00000.pt     per rank: TaskStreams positions, batch builder buckets, RNGs
    <run>/checkpoints/step-00000200/meta.json         step, world size, ZeRO stage, precision, ... (written last)
    <run>/checkpoints/latest                          the name of the newest complete checkpoint
    <run>/checkpoints/best -> step-00000150            with `training.keep_best`: a relative symlink to the
                                                        checkpoint with the best held-in validation so far

`engine.checkpoint_saving` writes them atomically, `engine.checkpoint_loading` reads them back,
`engine.universal_conversion` converts one to DeepSpeed's universal format and `engine.occupied_run_dir` refuses a run
folder holding another run's.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

CHECKPOINTS = "checkpoints"
LATEST = "latest"
BEST = "best"
DS_TAG = "ds"
UNIVERSAL_TAG = "ds_universal"


class CheckpointError(ValueError):
    """A checkpoint path is missing, incomplete or incompatible with the run."""


def step_name(step: int) -> str:
    """The folder name of step `step`'s checkpoint: `step-00000042` (8 digits, zero-padded)."""
    return f"step-{step:08d}"


MOVED_ASIDE = ".tmp-replaced-"  # the prefix of a checkpoint folder moved aside while its step is saved again


def moved_aside(ckpt: Path) -> Path:
    """Where checkpoint folder `ckpt` is moved while its step is saved again."""
    return ckpt.parent / f"{MOVED_ASIDE}{ckpt.name}"


def complete_checkpoints(root: Path) -> List[Path]:
    """The complete checkpoint folders of `root` (`step-*` holding its meta.json), in step order."""
    return sorted(p for p in root.glob("step-*") if (p / "meta.json").exists())


def later_checkpoints(run_dir: Path, step: int) -> List[str]:
    """Names of the run's complete checkpoints of steps after `step`: on a resume in place from checkpoint `step`,
    those the run left behind when it went on past it."""
    root = Path(run_dir) / CHECKPOINTS
    return [p.name for p in complete_checkpoints(root) if p.name > step_name(step)]


def best_checkpoint(run_dir: Path, step: Optional[int] = None) -> Optional[Path]:
    """The checkpoint `checkpoints/best` links to (`training.keep_best`), or None when the run has none (or,
    given `step`, when the link names another step's checkpoint)."""
    link = Path(run_dir) / CHECKPOINTS / BEST
    if not link.is_symlink():
        return None
    ckpt = link.parent / os.readlink(link)
    if not (ckpt / "meta.json").exists() or (step is not None and read_meta(ckpt).get("step") != step):
        return None
    return ckpt


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    """The checkpoint `latest` points at in a run directory, or None when there is none."""
    pointer = Path(run_dir) / CHECKPOINTS / LATEST
    if not pointer.exists():
        return None
    ckpt = pointer.parent / pointer.read_text().strip()
    if not (ckpt / "meta.json").exists():
        if (moved_aside(ckpt) / "meta.json").exists():  # a kill between the two renames of a step saved again
            return moved_aside(ckpt)
        raise CheckpointError(f"{pointer} points at {ckpt}, which is missing or incomplete; resume from an earlier "
                              f"checkpoint (--resume {pointer.parent}/step-N)")
    return ckpt


def resolve_checkpoint(path_or_auto: Union[str, Path], run_dir: Path) -> Optional[Path]:
    """`auto` → the run's latest checkpoint (None when there is none); a run dir → its latest; a checkpoint
    dir → itself. Raises CheckpointError for anything else."""
    if path_or_auto == "auto":
        return latest_checkpoint(run_dir)
    path = Path(path_or_auto)
    if (path / "meta.json").exists():
        return path
    if (path / CHECKPOINTS).is_dir():
        ckpt = latest_checkpoint(path)
        if ckpt is None:
            raise CheckpointError(f"run directory {path} has no complete checkpoint yet")
        return ckpt
    raise CheckpointError(f"--resume {path_or_auto}: not a checkpoint (no meta.json) nor a run directory "
                          f"(no {CHECKPOINTS}/); pass 'auto', a run directory or a checkpoints/step-* folder")


def resumes_in_place(resume: Union[str, Path], run_dir: Path) -> bool:
    """Whether `--resume` (`auto`, a run directory or a checkpoint) continues the run in `run_dir` itself."""
    if str(resume) == "auto":
        return True
    path, run = Path(resume).resolve(), Path(run_dir).resolve()
    return path == run or path.parent.parent == run


def read_meta(ckpt: Path, hint: Optional[str] = None) -> Dict[str, Any]:
    """The checkpoint's meta.json; CheckpointError when it is missing or unreadable, ending in `hint` (what to do;
    None: a resume's, `CORRUPT_HINT`), or holds no JSON object (`check_resume_meta` checks its keys)."""
    path = Path(ckpt) / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} cannot be read ({err}); {hint or CORRUPT_HINT}") from None
    if not isinstance(meta, dict):
        raise _foreign_meta(path, f"it holds a {type(meta).__name__}, not an object", hint)
    return meta


#: what the meta.json of every checkpoint holds, which a resume reads: whole numbers, and the precision
_WHOLE_NUMBERS = ("step", "world_size", "zero_stage")
RESUME_META_KEYS = (*_WHOLE_NUMBERS, "precision")


def check_resume_meta(ckpt: Path) -> None:
    """CheckpointError naming checkpoint `ckpt`'s meta.json where a resume could not read it as a t2t-mtl run's: it
    lacks a key of `RESUME_META_KEYS` or holds a step, world size or ZeRO stage that is no whole number (a folder of
    another program's, or an edited file)."""
    meta = read_meta(ckpt)
    missing = [key for key in RESUME_META_KEYS if key not in meta]
    if missing:
        raise _foreign_meta(Path(ckpt) / "meta.json", f"it lacks {', '.join(map(repr, missing))}")
    for key in _WHOLE_NUMBERS:
        if not isinstance(meta[key], int) or isinstance(meta[key], bool):
            raise _foreign_meta(Path(ckpt) / "meta.json", f"its {key!r} is no whole number")


def _foreign_meta(path: Path, why: str, hint: Optional[str] = None) -> CheckpointError:
    """The CheckpointError of a meta.json no t2t-mtl run wrote, saying `why`, ending in `hint` (None: a resume's)."""
    return CheckpointError(f"{path} is no t2t-mtl checkpoint's ({why}): " + (
        hint or "resume from a checkpoint a t2t-mtl run wrote (<run>/checkpoints/step-N) or the run's folder"))


#: what a message about an unusable checkpoint file tells the user to do
CORRUPT_HINT = ("the checkpoint is incomplete or corrupt: resume from an earlier one (--resume "
                "<run>/checkpoints/step-N) or remove it")
#: what a message about an unusable checkpoint file tells the user of a command reading its weights (export, eval
#: --checkpoint, predict, merge) to do
CORRUPT_READ_HINT = ("the checkpoint is incomplete or corrupt: use an earlier one (<run>/checkpoints/step-N) or "
                     "remove it")


def rank_file(ckpt: Path, rank: int) -> Path:
    """Where checkpoint folder `ckpt` keeps rank `rank`'s own state (data positions, batches, sampler, RNG)."""
    return Path(ckpt) / f"rank_{rank:05d}.pt"


def optimizer_partition_file(ckpt: Path, rank: int, precision: str) -> Path:
    """Where checkpoint folder `ckpt`'s DeepSpeed files keep rank `rank`'s ZeRO optimizer partition (stages 1-3), as
    DeepSpeed names it for a run of `precision`."""
    bf16 = "bf16_" if precision == "bf16" else ""
    return Path(ckpt) / DS_TAG / f"{bf16}zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"
