"""Benchmark: MoE router + dispatch + combine (ours) against DeepSpeed's top-k gating.

For N tokens of width d, E experts and top-k, each method computes router logits x·W_r, gates, routes the
tokens into per-expert buffers and combines them back (the experts are the identity, so only routing is
measured). Methods:
- `ours`: `t2t_kernels.moe` route → plan_dispatch → permute → combine (Triton on CUDA, the PyTorch reference
  path on CPU); compact expert-contiguous buffer of ≤ N·k rows;
- `ds-sparse`: DeepSpeed's `TopKGate` with `sparse_routes=True` + `_route_slots` / `_sparse_encode` /
  `_sparse_decode` — exactly what `deepspeed.moe.sharded_moe.MOELayer.forward` runs on one rank;
- `ds-einsum`: DeepSpeed's `TopKGate` with dense `[S, E, C]` combine weights and dispatch mask and
  `einsum("sec,sm->ecm")` dispatch / `einsum("sec,ecm->sm")` combine (GShard formulation); skipped where
  those tensors would not fit the memory budget (`--ds-einsum-budget-gb`); timed once (it takes seconds).
All use capacity factor 1.25 (min capacity 4) and drop over-capacity tokens. Reported: the fastest of
`--repeats` timed calls (wall clock; on CUDA the device is synchronised before and after each call) of the
forward and of forward+backward (d loss / d x, W_r with loss = Σ out·g), and the peak extra memory of one
forward+backward: on CPU the process's peak resident set (VmHWM after resetting it, glibc mapping every block
afresh during that call and keeping the timed calls' policy steady: `benchmarks/cpu_memory.py`), on CUDA
`torch.cuda.max_memory_allocated`.

Usage: python benchmarks/moe.py [--quick] [--device cpu|cuda] [--threads T] [--repeats R] [--n 4096,16384]
       [--e 8,32] [--d 512] [--k 1,2] [--methods ours,ds-sparse,ds-einsum]
"""
from __future__ import annotations

import argparse
import gc
import itertools
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # cpu_memory, beside this script
os.environ.setdefault("DS_ACCELERATOR", "cpu" if "--device" not in sys.argv or "cpu" in sys.argv else "cuda")

import cpu_memory  # noqa: E402
from t2t_kernels.moe import combine, expert_capacity, permute, plan_dispatch, route  # noqa: E402
from t2t_mtl.cli.common import below_one, comma_list_argument  # noqa: E402

CAPACITY_FACTOR = 1.25
MIN_CAPACITY = 4
METHODS = ("ours", "ds-sparse", "ds-einsum")


# ------------------------------------------------------------------------------------------- methods
def ours(x: torch.Tensor, w_router: torch.Tensor, k: int, backend: str = "auto") -> torch.Tensor:
    """`w_router` [E, d] in `nn.Linear` layout, as `MoEFeedForward` and DeepSpeed's gate hold it (its weight
    gradient is then grad·x, a fast GEMM; x.T·grad is up to 20× slower on CPU at E = 8)."""
    logits = torch.nn.functional.linear(x.float(), w_router)
    n, e = logits.shape
    routed = route(logits, k, backend=backend)
    plan = plan_dispatch(routed.topk_idx, e, expert_capacity(n, e, k, CAPACITY_FACTOR, MIN_CAPACITY),
                         backend=backend, check_ids=False)  # route's ids are in range: as the MoE layer calls it
    rows = permute(x, plan, backend=backend)
    return combine(rows, plan, routed.gates, backend=backend)


