"""Rank classification: score every answer choice by its log-likelihood given the input.

Work shared by the choices of an example is done once per example: the encoder and the cross-attention
keys/values of every decoder layer (projections of the encoder output). These are expanded (gathered by
example index) into a decoder cache with one row per answer choice, and the decoder runs once on all the
choices' tokens, reading cross-attention keys/values from the cache. The score of a choice is the
sum of the log probabilities of its target tokens (its tokenisation including the end-of-sequence token),
or their mean with `length_normalize=True`. The predicted choice is the first one with the highest score; an
example's identical choices get the score of the first of them (scored in different decoder rows, their
scores could differ in the last bits, and the tie would not go to the first).
`task_ids` (one per input; see `t2t_mtl.model.task_routing.routing_task_id`) route a model's task-conditioned
layers (task-routed MoE, per-task LoRA).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional, Sequence

import torch
from transformers import PreTrainedTokenizerBase, T5ForConditionalGeneration
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput

from t2t_mtl.evaluation.errors import NoAnswerChoicesError
from t2t_mtl.evaluation.labels import target_labels
from t2t_mtl.model.moe import lockstep_padding_passes, token_masks
from t2t_mtl.model.task_routing import task_ids_set


@contextlib.contextmanager
def evaluation_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run with the model in eval mode and autograd off; restore the previous mode afterwards.

    `no_grad`, not `inference_mode`: a model evaluated during training (`evaluation.every`) trains on, and
    under ZeRO-3 the parameters gathered in here (persistent small ones stay gathered) would be inference
    tensors, which autograd refuses to save in the next training step."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _batches(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(start + size, n))


def choice_log_likelihoods(model: T5ForConditionalGeneration, labels: torch.Tensor, encoder_hidden: torch.Tensor,
                           attention_mask: torch.Tensor, *, length_normalize: bool = False) -> torch.Tensor:
    """Log-likelihood of each row of `labels` (pad = -100) given its row of encoder states -> [rows].

    The whole decoder runs on every row (no sharing); the re-encoding baseline of benchmarks/eval.py.
    """
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)
    with token_masks(model, decoder=labels.ne(-100)):
        logits = model(encoder_outputs=BaseModelOutput(last_hidden_state=encoder_hidden),
                       attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits
    return _target_log_probs(logits, labels, length_normalize)


def _target_log_probs(logits: torch.Tensor, labels: torch.Tensor, length_normalize: bool) -> torch.Tensor:
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    target_mask = labels.ne(-100)
    token_log_probs = log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    total = (token_log_probs * target_mask).sum(-1)
    if length_normalize:
        total = total / target_mask.sum(-1).clamp(min=1)
    return total


def cross_attention_states(model: T5ForConditionalGeneration,
                           hidden: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each decoder layer's cross-attention keys and values [B, heads, S, d_kv] for encoder states `hidden`.

    The same projections T5's cross-attention computes from `key_value_states`, done once per example (with
    the examples' task ids set, for projections with per-task adapters).
    """
    states = []
    for block in model.get_decoder().block:
        attention = block.layer[1].EncDecAttention
        shape = (*hidden.shape[:2], -1, attention.key_value_proj_dim)
        states.append((attention.k(hidden).view(shape).transpose(1, 2),
                       attention.v(hidden).view(shape).transpose(1, 2)))
    return states


def _rows_cache(states: Sequence[tuple[torch.Tensor, torch.Tensor]], owner: torch.Tensor) -> EncoderDecoderCache:
    """A decoder cache whose cross-attention holds, for row r, the keys/values of example owner[r].

    Gathered with advanced indexing: `index_select` on these non-contiguous views is tens of times slower
    on CPU.
    """
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    for layer, (keys, values) in enumerate(states):
        cache.cross_attention_cache.update(keys[owner], values[owner], layer)
        cache.is_updated[layer] = True
    return cache


