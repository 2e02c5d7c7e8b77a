"""`GradientSurgery`: per-task gradients in one contiguous [k ≤ T, P_local] buffer → Gram → weights → combine.

One optimizer step sees T task-homogeneous micro-batches. Inside `with surgery.accumulate(task):` every
parameter's `.grad` is a view of row `task` of the buffer, so autograd's in-place accumulation writes the
task gradient straight into it (several micro-batches of one task add up); nothing goes through the host.
Engines that own the gradients (ZeRO partitions) write a row themselves through `row(task)`.

At the accumulation boundary: `gram()` (one pass over the buffer; with `distribution="partitioned"` the T×T
partial Grams of the ranks' disjoint slices are all-reduced, T² numbers), `weights()` (one transfer of the
Gram to the host, the method's float64 solve), `combine_into(flat_grad)` (one pass, written in place).

Rows are slots: a task takes the next free row when its gradient first arrives in a step, so the k tasks a
step actually holds are the buffer's first k rows. The Gram and the combine run over those k rows only (the
absent tasks' rows would be zero: their Gram entries are exactly 0), and the k×k Gram is placed into the
T×T one on the host, so every method still sees all T tasks. With `max_tasks_per_step` (a step of
`grad_accum` task-homogeneous micro-batches holds at most that many tasks) the buffer has only that many
rows: memory and work scale with the tasks per step, not with the mixture's T.

distribution:
- "local": the buffer holds the whole gradient of this process (one rank, or ranks that already agree).
- "replicated": every rank holds full rows computed on its own data (ZeRO-0/1, DDP): the rows are averaged
  over the process group before the Gram (the same T·P volume as T ordinary gradient all-reduces).
- "partitioned": every rank holds its own slice of the already-averaged rows (ZeRO-2/3): the Gram is the
  all-reduced sum of the slices' Grams; weights are then identical on every rank and the combine is local.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

import t2t_kernels.gradproj as gradproj
from t2t_mtl.task_names import task_name_list

from .base import GradientMethodError, build_method
from .gradvac import layer_key

DISTRIBUTIONS = ("local", "replicated", "partitioned")


class GradientSurgery:
    """Gram-space gradient surgery over `params` for the tasks `task_names` (row t ↔ task_names[t]).

    method_cfg: `{"method": "pcgrad", ...options}` (see `t2t_mtl.gradients.METHODS`).
    params: the tensors whose gradients take part (Parameters, or (name, tensor) pairs); all one dtype/device.
    segment_of: for segmented methods (gradvac per_layer), maps a parameter name to its segment key;
        consecutive parameters with the same key form one segment. Default: the transformer layer
        (`gradvac.layer_key`; unnamed tensors are one segment each), or one per tensor with per_layer "tensor".
    segment_offsets: explicit segment boundaries over the local buffer (overrides segment_of); under
        "partitioned" every rank must pass the same number K of segments (empty ones allowed).
    segment_names: with `segment_offsets`, its K segments' names (as the module's `segment_layout()` gives them),
        which `stats()` logs with a segmented method's weights; from segment_of they are its keys.
    max_tasks_per_step: rows of the buffer (default T): at most this many distinct tasks between two
        `zero_()` calls. Ranks must fill rows with the same tasks in the same order (checked at `gram()`).
    """

    def __init__(self, method_cfg: dict[str, Any] | str, params: Iterable[torch.Tensor | tuple[str, torch.Tensor]],
                 task_names: Sequence[str], *, distribution: str = "local", process_group: Any = None,
                 segment_of: Callable[[str], str] | None = None, segment_offsets: Sequence[int] | None = None,
                 segment_names: Sequence[str] | None = None, buffer_dtype: torch.dtype | None = None,
                 max_tasks_per_step: int | None = None) -> None:
        self.task_names = task_name_list(task_names, GradientMethodError, where="gradient surgery")
        if len(set(self.task_names)) != len(self.task_names) or not self.task_names:
            raise GradientMethodError(f"gradient surgery needs distinct task names, got {self.task_names}")
        if distribution not in DISTRIBUTIONS:
            raise GradientMethodError(f"gradient surgery distribution must be one of {DISTRIBUTIONS}, "
                                      f"got {distribution!r}")
        self.distribution = distribution
        self.process_group = process_group
        self.method = build_method(method_cfg, len(self.task_names))
        named = [(p if isinstance(p, tuple) else (f"param{i}", p)) for i, p in enumerate(params)]
        if not named:
            raise GradientMethodError("gradient surgery got no parameters")
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        dtypes = {p.dtype for p in self.params}
        devices = {p.device for p in self.params}
        if len(dtypes) > 1 or len(devices) > 1:
            raise GradientMethodError(f"gradient surgery parameters must share one dtype and device, got "
                                      f"dtypes {sorted(map(str, dtypes))} on {sorted(map(str, devices))}")
        self.device = self.params[0].device
        sizes = [p.numel() for p in self.params]
        self.param_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64).tolist()
        self.num_params = int(self.param_offsets[-1])
        rows = len(self.task_names) if max_tasks_per_step is None else min(len(self.task_names),
                                                                              int(max_tasks_per_step))
        if rows < 1:
            raise GradientMethodError(f"max_tasks_per_step must be at least 1, got {max_tasks_per_step}")
        self.buffer = torch.zeros(rows, self.num_params, device=self.device, dtype=buffer_dtype or self.params[0].dtype)
        self.active: list[int] = []  # task indices in row order: row r holds task active[r]
        self._row_of: dict[int, int] = {}
        self.segment_offsets, self.segment_names = self._segments(segment_of, segment_offsets, segment_names)
        self._gram: torch.Tensor | None = None
        self._host: tuple[torch.Tensor, np.ndarray] | None = None  # (the Gram, its `_host_gram`): one transfer
        self.last_weights: np.ndarray | None = None
        self._flat_grad: torch.Tensor | None = None

    # --- filling the buffer ---------------------------------------------------------------------------
    def task_index(self, task: str | int) -> int:
        """The index of `task` (a name, or an index checked to be in range) in `task_names`; raises `KeyError`
        for an unknown task."""
        if isinstance(task, int):
            if not 0 <= task < len(self.task_names):
                raise KeyError(f"task index {task} out of range for {len(self.task_names)} tasks")
            return task
        try:
            return self.task_names.index(task)
        except ValueError:
            raise KeyError(f"task {task!r} is not one of the gradient-surgery tasks {self.task_names}") from None

    def row(self, task: str | int) -> torch.Tensor:
        """The [P_local] row of `task` in the buffer (a view: write a partition gradient into it); a task new
        to this step takes the next free row. Handing out a writable row drops the cached Gram and weights,
        so the next `weights()` sees the new values."""
        index = self.task_index(task)
        if index not in self._row_of:
            if len(self.active) == self.buffer.shape[0]:
                raise GradientMethodError(
                    f"task {self.task_names[index]!r} is the {len(self.active) + 1}th task of this step, but the "
                    f"buffer has {self.buffer.shape[0]} rows (max_tasks_per_step; tasks so far: "
                    f"{[self.task_names[i] for i in self.active]}); call zero_() after each optimizer step")
            self._row_of[index] = len(self.active)
            self.active.append(index)
        self._gram = None
        self.last_weights = None
        return self.buffer[self._row_of[index]]

    def row_views(self, task: str | int) -> list[torch.Tensor]:
        """Per-parameter views of `task`'s row, shaped like the parameters."""
        row = self.row(task)
        return [row[lo:hi].view(p.shape) for p, lo, hi in zip(self.params, self.param_offsets, self.param_offsets[1:])]

    @contextlib.contextmanager
    def accumulate(self, task: str | int) -> Iterator[None]:
        """Inside the block, `.grad` of every parameter is a view of `task`'s row, so `loss.backward()` adds
        this task's gradient into the buffer in place. The previous `.grad` tensors are restored on exit."""
        if self.buffer.dtype != self.params[0].dtype:
            raise GradientMethodError("accumulate() needs the buffer in the parameters' dtype; with another "
                                      "buffer_dtype write rows through row(task)")
        saved = [p.grad for p in self.params]
        views = self.row_views(task)
        for p, view in zip(self.params, views):
            p.grad = view
        try:
            yield
        finally:
            for p, view, old in zip(self.params, views, saved):
                if p.grad is not None and p.grad.data_ptr() != view.data_ptr():
                    # accumulated out of place (create_graph=True): the new .grad already includes the row
                    view.copy_(p.grad.detach())
                p.grad = old

    def zero_(self) -> None:
        """Clear the rows and free them for the next step's tasks (call after the optimizer step)."""
        self.buffer[: len(self.active)].zero_()
        self.active, self._row_of = [], {}
        self._gram = None
        self.last_weights = None

    # --- the boundary -----------------------------------------------------------------------------------
    def gram(self) -> torch.Tensor:
        """Gram [k, k] (or [K, k, k] for a segmented method) of the k tasks this step holds, in row order
        (`active`), synchronised over ranks: fp32, fp64 for an fp64 buffer (as `t2t_kernels.gradproj.gram`)."""
        import torch.distributed as dist

        distributed = dist.is_available() and dist.is_initialized() and self.distribution != "local"
        if distributed:
            self._check_same_tasks()
        rows = self.buffer[: len(self.active)]
        if distributed and self.distribution == "replicated" and self.active:
            dist.all_reduce(rows, op=dist.ReduceOp.SUM, group=self.process_group)
            rows.div_(dist.get_world_size(self.process_group))
        segments = self.segment_offsets if self.method.segmented else None
        if not self.active:  # no task this step: an all-zero Gram
            shape = (len(self.segment_offsets) - 1, 0, 0) if segments else (0, 0)
            dtype = torch.float64 if self.buffer.dtype == torch.float64 else torch.float32
            gram = torch.zeros(shape, dtype=dtype, device=self.device)
        else:
            gram = gradproj.gram(rows, segments)
        if distributed and self.distribution == "partitioned" and self.active:
            dist.all_reduce(gram, op=dist.ReduceOp.SUM, group=self.process_group)
        self._gram = gram
        self.method.gram_eps = float(torch.finfo(gram.dtype).eps)  # the precision its cosines are read at
        return gram

    def weights(self) -> np.ndarray:
        """The method's weights ([T], or [K, T] when segmented), from the Gram (computed if needed); a Gram with
        NaN/inf entries is refused naming the tasks whose gradients gave them."""
        gram = self._host_gram()
        self._check_finite(gram)
        self.last_weights = self.method.weights(gram)
        return self.last_weights

    def combine_into(self, flat_grad: torch.Tensor | None = None, scale: float = 1.0) -> torch.Tensor:
        """Write scale · Σ_t w_t g_t into `flat_grad` [P_local] (allocated when None) and return it."""
        weights = self.last_weights if self.last_weights is not None else self.weights()
        if not self.active:
            out = flat_grad if flat_grad is not None else torch.empty(self.num_params, dtype=self.buffer.dtype,
                                                                      device=self.device)
            return out.zero_()
        segments = self.segment_offsets if self.method.segmented else None
        return gradproj.combine(np.asarray(weights)[..., self.active], self.buffer[: len(self.active)],
                                out=flat_grad, scale=scale, segment_offsets=segments)

    def combine_into_grads(self, scale: float = 1.0) -> None:
        """Combine into a persistent flat buffer and make each parameter's `.grad` a view of it
        (for a plain optimizer, or an engine that reads `.grad`)."""
        if self._flat_grad is None:
            self._flat_grad = torch.empty(self.num_params, dtype=self.params[0].dtype, device=self.device)
        self.combine_into(self._flat_grad, scale)
        for p, lo, hi in zip(self.params, self.param_offsets, self.param_offsets[1:]):
            p.grad = self._flat_grad[lo:hi].view(p.shape)

    # --- logging and state ---------------------------------------------------------------------------------
    def whole_gram(self) -> np.ndarray:
        """float64 [T, T] Gram of the whole (local-or-synchronised) gradient, summed over segments."""
        gram = self._host_gram()
        return gram.sum(0) if gram.ndim == 3 else gram

    def stats(self, grad_scale: float = 1.0) -> dict[str, Any]:
        """Per-task gradient norms, pairwise cosines (both from G) and the last weights, JSON-ready:
        {"tasks", "grad_norms" [T] (None for a task the step did not hold, which has no gradient to measure),
        "grad_cosine" [T][T] (None for a zero or absent gradient), "weights" ([T], or [K][T] for a segmented method,
        whose "segments" names its K rows where the segments have names)}.
        `grad_scale`: the factor the rows carry (fp16 loss scaling); the norms are divided by it."""
        gram = self.whole_gram()
        norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
        denom = np.outer(norms, norms)
        # (clipped: a float32 Gram's cosine of parallel gradients can round past ±1)
        cosine = [[float(np.clip(gram[i, j] / denom[i, j], -1.0, 1.0)) if denom[i, j] > 0 else None
                   for j in range(len(norms))]
                  for i in range(len(norms))]
        held = set(self.active)
        grad_norms = [float(norm / grad_scale) if t in held else None for t, norm in enumerate(norms)]
        weights = None if self.last_weights is None else np.asarray(self.last_weights).tolist()
        stats = {"tasks": list(self.task_names), "grad_norms": grad_norms, "grad_cosine": cosine, "weights": weights}
        if self.method.segmented and self.segment_names is not None:
            stats["segments"] = list(self.segment_names)  # the rows of `weights`
        return stats

    @property
    def num_segments(self) -> int:
        """How many parts the method weighs apart: the segments of a segmented method, else 1."""
        return len(self.segment_offsets) - 1 if self.method.segmented else 1

    def state_dict(self) -> dict[str, Any]:
        """The method's name and state, with the tasks, segment count and seed option (None: a method without
        one) it belongs to."""
        return {"method": self.method.name, "tasks": list(self.task_names), "segments": self.num_segments,
                "seed": self.method.options.get("seed"), "state": self.method.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict()` of the same method, tasks, segmentation and seed; refuses another one (before
        any step uses it) naming the config key."""
        if state["method"] != self.method.name:
            raise GradientMethodError(
                f"the gradient-surgery state was saved with gradient_surgery.method {state['method']!r}, this run "
                f"has {self.method.name!r}: resume with the same method (its state belongs to it)")
        if state["tasks"] != self.task_names:
            raise GradientMethodError(f"the gradient-surgery state is over tasks {state['tasks']}, but this run "
                                      f"has {self.task_names}")
        segments = state.get("segments", self.num_segments)  # (states before 2026-12-04 lack it)
        if segments != self.num_segments:
            raise GradientMethodError(
                f"the gradient-surgery state was saved with gradient_surgery.per_layer giving {segments} "
                f"segment(s), this run has {self.num_segments}: resume with the same per_layer (the "
                f"{self.method.name} state is kept per segment)")
        seed = state.get("seed", self.method.options.get("seed"))  # (states before 2026-12-08 lack it)
        if seed != self.method.options.get("seed"):
            raise GradientMethodError(
                f"the gradient-surgery state was saved with gradient_surgery.seed {seed}, this run has "
                f"{self.method.options.get('seed')}: resume with the same seed (the saved {self.method.name} state "
                f"goes on with its sequence of task orders)")
        self.method.load_state_dict(state["state"])

    # --- helpers ---------------------------------------------------------------------------------------------
    def _host_gram(self) -> np.ndarray:
        """The [T, T] (or [K, T, T]) Gram on the host in float64, symmetrised: the active tasks' Gram (one
        transfer of k² or K·k² numbers) in their places, zeros for the tasks absent from this step. One transfer per
        Gram: the step's weights, overflow check and stats all read it (on a GPU each transfer waits for the device)."""
        gram = self._gram if self._gram is not None else self.gram()
        if self._host is None or self._host[0] is not gram:
            host = gram.detach().to("cpu", torch.float64).numpy()
            full = np.zeros(host.shape[:-2] + (len(self.task_names),) * 2)
            index = np.asarray(self.active, dtype=np.int64)
            full[..., index[:, None], index[None, :]] = 0.5 * (host + np.swapaxes(host, -1, -2))
            self._host = (gram, full)
        return self._host[1].copy()  # (a caller may change its copy in place)

    def _check_finite(self, gram: np.ndarray) -> None:
        """Raise naming the tasks with a NaN/inf Gram diagonal (a NaN/inf gradient, or one whose squared norm
        overflows the Gram's dtype) in any segment."""
        diagonals = np.diagonal(gram, axis1=-2, axis2=-1).reshape(-1, len(self.task_names))
        bad = [self.task_names[t] for t in np.flatnonzero(~np.all(np.isfinite(diagonals), axis=0))]
        if bad:
            raise GradientMethodError(
                f"gradient surgery ({self.method.name}): the gradients of tasks {bad} are NaN/inf or their squared "
                f"norms overflow the Gram (NaN/inf entries); check the losses of those tasks")

    def _check_same_tasks(self) -> None:
        """Raise unless every rank holds the same tasks in the same rows (one all-reduce of 2·(rows+1) ints)."""
        import torch.distributed as dist

        mine = torch.full((self.buffer.shape[0] + 1,), -1, dtype=torch.int64, device=self.device)
        mine[0] = len(self.active)
        mine[1: len(self.active) + 1] = torch.tensor(self.active, dtype=torch.int64)
        both = torch.stack([mine, -mine])
        dist.all_reduce(both, op=dist.ReduceOp.MAX, group=self.process_group)
        if not torch.equal(both[0], -both[1]):
            raise GradientMethodError(
                f"the ranks hold different tasks in this step (this rank: "
                f"{[self.task_names[i] for i in self.active]}): every rank must run the same task in each "
                f"micro-batch, in the same order")

    def _segments(self, segment_of: Callable[[str], str] | None, segment_offsets: Sequence[int] | None,
                  names: Sequence[str] | None) -> tuple[list[int], list[str] | None]:
        """The segment boundaries and names (None: unnamed offsets)."""
        if segment_offsets is not None:
            offsets = [int(o) for o in segment_offsets]
            if offsets[0] != 0 or offsets[-1] != self.num_params or any(b < a for a, b in zip(offsets, offsets[1:])):
                raise GradientMethodError(f"segment_offsets must rise from 0 to P_local = {self.num_params}, "
                                          f"got {offsets}")
            if names is not None and len(names) != len(offsets) - 1:
                raise GradientMethodError(f"segment_names must name the {len(offsets) - 1} segments of "
                                          f"segment_offsets, got {len(names)} names")
            return offsets, None if names is None else list(names)
        if segment_of is None:
            segment_of = default_segment_of(self.method.options.get("per_layer"))
        return segment_layout(self.names, self.param_offsets, segment_of)


def default_segment_of(per_layer: Any) -> Callable[[str], str] | None:
    """How a segmented method groups parameters unless told otherwise: by transformer layer (`layer_key`), or
    one segment per tensor (None) for `per_layer: tensor`."""
    return None if per_layer == "tensor" else layer_key


def segment_layout(names: Sequence[str], offsets: Sequence[int],
                   segment_of: Callable[[str], str] | None) -> tuple[list[int], list[str]]:
    """Segment boundaries over parameters `names` laid out flat at `offsets` (len(names) + 1), and each segment's
    name: consecutive parameters with the same `segment_of(name)` form one segment, named by it; None: one segment
    per parameter, named by it."""
    if segment_of is None:
        return list(offsets), list(names)
    keys = [segment_of(name) for name in names]
    firsts = [k for k, key in enumerate(keys) if k == 0 or key != keys[k - 1]]  # each segment's first parameter
    return [0, *(offsets[k] for k in firsts[1:]), offsets[-1]], [keys[k] for k in firsts]
