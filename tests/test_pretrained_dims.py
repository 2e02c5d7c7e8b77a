"""`model.dims: {dropout_rate: P}` beside `model.name_or_path`: the pretrained model trains with dropout P in place of
its config.json's, as transformers' `from_pretrained(name, dropout_rate=P)` (the reference) builds it — on every
build of such a model (dense, MoE upcycled, LoRA, the unfilled build of a resume, export); the dims keys that are the
model's sizes or architecture stay refused beside it, naming them."""
from __future__ import annotations

import json
import re

import pytest
import torch
import yaml
from transformers import T5ForConditionalGeneration

from t2t_mtl.cli import main as cli_main
from t2t_mtl.config import load_config, model_config_from_dict
from t2t_mtl.engine import trainer as trainer_mod
from t2t_mtl.engine.export import export_model
from t2t_mtl.engine.trainer import train
from t2t_mtl.model import build_model, model_config
from t2t_mtl.model.t5 import unfilled

from engine_helpers import tiny_config, train_tiny_tokenizer

#: the dropout of the folder's config.json (as the hub's T5 v1.1 and Flan-T5 configs have it)
FOLDER_DROPOUT = 0.1


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny dense T5 whose config.json says dropout_rate 0.1, saved with its tokenizer, as `export` writes one."""
    from t2t_mtl.tokenizer import load_tokenizer

    root = tmp_path_factory.mktemp("pretrained")
    tokenizer = load_tokenizer(str(train_tiny_tokenizer(root / "tok")))
    dims = {**tiny_config(root, root, root)["model"]["dims"], "dropout_rate": FOLDER_DROPOUT}
    torch.manual_seed(0)
    build_model({"dims": dims}, vocab_size=len(tokenizer)).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return root / "model"


def dropouts(model: torch.nn.Module) -> dict:
    """{module name: p} of the T5's own dropouts (its `nn.Dropout` modules and its attentions' rates), LoRA's left
    out (model.lora.dropout sets those)."""
    out = {name: module.p for name, module in model.named_modules()
           if isinstance(module, torch.nn.Dropout) and "lora" not in name}
    out.update({f"{name}.dropout": module.dropout for name, module in model.named_modules()
                if type(module).__name__ == "T5Attention"})
    return out


def reference_dropouts(folder, **kwargs) -> dict:
    """`dropouts` of transformers' own load of `folder` with `kwargs` over its config."""
    return dropouts(T5ForConditionalGeneration.from_pretrained(folder, **kwargs))


BUILDS = {
    "dense": ({}, True),
    "unfilled (a resume's build)": ({}, False),
    "moe upcycled": ({"moe": {"num_experts": 2, "top_k": 1, "every": 1, "routing": "task"}}, True),
    "lora": ({"lora": {"r": 2, "alpha": 4, "dropout": 0.5, "targets": ["q", "v", "wi"]}}, True),
}


@pytest.mark.parametrize("build", BUILDS)
def test_dropout_rate_beside_a_pretrained_model_is_the_built_models_dropout(folder, build):
    # was: model.dims beside model.name_or_path was refused, and a model built from the pair kept the folder's 0.1
    section, weights = BUILDS[build]
    cfg = {"name_or_path": str(folder), "dims": {"dropout_rate": 0.05}, **section}
    model = build_model(cfg, task_names=["a", "b"], weights=weights) if weights else \
        unfilled(lambda: build_model(cfg, task_names=["a", "b"], weights=False))
    reference = reference_dropouts(folder, dropout_rate=0.05)
    built = dropouts(model)
    assert model.config.dropout_rate == 0.05
    assert len(reference) > 4 and set(reference.values()) == {0.05}
    expert = [name for name in built if ".experts." in name]  # (an MoE layer's experts: a T5 FFN's dropout each)
    assert bool(expert) == (build == "moe upcycled") and all(built[name] == 0.05 for name in expert)
    if expert:  # (the experts hold the dropout of the FFN they replace)
        reference = {name: p for name, p in reference.items() if ".DenseReluDense." not in name}
    assert {name: p for name, p in built.items() if name not in expert} == reference
    if build == "lora":  # (LoRA's own dropout is model.lora.dropout's)
        assert {m.p for n, m in model.named_modules() if n.endswith("lora_dropout")} == {0.5}


