"""Gram-space PCGrad vs the textbook pairwise loop, TorchJD's PCGrad aggregator and LibMTL's PCGrad.

    python benchmarks/gradproj.py                 # CPU, T ∈ {2,4,8,16,32} × P ∈ {1e6,1e7} (~6 min on 2 cores)
    python benchmarks/gradproj.py --quick         # CPU, a few sizes (~1 min)
    python benchmarks/gradproj.py --device cuda   # GPU: Triton Gram/combine bandwidth, up to P = 1e9

Every contender gets the same fp32 [T, P] task gradients and returns the combined update [P]:
- ours: `t2t_kernels.gradproj.gram` (reference path on CPU, Triton on CUDA) → host float64 PCGrad on the T×T Gram
  (one transfer of T² numbers) → `t2t_kernels.gradproj.combine` into a preallocated flat gradient;
- textbook: `t2t_mtl.gradients.textbook.pcgrad`, the paper's pairwise loop on full vectors (same orders);
- torchjd: `torchjd.aggregation.PCGrad()(grads)` (Gram → per-pair loop over torch scalars → combine);
- libmtl: LibMTL's `PCGrad.backward` loop fed the same gradient matrix. LibMTL's package __init__ imports
  torchvision (absent here: it would pull another torch), so its `weighting` subpackage is loaded with the
  top-level __init__ bypassed; its PCGrad code runs unchanged. Install with `pip install --no-deps libmtl`.
CPU times are process CPU seconds with one torch thread (`--threads`), so that other jobs on a shared machine
do not inflate them; GPU times are CUDA-event/wall times (the bandwidth columns: per call, from 10 calls in a
row, so a single call's launch latency does not count as kernel time; where the host's own work per call is about
as long, the GPU waited for it and the share of peak is marked as a lower bound, "host-bound"). Peak memory is
the extra resident memory (CPU: VmHWM − VmRSS after resetting the high-water mark, glibc mapping every block
afresh during that call: benchmarks/cpu_memory.py) or the extra CUDA allocation during one call. The last section
times a whole training step of a small T5 with 4 task micro-batches, with and without surgery.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
import types
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # cpu_memory, beside this script

import cpu_memory  # noqa: E402
import t2t_kernels.gradproj as gradproj  # noqa: E402
import t2t_kernels.gradproj.reference as gradproj_reference  # noqa: E402
from t2t_mtl.cli.common import below_one, comma_list_argument  # noqa: E402
from t2t_mtl.gradients import GradientSurgery, pcgrad_weights, random_orders, textbook  # noqa: E402

SLOW_SECONDS = 2.0  # contenders slower than this are timed once
BACK_TO_BACK = 10  # GPU: kernel time per call = CUDA-event time of this many consecutive calls / this many
HOST_BOUND = 0.8  # GPU: a kernel time under 1 / this of the host's own time per call was set by the host


# ------------------------------------------------------------------------------------------------ contenders

def clock_for(device: str) -> Callable[[], float]:
    return time.perf_counter if device == "cuda" else time.process_time


def ours(grads: torch.Tensor, out: torch.Tensor, orders: list[list[int]]) -> dict[str, float]:
    """Gram → host PCGrad weights → combine; returns the time of each phase."""
    sync = torch.cuda.synchronize if grads.is_cuda else (lambda: None)
    clock = clock_for(grads.device.type)
    t0 = clock()
    gram = gradproj.gram(grads)
    host = gram.to("cpu", torch.float64).numpy()
    t1 = clock()
    weights = pcgrad_weights(0.5 * (host + host.T), orders)
    t2 = clock()
    gradproj.combine(weights, grads, out=out)
    sync()
    t3 = clock()
    return {"gram": t1 - t0, "solve": t2 - t1, "combine": t3 - t2, "total": t3 - t0}


def torchjd_pcgrad() -> Callable[[torch.Tensor], torch.Tensor] | None:
    """TorchJD's PCGrad aggregator, or None (with the reason printed) where torchjd is missing or fails on import."""
    try:
        from torchjd.aggregation import PCGrad
    except Exception as err:  # the peer is optional: our rows still print
        print(f"# torchjd is not importable ({type(err).__name__}: {err}): its column is left out")
        return None
    return PCGrad()


