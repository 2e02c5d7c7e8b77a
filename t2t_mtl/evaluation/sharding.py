"""Which rows a data-parallel rank scores, batch by batch.

Rank r of `world_size` takes rows r, r + world_size, ... (as the evaluation runner shards examples), batched in
that order, or longest first when the rows' lengths are given (so that a batch pads its rows to similar lengths). Under
ZeRO-3 every forward pass gathers partitioned parameters with collectives, so every rank must run the same number
of them: `lockstep` pads the shorter shards with batches whose results are discarded.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence


class ShardBatch(NamedTuple):
    """Row indices of one batch; `counted` False: a lockstep padding batch, to be run and its results discarded."""

    rows: List[int]
    counted: bool


def shard_batches(n_rows: int, batch_size: int, rank: int, world_size: int, *, lockstep: bool = False,
                  lengths: Optional[Sequence[int]] = None) -> List[ShardBatch]:
    """This rank's batches of `n_rows` rows: rows rank, rank + world_size, ... in runs of `batch_size` — in that
    order, or with `lengths` (one per row) longest first, rows of equal length in row order.

    The ranks' counted rows are disjoint and cover every row once. With `lockstep`, every rank gets as many
    batches as the largest shard has: a rank with fewer adds batches of row 0 with `counted` False (none when
    there are no rows at all)."""
    if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"shard_batches: need batch_size >= 1 and 0 <= rank < world_size, got batch_size="
                         f"{batch_size}, rank={rank}, world_size={world_size}")
    if lengths is not None and len(lengths) != n_rows:
        raise ValueError(f"shard_batches: {len(lengths)} lengths for {n_rows} rows")
    rows = list(range(rank, n_rows, world_size))
    if lengths is not None:
        rows.sort(key=lambda row: -lengths[row])
    batches = [ShardBatch(rows[start:start + batch_size], True) for start in range(0, len(rows), batch_size)]
    if lockstep:
        largest = -(-n_rows // world_size)
        batches += [ShardBatch([0], False)] * (-(-largest // batch_size) - len(batches))
    return batches
