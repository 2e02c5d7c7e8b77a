"""`MoEFeedForward`: E T5 FFN experts behind a router, in the `DenseReluDense` slot of a `T5LayerFF`.

Token routing runs the fused router kernel, the dispatch plan, the permutation, the experts on contiguous
segments and the gate-weighted combine (`t2t_kernels.moe`); task routing takes each row's route from its task's
gate row; hybrid routing adds the two. Each forward leaves its aux losses (load balancing, z-loss), per-expert
token counts and dropped fraction in `aux`. `t2t_mtl.model.moe.TaskAwareT5` puts these layers into a T5.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from transformers import T5Config
from transformers.models.t5.modeling_t5 import T5DenseActDense, T5DenseGatedActDense

from t2t_kernels.moe import (combine, expert_capacity, load_balancing_loss, permute, plan_dispatch, route,
                             router_z_loss)
from t2t_mtl.model.moe_config import MissingTaskIdsError, MoEConfig, MoEConfigError
from t2t_mtl.model.task_routing import UNSEEN_TASK_ID, TaskConditioned

__all__ = ["MoEFeedForward", "routing_dtype"]


def routing_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype routing computes in: fp32 (the router of a half-precision model too), fp64 for fp64."""
    return torch.promote_types(dtype, torch.float32)


def _dense_ffn(config: T5Config) -> nn.Module:
    return T5DenseGatedActDense(config) if config.is_gated_act else T5DenseActDense(config)


