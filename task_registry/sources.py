"""Where a task's rows come from: a Hugging Face hub id, local files, or a Python generator.

The data-dir override (`set_data_dir(path)` or the environment variable `T2T_MTL_DATA_DIR`) maps a hub id
`HFSource(path, name)` to `<data_dir>/<path>/<name or "default">/<split>.jsonl`, so every task runs offline
on local copies in the hub's schema. Without the override `HFSource` calls `datasets.load_dataset(path, name)`.
An `HFSource` with `data_files` names its files itself and is always loaded with them, override or not.

This module holds the sources and the data-dir override; `file_loading` reads a split's data files (through
`file_formats`' readers, `csv_files`' column types and checks and `data_paths`' patterns), and `code_digests` keys a
generator's cached rows on its code.
"""
from __future__ import annotations

import contextlib
import functools
import os
import posixpath
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union

from .code_digests import code_digest
from .csv_files import check_csv_shape
from .data_paths import (PathLike, absolute_paths, file_names, files_summary, is_pattern, is_saved_dataset,
                         matched_files, path_list, read_twice, saved_splits, shown_paths, unmatched_pattern,
                         written_as_local_path)
from .data_reads import DataRead
from .errors import DataSourceError, TaskDefinitionError, close_matches
from .file_formats import file_readers, format_of, is_file_builder, misspelt_reader_problem, split_format
from .file_loading import (caused_by, checked_text, error_chain, json_problem, load_files, load_saved, not_utf8,
                           raising_stream)
from .hub import use_hub
from .lazy_modules import LazyModule
from .path_hints import close_existing_path
from .reader_logs import reader_errors_unlogged
from .signatures import binding_error

DATA_DIR_ENV = "T2T_MTL_DATA_DIR"
_data_dir: Optional[Path] = None

datasets = LazyModule("datasets")


def set_data_dir(path: Optional[PathLike]) -> None:
    """Map hub ids to `<path>/<hub path>/<config or default>/<split>.jsonl`; `None` restores the default."""
    global _data_dir
    _data_dir = Path(path) if path is not None else None


def get_data_dir() -> Optional[Path]:
    """The active data dir: `set_data_dir`'s value, else `$T2T_MTL_DATA_DIR`, else `None` (use the hub)."""
    if _data_dir is not None:
        return _data_dir
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else None


@contextlib.contextmanager
def restored_data_dir() -> Iterator[None]:
    """A block whose `set_data_dir` calls last until it ends: the value `set_data_dir` held when it began (None:
    none) is set again however it is left (`$T2T_MTL_DATA_DIR` is the environment's, read as ever). A command's
    `--data-dir` and a run's `data.data_dir` are set in one, so they do not outlast their call."""
    before = _data_dir
    try:
        yield
    finally:
        set_data_dir(before)


class Source:
    """A task's raw rows per split."""

    def load(self, split: str, *, streaming: bool = False) -> Union[datasets.Dataset, datasets.IterableDataset]:
        """The rows of `split`, an `IterableDataset` when `streaming`; raises `DataSourceError` when they cannot
        be read."""
        raise NotImplementedError

    def describe(self) -> str:
        """Where the rows come from, in a few words (for messages and `repr`)."""
        raise NotImplementedError

    def to_config(self) -> dict[str, Any]:
        """A plain-data description, with file paths as stored (`identity`)."""
        raise NotImplementedError

    def shown_config(self) -> dict[str, Any]:
        """`to_config()` as `tasks show` prints it: file paths normalised (`shown_paths`)."""
        return self.to_config()

    def summary(self) -> str:
        """Where the rows come from, as `tasks list` shows it: `describe()`, unless the source reads files."""
        return self.describe()

    def identity(self) -> dict[str, Any]:
        """What the rows depend on, as data (`Task.definition_digest`): `to_config()` and what it leaves out."""
        return self.to_config()

    def file_splits(self) -> Optional[list[str]]:
        """The splits a split → files mapping names (the only ones it can load), or None when the source does not
        fix them by its files (a hub dataset, a generator, one file list shared by every split)."""
        return None

    def read_from(self, split: str) -> list[DataRead]:
        """What `split`'s rows are read from (a hub dataset by path and config, a file or folder by its resolved
        path), as records equal for two sources reading the same data: none for rows made by code."""
        return []

    def __repr__(self) -> str:
        try:
            return f"<{type(self).__name__} {self.describe()}>"
        except NotImplementedError:  # a subclass without `describe`
            return super().__repr__()


