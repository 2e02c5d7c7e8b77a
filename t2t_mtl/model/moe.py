"""Task-aware mixture-of-experts FFNs for T5.

`MoEFeedForward` replaces the `DenseReluDense` of a `T5LayerFF` (layer norm, dropout and residual stay
T5's) with E experts of the same shape. Routing modes:
- `token`: a linear router over each token (fused router kernel → dispatch plan → permute → experts on
  contiguous segments → gate-weighted combine);
- `task` (Task-MoE, Kudugunta et al. 2021): the route of every token is the top-k of its task's gate row,
  so a batch is grouped by task and each task's segment runs through its k experts — no per-token router,
  no sort; a task can then be served by its experts alone (`extract_task_subnetwork`);
- `hybrid`: token router logits plus the task's gate row (token representation + task embedding).
Aux losses per block, over the real tokens (padding takes no capacity and is left out; `token_masks`): Switch
load balancing E·Σ_e f_e·P_e and the router z-loss mean(logsumexp²);
`TaskAwareT5.forward(..., task_ids=...)` adds `aux_loss_coef·Σ lb + z_loss_coef·Σ z` to `loss`.

The `model.moe` config keys are `MoEConfig`'s fields. `task_ids` (LongTensor [B]) index `task_names`;
`UNSEEN_TASK_ID` (-1) marks a task the model was not trained on (zero-shot evaluation of held-out tasks),
routed as `unseen_task_routing` says: by the mean of the trained tasks' gate rows, like a named trained
task, or refused.
Every expert takes part in every forward (on zero rows when unused), so every parameter gets a gradient on
every data-parallel rank — what DeepSpeed ZeRO's gradient hooks need. Experts are replicated on each rank
(no expert parallelism).
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from transformers import T5Config, T5ForConditionalGeneration
from transformers.modeling_outputs import Seq2SeqLMOutput
from transformers.models.t5.modeling_t5 import T5DenseActDense, T5DenseGatedActDense

from t2t_kernels.moe import (combine, expert_capacity, load_balancing_loss, permute, plan_dispatch, route,
                         router_z_loss)
from t2t_mtl.config import unknown_key_message
from t2t_mtl.model.lora import has_lora
from t2t_mtl.model.t5 import pretrained_t5_config
from t2t_mtl.model.task_routing import (UNSEEN_TASK_ID, TaskConditioned, TaskConditionedT5, routing_task_id,
                                        set_task_ids)

__all__ = [
    "MoEConfig", "MoEConfigError", "MissingTaskIdsError", "MoEFeedForward", "TaskAwareT5",
    "TaskAwareSeq2SeqLMOutput", "UNSEEN_TASK_ID", "UNSEEN_TASK_ROUTINGS", "convert_to_moe",
    "extract_task_subnetwork", "set_task_ids", "load_t5_or_moe", "moe_blocks", "routing_task_id", "token_masks",
]

ROUTING_MODES = ("token", "task", "hybrid")
LAYER_CHOICES = ("both", "encoder", "decoder")
#: `unseen_task_routing` keywords (any other value names a trained task)
UNSEEN_TASK_ROUTINGS = ("error", "mean")


class MoEConfigError(ValueError):
    """A `model.moe` key or value is invalid, or the model cannot do what was asked of its MoE layers."""


class MissingTaskIdsError(ValueError):
    """A task-routed MoE layer ran without usable `task_ids`: none, a wrong count, an id outside
    [-1, num_tasks), or `UNSEEN_TASK_ID` with `unseen_task_routing: error`."""


@dataclass
class MoEConfig:
    """The `model.moe` section.

    num_experts: experts per MoE layer; top_k: experts per token (task); every: an MoE FFN in every k-th
    layer (layers every-1, 2·every-1, ...); layers: "both" | "encoder" | "decoder"; capacity_factor /
    eval_capacity_factor: rows per expert = ceil(N·k/E·factor) (≥ min_capacity) in training / eval;
    dropless: never drop (capacity ignored); routing: "token" | "task" | "hybrid"; score: "softmax" |
    "sigmoid"; renormalize: gates renormalised over the top-k (None → k > 1); aux_loss_coef, z_loss_coef:
    weights of the load-balancing and z losses; task_names: the task of each task id (needed by task and
    hybrid routing); unseen_task_routing: how task and hybrid routing route a task the model was not
    trained on (task id `UNSEEN_TASK_ID`, e.g. a held-out task in zero-shot evaluation) — "mean" (the mean
    of the trained tasks' gate rows, used like a task's row), a trained task's name (route exactly like that
    task; the keywords win over a task of the same name) or "error" (refuse); upcycle: when converting a dense
    model, initialise every expert from its FFN; backend: "auto" | "triton" | "reference" for the routing
    kernels; expert_ids: which experts a layer holds ({"encoder.1": [3, 5]}, written by
    `extract_task_subnetwork`; absent = all).
    """

    num_experts: int = 8
    top_k: int = 2
    every: int = 2
    layers: str = "both"
    capacity_factor: float = 1.25
    eval_capacity_factor: float = 2.0
    min_capacity: int = 4
    dropless: bool = False
    routing: str = "token"
    score: str = "softmax"
    renormalize: Optional[bool] = None
    aux_loss_coef: float = 0.01
    z_loss_coef: float = 0.001
    task_names: Optional[List[str]] = None
    unseen_task_routing: str = "mean"
    upcycle: bool = True
    backend: str = "auto"
    expert_ids: Dict[str, List[int]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> "MoEConfig":
        """Validate `model.moe`; unknown keys and bad values raise `MoEConfigError` naming the key."""
        data = {} if data is None else _moe_mapping(data)
        unknown = unknown_key_message("model.moe", data, [f.name for f in dataclasses.fields(cls)])
        if unknown:
            raise MoEConfigError(unknown)
        cfg = cls(**data)
        cfg.validate()
        return cfg

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def num_tasks(self) -> int:
        return len(self.task_names or [])

    def validate(self) -> None:
        def bad(key: str, why: str) -> None:
            raise MoEConfigError(f"model.moe.{key}={getattr(self, key)!r}: {why}")

        # types first (YAML gives strings for typos like `capacity_factor: 1,25`), so the range checks below
        # never compare a string with a number and a string never passes as a true flag
        for key in ("capacity_factor", "eval_capacity_factor", "aux_loss_coef", "z_loss_coef"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                bad(key, "must be a number")
        if isinstance(self.min_capacity, bool) or not isinstance(self.min_capacity, int):
            bad("min_capacity", "must be an integer >= 0")
        for key in ("dropless", "upcycle"):
            if not isinstance(getattr(self, key), bool):
                bad(key, "must be true or false")
        if self.renormalize is not None and not isinstance(self.renormalize, bool):
            bad("renormalize", "must be true, false or null (null: renormalise when top_k > 1)")
        if self.task_names is not None and (not isinstance(self.task_names, (list, tuple))
                                            or not all(isinstance(t, str) for t in self.task_names)):
            bad("task_names", "must be a list of task names")
        if not isinstance(self.expert_ids, dict):
            bad("expert_ids", "must be a mapping {layer: [expert ids]}")
        if not _is_int(self.num_experts) or self.num_experts < 1:
            bad("num_experts", "must be an integer >= 1")
        if not _is_int(self.top_k) or not 1 <= self.top_k <= self.num_experts:
            bad("top_k", f"must be an integer in [1, num_experts={self.num_experts}]")
        if not _is_int(self.every) or self.every < 1:
            bad("every", "must be an integer >= 1 (1 = every layer)")
        if self.layers not in LAYER_CHOICES:
            bad("layers", f"use one of {LAYER_CHOICES}")
        if self.routing not in ROUTING_MODES:
            bad("routing", f"use one of {ROUTING_MODES}")
        if self.score not in ("softmax", "sigmoid"):
            bad("score", "use 'softmax' or 'sigmoid'")
        if self.backend not in ("auto", "triton", "reference"):
            bad("backend", "use 'auto', 'triton' or 'reference'")
        for key in ("capacity_factor", "eval_capacity_factor"):
            if not 0 < getattr(self, key) < math.inf:
                bad(key, "must be a finite number > 0 (for no capacity limit set dropless: true)")
        for key in ("aux_loss_coef", "z_loss_coef", "min_capacity"):
            if not 0 <= getattr(self, key) < math.inf:
                bad(key, "must be a finite number >= 0")
        if self.routing in ("task", "hybrid") and not self.task_names:
            bad("task_names", f"routing={self.routing!r} needs the list of training task names "
                              "(task_ids index it)")
        if self.task_names is not None and len(set(self.task_names)) != len(self.task_names):
            bad("task_names", "task names must be unique")
        self._validate_unseen_task_routing()
        if self.expert_ids and self.routing != "task":
            bad("expert_ids", f"a layer holds a subset of the experts only with routing='task' (with "
                              f"{self.routing!r} routing any token may pick any expert); remove expert_ids")
        for layer, ids in self.expert_ids.items():
            if (not isinstance(ids, (list, tuple)) or not all(_is_int(i) and 0 <= i < self.num_experts for i in ids)
                    or len(set(ids)) != len(ids) or len(ids) < self.top_k):
                raise MoEConfigError(f"model.moe.expert_ids[{layer!r}]={ids!r}: needs a list of >= top_k={self.top_k} "
                                     f"distinct integer ids in [0, {self.num_experts})")

    def _validate_unseen_task_routing(self) -> None:
        value, names = self.unseen_task_routing, self.task_names or []
        if value in UNSEEN_TASK_ROUTINGS or (isinstance(value, str) and value in names):
            return
        close = difflib.get_close_matches(value, [*UNSEEN_TASK_ROUTINGS, *names], n=1) if isinstance(value, str) else []
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise MoEConfigError(f"model.moe.unseen_task_routing={value!r}: use 'mean', 'error' or the name of a "
                             f"trained task {names}{hint}")

    def task_index(self, task: Union[int, str]) -> int:
        """The id of a task given by name or id."""
        names = self.task_names or []
        if isinstance(task, str):
            if task not in names:
                close = difflib.get_close_matches(task, names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise MoEConfigError(f"task {task!r} is not one of the MoE model's tasks {names}{hint}")
            return names.index(task)
        if not 0 <= int(task) < len(names):
            raise MoEConfigError(f"task id {task} out of range: the model knows {len(names)} tasks {names}")
        return int(task)


def _moe_mapping(value: Any) -> Dict[str, Any]:
    """`value` as a dict of `model.moe` keys; anything but a mapping is a `MoEConfigError`."""
    if not isinstance(value, Mapping):
        raise MoEConfigError(f"model.moe must be a mapping such as {{num_experts: 8, top_k: 2}}, got {value!r}")
    return dict(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _routing_dtype(dtype: torch.dtype) -> torch.dtype:
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
    tokens), `counts` (assignments per expert) and `dropped` (fraction of (token, slot) pairs over capacity).
    """

    token_mask: Optional[torch.Tensor] = None

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
        acc = _routing_dtype(weight.dtype)
        if self.moe.unseen_task_routing == "mean":
            return weight.to(acc).mean(0).to(weight.dtype).to(acc)
        return weight[self.moe.task_index(self.moe.unseen_task_routing)].to(acc)

    def _task_logits(self, ids: torch.Tensor, any_unseen: bool) -> torch.Tensor:
        """Gate rows [len(ids), E] (fp32; fp64 for an fp64 gate) of task ids, `UNSEEN_TASK_ID` among them when
        `any_unseen`."""
        rows = self.task_gate(ids.clamp(min=0)).to(_routing_dtype(self.task_gate.weight.dtype))
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

    def _real_tokens(self, batch: int, length: int) -> Optional[torch.Tensor]:
        """The bool [B, L] mask of real (not padding) tokens, or None when every token is real."""
        mask = self.token_mask
        if mask is None:
            return None
        if mask.dim() != 2 or mask.shape[0] != batch or mask.shape[1] < length:
            raise ValueError(f"MoE token_mask of shape {tuple(mask.shape)} does not cover the layer's input of "
                             f"{batch} sequences of {length} tokens: pass a [batch, length] attention mask")
        real = mask[:, mask.shape[1] - length:].ne(0)
        return None if bool(real.all()) else real  # (no padding: the unmasked path, without the gathers)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        batch, length, d_model = hidden.shape
        real = self._real_tokens(batch, length)
        if self.moe.routing == "task":
            return self._forward_task(hidden, real)
        x = hidden.reshape(-1, d_model)
        keep = None if real is None else real.reshape(-1).nonzero().squeeze(1)  # padding is routed nowhere
        if keep is not None:
            x = x.index_select(0, keep)
        n = x.shape[0]
        acc = _routing_dtype(x.dtype)
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
            "dropped": (n * self.moe.top_k - plan.num_rows) / max(1, n * self.moe.top_k),
        }
        if keep is not None:
            out = out.new_zeros(batch * length, d_model).index_copy(0, keep, out)
        return out.view(batch, length, d_model)

    def _forward_task(self, hidden: torch.Tensor, real: Optional[torch.Tensor]) -> torch.Tensor:
        """Task-MoE fast path: group sequences by task; each expert runs once on the rows of its tasks.

        Experts are called in id order, each exactly once (on zero rows when no task of the batch uses it),
        so the module call order is the same on every rank (ZeRO-3 gathers parameters per module call).
        Padding runs through its row's experts too (there is no capacity to take, and a real token's output does
        not depend on it); the aux statistics count the `real` tokens only.
        """
        batch, length, d_model = hidden.shape
        task_rows, any_unseen = self._row_task_ids(batch, hidden.device)
        if batch * length == 0:
            return self._forward_no_tokens(hidden, task_rows, any_unseen)
        present, inverse = torch.unique(task_rows, return_inverse=True)
        logits = self._task_logits(present, any_unseen)
        routed = route(logits, self.moe.top_k, score=self.moe.score, renormalize=self.moe.renormalize,
                       backend="reference")  # a [tasks, E] table: no kernel launch is worth it
        choice = routed.topk_idx.tolist()
        self._check_held([e for row in choice for e in row])  # (the loop below visits held experts only)
        sizes = torch.bincount(inverse, minlength=len(present)).tolist()
        grouped = bool((inverse[1:] >= inverse[:-1]).all())
        order = None if grouped else torch.argsort(inverse, stable=True)
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
            tokens = torch.tensor(sizes, dtype=torch.float32, device=hidden.device) * length
            n = batch * length
        else:
            tokens = hidden.new_zeros(len(sizes), dtype=torch.float32).index_add_(0, inverse, real.sum(1).float())
            n = int(real.sum())
        probs = torch.softmax(logits, -1) if self.moe.score == "softmax" else torch.sigmoid(logits)
        counts = torch.zeros_like(probs).scatter_(1, routed.topk_idx.long(), 1.0)
        self.aux = {
            "load_balancing": load_balancing_loss((counts * tokens[:, None]).sum(0), (probs * tokens[:, None]).sum(0),
                                                  n, self.moe.top_k),
            "z_loss": (tokens * routed.lse ** 2).sum() / max(1, n),
            "counts": (counts * tokens[:, None]).sum(0).to(torch.int64),
            "dropped": 0.0,
        }
        return out

    def _forward_no_tokens(self, hidden: torch.Tensor, task_rows: torch.Tensor, any_unseen: bool) -> torch.Tensor:
        """Task routing of a batch without tokens (no rows, or rows of length 0): the empty output and zero aux
        losses, as token routing gives; every expert and the rows' gates stay in the graph (for ZeRO's hooks)."""
        zero = self._task_logits(task_rows, any_unseen).sum() * 0.0
        self.aux = {"load_balancing": zero, "z_loss": zero.clone(), "dropped": 0.0,
                    "counts": torch.zeros(self.moe.num_experts, dtype=torch.int64, device=hidden.device)}
        return sum(self._expert(e)(hidden).to(hidden.dtype) for e in self.expert_ids)


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


