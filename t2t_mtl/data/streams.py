"""Per-task tokenized example streams, each cached on disk on its own.

A `TokenizedTask` holds one task's rendered-and-tokenized split (input ids with EOS, target ids with EOS)
in an Arrow-backed `datasets.Dataset`, plus the per-row lengths used for bucketing. Each task is tokenized
by `task_registry.tokenize_dataset` (`append_eos=True`) once and cached as
`<cache_dir>/<task>/<split>-<key>.arrow`, the key being that call's fingerprint (the rendered dataset's
fingerprint, the tokenizer, the length limits and the options), so a changed task, template, tokenizer or
limit never reuses a stale cache and adding a task to a mixture re-tokenizes only that task.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from t2t_mtl.data.arrow_rows import IdRows
from t2t_mtl.data.few_shot import FewShotMix, add_demonstrations, corrupts_spans
from t2t_mtl.task_names import task_name_list

logger = logging.getLogger(__name__)
#: where a damaged cache file is reported: outside the row loggers a rank other than 0 quiets while it reads the rows
#: rank 0 described (`rank_warnings.warned_by_rank_0`), as the damage a rank meets is its own
cache_logger = logging.getLogger("t2t_mtl.tokenized_cache")


class DataPipelineError(ValueError):
    """A task cannot be turned into training examples (empty split, missing data, ...)."""


@dataclass
class TokenizedTask:
    """One task's tokenized split: rows with `input_ids`, `labels`, and their lengths; `template_sizes`: the
    examples of each template it was rendered with ({template: examples}, `RenderStats.kept_of`)."""

    name: str
    split: str
    dataset: Any  # datasets.Dataset with columns input_ids, labels
    input_lengths: np.ndarray
    target_lengths: np.ndarray
    truncated: int
    template_sizes: Dict[str, int] = field(default_factory=dict)
    _id_rows: Optional[IdRows] = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.input_lengths)

    def rows(self, indices: Sequence[int]) -> Dict[str, List[List[int]]]:
        """The `input_ids` and `labels` of the given rows, in the given order (read from the Arrow buffers: `IdRows`,
        made at the first call)."""
        if self._id_rows is None:
            self._id_rows = IdRows(self.dataset, ["input_ids", "labels"])
        return self._id_rows(indices)


def shared_cache_dir() -> Optional[Path]:
    """Where runs that set no `data.cache_dir` keep their tokenized tasks: `t2t_mtl/tokenized` in datasets' cache
    folder (`HF_DATASETS_CACHE`, which holds the rendered rows they are tokenized from), so a new run of the same
    tasks, templates, tokenizer and limits reads the files an earlier one wrote (each is keyed by all of them); None
    when datasets' caching is turned off (`datasets.disable_caching()`)."""
    import datasets

    if not datasets.is_caching_enabled():
        return None
    return Path(datasets.config.HF_DATASETS_CACHE) / "t2t_mtl" / "tokenized"


def _cache_options(cache_dir: Optional[Path], task: str, split: str, key: str) -> Dict[str, Any]:
    """Where `tokenize_dataset` keeps one task's split: `<cache_dir>/<task>/<split>-<key>.arrow`, or memory. A
    cache file there that does not load is removed first (`_drop_unreadable`), so that it is built again."""
    if cache_dir is None:
        return {"keep_in_memory": True}
    folder = Path(cache_dir) / task.replace("/", "__")
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / f"{split}-{key}.arrow"
    _drop_unreadable(file, task)
    return {"cache_file_name": str(file)}


