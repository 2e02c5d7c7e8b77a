"""LoRA (`model.lora`): the adapter layer against its formula, which weights train, merging, config errors, and
the training engine with adapters (frozen weights stay put, resume, ZeRO stages, gradient surgery, export)."""
from __future__ import annotations

import shutil

import pytest
import torch
from transformers import T5ForConditionalGeneration

from t2t_mtl.config import ConfigError, config_from_dict
from t2t_mtl.engine import export as export_module
from t2t_mtl.engine.checkpoint import CheckpointError
from t2t_mtl.engine.export import export_model, fp32_state_dict, load_trained_model
from t2t_mtl.engine.trainer import seed_everything, train
from t2t_mtl.model import build_model
from t2t_mtl.model.lora import LoRAConfig, LoRAConfigError, LoRALinear, apply_lora, has_lora, merge_lora
from t2t_mtl.tokenizer import load_tokenizer

from engine_helpers import step_losses, step_records, tiny_config, train_tiny_tokenizer

DIMS = {"d_model": 16, "d_kv": 8, "d_ff": 24, "num_layers": 2, "num_decoder_layers": 1, "num_heads": 2,
        "vocab_size": 50, "dropout_rate": 0.0}
ALL_TARGETS = ["q", "k", "v", "o", "wi", "wo"]


def _inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randint(2, 50, (3, 7), generator=g), torch.randint(2, 50, (3, 5), generator=g)


def test_lora_linear_is_the_frozen_linear_plus_the_scaled_low_rank_update():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5)
    layer = LoRALinear(base, r=3, alpha=12.0)
    torch.nn.init.normal_(layer.lora_B)
    x = torch.randn(4, 2, 6)
    w, b, a, bb = base.weight.detach(), base.bias.detach(), layer.lora_A.detach(), layer.lora_B.detach()
    expected = torch.einsum("...i,oi->...o", x, w) + b + (12.0 / 3) * torch.einsum("...i,ri,or->...o", x, a, bb)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)
    assert layer.weight is base.weight and layer.bias is base.bias  # the same frozen tensors, not copies
    merged = layer.merged()
    assert type(merged) is torch.nn.Linear
    torch.testing.assert_close(merged(x), expected, rtol=1e-5, atol=1e-5)
    # gradients reach the adapters only through the update: dL/dB = s·(dL/dy)ᵀ (x Aᵀ)
    layer.zero_grad()
    layer(x).sum().backward()
    torch.testing.assert_close(layer.lora_B.grad, 4.0 * torch.ones(4 * 2, 5).T @ (x.reshape(-1, 6) @ a.T))


def test_a_starts_kaiming_uniform_and_dropout_acts_on_the_adapters_input_only():
    """A is drawn as nn.Linear draws its weight, kaiming_uniform(a=√5): U(±1/√in) (gain √(1/3) times √(3/in)); with
    B = 0 the update is 0 whatever A is, so a zero A (no gradient to B, nothing trains) would pass unseen.
    Dropout (p = 0.5) drops the adapter's input in training only: the frozen path never."""
    torch.manual_seed(0)
    base = torch.nn.Linear(64, 6)
    layer = LoRALinear(base, r=8, alpha=16.0, dropout=0.5)
    bound = 1 / 64 ** 0.5
    largest = float(layer.lora_A.detach().abs().max())
    assert 0.9 * bound < largest <= bound
    x = torch.randn(3, 64)
    with torch.no_grad():
        assert torch.equal(layer.train()(x), base(x))  # B = 0: no update, and no dropout on the frozen path
        torch.nn.init.normal_(layer.lora_B)
        expected = base(x) + 2.0 * x @ layer.lora_A.T @ layer.lora_B.T
        torch.testing.assert_close(layer.eval()(x), expected)
        assert not torch.allclose(layer.train()(x), expected)