def moe_blocks(model: nn.Module, stacks: Sequence[str] = ("encoder", "decoder")
               ) -> Iterator[Tuple[str, MoEFeedForward]]:
    """(layer name "encoder.i"/"decoder.i", block) for every MoE FFN of a T5 model (of the given stacks)."""
    for stack_name in stacks:
        stack = getattr(model, stack_name)
        for i, block in enumerate(stack.block):
            ffn = block.layer[-1].DenseReluDense
            if isinstance(ffn, MoEFeedForward):
                yield f"{stack_name}.{i}", ffn


@contextmanager
def token_masks(model: nn.Module, encoder: Optional[torch.Tensor] = None,
                decoder: Optional[torch.Tensor] = None) -> Iterator[None]:
    """Within the block, the MoE layers of `model`'s encoder / decoder route only the tokens where `encoder` /
    `decoder` ([B, L], nonzero = a real token) is set, for a stack that gets no 2-D attention mask: a packed
    batch's (4-D masks; its segment id 0 is padding), or a decoder run on labels' padded positions (-100) without
    a decoder_attention_mask. A stack's own 2-D attention mask wins. Nothing to do for a model without MoE layers."""
    if not isinstance(model, TaskAwareT5):
        yield
        return
    before = dict(model.moe_token_masks)
    model.moe_token_masks.update({k: v for k, v in (("encoder", encoder), ("decoder", decoder)) if v is not None})
    try:
        yield
    finally:
        model.moe_token_masks = before


