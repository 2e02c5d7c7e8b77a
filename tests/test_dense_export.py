"""`export --task` of a top-1 task-routed MoE model writes a plain T5 (`t2t_mtl.model.dense_task`): each MoE layer's
expert of the task becomes the layer's feed-forward layer, its gate folded into wo — checked weight by weight against
the full model's experts and gate rows (the expert by argmax of the row, the gate by softmax / sigmoid written here),
and by outputs: logits within 1e-5 of the MoE model's for the task, greedy generations identical, and
`AutoModelForSeq2SeqLM` loading the folder with no missing or unexpected weight. Top-2 routing keeps the MoE folder
and says why."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, T5Config, T5ForConditionalGeneration

from t2t_mtl.cli import main
from t2t_mtl.engine.export import load_trained_model
from t2t_mtl.model.dense_task import dense_blocker, dense_t5, task_routes, zero_padding
from t2t_mtl.model.moe import MoEConfigError, TaskAwareT5, convert_to_moe, extract_task_subnetwork, moe_blocks
from t2t_mtl.model.moe_config import MoEConfig
from t2t_mtl.tokenizer import load_tokenizer

TASKS = ["alpha", "beta", "gamma"]
INPUTS = ["Is the sky blue? yes or no", "count the words: a b c d", "Translate to German: the house"]


def _moe(vocab_size: int, seed: int = 0, feed_forward_proj: str = "relu", own_head: bool = False,
         **moe) -> TaskAwareT5:
    """A tiny task-routed MoE of TASKS with fresh experts (each computes another function) and gate rows; with
    `own_head`, an LM head of its own and no d_model**-0.5 scaling, as T5 v1.1 / mT5 / Flan-T5 have."""
    torch.manual_seed(seed)
    dense = T5ForConditionalGeneration(T5Config(
        vocab_size=vocab_size, d_model=16, d_ff=24, d_kv=8, num_heads=2, num_layers=3, num_decoder_layers=2,
        feed_forward_proj=feed_forward_proj, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    settings = {"num_experts": 4, "top_k": 1, "every": 1, "routing": "task", "upcycle": False, **moe}
    model = convert_to_moe(dense, settings, task_names=TASKS).eval()
    if own_head:
        model.config.scale_decoder_outputs = False  # (as a v1.1 checkpoint's tie_word_embeddings: false reads)
        model.set_output_embeddings(torch.nn.Linear(16, vocab_size, bias=False))
    return model


def _logits(model, task_ids=None):
    torch.manual_seed(5)
    inputs = torch.randint(2, 60, (3, 7))
    decoder_inputs = torch.randint(2, 60, (3, 5))
    with torch.no_grad():
        kwargs = {} if task_ids is None else {"task_ids": task_ids}
        return model(input_ids=inputs, decoder_input_ids=decoder_inputs, **kwargs).logits


def _inputs() -> torch.Tensor:
    torch.manual_seed(6)
    return torch.randint(2, 60, (3, 7))


def _ffn(model, layer: str):
    stack, index = layer.split(".")
    return getattr(model, stack).block[int(index)].layer[-1].DenseReluDense


def _route(row: torch.Tensor, moe: dict):
    """(expert ids, gates) of a task's gate row under the MoE settings `moe`, written out here: the top_k largest
    entries, largest first (lowest id first among equal ones); their softmax (over the row) or sigmoid scores,
    renormalised to sum to 1 with renormalize (default: top_k > 1)."""
    k = moe.get("top_k", 1)
    experts = sorted(range(len(row)), key=lambda e: (-float(row[e]), e))[:k]
    scores = torch.sigmoid(row.double()) if moe.get("score") == "sigmoid" else torch.softmax(row.double(), 0)
    gates = [float(scores[e]) for e in experts]
    if moe.get("renormalize", k > 1):
        gates = [gate / sum(gates) for gate in gates]
    return experts, gates


@pytest.mark.parametrize("feed_forward_proj, moe", [
    ("relu", {}),  # renormalize null: a top-1 gate is the expert's softmax probability (Switch), below 1
    ("relu", {"renormalize": True, "every": 2}),  # gate 1; MoE in layers 1 (encoder) only, every other FFN dense
    ("gated-gelu", {"score": "sigmoid", "layers": "decoder"}),
    ("gated-gelu", {"renormalize": True, "every": 2, "layers": "encoder"}),
    ("relu", {"top_k": 2}),  # every FFN an MoE layer: nothing padded; gates renormalised (k > 1's default)
    ("relu", {"top_k": 4, "every": 2}),  # k = E; every other FFN dense, zero-padded to 4·d_ff
    ("gated-gelu", {"top_k": 2, "every": 2, "renormalize": False}),  # the raw softmax probabilities
    ("gated-gelu", {"top_k": 4, "score": "sigmoid"}),
    ("sigmoid", {"top_k": 2, "every": 2})])  # act(0) = 0.5: a padded unit adds 0 through wo's zero column alone
def test_each_moe_layer_holds_its_experts_side_by_side_with_the_gates_folded_into_wo(feed_forward_proj, moe):
    full = _moe(64, feed_forward_proj=feed_forward_proj, **moe)
    task, k, d_ff = 1, moe.get("top_k", 1), full.config.d_ff
    sub = extract_task_subnetwork(full, TASKS[task])
    dense = dense_t5(sub)
    assert type(dense) is T5ForConditionalGeneration and not hasattr(dense.config, "moe")
    assert dense.config.d_ff == k * d_ff
    full_state, moe_layers = full.state_dict(), {}
    for stack in ("encoder", "decoder"):
        for index, block in enumerate(getattr(full, stack).block):
            ffn = block.layer[-1].DenseReluDense
            if hasattr(ffn, "experts"):
                moe_layers[f"{stack}.{index}"] = ffn
    assert moe_layers
    routes = task_routes(sub)
    for layer, block in moe_layers.items():
        experts, gates = _route(block.task_gate.weight[task].detach(), moe)
        assert routes[layer] == {"experts": experts, "gates": pytest.approx(gates, rel=1e-6)}
        for name, weight in _ffn(dense, layer).state_dict().items():
            for j, (expert, gate) in enumerate(zip(experts, gates)):
                original = block.experts[expert].state_dict()[name]
                if name == "wo.weight":
                    torch.testing.assert_close(weight[:, j * d_ff:(j + 1) * d_ff], original * gate, rtol=1e-6, atol=0)
                else:
                    assert torch.equal(weight[j * d_ff:(j + 1) * d_ff], original), (layer, name)
    padded = []
    for name, weight in dense.state_dict().items():  # every other weight is the full model's, FFNs zero-padded
        layer = ".".join(name.split(".")[0:3:2])
        if ".DenseReluDense." in name and layer not in moe_layers:
            original = full_state[name]
            assert torch.equal(weight[:original.shape[0], :original.shape[1]], original), name
            assert weight.count_nonzero() == original.count_nonzero(), name  # zeros around it
            padded.append(layer)
        elif layer not in moe_layers:
            assert torch.equal(weight, full_state[name]), name
    padding = zero_padding(sub)
    if k == 1 or not padded:
        assert padding is None
    else:
        zeros = sum(int((w == 0).sum()) for n, w in dense.state_dict().items() if ".DenseReluDense." in n)
        assert padding == {"layers": sorted(set(padded), key=padded.index), "d_ff": d_ff, "padded_d_ff": k * d_ff,
                           "zero_weights": zeros}
    reference = _logits(full, torch.full((3,), task))
    if moe.get("renormalize") and k == 1:  # gate 1: no product to round
        assert torch.equal(_logits(dense), reference)
    torch.testing.assert_close(_logits(dense), reference, rtol=1e-5, atol=1e-5)
    assert torch.equal(dense.generate(_inputs(), max_new_tokens=6, do_sample=False),
                       full.generate(_inputs(), max_new_tokens=6, do_sample=False, task_ids=torch.full((3,), task)))


def test_a_one_task_model_whose_layers_hold_different_experts_becomes_its_routes_t5():
    # dense_t5 takes what each layer's route picks, whatever else the layer holds (here 4, 3 and 2 experts)
    torch.manual_seed(3)
    dense = T5ForConditionalGeneration(T5Config(vocab_size=64, d_model=16, d_ff=24, d_kv=8, num_heads=2, num_layers=3,
                                                num_decoder_layers=1, pad_token_id=0, eos_token_id=1,
                                                decoder_start_token_id=0))
    model = convert_to_moe(dense, {"num_experts": 4, "top_k": 2, "every": 1, "routing": "task", "upcycle": False,
                                   "expert_ids": {"encoder.1": [0, 1, 3], "encoder.2": [1, 2]}},
                           task_names=["alpha"]).eval()
    with torch.no_grad():
        model.encoder.block[1].layer[-1].DenseReluDense.task_gate.weight.copy_(torch.tensor([[2.0, -1.0, 0.0, 3.0]]))
        model.encoder.block[2].layer[-1].DenseReluDense.task_gate.weight.copy_(torch.tensor([[-1.0, 2.0, 0.5, -2.0]]))
    routes = task_routes(model)
    assert routes["encoder.1"]["experts"] == [3, 0] and routes["encoder.2"]["experts"] == [1, 2]
    plain = dense_t5(model)
    torch.testing.assert_close(_logits(plain), _logits(model, torch.zeros(3, dtype=torch.long)), rtol=1e-5,
                               atol=1e-5)
    # a route to an expert the layer does not hold, a layer without a route, a route of fewer than top_k experts
    # (mutation testing: dropping either of the last two checks passed every test, each then a raw KeyError or
    # load_state_dict size mismatch)
    for wrong in ({**routes, "encoder.2": {"experts": [2, 3], "gates": [0.5, 0.5]}},
                  {layer: route for layer, route in routes.items() if layer != "encoder.2"},
                  {**routes, "encoder.2": {"experts": [1], "gates": [1.0]}}):
        with pytest.raises(MoEConfigError, match=r"the task's routes .* do not fit .* picks top_k=2 experts it holds"):
            dense_t5(model, routes=wrong)


def test_the_t5_is_built_without_a_random_init_its_embeddings_tied_as_t5_ties_them():
    # was: built as T5ForConditionalGeneration(config), every weight drawn at random and then overwritten by the
    # sub-network's (about three quarters of the export's dense_t5 time for a T5-base-sized model)
    sub = extract_task_subnetwork(_moe(64), "alpha")
    before = torch.get_rng_state()
    dense = dense_t5(sub)
    assert torch.equal(torch.get_rng_state(), before)  # no random number drawn
    assert dense.lm_head.weight is dense.shared.weight is dense.encoder.embed_tokens.weight
    reference = T5ForConditionalGeneration(dense.config)
    assert sum(p.numel() for p in dense.parameters()) == sum(p.numel() for p in reference.parameters())


@pytest.mark.parametrize("top_k", [1, 2])
def test_a_models_own_lm_head_stays_its_own_in_the_sub_network_and_its_t5(top_k):
    # was: both were built from the config, whose T5 transformers always ties to its embedding, and loaded the
    # model's embedding and its own LM head (T5 v1.1, mT5, Flan-T5) into that one tensor: the task's export computed
    # with the head as its embedding
    full = _moe(64, seed=4, feed_forward_proj="gated-gelu", own_head=True, top_k=top_k)
    sub = extract_task_subnetwork(full, "gamma")
    dense = dense_t5(sub)
    for model in (sub, dense):
        assert model.lm_head.weight is not model.shared.weight
        assert torch.equal(model.lm_head.weight, full.lm_head.weight)
        assert torch.equal(model.shared.weight, full.shared.weight)
    reference = _logits(full, torch.full((3,), 2))
    assert torch.equal(_logits(sub, torch.zeros(3, dtype=torch.long)), reference)
    torch.testing.assert_close(_logits(dense), reference, rtol=1e-5, atol=1e-5)


def test_the_t5_generates_with_the_sub_networks_generation_settings():
    # mutation testing: dense_t5 leaving the sub-network's generation_config behind (the T5 then took its config's
    # defaults, up to 20 tokens) passed every test, whose models all had the default settings
    sub = extract_task_subnetwork(_moe(64), "alpha")
    sub.generation_config.max_new_tokens = 3  # (as a folder's generation_config.json may set)
    generated = dense_t5(sub).generate(_inputs(), do_sample=False)
    assert generated.shape[1] == 4  # the decoder start and 3 new tokens
    assert torch.equal(generated, sub.generate(_inputs(), do_sample=False, task_ids=torch.zeros(3, dtype=torch.long)))


@pytest.mark.parametrize("own_head", [False, True])
def test_a_bf16_models_sub_network_and_its_t5_stay_bf16(own_head):
    # mutation testing: unfilled_model building in the default fp32 (the load then casting every bf16 weight up)
    # passed every test, whose models were all fp32; so did untie_head giving an own LM head torch's default fp32
    full = _moe(64, top_k=2, every=2, own_head=own_head).to(torch.bfloat16)
    sub = extract_task_subnetwork(full, "beta")
    dense = dense_t5(sub)
    assert {p.dtype for p in sub.parameters()} == {p.dtype for p in dense.parameters()} == {torch.bfloat16}
    assert torch.equal(_ffn(dense, "encoder.0").wi.weight[:24], _ffn(full, "encoder.0").wi.weight)


def test_a_sub_network_of_an_unseen_task_becomes_the_unseen_routes_t5():
    full = _moe(64, seed=2)
    dense = dense_t5(extract_task_subnetwork(full, "held_out_task", unseen=True))
    torch.testing.assert_close(_logits(dense), _logits(full, torch.full((3,), -1)), rtol=1e-5, atol=1e-5)


def test_a_tasks_lora_adapter_folded_first_stays_in_its_t5():
    # (as export --task folds a per-task LoRA model's adapter of the task before taking its experts)
    import copy

    from t2t_mtl.model import build_model
    from t2t_mtl.model.lora import select_task_adapter

    dims = {"d_model": 16, "d_kv": 8, "d_ff": 24, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 2,
            "vocab_size": 64, "dropout_rate": 0.0}
    lora = {"r": 2, "alpha": 4, "targets": ["q", "v", "wo"], "per_task": True}  # wo: the dense FFNs' (every 2)
    torch.manual_seed(4)
    full = build_model({"dims": dims, "moe": {"num_experts": 3, "top_k": 1, "every": 2, "routing": "task",
                                              "upcycle": False}, "lora": lora}, task_names=TASKS).eval()
    for name, p in full.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
    dense = dense_t5(extract_task_subnetwork(select_task_adapter(copy.deepcopy(full), 2), TASKS[2]))
    assert type(dense) is T5ForConditionalGeneration
    torch.testing.assert_close(_logits(dense), _logits(full, torch.full((3,), 2)), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(_logits(dense), _logits(full, torch.full((3,), 1)), atol=1e-3)


def test_only_one_tasks_sub_network_under_task_routing_has_a_dense_form():
    assert dense_blocker(MoEConfig(routing="task", top_k=1, task_names=TASKS)) is None
    assert dense_blocker(MoEConfig(routing="task", top_k=2, task_names=TASKS)) is None
    assert "by the token too" in dense_blocker(MoEConfig(routing="hybrid", top_k=1, task_names=TASKS))
    with pytest.raises(MoEConfigError, match=r"a plain T5 serves one task: .* not a model of tasks"):
        dense_t5(_moe(64))
    with pytest.raises(MoEConfigError, match="only under task routing: token routing picks each token's experts"):
        dense_t5(_moe(64, routing="token"))


@pytest.fixture(scope="module")
def moe_folder(tmp_path_factory, t5_tokenizer_dir):
    tokenizer = load_tokenizer(t5_tokenizer_dir)
    folder = tmp_path_factory.mktemp("moe")
    _moe(len(tokenizer), seed=1).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _assert_answers_as_beta(plain, full, tokenizer):
    """The exported `plain` T5's logits equal the MoE model `full`'s for task beta (1e-5), its greedy answers too."""
    beta = torch.full((len(INPUTS),), TASKS.index("beta"))
    batch = tokenizer(INPUTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        decoder = torch.tensor([[0, 5, 6, 7]] * len(INPUTS))
        torch.testing.assert_close(plain.eval()(**batch, decoder_input_ids=decoder).logits,
                                   full(**batch, decoder_input_ids=decoder, task_ids=beta).logits,
                                   rtol=1e-5, atol=1e-5)
        assert torch.equal(plain.generate(**batch, max_new_tokens=8, do_sample=False),
                           full.generate(**batch, max_new_tokens=8, do_sample=False, task_ids=beta))


def test_export_task_writes_a_t5_folder_auto_model_loads_with_the_moe_models_outputs(moe_folder, tmp_path, capsys,
                                                                                    caplog):
    # was: the folder held the task's experts as an MoE model, which AutoModelForSeq2SeqLM loaded with those
    # feed-forward layers missing, freshly initialised
    assert main(["export", str(moe_folder), "--task", "beta", "--out", str(tmp_path / "beta")]) == 0
    out = capsys.readouterr().out
    caplog.clear()
    plain, info = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "beta", output_loading_info=True)
    assert type(plain) is T5ForConditionalGeneration
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    report = caplog.text + "".join(capsys.readouterr())  # (transformers' load report: a log record or printed)
    assert "newly initialized" not in report and "MISSING" not in report, report
    assert "moe" not in json.loads((tmp_path / "beta" / "config.json").read_text())
    assert "is a plain T5: top-1 task routing gives task 'beta' one expert in each MoE layer" in out
    assert "holds mixture-of-experts layers" not in out
    full, tokenizer, _ = load_trained_model(moe_folder)
    _assert_answers_as_beta(plain, full, tokenizer)
    model, _, meta = load_trained_model(tmp_path / "beta")
    assert type(model) is T5ForConditionalGeneration and meta["tasks"] == ["beta"]
    assert sorted(meta["dense_from_experts"]) == ["decoder.0", "decoder.1", "encoder.0", "encoder.1", "encoder.2"]
    # predict answers the folder's inputs as the MoE model answers beta's
    assert main(["predict", "--checkpoint", str(moe_folder), "--task", "beta", "--max-new-tokens", "8", *INPUTS]) == 0
    expected = capsys.readouterr().out
    assert main(["predict", "--checkpoint", str(tmp_path / "beta"), "--max-new-tokens", "8", *INPUTS]) == 0
    assert capsys.readouterr().out == expected


@pytest.mark.parametrize("own_head", [False, True])
def test_export_task_of_top_2_routing_writes_a_t5_of_both_experts_and_says_what_its_padding_adds(
        tmp_path, t5_tokenizer_dir, capsys, caplog, own_head):
    # was: an MoE folder ('it stays an MoE model: top_k=2: each MoE layer sums 2 experts' outputs'), which
    # AutoModelForSeq2SeqLM loaded with its MoE feed-forward layers missing, freshly initialised; own head, was: the
    # folder's weights counted from its config, whose tie_word_embeddings transformers always sets, without the head
    tokenizer = load_tokenizer(t5_tokenizer_dir)
    _moe(len(tokenizer), seed=3, feed_forward_proj="gated-gelu", own_head=own_head, top_k=2,
         every=2).save_pretrained(tmp_path / "moe")
    tokenizer.save_pretrained(tmp_path / "moe")
    capsys.readouterr()
    assert main(["export", str(tmp_path / "moe"), "--task", "beta", "--out", str(tmp_path / "beta")]) == 0
    out = capsys.readouterr().out
    caplog.clear()
    plain, info = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "beta", output_loading_info=True)
    assert type(plain) is T5ForConditionalGeneration and plain.config.d_ff == 48
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert "newly initialized" not in caplog.text + "".join(capsys.readouterr())
    full, _, _ = load_trained_model(tmp_path / "moe")
    _assert_answers_as_beta(plain, full, tokenizer)
    meta = load_trained_model(tmp_path / "beta")[2]
    for layer, block in moe_blocks(full):  # encoder.1, decoder.1: the others are dense
        experts, gates = _route(block.task_gate.weight[TASKS.index("beta")].detach(), {"top_k": 2})
        assert meta["dense_from_experts"][layer] == {"experts": experts, "gates": pytest.approx(gates, rel=1e-6)}
    weights = sum(p.numel() for p in plain.parameters())
    zeros = sum(int((w == 0).sum()) for name, w in plain.state_dict().items() if ".DenseReluDense." in name)
    assert meta["zero_padding"] == {"layers": ["encoder.0", "encoder.2", "decoder.0"], "d_ff": 24,
                                    "padded_d_ff": 48, "zero_weights": zeros, "weights": weights}
    assert "is a plain T5: top-2 task routing gives task 'beta' 2 experts in each MoE layer" in out
    assert (f"its 3 dense feed-forward layers (encoder.0, encoder.2, decoder.0) are zero-padded from d_ff 24 to "
            f"48: {zeros:,} zero weights, {zeros / weights:.1%} of the folder's {weights:,}") in out
    assert "holds mixture-of-experts layers" not in out
    assert main(["predict", "--checkpoint", str(tmp_path / "moe"), "--task", "beta", "--max-new-tokens", "8",
                 *INPUTS]) == 0
    expected = capsys.readouterr().out
    assert main(["predict", "--checkpoint", str(tmp_path / "beta"), "--max-new-tokens", "8", *INPUTS]) == 0
    assert capsys.readouterr().out == expected


def test_export_task_keep_moe_writes_the_moe_folder_of_the_tasks_experts(moe_folder, tmp_path, capsys):
    assert main(["export", str(moe_folder), "--task", "beta", "--keep-moe", "--out", str(tmp_path / "beta")]) == 0
    out = capsys.readouterr().out
    assert "holds mixture-of-experts layers" in out
    assert "it stays an MoE model of the experts of task 'beta', as --keep-moe asks" in out
    model, _, meta = load_trained_model(tmp_path / "beta")
    assert isinstance(model, TaskAwareT5) and "dense_from_experts" not in meta and "zero_padding" not in meta
    full, _, _ = load_trained_model(moe_folder)
    torch.testing.assert_close(_logits(model, torch.zeros(3, dtype=torch.long)),
                               _logits(full, torch.full((3,), TASKS.index("beta"))), rtol=1e-5, atol=1e-5)
    assert main(["export", str(moe_folder), "--keep-moe", "--out", str(tmp_path / "all")]) == 2
    assert "--keep-moe keeps the experts of one task's sub-network: give --task NAME" in capsys.readouterr().err


def test_export_task_says_what_it_wrote_where_and_writes_into_a_non_empty_out_with_overwrite(moe_folder, tmp_path,
                                                                                            capsys):
    # mutation testing: export --task calling export_task_subnetwork with overwrite=False, or printing no
    # 'exported ...' line, passed every test
    (tmp_path / "beta").mkdir()
    (tmp_path / "beta" / "notes.txt").write_text("kept")
    assert main(["export", str(moe_folder), "--task", "beta", "--out", str(tmp_path / "beta")]) == 2
    assert "--overwrite" in capsys.readouterr().err and not (tmp_path / "beta" / "config.json").exists()
    assert main(["export", str(moe_folder), "--task", "beta", "--out", str(tmp_path / "beta"), "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"exported the sub-network of task 'beta' of {moe_folder} to {tmp_path / 'beta'}"
    assert load_trained_model(tmp_path / "beta")[2]["tasks"] == ["beta"]
    assert (tmp_path / "beta" / "notes.txt").read_text() == "kept"


def test_export_task_names_its_source_by_an_absolute_path(moe_folder, tmp_path, monkeypatch):
    # was: t2t_mtl_meta.json's source as export was given it, relative to its working directory ('.' from inside the
    # folder, 'moe0' beside it), which names nothing once read from elsewhere (run_dir and checkpoint are absolute)
    for cwd, given in ((moe_folder, "."), (moe_folder.parent, moe_folder.name)):
        monkeypatch.chdir(cwd)
        out = tmp_path / f"from_{given}"
        assert main(["export", given, "--task", "beta", "--out", str(out)]) == 0
        assert json.loads((out / "t2t_mtl_meta.json").read_text())["source"] == str(moe_folder.resolve()), given


def test_export_task_of_a_name_neither_trained_nor_registered_is_refused_naming_both_with_the_closest(moe_folder,
                                                                                                     tmp_path, capsys):
    # was: "task 'glue_rt' is not one of the MoE model's tasks ['alpha', 'beta', 'gamma']", which neither said that a
    # registered held-out task exports (glue_rte does: the unseen-task route's experts) nor suggested one
    capsys.readouterr()
    assert main(["export", str(moe_folder), "--task", "glue_rt", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == (
        "error: --task 'glue_rt' is neither a task the model was trained on (alpha, beta, gamma) nor a registered task "
        "(a held-out task gets the experts that model.moe.unseen_task_routing (mean) routes it to); did you "
        "mean 'glue_rte'?\n")
    assert main(["export", str(moe_folder), "--task", "betaa", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.endswith("; did you mean 'beta'?\n")
    assert not (tmp_path / "x").exists()
    assert main(["export", str(moe_folder), "--task", "glue_rte", "--out", str(tmp_path / "rte")]) == 0
    assert load_trained_model(tmp_path / "rte")[2]["unseen_task_routing"] == "mean"


def test_export_task_of_a_task_the_model_was_not_trained_on_warns_that_it_gets_the_unseen_route(moe_folder, tmp_path,
                                                                                              caplog):
    # was: not a word, though such a folder holds another route's experts than its task's name says: a task a
    # --keep-moe folder of beta was not trained on (the full model's alpha too, were it registered) got beta's
    # experts under its own name
    assert main(["export", str(moe_folder), "--task", "beta", "--keep-moe", "--out", str(tmp_path / "beta")]) == 0
    for source, trained in ((moe_folder, "alpha, beta, gamma"), (tmp_path / "beta", "beta")):
        caplog.clear()
        with caplog.at_level("WARNING", logger="t2t_mtl.engine.export"):
            assert main(["export", str(source), "--task", "glue_rte", "--out", str(tmp_path / "rte"),
                         "--overwrite"]) == 0
        assert [r.getMessage() for r in caplog.records if r.name == "t2t_mtl.engine.export"] == [
            f"task 'glue_rte' is not one the model was trained on ({trained}), so the folder gets the experts "
            f"that model.moe.unseen_task_routing (mean) routes it to, as evaluation serves a held-out task"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="t2t_mtl.engine.export"):
        assert main(["export", str(moe_folder), "--task", "beta", "--out", str(tmp_path / "b")]) == 0
    assert not [r for r in caplog.records if r.name == "t2t_mtl.engine.export"]


def test_predict_warns_of_an_input_of_another_task_than_an_export_task_folders_as_of_its_moe_forms(moe_folder,
                                                                                                  tmp_path, caplog):
    # was: only the --keep-moe folder warned; the plain T5 of the same route answered alpha's input as beta's
    # sub-network without a word
    request = tmp_path / "alpha.jsonl"
    request.write_text(json.dumps({"inputs": INPUTS[0], "task": "alpha"}) + "\n")
    for form in ([], ["--keep-moe"]):
        folder = tmp_path / f"beta{''.join(form)}"
        assert main(["export", str(moe_folder), "--task", "beta", *form, "--out", str(folder)]) == 0
        caplog.clear()
        with caplog.at_level("WARNING", logger="t2t_mtl.evaluation.predict"):
            assert main(["predict", "--checkpoint", str(folder), "--max-new-tokens", "4", "--input", str(request)]) == 0
        assert [r.getMessage() for r in caplog.records if r.name == "t2t_mtl.evaluation.predict"] == [
            "task 'alpha' (1 of 1 inputs) is not one the model was trained on (beta), so it is answered as an unseen "
            "task, as evaluation answers a held-out one"], form


def test_eval_of_an_export_task_folder_names_the_other_tasks_its_sub_network_answers_as_of_its_moe_form(
        moe_folder, tmp_path, capsys):
    # was: only the --keep-moe folder's report named parity as served by another route (its unseen-task route, beta's
    # gate row); the plain T5 of the same route scored parity as beta's sub-network without a word
    from t2t_mtl.evaluation import read_report

    routes = {}
    for form in ([], ["--keep-moe"]):
        folder = tmp_path / f"beta{''.join(form)}"
        assert main(["export", str(moe_folder), "--task", "beta", *form, "--out", str(folder)]) == 0
        assert main(["eval", "--checkpoint", str(folder), "--tasks", "parity", "--max-examples", "2",
                     "--scoring", "rank", "--no-progress", "--out", str(tmp_path / f"eval{''.join(form)}")]) == 0
        routes[folder.name] = read_report(tmp_path / f"eval{''.join(form)}").unseen_tasks
    assert routes == {"beta": {"parity": "the sub-network of task 'beta', which this export --task folder serves"},
                      "beta--keep-moe": {"parity": "experts routed by model.moe.unseen_task_routing 'mean' (the mean "
                                                   "of the trained tasks' gate rows)"}}
    assert ("Tasks the model was not trained on, served by the unseen-task route (the sub-network of task 'beta', "
            "which this export --task folder serves): parity") in capsys.readouterr().out


def test_export_task_of_a_held_out_task_where_unseen_task_routing_is_error_is_refused_without_a_warning(
        tmp_path, t5_tokenizer_dir, capsys, caplog):
    # was: a warning that the folder gets 'the experts that model.moe.unseen_task_routing (error) routes it to' before
    # the refusal, and a refusal of an unknown name saying a held-out task gets them
    tokenizer = load_tokenizer(t5_tokenizer_dir)
    _moe(len(tokenizer), unseen_task_routing="error").save_pretrained(tmp_path / "moe")
    tokenizer.save_pretrained(tmp_path / "moe")
    capsys.readouterr()
    with caplog.at_level("WARNING", logger="t2t_mtl.engine.export"):
        assert main(["export", str(tmp_path / "moe"), "--task", "glue_rte", "--out", str(tmp_path / "rte")]) == 2
    assert not [r for r in caplog.records if r.name == "t2t_mtl.engine.export"]
    assert capsys.readouterr().err == (
        "error: task 'glue_rte' is not one of the MoE model's tasks ['alpha', 'beta', 'gamma'] and "
        "model.moe.unseen_task_routing='error' refuses unseen tasks; set it to 'mean' or to a trained task's name\n")
    assert main(["export", str(tmp_path / "moe"), "--task", "glue_rt", "--out", str(tmp_path / "rte")]) == 2
    assert capsys.readouterr().err == (
        "error: --task 'glue_rt' is neither a task the model was trained on (alpha, beta, gamma) nor a registered task "
        "(a held-out task gets no experts: model.moe.unseen_task_routing is error, which refuses it); did you mean "
        "'glue_rte'?\n")


def test_predict_task_of_an_export_task_folder_is_its_own_or_another_warned_of_as_for_its_moe_form(moe_folder,
                                                                                                 tmp_path, capsys,
                                                                                                 caplog):
    # was, for the plain T5 alone: '--task beta would change nothing here: this model takes no task (...)' (exit 2),
    # for its own task as for another one, which its sub-network answers
    for form in ([], ["--keep-moe"]):
        folder = tmp_path / f"beta{''.join(form)}"
        assert main(["export", str(moe_folder), "--task", "beta", *form, "--out", str(folder)]) == 0
        capsys.readouterr()
        assert main(["predict", "--checkpoint", str(folder), "--max-new-tokens", "4", INPUTS[0]]) == 0
        answer = capsys.readouterr().out
        caplog.clear()
        with caplog.at_level("WARNING", logger="t2t_mtl.evaluation.predict"):
            for task in ("beta", "alpha"):
                assert main(["predict", "--checkpoint", str(folder), "--task", task, "--max-new-tokens", "4",
                             INPUTS[0]]) == 0, (form, task)
                assert capsys.readouterr().out == answer
        assert [r.getMessage() for r in caplog.records if r.name == "t2t_mtl.evaluation.predict"] == [
            "task 'alpha' (1 of 1 inputs) is not one the model was trained on (beta), so it is answered as an unseen "
            "task, as evaluation answers a held-out one"], form
