"""Registering the tasks that a run or a command adds to the built-in ones: task modules, then YAML folders."""
from __future__ import annotations

from typing import Sequence, Union


def register_tasks(tasks_dir: Union[None, str, Sequence[str]],
                   task_modules: Union[None, str, Sequence[str]] = None) -> None:
    """Import `task_modules` (`task_registry.import_task_modules`), then register the YAML tasks of `tasks_dir` (a
    folder, a list of them as in `data.tasks_dir`, or None: nothing), replacing registered tasks of the same name;
    the files pass the checks `tasks validate` makes without reading rows (their `metrics:` names included).

    Raises `task_registry.TaskModuleError`, or `task_registry.TaskFileError` (a ValueError) listing each problem of
    the files as `file:line: message`."""
    import task_registry

    task_registry.import_task_modules(task_modules)
    if tasks_dir:
        from t2t_mtl.evaluation.metrics import task_metric_problems

        task_registry.load_task_dirs(tasks_dir, check=task_metric_problems)
