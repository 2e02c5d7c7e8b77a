"""Reading a few rows of a tokenized dataset's id columns straight from its Arrow buffers.

A micro-batch takes a handful of rows of each task it holds (a mixed micro-batch of the quickstart: up to 12 tasks),
and `datasets.Dataset.__getitem__` of a list of indices costs ~0.2-1 ms a call (its query, a `take` and the
formatting of a table into Python lists), however few the rows. `IdRows` reads each column's offsets and values as
numpy views of the Arrow buffers (memory-mapped where the dataset is: no copy, nothing loaded) and slices the rows
out of them: the same Python lists of ints in tens of microseconds.
"""
from __future__ import annotations

import bisect
import itertools
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np


class IdRows:
    """The rows of `dataset`'s list-of-integer `columns` at given indices, as Python lists of ints, equal to
    `dataset[indices][column]`. A dataset read through an indices mapping (`select` / `shuffle` without
    `flatten_indices`), one with a format set (`set_format`), a column that is not a list of non-null integers or a
    layout other than the one `_column_buffers` knows is read through `datasets` itself."""

    def __init__(self, dataset: Any, columns: Sequence[str]):
        self.dataset = dataset
        self.columns = list(columns)
        self._chunks: Optional[Dict[str, List[Tuple[np.ndarray, np.ndarray]]]] = _column_buffers(dataset, columns)
        if self._chunks is not None:  # each column's chunks' first rows (a table's columns may be chunked apart)
            self._starts = {name: list(itertools.accumulate([0] + [len(offsets) - 1 for offsets, _ in parts]))
                            for name, parts in self._chunks.items()}

    def __call__(self, indices: Sequence[int]) -> Dict[str, List[List[int]]]:
        """{column: [row ids for each index, in the given order]} (indices as `dataset[...]` takes them)."""
        if self._chunks is None:
            batch = self.dataset[[int(i) for i in indices]]
            return {name: batch[name] for name in self.columns}
        n = len(self.dataset)
        positions = []  # a few indices a call, so plain Python (numpy's calls cost more)
        for index in indices:
            i = int(index)
            if not -n <= i < n:
                raise IndexError(f"row index {i} out of range for a dataset of {n} rows")
            positions.append(i + n if i < 0 else i)
        out = {}
        for name, parts in self._chunks.items():
            starts, rows = self._starts[name], []
            for i in positions:
                c = bisect.bisect_right(starts, i) - 1  # the chunk holding row i, and its row there
                offsets, values = parts[c]
                rows.append(values[offsets[i - starts[c]]:offsets[i - starts[c] + 1]].tolist())
            out[name] = rows
        return out


def _column_buffers(dataset: Any, columns: Sequence[str]) -> Optional[Dict[str, List[Tuple[np.ndarray, np.ndarray]]]]:
    """Each column's (offsets, values) numpy views per Arrow chunk, or None where rows must go through `datasets`:
    an indices mapping (datasets' private `_indices`: the table's row order is not the dataset's), a format (rows
    not given as lists), or a column that is not a list of integers without nulls. A dataset laid out otherwise
    than datasets 2.18-5 lay it out (no `_indices` attribute, no `data.table` Arrow table of `len(dataset)` rows)
    also goes through `datasets`: its table's row order cannot be told to be the dataset's."""
    import pyarrow as pa

    if not hasattr(dataset, "_indices") or dataset._indices is not None or dataset.format["type"] is not None:
        return None
    table = getattr(getattr(dataset, "data", None), "table", None)
    if not isinstance(table, pa.Table) or table.num_rows != len(dataset):
        return None
    out: Dict[str, List[Tuple[np.ndarray, np.ndarray]]] = {}
    for name in columns:
        column = table.column(name)
        kind = column.type
        if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) or not pa.types.is_integer(kind.value_type):
            return None
        parts = []
        for chunk in column.chunks:
            if chunk.null_count or chunk.values.null_count:
                return None
            # offsets: of the chunk's own rows (a sliced chunk's too); values: the whole child array they index
            parts.append((chunk.offsets.to_numpy(), chunk.values.to_numpy()))
        out[name] = parts
    return out
