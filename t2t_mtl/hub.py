"""The hub check (`task_registry.hub.use_hub`) before a model or tokenizer load, made for hub names only."""
from __future__ import annotations

from pathlib import Path
from typing import Union


def looks_like_path(value: str) -> bool:
    """Whether `value` names a local path rather than a hub id: local paths start with '.', '/', '~' or exist; hub
    ids are 'name' or 'org/name'."""
    return value.startswith((".", "/", "~")) or value.count("/") > 1 or Path(value).exists()


def use_hub_for(name_or_path: Union[str, Path]) -> None:
    """`task_registry.hub.use_hub(name_or_path)`, except for a local path that exists, for which it changes nothing:
    importing task_registry loads datasets, pandas and pyarrow (about a second), which `predict`, `export` and
    `merge` of a local model otherwise never load."""
    if Path(name_or_path).exists():
        return
    from task_registry.hub import use_hub

    use_hub(name_or_path)
