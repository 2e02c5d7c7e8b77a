"""Gradient surgery inside a DeepSpeed training step (ZeRO stages 0–3), through the trainer's hook contract:

    hook = build_step_hook(cfg, engine, task_names)
    hook.begin_step(engine)                      # before the step's first micro-batch
    for each micro-batch (task-homogeneous, grouped by task):
        engine.backward(loss); hook.after_backward(engine, task)
    hook.before_optimizer_step(engine)           # after the last backward
    engine.step()

Capture: a tensor hook on every trainable parameter adds the micro-batch's gradient (as autograd hands it over,
before DeepSpeed's own accumulation/reduction hooks) into a flat fp32 scratch row. `after_backward` sums the
scratch over the data-parallel ranks with one reduce-scatter, so this rank receives and keeps only its
1/world slice in its task's row of a partitioned [k, P/world] GradientSurgery buffer, k = min(T, grad_accum)
rows (memory: one full scratch row plus k slices).
At the boundary: partial Grams all-reduced (k² numbers), the method's weights on the host (identical on all
ranks), the local combine, one all-gather of the combined slices, and `deepspeed.utils.safe_set_full_grad`
replaces DeepSpeed's averaged gradient of every parameter (its ZeRO-1/2 partition fragment, or `.grad` at
stage 0) by the combined one. With method `sum` the step is exactly DeepSpeed's own. A step whose task
gradients overflowed (fp16 loss scaling) keeps DeepSpeed's gradients, so its overflow check skips the step.

ZeRO-3 (`Zero3SurgeryHook`) partitions every parameter (rank r holds piece r of each) and reduce-scatters the
gradients into fp32 pieces itself, accumulating over the micro-batches. There no scratch and no extra
collective are needed: after each backward the change of this rank's pieces (`safe_get_local_grad`) since the
previous one is the micro-batch's rank-averaged gradient slice, added to its task's row; at the boundary the
combined slice goes back piece by piece (`safe_set_local_grad`). Memory: k + 1 rows of P/world.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .surgery import GradientSurgery, default_segment_of, segment_layout


def _skips_nonfinite_steps(engine: Any) -> bool:
    """DeepSpeed skips a step with non-finite gradients itself (fp16 loss-scale overflows) except for fp32 at
    ZeRO stage 0."""
    return int(engine.zero_optimization_stage()) > 0 or engine.bfloat16_enabled() or engine.fp16_enabled()


def loss_scale(engine: Any) -> float:
    """The fp16 loss scale the step's gradients carry (DeepSpeed's optimizer divides them by it in its step);
    1 without fp16."""
    if not engine.fp16_enabled():
        return 1.0
    config = getattr(engine.optimizer, "loss_scale_config", None)  # FP16_Optimizer (ZeRO 0)
    return float(config.cur_scale if config is not None else engine.optimizer.cur_scale)  # ZeRO 1-3


class _SurgeryHook:
    """What both hooks share: the `GradientSurgery` over this rank's row slices, its stats and state."""

    surgery: GradientSurgery
    last_stats: dict[str, Any] | None = None

    def stats(self) -> dict[str, Any] | None:
        """Per-task gradient norms and cosines and the weights of the last step (see GradientSurgery.stats)."""
        return self.last_stats

    def _leave_to_deepspeed(self, engine: Any) -> bool:
        """True when a task gradient overflowed (non-finite Gram, the same on every rank) and DeepSpeed's overflow
        check will skip the step: its own gradients are then left as they are and no stats are logged.
        Without that check the method refuses the Gram with a clear error."""
        if np.all(np.isfinite(self.surgery.whole_gram())) or not _skips_nonfinite_steps(engine):
            return False
        self.last_stats = None
        return True

    def state_dict(self) -> dict[str, Any]:
        return self.surgery.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.surgery.load_state_dict(state)


