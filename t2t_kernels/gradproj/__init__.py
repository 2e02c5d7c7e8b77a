"""Gram-space gradient surgery kernels: `gram` (G = g gᵀ, optionally per segment of P) and `combine`
(Σ_t w_t g_t written into a flat buffer).

Dispatch: CUDA tensors run the Triton kernels; other tensors run the PyTorch reference, unless
`force_triton=True` or the environment sets `T2T_MTL_GRADPROJ_FORCE_TRITON=1` (`0` or unset: off; any other value
is refused) — then CPU tensors run the Triton code under the interpreter (`TRITON_INTERPRET=1` must be set before
this package is imported).
fp64 inputs always take the reference path. Neither function is differentiable: both compute under
`torch.no_grad()`, so the result carries no autograd graph whatever the inputs' `requires_grad`.
"""
from __future__ import annotations

import numbers
import os
from collections.abc import Iterable, Sequence

import torch

from ..launch import device_guard
from .reference import combine_reference, gram_reference

# The kernel modules are imported here, before the public functions of the same names are defined below, so
# that the package attributes `gram`/`combine` end up as the functions (a later first import of a submodule
# would rebind them to the modules).
try:
    from . import combine as _combine_kernels
    from . import gram as _gram_kernels
except ImportError as _error:  # no Triton on this platform: the reference path still works
    _combine_kernels = _gram_kernels = None
    _TRITON_IMPORT_ERROR: ImportError | None = _error
else:
    _TRITON_IMPORT_ERROR = None

FORCE_TRITON_ENV = "T2T_MTL_GRADPROJ_FORCE_TRITON"
MAX_TRITON_TASKS = 64
_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_DTYPES = _TRITON_DTYPES + (torch.float64,)
_OFFSET_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
# Triton reads TRITON_INTERPRET when the kernels are decorated (at this import), so a later change has no effect.
_INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"

__all__ = ["GradProjInputError", "gram", "combine", "FORCE_TRITON_ENV", "MAX_TRITON_TASKS"]


class GradProjInputError(ValueError):
    """An argument of `gram`/`combine` is unusable (a tensor's shape, dtype or device, the segment offsets,
    weights, `out`, `scale`, `num_splits`, `force_triton`), or the Triton path it asks for cannot run."""


def _forced_by_environment() -> bool:
    """Whether FORCE_TRITON_ENV asks for the Triton path: "1" yes, unset, "" or "0" no, anything else refused (as a
    truth value "false" or "no" would force it)."""
    value = os.environ.get(FORCE_TRITON_ENV, "")
    if value not in ("", "0", "1"):
        raise GradProjInputError(f"the environment variable {FORCE_TRITON_ENV} must be 1 (Triton kernels on CPU "
                                 f"tensors, under the interpreter), 0 or unset, got {value!r}")
    return value == "1"


def _use_triton(tensor: torch.Tensor, force_triton: bool | None) -> bool:
    if force_triton is not None and not isinstance(force_triton, bool):  # a string such as "no" would read as True
        raise GradProjInputError(f"force_triton must be True, False or None (None: the {FORCE_TRITON_ENV} "
                                 f"environment variable), got {force_triton!r}")
    if tensor.dtype == torch.float64:
        return False
    if force_triton is None:
        force_triton = _forced_by_environment()
    if (tensor.device.type == "cuda" or force_triton) and _TRITON_IMPORT_ERROR is not None:
        raise GradProjInputError(f"the Triton kernels are unavailable ({_TRITON_IMPORT_ERROR}); install triton "
                                 f"or pass CPU tensors (reference path) without force_triton")
    if tensor.device.type == "cuda":
        return True
    if force_triton and not _INTERPRETING:
        raise GradProjInputError(
            f"force_triton on a {tensor.device.type} tensor needs the Triton interpreter: set TRITON_INTERPRET=1 "
            f"before importing t2t_kernels.gradproj, or move the gradients to a CUDA device")
    return bool(force_triton)


