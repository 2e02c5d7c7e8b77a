"""Python modules that register tasks and mixtures when imported (seqio's `--module_import`): the way a task
written in Python reaches the command line and every rank of a run, as `data.task_modules` / `--task-module`.

A module is named as Python imports it (`my_project.tasks`, found on `sys.path`: `PYTHONPATH` or the installed
packages, else in the working directory, as `python -m` finds it) or by the path of its `.py` file. Each is
imported once per process, as any import: a second import of one name registers nothing again.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Sequence, Union

from .errors import TaskRegistryError


class TaskModuleError(TaskRegistryError, ValueError):
    """A task module that cannot be found, or whose import raised; the message names the module and what to do."""


def import_task_modules(modules: Union[None, str, Sequence[str]]) -> list[ModuleType]:
    """Import each of `modules` (a module name or a `.py` file's path; one, a list of them, or None: none), in
    order, so that the tasks and mixtures they register are registered. Raises `TaskModuleError`."""
    names = [] if modules is None else [modules] if isinstance(modules, str) else list(modules)  # ("": refused)
    return [import_task_module(name) for name in names]


def import_task_module(module: str) -> ModuleType:
    """Import one task module: a `.py` file's path (any name ending in `.py` or holding a path separator), else a
    module name found on `sys.path`. Raises `TaskModuleError` naming it."""
    if not isinstance(module, str) or not module.strip():
        raise TaskModuleError(f"task module {module!r}: give a module name (my_project.tasks) or a .py file's path")
    if module.endswith(".py") or os.sep in module or "/" in module:
        return _import_file(Path(module))
    top = module.partition(".")[0]
    if importlib.util.find_spec(top) is None:
        if importlib.machinery.PathFinder.find_spec(top, [os.getcwd()]) is None:
            raise TaskModuleError(f"task module {module!r} is not importable: no module {top!r} on sys.path or in the "
                                  f"working directory; add its folder to PYTHONPATH, or give the path of its .py file")
        sys.path.append(os.getcwd())  # (`t2t-mtl` finds it where `python -m t2t_mtl` does)
    try:
        return importlib.import_module(module)
    except Exception as error:
        raise TaskModuleError(f"task module {module!r}: importing it raised {_where(error)}") from error


def _import_file(path: Path) -> ModuleType:
    """The module of the `.py` file `path`, imported under its file name's stem (so that its functions' code is
    found by `code_digest`); the one already imported from that file, if any."""
    if path.suffix != ".py" or not path.is_file():
        state = "is not a file" if path.exists() else "does not exist"
        raise TaskModuleError(f"task module {str(path)!r} {state}: give the path of a .py file (relative to the "
                              f"working directory, {os.getcwd()}), or a module name on sys.path")
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() == path.resolve():
            return loaded
        raise TaskModuleError(f"task module {str(path)!r}: a module named {name!r} is already imported (from "
                              f"{getattr(loaded, '__file__', None) or 'built in'}); rename the file")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise TaskModuleError(f"task module {str(path)!r}: importing it raised {_where(error)}") from error
    return module


def _where(error: BaseException) -> str:
    """`Type: message (file:line)`, the line the error was raised at: for a file that does not parse, its own line
    (the traceback's last frame is the import machinery's)."""
    if isinstance(error, SyntaxError) and error.filename:
        return f"{type(error).__name__}: {error.msg} ({error.filename}:{error.lineno})"
    frames = traceback.extract_tb(error.__traceback__)
    at = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {error}{at}"
