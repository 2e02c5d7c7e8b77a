"""What a trained model's folder says of it, read without torch or transformers: a run's or checkpoint's meta with
the run's config, or an exported folder's t2t_mtl_meta.json (`trained_model_meta`), and the checkpoint a path names
(`checkpoint_of`). `eval` and `predict` check their settings and tasks against it before the model loads;
`t2t_mtl.engine.export` loads the model from the same paths."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Union

from t2t_mtl.config import Config, ConfigError, saved_run_config
from t2t_mtl.engine.checkpoint import CHECKPOINTS, CORRUPT_READ_HINT, CheckpointError, read_meta, resolve_checkpoint
from t2t_mtl.model_folder import is_model_folder
from t2t_mtl.wording import one_line

META_FILE = "t2t_mtl_meta.json"


class ExportError(ValueError):
    """The path is neither a run dir, a checkpoint dir nor an exported model folder."""


def run_dir_of(ckpt: Path) -> Path:
    """The run folder of checkpoint `ckpt` (`RUN/checkpoints/step-N`, given as a path relative to a folder inside it
    or through a link too), whose config.yaml and tokenizer rebuild its model; an ExportError for a checkpoint that
    is in no run's checkpoints/ folder (one copied out), or a run without config.yaml."""
    place = ckpt.resolve()
    if ckpt.parent.name != CHECKPOINTS and place.parent.name != CHECKPOINTS:
        raise ExportError(f"checkpoint {ckpt} is not in a run's {CHECKPOINTS}/ folder, and its model is rebuilt from "
                          f"its run's config.yaml and tokenizer: pass it where its run keeps it (RUN/{CHECKPOINTS}/"
                          f"step-N) or the run directory, or export the run (t2t-mtl export) for a folder that holds "
                          f"them")
    run = ckpt.parent.parent if ckpt.parent.name == CHECKPOINTS else place.parent.parent
    if not (run / "config.yaml").exists():
        raise ExportError(f"checkpoint {ckpt}: its run directory {run} has no config.yaml")
    return run


def run_config(run: Path) -> Config:
    """The run's config (`run`/config.yaml, read by `saved_run_config`: a value the range and consistency checks
    refuse is warned of); a CheckpointError says the model cannot be rebuilt without it."""
    import yaml

    from task_registry.yaml_limits import BoundedSafeLoader

    path = run / "config.yaml"
    try:  # (a run's config.yaml may come from someone else)
        return saved_run_config(yaml.load(path.read_text(), Loader=BoundedSafeLoader) or {}, path)
    except (yaml.YAMLError, ConfigError) as err:
        raise CheckpointError(f"{run / 'config.yaml'} is not a valid run config ({err}); the model cannot be "
                              f"rebuilt without it: restore or fix the file") from None


def checkpoint_run_meta(ckpt: Path, run: Path, cfg: Config) -> Dict[str, Any]:
    """A checkpoint's meta.json with its path, its run's folder (both absolute: an export's t2t_mtl_meta.json keeps
    them, and a run fine-tuned from it its `initialised_from`, read from other working directories) and config
    (`cfg`, as a dict)."""
    return {**read_meta(ckpt, CORRUPT_READ_HINT), "checkpoint": os.path.abspath(ckpt), "run_dir": os.path.abspath(run),
            "config": cfg.to_dict()}


def checkpoint_of(path: Union[str, Path]) -> Path:
    """The checkpoint `path` names: itself (a checkpoint folder) or a run folder's latest; an ExportError for a path
    that is missing, an exported model folder, or neither."""
    path = Path(path)
    if not path.exists():
        from task_registry.path_hints import path_hint  # (task_registry is slow to import: on the error path only)

        raise ExportError(f"{path} does not exist{path_hint(path)}: pass a run directory, a checkpoints/step-* folder "
                          f"or an exported model folder")
    if is_model_folder(path) and not (path / "meta.json").exists():
        raise ExportError(f"{path} is an exported model folder already (load it with from_pretrained); export "
                          f"takes a run directory or a {CHECKPOINTS}/step-* folder")
    if not (path / "meta.json").exists() and not (path / CHECKPOINTS).is_dir():
        raise ExportError(f"{path} is neither a run directory (no {CHECKPOINTS}/), a checkpoint (no meta.json) nor "
                          f"an exported model folder (no config.json): pass a run directory, a "
                          f"{CHECKPOINTS}/step-* folder or an exported model folder")
    try:
        ckpt = resolve_checkpoint(str(path), path)
    except CheckpointError as err:
        raise ExportError(str(err)) from None
    return ckpt


def trained_model_meta(path: Union[str, Path]) -> Dict[str, Any]:
    """The meta `load_trained_model(path)` returns (a run's or checkpoint's with the run's config, or an exported
    folder's t2t_mtl_meta.json), read without building the model or loading weights: what a command needs to choose
    and check its settings before the load. Raises ExportError (CheckpointError for a run's config it cannot read)
    where `load_trained_model` would for the path."""
    path = Path(path)
    if is_model_folder(path):
        try:
            return folder_meta(path)
        except (OSError, ValueError) as err:
            raise ExportError(f"model folder {path}: its {META_FILE} could not be read: {one_line(err)}") from None
    ckpt = checkpoint_of(path)
    run = run_dir_of(ckpt)
    return checkpoint_run_meta(ckpt, run, run_config(run))


def folder_meta(path: Path) -> Dict[str, Any]:
    """An exported model folder's t2t_mtl_meta.json ({} for a folder without one)."""
    return json.loads((path / META_FILE).read_text()) if (path / META_FILE).exists() else {}
