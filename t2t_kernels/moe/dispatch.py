"""Dispatch kernels: (token, slot) → destination row in an expert-contiguous buffer, and the permute.

Assignments are ordered slot-major (a = j·N + t), so every token's first choice claims capacity before any
second choice, and tokens keep their order inside an expert. Three launches:
1. `dispatch_rank_kernel` — per block of `BLOCK_A` assignments: rank of each assignment among the block's
   assignments to the same expert (a one-hot cumulative sum) and the block's per-expert histogram;
2. `dispatch_scan_kernel` — one program: exclusive scan of the histograms over blocks (block offsets),
   per-expert totals, kept counts `min(count, capacity)` and the exclusive scan over experts (segment
   offsets, `E + 1` entries, the last one the number of rows);
3. `dispatch_dest_kernel` — rank = local rank + block offset; kept when rank < capacity; destination row
   = segment offset + rank (-1 when dropped), and the inverse map row → flat assignment `t·K + j`.
The histograms [blocks, E] pass 2^31 elements within the promised sizes (E = 16384 from N·k = 2^20), so their
row offsets (block · E) are int64.
`permute_kernel` scatters token rows to their destinations (the forward of the permute), looping over the K
slots at run time (unrolled, k = 64 took 54 s to build for sm_90).
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def dispatch_rank_kernel(
    idx_ptr, local_rank_ptr, hist_ptr, N, E,
    K: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_E: tl.constexpr,
):
    pid = tl.program_id(0)
    a = pid * BLOCK_A + tl.arange(0, BLOCK_A)
    a_ok = a < N * K
    slot = a // N
    token = a - slot * N
    expert = tl.load(idx_ptr + token * K + slot, mask=a_ok, other=-1)
    cols = tl.arange(0, BLOCK_E)
    onehot = ((expert[:, None] == cols[None, :]) & a_ok[:, None]).to(tl.int32)
    running = tl.cumsum(onehot, axis=0)
    rank = tl.sum(onehot * running, axis=1) - 1
    tl.store(local_rank_ptr + a, rank, mask=a_ok)
    tl.store(hist_ptr + pid.to(tl.int64) * E + cols, tl.sum(onehot, axis=0), mask=cols < E)


@triton.jit
def dispatch_scan_kernel(
    hist_ptr, block_offsets_ptr, counts_ptr, kept_ptr, offsets_ptr, num_blocks, E, capacity,
    BLOCK_B: tl.constexpr, BLOCK_E: tl.constexpr,
):
    cols = tl.arange(0, BLOCK_E)
    col_ok = cols < E
    carry = tl.zeros([BLOCK_E], dtype=tl.int32)
    for start in range(0, num_blocks, BLOCK_B):
        blocks = start + tl.arange(0, BLOCK_B)
        ok = (blocks < num_blocks)[:, None] & col_ok[None, :]
        ptrs = blocks.to(tl.int64)[:, None] * E + cols[None, :]
        hist = tl.load(hist_ptr + ptrs, mask=ok, other=0)
        inclusive = tl.cumsum(hist, axis=0)
        tl.store(block_offsets_ptr + ptrs, inclusive - hist + carry[None, :], mask=ok)
        carry += tl.sum(hist, axis=0)
    tl.store(counts_ptr + cols, carry, mask=col_ok)
    kept = tl.minimum(carry, capacity)
    tl.store(kept_ptr + cols, kept, mask=col_ok)
    tl.store(offsets_ptr + cols, tl.cumsum(kept, axis=0) - kept, mask=col_ok)
    tl.store(offsets_ptr + E, tl.sum(kept, axis=0))


@triton.jit
def dispatch_dest_kernel(
    idx_ptr, local_rank_ptr, block_offsets_ptr, offsets_ptr, dest_ptr, row_src_ptr, N, E, capacity,
    K: tl.constexpr, BLOCK_A: tl.constexpr,
):
    pid = tl.program_id(0)
    a = pid * BLOCK_A + tl.arange(0, BLOCK_A)
    a_ok = a < N * K
    slot = a // N
    token = a - slot * N
    flat = token * K + slot
    expert = tl.load(idx_ptr + flat, mask=a_ok, other=0)
    rank = tl.load(local_rank_ptr + a, mask=a_ok, other=0)
    rank += tl.load(block_offsets_ptr + pid.to(tl.int64) * E + expert, mask=a_ok, other=0)
    kept = a_ok & (rank < capacity)
    row = tl.where(kept, tl.load(offsets_ptr + expert, mask=a_ok, other=0) + rank, -1)
    tl.store(dest_ptr + flat, row, mask=a_ok)
    tl.store(row_src_ptr + row, flat, mask=kept)


@triton.jit
def permute_kernel(
    x_ptr, dest_ptr, out_ptr, N, D, stride_x, stride_out,
    K: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    tokens = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    dims = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    t_ok = tokens < N
    d_ok = dims < D
    x = tl.load(x_ptr + tokens.to(tl.int64)[:, None] * stride_x + dims[None, :], mask=t_ok[:, None] & d_ok[None, :])
    for j in range(K):
        row = tl.load(dest_ptr + tokens * K + j, mask=t_ok, other=-1)
        ok = (row >= 0)[:, None] & d_ok[None, :]
        tl.store(out_ptr + row.to(tl.int64)[:, None] * stride_out + dims[None, :], x, mask=ok)
