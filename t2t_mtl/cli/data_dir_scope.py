"""A command's data dir (`--data-dir`, or the run's `data.data_dir` that `eval` reads) lasts for that command alone."""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator

#: the module holding the process's data dir (`task_registry.set_data_dir`), looked up, not imported: task_registry
#: is slow to import, and a command that reads no data never imports it
_SOURCES = "task_registry.sources"


@contextlib.contextmanager
def data_dir_for_command() -> Iterator[None]:
    """The scope `main` runs a command in: the data dir `task_registry.set_data_dir` held when the command began is
    set again when it ends (none where task_registry was not imported yet), so a second command run from Python by
    `main([...])` reads `$T2T_MTL_DATA_DIR`, or the value the user set, and not the first one's `--data-dir`."""
    sources = sys.modules.get(_SOURCES)
    if sources is not None:
        with sources.restored_data_dir():
            yield
        return
    try:
        yield
    finally:
        sources = sys.modules.get(_SOURCES)
        if sources is not None:  # (imported by the command: none was set before)
            sources.set_data_dir(None)
