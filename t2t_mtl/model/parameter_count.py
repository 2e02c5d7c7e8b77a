"""How many parameters a T5 model has, counted from its sizes alone: a model far too large to build (a typo's
`d_model: 1000000000000`) is measured without allocating it, or looping over its layers."""
from __future__ import annotations

from typing import Optional

from transformers import T5Config

from t2t_mtl.model.moe_config import MoEConfig


def t5_parameter_count(config: T5Config, moe: Optional[MoEConfig] = None, *, own_head: bool = False) -> int:
    """The parameters of the `T5ForConditionalGeneration` that `config` describes, or, with `moe`, of the
    `TaskAwareT5` whose every `moe.every`-th feed-forward layer of `moe.layers` holds `moe.num_experts` experts (with
    their router and task gate), less the experts a layer of `moe.expert_ids` lacks (an exported sub-network's layer
    holds those it names); with `own_head`, an LM head of its own beside the embedding (a folder's weights may hold
    one: `saves_own_head`; `T5Config` itself always ties them); what `count_parameters` of the built model gives."""
    d_model, layers, decoder_layers = config.d_model, config.num_layers, config.num_decoder_layers
    attention = 4 * d_model * config.num_heads * config.d_kv  # q, k, v and o
    ffn = (3 if config.is_gated_act else 2) * d_model * config.d_ff
    position_bias = config.relative_attention_num_buckets * config.num_heads  # the first block of each stack
    embeddings = config.vocab_size * d_model * (2 if own_head else 1)
    encoder = layers * (attention + ffn + 2 * d_model) + position_bias + d_model  # (+ layer norms)
    decoder = decoder_layers * (2 * attention + ffn + 3 * d_model) + position_bias + d_model
    total = embeddings + encoder + decoder
    if moe is None:
        return total
    experts = moe.num_experts
    per_layer = (experts - 1) * ffn + (d_model * experts if moe.routing != "task" else 0) \
        + (moe.num_tasks * experts if moe.routing != "token" else 0)
    for stack, depth in (("encoder", layers), ("decoder", decoder_layers)):
        if moe.layers in ("both", stack):
            total += depth // moe.every * per_layer
    return total - sum(experts - len(ids) for ids in moe.expert_ids.values()) * ffn
