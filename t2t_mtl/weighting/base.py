"""`LossWeighting`: combine the per-task losses of a step into one scalar loss."""
from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Optional

import torch
from torch import nn

from t2t_mtl.task_names import task_name_list
from t2t_mtl.weighting.errors import WeightingError


class LossWeighting(nn.Module):
    """``weighting(per_task_losses, epoch=..., stats=...) -> scalar``.

    Losses of the tasks present in the step (one task for a homogeneous micro-batch) are combined; task
    weights are defined over all tasks of the mixture, so a task's weight does not depend on which
    other tasks share the step. `last_weights` holds the effective weight of each task of the last call.
    """

    method: str = ""
    PARAMS: tuple[str, ...] = ()
    #: whether it learns from periodic held-in validation (`stats={"kpi": {task: val_score}}` in the step after
    #: each): a run with `training.validate_every` 0 is then refused
    needs_validation: bool = False
    #: the effective weight of each task of the last call (none before the first)
    last_weights: Mapping[str, float] = MappingProxyType({})

    def __init__(self, task_names: Iterable[str], task_sizes: Optional[Mapping[str, int]] = None) -> None:
        super().__init__()
        if task_sizes is not None and not isinstance(task_sizes, Mapping):
            raise WeightingError(f"loss weighting: task_sizes must be a {{task: number of rows}} mapping or None, "
                                 f"got {type(task_sizes).__name__}")
        self.task_names: list[str] = task_name_list(task_names, WeightingError, where="loss weighting")
        if not self.task_names:
            raise WeightingError("loss weighting needs at least one task name")
        if len(set(self.task_names)) != len(self.task_names):
            raise WeightingError(f"duplicate task names: {self.task_names}")
        self.task_sizes = dict(task_sizes or {})
        self._index = {t: i for i, t in enumerate(self.task_names)}

    def forward(self, per_task_losses: Mapping[str, torch.Tensor], *, epoch: float = 0,
                stats: Optional[Mapping[str, Any]] = None) -> torch.Tensor:
        """`combine` the losses (scalar tensors of known tasks) at `epoch` with the method's `stats`; raises
        `WeightingError` for no loss, an unknown task or a loss that is not a scalar."""
        if not per_task_losses:
            raise WeightingError("no per-task losses given: a step needs at least one task's loss")
        for task, loss in per_task_losses.items():
            if task not in self._index:
                raise WeightingError(f"loss given for task {task!r}, which this weighting does not know "
                                     f"(tasks: {', '.join(self.task_names)})")
            if not torch.is_tensor(loss) or loss.numel() != 1:
                raise WeightingError(f"loss of task {task!r} must be a scalar tensor")
        return self.combine(dict(per_task_losses), epoch=float(epoch), stats=stats or {})

    def combine(self, losses: dict[str, torch.Tensor], *, epoch: float, stats: Mapping[str, Any]) -> torch.Tensor:
        """The method's formula on the present tasks' losses."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        """`tasks=[...]`, for the module's repr."""
        return f"tasks={self.task_names}"

    def index(self, task: str) -> int:
        """The position of `task` in `task_names` (the order of per-task parameters and buffers); `KeyError` for
        an unknown task."""
        return self._index[task]

    def task_weights(self, epoch: float, stats: Mapping[str, Any]) -> dict[str, float]:
        """Each task's weight as a call at `epoch` with `stats` would give it now, without changing the state: what
        a training record logs (`task_weight`). A method of its own logs none unless it says ({} here)."""
        return {}

    def synchronize(self, all_reduce_sum: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Make the state each rank builds from its own losses the same on every rank, through
        `all_reduce_sum` (a tensor in, its sum over the ranks out). Called by every rank after each step
        (so the state a checkpoint keeps, rank 0's, is every rank's); nothing to do for most methods."""

    def weighted_sum(self, losses: dict[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
        """Σ_t w_t L_t over the present tasks; records `last_weights`."""
        self.last_weights = {t: float(weights[t]) for t in losses}
        return torch.stack([weights[t] * loss.reshape(()) for t, loss in losses.items()]).sum()
