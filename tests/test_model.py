"""t2t_mtl.model.build_model: T5 from dims, from a local folder, and clear errors."""
from __future__ import annotations

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from t2t_mtl.config import ModelConfig
from t2t_mtl.model import ModelBuildError, accepts_task_ids, build_model, count_parameters, model_config
from t2t_mtl.model.t5 import pretrained_t5_config

DIMS = {"d_model": 16, "d_kv": 4, "d_ff": 32, "num_layers": 1, "num_heads": 2, "dropout_rate": 0.0}


def test_build_from_dims_matches_a_hand_built_t5():
    torch.manual_seed(0)
    model = build_model(ModelConfig(dims=DIMS), vocab_size=150)
    torch.manual_seed(0)
    ref = T5ForConditionalGeneration(T5Config(vocab_size=150, num_decoder_layers=1, pad_token_id=0, eos_token_id=1,
                                              decoder_start_token_id=0, **DIMS))
    assert model.config.vocab_size == 150 and model.config.num_decoder_layers == 1
    assert model.config.pad_token_id == 0 and model.config.decoder_start_token_id == 0
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), ref.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    assert count_parameters(model) == sum(p.numel() for p in ref.parameters())
    assert not accepts_task_ids(model)


def test_vocab_size_grows_to_the_tokenizer():
    model = build_model({"dims": {**DIMS, "vocab_size": 64}}, vocab_size=200)
    assert model.get_input_embeddings().weight.shape[0] == 200
    bigger = build_model({"dims": {**DIMS, "vocab_size": 300}}, vocab_size=200)
    assert bigger.config.vocab_size == 300


def test_load_local_folder_and_errors(tmp_path):
    model = build_model({"dims": DIMS}, vocab_size=120)
    model.save_pretrained(tmp_path / "m")
    loaded = build_model({"name_or_path": str(tmp_path / "m")}, vocab_size=120)
    x = torch.tensor([[5, 6, 1]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=x, labels=x).logits, loaded(input_ids=x, labels=x).logits)
    with pytest.raises(ModelBuildError, match="120 embeddings but the tokenizer has 500"):
        build_model({"name_or_path": str(tmp_path / "m")}, vocab_size=500)
    with pytest.raises(ModelBuildError, match="could not be loaded"):
        build_model({"name_or_path": str(tmp_path / "missing")})


def test_a_local_folder_whose_weights_file_is_damaged_is_refused_naming_it(tmp_path):
    # was: safetensors' own SafetensorError (no OSError nor ValueError) as a traceback, from the run's build of the
    # model after the weightless checks had passed
    build_model({"dims": DIMS}, vocab_size=120).save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # (cut short, as by a full disk)
    with pytest.raises(ModelBuildError, match=f"^model.name_or_path '{tmp_path / 'm'}' could not be loaded: .*header"):
        build_model({"name_or_path": str(tmp_path / "m")})


def test_a_folder_saved_in_bf16_loads_with_fp32_weights(tmp_path):
    # transformers 5 loads a folder in the dtype it was saved in: a bf16 base trained in fp32 precision (a CPU
    # without native bf16) had bf16 weights and no fp32 copy of them
    model = build_model({"dims": DIMS}, vocab_size=120).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    loaded = build_model({"name_or_path": str(tmp_path / "bf16")}, vocab_size=120)
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    saved = dict(model.named_parameters())
    assert all(torch.equal(p, saved[name].float()) for name, p in loaded.named_parameters())


def test_build_model_reads_a_local_folders_config_once(tmp_path, monkeypatch):
    # was: twice (the T5 check, then T5Config.from_pretrained); with the dict the check returned: not again
    from t2t_mtl.model.t5 import check_t5_checkpoint

    build_model({"dims": DIMS}, vocab_size=120).save_pretrained(tmp_path / "m")
    reads, real = [], T5Config.get_config_dict.__func__
    monkeypatch.setattr(T5Config, "get_config_dict",
                        classmethod(lambda cls, *a, **k: reads.append(a) or real(cls, *a, **k)))
    cfg = ModelConfig(name_or_path=str(tmp_path / "m"))
    assert build_model(cfg).config.vocab_size == 120
    assert len(reads) == 1
    saved = check_t5_checkpoint(cfg.name_or_path)
    assert build_model(cfg, saved=saved).config.vocab_size == 120 and model_config(cfg, saved).vocab_size == 120
    assert len(reads) == 2


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_a_folder_of_another_architecture_is_refused_naming_its_type(tmp_path, kind):
    """A non-T5 checkpoint would load as a T5 with every weight fresh (GPT-2) or fail deep in transformers (BERT)."""
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

    other = (GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=16, n_layer=1, n_head=2)) if kind == "gpt2" else
             BertModel(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32)))
    other.save_pretrained(tmp_path / kind)
    cfg = ModelConfig(name_or_path=str(tmp_path / kind))
    why = (f"is a '{kind}' model, not a T5 encoder-decoder (model_type 't5' or 'mt5': T5, T5 v1.1, Flan-T5, mT5; "
           f"UMT5 and LongT5 are other architectures, which t2t-mtl does not load)")
    for build in (build_model, model_config):
        with pytest.raises(ModelBuildError) as refused:
            build(cfg)
        assert str(refused.value) == (f"model.name_or_path {str(tmp_path / kind)!r} {why}: use a T5 checkpoint (e.g. "
                                      f"google/flan-t5-base) or build one from model.dims")
    with pytest.raises(ModelBuildError) as refused:  # (what load_t5_or_moe reads a folder's config by)
        pretrained_t5_config(str(tmp_path / kind))
    assert str(refused.value) == f"{str(tmp_path / kind)!r} {why}"


