"""Pure-PyTorch Gram and combine: the CPU path and the oracle for the Triton kernels.

Same contracts as the kernels: fp32 accumulation (fp64 for fp64 inputs); half-precision inputs are
upcast in column chunks so the temporary stays bounded whatever P is.
"""
from __future__ import annotations

import torch

_UPCAST_CHUNK = 1 << 22  # columns upcast at a time for bf16/fp16 inputs
# For 3 <= T <= 8, BLAS's [T, P] x [P, T] product runs up to 2x faster in cache-sized column blocks (measured
# with torch 2.13 CPU, 1 thread, P = 1e7: T = 8 114 ms -> 50 ms; T = 4 24 -> 14 ms; no gain from T = 16 on);
# at T = 2 one matrix-vector product and one dot (`_gram_of_two`) beat both (P = 1e7: 4.5 ms against 8.9 ms in one
# [2, P] x [P, 2] call; P = 1e6: 0.29 against 0.41 ms).
_BLOCKED_T = range(3, 9)
_SMALL_T_CHUNK = 1 << 16


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _column_chunks(grads: torch.Tensor, start: int, end: int, chunk_small_t: bool = False):
    """Yield the columns [start, end) of `grads` in the accumulation dtype, chunked when an upcast copies
    (and, with `chunk_small_t`, in cache-sized blocks when 3 <= T <= 8)."""
    acc = _accumulation_dtype(grads.dtype)
    if grads.dtype == acc:
        step = _SMALL_T_CHUNK if chunk_small_t and grads.shape[0] in _BLOCKED_T else max(1, end - start)
        for lo in range(start, end, step):
            yield grads[:, lo:min(end, lo + step)]
        return
    for lo in range(start, end, _UPCAST_CHUNK):
        yield grads[:, lo:min(end, lo + _UPCAST_CHUNK)].to(acc)


def gram_reference(grads: torch.Tensor, offsets: list[int]) -> torch.Tensor:
    """[K, T, T] Grams of `grads` [T, P] over the K segments [offsets[k], offsets[k+1])."""
    num_tasks = grads.shape[0]
    acc = _accumulation_dtype(grads.dtype)
    out = torch.zeros(len(offsets) - 1, num_tasks, num_tasks, dtype=acc, device=grads.device)
    for k in range(len(offsets) - 1):
        for block in _column_chunks(grads, offsets[k], offsets[k + 1], chunk_small_t=True):
            if num_tasks == 2:
                _add_gram_of_two(out[k], block)
            else:
                out[k].addmm_(block, block.T)
    return out


def _add_gram_of_two(out: torch.Tensor, block: torch.Tensor) -> None:
    """Add the Gram of a [2, n] `block` to `out` [2, 2]: its second column by one matrix-vector product, g0·g0 by
    one dot, the lower corner mirrored (exactly symmetric)."""
    out[:, 1] += block @ block[1]
    out[0, 0] += block[0] @ block[0]
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