def _check_grads(grads: torch.Tensor, triton_path: bool) -> torch.Tensor:
    if not isinstance(grads, torch.Tensor) or grads.dim() != 2:
        shape = tuple(grads.shape) if isinstance(grads, torch.Tensor) else type(grads).__name__
        raise GradProjInputError(f"grads must be a 2-D tensor [T tasks, P parameters], got {shape}")
    if grads.dtype not in _DTYPES:
        raise GradProjInputError(f"grads dtype {grads.dtype} is not supported; use one of {list(_DTYPES)}")
    if grads.shape[0] < 1:
        raise GradProjInputError("grads has no task rows (T = 0)")
    if triton_path and grads.shape[0] > MAX_TRITON_TASKS:
        raise GradProjInputError(
            f"the Triton kernels take at most {MAX_TRITON_TASKS} tasks, got T = {grads.shape[0]}; "
            f"group tasks or run on the reference path (CPU tensors)")
    if grads.shape[1] > 1 and grads.stride(1) != 1:
        grads = grads.contiguous()
    return grads


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` on `device`; a host → CUDA copy goes through pinned memory, so it does not wait for the GPU.

    Made contiguous first: pinning keeps the strides, and an expanded (stride-0) view cannot be copied into.
    """
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.contiguous().pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _check_offsets(segment_offsets: Iterable[int] | torch.Tensor | None, num_params: int) -> list[int]:
    if segment_offsets is None:
        return [0, num_params]
    if isinstance(segment_offsets, torch.Tensor):
        if segment_offsets.dim() != 1 or segment_offsets.dtype not in _OFFSET_DTYPES:
            raise GradProjInputError(f"segment_offsets must be a 1-D integer tensor [K+1], got dtype "
                                     f"{segment_offsets.dtype} shape {list(segment_offsets.shape)}")
        segment_offsets = segment_offsets.tolist()
    else:  # listed first: checking a generator or iterator would use it up
        given = list(segment_offsets) if isinstance(segment_offsets, Iterable) else None
        if given is None or not all(isinstance(o, numbers.Integral) and not isinstance(o, bool) for o in given):
            raise GradProjInputError(f"segment_offsets must be a flat sequence of ints or a 1-D integer tensor "
                                     f"[K+1], got {segment_offsets!r}")
        segment_offsets = given
    offsets = [int(o) for o in segment_offsets]
    if len(offsets) < 2:
        raise GradProjInputError(f"segment_offsets needs K+1 >= 2 boundaries, got {offsets}")
    if offsets[0] != 0 or offsets[-1] != num_params:
        raise GradProjInputError(
            f"segment_offsets must start at 0 and end at P = {num_params} so every column belongs to a "
            f"segment; got first {offsets[0]}, last {offsets[-1]}")
    if any(b < a for a, b in zip(offsets, offsets[1:])):
        raise GradProjInputError(f"segment_offsets must be non-decreasing, got {offsets}")
    return offsets


@torch.no_grad()
def gram(grads: torch.Tensor, segment_offsets: Iterable[int] | torch.Tensor | None = None, *,
         force_triton: bool | None = None, num_splits: int | None = None) -> torch.Tensor:
    """Gram matrix of per-task gradients.

    grads: [T, P] in fp32/bf16/fp16 (fp64 on the reference path), rows = tasks.
    segment_offsets: optional K+1 boundaries (0 = o_0 <= ... <= o_K = P); then one Gram per segment.
    Returns fp32 (fp64 for fp64 input) [T, T], or [K, T, T] with segments, on the grads' device.
    num_splits: Triton only, an int >= 1: the number of chunks P is cut into for the deterministic two-stage
    reduction, at one chunk length for every segment (None = chosen from the device).
    """
    if num_splits is not None and (not isinstance(num_splits, int) or isinstance(num_splits, bool)
                                   or num_splits < 1):
        raise GradProjInputError(f"num_splits must be an int >= 1 (or None to choose it), got {num_splits!r}")
    triton_path = _use_triton(grads, force_triton) if isinstance(grads, torch.Tensor) else False
    grads = _check_grads(grads, triton_path)
    offsets = _check_offsets(segment_offsets, grads.shape[1])
    if triton_path:
        offsets_t = _to_device(torch.tensor(offsets, dtype=torch.int64), grads.device)
        with device_guard(grads):
            result = _gram_kernels.gram_triton(grads, offsets_t, offsets, num_splits=num_splits)
    else:
        result = gram_reference(grads, offsets)
    return result[0] if segment_offsets is None else result


@torch.no_grad()
def combine(weights: torch.Tensor | Sequence[float], grads: torch.Tensor, out: torch.Tensor | None = None,
            scale: float = 1.0, *, segment_offsets: Iterable[int] | torch.Tensor | None = None,
            force_triton: bool | None = None) -> torch.Tensor:
    """out = scale · Σ_t weights[t] · grads[t] as a flat [P] tensor.

    weights: [T] (or [K, T] with `segment_offsets`: segment k uses row k); any float dtype or a sequence.
    out: optional 1-D contiguous [P] buffer written in place (any float dtype; e.g. a flat gradient);
    when omitted a new tensor of the grads' dtype is returned. An `out` sharing storage with `grads` (e.g. a
    row of it) is written only after the sum is complete.
    scale: a real number (Python or NumPy; not a tensor, whose value would have to be read back).
    """
    if not isinstance(scale, numbers.Real) or isinstance(scale, bool):
        raise GradProjInputError(f"scale must be a real number (a Python or NumPy float), got {scale!r}")
    triton_path = _use_triton(grads, force_triton) if isinstance(grads, torch.Tensor) else False
    grads = _check_grads(grads, triton_path)
    num_tasks, num_params = grads.shape
    offsets = _check_offsets(segment_offsets, num_params)
    try:
        if hasattr(weights, "dtype") and torch.as_tensor(weights).is_complex():  # a cast would drop imaginary parts
            raise TypeError(f"a complex dtype, {weights.dtype}")
        weights = torch.as_tensor(weights, dtype=torch.float32 if grads.dtype != torch.float64 else torch.float64)
    except (TypeError, ValueError, RuntimeError) as error:  # e.g. strings, ragged lists, complex numbers
        raise GradProjInputError(f"weights must be a tensor or a sequence of numbers, one per task, real, got "
                                 f"{weights!r} ({error})") from None
    expected = (num_tasks,) if segment_offsets is None else (len(offsets) - 1, num_tasks)
    if tuple(weights.shape) != expected:
        segments = f" and {len(offsets) - 1} segments" if segment_offsets is not None else ""
        raise GradProjInputError(f"weights must have shape {list(expected)} for grads {list(grads.shape)}{segments}, "
                                 f"got {list(weights.shape)}")
    weights = _to_device(weights.reshape(len(offsets) - 1, num_tasks), grads.device).contiguous()
    if out is None:
        out = torch.empty(num_params, dtype=grads.dtype, device=grads.device)
    elif not isinstance(out, torch.Tensor):
        raise GradProjInputError(f"out must be a contiguous 1-D float buffer of P = {num_params} elements (a "
                                 f"tensor) or None, got {type(out).__name__}")
    elif out.dim() != 1 or out.numel() != num_params or not out.is_contiguous() or not out.is_floating_point():
        raise GradProjInputError(f"out must be a contiguous 1-D float buffer of P = {num_params} elements, got "
                                 f"shape {list(out.shape)} dtype {out.dtype} contiguous={out.is_contiguous()}")
    elif out.device != grads.device:
        raise GradProjInputError(f"out is on {out.device} but grads are on {grads.device}")
    # writing into memory that is still being read would corrupt the sum: go through a temporary
    aliased = out.untyped_storage().data_ptr() == grads.untyped_storage().data_ptr()
    result = torch.empty_like(out) if aliased else out
    if triton_path:
        offsets_t = _to_device(torch.tensor(offsets, dtype=torch.int64), grads.device)
        with device_guard(grads):
            _combine_kernels.combine_triton(weights, grads, offsets_t, offsets, result, scale)
    else:
        combine_reference(weights, grads, offsets, result, scale)
    return out.copy_(result) if aliased else out
