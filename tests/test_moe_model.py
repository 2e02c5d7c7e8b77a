"""Task-aware MoE FFN layers in T5: equivalence, routing, aux losses, training, extraction, config errors."""
from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from transformers import T5Config, T5ForConditionalGeneration

from t2t_mtl.model.moe import (UNSEEN_TASK_ID, MissingTaskIdsError, MoEConfig, MoEConfigError, MoEFeedForward,
                               TaskAwareT5, convert_to_moe, extract_task_subnetwork, load_t5_or_moe, moe_blocks)

TASKS = ["nli", "qa", "summ"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(**overrides) -> T5Config:
    kwargs = dict(vocab_size=48, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2, num_heads=4,
                  pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, dropout_rate=0.0)
    kwargs.update(overrides)
    return T5Config(**kwargs)


def _dense(seed: int = 0, **overrides) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(_config(**overrides)).eval()


def _batch(b: int = 4, src: int = 7, tgt: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(2, 48, (b, src), generator=g), torch.randint(2, 48, (b, tgt), generator=g)


def _aux_losses(logits: torch.Tensor, top_k: int) -> tuple:
    """(Switch's load-balancing loss E·Σ_e f_e·P_e, ST-MoE's z-loss mean logsumexp²) of the routed tokens' router
    `logits` [tokens, E], written out here (the reference): f_e is expert e's share of the top-`top_k` picks, P_e
    its mean probability."""
    experts = logits.shape[-1]
    top = torch.topk(logits, top_k, -1).indices.reshape(-1)
    f = torch.zeros(experts, dtype=logits.dtype).index_add_(0, top, torch.ones(len(top), dtype=logits.dtype)) / len(top)
    return experts * (f * torch.softmax(logits, -1).mean(0)).sum(), (torch.logsumexp(logits, -1) ** 2).mean()


def _with_large_adapters(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with LoRA adapters (r 2 on q and v) whose B is drawn from N(0, 1), not zero, so that they change its
    outputs; in float64 (folding reorders fp32 sums: with such large adapters fp32 logits differ by ~1e-4 relative)."""
    from t2t_mtl.model.lora import apply_lora

    apply_lora(model, {"r": 2, "targets": ["q", "v"]})
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    return model.double()


def _with_own_head(dense: T5ForConditionalGeneration, folder: Path) -> T5ForConditionalGeneration:
    """`dense` with an LM head of its own (not its embedding), saved and loaded back as transformers loads a T5
    v1.1 / mT5 / Flan-T5 checkpoint (its config's tie_word_embeddings false: no d_model**-0.5 scaling)."""
    dense.config.scale_decoder_outputs = False
    dense.set_output_embeddings(torch.nn.Linear(dense.config.d_model, dense.config.vocab_size, bias=False))
    dense.save_pretrained(folder)
    return T5ForConditionalGeneration.from_pretrained(folder).eval()


@pytest.mark.parametrize("flavour", ["relu", "gated-gelu", "own head"])
def test_single_expert_moe_equals_dense_t5(flavour, tmp_path):
    # own head, was: the MoE model, built from the config (which transformers' T5 always ties), loaded the dense
    # model's embedding and its own LM head into one tensor, so it computed with the head as its embedding
    dense = _dense(feed_forward_proj="relu" if flavour == "relu" else "gated-gelu")
    if flavour == "own head":
        dense = _with_own_head(dense, tmp_path / "v1_1")
    moe = convert_to_moe(dense, {"num_experts": 1, "top_k": 1, "every": 1}).eval()
    assert (moe.lm_head.weight is moe.shared.weight) is (flavour != "own head")
    assert sum(1 for _ in moe_blocks(moe)) == 4
    ids, labels = _batch()
    want = dense(input_ids=ids, labels=labels)
    got = moe(input_ids=ids, labels=labels)
    torch.testing.assert_close(got.logits, want.logits, rtol=1e-5, atol=1e-5)
    # with one expert f = P = 1, so each load-balancing term is 1; lse of one logit is the logit itself
    aux = 0.0
    for _, block in moe_blocks(moe):
        torch.testing.assert_close(block.aux["load_balancing"], torch.tensor(1.0))
        aux = aux + 0.01 * block.aux["load_balancing"] + 0.001 * block.aux["z_loss"]
    torch.testing.assert_close(got.aux_loss, aux)
    torch.testing.assert_close(got.loss, want.loss + aux)


@pytest.mark.parametrize("routing", ["task", "hybrid", "token"])
def test_a_float64_single_expert_moe_equals_the_float64_dense_t5(routing):
    # was: the task-routed path summed its experts' outputs in fp32, so an fp64 task-MoE differed from the fp64 dense
    # model by fp32 rounding (~1e-7), where the token and hybrid paths kept fp64
    dense = _dense().double()
    moe = convert_to_moe(dense, {"num_experts": 1, "top_k": 1, "every": 1, "routing": routing,
                                 "task_names": TASKS}).eval()
    ids, labels = _batch()
    with torch.no_grad():
        want = dense(input_ids=ids, labels=labels).logits
        got = moe(input_ids=ids, labels=labels, task_ids=torch.tensor([0, 1, 2, 0])).logits
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("routing", ["task", "hybrid", "token"])
def test_a_float64_upcycled_top2_moe_equals_the_float64_dense_t5(routing):
    # was: the router worked in fp32 whatever the model's dtype (token logits, task gate rows, the unseen mean row),
    # so an fp64 model's renormalised top-2 gates summed to 1 only to fp32 rounding and the upcycled fp64 MoE
    # differed from its fp64 dense model by ~1e-7; fp64 inputs now route in fp64 (half and fp32 ones in fp32)
    dense = _dense().double()
    moe = convert_to_moe(dense, {"num_experts": 4, "top_k": 2, "every": 1, "routing": routing, "dropless": True,
                                 "task_names": TASKS}).eval()
    with torch.no_grad():
        for _, block in moe_blocks(moe):
            if block.router is not None:
                block.router.weight.normal_(std=1.0)  # gates far from 1/2: their rounding shows
    ids, labels = _batch()
    with torch.no_grad():
        want = dense(input_ids=ids, labels=labels).logits
        for task_ids in (torch.tensor([0, 1, 2, 0]), torch.full((4,), UNSEEN_TASK_ID)):
            got = moe(input_ids=ids, labels=labels, task_ids=task_ids).logits
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_a_dense_model_with_lora_adapters_is_converted_only_once_they_are_folded():
    # was: the MoE model silently took the base weights of the adapted linears (a one-expert MoE then differed
    # from the dense model it came from)
    from t2t_mtl.model.lora import merge_lora

    dense = _with_large_adapters(_dense())
    with pytest.raises(MoEConfigError, match="LoRA adapters.*merge_lora"):
        convert_to_moe(dense, {"num_experts": 1, "top_k": 1, "every": 1})
    ids, labels = _batch()
    want = dense(input_ids=ids, labels=labels).logits
    moe = convert_to_moe(merge_lora(dense), {"num_experts": 1, "top_k": 1, "every": 1}).eval()
    torch.testing.assert_close(moe(input_ids=ids, labels=labels).logits, want, rtol=1e-5, atol=1e-5)


def test_every_kth_layer_and_layers_choice():
    dense = _dense(num_layers=4, num_decoder_layers=4)
    both = convert_to_moe(dense, {"num_experts": 2, "every": 2})
    assert [name for name, _ in moe_blocks(both)] == ["encoder.1", "encoder.3", "decoder.1", "decoder.3"]
    enc = convert_to_moe(dense, {"num_experts": 2, "every": 3, "layers": "encoder"})
    assert [name for name, _ in moe_blocks(enc)] == ["encoder.2"]


def test_upcycling_copies_dense_ffn_into_every_expert():
    dense = _dense()
    moe = convert_to_moe(dense, {"num_experts": 3, "every": 1})
    for expert in moe.encoder.block[0].layer[-1].DenseReluDense.experts:
        assert torch.equal(expert.wi.weight, dense.encoder.block[0].layer[-1].DenseReluDense.wi.weight)


def _record_expert_rows(block: MoEFeedForward) -> dict:
    seen = {}
    for local, expert in zip(block.expert_ids, block.experts):
        expert.register_forward_hook(lambda mod, inp, out, e=local: seen.setdefault(e, []).append(inp[0].shape[0]))
    return seen


def test_task_routing_sends_every_token_of_a_task_to_its_experts():
    moe = convert_to_moe(_dense(), {"num_experts": 6, "top_k": 2, "every": 1, "routing": "task",
                                    "task_names": TASKS}).eval()
    block = moe.encoder.block[0].layer[-1].DenseReluDense
    with torch.no_grad():
        block.task_gate.weight.copy_(torch.tensor([[5., 4., 0, 0, 0, 0], [0, 0, 5., 4., 0, 0], [0, 0, 0, 0, 4., 5.]]))
    ids, labels = _batch(b=5, src=6)
    task_ids = torch.tensor([2, 0, 2, 1, 2])
    seen = _record_expert_rows(block)
    moe(input_ids=ids, labels=labels, task_ids=task_ids)
    # unused experts run on zero rows; task 2 (3 sequences × 6 tokens) uses experts 4 and 5 only, etc.
    assert {e: sum(r) for e, r in seen.items()} == {0: 6, 1: 6, 2: 6, 3: 6, 4: 18, 5: 18}
    assert block.aux["counts"].tolist() == [6, 6, 6, 6, 18, 18]
    # the output for the task-2 rows equals running those rows through experts 4 and 5 with the task's gates
    hidden = torch.randn(5, 6, 32)
    block.task_ids = task_ids
    out = block(hidden)
    gates = torch.softmax(torch.tensor([4., 5.]), -1)
    rows = hidden[task_ids == 2]
    want = gates[1] * block.experts[5](rows) + gates[0] * block.experts[4](rows)
    torch.testing.assert_close(out[task_ids == 2], want, rtol=1e-5, atol=1e-6)


def test_hybrid_routing_adds_the_task_row_to_token_logits():
    moe = MoEConfig(num_experts=4, top_k=2, routing="hybrid", task_names=TASKS, dropless=True)
    block = MoEFeedForward(_config(), moe).eval()
    block.reset_parameters()
    for expert in block.experts:
        torch.nn.init.normal_(expert.wi.weight, std=0.2)
    task_ids = torch.tensor([2, 0, 1])
    hidden = torch.randn(3, 5, 32)
    block.task_ids = task_ids
    out = block(hidden)
    for b, t in enumerate(task_ids.tolist()):
        logits = hidden[b] @ block.router.weight.t() + block.task_gate.weight[t]  # [5 tokens, E]
        top = torch.topk(logits, 2, -1).indices
        gates = torch.softmax(logits, -1).gather(-1, top)
        gates = gates / gates.sum(-1, keepdim=True)
        for i in range(5):
            want = sum(g * block.experts[int(e)](hidden[b, i:i + 1])[0] for g, e in zip(gates[i], top[i]))
            torch.testing.assert_close(out[b, i], want, rtol=1e-5, atol=1e-6)


def test_token_routing_aux_losses_match_formulas():
    moe = convert_to_moe(_dense(), {"num_experts": 4, "top_k": 2, "every": 1, "upcycle": False}).eval()
    block = moe.encoder.block[1].layer[-1].DenseReluDense
    hidden = torch.randn(3, 5, 32)
    out = block(hidden)
    assert out.shape == hidden.shape
    load_balancing, z_loss = _aux_losses(hidden.reshape(-1, 32) @ block.router.weight.t(), 2)
    torch.testing.assert_close(block.aux["load_balancing"], load_balancing)
    torch.testing.assert_close(block.aux["z_loss"], z_loss)


def test_task_routing_aux_losses_match_per_token_formulas():
    moe = convert_to_moe(_dense(), {"num_experts": 5, "top_k": 2, "every": 1, "routing": "task",
                                    "task_names": TASKS}).eval()
    block = moe.decoder.block[0].layer[-1].DenseReluDense
    task_ids = torch.tensor([1, 0, 1])
    block.task_ids = task_ids
    block(torch.randn(3, 4, 32))
    logits = block.task_gate.weight[task_ids].repeat_interleave(4, 0)  # each token's logits = its task's row
    load_balancing, z_loss = _aux_losses(logits, 2)
    torch.testing.assert_close(block.aux["load_balancing"], load_balancing)
    torch.testing.assert_close(block.aux["z_loss"], z_loss)


def test_capacity_drops_tokens_and_dropless_does_not():
    moe = MoEConfig(num_experts=4, top_k=1, capacity_factor=0.25, min_capacity=1)
    block = MoEFeedForward(_config(), moe).train()  # training capacity factor (dropout is 0)
    block.reset_parameters()
    with torch.no_grad():
        block.router.weight[2] += 3.0 * torch.sign(torch.randn(32))  # skew the routing toward one expert
    hidden = torch.randn(4, 8, 32)
    out = block(hidden)
    assert block.aux["dropped"] > 0
    logits = hidden.reshape(-1, 32) @ block.router.weight.t()
    zero_rows = (out.reshape(-1, 32) == 0).all(1)
    assert int(zero_rows.sum()) == block.aux["num_dropped"]  # k = 1: a dropped token has no output
    assert block.aux["dropped"] == block.aux["num_dropped"] / 32
    block.moe = MoEConfig(num_experts=4, top_k=1, dropless=True)
    out = block(hidden)
    assert block.aux["dropped"] == 0 and not (out.reshape(-1, 32) == 0).all(1).any()
    assert logits.shape == (32, 4)



def test_dropped_is_the_fraction_of_token_slots_over_capacity():
    # k = E = 2: every token takes both experts; capacity ceil(8·2/2·0.5) = 4 rows each keeps 8 of the 16 slots
    block = MoEFeedForward(_config(), MoEConfig(num_experts=2, top_k=2, capacity_factor=0.5, min_capacity=1)).train()
    block.reset_parameters()
    block(torch.randn(2, 4, 32))
    assert block.aux["counts"].tolist() == [8, 8] and block.aux["dropped"] == 0.5 and block.aux["num_dropped"] == 8

@pytest.mark.parametrize("dropless", [False, True])
def test_empty_batch_drops_nothing(dropless):
    moe = MoEConfig(num_experts=4, top_k=2, capacity_factor=1.0, min_capacity=1, dropless=dropless)
    block = MoEFeedForward(_config(), moe).train()
    assert block(torch.randn(0, 8, 32)).shape == (0, 8, 32)
    assert block.aux["dropped"] == 0.0 and block.aux["num_dropped"] == 0


@pytest.mark.parametrize("shape", [(0, 8, 32), (2, 0, 32)])
@pytest.mark.parametrize("routing", ["task", "hybrid"])
def test_a_batch_without_tokens_gives_what_token_routing_gives(routing, shape):
    # was: task and hybrid routing refused a batch of no rows ("0 task ids do not match a batch of 0 sequences"),
    # and task routing failed with a KeyError on rows of length 0, where token routing returns the empty output
    def run(block: MoEFeedForward, task_ids):
        block.task_ids = task_ids
        hidden = torch.randn(*shape, requires_grad=True)
        out = block(hidden)
        (out.sum() + block.aux["load_balancing"] + block.aux["z_loss"]).backward()
        return out, hidden.grad, block.aux

    ids = torch.tensor([0, 2][:shape[0]])
    block = MoEFeedForward(_config(), MoEConfig(num_experts=4, routing=routing, task_names=TASKS)).train()
    want, want_grad, want_aux = run(MoEFeedForward(_config(), MoEConfig(num_experts=4)).train(), None)
    for task_ids in ([ids, None] if shape[0] == 0 else [ids]):  # no rows need no task ids
        block.zero_grad(set_to_none=True)
        out, grad, aux = run(block, task_ids)
        assert out.shape == want.shape and out.dtype == want.dtype and torch.equal(grad, want_grad)
        for key in ("load_balancing", "z_loss"):
            assert aux[key].item() == want_aux[key].item() == 0.0 and aux[key].requires_grad, key
        assert aux["counts"].tolist() == want_aux["counts"].tolist() and aux["dropped"] == want_aux["dropped"]
        for name, param in block.named_parameters():  # every parameter in the graph, as in a non-empty batch
            assert param.grad is not None and not param.grad.any(), name


def _aux(model: TaskAwareT5) -> dict:
    return {name: (block.aux["load_balancing"].detach(), block.aux["z_loss"].detach(), block.aux["counts"])
            for name, block in moe_blocks(model)}


@pytest.mark.parametrize("routing", ["token", "hybrid", "task"])
def test_padding_takes_no_capacity_and_no_part_in_the_aux_losses(routing):
    # was: padded tokens (attention_mask 0, labels -100) were routed like real ones: they took expert capacity
    # (changing which real tokens were dropped, so the real tokens' outputs) and counted in the aux losses
    moe = convert_to_moe(_dense(seed=1), {"num_experts": 4, "top_k": 1, "every": 1, "routing": routing,
                                          "task_names": TASKS, "upcycle": False, "capacity_factor": 0.5,
                                          "min_capacity": 1, "backend": "reference"}).train()
    ids, labels = _batch(b=3, src=5, tgt=4, seed=3)
    task_ids = torch.tensor([0, 1, 0])
    want = moe(input_ids=ids, labels=labels, task_ids=task_ids)
    want_aux = _aux(moe)
    padded_ids = torch.cat([ids, torch.zeros(3, 4, dtype=torch.long)], 1)
    padded_labels = torch.cat([labels, torch.full((3, 3), -100)], 1)
    got = moe(input_ids=padded_ids, attention_mask=padded_ids.ne(0).long(), labels=padded_labels, task_ids=task_ids)
    torch.testing.assert_close(got.logits[:, :4], want.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.loss, want.loss, rtol=1e-5, atol=1e-6)
    for name, (lb, z, counts) in _aux(moe).items():
        torch.testing.assert_close(lb, want_aux[name][0], rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(z, want_aux[name][1], rtol=1e-5, atol=1e-6, msg=name)
        assert torch.equal(counts, want_aux[name][2]), name


def test_eval_capacity_factor_is_the_capacity_in_eval_mode_and_capacity_factor_in_training():
    # no test changed eval_capacity_factor: capacity_factor 0.25 keeps max(ceil(N/4 · 0.25), 1) = 1 row per expert,
    # 4 of the 15 encoder (12 decoder) tokens; eval_capacity_factor 4 keeps ceil(N/4 · 4) = N rows: nothing dropped
    moe = convert_to_moe(_dense(seed=2), {"num_experts": 4, "top_k": 1, "every": 1, "upcycle": False,
                                          "capacity_factor": 0.25, "eval_capacity_factor": 4.0, "min_capacity": 1,
                                          "backend": "reference"})
    ids, labels = _batch(b=3, src=5, tgt=4, seed=4)
    moe.train()(input_ids=ids, labels=labels)
    tokens = {"encoder": 15, "decoder": 12}
    for name, block in moe_blocks(moe):
        n = tokens[name.split(".")[0]]
        assert block.aux["dropped"] >= (n - 4) / n - 1e-9, name
    moe.eval()(input_ids=ids, labels=labels)
    assert all(block.aux["dropped"] == 0 for _, block in moe_blocks(moe))


@pytest.mark.parametrize("own_eos", [False, True])
def test_greedy_generation_routes_no_token_of_a_finished_sequence(own_eos):
    # was: in a batch, the pad tokens fed to sequences that had ended were routed like real tokens (all alike, so
    # onto the same experts), taking capacity from the sequences still decoding; and an eos_token_id given to
    # generate was not the one that marked rows finished (the model's was)
    from transformers import LogitsProcessor, LogitsProcessorList

    moe = convert_to_moe(_dense(seed=2), {"num_experts": 4, "top_k": 2, "every": 1, "upcycle": False,
                                          "backend": "reference"}).eval()
    eos, ends_at = (7 if own_eos else moe.config.eos_token_id), {0: 1, 1: 3}  # row -> the step at which it ends
    options = {"eos_token_id": eos} if own_eos else {}

    class EndRows(LogitsProcessor):
        def __call__(self, input_ids, scores):
            step = input_ids.shape[1] - 1
            scores[:, eos] = -1e9
            for row, end in ends_at.items():
                if end == step:
                    scores[row] = -1e9
                    scores[row, eos] = 0.0
            return scores

    block = moe.decoder.block[0].layer[-1].DenseReluDense
    seen = []
    block.register_forward_hook(lambda module, args, out: seen.append(
        (None if module.token_mask is None else module.token_mask[:, -1].clone(), module.aux["counts"].sum().item())))
    ids, _ = _batch(b=3, seed=4)
    out = moe.generate(input_ids=ids, max_new_tokens=6, do_sample=False,
                       logits_processor=LogitsProcessorList([EndRows()]), **options)
    assert out[0, 2].item() == eos and out[1, 4].item() == eos and eos not in out[2].tolist()
    for step, (mask, routed) in enumerate(seen):  # step s feeds token s: a row ended at step e is padding from e + 2
        expected = torch.tensor([ends_at.get(row, 99) + 1 >= step for row in range(3)])
        assert torch.equal(mask if mask is not None else torch.ones_like(expected), expected), step
        assert routed == int(expected.sum()) * 2, step  # top_k = 2 slots per real token
    assert len(seen) == 6 and moe.moe_token_masks == {}  # the step masks end with the generation


def test_task_routing_aux_losses_count_the_real_tokens_of_each_task():
    moe = convert_to_moe(_dense(), {"num_experts": 5, "top_k": 2, "every": 1, "routing": "task",
                                    "task_names": TASKS}).eval()
    block = moe.encoder.block[0].layer[-1].DenseReluDense
    block.task_ids = torch.tensor([1, 0, 1])
    block.token_mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0]])
    hidden = torch.randn(3, 4, 32)
    out = block(hidden)
    logits = block.task_gate.weight[torch.tensor([1, 1, 1, 1, 0, 1, 1])]  # the 7 real tokens' rows
    load_balancing, z_loss = _aux_losses(logits, 2)
    torch.testing.assert_close(block.aux["load_balancing"], load_balancing)
    torch.testing.assert_close(block.aux["z_loss"], z_loss)
    block.token_mask = None
    torch.testing.assert_close(out, block(hidden))  # a real token's output does not depend on the padding


def test_triton_backend_in_model_matches_reference():
    dense = _dense()
    ids, labels = _batch(b=2, src=5, tgt=3)
    grads, logits = [], []
    for backend in ("reference", "triton"):
        moe = convert_to_moe(dense, {"num_experts": 3, "top_k": 2, "every": 2, "routing": "hybrid",
                                     "task_names": TASKS, "capacity_factor": 0.8, "backend": backend})
        torch.manual_seed(0)
        for _, block in moe_blocks(moe):
            block.reset_parameters()
        out = moe(input_ids=ids, labels=labels, task_ids=torch.tensor([0, 2]))
        out.loss.backward()
        logits.append(out.logits)
        grads.append(moe.encoder.block[1].layer[-1].DenseReluDense.router.weight.grad)
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def _train(model: TaskAwareT5, steps: int = 30):
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids, _ = _batch(b=8, src=6, seed=5)
    task_ids = torch.arange(8) % len(TASKS)
    labels = ((ids[:, :4] + task_ids[:, None]) % 46 + 2).contiguous()  # a task-dependent copy task
    model.train()
    losses = []
    for _ in range(steps):
        out = model(input_ids=ids, labels=labels, task_ids=task_ids)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    return losses


@pytest.mark.parametrize("routing", ["token", "task"])
def test_tiny_moe_t5_trains_on_cpu(routing):
    moe = convert_to_moe(_dense(seed=1), {"num_experts": 4, "top_k": 2, "every": 1, "routing": routing,
                                          "task_names": TASKS, "capacity_factor": 1.0})
    losses = _train(moe)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5, losses


def test_extracted_task_subnetwork_gives_same_outputs(tmp_path):
    moe = convert_to_moe(_dense(), {"num_experts": 4, "top_k": 2, "every": 1, "routing": "task",
                                    "task_names": TASKS, "upcycle": False})
    _train(moe, steps=3)
    moe.eval()
    sub = extract_task_subnetwork(moe, "summ").eval()
    assert sub.moe_config.task_names == ["summ"]
    for _, block in moe_blocks(sub):
        assert len(block.experts) == 2
    assert sum(p.numel() for p in sub.parameters()) < sum(p.numel() for p in moe.parameters())
    ids, labels = _batch(b=3, seed=9)
    full = moe(input_ids=ids, labels=labels, task_ids=torch.full((3,), 2))
    alone = sub(input_ids=ids, labels=labels)  # a one-task sub-network needs no task ids
    torch.testing.assert_close(alone.logits, full.logits, rtol=1e-5, atol=1e-5)
    gen_full = moe.generate(ids, task_ids=torch.full((3,), 2), max_new_tokens=4, num_beams=2)
    assert torch.equal(sub.generate(ids, max_new_tokens=4, num_beams=2), gen_full)
    sub.save_pretrained(tmp_path)
    loaded = load_t5_or_moe(str(tmp_path)).eval()
    assert isinstance(loaded, TaskAwareT5)
    torch.testing.assert_close(loaded(input_ids=ids, labels=labels).logits, alone.logits)


def test_a_subnetwork_is_built_without_a_random_init_its_embeddings_tied_as_t5_ties_them():
    # was: built as TaskAwareT5(config), every weight and expert drawn at random and then overwritten by the model's
    # (about 90% of extract_task_subnetwork's time for a T5-base-sized top-2 model)
    moe = convert_to_moe(_dense(), {"num_experts": 4, "top_k": 2, "every": 1, "routing": "task", "task_names": TASKS})
    before = torch.get_rng_state()
    sub = extract_task_subnetwork(moe, "summ")
    assert torch.equal(torch.get_rng_state(), before)  # no random number drawn
    assert sub.lm_head.weight is sub.shared.weight is sub.decoder.embed_tokens.weight
    for name, weight in sub.state_dict().items():
        if ".experts." not in name and ".task_gate." not in name:
            assert torch.equal(weight, moe.state_dict()[name]), name


def test_a_subnetwork_whose_route_leaves_its_experts_is_refused():
    # training a sub-network's gate rows can move its route to experts it does not hold (within a few steps); the
    # forward then dropped those experts' share silently (one of two) or failed on a shape (both)
    moe = convert_to_moe(_dense(), {"num_experts": 4, "top_k": 2, "every": 1, "routing": "task",
                                    "task_names": TASKS, "upcycle": False})
    sub = extract_task_subnetwork(moe, "qa").eval()
    block = sub.decoder.block[0].layer[-1].DenseReluDense
    unheld = [e for e in range(4) if e not in block.expert_ids]
    ids, labels = _batch(b=2)
    for count in (1, 2):
        with torch.no_grad():
            block.task_gate.weight[0, unheld[:count]] = 100.0
        message = f"picked expert(s) {unheld[:count]}, which this sub-network"
        with pytest.raises(MoEConfigError, match=re.escape(message)):
            sub(input_ids=ids, labels=labels)


def test_a_model_with_lora_adapters_has_no_subnetwork_until_they_are_folded():
    # was: the sub-network silently kept the base weights of the adapted linears (its outputs differed)
    from t2t_mtl.model.lora import merge_lora

    moe = _with_large_adapters(convert_to_moe(_dense(), {"num_experts": 4, "top_k": 2, "every": 1, "routing": "task",
                                                         "task_names": TASKS, "upcycle": False}).eval())
    with pytest.raises(MoEConfigError, match="LoRA adapters.*merge_lora"):
        extract_task_subnetwork(moe, "qa")
    ids, labels = _batch(b=2)
    full = moe(input_ids=ids, labels=labels, task_ids=torch.full((2,), 1)).logits
    sub = extract_task_subnetwork(merge_lora(moe), "qa").eval()
    torch.testing.assert_close(sub(input_ids=ids, labels=labels).logits, full, rtol=1e-5, atol=1e-5)


def test_token_routing_has_no_task_subnetwork():
    moe = convert_to_moe(_dense(), {"num_experts": 2, "every": 1})
    with pytest.raises(MoEConfigError, match="routing='task'"):
        extract_task_subnetwork(moe, 0)


def test_config_errors_name_the_key():
    with pytest.raises(MoEConfigError, match="did you mean 'top_k'"):
        MoEConfig.from_dict({"topk": 2})
    with pytest.raises(MoEConfigError, match="task_names"):
        MoEConfig.from_dict({"routing": "task"})
    with pytest.raises(MoEConfigError, match="top_k"):
        MoEConfig.from_dict({"num_experts": 2, "top_k": 3})
    with pytest.raises(MoEConfigError, match="selects no layer"):
        convert_to_moe(_dense(), {"every": 5})
    moe = convert_to_moe(_dense(), {"num_experts": 2, "every": 1, "routing": "task", "task_names": TASKS})
    with pytest.raises(MoEConfigError, match="not one of"):
        extract_task_subnetwork(moe, "nlii")
    ids, labels = _batch()
    with pytest.raises(MissingTaskIdsError, match="task_ids"):
        moe(input_ids=ids, labels=labels)
    with pytest.raises(MissingTaskIdsError, match=r"\[0, 3\)"):
        moe(input_ids=ids, labels=labels, task_ids=torch.tensor([0, 1, 2, 3]))


@pytest.mark.parametrize("key, value", [("capacity_factor", "abc"), ("z_loss_coef", None), ("min_capacity", 2.5),
                                        ("dropless", "yes"), ("upcycle", 1), ("renormalize", "no"),
                                        ("num_experts", True), ("top_k", True), ("every", True)])
def test_config_values_of_the_wrong_type_name_the_key(key, value):
    # was: a string capacity factor raised a bare TypeError from a comparison; a string flag passed as true;
    # `top_k: true` / `every: true` passed as 1, `num_experts: true` was blamed on top_k
    with pytest.raises(MoEConfigError, match=f"model.moe.{key}="):
        MoEConfig.from_dict({key: value})


@pytest.mark.parametrize("key, value, want", [("min_capacity", -2, "an integer >= 0"),
                                              ("capacity_factor", -1.0, "a finite number > 0"),
                                              ("eval_capacity_factor", 0, "a finite number > 0")])
def test_negative_capacities_name_the_key_and_what_it_takes(key, value, want):
    # was: min_capacity -2 was told to be 'a finite number >= 0', though 2.5 is refused as not an integer
    with pytest.raises(MoEConfigError, match=f"model.moe.{key}={value}: must be {want}"):
        MoEConfig.from_dict({key: value})


@pytest.mark.parametrize("key, value", [("capacity_factor", float("inf")), ("eval_capacity_factor", float("nan")),
                                        ("aux_loss_coef", float("inf")), ("z_loss_coef", float("nan"))])
def test_non_finite_factors_and_coefficients_name_the_key(key, value):
    # was: capacity_factor .inf passed and failed at the first forward without naming the key; a NaN or infinite
    # coefficient made every loss NaN/inf
    with pytest.raises(MoEConfigError, match=f"model.moe.{key}=.*finite"):
        MoEConfig.from_dict({key: value})


@pytest.mark.parametrize("ids", [3, "01", [0, "1"], [0, 0], [0.5, 1], [True, 1], [0]])
def test_bad_expert_ids_name_the_layer(ids):
    # was: a bare TypeError (no len() of an int, int <= str) or accepted (duplicate, float and bool ids)
    with pytest.raises(MoEConfigError, match=r"model.moe.expert_ids\['encoder.1'\]"):
        MoEConfig.from_dict({"num_experts": 4, "routing": "task", "task_names": TASKS,
                             "expert_ids": {"encoder.1": ids}})


@pytest.mark.parametrize("routing", ["token", "hybrid"])
def test_expert_ids_without_task_routing_are_refused(routing):
    # was: accepted, and every forward then failed, blaming the route for an expert it had not picked
    with pytest.raises(MoEConfigError, match="model.moe.expert_ids=.*only with routing='task'"):
        MoEConfig.from_dict({"num_experts": 4, "routing": routing, "task_names": TASKS,
                             "expert_ids": {"encoder.1": [0, 1]}})


def test_expert_ids_of_a_layer_without_moe_are_refused():
    # was: silently ignored, so the layer kept all its experts
    with pytest.raises(MoEConfigError, match=r"\['encoder.0'\], which are not MoE layers"):
        convert_to_moe(_dense(), {"num_experts": 4, "every": 2, "routing": "task", "task_names": TASKS,
                                  "expert_ids": {"encoder.0": [0, 1]}})


def test_task_routing_with_shared_experts_matches_per_sequence_computation():
    moe = MoEConfig(num_experts=3, top_k=2, routing="task", task_names=TASKS)
    block = MoEFeedForward(_config(), moe).eval()
    block.reset_parameters()
    for expert in block.experts:
        torch.nn.init.normal_(expert.wi.weight, std=0.2)
        torch.nn.init.normal_(expert.wo.weight, std=0.2)
    task_ids = torch.tensor([1, 1, 0, 2, 0, 1])
    hidden = torch.randn(6, 4, 32)
    block.task_ids = task_ids
    out = block(hidden)
    for b, t in enumerate(task_ids.tolist()):
        logits = block.task_gate.weight[t]
        top = torch.topk(logits, 2).indices
        gates = torch.softmax(logits, -1)[top]
        gates = gates / gates.sum()
        want = sum(g * block.experts[int(e)](hidden[b]) for g, e in zip(gates, top))
        torch.testing.assert_close(out[b], want, rtol=1e-5, atol=1e-6)



@pytest.mark.parametrize("routing", ["task", "hybrid"])
def test_ids_of_a_beam_expanded_batch_follow_its_examples_beams(routing):
    # generate() expands B examples into B·beams rows with each example's beams together (repeat_interleave): the
    # ids given for the B examples route rows 0-1 by the first example's task and rows 2-3 by the second's
    block = MoEFeedForward(_config(), MoEConfig(num_experts=4, top_k=1, routing=routing, task_names=TASKS,
                                                dropless=True)).eval()
    block.reset_parameters()
    with torch.no_grad():
        block.task_gate.weight.copy_(torch.tensor([[9., 0, 0, 0], [0, 9., 0, 0], [0, 0, 0, 9.]]))
        for expert in block.experts:
            torch.nn.init.normal_(expert.wi.weight, std=0.2)
    hidden = torch.randn(4, 3, 32)
    block.task_ids = torch.tensor([0, 0, 2, 2])  # one id per row, as the beams lie
    want = block(hidden)
    block.task_ids = torch.tensor([0, 2])
    torch.testing.assert_close(block(hidden), want)



def test_task_ids_are_cleared_after_a_task_ids_set_block_and_by_a_forward_without_ids():
    from t2t_mtl.model.task_routing import task_ids_set

    moe = convert_to_moe(_dense(), {"num_experts": 4, "top_k": 2, "every": 1, "routing": "task",
                                    "task_names": TASKS}).eval()
    ids, labels = _batch(b=2)
    with task_ids_set(moe, torch.tensor([0, 1])):
        assert all(block.task_ids.tolist() == [0, 1] for _, block in moe_blocks(moe))
    assert all(block.task_ids is None for _, block in moe_blocks(moe))
    moe(input_ids=ids, labels=labels, task_ids=torch.tensor([0, 1]))
    with pytest.raises(MissingTaskIdsError, match="needs task ids"):  # the last batch's ids are not reused
        moe(input_ids=ids, labels=labels)

def test_tokens_before_the_end_keep_the_start_token_and_the_end_token_itself():
    from t2t_mtl.model.moe import tokens_before_the_end

    ids = torch.tensor([[1, 5, 1, 7, 1], [0, 1, 6, 6, 6], [0, 4, 4, 4, 4]])  # row 0 starts with a start token = eos
    t, f = True, False
    assert tokens_before_the_end(ids, 1).tolist() == [[t, t, t, f, f], [t, t, f, f, f], [t] * 5]
    assert tokens_before_the_end(ids, [6, 7]).tolist() == [[t, t, t, t, f], [t, t, t, f, f], [t] * 5]
    assert tokens_before_the_end(ids, None).all()


# ------------------------------------------------------------------------- tasks the model was not trained on
def _unseen_moe(routing: str, **moe) -> TaskAwareT5:
    """A task/hybrid-routed model with fresh (distinct) experts, so the route changes the output."""
    return convert_to_moe(_dense(), {"num_experts": 4, "top_k": 2, "every": 1, "routing": routing,
                                     "task_names": TASKS, "upcycle": False, "dropless": True, **moe}).eval()


def test_unseen_task_id_routes_task_moe_by_the_experts_of_the_mean_gate_row():
    block = _unseen_moe("task").encoder.block[0].layer[-1].DenseReluDense
    with torch.no_grad():
        block.task_gate.weight.copy_(torch.tensor([[5., 4., 0, 0], [0, 0, 5., 4.], [1., 0, 2., 0]]))
    hidden = torch.randn(4, 3, 32)
    block.task_ids = torch.tensor([UNSEEN_TASK_ID, 1, UNSEEN_TASK_ID, 0])
    out = block(hidden)
    mean = torch.tensor([2., 4 / 3, 7 / 3, 4 / 3])  # by hand: experts 2 and 0
    gates = torch.softmax(mean, -1)[[2, 0]]
    gates = gates / gates.sum()
    for b in (0, 2):
        want = gates[0] * block.experts[2](hidden[b]) + gates[1] * block.experts[0](hidden[b])
        torch.testing.assert_close(out[b], want, rtol=1e-5, atol=1e-6)
    block.task_ids = torch.tensor([1, 0])  # the trained tasks' rows are unchanged by an unseen row in the batch
    torch.testing.assert_close(block(hidden[[1, 3]]), out[[1, 3]], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("routing", ["task", "hybrid"])
def test_mean_unseen_routing_equals_a_model_with_the_mean_row_as_an_extra_task(routing):
    moe = _unseen_moe(routing)
    extended = convert_to_moe(_dense(), {**moe.moe_config.to_dict(), "task_names": TASKS + ["mean_row"]}).eval()
    state = moe.state_dict()
    for key, value in list(state.items()):
        if key.endswith("task_gate.weight"):
            state[key] = torch.cat([value, value.mean(0, keepdim=True)])
    extended.load_state_dict(state)
    ids, labels = _batch(b=3, seed=4)
    with torch.no_grad():
        got = moe(input_ids=ids, labels=labels, task_ids=torch.full((3,), UNSEEN_TASK_ID)).logits
        want = extended(input_ids=ids, labels=labels, task_ids=torch.full((3,), 3)).logits
        other = moe(input_ids=ids, labels=labels, task_ids=torch.zeros(3, dtype=torch.long)).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert not torch.allclose(got, other, atol=1e-4)  # the route matters: the ids reach the layers


@pytest.mark.parametrize("routing", ["task", "hybrid"])
def test_named_unseen_routing_routes_exactly_like_that_task(routing):
    moe = _unseen_moe(routing, unseen_task_routing="qa")
    ids, labels = _batch(b=2, seed=6)
    unseen, qa = torch.full((2,), UNSEEN_TASK_ID), torch.full((2,), TASKS.index("qa"))
    with torch.no_grad():
        assert torch.equal(moe(input_ids=ids, labels=labels, task_ids=unseen).logits,
                           moe(input_ids=ids, labels=labels, task_ids=qa).logits)
        assert torch.equal(moe.generate(ids, task_ids=unseen, max_new_tokens=4, num_beams=2),
                           moe.generate(ids, task_ids=qa, max_new_tokens=4, num_beams=2))


def test_unseen_routing_error_mode_and_id_range():
    ids, labels = _batch(b=2)
    moe = _unseen_moe("task", unseen_task_routing="error")
    with pytest.raises(MissingTaskIdsError, match="unseen_task_routing='error'; set it to 'mean'"):
        moe(input_ids=ids, labels=labels, task_ids=torch.tensor([0, UNSEEN_TASK_ID]))
    moe = _unseen_moe("hybrid")
    with pytest.raises(MissingTaskIdsError, match=r"\[0, 3\).*UNSEEN_TASK_ID=-1"):
        moe(input_ids=ids, labels=labels, task_ids=torch.tensor([0, -2]))
    with pytest.raises(MissingTaskIdsError, match="UNSEEN_TASK_ID"):
        moe(input_ids=ids, labels=labels)  # no ids at all is still an error


def test_unseen_task_routing_config_errors_name_the_key():
    assert MoEConfig().unseen_task_routing == "mean"
    named = MoEConfig.from_dict({"routing": "task", "task_names": TASKS, "unseen_task_routing": "qa"})
    assert named.unseen_task_routing == "qa"
    for value, hint in (("man", "did you mean 'mean'"), ("sumn", "did you mean 'summ'"), (3, "'mean', 'error'")):
        with pytest.raises(MoEConfigError, match=f"model.moe.unseen_task_routing=.*{hint}"):
            MoEConfig.from_dict({"routing": "task", "task_names": TASKS, "unseen_task_routing": value})
    with pytest.raises(MoEConfigError, match="did you mean 'unseen_task_routing'"):
        MoEConfig.from_dict({"unseen_task_route": "mean"})


def test_subnetwork_of_an_unseen_task_serves_the_fallback_route():
    moe = _unseen_moe("task")
    ids, labels = _batch(b=3, seed=2)
    with torch.no_grad():
        full = moe(input_ids=ids, labels=labels, task_ids=torch.full((3,), UNSEEN_TASK_ID)).logits
        sub = extract_task_subnetwork(moe, "held_out_task", unseen=True).eval()
        assert sub.moe_config.task_names == ["held_out_task"]
        assert all(len(block.experts) == 2 for _, block in moe_blocks(sub))
        torch.testing.assert_close(sub(input_ids=ids, labels=labels).logits, full, rtol=1e-5, atol=1e-6)
    with pytest.raises(MoEConfigError, match="not one of"):
        extract_task_subnetwork(moe, "held_out_task")  # unseen names are opt-in: a typo stays an error
    named = _unseen_moe("task", unseen_task_routing="nli")
    assert [b.expert_ids for _, b in moe_blocks(extract_task_subnetwork(named, "x", unseen=True))] == \
        [b.expert_ids for _, b in moe_blocks(extract_task_subnetwork(named, "nli"))]
    with pytest.raises(MoEConfigError, match="unseen_task_routing='error'"):
        extract_task_subnetwork(_unseen_moe("task", unseen_task_routing="error"), "x", unseen=True)


def test_bf16_subnetwork_of_an_unseen_task_equals_the_full_model():
    # was: the full model routed an unseen task by the fp32 mean of the bf16 gate rows while the sub-network stored
    # that mean in its bf16 gate, so its gates, and its logits, differed by a bf16 step; the mean row is now the
    # gate's dtype's, as a task's own row is
    moe = _unseen_moe("task").to(torch.bfloat16)
    ids, labels = _batch(b=3, seed=2)
    with torch.no_grad():
        full = moe(input_ids=ids, labels=labels, task_ids=torch.full((3,), UNSEEN_TASK_ID)).logits
        sub = extract_task_subnetwork(moe, "held_out_task", unseen=True).eval()
        assert torch.equal(sub(input_ids=ids, labels=labels).logits, full)


# ------------------------------------------------------------------------- DeepSpeed ZeRO, 2 CPU ranks
DS_STEPS = 3


def _ds_model(routing: str) -> TaskAwareT5:
    moe = convert_to_moe(_dense(seed=3), {"num_experts": 4, "top_k": 2, "every": 1, "routing": routing,
                                          "task_names": TASKS, "upcycle": False, "capacity_factor": 1.0})
    torch.manual_seed(4)
    for _, block in moe_blocks(moe):
        block.reset_parameters()
        if block.task_gate is not None:  # task 0 → experts {0, 1}, task 1 → experts {2, 3}
            with torch.no_grad():
                block.task_gate.weight.copy_(torch.tensor([[3., 2., 0, 0], [0, 0, 3., 2.], [1., 0, 0, 2.]]))
    return moe.train()


def _ds_batch(step: int, rank: int):
    """Rank r's micro-batch at a step: two sequences of task r (so the ranks use different experts)."""
    ids, labels = _batch(b=2, src=6, tgt=4, seed=100 * step + rank)
    return ids, labels, torch.full((2,), rank)


DS_CASES = [("task", 2), ("task", 3), ("token", 2)]


def _ds_worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), LOCAL_SIZE="2", DS_ACCELERATOR="cpu")
    torch.set_num_threads(1)
    import deepspeed

    from t2t_mtl.engine.distributed import init_distributed, shut_down_process_group

    init_distributed()  # DeepSpeed's gloo group (and no /dev/shm buffer left behind)
    for routing, stage in DS_CASES:  # one process pair for every case: spawning costs more than training
        model = _ds_model(routing)
        config = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1,
                  "zero_optimization": {"stage": stage}, "zero_allow_untested_optimizer": True,
                  "gradient_clipping": 0.0, "steps_per_print": 10 ** 6}  # DeepSpeed 0.19 clips at 1.0 by default
        engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
                                          config=config)
        for step in range(DS_STEPS):
            ids, labels, task_ids = _ds_batch(step, rank)
            loss = engine(input_ids=ids, labels=labels, task_ids=task_ids).loss
            engine.backward(loss)
            engine.step()
        params = list(engine.module.named_parameters())
        with deepspeed.zero.GatheredParameters([p for _, p in params], enabled=stage == 3):
            state = {name: p.detach().clone() for name, p in params}
        torch.save(state, Path(out_dir) / f"{routing}-zero{stage}-rank{rank}.pt")
        engine.destroy()
    shut_down_process_group()  # (left to the interpreter's teardown, a gloo rank may abort after its work)