def test_fresh_adapters_leave_the_model_unchanged_and_only_adapters_train():
    torch.manual_seed(0)
    plain = build_model({"dims": DIMS}).eval()
    torch.manual_seed(0)
    adapted = build_model({"dims": DIMS, "lora": {"r": 4, "targets": ALL_TARGETS}}).eval()
    x, y = _inputs()
    with torch.no_grad():
        assert torch.equal(plain(input_ids=x, labels=y).logits, adapted(input_ids=x, labels=y).logits)
    trained = {n: p.numel() for n, p in adapted.named_parameters() if p.requires_grad}
    assert trained and all(".lora_A" in n or ".lora_B" in n for n in trained)
    d, ff, inner, r = DIMS["d_model"], DIMS["d_ff"], DIMS["num_heads"] * DIMS["d_kv"], 4
    attention = 3 * r * (d + inner) + r * (inner + d)  # q, k, v: d -> inner; o: inner -> d
    per_ffn = r * (d + ff) + r * (ff + d)
    encoder = DIMS["num_layers"] * (attention + per_ffn)
    decoder = DIMS["num_decoder_layers"] * (2 * attention + per_ffn)  # self- and cross-attention
    assert sum(trained.values()) == encoder + decoder


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_merged_model_matches_the_adapted_one(dtype, tolerance):
    # float64: the update B·A and the weight were summed in fp32 (then cast back), so a folded fp64 model differed
    # from the adapted one by ~1e-7 relative — fp32 rounding in an fp64 model
    torch.manual_seed(0)
    model = build_model({"dims": DIMS, "lora": {"r": 2, "alpha": 4, "targets": ["q", "v", "wo"]}}).eval()
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    model.to(dtype)
    x, y = _inputs()
    with torch.no_grad():
        adapted = model(input_ids=x, labels=y).logits
        merged = merge_lora(model)(input_ids=x, labels=y).logits
    assert not has_lora(model) and not any("lora" in k for k in model.state_dict())
    assert merged.dtype == dtype
    torch.testing.assert_close(merged, adapted, rtol=10 * tolerance, atol=tolerance)


def test_adapting_a_model_that_has_adapters_is_refused_until_they_are_folded():
    # was: "model.lora.targets: ['q'] name no layer of this model", since the targets are LoRALinear by then
    model = build_model({"dims": DIMS, "lora": {"r": 2, "targets": ["q"]}})
    with pytest.raises(LoRAConfigError, match=r"has LoRA adapters already \(encoder\.block\.0\..*fold them first"):
        apply_lora(model, {"r": 2, "targets": ["q"]})
    apply_lora(merge_lora(model), {"r": 2, "targets": ["q"]})
    assert sum(isinstance(m, LoRALinear) for m in model.modules()) == 4  # q of 2 encoder + 2 decoder attentions


def test_moe_layers_embeddings_and_named_fragments_train_in_full():
    moe = {"num_experts": 2, "top_k": 1, "every": 2, "backend": "reference"}
    model = build_model({"dims": {**DIMS, "feed_forward_proj": "gated-gelu"},
                         "moe": moe, "lora": {"targets": ["q", "wi_0", "wo"], "trainable": ["layer_norm"]},
                         "task_embeddings": True})
    trains = {n for n, p in model.named_parameters() if p.requires_grad}
    experts = [n for n in dict(model.named_parameters()) if ".experts." in n or ".router." in n]
    assert experts and set(experts) <= trains
    assert not any("lora" in n for n in experts)  # experts are trained in full, not adapted
    assert all(p.requires_grad for n, p in model.named_parameters() if "layer_norm" in n)
    assert model.get_input_embeddings().weight.requires_grad  # (transformers 5 ties T5's LM head to it)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert "encoder.block.0.layer.0.SelfAttention.q.weight" in frozen
    assert "encoder.block.1.layer.1.DenseReluDense.experts.0.wi_0.weight" not in frozen
    # growing the vocabulary for task tokens keeps each matrix trainable as it was
    from t2t_mtl.analysis.task_embeddings import resize_for_task_tokens

    resize_for_task_tokens(model, type("Tok", (), {"__len__": lambda self: 60})())
    assert model.get_input_embeddings().weight.shape[0] == 60
    assert model.get_input_embeddings().weight.requires_grad
    model.get_input_embeddings().weight.requires_grad_(False)
    resize_for_task_tokens(model, type("Tok", (), {"__len__": lambda self: 70})())
    assert not model.get_input_embeddings().weight.requires_grad


