"""Task-conditioned layers and the T5 that feeds them task ids.

Some layers compute differently per task: task-routed MoE FFNs (`t2t_mtl.model.moe`) and per-task LoRA
adapters (`t2t_mtl.model.lora`). They are `TaskConditioned`: before each forward `set_task_ids(model, ids)`
gives every one of them the batch's task ids (LongTensor [B], or [B'] with B a multiple of B' as beam search
expands a batch; `UNSEEN_TASK_ID` for a task the model was not trained on). `TaskConditionedT5` takes
`task_ids=` in `forward` and `generate` and sets them; `routing_task_id(model, task)` tells evaluation and
prediction which id to pass for a task name.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, List, Optional, Tuple

import torch
from torch import nn
from transformers import T5ForConditionalGeneration

__all__ = ["UNSEEN_TASK_ID", "TaskConditioned", "TaskConditionedT5", "routing_task_id", "set_task_ids"]

#: the task id of a task the model was not trained on
UNSEEN_TASK_ID = -1


class TaskConditioned:
    """Mixin of a module whose forward depends on each batch row's task: `task_ids` is set by `set_task_ids`
    (None when no ids were given); `task_id_bounds` (lowest, highest id; None without ids) are worked out once
    per batch on the host, so layers need not synchronise with the device to check the ids or to ask whether
    a row is unseen (the lowest is `UNSEEN_TASK_ID`)."""

    task_ids: Optional[torch.Tensor] = None
    task_id_bounds: Optional[Tuple[int, int]] = None


def set_task_ids(model: nn.Module, task_ids: Optional[torch.Tensor]) -> None:
    """Give every `TaskConditioned` layer of `model` the task ids of the coming batch (None clears them)."""
    layers = [m for m in model.modules() if isinstance(m, TaskConditioned)]
    bounds = None
    if task_ids is not None and layers and task_ids.numel():
        low, high = torch.stack([task_ids.min(), task_ids.max()]).tolist()  # one device sync per batch
        bounds = (int(low), int(high))
    for layer in layers:
        layer.task_ids, layer.task_id_bounds = task_ids, bounds


def routing_task_id(model: nn.Module, task: str) -> Optional[int]:
    """The task id to run `model` on `task` with: None when no layer of the model depends on the task (plain T5,
    token-routed MoE, shared LoRA), the task's training id when it is one of the model's `routing_task_names`,
    else `UNSEEN_TASK_ID`."""
    names = getattr(model, "routing_task_names", None)
    if names is None:
        return None
    return names.index(task) if task in names else UNSEEN_TASK_ID


class TaskConditionedT5(T5ForConditionalGeneration):
    """A T5 with task-conditioned layers: `forward(..., task_ids=None)` sets the ids on them (no ids clears
    them, except during `generate`, which keeps the ids it was given for every decoding step).
    `routing_task_names` (the training tasks in task-id order, or None) says which layers need ids."""

    routing_task_names: Optional[List[str]] = None
    _generating = False

    def forward(self, *args: Any, task_ids: Optional[torch.Tensor] = None, **kwargs: Any):
        if task_ids is not None:
            set_task_ids(self, task_ids)
        elif not self._generating:
            set_task_ids(self, None)
        return super().forward(*args, **kwargs)

    @contextmanager
    def _task_context(self, task_ids: Optional[torch.Tensor]) -> Iterator[None]:
        set_task_ids(self, task_ids)
        self._generating = True
        try:
            yield
        finally:
            self._generating = False
            set_task_ids(self, None)

    def generate(self, *args: Any, task_ids: Optional[torch.Tensor] = None, **kwargs: Any):
        with self._task_context(task_ids):
            return super().generate(*args, **kwargs)
