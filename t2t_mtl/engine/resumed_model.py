"""Whether a resumed run may build its model without a random init (and a pretrained one without reading its
weights): where DeepSpeed's load of the checkpoint provably fills every tensor, checked against the checkpoint.

What `checkpoint_loading.load_checkpoint` (DeepSpeed's `load_checkpoint`: strict, with the optimizer states) fills,
read from DeepSpeed's engine and ZeRO optimizers:

- from a checkpoint in DeepSpeed's own format at ZeRO stage 0, 1 or 2: a strict `load_state_dict` of the saved module
  state fills every parameter and buffer of the model's state dict (frozen ones, LoRA's, included: the module state
  holds them); the optimizer's fp32 master weights are then copied from the checkpoint's (stage 0 in bf16: its
  `fp32_groups`; ZeRO 1/2: its fp32 partitions, or, where the config loads no fp32 weights, from the loaded weights);
- at ZeRO-3, every parameter is partitioned first (`checkpoint_event_prologue`); the strict load of the module state
  fills the buffers (ZeRO-3 keeps them whole), the frozen parameters' partitions come from the saved
  `frozen_param_fragments`, the trained ones' from the saved fp32 partitions (`_rigid_load_state_dict`: fp32, then the
  low-precision copy, then each parameter's partition), and the parameters kept whole (under the persistence
  threshold) are gathered again from their partitions (`checkpoint_event_epilogue`);
- through DeepSpeed's universal format (another world size at ZeRO 1/2/3, or ZeRO-1 <-> 2) no module state is read,
  only the trained parameters' fp32 masters, each from its own `zero/<name>/fp32.pt` of the converted folder, under
  the name DeepSpeed's engine gives it (`named_parameters`, a tied weight once). ZeRO 1/2 (`load_hp_checkpoint_state`:
  DeepSpeed's ZeRO optimizer, CPU offload included, and the bf16 optimizer of a bf16 ZeRO-1 run accumulating in fp32)
  copy each parameter's fragment into the fp32 partition of the rank that holds it, and `update_lp_params` copies
  every rank's partition into the flat weights that the parameters are views of and gathers them on every rank;
  ZeRO-3 (`load_hp_checkpoint_state_from_checkpoint_dir_stage3`) writes each parameter's partition of the fp32 masters,
  copies them into the low-precision partitions and points each parameter's partition at them; those kept whole are
  gathered again (`checkpoint_event_epilogue`). Every trainable parameter is so filled, the padding of the flat
  partitions being DeepSpeed's own zeros; a converted folder lacking a trainable parameter's fp32 master (which ZeRO
  1/2 would skip without a word) is refused (`check_universal_fills`). Frozen parameters (LoRA's base weights) and
  buffers DeepSpeed leaves as the build gave them: the resume writes them after the load from the checkpoint's own
  module state, as the load of DeepSpeed's format would (`universal_frozen.fill_frozen`; a module state lacking one is
  refused before DeepSpeed starts, `universal_frozen.check_saved_frozen`), so they are the checkpoint's whatever the
  model.name_or_path folder holds now, and a model with one is built unfilled too;
- with an NVMe offload (ZeRO-Infinity) DeepSpeed skips the ZeRO load of the offloaded optimizer (no frozen
  fragments, no fp32 partitions: the copied swap files are read back only for the sub-groups large enough to be
  swapped), and swaps offloaded parameters in and out: not proven to fill every tensor, so the build keeps its init.

A buffer outside the state dict (`persistent=False`) is filled by no load: T5, TaskAwareT5 and a LoRA model have
none, and a model with one is built with its init (`left_unfilled`).
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Dict, List, Mapping

import torch

from t2t_mtl.engine.checkpoint import CORRUPT_HINT, DS_TAG, CheckpointError


def loads_every_tensor(ds_config: Mapping[str, Any]) -> bool:
    """Whether the checkpoint's load into the engine of `ds_config` may fill every tensor of the model: at any ZeRO
    stage, in DeepSpeed's own format or through the universal one, without an NVMe offload; the model may then be
    built unfilled, unless it has a tensor that load leaves as built (`left_unfilled`)."""
    zero = ds_config.get("zero_optimization") or {}
    return not any(isinstance(zero.get(key), Mapping) and zero[key].get("device") == "nvme"
                   for key in ("offload_optimizer", "offload_param"))


def module_state_file(ckpt: Path, zero_stage: int, rank: int) -> Path:
    """The file of checkpoint `ckpt`'s DeepSpeed files from which rank `rank` (of the world size that wrote it) loads
    the module state: at ZeRO-3 its own, at stages 0-2 the one every rank reads."""
    return Path(ckpt) / DS_TAG / (f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt" if zero_stage == 3
                                  else "mp_rank_00_model_states.pt")


def saved_module_state(path: Path) -> Dict[str, Any]:
    """DeepSpeed's file `path` of a checkpoint's module state, memory-mapped (no weight read until used) unless
    DeepSpeed wrote it in torch's legacy serialization (`checkpoint.checkpoint_serialization: false`); CheckpointError
    naming the file when it cannot be read."""
    try:
        mmap = zipfile.is_zipfile(path)  # (torch maps only its zip format)
        state = torch.load(path, map_location="cpu", mmap=mmap, weights_only=False)
        if not isinstance(state, Mapping) or not isinstance(state.get("module"), Mapping):
            raise KeyError("module")  # (no module state in it)
        return state
    except Exception as err:  # missing, truncated or foreign files fail in many ways
        raise CheckpointError(f"{path} (the saved module state) cannot be read ({type(err).__name__}: "
                              f"{str(err).strip()[:300]}); {CORRUPT_HINT}") from None


def module_state_keys(path: Path) -> List[str]:
    """The names in the module state of DeepSpeed's file `path` (`saved_module_state`)."""
    return list(saved_module_state(path)["module"])


