"""A run's warnings of its tasks' rows, each logged once in the block `warned_once` runs (`t2t_mtl.repeated_warnings`):
the same message again is dropped, other messages of the same wording and records of other levels are not."""
from __future__ import annotations

import logging

from t2t_mtl.repeated_warnings import TASK_ROWS_LOGGER, warned_once


def test_a_warning_is_logged_once_in_the_block_and_again_before_and_after_it(caplog):
    log = logging.getLogger(TASK_ROWS_LOGGER)
    with caplog.at_level(logging.INFO, logger=TASK_ROWS_LOGGER):
        log.warning("task %r: %d rows dropped", "a", 1)
        with warned_once():
            for _ in range(2):  # (the same lines again, as a run's second read of the rows gives them)
                log.warning("task %r: %d rows dropped", "a", 1)
                log.warning("task %r: %d rows dropped", "b", 2)  # (the same wording of another task: its own)
                log.info("read %d rows", 12)
                log.error("task %r failed", "c")
        log.warning("task %r: %d rows dropped", "a", 1)
    assert [(record.levelname, record.getMessage()) for record in caplog.records] == [
        ("WARNING", "task 'a': 1 rows dropped"),
        ("WARNING", "task 'a': 1 rows dropped"), ("WARNING", "task 'b': 2 rows dropped"),
        ("INFO", "read 12 rows"), ("ERROR", "task 'c' failed"), ("INFO", "read 12 rows"), ("ERROR", "task 'c' failed"),
        ("WARNING", "task 'a': 1 rows dropped")]
    assert log.filters == []
