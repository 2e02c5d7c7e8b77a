"""The paths of a source's data files: glob patterns and the files they match (`matched_files`), folders
`save_to_disk` wrote (`is_saved_dataset`), a hub id written as a local path (`written_as_local_path`), and paths
as `tasks list` / `show` print them (`shown_paths`) and a definition digest hashes them (`absolute_paths`)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from .errors import close_matches
from .lazy_modules import LazyModule

PathLike = Union[str, os.PathLike]
datasets = LazyModule("datasets")


def is_saved_dataset(path: PathLike) -> bool:
    """Whether `path` is a folder that `Dataset.save_to_disk` (its state.json) or `DatasetDict.save_to_disk` (its
    dataset_dict.json) wrote, which `datasets.load_from_disk` reads."""
    folder = Path(path)
    return folder.is_dir() and any((folder / name).is_file() for name in ("state.json", "dataset_dict.json"))


def saved_splits(folder: PathLike) -> Optional[list[str]]:
    """The splits a `DatasetDict.save_to_disk` folder holds (its dataset_dict.json); None for another folder, or
    one whose list cannot be read (loading it says why)."""
    try:
        return [str(split) for split in json.loads((Path(folder) / "dataset_dict.json").read_text())["splits"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def split_folders(folder: str, wanted: Sequence[str], saved: Sequence[str]) -> dict[str, str]:
    """Task split → the split folder of the `DatasetDict.save_to_disk` folder `folder` that may be read as it: each of
    `wanted` (splits the folder lacks) from the one of `saved` (its splits no other task split reads) of the closest
    name, `train` from `training` or `trn`, `validation` from `valid`; none where no name is close. Each split's
    folder is a `Dataset.save_to_disk` one, which `files:` reads as any split."""
    unused, mapping = list(saved), {}
    for split in wanted:
        close = close_matches(split, unused, n=1, cutoff=0.4, substrings=False)
        if close:
            mapping[split] = f"{folder.rstrip('/')}/{close[0]}"
            unused.remove(close[0])
    return mapping


def is_pattern(path: PathLike) -> bool:
    """Whether `path` is a glob pattern (it holds `*`, `?` or `[`) rather than a file that exists."""
    return any(c in str(path) for c in "*?[") and not Path(path).exists()


def read_twice(paths: Sequence[PathLike]) -> Optional[str]:
    """Why a split's `paths` (files and glob patterns) would read a file twice (`datasets` reads a file as often as
    it is listed or matched, its rows doubled), naming it and the paths that read it, a link and the file it links
    to being one; None where each file is read once."""
    read_by: dict[str, tuple[int, Path]] = {}  # resolved file → (index in `paths`, the file as first read)
    for index, path in enumerate(paths):
        for file in matched_files(path) if is_pattern(path) else [Path(path)]:
            first_index, first = read_by.setdefault(os.path.realpath(file), (index, file))
            if (first_index, first) == (index, file):
                continue
            also = f" (also as {file})" if file != first else ""
            if first_index == index:
                by = f"twice by {str(path)!r}"
            elif str(paths[first_index]) == str(path):
                by = f"by {str(path)!r}, listed twice"
            else:
                by = f"by both {str(paths[first_index])!r} and {str(path)!r}"
            return (f"the file {first}{also} is read {by}, so its rows would be read twice; list each file once "
                    f"(narrow a pattern, or drop a path)")
    return None


def matched_files(pattern: PathLike) -> list[Path]:
    """The files the glob `pattern` matches, sorted, as `load_dataset` matches a `data_files` pattern (datasets'
    `resolve_pattern`: `*` within one folder, `**` at any depth, hidden files only when the pattern names them);
    [] when none does."""
    try:
        return sorted(Path(p) for p in datasets.data_files.resolve_pattern(str(pattern), base_path=os.getcwd()))
    except FileNotFoundError:
        return []


def unmatched_pattern(pattern: PathLike) -> str:
    """What is wrong with the glob `pattern` that matches no file, and what to check."""
    return (f"the pattern {str(pattern)!r} matches no file; check its folder ({str(Path(pattern).parent)!r}) and "
            f"its names (`*` matches within one folder, `**` at any depth; a hidden file only when the pattern "
            f"names it)")


def path_list(value: Any) -> list:
    """One path as a list of one; a list (or other iterable) of paths as a list; None as []."""
    return [value] if isinstance(value, (str, os.PathLike)) else list(value or [])


def shown_paths(files: Any) -> Any:
    """Paths as `tasks list` / `show` print them, in `files`' shape (a path: a list of one; a list; or split →
    either): each `os.path.normpath`-ed, so a YAML task's `tasks/../data/x.csv` shows as `data/x.csv`. For display
    only: the source keeps and reads its paths as stored, and hashes them as `absolute_paths`."""
    if isinstance(files, Mapping):
        return {str(split): shown_paths(value) for split, value in files.items()}
    return [os.path.normpath(value) for value in path_list(files)]


def absolute_paths(files: Any) -> Any:
    """Paths as a definition digest hashes them (`Source.identity`), in `shown_paths`' shapes: each made absolute
    and normalised (`os.path.abspath`), so `tasks/../data/x.csv` and `/home/me/data/x.csv` are one file, and one
    relative path read from two working directories two."""
    if isinstance(files, Mapping):
        return {str(split): absolute_paths(value) for split, value in files.items()}
    return [os.path.abspath(value) for value in path_list(files)]


def files_summary(files: Any) -> str:
    """`shown_paths(files)` on one line: `train: ['a.csv'], validation: ['b.csv']`, or `['a.csv', 'b.csv']`."""
    shown = shown_paths(files)
    if isinstance(shown, Mapping):
        return ", ".join(f"{split}: {paths}" for split, paths in shown.items())
    return str(shown)


def file_names(data_files: Any) -> list[str]:
    """The paths (or patterns) that `data_files` (a path, a list, or split → path or list) names."""
    values = data_files.values() if isinstance(data_files, Mapping) else [data_files]
    return [str(name) for value in values for name in path_list(value)]


def written_as_local_path(path: str) -> bool:
    """Whether `path` is written as a local path: it starts with '.', '/' or '~', or has more than one '/' (a hub id
    is 'name' or 'owner/name'). Whether such a path exists is not asked: a folder named like a hub id in the working
    directory leaves `glue` a hub id (of the data dir)."""
    return path.startswith((".", "/", "~")) or path.count("/") > 1
