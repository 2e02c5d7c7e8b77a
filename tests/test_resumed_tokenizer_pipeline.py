"""A resume refuses a tokenizer with the checkpoint's vocabulary but another pipeline (normalizer, post-processor,
added tokens, decoder): it would feed the weights other ids for the same texts, or turn the same predictions into
other texts (`check_resumed_tokenizer`)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

import pytest

from t2t_mtl.config import config_from_dict
from t2t_mtl.engine.checkpoint import CheckpointError
from t2t_mtl.engine.run_tokenizer import check_resumed_tokenizer
from t2t_mtl.tokenizer import load_tokenizer

from engine_helpers import tiny_config

#: T5's special ids, then the pieces of both cases: lowercasing the text gives the same vocabulary other ids
VOCAB = {"<pad>": 0, "</s>": 1, "<unk>": 2, "the": 3, "cat": 4, "The": 5, "Cat": 6, ".": 7}


def _tokenizer(out: Path, normalizer: Optional[Any] = None, eos_twice: bool = False,
               decoder: Optional[Any] = None) -> Path:
    """A WordLevel tokenizer built with `tokenizers` over `VOCAB` (whitespace and punctuation split, '$A </s>'
    appended, `decoder` if given), saved with save_pretrained into `out`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if normalizer is not None:
        backend.normalizer = normalizer
    if decoder is not None:
        backend.decoder = decoder
    single = "$A </s> </s>" if eos_twice else "$A </s>"
    backend.post_processor = processors.TemplateProcessing(single=single, special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(str(out))
    return out


def _run_with(tmp_path: Path, tokenizer: Path) -> Path:
    """A run folder whose tokenizer/ is a copy of `tokenizer`; its checkpoint's path (no files needed)."""
    load_tokenizer(tokenizer).save_pretrained(str(tmp_path / "run" / "tokenizer"))
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000002"
    ckpt.mkdir(parents=True)
    return ckpt


def _config(tmp_path: Path, tokenizer: Path) -> Any:
    return config_from_dict(tiny_config(tmp_path / "new", tokenizer, tmp_path / "cache"))


def test_a_resume_with_the_same_vocabulary_but_a_lowercasing_normalizer_is_refused_naming_it(tmp_path):
    # was: only the vocabularies were compared, equal here, so the resumed run fed the weights 'the cat' (3 4) for
    # what its first part trained on as 'The Cat' (5 6) without a word
    from tokenizers import normalizers

    cased = _tokenizer(tmp_path / "cased")
    lowercased = _tokenizer(tmp_path / "lower", normalizers.Lowercase())
    assert load_tokenizer(lowercased).get_vocab() == load_tokenizer(cased).get_vocab()
    assert load_tokenizer(lowercased)("The Cat")["input_ids"] != load_tokenizer(cased)("The Cat")["input_ids"]
    ckpt = _run_with(tmp_path, cased)
    message = (rf"checkpoint {re.escape(str(ckpt))} was trained with the tokenizer in "
               rf"{re.escape(str(tmp_path / 'run' / 'tokenizer'))} \(8 tokens\), this run's tokenizer\.path "
               rf"'{re.escape(str(lowercased))}' gives one with the same 8 tokens but another normalizer \(Lowercase; "
               rf"the checkpoint's: none\) \(it encodes 'The Cat sat on the Mat\.' as the cat <unk> <unk> the <unk> "
               rf"\. </s>, the checkpoint's as The Cat <unk> <unk> the <unk> \. </s>\): resume with tokenizer\.path "
               rf"set to {re.escape(str(tmp_path / 'run' / 'tokenizer'))}, or set training\.output_dir")
    with pytest.raises(CheckpointError, match=message):
        check_resumed_tokenizer(_config(tmp_path, lowercased), None, ckpt)
    check_resumed_tokenizer(_config(tmp_path, cased), None, ckpt)


def test_a_resume_with_another_post_processor_or_added_token_options_is_refused_and_task_tokens_are_not(tmp_path):
    from t2t_mtl.analysis.task_embeddings import TaskTokens

    cased = _tokenizer(tmp_path / "cased")
    ckpt = _run_with(tmp_path, cased)
    twice = _tokenizer(tmp_path / "twice", eos_twice=True)
    with pytest.raises(CheckpointError, match=r"another post-processor \(TemplateProcessing\(\$A </s> </s>\); the "
                                              r"checkpoint's: TemplateProcessing\(\$A </s>\)\) \(it encodes "):
        check_resumed_tokenizer(_config(tmp_path, twice), None, ckpt)
    unsplit = load_tokenizer(cased)  # '</s>' written in a text: split into pieces, not read as the special token
    unsplit.split_special_tokens = True  # (was: read from the backend alone, which takes it at the next encoding)
    with pytest.raises(CheckpointError, match=r"another special-token splitting \(split_special_tokens\) \(True; "
                                              r"the checkpoint's: False\)"):
        check_resumed_tokenizer(_trained(tmp_path), unsplit, ckpt)
    cuts_left = load_tokenizer(cased)  # (was: compared on whole texts alone, so accepted; validation cuts with it)
    cuts_left.truncation_side = "left"
    with pytest.raises(CheckpointError, match=r"the same 8 tokens that encodes texts otherwise \(it encodes 'The Cat "
                                              r"sat on the Mat\.' \(cut to 4 tokens\) as the <unk> \. </s>, the "
                                              r"checkpoint's as The Cat <unk> </s>\)"):
        check_resumed_tokenizer(_trained(tmp_path), cuts_left, ckpt)
    # the run's own copy holds the <task:NAME> tokens model.task_embeddings added; the configured one does not
    own = load_tokenizer(tmp_path / "run" / "tokenizer")
    TaskTokens(own, ["a", "b"])
    own.save_pretrained(str(tmp_path / "run" / "tokenizer"))
    check_resumed_tokenizer(_config(tmp_path, cased), None, ckpt)


def test_a_resume_with_another_decoder_is_refused_naming_both_and_how_it_decodes_the_same_ids(tmp_path):
    # was: the decoder was left out of the comparison, so the resumed run's predictions of the same ids became
    # 'TheCat' where its first part's were 'The Cat', and were scored so, without a word
    from tokenizers import decoders

    spaced = _tokenizer(tmp_path / "spaced")
    fused = _tokenizer(tmp_path / "fused", decoder=decoders.Fuse())
    ids = load_tokenizer(spaced)("The Cat")["input_ids"]
    assert load_tokenizer(fused)("The Cat")["input_ids"] == ids
    assert load_tokenizer(fused).decode(ids, skip_special_tokens=True) == "TheCat"
    assert load_tokenizer(spaced).decode(ids, skip_special_tokens=True) == "The Cat"
    ckpt = _run_with(tmp_path, spaced)
    with pytest.raises(CheckpointError, match=(
            rf"this run's tokenizer\.path '{re.escape(str(fused))}' gives one with the same 8 tokens but another "
            rf"decoder \(Fuse; the checkpoint's: none\) \(it decodes the ids of 'The Cat sat on the Mat\.' as "
            rf"'TheCatthe\.', the checkpoint's as 'The Cat the \.'\): resume with tokenizer\.path set to "
            rf"{re.escape(str(tmp_path / 'run' / 'tokenizer'))}, or set training\.output_dir")):
        check_resumed_tokenizer(_config(tmp_path, fused), None, ckpt)
    check_resumed_tokenizer(_config(tmp_path, spaced), None, ckpt)


class _Decoding:
    """A tokenizer without a serialisation (no `backend_tokenizer`) whose ids of a text are its words' in `VOCAB`,
    decoded with `separator` between the pieces."""

    def __init__(self, separator: str):
        self.separator = separator

    def get_vocab(self) -> dict:
        return dict(VOCAB)

    def __call__(self, text: str) -> dict:
        return {"input_ids": [VOCAB.get(word, 2) for word in text.split()]}

    def decode(self, ids: list, skip_special_tokens: bool = False) -> str:
        pieces = {i: piece for piece, i in VOCAB.items()}
        return self.separator.join(pieces[i] for i in ids if not (skip_special_tokens and i < 3))


def test_tokenizers_without_a_serialisation_are_compared_by_their_decodings_of_the_probe_texts_ids():
    from t2t_mtl.engine.tokenizer_match import decode_difference

    assert decode_difference(_Decoding(" "), _Decoding(" ")) is None
    assert decode_difference(_Decoding(" "), _Decoding("")) == ("the ids of 'The Cat sat on the Mat.' as 'TheCatthe', "
                                                                 "the checkpoint's as 'The Cat the'")


def _trained(tmp_path: Path) -> Any:
    """A config without tokenizer.path: the run trains its tokenizer, the one check_resumed_tokenizer is given."""
    base = tiny_config(tmp_path / "new", tmp_path, tmp_path / "cache")
    return config_from_dict({**base, "tokenizer": {"path": None}})


class _Unserialised:
    """A tokenizer without a serialisation (no `backend_tokenizer`) over `VOCAB`, lowercasing or not."""

    def __init__(self, lowercase: bool):
        self.lowercase = lowercase

    def get_vocab(self) -> dict:
        return dict(VOCAB)

    def __call__(self, text: Optional[str] = None, text_target: Optional[str] = None, add_special_tokens: bool = True,
                 max_length: Optional[int] = None, **_: Any) -> dict:
        written = text if text is not None else text_target
        words = (written.lower() if self.lowercase else written).replace(".", " .").split()
        return {"input_ids": ([VOCAB.get(word, 2) for word in words] + [1] * add_special_tokens)[:max_length]}

    def convert_ids_to_tokens(self, ids: list) -> list:
        pieces = {i: piece for piece, i in VOCAB.items()}
        return [pieces[i] for i in ids]


def test_tokenizers_without_a_serialisation_are_compared_by_their_encodings_of_the_probe_texts():
    from t2t_mtl.engine.tokenizer_match import differing_parts, probe_difference

    cased, lowercased = _Unserialised(False), _Unserialised(True)
    assert differing_parts(cased, lowercased) == []
    assert probe_difference(cased, _Unserialised(False)) is None
    assert probe_difference(cased, lowercased) == ("'The Cat sat on the Mat.' as the cat <unk> <unk> the <unk> . </s>, "
                                                   "the checkpoint's as The Cat <unk> <unk> the <unk> . </s>")


def test_the_differing_parts_name_added_tokens_new_missing_or_changed_and_a_normalizer_sequence(tmp_path):
    from tokenizers import normalizers

    from t2t_mtl.engine.tokenizer_match import differing_parts

    cased = load_tokenizer(_tokenizer(tmp_path / "cased"))
    added = load_tokenizer(_tokenizer(tmp_path / "added"))
    added.add_tokens(["Cat"])  # a piece of the vocabulary made an added token: the same vocabulary
    special = load_tokenizer(_tokenizer(tmp_path / "special"))
    special.add_tokens(["Cat"], special_tokens=True)
    assert added.get_vocab() == special.get_vocab() == cased.get_vocab()
    assert differing_parts(cased, added) == ["added tokens (Cat not in the checkpoint's)"]
    assert differing_parts(added, cased) == ["added tokens (Cat missing)"]
    assert differing_parts(added, special) == ["added tokens (Cat with other options (id, special, lstrip, rstrip, "
                                               "normalized, single_word))"]
    both = load_tokenizer(_tokenizer(tmp_path / "both", normalizers.Sequence([normalizers.NFKC(),
                                                                              normalizers.Lowercase()])))
    assert differing_parts(cased, both) == ["normalizer (Sequence(NFKC, Lowercase); the checkpoint's: none)"]


def test_a_model_of_the_same_kind_with_other_settings_is_named_so(tmp_path):
    import json

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from t2t_mtl.engine.tokenizer_match import differing_parts

    cased = load_tokenizer(_tokenizer(tmp_path / "cased"))
    state = json.loads(cased.backend_tokenizer.to_str())
    state["model"]["unk_token"] = "."  # the same WordLevel vocabulary, another unknown piece
    other = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(state)), pad_token="<pad>",
                                    eos_token="</s>")
    assert other.get_vocab() == cased.get_vocab()
    assert differing_parts(cased, other) == ["model (WordLevel with other settings or scores)"]


def test_a_tokenizer_with_a_serialisation_against_one_without_is_not_compared_by_parts(tmp_path):
    from t2t_mtl.engine.tokenizer_match import differing_parts

    with_one = load_tokenizer(_tokenizer(tmp_path / "t"))
    assert differing_parts(with_one, _Unserialised(False)) == []
    assert differing_parts(_Unserialised(False), with_one) == []


def test_the_decodings_compare_the_ids_the_checkpoints_tokenizer_gives_and_need_two_decoders():
    from t2t_mtl.engine.tokenizer_match import decode_difference

    class _Lowercasing(_Decoding):
        def __call__(self, text: str) -> dict:
            return super().__call__(text.lower())

    # the ids of the checkpoint's tokenizer (The Cat: 5 6), decoded by both; not the resumed one's (the cat: 3 4)
    assert decode_difference(_Decoding(" "), _Lowercasing("")) == ("the ids of 'The Cat sat on the Mat.' as "
                                                                    "'TheCatthe', the checkpoint's as 'The Cat the'")
    assert decode_difference(_Decoding(" "), _Unserialised(False)) is None  # (no decode: nothing to compare)
    assert decode_difference(_Unserialised(False), _Decoding(" ")) is None