def left_unfilled(model: torch.nn.Module) -> List[str]:
    """The names of `model`'s tensors that no load of a checkpoint fills: buffers outside its state dict
    (`persistent=False`). A model with one is built with its init."""
    state = set(model.state_dict())
    return [name for name, _ in model.named_buffers() if name not in state]


def check_universal_fills(model: torch.nn.Module, folder: Path) -> None:
    """Refuse (CheckpointError naming them and the folder) the trainable parameters of `model` whose fp32 master
    DeepSpeed's universal folder `folder` lacks (`zero/<name>/fp32.pt`, under the names DeepSpeed's engine gives
    them): ZeRO 1/2 would leave them as built without a word, ZeRO-3 fail deep inside DeepSpeed."""
    zero = Path(folder) / "zero"
    missing = [name for name, param in model.named_parameters()
               if param.requires_grad and not (zero / name / "fp32.pt").is_file()]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise CheckpointError(f"{zero} holds no fp32 weights of {', '.join(missing[:5])}{more} of this run's model: "
                              f"the conversion to DeepSpeed's universal format is incomplete; remove {folder} for the "
                              f"resume to convert the checkpoint again, or resume from another checkpoint")


def check_load_fills(model: torch.nn.Module, ckpt: Path, zero_stage: int, rank: int) -> None:
    """Refuse (CheckpointError naming them and the file) the entries of `model`'s state dict that the module state
    rank `rank` loads from checkpoint `ckpt` (saved at ZeRO stage `zero_stage`) lacks, which its load would leave
    unfilled."""
    path = module_state_file(ckpt, zero_stage, rank)
    missing = sorted(set(model.state_dict()) - set(module_state_keys(path)))
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise CheckpointError(f"{path} holds no {', '.join(missing[:5])}{more} of this run's model: resume with the "
                              f"model settings the checkpoint was trained with, or from another checkpoint")