@pytest.mark.parametrize("head", ["tied", "own", "own, hub-style .bin"])
def test_a_trainable_lm_head_is_checked_against_the_folders_own_head(tmp_path, tok, head):
    # own, was: the run's weightless check built a T5 v1.1 / mT5 / Flan-T5 folder from its config, whose head
    # transformers ties to the embedding, so `trainable: [lm_head]`, which names the loaded model's own head, was
    # refused ('match no parameter name') before a run could train it. The hub's own folders of those models hold a
    # pytorch_model.bin (both names, either way) and a config.json with tie_word_embeddings: false
    import json

    own_head = head != "tied"
    torch.manual_seed(0)
    model = build_model({"dims": {**DIMS, "vocab_size": len(load_tokenizer(tok))}})
    if own_head:
        model.set_output_embeddings(torch.nn.Linear(DIMS["d_model"], model.config.vocab_size, bias=False))
    model.save_pretrained(tmp_path / "base")
    load_tokenizer(tok).save_pretrained(tmp_path / "base")
    if head == "own, hub-style .bin":
        (tmp_path / "base" / "model.safetensors").unlink()
        torch.save(model.state_dict(), tmp_path / "base" / "pytorch_model.bin")
        config = json.loads((tmp_path / "base" / "config.json").read_text())
        del config["scale_decoder_outputs"]
        (tmp_path / "base" / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    section = {"name_or_path": str(tmp_path / "base"), "dims": None,
               "lora": {"r": 2, "targets": ["q", "v"], "trainable": ["lm_head"]}}
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": 1}, model=section)
    cfg["tokenizer"] = {"path": None}
    if not own_head:  # the head is the embedding, `shared`: no parameter is named lm_head, loaded or not
        with pytest.raises(LoRAConfigError, match=r"\['lm_head'\] match no parameter name"):
            build_model(section)
        with pytest.raises(LoRAConfigError, match=r"\['lm_head'\] match no parameter name"):
            train(cfg)
        return
    loaded = build_model(section)
    with torch.device("meta"):
        weightless = build_model(section, weights=False)
    assert [n for n, _ in weightless.named_parameters()] == [n for n, _ in loaded.named_parameters()]
    assert loaded.lm_head.weight.requires_grad and not loaded.shared.weight.requires_grad
    train(cfg, evaluate_held_in=False)
    trained, _, _ = load_trained_model(tmp_path / "run")
    assert not torch.equal(trained.lm_head.weight, loaded.lm_head.weight)  # the head trained


def test_a_checkpoint_without_the_own_lm_head_of_its_model_is_refused_naming_it(tmp_path, tok, monkeypatch):
    # mutation testing: the load forgiving a missing lm_head.weight whether or not the checkpoint holds the embedding
    # it is tied to passed every test; a model with its own head (T5 v1.1, mT5, Flan-T5) then kept the pretrained
    # folder's head in place of the run's, with no message
    from t2t_mtl.engine import export

    torch.manual_seed(0)
    model = build_model({"dims": {**DIMS, "vocab_size": len(load_tokenizer(tok))}})
    model.set_output_embeddings(torch.nn.Linear(DIMS["d_model"], model.config.vocab_size, bias=False))
    model.save_pretrained(tmp_path / "base")
    load_tokenizer(tok).save_pretrained(tmp_path / "base")
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": 1},
                      model={"name_or_path": str(tmp_path / "base"), "dims": None})
    cfg["tokenizer"] = {"path": None}
    train(cfg, evaluate_held_in=False)
    assert "lm_head.weight" in fp32_state_dict(tmp_path / "run" / "checkpoints" / "step-00000001", model)
    stored = export.fp32_state_dict
    monkeypatch.setattr(export, "fp32_state_dict", lambda ckpt, model: {
        name: value for name, value in stored(ckpt, model).items() if name != "lm_head.weight"})
    with pytest.raises(CheckpointError, match=r"weights do not fit the run's model \(missing \['lm_head\.weight'\]"):
        load_trained_model(tmp_path / "run")


