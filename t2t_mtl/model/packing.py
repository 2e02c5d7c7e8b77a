"""Running T5 on packed batches (`data.batching: pack`): block-diagonal attention masks from segment ids.

Three additive masks (0 = attend, the dtype's minimum = blocked; 4-D, so transformers uses them as given):
encoder self-attention between tokens of the same segment, decoder self-attention causal within a segment,
and cross-attention from a target segment to its own input segment. T5 runs the encoder and the
cross-attention on one `attention_mask`, so the cross-attention mask reaches the decoder through a forward
pre-hook (`cross_attention_mask`) for the duration of one forward. Decoder inputs are the labels shifted
right within each segment, every segment starting from the decoder start token.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Dict, Iterator, Mapping

import torch

def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, Q, K] bool → [B, 1, Q, K] additive mask of `dtype`."""
    blocked = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=allowed.device)  # (filled there: no copy)
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, blocked).unsqueeze(1)


def segment_masks(encoder_segment_ids: torch.Tensor, decoder_segment_ids: torch.Tensor, dtype: torch.dtype
                  ) -> Dict[str, torch.Tensor]:
    """The encoder, decoder and cross-attention masks ([B, 1, Q, K], additive, `dtype`) of a packed batch.

    Padding (segment 0) attends to padding only, so no row of the self-attention masks is blocked entirely. A
    cross-attention row of target padding is blocked entirely when its batch row's input has no padding: its
    entries are the dtype's (finite) minimum, so it attends to every input token alike, and no real token reads it.
    """
    enc, dec = encoder_segment_ids, decoder_segment_ids
    length = dec.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=dec.device).tril()
    return {
        "encoder": _additive(enc.unsqueeze(2) == enc.unsqueeze(1), dtype),
        "decoder": _additive((dec.unsqueeze(2) == dec.unsqueeze(1)) & causal, dtype),
        "cross": _additive(dec.unsqueeze(2) == enc.unsqueeze(1), dtype),
    }


def shift_right_in_segments(labels: torch.Tensor, decoder_segment_ids: torch.Tensor, start_id: int,
                            pad_id: int) -> torch.Tensor:
    """Decoder inputs of a packed batch: each segment's labels shifted right, its first position `start_id`;
    padding positions hold `pad_id`."""
    shifted = torch.full_like(labels, pad_id)
    shifted[:, 1:] = labels[:, :-1]
    starts = torch.ones_like(decoder_segment_ids, dtype=torch.bool)
    starts[:, 1:] = decoder_segment_ids[:, 1:] != decoder_segment_ids[:, :-1]
    shifted = torch.where(starts, torch.full_like(labels, start_id), shifted)
    shifted = shifted.masked_fill(shifted == -100, pad_id)
    return shifted.masked_fill(decoder_segment_ids == 0, pad_id)


@contextmanager
def cross_attention_mask(model: torch.nn.Module, mask: torch.Tensor) -> Iterator[None]:
    """Within the block, the model's decoder attends across with `mask` instead of the encoder's mask."""
    def replace(module: torch.nn.Module, args: tuple, kwargs: Dict[str, Any]):
        kwargs["encoder_attention_mask"] = mask
        return args, kwargs

    handle = model.get_decoder().register_forward_pre_hook(replace, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def packed_model_inputs(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]
                        ) -> tuple[Dict[str, torch.Tensor], torch.Tensor]:
    """(forward kwargs, cross-attention mask) for a packed batch on `model` (T5: its config's decoder start
    and pad ids, its embedding dtype). Run the forward inside `cross_attention_mask(model, mask)`."""
    dtype = model.get_input_embeddings().weight.dtype
    masks = segment_masks(batch["encoder_segment_ids"], batch["decoder_segment_ids"], dtype)
    config = model.config
    decoder_input_ids = shift_right_in_segments(batch["labels"], batch["decoder_segment_ids"],
                                                config.decoder_start_token_id, config.pad_token_id)
    kwargs = {"input_ids": batch["input_ids"], "attention_mask": masks["encoder"],
              "decoder_input_ids": decoder_input_ids, "decoder_attention_mask": masks["decoder"]}
    return kwargs, masks["cross"]