def shared_encoder_log_likelihoods(model: T5ForConditionalGeneration, labels: torch.Tensor, owner: torch.Tensor,
                                   hidden: torch.Tensor, attention_mask: torch.Tensor,
                                   states: Sequence[tuple[torch.Tensor, torch.Tensor]], *,
                                   length_normalize: bool = False,
                                   task_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Log-likelihood of each row of `labels` (pad = -100) of example `owner[row]` -> [rows].

    `states` are the examples' cross-attention keys/values (`cross_attention_states`); the decoder reads
    them from the cache instead of projecting the encoder states again for every row. `task_ids` ([examples]
    or None) are the examples' task ids for a model that takes them.
    """
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)
    routing = {} if task_ids is None else {"task_ids": task_ids[owner]}
    with token_masks(model, decoder=labels.ne(-100)):
        logits = model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden[owner]),
                       attention_mask=attention_mask[owner], decoder_input_ids=decoder_input_ids,
                       cache=_rows_cache(states, owner), use_cache=True, **routing).logits
    return _target_log_probs(logits, labels, length_normalize)


def encode_examples(model: T5ForConditionalGeneration, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    task_ids: Optional[torch.Tensor] = None
                    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """(the encoder's last hidden states [B, S, d], their `cross_attention_states`), with `task_ids` ([B] or
    None) set on the model's task-conditioned layers (task-routed MoE, per-task LoRA) for both."""
    with task_ids_set(model, task_ids):
        hidden = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return hidden, cross_attention_states(model, hidden)


def encode_inputs(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *, max_input_length: int,
                  truncation_side: str = "right") -> Any:
    """`texts` tokenized for the encoder as one padded batch of tensors, each cut to `max_input_length` tokens (its
    special tokens counted and kept: T5's final EOS) from its `truncation_side`: "right" keeps an over-long input's
    beginning, "left" its end (BIG-bench's). The tokenizer's own `truncation_side` is left as it was."""
    if truncation_side not in ("right", "left"):
        raise ValueError(f"truncation_side must be 'right' or 'left', got {truncation_side!r}")
    saved, tokenizer.truncation_side = tokenizer.truncation_side, truncation_side
    try:
        return tokenizer(list(texts), padding=True, truncation=True, max_length=max_input_length, return_tensors="pt")
    finally:
        tokenizer.truncation_side = saved


#: answer-choice rows `score_choices` runs through the decoder at a time, by default
MAX_CHOICE_ROWS = 64


def decoder_passes(choice_rows: int, max_choice_rows: int = MAX_CHOICE_ROWS) -> int:
    """How many decoder passes `score_choices` runs for an encoder batch whose examples have `choice_rows` answer
    choices in all."""
    return -(-choice_rows // max_choice_rows)


def score_choices(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, inputs: Sequence[str],
                  answer_choices: Sequence[Sequence[str]], *,
                  length_normalize: bool = False, batch_size: int = 16, max_choice_rows: int = MAX_CHOICE_ROWS,
                  max_input_length: int = 512, task_ids: Optional[Sequence[int]] = None,
                  min_decoder_passes: int = 0, truncation_side: str = "right") -> list[list[float]]:
    """Score every answer choice of every example; returns one list of scores per example.

    `answer_choices[i]` are example i's choices (at least one), each scored in full (never truncated: choices
    that differ only late must not tie); a choice repeated in an example gets its first occurrence's score.
    Examples are batched `batch_size` at a time through the encoder, inputs truncated to `max_input_length`
    tokens from their `truncation_side` (`encode_inputs`: "right" keeps their beginning, "left" their end); their
    choices run through the decoder `max_choice_rows` rows at a time (`decoder_passes`), and at least
    `min_decoder_passes` times per encoder batch: the extra passes score the batch's first choice again and are
    discarded (ZeRO-3 ranks that must run the same passes).
    `task_ids[i]` (None: none passed, for models that take no task ids) is example i's task id.
    """
    if len(inputs) != len(answer_choices):
        raise ValueError(f"score_choices: {len(inputs)} inputs but {len(answer_choices)} answer-choice lists")
    if task_ids is not None and len(task_ids) != len(inputs):
        raise ValueError(f"score_choices: {len(inputs)} inputs but {len(task_ids)} task ids")
    for index, choices in enumerate(answer_choices):
        if not choices:
            raise NoAnswerChoicesError(
                f"example {index} has no answer choices: rank classification needs them; "
                f"score this task by generation instead (--scoring generate)")
    device = next(model.parameters()).device
    scores: list[list[float]] = []
    with evaluation_mode(model):
        for batch in _batches(len(inputs), batch_size):
            # (host values copied without waiting for the device: nothing on the host reuses them before the copy)
            encoded = encode_inputs(tokenizer, [inputs[i] for i in batch], max_input_length=max_input_length,
                                    truncation_side=truncation_side).to(device, non_blocking=True)
            ids = None if task_ids is None else torch.tensor([task_ids[i] for i in batch]).to(device,
                                                                                             non_blocking=True)
            hidden, states = encode_examples(model, encoded.input_ids, encoded.attention_mask, ids)
            owners = [row for row, i in enumerate(batch) for _ in answer_choices[i]]
            texts = [choice for i in batch for choice in answer_choices[i]]

            def score_rows(rows: range) -> list[float]:
                labels = target_labels(tokenizer, [texts[r] for r in rows]).to(device, non_blocking=True)
                owner = torch.tensor([owners[r] for r in rows]).to(device, non_blocking=True)
                return shared_encoder_log_likelihoods(model, labels, owner, hidden, encoded.attention_mask, states,
                                                      length_normalize=length_normalize, task_ids=ids).tolist()

            flat = [score for rows in _batches(len(texts), max_choice_rows) for score in score_rows(rows)]
            with lockstep_padding_passes(model):  # (not counted with the real passes' MoE capacity drops)
                for _ in range(min_decoder_passes - decoder_passes(len(texts), max_choice_rows)):
                    score_rows(range(1))
            position = 0
            for i in batch:
                row, first = flat[position:position + len(answer_choices[i])], {}
                scores.append([row[first.setdefault(choice, k)] for k, choice in enumerate(answer_choices[i])])
                position += len(row)
    return scores


def argmax_first(values: Sequence[float]) -> int:
    """Index of the first maximum (deterministic tie-breaking)."""
    best = 0
    for index, value in enumerate(values):
        if value > values[best]:
            best = index
    return best


def rank_classify(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, inputs: Sequence[str],
                  answer_choices: Sequence[Sequence[str]], **kwargs: Any) -> tuple[list[int], list[list[float]]]:
    """Pick the highest-scoring choice per example: returns (chosen indices, all choice scores); `kwargs` go to
    `score_choices`."""
    scores = score_choices(model, tokenizer, inputs, answer_choices, **kwargs)
    return [argmax_first(row) for row in scores], scores
