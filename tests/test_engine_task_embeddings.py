"""TE⊕ENC task embeddings in the training engine: with `model.task_embeddings: true` each encoder input gets its
task's `<task:NAME>` token, those embeddings are learned, the run's tokenizer (with the tokens) is saved for
export/evaluation, validation and evaluation prefix their inputs the same way, and `t2t-mtl affinity
embeddings RUN_DIR` writes the embeddings' JSON and plot."""
from __future__ import annotations

import json

import pytest
import torch

from t2t_mtl.cli import main as cli_main
from t2t_mtl.config import config_from_dict
from t2t_mtl.engine.distributed import DistEnv
from t2t_mtl.engine.export import load_trained_model
from t2t_mtl.engine import trainer as trainer_mod
from t2t_mtl.engine.trainer import train
from t2t_mtl.engine.validation import held_in_exact_match
from t2t_mtl.evaluation import EvalSettings, evaluate_tasks
from t2t_mtl.tokenizer import load_tokenizer

from engine_helpers import TASKS, tiny_config, train_tiny_tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


@pytest.fixture(scope="module")
def te_run(tmp_path_factory, tok):
    root = tmp_path_factory.mktemp("te")
    cfg = tiny_config(root / "run", tok, root / "cache", training={"steps": 10, "checkpoint_every": 4,
                                                                   "keep_checkpoints": 5},
                      data={"validation_examples": 2})
    cfg["model"]["task_embeddings"] = True
    fed = []  # (first input id, task id) of every example the model was trained on
    real = trainer_mod.forward_losses

    def spy(engine, batch, *args, **kwargs):
        fed.extend(zip(batch["input_ids"][:, 0].tolist(), batch["task_ids"].tolist()))
        return real(engine, batch, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer_mod, "forward_losses", spy)
        result = train(cfg)
    return result, root / "run", cfg, fed


def test_task_tokens_are_added_saved_and_learned(te_run, tok):
    _, run_dir, _, fed = te_run
    base = len(load_tokenizer(str(tok)))
    run_tok = load_tokenizer(str(run_dir / "tokenizer"))
    ids = [run_tok.convert_tokens_to_ids(f"<task:{name}>") for name in TASKS]
    assert ids == [base, base + 1, base + 2] and len(run_tok) == base + 3
    # every training example started with its own task's token
    assert len(fed) == 10 * 4 and all(first == ids[task_id] for first, task_id in fed)

    final, tokenizer, _ = load_trained_model(run_dir)
    assert len(tokenizer) == len(run_tok) and final.get_input_embeddings().weight.shape[0] == base + 3
    early, _, _ = load_trained_model(run_dir / "checkpoints" / "step-00000004")
    w0, w1 = early.get_input_embeddings().weight, final.get_input_embeddings().weight
    for i in ids:  # the task embeddings are trained (steps 5-10 moved them)
        assert not torch.equal(w0[i], w1[i])


def test_affinity_embeddings_writes_json_and_plot(te_run, tmp_path):
    _, run_dir, _, _ = te_run
    assert cli_main(["affinity", "embeddings", str(run_dir), "--out", str(tmp_path / "aff")]) == 0
    payload = json.loads((tmp_path / "aff" / "task_embeddings.json").read_text())
    assert (tmp_path / "aff" / "task_embeddings.png").stat().st_size > 1000
    model, tokenizer, _ = load_trained_model(run_dir)
    assert payload["tasks"] == TASKS
    weight = model.get_input_embeddings().weight.detach()
    for name, token_id, vector in zip(payload["tasks"], payload["token_ids"], payload["embeddings"]):
        assert token_id == tokenizer.convert_tokens_to_ids(f"<task:{name}>")
        torch.testing.assert_close(torch.tensor(vector), weight[token_id])


class _Engine:
    def __init__(self, module):
        self.module = module

    def zero_optimization_stage(self) -> int:
        return 0


