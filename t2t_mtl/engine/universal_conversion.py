"""A checkpoint converted to DeepSpeed's universal format (`<ckpt>/ds_universal`), which a resume under another
world size (or ZeRO-1 <-> 2) loads: converted once by rank 0 from the checkpoint's own DeepSpeed files, checked first,
and a folder an earlier resume converted checked before it is read again."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from t2t_mtl.engine.checkpoint import (CORRUPT_HINT, DS_TAG, UNIVERSAL_TAG, CheckpointError, optimizer_partition_file,
                                       read_meta)
from t2t_mtl.engine.checkpoint_loading import check_loadable, error_detail
from t2t_mtl.engine.distributed import DistEnv, failed_ranks
from t2t_mtl.engine.torch_file_integrity import DamagedFileError, check_intact


def ensure_universal(ckpt: Path, env: DistEnv) -> Path:
    """Collective: convert the DeepSpeed checkpoint to DeepSpeed's universal format (once; rank 0), for loading it
    under another world size. Returns the universal folder. A conversion that fails stops every rank once the others
    have waited for it: rank 0 raises its CheckpointError (`_convert_to_universal`), the others one naming rank 0; so
    does a folder converted by an earlier resume whose files are damaged (`_check_converted`), the others saying rank
    0 refused it (the folder is there: a failed conversion leaves none)."""
    out = Path(ckpt) / UNIVERSAL_TAG
    error = None
    if env.is_main:
        try:
            if (out / "zero").exists():
                _check_converted(out)
            else:
                _convert_to_universal(Path(ckpt), out)
        except CheckpointError as err:
            error = err
    failed = failed_ranks(error is not None, env, "a checkpoint converted to universal")  # (however long it takes)
    if error is not None:
        raise error
    if failed and (out / "zero").exists():
        raise CheckpointError(f"rank 0 of {env.world_size} refused {out}, converted by an earlier resume (see its "
                              f"error: a damaged file of it); remove {out} for the resume to convert checkpoint {ckpt} "
                              f"again")
    if failed:
        raise CheckpointError(f"rank 0 of {env.world_size} could not convert checkpoint {ckpt} to DeepSpeed's "
                              f"universal format (see its error, which names the file or folder at fault and what "
                              f"to do)")
    return out


def _check_converted(out: Path) -> None:
    """CheckpointError naming a file of DeepSpeed's universal folder `out`, converted by an earlier resume, whose zip
    directory or record headers are damaged (a file cut short, a header overwritten), on which DeepSpeed's load would
    fail inside, calling the checkpoint corrupt. Its records' data are not read: their CRC-32s cost 40-60 % of the
    load (3.2-7.2 s beside 7.5-12 s for the 2.4 GB of a 198M-parameter model on a busy 2-core machine; the headers
    0.12-0.21 s)."""
    for path in sorted(out.rglob("*.pt")):
        try:
            check_intact(path, data=False)
        except (DamagedFileError, OSError) as err:
            raise CheckpointError(f"{path} is damaged ({err}): remove {out} for the resume to convert checkpoint "
                                  f"{out.parent} again (its own files are checked then)") from None


def _convert_to_universal(ckpt: Path, out: Path) -> None:
    """Write checkpoint `ckpt`'s DeepSpeed files in DeepSpeed's universal format to `out` (through a temporary folder
    renamed into place); CheckpointError naming a file of them that cannot be loaded (a rank's optimizer partition
    missing included), or `ckpt` where the temporary folder cannot be made in it, else quoting DeepSpeed's error."""
    from types import SimpleNamespace

    from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

    meta = read_meta(ckpt)  # (DeepSpeed's converter names no file it lacks or cannot read)
    for path in sorted({*(ckpt / DS_TAG).glob("*.pt"), *(optimizer_partition_file(ckpt, rank, meta["precision"])
                                                          for rank in range(int(meta["world_size"])))}):
        check_loadable(path)
    tmp = ckpt / f".tmp-{UNIVERSAL_TAG}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
    except OSError as err:  # (another user's checkpoint, a read-only mount: intact, not to be removed)
        raise CheckpointError(f"checkpoint {ckpt} cannot be written ({err}): a resume under another world size or ZeRO "
                              f"stage first converts it to DeepSpeed's universal format inside it ({UNIVERSAL_TAG}): "
                              f"copy the checkpoint's folder to one you can write and resume from the copy") from None
    try:
        ds_to_universal(SimpleNamespace(input_folder=str(ckpt / DS_TAG), output_folder=str(tmp),
                                        num_extract_workers=1, num_merge_workers=1, keep_temp_folder=False,
                                        strict=True, inject_missing_state=True))
    except Exception as err:  # DeepSpeed reports a missing or damaged file from deep inside itself
        raise CheckpointError(f"DeepSpeed could not convert {ckpt / DS_TAG} to its universal format "
                              f"({error_detail(err)}); {CORRUPT_HINT}") from None
    os.rename(tmp, out)
