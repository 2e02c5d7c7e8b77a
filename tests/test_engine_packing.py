"""Training on packed batches (`data.batching: pack`): the loss falls with several examples per row and the
example counts (and the epoch clock) follow the examples drawn; a resumed run continues exactly; ZeRO-3
(the cross-attention mask reaching DeepSpeed's partitioned decoder) equals ZeRO-0; task tokens, task-routed
experts and gradient surgery train on packed rows; two ranks (each packing its own shard, so their micro-batches
hold different numbers of examples) train with PCGrad at ZeRO-2 and resume exactly; CA-MTL selection is
refused."""
from __future__ import annotations

import glob
import os

import pytest
import torch

from t2t_mtl.config import ConfigError
from t2t_mtl.engine.trainer import train

from engine_helpers import run_checked, step_records, tiny_config, torchrun_command, train_tiny_tokenizer, \
    write_config

PACK = {"batching": "pack", "bucket_batches": 2, "max_input_length": 96, "max_target_length": 32}


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


def _config(tmp_path, tok, name, **sections):
    data = {**PACK, **sections.pop("data", {})}
    return tiny_config(tmp_path / name, tok, tmp_path / "cache", data=data, **sections)


def test_a_packed_run_trains_several_examples_per_row_and_counts_them(tmp_path, tok, monkeypatch):
    from t2t_mtl.sampling.base import MixtureSampler

    epochs = []

    original = MixtureSampler.set_epoch
    monkeypatch.setattr(MixtureSampler, "set_epoch", lambda self, epoch: (epochs.append(epoch),
                                                                          original(self, epoch))[1])
    result = train(_config(tmp_path, tok, "run", training={"steps": 16}), evaluate_held_in=False)
    records = step_records(tmp_path / "run")
    per_step = [sum(r["task_examples"].values()) for _, r in sorted(records.items())]
    assert min(per_step) >= 4 and sum(per_step) > 2 * 16 * 4  # 4 rows a micro-batch, more examples
    assert sum(per_step) == sum(result.examples_seen.values())
    first, last = records[1]["loss"], sum(records[s]["loss"] for s in (14, 15, 16)) / 3
    assert last < 0.8 * first
    drawn = [0] + [sum(per_step[:k]) for k in range(1, 16)]
    assert epochs == pytest.approx([d / (3 * 64) for d in drawn])  # the epoch clock counts examples drawn


def test_a_resumed_packed_run_continues_exactly(tmp_path, tok):
    whole = train(_config(tmp_path, tok, "whole", training={"steps": 8}), evaluate_held_in=False)
    cut = _config(tmp_path, tok, "cut", training={"steps": 4})
    train(cut, evaluate_held_in=False)
    cut["training"]["steps"] = 8
    resumed = train(cut, resume="auto", evaluate_held_in=False)
    a, b = step_records(tmp_path / "whole"), step_records(tmp_path / "cut")
    for s in range(5, 9):
        assert b[s]["task_examples"] == a[s]["task_examples"]
        assert b[s]["loss"] == pytest.approx(a[s]["loss"], rel=1e-6)
    assert resumed.examples_seen == whole.examples_seen


def test_packed_zero3_equals_zero0(tmp_path, tok):
    runs = {stage: train(_config(tmp_path, tok, f"z{stage}", training={"steps": 5},
                                 deepspeed={"zero_stage": stage}), evaluate_held_in=False) for stage in (0, 3)}
    a, b = step_records(tmp_path / "z0"), step_records(tmp_path / "z3")
    for s in range(1, 6):
        assert b[s]["loss"] == pytest.approx(a[s]["loss"], rel=1e-4)
    assert runs[0].examples_seen == runs[3].examples_seen


