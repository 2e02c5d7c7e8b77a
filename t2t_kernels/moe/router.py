"""Fused MoE router kernel: scores, top-k, renormalised gates, per-expert counts and aux-loss statistics.

One program handles `BLOCK_N` tokens and all `E` experts (padded to `BLOCK_E`, a power of two). The top-k
is chosen on the logits (softmax and sigmoid are monotone, so the choice is the same and ties in
underflowed probabilities cannot reorder it), by `K` rounds of arg-max over the experts not taken yet, lowest
expert index first on ties, NaN ranked as -inf (so the K experts are distinct even when logits are -inf).
The rounds are a loop, not unrolled: unrolled, K = 16 over 64 experts took 97 s to build for sm_90 (K = 64 had not
finished after 17 minutes) and from K = 8 spilled registers to local memory.
Forward outputs: expert ids `[N, K]`, gates `[N, K]` (fp32), per-expert assignment counts `[E]` and sums
of routing probabilities `[E]` (atomics), and the log-sum-exp of each token's logits `[N]` (the z-loss
statistic, also what the backward needs to rebuild the softmax).
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _load_logits(logits_ptr, rows, cols, N, E, stride_n):
    row_ok = rows < N
    col_ok = cols < E
    ok = row_ok[:, None] & col_ok[None, :]
    x = tl.load(logits_ptr + rows[:, None] * stride_n + cols[None, :], mask=ok, other=float("-inf"))
    return x.to(tl.float32), row_ok, ok


@triton.jit
def _softmax_stats(x, row_ok):
    m = tl.where(row_ok, tl.max(x, axis=1), 0.0)
    e = tl.exp(x - m[:, None])
    s = tl.where(row_ok, tl.sum(e, axis=1), 1.0)
    infinite = (m == float("inf")) | (m == float("-inf"))  # torch.logsumexp's value for such a row
    return e / s[:, None], tl.where(infinite, m, m + tl.log(s))


@triton.jit
def _pick(x, taken, ok, cols, BLOCK_E: tl.constexpr):
    """Best expert of each row among the untaken ones (NaN as -inf, lowest index on ties) and its one-hot."""
    free = ok & ~taken
    key = tl.where(free & (x == x), x, float("-inf"))
    top = tl.max(key, axis=1)
    best = tl.min(tl.where(free & (key == top[:, None]), cols[None, :], BLOCK_E), axis=1)
    return best, cols[None, :] == best[:, None]


@triton.jit
def router_fwd_kernel(
    logits_ptr, idx_ptr, gates_ptr, lse_ptr, counts_ptr, prob_sums_ptr,
    N, E, stride_n,
    K: tl.constexpr, SIGMOID: tl.constexpr, RENORM: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)  # int64: N·E may pass 2³¹
    cols = tl.arange(0, BLOCK_E)
    x, row_ok, ok = _load_logits(logits_ptr, rows, cols, N, E, stride_n)
    softmax, lse = _softmax_stats(x, row_ok)
    if SIGMOID:
        probs = tl.sigmoid(x)
    else:
        probs = softmax
    probs = tl.where(ok, probs, 0.0)
    tl.store(lse_ptr + rows, lse, mask=row_ok)

    # Round 1: pick the K experts, accumulate the selected mass.
    taken = tl.zeros([BLOCK_N, BLOCK_E], dtype=tl.int1)
    selected_mass = tl.zeros([BLOCK_N], dtype=tl.float32)
    for j in range(K):
        best, onehot = _pick(x, taken, ok, cols, BLOCK_E)
        selected_mass += tl.sum(tl.where(onehot, probs, 0.0), axis=1)
        taken = taken | onehot
        tl.store(idx_ptr + rows * K + j, best.to(tl.int32), mask=row_ok)
    hits = tl.sum(taken.to(tl.int32), axis=0)
    if RENORM:
        scale = 1.0 / tl.where(selected_mass > 0, selected_mass, 1.0)
    else:
        scale = tl.full([BLOCK_N], 1.0, dtype=tl.float32)
    # Round 2: repeat the (cheap, register-only) selection to store the gates now that the mass is known.
    taken = tl.zeros([BLOCK_N, BLOCK_E], dtype=tl.int1)
    for j in range(K):
        best, onehot = _pick(x, taken, ok, cols, BLOCK_E)
        gate = tl.sum(tl.where(onehot, probs, 0.0), axis=1) * scale
        taken = taken | onehot
        tl.store(gates_ptr + rows * K + j, gate, mask=row_ok)

    col_ok = cols < E
    tl.atomic_add(counts_ptr + cols, hits, mask=col_ok)
    tl.atomic_add(prob_sums_ptr + cols, tl.sum(probs, axis=0), mask=col_ok)


@triton.jit
def router_bwd_kernel(
    logits_ptr, lse_ptr, idx_ptr, gates_ptr, dgates_ptr, dprob_sums_ptr, dlse_ptr, dlogits_ptr,
    N, E, stride_n, stride_dn,
    K: tl.constexpr, SIGMOID: tl.constexpr, RENORM: tl.constexpr, HAS_DLSE: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)  # int64: N·E may pass 2³¹
    cols = tl.arange(0, BLOCK_E)
    x, row_ok, ok = _load_logits(logits_ptr, rows, cols, N, E, stride_n)
    lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
    softmax = tl.where(ok, tl.exp(x - lse[:, None]), 0.0)

    # Dense [BLOCK_N, BLOCK_E] views of the sparse gates and their incoming gradients.
    gate_mat = tl.zeros([BLOCK_N, BLOCK_E], dtype=tl.float32)
    dgate_mat = tl.zeros([BLOCK_N, BLOCK_E], dtype=tl.float32)
    selected = tl.zeros([BLOCK_N, BLOCK_E], dtype=tl.int1)
    for j in range(K):
        best = tl.load(idx_ptr + rows * K + j, mask=row_ok, other=0)
        g = tl.load(gates_ptr + rows * K + j, mask=row_ok, other=0.0)
        dg = tl.load(dgates_ptr + rows * K + j, mask=row_ok, other=0.0)
        onehot = (cols[None, :] == best[:, None]) & ok
        gate_mat += tl.where(onehot, g[:, None], 0.0)
        dgate_mat += tl.where(onehot, dg[:, None], 0.0)
        selected = selected | onehot

    dprob = tl.load(dprob_sums_ptr + cols, mask=cols < E, other=0.0)
    if HAS_DLSE:  # else the lse is unused: its softmax (NaN on an infinite row) must not reach the sigmoid's dx
        dx = tl.load(dlse_ptr + rows, mask=row_ok, other=0.0)[:, None] * softmax
    else:
        dx = tl.zeros([BLOCK_N, BLOCK_E], dtype=tl.float32)
    gate_dot = tl.sum(gate_mat * dgate_mat, axis=1)
    if SIGMOID:
        probs = tl.where(ok, tl.sigmoid(x), 0.0)
        if RENORM:
            mass = tl.sum(tl.where(selected, probs, 0.0), axis=1)
            mass = tl.where(mass > 0, mass, 1.0)
            dprobs = tl.where(selected, (dgate_mat - gate_dot[:, None]) / mass[:, None], 0.0)
        else:
            dprobs = dgate_mat
        dprobs += dprob[None, :]
        dx += dprobs * probs * (1.0 - probs)
    else:
        dprobs = dprob[None, :] + tl.zeros([BLOCK_N, BLOCK_E], dtype=tl.float32)
        if RENORM:
            # renormalised softmax gates are a softmax over the selected logits only
            dx += gate_mat * (dgate_mat - gate_dot[:, None])
        else:
            dprobs += dgate_mat
        dx += softmax * (dprobs - tl.sum(softmax * dprobs, axis=1)[:, None])
    tl.store(dlogits_ptr + rows[:, None] * stride_dn + cols[None, :], dx, mask=ok)