@pytest.mark.parametrize("section,message", [
    ({"alpah": 4}, "unknown key model.lora.alpah; did you mean 'alpha'"),
    ({"rank": 4}, "unknown key model.lora.rank; known keys: r, alpha, dropout, targets, trainable"),
    ({"r": 0}, "model.lora.r=0: must be an integer >= 1"),
    ({"alpha": "sixteen"}, "model.lora.alpha='sixteen': must be a number > 0"),  # ('16', '1e1': read as numbers)
    # was accepted: an infinite scale makes every output NaN (inf · the zero-initialised B), so every step was skipped
    ({"alpha": float("inf")}, r"model.lora.alpha=inf: must be a number > 0 and finite"),
    ({"dropout": 1.0}, r"model.lora.dropout=1.0: must be a number in \[0, 1\)"),
    ({"targets": ["query"]}, r"\['query'\] are not T5 block layers"),
    ({"targets": ["q", "wi_0"]}, r"model.lora.targets: \['wi_0'\] name no layer of this model \(its block layers "
                                 r"outside MoE experts: .*'wi'"),
    ({"trainable": ["layernorm"]}, r"model.lora.trainable: \['layernorm'\] match no parameter name"),
    ({"trainable": "layer_norm"}, "model.lora.trainable='layer_norm': must be a list"),
])
def test_bad_lora_sections_are_refused_naming_the_key(section, message):
    with pytest.raises(LoRAConfigError, match=message):
        build_model({"dims": DIMS, "lora": section})


def test_a_lora_section_that_is_no_mapping_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"config key 'model.lora' must be bool or mapping or null, got 'yes'"):
        build_model({"dims": DIMS, "lora": "yes"})  # (the model section's type check, as a config file gets)
    with pytest.raises(LoRAConfigError, match="model.lora must be a mapping"):
        LoRAConfig.from_dict("yes")


def test_build_model_takes_a_lora_config_object_in_a_dict_section():
    # `apply_lora` takes a LoRAConfig, and build_model passed one on; the dict section's type check refused it
    # ('model.lora' must be bool or mapping or null), as it did a MoEConfig
    model = build_model({"dims": DIMS, "lora": LoRAConfig(r=2, targets=["q"])})
    q = model.encoder.block[0].layer[0].SelfAttention.q
    assert isinstance(q, LoRALinear) and q.r == 2
    assert not isinstance(model.encoder.block[0].layer[0].SelfAttention.v, LoRALinear)


def test_lora_true_and_empty_mean_defaults_false_means_off():
    for section in (True, {}):
        model = build_model({"dims": DIMS, "lora": section})
        q = model.encoder.block[0].layer[0].SelfAttention.q
        assert isinstance(q, LoRALinear) and q.r == 8 and q.scaling == 2.0
        assert not isinstance(model.encoder.block[0].layer[0].SelfAttention.k, LoRALinear)
    assert not has_lora(build_model({"dims": DIMS, "lora": False}))
    with pytest.raises(LoRAConfigError):  # apply_lora twice finds no plain layer to wrap
        apply_lora(build_model({"dims": DIMS, "lora": True}), {"targets": ["q", "v"]})
    every_ffn_moe = {"num_experts": 2, "top_k": 1, "every": 1, "backend": "reference"}  # no dense wi/wo left
    with pytest.raises(LoRAConfigError, match=r"\['wo'\] name no layer"):
        build_model({"dims": DIMS, "moe": every_ffn_moe, "lora": {"targets": ["q", "wo"]}})