def _drop_unreadable(file: Path, task: str) -> None:
    """Remove `file` (a tokenized-split cache of `task`) when it exists but is no Arrow file datasets loads — cut
    short by a crash, a full disk or a partial copy —, with a warning naming it; one that cannot be removed is a
    DataPipelineError naming it (datasets would fail deep inside, naming neither the file nor the task)."""
    import datasets
    import pyarrow

    if not file.is_file():
        return
    try:
        datasets.Dataset.from_file(str(file))
        return
    except (pyarrow.ArrowException, OSError, ValueError) as error:
        problem = f"{type(error).__name__}: {error}"
    try:
        file.unlink(missing_ok=True)  # (another process may have removed it first)
    except OSError as error:
        raise DataPipelineError(f"task {task!r}: the tokenized-data cache file {file} is damaged ({problem}) and "
                                f"cannot be removed ({error}); remove it, or set data.cache_dir to another "
                                f"folder") from None
    cache_logger.warning("task %s: the tokenized-data cache file %s was damaged (%s); removed, tokenizing again",
                         task, file, problem)


def _list_lengths(dataset: Any, column: str) -> np.ndarray:
    """The length of every row's list in `column`, read straight from Arrow (no per-row Python objects)."""
    import pyarrow.compute as pc

    return np.asarray(pc.list_value_length(dataset.with_format("arrow")[column]), dtype=np.int64)


def rows_holding(dataset: Any, column: str, token_id: int) -> int:
    """How many rows of `dataset` hold `token_id` in their list of ids `column`, read straight from Arrow."""
    import pyarrow.compute as pc

    ids = dataset.with_format("arrow")[column].combine_chunks()
    rows = pc.filter(pc.list_parent_indices(ids), pc.equal(pc.list_flatten(ids), token_id))
    return len(pc.unique(rows))


def warn_unknown_tokens(tokenized: Any, tokenizer: Any, task: str, split: str) -> None:
    """Log how many of a tokenized task's examples hold the tokenizer's unknown token (text it has no token for: T5's
    vocabulary lacks '<' and '{'), in their inputs and in their targets, which the model learns to write; nothing
    when none does, or the tokenizer has no unknown token."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return
    inputs, targets = rows_holding(tokenized, "input_ids", unk), rows_holding(tokenized, "labels", unk)
    if inputs or targets:
        logger.warning("task %s/%s: %d of %d inputs and %d targets hold text the tokenizer has no token for, read as "
                       "%s: the model never sees that text, and learns to write %s where a target holds it, which "
                       "generation drops; `t2t-mtl tasks preview %s --tokenizer RUN/tokenizer` shows such examples "
                       "as tokenized. Rewrite the characters (the template, or a `map` preprocessor) or use a "
                       "tokenizer that has them", task, split, inputs, len(tokenized), targets, tokenizer.unk_token,
                       tokenizer.unk_token, task)


def warn_tokenless_rows(tokenized: Any, task: str, split: str) -> None:
    """Log how many of a tokenized task's examples have inputs and targets whose text, not empty, the tokenizer
    writes as no token (characters its normalisation drops: zero-width spaces, a BOM), so they train as the EOS
    alone; nothing when none does. A row cut to its EOS by a length limit is the truncation warning's."""
    import pyarrow.compute as pc

    arrow = tokenized.with_format("arrow")

    def tokenless(column: str, flags: str) -> int:
        alone = pc.and_(pc.equal(pc.list_value_length(arrow[column]), 1), pc.invert(arrow[flags]))
        return int(pc.sum(alone).as_py() or 0)

    inputs, targets = tokenless("input_ids", "inputs_truncated"), tokenless("labels", "targets_truncated")
    if inputs or targets:
        logger.warning("task %s/%s: %d of %d inputs and %d targets are text the tokenizer writes as no token at all "
                       "(characters its normalisation drops, such as zero-width spaces), so they train as the EOS "
                       "alone: the model never sees such an input, and learns to answer nothing where a target is "
                       "one; `t2t-mtl tasks preview %s --tokenizer RUN/tokenizer` shows their lengths in tokens "
                       "(1: the EOS alone). Rewrite the characters (the template, or a `map` preprocessor)", task,
                       split, inputs, len(tokenized), targets, task)