def test_a_saved_mt5_folder_loads_with_mt5s_unscaled_output(tmp_path):
    # was: transformers writes tie_word_embeddings: true for every mT5, which T5Config reads as T5's d_model**-0.5
    # scaling of the decoder output, so the loaded model's logits were mT5's divided by sqrt(d_model)
    from transformers import MT5Config, MT5ForConditionalGeneration

    torch.manual_seed(0)
    mt5 = MT5ForConditionalGeneration(MT5Config(vocab_size=64, **DIMS)).eval()
    mt5.save_pretrained(tmp_path / "mt5")
    cfg = ModelConfig(name_or_path=str(tmp_path / "mt5"))
    assert model_config(cfg).scale_decoder_outputs is False
    loaded = build_model(cfg).eval()
    x, y = torch.tensor([[5, 6, 7, 1]]), torch.tensor([[8, 9, 1]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=x, labels=y).logits, mt5(input_ids=x, labels=y).logits)


@pytest.mark.parametrize("section,error,match", [
    # were: a TypeError from ModelConfig(**section), torch's "negative dimension", huggingface_hub's field error
    ({"dimz": DIMS}, "UnknownConfigKeyError", r"model\.dimz — did you mean 'model\.dims'"),
    ({"dims": {**DIMS, "d_model": -1}}, "ConfigError", r"'model\.dims\.d_model' must be an integer >= 1, got -1"),
    ({"dims": {**DIMS, "d_model": "16"}}, "ConfigError", r"'model\.dims\.d_model' must be an integer >= 1, got '16'"),
    ({"dims": {**DIMS, "num_layer": 2}}, "UnknownConfigKeyError", r"model\.dims\.num_layer — did you mean"),
    ({"dims": DIMS, "task_embeddings": "yes"}, "ConfigTypeError", r"'model\.task_embeddings' must be bool"),
    ({}, "ConfigError", r"set model\.name_or_path .* or model\.dims"),  # was: a 60M-parameter default T5
])
def test_a_dict_section_is_checked_as_the_config_checks_it(section, error, match):
    import t2t_mtl.config as config

    with pytest.raises(getattr(config, error), match=match):
        build_model(section, vocab_size=100)


def test_a_non_mapping_section_is_refused():
    from t2t_mtl.config import ConfigTypeError

    with pytest.raises(ConfigTypeError, match=r"'model' must be a mapping, got \[1\]"):
        build_model([1])


def test_a_dict_section_takes_a_path_and_read_only_mappings(tmp_path):
    # refused since build_model checks a dict section (config key 'model.name_or_path' must be str, 'model.dims'
    # must be mapping), though the model loaded from a Path and was built from any mapping of dims before
    from pathlib import Path
    from types import MappingProxyType

    saved = build_model({"dims": DIMS}, vocab_size=120)
    saved.save_pretrained(tmp_path / "m")
    loaded = build_model({"name_or_path": Path(tmp_path / "m")}, vocab_size=120)
    assert all(torch.equal(p, saved.state_dict()[n]) for n, p in loaded.state_dict().items())
    built = build_model(MappingProxyType({"dims": MappingProxyType(DIMS)}), vocab_size=120)
    assert (built.config.d_model, built.config.d_ff, built.config.num_layers) == (16, 32, 1)


def test_a_folder_whose_config_names_no_model_type_builds_as_from_pretrained_loads_it(tmp_path):
    # mutation testing: refusing a config.json without model_type (only a named other architecture is refused)
    # in check_t5_checkpoint or pretrained_t5_config passed every test; a hand-written or old T5 config may lack it,
    # and T5ForConditionalGeneration.from_pretrained (the reference) loads such a folder as a T5
    import json

    build_model({"dims": DIMS}, vocab_size=120).save_pretrained(tmp_path / "m")
    config_file = tmp_path / "m" / "config.json"
    config_file.write_text(json.dumps({k: v for k, v in json.loads(config_file.read_text()).items()
                                       if k != "model_type"}))
    reference = T5ForConditionalGeneration.from_pretrained(tmp_path / "m")
    cfg = ModelConfig(name_or_path=str(tmp_path / "m"))
    assert model_config(cfg).d_ff == reference.config.d_ff == 32
    loaded = build_model(cfg, vocab_size=120)
    x = torch.tensor([[5, 6, 1]])
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=x, labels=x).logits, reference(input_ids=x, labels=x).logits)


@pytest.mark.parametrize("weights", [True, False])
def test_a_folder_whose_generation_config_is_damaged_is_refused_naming_it(tmp_path, weights):
    # was: from_pretrained (and the weightless build of a run's model, as it) read a generation_config.json that is
    # no JSON as if the folder had none, without a word: a fine-tune, and its validation, eval and predict, decoded
    # with the settings config.json implies, the file's own (a hand-edited trailing comma) silently dropped
    from t2t_mtl.model.moe import load_t5_or_moe

    build_model({"dims": DIMS}, vocab_size=120).save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "generation_config.json"
    path.write_text(path.read_text().replace('"eos_token_id": 1,', '"eos_token_id": 1,,'))
    message = f"^model.name_or_path '{tmp_path / 'm'}' could not be loaded: {path} cannot be read as a generation "
    with pytest.raises(ModelBuildError, match=message):
        build_model({"name_or_path": str(tmp_path / "m")}, weights=weights)
    with pytest.raises(ModelBuildError, match=f"^{path} cannot be read as a generation config"):
        load_t5_or_moe(str(tmp_path / "m"), weights=weights)
