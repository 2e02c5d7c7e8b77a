"""T5's span-corruption objective as a row preprocessor, so unlabelled text can join a multitask mixture.

`SpanCorruption("text")` adds two fields to every row: `corrupted` — the text with random spans of words
replaced by sentinels `<extra_id_0>`, `<extra_id_1>`, ... — and `spans` — each sentinel followed by the words it
replaced (`<extra_id_0> w w <extra_id_1> w ...`); a template `"{{corrupted}} ||| {{spans}}"` then trains the
denoising objective. Span selection follows T5's `random_spans_noise_mask`: round(n · noise_density) noise words
(at least 1, at most n − 1), split into round(noise / mean_span_length) spans (at least 1, at most the 100
sentinels and the kept words, as each span needs a kept run before it), noise and kept words each cut into
that many random non-empty runs, interleaved starting with kept
words. Noise is chosen over whitespace-separated words (T5 masks SentencePiece tokens), seeded by the
preprocessor's seed and the text itself, so a row is corrupted the same way in every run, shard and cache. A
row of fewer than two words cannot be corrupted: its `spans` is empty, so the template skips it (counted in
the task's render statistics, never silently). A long text corrupted whole gives an input and spans longer
than the model's length limits, and truncation would then keep spans whose sentinels were cut from the input:
`max_words` splits every text into consecutive chunks of at most that many words first, each its own row with
the row's other fields (as T5 cuts documents into chunks that fit); choose it so that the corrupted chunk fits
`data.max_input_length` tokens and its spans `data.max_target_length` (the tokenizer's truncation warning
names the rows that do not).
"""
from __future__ import annotations

import hashlib
import random
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .code_digests import code_digest
from .errors import TaskDefinitionError
from .lazy_modules import LazyModule
from .preprocessors import AnyDataset, Preprocessor

datasets = LazyModule("datasets")

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
                 max_words: Optional[int] = None, inputs_field: str = "corrupted", targets_field: str = "spans"):
        if not isinstance(field, str) or not field:
            raise TaskDefinitionError(f"span_corruption needs the name of a text field, got {field!r}")
        for key, value in (("inputs_field", inputs_field), ("targets_field", targets_field)):
            if not isinstance(value, str) or not value:
                raise TaskDefinitionError(f"span_corruption {key} must be the name of a new field, got {value!r}")
        if inputs_field == targets_field:
            raise TaskDefinitionError(f"span_corruption inputs_field and targets_field must differ, both are "
                                      f"{inputs_field!r}")
        if isinstance(noise_density, bool) or not isinstance(noise_density, (int, float)) \
                or not 0 < noise_density < 1:
            raise TaskDefinitionError(f"span_corruption noise_density must be in (0, 1), got {noise_density!r}")
        if isinstance(mean_span_length, bool) or not isinstance(mean_span_length, (int, float)) \
                or not mean_span_length >= 1:
            raise TaskDefinitionError(f"span_corruption mean_span_length must be >= 1, got {mean_span_length!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TaskDefinitionError(f"span_corruption seed must be an integer, got {seed!r}")
        if max_words is not None and (isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 2):
            raise TaskDefinitionError(f"span_corruption max_words must be an integer >= 2, got {max_words!r}")
        self.max_words = max_words
        self.keeps_rows = max_words is None  # chunking makes several rows of a long text
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

    def _text(self, row: Mapping[str, Any]) -> str:
        if self.field not in row:
            raise TaskDefinitionError(f"span_corruption: the rows have no field {self.field!r}; fields are "
                                      f"{sorted(row)}")
        text = row[self.field]
        if not isinstance(text, str):
            raise TaskDefinitionError(f"span_corruption: field {self.field!r} must be text, got "
                                      f"{type(text).__name__} {text!r:.80}")
        return text

    def _apply(self, row: Mapping[str, Any]) -> Mapping[str, Any]:
        corrupted, spans = self.corrupt(self._text(row))
        return {self.inputs_field: corrupted, self.targets_field: spans}

    def _apply_chunked(self, batch: Mapping[str, List[Any]]) -> Dict[str, List[Any]]:
        """Each row's text cut into chunks of at most `max_words` words, one output row per chunk."""
        # the new fields replace columns of the same name (the text field too), as without chunking
        out: Dict[str, List[Any]] = {key: [] for key in dict.fromkeys([*batch, self.inputs_field, self.targets_field])}
        for k in range(len(next(iter(batch.values())))):
            row = {key: values[k] for key, values in batch.items()}
            words = self._text(row).split()
            chunks = [" ".join(words[i:i + self.max_words]) for i in range(0, len(words), self.max_words)] or [""]
            for chunk in chunks:
                corrupted, spans = self.corrupt(chunk)
                chunk_row = {**row, self.field: chunk, self.inputs_field: corrupted, self.targets_field: spans}
                for key, values in out.items():
                    values.append(chunk_row[key])
        return out

    def __call__(self, dataset: AnyDataset) -> AnyDataset:
        if self.max_words is None:
            return dataset.map(self._apply, **self._fingerprint(dataset))
        return dataset.map(self._apply_chunked, batched=True, **self._fingerprint(dataset))

    def _fingerprint(self, dataset: AnyDataset) -> Dict[str, Any]:
        """The map's fingerprint (none for a streamed dataset): the input's, the step's settings and `code_digest` of
        its class and of each SpanCorruption class it derives from. datasets alone hashes the settings and names the
        methods without their code, so a corruption edited since (a subclass's, or this one's after an upgrade) would
        be served its old rows."""
        if not isinstance(dataset, datasets.Dataset):
            return {}
        code = [code_digest(kind) for kind in type(self).__mro__ if issubclass(kind, SpanCorruption)]
        hasher = datasets.fingerprint.Hasher
        return {"new_fingerprint": hasher.hash((dataset._fingerprint, hasher.hash(self), code))}

    def describe(self) -> str:
        """`span_corruption(<field>, noise_density=..., mean_span_length=..., seed=..., max_words=...)`, then
        `inputs_field=...` / `targets_field=...` where set away from `corrupted` / `spans` (left unsaid at their
        defaults, so a task that keeps them keeps its `definition_digest`)."""
        named = "".join(f", {key}={value!r}" for key, value, default in (
            ("inputs_field", self.inputs_field, "corrupted"), ("targets_field", self.targets_field, "spans"))
            if value != default)
        return (f"span_corruption({self.field!r}, noise_density={self.noise_density}, "
                f"mean_span_length={self.mean_span_length}, seed={self.seed}, max_words={self.max_words}{named})")
