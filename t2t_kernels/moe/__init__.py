"""MoE routing: fused router, dispatch planning, permute and combine — Triton kernels with PyTorch references.

Public API (each takes `backend="auto" | "triton" | "reference"`; auto = Triton for CUDA tensors — an error,
not a fallback, where Triton cannot be imported —, the PyTorch reference elsewhere; "triton" on CPU needs
`TRITON_INTERPRET=1` set before this module is imported;
the Triton path is differentiable once: a double backward through it raises):

- `route(logits, k, score="softmax", renormalize=None) -> RouterOutput` (gates, prob_sums, lse
  differentiable w.r.t. the logits);
- `plan_dispatch(topk_idx, num_experts, capacity=None, check_ids=True) -> DispatchPlan` (capacity None =
  dropless; check_ids=False skips the id range check, one device sync, for ids from `route`);
- `permute(x, plan) -> Tensor [R, d]` (differentiable);
- `combine(y, plan, gates) -> Tensor [N, d]` (differentiable in y and gates);
- `expert_capacity(num_tokens, num_experts, k, capacity_factor, min_capacity)`;
- `load_balancing_loss(counts, prob_sums, num_tokens, k)`, `router_z_loss(lse)`;
- `check_backend(backend, device, num_experts)`: the error the ops would raise for a backend that cannot run on a
  device (or route that many experts), up front.
"""
from __future__ import annotations

import math
import numbers
import os
from fractions import Fraction
from typing import Optional

import torch
from torch.autograd.function import once_differentiable

from ..launch import device_guard
from .reference import (DispatchPlan, RouterOutput, combine_reference, dispatch_reference, permute_reference,
                        router_reference)

__all__ = [
    "RouterOutput", "DispatchPlan", "MoEKernelError", "route", "plan_dispatch", "permute", "combine",
    "expert_capacity", "load_balancing_loss", "router_z_loss", "triton_available", "check_backend",
]

_BACKENDS = ("auto", "triton", "reference")
_SCORES = ("softmax", "sigmoid")
_INDEX_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_MAX_TILE = 1 << 20  # Triton's largest tensor (elements)
# Triton reads TRITON_INTERPRET when the kernels are decorated (at this import), so a later change has no effect.
_INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"


class MoEKernelError(ValueError):
    """Bad arguments to an MoE routing op (shapes, k, backend), with what to change."""


try:  # Triton is optional: the reference path needs only torch.
    import triton
    import triton.language as tl

    from .combine import combine_bwd_kernel, gather_sum_kernel
    from .dispatch import dispatch_dest_kernel, dispatch_rank_kernel, dispatch_scan_kernel, permute_kernel
    from .router import router_bwd_kernel, router_fwd_kernel

    _TRITON_IMPORT_ERROR: Optional[Exception] = None
except Exception as exc:  # pragma: no cover - depends on the platform
    _TRITON_IMPORT_ERROR = exc


def triton_available(device: torch.device) -> bool:
    """Whether the Triton kernels can run on tensors of `device` (CUDA, or CPU under TRITON_INTERPRET=1)."""
    if _TRITON_IMPORT_ERROR is not None:
        return False
    return device.type == "cuda" or _INTERPRETING


def _use_triton(backend: str, device: torch.device) -> bool:
    if backend not in _BACKENDS:
        raise MoEKernelError(f"unknown MoE backend {backend!r}; use one of {_BACKENDS}")
    if backend == "reference":
        return False
    if backend == "triton":
        if not triton_available(device):
            reason = _TRITON_IMPORT_ERROR or ("tensors are not on CUDA and TRITON_INTERPRET=1 was not set "
                                              "before t2t_kernels.moe was imported")
            raise MoEKernelError(f"backend='triton' cannot run on {device}: {reason}; use backend='reference'")
        return True
    if device.type == "cuda" and _TRITON_IMPORT_ERROR is not None:  # never a silent fallback on a GPU
        raise MoEKernelError(f"backend='auto' runs the Triton kernels on {device}, but they failed to import "
                             f"({_TRITON_IMPORT_ERROR}); install triton, or pass backend='reference' "
                             f"(model.moe.backend: reference) to run the PyTorch reference there")
    return device.type == "cuda"