def test_validation_and_evaluation_prefix_the_task_token(te_run, monkeypatch):
    _, run_dir, cfg_dict, _ = te_run
    model, tokenizer, _ = load_trained_model(run_dir)
    token_of = {name: tokenizer.convert_tokens_to_ids(f"<task:{name}>") for name in TASKS}

    seen = []
    real_generate = model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: seen.append(kw["input_ids"]) or real_generate(**kw))
    cfg = config_from_dict(cfg_dict)
    held_in_exact_match(_Engine(model), tokenizer, TASKS, cfg, DistEnv(0, 1, 0, torch.device("cpu"), "gloo"))
    assert [int(x[:, 0].unique().item()) for x in seen] == [token_of[name] for name in TASKS]

    import t2t_mtl.evaluation.runner as runner

    texts = []
    real_texts = runner.generate_texts

    def spy(m, t, inputs, **kwargs):
        texts.append(list(inputs))
        return real_texts(m, t, inputs, **kwargs)

    monkeypatch.setattr(runner, "generate_texts", spy)
    settings = EvalSettings(max_examples=2, scoring="generate", max_new_tokens=4,
                            templates={name: [_first_template(name)] for name in ("parity", "sort_words")})
    evaluate_tasks(model, tokenizer, ["parity", "sort_words"], settings, progress=False)
    parity, sort_words = texts
    assert all(t.startswith("<task:parity> ") for t in parity)
    assert not any(t.startswith("<task:") for t in sort_words)  # a task without a token is left as is


def _first_template(task_name: str) -> str:
    import task_registry

    templates = task_registry.get_task(task_name).templates
    return next(iter(templates)) if isinstance(templates, dict) else templates[0].name


def test_pretrained_model_grows_for_task_tokens_and_exports(tmp_path, tok):
    from transformers import T5ForConditionalGeneration

    from t2t_mtl.model import t5_config_from_dims

    base = len(load_tokenizer(str(tok)))
    dims = tiny_config(tmp_path, tok, tmp_path)["model"]["dims"]
    pretrained = T5ForConditionalGeneration(t5_config_from_dims(dims, vocab_size=base))
    pretrained.save_pretrained(tmp_path / "pretrained")  # exactly `base` rows: no room for the task tokens
    cfg = tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": 2})
    cfg["model"] = {"name_or_path": str(tmp_path / "pretrained"), "task_embeddings": True}
    train(cfg)
    model, tokenizer, _ = load_trained_model(tmp_path / "run")
    weight = model.get_input_embeddings().weight
    assert len(tokenizer) == base + len(TASKS) and weight.shape[0] == base + len(TASKS)
    # the pretrained rows are the ones training started from, moved by 2 steps only
    assert (weight[:base] - pretrained.get_input_embeddings().weight).abs().max() < 0.1


def test_growing_an_untied_head_keeps_its_pretrained_rows(tmp_path):
    # was: transformers 5 tied a T5 v1.1 model's own LM head to the embedding when resizing for task tokens,
    # replacing the pretrained head (and training it under LoRA)
    from transformers import T5ForConditionalGeneration

    from t2t_mtl.analysis.task_embeddings import resize_for_task_tokens
    from t2t_mtl.model import t5_config_from_dims

    torch.manual_seed(0)
    dims = {"d_model": 16, "d_kv": 8, "d_ff": 24, "num_layers": 1, "num_heads": 2, "feed_forward_proj": "gated-gelu"}
    model = T5ForConditionalGeneration(t5_config_from_dims(dims, 50))
    head = torch.nn.Linear(16, 50, bias=False)
    model.set_output_embeddings(head)
    model.save_pretrained(tmp_path / "v1_1")
    model = T5ForConditionalGeneration.from_pretrained(tmp_path / "v1_1")
    pretrained = model.lm_head.weight.detach().clone()
    model.lm_head.weight.requires_grad_(False)  # as LoRA freezes it
    resize_for_task_tokens(model, type("Tok", (), {"__len__": lambda self: 53})())
    assert model.lm_head.weight is not model.shared.weight and model.lm_head.weight.shape == (53, 16)
    assert torch.equal(model.lm_head.weight[:50], pretrained) and not model.lm_head.weight.requires_grad
    assert model.shared.weight.requires_grad
    torch.testing.assert_close(model.lm_head.weight[50:], model.shared.weight[50:])  # new rows start alike
