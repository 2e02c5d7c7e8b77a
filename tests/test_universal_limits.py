"""What a resume through DeepSpeed's universal format cannot restore is refused before the checkpoint is converted or
DeepSpeed starts (`t2t_mtl.engine.universal_limits`): this run's optimizer or parameters offloaded to NVMe at ZeRO-3
(DeepSpeed's own reading of the offload settings the reference), a checkpoint saved with its optimizer on NVMe, and
DeepSpeed's quantized frozen weights. One process: a ZeRO-3 resume is sent through the universal format by patching
`loads_through_universal`."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from t2t_mtl.engine import trainer as trainer_mod
from t2t_mtl.engine.checkpoint import UNIVERSAL_TAG, CheckpointError
from t2t_mtl.engine.trainer import train
from t2t_mtl.engine.universal_limits import check_universal_resume

from engine_helpers import tiny_config, train_tiny_tokenizer

SAME = "resume it on the checkpoint's world size (2 ranks, which loads DeepSpeed's own format)"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


def _frozen_model(frozen: int = 1):
    """A Linear whose first `frozen` parameters (weight, bias) are frozen."""
    model = torch.nn.Linear(2, 2)
    for param in list(model.parameters())[:frozen]:
        param.requires_grad_(False)
    return model


def _refusal(tmp_path, zero, model=None):
    """The refusal of a resume of a checkpoint saved on 2 ranks into the DeepSpeed config with `zero`; None: none."""
    try:
        check_universal_resume(tmp_path, {"world_size": 2, "zero_stage": 3}, {"zero_optimization": zero},
                               model or torch.nn.Linear(2, 2))
    except CheckpointError as err:
        return str(err)
    return None


@pytest.mark.parametrize("key", ["offload_optimizer", "offload_param"])
@pytest.mark.parametrize("stage", [1, 2, 3, "3"])
@pytest.mark.parametrize("device", ["none", "cpu", "nvme"])
def test_only_an_offload_deepspeed_reads_as_nvme_at_zero3_is_refused(tmp_path, key, stage, device):
    # DeepSpeed's parse of the section (the reference) and its ZeRO-3 alone swap to NVMe (DeepSpeed's engine reads
    # `swap_optimizer` and the parameter swapper from its stage-3 optimizer)
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
    from deepspeed.runtime.zero.offload_config import OffloadDeviceEnum

    zero = {"stage": stage, key: {"device": device, "nvme_path": "/nvme"}}
    parsed = DeepSpeedZeroConfig(**zero)
    swaps = parsed.stage == 3 and getattr(parsed, key).device == OffloadDeviceEnum.nvme
    refusal = _refusal(tmp_path, zero)
    assert (refusal is not None) is swaps
    if swaps:
        assert refusal.startswith(f"{tmp_path} was saved on 2 ranks; a resume under another world size loads it "
                                  f"through DeepSpeed's universal format, which ")
        assert refusal.endswith(f": {SAME}, or without zero_optimization.{key} on nvme (in deepspeed.extra or the "
                                f"deepspeed.config JSON; put it back once this run has saved a checkpoint)")


@pytest.mark.parametrize("value, frozen, stage, named", [
    (True, 1, 3, "weight"), ("true", 1, 3, "weight"), (False, 1, 3, None), (True, 0, 3, None),
    (True, 2, 3, "weight and more"), (True, 1, 2, None)])
def test_quantized_frozen_weights_at_zero3_are_refused_into_a_model_with_frozen_weights(tmp_path, value, frozen, stage,
                                                                                        named):
    # (the universal load restores the trained weights alone: a model without frozen ones has nothing quantized; the
    # option quantizes ZeRO-3's partitions alone)
    refusal = _refusal(tmp_path, {"stage": stage, "zero_quantized_nontrainable_weights": value}, _frozen_model(frozen))
    assert (refusal is not None) is (named is not None)
    if named:
        assert refusal.endswith(f"this run's frozen weights ({named}) are written after it into partitions that "
                                f"zero_quantized_nontrainable_weights keeps in int8, beside a scale not written: "
                                f"{SAME}, or with zero_optimization.zero_quantized_nontrainable_weights false")


def _config(run, tok, cache, deepspeed, steps):
    return tiny_config(run, tok, cache, deepspeed=deepspeed, training={"steps": steps})


def _refused_before_deepspeed(monkeypatch, cfg):
    """The CheckpointError of a resume of `cfg` sent through the universal format, which must stop it before the
    checkpoint is converted and DeepSpeed starts."""
    started = []
    monkeypatch.setattr(trainer_mod, "loads_through_universal", lambda *args: True)
    monkeypatch.setattr(trainer_mod, "initialize_deepspeed", lambda *args: started.append(True))
    with pytest.raises(CheckpointError) as refused:
        train(cfg, resume="auto", evaluate_held_in=False)
    ckpt = Path(cfg["training"]["output_dir"]) / "checkpoints" / "step-00000002"
    assert not started and not (ckpt / UNIVERSAL_TAG).exists()
    return str(refused.value), ckpt


def test_a_universal_resume_with_the_optimizer_offloaded_to_nvme_is_refused_before_deepspeed_starts(
        tmp_path, tok, monkeypatch):
    # was: the checkpoint converted, then DeepSpeed's load skipped the converted weights and optimizer state (its ZeRO
    # load is left out whenever the optimizer swaps to NVMe) and looked for ds_universal/offloaded_tensors, which the
    # conversion never writes; with such a folder the run trained on from its build's weights
    train(_config(tmp_path / "run", tok, tmp_path / "cache", {"zero_stage": 3}, 2), evaluate_held_in=False)
    nvme = {"zero_stage": 3, "offload_optimizer": True,
            "extra": {"zero_optimization": {"offload_optimizer": {"device": "nvme", "nvme_path": str(tmp_path)}}}}
    refusal, ckpt = _refused_before_deepspeed(monkeypatch, _config(tmp_path / "run", tok, tmp_path / "cache", nvme, 3))
    assert refusal == (f"{ckpt} was saved on 1 rank; a resume under another world size loads it through DeepSpeed's "
                       f"universal format, which skips the load of the trained weights and the optimizer state with "
                       f"the optimizer offloaded to NVMe (it looks for swap files the conversion does not write): "
                       f"resume it on the checkpoint's world size (1 rank, which loads DeepSpeed's own format), or "
                       f"without zero_optimization.offload_optimizer on nvme (in deepspeed.extra or the "
                       f"deepspeed.config JSON; put it back once this run has saved a checkpoint)")


def test_a_universal_resume_of_a_checkpoint_saved_with_its_optimizer_on_nvme_is_refused_not_called_corrupt(
        tmp_path, tok, monkeypatch):
    # DeepSpeed saves a sub-group whose optimizer state it swapped out to NVMe as empty tensors in the rank's optimizer
    # partition (its swap buffers released: `OptimizerStateSwapInfo.release_memory`), the state in the swap files it
    # copies into ds/offloaded_tensors/rankNN; was: the conversion failed on the empty tensors, called "incomplete or
    # corrupt" (resume from an earlier checkpoint, which fails alike)
    train(_config(tmp_path / "run", tok, tmp_path / "cache", {"zero_stage": 3}, 2), evaluate_held_in=False)
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000002"
    partition = ckpt / "ds" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    saved = torch.load(partition, weights_only=False)
    optimizer = saved["optimizer_state_dict"]
    optimizer["fp32_flat_groups"][0] = torch.Tensor()
    optimizer["optimizer_state_dict"]["state"][0].update(exp_avg=torch.Tensor(), exp_avg_sq=torch.Tensor())
    torch.save(saved, partition)
    (ckpt / "ds" / "offloaded_tensors" / "rank00").mkdir(parents=True)
    (ckpt / "ds" / "offloaded_tensors" / "rank00" / "0_exp_avg.tensor.swp").write_bytes(b"\0" * 64)
    refusal, _ = _refused_before_deepspeed(monkeypatch, _config(tmp_path / "run", tok, tmp_path / "cache",
                                                                {"zero_stage": 3}, 3))
    assert refusal == (f"{ckpt} was saved on 1 rank; a resume under another world size loads it through DeepSpeed's "
                       f"universal format, whose conversion reads no optimizer state offloaded to NVMe, and this one "
                       f"was saved with its optimizer on NVMe (its state in {ckpt / 'ds'}/offloaded_tensors, not in "
                       f"the files the conversion reads): resume it on the checkpoint's world size (1 rank, which "
                       f"loads DeepSpeed's own format)")


def test_a_resume_on_the_checkpoints_world_size_is_not_held_to_the_universal_formats_limits(tmp_path, tok,
                                                                                            monkeypatch):
    # DeepSpeed's own format restores a checkpoint saved with its optimizer on NVMe from its swap files (mut44: the
    # limits checked on every resume passed every test)
    train(_config(tmp_path / "run", tok, tmp_path / "cache", {"zero_stage": 3}, 2), evaluate_held_in=False)
    (tmp_path / "run" / "checkpoints" / "step-00000002" / "ds" / "offloaded_tensors" / "rank00").mkdir(parents=True)

    class Started(Exception):
        pass

    def start(*args):
        raise Started

    monkeypatch.setattr(trainer_mod, "initialize_deepspeed", start)
    with pytest.raises(Started):
        train(_config(tmp_path / "run", tok, tmp_path / "cache", {"zero_stage": 3}, 3), resume="auto",
              evaluate_held_in=False)
