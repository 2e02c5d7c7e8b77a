"""Registering the tasks that a run or a command adds to the built-in ones: task modules, then YAML folders."""
from __future__ import annotations

from typing import Sequence, Union


def register_tasks(tasks_dir: Union[None, str, Sequence[str]],
                   task_modules: Union[None, str, Sequence[str]] = None) -> None:
    """Import `task_modules` (`task_registry.import_task_modules`), then register the YAML tasks of `tasks_dir` (a
    folder, a list of them as in `data.tasks_dir`, or None: nothing), replacing registered tasks of the same name;
    the files pass the checks `tasks validate` makes without reading rows (their `metrics:` names included). The
    registry's warnings (a task file's missing data file, a task replacing another) are logged by the launcher's rank
    0 alone: every rank of a job registers the same tasks.

    Raises `task_registry.TaskModuleError`, or `task_registry.TaskFileError` (a ValueError) listing each problem of
    the files as `file:line: message`, on every rank."""
    import task_registry
    from t2t_mtl.launched_ranks import launched_rank
    from t2t_mtl.rank_warnings import warned_by_rank_0

    with warned_by_rank_0(launched_rank() == 0, ("task_registry",)):
        task_registry.import_task_modules(task_modules)
        if tasks_dir:
            from t2t_mtl.evaluation.metrics import task_metric_problems

            task_registry.load_task_dirs(tasks_dir, check=task_metric_problems)