def test_dropout_rate_beside_a_mixture_of_experts_folder_is_its_experts_dropout(folder, tmp_path):
    # (an exported MoE model loads with its own experts: TaskAwareT5, not upcycled by this run)
    moe = {"num_experts": 2, "top_k": 1, "every": 1, "routing": "task"}
    build_model({"name_or_path": str(folder), "moe": moe}, task_names=["a", "b"]).save_pretrained(tmp_path / "moe")
    kept = dropouts(build_model({"name_or_path": str(tmp_path / "moe")}, task_names=["a", "b"]))
    model = build_model({"name_or_path": str(tmp_path / "moe"), "dims": {"dropout_rate": 0.05}}, task_names=["a", "b"])
    assert type(model).__name__ == "TaskAwareT5" and any(".experts." in name for name in kept)
    assert set(kept.values()) == {FOLDER_DROPOUT} and dropouts(model) == dict.fromkeys(kept, 0.05)


def test_the_described_config_takes_the_dropout_and_the_refused_keys_of_an_old_run_stay_unread(folder):
    # (the size and DeepSpeed checks read model_config; a run config written before model.dims was refused beside
    # name_or_path still exports: its other keys were never read)
    cfg = model_config_from_dict({"name_or_path": str(folder), "dims": {"dropout_rate": 0.05}})
    assert model_config(cfg).dropout_rate == 0.05
    old = build_model({"name_or_path": str(folder), "dims": {"d_model": 64, "num_heads": 4, "dropout_rate": 0.05}})
    assert old.config.d_model == json.loads((folder / "config.json").read_text())["d_model"] != 64
    assert set(dropouts(old).values()) == {0.05}


def test_without_dims_a_pretrained_model_keeps_its_configs_dropout(folder):
    model = build_model({"name_or_path": str(folder)})
    assert dropouts(model) == reference_dropouts(folder)
    assert set(dropouts(model).values()) == {FOLDER_DROPOUT}


@pytest.mark.parametrize("rate, same", [(0.0, True), (None, False)])
def test_dropout_0_makes_two_training_forwards_equal(folder, rate, same):
    dims = {} if rate is None else {"dropout_rate": rate}
    model = build_model({"name_or_path": str(folder), "dims": dims}).train()
    ids = torch.arange(2, 14).reshape(2, 6)
    with torch.no_grad():
        first, second = (model(input_ids=ids, labels=ids).logits for _ in range(2))
    assert torch.equal(first, second) == same


