"""`t2t_mtl.engine.resumed_model` against the libraries it reasons about: `loads_every_tensor` against DeepSpeed's own
reading of the offload settings (a resume builds its model unfilled unless DeepSpeed swaps a tensor in from NVMe; an
offload to "none" or "cpu" keeps the proven load), and `check_load_fills`' refusal of a module state torch cannot
read against what torch reports."""
from __future__ import annotations

import pytest
import torch

from t2t_mtl.engine.checkpoint import CheckpointError
from t2t_mtl.engine.resumed_model import check_load_fills, loads_every_tensor


@pytest.mark.parametrize("key", ["offload_optimizer", "offload_param"])
@pytest.mark.parametrize("device", ["none", "cpu", "nvme"])
def test_only_an_offload_deepspeed_reads_as_nvme_keeps_the_init(key, device):
    # mutation testing: reading any offload device but "cpu" as an NVMe one passed every test, whose devices were
    # "cpu" and "nvme"; DeepSpeed's own parse of the section (the reference) reads "none" as no offload at all
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
    from deepspeed.runtime.zero.offload_config import OffloadDeviceEnum

    zero = {"stage": 3, key: {"device": device, "nvme_path": "/nvme"}}
    nvme = getattr(DeepSpeedZeroConfig(**zero), key).device == OffloadDeviceEnum.nvme
    assert loads_every_tensor({"zero_optimization": zero}) is not nvme


def test_a_module_state_cut_short_is_refused_with_what_torch_reports_reading_it(tmp_path):
    # mutation testing: the refusal leaving out what the read reported (only its type named) passed every test; a
    # file cut short is read by torch.load itself (the reference) and its message is part of the refusal
    states = tmp_path / "ds" / "mp_rank_00_model_states.pt"
    states.parent.mkdir()
    torch.save({"module": torch.nn.Linear(1, 1).state_dict()}, states)
    states.write_bytes(states.read_bytes()[:200])  # (as by a full disk)
    with pytest.raises(Exception) as read:
        torch.load(states, map_location="cpu", weights_only=False)
    with pytest.raises(CheckpointError) as refused:
        check_load_fills(torch.nn.Linear(1, 1), tmp_path, 0, 0)
    assert f"cannot be read ({type(read.value).__name__}: {str(read.value).strip()[:60]}" in str(refused.value)
