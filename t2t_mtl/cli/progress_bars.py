"""The progress bars Hugging Face `datasets` draws (loading a split, each `Map`) in the command line."""
from __future__ import annotations

import os
import sys

#: datasets' own switch, read when datasets is imported: 1 hides its bars, 0 shows them (either wins over its functions)
DATASETS_SWITCH = "HF_DATASETS_DISABLE_PROGRESS_BARS"

#: the namespace attribute a command's parser sets (to True) when the command itself decides whether datasets' bars
#: show (`train`: while training.progress_bar is on); `main` hides them for every other command
DATASETS_BARS_BY_COMMAND = "datasets_progress_bars_by_command"


def hide_datasets_progress_bars() -> None:
    """Hide datasets' progress bars for the rest of the process, unless the user set DATASETS_SWITCH (which then
    decides). Imports nothing: before datasets is imported the switch is set to 1 for it to read (and for the
    processes this one starts); once it is imported, its `disable_progress_bars` is called."""
    if os.environ.get(DATASETS_SWITCH) is not None:
        return
    if "datasets" not in sys.modules:
        os.environ[DATASETS_SWITCH] = "1"
        return
    from datasets.utils import disable_progress_bars

    disable_progress_bars()
