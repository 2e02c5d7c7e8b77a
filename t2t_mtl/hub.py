"""The hub check (`task_registry.hub.use_hub`) before a model or tokenizer load, made for hub names only."""
from __future__ import annotations

from pathlib import Path
from typing import Union


def looks_like_path(value: str) -> bool:
    """Whether `value` names a local path rather than a hub id ('name' or 'owner/name'). It is local when it starts
    with '.', '/' or '~' (./, ../, an absolute or a home path), has more than one '/', exists, or is 'first/rest' with
    a folder `first` in the working directory (`runs/nope` beside a `runs/` folder); anything else is a hub id, even
    an 'owner/name' no hub holds."""
    if value.startswith((".", "/", "~")) or value.count("/") > 1 or Path(value).exists():
        return True
    first, slash, _ = value.partition("/")
    return bool(slash) and Path(first).is_dir()


def path_reading(value: str) -> str:
    """Why a missing `value` that `looks_like_path` was read as a local path, to quote in its error: that its first
    folder is here (for 'first/rest', which is written as a hub id), else what a hub name looks like."""
    first, slash, _ = value.partition("/")
    if slash and value.count("/") == 1 and not value.startswith((".", "/", "~")) and Path(first).is_dir():
        return f"{first}/ is a folder here, so it is read as a path in it, not as a hub name"
    return "a hub name is 'name' or 'owner/name'"


def use_hub_for(name_or_path: Union[str, Path]) -> None:
    """`task_registry.hub.use_hub(name_or_path)`, except for a local path that exists, for which it changes nothing:
    importing task_registry loads datasets, pandas and pyarrow (about a second), which `predict`, `export` and
    `merge` of a local model otherwise never load."""
    if Path(name_or_path).exists():
        return
    from task_registry.hub import use_hub

    use_hub(name_or_path)
