"""Warnings every rank of a run logs alike (of the rows every rank reads, of the examples every rank counts whole),
logged by rank 0 alone: a run of N ranks printed each N times."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator, Sequence

#: the loggers that describe a task's rows as they are read (truncated rows, text the tokenizer lacks, rows a template
#: skips or a preprocessor drops, few-shot prompts): every rank reads the same rows
ROW_LOGGERS = ("t2t_mtl.data", "task_registry")


@contextmanager
def warned_by_rank_0(is_main: bool, loggers: Sequence[str] = ROW_LOGGERS) -> Iterator[None]:
    """Run the block; on a rank other than 0 (`is_main` false), without the warnings of the loggers named `loggers`
    (errors are kept; their levels restored after): rank 0 logs the same ones."""
    if is_main:
        yield
        return
    quieted = [logging.getLogger(name) for name in loggers]
    saved = [log.level for log in quieted]
    for log in quieted:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(quieted, saved):
            log.setLevel(level)
