"""Pure-PyTorch Gram and combine: the CPU path and the oracle for the Triton kernels.

Same contracts as the kernels: fp32 accumulation (fp64 for fp64 inputs); half-precision inputs are
upcast in column chunks so the temporary stays bounded whatever P is.
"""
from __future__ import annotations

from typing import Iterable

import torch

_UPCAST_CHUNK = 1 << 22  # columns upcast at a time for bf16/fp16 inputs
# The Gram sums its columns in blocks: OpenBLAS sums a long row nearly serially for a few tasks (at P = 1e7 in
# fp32 the Gram's relative error was 2e-3 at T = 2 and T = 9, 6e-6 at T = 16), while blocks of 2^16 columns (2^17
# at T = 2) keep it near 1e-5 or below at every T. The blocks are also faster for 3 <= T <= 8 (cache-sized: torch
# 2.13 CPU, 1 thread, P = 1e7: T = 8 114 ms -> 50 ms; T = 4 24 -> 14 ms) and as fast from T = 16 on. At T = 2 one
# matrix-vector product and one dot per block (`_gram_of_two`) beat a [2, n] x [n, 2] product (P = 1e7: 4.5 ms
# against 8.9 ms in one call); its blocks are larger, as each costs three calls.
_GRAM_CHUNK = 1 << 16
_GRAM_CHUNK_TWO_TASKS = 1 << 17


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _column_chunks(grads: torch.Tensor, start: int, end: int):
    """Yield the columns [start, end) of `grads` in the accumulation dtype, chunked when an upcast copies."""
    acc = _accumulation_dtype(grads.dtype)
    if grads.dtype == acc:
        yield grads[:, start:end]
        return
    for lo in range(start, end, _UPCAST_CHUNK):
        yield grads[:, lo:min(end, lo + _UPCAST_CHUNK)].to(acc)


def gram_reference(grads: torch.Tensor, offsets: list[int]) -> torch.Tensor:
    """[K, T, T] Grams of `grads` [T, P] over the K segments [offsets[k], offsets[k+1])."""
    num_tasks = grads.shape[0]
    acc = _accumulation_dtype(grads.dtype)
    out = torch.zeros(len(offsets) - 1, num_tasks, num_tasks, dtype=acc, device=grads.device)
    step = _GRAM_CHUNK_TWO_TASKS if num_tasks == 2 else _GRAM_CHUNK
    for k in range(len(offsets) - 1):
        blocks = (block for chunk in _column_chunks(grads, offsets[k], offsets[k + 1])
                  for block in chunk.split(step, dim=1))
        if num_tasks == 2:
            _gram_of_two(out[k], blocks)
        else:
            for block in blocks:
                out[k].addmm_(block, block.T)
    return out


def _gram_of_two(out: torch.Tensor, blocks: Iterable[torch.Tensor]) -> None:
    """Write the Gram of a segment's [2, n] `blocks` into `out` [2, 2] (left zero without blocks): per block its
    second column by one matrix-vector product and g0·g0 by one dot, the blocks' parts summed once at the end (few
    calls per block), the lower corner mirrored (exactly symmetric)."""
    columns, firsts = [], []
    for block in blocks:
        columns.append(block @ block[1])
        firsts.append(block[0] @ block[0])
    if columns:
        out[:, 1] = torch.stack(columns).sum(0)
        out[0, 0] = torch.stack(firsts).sum()
        out[1, 0] = out[0, 1]


def combine_reference(weights: torch.Tensor, grads: torch.Tensor, offsets: list[int], out: torch.Tensor,
                      scale: float) -> torch.Tensor:
    """Write scale · (weights[k] · grads[:, segment k]) into `out` [P] for every segment k; returns `out`."""
    acc = _accumulation_dtype(grads.dtype)
    weights = weights.to(device=grads.device, dtype=acc)
    for k in range(len(offsets) - 1):
        lo = offsets[k]
        for block in _column_chunks(grads, offsets[k], offsets[k + 1]):
            hi = lo + block.shape[1]
            target = out[lo:hi]
            if target.dtype == acc:
                torch.mv(block.T, weights[k], out=target)
                if scale != 1.0:
                    target.mul_(scale)
            else:
                target.copy_(torch.mv(block.T, weights[k]).mul_(scale))
            lo = hi
    return out
