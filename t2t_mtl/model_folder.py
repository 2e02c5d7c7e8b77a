"""What tells a model folder from a run or checkpoint folder: the config.json a Hugging Face model folder holds."""
from __future__ import annotations

from pathlib import Path
from typing import Union

MODEL_CONFIG_FILE = "config.json"


def is_model_folder(path: Union[str, Path]) -> bool:
    """Whether `path` holds a model's config.json, as a folder written by save_pretrained or `t2t-mtl export` does
    (a t2t-mtl run or checkpoint folder holds none; whether the folder's other files load is not checked)."""
    return (Path(path) / MODEL_CONFIG_FILE).is_file()
