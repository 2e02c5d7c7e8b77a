"""Task-aware MoE in the training engine: a tiny task-routed MoE-T5 trains through `train(cfg)` with its aux
loss logged, and its checkpoint exports to a full model and, per task, to the sub-network of that task's
experts (`t2t-mtl export --task`), which gives the full model's outputs for that task."""
from __future__ import annotations

import math
import re

import pytest
import torch
import yaml
from transformers import T5ForConditionalGeneration

from t2t_mtl.cli import main as cli_main
from t2t_mtl.engine.export import export_model, load_trained_model
from t2t_mtl.engine.trainer import train
from t2t_mtl.model import build_model
from t2t_mtl.model.moe import UNSEEN_TASK_ID, MoEConfigError, TaskAwareT5, moe_blocks

from engine_helpers import TASKS, step_records, tiny_config, train_tiny_tokenizer

MOE = {"num_experts": 4, "top_k": 2, "every": 1, "routing": "task", "aux_loss_coef": 0.01, "z_loss_coef": 0.001}
HELD_OUT = "comparison"  # a procedural cluster none of TASKS is in


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


@pytest.fixture(scope="module")
def moe_run(tmp_path_factory, tok):
    root = tmp_path_factory.mktemp("moe")
    cfg = tiny_config(root / "run", tok, root / "cache", model={"moe": dict(MOE)}, training={"steps": 12},
                      data={"validation_examples": 2, "held_out_clusters": [HELD_OUT]},
                      evaluation={"held_out": True, "max_examples": 2, "batch_size": 8})
    return train(cfg), root / "run"


def _batch(tokenizer, texts):
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
            "decoder_input_ids": torch.tensor([[0, 5, 6, 7]] * len(texts))}


def test_moe_run_trains_and_logs_aux_loss(moe_run):
    result, run_dir = moe_run
    assert result.step == 12 and result.skipped_steps == 0 and result.held_in_accuracy is not None
    records = step_records(run_dir)
    assert sorted(records) == list(range(1, 13))
    losses = [records[s]["loss"] for s in range(1, 13)]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    for record in records.values():
        moe = record["moe"]
        assert math.isfinite(moe["aux_loss"]) and moe["aux_loss"] > 0
        # the logged aux loss is the configured mix of the two logged per-layer sums
        assert moe["aux_loss"] == pytest.approx(MOE["aux_loss_coef"] * moe["load_balancing"]
                                                + MOE["z_loss_coef"] * moe["z_loss"], rel=1e-6)
        # one task per micro-batch: every token goes to the task's top-k experts (f_e = 1/k on them), so each
        # of the 2 MoE layers has Switch loss E·Σ f·P = E/k·Σ_{top-k} P, between 1 (uniform P) and E/k
        assert 2 - 1e-6 <= moe["load_balancing"] <= 2 * MOE["num_experts"] / MOE["top_k"] + 1e-6
        assert moe["dropped"] == 0.0  # task routing never drops
        # the aux loss enters once, outside the equal task weighting (1/3 per task); the task losses are the tasks'
        # cross-entropy (was: aux/tasks added to each task's loss, so its strength depended on the weighting)
        assert record["weighted_loss"] == pytest.approx(record["loss"] / 3 + moe["aux_loss"], rel=1e-5)
        # each MoE layer's expert load of the step's one task: its top-k experts, 1/k of its choices each
        assert sorted(moe["expert_load"]) == sorted(record["task_examples"])
        for layers in moe["expert_load"].values():
            assert sorted(layers) == ["decoder.0", "encoder.0"]
            for shares in layers.values():
                assert sorted(shares) == [0.0] * (MOE["num_experts"] - MOE["top_k"]) + [1 / MOE["top_k"]] * MOE["top_k"]


def test_task_routed_run_evaluates_held_out_tasks_zero_shot(moe_run):
    """The end-of-run `evaluation: held_out` scores every held-out task (routed by the mean gate row)."""
    import task_registry
    from t2t_mtl.evaluation import read_report

    result, run_dir = moe_run
    held_out = task_registry.list_tasks(cluster=HELD_OUT)
    assert held_out and not set(held_out) & set(TASKS)
    assert sorted(result.held_out_scores) == held_out and result.held_out_accuracy is not None
    report = read_report(run_dir / "eval")
    assert sorted(report.tasks()) == held_out and all(r.score is not None for r in report.results)


