"""Host synchronisations a CUDA run would make, counted on the CPU by benchmarks/host_syncs.py's `HostSyncCounter`:
the counter itself, then the hot paths that must not wait for the device (each test says what it was), and a
steady-state training step's bound (a change that adds a per-micro-batch or per-layer sync fails it)."""
from __future__ import annotations

import collections
import importlib.util
import sys

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT
from engine_helpers import train_tiny_tokenizer

_spec = importlib.util.spec_from_file_location("host_syncs", REPO_ROOT / "benchmarks" / "host_syncs.py")
host_syncs = importlib.util.module_from_spec(_spec)
sys.modules["host_syncs"] = host_syncs  # (its dataclasses look their module up)
_spec.loader.exec_module(host_syncs)
HostSyncCounter = host_syncs.HostSyncCounter

TASKS = ["nli", "qa", "summ"]
DEVICE = torch.device("cpu")  # what `.to(env.device)` is given: a torch.device (the counter's mark of a transfer)


def _ops(counter: HostSyncCounter) -> list:
    return [sync.op for sync in counter.syncs]


# ------------------------------------------------------------------------------------------- the counter
def test_the_counter_counts_reads_and_value_sized_ops_of_device_tensors_only():
    host = torch.tensor([1.0, 0.0, 3.0])
    counter = HostSyncCounter()
    with counter:
        x = host.to(DEVICE, non_blocking=True)  # moved to the device: its reads count, the host tensor's do not
        host.tolist(), float(host[0]), host.nonzero(), host[host > 0]
        x.sum().item()
        x.tolist()
        bool(x[0])
        x.nonzero()
        x[x > 0]
        torch.bincount(x.long(), minlength=4)
        x.cpu()
        y = torch.zeros(3, device=x.device) + 1  # made on the device
        y.max().item()
        x.add(1).mul(2).index_select(0, torch.tensor([0, 2]))  # no read
        host.to(DEVICE)  # a copy to the device that waits for it
        torch.tensor([1, 2], device=DEVICE)
    assert _ops(counter) == ["item", "tolist", "__bool__", "nonzero", "bool-mask index", "bincount", "cpu", "item",
                             "upload", "upload"]
    assert {(sync.site, sync.package) for sync in counter.syncs} == {("?", None)}  # (made here, in tests/)


def test_the_counter_counts_a_modules_parameters_and_gradients_as_device_tensors():
    layer = torch.nn.Linear(3, 2)
    layer(torch.ones(1, 3)).sum().backward()
    counter = HostSyncCounter()
    counter.mark(layer)
    with counter:
        layer.weight.sum().item()
        layer.weight.grad.norm().item()
        torch.ones(2).sum().item()  # a host tensor
    assert _ops(counter) == ["item", "item"]


# ------------------------------------------------------------------------------------------- training losses
def test_per_task_losses_of_a_padded_batch_wait_for_the_device_nowhere():
    # was: a bincount of the examples' task ids on the device and its .tolist() (2 syncs every micro-batch) to
    # learn which tasks the batch holds, which the collated batch's host task ids already tell
    from t2t_mtl.engine.losses import per_task_losses

    torch.manual_seed(0)
    logits, labels = torch.randn(4, 5, 11), torch.randint(0, 11, (4, 5))
    labels[1, 3:] = -100
    task_ids = torch.tensor([2, 0, 2, 2])
    want = per_task_losses(logits, labels, task_ids, TASKS)
    counter = HostSyncCounter()
    with counter:
        got = per_task_losses(logits.to(DEVICE, non_blocking=True), labels.to(DEVICE, non_blocking=True), task_ids,
                              TASKS)
    assert counter.syncs == []
    assert list(got) == ["nli", "summ"]  # (qa: no example)
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    per_example = ce.sum(1) / labels.ne(-100).sum(1)
    assert got["nli"].item() == pytest.approx(per_example[1].item(), rel=1e-6)
    assert got["summ"].item() == pytest.approx(per_example[[0, 2, 3]].mean().item(), rel=1e-6)
    assert {k: v.item() for k, v in got.items()} == {k: v.item() for k, v in want.items()}


