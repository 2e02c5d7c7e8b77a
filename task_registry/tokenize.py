"""Tokenized variants of rendered datasets, cached by datasets fingerprinting.

`tokenize_dataset` adds `input_ids`, `attention_mask` and `labels` (unpadded, truncated; the tokenizer adds
its own EOS) through `Dataset.map`. The fingerprint of a map-style result combines the input fingerprint,
the tokenizer (its name_or_path, class and, for fast tokenizers, a hash of its full serialisation) and the
lengths, so a re-run with the same inputs loads the cached Arrow file instead of tokenizing again.
"""
from __future__ import annotations

import json
from typing import Any, Union

import datasets
from datasets.fingerprint import Hasher


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash that changes whenever the tokenizer's vocabulary or behaviour does."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # the backend's truncation/padding settings change with every call; they are not the tokenizer
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
        serialised = json.dumps(state, sort_keys=True)
    else:
        serialised = repr(sorted(tokenizer.get_vocab().items()))
    return Hasher.hash((type(tokenizer).__name__, getattr(tokenizer, "name_or_path", ""), serialised))


class _Tokenize:
    def __init__(self, tokenizer: Any, max_input_length: int, max_target_length: int):
        self.tokenizer = tokenizer
        self.max_input_length = max_input_length
        self.max_target_length = max_target_length

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        encoded = self.tokenizer(batch["inputs"], max_length=self.max_input_length, truncation=True)
        labels = self.tokenizer(text_target=batch["targets"], max_length=self.max_target_length, truncation=True)
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
                "labels": labels["input_ids"]}


def tokenize_dataset(dataset: Union[datasets.Dataset, datasets.IterableDataset], tokenizer: Any,
                     max_input_length: int, max_target_length: int, batch_size: int = 1000
                     ) -> Union[datasets.Dataset, datasets.IterableDataset]:
    """`dataset` (columns inputs/targets) plus input_ids, attention_mask, labels; cached when map-style."""
    if max_input_length <= 0 or max_target_length <= 0:
        raise ValueError(f"max lengths must be positive, got {max_input_length}, {max_target_length}")
    missing = {"inputs", "targets"} - set(dataset.column_names or ())
    if dataset.column_names is not None and missing:
        raise ValueError(f"tokenize_dataset needs columns 'inputs' and 'targets'; missing {sorted(missing)}")
    function = _Tokenize(tokenizer, max_input_length, max_target_length)
    if isinstance(dataset, datasets.IterableDataset):
        return dataset.map(function, batched=True, batch_size=batch_size)
    fingerprint = Hasher.hash((dataset._fingerprint, tokenizer_fingerprint(tokenizer), max_input_length,
                               max_target_length, "tokenize-v1"))
    return dataset.map(function, batched=True, batch_size=batch_size, new_fingerprint=fingerprint,
                       desc="tokenize")