def write_run_config(tmp_path, folder, dims, **sections) -> str:
    cfg = tiny_config(tmp_path / "run", tmp_path, tmp_path / "cache",
                      model={"name_or_path": str(folder), "dims": dims}, tokenizer={"path": None}, **sections)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_a_shape_key_beside_a_pretrained_model_is_refused_naming_it(folder, tmp_path, capsys):
    path = write_run_config(tmp_path, folder, {"d_model": 64, "num_heads": 4, "dropout_rate": 0.05})
    assert cli_main(["train", path, "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "model.dims and model.name_or_path are both set" in err
    assert "so model.dims.d_model, model.dims.num_heads would be ignored" in err
    assert "model.dims takes only dropout_rate" in err and "model.dims.dropout_rate" not in err


def test_print_config_shows_the_dropout_override(folder, tmp_path, capsys):
    path = write_run_config(tmp_path, folder, {"dropout_rate": 0.05})
    capsys.readouterr()
    assert cli_main(["train", path, "--print-config"]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert yaml.safe_load(printed)["model"]["dims"] == {"dropout_rate": 0.05}
    (tmp_path / "printed.yaml").write_text(printed)
    assert load_config(str(tmp_path / "printed.yaml")).model.dims == {"dropout_rate": 0.05}


def test_a_run_keeps_its_dropout_through_resume_and_export(folder, tmp_path, capsys, monkeypatch):
    builds = []
    real_build = trainer_mod.build_model

    def recording_build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        builds.append((kwargs.get("weights"), set(dropouts(model).values())))
        return model

    monkeypatch.setattr(trainer_mod, "build_model", recording_build)

    def config(steps, rate):
        return tiny_config(tmp_path / "run", tmp_path, tmp_path / "cache", training={"steps": steps},
                           model={"name_or_path": str(folder), "dims": {"dropout_rate": rate}},
                           tokenizer={"path": None})

    first = train(config(2, 0.0), evaluate_held_in=False)
    exported = export_model(first.checkpoint, tmp_path / "hf")
    assert json.loads((exported / "config.json").read_text())["dropout_rate"] == 0.0  # (the folder's: 0.1)
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["model"]["dims"] == {"dropout_rate": 0.0}
    capsys.readouterr()
    train(config(3, 0.0), resume="auto", evaluate_held_in=False)
    assert "model settings differ" not in capsys.readouterr().out
    assert builds == [(True, {0.0}), (False, {0.0})]  # (the resume's build: unfilled, its weights not read)
    train(config(4, 0.25), resume="auto", evaluate_held_in=False)
    out = capsys.readouterr().out
    assert re.search(r"warning: this run's model settings differ from checkpoint \S*step-00000003'?s: "
                     r"model\.dims\.dropout_rate = 0\.0 there, 0\.25 here; its weights fit", out), out
    assert builds[-1] == (False, {0.25})


def test_a_resume_names_the_models_own_dropout_where_a_run_left_it_unset(folder, tmp_path, capsys):
    # was: "model.dims.dropout_rate = None there, 0.25 here", and a resume setting the folder's own rate was warned of
    own = json.loads((folder / "config.json").read_text())["dropout_rate"]

    def config(steps, dims):
        return tiny_config(tmp_path / "run", tmp_path, tmp_path / "cache", training={"steps": steps},
                           model={"name_or_path": str(folder), "dims": dims}, tokenizer={"path": None})

    train(config(2, {}), evaluate_held_in=False)
    capsys.readouterr()
    train(config(3, {"dropout_rate": own}), resume="auto", evaluate_held_in=False)
    train(config(4, {}), resume="auto", evaluate_held_in=False)
    assert "model settings differ" not in capsys.readouterr().out
    train(config(5, {"dropout_rate": 0.25}), resume="auto", evaluate_held_in=False)
    assert f"model.dims.dropout_rate = the model's own {own} there, 0.25 here; its weights fit" in \
        capsys.readouterr().out


def test_every_dims_key_but_dropout_rate_is_refused_beside_a_pretrained_model(folder):
    # mutation testing: taking another dims key beside name_or_path (feed_forward_proj, which decides the FFN's
    # weights) passed every test, whose refused keys were d_model and num_heads; README: beside name_or_path a run
    # refuses every model.dims key but dropout_rate, naming them
    from t2t_mtl.config import ConfigError, check_model_source
    from t2t_mtl.config_values import T5_DIM_KEYS

    others = {"d_model": 64, "d_kv": 8, "d_ff": 128, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4,
              "relative_attention_num_buckets": 16, "relative_attention_max_distance": 64, "layer_norm_epsilon": 1e-5,
              "initializer_factor": 0.5, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False,
              "vocab_size": 200}
    assert set(others) == set(T5_DIM_KEYS) - {"dropout_rate"}  # (every key a model.dims may hold)
    for key, value in others.items():
        model = model_config_from_dict({"name_or_path": str(folder), "dims": {key: value, "dropout_rate": 0.05}})
        with pytest.raises(ConfigError, match=rf"so model\.dims\.{key} would be ignored; beside it model\.dims takes "
                                              rf"only dropout_rate"):
            check_model_source(model)
    check_model_source(model_config_from_dict({"name_or_path": str(folder), "dims": {"dropout_rate": 0.05}}))