def _flat_stand_in(numel: int, device: torch.device) -> torch.Tensor:
    """The one flat fp32 "parameter" of `numel` elements a hook builds its GradientSurgery on, holding no memory
    (one zero, expanded): the hooks write the surgery's rows and read `combine_into`, so it reads only the size,
    dtype and device of it, never its values or `.grad`."""
    return torch.zeros((), dtype=torch.float32, device=device).expand(numel)


class DeepSpeedSurgeryHook(_SurgeryHook):
    """Per-task gradient capture and combine around a DeepSpeed engine's accumulation boundary (ZeRO 0-2)."""

    def __init__(self, method_cfg: dict[str, Any], engine: Any, task_names: Sequence[str]) -> None:
        self.named = [(n, p) for n, p in engine.module.named_parameters() if p.requires_grad]
        sizes = [p.numel() for _, p in self.named]
        self.offsets = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
        self.num_params = self.offsets[-1]
        distributed = dist.is_available() and dist.is_initialized()
        self.world = dist.get_world_size() if distributed else 1
        rank = dist.get_rank() if distributed else 0
        self.per_rank = -(-self.num_params // self.world)
        self.lo = min(self.num_params, rank * self.per_rank)
        self.hi = min(self.num_params, (rank + 1) * self.per_rank)
        device = self.named[0][1].device
        self.scratch = torch.zeros(self.per_rank * self.world, dtype=torch.float32, device=device)
        self._piece = torch.empty(self.per_rank, dtype=torch.float32, device=device)
        names, segment_of = [name for name, _ in self.named], default_segment_of(method_cfg.get("per_layer"))
        segments, segment_names = segment_layout(names, self.offsets, segment_of)
        local_segments = [min(max(o, self.lo), self.hi) - self.lo for o in segments]
        self.surgery = GradientSurgery(method_cfg, [_flat_stand_in(self.hi - self.lo, device)], task_names,
                                       distribution="partitioned" if self.world > 1 else "local",
                                       segment_offsets=local_segments, segment_names=segment_names,
                                       max_tasks_per_step=_tasks_per_step(engine))
        self.capturing = False
        self._handles = [p.register_hook(self._capture_hook(lo, hi))
                         for (_, p), lo, hi in zip(self.named, self.offsets, self.offsets[1:])]

    def _capture_hook(self, lo: int, hi: int):
        def capture(grad: torch.Tensor) -> None:
            if self.capturing:
                self.scratch[lo:hi].add_(grad.detach().reshape(-1))
        return capture

    def begin_step(self, engine: Any) -> None:
        """Clear the task rows and the scratch row, and start capturing gradients."""
        self.surgery.zero_()
        self.scratch.zero_()
        self.capturing = True

    def after_backward(self, engine: Any, task: str) -> None:
        """Move this micro-batch's gradient, averaged over ranks, into `task`'s row (this rank's slice)."""
        row = self.surgery.row(task)
        if self.world > 1:  # this rank receives its slice of the sum (gloo: an all-reduce inside torch)
            _reduce_scatter_single(self._piece, self.scratch)
            row.add_(self._piece[: self.hi - self.lo], alpha=1.0 / self.world)
        else:
            row.add_(self.scratch[: self.num_params])
        self.scratch.zero_()

    def before_optimizer_step(self, engine: Any) -> None:
        """Gram → weights → combine, then hand the combined gradient to DeepSpeed for its optimizer step."""
        from deepspeed.utils import safe_set_full_grad

        self.capturing = False
        if self._leave_to_deepspeed(engine):
            return
        local = self._piece  # free between steps: the micro-batches' reductions are done
        local[self.hi - self.lo:].zero_()  # the padding tail; combine overwrites the rest
        self.surgery.combine_into(local[: self.hi - self.lo])
        if self.world > 1:
            _all_gather_single(self.scratch, local)
        else:
            self.scratch[: self.per_rank].copy_(local)
        for (_, p), lo, hi in zip(self.named, self.offsets, self.offsets[1:]):
            safe_set_full_grad(p, self.scratch[lo:hi].view(p.shape).to(p.dtype))
        self.last_stats = self.surgery.stats(loss_scale(engine))
        self.scratch.zero_()

    def remove(self) -> None:
        """Detach the capture hooks from the parameters."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _tasks_per_step(engine: Any) -> int | None:
    """At most one task per micro-batch: the engine's gradient-accumulation steps (None: unknown)."""
    steps = getattr(engine, "gradient_accumulation_steps", None)
    return int(steps()) if callable(steps) else None


def _all_gather_single(output: torch.Tensor, piece: torch.Tensor) -> None:
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # renamed in torch 2.13
    gather(output, piece)


def _reduce_scatter_single(piece: torch.Tensor, whole: torch.Tensor) -> None:
    scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor  # renamed in torch 2.13
    scatter(piece, whole)


class Zero3SurgeryHook(_SurgeryHook):
    """The same contract under ZeRO-3, on the gradient pieces DeepSpeed itself reduces and accumulates."""

    def __init__(self, method_cfg: dict[str, Any], engine: Any, task_names: Sequence[str]) -> None:
        self.named = [(n, p) for n, p in engine.module.named_parameters() if p.requires_grad]
        sizes = [p.ds_tensor.numel() for _, p in self.named]  # this rank's piece of each parameter (padded)
        self.offsets = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
        device = self.named[0][1].ds_tensor.device
        self.accumulated = torch.zeros(self.offsets[-1], dtype=torch.float32, device=device)
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        names, segment_of = [name for name, _ in self.named], default_segment_of(method_cfg.get("per_layer"))
        segments, segment_names = segment_layout(names, self.offsets, segment_of)
        self.surgery = GradientSurgery(method_cfg, [_flat_stand_in(self.offsets[-1], device)], task_names,
                                       distribution="partitioned" if world > 1 else "local",
                                       segment_offsets=segments, segment_names=segment_names,
                                       max_tasks_per_step=_tasks_per_step(engine))

    def begin_step(self, engine: Any) -> None:
        """Clear the task rows and the copy of DeepSpeed's pieces (which start the step at zero)."""
        self.surgery.zero_()
        self.accumulated.zero_()

    def after_backward(self, engine: Any, task: str) -> None:
        """Add what this micro-batch added to DeepSpeed's pieces (rank-averaged already) to `task`'s row."""
        from deepspeed.utils import safe_get_local_grad

        row = self.surgery.row(task)
        row.sub_(self.accumulated)
        for (_, p), lo, hi in zip(self.named, self.offsets, self.offsets[1:]):
            self.accumulated[lo:hi].copy_(safe_get_local_grad(p).reshape(-1))
        row.add_(self.accumulated)

    def before_optimizer_step(self, engine: Any) -> None:
        """Gram → weights → combine, then replace DeepSpeed's accumulated pieces by the combined ones."""
        from deepspeed.utils import safe_set_local_grad

        if self._leave_to_deepspeed(engine):
            return
        combined = self.surgery.combine_into(torch.empty_like(self.accumulated))  # every element written
        for (_, p), lo, hi in zip(self.named, self.offsets, self.offsets[1:]):
            safe_set_local_grad(p, combined[lo:hi])
        self.last_stats = self.surgery.stats(loss_scale(engine))

    def remove(self) -> None:
        """Nothing to detach: this hook reads DeepSpeed's own gradient pieces."""


def build_step_hook(method_cfg: dict[str, Any], engine: Any, task_names: Sequence[str]
                    ) -> DeepSpeedSurgeryHook | Zero3SurgeryHook:
    """The trainer's entry point: the hook for `engine`'s ZeRO stage over `task_names`."""
    hook_type = Zero3SurgeryHook if int(engine.zero_optimization_stage()) == 3 else DeepSpeedSurgeryHook
    return hook_type(dict(method_cfg), engine, task_names)
