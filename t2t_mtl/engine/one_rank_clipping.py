"""Gradient clipping of a one-rank fp32 engine without DeepSpeed's collective and per-parameter Python loop.

DeepSpeed clips an fp32 engine's gradients (ZeRO stage 0, no bf16/fp16) with `deepspeed.runtime.utils.
clip_grad_norm_`: the norm of each gradient, ``stack(norms).pow(2).sum().pow(0.5)``, divided by the data-parallel
world size and all-reduced over that group (for MoE parameters, whose norms differ between ranks), then every
gradient multiplied by ``min(1, max_norm / (norm + 1e-6))``. With one rank the division and the all-reduce change
nothing, yet the all-reduce goes through DeepSpeed's and torch.distributed's Python wrappers every step, and each
gradient takes a few Python-level calls: ~8% of a tiny model's step on a CPU. `clip_one_rank_gradients` computes
the same numbers (the same per-gradient norm kernel, the same reduction, an elementwise product) in fewer calls.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

import torch


def clip_one_rank_gradients(parameters: Iterable[torch.Tensor], max_norm: float) -> Optional[torch.Tensor]:
    """Scale the gradients of `parameters` (those that have one) in place so that their global 2-norm is at most
    `max_norm`, bit for bit as DeepSpeed's `clip_grad_norm_` does on a one-rank data-parallel group; returns the
    global norm (a 0-dim tensor), or None when no parameter has a gradient."""
    grads = [p.grad.detach() for p in parameters if p.grad is not None]
    if not grads:
        return None
    # Tensor.norm(2) is torch.linalg.vector_norm(t, 2.0): the kernel DeepSpeed's per-parameter norms run
    norms = [torch.linalg.vector_norm(g.float(), 2.0) for g in grads]
    total = torch.stack(norms).pow(2.0).sum().float().pow(0.5)
    # a tensor over a tensor, as DeepSpeed's (a number over a tensor is a reciprocal times the number: other bits),
    # filled on the device (no upload)
    coef = torch.clamp(torch.full_like(total, float(max_norm)) / (total + 1e-6), max=1.0)
    torch._foreach_mul_(grads, coef.to(grads[0].device))
    return total


def use_one_rank_clipping(engine: Any) -> None:
    """Make a one-rank DeepSpeed `engine` clip its fp32 gradients with `clip_one_rank_gradients` (DeepSpeed calls
    `engine.clip_fp32_gradients()` only for fp32 at ZeRO stage 0, with `gradient_clipping` > 0). Call it only
    where the engine's data-parallel group has one rank: the norm is not combined over ranks."""
    engine.clip_fp32_gradients = lambda: clip_one_rank_gradients(engine.module.parameters(), engine.gradient_clipping())