def test_moe_checkpoint_exports_and_task_subnetwork_matches(moe_run, tmp_path, capsys):
    result, run_dir = moe_run
    full, tokenizer, meta = load_trained_model(run_dir)
    assert isinstance(full, TaskAwareT5) and meta["tasks"] == TASKS
    # independent reference: the fp32 module weights DeepSpeed wrote at ZeRO stage 0
    states = torch.load(result.checkpoint / "ds" / "mp_rank_00_model_states.pt", weights_only=False)["module"]
    for name, value in full.state_dict().items():
        if name in states:
            assert torch.equal(value, states[name].float()), name

    exported = export_model(run_dir, tmp_path / "hf")
    again, _, _ = load_trained_model(exported)
    assert isinstance(again, TaskAwareT5)
    batch = _batch(tokenizer, ["parity: 1 0 1", "parity: 1 1"])
    tid = TASKS.index("parity")
    ids = torch.full((2,), tid)
    with torch.no_grad():
        reference = full(**batch, task_ids=ids).logits
        assert torch.equal(again(**batch, task_ids=ids).logits, reference)

    capsys.readouterr()
    assert cli_main(["export", str(run_dir), "--task", "parity", "--keep-moe", "--out", str(tmp_path / "parity")]) == 0
    # was: only 'exported ...', though plain transformers loads the folder with its MoE FFNs freshly initialised
    assert "load it with t2t_mtl.load_trained_model or t2t_mtl.model.moe.load_t5_or_moe" in capsys.readouterr().out
    with torch.no_grad():
        plain = T5ForConditionalGeneration.from_pretrained(tmp_path / "parity").eval()
        assert not torch.allclose(plain(**batch).logits, reference, atol=1e-3)
    sub, sub_tok, sub_meta = load_trained_model(tmp_path / "parity")
    assert isinstance(sub, TaskAwareT5) and sub_meta["tasks"] == ["parity"] and len(sub_tok) == len(tokenizer)
    full_blocks = dict(moe_blocks(full))
    for layer, block in moe_blocks(sub):
        expected = torch.topk(full_blocks[layer].task_gate.weight[tid], MOE["top_k"]).indices.sort().values
        assert block.expert_ids == expected.tolist() and len(block.experts) == MOE["top_k"]
    assert sum(p.numel() for p in sub.parameters()) < sum(p.numel() for p in full.parameters())
    with torch.no_grad():
        torch.testing.assert_close(sub(**batch, task_ids=torch.zeros(2, dtype=torch.long)).logits, reference,
                                   rtol=1e-5, atol=1e-6)
        enc = {k: batch[k] for k in ("input_ids", "attention_mask")}
        assert torch.equal(sub.generate(**enc, task_ids=torch.zeros(2, dtype=torch.long), max_new_tokens=5),
                           full.generate(**enc, task_ids=ids, max_new_tokens=5))

    capsys.readouterr()
    assert cli_main(["export", str(run_dir), "--task", "parityy", "--out", str(tmp_path / "x")]) == 2
    assert ("--task 'parityy' is neither a task the model was trained on (reverse_words, parity, count_word) nor a "
            "registered task") in capsys.readouterr().err


def test_export_task_of_a_held_out_task_serves_the_unseen_route(moe_run, tmp_path):
    import task_registry

    _, run_dir = moe_run
    full, tokenizer, _ = load_trained_model(run_dir)
    task = task_registry.list_tasks(cluster=HELD_OUT)[0]
    assert cli_main(["export", str(run_dir), "--task", task, "--out", str(tmp_path / "unseen")]) == 0
    sub, _, meta = load_trained_model(tmp_path / "unseen")
    assert meta["tasks"] == [task] and meta["unseen_task_routing"] == "mean"
    batch = _batch(tokenizer, ["compare: 3 7", "compare: 12 5"])
    with torch.no_grad():
        torch.testing.assert_close(sub(**batch).logits, full(**batch, task_ids=torch.full((2,), UNSEEN_TASK_ID)).logits,
                                   rtol=1e-5, atol=1e-6)


