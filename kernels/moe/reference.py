"""PyTorch references of the MoE routing kernels (same contracts; differentiable through autograd).

They are the CPU path of the public API and the ground truth of the kernel tests. Conventions shared with
the kernels: top-k chosen on the logits in descending order; assignments ordered slot-major (a = j·N + t)
when claiming expert capacity; destination rows are expert-contiguous segments; -1 marks a dropped slot.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F


class RouterOutput(NamedTuple):
    """Router results for N tokens, E experts, top-k.

    topk_idx: int32 [N, k] expert ids, best first; gates: fp32 [N, k]; counts: int32 [E] assignments per
    expert (sums to N·k); prob_sums: fp32 [E] Σ_t p[t, e]; lse: fp32 [N] logsumexp of each token's logits.
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
        return self.segments[-1]

    @property
    def top_k(self) -> int:
        return self.dest.shape[1]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half types, float64 kept (gradcheck)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def router_reference(logits: torch.Tensor, k: int, score: str = "softmax", renormalize: bool = True
                     ) -> RouterOutput:
    """Scores (softmax or sigmoid) over [N, E] logits, top-k by logit, gates (renormalised over the k)."""
    x = logits.to(_compute_dtype(logits.dtype))
    lse = torch.logsumexp(x, dim=-1)
    probs = torch.softmax(x, dim=-1) if score == "softmax" else torch.sigmoid(x)
    idx = torch.topk(x, k, dim=-1).indices
    gates = probs.gather(-1, idx)
    if renormalize:
        gates = gates / gates.sum(-1, keepdim=True)
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
    weights = torch.where(kept, gates.to(dtype), torch.zeros((), dtype=dtype, device=gates.device))
    table = y.to(dtype)
    if y.shape[0] == 0:  # every slot dropped: one zero row to read
        table = torch.cat([table, table.new_zeros(1, y.shape[1])])
    # a dropped slot reads row 0 with weight 0
    out = F.embedding_bag(dest.clamp(min=0), table, mode="sum", per_sample_weights=weights)
    return out.to(y.dtype)
