"""Reading a split's data files through datasets' readers, every failure a `DataSourceError` naming the source, the
files and the split with the reader's own explanation (`load_files`; `load_saved` for a folder `save_to_disk` wrote):
a file that does not exist or a pattern that matches none, files that are not UTF-8 text (`not_utf8`: the file, line
and byte), a json file the reader fails on (`json_problem`: its line that is no JSON object), files with no rows, and
a streamed split's errors raised as its map-style load raises them (`raising_stream`)."""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .csv_files import check_csv_shape, csv_features
from .data_paths import is_pattern, matched_files, read_twice, split_folders, unmatched_pattern
from .errors import DataSourceError, TaskDefinitionError
from .file_formats import format_of, line_opener, split_format
from .lazy_modules import LazyModule
from .reader_logs import reader_errors_unlogged

datasets = LazyModule("datasets")
pyarrow = LazyModule("pyarrow")


def load_saved(folder: Path, split: str, streaming: bool, what: str):
    """The rows of `split` in a folder `save_to_disk` wrote: a DatasetDict's split of that name, a Dataset's rows
    for any split. Raises `DataSourceError` naming the folder for a split the DatasetDict lacks, or a folder
    `load_from_disk` cannot read."""
    try:
        saved = datasets.load_from_disk(str(folder))
    except Exception as error:  # a folder with some of its files missing or broken
        raise DataSourceError(f"{what}: could not load the saved dataset {str(folder)!r} for split {split!r}: "
                              f"{error_chain(error)}") from error
    if isinstance(saved, datasets.DatasetDict):
        if split not in saved:
            read_as = split_folders(str(folder), [split], list(saved))
            hint = (f", or read a split's folder as a split of the task: {read_as}, in a task file files: "
                    f"{{{', '.join(f'{k}: {v}' for k, v in read_as.items())}}}" if read_as else "")
            raise DataSourceError(f"{what}: {str(folder)!r} (saved by DatasetDict.save_to_disk) has no split "
                                  f"{split!r}; it has {list(saved)} (a task's `splits` default to [train, validation]: "
                                  f"list the ones it has{hint})")
        saved = saved[split]
    return saved.to_iterable_dataset() if streaming else saved


def _expanded_files(files: Sequence[Path], split: str, what: str) -> list[Path]:
    """`files` with each glob pattern replaced by the files it matches (`matched_files`); raises `DataSourceError`
    for a file that does not exist, a pattern that matches none, or a file read twice (`read_twice`)."""
    twice = read_twice(files)
    if twice:
        raise DataSourceError(f"{what}: split {split!r}: {twice}")
    expanded = []
    for file in files:
        if is_pattern(file):
            found = matched_files(file)
            if not found:
                raise DataSourceError(f"{what}: split {split!r}: {unmatched_pattern(file)}")
            expanded.extend(found)
        elif not file.exists():
            raise DataSourceError(f"{what}: split {split!r} expects the file {str(file)!r}, which does not exist")
        else:
            expanded.append(file)
    return expanded


def load_files(files: Sequence[Path], split: str, streaming: bool, what: str):
    """The rows of `split` in `files` (paths and glob patterns, of one format: `split_format`), an `IterableDataset`
    when `streaming`; `what` names the source in its errors. Raises `DataSourceError` naming the files and split,
    with the reader's explanation chained (none for files with no rows)."""
    written, files = files, _expanded_files(files, split, what)
    try:  # (the files a pattern matches are known only now)
        builder, kwargs = split_format(files, written)
    except TaskDefinitionError as error:
        raise DataSourceError(f"{what}: split {split!r}: {error}") from None
    try:
        if builder == "csv":
            kwargs = dict(kwargs, features=csv_features(files, kwargs))
            check_csv_shape(files, kwargs, split, what)
        with reader_errors_unlogged():  # (the error is raised, naming the file, with the reader's explanation)
            rows = datasets.load_dataset(builder, data_files={split: [str(f) for f in files]}, split=split,
                                         streaming=streaming, **kwargs)
    except DataSourceError:
        raise
    except Exception as error:  # a malformed file: name it, with the reader's own explanation (the cause)
        raise _read_error(error, files, split, what) from (None if _holds_no_rows(error) else error)
    if not streaming:
        return checked_text(rows, files, split, what)
    return raising_stream(rows, functools.partial(_read_error, files=tuple(files), split=split, what=what))


def checked_text(rows: datasets.Dataset, files: Sequence[Path], split: str, what: str) -> datasets.Dataset:
    """`rows` read from `files`, once their text is known to be UTF-8: the json reader stores a file's bytes as they
    are, so a Windows-1252 file loaded and then failed at the first row read (a UnicodeDecodeError traceback naming
    no file). Raises the `DataSourceError` of `not_utf8`."""
    try:
        rows.data.table.validate(full=True)
    except pyarrow.ArrowInvalid as error:
        if "UTF8" in str(error):  # (another finding of the full validation is left to the reader, as before)
            raise DataSourceError(not_utf8(files, split, what)) from None
    return rows


