"""The file system checks of a run's configuration, made before any training (`check_paths`): every path it
names exists and is what its key reads (a model folder with config.json, a tokenizer folder with its files), and the
output and cache folders can be made and written into; `tasks_dirs` lists `data.tasks_dir`'s folders. `t2t_mtl.config`
checks the values, not what they name on the disk."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

from t2t_mtl.config_errors import ConfigFileError
from t2t_mtl.hub import looks_like_path
from t2t_mtl.model_folder import is_model_folder
from t2t_mtl.output_paths import nearest_existing

if TYPE_CHECKING:
    from t2t_mtl.config import Config

__all__ = ["check_paths", "tasks_dirs"]


def check_paths(cfg: Config) -> None:
    """Check every path the config names exists, and that training.output_dir and data.cache_dir can be made and
    written into (run before any training). Raises ConfigFileError."""
    def must_exist(key: str, value: Optional[str], kind: str) -> None:
        if value is not None and not Path(value).exists():
            from task_registry.path_hints import path_hint  # (task_registry is slow to import: on the error path only)

            where = "" if Path(value).is_absolute() else (
                f" (a relative path in a config is read from the working directory, {os.getcwd()}, not from the "
                f"config file's folder: run from the folder it is relative to, or write it absolute)")
            raise ConfigFileError(f"config key {key!r} names {kind} {value!r}, which does not exist{path_hint(value)}"
                                  f"{where}")

    must_exist("data.data_dir", cfg.data.data_dir, "a data directory")
    if cfg.data.data_dir is not None and not Path(cfg.data.data_dir).is_dir():
        raise ConfigFileError(f"config key 'data.data_dir' names a data directory {cfg.data.data_dir!r}, which is a "
                              f"file: name the folder holding <hub path>/<config>/<split>.jsonl")
    for index, directory in enumerate(tasks_dirs(cfg)):
        key = "data.tasks_dir" if isinstance(cfg.data.tasks_dir, str) else f"data.tasks_dir[{index}]"
        must_exist(key, directory, "a folder of YAML task files")
    must_exist("deepspeed.config", cfg.deepspeed.config, "a DeepSpeed JSON file")
    if cfg.model.name_or_path is not None and looks_like_path(cfg.model.name_or_path):
        must_exist("model.name_or_path", cfg.model.name_or_path, "a local folder")
    if cfg.tokenizer.path is not None and looks_like_path(cfg.tokenizer.path):
        from t2t_mtl.tokenizer import names_sentencepiece_model  # (a *.model file is a tokenizer too)

        kind = "a SentencePiece model file" if names_sentencepiece_model(cfg.tokenizer.path) else "a local folder"
        must_exist("tokenizer.path", cfg.tokenizer.path, kind)
    _refuse_folders_without_model_or_tokenizer(cfg)
    _check_output_folder("training.output_dir", cfg.training.output_dir, "choose another folder")
    if cfg.data.cache_dir is not None:
        _check_output_folder("data.cache_dir", cfg.data.cache_dir,
                             "choose another folder (or null: the run folder's cache/)")


def _refuse_folders_without_model_or_tokenizer(cfg: Config) -> None:
    """ConfigFileError for a `model.name_or_path` folder without config.json (a t2t-mtl run or checkpoint: named with
    the export to make) or a `tokenizer.path` folder without tokenizer files (a run's: named with its tokenizer/),
    refused here rather than once the run has started."""
    from t2t_mtl.tokenizer import file_tokenizer_problem, missing_tokenizer_files

    model = cfg.model.name_or_path
    if model is not None and Path(model).is_dir() and not is_model_folder(model):
        if (Path(model) / "checkpoints").is_dir() or (Path(model) / "meta.json").is_file():
            raise ConfigFileError(f"config key 'model.name_or_path' names {model!r}, a t2t-mtl run (or checkpoint), "
                                  f"not a model folder (it holds no config.json): export it first, `t2t-mtl export "
                                  f"{model} --out DIR`, and name DIR")
        raise ConfigFileError(f"config key 'model.name_or_path' names {model!r}, a folder that holds no config.json: "
                              f"name a Hugging Face model folder (saved with save_pretrained, or written by "
                              f"`t2t-mtl export`) or a hub name")
    tokenizer = cfg.tokenizer.path
    problem = missing_tokenizer_files(tokenizer) if tokenizer is not None and Path(tokenizer).is_dir() else None
    if tokenizer is not None and Path(tokenizer).is_file():  # (was refused only once DeepSpeed was up)
        problem = file_tokenizer_problem(tokenizer)
    if problem:
        raise ConfigFileError(f"config key 'tokenizer.path' names {tokenizer!r}: {problem}")


def _check_output_folder(key: str, value: str, fix: str) -> None:
    """ConfigFileError naming `key` and `value` when the folder cannot be made or written into: the nearest path
    of it and its parents that exists is a file, or a folder this process may not write (the run would fail in a
    traceback once it first writes there). `fix` says what to do."""
    out = Path(value)
    parent = nearest_existing(out)
    if parent is None:
        return
    if not parent.is_dir():
        raise ConfigFileError(f"{key} {str(out)!r}: {parent} exists and is not a directory; {fix}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigFileError(f"{key} {str(out)!r}: {parent} is not writable by this user; {fix}")


def tasks_dirs(cfg: Config) -> List[str]:
    """`data.tasks_dir` as a list of folders (one folder or several may be given)."""
    value = cfg.data.tasks_dir
    return [] if not value else [value] if isinstance(value, str) else list(value)
