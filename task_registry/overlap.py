"""Train/evaluation overlap (contamination): evaluation rows whose text also occurs in the training data.

Rows are compared by word n-grams of each of their string fields (strings inside lists and mappings too), after
normalisation: Unicode NFKC, lower case, every run of characters other than letters and digits a single space —
the 13-gram test of GPT-3's contamination study (Brown et al. 2020). An evaluation field shorter than `n` words
but of at least `min_words` is one gram of its own: it matches a training field that holds the same words in a
row (the whole field, or inside a longer one). An evaluation row overlaps a training task when any of its grams
occurs in any of that task's training rows. Raw rows are
compared (after the task's preprocessors), not rendered prompts, so template wording never matches by itself.
Grams are kept as 64-bit BLAKE2 hashes (deterministic across runs; a false match needs a hash collision).
`find_overlap` says what it is doing only to a `progress` callback its caller gives (the command line's prints to
stderr); by default it reports nothing.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .task import Task

__all__ = ["TaskOverlap", "find_overlap", "row_grams", "normalized_words"]

_NOT_WORD = re.compile(r"[\W_]+")  # any script's letters and digits are word characters


def normalized_words(text: str) -> List[str]:
    """The words of `text` after NFKC, lower-casing and turning non-alphanumeric runs into spaces."""
    return _NOT_WORD.sub(" ", unicodedata.normalize("NFKC", text).lower()).split()


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def _gram_hash(words: Sequence[str]) -> int:
    return int.from_bytes(hashlib.blake2b(" ".join(words).encode(), digest_size=8).digest(), "little", signed=True)


def _ngram_hashes(words: Sequence[str], n: int) -> Iterator[int]:
    """The hash of every n-gram of `words` (none when there are fewer than n)."""
    return (_gram_hash(words[i:i + n]) for i in range(len(words) - n + 1))


def row_grams(row: Mapping[str, Any], n: int = 13, min_words: int = 8) -> set:
    """The hashed grams of a row: every n-gram of each string field, or the whole field when it has fewer than
    n words and at least `min_words`."""
    grams = set()
    for text in _strings(dict(row)):
        words = normalized_words(text)
        if len(words) >= n:
            grams.update(_ngram_hashes(words, n))
        elif len(words) >= min_words:
            grams.add(_gram_hash(words))
    return grams


@dataclass
class TaskOverlap:
    """How many rows of one evaluation task's split share a gram with the training data, and with which task.

    `training_tasks`: {training task: overlapping rows}; `examples`: the first few overlapping row indices."""

    task: str
    split: str
    rows: int
    overlapping: int
    training_tasks: Dict[str, int] = field(default_factory=dict)
    examples: List[int] = field(default_factory=list)

    @property
    def share(self) -> float:
        """Overlapping rows / rows (0 for an empty split)."""
        return self.overlapping / self.rows if self.rows else 0.0


def _short_lengths(rows: Any, n: int, min_words: int) -> set:
    """The word counts of the fields of `rows` that are grams whole (`min_words` to n − 1 words)."""
    return {len(words) for row in rows for text in _strings(dict(row))
            if min_words <= len(words := normalized_words(text)) < n}


def _training_index(task: Task, split: str, lengths: set, max_rows: Optional[int],
                    progress: Callable[[str], None]) -> np.ndarray:
    """Every gram of each length in `lengths` of the training rows' string fields, hashed and sorted."""
    grams: set = set()
    rows = task.load_rows(split, max_rows=max_rows)
    for row in rows:
        for text in _strings(dict(row)):
            words = normalized_words(text)
            for k in lengths:
                grams.update(_ngram_hashes(words, k))
    progress(f"indexed {task.name}/{split}: {_counted(len(rows), 'row')}, {_counted(len(grams), 'gram')}")
    return np.unique(np.fromiter(grams, dtype=np.int64, count=len(grams)))


def _no_progress(line: str) -> None:
    """The default `progress` of `find_overlap`: says nothing."""


def _counted(count: int, noun: str) -> str:
    """`count` and `noun`, with an s unless the count is 1: "1 row", "3 rows"."""
    return f"{count} {noun if count == 1 else noun + 's'}"


def _contains(index: np.ndarray, grams: np.ndarray) -> bool:
    positions = np.searchsorted(index, grams)
    inside = positions < len(index)
    return bool((index[positions[inside]] == grams[inside]).any())


def find_overlap(evaluated: Sequence[Tuple[Task, str]], training: Sequence[Task], *, n: int = 13,
                 min_words: int = 8, train_split: str = "train", max_rows: Optional[int] = None,
                 examples: int = 5, progress: Callable[[str], None] = _no_progress) -> List[TaskOverlap]:
    """For each (task, split) of `evaluated`, its rows that share a gram (`row_grams`) with the `train_split`
    rows of any `training` task. `max_rows` limits the rows read per split; `examples` the row indices kept.
    `progress` is called with one short line per split read and per training split indexed (with its row
    count) and one before the rows are compared, never per row; by default nothing is reported."""
    if n < 1 or min_words < 1:
        raise ValueError(f"n ({n}) and min_words ({min_words}) must be >= 1")
    evaluated_rows = []
    for task, split in evaluated:
        rows = task.load_rows(split, max_rows=max_rows)
        progress(f"read {task.name}/{split}: {_counted(len(rows), 'row')}")
        evaluated_rows.append((task, split, rows))
    # a short evaluation field is looked up among the training grams of its own length
    lengths = {n}.union(*(_short_lengths(rows, n, min_words) for _, _, rows in evaluated_rows))
    indexes = {task.name: _training_index(task, train_split, lengths, max_rows, progress) for task in training}
    progress(f"comparing {_counted(len(evaluated_rows), 'evaluated split')} with "
             f"{_counted(len(indexes), 'training split')}")
    out = []
    for task, split, rows in evaluated_rows:
        report = TaskOverlap(task.name, split, 0, 0)
        for position, row in enumerate(rows):
            report.rows += 1
            grams = np.fromiter(row_grams(row, n, min_words), dtype=np.int64)
            hits = [name for name, index in indexes.items() if grams.size and _contains(index, grams)]
            if hits:
                report.overlapping += 1
                for name in hits:
                    report.training_tasks[name] = report.training_tasks.get(name, 0) + 1
                if len(report.examples) < examples:
                    report.examples.append(position)
        out.append(report)
    return out
