"""A run's warnings of its tasks' rows, each logged once: a run reads a split's rows more than once (the train rows
for the tokenizer it trains, then for its data streams) and scores the same evaluation rows at every `evaluation.every`,
and every read logged the same warnings again (`filter(...) dropped N of M rows`, `inputs longer than ... are
truncated`). A warning whose words differ (another count) is logged."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator, Sequence

#: the logger of `Task`'s warnings of the rows it reads (rows a preprocessor drops, rows a template skips)
TASK_ROWS_LOGGER = "task_registry.task"
#: the logger of the evaluation's warnings of the rows it scores (inputs truncated, gold answers over the generation
#: limit, MoE drops, fewer demonstrations, groups left out)
EVAL_ROWS_LOGGER = "t2t_mtl.evaluation.runner"


class _Repeats(logging.Filter):
    """Passes a warning the first time its message is logged, and every record of another level."""

    def __init__(self) -> None:
        super().__init__()
        self.logged: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        message = record.getMessage()
        if message in self.logged:
            return False
        self.logged.add(message)
        return True


@contextmanager
def warned_once(loggers: Sequence[str] = (TASK_ROWS_LOGGER, EVAL_ROWS_LOGGER)) -> Iterator[None]:
    """Run the block with each warning of each logger named in `loggers` logged the first time alone (a warning
    logged before the block, or after it, is logged again)."""
    filtered = [(logging.getLogger(name), _Repeats()) for name in loggers]
    for log, repeats in filtered:
        log.addFilter(repeats)
    try:
        yield
    finally:
        for log, repeats in filtered:
            log.removeFilter(repeats)