def test_export_task_refuses_token_and_hybrid_routing_and_dense_models(tmp_path, tok, capsys):
    from t2t_mtl.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(str(tok))
    dims = tiny_config(tmp_path, tok, tmp_path)["model"]["dims"]
    for name, moe in (("token", {**MOE, "routing": "token"}), ("hybrid", {**MOE, "routing": "hybrid"}),
                      ("dense", None)):
        model = build_model({"dims": dims, "moe": moe}, vocab_size=len(tokenizer), task_names=TASKS)
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    capsys.readouterr()
    for name in ("token", "dense"):
        assert cli_main(["export", str(tmp_path / name), "--task", "parity", "--out", str(tmp_path / "o")]) == 2
        assert "serves every task alike — export it without --task" in capsys.readouterr().err
    # was: "error: extract_task_subnetwork needs model.moe.routing='task'; ...", naming a function, not the folder
    # nor what to do
    assert cli_main(["export", str(tmp_path / "hybrid"), "--task", "parity", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'hybrid'}: --task needs a task-routed MoE model (model.moe with routing: task) or "
        f"per-task LoRA adapters (model.lora.per_task); hybrid routing picks each token's experts by the token too, "
        f"so a task's tokens may use any expert of a layer: no expert can be left out for one task — export it "
        f"without --task\n")


def test_bad_moe_config_fails_before_tokenizing(tmp_path, tok):
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", model={"moe": {**MOE, "num_expert": 4}})
    with pytest.raises(MoEConfigError, match="did you mean 'num_experts'"):
        train(cfg)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


@pytest.mark.parametrize("moe, message", [
    ({"every": 3}, r"model\.moe\.every=3 with layers='both' selects no layer of a model with 1\+1 layers.*every <= 1"),
    ({"every": 2, "layers": "decoder"}, r"model\.moe\.every=2 with layers='decoder' selects no layer.*every <= 1")])
def test_moe_layers_that_select_no_layer_are_refused_before_tokenizing(tmp_path, tok, capsys, moe, message):
    # was: print-config passed it, and the run said so only once the data was tokenized and DeepSpeed built
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", model={"moe": {**MOE, **moe}})
    _refused_before_tokenizing(cfg, tmp_path, capsys, MoEConfigError, message)


def _refused_before_tokenizing(cfg, tmp_path, capsys, error, message):
    """`train(cfg)` raises `error` matching `message` with nothing in the cache, and `train --print-config` of the
    config exits 2 with the message."""
    with pytest.raises(error, match=message):
        train(cfg)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli_main(["train", str(path), "--print-config"]) == 2
    assert re.search(message, capsys.readouterr().err)


def _saved_moe_model(folder, tok, moe=MOE):
    """A task-routed (`moe`'s routing) MoE model of TASKS saved with the tokenizer `tok` in `folder`, as an export
    writes one."""
    from transformers import AutoTokenizer

    dims = tiny_config(folder, tok, folder)["model"]["dims"]
    tokenizer = AutoTokenizer.from_pretrained(str(tok))
    model = build_model({"dims": dims, "moe": moe}, vocab_size=len(tokenizer), task_names=TASKS)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def test_a_moe_section_over_an_exported_moe_model_is_refused_before_tokenizing(tmp_path, tok):
    _saved_moe_model(tmp_path / "moe_model", tok)
    model_section = {"name_or_path": str(tmp_path / "moe_model"), "dims": {}, "moe": dict(MOE)}
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", model=model_section)
    with pytest.raises(ValueError, match=r"is already a mixture-of-experts model .*: remove model\.moe"):
        train(cfg)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_an_exported_task_routed_model_on_other_tasks_is_refused_before_tokenizing(tmp_path, tok, capsys):
    # was: print-config passed a run initialised from a task-routed MoE folder on another task list, and train
    # refused it only when building the model, after rendering and tokenizing every task (43 s on the quickstart)
    _saved_moe_model(tmp_path / "moe_model", tok)
    other = [TASKS[1], TASKS[0], *TASKS[2:]]
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", data={"tasks": other},
                      model={"name_or_path": str(tmp_path / "moe_model"), "dims": {}})
    message = (rf"routes experts by the task ids of \[{', '.join(map(repr, TASKS))}\], but this run's tasks are "
               rf"\[{', '.join(map(repr, other))}\]: train on the same tasks in the same order \(data.tasks: "
               rf"\[{', '.join(map(repr, TASKS))}\]\), or fine-tune one task's experts on other tasks: `t2t-mtl "
               rf"export {tmp_path / 'moe_model'} --task NAME --out DIR` writes them as a plain T5 \(a task it was not "
               r"trained on: the unseen-task route's\) for model.name_or_path$")
    _refused_before_tokenizing(cfg, tmp_path, capsys, ValueError, message)


