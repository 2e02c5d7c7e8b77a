"""The RNG states a checkpoint saves per rank (`t2t_mtl.engine.rng_states`): put back, they draw again what they
drew."""
from __future__ import annotations

import torch

from t2t_mtl.engine.rng_states import rng_state, set_rng_state


def test_rng_state_roundtrip():
    state = rng_state()
    a = (torch.rand(3), __import__("random").random(), __import__("numpy").random.rand())
    set_rng_state(state)
    b = (torch.rand(3), __import__("random").random(), __import__("numpy").random.rand())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