class MoEFeedForward(nn.Module, TaskConditioned):
    """E T5 FFN experts behind a router; input/output [B, L, d_model] (the `DenseReluDense` slot).

    Set `task_ids` ([B], or [B'] with B a multiple of B' as in beam search; `UNSEEN_TASK_ID` for a task
    the model was not trained on) before calling in task or hybrid routing. `token_mask` ([B, L'] with L' >= L,
    nonzero = a real token; its last L columns are read, as in a decoder's mask over cached and new tokens; None =
    every token is real; `TaskAwareT5` sets it from the stack's padding mask) keeps padding out of the routing:
    padded tokens take no expert capacity, get a zero output under token and hybrid routing, and count in no aux
    statistic. After each call `aux` holds `load_balancing`, `z_loss` (differentiable scalars, over the real
    tokens), `counts` (assignments per expert), `task_counts` ([num_tasks, E]: the assignments of each trained
    task's real tokens per expert; None in eval mode and under token routing without task ids), `num_dropped` (how
    many (token, slot) pairs were over capacity), `dropped` (their fraction) and `choices` (how many (token, slot)
    pairs were routed: real tokens × top_k).
    """

    token_mask: Optional[torch.Tensor] = None
    shared_reads: Optional[Dict[tuple, tuple]] = None  # set by `TaskAwareT5` with the mask: one dict per stack call


    def __init__(self, config: T5Config, moe: MoEConfig, expert_ids: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        self.moe = moe
        self.expert_ids = list(range(moe.num_experts)) if expert_ids is None else sorted(int(i) for i in expert_ids)
        self._local = {e: i for i, e in enumerate(self.expert_ids)}
        self.experts = nn.ModuleList(_dense_ffn(config) for _ in self.expert_ids)
        self.router = nn.Linear(config.d_model, moe.num_experts, bias=False) if moe.routing != "task" else None
        self.task_gate = nn.Embedding(moe.num_tasks, moe.num_experts) if moe.routing != "token" else None
        self.aux: Dict[str, torch.Tensor] = {}

    def reset_parameters(self, factor: float = 1.0) -> None:
        """Router ~ N(0, 0.1/d) (Switch's scale), task gate ~ N(0, 1): distinct tasks start on distinct experts."""
        if self.router is not None:
            nn.init.normal_(self.router.weight, std=factor * math.sqrt(0.1 / self.router.in_features))
        if self.task_gate is not None:
            nn.init.normal_(self.task_gate.weight, std=factor)

    # ------------------------------------------------------------------------------------------ routing
    def _row_task_ids(self, rows: int, device: torch.device) -> Tuple[torch.Tensor, bool]:
        """(each row's task id, whether any is `UNSEEN_TASK_ID`); MissingTaskIdsError for missing or bad ids."""
        ids, any_unseen = self.row_task_ids(
            rows, device, self.moe.num_tasks, MissingTaskIdsError, owner=f"tasks {self.moe.task_names}",
            missing=f"MoE layer with routing={self.moe.routing!r} needs task ids: call the model with "
                    f"task_ids=LongTensor[batch] indexing {self.moe.task_names} (UNSEEN_TASK_ID={UNSEEN_TASK_ID} "
                    "for a task the model was not trained on)")
        if self.moe.unseen_task_routing == "error" and any_unseen:
            raise MissingTaskIdsError(
                f"task id UNSEEN_TASK_ID={UNSEEN_TASK_ID} (a task the model was not trained on) is refused by "
                "model.moe.unseen_task_routing='error'; set it to 'mean' or to a trained task's name "
                f"{self.moe.task_names} to route unseen tasks")
        return ids, any_unseen

    def unseen_task_row(self) -> torch.Tensor:
        """The gate row [E] of an unseen task (fp32; fp64 for an fp64 gate): the mean of the trained rows, or a named
        task's row. The mean is rounded to the gate's dtype, as a task's own row is stored, so the sub-network exported
        for an unseen task (which holds it as its task's row) routes with exactly these gates in bf16 too."""
        weight = self.task_gate.weight
        acc = routing_dtype(weight.dtype)
        if self.moe.unseen_task_routing == "mean":
            return weight.to(acc).mean(0).to(weight.dtype).to(acc)
        return weight[self.moe.task_index(self.moe.unseen_task_routing)].to(acc)

    def _task_logits(self, ids: torch.Tensor, any_unseen: bool) -> torch.Tensor:
        """Gate rows [len(ids), E] (fp32; fp64 for an fp64 gate) of task ids, `UNSEEN_TASK_ID` among them when
        `any_unseen`."""
        rows = self.task_gate(ids.clamp(min=0)).to(routing_dtype(self.task_gate.weight.dtype))
        if not any_unseen:
            return rows
        return torch.where(ids.eq(UNSEEN_TASK_ID)[:, None], self.unseen_task_row()[None], rows)

    def _check_held(self, expert_ids: Sequence[int]) -> None:
        """MoEConfigError when the route picked experts this sub-network does not hold."""
        unheld = sorted(set(expert_ids) - set(self._local))
        if unheld:
            raise MoEConfigError(f"the route picked expert(s) {unheld}, which this sub-network does not hold (it holds "
                                 f"{self.expert_ids}): a task sub-network serves only the route it was exported with "
                                 "(its own task, its gate rows as exported); to train further, fine-tune the full "
                                 "model and export the task again")

    def _expert(self, expert_id: int) -> nn.Module:
        self._check_held([expert_id])
        return self.experts[self._local[expert_id]]

    def _shared(self, source: torch.Tensor, key: tuple, read: Callable[[], tuple]) -> tuple:
        """`read()` (values of `source` the host needs: a wait for the device), made once for the MoE layers of a stack
        call that share `source` and `key` (`shared_reads`, a dict `TaskAwareT5` gives them), else made here."""
        reads = self.shared_reads
        if reads is None:
            return read()
        entry = reads.get(key)
        if entry is None or entry[0] is not source:
            entry = reads[key] = (source, read())
        return entry[1]

    def _real_tokens(self, batch: int, length: int) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor], int]:
        """(the bool [B, L] mask of real (not padding) tokens, their flat indices, their number); the mask and the
        indices are None when every token is real. One read of the mask per stack call (`_shared`)."""
        mask = self.token_mask
        if mask is None:
            return None, None, batch * length
        if mask.dim() != 2 or mask.shape[0] != batch or mask.shape[1] < length:
            raise ValueError(f"MoE token_mask of shape {tuple(mask.shape)} does not cover the layer's input of "
                             f"{batch} sequences of {length} tokens: pass a [batch, length] attention mask")

        def read() -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor], int]:
            real = mask[:, mask.shape[1] - length:].ne(0)
            keep = real.reshape(-1).nonzero().squeeze(1)
            if keep.numel() == batch * length:  # (no padding: the unmasked path, without the gathers)
                return None, None, batch * length
            return real, keep, keep.numel()

        return self._shared(mask, ("real", batch, length), read)

    def _token_task_counts(self, batch: int, length: int, keep: Optional[torch.Tensor], topk_idx: torch.Tensor
                           ) -> Optional[torch.Tensor]:
        """int64 [num_tasks, E]: the top-k choices (before any capacity drop) of the routed tokens of each trained task
        per expert, from `task_ids` (the rows of `UNSEEN_TASK_ID` or another id outside the tasks left out); None
        without task ids that cover the batch (token routing runs without them), and in eval mode (only training
        logs them). Counted on the device without reading a value (no bincount or mask: no wait for it)."""
        ids = self.task_ids
        if not self.training or ids is None or not self.moe.num_tasks or ids.numel() == 0 or batch % ids.numel():
            return None
        rows = ids.to(device=topk_idx.device, dtype=torch.long).reshape(-1).repeat_interleave(batch // ids.numel())
        tasks = rows.repeat_interleave(length)
        if keep is not None:
            tasks = tasks.index_select(0, keep)
        cells = self.moe.num_tasks * self.moe.num_experts
        trained = tasks.ge(0) & tasks.lt(self.moe.num_tasks)
        slots = torch.where(trained[:, None], tasks[:, None] * self.moe.num_experts + topk_idx.long(), cells)
        counts = torch.zeros(cells + 1, dtype=torch.long, device=slots.device)  # (the last: untrained tasks')
        counts.index_add_(0, slots.reshape(-1), torch.ones_like(slots).reshape(-1))
        return counts[:cells].view(self.moe.num_tasks, self.moe.num_experts)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """The experts' output for `hidden` [B, L, d_model], same shape, routed as `moe.routing` says; the call's
        aux losses and routing statistics are left in `aux`."""
        batch, length, d_model = hidden.shape
        real, keep, real_count = self._real_tokens(batch, length)  # padding is routed nowhere
        if self.moe.routing == "task":
            return self._forward_task(hidden, real, real_count)
        x = hidden.reshape(-1, d_model)
        if keep is not None:
            x = x.index_select(0, keep)
        n = x.shape[0]
        acc = routing_dtype(x.dtype)
        logits = nn.functional.linear(x.to(acc), self.router.weight.to(acc))
        if self.moe.routing == "hybrid":
            task_rows, any_unseen = self._row_task_ids(batch, hidden.device)
            task_logits = self._task_logits(task_rows, any_unseen).repeat_interleave(length, dim=0)
            logits = logits + (task_logits if keep is None else task_logits.index_select(0, keep))
        backend = self.moe.backend
        routed = route(logits, self.moe.top_k, score=self.moe.score, renormalize=self.moe.renormalize,
                       backend=backend)
        factor = self.moe.capacity_factor if self.training else self.moe.eval_capacity_factor
        capacity = None if self.moe.dropless else expert_capacity(n, self.moe.num_experts, self.moe.top_k,
                                                                   factor, self.moe.min_capacity)
        plan = plan_dispatch(routed.topk_idx, self.moe.num_experts, capacity, backend=backend, check_ids=False)
        rows = permute(x, plan, backend=backend)
        seg = plan.segments
        outputs = [self._expert(e)(rows[seg[e]:seg[e + 1]]).to(x.dtype) for e in range(self.moe.num_experts)]
        out = combine(torch.cat(outputs), plan, routed.gates, backend=backend)
        self.aux = {
            "load_balancing": load_balancing_loss(routed.counts, routed.prob_sums, n, self.moe.top_k),
            "z_loss": router_z_loss(routed.lse),
            "counts": routed.counts.detach(),
            "task_counts": self._token_task_counts(batch, length, keep, routed.topk_idx),
            "num_dropped": n * self.moe.top_k - plan.num_rows,
            "dropped": (n * self.moe.top_k - plan.num_rows) / max(1, n * self.moe.top_k),
            "choices": n * self.moe.top_k,
        }
        if keep is not None:
            out = out.new_zeros(batch * length, d_model).index_copy(0, keep, out)
        return out.view(batch, length, d_model)

    def _forward_task(self, hidden: torch.Tensor, real: Optional[torch.Tensor], real_count: int) -> torch.Tensor:
        """Task-MoE fast path: group sequences by task; each expert runs once on the rows of its tasks.

        Experts are called in id order, each exactly once (on zero rows when no task of the batch uses it),
        so the module call order is the same on every rank (ZeRO-3 gathers parameters per module call).
        Padding runs through its row's experts too (there is no capacity to take, and a real token's output does
        not depend on it); the aux statistics count the `real` tokens only (`real_count` of them).
        """
        batch, length, d_model = hidden.shape
        task_rows, any_unseen = self._row_task_ids(batch, hidden.device)
        if batch * length == 0:
            return self._forward_no_tokens(hidden, task_rows, any_unseen)
        present, inverse, sizes, order = self._shared(self.task_ids, ("tasks", batch), lambda: _task_groups(task_rows))
        logits = self._task_logits(present, any_unseen)
        routed = route(logits, self.moe.top_k, score=self.moe.score, renormalize=self.moe.renormalize,
                       backend="reference")  # a [tasks, E] table: no kernel launch is worth it
        choice = routed.topk_idx.tolist()
        self._check_held([e for row in choice for e in row])  # (the loop below visits held experts only)
        src = (hidden if order is None else hidden.index_select(0, order)).reshape(-1, d_model)
        bounds = [0]
        for rows in sizes:
            bounds.append(bounds[-1] + rows * length)
        outs: List[Optional[torch.Tensor]] = [None] * len(sizes)
        acc = torch.promote_types(hidden.dtype, torch.float32)  # the gate-weighted sum: fp32, fp64 for fp64 inputs
        for e in self.expert_ids:
            users = [(s, row.index(e)) for s, row in enumerate(choice) if e in row]
            if not users:
                unused = self._expert(e)(src[:0]).sum().to(hidden.dtype)  # a zero that keeps e in the graph
                outs[0] = unused if outs[0] is None else outs[0] + unused
                continue
            x, position = _gather_spans(src, [(bounds[s], bounds[s + 1]) for s, _ in users])
            y = self._expert(e)(x).to(acc)
            for s, j in users:
                start = position[bounds[s]]
                part = y[start:start + bounds[s + 1] - bounds[s]] * routed.gates[s, j]
                outs[s] = part if outs[s] is None else outs[s] + part
        out = torch.cat([o.to(hidden.dtype) for o in outs]) if len(outs) > 1 else outs[0].to(hidden.dtype)
        out = out.view(batch, length, d_model)
        if order is not None:
            out = torch.empty_like(out).index_copy_(0, order, out)
        if real is None:
            tokens = torch.tensor(sizes, dtype=torch.float32).to(hidden.device, non_blocking=True) * length
            n = batch * length
        else:
            tokens = hidden.new_zeros(len(sizes), dtype=torch.float32).index_add_(0, inverse, real.sum(1).float())
            n = real_count
        probs = torch.softmax(logits, -1) if self.moe.score == "softmax" else torch.sigmoid(logits)
        counts = torch.zeros_like(probs).scatter_(1, routed.topk_idx.long(), 1.0)
        task_counts = None
        if self.training:  # (UNSEEN_TASK_ID has no row in task_counts: its rows add zeros to row 0)
            trained = present.ge(0)[:, None]
            task_counts = probs.new_zeros(self.moe.num_tasks, self.moe.num_experts).index_add_(
                0, present.clamp(min=0), torch.where(trained, counts * tokens[:, None], 0.0)).to(torch.int64)
        self.aux = {
            "load_balancing": load_balancing_loss((counts * tokens[:, None]).sum(0), (probs * tokens[:, None]).sum(0),
                                                  n, self.moe.top_k),
            "z_loss": (tokens * routed.lse ** 2).sum() / max(1, n),
            "counts": (counts * tokens[:, None]).sum(0).to(torch.int64),
            "task_counts": task_counts,
            "num_dropped": 0,
            "dropped": 0.0,
            "choices": n * self.moe.top_k,
        }
        return out

    def _forward_no_tokens(self, hidden: torch.Tensor, task_rows: torch.Tensor, any_unseen: bool) -> torch.Tensor:
        """Task routing of a batch without tokens (no rows, or rows of length 0): the empty output and zero aux
        losses, as token routing gives; every expert and the rows' gates stay in the graph (for ZeRO's hooks)."""
        zero = self._task_logits(task_rows, any_unseen).sum() * 0.0
        self.aux = {"load_balancing": zero, "z_loss": zero.clone(), "num_dropped": 0, "dropped": 0.0, "choices": 0,
                    "counts": torch.zeros(self.moe.num_experts, dtype=torch.int64, device=hidden.device),
                    "task_counts": torch.zeros(self.moe.num_tasks, self.moe.num_experts, dtype=torch.int64,
                                               device=hidden.device)}
        return sum(self._expert(e)(hidden).to(hidden.dtype) for e in self.expert_ids)


def _task_groups(task_rows: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, List[int], Optional[torch.Tensor]]:
    """(the tasks present in `task_rows` [B], sorted; each row's index among them; each one's number of rows; the
    stable order that groups the rows by task, None when they are grouped already): worked out on the host from one
    read of `task_rows`, the tensors copied back without waiting."""
    rows = task_rows.tolist()
    present = sorted(set(rows))
    position = {task: i for i, task in enumerate(present)}
    inverse = [position[task] for task in rows]
    sizes = [0] * len(present)
    for i in inverse:
        sizes[i] += 1
    order = None if inverse == sorted(inverse) else sorted(range(len(rows)), key=inverse.__getitem__)  # (stable)

    def upload(values: List[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long).to(task_rows.device, non_blocking=True)

    return upload(present), upload(inverse), sizes, None if order is None else upload(order)


def _gather_spans(src: torch.Tensor, spans: List[Tuple[int, int]]) -> Tuple[torch.Tensor, Dict[int, int]]:
    """Rows of the [start, end) spans (sorted, touching spans read as one view) and where each span starts."""
    merged: List[List[int]] = []
    for a, b in sorted(spans):
        if merged and merged[-1][1] == a:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    x = src[merged[0][0]:merged[0][1]] if len(merged) == 1 else torch.cat([src[a:b] for a, b in merged])
    position, pos = {}, 0
    for a, b in merged:
        for span_start, _ in spans:
            if a <= span_start < b:
                position[span_start] = pos + span_start - a
        pos += b - a
    return x, position

