"""The sizes a generation may take (`check_generation_sizes`), checked before a model is loaded or anything is
generated. Without torch: settings (`EvalSettings`) and the commands' checks of their options import none."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from t2t_mtl.evaluation.errors import EvaluationError
from t2t_mtl.size_limits import MAX_NEW_TOKENS

if TYPE_CHECKING:
    import torch


def check_generation_sizes(num_beams: int, max_new_tokens: int, model: Optional[torch.nn.Module] = None, *,
                           vocab_size: Optional[int] = None) -> None:
    """EvaluationError naming the setting (and its option) for `max_new_tokens` past `MAX_NEW_TOKENS`, or, given a
    `model` with a config (or its `vocab_size`, read before it is loaded), `num_beams` past its vocabulary size: beam
    search's first step extends the input by one token, so it finds at most that many distinct beams (and a beam
    width of 10**12 fails in the allocator)."""
    vocab_size = getattr(getattr(model, "config", None), "vocab_size", vocab_size)
    if max_new_tokens > MAX_NEW_TOKENS:
        raise EvaluationError(f"max_new_tokens (--max-new-tokens, evaluation.max_new_tokens) {max_new_tokens} is more "
                              f"than the {MAX_NEW_TOKENS} tokens a generation adds at most (t2t_mtl.size_limits): "
                              f"generate fewer")
    if vocab_size is not None and num_beams > vocab_size:
        raise EvaluationError(f"num_beams (--num-beams, evaluation.num_beams) {num_beams} is more than the model's "
                              f"vocabulary of {vocab_size} tokens, the most distinct beams there are: use at most "
                              f"{vocab_size}")