def test_the_moe_layer_check_leaves_a_hub_models_config_to_the_build(tmp_path, tok, monkeypatch):
    # was: the checks built a hub model's shape too, reading its config from the hub before any other hub access
    # (offline, `train --print-config` of google/t5-small with model.moe failed; the LoRA check skips hub models)
    from t2t_mtl.config import config_from_dict
    from t2t_mtl.engine import model_checks, run_checks

    built = []
    monkeypatch.setattr(model_checks, "build_model", lambda model_cfg, **kwargs: built.append(model_cfg.name_or_path))
    model_section = {"name_or_path": "google/t5-v1_1-small", "dims": {}, "moe": dict(MOE)}
    run_checks.check_run_config(config_from_dict(tiny_config(tmp_path / "run", tok, tmp_path / "cache",
                                                             model=model_section)))
    assert built == []
    run_checks.check_run_config(config_from_dict(tiny_config(tmp_path / "run", tok, tmp_path / "cache",
                                                             model={"moe": dict(MOE)})))
    assert built == [None]  # (a model.dims one: its shape is checked)


def test_the_moe_figures_reach_tensorboard_and_wandb(moe_run):
    # was: they were written to metrics.jsonl only; the TensorBoard (and W&B) scalars had no sign of the aux loss
    # or of dropped tokens
    from t2t_mtl.engine.logging import training_scalars

    _, run_dir = moe_run
    for record in step_records(run_dir).values():
        scalars = training_scalars(record)
        for key in ("aux_loss", "load_balancing", "z_loss", "dropped"):
            assert scalars[f"moe/{key}"] == record["moe"][key]
        layers = record["moe"]["per_layer"]  # each MoE layer's own (was: the sums over the layers alone)
        assert sorted(layers) == ["decoder.0", "encoder.0"]
        assert {tag: value for tag, value in scalars.items() if tag.count("/") == 2} == {
            f"moe/{key}/{layer}": figures[key] for layer, figures in layers.items() for key in figures}
        assert not any("expert_load" in tag for tag in scalars)  # (metrics.jsonl only: tasks × layers × experts)


def test_a_validation_step_logs_the_moe_choices_validation_dropped_over_capacity(tmp_path, tok):
    # was: periodic validation counted no capacity drops (eval and predict did), so metrics.jsonl and TensorBoard
    # showed training's moe.dropped only; validation's count against a reference: tests/test_validation_sharding.py
    from t2t_mtl.engine.logging import training_scalars

    moe = {**MOE, "routing": "token", "top_k": 1, "eval_capacity_factor": 0.5, "min_capacity": 1}
    train(tiny_config(tmp_path / "run", tok, tmp_path / "cache", model={"moe": moe},
                      training={"steps": 2, "validate_every": 2, "validate_examples": 2}), evaluate_held_in=False)
    records = step_records(tmp_path / "run")
    assert "val_dropped" not in records[1]["moe"]  # (not a validation step)
    figures = records[2]["moe"]
    assert 0 < figures["val_num_dropped"] < figures["val_choices"]
    assert figures["val_dropped"] == pytest.approx(figures["val_num_dropped"] / figures["val_choices"])
    scalars = training_scalars(records[2])
    assert all(scalars[f"moe/{key}"] == figures[key] for key in ("val_dropped", "val_num_dropped", "val_choices"))


