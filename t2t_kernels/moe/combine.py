"""Combine kernels: un-permute expert outputs back to token order with a gate-weighted sum.

`gather_sum_kernel`: out[t] = Σ_j w[t, j] · y[dest[t, j]] over kept slots (w = 1 without gates) — the
combine forward and, without gates, the backward of the permute. Accumulates in `ACC` (fp32; fp64 for fp64
data, as the reference), no atomics; the gate of a dropped slot is never read (a NaN there does not reach the
output).
`combine_bwd_kernel`: dy[dest[t, j]] = w[t, j] · dout[t] (every row has exactly one source, so the scatter
has no conflicts) and dw[t, j] = ⟨dout[t], y[dest[t, j]]⟩ (0 for dropped slots), one pass over d.
Both loop over the K slots at run time: unrolled, `gather_sum_kernel` took 147 s to build for sm_90 at k = 64
(k up to E = 64 is promised) and spilled registers to local memory from k = 8.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def gather_sum_kernel(
    y_ptr, dest_ptr, gates_ptr, out_ptr, N, D, stride_y, stride_out,
    K: tl.constexpr, HAS_GATES: tl.constexpr, ACC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    tokens = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    dims = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    t_ok = tokens < N
    d_ok = dims < D
    acc = tl.zeros([BLOCK_T, BLOCK_D], dtype=ACC)
    for j in range(K):
        row = tl.load(dest_ptr + tokens * K + j, mask=t_ok, other=-1)
        ok = (row >= 0)[:, None] & d_ok[None, :]
        y = tl.load(y_ptr + row.to(tl.int64)[:, None] * stride_y + dims[None, :], mask=ok, other=0.0)
        y = y.to(ACC)
        if HAS_GATES:
            w = tl.load(gates_ptr + tokens * K + j, mask=t_ok & (row >= 0), other=0.0).to(ACC)
            y = y * w[:, None]
        acc += y
    tl.store(out_ptr + tokens.to(tl.int64)[:, None] * stride_out + dims[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=t_ok[:, None] & d_ok[None, :])


@triton.jit
def combine_bwd_kernel(
    dout_ptr, y_ptr, dest_ptr, gates_ptr, dy_ptr, dgates_ptr, N, D, stride_dout, stride_y, stride_dy,
    K: tl.constexpr, ACC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    tokens = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    t_ok = tokens < N
    for j in range(K):
        row = tl.load(dest_ptr + tokens * K + j, mask=t_ok, other=-1)
        kept = row >= 0
        row64 = row.to(tl.int64)
        w = tl.load(gates_ptr + tokens * K + j, mask=t_ok, other=0.0).to(ACC)
        dot = tl.zeros([BLOCK_T], dtype=ACC)
        for start in range(0, D, BLOCK_D):
            dims = start + tl.arange(0, BLOCK_D)
            d_ok = dims < D
            ok = kept[:, None] & d_ok[None, :]
            g = tl.load(dout_ptr + tokens.to(tl.int64)[:, None] * stride_dout + dims[None, :], mask=ok, other=0.0)
            g = g.to(ACC)
            y = tl.load(y_ptr + row64[:, None] * stride_y + dims[None, :], mask=ok, other=0.0).to(ACC)
            dot += tl.sum(g * y, axis=1)
            tl.store(dy_ptr + row64[:, None] * stride_dy + dims[None, :],
                     (g * w[:, None]).to(dy_ptr.dtype.element_ty), mask=ok)
        tl.store(dgates_ptr + tokens * K + j, dot, mask=t_ok)
