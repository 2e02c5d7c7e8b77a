"""`t2t_mtl.engine.resumed_model.loads_every_tensor` against DeepSpeed's own reading of the offload settings: a
resume builds its model unfilled unless DeepSpeed swaps a tensor in from NVMe (an offload to "none" or "cpu" keeps
the proven load)."""
from __future__ import annotations

import pytest

from t2t_mtl.engine.resumed_model import loads_every_tensor


@pytest.mark.parametrize("key", ["offload_optimizer", "offload_param"])
@pytest.mark.parametrize("device", ["none", "cpu", "nvme"])
def test_only_an_offload_deepspeed_reads_as_nvme_keeps_the_init(key, device):
    # mutation testing: reading any offload device but "cpu" as an NVMe one passed every test, whose devices were
    # "cpu" and "nvme"; DeepSpeed's own parse of the section (the reference) reads "none" as no offload at all
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
    from deepspeed.runtime.zero.offload_config import OffloadDeviceEnum

    zero = {"stage": 3, key: {"device": device, "nvme_path": "/nvme"}}
    nvme = getattr(DeepSpeedZeroConfig(**zero), key).device == OffloadDeviceEnum.nvme
    assert loads_every_tensor({"zero_optimization": zero}, universal=False) is not nvme
