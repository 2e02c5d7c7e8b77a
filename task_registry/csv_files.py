"""csv/tsv data files as a source reads them: the type of each column, decided from every cell of a split's files
(`csv_features`), and the rows the reader would fill in or rename silently (`check_csv_shape`)."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from .errors import DataSourceError, repeated_items
from .file_formats import line_opener
from .lazy_modules import LazyModule

datasets = LazyModule("datasets")


def csv_features(files: Sequence[Path], kwargs: Mapping[str, Any]) -> Optional[datasets.Features]:
    """The column types of csv/tsv `files`, decided from every cell as pandas decides them from each 10,000-row
    chunk alone (so a streamed split changed type mid-file and a map-style one failed to load), except that a
    number written with a leading zero ("007", a zip code) keeps its column text: bool when each cell is
    True/False, int64 when each is an integer as `str(int)` writes it within int64's range (a longer one, an
    identifier, keeps its column text), float64 when each is a finite number, else text. `None` (the reader's
    own inference) when the files have no columns."""
    import pandas

    columns: dict[str, set] = {}
    for file in files:
        for chunk in pandas.read_csv(file, dtype=str, chunksize=100_000, **kwargs):
            for name in chunk.columns:
                kinds = columns.setdefault(name, {"bool", "int64", "float64"})
                for cell in chunk[name].dropna():
                    kinds.intersection_update(_cell_kinds(cell))
                    if not kinds:
                        break
    if not columns:
        return None
    return datasets.Features({name: datasets.Value(next((k for k in ("bool", "int64", "float64") if k in kinds),
                                                        "string")) for name, kinds in columns.items()})


def check_csv_shape(files: Sequence[Path], kwargs: Mapping[str, Any], split: str, what: str) -> None:
    """DataSourceError naming the file of csv/tsv `files` whose header names a column twice (the reader would rename
    the second `name.1`, and templates read the first), or the file and line of the first row with fewer cells than
    its header (the reader fills the missing ones in as empty text, so the row would load with its last fields blank
    and a number column turned to text). A row with more cells is the reader's own error; blank lines are skipped,
    as the reader skips them."""
    for file in files:
        opener = line_opener(file)
        if opener is None or not file.is_file():  # (a .zst file)
            continue
        delimiter = kwargs.get("delimiter", ",")
        with opener(file, "rt", encoding="utf-8-sig", newline="") as handle:
            rows = csv.reader(handle, delimiter=delimiter, quoting=kwargs.get("quoting", csv.QUOTE_MINIMAL))
            header = next(rows, [])
            repeated = repeated_items(header)
            if repeated:
                raise DataSourceError(f"{what}: {str(file)!r} (split {split!r}): the header names the column(s) "
                                      f"{', '.join(map(repr, repeated))} more than once; give each column its own name")
            for row in rows:
                if len(row) < len(header) and any(cell.strip() for cell in row):
                    raise DataSourceError(
                        f"{what}: {str(file)!r} (split {split!r}), line {rows.line_num} has {len(row)} of the "
                        f"{len(header)} cells the header names ({', '.join(header)}): give every row all its cells, "
                        f"an empty one as nothing between two separators ({_empty_cell_example(delimiter)})")


def _empty_cell_example(delimiter: str) -> str:
    """A row of three cells, the middle one empty, written with `delimiter` (a tab shown as <tab>)."""
    shown = "<tab>" if delimiter == "\t" else delimiter
    return f"`a{shown}{shown}c`"


_BOOLS = {"True", "False", "true", "false", "TRUE", "FALSE"}
_INT64_MIN, _INT64_MAX = -2 ** 63, 2 ** 63 - 1


def _cell_kinds(cell: str) -> set:
    """The types one csv cell can be read as (see `csv_features`)."""
    if cell in _BOOLS:
        return {"bool"}
    digits = cell.lstrip("+-")
    if len(digits) > 1 and digits[0] == "0" and digits[1].isdigit():  # "007": an identifier, not the number 7
        return set()
    if "_" in cell or cell != cell.strip():  # Python's float() reads "1_000" and " 1"; a csv reader does not
        return set()
    try:
        value = float(cell)
    except ValueError:
        return set()
    if not math.isfinite(value):
        return set()
    try:
        integer = int(cell)
    except ValueError:
        return {"float64"}
    if str(integer) != cell:
        return {"float64"}
    return {"int64", "float64"} if _INT64_MIN <= integer <= _INT64_MAX else set()  # (an identifier, not a number)