def special_token_texts(dataset: Any, tokenizer: Any) -> Dict[str, int]:
    """{literal text of the tokenizer's EOS / pad / unk token: number of rendered rows of `dataset` whose inputs or
    targets hold it} (only those found). The tokenizer reads such text as the special token itself (an EOS in a
    target stops generation there), where T5's SentencePiece pipeline would spell it out."""
    import pyarrow.compute as pc

    table = dataset.with_format("arrow")[:]
    found: Dict[str, int] = {}
    for text in dict.fromkeys(t for t in (tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token) if t):
        hits = pc.or_(pc.match_substring(table["inputs"], text), pc.match_substring(table["targets"], text))
        count = pc.sum(hits).as_py() or 0
        if count:
            found[text] = count
    return found


def split_sentinels(tokenizer: Any) -> Dict[str, List[str]]:
    """{T5 sentinel (`<extra_id_0>` .. `<extra_id_99>`, what span corruption writes): the tokens the tokenizer reads
    it as} for each sentinel it has no single token for (none for T5's vocabularies, ByT5's and those
    `t2t-mtl tokenizer train` writes)."""
    from task_registry.span_corruption import NUM_SENTINELS, sentinel

    texts = [sentinel(i) for i in range(NUM_SENTINELS)]
    encoded = tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    return {text: tokenizer.convert_ids_to_tokens(ids) for text, ids in zip(texts, encoded) if len(ids) != 1}


def sentinel_rows(dataset: Any, sentinels: Sequence[str]) -> int:
    """How many rendered rows of `dataset` hold one of `sentinels` in their inputs or targets."""
    import re

    import pyarrow.compute as pc

    table = dataset.with_format("arrow")[:]
    pattern = "|".join(re.escape(text) for text in sentinels)
    hits = pc.or_(*(pc.match_substring_regex(table[column], pattern) for column in ("inputs", "targets")))
    return int(pc.sum(hits).as_py() or 0)


