"""One task of a top-1 task-routed MoE T5 as a plain dense `T5ForConditionalGeneration`.

Under task routing with `top_k: 1` every token of a task goes through one expert per MoE layer, scaled by one gate:
the task's gate row routed (`route`) as the layer routes it — 1 with `renormalize: true`, the expert's softmax or
sigmoid score otherwise (the default for top-1, Switch's convention). The expert is the FFN T5 would have in that
slot (`T5DenseActDense` or `T5DenseGatedActDense`, same activation and dropout; layer norm, dropout and residual
are the `T5LayerFF`'s either way) and ends in the bias-free linear `wo`, so the MoE layer computes
`gate · wo(f(x)) = (gate · wo)(f(x))`: a dense FFN whose `wo` is the expert's times the gate. The task's
sub-network is then exactly a T5 (bit for bit where the gates are 1, else up to fp32 rounding of the product),
which `AutoModelForSeq2SeqLM.from_pretrained` loads with no t2t-mtl code: `dense_t5` writes it from the
sub-network `extract_task_subnetwork` gives, `task_routes` says which expert and gate each MoE layer gave, and
`dense_blocker` why a model has no such form (top-k > 1 mixes k experts, token or hybrid routing picks experts per
token).
"""
from __future__ import annotations

import copy
from typing import Dict, Optional, Union

import torch
from transformers import T5ForConditionalGeneration

from t2t_kernels.moe import route
from t2t_mtl.model.moe import TaskAwareT5, moe_blocks
from t2t_mtl.model.moe_config import MoEConfig, MoEConfigError
from t2t_mtl.model.moe_layer import routing_dtype

__all__ = ["Routes", "dense_blocker", "dense_t5", "task_routes"]

_EXPERT = ".DenseReluDense.experts.0."

#: {MoE layer: {"expert": the expert id it holds, "gate": the gate its tokens are scaled by}} (`task_routes`)
Routes = Dict[str, Dict[str, Union[int, float]]]


def dense_blocker(moe: MoEConfig) -> Optional[str]:
    """Why one task's sub-network of a model with MoE settings `moe` is not a plain dense T5 (None: it is — task
    routing with top_k 1)."""
    if moe.routing != "task":
        return (f"{moe.routing} routing picks each token's experts by the token too, so a task's tokens may use any "
                f"expert of a layer")
    if moe.top_k != 1:
        return (f"top_k={moe.top_k}: each MoE layer sums {moe.top_k} experts' outputs for the task, weighted by its "
                f"gates, which one T5 feed-forward layer of the model's d_ff cannot hold")
    return None


def task_routes(sub: TaskAwareT5) -> Routes:
    """{MoE layer: {"expert": the expert id it holds, "gate": the gate its tokens are scaled by}} of the
    sub-network of one task under top-1 task routing (`extract_task_subnetwork`); the gate is worked out as the
    layer's forward does (its gate row in the routing dtype, `route` with the model's score and renormalisation)."""
    routes = {}
    for layer, block in moe_blocks(sub):
        weight = block.task_gate.weight
        routed = route(weight[:1].detach().to(routing_dtype(weight.dtype)), 1, score=block.moe.score,
                       renormalize=block.moe.renormalize, backend="reference")
        routes[layer] = {"expert": int(routed.topk_idx[0, 0]), "gate": float(routed.gates[0, 0])}
    return routes


def dense_t5(sub: TaskAwareT5, *, routes: Optional[Routes] = None) -> T5ForConditionalGeneration:
    """`sub`, the sub-network of one task of a top-1 task-routed model (`extract_task_subnetwork`), as a plain T5
    with the same outputs: each MoE layer's expert becomes the layer's FFN, its `wo` times the layer's gate
    (`task_routes(sub)`; `routes`: those, where the caller has worked them out already); the config loses its
    `moe` section. The T5 is built without a random init (on the meta device, then filled with those weights
    alone), tied as T5 ties them. It takes no task ids: it answers every input as that task. MoEConfigError where
    `dense_blocker` names a reason, or for a model that is not one task's sub-network."""
    moe = sub.moe_config
    why = dense_blocker(moe)
    if why is not None:
        raise MoEConfigError(f"a task's sub-network is a plain T5 only under top-1 task routing: {why}")
    held = {layer: block.expert_ids for layer, block in moe_blocks(sub)}
    if moe.num_tasks != 1 or any(len(ids) != 1 for ids in held.values()):
        raise MoEConfigError(f"dense_t5 takes the sub-network of one task (extract_task_subnetwork), not a model of "
                             f"tasks {moe.task_names} holding experts {held}")
    gates = {layer: routed["gate"] for layer, routed in (task_routes(sub) if routes is None else routes).items()}
    config = copy.deepcopy(sub.config)
    del config.moe
    config.architectures = ["T5ForConditionalGeneration"]
    with torch.device("meta"):  # (no random init: every weight is loaded below)
        dense = T5ForConditionalGeneration(config)
    dense = dense.to(dtype=sub.dtype).to_empty(device=sub.device)
    dense.tie_weights()  # (to_empty gives each name of a tied weight a tensor of its own)
    dense.generation_config = copy.deepcopy(sub.generation_config)
    source = sub.state_dict()
    state = {}
    for key, value in dense.state_dict().items():
        head, found, rest = key.partition(".DenseReluDense.")
        if not found or key in source:
            state[key] = source[key]
        elif rest == "wo.weight":
            state[key] = (source[f"{head}{_EXPERT}{rest}"].double() * gates[_layer_name(head)]).to(value.dtype)
        else:
            state[key] = source[f"{head}{_EXPERT}{rest}"]
    dense.load_state_dict(state)  # strict: every weight of the T5 comes from the sub-network
    dense.train(sub.training)
    return dense


def _layer_name(head: str) -> str:
    """'encoder.3' of a state-dict key head 'encoder.block.3.layer.1'."""
    stack, _, index = head.split(".")[:3]
    return f"{stack}.{index}"