def check_backend(backend: str, device: torch.device, num_experts: Optional[int] = None) -> None:
    """MoEKernelError, saying why and what to use, when the ops cannot run `backend` on tensors of `device`: an
    unknown backend, "triton" without CUDA or TRITON_INTERPRET=1, "auto" on CUDA where Triton failed to import, or
    (given `num_experts`) more experts than the Triton kernels take."""
    if _use_triton(backend, device) and num_experts is not None:
        _check_experts(num_experts, min(_MAX_TILE, _MAX_DISPATCH_EXPERTS), "routing")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_float(name: str, value) -> None:
    """Refuse `value` unless it is a tensor of a float dtype both backends take (a complex one failed in Triton with
    a KeyError, and the reference router dropped its imaginary part)."""
    if not isinstance(value, torch.Tensor):
        raise MoEKernelError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in _FLOAT_DTYPES:
        raise MoEKernelError(f"{name} must be a float tensor, one of {[str(d) for d in _FLOAT_DTYPES]}, got dtype "
                             f"{value.dtype}")


def _check_flag(name: str, value, optional: bool = False) -> None:
    """Refuse a non-bool `value` for the boolean argument `name` (a string such as "no" would read as True)."""
    if not isinstance(value, bool) and not (optional and value is None):
        allowed = "True, False or None" if optional else "True or False"
        raise MoEKernelError(f"{name} must be {allowed}, got {value!r}")


def _pow2(n: int) -> int:
    return max(1, triton.next_power_of_2(int(n)))


def _check_experts(num_experts: int, limit: int, op: str) -> None:
    """Refuse the Triton `op` past `limit` experts (its tiles hold every expert of a token or block)."""
    if num_experts > limit:
        raise MoEKernelError(f"the Triton {op} takes at most {limit} experts, got {num_experts}; "
                             f"use backend='reference'")


# The router backward spills registers to local memory on sm_90 with [BLOCK_N, BLOCK_E] tiles of 4096 elements
# at 4 warps (a 320 B stack frame per thread at E = 64, k = 2) or 8 warps (40 B, sigmoid, k = 64); tiles of 2048
# elements at 8 warps stay in registers (benchmarks/gpu/compile_check.py checks)
_ROUTER_WARPS = 8
_ROUTER_TILE = 2048