def libmtl_pcgrad() -> tuple[Callable[[torch.Tensor], torch.Tensor] | None, str]:
    """LibMTL's PCGrad loop on a given gradient matrix, or None and the reason."""
    spec = importlib.util.find_spec("LibMTL")
    if spec is None:
        return None, "not installed (pip install --no-deps libmtl)"
    note = ""
    try:
        import LibMTL  # noqa: F401
    except ImportError as err:  # torchvision missing: load the weighting subpackage without LibMTL/__init__
        sys.modules.pop("LibMTL", None)
        package = types.ModuleType("LibMTL")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["LibMTL"] = package
        note = f"package __init__ bypassed ({err})"
    from LibMTL.weighting.PCGrad import PCGrad

    class FixedGradsPCGrad(PCGrad):
        """LibMTL's PCGrad.backward with the per-task gradient computation replaced by a given matrix."""

        def __init__(self, grads: torch.Tensor) -> None:
            super().__init__()
            self.task_num, self.rep_grad, self.fixed, self.result = grads.shape[0], False, grads, None

        def _compute_grad_dim(self) -> None:
            self.grad_dim = self.fixed.shape[1]

        def _compute_grad(self, losses, mode, rep_grad=False):
            return self.fixed

        def _reset_grad(self, new_grads: torch.Tensor) -> None:
            self.result = new_grads

    def run(grads: torch.Tensor) -> torch.Tensor:
        method = FixedGradsPCGrad(grads)
        method.backward([None] * grads.shape[0])
        return method.result

    return run, note


# ------------------------------------------------------------------------------------------------ measuring

