"""The type a map's values give a field it writes back: `datasets` writes a loaded dataset's mapped values into the
existing column's type wherever pyarrow converts them (an int into a float64 column as 1.0, a whole float into an
int64 column, a bool into a number column, a number into a bool column as True), so `{label: "label | int"}` on a
float64 column left it float64. `Map` writes, beside each such field, the kind of the value it wrote (`with_kinds`);
`retyped` casts every field whose written values share a kind other than its column's into theirs, and drops the
kinds. Kept in the map's cached result, the kinds are read without running the map. Streamed rows keep their values
as written."""
from __future__ import annotations

import numbers
from typing import Any, Mapping

from .errors import TaskDefinitionError
from .lazy_modules import LazyModule

datasets = LazyModule("datasets")

KIND_PREFIX = "__t2t_map_kind__"
_DTYPES = {"bool": "bool", "int": "int64", "float": "float64"}


def value_kind(value: Any) -> str:
    """`bool`, `int` or `float` for a Python scalar (or numpy number) of that kind; `other` for anything else."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, numbers.Integral):
        return "int"
    return "float" if isinstance(value, numbers.Real) else "other"


def scalar_columns(features: Mapping[str, Any]) -> frozenset[str]:
    """The columns of `features` holding bools or numbers, whose type a written value of another kind takes."""
    return frozenset(name for name, feature in features.items()
                     if isinstance(feature, datasets.Value) and _column_kind(feature.dtype) != "other")


def with_kinds(fields: Mapping[str, Any], scalar: frozenset[str]) -> dict[str, Any]:
    """`fields` (a map's result on one row) with, for each of them in `scalar`, the kind of its value."""
    kinds = {KIND_PREFIX + name: value_kind(value) for name, value in fields.items() if name in scalar}
    return {**fields, **kinds}


def retyped(dataset: "datasets.Dataset", step: str) -> "datasets.Dataset":
    """`dataset` (the result of the map `step`, with kinds) with each written field typed by its values' kind: bools,
    ints (`int64`), or floats where ints and floats were written; without the kinds. A field of a bool column that
    numbers were written to is a `TaskDefinitionError` (pyarrow stored them as True and False)."""
    kind_columns = [name for name in dataset.column_names if name.startswith(KIND_PREFIX)]
    for kind_column in kind_columns:
        field = kind_column[len(KIND_PREFIX):]
        column = _column_kind(dataset.features[field].dtype)
        kinds = set(dataset.unique(kind_column)) - {"other"}
        kind = "float" if "float" in kinds else "int" if "int" in kinds else "bool" if kinds else column
        if kind == column:
            continue
        if column == "bool":
            raise TaskDefinitionError(f"{step}: field {field!r} is a column of bools, into which the {kind}s the map "
                                      f"writes would be read as True and False; write them to a field of their own "
                                      f"(`{field}_value`)")
        dataset = dataset.cast_column(field, datasets.Value(_DTYPES[kind]))
    return dataset.remove_columns(kind_columns) if kind_columns else dataset


def _column_kind(dtype: str) -> str:
    if dtype == "bool":
        return "bool"
    if dtype.startswith(("int", "uint")):
        return "int"
    return "float" if dtype.startswith("float") else "other"
