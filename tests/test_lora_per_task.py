"""Per-task LoRA adapters (`model.lora.per_task`): each batch row adapted by its own task's pair against the
formula, the mean adapter for unseen tasks, folding one task's adapter (export --task), and the engine: a step
moves only the adapters of the tasks it trained on, rank classification and generation route by task, export."""
from __future__ import annotations

import copy

import pytest
import torch
from transformers import T5ForConditionalGeneration

from t2t_mtl.cli import main as cli_main
from t2t_mtl.engine.export import fp32_state_dict, load_trained_model
from t2t_mtl.engine.trainer import seed_everything, train
from t2t_mtl.evaluation.rank_classification import score_choices
from t2t_mtl.config import config_from_dict
from t2t_mtl.model import accepts_task_ids, build_model
from t2t_mtl.model.lora import LoRAConfigError, LoRALinear, has_task_adapters, select_task_adapter
from t2t_mtl.model.task_routing import UNSEEN_TASK_ID, routing_task_id, set_task_ids
from t2t_mtl.tokenizer import load_tokenizer

from engine_helpers import TASKS, tiny_config, train_tiny_tokenizer

DIMS = {"d_model": 16, "d_kv": 8, "d_ff": 24, "num_layers": 2, "num_decoder_layers": 1, "num_heads": 2,
        "vocab_size": 50, "dropout_rate": 0.0}
PER_TASK = {"r": 2, "alpha": 4, "targets": ["q", "k", "v", "wo"], "per_task": True}


def _randomised(model):
    g = torch.Generator().manual_seed(3)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


