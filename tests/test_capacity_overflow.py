"""CapacityOverflowWarning: said once a run, at the first logged step whose MoE layers dropped more than
DROPPED_SHARE_WARNING of their (token, slot) choices, with the share and the capacity factor."""
from types import SimpleNamespace

from t2t_mtl.engine.capacity_overflow import CapacityOverflowWarning


def test_the_first_step_over_the_share_is_warned_of_once_with_its_share_and_capacity_factor():
    said = []
    overflow = CapacityOverflowWarning(said.append)
    config = SimpleNamespace(capacity_factor=1.25)
    overflow.check(10, {"dropped": 0.1}, config)  # at the share, not over it
    overflow.check(20, {}, config)  # a step of no MoE figures
    assert said == []
    overflow.check(30, {"dropped": 0.125}, config)
    overflow.check(40, {"dropped": 0.5}, config)
    assert said == [
        "warning: step 30: the MoE layers dropped 12.5% of the (token, slot) choices they routed over expert capacity "
        "(model.moe.capacity_factor 1.25; warned over 10%, once a run): a dropped choice gives its token no output of "
        "that expert; raise capacity_factor, or set model.moe.dropless: true (each logged step's share is its "
        "record's moe.dropped, per layer moe.per_layer, TensorBoard moe/dropped)"]
