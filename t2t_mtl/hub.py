"""The hub check (`task_registry.hub.use_hub`) before a model or tokenizer load, made for hub names only."""
from __future__ import annotations

from pathlib import Path
from typing import Union


def use_hub_for(name_or_path: Union[str, Path]) -> None:
    """`task_registry.hub.use_hub(name_or_path)`, except for a local path that exists, for which it changes nothing:
    importing task_registry loads datasets, pandas and pyarrow (about a second), which `predict`, `export` and
    `merge` of a local model otherwise never load."""
    if Path(name_or_path).exists():
        return
    from task_registry.hub import use_hub

    use_hub(name_or_path)
