"""What a resume through DeepSpeed's universal format (a ZeRO-3 checkpoint under another world size) cannot restore,
refused before the checkpoint is converted or DeepSpeed starts, each naming the setting and what to do instead. Read
from DeepSpeed 0.19.8 (`DeepSpeedEngine.load_checkpoint`, `DeepSpeedZeroOptimizer_Stage3`, `ds_to_universal`):

- this run's optimizer offloaded to NVMe: DeepSpeed's load skips its ZeRO load whenever the optimizer swaps to NVMe
  (so none of the converted folder's fp32 weights and Adam moments), then copies the swap files of
  `ds_universal/offloaded_tensors/rankNN`, which the conversion never writes: the load failed there, as a corrupt
  checkpoint, and with such a folder in place the run would have trained on from its build's weights;
- a checkpoint saved with its optimizer offloaded to NVMe (`ds/offloaded_tensors`, `checkpoint_swapped_optimizer`):
  the state of a sub-group swapped out (one of 1 MiB or more: a model's, but for toys) is in those swap files, its
  entries in the optimizer partitions empty, and the conversion reads the partitions alone (it failed on them, as a
  corrupt checkpoint);
- this run's parameters offloaded to NVMe: a partition swapped out is read back from its swap file, written at the
  build, which neither the universal load nor `universal_frozen.fill_frozen` writes: not shown to resume the
  checkpoint's weights (no NVMe here to run it);
- `zero_quantized_nontrainable_weights` into a model with frozen parameters: DeepSpeed keeps their partitions in int8
  beside a scale that `fill_frozen` does not write (it would write the saved values into the int8 partitions), and a
  checkpoint so saved holds the int8 values without their scales (`universal_frozen.check_saved_frozen` refuses it).

On the checkpoint's world size a resume loads DeepSpeed's own format, which has none of these limits.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from t2t_mtl.engine.checkpoint import DS_TAG, CheckpointError
from t2t_mtl.engine.deepspeed_settings import json_zero_stage, zero_setting

__all__ = ["check_universal_resume", "checkpoint_swapped_optimizer"]


def checkpoint_swapped_optimizer(ckpt: Path) -> bool:
    """Whether checkpoint `ckpt` was saved with its optimizer offloaded to NVMe: DeepSpeed copied its swap files into
    `ds/offloaded_tensors/` (one folder per rank)."""
    return (Path(ckpt) / DS_TAG / "offloaded_tensors").is_dir()


def check_universal_resume(ckpt: Path, meta: Mapping[str, Any], ds_config: Mapping[str, Any],
                           model: torch.nn.Module) -> None:
    """Refuse (CheckpointError naming the setting and what to do) a resume of checkpoint `ckpt` (`meta`) through the
    universal format into the engine of `ds_config` with `model` whose state that load would not restore: this run's
    optimizer or parameters offloaded to NVMe at ZeRO-3, a checkpoint saved with its optimizer offloaded to NVMe, or
    `zero_quantized_nontrainable_weights` at ZeRO-3 into a model with frozen parameters. Reads no weight."""
    ranks = f"{meta['world_size']} rank{'s' if int(meta['world_size']) != 1 else ''}"
    same = f"resume it on the checkpoint's world size ({ranks}, which loads DeepSpeed's own format)"
    how = (f"{ckpt} was saved on {ranks}; a resume under another world size loads it through DeepSpeed's universal "
           f"format")
    stage3 = int(json_zero_stage(dict(ds_config))) == 3
    for key, what in (("offload_optimizer", "skips the load of the trained weights and the optimizer state with "
                                            "the optimizer offloaded to NVMe (it looks for swap files the conversion "
                                            "does not write)"),
                      ("offload_param", "does not write the parameters offloaded to NVMe (their swap files keep "
                                        "the weights this run was built with)")):
        if stage3 and _device(zero_setting(ds_config, key)) == "nvme":
            raise CheckpointError(f"{how}, which {what}: {same}, or without zero_optimization.{key} on nvme (in "
                                  f"deepspeed.extra or the deepspeed.config JSON; put it back once this run has "
                                  f"saved a checkpoint)")
    if checkpoint_swapped_optimizer(ckpt):
        swapped = Path(ckpt) / DS_TAG / "offloaded_tensors"
        raise CheckpointError(f"{how}, whose conversion reads no optimizer state offloaded to NVMe, and this one was "
                              f"saved with its optimizer on NVMe (its state in {swapped}, not in the files the "
                              f"conversion reads): {same}")
    frozen = [name for name, param in model.named_parameters() if not param.requires_grad]
    if stage3 and frozen and zero_setting(ds_config, "zero_quantized_nontrainable_weights") is True:
        raise CheckpointError(f"{how}, which restores the trained weights alone, and this run's frozen weights "
                              f"({frozen[0]}{' and more' if len(frozen) > 1 else ''}) are written after it into "
                              f"partitions that zero_quantized_nontrainable_weights keeps in int8, beside a scale not "
                              f"written: {same}, or with zero_optimization.zero_quantized_nontrainable_weights false")


def _device(offload: Any) -> Any:
    """The `device` of an offload section as DeepSpeed's parser reads it (`zero_setting`), a mapping's as written."""
    return offload.get("device") if isinstance(offload, Mapping) else getattr(offload, "device", None)
