"""IdRows (`t2t_mtl.data.arrow_rows`): the rows a micro-batch takes of a tokenized dataset, read from its Arrow
buffers, equal `datasets.Dataset.__getitem__`'s for every layout a dataset can have (in memory, a cache file of
several record batches, a contiguous selection, an indices mapping, a format, nulls)."""
from __future__ import annotations

import random

import datasets
import pytest

from t2t_mtl.data.arrow_rows import IdRows

COLUMNS = ["input_ids", "labels"]
#: the layouts read from the Arrow buffers; the others go through datasets
FROM_BUFFERS = {"in memory", "a file of record batches", "a contiguous selection", "its columns"}


def _rows(rng: random.Random, n: int) -> dict:
    return {"input_ids": [[rng.randrange(32000) for _ in range(rng.randint(0, 9))] for _ in range(n)],
            "labels": [[rng.randrange(-100, 500) for _ in range(rng.randint(1, 5))] for _ in range(n)],
            "text": [f"row {k}" for k in range(n)]}


def _layouts(tmp_path):
    rng = random.Random(0)
    memory = datasets.Dataset.from_dict(_rows(rng, 40))
    features = datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int32")),
                                  "labels": datasets.Sequence(datasets.Value("int64")),
                                  "text": datasets.Value("string")})
    on_disk = datasets.Dataset.from_dict(_rows(rng, 57), features=features).map(
        lambda row: row, writer_batch_size=8, cache_file_name=str(tmp_path / "rows.arrow"))  # 8 record batches
    assert on_disk.data.table.column("input_ids").num_chunks > 1
    return {"in memory": memory, "a file of record batches": on_disk,
            "a contiguous selection": on_disk.select(range(5, 50)),
            "its columns": on_disk.select_columns(COLUMNS),
            "an indices mapping": on_disk.shuffle(seed=1),
            "a format": memory.with_format("numpy"),
            "a null row": datasets.Dataset.from_dict({"input_ids": [[1, 2], None, [3]], "labels": [[1], [2], None]})}


def test_rows_equal_datasets_getitem_in_every_layout(tmp_path):
    rng = random.Random(1)
    for layout, dataset in _layouts(tmp_path).items():
        rows = IdRows(dataset, COLUMNS)
        assert (rows._chunks is not None) == (layout in FROM_BUFFERS), layout
        n = len(dataset)
        for size in (1, 2, 5, n):
            indices = [rng.randrange(n) for _ in range(size)]
            expected = dataset[indices]
            got = rows(indices)
            assert list(got) == COLUMNS, layout
            for column in COLUMNS:
                assert repr(got[column]) == repr(expected[column]), (layout, indices)  # (types too: ints, lists)


def test_columns_chunked_apart_are_each_read_by_their_own_chunks():
    """A table's columns need not share chunk boundaries (an Arrow table built from chunked arrays; datasets keeps
    them): each column's rows are found in its own chunks."""
    import pyarrow as pa
    from datasets.table import InMemoryTable

    def chunked(*parts):
        return pa.chunked_array([pa.array(part, pa.list_(pa.int32())) for part in parts])

    inputs = chunked([[1], [2, 2]], [[3], [4, 4, 4], [5]])
    labels = chunked([[10], [20], [30]], [[40], [50]])
    table = pa.Table.from_arrays([inputs, labels], names=COLUMNS)
    dataset = datasets.Dataset(InMemoryTable(table))
    rows = IdRows(dataset, COLUMNS)
    assert rows._chunks is not None
    indices = [0, 1, 2, 3, 4, -1, 2]
    expected = dataset[indices]
    assert rows(indices) == {column: expected[column] for column in COLUMNS}


def test_repeated_negative_and_numpy_indices_are_read_as_datasets_reads_them(tmp_path):
    import numpy as np

    dataset = _layouts(tmp_path)["a file of record batches"]
    rows = IdRows(dataset, COLUMNS)
    indices = [3, 3, -1, 8, 7, 56, 0]
    assert rows(indices) == {c: dataset[indices][c] for c in COLUMNS}
    assert rows(np.array([9, 16, 9])) == {c: dataset[[9, 16, 9]][c] for c in COLUMNS}
    for bad in ([57], [-58]):
        with pytest.raises(IndexError):
            dataset[bad]
        with pytest.raises(IndexError, match="out of range for a dataset of 57 rows"):
            rows(bad)


class _OtherLayout:
    """A dataset as another datasets version might lay it out: the same rows through `__getitem__`, its table as
    `data.table`, but its indices mapping under another name than `_indices` (or no table of its rows)."""

    def __init__(self, dataset: datasets.Dataset, table=None):
        self._dataset = dataset
        self._row_order = dataset._indices
        self.data = dataset.data if table is None else type("Data", (), {"table": table})()
        self.format = dataset.format

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, key):
        return self._dataset[key]


def test_a_dataset_laid_out_otherwise_is_read_through_datasets(tmp_path):
    """IdRows reads datasets' private layout (`_indices`, `data.table`); a dataset without it is not read from a
    table whose row order may not be its own (here a shuffle's mapping kept under another name), but through its
    `__getitem__`, whose rows are right in any layout."""
    shuffled = _layouts(tmp_path)["an indices mapping"]
    indices = [0, 1, 2, 30, 56]
    for dataset in (_OtherLayout(shuffled), _OtherLayout(shuffled.flatten_indices(), table=shuffled.data.table[:3]),
                    _OtherLayout(shuffled.flatten_indices(), table="not an Arrow table")):
        rows = IdRows(dataset, COLUMNS)
        assert rows._chunks is None
        assert rows(indices) == {c: shuffled[indices][c] for c in COLUMNS}