def kernel_error(n: int, e: int, d: int, k: int, device: str) -> float:
    """Max relative difference of `ours` (output and d/dx) between the default backend (Triton on CUDA) and
    the PyTorch reference on the same inputs."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, d, generator=g).to(device)
    w = (torch.randn(e, d, generator=g) * d ** -0.5).to(device)
    upstream = torch.randn(n, d, generator=g).to(device)
    results = []
    for backend in ("auto", "reference"):
        xb = x.clone().requires_grad_(True)
        out = ours(xb, w, k, backend)
        (out * upstream).sum().backward()
        results.append(torch.cat([out.detach().reshape(-1), xb.grad.reshape(-1)]))
    return float((results[0] - results[1]).abs().max() / results[1].abs().max())


def _ds_gate(d: int, e: int, k: int, w: torch.Tensor):
    from deepspeed.moe.sharded_moe import TopKGate
    gate = TopKGate(d, e, k=k, capacity_factor=CAPACITY_FACTOR, eval_capacity_factor=CAPACITY_FACTOR,
                    min_capacity=MIN_CAPACITY).to(w.device)
    gate.wg.weight = torch.nn.Parameter(w.t().contiguous(), requires_grad=w.requires_grad)
    return gate


def ds_sparse(x: torch.Tensor, gate, k: int) -> torch.Tensor:
    from deepspeed.moe.sharded_moe import _route_slots, _sparse_decode, _sparse_encode
    _l_aux, cap, e, indices, locations, gates, _counts = gate(x, None, True)
    cap = int(cap)
    slots = _route_slots(indices, locations, e, cap)
    dispatched = _sparse_encode(x, slots, e, cap)
    return _sparse_decode(dispatched.view(e * cap, -1), slots, gates, x.shape[0])


def ds_einsum(x: torch.Tensor, gate, k: int) -> torch.Tensor:
    _l_aux, combine_weights, dispatch_mask, _counts = gate(x, None, False)
    dispatched = torch.einsum("sec,sm->ecm", dispatch_mask.type_as(x), x)
    return torch.einsum("sec,ecm->sm", combine_weights.type_as(x), dispatched)


def ds_einsum_bytes(n: int, e: int, k: int, d: int) -> int:
    """Rough size of DeepSpeed's dense tensors: [S,E,C] one-hot/combine (fp32, several copies) + [E,C,d]."""
    cap = max(math.ceil(n / e * CAPACITY_FACTOR * k), MIN_CAPACITY)
    return 4 * n * e * cap * (4 + 2 * k) + 4 * e * cap * d


# ------------------------------------------------------------------------------------------ measuring
class PeakMemory:
    """Peak extra memory of a call: CUDA allocator peak, or the CPU process's VmHWM over its VmRSS
    (cpu_memory.peak_resident_bytes); on CPU the timed calls run under cpu_memory.steady_policy from the
    construction on."""

    def __init__(self, device: str) -> None:
        self.device = device
        if device == "cpu":
            cpu_memory.steady_policy()

    def measure(self, fn: Callable[[], None]) -> int:
        gc.collect()
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fn()
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - base
        return cpu_memory.peak_resident_bytes(fn)[0]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def best_time(fn: Callable[[], None], device: str, repeats: int, warmup: bool = True) -> float:
    """Fastest of `repeats` timed calls (the least disturbed by other processes on a shared machine)."""
    if warmup:
        fn()  # Triton compilation, allocator
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def run_case(method: str, n: int, e: int, d: int, k: int, device: str, repeats: int, peak: PeakMemory
             ) -> Dict[str, float]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g).to(device).requires_grad_(True)
    w = (torch.randn(d, e, generator=g) * d ** -0.5).to(device).requires_grad_(True)
    upstream = torch.randn(n, d, generator=g).to(device)
    if method == "ours":
        w = w.detach().t().contiguous().requires_grad_(True)

        def forward() -> torch.Tensor:
            return ours(x, w, k)
    else:
        gate = _ds_gate(d, e, k, w)
        fn = ds_sparse if method == "ds-sparse" else ds_einsum

        def forward() -> torch.Tensor:
            return fn(x, gate, k)

    def fwd() -> None:
        with torch.no_grad():
            forward()

    def fwd_bwd() -> None:
        out = forward()
        (out * upstream).sum().backward()
        x.grad = None
        for p in ([w] if method == "ours" else list(gate.parameters())):
            p.grad = None

    if method == "ds-einsum":  # seconds per call: one timed run, no warm-up (nothing to compile)
        repeats, warmup = 1, device == "cuda"
    else:
        warmup = True
    result = {"fwd_s": best_time(fwd, device, repeats, warmup),
              "fwd_bwd_s": best_time(fwd_bwd, device, repeats, warmup), "peak_bytes": peak.measure(fwd_bwd)}
    del x, w, upstream
    gc.collect()
    return result


def _method(name: str) -> str:
    """A name of METHODS (any other would run as DeepSpeed's einsum gating, unbudgeted, under its own label)."""
    if name not in METHODS:
        raise ValueError(f"{name} is not one of {', '.join(METHODS)}")
    return name