def tokenize_task(
    task: Any,
    tokenizer: Any,
    *,
    split: str,
    max_input_length: int,
    max_target_length: int,
    cache_dir: Optional[Path],
    templates: Optional[List[str]] = None,
    every_template: bool = False,
    max_examples: Optional[int] = None,
    seed: int = 0,
    tok_key: Optional[str] = None,
    few_shot: Optional[FewShotMix] = None,
) -> TokenizedTask:
    """Render `task`'s split with its templates (each row in one, or with `every_template` in each: `Task.to_dataset`),
    tokenize it (EOS appended, truncation counted) and cache it.

    `tok_key` is `task_registry.tokenize.tokenizer_fingerprint(tokenizer)`, computed here when not given.
    `few_shot` puts demonstrations in front of a share of the inputs (`t2t_mtl.data.few_shot`).
    """
    from task_registry.tokenize import count_truncated, tokenize_dataset, tokenized_fingerprint, tokenizer_fingerprint

    with_groups = few_shot is not None and not corrupts_spans(task)  # (for the demonstrations)
    rendered = task.to_dataset(split, templates=templates, every_template=every_template, max_examples=max_examples,
                               seed=seed, with_groups=with_groups)
    if len(rendered) == 0:
        raise DataPipelineError(f"task {task.name!r} has no {split!r} examples after rendering; check its data "
                                f"source and templates (`t2t-mtl tasks preview {task.name} --split {split}`)")
    per_template = task.render_stats[split].kept_of([t.name for t in task.select_templates(templates)])
    tok_key = tok_key or tokenizer_fingerprint(tokenizer)
    literals = special_token_texts(rendered, tokenizer)
    if literals:
        logger.warning("task %s/%s: %s of %d examples hold the text %s, which the tokenizer reads as that special "
                       "token (an EOS in a target ends the answer there); rewrite it in the template or with a `map` "
                       "preprocessor", task.name, split, " / ".join(str(n) for n in literals.values()), len(rendered),
                       " / ".join(repr(t) for t in literals))
    split_up = split_sentinels(tokenizer)
    with_sentinels = sentinel_rows(rendered, list(split_up)) if split_up else 0
    if with_sentinels:
        first = next(iter(split_up))
        logger.warning("task %s/%s: %d of %d examples hold T5 sentinels (<extra_id_N>, span corruption's) that the "
                       "tokenizer has no token for (%d of the 100): it reads each as several tokens (%s as %s), so the "
                       "model learns to write them piece by piece, and inputs and targets grow; use a tokenizer with "
                       "T5's 100 sentinels (T5's vocabulary, or one `t2t-mtl tokenizer train` writes)", task.name,
                       split, with_sentinels, len(rendered), len(split_up), first, " ".join(split_up[first]))
    if few_shot is not None and corrupts_spans(task):
        logger.warning("task %s: left zero-shot by data.few_shot: its inputs are span-corrupted, and a "
                       "demonstration would reuse the sentinels (<extra_id_0>, ...) its own input and target use",
                       task.name)
    elif few_shot is not None:
        rendered = add_demonstrations(rendered, few_shot, tokenizer, max_input_length, seed=seed,
                                      tokenizer_key=tok_key, task=task.name)
    options: Dict[str, Any] = {"append_eos": True, "remove_columns": rendered.column_names}
    key = tokenized_fingerprint(rendered, tok_key, max_input_length, max_target_length, **options)[:16]
    tokenized = tokenize_dataset(rendered, tokenizer, max_input_length, max_target_length, tokenizer_key=tok_key,
                                 desc=f"tokenize {task.name}/{split}", **options,
                                 **_cache_options(cache_dir, task.name, split, key))
    counts = count_truncated(tokenized)
    if counts.rows:
        logger.warning("task %s/%s: %d of %d examples truncated (%d inputs to data.max_input_length=%d, %d targets to "
                       "data.max_target_length=%d): training sees their beginning only; raise those limits to keep "
                       "them whole (`t2t-mtl tasks preview %s --tokenizer RUN/tokenizer` shows lengths in tokens)",
                       task.name, split, counts.rows, len(tokenized), counts.inputs, max_input_length, counts.targets,
                       max_target_length, task.name)
    warn_unknown_tokens(tokenized, tokenizer, task.name, split)
    warn_tokenless_rows(tokenized, task.name, split)
    tokenized = tokenized.select_columns(["input_ids", "labels"])
    return TokenizedTask(task.name, split, tokenized, _list_lengths(tokenized, "input_ids"),
                         _list_lengths(tokenized, "labels"), counts.rows, per_template)


def build_task_streams(
    task_names: Sequence[str],
    tokenizer: Any,
    *,
    split: str,
    max_input_length: int,
    max_target_length: int,
    cache_dir: Optional[Path],
    templates: Optional[List[str]] = None,
    every_template: bool = False,
    max_examples: Optional[int] = None,
    seed: int = 0,
    few_shot: Optional[FewShotMix] = None,
) -> Dict[str, TokenizedTask]:
    """Tokenize every task of the mixture, one cache file per task (see `tokenize_task`). The cache key leaves out
    the tokenizer's `<task:NAME>` tokens (task embeddings put them in front of the ids, never in the text), so a
    task added to the mixture tokenizes that task alone."""
    task_names = task_name_list(task_names, DataPipelineError, where="build_task_streams")
    import task_registry
    from task_registry.tokenize import tokenizer_fingerprint

    from t2t_mtl.analysis.task_embeddings import TASK_TOKEN_PATTERN

    tok_key = tokenizer_fingerprint(tokenizer, ignore_added=TASK_TOKEN_PATTERN.match)
    out = {}
    for name in task_names:
        task = task_registry.get_task(name)
        out[name] = tokenize_task(task, tokenizer, split=split, max_input_length=max_input_length,
                                  max_target_length=max_target_length, cache_dir=cache_dir, templates=templates,
                                  every_template=every_template, max_examples=max_examples, seed=seed,
                                  tok_key=tok_key, few_shot=few_shot)
    return out