def _block_n(block_e: int) -> int:
    """Tokens per router program: a [BLOCK_N, BLOCK_E] tile of at most _ROUTER_TILE elements."""
    return max(1, min(64, _ROUTER_TILE // block_e))


# ---------------------------------------------------------------------------------------------- router
class _RouterFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, k: int, sigmoid: bool, renorm: bool):
        logits = logits.contiguous()
        n, e = logits.shape
        dev = logits.device
        idx = torch.empty(n, k, dtype=torch.int32, device=dev)
        gates = torch.empty(n, k, dtype=torch.float32, device=dev)
        lse = torch.empty(n, dtype=torch.float32, device=dev)
        counts = torch.zeros(e, dtype=torch.int32, device=dev)
        prob_sums = torch.zeros(e, dtype=torch.float32, device=dev)
        block_e = _pow2(e)
        block_n = _block_n(block_e)
        if n:
            router_fwd_kernel[(triton.cdiv(n, block_n),)](
                logits, idx, gates, lse, counts, prob_sums, n, e, logits.stride(0),
                K=k, SIGMOID=sigmoid, RENORM=renorm, BLOCK_N=block_n, BLOCK_E=block_e, num_warps=_ROUTER_WARPS)
        ctx.save_for_backward(logits, lse, idx, gates)
        ctx.config = (k, sigmoid, renorm, block_n, block_e)
        ctx.mark_non_differentiable(idx, counts)
        ctx.set_materialize_grads(False)  # an unused lse adds nothing (its softmax is NaN on an infinite row)
        return idx, gates, counts, prob_sums, lse

    @staticmethod
    @once_differentiable
    def backward(ctx, _didx, dgates, _dcounts, dprob_sums, dlse):
        logits, lse, idx, gates = ctx.saved_tensors
        k, sigmoid, renorm, block_n, block_e = ctx.config
        n, e = logits.shape
        dgates = torch.zeros_like(gates) if dgates is None else dgates.float().contiguous()
        dprob_sums = logits.new_zeros(e, dtype=torch.float32) if dprob_sums is None else dprob_sums.float()
        has_dlse = dlse is not None
        dlse = dlse.float().contiguous() if has_dlse else lse  # (not read without HAS_DLSE)
        dlogits = torch.empty(n, e, dtype=torch.float32, device=logits.device)
        if n:
            router_bwd_kernel[(triton.cdiv(n, block_n),)](
                logits, lse, idx, gates, dgates, dprob_sums.contiguous(), dlse, dlogits, n, e,
                logits.stride(0), dlogits.stride(0),
                K=k, SIGMOID=sigmoid, RENORM=renorm, HAS_DLSE=has_dlse, BLOCK_N=block_n, BLOCK_E=block_e,
                num_warps=_ROUTER_WARPS)
        return dlogits.to(logits.dtype), None, None, None


def route(logits: torch.Tensor, k: int, *, score: str = "softmax", renormalize: Optional[bool] = None,
          backend: str = "auto") -> RouterOutput:
    """Route N tokens over E experts from float logits [N, E] (fp16, bf16, fp32 or fp64).

    `renormalize` defaults to k > 1 (Switch convention: a top-1 gate stays the raw probability so the
    router receives a gradient). Returns `RouterOutput` (see `t2t_kernels.moe.reference.RouterOutput`, which also
    states the tie order and what NaN logits do).
    """
    _check_float("router logits", logits)
    if logits.dim() != 2:
        raise MoEKernelError(f"route expects router logits of shape [tokens, experts], got {tuple(logits.shape)}")
    num_experts = logits.shape[1]
    if not _is_int(k) or not 1 <= k <= num_experts:
        raise MoEKernelError(f"top-k must be an int with 1 <= k <= num_experts ({num_experts}), got k={k!r}")
    if score not in _SCORES:
        raise MoEKernelError(f"unknown router score {score!r}; use one of {_SCORES}")
    _check_flag("renormalize", renormalize, optional=True)
    renorm = k > 1 if renormalize is None else renormalize
    if _use_triton(backend, logits.device):
        _check_experts(num_experts, _MAX_TILE, "router")
        with device_guard(logits):
            return RouterOutput(*_RouterFunction.apply(logits, k, score == "sigmoid", renorm))
    return router_reference(logits, k, score, renorm)


# -------------------------------------------------------------------------------------------- dispatch
_BLOCK_A = 128
_BLOCK_B = 64
# [BLOCK, BLOCK_E] int32 tiles: an sm_90 build takes ~20 s for a 2^17-element rank tile and 2^16-element scan
# tile (E = 1024), minutes past that (over 7 for the rank tile at 2^20, Triton's largest tensor), so more experts
# get fewer assignments per block, down to 8 at 2^14 experts; then the histograms [N·k / BLOCK_A, E] take 8 KiB
# per assignment (they grow as E²): more experts go to the reference
_RANK_TILE = 1 << 17
_SCAN_TILE = 1 << 16
_MAX_DISPATCH_EXPERTS = 1 << 14


def _dispatch_blocks(block_e: int) -> tuple[int, int]:
    """(BLOCK_A assignments, BLOCK_B histograms) per program for BLOCK_E experts: tiles that build in seconds."""
    return min(_BLOCK_A, _RANK_TILE // block_e), min(_BLOCK_B, _SCAN_TILE // block_e)


def _plan_dispatch_triton(topk_idx: torch.Tensor, num_experts: int, capacity: int) -> DispatchPlan:
    n, k = topk_idx.shape
    dev = topk_idx.device
    idx = topk_idx.to(torch.int32).contiguous()
    num_assign = n * k
    block_e = _pow2(num_experts)
    block_a, block_b = _dispatch_blocks(block_e)
    num_blocks = max(1, triton.cdiv(num_assign, block_a))
    local_rank = torch.empty(num_assign, dtype=torch.int32, device=dev)
    hist = torch.zeros(num_blocks, num_experts, dtype=torch.int32, device=dev)
    block_offsets = torch.empty_like(hist)
    counts = torch.empty(num_experts, dtype=torch.int32, device=dev)
    kept = torch.empty(num_experts, dtype=torch.int32, device=dev)
    offsets = torch.empty(num_experts + 1, dtype=torch.int32, device=dev)
    if num_assign:
        dispatch_rank_kernel[(num_blocks,)](idx, local_rank, hist, n, num_experts, K=k, BLOCK_A=block_a,
                                            BLOCK_E=block_e)
    dispatch_scan_kernel[(1,)](hist, block_offsets, counts, kept, offsets, num_blocks, num_experts, capacity,
                               BLOCK_B=block_b, BLOCK_E=block_e)
    segments = offsets.tolist()
    dest = torch.empty(n, k, dtype=torch.int32, device=dev)
    row_src = torch.empty(segments[-1], dtype=torch.int32, device=dev)
    if num_assign:
        dispatch_dest_kernel[(num_blocks,)](idx, local_rank, block_offsets, offsets, dest, row_src, n,
                                            num_experts, capacity, K=k, BLOCK_A=block_a)
    return DispatchPlan(dest, row_src, offsets, counts, kept, capacity, segments)


def plan_dispatch(topk_idx: torch.Tensor, num_experts: int, capacity: Optional[int] = None, *,
                  backend: str = "auto", check_ids: bool = True) -> DispatchPlan:
    """Destination rows of every (token, slot) for integer expert ids [N, k] in [0, num_experts); capacity
    None = dropless. Checking the id range costs one device sync (the plan's segment list costs another):
    `check_ids=False` skips it for ids that `route` produced (always in range)."""
    if not isinstance(topk_idx, torch.Tensor):
        raise MoEKernelError(f"topk_idx must be a torch.Tensor of integer expert ids, got {type(topk_idx).__name__}")
    if topk_idx.dim() != 2:
        raise MoEKernelError(f"plan_dispatch expects expert ids of shape [tokens, k], got {tuple(topk_idx.shape)}")
    if topk_idx.dtype not in _INDEX_DTYPES:
        raise MoEKernelError(f"topk_idx must hold integer expert ids, got dtype {topk_idx.dtype}")
    if not _is_int(num_experts) or num_experts < 1:
        raise MoEKernelError(f"num_experts must be an int >= 1, got {num_experts!r}")
    if capacity is not None and (not _is_int(capacity) or capacity < 0):
        raise MoEKernelError(f"expert capacity must be an int >= 0 (or None for dropless), got {capacity!r}")
    _check_flag("check_ids", check_ids)
    if check_ids and topk_idx.numel():
        low, high = torch.aminmax(topk_idx)
        if ((low < 0) | (high >= num_experts)).item():
            raise MoEKernelError(f"topk_idx holds expert ids in [{int(low)}, {int(high)}], outside the valid range "
                                 f"[0, {num_experts - 1}] for num_experts={num_experts}")
    if _use_triton(backend, topk_idx.device):
        _check_experts(num_experts, _MAX_DISPATCH_EXPERTS, "dispatch")
        n, k = topk_idx.shape
        with device_guard(topk_idx):
            return _plan_dispatch_triton(topk_idx, num_experts, n * k if capacity is None else capacity)
    return dispatch_reference(topk_idx, num_experts, capacity)


# ------------------------------------------------------------------------------------ permute / combine
# combine_bwd_kernel's [32, 128] tiles at 4 warps spill registers to local memory on sm_90 (a 296 B stack frame
# per thread at k = 2, bf16; benchmarks/gpu/compile_check.py checks); 8 warps hold them in registers
_COMBINE_BWD_WARPS = 8


def _tiles(d: int) -> tuple:
    block_d = min(128, _pow2(d))
    return 32, block_d


def _unit_stride_rows(x: torch.Tensor) -> torch.Tensor:
    """x itself when its rows are dense (any row stride: the kernels take it, with int64 offsets), else a copy."""
    return x if x.stride(1) == 1 else x.contiguous()


def _accumulator(dtype: torch.dtype) -> torch.dtype:
    """Dtype of the combine sums and gates: fp64 for fp64 data (as the reference; gradcheck), else fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _tl_dtype(dtype: torch.dtype) -> "tl.dtype":
    """The Triton dtype of an accumulator dtype (the kernels' `ACC`)."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def _gather_sum(y: torch.Tensor, dest: torch.Tensor, gates: Optional[torch.Tensor], out_dtype) -> torch.Tensor:
    n, k = dest.shape
    d = y.shape[1]
    out = torch.empty(n, d, dtype=out_dtype, device=y.device)
    block_t, block_d = _tiles(d)
    if n and d:
        gather_sum_kernel[(triton.cdiv(n, block_t), triton.cdiv(d, block_d))](
            y, dest, gates if gates is not None else dest, out, n, d, y.stride(0), out.stride(0),
            K=k, HAS_GATES=gates is not None, ACC=_tl_dtype(_accumulator(y.dtype)), BLOCK_T=block_t,
            BLOCK_D=block_d)
    return out


class _PermuteFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, dest: torch.Tensor, num_rows: int):
        x = _unit_stride_rows(x)
        n, d = x.shape
        k = dest.shape[1]
        out = torch.empty(num_rows, d, dtype=x.dtype, device=x.device)
        block_t, block_d = _tiles(d)
        if n and d:
            permute_kernel[(triton.cdiv(n, block_t), triton.cdiv(d, block_d))](
                x, dest, out, n, d, x.stride(0), out.stride(0), K=k, BLOCK_T=block_t, BLOCK_D=block_d)
        ctx.save_for_backward(dest)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        (dest,) = ctx.saved_tensors
        return _gather_sum(_unit_stride_rows(dout), dest, None, dout.dtype), None, None


class _CombineFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y: torch.Tensor, dest: torch.Tensor, gates: torch.Tensor):
        y = y.contiguous()
        gates = gates.to(_accumulator(y.dtype)).contiguous()
        ctx.save_for_backward(y, dest, gates)
        return _gather_sum(y, dest, gates, y.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        y, dest, gates = ctx.saved_tensors
        dout = _unit_stride_rows(dout)
        n, k = dest.shape
        d = y.shape[1]
        dy = torch.empty_like(y)
        dgates = torch.empty(n, k, dtype=gates.dtype, device=y.device)
        block_t, block_d = _tiles(d)
        if n:
            combine_bwd_kernel[(triton.cdiv(n, block_t),)](
                dout, y, dest, gates, dy, dgates, n, d, dout.stride(0), y.stride(0), dy.stride(0),
                K=k, ACC=_tl_dtype(gates.dtype), BLOCK_T=block_t, BLOCK_D=block_d, num_warps=_COMBINE_BWD_WARPS)
        return dy, None, dgates


def _check_plan(plan: DispatchPlan) -> None:
    if not isinstance(plan, DispatchPlan):
        raise MoEKernelError(f"plan must be the DispatchPlan that plan_dispatch returns, got {type(plan).__name__}")


def _check_rows(name: str, x: torch.Tensor, plan: DispatchPlan, n: int) -> None:
    """`x` is a float [n, d] tensor on the plan's device."""
    _check_float(name, x)
    if x.dim() != 2 or x.shape[0] != n:
        raise MoEKernelError(f"{name} must be [{n}, d] to match the dispatch plan, got {tuple(x.shape)}")
    _check_device(f"{name} is", x, plan)


def _check_device(what: str, x: torch.Tensor, plan: DispatchPlan) -> None:
    if x.device != plan.dest.device:
        raise MoEKernelError(f"{what} on {x.device} but the dispatch plan is on {plan.dest.device}: move them to "
                             f"one device")


def permute(x: torch.Tensor, plan: DispatchPlan, *, backend: str = "auto") -> torch.Tensor:
    """Gather float token rows x [N, d] (fp16, bf16, fp32 or fp64) into the plan's expert-contiguous order
    → [R, d]."""
    _check_plan(plan)
    _check_rows("permute input", x, plan, plan.dest.shape[0])
    if _use_triton(backend, x.device):
        with device_guard(x):
            return _PermuteFunction.apply(x, plan.dest, plan.num_rows)
    return permute_reference(x, plan)


def combine(y: torch.Tensor, plan: DispatchPlan, gates: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """Un-permute expert outputs y [R, d] and sum them weighted by gates [N, k] → [N, d] (dtype of y); y and gates
    are float tensors (fp16, bf16, fp32 or fp64)."""
    _check_plan(plan)
    _check_rows("combine input", y, plan, plan.num_rows)
    _check_float("gates", gates)
    if gates.shape != plan.dest.shape:
        raise MoEKernelError(f"gates must be {tuple(plan.dest.shape)} like the plan, got {tuple(gates.shape)}")
    _check_device("gates are", gates, plan)
    if _use_triton(backend, y.device):
        with device_guard(y):
            return _CombineFunction.apply(y, plan.dest, gates)
    return combine_reference(y, plan, gates)


# ---------------------------------------------------------------------------------- capacity and losses
def expert_capacity(num_tokens: int, num_experts: int, k: int, capacity_factor: float,
                    min_capacity: int = 4) -> int:
    """Rows per expert: max(ceil(N·k/E · capacity_factor), min_capacity), at most N (DeepSpeed's rule), the
    ceiling taken exactly, of the factor as written (its shortest decimal form: 1.1 is 11/10).

    num_tokens: an int >= 0; num_experts: an int >= 1; k: an int, 1 <= k <= num_experts; capacity_factor: a real
    number, finite and > 0; min_capacity: an int >= 0."""
    if not _is_int(num_experts) or num_experts < 1:
        raise MoEKernelError(f"num_experts must be an int >= 1, got {num_experts!r}")
    if not _is_int(k) or not 1 <= k <= num_experts:
        raise MoEKernelError(f"top-k must be an int with 1 <= k <= num_experts ({num_experts}), got k={k!r}")
    if not _is_int(num_tokens) or num_tokens < 0:
        raise MoEKernelError(f"num_tokens must be an int >= 0, got {num_tokens!r}")
    if (not isinstance(capacity_factor, numbers.Real) or isinstance(capacity_factor, bool)
            or not math.isfinite(capacity_factor) or capacity_factor <= 0):
        raise MoEKernelError(f"capacity_factor must be a finite number > 0, got {capacity_factor!r}")
    if not _is_int(min_capacity) or min_capacity < 0:
        raise MoEKernelError(f"min_capacity must be an int >= 0, got {min_capacity!r}")
    balanced = Fraction(num_tokens * k, num_experts) * Fraction(repr(float(capacity_factor)))
    cap = max(math.ceil(balanced), min_capacity)
    return min(cap, num_tokens)


def load_balancing_loss(counts: torch.Tensor, prob_sums: torch.Tensor, num_tokens: int, k: int) -> torch.Tensor:
    """Switch load-balancing loss E · Σ_e f_e · P_e, f_e = counts_e / (N·k), P_e = prob_sums_e / N (1 = uniform).

    counts, prob_sums: [E] (as `route` returns them); num_tokens: N; k: the top-k, >= 1."""
    if not (isinstance(counts, torch.Tensor) and isinstance(prob_sums, torch.Tensor) and counts.dim() == 1
            and counts.shape == prob_sums.shape and counts.numel() >= 1):
        shapes = [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in (counts, prob_sums)]
        raise MoEKernelError(f"load_balancing_loss expects counts and prob_sums as 1-D tensors of one length E >= 1 "
                             f"(per expert, as route returns them), got {shapes[0]} and {shapes[1]}")
    if not _is_int(k) or k < 1:  # (k 0 made every f_e infinite)
        raise MoEKernelError(f"load_balancing_loss needs k, the top-k of the routing, an int >= 1, got {k!r}")
    num_experts = counts.shape[0]
    if num_tokens == 0:
        return prob_sums.sum() * 0.0
    f = counts.to(torch.promote_types(prob_sums.dtype, torch.float32)) / (num_tokens * k)  # fp64 for fp64 prob_sums
    p = prob_sums / num_tokens
    return num_experts * torch.sum(f * p)


def router_z_loss(lse: torch.Tensor) -> torch.Tensor:
    """Router z-loss (ST-MoE): mean over tokens of logsumexp(logits)², in fp32 (fp64 for fp64 lse: gradcheck)."""
    lse = lse.to(torch.promote_types(lse.dtype, torch.float32))
    if lse.numel() == 0:
        return lse.sum() * 0.0
    return torch.mean(lse ** 2)
