"""Options shared by several commands (no command of its own)."""
from __future__ import annotations

import argparse
from typing import Any, Optional, Sequence, Union

TASKS_DIR_HELP = "a folder of YAML task files to register on top of the built-in tasks (repeatable)"


def add_tasks_dir_option(parser: argparse.ArgumentParser, default: Any = None, dest: str = "tasks_dir") -> None:
    """Add `--tasks-dir DIR`, repeatable (a list of folders in `dest`, registered by `register_tasks_dir`)."""
    parser.add_argument("--tasks-dir", action="append", default=default, dest=dest, metavar="DIR",
                        help=TASKS_DIR_HELP)


def ignored_scoring_option(args: argparse.Namespace) -> Optional[str]:
    """Why an option of `eval` / `predict` would have no effect with the chosen `--scoring` (None: none would)."""
    if args.length_norm and args.scoring == "generate":
        return "--length-norm changes how answer choices are ranked; it has no effect with --scoring generate"
    if args.num_beams > 1 and args.scoring == "rank":
        return "--num-beams sets the beam width of generation; it has no effect with --scoring rank"
    if getattr(args, "choices", None) is not None and args.scoring == "generate":
        return "--choices are ranked by log-likelihood; with --scoring generate they would be ignored"
    return None


def register_tasks_dir(tasks_dir: Union[None, str, Sequence[str]]) -> None:
    """Register the YAML tasks of `tasks_dir` (a folder, a list of them as in `data.tasks_dir`, or None:
    nothing), replacing registered tasks of the same name.

    Raises `task_registry.TaskFileError` (a ValueError) listing each problem as `file:line: message`."""
    if tasks_dir:
        import task_registry

        task_registry.load_task_dirs(tasks_dir)
