"""A bf16 ZeRO-1 run accumulating gradients in fp32 (`data_types.grad_accum_dtype: fp32`) trains with DeepSpeed's
bf16 optimizer (BF16_Optimizer), whose files DeepSpeed's zero_to_fp32 cannot read: export (and eval, predict and
merge, which load through it) reads its fp32 masters from the optimizer partitions (`bf16_optimizer_weights`), bit
for bit those the live optimizer held when it saved, on one rank and across the partitions of two."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from t2t_mtl.engine.checkpoint import CheckpointError, latest_checkpoint, read_meta
from t2t_mtl.engine.export import load_trained_model

from engine_helpers import forked_ranks, free_port, tiny_config, train_tiny_tokenizer

BF16_ZERO1 = {"zero_stage": 1, "extra": {"data_types": {"grad_accum_dtype": "fp32"}}}
MOE = {"moe": {"num_experts": 4, "top_k": 2, "every": 1, "routing": "task"}}


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


def _train_keeping_masters(config: dict, out: str) -> None:
    """Train `config`, saving to `out` (rank 0) the optimizer's class and the fp32 master of every parameter as the
    live engine holds it when it writes its last checkpoint (DeepSpeed's safe_get_full_fp32_param, a collective)."""
    from deepspeed.utils import safe_get_full_fp32_param

    from t2t_mtl.engine import trainer

    real_save, held = trainer.checkpoint_saving.save_checkpoint, {}

    def save(engine, *args, **kwargs):
        held["optimizer"] = type(engine.optimizer).__name__
        held["masters"] = {name: safe_get_full_fp32_param(p).clone() for name, p in engine.module.named_parameters()}
        return real_save(engine, *args, **kwargs)

    trainer.checkpoint_saving.save_checkpoint = save
    try:
        trainer.train(config, evaluate_held_in=False)
    finally:
        trainer.checkpoint_saving.save_checkpoint = real_save
    if os.environ.get("RANK", "0") == "0":
        torch.save(held, out)


def _two_rank_worker(rank: int, port: int, config: dict, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    _train_keeping_masters(config, out)


def _assert_exported_masters(run: Path, held_file: Path) -> None:
    held = torch.load(held_file, weights_only=False)
    assert held["optimizer"] == "BF16_Optimizer"
    masters = held["masters"]  # (trained past their bf16 rounding, which the module states hold)
    assert [name for name, m in masters.items() if not torch.equal(m, m.bfloat16().float())]
    model, _, _ = load_trained_model(run)  # (was: 'the DeepSpeed weights cannot be read ... not a zero checkpoint')
    exported = dict(model.named_parameters())
    assert sorted(exported) == sorted(masters)
    assert [name for name, p in exported.items() if not torch.equal(p.detach(), masters[name])] == []
    assert model.lm_head.weight is model.shared.weight  # (the tied embedding: one master)


@pytest.mark.parametrize("model", [{}, MOE], ids=["dense", "moe"])
def test_a_bf16_optimizer_run_exports_the_fp32_masters_its_optimizer_held(tmp_path, tok, model):
    run = tmp_path / "run"
    config = tiny_config(run, tok, tmp_path / "cache", training={"steps": 2, "precision": "bf16"}, deepspeed=BF16_ZERO1)
    config["model"] = {**config["model"], **model}
    _train_keeping_masters(config, str(tmp_path / "held.pt"))
    _assert_exported_masters(run, tmp_path / "held.pt")


def test_a_two_rank_bf16_optimizer_run_exports_the_masters_split_across_its_partitions(tmp_path, tok):
    run, port = tmp_path / "run", free_port()
    config = tiny_config(run, tok, tmp_path / "cache", training={"steps": 2, "precision": "bf16"}, deepspeed=BF16_ZERO1)
    codes = forked_ranks(_two_rank_worker, [(rank, port, config, str(tmp_path / "held.pt")) for rank in range(2)],
                         timeout=300)
    assert codes == [0, 0]
    # a parameter whose master lies partly in each rank's partition is read from both
    mappings = [torch.load(latest_checkpoint(run) / "ds" / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt",
                           weights_only=False)["optimizer_state_dict"]["param_slice_mappings"][0] for rank in (0, 1)]
    assert set(mappings[0]) & set(mappings[1])
    _assert_exported_masters(run, tmp_path / "held.pt")
    lost = latest_checkpoint(run) / "ds" / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt"
    lost.unlink()
    with pytest.raises(CheckpointError) as refused:
        load_trained_model(run)
    assert str(refused.value) == (f"{lost.parent}: the DeepSpeed weights cannot be read (ValueError: {lost} is "
                                  f"missing); the checkpoint is incomplete or corrupt: use an earlier one "
                                  f"(<run>/checkpoints/step-N) or remove it")


def _write_partitions(ckpt: Path, shapes: dict, mappings: list, partitions: list) -> None:
    """A checkpoint folder's DeepSpeed files as the bf16 optimizer lays them out: one parameter group, rank r's flat
    fp32 partition `partitions[r]` holding the pieces `mappings[r]` ({name: (start, numel)}) places there."""
    from deepspeed.utils.tensor_fragment import fragment_address

    (ckpt / "ds").mkdir(parents=True)
    torch.save({"module": {}, "param_shapes": [shapes]}, ckpt / "ds" / "mp_rank_00_model_states.pt")
    for rank, (mapping, partition) in enumerate(zip(mappings, partitions)):
        state = {"single_partition_of_fp32_groups": [partition], "partition_count": [len(partitions)],
                 "param_slice_mappings": [{name: fragment_address(start=start, numel=numel)
                                           for name, (start, numel) in mapping.items()}]}
        torch.save({"optimizer_state_dict": state},
                   ckpt / "ds" / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")


def test_a_parameter_is_its_pieces_in_rank_order_and_one_they_do_not_fill_is_named(tmp_path):
    from t2t_mtl.engine.bf16_optimizer_weights import bf16_optimizer_weights

    # the flat group 0..9 plus 2 of padding in two partitions of 6: a (2, 3) at 0-5, b (4,) at 6-9 — and c (3,) at
    # 4-6 in a second layout, split across the partitions
    flat = torch.arange(12, dtype=torch.float32)
    _write_partitions(tmp_path / "ok", {"a": torch.Size([2, 3]), "b": torch.Size([4])},
                      [{"a": (0, 6)}, {"b": (0, 4)}], [flat[:6], flat[6:]])
    weights = bf16_optimizer_weights(tmp_path / "ok")
    assert weights is not None
    assert torch.equal(weights["a"], flat[:6].reshape(2, 3)) and torch.equal(weights["b"], flat[6:10])
    _write_partitions(tmp_path / "split", {"c": torch.Size([3])}, [{"c": (4, 2)}, {"c": (0, 1)}], [flat[:6], flat[6:]])
    assert torch.equal(bf16_optimizer_weights(tmp_path / "split")["c"], flat[4:7])
    _write_partitions(tmp_path / "short", {"c": torch.Size([3])}, [{"c": (4, 2)}, {}], [flat[:6], flat[6:]])
    with pytest.raises(ValueError) as short:
        bf16_optimizer_weights(tmp_path / "short")
    assert str(short.value) == (f"{tmp_path / 'short' / 'ds'}: the optimizer partitions hold 2 fp32 elements of c, "
                                f"whose shape (3,) has 3")


def test_a_bf16_optimizer_checkpoint_resumed_at_zero2_keeps_the_masters_export_reads(tmp_path, tok):
    # DeepSpeed's universal conversion reads the bf16 optimizer's partitions by its own code: a resume at ZeRO-2 with
    # no step left saves the masters it loaded from them, which equal those export reads from the original
    from t2t_mtl.engine.trainer import train

    config = tiny_config(tmp_path / "run", tok, tmp_path / "cache", training={"steps": 2, "precision": "bf16"},
                         deepspeed=BF16_ZERO1)
    train(config, evaluate_held_in=False)
    resumed = {**config, "training": {**config["training"], "output_dir": str(tmp_path / "zero2")},
               "deepspeed": {"zero_stage": 2}}
    assert train(resumed, resume=str(latest_checkpoint(tmp_path / "run")), evaluate_held_in=False).step == 2
    assert read_meta(latest_checkpoint(tmp_path / "zero2"))["zero_stage"] == 2
    weights = [dict(load_trained_model(tmp_path / run)[0].named_parameters()) for run in ("run", "zero2")]
    assert sorted(weights[0]) == sorted(weights[1])
    assert [name for name, p in weights[0].items() if not torch.equal(p, weights[1][name])] == []


def test_a_bf16_optimizer_runs_best_checkpoint_is_loaded_for_its_evaluations(tmp_path, tok, monkeypatch):
    # training.keep_best checks each rank's own files of the best checkpoint (the bf16 optimizer's partition, named as
    # DeepSpeed names a bf16 run's) before DeepSpeed's load: the engine then holds the best step's masters, as export
    # reads them, in bf16
    from t2t_mtl.engine import checkpoint_loading
    from t2t_mtl.engine.trainer import train

    config = tiny_config(tmp_path / "run", tok, tmp_path / "cache", data={"held_out_clusters": ["comparison"]},
                         training={"steps": 4, "precision": "bf16", "validate_every": 2, "validate_examples": 8,
                                   "keep_best": "val_score", "lr": 3e-2},
                         evaluation={"held_out": True, "max_examples": 2, "batch_size": 8}, deepspeed=BF16_ZERO1)
    real_load, held = checkpoint_loading.load_checkpoint, {}

    def load(engine, ckpt, env, **kwargs):
        step = real_load(engine, ckpt, env, **kwargs)
        held.update(ckpt=ckpt, optimizer=type(engine.optimizer).__name__,
                    weights={name: p.detach().clone() for name, p in engine.module.named_parameters()})
        return step

    monkeypatch.setattr(checkpoint_loading, "load_checkpoint", load)
    result = train(config, evaluate_held_in=False)
    best = tmp_path / "run" / "checkpoints" / "step-00000002"  # (a tiny model's exact match ties at 0: the first)
    assert result.evaluated_step == 2 and held["ckpt"] == result.best_checkpoint == best
    assert held["optimizer"] == "BF16_Optimizer"
    masters = [dict(load_trained_model(ckpt)[0].named_parameters()) for ckpt in (best, tmp_path / "run")]
    assert [name for name, p in held["weights"].items() if not torch.equal(p, masters[0][name].bfloat16())] == []
    assert [name for name, p in held["weights"].items() if not torch.equal(p, masters[1][name].bfloat16())]


def test_the_zero_optimizers_partitions_are_left_to_zero_to_fp32_and_expert_groups_are_refused(tmp_path):
    # mutation testing: not telling the ZeRO optimizer's partitions (which name their ZeRO stage, and also hold
    # param_slice_mappings) from the bf16 optimizer's, or reading groups partitioned over other rank counts (MoE
    # expert groups) as if over one, passed the reader's tests, whose partitions had one partition count: the first
    # would read a bf16 ZeRO-1/2 run with expert groups here (refused), not through zero_to_fp32, the second would
    # take the pieces of one group's ranks for every group
    from deepspeed.checkpoint.constants import ZERO_STAGE

    from t2t_mtl.engine.bf16_optimizer_weights import bf16_optimizer_weights

    flat = torch.arange(6, dtype=torch.float32)
    _write_partitions(tmp_path / "zero", {"a": torch.Size([6])}, [{"a": (0, 6)}], [flat])
    partition = tmp_path / "zero" / "ds" / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"
    saved = torch.load(partition, weights_only=False)
    saved["optimizer_state_dict"][ZERO_STAGE] = 2
    torch.save(saved, partition)
    assert bf16_optimizer_weights(tmp_path / "zero") is None
    _write_partitions(tmp_path / "experts", {"a": torch.Size([6])}, [{"a": (0, 6)}], [flat])
    partition = tmp_path / "experts" / "ds" / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"
    saved = torch.load(partition, weights_only=False)
    saved["optimizer_state_dict"]["partition_count"] = [1, 2]
    torch.save(saved, partition)
    with pytest.raises(ValueError) as refused:
        bf16_optimizer_weights(tmp_path / "experts")
    assert str(refused.value) == f"{partition}: parameter groups partitioned over [1, 2] ranks; only one partition " \
                                 f"count is read"
