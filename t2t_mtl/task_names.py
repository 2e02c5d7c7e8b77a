"""Task-name arguments of the public APIs (weightings, gradient surgery, task streams, relatedness analysis)."""
from __future__ import annotations

from typing import Iterable, List, Type


def task_name_list(task_names: Iterable[str], error: Type[Exception], *, where: str = "",
                   argument: str = "task_names") -> List[str]:
    """`task_names` as a list; `error` (prefixed `where: `, naming `argument`) for a string, which is a sequence of
    letters, not of task names."""
    if isinstance(task_names, str):
        prefix = f"{where}: " if where else ""
        raise error(f"{prefix}{argument} must be a list of task names, got the string {task_names!r} "
                    f"(write [{task_names!r}])")
    return list(task_names)
