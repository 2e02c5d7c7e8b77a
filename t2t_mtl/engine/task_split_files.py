"""Whether a run's tasks have files for the splits they name (`check_task_splits`): a split without any is refused
before training, where its first read, for the evaluations after training, would fail."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from t2t_mtl.config import ConfigError

__all__ = ["check_task_splits"]


def check_task_splits(task_names: Sequence[str]) -> None:
    """Refuse a run task whose `splits` name a split its files do not hold (a Python-built Task with a
    LocalFileSource or HFSource(data_files=...) of train only, its splits left at [train, validation]), or one the
    data dir has no file for (`HFSource("ag_news")`, whose data dir folder holds train and test): its first read of
    that split, for the held-in or zero-shot evaluation after training, would fail."""
    import task_registry

    fix = "give the task the splits its files hold (Task(..., splits=[...]); YAML `splits:`), or add the files"
    for name in dict.fromkeys(task_names):
        task = task_registry.get_task(name)
        missing = task.splits_without_files()
        if missing:
            raise ConfigError(
                f"task {name!r} has the split(s) {missing} (its `splits`, default [train, validation]), but its source "
                f"has files for {task.source.file_splits()} only, so reading them would fail (after training, for "
                f"the evaluations): {fix}")
        absent = _data_dir_files_missing(task)
        if absent:
            folder = absent[0].parent
            held = sorted(path.stem for path in folder.glob("*.jsonl"))
            raise ConfigError(
                f"task {name!r} has the split(s) {[path.stem for path in absent]} (its `splits`, default [train, "
                f"validation]), but the data dir has no file for them ({', '.join(str(p) for p in absent)}; "
                f"{str(folder)!r} holds {held}), so reading them would fail (after training, for the evaluations): "
                f"{fix}")


def _data_dir_files_missing(task: Any) -> list[Path]:
    """The data dir's files of the task's `splits` that do not exist, for a hub dataset the data dir maps
    (`HFSource.local_file`) to a folder it holds; [] for any other source, without a data dir, or where the data dir
    has no folder for the dataset (its first read, of train, names what the data dir holds instead)."""
    local_file = getattr(task.source, "local_file", None)
    files = [] if local_file is None else [local_file(split) for split in task.splits]
    return [path for path in files if path is not None and path.parent.is_dir() and not path.exists()]