def _single_process_reference(routing: str) -> dict:
    model = _ds_model(routing)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(DS_STEPS):
        loss = sum(model(input_ids=i, labels=l, task_ids=t).loss for i, l, t in (_ds_batch(step, r) for r in (0, 1)))
        opt.zero_grad()
        (loss / 2).backward()
        opt.step()
    return {name: p.detach() for name, p in model.named_parameters()}


@pytest.mark.slow
def test_deepspeed_zero_two_ranks_match_single_process(tmp_path):
    """ZeRO-2/3 over 2 gloo ranks whose batches use different experts (task routing: disjoint experts per
    rank) train exactly like one process on both batches with the mean loss (SGD, so fp rounding is not
    amplified as Adam's first steps would)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.start_processes(_ds_worker, args=(port, str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    for routing, stage in DS_CASES:
        want = _single_process_reference(routing)
        initial = {name: p.detach() for name, p in _ds_model(routing).named_parameters()}
        assert any(not torch.equal(want[n], initial[n]) for n in want if "experts.3" in n)  # experts did train
        for rank in (0, 1):
            got = torch.load(tmp_path / f"{routing}-zero{stage}-rank{rank}.pt")
            assert got.keys() == want.keys()
            for name in want:
                torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5,
                                           msg=f"{routing} ZeRO-{stage} rank {rank}: {name}")


def test_build_model_from_an_exported_moe_folder_keeps_its_experts(tmp_path):
    # was: model.name_or_path of a saved MoE model loaded as a plain T5, dropping every expert and the task
    # gates (a log warning only) and training a dense model with freshly initialised FFNs
    from t2t_mtl.model import build_model
    from t2t_mtl.model.t5 import ModelBuildError

    moe = convert_to_moe(_dense(), {"num_experts": 2, "every": 1, "routing": "task", "task_names": TASKS,
                                    "upcycle": False})
    moe.save_pretrained(tmp_path / "moe")
    loaded = build_model({"name_or_path": str(tmp_path / "moe")}, task_names=TASKS).eval()
    assert isinstance(loaded, TaskAwareT5)
    ids, labels = _batch()
    task_ids = torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids, labels=labels, task_ids=task_ids).logits,
                              moe(input_ids=ids, labels=labels, task_ids=task_ids).logits)
    with pytest.raises(ModelBuildError, match="same tasks"):
        build_model({"name_or_path": str(tmp_path / "moe")}, task_names=["qa", "nli", "summ"])
    with pytest.raises(ModelBuildError, match="remove model.moe"):
        build_model({"name_or_path": str(tmp_path / "moe"), "moe": {"num_experts": 4}}, task_names=TASKS)


def test_a_token_routed_moe_folder_counts_the_expert_load_of_the_tasks_it_is_trained_on_next(tmp_path):
    # was: it kept the task names of the run that exported it, so the expert load of the new run's tasks was
    # filed under the old names, or left out for a task id past them
    from t2t_mtl.model import build_model, moe_stats, moe_stats_dict

    moe = convert_to_moe(_dense(), {"num_experts": 2, "top_k": 1, "every": 1, "task_names": ["old"],
                                    "unseen_task_routing": "old"})  # (never read under token routing)
    moe.save_pretrained(tmp_path / "moe")
    tasks = ["new_a", "new_b"]
    loaded = build_model({"name_or_path": str(tmp_path / "moe")}, task_names=tasks).train()  # (eval counts none)
    ids, labels = _batch(b=2)
    loaded(input_ids=ids, labels=labels, task_ids=torch.tensor([1, 1]))
    load = moe_stats_dict(moe_stats(loaded), loaded)["expert_load"]
    assert list(load) == ["new_b"] and sorted(load["new_b"]) == sorted(name for name, _ in moe_blocks(loaded))
    loaded.save_pretrained(tmp_path / "next")  # (what its run exports names its tasks)
    saved = load_t5_or_moe(str(tmp_path / "next")).moe_config
    assert saved.task_names == tasks and saved.unseen_task_routing == "mean"


@pytest.mark.parametrize("moe,match", [
    ("yes", r"model\.moe must be a mapping such as \{num_experts: 8, top_k: 2\}, got 'yes'"),  # was dict()'s error
    (None, r"model\.moe must be a mapping .* got None"),  # was: 'NoneType' object is not iterable
    ([("num_experts", 2)], r"model\.moe must be a mapping .* got \[\('num_experts', 2\)\]"),
])
def test_an_moe_section_that_is_not_a_mapping_is_named(moe, match):
    with pytest.raises(MoEConfigError, match=match):
        convert_to_moe(_dense(), moe)


def test_task_names_given_as_a_string_are_refused_not_split_into_letters():
    # "nli" made three tasks 'n', 'l', 'i'
    with pytest.raises(MoEConfigError, match=r"model\.moe\.task_names='nli': must be a list of task names"):
        convert_to_moe(_dense(), {"num_experts": 2, "every": 1, "routing": "task"}, task_names="nli")


def test_build_model_takes_a_moe_config_object_in_a_dict_section():
    # `convert_to_moe` takes a MoEConfig, and build_model passed one on; the dict section's type check refused it
    # ('model.moe' must be mapping or null) until the section took it as its dict
    from t2t_mtl.model import build_model

    dims = {"d_model": 16, "d_kv": 4, "d_ff": 32, "num_layers": 2, "num_heads": 2}
    moe = MoEConfig(num_experts=3, top_k=1, every=1, routing="task")
    model = build_model({"dims": dims, "moe": moe}, vocab_size=64, task_names=TASKS)
    assert isinstance(model, TaskAwareT5)
    assert model.moe_config == MoEConfig(num_experts=3, top_k=1, every=1, routing="task", task_names=TASKS)


def _reference_task_counts(block: MoEFeedForward, hidden: torch.Tensor, real: torch.Tensor,
                           task_ids: torch.Tensor) -> torch.Tensor:
    """[tasks, E] top-k choices of each task's real tokens, routed by hand from the block's weights."""
    counts = torch.zeros(len(TASKS), block.moe.num_experts, dtype=torch.int64)
    for b, t in enumerate(task_ids.tolist()):
        if block.router is None:  # task routing: every token takes its task's top-k
            logits = block.task_gate.weight[t].expand(hidden.shape[1], -1)
        else:
            logits = hidden[b] @ block.router.weight.t()
            if block.task_gate is not None:
                logits = logits + block.task_gate.weight[t]
        for i in real[b].nonzero().squeeze(1).tolist():
            for e in torch.topk(logits[i], block.moe.top_k).indices.tolist():
                counts[t, e] += 1
    return counts


@pytest.mark.parametrize("routing", ["token", "hybrid", "task"])
def test_task_counts_are_each_tasks_expert_choices_and_moe_stats_report_them_as_shares(routing):
    # was: only the layers' total counts were kept, so nothing said how each task's tokens used the experts
    from t2t_mtl.model import moe_stats, moe_stats_dict

    moe = convert_to_moe(_dense(seed=2), {"num_experts": 4, "top_k": 2, "every": 1, "routing": routing,
                                          "task_names": TASKS, "upcycle": False, "capacity_factor": 0.5,
                                          "min_capacity": 1, "backend": "reference"}).train()
    inputs = {}
    for name, block in moe_blocks(moe):
        block.register_forward_pre_hook(lambda mod, args, name=name: inputs.__setitem__(name, args[0].detach()))
    ids, labels = _batch(b=4, src=6, tgt=5, seed=4)
    ids[1, 4:], labels[3, 3:] = 0, -100  # padding: the encoder's attention mask, the decoder's labels
    task_ids = torch.tensor([2, 0, 2, 0])  # (task 1 trains in none of the rows)
    summed = None
    for _ in range(2):
        moe(input_ids=ids, attention_mask=ids.ne(0).long(), labels=labels, task_ids=task_ids)
        want = {}
        for name, block in moe_blocks(moe):
            real = ids.ne(0) if name.startswith("encoder") else labels.ne(-100)
            want[name] = _reference_task_counts(block, inputs[name], real, task_ids)
            assert torch.equal(block.aux["task_counts"], want[name]), name
            assert want[name][1].sum() == 0 and want[name].sum() == real.sum() * 2
        stats = moe_stats(moe)
        summed = stats if summed is None else summed + stats
    load = moe_stats_dict(summed, moe)["expert_load"]
    assert sorted(load) == ["nli", "summ"]
    for task in ("nli", "summ"):
        assert sorted(load[task]) == sorted(want)
        for name, counts in want.items():
            row = counts[TASKS.index(task)].double()
            assert load[task][name] == pytest.approx((row / row.sum()).tolist(), abs=1e-12), (task, name)



@pytest.mark.parametrize("routing", ["token", "hybrid", "task"])
def test_the_rows_of_an_unseen_task_count_in_no_tasks_expert_choices(routing):
    # was: a task-routed layer whose task_counts took an UNSEEN_TASK_ID row's choices as task 0's (its id clamped to
    # gate row 0 for the lookup) passed every test, none of which trained on a batch holding an unseen task's rows
    moe = convert_to_moe(_dense(seed=5), {"num_experts": 4, "top_k": 2, "every": 1, "routing": routing,
                                          "task_names": TASKS, "upcycle": False, "backend": "reference"}).train()
    inputs = {}
    for name, block in moe_blocks(moe):
        block.register_forward_pre_hook(lambda mod, args, name=name: inputs.__setitem__(name, args[0].detach()))
    ids, labels = _batch(b=4, src=6, tgt=5, seed=6)
    task_ids = torch.tensor([UNSEEN_TASK_ID, 0, UNSEEN_TASK_ID, 2])
    moe(input_ids=ids, labels=labels, task_ids=task_ids)
    seen = task_ids.ge(0)
    for name, block in moe_blocks(moe):
        hidden = inputs[name][seen]
        want = _reference_task_counts(block, hidden, torch.ones(hidden.shape[:2], dtype=torch.bool), task_ids[seen])
        assert torch.equal(block.aux["task_counts"], want), name
        assert want.sum() == 2 * hidden.shape[0] * hidden.shape[1]

def test_token_routing_without_task_ids_counts_no_task():
    moe = convert_to_moe(_dense(), {"num_experts": 4, "top_k": 1, "every": 1, "task_names": TASKS}).eval()
    ids, labels = _batch()
    moe(input_ids=ids, labels=labels)
    from t2t_mtl.model import moe_stats, moe_stats_dict

    assert all(block.aux["task_counts"] is None for _, block in moe_blocks(moe))
    assert moe_stats_dict(moe_stats(moe), moe)["expert_load"] == {}


def test_moe_stats_report_the_share_of_all_the_choices_dropped_over_capacity():
    # was: the mean of each layer's and each forward's dropped fraction, so a short decoder batch that dropped a few
    # choices weighed as much as an encoder batch of many times its tokens
    from t2t_mtl.model import moe_stats, moe_stats_dict

    moe = convert_to_moe(_dense(seed=3), {"num_experts": 4, "top_k": 1, "every": 1, "task_names": TASKS,
                                          "upcycle": False, "capacity_factor": 0.5, "min_capacity": 1,
                                          "backend": "reference"}).train()
    with torch.no_grad():
        for _, block in moe_blocks(moe):
            block.router.weight[1] += 0.5 * torch.sign(torch.randn(32))  # skew the routing toward one expert
    dropped, choices = [], []

    def count(module, inputs, out):  # k = 1: a dropped token's row of the block's output is all zeros
        dropped.append(int((out.reshape(-1, 32) == 0).all(1).sum()))
        choices.append(out.shape[0] * out.shape[1])

    for _, block in moe_blocks(moe):
        block.register_forward_hook(count)
    summed = None
    for b, src, tgt in ((2, 12, 3), (6, 4, 9)):
        ids, labels = _batch(b=b, src=src, tgt=tgt, seed=b)
        moe(input_ids=ids, labels=labels, task_ids=torch.zeros(b, dtype=torch.long))
        stats = moe_stats(moe)
        summed = stats if summed is None else summed + stats
    fractions = [d / c for d, c in zip(dropped, choices)]
    assert sum(dropped) > 0 and len(set(fractions)) > 1
    assert moe_stats_dict(summed, moe)["dropped"] == pytest.approx(sum(dropped) / sum(choices), rel=1e-12)


def test_moe_stats_report_each_aux_loss_summed_over_the_layers_under_its_own_name():
    # was: a moe_stats that wrote the layers' z-losses where their load-balancing losses go (and these where the
    # z-losses go) passed every test but an engine run's; the losses here come from each block's input by the
    # formulas (Switch's E·Σ f_e·P_e, ST-MoE's mean logsumexp²), the coefficients distinct so a swap shows
    from t2t_mtl.model import moe_stats, moe_stats_dict

    moe = convert_to_moe(_dense(seed=1), {"num_experts": 4, "top_k": 2, "every": 1, "upcycle": False,
                                          "aux_loss_coef": 0.5, "z_loss_coef": 0.25}).eval()
    inputs = []
    for _, block in moe_blocks(moe):
        block.register_forward_hook(lambda module, args, out: inputs.append((module, args[0].reshape(-1, 32))))
    ids, labels = _batch(b=3, src=6, tgt=4)
    out = moe(input_ids=ids, labels=labels)
    load_balancing = z_loss = 0.0
    for block, x in inputs:  # no padding: every token is routed
        losses = _aux_losses(x.double() @ block.router.weight.double().t(), 2)
        load_balancing += float(losses[0])
        z_loss += float(losses[1])
    assert len(inputs) == 4 and abs(load_balancing - z_loss) > 0.1
    stats = moe_stats_dict(moe_stats(moe), moe)
    assert stats["load_balancing"] == pytest.approx(load_balancing, rel=1e-5)
    assert stats["z_loss"] == pytest.approx(z_loss, rel=1e-5)
    assert stats["aux_loss"] == pytest.approx(0.5 * load_balancing + 0.25 * z_loss, rel=1e-5)
    assert float(out.aux_loss) == pytest.approx(0.5 * load_balancing + 0.25 * z_loss, rel=1e-5)


def test_moe_stats_report_each_layers_own_aux_losses_and_drops():
    # was: the load-balancing and z losses and the drops were logged summed over the MoE layers only, so a layer whose
    # routing collapsed onto one expert could not be told from the others; each layer's figures here come from its
    # own input by the formulas and from its output's zero rows (k = 1: a dropped token's row is all zeros)
    from t2t_mtl.model import moe_stats, moe_stats_dict

    moe = convert_to_moe(_dense(seed=3), {"num_experts": 4, "top_k": 1, "every": 1, "upcycle": False,
                                          "capacity_factor": 0.5, "min_capacity": 1, "backend": "reference"}).train()
    with torch.no_grad():
        for _, block in moe_blocks(moe):
            block.router.weight[1] += 0.5 * torch.sign(torch.randn(32))  # skew the routing toward one expert
    names = {block: name for name, block in moe_blocks(moe)}
    want = {name: [0.0, 0.0, 0, 0] for name in names.values()}  # load balancing, z-loss, dropped, choices

    def measure(module, args, out):
        losses = _aux_losses(args[0].reshape(-1, 32).double() @ module.router.weight.double().t(), 1)
        figures = want[names[module]]
        figures[0] += float(losses[0])
        figures[1] += float(losses[1])
        figures[2] += int((out.reshape(-1, 32) == 0).all(1).sum())
        figures[3] += out.shape[0] * out.shape[1]

    for block in names:
        block.register_forward_hook(measure)
    summed = None
    with torch.no_grad():
        for b, src, tgt in ((2, 12, 3), (6, 4, 9)):
            ids, labels = _batch(b=b, src=src, tgt=tgt, seed=b)
            moe(input_ids=ids, labels=labels)
            summed = moe_stats(moe) if summed is None else summed + moe_stats(moe)
    stats = moe_stats_dict(summed, moe)
    assert list(stats["per_layer"]) == list(names.values()) == ["encoder.0", "encoder.1", "decoder.0", "decoder.1"]
    for name, (load_balancing, z_loss, dropped, choices) in want.items():
        assert stats["per_layer"][name] == pytest.approx({"load_balancing": load_balancing / 2, "z_loss": z_loss / 2,
                                                          "dropped": dropped / choices}, rel=1e-5), name
    assert len({figures[2] / figures[3] for figures in want.values()}) > 1  # (the layers differ)
    assert sum(layer["load_balancing"] for layer in stats["per_layer"].values()) == pytest.approx(
        stats["load_balancing"], rel=1e-9)