@dataclass
class TaskAwareSeq2SeqLMOutput(Seq2SeqLMOutput):
    """`Seq2SeqLMOutput` plus `aux_loss` (the weighted MoE aux losses, already included in `loss`)."""

    aux_loss: Optional[torch.FloatTensor] = None


def tokens_before_the_end(decoder_ids: torch.Tensor, eos_token_id: Union[None, int, Sequence[int]]) -> torch.Tensor:
    """bool [B, t]: True where no end-of-sequence token precedes the position in its row (position 0, the decoder
    start token, never ends a row; the end-of-sequence token itself is a real token)."""
    if eos_token_id is None:
        return torch.ones_like(decoder_ids, dtype=torch.bool)
    ids = torch.tensor(eos_token_id if isinstance(eos_token_id, (list, tuple)) else [eos_token_id],
                       device=decoder_ids.device)
    ends = torch.isin(decoder_ids, ids)
    ends[:, 0] = False
    ended_before = ends.long().cumsum(1) - ends.long()
    return ended_before.eq(0)


class TaskAwareT5(TaskConditionedT5):
    """T5 whose every `moe.every`-th FFN is a `MoEFeedForward`; configured by `config.moe` (a dict).

    `forward(..., task_ids=None)` sets the task ids on the MoE blocks, runs T5, and adds
    `aux_loss = aux_loss_coef·Σ load_balancing + z_loss_coef·Σ z_loss` to `loss` when labels are given.
    `generate(..., task_ids=...)` keeps the ids set for the whole generation. Padding takes no expert capacity and
    no part in the aux losses: each stack gives its MoE blocks its 2-D attention mask (the encoder's
    `attention_mask`, the decoder's `decoder_attention_mask`), else the mask `token_masks` set, else — the
    decoder, when labels are given — the positions whose label is not -100, and in `generate` the tokens fed to
    sequences that have already ended (after their end-of-sequence token).
    """

    def __init__(self, config: T5Config) -> None:
        super().__init__(config)
        self.moe_config = MoEConfig.from_dict(getattr(config, "moe", None))
        moe = self.moe_config
        self.routing_task_names = list(moe.task_names or []) if moe.routing != "token" else None
        for stack_name, stack in (("encoder", self.encoder), ("decoder", self.decoder)):
            if moe.layers not in ("both", stack_name):
                continue
            for i, block in enumerate(stack.block):
                if i % moe.every == moe.every - 1:
                    name = f"{stack_name}.{i}"
                    ffn = MoEFeedForward(config, moe, moe.expert_ids.get(name))
                    for expert in ffn.experts:
                        self._init_weights(expert)
                    ffn.reset_parameters(config.initializer_factor)
                    block.layer[-1].DenseReluDense = ffn
        layers = [name for name, _ in moe_blocks(self)]
        if not layers:
            raise MoEConfigError(f"model.moe.every={moe.every} with layers={moe.layers!r} selects no layer of a "
                                 f"model with {config.num_layers}+{config.num_decoder_layers} layers")
        stray = sorted(set(moe.expert_ids) - set(layers))
        if stray:
            raise MoEConfigError(f"model.moe.expert_ids names {stray}, which are not MoE layers of this model "
                                 f"(its MoE layers: {layers})")
        self.moe_token_masks: Dict[str, torch.Tensor] = {}  # set by `token_masks`
        for stack_name in ("encoder", "decoder"):
            getattr(self, stack_name).register_forward_pre_hook(functools.partial(self._mask_padding, stack_name),
                                                                with_kwargs=True)

    def _mask_padding(self, stack_name: str, stack: nn.Module, args: tuple, kwargs: Dict[str, Any]) -> None:
        """Forward pre-hook of a stack: its MoE blocks get its 2-D attention mask, else `moe_token_masks`'."""
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        if mask is None or mask.dim() != 2:
            mask = self.moe_token_masks.get(stack_name)
        for _, block in moe_blocks(self, (stack_name,)):
            block.token_mask = mask

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        """transformers' step inputs; also marks for the MoE blocks which of the decoder tokens `input_ids` [B, t]
        (the sequences so far) are padding: those after a sequence's end-of-sequence token, fed to finished rows
        while the others decode, which would otherwise take expert capacity from the unfinished rows (the decoder's
        `moe_token_masks` entry, for this step; `generate` restores the masks it found)."""
        eos = getattr(self, "_generation_eos", self.generation_config.eos_token_id)
        self.moe_token_masks["decoder"] = tokens_before_the_end(input_ids, eos)
        return super().prepare_inputs_for_generation(input_ids, *args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any):
        """transformers' `generate`; the end-of-sequence id that marks finished rows is this call's (an
        `eos_token_id` or `generation_config` argument), else the model's."""
        before = dict(self.moe_token_masks)
        config = kwargs.get("generation_config") or self.generation_config
        self._generation_eos = kwargs.get("eos_token_id", config.eos_token_id)
        try:
            return super().generate(*args, **kwargs)
        finally:
            self.moe_token_masks = before
            del self._generation_eos

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, MoEFeedForward):
            module.reset_parameters(self.config.initializer_factor)
        else:
            super()._init_weights(module)

    def moe_aux_loss(self) -> torch.Tensor:
        """aux_loss_coef·Σ load balancing + z_loss_coef·Σ z-loss over the blocks' last forward."""
        total = None
        for _, block in moe_blocks(self):
            if not block.aux:
                continue
            term = self.moe_config.aux_loss_coef * block.aux["load_balancing"] + \
                self.moe_config.z_loss_coef * block.aux["z_loss"]
            total = term if total is None else total + term
        return total if total is not None else torch.zeros((), device=self.device)

    def forward(self, *args: Any, task_ids: Optional[torch.Tensor] = None, **kwargs: Any):
        for _, block in moe_blocks(self):
            block.aux = {}
        labels = kwargs.get("labels")
        labelled = None if labels is None or "decoder" in self.moe_token_masks else labels.ne(-100)
        with token_masks(self, decoder=labelled):
            out = super().forward(*args, task_ids=task_ids, **kwargs)
        aux = self.moe_aux_loss()
        if isinstance(out, tuple):  # return_dict=False: (loss, logits, ...) when labels were given
            return ((out[0] + aux,) + out[1:]) if kwargs.get("labels") is not None else out
        loss = out.loss + aux if out.loss is not None else None
        return TaskAwareSeq2SeqLMOutput(**{**out, "loss": loss, "aux_loss": aux})