def _check_reader(path: str, data_files: Any, load_kwargs: Mapping[str, Any]) -> None:
    """Raise `TaskDefinitionError` for a data file that datasets' reader `path` would misread: a json, csv or
    parquet file given to another of these readers, or a .tsv file to the csv reader without `sep` (it splits the
    lines at commas, so a row came out as one column named 'a\\tb', and every template failed on a missing field)."""
    if path not in {"json", "csv", "parquet"} or data_files is None:
        return
    for name in file_names(data_files):
        try:
            builder, kwargs = format_of(Path(name))
        except TaskDefinitionError:  # an extension of no known format: the reader decides
            continue
        if builder != path:
            raise TaskDefinitionError(f"data file {name!r} is a {builder} file, but `{path}` is the reader named: "
                                      f"name the `{builder}` reader (`hf: {builder}` in a task file)")
        if "delimiter" in kwargs and not {"sep", "delimiter"} & set(load_kwargs):
            raise TaskDefinitionError(f"data file {name!r} is tab-separated, but the csv reader splits lines at "
                                      f"commas: in a task file list it under `files:`, which reads .tsv files "
                                      f"tab-separated (in Python: LocalFileSource, or HFSource(..., sep='\\t'))")


class HFSource(Source):
    """A Hugging Face hub dataset `load_dataset(path, name)`; offline through the data-dir override.

    With `data_files` (e.g. `HFSource("json", data_files={"train": "rows.jsonl"})`) the named files are loaded,
    also under a data dir, whose `<path>/<name>/<split>.jsonl` layout cannot say which files were meant.
    """

    def __init__(self, path: str, name: Optional[str] = None, data_files: Any = None, **load_kwargs: Any):
        if not isinstance(path, str) or not path:
            raise TaskDefinitionError(f"HFSource needs a hub id string, got {path!r}")
        if name is not None and not isinstance(name, str):
            raise TaskDefinitionError(f"HFSource {path!r}: the config name must be a string or None, got {name!r} "
                                      f"(e.g. HFSource('glue', 'rte'))")
        _check_reader(path, data_files, load_kwargs)
        self.path = path
        self.name = name
        self.data_files = data_files
        self.load_kwargs = load_kwargs

    def local_file(self, split: str, data_dir: Optional[Path] = None) -> Optional[Path]:
        """The override file for `split`, or `None` when no data dir is active, `data_files` names the files, or the
        path is a local folder (`reads_local_folder`), not a hub id."""
        data_dir = data_dir or get_data_dir()
        if data_dir is None or self.data_files is not None or self.reads_local_folder():
            return None
        return data_dir / self.path / str(self.name or "default") / f"{split}.jsonl"

    def load(self, split: str, *, streaming: bool = False) -> Union[datasets.Dataset, datasets.IterableDataset]:
        """From the data dir's file when one applies (`local_file`), else from `datasets.load_dataset`."""
        local = self.local_file(split)
        if local is not None:
            if not local.exists():
                raise DataSourceError(self._missing_local(local, split))
            return load_files([local], split, streaming, f"hub dataset {self.describe()} (data dir {get_data_dir()})")
        if is_saved_dataset(self.path):  # (load_dataset looks for data files in it, and finds none)
            raise DataSourceError(f"hub dataset {self.describe()}: {self.path!r} is a folder saved by save_to_disk, "
                                  f"which load_dataset does not read: list it under `files:` in a task file "
                                  f"(LocalFileSource({self.path!r}) in Python)")
        if not self._reads_local_files():
            use_hub(self.path)  # (a hub that cannot be reached: offline mode, so a dataset not cached fails at once)
        elif self.data_files is not None:
            self._check_patterns(split)
        try:
            if self.path == "csv" and self.data_files is not None:  # short rows and repeated columns, as `files:`
                check_csv_shape([f for f in self._split_files(split) if f.is_file()], self._csv_options(), split,
                                 f"hub dataset {self.describe()}")
            with reader_errors_unlogged():
                rows = datasets.load_dataset(self.path, self.name, split=split, data_files=self.data_files,
                                             streaming=streaming, **self.load_kwargs)
        except DataSourceError:
            raise
        except Exception as error:
            raise self._read_error(error, split) from error
        if not streaming:  # (a hub dataset's own files hold checked text: only data_files of this machine can fail)
            return rows if self.data_files is None else checked_text(rows, self._split_files(split), split,
                                                                      f"hub dataset {self.describe()}")
        return raising_stream(rows, functools.partial(self._read_error, split=split))

    def file_splits(self) -> Optional[list[str]]:
        """With `data_files`, the splits it names: a mapping's keys, or datasets' split 'train' alone for a path or
        a list; None without (the hub dataset's own splits)."""
        if self.data_files is None:
            return None
        return list(map(str, self.data_files)) if isinstance(self.data_files, Mapping) else ["train"]

    def read_from(self, split: str) -> list[DataRead]:
        """A hub dataset (read whole, or the folder of its repo its `data_dir` names; under a data dir its
        `local_file` too), or the `data_files` of `split` it names (files of its repo, in its `data_dir`); a file
        reader's `data_files` of `split` (in its `data_dir`, patterns as the files they match), or without them its
        `data_dir`; a local folder the path names (its `data_dir` in it).

        Of the other `load_dataset` arguments none says which data is read: they read the same data otherwise (a
        `revision` is another version of the dataset, which keeps most of its rows; a reader's `sep` or `features`
        parse the same text otherwise) or change nothing of it (`cache_dir`, `token`, ...), so two sources differing
        in them read the same data."""
        data_dir = self._data_dir()
        if self.reads_local_folder():
            if self.data_files is not None:  # (load_dataset reads them in the folder)
                return [DataRead.local(path, folder=False) for path in self._split_files(split)]
            return [DataRead.local(self._data_folder(), folder=True)]
        if self._reads_local_files():
            if self.data_files is None:  # (load_dataset reads the data files in the data_dir, or fails without one)
                return [DataRead.local(self._data_folder(), folder=True)] if data_dir else []
            return [DataRead.local(path, folder=False) for path in self._split_files(split)]
        if self.data_files is not None:  # (two tasks reading other files of one hub dataset share no rows)
            return [DataRead.hub(self.describe(), posixpath.join(data_dir, path)) for path in self._split_files(split)]
        local = self.local_file(split)
        return [DataRead.hub(self.describe(), data_dir, folder=True),
                *([DataRead.local(local, folder=False)] if local is not None else [])]

    def _csv_options(self) -> dict[str, Any]:
        """The csv reader's `delimiter` (also given as `sep`) and `quoting` among the `load_dataset` arguments."""
        kwargs = self.load_kwargs
        delimiter = kwargs.get("delimiter", kwargs.get("sep", ","))
        return {"delimiter": delimiter, **({"quoting": kwargs["quoting"]} if "quoting" in kwargs else {})}

    def reads_local_folder(self) -> bool:
        """Whether the path is written as a local folder, which `load_dataset` reads as its data files, rather than
        a hub id (`written_as_local_path`)."""
        return written_as_local_path(self.path)

    def _reads_local_files(self) -> bool:
        """Whether the path names one of datasets' file readers (`json`, `csv`, ...), whose `data_files` are paths on
        this machine."""
        return self.path in (file_readers() or ())

    def _check_patterns(self, split: str) -> None:
        """Raise `DataSourceError` for a glob pattern of a file reader's `data_files` that matches no file: datasets
        reads it as no file, and its reader failed on a bare StopIteration. Every split's patterns are checked, as
        `load_dataset` reads the files of every split to load one; `split`'s files, each read once (`read_twice`)."""
        named = self.data_files.items() if isinstance(self.data_files, Mapping) else [("train", self.data_files)]
        for key, value in named:
            for pattern in filter(is_pattern, self._in_data_dir(value)):
                if not matched_files(pattern):
                    read = f" (to load split {split!r}, load_dataset reads every split's files)" if key != split else ""
                    raise DataSourceError(f"hub dataset {self.describe()}: data_files of split {key!r}: "
                                          f"{unmatched_pattern(pattern)}{read}")
            twice = read_twice(self._in_data_dir(value)) if key == split else None
            if twice:
                raise DataSourceError(f"hub dataset {self.describe()}: split {split!r}: {twice}")

    def _split_files(self, split: str) -> list[Path]:
        """The `data_files` that `split` reads (all of them unless they are a split → files mapping), a file
        reader's in its `data_dir` (`_in_data_dir`) and its glob patterns as the files they match."""
        files = self.data_files.get(split, []) if isinstance(self.data_files, Mapping) else self.data_files
        local = self._reads_local_files() or self.reads_local_folder()
        return [path for name in (self._in_data_dir(files) if local else path_list(files))
                for path in (matched_files(name) if local and is_pattern(name) else [Path(name)])]

    def _in_data_dir(self, files: Any) -> list[str]:
        """A file reader's or local folder's data files `files` (a path or a list) as `load_dataset` reads them: a
        relative one in the `data_dir` among its arguments, where one is given (else in the working directory), in
        the local folder."""
        return [os.path.join(self._data_folder(), str(name)) for name in path_list(files)]

    def _data_folder(self) -> str:
        """The folder of this machine a file reader's or local folder's data files are looked up in: its `data_dir`
        ('' where none is given: the working directory), in the local folder."""
        return os.path.expanduser(os.path.join(self.path, self._data_dir()) if self.reads_local_folder()
                                  else self._data_dir())

    def _data_dir(self) -> str:
        """The `data_dir` among the `load_dataset` arguments, where it looks for the data files: a folder of the hub
        dataset's repo, or of this machine for a file reader or a local folder; '' where none is given."""
        return str(self.load_kwargs.get("data_dir") or "")

    def _read_error(self, error: BaseException, split: str) -> DataSourceError:
        """The error loading or streaming `split` raised, naming the dataset, its config and the split, with the
        reader's explanation (the error and its causes) and where the rows are looked for."""
        if self.data_files is not None and caused_by(error, UnicodeDecodeError):  # a csv file, or json streamed
            return DataSourceError(not_utf8(self._split_files(split), split, f"hub dataset {self.describe()}"))
        misspelt = misspelt_reader_problem(self.path) if self.data_files is not None else None
        hint = (misspelt if misspelt is not None else
                f"its data_files {self.data_files!r} are loaded as given, a data dir does not apply to them"
                if self.data_files is not None else
                f"{self.path!r} is a local path, read by load_dataset as a folder of data files (csv, json, "
                f"parquet, ... by their extensions; a save_to_disk folder belongs under `files:`)"
                if self.reads_local_folder() else
                f"offline, point --data-dir / ${DATA_DIR_ENV} at a folder with "
                f"<path>/<config or default>/<split>.jsonl")
        where = json_problem(self._split_files(split)) if self.data_files is not None and self.path == "json" else None
        return DataSourceError(f"hub dataset {self.describe()} split {split!r} could not be loaded "
                               f"({f'{where}; the reader: ' if where else ''}{error_chain(error)}); {hint}")

    def _missing_local(self, local: Path, split: str) -> str:
        """Why the data dir has no `local` file for `split`: which configs or splits it does hold."""
        config_dir, dataset_dir = local.parent, local.parent.parent
        where = f"hub dataset {self.describe()} (data dir {get_data_dir()}): split {split!r} expects the file " \
                f"{str(local)!r}, which does not exist"
        if config_dir.is_dir():
            splits = sorted(p.stem for p in config_dir.glob("*.jsonl"))
            return f"{where}; {config_dir} holds the split(s) {splits}"
        configs = sorted(p.name for p in dataset_dir.iterdir() if p.is_dir()) if dataset_dir.is_dir() else []
        if not configs:
            return f"{where}; the data dir has no folder {self.path!r} for this dataset{self._nested_hint()}" \
                   f"{self._close_path_hint()}"
        suggestion = (close_matches(self.name, configs) if self.name is not None else []) or configs
        config = "without a config name it reads the folder 'default'" if self.name is None else \
            f"config {self.name!r} is not there"
        return (f"{where}; {config}, and the data dir holds the configs {configs} of {self.path!r}: name one as the "
                f"config (e.g. `name: {suggestion[0]}` in a task file)")

    def _close_path_hint(self) -> str:
        """`; did you mean 'PATH'?` for the hub path of the data dir that this one misspells (`ag_new`, `superglue`)."""
        data_dir = Path(get_data_dir() or "")
        try:
            near = close_existing_path(data_dir / self.path)
        except OSError:  # an unreadable folder holds nothing we can use
            return ""
        return f"; did you mean {near.relative_to(data_dir).as_posix()!r}?" if near is not None else ""

    def _nested_hint(self) -> str:
        """Where a subfolder of the data dir holds this dataset (`--data-dir shared` for `shared/data`): point at it."""
        def holds(folder: Path) -> bool:
            try:
                return (folder / self.path).is_dir()
            except OSError:  # an unreadable folder holds nothing we can use
                return False

        try:
            holders = sorted(p for p in Path(get_data_dir() or "").iterdir() if holds(p))
        except OSError:
            return ""
        return f" (its subfolder {holders[0].name!r} has one: make {holders[0]} the data dir)" if holders else ""

    def describe(self) -> str:
        """`path/name`, or `path` without a config name."""
        return f"{self.path}/{self.name}" if self.name else self.path

    def to_config(self) -> dict[str, Any]:
        """`{"hf": path}`, with `name` and `data_files` when set."""
        config: dict[str, Any] = {"hf": self.path}
        if self.name:
            config["name"] = self.name
        if self.data_files:
            config["data_files"] = self.data_files
        return config

    def shown_config(self) -> dict[str, Any]:
        """`to_config()` with `data_files` as `shown_paths`."""
        config = self.to_config()
        if self.data_files:
            config["data_files"] = shown_paths(self.data_files)
        return config

    def summary(self) -> str:
        """`describe()`, followed by the `data_files` (`reader: train: ['data/x.csv'], ...`) when it names files."""
        return f"{self.describe()}: {files_summary(self.data_files)}" if self.data_files else self.describe()

    def identity(self) -> dict[str, Any]:
        """`to_config()` and the extra `load_dataset` keyword arguments; a file reader's `data_files` as
        `absolute_paths` (a hub dataset's name files inside its repo, and stay as written)."""
        config = self.to_config()
        if self.data_files and file_readers() is not None and is_file_builder(self.path):
            config["data_files"] = absolute_paths(self.data_files)
        return {**config, "load_kwargs": self.load_kwargs}


