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


def test_the_evaluations_row_warnings_are_logged_once_too_each_logger_by_its_own_messages(caplog):
    # kills mutants of warned_once that its test let live (it logged to the task rows' logger alone): the
    # evaluation runner's logger left out by default, its filter left on after the block, and one set of messages
    # shared by the loggers (a message of the evaluation's dropped as the task rows' logged it)
    from t2t_mtl.repeated_warnings import EVAL_ROWS_LOGGER

    assert EVAL_ROWS_LOGGER == "t2t_mtl.evaluation.runner"
    rows, scored = logging.getLogger(TASK_ROWS_LOGGER), logging.getLogger(EVAL_ROWS_LOGGER)
    with caplog.at_level(logging.WARNING):
        with warned_once():
            for _ in range(2):
                rows.warning("%d inputs truncated", 3)
                scored.warning("%d inputs truncated", 3)
        scored.warning("%d inputs truncated", 3)
    assert [(record.name, record.getMessage()) for record in caplog.records] == [
        (TASK_ROWS_LOGGER, "3 inputs truncated"), (EVAL_ROWS_LOGGER, "3 inputs truncated"),
        (EVAL_ROWS_LOGGER, "3 inputs truncated")]
    assert rows.filters == scored.filters == []
