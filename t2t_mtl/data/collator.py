"""Collating tokenized rows into padded seq2seq tensors."""
from __future__ import annotations

import itertools
import numbers
from typing import Dict, List, Literal, Sequence, Tuple

import numpy as np
import torch

from t2t_mtl.data.streams import DataPipelineError

LABEL_PAD = -100
PADDINGS = ("longest", "max_length")


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


class Seq2SeqCollator:
    """Pads input ids with `pad_id` and labels with -100.

    `padding="longest"` pads each batch to its longest row (rounded up to `pad_to_multiple_of`);
    `padding="max_length"` pads every batch to the configured maxima (the naive baseline).
    """

    def __init__(self, pad_id: int, *, max_input_length: int, max_target_length: int,
                 padding: Literal["longest", "max_length"] = "longest", pad_to_multiple_of: int = 8):
        if padding not in PADDINGS:  # another word would pad as "longest" without a word said
            raise DataPipelineError(f"Seq2SeqCollator: padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
        for name, value in (("max_input_length", max_input_length), ("max_target_length", max_target_length),
                            ("pad_to_multiple_of", pad_to_multiple_of)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:  # (numpy's too)
                raise DataPipelineError(f"Seq2SeqCollator: {name} must be an integer >= 1, got {value!r}")
        self.pad_id = pad_id
        self.max_input_length = max_input_length
        self.max_target_length = max_target_length
        self.padding = padding
        self.pad_to_multiple_of = pad_to_multiple_of

    def _width(self, longest: int, maximum: int) -> int:
        if self.padding == "max_length":
            return maximum
        return min(_round_up(longest, self.pad_to_multiple_of), max(maximum, longest))

    def __call__(self, input_ids: Sequence[List[int]], labels: Sequence[List[int]],
                 task_ids: Sequence[int]) -> Dict[str, torch.Tensor]:
        """A batch dict: input_ids, attention_mask, labels (LongTensor [B, L]) and task_ids ([B]); the three
        sequences hold one entry per row, B >= 1."""
        n = len(input_ids)
        if n == 0 or len(labels) != n or len(task_ids) != n:  # zip would pair the rows it has and pad the rest
            raise DataPipelineError(f"Seq2SeqCollator: a batch needs as many (>= 1) labels and task ids as input rows, "
                                    f"got {n} input rows, {len(labels)} labels and {len(task_ids)} task ids")
        in_w = self._width(max(len(x) for x in input_ids), self.max_input_length)
        tgt_w = self._width(max(len(y) for y in labels), self.max_target_length)
        ids, real = pad_rows(input_ids, in_w, self.pad_id)
        lab, _ = pad_rows(labels, tgt_w, LABEL_PAD)
        return {"input_ids": ids, "attention_mask": real.long(), "labels": lab,
                "task_ids": torch.as_tensor(list(task_ids), dtype=torch.long)}


def pad_rows(rows: Sequence[Sequence[int]], width: int, fill: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(`rows` left-aligned in a [len(rows), width] LongTensor of `fill`, the bool mask of their positions), built
    from all the rows' ids at once rather than one tensor per row (that took most of a small batch's collation).
    No row may be longer than `width`."""
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)
    return laid_out(concatenated(rows, int(lengths.sum())), lengths, width, fill)


def concatenated(rows: Sequence[Sequence[int]], total: int) -> torch.Tensor:
    """The ids of `rows` (`total` of them) one after the other, as a LongTensor read through numpy (torch.tensor of
    a Python list of ints costs about four times as much)."""
    return torch.from_numpy(np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=total))


def laid_out(values: torch.Tensor, lengths: torch.Tensor, width: int, fill: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(`values` cut into rows of `lengths` (LongTensor), each left-aligned in a [len(lengths), width] LongTensor of
    `fill`, the bool mask of their positions). No length may exceed `width`."""
    real = torch.arange(width) < lengths.unsqueeze(1)
    out = torch.full((len(lengths), width), fill, dtype=torch.long)
    out[real] = values  # row-major: in row order
    return out, real