def convert_to_moe(model: T5ForConditionalGeneration, moe_cfg: Union[Mapping[str, Any], MoEConfig],
                   task_names: Optional[Sequence[str]] = None) -> TaskAwareT5:
    """A `TaskAwareT5` with the dense model's weights and MoE FFNs in every `every`-th layer.

    With `upcycle` (default) every expert starts as a copy of the FFN it replaces (sparse upcycling);
    otherwise experts are freshly initialised. `task_names` overrides `moe_cfg["task_names"]`.
    An already-converted model is returned unchanged.
    """
    if isinstance(model, TaskAwareT5):
        return model
    if has_lora(model):
        raise MoEConfigError("the model has LoRA adapters, which the MoE model would drop: convert first and add the "
                             "adapters after (as build_model does), or fold them into the weights "
                             "(t2t_mtl.model.lora.merge_lora)")
    data = moe_cfg.to_dict() if isinstance(moe_cfg, MoEConfig) else _moe_mapping(moe_cfg)
    if task_names is not None:  # (a string is kept whole, for `validate` to refuse, not split into letters)
        data["task_names"] = task_names if isinstance(task_names, str) else list(task_names)
    cfg = MoEConfig.from_dict(data)
    config = copy.deepcopy(model.config)
    config.moe = cfg.to_dict()
    config.architectures = ["TaskAwareT5"]
    new = TaskAwareT5(config).to(dtype=model.dtype, device=model.device)
    dense_state = model.state_dict()
    own = new.state_dict()
    state = {}
    for key, value in own.items():
        if key in dense_state:
            state[key] = dense_state[key]
        elif cfg.upcycle and ".DenseReluDense.experts." in key:
            head, tail = key.split(".DenseReluDense.experts.")
            dense_key = f"{head}.DenseReluDense.{tail.split('.', 1)[1]}"
            state[key] = dense_state[dense_key]
        else:
            state[key] = value  # router / task gate / non-upcycled experts keep their fresh init
    new.load_state_dict(state)
    new.train(model.training)
    return new


