"""benchmarks/moe.py's CPU memory figure: the peak of one call must count every block it allocates, and measuring
it must not change how the timed calls get their memory."""
from __future__ import annotations

import ast
import subprocess
import sys

from conftest import REPO_ROOT

_PRELUDE = f"""
import importlib.util, sys, torch
from pathlib import Path
sys.argv = ["moe.py"]
spec = importlib.util.spec_from_file_location("benchmark_moe", {str(REPO_ROOT / "benchmarks" / "moe.py")!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
peak = module.PeakMemory("cpu")
def allocate(floats):
    return lambda: float(torch.ones(floats)[0])
"""


def _run(code: str) -> list[float]:
    proc = subprocess.run([sys.executable, "-c", _PRELUDE + code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return ast.literal_eval(proc.stdout.strip().splitlines()[-1])


def test_cpu_peak_counts_a_block_of_a_size_freed_before():
    """A 16 MB tensor, whose size glibc has seen freed before, reads 16e6 B (15.26 MiB) every time."""
    peaks = _run("allocate(4_000_000)(), allocate(4_000_000)()\n"
                 "print([peak.measure(allocate(4_000_000)) / 2 ** 20 for _ in range(4)])")
    assert all(0.95 * 16e6 / 2 ** 20 <= p <= 1.5 * 16e6 / 2 ** 20 for p in peaks), peaks


def test_cpu_memory_measure_leaves_the_allocation_policy_of_the_timed_calls_alone():
    """Once a 32 MB block has been freed, glibc serves a 4 MB one from its heap, whose pages stay resident from call
    to call. A PeakMemory that forced every block from 64 KiB through a fresh mapping made each timed call fault
    its blocks in again (the CPU times of both methods 2-5x longer, DeepSpeed's more allocations more so): after
    a measure, a 4 MB tensor adds nothing to glibc's mapped blocks (mallinfo2's hblkhd)."""
    mapped = _run("""
import ctypes
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
float(torch.ones(8_000_000)[0])  # 32 MB mapped and freed: glibc raises its mmap threshold
peak.measure(allocate(1_000_000))
before = libc.mallinfo2().hblkhd
block = torch.ones(1_000_000)
print([(libc.mallinfo2().hblkhd - before) / 2 ** 20])
""")
    assert mapped == [0.0]  # MB newly mapped for the 4 MB block


def test_cpu_peak_follows_the_live_allocations():
    """A call that frees a 16 MB tensor and then allocates a 20 MB one holds at most 20 MB (+4 KB) at a time. Heap
    pages freed in a call stay resident, so a peak read under glibc's steady policy counts both (36 MB)."""
    peaks = _run("""
def churn():
    first = torch.ones(4_000_000)
    small = torch.ones(1000)  # keeps the freed 16 MB from the heap's top
    del first
    return float(torch.ones(5_000_000)[0]) + float(small[0])
print([(churn(), peak.measure(churn))[1] / 2 ** 20 for _ in range(3)])  # a timed call before each measure
""")
    live_mb = 20e6 / 2 ** 20
    assert all(0.95 * live_mb <= p <= 1.15 * live_mb for p in peaks), (peaks, live_mb)


def test_a_size_list_with_an_empty_or_non_integer_item_is_refused_naming_the_option():
    """`--n 64,,128` (an empty item) and `--e 8,x` are usage errors naming the option, as the CLI's comma lists are;
    they were a raw ValueError traceback from splitting the text after parsing."""
    for option, value, says in (("--n", "64,,128", "--n '64,,128': item 2 of 3 is empty"),
                                ("--e", "8,x", "--e '8,x': invalid literal for int() with base 10: 'x'")):
        proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "moe.py"), option, value],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_a_peer_that_fails_at_run_time_leaves_our_rows_and_the_later_ones():
    """DeepSpeed may import and still fail on a case (an API or device difference, out of memory on the dense
    einsum): on the one-try GPU pass that stopped the script at its first row, so none of our figures were kept.
    The failing cells read `error`, the reason is printed once per case, and every row still prints."""
    code = """
def broken(x, gate, k):
    raise RuntimeError("no kernel image for this device")
module.ds_sparse = broken
module.main(["--n", "64,96", "--e", "4", "--d", "8", "--k", "1", "--repeats", "1", "--methods", "ours,ds-sparse"])
"""
    proc = subprocess.run([sys.executable, "-c", _PRELUDE + code], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "DS_ACCELERATOR": "cpu"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in proc.stdout.splitlines()
            if line.startswith(("| 64 |", "| 96 |"))]
    assert [row[:4] for row in rows] == [["64", "4", "8", "1"], ["96", "4", "8", "1"]], proc.stdout
    assert all(float(row[4]) > 0 and row[7:] == ["error", "", "", ""] for row in rows), rows
    assert proc.stdout.count("# ds-sparse failed at N=") == 2, proc.stdout
    assert "RuntimeError: no kernel image for this device" in proc.stdout, proc.stdout


def test_a_case_where_ours_fails_is_reported_and_the_other_cases_still_run():
    """Our path failing on one case (a kernel build or an out-of-memory at one size) stopped the script there, so the
    one-try GPU pass lost every later size; the case's cells read `error`, the others print, the exit status is 1."""
    code = """
real_ours = module.ours
def ours(x, w_router, k, backend="auto"):
    if x.shape[0] == 64:
        raise RuntimeError("out of resource: shared memory")
    return real_ours(x, w_router, k, backend)
module.ours = ours
sys.exit(module.main(["--n", "64,96", "--e", "4", "--d", "8", "--k", "1", "--repeats", "1", "--methods",
                      "ours,ds-sparse"]))
"""
    proc = subprocess.run([sys.executable, "-c", _PRELUDE + code], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "DS_ACCELERATOR": "cpu"})
    assert proc.returncode == 1, proc.stderr[-3000:]
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.strip("|").split("|")]
            for line in proc.stdout.splitlines() if line.startswith(("| 64 |", "| 96 |"))}
    assert rows["64"][4:7] == ["error", "", ""] and float(rows["64"][7]) > 0 and rows["64"][10] == "", rows
    assert all(float(rows["96"][i]) > 0 for i in (4, 5, 7, 8)) and rows["96"][10].endswith("×"), rows  # the times
    assert "# ours failed at N=64 E=4 d=8 k=1: RuntimeError: out of resource: shared memory" in proc.stdout


def test_an_unknown_method_or_a_count_below_one_is_refused_naming_the_option():
    """A misspelt method (`ds_sparse`) ran DeepSpeed's einsum gating under that label, past the einsum memory budget
    (which only `ds-einsum` was held to); `--repeats 0` ended in min() of no times and `--k 0` in an `error` row.
    Each is a usage error naming its option."""
    for args, says in ((["--methods", "ours,ds_sparse"], "--methods 'ours,ds_sparse': ds_sparse is not one of ours, "
                                                         "ds-sparse, ds-einsum"),
                       (["--repeats", "0"], "--repeats must be at least 1, got 0"),
                       (["--k", "0"], "--k '0': 0 is below 1")):
        proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "moe.py"), *args],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