@pytest.mark.parametrize("routing, stage", [("token", 2), ("hybrid", 3)])
def test_a_resumed_moe_run_continues_as_the_uninterrupted_run(tmp_path, tok, routing, stage):
    # routers, task gates and experts resume with their optimizer state: the losses, routing figures (capacity drops
    # included) and weights after the resume are the uninterrupted run's
    moe = {**MOE, "routing": routing, "capacity_factor": 0.5, "min_capacity": 1}

    def config(run, steps):
        return tiny_config(tmp_path / run, tok, tmp_path / "cache", model={"moe": moe},
                           deepspeed={"zero_stage": stage}, training={"steps": steps})

    train(config("whole", 4), evaluate_held_in=False)
    train(config("cut", 2), evaluate_held_in=False)
    assert train(config("cut", 4), resume="auto", evaluate_held_in=False).step == 4
    whole, cut = step_records(tmp_path / "whole"), step_records(tmp_path / "cut")
    assert sorted(cut) == [1, 2, 3, 4] and any(whole[step]["moe"]["dropped"] > 0 for step in (3, 4))
    for step in (3, 4):
        assert cut[step]["task_examples"] == whole[step]["task_examples"]
        assert cut[step]["loss"] == pytest.approx(whole[step]["loss"], rel=1e-6)
        load = whole[step]["moe"].pop("expert_load")
        assert cut[step]["moe"].pop("expert_load") == load  # (shares of the step's counted choices: exact)
        layers = whole[step]["moe"].pop("per_layer")
        assert {layer: pytest.approx(figures, rel=1e-6) for layer, figures in layers.items()} == cut[step]["moe"].pop(
            "per_layer")
        assert cut[step]["moe"] == pytest.approx(whole[step]["moe"], rel=1e-6)
    weights = [load_trained_model(tmp_path / run)[0].state_dict() for run in ("whole", "cut")]
    for name, weight in weights[0].items():
        torch.testing.assert_close(weights[1][name], weight, rtol=0, atol=1e-6, msg=name)


def test_export_task_of_a_top_1_run_is_a_plain_t5_with_the_runs_outputs(tmp_path, tok, capsys):
    # was: an MoE folder, which AutoModelForSeq2SeqLM loaded with its MoE feed-forward layers freshly initialised;
    # a gated-gelu run with task embeddings, its top-1 gates left at softmax probabilities (renormalize null)
    from transformers import AutoModelForSeq2SeqLM

    from t2t_mtl.analysis.task_embeddings import prefix_task_token

    dims = {**tiny_config(tmp_path, tok, tmp_path)["model"]["dims"], "feed_forward_proj": "gated-gelu"}
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": 4},
                      model={"dims": dims, "task_embeddings": True, "moe": {**MOE, "top_k": 1}})
    train(cfg)
    capsys.readouterr()
    assert cli_main(["export", str(tmp_path / "run"), "--task", "parity", "--out", str(tmp_path / "parity")]) == 0
    out = capsys.readouterr().out
    assert "is a plain T5" in out and "its inputs take the task token <task:parity> in front" in out
    plain, info = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "parity", output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    full, tokenizer, _ = load_trained_model(tmp_path / "run")
    routes = load_trained_model(tmp_path / "parity")[2]["dense_from_experts"].values()
    gates = [gate for route in routes for gate in route["gates"]]
    assert len(gates) == 2 and all(0 < gate < 1 for gate in gates)
    enc = tokenizer([prefix_task_token(t, "parity") for t in ("parity: 1 0 1", "parity: 1 1")], return_tensors="pt",
                    padding=True)
    ids = torch.full((2,), TASKS.index("parity"))
    with torch.no_grad():
        decoder = torch.tensor([[0, 5, 6, 7]] * 2)
        torch.testing.assert_close(plain.eval()(**enc, decoder_input_ids=decoder).logits,
                                   full(**enc, decoder_input_ids=decoder, task_ids=ids).logits, rtol=1e-5, atol=1e-5)
        assert torch.equal(plain.generate(**enc, max_new_tokens=5),
                           full.generate(**enc, task_ids=ids, max_new_tokens=5))
    # the folder fine-tunes as a new run's plain T5 (model.name_or_path, its tokenizer with it)
    tuned = tiny_config(tmp_path / "tuned", tok, tmp_path / "cache2", training={"steps": 2}, tokenizer={"path": None},
                        model={"name_or_path": str(tmp_path / "parity"), "dims": None, "task_embeddings": True})
    assert train(tuned).step == 2
    model, _, meta = load_trained_model(tmp_path / "tuned")
    assert type(model) is T5ForConditionalGeneration and meta["initialised_from"]["task"] == "parity"


