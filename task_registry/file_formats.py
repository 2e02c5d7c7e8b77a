"""Which of datasets' file readers reads a data file: the reader and options of each extension, optionally compressed
(`format_of`), the one reader the files of a split share (`split_format`), how to read a compressed file's lines
(`line_opener`), and datasets' own list of its readers (`is_file_builder`; `misspelt_reader` for a name close to
one)."""
from __future__ import annotations

import bz2
import csv
import gzip
import lzma
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from .errors import TaskDefinitionError, close_matches
from .lazy_modules import LazyModule

# csv/tsv cells are text: "NA", "null" or "None" stay strings (pandas' default reads them as missing), and a tsv
# has no quoting (as GLUE's own readers assume), so a field that starts with `"` is not joined with the next lines.
# Column types are decided from every cell of the split's files (`csv_files.csv_features`)
_FORMATS = {".jsonl": ("json", {}), ".json": ("json", {}), ".csv": ("csv", {"keep_default_na": False}),
            ".tsv": ("csv", {"delimiter": "\t", "keep_default_na": False, "quoting": csv.QUOTE_NONE}),
            ".parquet": ("parquet", {})}
_COMPRESSIONS = {".gz", ".bz2", ".xz", ".zst"}
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
datasets = LazyModule("datasets")
_UNREAD = object()
#: datasets' file readers ({name: module}), read on first use (`file_readers`); None where datasets lacks the list
_PACKAGED_DATASETS_MODULES: Any = _UNREAD


def file_readers() -> Optional[Mapping[str, Any]]:
    """datasets' file readers by name (`json`, `csv`, ...), or None when the installed datasets lacks that list."""
    global _PACKAGED_DATASETS_MODULES
    if _PACKAGED_DATASETS_MODULES is _UNREAD:
        try:  # datasets has no public list of its file readers; this private one may go in a later version
            from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES as readers
        except ImportError:
            readers = None
        _PACKAGED_DATASETS_MODULES = readers
    return _PACKAGED_DATASETS_MODULES


def is_file_builder(path: str) -> bool:
    """Whether the hub id `path` names one of datasets' file readers (`json`, `csv`, `parquet`, `text`, ...), whose
    `data_files` are paths on this machine (for a hub repo they are paths inside the repo).

    Raises `TaskDefinitionError` when the installed `datasets` lacks the (private) list of its readers."""
    readers = file_readers()
    if readers is None:
        raise TaskDefinitionError(
            f"cannot tell whether {path!r} is one of datasets' file readers (whose data_files are local paths) or a "
            f"hub repo: datasets {datasets.__version__} has no datasets.packaged_modules._PACKAGED_DATASETS_MODULES; "
            f"install a datasets version this project supports (setup.py), or list local files under `files:`")
    return path in readers


def misspelt_reader(path: str) -> Optional[str]:
    """The datasets file reader that `path`, given with `data_files`, most likely means when it names none and no
    'owner/name' hub repo: the reader of a file extension written as one (`jsonl` → `json`, `tsv` → `csv`), else the
    closest reader name (`jsn` → `json`, `txt` → `text`); None for a reader, a repo, or a name close to none."""
    readers = list(file_readers() or ())
    if not readers or not isinstance(path, str) or path in readers or "/" in path:
        return None
    by_extension = _FORMATS.get(f".{path.lower()}")
    if by_extension is not None:
        return by_extension[0]
    matches = close_matches(path, readers, n=1, cutoff=0.75, substrings=False)
    return matches[0] if matches else None


def misspelt_reader_problem(path: str) -> Optional[str]:
    """What to write instead of the hub id `path` given with `data_files` where it misspells a file reader
    (`misspelt_reader`); None where it does not."""
    reader = misspelt_reader(path)
    if reader is None:
        return None
    return (f"{path!r} is not one of datasets' file readers (json, csv, parquet, text, arrow, ...), so load_dataset "
            f"looks for a hub dataset {path!r}: to read the data_files, name the `{reader}` reader (`hf: {reader}` "
            f"in a task file, HFSource({reader!r}, data_files=...) in Python)")


def format_of(path: Path) -> tuple[str, dict[str, Any]]:
    """The reader of the data file `path` and its options, by its extension (read through a compression's). Raises
    `TaskDefinitionError` for an extension of no supported format, or a folder `save_to_disk` did not write."""
    suffix = Path(path.stem).suffix if path.suffix.lower() in _COMPRESSIONS else path.suffix
    fmt = _FORMATS.get(suffix.lower())
    if fmt is None and path.is_dir():
        raise TaskDefinitionError(f"{str(path)!r} is a folder, but not one `Dataset.save_to_disk` / "
                                  f"`DatasetDict.save_to_disk` wrote (it has no state.json or dataset_dict.json): "
                                  f"list its files, or a glob pattern of them ({str(path / '*.jsonl')!r})")
    if fmt is None:
        raise TaskDefinitionError(f"file {str(path)!r}: unsupported extension; use one of {sorted(_FORMATS)} "
                                  f"(optionally compressed: {sorted(_COMPRESSIONS)}), or a folder saved by "
                                  f"`Dataset.save_to_disk` / `DatasetDict.save_to_disk`")
    return fmt


def split_format(files: Sequence[Path], written: Sequence[Union[str, os.PathLike]]) -> tuple[str, dict[str, Any]]:
    """The reader and its options (`format_of`) that load `files`, the files of one split (`written`: as the source
    lists them, glob patterns unexpanded). Raises `TaskDefinitionError` listing the files by extension when they
    need different ones (.json and .jsonl share the json reader; .csv and .tsv files are read with other options)."""
    formats = [format_of(file) for file in files]
    if all(fmt == formats[0] for fmt in formats):
        return formats[0]
    by_extension: dict[str, list[str]] = {}
    for file in files:
        by_extension.setdefault(_extension(file), []).append(str(file))
    listed = "; ".join(f"{extension}: {names}" for extension, names in by_extension.items())
    example = str(files[0].parent / f"*{_extension(files[0])}")
    raise TaskDefinitionError(f"the files {[str(w) for w in written]} have different formats; the files of one split "
                              f"must share one format (.json and .jsonl files share one reader, .csv and .tsv files do "
                              f"not): {listed}. List the files of one format, or a pattern matching only them (e.g. "
                              f"{example!r}), or convert the others to it")


def _extension(path: Path) -> str:
    """The extension of a data file as `format_of` reads it, lowercased: '.jsonl', or '.jsonl.gz' compressed."""
    if path.suffix.lower() in _COMPRESSIONS:
        return (Path(path.stem).suffix + path.suffix).lower()
    return path.suffix.lower()


def line_opener(file: Path) -> Optional[Callable[..., Any]]:
    """How to open `file` to read its lines: `open`, or `gzip.open` and the like for a compressed file (they take
    `open`'s mode and encoding arguments); None for a compression Python cannot read (.zst)."""
    suffix = file.suffix.lower()
    return _OPENERS.get(suffix, None if suffix in _COMPRESSIONS else open)
