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
from typing import Any, Iterator, List, Optional, Tuple, Type, Union

import torch
from torch import nn
from transformers import T5ForConditionalGeneration
from transformers.generation.utils import GenerateOutput  # (loaded already: GenerationMixin is T5's base)
from transformers.modeling_outputs import Seq2SeqLMOutput

__all__ = ["UNSEEN_TASK_ID", "TaskConditioned", "TaskConditionedT5", "routing_task_id", "set_task_ids",
           "task_ids_set"]

#: the task id of a task the model was not trained on
UNSEEN_TASK_ID = -1


class TaskConditioned:
    """Mixin of a module whose forward depends on each batch row's task. `task_ids` is set by `set_task_ids`
    (None when no ids were given), which also works out the ids' bounds once per batch on the host, so layers
    need not synchronise with the device to check the ids or to ask whether a row is unseen; ids assigned to
    `task_ids` directly get their bounds computed on first use."""

    _task_ids: Optional[torch.Tensor] = None
    _task_id_bounds: Optional[Tuple[int, int]] = None

    @property
    def task_ids(self) -> Optional[torch.Tensor]:
        """The batch's task ids (LongTensor [B] or [B']), or None when none were given."""
        return self._task_ids

    @task_ids.setter
    def task_ids(self, ids: Optional[torch.Tensor]) -> None:
        """Set the ids; their bounds are worked out on first use."""
        self._task_ids, self._task_id_bounds = ids, None

    def route_to(self, ids: Optional[torch.Tensor], bounds: Optional[Tuple[int, int]]) -> None:
        """Set `task_ids` with their (lowest, highest) id already known."""
        self._task_ids, self._task_id_bounds = ids, bounds

    def row_task_ids(self, rows: int, device: torch.device, num_tasks: int, error: Type[ValueError], missing: str,
                     owner: str) -> Tuple[torch.Tensor, bool]:
        """(the task id of each of `rows` batch rows, whether any is `UNSEEN_TASK_ID`). Ids given for a batch
        before beam search expanded it are repeated (repeat_interleave). Without ids a single-task layer runs
        task 0; otherwise `error(missing)`. `error` also for a count that does not divide `rows` or an id outside
        [UNSEEN_TASK_ID, num_tasks) (`owner` says whose tasks those are). A batch of no rows needs no ids: no ids."""
        if rows == 0:
            return torch.zeros(0, dtype=torch.long, device=device), False
        ids = self._task_ids
        if ids is None:
            if num_tasks == 1:
                return torch.zeros(rows, dtype=torch.long, device=device), False
            raise error(missing)
        ids = ids.to(device=device, dtype=torch.long).reshape(-1)
        if ids.numel() == 0 or rows % ids.numel():
            raise error(f"{ids.numel()} task ids do not match a batch of {rows} sequences")
        if self._task_id_bounds is None:
            self._task_id_bounds = _bounds(ids)
        low, high = self._task_id_bounds
        if low < UNSEEN_TASK_ID or high >= num_tasks:
            raise error(f"task ids must lie in [0, {num_tasks}) ({owner}), or be UNSEEN_TASK_ID={UNSEEN_TASK_ID} "
                        f"for a task the model was not trained on; got ids from {low} to {high}")
        return ids.repeat_interleave(rows // ids.numel()), low == UNSEEN_TASK_ID


def _bounds(ids: torch.Tensor) -> Tuple[int, int]:
    low, high = torch.stack([ids.min(), ids.max()]).tolist()  # one device sync
    return int(low), int(high)


def set_task_ids(model: nn.Module, task_ids: Optional[torch.Tensor]) -> None:
    """Give every `TaskConditioned` layer of `model` the task ids of the coming batch (None clears them)."""
    layers = [m for m in model.modules() if isinstance(m, TaskConditioned)]
    bounds = _bounds(task_ids) if task_ids is not None and layers and task_ids.numel() else None
    for layer in layers:
        layer.route_to(task_ids, bounds)


@contextmanager
def task_ids_set(model: nn.Module, task_ids: Optional[torch.Tensor]) -> Iterator[None]:
    """`set_task_ids(model, task_ids)` for the block's duration, cleared after (nothing to do for None)."""
    if task_ids is None:
        yield
        return
    set_task_ids(model, task_ids)
    try:
        yield
    finally:
        set_task_ids(model, None)


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

    def forward(self, *args: Any, task_ids: Optional[torch.Tensor] = None, **kwargs: Any
                ) -> Union[Seq2SeqLMOutput, Tuple[torch.Tensor, ...]]:
        """T5's forward, with `task_ids` ([B], or None: cleared unless generating) set on the task-conditioned
        layers first."""
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

    def generate(self, *args: Any, task_ids: Optional[torch.Tensor] = None, **kwargs: Any
                 ) -> Union[GenerateOutput, torch.LongTensor]:
        """transformers' `generate`, with `task_ids` ([B] before beam expansion, or None) set on the
        task-conditioned layers for every decoding step and cleared after."""
        with self._task_context(task_ids):
            return super().generate(*args, **kwargs)