def test_task_tokens_task_experts_and_surgery_train_on_packed_rows(tmp_path, tok):
    cfg = _config(tmp_path, tok, "moe", training={"steps": 12, "grad_accum": 3},
                  model={"dims": tiny_config(tmp_path, tok, tmp_path)["model"]["dims"], "task_embeddings": True,
                         "moe": {"num_experts": 3, "top_k": 1, "every": 1, "routing": "task"}},
                  gradient_surgery={"method": "pcgrad", "seed": 0})
    result = train(cfg, evaluate_held_in=False)
    records = step_records(tmp_path / "moe")
    assert all(sum(r["task_examples"].values()) > 3 * 4 for r in records.values())
    assert records[12]["loss"] < records[1]["loss"]
    assert result.skipped_steps == 0


def test_packing_with_ca_mtl_selection_is_refused(tmp_path, tok):
    cfg = _config(tmp_path, tok, "sel", sampling={"strategy": "uncertainty"})
    with pytest.raises(ConfigError, match="data.batching: pack .* 'uncertainty'"):
        train(cfg, evaluate_held_in=False)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["homogeneous", "mixed"])
def test_two_ranks_pack_their_own_rows_and_resume_exactly(tmp_path, tok, mode):
    """Homogeneous with PCGrad at ZeRO-2; mixed, whose ranks draw their tasks from the sampler a different
    number of times (each refills its own packed micro-batches), so each rank resumes its own sampler."""
    steps, cut_at = (8, 4) if mode == "homogeneous" else (16, 14)
    sections = {"training": {"steps": steps, "grad_accum": 3, "checkpoint_every": cut_at},
                "deepspeed": {"zero_stage": 2}, "sampling": {"strategy": "uniform", "mode": mode}}
    if mode == "homogeneous":
        sections["gradient_surgery"] = {"method": "pcgrad", "seed": 0}
    whole = _config(tmp_path, tok, "whole", **sections)
    shm_before = set(glob.glob(f"/dev/shm/deepspeed_allreduce_buffer_{os.getuid()}_*"))
    run_checked(torchrun_command(write_config(whole, tmp_path / "whole.yaml"), 2))
    # DeepSpeed's CPU backend never unlinks its ~69 MB per-rank /dev/shm buffers; the trainer does
    assert set(glob.glob(f"/dev/shm/deepspeed_allreduce_buffer_{os.getuid()}_*")) <= shm_before
    cut_checkpoint = tmp_path / "whole" / "checkpoints" / f"step-{cut_at:08d}"  # (the cut run's: the same steps)
    if mode == "mixed":  # the case this covers: at the cut the two ranks' samplers stand at different draws
        saved = [torch.load(cut_checkpoint / f"rank_{r:05d}.pt", weights_only=False)["sampler"]["drawn"]
                 for r in range(2)]
        assert saved[0] != saved[1]
    resumed = _config(tmp_path, tok, "resumed", **sections)
    run_checked(torchrun_command(write_config(resumed, tmp_path / "resumed.yaml"), 2, "--resume",
                                 str(cut_checkpoint)))
    a, b = step_records(tmp_path / "whole"), step_records(tmp_path / "resumed")
    assert sorted(a) == list(range(1, steps + 1)) and sorted(b) == list(range(cut_at + 1, steps + 1))
    for s in range(1, steps + 1):
        assert sum(a[s]["task_examples"].values()) > 2 * 3 * 4  # 2 ranks x 3 micro-batches x 4 rows, packed
    for s in range(cut_at + 1, steps + 1):
        assert b[s]["task_examples"] == a[s]["task_examples"]
        assert b[s]["loss"] == pytest.approx(a[s]["loss"], rel=1e-5)
    assert a[steps]["loss"] < a[1]["loss"]


def test_token_loss_reduction_reaches_the_training_loss(tmp_path, tok, monkeypatch):
    from t2t_mtl.engine import losses, trainer

    seen = []
    real = losses.per_task_losses

    def spy(*args, **kwargs):
        seen.append(args[5] if len(args) > 5 else kwargs.get("reduction", "example"))
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "per_task_losses", spy)
    train(_config(tmp_path, tok, "tok", training={"steps": 2, "loss_reduction": "token"}), evaluate_held_in=False)
    assert seen == ["token", "token"]
