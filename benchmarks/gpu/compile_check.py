"""Compile every Triton kernel of `t2t_kernels/` for a CUDA target, on a machine without a GPU.

The Triton interpreter that runs the kernel tests on CPU does not enforce what the GPU compiler does (tile
shapes for `tl.dot`, layouts, register limits), so this builds the launch variants the wrappers use all the
way to a cubin with Triton's bundled ptxas: `triton.compile(ASTSource(...), target=GPUTarget("cuda", arch,
32))`. It also checks that the Gram kernel's products run on tensor cores (`mma` in the PTX) and that its
stage-1 loop and the MoE kernels (but the dispatch planning past 64 experts and fp64) keep their tiles in
registers: a per-thread stack frame (`cuobjdump -res-usage` of the cubin) holds register spills, which go through
local memory.

Usage: python benchmarks/gpu/compile_check.py [--arch 90]   (exit status 1 if a variant fails)
Must run without TRITON_INTERPRET=1 (the decorated kernels would be interpreter objects).
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("compile_check: unset TRITON_INTERPRET (the interpreter replaces the compiled kernels)")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton import knobs  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

import t2t_kernels.moe as moe  # noqa: E402  (its launch parameters: _block_n, _tiles, _dispatch_blocks)

# the kernel modules (the packages' attributes of the same names are the public functions)
gp_gram, gp_combine, moe_router, moe_dispatch, moe_combine = (
    importlib.import_module(f"t2t_kernels.{name}") for name in
    ("gradproj.gram", "gradproj.combine", "moe.router", "moe.dispatch", "moe.combine"))


class Variant(NamedTuple):
    """One launch of a kernel: its runtime argument types and constexpr values, a check of the PTX, and whether
    the cubin may spill registers (a stack frame)."""

    name: str
    kernel: Any
    types: Dict[str, str]
    constants: Dict[str, Any]
    num_warps: int = 4
    ptx_check: Callable[[str], bool] = lambda ptx: True
    spills_allowed: bool = True


_ELEMENT_SIZES = {"fp32": 4, "bf16": 2, "fp16": 2}


def _gram_variants() -> List[Variant]:
    def partial(dtype: str, num_tasks: int, precision: str) -> Variant:
        block_t, block_p, fold = gp_gram._block_sizes(num_tasks, _ELEMENT_SIZES[dtype])
        return Variant(f"gradproj.gram partial {dtype} T={num_tasks} {precision}", gp_gram._gram_partial_kernel,
                       {"g_ptr": f"*{dtype}", "ws_ptr": "*fp32", "seg_ptr": "*i64", "chunk_seg_ptr": "*i32",
                        "first_chunk_ptr": "*i64", "T": "i32", "stride_t": "i64", "chunk": "i32"},
                       {"BLOCK_T": block_t, "BLOCK_P": block_p, "FOLD": fold, "UPCAST": False,
                        "PRECISION": precision},
                       ptx_check=lambda ptx: "mma" in ptx, spills_allowed=False)

    def combine(dtype: str, num_tasks: int) -> Variant:
        block_t, block_p = gp_combine._block_sizes(num_tasks)
        return Variant(f"gradproj.combine {dtype} T={num_tasks}", gp_combine._combine_kernel,
                       {"g_ptr": f"*{dtype}", "w_ptr": "*fp32", "out_ptr": f"*{dtype}", "seg_ptr": "*i64",
                        "block_seg_ptr": "*i32", "first_block_ptr": "*i64", "T": "i32", "stride_t": "i64",
                        "scale": "fp32"},
                       {"BLOCK_T": block_t, "BLOCK_P": block_p})

    def reduce(num_tasks: int) -> Variant:
        block_t, _, fold = gp_gram._block_sizes(num_tasks, 4)  # BLOCK_T, FOLD: any element size
        return Variant(f"gradproj.gram reduce T={num_tasks}", gp_gram._gram_reduce_kernel,
                       {"ws_ptr": "*fp32", "out_ptr": "*fp32", "first_chunk_ptr": "*i64", "T": "i32"},
                       {"BLOCK_T": block_t, "FOLD": fold})

    return [partial("bf16", 2, "ieee"), partial("fp16", 64, "ieee"), partial("fp32", 1, "tf32x3"),
            partial("fp32", 2, "tf32x3"), partial("fp32", 8, "tf32x3"), partial("fp32", 16, "tf32x3"),
            partial("fp32", 32, "tf32x3"), partial("fp32", 64, "tf32x3"), reduce(2), reduce(8), reduce(32),
            combine("bf16", 5), combine("fp32", 64)]


def _moe_variants() -> List[Variant]:
    def router(direction: str, dtype: str, k: int, sigmoid: bool, renorm: bool, num_experts: int,
               has_dlse: bool = True) -> Variant:
        block_e = moe._pow2(num_experts)
        consts = {"K": k, "SIGMOID": sigmoid, "RENORM": renorm, "BLOCK_N": moe._block_n(block_e), "BLOCK_E": block_e}
        if direction == "fwd":
            types = {"logits_ptr": f"*{dtype}", "idx_ptr": "*i32", "gates_ptr": "*fp32", "lse_ptr": "*fp32",
                     "counts_ptr": "*i32", "prob_sums_ptr": "*fp32", "N": "i32", "E": "i32", "stride_n": "i32"}
            kernel = moe_router.router_fwd_kernel
        else:
            types = {"logits_ptr": f"*{dtype}", "lse_ptr": "*fp32", "idx_ptr": "*i32", "gates_ptr": "*fp32",
                     "dgates_ptr": "*fp32", "dprob_sums_ptr": "*fp32", "dlse_ptr": "*fp32", "dlogits_ptr": "*fp32",
                     "N": "i32", "E": "i32", "stride_n": "i32", "stride_dn": "i32"}
            kernel = moe_router.router_bwd_kernel
            consts["HAS_DLSE"] = has_dlse
        score = "sigmoid" if sigmoid else "softmax"
        lse = "" if has_dlse else " no-lse-grad"
        return Variant(f"moe.router {direction} {dtype} k={k} {score} renorm={renorm} E={num_experts}{lse}", kernel,
                       types, consts, num_warps=moe._ROUTER_WARPS, spills_allowed=False)

    def combine_bwd(dtype: str, acc: str, k: int = 2) -> Variant:
        return Variant(f"moe.combine bwd {dtype} k={k} d=1024", moe_combine.combine_bwd_kernel,
                       {"dout_ptr": f"*{dtype}", "y_ptr": f"*{dtype}", "dest_ptr": "*i32", "gates_ptr": f"*{acc}",
                        "dy_ptr": f"*{dtype}", "dgates_ptr": f"*{acc}", "N": "i32", "D": "i32", "stride_dout": "i32",
                        "stride_y": "i32", "stride_dy": "i32"},
                       {"K": k, "ACC": tl.float64 if acc == "fp64" else tl.float32, "BLOCK_T": block_t,
                        "BLOCK_D": block_d}, num_warps=moe._COMBINE_BWD_WARPS,
                       spills_allowed=dtype == "fp64")  # fp64: gradcheck only

    def combine_fwd(dtype: str, k: int = 2) -> Variant:
        acc = "fp64" if dtype == "fp64" else "fp32"
        return Variant(f"moe.combine fwd {dtype} k={k} gated d=1024", moe_combine.gather_sum_kernel,
                       {**rows, "y_ptr": f"*{dtype}", "gates_ptr": f"*{acc}", "out_ptr": f"*{dtype}"},
                       {"K": k, "HAS_GATES": True, "ACC": tl.float64 if acc == "fp64" else tl.float32,
                        "BLOCK_T": block_t, "BLOCK_D": block_d}, spills_allowed=dtype == "fp64")

    def permute(dtype: str, k: int = 2) -> Variant:
        return Variant(f"moe.permute {dtype} k={k} d=1024", moe_dispatch.permute_kernel,
                       {"x_ptr": f"*{dtype}", "dest_ptr": "*i32", "out_ptr": f"*{dtype}", "N": "i32", "D": "i32",
                        "stride_x": "i32", "stride_out": "i32"}, {"K": k, "BLOCK_T": block_t, "BLOCK_D": block_d},
                       spills_allowed=False)

    def dispatch(num_experts: int) -> List[Variant]:
        block_a, block_b = moe._dispatch_blocks(num_experts)
        return [
            Variant(f"moe.dispatch rank k=2 E={num_experts}", moe_dispatch.dispatch_rank_kernel,
                    {"idx_ptr": "*i32", "local_rank_ptr": "*i32", "hist_ptr": "*i32", "N": "i32", "E": "i32"},
                    {"K": 2, "BLOCK_A": block_a, "BLOCK_E": num_experts}),
            Variant(f"moe.dispatch scan E={num_experts}", moe_dispatch.dispatch_scan_kernel,
                    {"hist_ptr": "*i32", "block_offsets_ptr": "*i32", "counts_ptr": "*i32", "kept_ptr": "*i32",
                     "offsets_ptr": "*i32", "num_blocks": "i32", "E": "i32", "capacity": "i32"},
                    {"BLOCK_B": block_b, "BLOCK_E": num_experts}),
            Variant(f"moe.dispatch dest k=2 E={num_experts}", moe_dispatch.dispatch_dest_kernel,
                    {"idx_ptr": "*i32", "local_rank_ptr": "*i32", "block_offsets_ptr": "*i32", "offsets_ptr": "*i32",
                     "dest_ptr": "*i32", "row_src_ptr": "*i32", "N": "i32", "E": "i32", "capacity": "i32"},
                    {"K": 2, "BLOCK_A": block_a}),
        ]

    block_t, block_d = moe._tiles(1024)
    rows = {"y_ptr": "*bf16", "dest_ptr": "*i32", "gates_ptr": "*fp32", "out_ptr": "*bf16", "N": "i32", "D": "i32",
            "stride_y": "i32", "stride_out": "i32"}
    return [
        router("fwd", "fp32", 2, False, True, 8), router("fwd", "bf16", 1, True, False, 61),
        router("bwd", "fp32", 2, False, True, 8), router("bwd", "fp32", 2, True, True, 32),
        router("bwd", "bf16", 1, False, False, 64), router("bwd", "fp32", 2, True, False, 16, has_dlse=False),
        router("fwd", "fp32", 8, False, True, 64), router("bwd", "fp32", 2, False, True, 64),
        router("fwd", "bf16", 64, False, True, 64), router("bwd", "bf16", 64, True, True, 64),  # k up to E = 64
        *dispatch(64), *dispatch(16384),
        permute("bf16"), permute("fp32"), permute("bf16", 64),  # fp32: what benchmarks/moe.py runs; k up to E = 64
        combine_fwd("bf16"), combine_fwd("fp32"), combine_fwd("fp64"), combine_fwd("bf16", 8), combine_fwd("bf16", 64),
        Variant("moe.permute bwd fp32 k=1 d=48", moe_combine.gather_sum_kernel,
                {**rows, "y_ptr": "*fp32", "gates_ptr": "*i32", "out_ptr": "*fp32"},
                {"K": 1, "HAS_GATES": False, "ACC": tl.float32, "BLOCK_T": block_t, "BLOCK_D": moe._tiles(48)[1]}),
        combine_bwd("bf16", "fp32"), combine_bwd("fp32", "fp32"), combine_bwd("fp64", "fp64"),
        combine_bwd("bf16", "fp32", 64),
    ]


def variants() -> List[Variant]:
    """The launch variants checked: every kernel, the dtypes and the constexpr branches the wrappers use."""
    return _gram_variants() + _moe_variants()


def compile_variant(variant: Variant, arch: int) -> Any:
    """Build one variant to a cubin for `sm_<arch>`; the signature lists every argument in order."""
    arg_names = variant.kernel.arg_names
    missing = [a for a in arg_names if a not in variant.types and a not in variant.constants]
    if missing:
        raise ValueError(f"{variant.name}: no type or value for kernel arguments {missing}")
    signature = {a: variant.types.get(a, "constexpr") for a in arg_names}
    source = ASTSource(fn=variant.kernel, signature=signature, constexprs=dict(variant.constants))
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": variant.num_warps})


def stack_bytes(cubin: bytes) -> int:
    """Per-thread stack frame of the kernel in `cubin` (where ptxas puts register spills), from cuobjdump."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as handle:
            handle.write(cubin)
        usage = subprocess.run([knobs.nvidia.cuobjdump.path, "-res-usage", path], capture_output=True, text=True,
                               check=True).stdout
    return int(re.search(r"STACK:(\d+)", usage).group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability ×10 (90 = H100/H200)")
    args = parser.parse_args()
    print(f"# triton {triton.__version__}, target sm_{args.arch}")
    failures = 0
    for variant in variants():
        start = time.perf_counter()
        try:
            compiled = compile_variant(variant, args.arch)
            if "cubin" not in compiled.asm:
                raise RuntimeError("no cubin produced")
            if not variant.ptx_check(compiled.asm["ptx"]):
                raise RuntimeError("PTX check failed (expected tensor-core mma instructions)")
            stack = stack_bytes(compiled.asm["cubin"])
            if stack and not variant.spills_allowed:
                raise RuntimeError(f"{stack} B stack frame per thread: registers spill to local memory "
                                   f"(make the tile smaller)")
            print(f"ok    {variant.name} ({time.perf_counter() - start:.1f} s, "
                  f"{compiled.metadata.shared} B shared, {stack} B stack)", flush=True)
        except Exception as err:  # report every variant, then fail
            failures += 1
            print(f"FAIL  {variant.name}: {type(err).__name__}: {str(err).strip()[:2000]}", flush=True)
    print(f"{failures} of {len(variants())} variants failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
