"""What tells a model folder from a run or checkpoint folder: the config.json a Hugging Face model folder holds."""
from __future__ import annotations

from pathlib import Path
from typing import Union

MODEL_CONFIG_FILE = "config.json"

#: the `model_type`s of the checkpoints t2t-mtl loads, as `T5ForConditionalGeneration` (mT5 is T5 v1.1 with another
#: vocabulary); UMT5 (a relative position bias in every layer) and LongT5 (local attention) compute otherwise
T5_MODEL_TYPES = ("t5", "mt5")


def is_t5_model_type(model_type: object) -> bool:
    """Whether a saved config naming `model_type` holds a T5 (one of `T5_MODEL_TYPES`); one naming none (None) is
    read as a T5, as `T5Config` reads it and training loads it."""
    return model_type is None or model_type in T5_MODEL_TYPES


def not_a_t5(model_type: object) -> str:
    """What a model of `model_type` (not one of `T5_MODEL_TYPES`) is, for an error that names the folder first."""
    return (f"is a {model_type!r} model, not a T5 encoder-decoder (model_type "
            f"{' or '.join(map(repr, T5_MODEL_TYPES))}: T5, T5 v1.1, Flan-T5, mT5; UMT5 and LongT5 are other "
            f"architectures, which t2t-mtl does not load)")


def is_model_folder(path: Union[str, Path]) -> bool:
    """Whether `path` holds a model's config.json, as a folder written by save_pretrained or `t2t-mtl export` does
    (a t2t-mtl run or checkpoint folder holds none; whether the folder's other files load is not checked)."""
    return (Path(path) / MODEL_CONFIG_FILE).is_file()