def measure(fn: Callable[[], object], device: str, repeats: int) -> tuple[float, float, object]:
    """(best seconds, peak extra MB, last result) of `fn`: the peak of a first, untimed call (CPU:
    cpu_memory.peak_resident_bytes; CUDA: the allocator's), then the fastest of `repeats` timed calls (on CPU under
    cpu_memory.steady_policy), stopping after one slower than SLOW_SECONDS."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        grown = torch.cuda.max_memory_allocated() - base
    else:
        grown = cpu_memory.peak_resident_bytes(fn)[0]
    best, result, clock = float("inf"), None, clock_for(device)
    for _ in range(repeats):
        t0 = clock()
        result = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed = clock() - t0
        best = min(best, elapsed)
        if elapsed > SLOW_SECONDS:
            break
    return best, grown / 2 ** 20, result


def conflicting(num_tasks: int, num_params: int, device: str, dtype=torch.float32) -> torch.Tensor:
    gen = torch.Generator(device=device).manual_seed(0)
    grads = torch.randn(num_tasks, num_params, generator=gen, device=device, dtype=dtype)
    grads[1::2] -= 0.5 * grads[0]  # odd tasks lean against task 0: PCGrad projects
    return grads


def cpu_table(sizes_t: list[int], sizes_p: list[int], repeats: int, skip_textbook_over: int) -> list[str]:
    jd = torchjd_pcgrad()
    libmtl, libmtl_note = libmtl_pcgrad()
    if libmtl_note:
        print(f"# libmtl: {libmtl_note}")
    rows = ["| T | P | ours (ms) | gram / solve / combine (ms) | textbook (ms) | torchjd (ms) | libmtl (ms) | "
            "vs textbook | vs torchjd | vs libmtl | peak MB ours / textbook / torchjd / libmtl |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in sizes_p:
        for t in sizes_t:
            grads = conflicting(t, p, "cpu")
            out = torch.empty(p)
            orders = random_orders(np.random.default_rng(0), t)
            calls: list[dict[str, float]] = []

            def run_ours():
                calls.append(ours(grads, out, orders))
                return out

            t_ours, m_ours, res = measure(run_ours, "cpu", repeats)
            phases = min(calls[1:], key=lambda phase: phase["total"])  # the fastest timed call's (0: memory)
            ref_norm = float(res.norm())
            cells = {}
            for name, fn in [("textbook", (lambda: textbook.pcgrad(grads, orders)) if t * t * p <= skip_textbook_over
                              else None), ("torchjd", (lambda: jd(grads)) if jd else None),
                             ("libmtl", (lambda: libmtl(grads)) if libmtl else None)]:
                if fn is None:
                    cells[name] = None
                    continue
                secs, mem, other = measure(fn, "cpu", repeats)
                if name == "textbook":  # same orders: must agree
                    err = float((other - res).norm()) / ref_norm
                    assert err < 1e-3, f"textbook disagrees with ours: {err}"  # fp32 sums over P differ
                cells[name] = (secs, mem)

            def ms(cell):
                return "—" if cell is None else f"{1e3 * cell[0]:.1f}"

            def ratio(cell):
                return "—" if cell is None else f"{cell[0] / t_ours:.1f}×"

            def mem(cell):
                return "—" if cell is None else f"{cell[1]:.0f}"

            row = (f"| {t} | {p:.0e} | {1e3 * t_ours:.1f} | {1e3 * phases['gram']:.1f} / {1e3 * phases['solve']:.2f} / "
                   f"{1e3 * phases['combine']:.1f} | {ms(cells['textbook'])} | {ms(cells['torchjd'])} | "
                   f"{ms(cells['libmtl'])} | {ratio(cells['textbook'])} | {ratio(cells['torchjd'])} | "
                   f"{ratio(cells['libmtl'])} | {m_ours:.0f} / {mem(cells['textbook'])} / {mem(cells['torchjd'])} / "
                   f"{mem(cells['libmtl'])} |")
            rows.append(row)
            print(row, flush=True)
            del grads, out
    return rows


# ------------------------------------------------------------------------------------------------ GPU

def peak_bandwidth_gbps(name: str) -> float | None:
    """Datasheet HBM bandwidth of the device CUDA names `name`, or None. The first key found in the name wins,
    so a name that holds another key comes before it (GH200 holds H200; the GH200 with 144 GB HBM3e has 4900)."""
    table = {"GH200": 4000, "H200": 4800, "H100 80GB HBM3": 3350, "H100 PCIe": 2000, "H100 NVL": 3900,
             "H100": 3350, "A100-SXM4-80GB": 2039, "A100 80GB PCIe": 1935, "A100": 1555, "L40S": 864, "A10G": 600,
             "V100": 900}
    for key, value in table.items():
        if key in name:
            return float(value)
    return None


def kernel_errors(grads: torch.Tensor, weights: torch.Tensor, gram: torch.Tensor, combined: torch.Tensor) -> str:
    """Max relative errors of the Triton Gram and combine against the PyTorch reference on the same device
    (cuBLAS GEMM/GEMV with fp32 accumulation) — at P·T beyond 2^31 this checks the int64 offsets too."""
    p = grads.shape[1]
    ref_gram = gradproj_reference.gram_reference(grads, [0, p])[0]
    ref_comb = gradproj_reference.combine_reference(weights[None].float(), grads, [0, p],
                                                    torch.empty(p, device=grads.device), 1.0)
    gram_err = float((gram - ref_gram).abs().max() / ref_gram.abs().max())
    comb_err = float((combined.float() - ref_comb).abs().max() / ref_comb.abs().max())
    return f"{gram_err:.1e} / {comb_err:.1e}"


def host_ms_per_call(call: Callable[[], object]) -> float:
    """The host's own time per call (ms) of BACK_TO_BACK calls of `call`, which only queue their kernels."""
    start = time.perf_counter()
    for _ in range(BACK_TO_BACK):
        call()
    return (time.perf_counter() - start) * 1e3 / BACK_TO_BACK


def share_of_peak(gbps: float, peak: float | None, kernel_ms: float, host_ms: float) -> str:
    """`gbps` as a share of `peak` GB/s; where the host's time per call came near the kernel time the events read,
    the GPU waited for launches, so the share is marked as a lower bound (host-bound)."""
    if peak is None:
        return "—"
    share = f"{100 * gbps / peak:.0f}%"
    return f"≥ {share} (host-bound)" if host_ms >= HOST_BOUND * kernel_ms else share