def _size(text: str) -> int:
    """An N, E, d or k value: an integer of at least 1."""
    size = int(text)
    if size < 1:
        raise ValueError(f"{text} is below 1")
    return size


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N=4k only, E∈{8,64}, d=512")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ds-einsum-budget-gb", type=float, default=2.0)
    # (a list default: argparse converts a string default, and the conversion imports task_registry, which the GPU
    # pass's image may lack the dependencies of)
    parser.add_argument("--methods", type=comma_list_argument("--methods", "methods", _method),
                        default=list(METHODS), help=f"comma-separated of {', '.join(METHODS)} (default: all three)")
    for flag in ("n", "e", "d", "k"):
        parser.add_argument(f"--{flag}", type=comma_list_argument(f"--{flag}", f"{flag.upper()} values", _size),
                            default=None, help=f"comma-separated {flag.upper()} values (override)")
    args = parser.parse_args(argv)
    invalid = below_one(args, ("repeats", "threads"))
    if invalid:
        parser.error(invalid)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here", file=sys.stderr)
        return 2
    sizes_n = [4096] if args.quick else [4096, 16384, 65536]
    sizes_e = [8, 64] if args.quick else [8, 32, 64]
    sizes_d = [512] if args.quick else [512, 1024]
    sizes_k = [1, 2]
    sizes_n, sizes_e, sizes_d, sizes_k = args.n or sizes_n, args.e or sizes_e, args.d or sizes_d, args.k or sizes_k
    methods = args.methods
    if any(m.startswith("ds-") for m in methods):
        try:
            import deepspeed.moe.sharded_moe  # noqa: F401
        except Exception as err:  # the peer is optional (missing, or broken on import): our rows still print
            print(f"# DeepSpeed is not importable ({type(err).__name__}: {err}): its methods are skipped")
            methods = [m for m in methods if not m.startswith("ds-")]
    peak = PeakMemory(args.device)
    print(f"# device={args.device} threads={torch.get_num_threads()} torch={torch.__version__} "
          f"capacity_factor={CAPACITY_FACTOR} repeats={args.repeats}")
    header = ["N", "E", "d", "k"] + [f"{m} {col}" for m in methods for col in ("fwd ms", "fwd+bwd ms", "peak MB")]
    header += [f"{m}/ours fwd+bwd" for m in methods if m != "ours"]
    if args.device == "cuda" and "ours" in methods:
        header.append("ours Triton vs reference max rel err")
    ms = "{:.3f}" if args.device == "cuda" else "{:.1f}"
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    ours_failed = False
    for n, e, d, k in itertools.product(sizes_n, sizes_e, sizes_d, sizes_k):
        row = [str(n), str(e), str(d), str(k)]
        results = {}
        for method in methods:
            if method == "ds-einsum" and ds_einsum_bytes(n, e, k, d) > args.ds_einsum_budget_gb * 2 ** 30:
                results[method] = None
                need = ds_einsum_bytes(n, e, k, d) / 2 ** 30
                row += [f"skip (~{need:.0f} GB)", "", ""]
                continue
            try:
                r = run_case(method, n, e, d, k, args.device, args.repeats, peak)
            except Exception as err:  # one method failing on one case must not take the whole table with it
                print(f"# {method} failed at N={n} E={e} d={d} k={k}: {type(err).__name__}: {err}", flush=True)
                ours_failed |= method == "ours"
                results[method] = None
                row += ["error", "", ""]
                continue
            results[method] = r
            row += [ms.format(r['fwd_s'] * 1e3), ms.format(r['fwd_bwd_s'] * 1e3), f"{r['peak_bytes'] / 2 ** 20:.0f}"]
        for method in methods:
            if method == "ours":
                continue
            r = results.get(method)
            row.append(f"{r['fwd_bwd_s'] / results['ours']['fwd_bwd_s']:.1f}×" if r and results.get("ours") else "")
        if args.device == "cuda" and "ours" in methods:
            row.append(f"{kernel_error(n, e, d, k, args.device):.1e}" if results["ours"] else "")
        print("| " + " | ".join(row) + " |", flush=True)
    return 1 if ours_failed else 0


if __name__ == "__main__":
    sys.exit(main())
