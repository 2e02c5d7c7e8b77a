"""The size limits of `t2t_mtl.size_limits`: an absurd size (a typo's 10**12) is refused before anything is built or
run, naming the key or option, the value and the limit; a size at the limit still passes."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from t2t_mtl.config import ConfigError, config_from_dict
from t2t_mtl.engine.run_checks import check_run_config
from t2t_mtl.model.moe import MoEConfig, MoEConfigError, TaskAwareT5
from t2t_mtl.model.parameter_count import t5_parameter_count
from t2t_mtl.size_limits import MAX_EXPERTS, MAX_MODEL_PARAMETERS, MAX_NEW_TOKENS, MAX_SHOWN_DRAWS, MAX_SHOWN_EPOCHS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"vocab_size": 40, "d_model": 8, "d_kv": 4, "d_ff": 12, "num_layers": 3, "num_decoder_layers": 2,
        "num_heads": 2}


def _built_count(config: T5Config) -> int:
    """The parameters of the model built from `config` on the meta device (a TaskAwareT5 where it has a moe)."""
    with torch.device("meta"):
        model = TaskAwareT5(config) if getattr(config, "moe", None) else T5ForConditionalGeneration(config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("dims", [{}, {"feed_forward_proj": "gated-gelu"}, {"tie_word_embeddings": False},
                                  {"num_decoder_layers": 5, "relative_attention_num_buckets": 7}])
def test_a_dense_models_parameter_count_is_the_built_models(dims):
    config = T5Config(**{**TINY, **dims})
    assert t5_parameter_count(config) == _built_count(config)


@pytest.mark.parametrize("moe", [{"num_experts": 3, "top_k": 1}, {"num_experts": 4, "every": 1, "routing": "task"},
                                 {"num_experts": 2, "every": 2, "layers": "encoder", "routing": "hybrid"},
                                 {"num_experts": 5, "every": 1, "layers": "decoder", "routing": "token"},
                                 {"num_experts": 4, "every": 1, "routing": "task",  # (an exported sub-network's)
                                  "expert_ids": {"encoder.0": [1, 3], "encoder.2": [0, 1, 2], "decoder.1": [2, 3]}}])
def test_an_moe_models_parameter_count_is_the_built_models(moe):
    settings = MoEConfig.from_dict({**moe, "task_names": ["a", "b"]})
    config = T5Config(**TINY, feed_forward_proj="gated-relu")
    config.moe = settings.to_dict()
    assert t5_parameter_count(config, settings) == _built_count(config)


def test_the_expert_limit_is_the_triton_routers():
    from t2t_kernels.moe import _MAX_TILE

    assert MAX_EXPERTS == _MAX_TILE


def test_more_experts_than_the_router_routes_are_refused_naming_the_key():
    # was: accepted, and --print-config's build on the meta device died of a MemoryError (list(range(num_experts)))
    assert MoEConfig.from_dict({"num_experts": MAX_EXPERTS}).num_experts == MAX_EXPERTS
    with pytest.raises(MoEConfigError, match=f"model.moe.num_experts={10 ** 12}: must be at most {MAX_EXPERTS}, "):
        MoEConfig.from_dict({"num_experts": 10 ** 12})


def _run_config(tmp_path, **model):
    return config_from_dict({"model": model, "data": {"tasks": ["parity"]},
                             "training": {"output_dir": str(tmp_path / "run")}})


@pytest.mark.parametrize("key, size", [("d_model", 10 ** 12), ("d_ff", 10 ** 12), ("num_layers", 10 ** 12),
                                       ("num_heads", 10 ** 12), ("vocab_size", 10 ** 13)])
def test_model_dims_sizing_more_parameters_than_the_limit_are_refused_with_the_count(key, size, tmp_path):
    # was: passed train --print-config and the run's checks; the run failed when it built the model, after tokenizing
    # (an allocator's error, or hours of looping over 10**12 layers)
    dims = {**TINY, key: size}
    count = t5_parameter_count(T5Config(**dims))
    assert count > MAX_MODEL_PARAMETERS
    with pytest.raises(ConfigError) as refused:
        check_run_config(_run_config(tmp_path, dims=dims))
    assert str(refused.value).startswith(f"model.dims size a model of {count:.3g} parameters ({4 * count:.3g} bytes "
                                         f"in fp32), more than the 1e+13 a run builds at most")
    assert "reduce d_model, d_ff, d_kv, num_heads, num_layers, num_decoder_layers or vocab_size" in str(refused.value)


def test_experts_are_counted_against_the_limit(tmp_path):
    dims = {**TINY, "d_model": 10 ** 4, "d_ff": 10 ** 5}
    moe = {"num_experts": MAX_EXPERTS, "top_k": 1, "every": 1}
    check_run_config(_run_config(tmp_path, dims=dims, moe={**moe, "num_experts": 8}))  # (8e10 parameters: built)
    with pytest.raises(ConfigError, match=r"^model.dims and model.moe size a model of .* \(or model.moe.num_experts\)"):
        check_run_config(_run_config(tmp_path, dims=dims, moe=moe))


def _folder_config(tmp_path, t5_tokenizer_dir, moe=None, **dims):
    """A run config training the model of a local folder of T5Config(**TINY, **dims) (no weights) with `moe`."""
    folder = tmp_path / "folder"
    T5Config(**{**TINY, **dims}).save_pretrained(folder)
    return config_from_dict({"model": {"name_or_path": str(folder), **({"moe": moe} if moe else {})},
                             "data": {"tasks": ["parity"]}, "tokenizer": {"path": str(t5_tokenizer_dir)},
                             "training": {"output_dir": str(tmp_path / "run")}})


@pytest.mark.parametrize("key, size", [("d_model", 10 ** 12), ("num_layers", 10 ** 12)])
def test_a_local_model_folder_sizing_more_parameters_than_the_limit_is_refused(key, size, tmp_path, t5_tokenizer_dir):
    # was: passed the run's checks and --print-config (a pretrained model's sizes were not checked), and the run failed
    # building it, after tokenizing; the count is that of the folder's config.json
    count = t5_parameter_count(T5Config(**{**TINY, key: size}))
    assert count > MAX_MODEL_PARAMETERS
    config = _folder_config(tmp_path, t5_tokenizer_dir, **{key: size})
    with pytest.raises(ConfigError) as refused:
        check_run_config(config)
    assert str(refused.value).startswith(f"model.name_or_path '{config.model.name_or_path}': its config.json sizes a "
                                         f"model of {count:.3g} parameters ({4 * count:.3g} bytes in fp32), more than "
                                         f"the 1e+13 a run builds at most"), refused.value
    assert str(refused.value).endswith(": train a smaller model")


def test_a_local_model_folders_experts_are_counted_against_the_limit(tmp_path, t5_tokenizer_dir):
    dims = {"d_model": 10 ** 4, "d_ff": 10 ** 5}
    moe = {"num_experts": MAX_EXPERTS, "top_k": 1, "every": 1}
    assert t5_parameter_count(T5Config(**{**TINY, **dims})) < MAX_MODEL_PARAMETERS
    with pytest.raises(ConfigError, match=r"^model\.name_or_path '.*': its config\.json with model\.moe sizes a "):
        check_run_config(_folder_config(tmp_path, t5_tokenizer_dir, moe=moe, **dims))


def test_a_local_folder_of_export_keep_moe_is_counted_with_the_experts_it_holds(tmp_path, t5_tokenizer_dir,
                                                                              monkeypatch):
    # was: check_model_size counted every expert of the model a --keep-moe folder was exported from (it holds the
    # task's top-k of each layer, its config.json's moe.expert_ids), so a folder under the limit could be refused
    from t2t_mtl.model.moe import convert_to_moe, extract_task_subnetwork

    moe = {"num_experts": 8, "top_k": 2, "every": 1, "routing": "task", "task_names": ["parity"]}
    dense = T5ForConditionalGeneration(T5Config(**TINY, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    folder = tmp_path / "folder"
    sub = extract_task_subnetwork(convert_to_moe(dense, moe), "parity")
    sub.save_pretrained(folder)  # (as export --task --keep-moe writes it)
    _counted_up_to_the_limit(folder, sum(p.numel() for p in sub.parameters()), t5_tokenizer_dir, monkeypatch)


def _counted_up_to_the_limit(folder: Path, held: int, t5_tokenizer_dir: Path, monkeypatch) -> None:
    """A run from `folder` passes check_model_size at a limit of exactly `held` parameters (the reference count of
    the model the folder holds) and is refused, naming that count, one below it."""
    from t2t_mtl.engine import model_checks

    config = config_from_dict({"model": {"name_or_path": str(folder)}, "data": {"tasks": ["parity"]},
                               "tokenizer": {"path": str(t5_tokenizer_dir)},
                               "training": {"output_dir": str(folder.parent / "run")}})
    saved = model_checks.pretrained_config_dict(str(folder))  # (as check_run_config reads it)
    monkeypatch.setattr(model_checks, "MAX_MODEL_PARAMETERS", held)
    model_checks.check_model_size(config, ["parity"], saved)
    monkeypatch.setattr(model_checks, "MAX_MODEL_PARAMETERS", held - 1)
    with pytest.raises(ConfigError, match=re.escape(f"its config.json sizes a model of {held:.3g} parameters (")):
        model_checks.check_model_size(config, ["parity"], saved)


def test_a_local_folder_with_its_own_lm_head_is_counted_with_it(tmp_path, t5_tokenizer_dir, monkeypatch):
    # was: counted from its config alone, which T5Config always ties, so a T5 v1.1 / mT5 / Flan-T5 folder's own head
    # (vocab_size x d_model) was left out of the count against the limit and the count the refusal names
    model = T5ForConditionalGeneration(T5Config(**TINY, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    model.set_output_embeddings(torch.nn.Linear(TINY["d_model"], TINY["vocab_size"], bias=False))
    model.save_pretrained(tmp_path / "folder")
    held = sum(p.numel() for p in T5ForConditionalGeneration.from_pretrained(tmp_path / "folder").parameters())
    _counted_up_to_the_limit(tmp_path / "folder", held, t5_tokenizer_dir, monkeypatch)


def test_a_local_model_folder_within_the_limit_passes(tmp_path, t5_tokenizer_dir):
    check_run_config(_folder_config(tmp_path, t5_tokenizer_dir, vocab_size=32128))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, t5_tokenizer_dir):
    """A tiny T5 of T5's vocabulary, saved with its tokenizer."""
    from t2t_mtl.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(t5_tokenizer_dir)
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    T5ForConditionalGeneration(T5Config(**{**TINY, "vocab_size": len(tokenizer)}, pad_token_id=0, eos_token_id=1,
                                        decoder_start_token_id=0)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_beams_past_the_vocabulary_and_tokens_past_the_limit_are_refused_naming_the_setting():
    from t2t_mtl.evaluation import EvalSettings, EvaluationError
    from t2t_mtl.evaluation.generation_sizes import check_generation_sizes

    model = T5ForConditionalGeneration(T5Config(**TINY))
    check_generation_sizes(TINY["vocab_size"], MAX_NEW_TOKENS, model)
    with pytest.raises(EvaluationError, match=r"^num_beams \(--num-beams, evaluation.num_beams\) 41 is more than the "
                                              r"model's vocabulary of 40 tokens.*use at most 40$"):
        check_generation_sizes(41, 1, model)
    # was: accepted, and a generation of 10**12 new tokens by a model that never writes its end token ran for years
    message = (rf"^max_new_tokens \(--max-new-tokens, evaluation.max_new_tokens\) {MAX_NEW_TOKENS + 1} is more than "
               rf"the {MAX_NEW_TOKENS} tokens a generation adds at most")
    with pytest.raises(EvaluationError, match=message):
        check_generation_sizes(1, MAX_NEW_TOKENS + 1)
    with pytest.raises(EvaluationError, match=message):
        EvalSettings(max_new_tokens=MAX_NEW_TOKENS + 1)


def test_the_run_checks_refuse_a_generation_past_the_limit(tmp_path):
    config = _run_config(tmp_path, dims=TINY)
    config.evaluation.update(tasks=["parity"], max_new_tokens=10 ** 12)
    with pytest.raises(ConfigError, match=r"^evaluation.max_new_tokens \(--max-new-tokens, evaluation.max_new_tok"):
        check_run_config(config)


def test_a_generation_past_the_limit_defaulted_from_the_target_length_names_that_key(tmp_path):
    # was: refused as "evaluation.max_new_tokens (--max-new-tokens, evaluation.max_new_tokens) 65537 is more than ...",
    # a key the config does not set; its value is data.max_target_length's (EvalSettings.from_run reads the same)
    from t2t_mtl.evaluation.run_settings import RUN_KEYS

    assert RUN_KEYS["max_new_tokens"] == ("evaluation.max_new_tokens", "data.max_target_length")
    config = config_from_dict({**_run_config(tmp_path, dims=TINY).to_dict(),
                               "data": {"tasks": ["parity"], "max_target_length": MAX_NEW_TOKENS + 1}})
    config.evaluation.update(tasks=["parity"])
    with pytest.raises(ConfigError, match=rf"^data\.max_target_length {MAX_NEW_TOKENS + 1} is the default of "
                                          rf"evaluation\.max_new_tokens, more than the {MAX_NEW_TOKENS} tokens .*set "
                                          rf"evaluation\.max_new_tokens to at most {MAX_NEW_TOKENS}, or lower "
                                          rf"data\.max_target_length$"):
        check_run_config(config)
    config.evaluation.update(max_new_tokens=MAX_NEW_TOKENS)  # (given, the target length is no longer its default)
    check_run_config(config)


@pytest.mark.parametrize("option, named", [("--num-beams", "num_beams (--num-beams, evaluation.num_beams) 10"),
                                           ("--max-new-tokens", "max_new_tokens (--max-new-tokens, evaluation.max_")])
@pytest.mark.parametrize("command", ["predict", "eval"])
def test_predict_and_eval_refuse_an_absurd_generation_in_one_line(command, option, named, model_dir, capsys):
    # was: predict --num-beams 10**12 died of a raw allocator RuntimeError (8e12 bytes for the repeated inputs), and
    # --max-new-tokens 10**12 generated on and on
    from t2t_mtl.cli import main

    where = (["some text"] if command == "predict"
             else ["--tasks", "parity", "--scoring", "generate", "--max-examples", "1", "--no-progress"])
    assert main([command, "--checkpoint", str(model_dir), option, str(10 ** 12), *where]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {named}") and err.count("\n") == 1, err


def test_more_shots_than_a_prompt_holds_tokens_are_refused():
    # was: accepted, and --shots 10**12 drew (and rendered) every row of the demonstration split for every input
    from t2t_mtl.evaluation import EvalSettings, EvaluationError

    assert EvalSettings(num_shots=8, max_input_length=8).num_shots == 8
    with pytest.raises(EvaluationError, match=r"^num_shots \(--shots, evaluation.num_shots\) 9 is more than "
                                              r"max_input_length, 8: .* give at most 8 shots$"):
        EvalSettings(num_shots=9, max_input_length=8)


def test_predict_refuses_beams_past_a_model_folders_vocabulary_before_loading_it(model_dir, capsys, monkeypatch):
    # was: refused only once the model was loaded (as check_generation_sizes reads the loaded model's vocabulary);
    # the reference is the folder's config.json, what the loaded model's vocabulary is
    import json

    from t2t_mtl.cli import main
    from t2t_mtl.evaluation import CheckpointError

    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]

    def load(path):
        raise CheckpointError("the model was loaded")

    monkeypatch.setattr("t2t_mtl.evaluation.load_checkpoint", load)
    assert main(["predict", "--checkpoint", str(model_dir), "--num-beams", str(vocab + 1), "some text"]) == 2
    assert capsys.readouterr().err == (f"error: num_beams (--num-beams, evaluation.num_beams) {vocab + 1} is more "
                                       f"than the model's vocabulary of {vocab} tokens, the most distinct beams there "
                                       f"are: use at most {vocab}\n")
    assert main(["predict", "--checkpoint", str(model_dir), "--num-beams", str(vocab), "some text"]) == 2
    assert capsys.readouterr().err == "error: the model was loaded\n"  # (at the limit: on to loading it)


def test_eval_refuses_absurd_shots_in_one_line_before_loading_the_model(model_dir, capsys, monkeypatch):
    from t2t_mtl.cli import main

    monkeypatch.setattr("t2t_mtl.evaluation.load_checkpoint", lambda path: pytest.fail("the model was loaded"))
    assert main(["eval", "--checkpoint", str(model_dir), "--tasks", "parity", "--shots", str(10 ** 12)]) == 2
    assert capsys.readouterr().err == (f"error: num_shots (--shots, evaluation.num_shots) {10 ** 12} is more than "
                                       f"max_input_length, 512: each demonstration takes at least one of a prompt's "
                                       f"tokens, so no more fit; give at most 512 shots\n")


@pytest.mark.parametrize("flag, limit, why", [("--draws", MAX_SHOWN_DRAWS, "more draws cannot move a share printed to "
                                                                           "4 decimals"),
                                              ("--epochs", MAX_SHOWN_EPOCHS, "the table has a column per epoch")])
def test_mixture_show_refuses_more_draws_or_epochs_than_its_table_can_show(flag, limit, why, capsys):
    # was: --draws 10**12 failed allocating the draws (or ran for hours), --epochs 10**12 tabulated on and on
    from t2t_mtl.cli import main

    assert main(["mixture", "show", "procedural", flag, str(10 ** 12)]) == 2
    assert capsys.readouterr().err == (f"error: {flag} must be at most {limit} ({why}; t2t_mtl.size_limits), got "
                                       f"{10 ** 12}\n")


def test_mixture_show_tabulates_up_to_its_epoch_limit(capsys):
    from t2t_mtl.cli import main

    assert main(["mixture", "show", "parity,count_word", "--epochs", str(MAX_SHOWN_EPOCHS), "--draws", "0"]) == 0
    assert f"p e={MAX_SHOWN_EPOCHS}" in capsys.readouterr().out


def test_inputs_that_are_only_ranked_are_not_held_to_the_generation_limits(model_dir):
    # (a run's data.max_target_length is the default of max_new_tokens: ranking, which generates nothing, ignores it)
    from t2t_mtl.evaluation import EvalSettings, load_checkpoint
    from t2t_mtl.evaluation.predict import PredictRequest, predict

    model, tokenizer, _ = load_checkpoint(str(model_dir))
    ranked = predict(model, tokenizer, [PredictRequest("is it?", answer_choices=["yes", "no"])], num_beams=10 ** 12,
                     max_new_tokens=10 ** 12)
    assert ranked[0].prediction in ("yes", "no")
    assert EvalSettings(scoring="rank", max_new_tokens=10 ** 12).max_new_tokens == 10 ** 12


def test_a_pytorch_model_bin_folder_with_its_own_lm_head_is_counted_with_it(tmp_path, t5_tokenizer_dir, monkeypatch):
    # mutation testing: check_model_size asking for the own head without the folder's config (which alone tells a
    # pytorch_model.bin folder's, as the hub's T5 v1.1 files are: the .bin names both matrices either way) passed
    # every test, whose folders were model.safetensors; from_pretrained's parameter count is the reference
    model = T5ForConditionalGeneration(T5Config(**TINY, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    model.set_output_embeddings(torch.nn.Linear(TINY["d_model"], TINY["vocab_size"], bias=False))
    model.config.tie_word_embeddings = False
    model.config.save_pretrained(tmp_path / "folder")
    torch.save(model.state_dict(), tmp_path / "folder" / "pytorch_model.bin")
    held = sum(p.numel() for p in T5ForConditionalGeneration.from_pretrained(tmp_path / "folder").parameters())
    _counted_up_to_the_limit(tmp_path / "folder", held, t5_tokenizer_dir, monkeypatch)
