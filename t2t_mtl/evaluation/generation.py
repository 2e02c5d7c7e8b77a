"""Generation scoring: decode a prediction per input (greedy, or beam search with `num_beams` > 1)."""
from __future__ import annotations

import re
from typing import Any, Optional, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from t2t_mtl.evaluation.generation_sizes import check_generation_sizes
from t2t_mtl.evaluation.rank_classification import encode_inputs, evaluation_mode


SENTINEL = re.compile(r"<extra_id_\d+>")

#: what every `generate` call decoding texts passes, whatever the model's generation config (a folder's
#: generation_config.json, which from_pretrained gives the model) says: one sequence per input, as a tensor of ids
#: (its `return_dict_in_generate: true` gives an output object, its `num_return_sequences: 2` two rows an input)
ONE_SEQUENCE_EACH = {"num_return_sequences": 1, "return_dict_in_generate": False}


def decode_generated(tokenizer: Any, sequences: torch.Tensor, inputs: Sequence[str]) -> list[str]:
    """Decode generated ids [B, L] for `inputs` (one each), special tokens removed, whitespace stripped — except
    that where the input holds a T5 sentinel (`<extra_id_N>`, a span-corruption input) the output's sentinels are
    kept, each preceded by a space, as in the spans that are its target (T5's decoding joins a sentinel to the
    word before it)."""
    special = set(tokenizer.all_special_ids)
    sentinels = {i for token, i in zip(tokenizer.all_special_tokens, tokenizer.all_special_ids)
                 if SENTINEL.fullmatch(token)}
    texts = []
    for ids, source in zip(sequences.tolist(), inputs):
        if SENTINEL.search(source):
            text = tokenizer.decode([i for i in ids if i not in special or i in sentinels], skip_special_tokens=False)
            text = re.sub(rf"(?<=\S)({SENTINEL.pattern})", r" \1", text)
        else:
            text = tokenizer.decode(ids, skip_special_tokens=True)
        texts.append(text.strip())
    return texts


def generate_texts(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, inputs: Sequence[str], *,
                   num_beams: int = 1, max_new_tokens: int = 64, batch_size: int = 16, max_input_length: int = 512,
                   task_ids: Optional[Sequence[int]] = None, synced_gpus: bool = False,
                   truncation_side: str = "right") -> list[str]:
    """Decode one text per input (`decode_generated`: special tokens removed but a span-corruption input's
    sentinels, surrounding whitespace stripped).

    An empty decode is returned as "" (it is scored like any prediction, never dropped). `task_ids[i]`
    (None: none passed, for models that take no task ids) is input i's task id. `synced_gpus` (ZeRO-3 with
    several ranks, each calling this as often): every rank keeps stepping until all ranks' batches are done.
    An input longer than `max_input_length` tokens is cut from its `truncation_side` (`encode_inputs`).
    EvaluationError (`check_generation_sizes`) for a beam width past the model's vocabulary or more new tokens than
    `MAX_NEW_TOKENS`, before anything is generated.
    """
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    check_generation_sizes(num_beams, max_new_tokens, model)
    if task_ids is not None and len(task_ids) != len(inputs):
        raise ValueError(f"generate_texts: {len(inputs)} inputs but {len(task_ids)} task ids")
    device = next(model.parameters()).device
    predictions: list[str] = []
    with evaluation_mode(model):
        for start in range(0, len(inputs), batch_size):
            # (host values copied without waiting for the device: nothing on the host reuses them before the copy)
            encoded = encode_inputs(tokenizer, inputs[start:start + batch_size], max_input_length=max_input_length,
                                    truncation_side=truncation_side).to(device, non_blocking=True)
            routing = {} if task_ids is None else {
                "task_ids": torch.tensor(task_ids[start:start + batch_size]).to(device, non_blocking=True)}
            output = model.generate(input_ids=encoded.input_ids, attention_mask=encoded.attention_mask,
                                    num_beams=num_beams, do_sample=False, max_new_tokens=max_new_tokens,
                                    early_stopping=num_beams > 1, synced_gpus=synced_gpus, **ONE_SEQUENCE_EACH,
                                    **routing)
            predictions.extend(decode_generated(tokenizer, output, inputs[start:start + batch_size]))
    return predictions
