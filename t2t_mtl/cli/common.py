"""Options shared by several commands (no command of its own)."""
from __future__ import annotations

import argparse
from typing import Any, Sequence, Union

TASKS_DIR_HELP = "a folder of YAML task files to register on top of the built-in tasks"


def add_tasks_dir_option(parser: argparse.ArgumentParser, default: Any = None) -> None:
    """Add `--tasks-dir DIR` (registered by `register_tasks_dir`)."""
    parser.add_argument("--tasks-dir", default=default, metavar="DIR", help=TASKS_DIR_HELP)


def register_tasks_dir(tasks_dir: Union[None, str, Sequence[str]]) -> None:
    """Register the YAML tasks of `tasks_dir` (a folder, a list of them as in `data.tasks_dir`, or None:
    nothing), replacing registered tasks of the same name.

    Raises `task_registry.TaskFileError` (a ValueError) listing each problem as `file:line: message`."""
    if tasks_dir:
        import task_registry

        task_registry.load_task_dirs(tasks_dir)