@pytest.mark.parametrize("routing", ["token", "hybrid"])
def test_a_routing_backend_that_cannot_run_on_the_device_is_refused_before_tokenizing(tmp_path, tok, capsys,
                                                                                     monkeypatch, routing):
    # was: the first training forward's traceback (t2t_kernels' MoEKernelError, which `train` does not print as an
    # error line), once the tasks were tokenized and DeepSpeed built; --print-config passed it
    import t2t_kernels.moe as kernels
    from t2t_mtl.config import ConfigError, load_config

    monkeypatch.setattr(kernels, "_INTERPRETING", False)  # a CPU machine without TRITON_INTERPRET=1
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache",
                      model={"moe": {**MOE, "routing": routing, "backend": "triton"}})
    message = ("model.moe.backend='triton': backend='triton' cannot run on cpu: tensors are not on CUDA and "
               "TRITON_INTERPRET=1 was not set before t2t_kernels.moe was imported; use backend='reference'")
    _refused_before_tokenizing(cfg, tmp_path, capsys, ConfigError, re.escape(message))
    from t2t_mtl.engine.model_checks import check_moe_backend

    cpu = torch.device("cpu")
    for moe in ({"backend": "auto"}, {"backend": "reference"}, {"routing": "task", "backend": "triton"}):
        # the reference on CPU; task routing runs no routing kernel
        check_moe_backend(load_config(None, extra={**cfg, "model": {**cfg["model"], "moe": {**MOE, **moe}}}),
                          None, cpu)
    # a model.name_or_path that is an MoE folder routes with its own config.json's moe (`saved`)
    dense = load_config(None, extra={**cfg, "model": {key: v for key, v in cfg["model"].items() if key != "moe"}})
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_moe_backend(dense, {"moe": {**MOE, "routing": routing, "backend": "triton"}}, cpu)
    check_moe_backend(dense, {"moe": {**MOE, "routing": routing}}, cpu)


def test_more_experts_than_the_triton_kernels_take_are_refused_before_tokenizing(tmp_path, tok, monkeypatch):
    # was: model.moe.num_experts passed up to 2**20 (the router's limit), and on a GPU the first training forward
    # stopped in the dispatch, which takes at most 2**14 experts (as here, interpreted on CPU)
    import t2t_kernels.moe as kernels
    from t2t_kernels.moe import MoEKernelError, plan_dispatch
    from t2t_mtl.config import ConfigError, load_config
    from t2t_mtl.engine.model_checks import check_moe_backend

    with pytest.raises(MoEKernelError, match="the Triton dispatch takes at most 16384 experts, got 16385"):
        plan_dispatch(torch.zeros(1, 1, dtype=torch.long), 16385, backend="triton")
    monkeypatch.setattr(kernels, "_TRITON_IMPORT_ERROR", None)  # (a GPU machine: Triton imports)

    def config(**moe):
        cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", model={"moe": {**MOE, "routing": "token", **moe}})
        return load_config(None, extra=cfg)

    gpu = torch.device("cuda", 0)  # (only its type is read: no tensor is made)
    with pytest.raises(ConfigError) as refused:
        check_moe_backend(config(num_experts=16385), None, gpu)
    assert str(refused.value) == ("model.moe.backend='auto': the Triton routing takes at most 16384 experts, got "
                                  "16385; use backend='reference'")
    check_moe_backend(config(num_experts=16384), None, gpu)
    check_moe_backend(config(num_experts=16385, backend="reference"), None, gpu)
    check_moe_backend(config(num_experts=16385), None, torch.device("cpu"))  # (auto: the reference there)


def test_an_exported_hybrid_routed_model_on_other_tasks_is_told_to_train_on_its_tasks_alone(tmp_path, tok, capsys):
    # hybrid routing picks experts per token too: no task's experts to export as a plain T5 for another task
    _saved_moe_model(tmp_path / "moe_model", tok, moe={**MOE, "routing": "hybrid"})
    other = [TASKS[1], TASKS[0], *TASKS[2:]]
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", data={"tasks": other},
                      model={"name_or_path": str(tmp_path / "moe_model"), "dims": {}})
    message = (rf"routes experts by the task ids of \[{', '.join(map(repr, TASKS))}\], but this run's tasks are "
               rf"\[{', '.join(map(repr, other))}\]: train on the same tasks in the same order \(data.tasks: "
               rf"\[{', '.join(map(repr, TASKS))}\]\)$")
    _refused_before_tokenizing(cfg, tmp_path, capsys, ValueError, message)


