"""The `evaluation.bigbench` key of a training config: BIG-bench JSON tasks the evaluation after (and during)
training scores, imported as `t2t-mtl eval --bigbench DIR` imports them (`task_registry.bigbench.import_bigbench`)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Sequence

from t2t_mtl.config import ConfigError

#: what the key holds, for its errors
BIGBENCH_FOLDER = ("the folder holding BIG-bench tasks as <task>/task.json (or one task's folder), as `t2t-mtl eval "
                   "--bigbench DIR` takes it; a list of such folders chooses the tasks")

#: the values that name no BIG-bench task, as evaluation.tasks' null and []
NO_BIGBENCH = "null or [] for none, as evaluation.tasks"


class BigbenchFolderError(ConfigError):
    """A folder of `evaluation.bigbench` from which no BIG-bench task can be imported: it carries the folder and the
    registry's error (`reason`), so a front end (`t2t-mtl eval` of a run) can word its own fix without repeating the
    import."""

    def __init__(self, message: str, *, folder: str, reason: Exception) -> None:
        super().__init__(message)
        self.folder, self.reason = folder, reason


def bigbench_folders(value: Any) -> List[str]:
    """`evaluation.bigbench` as a list of folders (one folder or several may be given; None or []: none, as
    `evaluation.tasks`' None and []). A value that is neither a path nor a list of distinct paths is a ConfigError
    naming the key and the forms it takes."""
    if value is None:
        return []
    folders = [value] if isinstance(value, str) else value
    if not isinstance(folders, (list, tuple)) or not all(isinstance(f, str) and f for f in folders):
        raise ConfigError(f"evaluation.bigbench must be {BIGBENCH_FOLDER} ({NO_BIGBENCH}), got {value!r}")
    repeated = sorted({f for f in folders if folders.count(f) > 1})
    if repeated:
        raise ConfigError(f"evaluation.bigbench names {', '.join(map(repr, repeated))} more than once; each folder's "
                          f"tasks are evaluated once")
    return list(folders)


def import_bigbench_tasks(value: Any) -> List[str]:
    """Register the BIG-bench tasks under `evaluation.bigbench`'s folders (`bigbench_folders`) and return their names
    in the folders' order, each once. A folder not there, or holding no task.json, is a `BigbenchFolderError` naming
    the key, the folder and where BIG-bench tasks belong; a task.json that cannot be imported, one naming the key and
    the file."""
    import task_registry
    from task_registry.bigbench import import_bigbench

    names: List[str] = []
    for index, folder in enumerate(bigbench_folders(value)):
        key = "evaluation.bigbench" if isinstance(value, str) else f"evaluation.bigbench[{index}]"
        try:
            imported = import_bigbench(folder)
        except task_registry.DataSourceError as error:  # (no such folder, or no task.json in it)
            where = "" if Path(folder).is_absolute() else (
                f" (a relative path in a config is read from the working directory, {os.getcwd()}, not from the "
                f"config file's folder)")
            raise BigbenchFolderError(f"{key}: {error}{where}; name {BIGBENCH_FOLDER}", folder=folder,
                                      reason=error) from None
        except task_registry.TaskRegistryError as error:  # (a task.json BIG-bench's format does not allow)
            raise BigbenchFolderError(f"{key}: {error}", folder=folder, reason=error) from None
        names.extend(name for name in imported if name not in names)
    return names


def check_bigbench_task_name(name: str, imported: Sequence[str]) -> None:
    """A ConfigError for `name`, an unregistered task of `evaluation.tasks`, where it is a BIG-bench task's name
    (`bigbench_<task>`): such tasks are registered by `evaluation.bigbench` (`imported`: the names its folders
    imported), so the error points there; another name is left to the registry's error."""
    from task_registry.bigbench import NAME_PREFIX

    if not name.startswith(NAME_PREFIX):
        return
    listed = (f"its folders import {', '.join(imported)}, not {name!r}: add the folder holding that task's task.json"
              if imported else "set it to the folder holding that task's <task>/task.json (or the task's folder)")
    raise ConfigError(f"evaluation.tasks names {name!r}, a BIG-bench task's name, which no registered task has: "
                      f"BIG-bench tasks are imported by evaluation.bigbench, and {listed}; its tasks are scored "
                      f"whether or not evaluation.tasks names them")
