"""One task of a task-routed MoE T5 as a plain dense `T5ForConditionalGeneration`.

Under task routing every token of a task goes through the same k experts per MoE layer (the top_k of the task's
gate row), each scaled by the same gate: the task's gate row routed (`route`) as the layer routes it — the k
experts' softmax or sigmoid scores renormalised to sum to 1 with `renormalize: true` (the default for k > 1), the
raw scores otherwise (the default for top-1, Switch's convention). An expert is the FFN T5 would have in that slot
(`T5DenseActDense` or `T5DenseGatedActDense`, same activation and dropout; layer norm, dropout and residual are
the `T5LayerFF`'s either way): `wo(f(x))`, with f acting unit by unit on the d_ff units of the bias-free `wi`
(`act(wi x)`, or `act(wi_0 x) · wi_1 x` gated). The layer's output Σ_j g_j · wo_j(f_j(x)) is then one FFN of width
k·d_ff: its `wi` (`wi_0`, `wi_1`) the k experts' stacked along d_ff, its `wo` theirs side by side, each times its
gate. T5's config has one d_ff for every layer, so for k > 1 the model's dense FFNs are zero-padded to k·d_ff: zero
rows of `wi` (`wi_0`, `wi_1`) and zero columns of `wo`, whose units add exactly 0 to every output (a zero column
of `wo` times act(0), finite for every T5 activation). The task's sub-network is so exactly a T5 (bit for bit for
top-1 with gate 1; else up to fp32 rounding of the gates' products and of the order `wo` sums its units in), which
`AutoModelForSeq2SeqLM.from_pretrained` loads with no t2t-mtl code: `dense_t5` builds it from the sub-network
`extract_task_subnetwork` gives, `task_routes` says which experts and gates each MoE layer gives, `zero_padding`
what the padding adds, and `dense_blocker` why a model has no such form (token and hybrid routing pick experts per
token).
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional

import torch
from transformers import T5ForConditionalGeneration

from t2t_kernels.moe import route
from t2t_mtl.model.moe import TaskAwareT5, moe_blocks
from t2t_mtl.model.moe_config import MoEConfig, MoEConfigError
from t2t_mtl.model.moe_layer import routing_dtype
from t2t_mtl.model.t5 import unfilled_model, untie_head_like

__all__ = ["Routes", "dense_blocker", "dense_t5", "task_routes", "zero_padding"]

#: {MoE layer: {"experts": the ids of the k experts its route picks, best first; "gates": their gates}}
#: (`task_routes`); the dense FFN holds the experts' units in that order
Routes = Dict[str, Dict[str, List[Any]]]

_FFN = ".DenseReluDense."


def dense_blocker(moe: MoEConfig) -> Optional[str]:
    """Why one task's sub-network of a model with MoE settings `moe` is not a plain dense T5 (None: it is — task
    routing)."""
    if moe.routing != "task":
        return (f"{moe.routing} routing picks each token's experts by the token too, so a task's tokens may use any "
                f"expert of a layer")
    return None


def task_routes(sub: TaskAwareT5) -> Routes:
    """The route of each MoE layer of `sub`, a task-routed model of one task (the sub-network
    `extract_task_subnetwork` gives), as its forward works it out (its gate row in the routing dtype, `route` with
    the model's top_k, score and renormalisation). MoEConfigError for a model with other routing or other tasks."""
    moe = _one_task_routed(sub)
    routes = {}
    for layer, block in moe_blocks(sub):
        weight = block.task_gate.weight
        routed = route(weight[:1].detach().to(routing_dtype(weight.dtype)), moe.top_k, score=moe.score,
                       renormalize=moe.renormalize, backend="reference")
        routes[layer] = {"experts": routed.topk_idx[0].tolist(), "gates": routed.gates[0].tolist()}
    return routes


def zero_padding(sub: TaskAwareT5) -> Optional[Dict[str, Any]]:
    """What `dense_t5(sub)` adds to hold top_k experts per MoE layer: {"layers": the dense FFNs padded with zeros,
    "d_ff": their width, "padded_d_ff": top_k · d_ff, "zero_weights": how many zero weights that adds (each one
    multiply-add per token that changes no output)}; None where nothing is padded (top-1, or every FFN an MoE
    layer)."""
    config, k = sub.config, sub.moe_config.top_k
    moe_layers = dict(moe_blocks(sub))
    layers = [f"{stack}.{i}" for stack in ("encoder", "decoder") for i in range(len(getattr(sub, stack).block))
              if f"{stack}.{i}" not in moe_layers]
    if k == 1 or not layers:
        return None
    per_layer = (k - 1) * config.d_ff * config.d_model * (3 if config.is_gated_act else 2)
    return {"layers": layers, "d_ff": config.d_ff, "padded_d_ff": k * config.d_ff,
            "zero_weights": per_layer * len(layers)}


def dense_t5(sub: TaskAwareT5, *, routes: Optional[Routes] = None) -> T5ForConditionalGeneration:
    """`sub`, the sub-network of one task of a task-routed model (`extract_task_subnetwork`), as a plain T5 with the
    same outputs and a d_ff of top_k times the model's: each MoE layer's FFN holds the k experts of its route
    (`task_routes(sub)`; `routes`: those, where the caller has worked them out already), in the route's order, each
    expert's `wo` times its gate; every other FFN is its own, zero-padded (`zero_padding`). The config loses its
    `moe` section. The T5 is built without a random init (`unfilled_model`), then filled with those weights alone.
    It takes no task ids: it answers every input as that task. MoEConfigError for a model with other routing or
    other tasks (`task_routes`), or whose route picks an expert it does not hold."""
    moe = _one_task_routed(sub)
    routes = task_routes(sub) if routes is None else routes
    blocks = dict(moe_blocks(sub))
    held = {layer: block.expert_ids for layer, block in blocks.items()}
    if sorted(routes) != sorted(blocks) or any(not set(routes[layer]["experts"]) <= set(held[layer])
                                               or len(routes[layer]["experts"]) != moe.top_k for layer in blocks):
        raise MoEConfigError(f"the task's routes {routes} do not fit the model's MoE layers, which hold experts "
                             f"{held} (a layer's route picks top_k={moe.top_k} experts it holds): pass the "
                             f"sub-network extract_task_subnetwork gives, with its task_routes")
    config = copy.deepcopy(sub.config)
    del config.moe
    config.architectures = ["T5ForConditionalGeneration"]
    config.d_ff = moe.top_k * sub.config.d_ff
    dense = unfilled_model(T5ForConditionalGeneration, config, sub.dtype, sub.device)  # (every weight loaded below)
    untie_head_like(dense, sub)
    dense.generation_config = copy.deepcopy(sub.generation_config)
    source = sub.state_dict()
    state = {}
    for key, value in dense.state_dict().items():
        head, found, name = key.partition(_FFN)
        layer = _layer_name(head) if found else None
        if layer in routes:
            state[key] = _experts_side_by_side(source, head, name, blocks[layer].expert_ids, routes[layer])
        elif found:
            state[key] = _zero_padded(source[key], value.shape)
        else:
            state[key] = source[key]
    dense.load_state_dict(state)  # strict: every weight of the T5 comes from the sub-network
    dense.train(sub.training)
    return dense


def _one_task_routed(sub: TaskAwareT5) -> MoEConfig:
    """The MoE settings of `sub`; MoEConfigError unless it is a task-routed model of one task."""
    moe = sub.moe_config
    why = dense_blocker(moe)
    if why is not None:
        raise MoEConfigError(f"a task's sub-network is a plain T5 only under task routing: {why}")
    if moe.num_tasks != 1:
        raise MoEConfigError(f"a plain T5 serves one task: pass the sub-network of one task "
                             f"(extract_task_subnetwork), not a model of tasks {moe.task_names}")
    return moe


def _experts_side_by_side(source: Dict[str, torch.Tensor], head: str, name: str, held: List[int],
                          routed: Dict[str, List[Any]]) -> torch.Tensor:
    """The weight `name` ('wi.weight', 'wi_0.weight', 'wi_1.weight', 'wo.weight') of the FFN holding the routed
    experts of the MoE layer at `head` (whose experts are `held`): their `wi` stacked along d_ff (rows), their `wo`
    side by side (columns), each times its gate (in fp64, rounded once)."""
    weights = [source[f"{head}{_FFN}experts.{held.index(expert)}.{name}"] for expert in routed["experts"]]
    if name != "wo.weight":
        return torch.cat(weights, 0)
    return torch.cat([(w.double() * gate).to(w.dtype) for w, gate in zip(weights, routed["gates"])], 1)


def _zero_padded(weight: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """A dense FFN's weight `weight` in the top-left corner of zeros of `shape`: its `wi` (`wi_0`, `wi_1`) with zero
    rows below, its `wo` with zero columns to the right (the same weight where the shapes agree)."""
    if weight.shape == shape:
        return weight
    padded = weight.new_zeros(shape)
    padded[:weight.shape[0], :weight.shape[1]] = weight
    return padded


def _layer_name(head: str) -> str:
    """'encoder.3' of a state-dict key head 'encoder.block.3.layer.1'."""
    stack, _, index = head.split(".")[:3]
    return f"{stack}.{index}"