def test_feed_forward_targets_that_moe_layers_replaced_are_refused_naming_model_moe():
    # was: "['wi', 'wo'] name no layer of this model (its block layers outside MoE experts: ['k', 'o', 'q', 'router',
    # 'v', 'wi', 'wo']; ...)", listing the experts' own wi / wo (and the router) as layers outside them
    every_ffn_moe = {"num_experts": 2, "top_k": 1, "every": 1, "backend": "reference"}
    with pytest.raises(LoRAConfigError, match=r"^model.lora.targets: \['wi', 'wo'\] name no layer of this model "
                                              r"\(its block layers outside MoE experts: \['k', 'o', 'q', 'v'\]; "
                                              r".*model.moe's experts replace the feed-forward of every layer"
                                              r".*model.moe.every"):
        build_model({"dims": DIMS, "moe": every_ffn_moe, "lora": {"targets": ["wi", "wo"]}})
    half = {**every_ffn_moe, "layers": "encoder"}  # the decoder's dense wi / wo are adapted; no word of model.moe
    with pytest.raises(LoRAConfigError, match=r"\['wi_0'\] name no layer .*'wi', 'wo'\]; a gated feed-forward has "
                                              r"wi_0/wi_1, a plain one wi\)$"):
        build_model({"dims": DIMS, "moe": half, "lora": {"targets": ["wi_0"]}})
    build_model({"dims": DIMS, "moe": half, "lora": {"targets": ["wi", "wo"]}})


# ------------------------------------------------------------------------------------------- the engine

LORA = {"r": 4, "alpha": 8, "targets": ALL_TARGETS}


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


def _config(root, tok, name, **sections):
    cfg = tiny_config(root / name, tok, root / "cache", **sections)
    cfg["model"]["lora"] = dict(LORA)
    return cfg


def _initial_model(cfg, tok):
    seed_everything(cfg["training"].get("seed", 0))
    return build_model(config_from_dict(cfg).model, vocab_size=len(load_tokenizer(str(tok))))


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tok):
    root = tmp_path_factory.mktemp("lora")
    cfg = _config(root, tok, "run", training={"steps": 30, "checkpoint_every": 15, "keep_checkpoints": 3,
                                              "lr": 3e-2})
    train(cfg)
    return root, cfg


def test_training_moves_only_the_adapters_and_the_loss_falls(lora_run, tok):
    root, cfg = lora_run
    losses = step_losses(root / "run")
    first, last = sum(losses[s] for s in range(1, 6)) / 5, sum(losses[s] for s in range(26, 31)) / 5
    assert last < 0.8 * first, losses
    initial = _initial_model(cfg, tok).state_dict()
    trained = fp32_state_dict(root / "run" / "checkpoints" / "step-00000030", _initial_model(cfg, tok))
    moved = {k for k in initial if not torch.equal(initial[k], trained[k].to(initial[k].dtype))}
    assert moved and all("lora_" in k for k in moved)
    assert {k for k in initial if "lora_B" in k} <= moved  # every B left zero


def test_export_folds_the_adapters_into_a_plain_t5(lora_run, tok, tmp_path):
    root, cfg = lora_run
    out = export_model(root / "run", tmp_path / "hf")
    plain = T5ForConditionalGeneration.from_pretrained(str(out)).eval()
    assert not any("lora" in k for k in plain.state_dict())
    adapted = _initial_model(cfg, tok).eval()
    adapted.load_state_dict(fp32_state_dict(root / "run" / "checkpoints" / "step-00000030", adapted), strict=False)
    assert has_lora(adapted)
    x, y = _inputs()
    x, y = x % 100 + 2, y % 100 + 2
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=x, labels=y).logits, adapted(input_ids=x, labels=y).logits,
                                   rtol=1e-4, atol=1e-4)
    model, _, _ = load_trained_model(root / "run")  # evaluation and predict get the merged model too
    assert not has_lora(model)


