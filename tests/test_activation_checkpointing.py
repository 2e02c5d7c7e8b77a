"""`model.activation_checkpointing`: blocks recompute their activations in the backward, the gradients and the
training run are those of a plain model (dense and MoE, ZeRO 0 and 3, with gradient surgery), bad values are
refused before anything is tokenized."""
from __future__ import annotations

import pytest
import torch
from transformers.models.t5.modeling_t5 import T5LayerSelfAttention

from t2t_mtl.config import ConfigError, ModelConfig, config_from_dict
from t2t_mtl.engine.trainer import train
from t2t_mtl.model import build_model

from engine_helpers import step_records, tiny_config, train_tiny_tokenizer

DIMS = {"d_model": 16, "d_kv": 4, "d_ff": 32, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 2,
        "dropout_rate": 0.1}  # dropout on: the recompute must replay the same masks
MOE_TOKEN = {"num_experts": 4, "top_k": 2, "every": 1, "routing": "token", "backend": "reference"}
MOE_TASK = {"num_experts": 4, "top_k": 2, "every": 1, "routing": "task", "task_names": ["a", "b"]}


def _self_attention_calls(model: torch.nn.Module) -> list:
    """A counter per block (encoder then decoder) of its self-attention sub-layer's calls. A checkpointed block
    replays its forward, sub-layers included, in the backward; the block's own hooks stay outside the replay."""
    counts = []
    for stack in (model.encoder, model.decoder):
        for block in stack.block:
            counts.append([0])
            block.layer[0].register_forward_hook(lambda *_, c=counts[-1]: c.__setitem__(0, c[0] + 1))
    return counts


def _loss_and_grads(model: torch.nn.Module, task_ids: bool) -> tuple:
    torch.manual_seed(1)
    x = torch.randint(2, 60, (3, 7))
    labels = torch.randint(2, 60, (3, 5))
    kwargs = {"task_ids": torch.tensor([0, 1, 0])} if task_ids else {}
    model.train()
    torch.manual_seed(2)  # dropout masks
    loss = model(input_ids=x, attention_mask=torch.ones_like(x), labels=labels, use_cache=False, **kwargs).loss
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


@pytest.mark.parametrize("moe", [None, MOE_TOKEN, MOE_TASK], ids=["dense", "moe-token", "moe-task"])
@pytest.mark.parametrize("every", [True, 2])
def test_checkpointed_blocks_recompute_and_give_the_plain_gradients(moe, every):
    plain_cfg = ModelConfig(dims=DIMS, moe=moe)
    torch.manual_seed(0)
    plain = build_model(plain_cfg, vocab_size=64)
    torch.manual_seed(0)
    checkpointed = build_model(ModelConfig(dims=DIMS, moe=moe, activation_checkpointing=every), vocab_size=64)
    for p, q in zip(plain.parameters(), checkpointed.parameters()):
        assert torch.equal(p, q)
    counts = _self_attention_calls(checkpointed)
    loss_a, grads_a = _loss_and_grads(plain, moe is MOE_TASK)
    loss_b, grads_b = _loss_and_grads(checkpointed, moe is MOE_TASK)
    assert torch.equal(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) == len(list(plain.parameters()))
    for name, grad in grads_a.items():
        torch.testing.assert_close(grads_b[name], grad, rtol=1e-6, atol=1e-7, msg=name)
    calls = [c[0] for c in counts]
    step = 1 if every is True else every
    # one forward, plus one replay in the backward for every step-th block of each stack (encoder, then decoder)
    assert calls == [2 if i % step == 0 else 1 for i in range(len(calls))]

    checkpointed.eval()  # evaluation (no backward) never replays
    with torch.no_grad():
        checkpointed(input_ids=torch.tensor([[5, 6, 1]]), decoder_input_ids=torch.tensor([[0, 5]]),
                     **({"task_ids": torch.tensor([1])} if moe is MOE_TASK else {}))
    assert [c[0] for c in counts] == [n + 1 for n in calls]


def test_every_nth_block_is_counted_in_each_stack():
    # was: transformers' every_n_layers counted the encoder's and decoder's blocks as one sequence, so with 3
    # encoder blocks and N=2 the decoder checkpointed its block 1 instead of its block 0
    model = build_model(ModelConfig(dims={**DIMS, "num_layers": 3, "num_decoder_layers": 3},
                                    activation_checkpointing=2), vocab_size=64)
    counts = _self_attention_calls(model)
    _loss_and_grads(model, task_ids=False)
    assert [c[0] for c in counts] == [2, 1, 2] + [2, 1, 2]


@pytest.mark.parametrize("value", [0, -2, "yes", 1.5])
def test_bad_values_are_refused_naming_the_key(value):
    with pytest.raises(ConfigError, match="model.activation_checkpointing"):
        config_from_dict({"model": {"dims": DIMS, "activation_checkpointing": value}, "data": {"tasks": ["parity"]}})


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


RUNS = {
    "zero0": {},
    "zero3-bf16": {"deepspeed": {"zero_stage": 3}, "training": {"precision": "bf16"}},
    "moe-token-pcgrad-zero2": {"model": {"moe": MOE_TOKEN}, "deepspeed": {"zero_stage": 2},
                               "sampling": {"strategy": "uniform", "mode": "homogeneous"},
                               "gradient_surgery": {"method": "pcgrad"}, "training": {"grad_accum": 3}},
}


@pytest.mark.parametrize("sections", list(RUNS.values()), ids=list(RUNS))
def test_a_checkpointed_run_trains_exactly_like_the_plain_one(tmp_path, tok, sections, monkeypatch):
    calls = {"n": 0}
    real = T5LayerSelfAttention.forward

    def counted(self, *args, **kwargs):
        calls["n"] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(T5LayerSelfAttention, "forward", counted)
    losses, self_attention_calls = [], []
    for name, every in (("plain", False), ("checkpointed", True)):
        calls["n"] = 0
        model = {**tiny_config(tmp_path, tok, tmp_path)["model"], **sections.get("model", {}),
                 "activation_checkpointing": every}
        model["dims"] = {**model["dims"], "num_layers": 2, "num_decoder_layers": 2, "dropout_rate": 0.1}
        cfg = tiny_config(tmp_path / name, tok, tmp_path / "cache", **{**sections, "model": model})
        cfg["training"] = {**cfg["training"], "steps": 4}
        result = train(cfg, evaluate_held_in=False)
        assert result.step == 4 and result.skipped_steps == 0
        records = step_records(tmp_path / name)
        losses.append([records[s]["loss"] for s in range(1, 5)])
        self_attention_calls.append(calls["n"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-6, abs=1e-7)
    # every block replayed
    assert self_attention_calls[0] > 0 and self_attention_calls[1] == 2 * self_attention_calls[0]