def not_utf8(files: Sequence[Path], split: str, what: str) -> str:
    """The message for `files` of `split` that are not all UTF-8 text: the first file, line and byte that is not (the
    files when none can be read line by line, as a .zst one), and what to do."""
    advice = "save it as UTF-8 (a Windows-1252 file: `iconv -f cp1252 -t utf-8 OLD > NEW`)"
    for file in files:
        opener = line_opener(file)
        if opener is None or not file.is_file():  # (a .zst file; a glob pattern of data_files)
            continue
        with opener(file, "rb") as handle:
            for number, line in enumerate(handle, 1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as error:
                    byte = line[error.start]
                    return (f"{what}: {str(file)!r} (split {split!r}) is not UTF-8 text: line {number} holds the byte "
                            f"0x{byte:02x} ({error.reason}); {advice}")
    return f"{what}: {[str(f) for f in files]} (split {split!r}) is not UTF-8 text; {advice}"


def raising_stream(rows: datasets.IterableDataset,
                    read_error: Callable[[BaseException], DataSourceError]) -> datasets.IterableDataset:
    """`rows`, streamed: a stream is read, and fails, while it is iterated, so an error reading it raises
    `read_error(error)` — the `DataSourceError` loading the same rows map-style raises."""
    return datasets.IterableDataset.from_generator(_stream_rows, features=rows.features,
                                                   gen_kwargs={"rows": rows, "read_error": read_error})


def _stream_rows(rows: datasets.IterableDataset, read_error: Callable[[BaseException], DataSourceError]):
    iterator = iter(rows)
    while True:
        try:
            with reader_errors_unlogged():  # (each row's read only, not the caller's work between rows)
                row = next(iterator)
        except StopIteration:
            return
        except Exception as error:  # caused by the reader's error, unless that only says there are no rows
            raise read_error(error) from (None if _holds_no_rows(error) else error)
        yield row


def _holds_no_rows(error: BaseException) -> bool:
    """Whether `error` is datasets' way of saying the files hold no rows (an empty jsonl file, a csv header or
    `[]` alone; datasets before 5 raise an empty jsonl file's as a DatasetGenerationError from SchemaInferenceError,
    its writer having been given no row)."""
    from datasets.arrow_writer import SchemaInferenceError

    no_data = isinstance(error, ValueError) and "corresponds to no data" in str(error)
    return isinstance(error, StopIteration) or no_data or caused_by(error, SchemaInferenceError)


def _read_error(error: BaseException, files: Sequence[Path], split: str, what: str) -> DataSourceError:
    """The error reading `files` for `split` raised, naming the source and files, with the reader's explanation."""
    if _holds_no_rows(error):
        return DataSourceError(f"{what}: {[str(f) for f in files]} (split {split!r}) has no rows; add rows or drop "
                               f"the split")
    if caused_by(error, UnicodeDecodeError):  # a csv file (pandas decodes it), or a json one streamed
        return DataSourceError(not_utf8(files, split, what))
    where = json_problem(files)
    return DataSourceError(f"{what}: could not load {[str(f) for f in files]} for split {split!r}: "
                           f"{f'{where}; the reader: ' if where else ''}{error_chain(error)}")


def json_problem(files: Sequence[Path]) -> Optional[str]:
    """Where the first of the json `files` that is neither JSON lines (one object a line) nor one JSON document goes
    wrong: its line that is no valid JSON or no object, or the document's error with its line and column; None when
    each reads (the reader failed for another reason), or is no .json/.jsonl file Python can read line by line."""
    for file in files:
        opener = line_opener(file)
        if opener is None or not file.is_file() or _reader_of(file) != "json":
            continue
        with opener(file, "rt", encoding="utf-8-sig") as handle:
            lines = enumerate(handle, 1)
            first = next(((number, line) for number, line in lines if line.strip()), None)
            if first is None or not isinstance(_json_or_none(first[1]), dict):  # (one document, as a .json file)
                handle.seek(0)
                try:
                    json.load(handle)
                except ValueError as error:
                    return f"{str(file)!r} is not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
                continue
            for number, line in (first, *lines):
                problem = _json_line_problem(line) if line.strip() else None
                if problem:
                    return f"{str(file)!r} line {number} {problem}: write one JSON object a line"
    return None


def _reader_of(file: Path) -> Optional[str]:
    """The reader of the data file `file` by its extension (`format_of`), None for an extension of none (a file a
    hub dataset's reader was given under another name)."""
    try:
        return format_of(file)[0]
    except TaskDefinitionError:
        return None


def _json_or_none(text: str) -> Any:
    """The JSON value `text` holds, None where it holds none."""
    try:
        return json.loads(text)
    except ValueError:
        return None


def _json_line_problem(line: str) -> Optional[str]:
    """Why a line of a JSON lines file is no row: not valid JSON (why, at which column), or no object; else None."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as error:
        return f"is not valid JSON ({error.msg} at column {error.colno})"
    kinds = {list: "array", str: "string", bool: "boolean", type(None): "null"}
    return None if isinstance(value, dict) else f"is a JSON {kinds.get(type(value), 'number')}, not an object"


def caused_by(error: BaseException, kind: type) -> bool:
    """Whether `error`, or an error it chains to, is a `kind`."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def error_chain(error: BaseException) -> str:
    """'Type: message' of the error and of the causes it chains to, outermost first (datasets wraps the
    reader's line-level message, e.g. a JSON parse error, in a generic DatasetGenerationError)."""
    parts, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        text = " ".join(str(error).split())
        parts.append(f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__)
        error = error.__cause__ or error.__context__
    return " ← ".join(parts)
