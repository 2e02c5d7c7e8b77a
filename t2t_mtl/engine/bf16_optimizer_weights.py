"""The fp32 master weights of a checkpoint written by DeepSpeed's bf16 optimizer (`BF16_Optimizer`), which DeepSpeed
0.19.8 trains a bf16 ZeRO-1 run with where gradients accumulate in fp32 (`data_types.grad_accum_dtype: fp32`,
without optimizer offload). Its optimizer partitions are named as the ZeRO optimizer's of a bf16 run
(`bf16_zero_pp_rank_N_mp_rank_00_optim_states.pt`) but lack the ZeRO stage, so DeepSpeed's `zero_to_fp32` refuses
them ('... is not a zero checkpoint').

Each rank's file holds, per parameter group, its flat fp32 partition and where every trained parameter's piece lies
in it (`param_slice_mappings`: start and element count, for the parameters that reach into the partition); the
module states file holds every trained parameter's shape in the order of the flat group. A parameter's master is
its pieces in rank order: the group is one flat tensor cut into equal partitions, rank 0's first."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from t2t_mtl.engine.checkpoint import DS_TAG, optimizer_partition_file


def _optimizer_state(path: Path) -> Dict[str, Any]:
    from deepspeed.checkpoint.constants import OPTIMIZER_STATE_DICT

    if not path.is_file():
        raise ValueError(f"{path} is missing")
    return torch.load(path, map_location="cpu", weights_only=False, mmap=True)[OPTIMIZER_STATE_DICT]


def bf16_optimizer_weights(ckpt: Path) -> Optional[Dict[str, torch.Tensor]]:
    """The fp32 master weight of every trained parameter of checkpoint folder `ckpt` written by the bf16 optimizer
    (any world size), by the name DeepSpeed's engine gives it, as the optimizer held it; None where its optimizer
    partitions are not the bf16 optimizer's (rank 0's names a ZeRO stage, or none is named as a bf16 run's: the ZeRO
    optimizer's, which `zero_to_fp32` reads). ValueError naming the file that is missing or the parameter whose
    pieces do not add up to its shape."""
    from deepspeed.checkpoint.constants import (PARAM_SLICE_MAPPINGS, PARTITION_COUNT, SINGLE_PARTITION_OF_FP32_GROUPS,
                                                ZERO_STAGE)

    ckpt = Path(ckpt)
    first_file = optimizer_partition_file(ckpt, 0, "bf16")
    if not first_file.is_file():
        return None
    first = _optimizer_state(first_file)
    if ZERO_STAGE in first or PARAM_SLICE_MAPPINGS not in first:
        return None
    ranks = set(first[PARTITION_COUNT])
    if len(ranks) != 1:  # (one data-parallel group for every parameter group: no MoE expert groups)
        raise ValueError(f"{first_file}: parameter groups partitioned over "
                         f"{sorted(ranks)} ranks; only one partition count is read")
    states: List[Dict[str, Any]] = [first] + [_optimizer_state(optimizer_partition_file(ckpt, rank, "bf16"))
                                              for rank in range(1, ranks.pop())]
    model_states = ckpt / DS_TAG / "mp_rank_00_model_states.pt"
    shapes = torch.load(model_states, map_location="cpu", weights_only=False, mmap=True)["param_shapes"]
    weights: Dict[str, torch.Tensor] = {}
    for group, group_shapes in enumerate(shapes):
        for name, shape in group_shapes.items():
            pieces = [state[SINGLE_PARTITION_OF_FP32_GROUPS][group].narrow(0, where.start, where.numel)
                      for state in states for where in [state[PARAM_SLICE_MAPPINGS][group].get(name)] if where]
            flat = torch.cat(pieces) if pieces else torch.empty(0)
            if flat.numel() != torch.Size(shape).numel():
                raise ValueError(f"{ckpt / DS_TAG}: the optimizer partitions hold {flat.numel()} fp32 elements of "
                                 f"{name}, whose shape {tuple(shape)} has {torch.Size(shape).numel()}")
            weights[name] = flat.float().reshape(shape).clone()
    return weights
