"""The progress bars Hugging Face `datasets` draws (loading a split, each `Map`), hidden for one run or command and
left as they were found after it."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

#: datasets' own switch, read when datasets is imported: 1 hides its bars, 0 shows them (either wins over its functions)
DATASETS_SWITCH = "HF_DATASETS_DISABLE_PROGRESS_BARS"


@contextlib.contextmanager
def hidden_datasets_progress_bars(hide: bool = True) -> Iterator[None]:
    """Hide datasets' progress bars inside the block (`hide` false: leave them as they are) and, on leaving it, show
    them again if they were shown on entering: a run or a command called from Python changes nothing for the rest of
    the process. With DATASETS_SWITCH set, the user's switch decides and nothing is changed. Imports datasets."""
    if not hide or os.environ.get(DATASETS_SWITCH) is not None:
        yield
        return
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    hidden = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not hidden:
            enable_progress_bars()
