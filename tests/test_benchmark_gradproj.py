"""benchmarks/gradproj.py's figures that can be checked without a GPU: the datasheet HBM peak that the bandwidth
columns are a percentage of, looked up by the name CUDA reports; the CUDA table itself, run on the host with faked
CUDA events (its code runs nowhere else before the GPU pass); the CPU table's peak memory and phase breakdown."""
from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import time
import types

import pytest
import torch

from conftest import REPO_ROOT


_MALLINFO = """
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
def mapped_bytes():
    return libc.mallinfo2().hblkhd
"""


def _benchmark():
    spec = importlib.util.spec_from_file_location("benchmark_gradproj", REPO_ROOT / "benchmarks" / "gradproj.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name,gbps", [
    ("NVIDIA H200", 4800), ("NVIDIA H200 NVL", 4800), ("NVIDIA H100 80GB HBM3", 3350), ("NVIDIA H100 PCIe", 2000),
    ("NVIDIA H100 NVL", 3900), ("NVIDIA GH200 480GB", 4000), ("NVIDIA A100-SXM4-80GB", 2039),
    ("NVIDIA A100-SXM4-40GB", 1555), ("Some Other GPU", None),
])
def test_peak_bandwidth_is_the_datasheet_figure_of_the_named_device(name, gbps):
    assert _benchmark().peak_bandwidth_gbps(name) == gbps


