"""benchmarks/activation_checkpointing.py's table, from given results of its modes (each mode's own run is a fresh
process training a T5: not run here)."""
from __future__ import annotations

import importlib.util
import sys

from conftest import REPO_ROOT


def _benchmark(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))  # (its `step_modes`, beside it)
    spec = importlib.util.spec_from_file_location("benchmark_activation_checkpointing",
                                                  REPO_ROOT / "benchmarks" / "activation_checkpointing.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_plain_run_whose_activation_peak_reads_zero_leaves_the_memory_ratios_blank(monkeypatch, capsys):
    """At the smallest sizes (d_model 32, batch 2 × 16 tokens) the plain run's activations fit in heap pages its
    warm-up step had made resident, so its peak reads 0 MB: the table ended in a ZeroDivisionError traceback. The
    memory column reads `—` there; the time ratios print as before."""
    benchmark = _benchmark(monkeypatch)
    results = {mode: {"ms": ms, "peak_mb": peak, "losses": [1.5], "device": "CPU, 1 threads"}
               for mode, ms, peak in [("none", 10.0, 0.0), ("every 2nd block", 12.0, 0.0), ("every block", 15.0, 1.0)]}
    monkeypatch.setattr(benchmark, "run_modes", lambda *args: results)
    monkeypatch.setattr(sys, "argv", ["activation_checkpointing.py", "--steps", "1"])
    benchmark.main()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "ms" not in line]
    assert rows == ["| none | 10 | 0 | 1.00× | — |", "| every 2nd block | 12 | 0 | 1.20× | — |",
                    "| every block | 15 | 1 | 1.50× | — |"], rows
    assert benchmark.memory_ratio(734.0, 2327.0) == "0.32×"