def test_resume_continues_exactly_and_refuses_other_lora_settings(lora_run, tok):
    root, cfg = lora_run
    resumed = root / "resumed"
    shutil.copytree(root / "run", resumed, ignore=shutil.ignore_patterns("step-00000030"))
    (resumed / "checkpoints" / "latest").write_text("step-00000015")
    changed = _config(root, tok, "resumed", training=cfg["training"] | {"output_dir": str(resumed)})
    changed["model"]["lora"] = {**LORA, "r": 2}
    with pytest.raises(CheckpointError, match=r"model.lora = .*'r': 4.*this run has .*'r': 2"):
        train(changed, resume="auto")
    train({**cfg, "training": {**cfg["training"], "output_dir": str(resumed)}}, resume="auto")
    want, got = step_losses(root / "run"), step_losses(resumed)
    assert [got[s] for s in range(16, 31)] == [want[s] for s in range(16, 31)]


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_zero_stages_train_the_same_adapters(tmp_path, tok, stage):
    """Also the export's weights: ZeRO-1 checkpoints keep the frozen weights in the module state only (was: export,
    eval and predict of a ZeRO-1 LoRA run failed with the frozen weights missing)."""
    runs = {}
    for zero in (0, stage):
        cfg = _config(tmp_path, tok, f"z{zero}", training={"steps": 4, "lr": 3e-2},
                      deepspeed={"zero_stage": zero})
        train(cfg)
        runs[zero] = (cfg, step_losses(tmp_path / f"z{zero}"))
    for s in range(1, 5):
        assert runs[stage][1][s] == pytest.approx(runs[0][1][s], rel=1e-4)
    cfg = runs[stage][0]
    base = _initial_model(cfg, tok).state_dict()
    gathered = fp32_state_dict(tmp_path / f"z{stage}" / "checkpoints" / "step-00000004", _initial_model(cfg, tok))
    assert gathered.keys() >= base.keys()  # ZeRO's partitioned frozen weights are gathered too
    assert all(torch.equal(base[k], gathered[k]) for k in base if "lora_" not in k)
    reference = fp32_state_dict(tmp_path / "z0" / "checkpoints" / "step-00000004", _initial_model(cfg, tok))
    for k in base:
        if "lora_" in k:
            torch.testing.assert_close(gathered[k], reference[k], rtol=1e-3, atol=1e-5)


def test_gradient_surgery_projects_the_adapter_gradients(tmp_path, tok):
    losses = {}
    for stage in (0, 3):  # ZeRO-3 takes the rows from DeepSpeed's partitioned gradients of the adapters
        cfg = _config(tmp_path, tok, f"pcgrad{stage}", training={"steps": 4, "grad_accum": 3, "lr": 3e-2},
                      gradient_surgery={"method": "pcgrad", "seed": 0}, deepspeed={"zero_stage": stage})
        train(cfg)
        records = step_records(tmp_path / f"pcgrad{stage}")
        assert all("gradient_surgery" in r for r in records.values()), records[1].keys()
        losses[stage] = [records[s]["loss"] for s in range(1, 5)]
        initial = _initial_model(cfg, tok).state_dict()
        trained = fp32_state_dict(tmp_path / f"pcgrad{stage}" / "checkpoints" / "step-00000004",
                                  _initial_model(cfg, tok))
        assert all(torch.equal(initial[k], trained[k]) for k in initial if "lora_" not in k)
    assert losses[3] == pytest.approx(losses[0], rel=1e-4)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_adapters_on_a_pretrained_folder_keep_its_weights(lora_run, tok, tmp_path, monkeypatch, precision):
    root, _ = lora_run
    folder = export_model(root / "run", tmp_path / "pretrained")  # a plain T5, as a hub checkpoint would be
    cfg = tiny_config(tmp_path / "ft", folder, tmp_path / "cache",
                      training={"steps": 3, "lr": 3e-2, "precision": precision})
    cfg["model"] = {"name_or_path": str(folder), "lora": {"r": 2, "targets": ["q", "v"]}}
    train(cfg)
    pretrained = T5ForConditionalGeneration.from_pretrained(str(folder)).state_dict()
    if precision == "fp32":  # the checkpoint itself holds the frozen weights as loaded
        tuned = fp32_state_dict(tmp_path / "ft" / "checkpoints" / "step-00000003",
                                build_model(config_from_dict(cfg).model))
        assert all(torch.equal(pretrained[k], tuned[k]) for k in pretrained)
        assert any(k.endswith("q.lora_B") and tuned[k].abs().sum() > 0 for k in tuned)
    # the export: frozen weights bit for bit (bf16 training kept only their bf16 copies), W + B·A where adapted;
    # the model built once, from the folder's weights where bf16 kept only their rounding (was: unfilled, then again)
    builds = []
    build = export_module.build_model
    monkeypatch.setattr(export_module, "build_model", lambda *args, **kwargs: builds.append(kwargs["weights"]) or
                        build(*args, **kwargs))
    exported_folder = export_model(tmp_path / "ft", tmp_path / "hf")
    exported = T5ForConditionalGeneration.from_pretrained(str(exported_folder)).state_dict()
    assert builds == [precision == "bf16"]
    changed = {k for k in pretrained if not torch.equal(pretrained[k], exported[k])}
    assert changed and all(k.endswith((".q.weight", ".v.weight")) for k in changed), changed