# ------------------------------------------------------------------------------------------- loss weighting
def test_uncertainty_weighting_reads_its_weights_only_when_asked():
    # was: every call read each present task's log σ² with float() to record last_weights (a sync per micro-batch),
    # which the training loop never reads
    from t2t_mtl.weighting import build_weighting

    weighting = build_weighting({"method": "uncertainty"}, TASKS, None)
    with torch.no_grad():
        weighting.log_variance.copy_(torch.tensor([0.5, -1.0, 2.0]))
    counter = HostSyncCounter()
    counter.mark(weighting)
    with counter:
        total = weighting({"nli": torch.tensor(1.0).to(DEVICE, non_blocking=True),
                           "summ": torch.tensor(3.0).to(DEVICE, non_blocking=True)})
    assert counter.syncs == []
    assert total.item() == pytest.approx(np.exp(-0.5) + 0.5 + 3 * np.exp(-2.0) + 2.0, rel=1e-6)
    with torch.no_grad():
        weighting.log_variance.zero_()  # (an optimizer step after the call)
    assert weighting.last_weights == pytest.approx({"nli": np.exp(-0.5), "summ": np.exp(-2.0)}, rel=1e-7)


# ------------------------------------------------------------------------------------------- CA-MTL candidates
def test_camtls_candidate_scoring_copies_its_pool_to_the_device_without_waiting():
    # was: blocking copies of the pool's labels, inputs and mask (and task ids) every micro-batch, and a forward
    # that built a decoder cache nothing read (transformers' uploads of its empty tensors, per decoder layer)
    from t2t_mtl.engine.signals import candidate_entropies

    model = _moe("task").eval()

    class Engine:  # what candidate_entropies reads of a DeepSpeed engine
        module = model

        def __call__(self, **kwargs):
            return model(**kwargs)

    ids = torch.randint(2, 40, (4, 6), generator=torch.Generator().manual_seed(3))
    labels = ids[:, :5].clone()
    labels[2, 2:] = -100
    batch = {"input_ids": ids, "attention_mask": ids.ne(0).long(), "labels": labels,
             "task_ids": torch.tensor([0, 1, 2, 0])}
    want = candidate_entropies(Engine(), batch, True, torch.device("cpu"))
    counter = HostSyncCounter()
    counter.mark(model)
    with counter:
        got = candidate_entropies(Engine(), batch, True, DEVICE)
    assert [sync.site for sync in counter.syncs if sync.op == "upload"] == []
    assert torch.equal(got, want)


# ------------------------------------------------------------------------------------------- MoE
def _moe(routing: str):
    from t2t_mtl.model import build_model

    torch.manual_seed(1)
    dims = {"d_model": 16, "d_kv": 4, "d_ff": 32, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 2,
            "dropout_rate": 0.0}
    moe = {"num_experts": 4, "top_k": 2, "every": 1, "routing": routing, "backend": "reference"}
    return build_model({"dims": dims, "moe": moe}, vocab_size=40, task_names=TASKS)


def _moe_forward(model) -> None:
    ids = torch.randint(2, 40, (4, 6), generator=torch.Generator().manual_seed(2))
    ids[1, 4:] = 0
    labels = ids[:, :5].clone()
    labels[3, 3:] = -100
    batch = {"input_ids": ids, "attention_mask": ids.ne(0).long(), "labels": labels,
             "task_ids": torch.tensor([2, 0, 2, 1])}
    model(**{key: value.to(DEVICE, non_blocking=True) for key, value in batch.items()})


def _sites(counter: HostSyncCounter, fragment: str) -> list:
    return [sync for sync in counter.syncs if fragment in sync.site]


@pytest.mark.parametrize("routing", ["token", "task"])
def test_moe_layers_count_each_tasks_expert_choices_without_waiting_for_the_device(routing):
    # was: a boolean-mask index and a bincount in every MoE layer's forward (token and hybrid routing; two
    # masks under task routing), to count the choices of each task per expert
    model = _moe(routing).train()
    counter = HostSyncCounter()
    counter.mark(model)
    with counter:
        _moe_forward(model)
    assert _sites(counter, "_token_task_counts") == []
    assert [s for s in _sites(counter, "moe_layer.py") if s.op == "bool-mask index"] == []


@pytest.mark.parametrize("routing", ["token", "hybrid", "task"])
def test_an_moe_forward_in_eval_mode_counts_no_task_choices(routing):
    # was: every evaluation and predict forward counted them (the syncs above), which only training logs
    from t2t_mtl.model.moe import moe_blocks

    model = _moe(routing)
    _moe_forward(model.train())
    assert all(block.aux["task_counts"] is not None for _, block in moe_blocks(model))
    with torch.no_grad():
        _moe_forward(model.eval())
    assert all(block.aux["task_counts"] is None for _, block in moe_blocks(model))


