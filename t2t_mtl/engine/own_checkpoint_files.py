"""The files of a checkpoint that each rank reads, checked on every rank before DeepSpeed's load: a resume's, before
DeepSpeed starts, and the best checkpoint's after training (`training.keep_best`).

A rank meeting an unusable file of its own (its ZeRO-3 module state, its optimizer partition, its data positions, its
folder of optimizer state offloaded to NVMe) inside DeepSpeed's load stopped alone: the others went on into the load's
collectives or the first step and ended by the launcher's kill or a gloo 'Connection closed by peer' traceback, or,
under a launcher watching its own node only, waited for it; a file damaged inside (zeros where a copy or a disk lost
data, a flipped bit) loaded without a word. `check_own_files` has each rank try its own files and those every rank reads
as the load will find them (`check_loadable`: a missing, cut short or foreign file fails, and a file in torch's zip
format whose records do not match the CRC-32s torch recorded at save) before the load, and the ranks agree
(`failed_ranks`): the rank that met the problem raises its error, naming the file, and every other rank a
CheckpointError naming that rank and its own files.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Mapping, Optional

import torch

from t2t_mtl.engine.checkpoint import CORRUPT_HINT, DS_TAG, CheckpointError, optimizer_partition_file, rank_file
from t2t_mtl.engine.checkpoint_loading import check_loadable
from t2t_mtl.engine.deepspeed_settings import json_zero_stage, zero_setting
from t2t_mtl.engine.distributed import DistEnv, failed_ranks, failed_ranks_wording
from t2t_mtl.engine.resumed_model import check_load_fills, module_state_file
from t2t_mtl.engine.universal_frozen import frozen_source_files


def own_files(ckpt: Path, meta: Mapping[str, Any], rank: int, world_size: int, universal: bool) -> List[Path]:
    """The files of checkpoint `ckpt` (`meta`) that rank `rank` of a resume on `world_size` ranks reads alone: in
    DeepSpeed's own format (`universal` false), at ZeRO-3 its module state and at ZeRO 1-3 its optimizer partition
    (named as DeepSpeed names a bf16 run's); under the checkpoint's world size, its data positions (`rank_file`)."""
    stage, ckpt = int(meta["zero_stage"]), Path(ckpt)
    files = []
    if not universal and stage == 3:
        files.append(module_state_file(ckpt, stage, rank))
    if not universal and stage > 0:
        files.append(optimizer_partition_file(ckpt, rank, meta["precision"]))
    if int(meta["world_size"]) == world_size:
        files.append(rank_file(ckpt, rank))
    return files


def shared_files(ckpt: Path, meta: Mapping[str, Any], universal: bool, fills_frozen: bool = False) -> List[Path]:
    """The files of checkpoint `ckpt` (`meta`) that every rank's load reads: its trainer state and, in DeepSpeed's own
    format (`universal` false) at ZeRO 0-2, the module state; through the universal format into a model with frozen
    parameters or buffers (`fills_frozen`), the module states `fill_frozen` reads them from (at ZeRO-3 every old
    rank's). (Under another world size a resume reads every old rank's data positions after the load, every rank
    alike: `load_rank_states` checks them.)"""
    files = [Path(ckpt) / "trainer_state.pt"]
    if not universal and int(meta["zero_stage"]) < 3:
        files.append(module_state_file(ckpt, int(meta["zero_stage"]), 0))
    if universal and fills_frozen:
        files.extend(frozen_source_files(ckpt, int(meta["zero_stage"]), int(meta["world_size"])))
    return files


def nvme_offload_index(ds_config: Mapping[str, Any], env: DistEnv) -> Optional[int]:
    """The index of the `nvme_offload_folder` that DeepSpeed's load copies back into this rank's swap folder under
    `ds_config`: its local rank under `checkpoint.use_node_local_storage`, else its global rank (DeepSpeed's engine);
    None where the config offloads no optimizer to NVMe at ZeRO-3 (DeepSpeed swaps an optimizer at ZeRO-3 alone)."""
    offload = zero_setting(ds_config, "offload_optimizer")
    if json_zero_stage(ds_config) != 3 or getattr(offload, "device", None) != "nvme":
        return None
    return env.local_rank if (ds_config.get("checkpoint") or {}).get("use_node_local_storage") else env.rank


def nvme_offload_folder(ckpt: Path, index: int) -> Path:
    """The folder of checkpoint `ckpt`'s DeepSpeed files with the optimizer state a ZeRO-3 rank offloaded to NVMe (its
    swap files), which DeepSpeed's load copies back into that rank's swap folder: `offloaded_tensors/rankNN`, NN the
    rank's `nvme_offload_index`. A rank whose folder is missing failed alone in that copy, inside the load."""
    return Path(ckpt) / DS_TAG / "offloaded_tensors" / f"rank{index:0>2d}"


def check_own_files(ckpt: Path, meta: Mapping[str, Any], env: DistEnv, universal: bool,
                    unfilled_model: Optional[torch.nn.Module] = None, nvme_index: Optional[int] = None,
                    fills_frozen: bool = False) -> None:
    """Collective (every rank calls it before DeepSpeed's load; on a resume, before DeepSpeed starts): refuse on every
    rank a load of checkpoint `ckpt` (`meta`, through the universal format where `universal`) of which a rank cannot
    load one of its `own_files` or of the `shared_files` (each rank tries them: its own view of them; `fills_frozen`:
    the universal load is followed by `fill_frozen`, whose files are then among them), or whose module state that rank
    loads lacks a tensor of `unfilled_model` (the model built for a load that fills every tensor, `check_load_fills`;
    None: not checked), or (`nvme_index`: its `nvme_offload_index`; in DeepSpeed's own format) lacks the
    `nvme_offload_folder` DeepSpeed's load copies. That rank raises its CheckpointError (naming the file), the
    others a CheckpointError naming the ranks, their own files (none: left out) and the files every rank reads (the
    others cannot tell which one failed)."""
    error = None
    try:
        if unfilled_model is not None:
            check_load_fills(unfilled_model, ckpt, int(meta["zero_stage"]), env.rank)
        for path in [*own_files(ckpt, meta, env.rank, env.world_size, universal),
                     *shared_files(ckpt, meta, universal, fills_frozen)]:
            check_loadable(path)
        nvme_folder = nvme_offload_folder(ckpt, nvme_index) if nvme_index is not None and not universal else None
        if nvme_folder is not None and not nvme_folder.is_dir():
            raise CheckpointError(f"{nvme_folder} (the optimizer state rank {env.rank} offloaded to NVMe) is missing; "
                                  f"{CORRUPT_HINT}")
    except CheckpointError as err:
        error = err
    failed = failed_ranks(error is not None, env, "the checkpoint's files checked")
    if error is not None:
        raise error
    if failed:
        ranks, its = failed_ranks_wording(failed, env.world_size)
        names = [str(path.relative_to(ckpt)) for path in own_files(ckpt, meta, failed[0], env.world_size, universal)]
        if nvme_index is not None and not universal:
            names.append(f"its folder in {DS_TAG}/offloaded_tensors")
        others = ", the others' alike" if len(failed) > 1 else ""
        own = f"rank {failed[0]}'s own: {', '.join(names)}{others}; " if names else ""
        shared = ", ".join(str(path.relative_to(ckpt)) for path in shared_files(ckpt, meta, universal, fills_frozen))
        raise CheckpointError(f"{ranks} could not use {its} files of checkpoint {ckpt} (see {its} error; {own}every "
                              f"rank's: {shared}); every rank must read the same complete checkpoint, on a filesystem "
                              f"all nodes share: {CORRUPT_HINT}")