def cuda_row(t: int, p: int, dtype: torch.dtype, peak: float | None,
             jd: Callable[[torch.Tensor], torch.Tensor] | None) -> str:
    """The CUDA table's row of T = `t` tasks, P = `p` parameters in `dtype`."""
    elt = torch.tensor([], dtype=dtype).element_size()
    grads = conflicting(t, p, "cuda", dtype)
    out = torch.empty(p, device="cuda", dtype=dtype)
    weights = torch.randn(t, device="cuda")
    orders = random_orders(np.random.default_rng(0), t)
    events = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
    gradproj.gram(grads), gradproj.combine(weights, grads, out=out)  # compile/warm up
    gram_ms, comb_ms, gram_host, comb_host = [], [], [], []
    for _ in range(3):  # back-to-back calls: the host's launch work overlaps the kernels before it
        events[0].record()
        gram_host.append(host_ms_per_call(lambda: gradproj.gram(grads)))
        events[1].record()
        comb_host.append(host_ms_per_call(lambda: gradproj.combine(weights, grads, out=out)))
        events[2].record()
        torch.cuda.synchronize()
        gram_ms.append(events[0].elapsed_time(events[1]) / BACK_TO_BACK)
        comb_ms.append(events[1].elapsed_time(events[2]) / BACK_TO_BACK)
    g_ms, c_ms = min(gram_ms), min(comb_ms)
    errors = kernel_errors(grads, weights, gradproj.gram(grads), out)
    g_bw = t * p * elt / (g_ms * 1e-3) / 1e9
    c_bw = (t * p * elt + p * elt) / (c_ms * 1e-3) / 1e9
    step = min(ours(grads, out, orders)["total"] for _ in range(3)) * 1e3
    jd_ms = "—"
    if jd is not None and dtype == torch.float32 and t * p <= 4e9:
        try:  # the fastest of 3 synchronised calls, as ours above, after measure's untimed first call
            jd_ms = f"{1e3 * measure(lambda: jd(grads), 'cuda', 3)[0]:.2f}"
        except Exception as err:  # the peer failing on a size must not take the table with it
            print(f"# torchjd failed at T={t}, P={p:.0e}: {type(err).__name__}: {err}", flush=True)
            jd_ms = "error"
    g_pct = share_of_peak(g_bw, peak, g_ms, min(gram_host))
    c_pct = share_of_peak(c_bw, peak, c_ms, min(comb_host))
    return (f"| {t} | {p:.0e} | {str(dtype).split('.')[-1]} | {g_ms:.3f} | {g_bw:.0f} | {g_pct} | "
            f"{c_ms:.3f} | {c_bw:.0f} | {c_pct} | {step:.2f} | {jd_ms} | {errors} |")


