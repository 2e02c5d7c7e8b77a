"""Decoder targets as a labels tensor, the same whatever side the tokenizer pads."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from t2t_mtl.data.collator import LABEL_PAD, pad_rows


def target_labels(tokenizer: Any, texts: Sequence[str], max_length: Optional[int] = None) -> torch.Tensor:
    """Each of `texts` tokenized as a target (end-of-sequence token included; cut at `max_length` tokens when given),
    left-aligned in one LongTensor [len(texts), longest] padded with -100 on the right, as training's collator pads.

    Not the tokenizer's own padding: a tokenizer with `padding_side="left"` (saved so, or set for a decoder-only
    model) puts a shorter target's padding before its tokens, where the shifted decoder input then holds pad tokens
    between the start token and the target, and the target's log-likelihood is that of another sequence."""
    cut = {"truncation": True, "max_length": max_length} if max_length is not None else {}
    ids = tokenizer(text_target=list(texts), verbose=False, **cut)["input_ids"]
    return pad_rows(ids, max((len(row) for row in ids), default=0), LABEL_PAD)[0]
