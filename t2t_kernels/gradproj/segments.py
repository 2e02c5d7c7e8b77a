"""Blocks over segments of P, for kernels that run one program per block of a segment: a segment of n columns
takes ⌈n / block⌉ blocks (an empty one none), so the grid is Σ_k ⌈P_k / block⌉ ≤ P / block + K programs
whatever the lengths, and each program finds its segment and its block in it from two maps."""
from __future__ import annotations

from collections.abc import Sequence

import torch


def count_blocks(segments: Sequence[int], block: int) -> int:
    """Blocks of `block` columns covering each segment [segments[k], segments[k+1]) (host boundaries)."""
    return sum(-(-(end - start) // block) for start, end in zip(segments, segments[1:]))


def block_maps(offsets: torch.Tensor, block: int, num_blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(segment of each block: int32 [num_blocks], first block of each segment: int64 [K+1], the last entry
    `num_blocks`) for the boundaries `offsets` [K+1] int64, built on their device; `num_blocks` is
    `count_blocks` of the same boundaries, from the host, so nothing is read back from the device."""
    blocks = (offsets.diff() + block - 1) // block
    segment_ids = torch.arange(blocks.numel(), dtype=torch.int32, device=offsets.device)
    first = torch.cat([blocks.new_zeros(1), blocks.cumsum(0)])
    return segment_ids.repeat_interleave(blocks, output_size=num_blocks), first
