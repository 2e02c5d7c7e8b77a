"""Tokenizers: train a SentencePiece unigram model into a T5-style tokenizer, or load any HF tokenizer.

A trained tokenizer follows T5's id layout exactly: ``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2, no BOS,
the SentencePiece pieces next, and the 100 sentinels ``<extra_id_99> .. <extra_id_0>`` after them (so
``<extra_id_0>`` is the last id, as in T5). Every encoded sequence ends with ``</s>``.
"""
from __future__ import annotations

import io
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional, Union

from t2t_mtl.wording import counted, one_line

if TYPE_CHECKING:  # transformers loads only when a tokenizer is made
    from transformers import PreTrainedTokenizerBase

SPIECE_FILE = "spiece.model"
NUM_SENTINELS = 100
MIN_VOCAB_SIZE = 4  # pad, eos, unk and one piece
MAX_VOCAB_SIZE = 2 ** 31 - 1  # SentencePiece reads the size as a 32-bit integer
T5_SPECIAL_PIECES = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2

PathLike = Union[str, "os.PathLike[str]"]


class TokenizerTrainingError(ValueError):
    """The corpus or the options cannot produce a SentencePiece model (the message says what to change)."""


class TokenizerLoadError(ValueError):
    """A tokenizer name or path could not be loaded (the message names it and says what to check)."""


#: what the tokenizer reads as one special token before SentencePiece sees the text (span corruption's sentinels,
#: <extra_id_0> to <extra_id_99>: a higher or zero-padded number is text to it)
_SPECIAL_TEXT = re.compile("|".join(re.escape(token) for token in (
    *(f"<extra_id_{number}>" for number in range(NUM_SENTINELS)), *T5_SPECIAL_PIECES)))


def _corpus_lines(texts: Iterable[str]) -> Iterator[str]:
    """Yield every non-empty line of every text (SentencePiece trains on lines, not on multi-line texts), special
    tokens written in it (``<extra_id_0>``, ``</s>``, ...) replaced by a space: the tokenizer encodes them as their
    own ids, so their letters must not take pieces of the vocabulary."""
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise TokenizerTrainingError(
                f"train_tokenizer: text #{position} is a {type(text).__name__}, not a str; pass strings "
                f"(e.g. rendered inputs and targets)"
            )
        for line in _SPECIAL_TEXT.sub(" ", text).splitlines():
            if line.strip():
                yield line


def train_sentencepiece(texts: Iterable[str], vocab_size: int = 8000, *, split_digits: bool = True,
                        character_coverage: float = 1.0) -> bytes:
    """Train a unigram SentencePiece model with T5's special ids and return the serialized model.

    ``vocab_size`` counts the SentencePiece pieces (pad, eos, unk included), not the 100 sentinels, and is an
    upper bound: on a corpus too small to fill it the model is smaller (``hard_vocab_limit=False``).
    ``split_digits`` keeps numbers as single digits, which makes arithmetic learnable by small models.
    """
    import sentencepiece as spm

    if vocab_size < MIN_VOCAB_SIZE:
        raise TokenizerTrainingError(f"train_tokenizer: vocab_size={vocab_size} is too small; use at least "
                                     f"{MIN_VOCAB_SIZE}")
    if vocab_size > MAX_VOCAB_SIZE:  # (SentencePiece's own error was a bare ValueError, "cannot parse ... as int")
        raise TokenizerTrainingError(f"train_tokenizer: vocab_size={vocab_size} is too large; SentencePiece takes at "
                                     f"most {MAX_VOCAB_SIZE}")
    lines = list(_corpus_lines(texts))
    if not lines:
        raise TokenizerTrainingError("train_tokenizer: the corpus is empty; pass at least one non-empty text")
    longest = max(len(line.encode("utf-8")) for line in lines)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=model,
            model_type="unigram",
            vocab_size=vocab_size,
            pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
            pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
            hard_vocab_limit=False,
            character_coverage=character_coverage,
            split_digits=split_digits,
            # no line is skipped for being long: every text counts
            max_sentence_length=max(4192, longest + 1),
            input_sentence_size=0,
            shuffle_input_sentence=False,
            num_threads=1,
            minloglevel=2,
        )
    except RuntimeError as error:
        raise TokenizerTrainingError(
            f"train_tokenizer: SentencePiece could not train a {vocab_size}-piece model on "
            f"{counted(len(lines), 'line')}: {error}. Raise vocab_size above the number of distinct characters, or "
            f"add text"
        ) from error
    return model.getvalue()