class LocalFileSource(Source):
    """Local jsonl/json/csv/tsv/parquet files through `datasets.load_dataset`, or a folder `save_to_disk` wrote
    through `datasets.load_from_disk`.

    `files` maps split → path or list of paths; a single path or list is used for every split. A saved folder is
    given alone: a DatasetDict's serves each split from its split of that name, a Dataset's its rows.
    """

    def __init__(self, files: Union[PathLike, Sequence[PathLike], Mapping[str, Union[PathLike, Sequence[PathLike]]]]):
        def as_paths(value) -> list[Path]:
            values = [value] if isinstance(value, (str, os.PathLike)) else list(value)
            if not values:
                raise TaskDefinitionError("LocalFileSource got an empty list of files")
            paths = [Path(v) for v in values]
            if any(map(is_saved_dataset, paths)):
                if len(paths) > 1:
                    raise TaskDefinitionError(f"LocalFileSource: {[str(p) for p in paths]}: a folder saved by "
                                              f"save_to_disk is read alone, not with other files or folders")
                return paths
            # one reader loads all the files of a split; a pattern's files are checked as it matches them now (a
            # pattern matching none is named at load, as is a path that does not exist: a file or a saved folder, it
            # may be written later), and again at load
            matched = [file for path in paths for file in (matched_files(path) if is_pattern(path) else [path])
                       if file.exists()]
            try:
                if matched:
                    split_format(matched, paths)
            except TaskDefinitionError as error:
                raise TaskDefinitionError(f"LocalFileSource: {error}") from None
            return paths

        if isinstance(files, Mapping):
            self.files: Optional[dict[str, list[Path]]] = {split: as_paths(v) for split, v in files.items()}
            self.shared: Optional[list[Path]] = None
        else:
            self.files = None
            self.shared = as_paths(files)

    def load(self, split: str, *, streaming: bool = False) -> Union[datasets.Dataset, datasets.IterableDataset]:
        """The files of `split`, or the files shared by every split; raises `DataSourceError` for a split the
        mapping does not list."""
        if self.files is not None:
            if split not in self.files:
                raise DataSourceError(f"local files source has no split {split!r}; it has {sorted(self.files)} (a "
                                      f"task's `splits` default to [train, validation]: list the ones it has)")
            files = self.files[split]
        else:
            files = self.shared
        if len(files) == 1 and files[0].is_dir():
            return load_saved(files[0], split, streaming, "local files source")
        return load_files(files, split, streaming, "local files source")

    def file_splits(self) -> Optional[list[str]]:
        """The splits of the split → files mapping, or of the one DatasetDict folder shared by every split; None for
        files shared by every split."""
        if self.files is not None:
            return list(self.files)
        return saved_splits(self.shared[0]) if len(self.shared) == 1 else None

    def read_from(self, split: str) -> list[DataRead]:
        """The files (or saved folder) of `split`, or those every split shares (patterns as the files they match); a
        DatasetDict's saved folder as its folder of `split` (none for a split it lacks)."""
        paths = self.files.get(split, []) if self.files is not None else self.shared
        saved = saved_splits(paths[0]) if len(paths) == 1 else None  # (DatasetDict.save_to_disk: a folder a split)
        if saved is not None:
            return [DataRead.local(paths[0] / split)] if split in saved else []
        return [DataRead.local(path)
                for pattern in paths for path in (matched_files(pattern) if is_pattern(pattern) else [pattern])]

    def describe(self) -> str:
        """The files per split, or the list shared by every split (as `shown_paths`)."""
        return files_summary(self.files if self.files is not None else self.shared)

    def shown_config(self) -> dict[str, Any]:
        """`to_config()` with the files as `shown_paths`."""
        return {"files": shown_paths(self.files if self.files is not None else self.shared)}

    def to_config(self) -> dict[str, Any]:
        """`{"files": ...}`: a mapping split → paths, or one list of paths."""
        if self.files is not None:
            return {"files": {split: [str(p) for p in paths] for split, paths in self.files.items()}}
        return {"files": [str(p) for p in self.shared]}

    def identity(self) -> dict[str, Any]:
        """`{"files": ...}` with the paths as `absolute_paths`."""
        return {"files": absolute_paths(self.files if self.files is not None else self.shared)}


