"""The checks of a run's tokenizer before the mixture is tokenized (`engine.run_tokenizer`): its special tokens
against the model's, its size against a pretrained model's embedding rows, the `tokenizer.train` options, and a
resume from a run folder without a tokenizer copy."""
from __future__ import annotations

from typing import Any, Dict, List

import pytest

from t2t_mtl import config as config_module
from t2t_mtl.config import ConfigError, config_from_dict
from t2t_mtl.engine.run_tokenizer import (check_resumed_tokenizer, check_special_ids, check_vocabulary_fits,
                                          tokenizer_train_options)
from t2t_mtl.tokenizer import MAX_VOCAB_SIZE, MIN_VOCAB_SIZE

#: a run on a model built from dims (its tokenizer trained or configured)
FROM_DIMS = {"model": {"dims": {"d_model": 16, "d_kv": 4, "d_ff": 32, "num_layers": 1, "num_heads": 2}},
             "data": {"tasks": ["parity"]}}


class _Tokenizer:
    """What the checks read of a tokenizer: its special ids, size and vocabulary."""

    def __init__(self, pieces: List[str], pad_token_id: Any = 0, eos_token_id: Any = 1):
        self.pieces, self.pad_token_id, self.eos_token_id = pieces, pad_token_id, eos_token_id

    def __len__(self) -> int:
        return len(self.pieces)

    def get_vocab(self) -> Dict[str, int]:
        return {piece: i for i, piece in enumerate(self.pieces)}


def _pretrained(tmp_path, vocab_size: int = 8, eos_token_id: int = 1, **model: Any) -> Any:
    """A run's config on a pretrained model folder (config.json only) of `vocab_size` rows."""
    from transformers import T5Config

    T5Config(vocab_size=vocab_size, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2, pad_token_id=0,
             eos_token_id=eos_token_id).save_pretrained(tmp_path / "model")
    return config_from_dict({"model": {"name_or_path": str(tmp_path / "model"), **model},
                             "data": {"tasks": ["parity"]}})


def test_a_tokenizer_without_an_end_of_sequence_token_is_refused():
    cfg = config_from_dict(FROM_DIMS)
    with pytest.raises(ConfigError, match=r"^the run's tokenizer has no end-of-sequence token \(eos_token_id None\), "
                                          r"which the model's inputs and targets need: add one \(e\.g\. '</s>'\)"):
        check_special_ids(_Tokenizer(["<pad>", "x"], eos_token_id=None), cfg)


def test_a_tokenizer_whose_eos_id_is_not_the_pretrained_models_is_refused(tmp_path):
    cfg = _pretrained(tmp_path, eos_token_id=2)
    with pytest.raises(ConfigError, match=rf"^the model's own tokenizer has eos_token_id 1, but model\.name_or_path "
                                          rf"'{tmp_path / 'model'}' has 2: the model's own tokenizer does not fit "
                                          rf"it; set tokenizer\.path to a tokenizer with the model's special"):
        check_special_ids(_Tokenizer(["<pad>", "</s>", "x"]), cfg)
    check_special_ids(_Tokenizer(["<pad>", "</s>", "x"], eos_token_id=2), cfg)


def test_a_tokenizer_fits_a_pretrained_model_with_as_many_rows_as_it_has_tokens(tmp_path):
    pieces = [f"p{i}" for i in range(8)]
    check_vocabulary_fits(_Tokenizer(pieces), _pretrained(tmp_path))
    with pytest.raises(ConfigError, match=r"the model's own tokenizer has 9 tokens, but model\.name_or_path .* has 8 "
                                          r"embedding rows \(vocab_size\), so the ids from 8 on would index no row"):
        check_vocabulary_fits(_Tokenizer([*pieces, "p8"]), _pretrained(tmp_path))


def test_the_task_tokens_a_run_adds_are_not_counted_against_the_rows_with_task_embeddings(tmp_path):
    # (a resumed TE⊕ENC run's own tokenizer holds them; the model grows its embedding for them)
    pieces = [f"p{i}" for i in range(8)] + ["<task:a>", "<task:b>"]
    check_vocabulary_fits(_Tokenizer(pieces), _pretrained(tmp_path, task_embeddings=True))
    with pytest.raises(ConfigError, match=r"has 10 tokens, but model\.name_or_path .* has 8 embedding rows"):
        check_vocabulary_fits(_Tokenizer(pieces), _pretrained(tmp_path))


def test_tokenizer_train_options_default_and_bounds():
    def options(train: Any) -> Any:
        return tokenizer_train_options(config_from_dict({**FROM_DIMS, "tokenizer": {"train": train}}))

    assert options({}) == (512, 2000)
    assert options({"vocab_size": MIN_VOCAB_SIZE, "max_examples_per_task": 1}) == (MIN_VOCAB_SIZE, 1)
    assert options({"vocab_size": MAX_VOCAB_SIZE}) == (MAX_VOCAB_SIZE, 2000)
    for train, message in (({"vocab_size": MIN_VOCAB_SIZE - 1}, f"vocab_size' must be an integer >= {MIN_VOCAB_SIZE}"),
                           ({"vocab_size": True}, "vocab_size' must be an integer >= 4, got True"),
                           ({"max_examples_per_task": True}, "max_examples_per_task' must be an integer >= 1, got "
                                                              "True"),
                           ({"vocab_size": MAX_VOCAB_SIZE + 1}, f"vocab_size' must be at most {MAX_VOCAB_SIZE}")):
        with pytest.raises(ConfigError, match=message):
            options(train)