def cuda_table(sizes_t: list[int], sizes_p: list[int], peak_gbps: float | None) -> list[str]:
    """The device line, the header and a row per dtype, P and T: a size that does not fit the free memory reads
    `skip: ...`, one that fails `error: ...` (with the reason printed), and the rest still run."""
    name = torch.cuda.get_device_name()
    peak = peak_gbps or peak_bandwidth_gbps(name)
    free = torch.cuda.mem_get_info()[0]
    source = "--peak-gbps" if peak_gbps else "datasheet"
    peak_text = f"{peak:.0f} GB/s ({source})" if peak else "unknown (pass --peak-gbps)"
    rows = [f"device: {name}; peak HBM {peak_text}",
            "| T | P | dtype | gram (ms) | gram GB/s | gram % peak | combine (ms) | combine GB/s | combine % peak | "
            "PCGrad step (ms) | torchjd (ms) | gram / combine max rel err vs cuBLAS |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    jd = torchjd_pcgrad()
    for dtype in (torch.bfloat16, torch.float32):
        elt = torch.tensor([], dtype=dtype).element_size()
        for p in sizes_p:
            for t in sizes_t:
                size = f"| {t} | {p:.0e} | {str(dtype).split('.')[-1]} |"
                if t * p * elt * 2.2 > free:  # the gradients, with room for the temporaries
                    row = (f"{size} skip: needs ~{t * p * elt * 2.2 / 1e9:.1f} GB of GPU memory, {free / 1e9:.1f} GB "
                           f"free |" + " |" * 8)
                else:
                    try:
                        row = cuda_row(t, p, dtype, peak, jd)
                    except Exception as err:  # one size failing (a kernel build, out of memory) must not end the table
                        print(f"# T={t}, P={p:.0e}, {dtype} failed: {type(err).__name__}: {err}", flush=True)
                        row = f"{size} error: {type(err).__name__} |" + " |" * 8
                rows.append(row)
                print(row, flush=True)
                torch.cuda.empty_cache()
    return rows


# ------------------------------------------------------------------------------------------------ training step

def training_step_table(device: str, num_tasks: int = 4, repeats: int = 3) -> list[str]:
    """A small T5 step over `num_tasks` task micro-batches: plain accumulation vs GradientSurgery (PCGrad)."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(vocab_size=512, d_model=128, d_kv=32, d_ff=512, num_layers=2, num_decoder_layers=2, num_heads=4,
                      dropout_rate=0.0, decoder_start_token_id=0)
    model = T5ForConditionalGeneration(config).to(device)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.SGD([p for _, p in params], lr=1e-3)
    tasks = [f"task{i}" for i in range(num_tasks)]
    surgery = GradientSurgery({"method": "pcgrad"}, params, tasks)
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randint(2, 512, (8, 64), generator=gen).to(device),
                torch.randint(2, 512, (8, 16), generator=gen).to(device)) for _ in tasks]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def plain() -> None:
        optimizer.zero_grad(set_to_none=True)
        for x, y in batches:
            model(input_ids=x, labels=y).loss.backward()
        optimizer.step()
        sync()

    def with_surgery() -> None:
        surgery.zero_()
        for task, (x, y) in zip(tasks, batches):
            with surgery.accumulate(task):
                model(input_ids=x, labels=y).loss.backward()
        surgery.weights()
        surgery.combine_into_grads()
        optimizer.step()
        sync()

    times = {}
    clock = clock_for(device)
    for name, fn in [("plain", plain), ("surgery", with_surgery)]:
        fn()
        best = float("inf")
        for _ in range(repeats):
            t0 = clock()
            fn()
            best = min(best, clock() - t0)
        times[name] = best
    n_params = sum(p.numel() for _, p in params)
    overhead = 100 * (times["surgery"] / times["plain"] - 1)
    return ["| model | params | tasks (micro-batches) | step plain (ms) | step with PCGrad surgery (ms) | overhead |",
            "|---|---|---|---|---|---|",
            f"| T5 d128 2+2 layers, batch 8×64→16 | {n_params / 1e6:.2f}M | {num_tasks} | {1e3 * times['plain']:.1f} | "
            f"{1e3 * times['surgery']:.1f} | {overhead:+.1f}% |"]


def _count(text: str) -> int:
    """A count of at least 1 written as an integer or in float notation (`1e7`)."""
    count = float(text)
    if not 1 <= count < float("inf"):
        raise ValueError(f"{text} is not a count of at least 1")
    return int(count)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="a few sizes only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (CPU times are process time)")
    parser.add_argument("--peak-gbps", type=float, default=None, help="GPU peak HBM bandwidth (default: datasheet)")
    parser.add_argument("--t", type=comma_list_argument("--t", "task counts", _count), default=None,
                        help="comma-separated task counts (overrides the defaults)")
    parser.add_argument("--p", type=comma_list_argument("--p", "parameter counts", _count), default=None,
                        help="comma-separated parameter counts, e.g. 1e7,1e9 (overrides)")
    args = parser.parse_args()
    invalid = below_one(args, ("repeats", "threads"))
    if invalid:
        parser.error(invalid)
    torch.set_num_threads(args.threads)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if args.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("--device cuda: no CUDA device is visible")
        sizes_t = args.t or ([2, 8, 32] if args.quick else [2, 4, 8, 16, 32])
        sizes_p = args.p or ([10 ** 7, 10 ** 8] if args.quick else [10 ** 7, 10 ** 8, 10 ** 9])
        rows = cuda_table(sizes_t, sizes_p, args.peak_gbps)
    else:
        sizes_t = args.t or ([2, 8, 32] if args.quick else [2, 4, 8, 16, 32])
        sizes_p = args.p or ([10 ** 6] if args.quick else [10 ** 6, 10 ** 7])
        rows = cpu_table(sizes_t, sizes_p, args.repeats, skip_textbook_over=10 ** 11)
    print("\n".join(["", *rows, ""]))
    print("\n".join(training_step_table(args.device)))
    return 1 if any(" | error: " in row for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