class _BrokenTorchJD:
    """A meta path finder under which importing torchjd raises something other than ImportError."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchjd" or name.startswith("torchjd."):
            raise RuntimeError("broken wheel")


def test_a_torchjd_that_breaks_on_import_is_left_out(monkeypatch):
    """The TorchJD column is optional: a wheel that fails on import must not stop the GPU pass's Gram table."""
    benchmark = _benchmark()
    for name in [m for m in sys.modules if m == "torchjd" or m.startswith("torchjd.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_BrokenTorchJD(), *sys.meta_path])
    assert benchmark.torchjd_pcgrad() is None


def test_cpu_peak_memory_counts_a_block_of_a_size_freed_before():
    """glibc serves a block of a size it freed before (up to 32 MiB) from pages still resident, which VmHWM does
    not see: the CPU peak of a call that allocates 16 MB must read 16 MB however often the size was allocated before."""
    num_floats = 4_000_000
    code = f"""
import importlib.util, torch
spec = importlib.util.spec_from_file_location("benchmark_gradproj", {str(REPO_ROOT / "benchmarks" / "gradproj.py")!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
def allocate():
    return float(torch.ones({num_floats})[0])
allocate(), allocate()  # the allocator has seen the size
print([module.measure(allocate, "cpu", 3)[1] for _ in range(4)])
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    peaks = ast.literal_eval(proc.stdout.strip().splitlines()[-1])
    expected_mb = num_floats * 4 / 2 ** 20  # one fp32 tensor, first touched inside the call
    assert all(0.95 * expected_mb <= peak <= 1.5 * expected_mb for peak in peaks), (peaks, expected_mb)


def test_cpu_table_breaks_down_the_fastest_call_of_ours(monkeypatch):
    """The gram / solve / combine column is the breakdown of the fastest of the timed calls (the one the 'ours'
    column reports), not of whichever call came last, nor of the untimed call measured for memory."""
    benchmark = _benchmark()
    calls = iter([{"gram": 1e-4, "solve": 1e-4, "combine": 1e-4, "total": 3e-4},  # measure's memory call, untimed
                  {"gram": 5e-3, "solve": 1e-4, "combine": 2e-3, "total": 7.1e-3},
                  {"gram": 1e-3, "solve": 2e-4, "combine": 3e-4, "total": 1.5e-3},
                  {"gram": 9e-3, "solve": 3e-4, "combine": 4e-3, "total": 13.3e-3}])
    monkeypatch.setattr(benchmark, "ours", lambda grads, out, orders: next(calls))
    monkeypatch.setattr(benchmark, "torchjd_pcgrad", lambda: None)
    monkeypatch.setattr(benchmark, "libmtl_pcgrad", lambda: (None, ""))
    row = benchmark.cpu_table([2], [8], repeats=3, skip_textbook_over=0)[-1]
    assert row.split(" | ")[3] == "1.0 / 0.20 / 0.3", row  # the second timed call's phases, in ms


class _FakeCuda:
    """The `torch.cuda` calls of the CUDA table, on the host: events read a clock that only the Gram and combine
    calls advance (by `gram_ms` and `combine_ms` each), so the table's kernel times are known exactly."""

    def __init__(self, gram_ms: float, combine_ms: float) -> None:
        self.now, self.gram_ms, self.combine_ms = 0.0, gram_ms, combine_ms
        cuda = self

        class Event:
            def __init__(self, enable_timing: bool = False) -> None:
                self.at = None

            def record(self) -> None:
                self.at = cuda.now

            def elapsed_time(self, end: "Event") -> float:
                return end.at - self.at

        self.Event = Event

    def get_device_name(self) -> str:
        return "NVIDIA H200"

    def mem_get_info(self) -> tuple[int, int]:
        return 2 ** 40, 2 ** 40

    def synchronize(self) -> None:
        pass

    def empty_cache(self) -> None:
        pass

    def reset_peak_memory_stats(self) -> None:
        pass

    def memory_allocated(self) -> int:
        return 0

    def max_memory_allocated(self) -> int:
        return 0


class _HostTorch:
    """`torch` with CUDA placements made host ones and `torch.cuda` faked (see _FakeCuda)."""

    def __init__(self, cuda: _FakeCuda) -> None:
        self.cuda = cuda

    def __getattr__(self, name: str):
        return getattr(torch, name)

    @staticmethod
    def empty(*size, device=None, **kwargs):
        return torch.empty(*size, **kwargs)

    @staticmethod
    def randn(*size, device=None, **kwargs):
        return torch.randn(*size, **kwargs)

    @staticmethod
    def Generator(device=None):  # noqa: N802 (torch's name)
        return torch.Generator()


def _fake_cuda_benchmark(monkeypatch, gram_ms: float, combine_ms: float):
    """The benchmark module with the CUDA table runnable on the host (reference kernels, fake events)."""
    benchmark = _benchmark()
    cuda = _FakeCuda(gram_ms, combine_ms)
    real = benchmark.gradproj

    def gram(*args, **kwargs):
        cuda.now += gram_ms
        return real.gram(*args, **kwargs)

    def combine(*args, **kwargs):
        cuda.now += combine_ms
        return real.combine(*args, **kwargs)

    monkeypatch.setattr(benchmark, "torch", _HostTorch(cuda))
    monkeypatch.setattr(benchmark, "gradproj", types.SimpleNamespace(gram=gram, combine=combine))
    return benchmark


def test_cuda_table_bandwidth_is_the_bytes_each_kernel_must_move_over_its_time(monkeypatch):
    """Gram: read T×P once (its T×T output is negligible); combine: read T×P and write P, in the gradients' dtype.
    At T = 4, P = 1e5, 0.01 ms per Gram and 0.02 ms per combine: bf16 (2 B) 80 and 50 GB/s, fp32 (4 B) 160
    and 100 GB/s; as a share of the H200's 4800 GB/s."""
    benchmark = _fake_cuda_benchmark(monkeypatch, gram_ms=0.01, combine_ms=0.02)
    monkeypatch.setattr(benchmark, "torchjd_pcgrad", lambda: None)
    monkeypatch.setattr(benchmark, "HOST_BOUND", float("inf"))  # the host here is slower than these kernel times
    rows = [row.split(" | ") for row in benchmark.cuda_table([4], [10 ** 5], None)[3:]]
    expected = {"bfloat16": (4e5 * 2 / 1e-5 / 1e9, 5e5 * 2 / 2e-5 / 1e9),
                "float32": (4e5 * 4 / 1e-5 / 1e9, 5e5 * 4 / 2e-5 / 1e9)}
    assert {row[2] for row in rows} == set(expected), rows
    for row in rows:
        gram_gbps, combine_gbps = expected[row[2]]
        assert row[4:6] + row[7:9] == [f"{gram_gbps:.0f}", f"{100 * gram_gbps / 4800:.0f}%", f"{combine_gbps:.0f}",
                                       f"{100 * combine_gbps / 4800:.0f}%"], row


def test_cuda_table_times_torchjd_as_it_times_ours(monkeypatch):
    """Ours is the fastest of 3 synchronised calls after warm-up: TorchJD must be too, not one call after its
    warm-up. Scripted TorchJD calls of 30, 200, 10 and 60 ms: its cell must read about 10 ms, not 200."""
    benchmark = _fake_cuda_benchmark(monkeypatch, gram_ms=0.01, combine_ms=0.02)
    durations = iter([0.03, 0.2, 0.01, 0.06])

    def torchjd(grads):
        time.sleep(next(durations))
        return grads.sum(0)

    monkeypatch.setattr(benchmark, "torchjd_pcgrad", lambda: torchjd)
    fp32 = [row.split(" | ") for row in benchmark.cuda_table([2], [10 ** 4], None)[3:] if "float32" in row]
    assert len(fp32) == 1 and 10 <= float(fp32[0][10]) < 30, fp32


@pytest.mark.parametrize("kernel_ms,host_bound", [(1e-4, True), (1e3, False)])
def test_cuda_table_marks_shares_the_host_set(monkeypatch, kernel_ms, host_bound):
    """Back-to-back calls hide a call's launch work only while the kernels take longer than it: when the host's
    work per call (here: the reference path on a [2, 1e4] matrix, far above 0.1 µs) is as long as the kernel time
    the events read, the share of peak is the host's rate and can only be a lower bound for the kernel."""
    benchmark = _fake_cuda_benchmark(monkeypatch, gram_ms=kernel_ms, combine_ms=kernel_ms)
    monkeypatch.setattr(benchmark, "torchjd_pcgrad", lambda: None)
    for row in benchmark.cuda_table([2], [10 ** 4], None)[3:]:
        cells = row.split(" | ")
        assert all(("host-bound" in cell) == host_bound for cell in (cells[5], cells[8])), row


def test_cpu_measure_leaves_the_allocation_policy_of_the_timed_calls_alone():
    """Once a 32 MB block has been freed, glibc serves a 4 MB one from its heap, whose pages stay resident from call
    to call. Measuring memory must not change that for the timed calls (forcing every block from 64 KiB through a
    fresh mapping made each call fault its 4 MB in again: 2-3x the time of TorchJD and the textbook loop at
    P = 1e6): after measure, a 4 MB tensor adds nothing to glibc's mapped blocks (mallinfo2's hblkhd)."""
    code = f"""
import ctypes, importlib.util, torch
spec = importlib.util.spec_from_file_location("benchmark_gradproj", {str(REPO_ROOT / "benchmarks" / "gradproj.py")!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
{_MALLINFO}
float(torch.ones(8_000_000)[0])  # 32 MB mapped and freed: glibc raises its mmap threshold
module.measure(lambda: float(torch.ones(1_000_000)[0]), "cpu", 2)
before = mapped_bytes()
block = torch.ones(1_000_000)
print([(mapped_bytes() - before) / 2 ** 20])
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert ast.literal_eval(proc.stdout.strip().splitlines()[-1]) == [0.0]  # MB newly mapped for the 4 MB block


def test_cpu_peak_follows_the_live_allocations():
    """A call that frees a 16 MB tensor and then allocates a 20 MB one holds at most 20 MB (+4 KB) at a time. Heap
    pages freed in a call stay resident, so a peak read under glibc's steady policy counts both (36 MB)."""
    code = f"""
import ctypes, importlib.util, torch
spec = importlib.util.spec_from_file_location("benchmark_gradproj", {str(REPO_ROOT / "benchmarks" / "gradproj.py")!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
float(torch.ones(8_000_000)[0])  # 32 MB mapped and freed: glibc raises its mmap threshold
def churn():
    first = torch.ones(4_000_000)
    small = torch.ones(1000)  # keeps the freed 16 MB from the heap's top
    del first
    return float(torch.ones(5_000_000)[0]) + float(small[0])
print([module.measure(churn, "cpu", 2)[1] for _ in range(3)])
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    live_mb = 20e6 / 2 ** 20
    peaks = ast.literal_eval(proc.stdout.strip().splitlines()[-1])
    assert all(0.95 * live_mb <= peak <= 1.15 * live_mb for peak in peaks), (peaks, live_mb)


def test_cpu_times_leave_out_the_call_whose_memory_is_measured(monkeypatch):
    """The call measured for memory maps every block afresh, which made LibMTL's T = 32, P = 1e6 call 3x slower and
    past SLOW_SECONDS, so that it alone was timed: here a first call of 0.2 CPU-s and later ones of 0.01 must
    read 0.01 s with SLOW_SECONDS at 0.1."""
    benchmark = _benchmark()
    monkeypatch.setattr(benchmark, "SLOW_SECONDS", 0.1)
    costs = iter([0.2, 0.01, 0.01, 0.01])

    def busy() -> None:
        end = time.process_time() + next(costs)
        while time.process_time() < end:
            pass

    best = benchmark.measure(busy, "cpu", 3)[0]
    assert 0.01 <= best < 0.05, best


def test_a_count_list_with_an_empty_item_is_refused_naming_the_option():
    """`--p 1e6,` (a comma at the end) is a usage error naming the option, as the CLI's comma lists are; it was a raw
    ValueError traceback from float('')."""
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "gradproj.py"), "--p", "1e6,"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--p '1e6,': item 2 of 2 is empty" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_cuda_table_keeps_its_rows_when_torchjd_fails_at_run_time(monkeypatch, capsys):
    """TorchJD may import and still fail on a size (out of memory at P = 1e9, a device difference): on the one-try
    GPU pass that stopped the script at the first fp32 row, losing every later row and the training-step table.
    Its cell reads `error`, the reason is printed, and the table goes on."""
    benchmark = _fake_cuda_benchmark(monkeypatch, gram_ms=0.01, combine_ms=0.02)

    def torchjd(grads):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(benchmark, "torchjd_pcgrad", lambda: torchjd)
    rows = [row.split(" | ") for row in benchmark.cuda_table([2, 3], [10 ** 4], None)[3:]]
    assert [(row[0], row[2]) for row in rows] == [("| 2", "bfloat16"), ("| 3", "bfloat16"), ("| 2", "float32"),
                                                  ("| 3", "float32")], rows
    assert [row[10] for row in rows] == ["—", "—", "error", "error"], rows
    out = capsys.readouterr().out
    assert "# torchjd failed at T=2, P=1e+04: RuntimeError: CUDA out of memory" in out, out


def test_cuda_table_says_which_sizes_did_not_fit_the_device(monkeypatch):
    """A size whose gradients (with the temporaries, 2.2× their bytes) pass the free GPU memory is left out; its row
    was dropped without a word, so a missing T = 32, P = 1e9 row read like a crash. It says what it needed."""
    benchmark = _fake_cuda_benchmark(monkeypatch, gram_ms=0.01, combine_ms=0.02)
    monkeypatch.setattr(benchmark, "torchjd_pcgrad", lambda: None)
    monkeypatch.setattr(benchmark.torch.cuda, "mem_get_info", lambda: (2 ** 30, 2 ** 40))
    rows = [[cell.strip() for cell in row.strip("|").split("|")]
            for row in benchmark.cuda_table([2], [10 ** 4, 10 ** 9], None)[3:]]
    assert [row[:3] for row in rows] == [["2", "1e+04", "bfloat16"], ["2", "1e+09", "bfloat16"],
                                         ["2", "1e+04", "float32"], ["2", "1e+09", "float32"]], rows
    assert all(len(row) == 12 for row in rows), rows
    assert float(rows[0][3]) > 0 and float(rows[2][3]) > 0, rows
    assert rows[1][3:] == ["skip: needs ~8.8 GB of GPU memory, 1.1 GB free"] + [""] * 8, rows
    assert rows[3][3:] == ["skip: needs ~17.6 GB of GPU memory, 1.1 GB free"] + [""] * 8, rows


def test_cuda_table_goes_on_past_a_size_that_fails_and_the_script_exits_1(monkeypatch, capsys):
    """One size failing in our own path (a kernel build, out of memory at P = 1e9) stopped the script there, so the
    one-try GPU pass lost every later size and the training-step table. That row reads `error: ...`, the reason is
    printed, the other sizes run, and the script exits 1 after printing everything."""
    benchmark = _fake_cuda_benchmark(monkeypatch, gram_ms=0.01, combine_ms=0.02)
    monkeypatch.setattr(benchmark, "torchjd_pcgrad", lambda: None)
    gram = benchmark.gradproj.gram

    def failing_gram(grads, *args, **kwargs):
        if grads.shape[0] == 3:
            raise RuntimeError("out of resource: shared memory, Required: 262144")
        return gram(grads, *args, **kwargs)

    monkeypatch.setattr(benchmark.gradproj, "gram", failing_gram)
    rows = [[cell.strip() for cell in row.strip("|").split("|")]
            for row in benchmark.cuda_table([2, 3, 4], [10 ** 4], None)[3:]]
    assert [row[0] for row in rows] == ["2", "3", "4"] * 2 and all(len(row) == 12 for row in rows), rows
    assert [row[3] for row in rows if row[0] == "3"] == ["error: RuntimeError"] * 2, rows
    assert all(float(row[3]) > 0 for row in rows if row[0] != "3"), rows
    out = capsys.readouterr().out
    assert "# T=3, P=1e+04, torch.float32 failed: RuntimeError: out of resource: shared memory" in out, out
    monkeypatch.setattr(benchmark.torch.cuda, "is_available", lambda: True, raising=False)
    monkeypatch.setattr(benchmark, "training_step_table", lambda device: ["(training step table)"])
    monkeypatch.setattr(sys, "argv", ["gradproj.py", "--device", "cuda", "--t", "2,3", "--p", "1e4"])
    assert benchmark.main() == 1
    assert "(training step table)" in capsys.readouterr().out


def test_a_count_below_one_is_refused_naming_the_option():
    """`--repeats 0` (no timed call: an AttributeError on the missing result), `--threads 0` (torch's RuntimeError) and
    `--t 0` (gram's error on T = 0 tasks) were raw tracebacks; each is a usage error naming its option."""
    for args, says in ((["--repeats", "0"], "--repeats must be at least 1, got 0"),
                       (["--threads", "0"], "--threads must be at least 1, got 0"),
                       (["--t", "2,0"], "--t '2,0': 0 is not a count of at least 1")):
        proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "gradproj.py"), *args],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
