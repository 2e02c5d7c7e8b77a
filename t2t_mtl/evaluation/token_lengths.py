"""What evaluation measures in tokens to warn of: each input's length against the input limit (`input_lengths`),
and the examples whose gold answers are all longer than generation may write (`long_answers`)."""
from __future__ import annotations

from typing import Sequence


def input_lengths(tokenizer, inputs: Sequence[str]) -> list[int]:
    """The number of tokens of each of `inputs`, special tokens included (longer than the input limit: truncated by
    scoring; not longer than the tokenizer's model_max_length, which T5's relative positions do not have, so
    transformers' warning of it is not asked for)."""
    return [len(ids) for ids in tokenizer(list(inputs), verbose=False)["input_ids"]] if inputs else []


def long_answers(tokenizer, golds: Sequence[Sequence[str]], max_new_tokens: int) -> tuple[int, int]:
    """(how many examples have no gold answer of at most `max_new_tokens` tokens, special tokens not counted —
    generation stops there, so it cannot write one of them whole —, the tokens of the longest of their shortest
    answers: the limit that lets every example's shortest answer be written; 0 when all fit)."""
    texts = [text for answers in golds for text in answers]
    ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"] if texts else []
    lengths = iter([len(row) for row in ids])
    shortest = [min(next(lengths) for _ in answers) for answers in golds if answers]
    too_long = [length for length in shortest if length > max_new_tokens]
    return len(too_long), max(too_long, default=0)