def test_a_bf16_export_whose_pretrained_folder_changed_warns_of_the_rounded_frozen_weights(lora_run, tok, tmp_path,
                                                                                           caplog):
    # was: a bf16 LoRA run whose model.name_or_path folder was overwritten (or renamed by a resume's --set, which
    # config.yaml saves) exported its frozen weights at their bf16 rounding without a word, not bit for bit
    root, _ = lora_run
    folder = export_model(root / "run", tmp_path / "pretrained")
    cfg = tiny_config(tmp_path / "ft", folder, tmp_path / "cache", training={"steps": 1, "precision": "bf16"})
    cfg["model"] = {"name_or_path": str(folder), "lora": {"r": 2, "targets": ["q", "v"]}}
    train(cfg)
    original = T5ForConditionalGeneration.from_pretrained(str(folder))
    caplog.clear()
    export_model(tmp_path / "ft", tmp_path / "hf")  # the folder as the run started from it: no warning
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    with torch.no_grad():  # the folder overwritten: its k weights another model's
        for name, p in original.named_parameters():
            if name.endswith(".k.weight"):
                p.add_(0.01)
    original.save_pretrained(str(folder))
    exported = T5ForConditionalGeneration.from_pretrained(str(export_model(tmp_path / "ft", tmp_path / "again")))
    frozen = len(list(original.named_parameters()))  # (every pretrained weight: the adapters are the run's own)
    moved = sum(1 for name, _ in original.named_parameters() if name.endswith(".k.weight"))
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and warned[0].startswith(
        f"{moved} of the run's {frozen} frozen weights (encoder.block.0.layer.0.SelfAttention.k.weight, ...) are not "
        f"the bf16 rounding of the weights of model.name_or_path '{folder}', which the run's config.yaml names: they "
        f"keep the checkpoint's bf16 values"), warned
    assert warned[0].endswith(f"point model.name_or_path in {tmp_path / 'ft' / 'config.yaml'} at that one")
    for name, p in exported.named_parameters():
        if name.endswith(".k.weight"):  # the checkpoint's rounding of the weights the run trained over
            previous = T5ForConditionalGeneration.from_pretrained(str(tmp_path / "hf")).state_dict()[name]
            assert torch.equal(p, previous.to(torch.bfloat16).float())