def extract_task_subnetwork(model: TaskAwareT5, task: Union[int, str], *, unseen: bool = False) -> TaskAwareT5:
    """The sub-network that serves one task of a task-routed model: its top-k experts per layer only.

    The result keeps the task's full gate row (so its gates are unchanged), knows one task (id 0, named as
    in the original) and gives the same outputs for that task as the full model. With `unseen=True`, a task
    name the model was not trained on gets the sub-network of the unseen-task route (`unseen_task_routing`:
    the mean row or a named task's row becomes its row), named `task`, with the full model's outputs for
    `UNSEEN_TASK_ID`. The sub-network routes any other task like its own one (unless the original refuses
    unseen tasks). Token and hybrid routing pick experts per token, so they have no per-task sub-network:
    `MoEConfigError`.
    """
    cfg = model.moe_config
    if cfg.routing != "task":
        raise MoEConfigError(f"extract_task_subnetwork needs model.moe.routing='task'; with {cfg.routing!r} routing "
                             "every token may use any expert, so no expert can be removed for a task")
    if has_lora(model):
        raise MoEConfigError("the model has LoRA adapters, which the sub-network (a plain MoE model) would drop: fold "
                             "them into the weights first (t2t_mtl.model.lora.merge_lora; select_task_adapter for "
                             "per-task adapters), as `t2t-mtl export --task` does")
    name, rows = _served_gate_rows(model, task, unseen)
    chosen = {layer: sorted(route(row[None], cfg.top_k, score=cfg.score, renormalize=cfg.renormalize,
                                  backend="reference").topk_idx[0].tolist())
              for layer, row in rows.items()}
    config = copy.deepcopy(model.config)
    fallback = "error" if cfg.unseen_task_routing == "error" else "mean"  # the mean of its one row
    config.moe = {**cfg.to_dict(), "task_names": [name], "expert_ids": chosen, "unseen_task_routing": fallback}
    sub = TaskAwareT5(config).to(dtype=model.dtype, device=model.device)
    source = model.state_dict()
    state = {}
    old_blocks = dict(moe_blocks(model))
    for key, value in sub.state_dict().items():
        if ".DenseReluDense.task_gate." in key:
            state[key] = rows[_layer_of(key)][None].to(value.dtype)
        elif ".DenseReluDense.experts." in key:
            layer = _layer_of(key)
            head, tail = key.split(".DenseReluDense.experts.")
            local, rest = tail.split(".", 1)
            original = old_blocks[layer].expert_ids.index(chosen[layer][int(local)])
            state[key] = source[f"{head}.DenseReluDense.experts.{original}.{rest}"]
        else:
            state[key] = source[key]
    sub.load_state_dict(state)
    sub.train(model.training)
    return sub


