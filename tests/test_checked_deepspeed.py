"""A run's DeepSpeed config as its checks build it (`engine.checked_deepspeed`) met at its edges: gradient surgery
beside ZeRO-3's offloaded optimizer, the stage written as DeepSpeed's parser reads it."""
from __future__ import annotations

import pytest


def test_gradient_surgery_refuses_an_offloaded_optimizer_at_zero_3_only():
    from t2t_mtl.config import ConfigError
    from t2t_mtl.engine.checked_deepspeed import check_surgery_zero

    def zero(stage, device):
        return {"zero_optimization": {"stage": stage, "offload_optimizer": {"device": device}}}

    with pytest.raises(ConfigError, match="ZeRO-3 with an offloaded optimizer"):
        check_surgery_zero(zero(3, "cpu"))
    for stage, device in ((2, "cpu"), (1, "cpu"), (3, "none"), (3, None)):
        check_surgery_zero(zero(stage, device))
    check_surgery_zero({})


@pytest.mark.parametrize("stage", ["3", 3.0])
def test_gradient_surgery_refuses_an_offloaded_optimizer_at_a_zero_3_written_otherwise(stage):
    # was: passed, the check comparing the stage as written with 3, while DeepSpeed's parser reads it as 3
    from deepspeed.runtime.config import DeepSpeedConfig

    from t2t_mtl.config import ConfigError
    from t2t_mtl.engine.checked_deepspeed import check_surgery_zero

    zero = {"zero_optimization": {"stage": stage, "offload_optimizer": {"device": "cpu"}}}
    assert DeepSpeedConfig({"train_micro_batch_size_per_gpu": 1, **zero}).zero_optimization_stage == 3
    with pytest.raises(ConfigError, match="ZeRO-3 with an offloaded optimizer"):
        check_surgery_zero(zero)
