"""What every kernel launch of this package shares: running on the tensors' own CUDA device."""
from __future__ import annotations

import contextlib

import torch


def device_guard(tensor: torch.Tensor) -> contextlib.AbstractContextManager:
    """Triton launches on the current CUDA device: make it `tensor`'s (no-op off CUDA; a backward runs on
    autograd's thread for the tensors' device already)."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()
