"""PyTorch references of the MoE routing kernels (same contracts; differentiable through autograd).

They are the CPU path of the public API and the ground truth of the kernel tests. Conventions shared with
the kernels: top-k chosen on the logits in descending order (distinct experts, lowest index first on ties,
NaN ranked as -inf); assignments ordered slot-major (a = j·N + t)
when claiming expert capacity; destination rows are expert-contiguous segments; -1 marks a dropped slot.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F


class RouterOutput(NamedTuple):
    """Router results for N tokens, E experts, top-k.

    topk_idx: int32 [N, k] distinct expert ids, best logit first, lowest id first on ties; gates: [N, k]; counts:
    int32 [E] assignments per expert (sums to N·k); prob_sums: [E] Σ_t p[t, e]; lse: [N] logsumexp of each
    token's logits (as `torch.logsumexp`: ±inf for a row whose largest logit is ±inf). The float outputs are fp32,
    except on the reference path for fp64 logits, which computes and returns fp64 (for gradcheck). A NaN logit
    ranks as -inf in the top-k (the same ids on both backends), but the row's probabilities, gates and lse are NaN:
    NaN logits are a caller bug that is not checked (a check would cost a device sync).
    """

    topk_idx: torch.Tensor
    gates: torch.Tensor
    counts: torch.Tensor
    prob_sums: torch.Tensor
    lse: torch.Tensor


class DispatchPlan(NamedTuple):
    """Where each (token, slot) goes in the expert-contiguous buffer.

    dest: int32 [N, k] destination row or -1 (dropped); row_src: int32 [R] flat assignment t·k + j of each
    row (the inverse permutation); offsets: int32 [E + 1] segment starts (offsets[E] = R); counts: int32
    [E] assignments per expert before capacity; kept: int32 [E] rows per expert; capacity: rows allowed
    per expert (N·k when dropless); segments: the offsets as a host list (one device sync).
    """

    dest: torch.Tensor
    row_src: torch.Tensor
    offsets: torch.Tensor
    counts: torch.Tensor
    kept: torch.Tensor
    capacity: int
    segments: list

    @property
    def num_rows(self) -> int:
        """R, the rows kept in the buffer (assignments not dropped)."""
        return self.segments[-1]

    @property
    def top_k(self) -> int:
        """k, the slots per token."""
        return self.dest.shape[1]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half types, float64 kept (gradcheck)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _top_k_ids(key: torch.Tensor, k: int) -> torch.Tensor:
    """The ids of the `k` largest entries of each row of `key` (no NaN), largest first, the lowest id first among
    equal values — a stable descending sort's first k. `torch.topk` picks them (its order among equal values is
    unspecified); the rows where that order matters — a tie among its k, or a value tied with the k-th left
    out — are sorted in full."""
    values, ids = torch.topk(key, k, dim=-1)
    left_out = (key >= values[..., -1:]).sum(-1) > k  # a value equal to the k-th is not among the k
    tied = (values[..., 1:] == values[..., :-1]).any(-1) | left_out
    if tied.any():
        rows = tied.nonzero().squeeze(-1)
        ids[rows] = torch.sort(key[rows], dim=-1, descending=True, stable=True).indices[..., :k]
    return ids


def router_reference(logits: torch.Tensor, k: int, score: str = "softmax", renormalize: bool = True
                     ) -> RouterOutput:
    """Scores (softmax or sigmoid) over [N, E] logits, top-k by logit, gates (renormalised over the k)."""
    x = logits.to(_compute_dtype(logits.dtype))
    lse = torch.logsumexp(x, dim=-1)
    probs = torch.softmax(x, dim=-1) if score == "softmax" else torch.sigmoid(x)
    nan = x.isnan()
    idx = _top_k_ids(x.masked_fill(nan, float("-inf")) if nan.any() else x, k)
    gates = probs.gather(-1, idx)
    if renormalize:
        mass = gates.sum(-1, keepdim=True)
        gates = gates / torch.where(mass > 0, mass, torch.ones_like(mass))  # the kernel's guard: underflow -> 0
    counts = torch.bincount(idx.reshape(-1), minlength=x.shape[-1]).to(torch.int32)
    return RouterOutput(idx.to(torch.int32), gates, counts, probs.sum(0), lse)


def dispatch_reference(topk_idx: torch.Tensor, num_experts: int, capacity: Optional[int] = None
                       ) -> DispatchPlan:
    """Plan the dispatch of [N, k] expert ids: stable sort of slot-major assignments by expert."""
    n, k = topk_idx.shape
    cap = n * k if capacity is None else int(capacity)
    flat = topk_idx.t().reshape(-1).long()  # slot-major: a = j·N + t
    order = torch.sort(flat, stable=True).indices
    counts = torch.bincount(flat, minlength=num_experts)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(flat)
    rank[order] = torch.arange(flat.numel(), device=flat.device) - starts[flat[order]]
    kept = counts.clamp(max=cap)
    offsets = torch.cat([kept.new_zeros(1), torch.cumsum(kept, 0)])
    keep = rank < cap
    dest_slot_major = torch.where(keep, offsets[flat] + rank, torch.full_like(rank, -1))
    dest = dest_slot_major.view(k, n).t()
    assignment = (torch.arange(n, device=flat.device) * k).repeat(k) + torch.arange(
        k, device=flat.device).repeat_interleave(n)
    row_src = torch.empty(int(offsets[-1]), dtype=torch.long, device=flat.device)
    row_src[dest_slot_major[keep]] = assignment[keep]
    return DispatchPlan(dest.to(torch.int32).contiguous(), row_src.to(torch.int32), offsets.to(torch.int32),
                        counts.to(torch.int32), kept.to(torch.int32), cap, offsets.tolist())


def permute_reference(x: torch.Tensor, plan: DispatchPlan) -> torch.Tensor:
    """Rows of x [N, d] in expert-contiguous order: out[r] = x[row_src[r] // k]."""
    return x.index_select(0, (plan.row_src.long() // plan.top_k))


def combine_reference(y: torch.Tensor, plan: DispatchPlan, gates: torch.Tensor) -> torch.Tensor:
    """Token-order output: out[t] = Σ_j gates[t, j] · y[dest[t, j]] over kept slots (fp32 sum).

    One `embedding_bag` (sum mode with per-sample weights): the rows are gathered, weighted and summed in one
    op, and its backward scatters into y's gradient without materialising [N, k, d].
    """
    dtype = _compute_dtype(torch.promote_types(y.dtype, gates.dtype))
    dest = plan.dest.long()
    kept = dest >= 0
    per_token = kept.sum(1)
    rows, d = y.shape
    # a bag per token holding its kept slots only (a dropped slot is never read: 0 · an inf/NaN row would be NaN);
    # embedding_bag needs a non-empty table: a zero row when every slot is dropped, a zero column when d = 0
    # (cut off again below)
    table = y.to(dtype) if rows and d else F.pad(y.to(dtype), (0, int(d == 0), 0, int(rows == 0)))
    out = F.embedding_bag(dest[kept], table, torch.cumsum(per_token, 0) - per_token, mode="sum",
                          per_sample_weights=gates.to(dtype)[kept])
    return out[:, :d].to(y.dtype)
