"""The frozen parameters (LoRA's base weights) and the buffers of a model resumed through DeepSpeed's universal format,
restored from the checkpoint's own module state: DeepSpeed's universal load restores the trained parameters alone
(`resumed_model`), so without this they kept what the build gave them, the current model.name_or_path folder's
weights (changed since the checkpoint was written, or another folder of the same shapes) or a fresh init.

What is written is what DeepSpeed's load of its own format writes into the same tensors (`load_module_state_dict`):
from a checkpoint saved at ZeRO 1/2, the entry of its module state (`mp_rank_00_model_states.pt`, every tensor whole
in the model's dtype); from one saved at ZeRO-3, a buffer from the module state of rank 0 (ZeRO-3 keeps buffers whole
on every rank), a frozen parameter from the `frozen_param_fragments` of every rank that wrote it, joined in rank order
(each rank's partition, the last one padded) and cut to its `frozen_param_shapes`. Into an engine at ZeRO-3 each rank
writes its own partition of a parameter (DeepSpeed's layout: `ds_zero_partition_rank` × the partition's size) and,
where the parameter is kept whole (under the persistence threshold), the whole tensor too. A partition swapped out to
NVMe (`offload_param` on nvme) is refused by name, its swap file not written (a resume refuses that offload before
DeepSpeed starts: `universal_limits`), as is a ZeRO-3 fragment saved in an integer type: quantized by DeepSpeed's
`zero_quantized_nontrainable_weights`, which saves no scale beside it."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, List, Mapping, Set

import torch

from t2t_mtl.engine.checkpoint import CORRUPT_HINT, CheckpointError
from t2t_mtl.engine.resumed_model import module_state_file, saved_module_state

__all__ = ["check_saved_frozen", "fill_frozen", "frozen_names", "frozen_source_files"]


def frozen_names(model: torch.nn.Module) -> List[str]:
    """The names of `model`'s frozen parameters and buffers in its state dict: what DeepSpeed's universal load leaves
    as built (a buffer outside the state dict is filled by no load: `resumed_model.left_unfilled`)."""
    state = set(model.state_dict())
    return ([name for name, param in model.named_parameters() if not param.requires_grad]
            + [name for name, _ in model.named_buffers() if name in state])


def frozen_source_files(ckpt: Path, zero_stage: int, world_size: int) -> List[Path]:
    """The module-state files of checkpoint `ckpt`, saved at ZeRO stage `zero_stage` on `world_size` ranks, that
    `fill_frozen` reads the frozen parameters and buffers from: at ZeRO-3 every rank's, in rank order, else rank 0's
    (the one file)."""
    return [module_state_file(ckpt, zero_stage, rank) for rank in (range(world_size) if zero_stage == 3 else [0])]


def check_saved_frozen(model: torch.nn.Module, ckpt: Path, zero_stage: int) -> None:
    """Refuse (CheckpointError naming them and the file) the frozen parameters and buffers of `model` (`frozen_names`)
    that checkpoint `ckpt`, saved at ZeRO stage `zero_stage`, does not hold; read memory-mapped, no weight read. At
    ZeRO-3 rank 0's module state is read (every rank saves the same names; `fill_frozen` checks the others')."""
    names = frozen_names(model)
    if names:
        path = module_state_file(ckpt, zero_stage, 0)
        state = saved_module_state(path)
        _refuse_missing(path, names, state, zero_stage, set(dict(model.named_parameters())))
        _refuse_quantized(path, state, zero_stage)


def fill_frozen(model: torch.nn.Module, ckpt: Path, zero_stage: int, world_size: int) -> None:
    """Write into `model` (the engine's module, after DeepSpeed's universal load) its frozen parameters and buffers
    (`frozen_names`) as checkpoint `ckpt` saved them at ZeRO stage `zero_stage` on `world_size` ranks (checked first by
    `check_saved_frozen`; at ZeRO-3 the other ranks' files are checked here, CheckpointError naming the file). Each
    parameter is joined and written in turn, so a rank holds one whole frozen tensor at a time beside its
    memory-mapped files."""
    names = frozen_names(model)
    if not names:
        return
    params = set(dict(model.named_parameters()))
    paths = frozen_source_files(ckpt, zero_stage, world_size)
    states = [saved_module_state(path) for path in paths]
    for path, state in zip(paths, states):
        _refuse_missing(path, names, state, zero_stage, params)
        _refuse_quantized(path, state, zero_stage)
    wanted = set(names)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in wanted:
                value = _saved_tensor(paths, states, name, zero_stage, param=True)
                _check_shape(paths[0], name, value, getattr(param, "ds_shape", param.shape))
                _write_parameter(name, param, value)
        for name, buffer in model.named_buffers():
            if name in wanted:
                value = _saved_tensor(paths, states, name, zero_stage, param=False)
                _check_shape(paths[0], name, value, buffer.shape)
                buffer.copy_(value)


def _check_shape(path: Path, name: str, value: torch.Tensor, shape: torch.Size) -> None:
    """CheckpointError naming `path` where the saved tensor `name` (`value`) is not of the model's `shape` (a copy
    would broadcast a smaller one without a word)."""
    if tuple(value.shape) != tuple(shape):
        raise CheckpointError(f"{path} holds {name} of shape {list(value.shape)}, this run's model has "
                              f"{list(shape)}: resume with the model settings the checkpoint was trained with, or "
                              f"from another checkpoint")


def _refuse_missing(path: Path, names: List[str], state: Mapping[str, Any], zero_stage: int, params: Set[str]
                    ) -> None:
    """CheckpointError naming `path` and those of `names` its module state `state` does not hold."""
    saved = _saved_names(state, zero_stage, params)
    missing = [name for name in names if name not in saved]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise CheckpointError(f"{path} holds no {', '.join(missing[:5])}{more} of this run's model, which a resume "
                              f"under another world size or ZeRO stage takes from it (DeepSpeed's universal format "
                              f"holds the trained weights alone): resume with the model settings the checkpoint was "
                              f"trained with, or from another checkpoint")


def _refuse_quantized(path: Path, state: Mapping[str, Any], zero_stage: int) -> None:
    """CheckpointError naming `path` and a frozen parameter whose fragment its module state `state` (saved at
    `zero_stage`) holds in an integer type: quantized (DeepSpeed's `zero_quantized_nontrainable_weights`), saved
    without the scale that gives its values."""
    fragments = (state.get("frozen_param_fragments") or {}) if zero_stage == 3 else {}
    quantized = next((name for name, fragment in fragments.items() if not fragment.is_floating_point()), None)
    if quantized is not None:
        raise CheckpointError(f"{path} holds {quantized} quantized to {fragments[quantized].dtype} "
                              f"(zero_quantized_nontrainable_weights) without its scale, which a resume under another "
                              f"world size, writing the frozen weights from it, cannot restore: resume it on the "
                              f"checkpoint's world size (DeepSpeed's own format), or from another checkpoint")


def _saved_names(state: Mapping[str, Any], zero_stage: int, params: Set[str]) -> Set[str]:
    """The names whose tensors the module state `state` (saved at `zero_stage`) holds whole or in fragments: at ZeRO-3
    the frozen parameters' fragments with their shapes, and the module's buffers (its parameters there are empty
    placeholders)."""
    if zero_stage != 3:
        return set(state["module"])
    fragments = set(state.get("frozen_param_fragments") or {}) & set(state.get("frozen_param_shapes") or {})
    return fragments | {name for name in state["module"] if name not in params}


def _saved_tensor(paths: List[Path], states: List[Mapping[str, Any]], name: str, zero_stage: int, param: bool
                  ) -> torch.Tensor:
    """The whole tensor `name` from the module states `states` of files `paths` (rank 0's, at ZeRO-3 every rank's in
    rank order); CheckpointError naming the files where the fragments of a parameter do not make up its shape."""
    if zero_stage != 3 or not param:
        return states[0]["module"][name]
    shape = states[0]["frozen_param_shapes"][name]
    joined = torch.cat([state["frozen_param_fragments"][name].reshape(-1) for state in states])
    if joined.numel() < math.prod(shape):
        raise CheckpointError(f"the frozen_param_fragments of {name} in {', '.join(map(str, paths))} hold "
                              f"{joined.numel()} values, not the {math.prod(shape)} of its shape {list(shape)}; "
                              f"{CORRUPT_HINT}")
    return joined[:math.prod(shape)].view(shape)


def _write_parameter(name: str, param: torch.nn.Parameter, value: torch.Tensor) -> None:
    """Write `value` into `param` (named `name`): whole, or at ZeRO-3 into this rank's partition (and the whole tensor
    where the parameter is kept whole), as DeepSpeed partitions it; CheckpointError naming it where its partition is
    swapped out to NVMe."""
    partition = getattr(param, "ds_tensor", None)
    if partition is None:
        param.data.copy_(value)
        return
    if getattr(partition, "final_location", None) == "nvme":  # (a resume refuses it first: `universal_limits`)
        raise CheckpointError(f"the partition of the frozen weight {name} is swapped out to NVMe, where the "
                              f"universal resume does not write it: resume on the checkpoint's world size, or without "
                              f"zero_optimization.offload_param on nvme")
    flat = value.reshape(-1)
    start = partition.ds_numel * param.ds_zero_partition_rank
    values = flat[start:start + partition.ds_numel]  # (none for a rank whose partition is padding alone)
    partition.data[:values.numel()].copy_(values)
    if param.data.numel() == flat.numel():  # (kept whole: its partition and the whole tensor alike)
        param.data.copy_(value)