def train_tokenizer(texts: Iterable[str], out_dir: PathLike, vocab_size: int = 8000, *,
                    split_digits: bool = True, character_coverage: float = 1.0) -> PreTrainedTokenizerBase:
    """Train SentencePiece on ``texts`` and save a T5 tokenizer with 100 sentinels into ``out_dir``.

    Writes ``out_dir/spiece.model`` plus the transformers files (``save_pretrained``) and returns the loaded
    tokenizer; ``load_tokenizer(out_dir)`` gives the same tokenizer back. Ids: pad 0, eos 1, unk 2, no bos.
    """
    model_bytes = train_sentencepiece(texts, vocab_size, split_digits=split_digits,
                                      character_coverage=character_coverage)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as staging:
        # transformers 5 ignores T5Tokenizer(vocab_file=...); a folder holding spiece.model loads correctly.
        (Path(staging) / SPIECE_FILE).write_bytes(model_bytes)
        tokenizer = _t5_from_sentencepiece_folder(staging)
        tokenizer.save_pretrained(str(out))
    (out / SPIECE_FILE).write_bytes(model_bytes)
    return load_tokenizer(out)


def _t5_from_sentencepiece_folder(folder: PathLike):
    """A T5 tokenizer from a folder's ``spiece.model`` when it has one, else from its ``tokenizer.json``.

    ``spiece.model`` carries SentencePiece's normalisation (T5's ``nmt_nfkc``: NFKC, ligatures, full-width
    forms, zero-width characters); a ``tokenizer.json`` without a normalizer (as in ``../shared/tokenizers/t5``)
    would map such characters to ``<unk>``, so the SentencePiece model is preferred.
    """
    from transformers import T5Tokenizer

    spiece = Path(folder) / SPIECE_FILE
    if spiece.exists():
        return _t5_from_sentencepiece_model(spiece, str(folder))
    return T5Tokenizer.from_pretrained(str(folder), extra_ids=NUM_SENTINELS)


def _t5_from_sentencepiece_model(model: Path, name: str):
    """A T5 tokenizer (its 100 sentinels added) from the SentencePiece model file `model`, named `name`."""
    from transformers import T5Tokenizer

    return T5Tokenizer(**T5Tokenizer.convert_to_native_format(vocab_file=str(model)), extra_ids=NUM_SENTINELS,
                       name_or_path=name)


def names_sentencepiece_model(path: PathLike) -> bool:
    """Whether `path` is named as a SentencePiece model file (`*.model`, as T5's spiece.model), which loads as a
    tokenizer: a file, not a folder, whether or not it exists."""
    return Path(path).suffix == ".model"


def file_tokenizer_problem(path: PathLike) -> Optional[str]:
    """Why the existing file `path` cannot be a tokenizer (None: it is named as a SentencePiece model, `*.model`,
    which loads as T5's vocabulary, as seqio's `SentencePieceVocabulary` takes one)."""
    if names_sentencepiece_model(path):
        return None
    return (f"tokenizer path {path} is a file; pass the folder that holds it (a file is a tokenizer only as a "
            f"SentencePiece model, *.model, such as T5's spiece.model)")


