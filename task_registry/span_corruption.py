"""T5's span-corruption objective as a row preprocessor, so unlabelled text can join a multitask mixture.

`SpanCorruption("text")` adds two fields to every row: `corrupted` — the text with random spans of words
replaced by sentinels `<extra_id_0>`, `<extra_id_1>`, ... — and `spans` — each sentinel followed by the words it
replaced (`<extra_id_0> w w <extra_id_1> w ...`); a template `"{{corrupted}} ||| {{spans}}"` then trains the
denoising objective. Span selection follows T5's `random_spans_noise_mask`: round(n · noise_density) noise words
(at least 1, at most n − 1), split into round(noise / mean_span_length) spans (at least 1, at most the 100
sentinels), noise and kept words each cut into that many random non-empty runs, interleaved starting with kept
words. Noise is chosen over whitespace-separated words (T5 masks SentencePiece tokens), seeded by the
preprocessor's seed and the text itself, so a row is corrupted the same way in every run, shard and cache. A
row of fewer than two words cannot be corrupted: its `spans` is empty, so the template skips it (counted in
the task's render statistics, never silently).
"""
from __future__ import annotations

import hashlib
import random
from typing import Any, List, Mapping, Tuple

from .errors import TaskDefinitionError
from .preprocessors import AnyDataset, Preprocessor

NUM_SENTINELS = 100


def sentinel(i: int) -> str:
    """The i-th T5 sentinel token text."""
    return f"<extra_id_{i}>"


def _random_segmentation(num_items: int, num_segments: int, rng: random.Random) -> List[int]:
    """`num_items` split into `num_segments` random non-empty runs (their lengths, in order)."""
    cuts = sorted(rng.sample(range(1, num_items), num_segments - 1))
    bounds = [0, *cuts, num_items]
    return [b - a for a, b in zip(bounds, bounds[1:])]


def random_spans_noise_mask(length: int, noise_density: float, mean_span_length: float,
                            rng: random.Random) -> List[bool]:
    """T5's noise mask over `length` items (True = noise): interleaved kept/noise runs, kept first."""
    if length < 2:
        raise ValueError(f"span corruption needs at least 2 items, got {length}")
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    num_spans = min(max(int(round(num_noise / mean_span_length)), 1), NUM_SENTINELS, num_noise,
                    length - num_noise)
    noise = _random_segmentation(num_noise, num_spans, rng)
    kept = _random_segmentation(length - num_noise, num_spans, rng)
    mask: List[bool] = []
    for keep, drop in zip(kept, noise):
        mask += [False] * keep + [True] * drop
    return mask


def corrupt_spans(words: List[str], mask: List[bool]) -> Tuple[str, str]:
    """(input with each noise span replaced by its sentinel, target: each sentinel followed by its span)."""
    inputs: List[str] = []
    targets: List[str] = []
    span = -1
    for k, (word, noisy) in enumerate(zip(words, mask)):
        if noisy:
            if k == 0 or not mask[k - 1]:
                span += 1
                inputs.append(sentinel(span))
                targets.append(sentinel(span))
            targets.append(word)
        else:
            inputs.append(word)
    return " ".join(inputs), " ".join(targets)


class SpanCorruption(Preprocessor):
    """Add `corrupted` and `spans` fields from the text field `field` (see the module docstring)."""

    keeps_rows = True

    def __init__(self, field: str, *, noise_density: float = 0.15, mean_span_length: float = 3.0, seed: int = 0,
                 inputs_field: str = "corrupted", targets_field: str = "spans"):
        if not isinstance(field, str) or not field:
            raise TaskDefinitionError(f"span_corruption needs the name of a text field, got {field!r}")
        if isinstance(noise_density, bool) or not isinstance(noise_density, (int, float)) \
                or not 0 < noise_density < 1:
            raise TaskDefinitionError(f"span_corruption noise_density must be in (0, 1), got {noise_density!r}")
        if isinstance(mean_span_length, bool) or not isinstance(mean_span_length, (int, float)) \
                or not mean_span_length >= 1:
            raise TaskDefinitionError(f"span_corruption mean_span_length must be >= 1, got {mean_span_length!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TaskDefinitionError(f"span_corruption seed must be an integer, got {seed!r}")
        self.field, self.seed = field, seed
        self.noise_density, self.mean_span_length = float(noise_density), float(mean_span_length)
        self.inputs_field, self.targets_field = inputs_field, targets_field

    def corrupt(self, text: str) -> Tuple[str, str]:
        """(corrupted text, spans) of one text; ("text", "") when it has fewer than two words."""
        words = text.split()
        if len(words) < 2:
            return text, ""
        digest = hashlib.sha256(f"{self.seed}\0{text}".encode("utf-8")).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        return corrupt_spans(words, random_spans_noise_mask(len(words), self.noise_density, self.mean_span_length,
                                                            rng))

    def _apply(self, row: Mapping[str, Any]) -> Mapping[str, Any]:
        if self.field not in row:
            raise TaskDefinitionError(f"span_corruption: the rows have no field {self.field!r}; fields are "
                                      f"{sorted(row)}")
        text = row[self.field]
        if not isinstance(text, str):
            raise TaskDefinitionError(f"span_corruption: field {self.field!r} must be text, got "
                                      f"{type(text).__name__} {text!r:.80}")
        corrupted, spans = self.corrupt(text)
        return {self.inputs_field: corrupted, self.targets_field: spans}

    def __call__(self, dataset: AnyDataset) -> AnyDataset:
        return dataset.map(self._apply)

    def describe(self) -> str:
        return (f"span_corruption({self.field!r}, noise_density={self.noise_density}, "
                f"mean_span_length={self.mean_span_length}, seed={self.seed})")
