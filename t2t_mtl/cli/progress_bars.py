"""The progress bars Hugging Face `datasets` draws (loading a split, each `Map`) in the command line."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import ContextManager

from t2t_mtl.datasets_progress_bars import DATASETS_SWITCH, hidden_datasets_progress_bars

#: the namespace attribute a command's parser sets (to True) when the command itself decides whether datasets' bars
#: show (`train`: while training.progress_bar is on); `main` hides them for every other command
DATASETS_BARS_BY_COMMAND = "datasets_progress_bars_by_command"
#: the namespace attribute a command's parser sets (to True) when the command loads no dataset (`predict`, `export`,
#: `merge`): `main(argv)` then leaves datasets alone rather than import it (~2 s) to scope its bars
READS_NO_DATASETS = "reads_no_datasets"


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


def datasets_bars_for_command(args: argparse.Namespace, whole_process: bool) -> ContextManager[None]:
    """The scope `main` runs the command of `args` in: datasets' bars hidden, unless the command decides itself
    (`DATASETS_BARS_BY_COMMAND`). `whole_process` (the process's own command line: the process ends with the
    command) hides them for the process without importing datasets, so a command that never reads data does not
    pay for its import; otherwise (`main(argv)` from Python) they are hidden for the command only, then left as
    they were found; a command that reads no dataset (`READS_NO_DATASETS`) draws no bar and is left alone there."""
    if getattr(args, DATASETS_BARS_BY_COMMAND, False):
        return contextlib.nullcontext()
    if whole_process:
        hide_datasets_progress_bars()
        return contextlib.nullcontext()
    return hidden_datasets_progress_bars(not getattr(args, READS_NO_DATASETS, False))
