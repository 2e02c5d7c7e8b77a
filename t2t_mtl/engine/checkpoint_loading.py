"""Reading a checkpoint back: its torch files, loaded onto the CPU whatever device wrote them, each refused by name
where it cannot be loaded or is damaged inside (`check_loadable`), and the whole of it restored into a DeepSpeed
engine (`load_checkpoint`) with every rank's own state (`load_rank_states`); DeepSpeed's errors are quoted
(`error_detail`) in a CheckpointError saying what to do."""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from t2t_mtl.engine.checkpoint import CORRUPT_HINT, DS_TAG, UNIVERSAL_TAG, CheckpointError, rank_file, read_meta
from t2t_mtl.engine.distributed import DistEnv
from t2t_mtl.engine.lr_schedule import RunSchedule, extra_base_lrs, rebase_extra_schedule
from t2t_mtl.engine.optimizer_settings import optimizer_settings, restore_optimizer_settings
from t2t_mtl.engine.torch_file_integrity import DamagedFileError, check_intact


def _load_file(path: Path, mmap: bool = False, hint: str = CORRUPT_HINT) -> Any:
    """torch.load a file of a checkpoint (`mmap`: memory-mapped, its tensors not read) with its tensors on the CPU,
    whatever device saved them: a GPU run's files load on a machine without one, and every rank of a GPU job does
    not put them on cuda:0 (the state they fill copies them where it lives); CheckpointError naming the file when it
    is missing or corrupt, ending in `hint`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; {hint}") from None
    except Exception as err:  # unpickling errors of a truncated/overwritten file come in many types
        raise CheckpointError(f"{path} cannot be read ({type(err).__name__}: {err}); {hint}") from None


def check_loadable(path: Path, hint: str = CORRUPT_HINT) -> None:
    """CheckpointError naming `path` (and ending in `hint`: what to do) where torch cannot load it (missing, cut
    short, foreign), without unpickling its tensors (memory-mapped, as torch maps its zip format; a file in its legacy
    format is read), or where a file in torch's zip format is damaged inside (`torch_file_integrity.check_intact`: a
    record's header, or its data against the CRC-32 torch recorded at save, which reads the whole file)."""
    load_checked(path, hint)


def load_checked(path: Path, hint: str = CORRUPT_HINT) -> Any:
    """`path` as torch loads it once `check_loadable`'s checks pass (the same CheckpointErrors), unpickled once: a file
    in torch's zip format memory-mapped (its tensors read from the file, written once, as they are used)."""
    try:
        zipped = zipfile.is_zipfile(path)
    except zipfile.BadZipFile as err:  # (its zip64 end record damaged, which torch's own reader passes)
        raise CheckpointError(f"{path} is damaged (its zip directory cannot be read: {err}); {hint}") from None
    loaded = _load_file(path, mmap=zipped, hint=hint)
    if zipped:
        try:
            check_intact(path)
        except (DamagedFileError, OSError) as err:
            raise CheckpointError(f"{path} is damaged ({err}); {hint}") from None
    return loaded


def error_detail(err: Exception) -> str:
    """How a message quotes an error DeepSpeed raised: its type and its first two lines (400 characters at most)."""
    return f"{type(err).__name__}: " + " ".join(line.strip() for line in str(err).strip().splitlines()[:2])[:400]


def load_universal_format(engine: Any, universal: bool) -> None:
    """Make the engine's next load read DeepSpeed's universal format (`universal`) or its own. DeepSpeed takes it
    from the engine's config (`checkpoint.load_universal`), set once at start-up for a resume under another world
    size; a later load of a checkpoint of this run (the best, `training.keep_best`) is in DeepSpeed's own format."""
    config = getattr(engine, "_config", None)
    if config is not None:
        config.load_universal_checkpoint = universal


def load_checkpoint(engine: Any, ckpt: Path, env: DistEnv, *, universal: bool = False
                    ) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]], Dict[str, Any]]:
    """Collective: restore the DeepSpeed state; return (trainer_state, this rank's state or None, meta).

    This rank's state is None when the checkpoint was written with another world size (its data positions
    belong to another sharding)."""
    ckpt = Path(ckpt)
    meta = read_meta(ckpt)
    tag = UNIVERSAL_TAG if universal else DS_TAG
    if not (ckpt / tag).is_dir() or not any((ckpt / tag).iterdir()):
        raise CheckpointError(f"{ckpt / tag} (the DeepSpeed state) is missing or empty; {CORRUPT_HINT}")
    trainer_state = _load_file(ckpt / "trainer_state.pt")
    load_universal_format(engine, universal)
    settings, base_lrs = optimizer_settings(engine), extra_base_lrs(engine)  # (the load restores the saved)
    try:
        # (strict: a resume's model built unfilled relies on it to fill every tensor, `resumed_model`)
        path, _ = engine.load_checkpoint(str(ckpt), tag=tag, load_module_strict=True, load_optimizer_states=True,
                                         load_lr_scheduler_states=True)
    except Exception as err:  # DeepSpeed reports a changed model or a damaged file from deep inside itself
        hint = ("the weights do not fit this run's model: resume with the model.dims / model.moe / "
                "model.lora / model.task_embeddings / tokenizer the checkpoint was trained with"
                if "size mismatch" in str(err) or "Missing key" in str(err) or "Unexpected key" in str(err)
                else _reconvert_hint(ckpt / tag) if universal else CORRUPT_HINT)
        raise CheckpointError(f"DeepSpeed could not load {ckpt / tag} ({error_detail(err)}); {hint}") from None
    if path is None:
        raise CheckpointError(f"DeepSpeed could not load {ckpt / tag}; {CORRUPT_HINT}")
    restore_optimizer_settings(engine, settings)
    rebase_extra_schedule(engine, base_lrs)
    schedule = getattr(engine, "lr_scheduler", None)
    if isinstance(schedule, RunSchedule):  # ZeRO restores the saved lrs after the schedule's step
        schedule.apply()
    rank_state = None  # (a missing rank file of this world size is an incomplete checkpoint, not a resharding)
    if meta["world_size"] == env.world_size:
        rank_state = _load_file(rank_file(ckpt, env.rank))
    return trainer_state, rank_state, meta


def _reconvert_hint(converted: Path) -> str:
    """What to do when DeepSpeed cannot load `converted`, the checkpoint's own files converted to its universal format
    (checked before the conversion; a folder an earlier resume converted is checked by its headers alone): a file of
    it missing or damaged is mended by converting again."""
    return (f"remove {converted} (converted from the checkpoint's own files) for the resume to convert it again; if "
            f"that conversion fails to load too, {CORRUPT_HINT}")


def load_rank_states(ckpt: Path, world_size: int) -> list:
    """The per-rank states (`rank_file`) of all `world_size` ranks that wrote checkpoint `ckpt`, each file read once;
    CheckpointError naming a missing, corrupt or damaged one (`load_checked`)."""
    return [load_checked(rank_file(ckpt, rank)) for rank in range(world_size)]
