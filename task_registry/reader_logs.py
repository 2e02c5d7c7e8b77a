"""Reading data files without datasets' file readers logging the error they then raise: the json, csv and parquet
readers log "Failed to load JSON from file ..." (and the like) at ERROR level before re-raising, and the source
raises its own error naming the file with the reader's explanation, so the line printed before it said the same
thing twice."""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator

#: the loggers of datasets' file readers (`datasets.utils.logging.get_logger(__name__)` of each reader's module)
READER_LOGGERS = tuple(f"datasets.packaged_modules.{reader}.{reader}" for reader in ("json", "csv", "parquet"))


def _below_error(record: logging.LogRecord) -> bool:
    return record.levelno < logging.ERROR


@contextlib.contextmanager
def reader_errors_unlogged() -> Iterator[None]:
    """Within the block, the file readers' ERROR records are dropped (each precedes the exception the reader raises,
    which the caller reports); their warnings and every other logger are left as they are."""
    loggers = [logging.getLogger(name) for name in READER_LOGGERS]
    for logger in loggers:
        logger.addFilter(_below_error)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(_below_error)
