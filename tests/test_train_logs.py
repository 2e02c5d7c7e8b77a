"""The training logs (`engine.logging`) piece by piece, without a run: the library loggers shown as train output."""
from __future__ import annotations

import logging

from t2t_mtl.engine.logging import show_logger


def test_a_restored_logger_passes_on_no_record_below_its_own_level_again():
    # was: restore assigned the level back, which leaves logging's cache of the levels enabled while shown: after
    # train() the sampler's INFO rates tables went on reaching a caller's handlers set at WARNING
    class Messages:
        def message(self, text):
            pass

    log = logging.getLogger("t2t_mtl.tests.restored")
    log.setLevel(logging.WARNING)
    restore = show_logger(log.name, Messages())
    log.info("rates changed")  # (enabled while shown: cached so)
    restore()
    assert log.level == logging.WARNING and not log.isEnabledFor(logging.INFO)
