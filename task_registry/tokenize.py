"""Tokenized variants of rendered datasets, cached by datasets fingerprinting.

`tokenize_dataset` adds `input_ids` and `labels` (unpadded, truncated to the length limits; no attention mask: it
would be all ones, and the collators that pad build their own) and the per-row flags `inputs_truncated` /
`targets_truncated` through `Dataset.map`; `count_truncated` sums the flags of a map-style result. Special tokens,
by default, are the tokenizer's own (T5: a final EOS), with its own truncation; with `append_eos=True` the text is
encoded without special tokens, cut to `max_length - 1` and `eos_token_id` is appended, whatever the tokenizer's
post-processing. The fingerprint of a map-style result (`tokenized_fingerprint`) combines the input fingerprint,
the tokenizer (its class, EOS id, how it encodes probe texts in each way rows are encoded (`tokenizer_probe`) and, for
fast tokenizers, a hash of its full serialisation — not the folder it was loaded from; a tokenizer without a
serialisation adds its name_or_path and vocabulary), the limits, the options and
the version of the columns written (`TOKENIZED_FORMAT`), so a re-run with the same inputs loads the cached Arrow
file instead of tokenizing again, and never a file of another version.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

from .lazy_modules import LazyModule
from .tokenizer_probe import probe_encodings, splits_special_tokens

datasets = LazyModule("datasets")
pc = LazyModule("pyarrow.compute")

TRUNCATION_COLUMNS = ("inputs_truncated", "targets_truncated")
#: the version of `tokenize_dataset`'s columns, part of its fingerprint so that a cache of another version (v2 also
#: held `attention_mask`) is never read as this one
TOKENIZED_FORMAT = "tokenize-v3"


@dataclass(frozen=True)
class TruncationCounts:
    """Rows of a tokenized dataset whose inputs, targets, or either (`rows`) were cut to the length limits."""

    inputs: int
    targets: int
    rows: int


def tokenizer_fingerprint(tokenizer: Any, ignore_added: Optional[Callable[[str], Any]] = None) -> str:
    """A hash that changes whenever the tokenizer's vocabulary or behaviour does, and only then.

    A fast tokenizer's full serialisation is its backend's behaviour, so the folder it was loaded from is left out:
    the same tokenizer from another folder (a run's own copy in `<run>/tokenizer`, read on resume) keeps its key and
    its cached tokenizations. A tokenizer without one is keyed by its vocabulary and its name as well. Either is also
    keyed by how it encodes the probe texts (`tokenizer_probe.probe_encodings`: what its Python side decides, which no
    serialisation holds: a slow tokenizer's options, `truncation_side`, a target mode) and whether it splits special
    tokens written in a text. `ignore_added(content)` true leaves that added token out of a fast tokenizer's key: for
    tokens the texts being keyed never hold (the trainer's `<task:NAME>` tokens, put in front of ids, never written in
    text). The tokenizer must be callable as `tokenize_dataset` calls it.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # the backend's truncation/padding settings change with every call; they are not the tokenizer
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
        if ignore_added is not None:
            state["added_tokens"] = [t for t in state.get("added_tokens", []) if not ignore_added(t["content"])]
        serialised = json.dumps(state, sort_keys=True)
        name = ""
    else:
        serialised = repr(sorted(tokenizer.get_vocab().items()))
        name = getattr(tokenizer, "name_or_path", "")
    # `append_eos` appends `eos_token_id`, which the tokenizer's Python side holds, not its backend
    eos = getattr(tokenizer, "eos_token_id", None)
    return datasets.fingerprint.Hasher.hash((type(tokenizer).__name__, name, serialised, eos,
                                             splits_special_tokens(tokenizer), probe_encodings(tokenizer)))


def tokenized_fingerprint(dataset: datasets.Dataset, tokenizer_key: str, max_input_length: int,
                          max_target_length: int, *, append_eos: bool = False,
                          remove_columns: Sequence[str] = ()) -> str:
    """The fingerprint `tokenize_dataset` gives its map-style result for these arguments.

    `tokenizer_key` is `tokenizer_fingerprint(tokenizer)`; callers that name their own cache files derive
    the names from this value, so any change of input, tokenizer, limits or options gets a new file.
    """
    return datasets.fingerprint.Hasher.hash((dataset._fingerprint, tokenizer_key, max_input_length, max_target_length,
                        bool(append_eos), sorted(remove_columns), TOKENIZED_FORMAT))


class _Tokenize:
    """The batched map function: token ids of `inputs` and `targets`, truncated, with truncation flags."""

    def __init__(self, tokenizer: Any, max_input_length: int, max_target_length: int, append_eos: bool):
        self.tokenizer = tokenizer
        self.max_input_length = max_input_length
        self.max_target_length = max_target_length
        self.append_eos = append_eos

    def _ids(self, texts: list[str], field: str, **options: Any) -> list[list[int]]:
        """The tokenizer's ids of `texts` (as `field`), each distinct text encoded once: a tokenizer maps equal texts
        to equal ids, and a batch's targets are often a few labels repeated (classification). Each row gets its own
        list. Only the ids are asked for (no attention masks)."""
        distinct = list(dict.fromkeys(texts))
        ids = self.tokenizer(**{field: distinct}, return_attention_mask=False, verbose=False, **options)["input_ids"]
        if len(distinct) == len(texts):
            return ids
        of_text = dict(zip(distinct, ids))
        return [list(of_text[text]) for text in texts]

    def _encode(self, texts: list[str], max_length: int, field: str) -> tuple[list[list[int]], list[bool]]:
        """Ids of `texts` (passed to the tokenizer as `field`) cut to `max_length`, and whether each was cut."""
        if self.append_eos:
            ids = self._ids(texts, field, add_special_tokens=False)
            eos = [self.tokenizer.eos_token_id]
            return [x[: max_length - 1] + eos for x in ids], [len(x) + 1 > max_length for x in ids]
        ids = self._ids(texts, field)
        cut = [len(x) > max_length for x in ids]
        long = [i for i, too_long in enumerate(cut) if too_long]
        if long:  # only the over-long rows are encoded again, with the tokenizer's own truncation
            shortened = self._ids([texts[i] for i in long], field, max_length=max_length, truncation=True)
            for i, x in zip(long, shortened):
                ids[i] = x
        return ids, cut

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        input_ids, inputs_cut = self._encode(batch["inputs"], self.max_input_length, "text")
        labels, targets_cut = self._encode(batch["targets"], self.max_target_length, "text_target")
        return {"input_ids": input_ids, "labels": labels, TRUNCATION_COLUMNS[0]: inputs_cut,
                TRUNCATION_COLUMNS[1]: targets_cut}


def _check_arguments(dataset: Union[datasets.Dataset, datasets.IterableDataset], tokenizer: Any,
                     max_input_length: int, max_target_length: int, append_eos: bool) -> None:
    if max_input_length <= 0 or max_target_length <= 0:
        raise ValueError(f"max lengths must be positive, got {max_input_length}, {max_target_length}")
    missing = {"inputs", "targets"} - set(dataset.column_names or ())
    if dataset.column_names is not None and missing:
        raise ValueError(f"tokenize_dataset needs columns 'inputs' and 'targets'; missing {sorted(missing)}")
    if append_eos and tokenizer.eos_token_id is None:
        raise ValueError(f"append_eos=True needs a tokenizer with an EOS token; {type(tokenizer).__name__} has none")


def tokenize_dataset(dataset: Union[datasets.Dataset, datasets.IterableDataset], tokenizer: Any,
                     max_input_length: int, max_target_length: int, batch_size: int = 1000, *,
                     append_eos: bool = False, remove_columns: Optional[Sequence[str]] = None,
                     tokenizer_key: Optional[str] = None, cache_file_name: Optional[str] = None,
                     keep_in_memory: bool = False, desc: str = "tokenize",
                     ) -> Union[datasets.Dataset, datasets.IterableDataset]:
    """`dataset` (columns inputs/targets) plus input_ids, labels and the truncation flags.

    `remove_columns` are dropped as in `Dataset.map`. Map-style results are cached: by default in the
    input's cache folder, or in `cache_file_name` (reused when it exists), or not at all with
    `keep_in_memory`; `tokenizer_key` saves recomputing `tokenizer_fingerprint(tokenizer)`. Streaming
    (`IterableDataset`) inputs are tokenized lazily and take no cache options.
    """
    _check_arguments(dataset, tokenizer, max_input_length, max_target_length, append_eos)
    function = _Tokenize(tokenizer, max_input_length, max_target_length, append_eos)
    remove_columns = list(remove_columns or ())
    if isinstance(dataset, datasets.IterableDataset):
        if cache_file_name is not None or keep_in_memory:
            raise ValueError("cache_file_name and keep_in_memory apply to map-style datasets, not streaming ones")
        return dataset.map(function, batched=True, batch_size=batch_size, remove_columns=remove_columns or None)
    fingerprint = tokenized_fingerprint(dataset, tokenizer_key or tokenizer_fingerprint(tokenizer),
                                        max_input_length, max_target_length, append_eos=append_eos,
                                        remove_columns=remove_columns)
    return dataset.map(function, batched=True, batch_size=batch_size, remove_columns=remove_columns or None,
                       new_fingerprint=fingerprint, cache_file_name=cache_file_name,
                       load_from_cache_file=True if cache_file_name else None, keep_in_memory=keep_in_memory,
                       desc=desc)


def count_truncated(tokenized: datasets.Dataset) -> TruncationCounts:
    """How many rows of a map-style `tokenize_dataset` result were truncated (its flags, read from Arrow)."""
    arrow = tokenized.with_format("arrow")
    inputs, targets = (arrow[column] for column in TRUNCATION_COLUMNS)
    either = pc.or_(inputs, targets)
    return TruncationCounts(*(int(pc.sum(flags).as_py() or 0) for flags in (inputs, targets, either)))
