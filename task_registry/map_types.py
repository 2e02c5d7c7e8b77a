"""The type a map's values give a field it writes back: `datasets` writes a loaded dataset's mapped values into the
existing column's type wherever it converts them (an int into a float64 column as 1.0, a whole float into an int64
column, a bool into a number column, a number into a bool column as True, a bool into a large_string column as
"false" — true in a template's `if` —, a text into a class-label column as its label's number), so
`{label: "label | int"}` on a float64 column left it float64. `Map` writes each field that is a column of its input
under a name of its own (`written_apart`), which datasets types by the values written alone, as it types a new field;
`written_back` puts each in place of its column. Streamed rows keep their values as written."""
from __future__ import annotations

from typing import Any, Mapping

from .lazy_modules import LazyModule

datasets = LazyModule("datasets")

WRITTEN_PREFIX = "__t2t_map_written__"


def written_apart(fields: Mapping[str, Any], columns: frozenset[str]) -> dict[str, Any]:
    """`fields` (a map's result on one row) with each of them that is one of the input's `columns` renamed apart."""
    return {WRITTEN_PREFIX + name if name in columns else name: value for name, value in fields.items()}


def written_back(dataset: "datasets.Dataset") -> "datasets.Dataset":
    """`dataset` (the result of a map whose fields were `written_apart`) with each written field in place of its
    column, typed by its values (one written null on every row keeps its column's type), the columns in their
    order."""
    written = [name for name in dataset.column_names if name.startswith(WRITTEN_PREFIX)]
    if not written:
        return dataset
    order = [name for name in dataset.column_names if name not in written]
    fields = [name[len(WRITTEN_PREFIX):] for name in written]
    nulls = {field: dataset.features[field] for field, name in zip(fields, written)
             if dataset.features[name] == datasets.Value("null")}
    back = dataset.remove_columns(fields).rename_columns(dict(zip(written, fields))).select_columns(order)
    return back.cast(datasets.Features({**back.features, **nulls})) if nulls else back
