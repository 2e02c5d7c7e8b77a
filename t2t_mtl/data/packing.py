"""Sequence packing (`data.batching: pack`): several examples of one task share a row, kept apart by segment ids.

A packed micro-batch has at most `rows` rows, each holding up to `input_capacity` input and
`target_capacity` target tokens. Examples are placed first-fit in the order given: each goes into the
first row that is empty or already holds its task and has room for both its input and its target. A row
therefore holds one task (task routing, task tokens and per-task losses see one task per row), and
replaying `first_fit` on the examples it placed, in the same order, gives the same rows — which is how a
chunk of (task, row index) pairs is turned back into its packed batch after a checkpoint.

Segments are numbered 1, 2, ... within a row in placement order; 0 marks padding. The model keeps them
apart with block-diagonal attention masks (`t2t_mtl.model.packing`); T5's relative position bias depends
only on the distance between two tokens of a segment, so a packed example sees exactly what it would alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Hashable, List, Optional, Sequence, Tuple

import torch

from t2t_mtl.data.collator import LABEL_PAD, concatenated, laid_out

PackItem = Tuple[int, int, int]  # (task id, input length, target length)


@dataclass
class _Row:
    task: Optional[int] = None
    input_used: int = 0
    target_used: int = 0
    members: List[int] = field(default_factory=list)  # item positions, in placement order


class FirstFit:
    """Rows being filled first-fit; `place(item)` returns the row index or None when no row has room left for it (an
    item larger than an empty row raises ValueError: it could never be placed)."""

    def __init__(self, rows: int, input_capacity: int, target_capacity: int) -> None:
        if rows < 1 or input_capacity < 1 or target_capacity < 1:
            raise ValueError(f"packing needs rows, input_capacity and target_capacity >= 1, got {rows}, "
                             f"{input_capacity}, {target_capacity}")
        self.input_capacity = input_capacity
        self.target_capacity = target_capacity
        self.rows = [_Row() for _ in range(rows)]
        self.placed = 0
        self._opened = 0  # rows holding a task: the first ones (an item opens the first empty row)
        self._task_rows: Dict[int, List[int]] = {}  # the rows holding each task, in order
        # at least the most input and the most target room left in each task's rows (rooms only shrink: exact again
        # after a scan that found none with room)
        self._room: Dict[int, Tuple[int, int]] = {}

    def fits_alone(self, item: PackItem) -> bool:
        return item[1] <= self.input_capacity and item[2] <= self.target_capacity

    def place(self, item: PackItem) -> Optional[int]:
        task, n_in, n_tgt = item
        if not self.fits_alone(item):
            raise ValueError(f"an example of {n_in} input / {n_tgt} target tokens exceeds the packed row's "
                             f"{self.input_capacity} / {self.target_capacity} (data.max_input_length / "
                             f"data.max_target_length)")
        # the first row of the task with room, else the first empty row: empty rows come after every row holding a
        # task, so only the task's own rows are looked at (not every row's task and room), and none of them for an
        # item larger than the room they were last seen to have (a packed draw tries every waiting item that way)
        room_in, room_tgt = self._room.get(task, (-1, -1))  # (-1: a task without rows has none, for an empty item too)
        if n_in <= room_in and n_tgt <= room_tgt:
            for r in self._task_rows[task]:
                row = self.rows[r]
                if row.input_used + n_in <= self.input_capacity and row.target_used + n_tgt <= self.target_capacity:
                    return self._put(r, n_in, n_tgt)
            rows = [self.rows[r] for r in self._task_rows[task]]
            self._room[task] = (self.input_capacity - min(row.input_used for row in rows),
                                self.target_capacity - min(row.target_used for row in rows))
        if self._opened == len(self.rows):
            return None
        r, self._opened = self._opened, self._opened + 1
        self.rows[r].task = task
        self._task_rows.setdefault(task, []).append(r)
        self._room[task] = (self.input_capacity, self.target_capacity)
        return self._put(r, n_in, n_tgt)

    def place_all(self, items: Sequence[PackItem]) -> Tuple[List[int], List[int]]:
        """`place` each of `items` in order: (positions placed, positions that found no room). Once every row holds a
        task, an item that fits alone but not the room its task's rows were last seen to have (none: a task without
        rows) is passed over here, as `place` would refuse it, without a call (a packed draw tries every waiting item
        against each micro-batch it cuts)."""
        placed, skipped = [], []
        n_rows, cap_in, cap_tgt, room = len(self.rows), self.input_capacity, self.target_capacity, self._room
        for k, item in enumerate(items):
            if self._opened == n_rows and item[1] <= cap_in and item[2] <= cap_tgt:
                room_in, room_tgt = room.get(item[0], (-1, -1))
                if item[1] > room_in or item[2] > room_tgt:
                    skipped.append(k)
                    continue
            (placed if self.place(item) is not None else skipped).append(k)
        return placed, skipped

    def _put(self, r: int, n_in: int, n_tgt: int) -> int:
        row = self.rows[r]
        row.input_used += n_in
        row.target_used += n_tgt
        row.members.append(self.placed)
        self.placed += 1
        return r

    def used_rows(self) -> List[List[int]]:
        """The item positions of every non-empty row, rows in order."""
        return [row.members for row in self.rows if row.members]


def first_fit(items: Sequence[PackItem], rows: int, input_capacity: int, target_capacity: int
              ) -> Tuple[List[int], List[int]]:
    """Place `items` in order into `rows` rows: (positions placed, positions that found no room)."""
    return FirstFit(rows, input_capacity, target_capacity).place_all(items)


def pack_chunks(items: Sequence[PackItem], rows: int, input_capacity: int, target_capacity: int,
                keys: Optional[Sequence[Hashable]] = None) -> Tuple[List[List[int]], List[int]]:
    """Cut `items` into full packed micro-batches: (chunks of item positions in placement order, leftover).

    Each chunk is the first-fit of the remaining items into `rows` rows and is complete once some remaining
    item found no room. The last items, which all still fit, are the leftover: they wait for more examples
    rather than fill a half-empty micro-batch. With `keys` (e.g. the (task, row) of each item), an item whose
    key the chunk already holds is tried only after every other remaining item, so one example is not packed
    several times into a micro-batch while other examples could fill it."""
    remaining = list(range(len(items)))
    repeats = keys is not None and len(set(keys[k] for k in remaining)) < len(remaining)  # (else the order is kept)
    chunks: List[List[int]] = []
    while remaining:
        if repeats:
            remaining = _repeats_last(remaining, keys)
        placed, skipped = first_fit([items[k] for k in remaining], rows, input_capacity, target_capacity)
        if not skipped:
            return chunks, remaining
        chunks.append([remaining[k] for k in placed])
        remaining = [remaining[k] for k in skipped]
    return chunks, []


def _repeats_last(positions: List[int], keys: Sequence[Hashable]) -> List[int]:
    """`positions` with the first item of each key first, then the repeats, each group in its order."""
    seen, first, repeats = set(), [], []
    for k in positions:
        (repeats if keys[k] in seen else first).append(k)
        seen.add(keys[k])
    return first + repeats


def pack_batch(inputs: Sequence[List[int]], labels: Sequence[List[int]], task_ids: Sequence[int], *, rows: int,
               input_capacity: int, target_capacity: int, pad_id: int,
               prefixes: Optional[Dict[int, List[int]]] = None, width_multiple: int = 8) -> Dict[str, torch.Tensor]:
    """Pack examples (first-fit, in order) into a batch dict.

    Keys: input_ids, attention_mask, labels (LongTensor [R, L], R <= rows: the rows used), encoder_segment_ids
    and decoder_segment_ids ([R, L]: 1, 2, ... per example in its row, 0 = padding) and task_ids ([R], the
    task of each row). `prefixes` maps a task id to tokens put in front of each of its examples' inputs
    (TE⊕ENC task tokens; counted against `input_capacity`). Widths are the longest row rounded up to
    `width_multiple`, at most the capacity. Raises ValueError when the examples need more than `rows` rows.
    """
    prefixes = {int(t): list(p) for t, p in (prefixes or {}).items() if p}
    seqs = [prefixes[int(t)] + list(x) if int(t) in prefixes else x for x, t in zip(inputs, task_ids)]
    packer = FirstFit(rows, input_capacity, target_capacity)
    for k, (x, y, t) in enumerate(zip(seqs, labels, task_ids)):
        if packer.place((int(t), len(x), len(y))) is None:
            raise ValueError(f"{len(seqs)} examples do not fit {rows} packed rows (example {k} found no room): "
                             "a chunk must come from pack_chunks with the same rows and capacities")
    members = packer.used_rows()
    order = [k for m in members for k in m]  # the examples in the order the rows lay them out
    per_row = torch.tensor([len(m) for m in members], dtype=torch.long)
    ids, real, enc_seg = _packed_rows([seqs[k] for k in order], per_row, input_capacity, width_multiple, pad_id)
    lab, _, dec_seg = _packed_rows([labels[k] for k in order], per_row, target_capacity, width_multiple, LABEL_PAD)
    return {"input_ids": ids, "attention_mask": real.long(), "labels": lab,
            "encoder_segment_ids": enc_seg, "decoder_segment_ids": dec_seg,
            "task_ids": torch.as_tensor([int(task_ids[m[0]]) for m in members], dtype=torch.long)}


def _packed_rows(sequences: Sequence[Sequence[int]], per_row: torch.Tensor, capacity: int, multiple: int, fill: int
                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(the packed rows: each row's `sequences` one after the other, then `fill`; the bool mask of their positions;
    each position's segment id, 1, 2, ... in the row, 0 = padding) of `sequences` in layout order, `per_row` of them
    to each row, `_width` wide. Built from all the ids at once: no Python step per token."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    rows = torch.repeat_interleave(torch.arange(len(per_row)), per_row)  # each sequence's row
    row_lengths = torch.zeros(len(per_row), dtype=torch.long).index_add_(0, rows, lengths)
    width = _width(int(row_lengths.max()), capacity, multiple)
    packed, real = laid_out(concatenated(sequences, int(lengths.sum())), row_lengths, width, fill)
    first = torch.cumsum(per_row, 0) - per_row  # each row's first sequence
    numbers = torch.arange(len(sequences)) - first[rows] + 1
    segments, _ = laid_out(torch.repeat_interleave(numbers, lengths), row_lengths, width, 0)
    return packed, real, segments


def _width(longest: int, capacity: int, multiple: int) -> int:
    return min(-(-longest // multiple) * multiple, capacity)


class PackedCollator:
    """`Seq2SeqCollator`'s interface for packed batches: `__call__(inputs, labels, task_ids)` packs the examples
    into at most `rows` rows of `max_input_length` (+ the task-token prefix) input and `max_target_length`
    target tokens; `item(task_id, input_length, target_length)` is an example's size as the packer sees it."""

    def __init__(self, pad_id: int, *, rows: int, max_input_length: int, max_target_length: int,
                 prefixes: Optional[Dict[int, List[int]]] = None, pad_to_multiple_of: int = 8) -> None:
        self.pad_id = pad_id
        self.rows = rows
        self.prefixes = {int(t): list(p) for t, p in (prefixes or {}).items()}
        prefix = max((len(p) for p in self.prefixes.values()), default=0)
        self.input_capacity = max_input_length + prefix
        self.target_capacity = max_target_length
        self.pad_to_multiple_of = pad_to_multiple_of

    def item(self, task_id: int, input_length: int, target_length: int) -> PackItem:
        return (int(task_id), int(input_length) + len(self.prefixes.get(int(task_id), ())), int(target_length))

    def __call__(self, input_ids: Sequence[List[int]], labels: Sequence[List[int]],
                 task_ids: Sequence[int]) -> Dict[str, torch.Tensor]:
        return pack_batch(input_ids, labels, task_ids, rows=self.rows, input_capacity=self.input_capacity,
                          target_capacity=self.target_capacity, pad_id=self.pad_id, prefixes=self.prefixes,
                          width_multiple=self.pad_to_multiple_of)