def test_tokenizer_train_options_default_to_the_configs(monkeypatch):
    # was: tokenizer_train_options had 512 / 2000 of its own beside the schema's (default.yaml's) tokenizer.train,
    # so a default changed in the schema left a Config edited in Python without the key on the old value
    monkeypatch.setattr(config_module, "TOKENIZER_TRAIN_DEFAULTS", {"vocab_size": 300, "max_examples_per_task": 7})
    assert tokenizer_train_options(config_from_dict(FROM_DIMS)) == (300, 7)
    edited = config_from_dict(FROM_DIMS)
    edited.tokenizer.train = {"vocab_size": 320}  # (in Python: no layer over the defaults fills the other key)
    assert tokenizer_train_options(edited) == (320, 7)


def test_a_checkpoint_whose_run_folder_has_no_tokenizer_copy_is_not_checked(tmp_path):
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000002"
    ckpt.mkdir(parents=True)
    cfg = config_from_dict(FROM_DIMS)  # (the run trains its tokenizer: the one given)
    assert check_resumed_tokenizer(cfg, _Tokenizer(["<pad>", "</s>"]), ckpt) is None


def test_a_tokenizer_path_is_refused_with_how_many_shared_ids_are_other_tokens_and_the_first(tmp_path, t5_tokenizer):
    # each id both tokenizers give is compared (ids past the model's tokenizer are tokens added for the fine-tune)
    from t2t_mtl.engine.run_tokenizer import check_model_tokenizer

    t5_tokenizer.save_pretrained(tmp_path / "model")
    pieces = [piece for piece, _ in sorted(t5_tokenizer.get_vocab().items(), key=lambda item: item[1])]
    for i, j in ((5, 6), (300, 301)):
        pieces[i], pieces[j] = pieces[j], pieces[i]
    cfg = config_from_dict({"model": {"name_or_path": str(tmp_path / "model")}, "tokenizer": {"path": "other"},
                            "data": {"tasks": ["parity"]}})
    with pytest.raises(ConfigError) as refused:
        check_model_tokenizer(_Tokenizer(pieces + ["<added>"]), cfg)
    assert str(refused.value) == (
        f"tokenizer.path 'other' is not the tokenizer of model.name_or_path '{tmp_path / 'model'}': 4 of the ids both "
        f"give are other tokens (id 5 is {pieces[5]!r} here, {pieces[6]!r} in the model's), so the model would read "
        f"the embedding it learnt for one token as another's: unset tokenizer.path to train with the model's own")
    pieces[5], pieces[6], pieces[300], pieces[301] = pieces[6], pieces[5], pieces[301], pieces[300]
    check_model_tokenizer(_Tokenizer(pieces + ["<added>"]), cfg)


def test_a_folders_own_tokenizer_that_does_not_fit_its_model_is_told_to_set_tokenizer_path(tmp_path):
    # was: "use the tokenizer the model was trained with (tokenizer.path unset: the model's own)" and "use a tokenizer
    # with the model's special ids, such as the model's own tokenizer (tokenizer.path unset)" to a run whose
    # tokenizer.path was unset, i.e. whose tokenizer was the model's own already: advice to do what it did
    folder = tmp_path / "model"
    with pytest.raises(ConfigError, match=rf"^the model's own tokenizer has 9 tokens, but model\.name_or_path "
                                          rf"'{folder}' has 8 embedding rows \(vocab_size\), so the ids from 8 on "
                                          rf"would index no row: the model's own tokenizer does not fit it; set "
                                          rf"tokenizer\.path to the tokenizer the model was trained with$"):
        check_vocabulary_fits(_Tokenizer([f"p{i}" for i in range(9)]), _pretrained(tmp_path))
    with pytest.raises(ConfigError, match=rf"^the model's own tokenizer has eos_token_id 1, but model\.name_or_path "
                                          rf"'{folder}' has 2: the model's own tokenizer does not fit it; set "
                                          rf"tokenizer\.path to a tokenizer with the model's special ids$"):
        check_special_ids(_Tokenizer(["<pad>", "</s>", "x"]), _pretrained(tmp_path, eos_token_id=2))
    other = config_from_dict({**_pretrained(tmp_path).to_dict(), "tokenizer": {"path": str(tmp_path / "tok")}})
    with pytest.raises(ConfigError, match=r"would index no row: use the tokenizer the model was trained with "
                                          r"\(tokenizer\.path unset: the model's own\)$"):
        check_vocabulary_fits(_Tokenizer([f"p{i}" for i in range(9)]), other)
