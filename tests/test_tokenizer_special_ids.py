"""A model built from model.dims takes its tokenizer's pad, eos and decoder-start ids (T5's convention: the decoder
starts from pad), so a tokenizer with other special ids than T5's 0 / 1 trains, resumes, is evaluated and predicts;
one without an EOS is refused saying what to add."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from t2t_mtl.config import ConfigError
from t2t_mtl.engine import trainer as trainer_mod
from t2t_mtl.engine.export import export_model, load_trained_model
from t2t_mtl.engine.trainer import train
from t2t_mtl.evaluation.predict import PredictRequest, predict

from engine_helpers import TASKS, step_records, tiny_config

#: a BERT-style order of the special tokens: nothing at T5's pad 0 / eos 1
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
UNK, BOS, EOS, PAD = range(4)


def _word_level(out: Path, eos: bool = True) -> Path:
    """A WordLevel tokenizer trained with `tokenizers` on the tiny tasks' texts, '<unk>' 0, '<s>' 1, '</s>' 2,
    '<pad>' 3, appending '</s>' to each text (no EOS at all with `eos=False`); saved with save_pretrained."""
    import task_registry
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    task_registry.load_builtin_tasks()
    texts = [text for name in TASKS for row in task_registry.get_task(name).to_dataset("train", max_examples=64)
             for text in (row["inputs"], row["targets"], *row["answer_choices"])]
    backend = Tokenizer(models.WordLevel(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=SPECIALS))
    if eos:
        backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", EOS)])
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", pad_token="<pad>",
                            **({"eos_token": "</s>"} if eos else {})).save_pretrained(str(out))
    return out


def test_a_model_from_dims_trains_resumes_evaluates_and_predicts_with_its_tokenizers_special_ids(tmp_path,
                                                                                                 monkeypatch):
    # was: refused ("tokenizer.path ... has pad_token_id 3, but a model built from model.dims has 0"): a model from
    # dims had T5's pad 0 / eos 1 / decoder start 0 whatever its tokenizer, so its decoder started from '<unk>' and
    # generation stopped at '<s>'
    tokenizer = _word_level(tmp_path / "tok")
    trained = []  # the special ids of the models the runs train
    real = trainer_mod.build_model

    def build_model(*args, **kwargs):
        model = real(*args, **kwargs)
        trained.append((model.config.pad_token_id, model.config.eos_token_id, model.config.decoder_start_token_id))
        return model

    monkeypatch.setattr(trainer_mod, "build_model", build_model)
    cfg = tiny_config(tmp_path / "run", tokenizer, tmp_path / "cache", training={"steps": 2, "checkpoint_every": 2},
                      data={"validation_examples": 2})
    train(cfg, evaluate_held_in=False)
    result = train({**cfg, "training": {**cfg["training"], "steps": 3}}, resume="auto")  # scores held-in tasks
    assert trained == [(PAD, EOS, PAD)] * 2
    assert result.step == 3 and sorted(step_records(tmp_path / "run")) == [1, 2, 3]
    assert set(result.held_in_per_task) == set(TASKS)  # evaluated: rank classification and generation
    for path in (tmp_path / "run", export_model(tmp_path / "run", tmp_path / "hf")):  # a run's checkpoint, exported
        model, loaded, _ = load_trained_model(path)
        assert (loaded.pad_token_id, loaded.eos_token_id) == (PAD, EOS)
        config, generation = model.config, model.generation_config
        assert (config.pad_token_id, config.eos_token_id, config.decoder_start_token_id) == (PAD, EOS, PAD)
        assert (generation.pad_token_id, generation.eos_token_id, generation.decoder_start_token_id) == (PAD, EOS, PAD)
    labels = torch.tensor([loaded("parity of 1 1")["input_ids"]])
    assert model.prepare_decoder_input_ids_from_labels(labels=labels)[0].tolist() == [PAD, *labels[0, :-1].tolist()]
    encoded = loaded(["reverse the words: a b"], return_tensors="pt")
    generated = model.generate(**encoded, max_new_tokens=4, do_sample=False)
    assert generated[0, 0].item() == PAD  # the decoder's start
    (ranked, generated_text) = predict(model, loaded, [PredictRequest("parity of 1 1", ["even", "odd"]),
                                                       PredictRequest("reverse the words: a b")], max_new_tokens=4)
    assert ranked.prediction in ("even", "odd") and isinstance(generated_text.prediction, str)


def test_a_tokenizer_without_an_eos_is_refused_saying_what_to_add(tmp_path):
    tokenizer = _word_level(tmp_path / "tok", eos=False)
    with pytest.raises(ConfigError, match=rf"^tokenizer\.path '{tmp_path / 'tok'}' has no end-of-sequence token "
                                          r"\(eos_token_id None\), which the model's inputs and targets need: add one "
                                          r"\(e\.g\. '</s>'\) to its vocabulary and set it as its eos_token "):
        train(tiny_config(tmp_path / "run", tokenizer, tmp_path / "cache"), evaluate_held_in=False)