def test_a_routing_backend_check_takes_the_moe_defaults_a_config_leaves_out(monkeypatch):
    # kills a mutant of check_moe_backend that its tests let live: a model.moe without a routing key (token routing,
    # MoEConfig's default) taken as task routing and so never checked; the tests' configs all named their routing
    import t2t_kernels.moe as kernels
    from t2t_mtl.config import ConfigError, load_config
    from t2t_mtl.engine.model_checks import check_moe_backend

    monkeypatch.setattr(kernels, "_INTERPRETING", False)  # a CPU machine without TRITON_INTERPRET=1
    dims = {"d_model": 16, "d_kv": 4, "d_ff": 32, "num_layers": 1, "num_heads": 2}
    cfg = load_config(None, extra={"data": {"tasks": TASKS}, "model": {"dims": dims, "moe": {"backend": "triton"}}})
    assert "routing" not in cfg.model.moe
    with pytest.raises(ConfigError) as refused:
        check_moe_backend(cfg, None, torch.device("cpu"))
    assert str(refused.value) == ("model.moe.backend='triton': backend='triton' cannot run on cpu: tensors are not on "
                                  "CUDA and TRITON_INTERPRET=1 was not set before t2t_kernels.moe was imported; use "
                                  "backend='reference'")


def test_training_steps_dropping_many_choices_over_capacity_are_warned_of_once_a_run(tmp_path, tok, capsys):
    # was: a run whose MoE layers dropped most of their choices over expert capacity said so only in metrics.jsonl
    # and TensorBoard (moe.dropped); now once, at the first logged step past DROPPED_SHARE_WARNING
    from t2t_mtl.engine.capacity_overflow import DROPPED_SHARE_WARNING

    moe = {"num_experts": 4, "top_k": 1, "every": 1, "routing": "token", "min_capacity": 1}
    for factor in (0.25, 4.0):  # (each expert takes a sixteenth of the tokens; every token its expert: none dropped)
        run_dir = tmp_path / f"factor-{factor}"
        capsys.readouterr()
        train(tiny_config(run_dir, tok, tmp_path / "cache", model={"moe": {**moe, "capacity_factor": factor}},
                          training={"steps": 3}), evaluate_held_in=False)
        warned = [line for line in capsys.readouterr().out.splitlines() if "over expert capacity" in line]
        records = step_records(run_dir)
        over = [step for step, record in sorted(records.items()) if record["moe"]["dropped"] > DROPPED_SHARE_WARNING]
        if factor == 4.0:
            assert warned == [] and all(record["moe"]["dropped"] == 0 for record in records.values())
            continue
        assert over == [1, 2, 3]  # (3 of 4 choices at least)
        assert warned == [
            f"warning: step 1: the MoE layers dropped {records[1]['moe']['dropped']:.1%} of the (token, slot) choices "
            f"they routed over expert capacity (model.moe.capacity_factor 0.25; warned over 10%, once a run): a "
            f"dropped choice gives its token no output of that expert; raise capacity_factor, or set "
            f"model.moe.dropless: true (each logged step's share is its record's moe.dropped, per layer "
            f"moe.per_layer, TensorBoard moe/dropped)"]


def test_the_export_of_a_token_routed_run_says_it_loads_without_task_ids_as_it_does(tmp_path, tok, capsys):
    # was: "... load it with t2t_mtl.load_trained_model or t2t_mtl.model.moe.load_t5_or_moe and pass task_ids", which
    # token routing never reads to route (its per-task expert counts aside)
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": 2},
                      model={"moe": {**MOE, "routing": "token", "dropless": True}})
    train(cfg, evaluate_held_in=False)
    capsys.readouterr()
    assert cli_main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "hf")]) == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        f"{tmp_path / 'hf'} holds mixture-of-experts layers: load it with t2t_mtl.load_trained_model or "
        f"t2t_mtl.model.moe.load_t5_or_moe (its layers route each token by the token alone: no task ids); "
        f"T5ForConditionalGeneration / AutoModelForSeq2SeqLM.from_pretrained would load it without its experts, those "
        f"feed-forward layers freshly initialised")
    full, tokenizer, _ = load_trained_model(tmp_path / "run")
    exported, _, _ = load_trained_model(tmp_path / "hf")
    batch = _batch(tokenizer, ["parity: 1 0 1", "parity: 1 1"])
    with torch.no_grad():
        assert torch.equal(exported(**batch).logits,
                           full(**batch, task_ids=torch.full((2,), TASKS.index("parity"))).logits)
