"""t2t_mtl.rank_warnings.warned_by_rank_0: the warnings every rank logs alike, logged by rank 0 alone; errors kept."""
from __future__ import annotations

import logging

import pytest

from t2t_mtl.rank_warnings import warned_by_rank_0


@pytest.mark.parametrize("is_main", [True, False])
def test_a_rank_other_than_0_keeps_the_errors_of_the_quieted_loggers_and_their_levels(caplog, is_main):
    quieted, other = logging.getLogger("t2t_mtl_test_quieted"), logging.getLogger("t2t_mtl_test_other")
    quieted.setLevel(logging.INFO)
    caplog.set_level(logging.INFO)
    with warned_by_rank_0(is_main, [quieted.name]):
        for log in (quieted, other):
            log.warning("%s warned", log.name)
            log.error("%s failed", log.name)
    assert [record.getMessage() for record in caplog.records] == [
        *(["t2t_mtl_test_quieted warned"] if is_main else []), "t2t_mtl_test_quieted failed",
        "t2t_mtl_test_other warned", "t2t_mtl_test_other failed"]
    assert quieted.level == logging.INFO  # (restored after the block)