def _served_gate_rows(model: TaskAwareT5, task: Union[int, str], unseen: bool) -> Tuple[str, Dict[str, torch.Tensor]]:
    """(name of the served task, {layer: its gate row in the dtype the layer routes in}) for
    `extract_task_subnetwork`."""
    cfg = model.moe_config
    names = cfg.task_names or []
    if not (unseen and isinstance(task, str) and task not in names):
        tid = cfg.task_index(task)
        return names[tid], {layer: block.task_gate.weight[tid].detach().to(_routing_dtype(block.task_gate.weight.dtype))
                            for layer, block in moe_blocks(model)}
    if cfg.unseen_task_routing == "error":
        raise MoEConfigError(f"task {task!r} is not one of the MoE model's tasks {names} and "
                             "model.moe.unseen_task_routing='error' refuses unseen tasks; set it to 'mean' or to a "
                             "trained task's name")
    return task, {layer: block.unseen_task_row().detach() for layer, block in moe_blocks(model)}


def _layer_of(key: str) -> str:
    stack, _, i = key.split(".")[:3]
    return f"{stack}.{i}"


def load_t5_or_moe(path: str, saved: Optional[Dict[str, Any]] = None, **kwargs: Any) -> T5ForConditionalGeneration:
    """`from_pretrained` that builds a `TaskAwareT5` when the saved config has a `moe` section; `saved`: the config
    dict already read from `path` (None: read it)."""
    config = pretrained_t5_config(path, saved)
    cls = TaskAwareT5 if getattr(config, "moe", None) else T5ForConditionalGeneration
    return cls.from_pretrained(path, config=config, **kwargs)