def test_each_row_is_adapted_by_its_tasks_pair_and_unseen_rows_by_the_mean():
    torch.manual_seed(0)
    layer = LoRALinear(torch.nn.Linear(5, 4), r=2, alpha=6.0, num_tasks=3)
    torch.nn.init.normal_(layer.lora_B)
    w, bias = layer.weight.detach(), layer.bias.detach()
    a, b = layer.lora_A.detach(), layer.lora_B.detach()
    x = torch.randn(4, 3, 5)
    set_task_ids(layer, torch.tensor([2, 0, UNSEEN_TASK_ID, 1]))
    got = layer(x)
    for row, task in enumerate([2, 0, None, 1]):
        delta = sum(b[t] @ a[t] for t in range(3)) / 3 if task is None else b[task] @ a[task]
        expected = x[row] @ w.T + bias + 3.0 * x[row] @ delta.T
        torch.testing.assert_close(got[row], expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(layer.merged(UNSEEN_TASK_ID if task is None else task)(x[row]), expected,
                                   rtol=1e-5, atol=1e-5)
    set_task_ids(layer, torch.tensor([1, 0]))  # beam search: 2 ids for 4 rows, each repeated
    torch.testing.assert_close(layer(x)[1], x[1] @ w.T + bias + 3.0 * x[1] @ (b[1] @ a[1]).T, rtol=1e-5, atol=1e-5)
    # ids set by hand after set_task_ids (whose ids had no unseen row): their bounds are worked out anew
    layer.task_ids = torch.tensor([1, 0, UNSEEN_TASK_ID, 2])
    mean = sum(b[t] @ a[t] for t in range(3)) / 3
    torch.testing.assert_close(layer(x)[2], x[2] @ w.T + bias + 3.0 * x[2] @ mean.T, rtol=1e-5, atol=1e-5)
    set_task_ids(layer, None)
    with pytest.raises(LoRAConfigError, match="need the task of every batch row: call the model with task_ids"):
        layer(x)
    for bad in ([0, 3], [0, -2]):  # was: an IndexError, and -2 silently adapted like task 0
        set_task_ids(layer, torch.tensor(bad))
        with pytest.raises(LoRAConfigError, match=r"task ids must lie in \[0, 3\)"):
            layer(x)
    with pytest.raises(LoRAConfigError, match="pass the task id"):
        layer.merged()


def test_the_model_takes_task_ids_and_folding_a_task_gives_its_single_task_model():
    torch.manual_seed(0)
    model = _randomised(build_model({"dims": DIMS, "lora": PER_TASK}, task_names=["a", "b", "c"])).eval()
    assert accepts_task_ids(model) and has_task_adapters(model) and model.routing_task_names == ["a", "b", "c"]
    assert routing_task_id(model, "b") == 1 and routing_task_id(model, "held_out") == UNSEEN_TASK_ID
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(2, 50, (4, 6), generator=g), torch.randint(2, 50, (4, 3), generator=g)
    ids = torch.tensor([0, 1, 2, UNSEEN_TASK_ID])
    with torch.no_grad():
        full = model(input_ids=x, labels=y, task_ids=ids).logits
        beams = model.generate(input_ids=x, task_ids=ids, num_beams=2, max_new_tokens=4, do_sample=False)
        for row, task in enumerate(ids.tolist()):
            single = select_task_adapter(copy.deepcopy(model), task)
            assert type(single) is T5ForConditionalGeneration and not has_task_adapters(single)
            torch.testing.assert_close(single(input_ids=x[row:row + 1], labels=y[row:row + 1]).logits,
                                       full[row:row + 1], rtol=1e-4, atol=1e-5)
            alone = single.generate(input_ids=x[row:row + 1], num_beams=2, max_new_tokens=4, do_sample=False)
            assert alone[0].tolist() == beams[row].tolist()[:alone.shape[1]]
    with pytest.raises(LoRAConfigError, match="per_task needs the training task names"):
        build_model({"dims": DIMS, "lora": PER_TASK})
    with pytest.raises(LoRAConfigError, match="model.lora.per_task='yes': must be true"):
        build_model({"dims": DIMS, "lora": {**PER_TASK, "per_task": "yes"}}, task_names=["a"])


@pytest.mark.parametrize("task", [3, -2])
def test_folding_a_task_id_the_adapters_lack_is_refused(task):
    # was: id 3 failed with a bare IndexError from inside a layer, and -2 (Python's negative indexing) silently
    # folded task 1's adapter
    model = _randomised(build_model({"dims": DIMS, "lora": PER_TASK}, task_names=["a", "b", "c"]))
    with pytest.raises(LoRAConfigError, match=rf"task id {task} is not one of the adapters' 3 tasks \[0, 3\)"):
        select_task_adapter(model, task)
    layer = next(m for m in model.modules() if isinstance(m, LoRALinear))
    with pytest.raises(LoRAConfigError, match=rf"task id {task} is not one of the adapters' 3 tasks"):
        layer.merged(task)


def test_per_task_adapters_on_a_task_routed_moe_model():
    moe = {"num_experts": 3, "top_k": 1, "every": 1, "routing": "token", "backend": "reference"}
    torch.manual_seed(0)
    lora = {**PER_TASK, "targets": ["q", "v"]}  # every FFN is an MoE layer: no dense wo left to adapt
    model = _randomised(build_model({"dims": DIMS, "moe": moe, "lora": lora}, task_names=["a", "b"])).eval()
    assert model.routing_task_names == ["a", "b"]  # token routing takes no ids, the adapters do
    x = torch.randint(2, 50, (2, 5))
    with torch.no_grad():
        full = model(input_ids=x, decoder_input_ids=x, task_ids=torch.tensor([1, 0])).logits
        single = select_task_adapter(copy.deepcopy(model), 1)
        assert single.routing_task_names is None
        torch.testing.assert_close(single(input_ids=x[:1], decoder_input_ids=x[:1]).logits, full[:1],
                                   rtol=1e-4, atol=1e-5)


def test_keep_moe_for_token_routed_experts_with_task_adapters_says_why_it_keeps_no_experts(tmp_path, monkeypatch):
    # was: "this model has no MoE layers (its per-task LoRA adapter is folded into a plain T5)", of a model whose
    # MoE layers route by token (its --task export keeps them all)
    from t2t_mtl.engine import export

    moe = {"num_experts": 3, "top_k": 1, "every": 1, "routing": "token", "backend": "reference"}
    model = build_model({"dims": DIMS, "moe": moe, "lora": {**PER_TASK, "targets": ["q", "v"]}}, task_names=["a", "b"])
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")  # (a model folder; the model itself is the one built here)
    monkeypatch.setattr(export, "load_trained_model", lambda path: (model, None, {"tasks": ["a", "b"]}))
    with pytest.raises(export.ExportError) as refused:
        export.export_task_subnetwork(tmp_path / "m", "a", tmp_path / "out", keep_moe=True)
    assert str(refused.value) == (
        f"{tmp_path / 'm'}: --keep-moe keeps the experts of a task-routed MoE model; this model's MoE layers route "
        f"by token, so every task may use any expert (its --task export keeps them all, its per-task LoRA adapter "
        f"folded): export it without --keep-moe")


# ------------------------------------------------------------------------------------------- the engine

@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


@pytest.fixture(scope="module")
def per_task_run(tmp_path_factory, tok):
    root = tmp_path_factory.mktemp("per_task")
    cfg = tiny_config(root / "run", tok, root / "cache", training={"steps": 12, "lr": 3e-2},
                      sampling={"strategy": "uniform", "mode": "mixed"})
    cfg["model"]["lora"] = dict(PER_TASK)
    result = train(cfg)
    return root, cfg, result


def test_a_homogeneous_step_moves_only_its_tasks_adapter(tmp_path, tok):
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": 1, "lr": 3e-2})
    cfg["model"]["lora"] = dict(PER_TASK)
    result = train(cfg)
    (task,) = result.task_sequence
    seed_everything(0)
    model = build_model(config_from_dict(cfg).model, vocab_size=len(load_tokenizer(str(tok))), task_names=TASKS)
    before = model.state_dict()
    after = fp32_state_dict(tmp_path / "run" / "checkpoints" / "step-00000001", model)
    for name, value in before.items():
        if "lora_B" in name:  # B starts at zero: only the trained task's slice left it
            moved = [t for t in range(len(TASKS)) if not torch.equal(value[t], after[name][t])]
            assert moved == [TASKS.index(task)], (name, moved)
        else:
            assert torch.equal(value, after[name]) or "lora_A" in name, name


def test_rank_classification_routes_each_example_to_its_adapter(per_task_run, tok):
    root, _, _ = per_task_run
    model, tokenizer, _ = load_trained_model(root / "run")
    assert has_task_adapters(model)  # loading folds shared adapters only
    inputs = ["parity: 1 0 1", "count_word: a b a a", "reverse_words: x y"]
    choices = [["even", "odd"], ["1", "2", "3"], ["y x", "x y"]]
    ids = [routing_task_id(model, "parity"), routing_task_id(model, "count_word"), UNSEEN_TASK_ID]
    scores = score_choices(model, tokenizer, inputs, choices, task_ids=ids)
    for i, task in enumerate(ids):  # each example alone through its task's folded model
        single = select_task_adapter(copy.deepcopy(model), task)
        (alone,) = score_choices(single, tokenizer, [inputs[i]], [choices[i]])
        assert alone == pytest.approx(scores[i], abs=1e-4)


def test_export_needs_a_task_and_writes_its_single_task_model(per_task_run, tok, tmp_path, capsys):
    root, _, _ = per_task_run
    run = str(root / "run")
    assert cli_main(["export", run, "--out", str(tmp_path / "all")]) == 2
    assert "one LoRA adapter per task" in capsys.readouterr().err
    assert cli_main(["export", run, "--task", "parityy", "--out", str(tmp_path / "x")]) == 2
    assert "neither a task the model was trained on" in (err := capsys.readouterr().err)
    assert "did you mean 'parity'?" in err  # (was: no suggestion; the MoE refusal had one)
    assert cli_main(["export", run, "--task", "parity", "--keep-moe", "--out", str(tmp_path / "y")]) == 2
    assert "--keep-moe keeps the experts of a task-routed MoE model; this model has no MoE" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in ("all", "x", "y"))  # a refusal writes nothing
    model, tokenizer, _ = load_trained_model(root / "run")
    x = tokenizer(["parity: 1 1 0", "parity: 0 1"], return_tensors="pt", padding=True)
    for task, task_id in (("parity", TASKS.index("parity")), ("sort_words", UNSEEN_TASK_ID)):  # trained, held out
        assert cli_main(["export", run, "--task", task, "--out", str(tmp_path / task)]) == 0
        plain = T5ForConditionalGeneration.from_pretrained(str(tmp_path / task)).eval()
        with torch.no_grad():
            expected = model(**x, decoder_input_ids=x.input_ids, task_ids=torch.tensor([task_id] * 2)).logits
            got = plain(**x, decoder_input_ids=x.input_ids).logits
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_hybrid_routing_with_per_task_adapters_has_no_export(tmp_path, tok, capsys):
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": 1})
    cfg["model"]["lora"] = {**PER_TASK, "targets": ["q", "v"]}
    cfg["model"]["moe"] = {"num_experts": 2, "top_k": 1, "every": 1, "routing": "hybrid", "backend": "reference"}
    train(cfg)
    capsys.readouterr()
    assert cli_main(["export", str(tmp_path / "run"), "--task", "parity", "--out", str(tmp_path / "o")]) == 2
    assert "hybrid MoE routing have no single-task form" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_export_takes_a_held_out_task_of_the_runs_tasks_dir(tmp_path, tok, capsys):
    # was: export --task registered the built-in tasks only, so a held-out YAML task of the run's data.tasks_dir,
    # which `t2t-mtl eval` scores with the mean adapter, was refused as "neither trained nor registered"
    import task_registry

    from engine_helpers import write_yaml_task

    with task_registry.isolated_registry():
        tasks_dir = write_yaml_task(tmp_path / "tasks", "yaml_held", rows=8, held_out=True)
        cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": 2, "lr": 3e-2},
                          data={"tasks": ["parity", "count_word"], "tasks_dir": str(tasks_dir)},
                          sampling={"strategy": "uniform", "mode": "mixed"})
        cfg["model"]["lora"] = dict(PER_TASK)
        train(cfg, evaluate_held_in=False)
    model, tokenizer, _ = load_trained_model(tmp_path / "run")
    capsys.readouterr()
    with task_registry.isolated_registry():
        task_registry.registry._TASKS.pop("yaml_held", None)  # as in a fresh `t2t-mtl export` process
        assert cli_main(["export", str(tmp_path / "run"), "--task", "yaml_held", "--out", str(tmp_path / "o")]) == 0, \
            capsys.readouterr().err
    plain = T5ForConditionalGeneration.from_pretrained(str(tmp_path / "o")).eval()
    x = tokenizer(["parity: 1 1 0", "parity: 0 1"], return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = model(**x, decoder_input_ids=x.input_ids, task_ids=torch.tensor([UNSEEN_TASK_ID] * 2)).logits
        got = plain(**x, decoder_input_ids=x.input_ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_export_task_of_token_routed_experts_with_task_adapters_says_why_it_stays_an_moe_model(tmp_path, t5_tokenizer,
                                                                                              capsys):
    # was: "it stays an MoE model of the experts of task 'a', as --keep-moe asks (without it, export writes the
    # plain T5 that computes the same)", of an export without --keep-moe whose token routing has no plain form
    from t2t_mtl.cli.export import _print_task_form

    moe = {"num_experts": 3, "top_k": 1, "every": 1, "routing": "token", "backend": "reference"}
    model = build_model({"dims": {**DIMS, "vocab_size": len(t5_tokenizer)}, "moe": moe}, task_names=["a", "b"])
    model.save_pretrained(tmp_path)
    t5_tokenizer.save_pretrained(tmp_path)
    (tmp_path / "t2t_mtl_meta.json").write_text('{"task": "a", "tasks": ["a"]}')
    _print_task_form(tmp_path, "a", model.config.moe)
    out = capsys.readouterr().out
    assert out.startswith("it stays an MoE model: token routing picks each token's experts by the token too"), out
    assert "--keep-moe" not in out
