"""Triton combine kernel: out[p] = scale · Σ_t w[k(p), t] · g[t, p], written straight into a flat buffer.

One program per BLOCK_P columns of one segment (segment k uses its own weight row; without segments K = 1), on
a 1-D grid of Σ_k ⌈P_k / BLOCK_P⌉ ≤ P / BLOCK_P + K programs (`segments.py`): CUDA caps grid dimensions y and z
at 65535 (K can pass that) and x at 2^31 - 1, which K times the blocks of the longest segment can pass (600
segments, one of 5·10^8 columns, at T = 64).
The reduction over T is an FMA reduction in fp32 (rows ≥ T masked), the result is cast to the output's
dtype on store. All offsets into P are int64.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .segments import block_maps, count_blocks


@triton.jit
def _combine_kernel(
    g_ptr, w_ptr, out_ptr, seg_ptr, block_seg_ptr, first_block_ptr, T, stride_t, scale,
    BLOCK_T: tl.constexpr, BLOCK_P: tl.constexpr,
):
    seg = tl.load(block_seg_ptr + tl.program_id(0)).to(tl.int64)
    block = tl.program_id(0) - tl.load(first_block_ptr + seg)
    seg_end = tl.load(seg_ptr + seg + 1).to(tl.int64)
    start = tl.load(seg_ptr + seg).to(tl.int64) + block.to(tl.int64) * BLOCK_P
    rows = tl.arange(0, BLOCK_T)
    row_mask = rows < T
    p = start + tl.arange(0, BLOCK_P).to(tl.int64)
    p_mask = p < seg_end
    w = tl.load(w_ptr + seg * T + rows, mask=row_mask, other=0.0).to(tl.float32)
    tile = tl.load(g_ptr + rows.to(tl.int64)[:, None] * stride_t + p[None, :],
                   mask=row_mask[:, None] & p_mask[None, :], other=0.0).to(tl.float32)
    acc = tl.sum(tile * w[:, None], axis=0) * scale
    tl.store(out_ptr + p, acc.to(out_ptr.dtype.element_ty), mask=p_mask)


def _block_sizes(num_tasks: int) -> tuple[int, int]:
    block_t = max(2, triton.next_power_of_2(num_tasks))
    block_p = max(64, min(1024, 8192 // block_t))
    return block_t, block_p


def combine_triton(weights: torch.Tensor, grads: torch.Tensor, offsets: torch.Tensor, segments: list[int],
                   out: torch.Tensor, scale: float) -> torch.Tensor:
    """Write scale · (weights[k] · grads[:, segment k]) into `out` [P] for every segment k.

    `weights` is [K, T] fp32, `grads` [T, P] with unit stride along P, `offsets` [K+1] int64, all on one
    device; `segments` holds the same K+1 boundaries on the host (nothing is read back from the device);
    validated by `t2t_kernels.gradproj.combine`."""
    num_tasks = grads.shape[0]
    block_t, block_p = _block_sizes(num_tasks)
    num_blocks = count_blocks(segments, block_p)
    if num_blocks:
        block_seg, first_block = block_maps(offsets, block_p, num_blocks)
        _combine_kernel[(num_blocks,)](
            grads, weights, out, offsets, block_seg, first_block, num_tasks, grads.stride(0), float(scale),
            BLOCK_T=block_t, BLOCK_P=block_p, num_warps=4,
        )
    return out