def test_bf16_export_takes_the_adapters_fp32_master_weights(tmp_path, tok):
    cfg = _config(tmp_path, tok, "bf16", training={"steps": 3, "lr": 3e-2, "precision": "bf16"})
    train(cfg)
    ckpt = tmp_path / "bf16" / "checkpoints" / "step-00000003"
    state = torch.load(ckpt / "ds" / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
    masters = [p for group in state["optimizer"]["fp32_groups"] for p in group]
    model = _initial_model(cfg, tok)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(masters) == len(names) and all("lora_" in n for n in names)
    exported = fp32_state_dict(ckpt, model)
    for name, master in zip(names, masters):
        assert torch.equal(exported[name], master.float().reshape(exported[name].shape))
    # a model from dims has no pretrained weights to restore: loading is deterministic (was: frozen weights
    # partly replaced by a fresh random init wherever it rounded to the stored bf16 value)
    first, second = (load_trained_model(tmp_path / "bf16")[0].state_dict() for _ in range(2))
    assert all(torch.equal(first[k], second[k]) for k in first)



def test_a_bf16_zero_1_export_takes_the_fp32_master_weights_over_the_module_states(tmp_path, tok):
    # ZeRO-1/2 keep whole weights in the module state too, rounded to bf16: the trained ones come from the masters
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    cfg = _config(tmp_path, tok, "z1", training={"steps": 3, "lr": 3e-2, "precision": "bf16"},
                  deepspeed={"zero_stage": 1})
    train(cfg)
    ckpt = tmp_path / "z1" / "checkpoints" / "step-00000003"
    masters = get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag="ds")
    module = torch.load(ckpt / "ds" / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)["module"]
    model = _initial_model(cfg, tok)
    exported = fp32_state_dict(ckpt, model)
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(torch.equal(exported[name], masters[name]) for name in trained)
    assert any(not torch.equal(masters[name], module[name].float()) for name in trained)  # (bf16 rounded there)

def test_resume_compatibility_ignores_dropout_and_list_order(tmp_path):
    from t2t_mtl.engine.resume_checks import check_compatible

    saved = LoRAConfig(targets=["q", "v"], dropout=0.1).to_dict()
    check_compatible(tmp_path, {"lora": saved}, lora=LoRAConfig(targets=["v", "q"], dropout=0.0).to_dict())
    check_compatible(tmp_path, {}, lora=None)  # a checkpoint from before LoRA existed: no adapters either
    for changed in ({"alpha": 32.0}, {"targets": ["q"]}, {"per_task": True}, {"trainable": ["layer_norm"]}):
        with pytest.raises(CheckpointError, match="resume with the same model.lora rank, alpha, targets"):
            check_compatible(tmp_path, {"lora": saved}, lora={**saved, **changed})
    with pytest.raises(CheckpointError, match="model.lora = None"):
        check_compatible(tmp_path, {}, lora=saved)


def test_export_of_a_run_whose_pretrained_model_is_gone_is_a_one_line_error(tmp_path, t5_tokenizer_dir, capsys):
    # was: a raw ModelBuildError traceback — the run's model.name_or_path (a folder since moved or deleted) is read
    # again to rebuild the model, and `t2t-mtl export` caught only export/checkpoint/MoE errors
    import yaml

    from t2t_mtl.cli import main as cli_main

    run = tmp_path / "run"
    cfg = tiny_config(run, t5_tokenizer_dir, tmp_path / "cache")
    cfg["model"] = {"name_or_path": str(tmp_path / "moved-away"), "lora": {"r": 2}}
    ckpt = run / "checkpoints" / "step-1"
    ckpt.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    (ckpt / "meta.json").write_text('{"step": 1, "zero_stage": 0}')
    assert cli_main(["export", str(ckpt), "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "moved-away" in err and "Traceback" not in err
    # (mutation testing: a message without what happened and where to repoint the run passed every test)
    assert (f"{ckpt}: the run's model cannot be rebuilt (" in err
            and f"; restore it, or point model.name_or_path in {run / 'config.yaml'} at its new place" in err), err
    assert not (tmp_path / "hf").exists()
    cfg["tokenizer"]["path"] = str(tmp_path / "tokenizer-moved-away")  # (was a raw TokenizerLoadError traceback)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert cli_main(["export", str(ckpt), "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "tokenizer-moved-away" in err and "Traceback" not in err