@pytest.mark.parametrize("routing", ["token", "task"])
def test_the_moe_layers_of_a_stack_read_its_padding_and_its_task_groups_once(routing):
    # was: every MoE layer read the stack's padding mask again (bool(mask.all()), then nonzero) and, under task
    # routing, grouped the rows by task again (unique, bincount, .tolist(), bool): 2 to 7 syncs per layer
    model = _moe(routing).train()  # 2 + 2 MoE layers
    counter = HostSyncCounter()
    counter.mark(model)
    with counter:
        _moe_forward(model)
    made = collections.Counter((sync.op, sync.site.split(" ")[1]) for sync in _sites(counter, "moe_layer.py"))
    want = {("nonzero", "read"): 2}  # one per stack
    if routing == "task":  # one per stack; each layer's expert choice of its tasks (a [tasks, E] table)
        want.update({("tolist", "_task_groups"): 2, ("tolist", "_forward_task"): 4})
    assert dict(made) == want


def test_moe_stats_are_gathered_on_the_device_and_read_once():
    # was: float() of the aux loss and of every layer's load-balancing and z losses, and a .cpu() of the counts:
    # 2 + 2·layers syncs after every forward of every step, logged or not
    from t2t_mtl.model import moe_stats, moe_stats_dict
    from t2t_mtl.model.moe import moe_blocks

    model = _moe("hybrid").train()
    _moe_forward(model)
    want = moe_stats(model)
    counter = HostSyncCounter()
    counter.mark(model)
    with counter:
        counter.counting = False  # (the forward's own syncs: not these)
        _moe_forward(model)
        counter.counting = True
        got = moe_stats(model)
        assert counter.syncs == []
        stats = moe_stats_dict(got + got, model)
    assert _ops(counter) == ["cpu"]
    assert torch.equal(got, want)
    aux = [block.aux for _, block in moe_blocks(model)]
    assert stats["load_balancing"] == sum(float(a["load_balancing"].detach()) for a in aux)
    assert stats["z_loss"] == sum(float(a["z_loss"].detach()) for a in aux)


# ------------------------------------------------------------------------------------------- packing, generation
def test_packed_attention_masks_and_generations_ended_rows_copy_nothing_to_the_device_that_waits():
    # was: torch.tensor(value, device=...) of the masks' blocked value (3 per packed micro-batch) and of the
    # end-of-sequence ids (every generation step of an MoE model): copies PyTorch follows with a stream sync
    from t2t_mtl.model.moe import tokens_before_the_end
    from t2t_mtl.model.packing import segment_masks

    encoder, decoder = torch.tensor([[1, 1, 2, 0]]), torch.tensor([[1, 2, 2, 0]])
    ids = torch.tensor([[0, 5, 1, 7], [0, 1, 6, 6]])
    counter = HostSyncCounter()
    with counter:
        masks = segment_masks(encoder.to(DEVICE, non_blocking=True), decoder.to(DEVICE, non_blocking=True),
                              torch.float32)
        ended = tokens_before_the_end(ids.to(DEVICE, non_blocking=True), [1])
    assert counter.syncs == []
    blocked = torch.finfo(torch.float32).min
    assert masks["encoder"][0, 0].tolist() == [[0, 0, blocked, blocked], [0, 0, blocked, blocked],
                                               [blocked, blocked, 0, blocked], [blocked, blocked, blocked, 0]]
    assert ended.tolist() == [[True, True, True, False], [True, True, False, False]]


# ------------------------------------------------------------------------------------------- gradient surgery
def test_a_surgery_step_moves_its_gram_to_the_host_once():
    # was: the overflow check, the weights and the logged stats each moved the same Gram (3 syncs a step)
    from t2t_mtl.gradients.surgery import GradientSurgery

    params = [torch.nn.Parameter(torch.zeros(6))]
    surgery = GradientSurgery({"method": "pcgrad"}, params, TASKS)
    for task, row in zip(TASKS, torch.randn(3, 6, generator=torch.Generator().manual_seed(0))):
        surgery.row(task).copy_(row)
    counter = HostSyncCounter()
    counter.mark(surgery.buffer)
    with counter:
        whole = surgery.whole_gram()
        weights = surgery.weights()
        stats = surgery.stats()
        combined = surgery.combine_into()
    # (t2t_kernels' upload of the weights, pinned and non-blocking on CUDA, is a plain copy on a CPU)
    assert [sync.op for sync in counter.syncs if sync.package == "t2t_mtl"] == ["to(host)"]
    rows = surgery.buffer.double()
    assert np.allclose(whole, (rows @ rows.T).numpy())
    assert stats["weights"] == np.asarray(weights).tolist()
    assert combined.shape == (6,)


# ------------------------------------------------------------------------------------------- a training step
# the syncs t2t_mtl's own code makes in a steady-state step that logs nothing (step 2 of 3, logging every 3rd),
# at most; transformers' own (its attention-mask checks) and the MoE kernels' CPU reference path are not counted
STEP_BOUNDS = {
    "pcgrad": 2,  # the step's losses read once (3 micro-batches: their bad checks, figures), its Gram for the weights
    "moe_hybrid": 4,  # the losses' read; per stack, the read of its real tokens; per forward, the task ids' bounds
    "moe_task": 8,  # as hybrid, and per stack the rows' task groups, per layer its tasks' expert choice ([tasks, E])
}


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


