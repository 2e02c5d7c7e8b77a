"""Per-example and per-task training losses from one forward's logits, for padded and packed batches.

An example is a row of a padded batch, or a segment (`decoder_segment_ids` 1, 2, ...) of a row of a packed
batch; its loss is the mean cross-entropy over its target tokens either way, so a packed batch gives each
example exactly the loss it has unpacked. A task's loss is the mean over its examples in the batch
(`reduction="example"`), or the mean over all their target tokens (`"token"`: longer targets weigh more).
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F


LOSS_REDUCTIONS = ("example", "token")


def per_example_means(token_values: torch.Tensor, labels: torch.Tensor, row_task_ids: torch.Tensor,
                      decoder_segment_ids: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(mean of `token_values` [B, L] over each example's target tokens [N], each example's task id [N]).

    Without segment ids an example is a row (N = B); with them, every (row, segment > 0) present is one, in
    row-major order. Differentiable in `token_values`."""
    sums, counts, tasks = per_example_sums(token_values, labels, row_task_ids, decoder_segment_ids)
    return sums / counts.clamp(min=1.0), tasks


def per_example_sums(token_values: torch.Tensor, labels: torch.Tensor, row_task_ids: torch.Tensor,
                     decoder_segment_ids: Optional[torch.Tensor] = None
                     ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sum of `token_values` over each example's target tokens [N], its number of target tokens [N], its
    task id [N]), examples ordered as in `per_example_means`."""
    mask = (labels != -100).to(token_values.dtype)
    if decoder_segment_ids is None:
        return (token_values * mask).sum(1), mask.sum(1), row_task_ids
    rows, length = labels.shape
    slots = int(decoder_segment_ids.max()) + 1 if decoder_segment_ids.numel() else 1
    key = (torch.arange(rows, device=labels.device).unsqueeze(1) * slots + decoder_segment_ids).reshape(-1)
    sums = token_values.new_zeros(rows * slots).index_add(0, key, (token_values * mask).reshape(-1))
    counts = mask.new_zeros(rows * slots).index_add(0, key, mask.reshape(-1))
    present = (counts > 0) & (torch.arange(rows * slots, device=labels.device) % slots != 0)
    index = present.nonzero().squeeze(1)
    example_tasks = row_task_ids.to(index.device)[torch.div(index, slots, rounding_mode="floor")]
    return sums.index_select(0, index), counts.index_select(0, index), example_tasks


def example_task_ids(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The task id of every example of a (padded or packed) CPU batch, as `per_example_means` orders them."""
    segments = batch.get("decoder_segment_ids")
    if segments is None:
        return batch["task_ids"]
    per_row = segments.max(1).values if segments.numel() else torch.zeros(0, dtype=torch.long)
    return torch.repeat_interleave(batch["task_ids"], per_row)


def per_task_losses(logits: torch.Tensor, labels: torch.Tensor, task_ids: torch.Tensor, task_names: Sequence[str],
                    decoder_segment_ids: Optional[torch.Tensor] = None, reduction: str = "example"
                    ) -> Dict[str, torch.Tensor]:
    """Cross-entropy (fp32) per task present: the mean over its examples of their token-mean (`"example"`), or
    the mean over all its target tokens (`"token"`).

    `task_ids`: one per row ([B]); `decoder_segment_ids` ([B, L]) for a packed batch. Row task ids given on the host
    (the collated batch's, as training passes them) tell a padded batch's tasks without waiting for the device;
    otherwise the examples' task ids are read from it once."""
    if reduction not in LOSS_REDUCTIONS:
        raise ValueError(f"loss reduction must be one of {LOSS_REDUCTIONS}, got {reduction!r}")
    token_ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100,
                               reduction="none").view(labels.shape)
    example_rows = task_ids.to(labels.device, non_blocking=True)  # (a blocking copy would wait for the device)
    sums, counts, example_tasks = per_example_sums(token_ce, labels, example_rows, decoder_segment_ids)
    on_host = decoder_segment_ids is None and task_ids.device.type == "cpu"
    present = torch.bincount(task_ids if on_host else example_tasks.cpu(), minlength=len(task_names)).tolist()
    if reduction == "example":  # the mean of the task's examples' token-means
        totals = sums / counts.clamp(min=1.0)
        sizes = sums.new_zeros(len(task_names)).index_add(0, example_tasks, torch.ones_like(sums))
    else:  # the mean over all the task's target tokens
        totals, sizes = sums, counts.new_zeros(len(task_names)).index_add(0, example_tasks, counts).clamp(min=1.0)
    means = totals.new_zeros(len(task_names)).index_add(0, example_tasks, totals) / sizes
    return {task_names[tid]: means[tid] for tid, examples in enumerate(present) if examples}


@torch.no_grad()
def add_task_entropies(entropy_acc: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
                       task_ids: torch.Tensor, decoder_segment_ids: Optional[torch.Tensor] = None) -> None:
    """Add each example's mean per-token entropy / log V (target tokens only) to `entropy_acc[task id]` and
    1 to `entropy_acc[T + task id]`. Nothing is read from the device when `entropy_acc` is on the logits' device
    (training keeps it there): the host task ids are copied without waiting, the counts added there."""
    from t2t_mtl.sampling import token_entropy

    per_example, example_tasks = per_example_means(token_entropy(logits.detach()), labels,
                                                   task_ids.to(labels.device, non_blocking=True), decoder_segment_ids)
    T = entropy_acc.numel() // 2
    example_tasks = example_tasks.to(entropy_acc.device)
    per_example = (per_example / math.log(logits.shape[-1])).double().to(entropy_acc.device)
    entropy_acc[:T].index_add_(0, example_tasks, per_example)
    entropy_acc[T:].index_add_(0, example_tasks, torch.ones_like(per_example))
