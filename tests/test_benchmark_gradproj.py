"""benchmarks/gradproj.py's GPU figures that can be checked without a GPU: the datasheet HBM peak that the
bandwidth columns are a percentage of, looked up by the name CUDA reports."""
from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys

import pytest

from conftest import REPO_ROOT


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
    column reports), not of whichever call came last."""
    benchmark = _benchmark()
    calls = iter([{"gram": 5e-3, "solve": 1e-4, "combine": 2e-3, "total": 7.1e-3},
                  {"gram": 1e-3, "solve": 2e-4, "combine": 3e-4, "total": 1.5e-3},
                  {"gram": 9e-3, "solve": 3e-4, "combine": 4e-3, "total": 13.3e-3}])
    monkeypatch.setattr(benchmark, "ours", lambda grads, out, orders: next(calls))
    monkeypatch.setattr(benchmark, "torchjd_pcgrad", lambda: None)
    monkeypatch.setattr(benchmark, "libmtl_pcgrad", lambda: (None, ""))
    row = benchmark.cpu_table([2], [8], repeats=3, skip_textbook_over=0)[-1]
    assert row.split(" | ")[3] == "1.0 / 0.20 / 0.3", row  # the second call's phases, in ms