class GeneratorSource(Source):
    """Rows from a Python generator `fn(split=..., num_rows=..., seed=..., **gen_kwargs) -> Iterable[dict]`.

    `num_rows` is the row count per split (an int for every split, or a mapping). The generator must be
    deterministic in its arguments and its code; datasets caches the result keyed on the function, its arguments
    and `code_digest(fn)` (datasets alone keys a function imported from a module by its name, so an edited
    generator would be served its old rows).
    """

    def __init__(self, fn: Callable[..., Iterable[Mapping[str, Any]]],
                 num_rows: Union[int, Mapping[str, int]] = 1000, seed: int = 0,
                 gen_kwargs: Optional[Mapping[str, Any]] = None):
        if not callable(fn):
            raise TaskDefinitionError(f"GeneratorSource needs a callable, got {fn!r}")
        self.fn = fn
        self.num_rows = num_rows
        self.seed = seed
        self.gen_kwargs = dict(gen_kwargs or {})

    def rows_for(self, split: str) -> int:
        """The number of rows to generate for `split`; raises `DataSourceError` when a `num_rows` mapping lacks
        it."""
        if isinstance(self.num_rows, Mapping):
            if split not in self.num_rows:
                raise DataSourceError(f"{self.describe()} has no size for split {split!r}; "
                                      f"sizes: {dict(self.num_rows)}")
            return int(self.num_rows[split])
        return int(self.num_rows)

    def signature_problem(self) -> Optional[str]:
        """Why `fn` cannot take the arguments `load` calls it with (split, num_rows and seed as keywords, and the
        gen_kwargs), with the definition to write; None when it can, or when Python cannot read its signature."""
        passed = ["split", "num_rows", "seed", *self.gen_kwargs]
        problem = binding_error(self.fn, **dict.fromkeys(passed))
        if problem is None:
            return None
        with_kwargs = " and its gen_kwargs" if self.gen_kwargs else ""
        return (f"{self.describe()} cannot take the arguments GeneratorSource calls it with, split, num_rows and seed "
                f"as keywords{with_kwargs} ({problem[1]}); define it as def {getattr(self.fn, '__name__', 'fn')}("
                f"{', '.join(passed)}), or add **kwargs")

    def load(self, split: str, *, streaming: bool = False) -> Union[datasets.Dataset, datasets.IterableDataset]:
        """The generated rows; an exception inside `fn` surfaces as a `DataSourceError` chained to it (at load
        time for map-style datasets, while iterating for streaming ones)."""
        gen_kwargs = dict(self.gen_kwargs, split=split, num_rows=self.rows_for(split), seed=self.seed)
        if streaming:
            return datasets.IterableDataset.from_generator(_call_generator, gen_kwargs={"fn": self.fn, **gen_kwargs})
        try:
            return datasets.Dataset.from_generator(_call_generator, split=datasets.NamedSplit(split), gen_kwargs={
                "fn": self.fn, "code": code_digest(self.fn), "datasets_version": datasets.__version__, **gen_kwargs})
        except datasets.exceptions.DatasetGenerationError as error:
            cause = error.__cause__
            if isinstance(cause, DataSourceError):  # raised by _call_generator: drop the frames inside datasets
                raise cause.with_traceback(None) from cause.__cause__
            if isinstance(cause, datasets.arrow_writer.SchemaInferenceError):  # nothing to infer the columns from
                raise DataSourceError(f"{self.describe()} yielded no rows for split {split!r} (num_rows="
                                      f"{gen_kwargs['num_rows']}); yield rows or drop the split") from None
            raise DataSourceError(f"{self.describe()}: the rows of split {split!r} could not be stored "
                                  f"({type(cause).__name__}: {cause}); every row needs the same fields") from cause

    def describe(self) -> str:
        """`generator <module>.<qualname>`."""
        return _describe_generator(self.fn)

    def to_config(self) -> dict[str, Any]:
        """The generator's name, `num_rows` and `seed`."""
        return {"generator": self.describe(), "num_rows": self.num_rows, "seed": self.seed}

    def identity(self) -> dict[str, Any]:
        """`to_config()`, the `gen_kwargs` and `code_digest(fn)`."""
        return {**self.to_config(), "gen_kwargs": self.gen_kwargs, "code": code_digest(self.fn)}


def _describe_generator(fn: Callable[..., Any]) -> str:
    return f"generator {getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _call_generator(fn: Callable[..., Iterable[Mapping[str, Any]]], code: str = "", datasets_version: str = "",
                    **kwargs: Any):
    """`fn`'s rows as dicts; an exception raised inside `fn` becomes a `DataSourceError` naming `fn` and the
    split, chained to the original (whose traceback ends at the user's line). `code` (`code_digest(fn)`) and
    `datasets_version` are only part of the arguments datasets keys its cache on: an edited generator gets new rows,
    and a cache another datasets version wrote (one an older version cannot read) is not read back."""
    try:
        for row in fn(**kwargs):
            yield dict(row)
    except Exception as error:
        raise DataSourceError(f"{_describe_generator(fn)} failed on split {kwargs['split']!r}: "
                              f"{type(error).__name__}: {error}") from error
