"""Per-task tokenized example streams, each cached on disk on its own.

A `TokenizedTask` holds one task's rendered-and-tokenized split (input ids with EOS, target ids with EOS)
in an Arrow-backed `datasets.Dataset`, plus the per-row lengths used for bucketing. Each task is tokenized
once and cached as `<cache_dir>/<task>/<split>-<key>.arrow`, the key hashing the rendered dataset's
fingerprint, the tokenizer vocabulary and the length limits, so a changed task, template or tokenizer
never reuses a stale cache and adding a task to a mixture re-tokenizes only that task.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)


class DataPipelineError(ValueError):
    """A task cannot be turned into training examples (empty split, missing data, ...)."""


@dataclass
class TokenizedTask:
    """One task's tokenized split: rows with `input_ids`, `labels`, and their lengths."""

    name: str
    split: str
    dataset: Any  # datasets.Dataset with columns input_ids, labels
    input_lengths: np.ndarray
    target_lengths: np.ndarray
    truncated: int

    def __len__(self) -> int:
        return len(self.input_lengths)

    def rows(self, indices: Sequence[int]) -> Dict[str, List[List[int]]]:
        """The `input_ids` and `labels` of the given rows, in the given order."""
        batch = self.dataset[list(int(i) for i in indices)]
        return {"input_ids": batch["input_ids"], "labels": batch["labels"]}


def tokenizer_key(tokenizer: Any) -> str:
    """A short hash of the tokenizer's vocabulary (ids of every piece) and its class."""
    vocab = tokenizer.get_vocab()
    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    for piece, idx in sorted(vocab.items(), key=lambda kv: kv[1]):
        digest.update(f"{idx}:{piece}\n".encode("utf-8"))
    return digest.hexdigest()[:16]


def tokenize_task(
    task: Any,
    tokenizer: Any,
    *,
    split: str,
    max_input_length: int,
    max_target_length: int,
    cache_dir: Optional[Path],
    templates: Optional[List[str]] = None,
    max_examples: Optional[int] = None,
    seed: int = 0,
    tok_key: Optional[str] = None,
) -> TokenizedTask:
    """Render `task`'s split with its templates, tokenize it (truncating, counted) and cache it."""
    rendered = task.to_dataset(split, templates=templates, max_examples=max_examples, seed=seed)
    if len(rendered) == 0:
        raise DataPipelineError(f"task {task.name!r} has no {split!r} examples after rendering; check its data "
                                f"source and templates (`t2t-mtl tasks preview {task.name} --split {split}`)")
    tok_key = tok_key or tokenizer_key(tokenizer)
    key = hashlib.sha256(
        f"{rendered._fingerprint}|{tok_key}|{max_input_length}|{max_target_length}".encode()).hexdigest()[:16]
    eos = tokenizer.eos_token_id

    def encode(batch: Dict[str, List[str]]) -> Dict[str, list]:
        inputs = tokenizer(batch["inputs"], add_special_tokens=False)["input_ids"]
        targets = tokenizer(batch["targets"], add_special_tokens=False)["input_ids"]
        out_in, out_lab, trunc = [], [], []
        for x, y in zip(inputs, targets):
            cut = len(x) + 1 > max_input_length or len(y) + 1 > max_target_length
            out_in.append(x[: max_input_length - 1] + [eos])
            out_lab.append(y[: max_target_length - 1] + [eos])
            trunc.append(cut)
        return {"input_ids": out_in, "labels": out_lab, "truncated": trunc,
                "input_length": [len(x) for x in out_in], "target_length": [len(y) for y in out_lab]}

    kwargs: Dict[str, Any] = {"batched": True, "remove_columns": rendered.column_names,
                              "desc": f"tokenize {task.name}/{split}", "new_fingerprint": key}
    if cache_dir is not None:
        path = Path(cache_dir) / task.name.replace("/", "__")
        path.mkdir(parents=True, exist_ok=True)
        kwargs["cache_file_name"] = str(path / f"{split}-{key}.arrow")
        kwargs["load_from_cache_file"] = True
    else:
        kwargs["keep_in_memory"] = True
    tokenized = rendered.map(encode, **kwargs)
    table = tokenized.data  # read the bookkeeping columns straight from Arrow (no per-row Python objects)
    truncated = int(np.asarray(table.column("truncated")).sum())
    in_len = np.asarray(table.column("input_length"), dtype=np.int64)
    tgt_len = np.asarray(table.column("target_length"), dtype=np.int64)
    if truncated:
        logger.warning("task %s/%s: %d of %d examples truncated to max_input_length=%d / max_target_length=%d",
                       task.name, split, truncated, len(tokenized), max_input_length, max_target_length)
    tokenized = tokenized.remove_columns(["truncated", "input_length", "target_length"])
    return TokenizedTask(task.name, split, tokenized, in_len, tgt_len, truncated)


def build_task_streams(
    task_names: Sequence[str],
    tokenizer: Any,
    *,
    split: str,
    max_input_length: int,
    max_target_length: int,
    cache_dir: Optional[Path],
    templates: Optional[List[str]] = None,
    max_examples: Optional[int] = None,
    seed: int = 0,
) -> Dict[str, TokenizedTask]:
    """Tokenize every task of the mixture, one cache file per task (see `tokenize_task`)."""
    import task_registry

    tok_key = tokenizer_key(tokenizer)
    out = {}
    for name in task_names:
        task = task_registry.get_task(name)
        out[name] = tokenize_task(task, tokenizer, split=split, max_input_length=max_input_length,
                                  max_target_length=max_target_length, cache_dir=cache_dir, templates=templates,
                                  max_examples=max_examples, seed=seed, tok_key=tok_key)
    return out
