"""unread_moe_keys: the model.moe keys a layer of a routing and dropless never reads, with the setting that says so."""
import pytest

from t2t_mtl.model.moe_config import unread_moe_keys

CAPACITY = ("capacity_factor", "eval_capacity_factor", "min_capacity")


@pytest.mark.parametrize("routing, dropless, expected", [
    ("token", False, {"unseen_task_routing": "routing token"}),
    ("token", True, {**dict.fromkeys(CAPACITY, "dropless"), "unseen_task_routing": "routing token"}),
    ("hybrid", False, {}),
    ("hybrid", True, dict.fromkeys(CAPACITY, "dropless")),
    ("task", False, dict.fromkeys((*CAPACITY, "dropless", "backend"), "routing task")),
    ("task", True, dict.fromkeys((*CAPACITY, "dropless", "backend"), "routing task")),
])
def test_the_keys_each_routing_and_dropless_leave_unread(routing, dropless, expected):
    assert unread_moe_keys(routing, dropless) == expected