def _check_t5_tokenizer_json(path: Path) -> None:
    """A bare ``tokenizer.json`` loads as T5's only if it holds a Unigram model (T5's); else a clear error."""
    import json

    try:
        model = json.loads(path.read_text(encoding="utf-8")).get("model") or {}
    except (OSError, ValueError, AttributeError) as error:
        raise TokenizerLoadError(f"could not read {path}: {error}; pass a folder with a valid tokenizer.json") from None
    kind = model.get("type") if isinstance(model, dict) else None
    if kind != "Unigram":
        raise TokenizerLoadError(
            f"{path} holds a {kind or 'untyped'} model and its folder no tokenizer_config.json: only T5's (Unigram) "
            f"vocabulary loads from bare files; save the tokenizer with save_pretrained (it writes "
            f"tokenizer_config.json) or pass its hub name"
        )
    vocab = model.get("vocab") or []
    _check_t5_layout(path, [entry[0] if isinstance(entry, list) and entry else None for entry in vocab[:3]])


def _check_t5_sentencepiece(path: Path) -> None:
    """A bare SentencePiece model loads as T5's only where T5's tokenizer encodes as SentencePiece does: a unigram
    (or character) model without byte fallback that puts a space in front of a text and removes extra spaces (a BPE
    model's merges, a word model's whole words, the bytes byte fallback writes for a character it has no piece for
    and those options' other spaces are not T5's), with T5's ids (`_check_t5_layout`)."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    try:
        model = spm.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as error:
        raise TokenizerLoadError(f"could not read {path}: {error}; pass a folder with a valid {SPIECE_FILE}") from None
    proto = sentencepiece_model_pb2.ModelProto.FromString(model.serialized_model_proto())
    spec, normalizer = proto.trainer_spec, proto.normalizer_spec
    kind = spec.ModelType.Name(spec.model_type)
    unlike_t5 = [f"model_type {kind}"] if spec.model_type in (spec.BPE, spec.WORD) else []
    unlike_t5 += [option for option, differs in (
        ("byte_fallback true", spec.byte_fallback), ("add_dummy_prefix false", not normalizer.add_dummy_prefix),
        ("remove_extra_whitespaces false", not normalizer.remove_extra_whitespaces),
        ("treat_whitespace_as_suffix true", spec.treat_whitespace_as_suffix)) if differs]
    if unlike_t5:
        raise TokenizerLoadError(
            f"{path} is a SentencePiece model that T5's tokenizer (unigram, no byte fallback, a space put in front, "
            f"extra spaces removed) would encode otherwise than SentencePiece does: {', '.join(unlike_t5)}; train a "
            f"unigram one with `t2t-mtl tokenizer train`, or pass a folder saved with save_pretrained by the "
            f"transformers tokenizer made for it")
    _check_t5_layout(path, [model.id_to_piece(i) for i in range(min(3, model.get_piece_size()))])


def _check_t5_layout(path: Path, first: list) -> None:
    """A bare vocabulary loads as T5's only with T5's ids (pad 0, eos 1, unk 2), which the models built from
    dimensions use: elsewhere the pad token would be added after the sentinels and EOS be another id."""
    if list(first) != list(T5_SPECIAL_PIECES):
        raise TokenizerLoadError(
            f"{path} has {', '.join(map(str, first))} at ids 0-{len(first) - 1}, not T5's "
            f"{', '.join(T5_SPECIAL_PIECES)} (a T5 pads with 0 and ends with 1); train the SentencePiece model with "
            f"pad_id=0 eos_id=1 unk_id=2 bos_id=-1, as `t2t-mtl tokenizer train` does"
        )


def _with_vocabulary(tokenizer, target: str):
    """`tokenizer`, unless it has no vocabulary of its own: transformers 5 builds one silently (T5's: the special
    tokens, the sentinels and ``▁``, every word ``<unk>``) from a folder whose ``tokenizer_config.json`` has lost
    its vocabulary file (``tokenizer.json``, ``spiece.model``, ...)."""
    added = set(tokenizer.get_added_vocab())
    if sum(token not in added for token in tokenizer.get_vocab()) <= 1:
        raise TokenizerLoadError(
            f"tokenizer {target!r} has no vocabulary (only its {len(added)} special and added tokens): its "
            f"tokenizer_config.json has no tokenizer.json or spiece.model beside it; copy the whole folder "
            f"saved with save_pretrained, or train one with `t2t-mtl tokenizer train`"
        )
    return tokenizer


#: the text `own_encoding_problem` encodes to compare the tokenizer's own special tokens with T5's (a final EOS)
PROBE_TEXT = "a"


def own_encoding_problem(tokenizer: Any) -> Optional[str]:
    """How the tokenizer's own encoding of a text (its special tokens added, as input or as target) differs from
    the text's tokens followed by its EOS alone, T5's encoding and the one training uses (`tokenize_dataset`'s
    `append_eos`); None where it does not differ. Evaluation, periodic validation and predict encode with the
    tokenizer's own special tokens, so a tokenizer that adds a BOS / [CLS] in front, or no EOS at the end, would be
    scored on sequences the model never trained on."""
    eos = tokenizer.eos_token_id
    if eos is None:
        return "has no end-of-sequence token (eos_token), so no target would end"
    for field, role in (("text", "a text"), ("text_target", "a target")):
        plain = list(tokenizer(**{field: PROBE_TEXT}, add_special_tokens=False)["input_ids"])
        own = list(tokenizer(**{field: PROBE_TEXT})["input_ids"])
        if own == plain + [eos]:
            continue
        def shown(ids: list) -> str:
            return " ".join(tokenizer.convert_ids_to_tokens(ids))

        starts = [i for i in range(len(own) - len(plain) + 1) if own[i:i + len(plain)] == plain]
        if not plain or not starts:
            return (f"encodes {role} {PROBE_TEXT!r} as {shown(own) or 'nothing'}, not as its tokens followed by "
                    f"{tokenizer.eos_token}")
        before, after = own[:starts[0]], own[starts[0] + len(plain):]
        wrong = [f"puts {shown(before)} in front of it"] if before else []
        if after != [eos]:
            wrong.append(f"ends it with {shown(after)}, not {tokenizer.eos_token} alone" if after else
                         f"adds no {tokenizer.eos_token} at its end")
        return f"encodes {role} {PROBE_TEXT!r} as {shown(own)}: it {' and '.join(wrong)}"
    return None


#: the files of which a tokenizer folder holds at least one
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", SPIECE_FILE)


def _holds_tokenizer_files(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def missing_tokenizer_files(folder: PathLike) -> Optional[str]:
    """Why the existing folder `folder` is no tokenizer (None: it holds one of `TOKENIZER_FILES`), with what to pass
    instead: the `tokenizer/` of the run it is (or whose `checkpoints/step-N` it is), else a tokenizer to train or
    a hub name."""
    folder = Path(folder)
    if _holds_tokenizer_files(folder):
        return None
    run = folder.parent.parent if folder.parent.name == "checkpoints" else folder
    kept = run / "tokenizer"
    instead = (f"it is a run's folder (or one of its checkpoints), which keeps its tokenizer in tokenizer/: pass {kept}"
               if _holds_tokenizer_files(kept) else "train one with `t2t-mtl tokenizer train` or pass a hub name")
    return f"tokenizer folder {folder} holds no tokenizer files ({', '.join(TOKENIZER_FILES)}); {instead}"


def load_tokenizer(name_or_path: PathLike) -> PreTrainedTokenizerBase:
    """Load a tokenizer by HF hub name, local folder or SentencePiece model file (`*.model`, loaded as T5's).

    A folder that holds only T5 vocabulary files (``spiece.model`` / ``tokenizer.json`` without a
    ``tokenizer_config.json``, like a bare copy of T5's vocabulary) loads as a T5 tokenizer, so its EOS,
    pad and sentinels are set as T5 defines them; a bare vocabulary whose ids 0-2 are not ``<pad>``, ``</s>``,
    ``<unk>``, a bare SentencePiece model T5's tokenizer would encode otherwise (BPE, word, byte fallback, other
    whitespace options) or a bare ``tokenizer.json`` of another model kind (BPE, WordPiece, ...) is refused with a
    `TokenizerLoadError`, and so is a tokenizer without a vocabulary (a ``tokenizer_config.json`` whose
    ``tokenizer.json`` / ``spiece.model`` is missing).
    """
    from transformers import AutoTokenizer

    from t2t_mtl.hub import looks_like_path, path_reading, use_hub_for

    target = str(name_or_path)
    folder = Path(target)
    if folder.exists() and not folder.is_dir():
        problem = file_tokenizer_problem(folder)
        if problem:
            raise TokenizerLoadError(problem)
        _check_t5_sentencepiece(folder)
        return _t5_from_sentencepiece_model(folder, target)
    if not folder.exists() and looks_like_path(target):  # (was the hub's "Repo id must be in the form ..." for it)
        if names_sentencepiece_model(target):
            raise TokenizerLoadError(f"could not load tokenizer {target!r}: no such file; pass an existing "
                                     f"SentencePiece model file (*.model, such as T5's spiece.model) or a folder "
                                     f"saved with save_pretrained")
        raise TokenizerLoadError(
            f"could not load tokenizer {target!r}: no such folder ({path_reading(target)}); pass a folder saved "
            f"with save_pretrained, such as a run's tokenizer/ or one `t2t-mtl tokenizer train` wrote")
    try:
        if folder.is_dir() and not (folder / "tokenizer_config.json").exists():
            if (folder / SPIECE_FILE).exists():
                _check_t5_sentencepiece(folder / SPIECE_FILE)
                return _t5_from_sentencepiece_folder(folder)
            if (folder / "tokenizer.json").exists():
                _check_t5_tokenizer_json(folder / "tokenizer.json")
                return _t5_from_sentencepiece_folder(folder)
            raise TokenizerLoadError(missing_tokenizer_files(folder))
        use_hub_for(target)  # (a hub that cannot be reached: offline mode, so a name not cached fails at once)
        return _with_vocabulary(AutoTokenizer.from_pretrained(target), target)
    except TokenizerLoadError:
        raise
    except (OSError, ValueError) as error:
        raise TokenizerLoadError(
            f"could not load tokenizer {target!r}: {one_line(error).rstrip('.')}. Pass a local folder saved with "
            f"save_pretrained or a hub name (the hub needs network access)"
        ) from error


def mixture_texts(mixture: str, *, max_examples: Optional[int] = None, split: Optional[str] = None,
                  seed: int = 0, where: str = "mixture") -> Iterator[str]:
    """Every rendered input, target and answer choice of the tasks in a registered mixture, one task or
    comma-separated mixtures / tasks.

    Each task contributes up to ``max_examples`` rows of ``split`` (default: ``train`` when the task has it,
    else its first split), each rendered once, by one of the task's templates chosen per row from ``seed`` (as
    `Task.to_dataset` renders; the rows themselves do not depend on ``seed``). An error in the comma-separated names
    names ``where`` (the option that gave ``mixture``).
    """
    import task_registry

    task_registry.load_builtin_tasks()
    target = task_registry.resolve_selection(mixture, where)
    task_names = list(target.flatten()) if isinstance(target, task_registry.Mixture) else [target.name]
    for name in task_names:
        task = task_registry.get_task(name)
        task_split = split or ("train" if "train" in task.splits else task.splits[0])
        yield from rendered_texts(task.to_dataset(task_split, max_examples=max_examples, seed=seed))


def rendered_texts(dataset: Any, batch_size: int = 1000) -> Iterator[str]:
    """Each row's ``inputs``, ``targets`` and answer choices, row after row, of a rendered dataset
    (`Task.to_dataset`): the texts a tokenizer is trained on. Read a batch of columns at a time, not a dict per row
    (which cost ~40 times as much CPU)."""
    for batch in dataset.iter(batch_size=batch_size):
        for inputs, targets, choices in zip(batch["inputs"], batch["targets"], batch["answer_choices"]):
            yield inputs
            yield targets
            yield from choices or ()