@pytest.mark.parametrize("name", sorted(STEP_BOUNDS))
def test_a_training_step_that_logs_nothing_waits_for_the_device_only_where_it_must(tmp_path, tok, name):
    # was: pcgrad 15 — per micro-batch a bincount and its .tolist() of the tasks present and a blocking copy of the
    # task ids, the Gram moved three times; then 4 — each micro-batch's losses read before its backward (the bad
    # check, decided on the host); MoE 19 (hybrid) and 29 (task) — per layer the real-token mask's reads
    # and the task counts' mask and bincount, per forward the moe figures read whether the step logged them or not
    per_step = host_syncs.count_training_syncs(host_syncs._tiny_config(name, tmp_path, tok, steps=3, log_every=3))
    ours = [f"{sync.op} at {sync.site}" for sync in per_step[1] if sync.package == "t2t_mtl"]
    assert len(ours) <= STEP_BOUNDS[name], "\n".join(ours)
    assert len(per_step) == 3


def test_a_rank_classification_batch_copies_its_inputs_to_the_device_without_waiting(tok):
    # was: 5 blocking copies a batch of a model taking task ids: encode_inputs(...).to(device) (ids and mask), the
    # task ids' torch.tensor(..., device=), and per decoder pass the choices' labels and owner rows
    from t2t_mtl.tokenizer import load_tokenizer

    syncs = host_syncs.count_eval_syncs(load_tokenizer(tok), host_syncs.CONFIGS["moe_task"]["model"]["moe"])
    uploads = [sync.site for sync in syncs["rank classification"] if sync.op == "upload"
               and sync.site.split(" via ")[0].endswith(("score_choices", "score_rows"))]
    assert uploads == []


def test_periodic_validation_copies_its_batches_to_the_device_without_waiting_and_reads_it_once(tmp_path, tok):
    # was: 2 blocking copies a validation batch (its encoded inputs and its labels), one of the sums a call, and
    # the teacher-forced forward built a decoder cache it never used (transformers' uploads of its empty tensors);
    # then a read of each batch's loss sum (float), where the call reads its sums once
    from engine_helpers import tiny_config

    from t2t_mtl.config import config_from_dict
    from t2t_mtl.engine.distributed import DistEnv
    from t2t_mtl.engine.validation import PeriodicValidator
    from t2t_mtl.model import build_model
    from t2t_mtl.tokenizer import load_tokenizer

    class Engine:  # what the validator reads of a DeepSpeed engine, one process
        def __init__(self, module):
            self.module = module

        def zero_optimization_stage(self) -> int:
            return 0

    tokenizer = load_tokenizer(tok)
    cfg = config_from_dict(tiny_config(tmp_path / "run", tok, tmp_path / "cache", data={"max_target_length": 4}))
    env = DistEnv(rank=0, world_size=1, local_rank=0, device=DEVICE, backend="gloo")
    validator = PeriodicValidator(tokenizer, ["parity"], cfg, env, 3, batch_size=2)
    torch.manual_seed(0)
    model = build_model(cfg.model, vocab_size=len(tokenizer))
    want = validator(Engine(model))
    counter = HostSyncCounter()
    counter.mark(model)
    with counter:
        got = validator(Engine(model))
    uploads = [sync.site for sync in counter.syncs if sync.op == "upload"
               and not sync.site.split(" via ")[0].endswith("_exact_matches")]  # (generate's own: transformers')
    assert uploads == []
    ours = [(sync.op, sync.site.split()[-1]) for sync in counter.syncs  # (generate's and the forward's: theirs)
            if sync.site.startswith("t2t_mtl/engine/validation.py") and " via " not in sync.site]
    assert ours == [("cpu", "__call__")]  # of a call scoring 2 batches
    assert got == want


def test_a_generation_batch_copies_its_inputs_to_the_device_without_waiting(tok):
    # was: 3 blocking copies a batch of a model taking task ids: encode_inputs(...).to(device) (ids and mask) and the
    # task ids' torch.tensor(..., device=)
    from t2t_mtl.tokenizer import load_tokenizer

    syncs = host_syncs.count_eval_syncs(load_tokenizer(tok), host_syncs.CONFIGS["moe_task"]["model"]["moe"])
    uploads = [sync.site for sync in syncs["generation"] if sync.op == "upload"
               and sync.site.split(" via ")[0].endswith("generate_texts")]  # (generate's own: at TaskAwareT5's)
    assert uploads == []
