"""Collating tokenized rows into padded seq2seq tensors."""
from __future__ import annotations

import numbers
from typing import Dict, List, Literal, Sequence

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
        ids = torch.full((n, in_w), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, in_w), dtype=torch.long)
        lab = torch.full((n, tgt_w), LABEL_PAD, dtype=torch.long)
        for i, (x, y) in enumerate(zip(input_ids, labels)):
            ids[i, : len(x)] = torch.as_tensor(x, dtype=torch.long)
            mask[i, : len(x)] = 1
            lab[i, : len(y)] = torch.as_tensor(y, dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "labels": lab,
                "task_ids": torch.as_tensor(list(task_ids), dtype=torch.long)}
