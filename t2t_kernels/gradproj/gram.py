"""Triton Gram kernel: G = g gᵀ for per-task gradients g [T, P], optionally one Gram per segment of P.

Two deterministic stages. Stage 1 cuts every segment's P range into chunks of one length for all segments
(`num_splits` chunks over the whole of P, a segment taking ⌈P_k / chunk⌉ of them: one long segment among many
short ones, as with a segment per parameter tensor, is spread over many programs instead of being left to one);
one program per chunk, on a 1-D grid (CUDA caps grid dimensions y and z at 65535, and a segment per parameter
tensor can pass that; `segments.py`), walks its chunk in [BLOCK_T, BLOCK_P] tiles (rows past the tasks and
columns past the chunk masked to zero) and accumulates `tile @ tileᵀ` in fp32 into its own slot of a workspace.
Stage 2 sums the slots of a segment in a fixed order, so the result does not depend on scheduling. All offsets
into P are int64.

`tl.dot` needs at least 16 rows. Fewer tasks are folded rather than zero-padded: with T padded to the power of
two T' < 16, a tile's row t·F + f (F = 16 / T') holds task t's f-th consecutive BLOCK_P columns of the step,
so a step covers F·BLOCK_P columns and every loaded row is real data. `tile @ tileᵀ` then also holds products
of different column blocks, which stage 2 leaves out: G[t, u] = Σ_f acc[t·F + f, u·F + f]. Padding instead
would spend (16 / T)² products per element loaded and, at T = 2 in fp32 (three TF32 passes), need more tensor
core throughput than an H100/H200 has to keep up with its HBM bandwidth.

Products: on a GPU, bf16/fp16 tiles go to `tl.dot` as they are (their products are exact in the fp32
accumulator) and fp32 tiles use the 3-pass TF32 split ("tf32x3", ~fp32 accuracy on tensor cores) on NVIDIA
or IEEE fp32 elsewhere; under the interpreter every tile is upcast to fp32 first (its bf16 arithmetic is
wrong) and multiplied in IEEE fp32. A tile holds 8 KiB (BLOCK_P = 8192 / (BLOCK_T · element size)): 16 KiB fp32
tiles spill registers to local memory in the TF32×3 split on sm_90 (`benchmarks/gpu/compile_check.py` checks).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .segments import block_maps, count_blocks

INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
_MIN_DOT_ROWS = 16  # tl.dot needs tiles of at least 16 rows; smaller T is folded (module docstring)
_TILE_BYTES = 8192  # one [BLOCK_T, BLOCK_P] tile (module docstring)


@triton.jit
def _gram_partial_kernel(
    g_ptr, ws_ptr, seg_ptr, chunk_seg_ptr, first_chunk_ptr, T, stride_t, chunk,
    BLOCK_T: tl.constexpr, BLOCK_P: tl.constexpr, FOLD: tl.constexpr, UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
):
    slot = tl.program_id(0).to(tl.int64)
    seg = tl.load(chunk_seg_ptr + slot).to(tl.int64)
    lo = tl.load(seg_ptr + seg).to(tl.int64) + (slot - tl.load(first_chunk_ptr + seg)) * chunk
    hi = tl.minimum(lo + chunk, tl.load(seg_ptr + seg + 1).to(tl.int64))
    step = BLOCK_P * FOLD

    rows = tl.arange(0, BLOCK_T)
    task = rows // FOLD
    row_mask = task < T
    row_base = g_ptr + task.to(tl.int64)[:, None] * stride_t
    row_cols = (rows % FOLD).to(tl.int64)[:, None] * BLOCK_P + tl.arange(0, BLOCK_P).to(tl.int64)[None, :]
    acc = tl.zeros((BLOCK_T, BLOCK_T), dtype=tl.float32)
    for start in range(lo, hi, step):
        p = start + row_cols
        mask = row_mask[:, None] & (p < hi)
        tile = tl.load(row_base + p, mask=mask, other=0.0)
        if UPCAST:
            tile = tile.to(tl.float32)
        acc = tl.dot(tile, tl.trans(tile), acc, input_precision=PRECISION, out_dtype=tl.float32)

    offs = tl.arange(0, BLOCK_T)[:, None] * BLOCK_T + tl.arange(0, BLOCK_T)[None, :]
    tl.store(ws_ptr + slot * (BLOCK_T * BLOCK_T) + offs, acc)


@triton.jit
def _gram_reduce_kernel(ws_ptr, out_ptr, first_chunk_ptr, T, BLOCK_T: tl.constexpr, FOLD: tl.constexpr):
    seg = tl.program_id(0).to(tl.int64)
    tasks = tl.arange(0, BLOCK_T // FOLD)
    acc = tl.zeros((BLOCK_T // FOLD, BLOCK_T // FOLD), dtype=tl.float32)
    for slot in range(tl.load(first_chunk_ptr + seg), tl.load(first_chunk_ptr + seg + 1)):
        base = ws_ptr + slot * (BLOCK_T * BLOCK_T)
        for fold in tl.static_range(FOLD):
            rows = tasks * FOLD + fold
            acc += tl.load(base + rows[:, None] * BLOCK_T + rows[None, :])
    mask = (tasks < T)[:, None] & (tasks < T)[None, :]
    tl.store(out_ptr + seg * T * T + tasks[:, None] * T + tasks[None, :], acc, mask=mask)


def _block_sizes(num_tasks: int, element_size: int) -> tuple[int, int, int]:
    """(BLOCK_T tile rows, BLOCK_P columns per row, FOLD column blocks per task) for T tasks of gradients of
    `element_size` bytes."""
    padded = triton.next_power_of_2(num_tasks)
    block_t = max(_MIN_DOT_ROWS, padded)
    block_p = max(32, _TILE_BYTES // element_size // block_t)
    return block_t, block_p, block_t // padded


def _dot_mode(grads: torch.Tensor) -> tuple[bool, str]:
    """(upcast tiles to fp32 before tl.dot, tl.dot input precision) for this input."""
    if INTERPRETING or grads.device.type != "cuda":
        return True, "ieee"
    if grads.dtype != torch.float32:
        return False, "ieee"  # bf16/fp16 products are exact in the fp32 accumulator
    return False, "tf32x3" if torch.version.hip is None else "ieee"


def _default_num_splits(grads: torch.Tensor, num_params: int, step: int) -> int:
    """Stage-1 chunks over P: about 4 programs per SM (4 under the interpreter), at most one per tile."""
    if INTERPRETING or grads.device.type != "cuda":
        target_programs = 4  # every interpreted program costs ~0.5 ms
    else:
        target_programs = 4 * torch.cuda.get_device_properties(grads.device).multi_processor_count
    return max(1, min(triton.cdiv(num_params, step), target_programs))


def gram_triton(grads: torch.Tensor, offsets: torch.Tensor, segments: list[int], num_splits: int | None = None
                ) -> torch.Tensor:
    """[K, T, T] fp32 Grams of `grads` [T, P] (unit stride along P) over the K segments `offsets` [K+1] (int64,
    on the grads' device; `segments` holds the same boundaries on the host, so nothing is read back from the
    device). `num_splits`: the chunks P is cut into (None: chosen from the device). Inputs are validated by
    `t2t_kernels.gradproj.gram`."""
    num_tasks, num_params = grads.shape
    num_segments = offsets.numel() - 1
    block_t, block_p, fold = _block_sizes(num_tasks, grads.element_size())
    step = block_p * fold
    if num_splits is None:
        num_splits = _default_num_splits(grads, num_params, step)
    chunk = step * max(1, triton.cdiv(triton.cdiv(num_params, num_splits), step))
    num_chunks = count_blocks(segments, chunk)
    chunk_seg, first_chunk = block_maps(offsets, chunk, num_chunks)
    workspace = torch.empty(num_chunks * block_t * block_t, dtype=torch.float32, device=grads.device)
    out = torch.empty(num_segments, num_tasks, num_tasks, dtype=torch.float32, device=grads.device)
    upcast, precision = _dot_mode(grads)
    if num_chunks:
        _gram_partial_kernel[(num_chunks,)](
            grads, workspace, offsets, chunk_seg, first_chunk, num_tasks, grads.stride(0), chunk,
            BLOCK_T=block_t, BLOCK_P=block_p, FOLD=fold, UPCAST=upcast, PRECISION=precision, num_warps=4,
        )
    _gram_reduce_kernel[(num_segments,)](workspace, out, first_chunk, num_tasks, BLOCK_T=block_t, FOLD=fold,
                                         num_warps=4)
    return out
