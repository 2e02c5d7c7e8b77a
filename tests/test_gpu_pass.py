"""benchmarks/gpu/run_checks.sh, the one-try GPU pass, run here with its programs stubbed.

`python3` and `nvidia-smi` are stand-ins on PATH that log their arguments and exit with the status a test
asks for, so the script's own logic (each step's log under $OUT, its outcome, the pass's exit status, how the
kernel tests are launched) runs in a second without a GPU.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "gpu" / "run_checks.sh"
PYTHON_STUB = """#!/usr/bin/env bash
echo "python3 $*" >>"$STUB_LOG"
case "$*" in
  "-c import xdist") exit "$STUB_XDIST_RC" ;;
  *benchmarks/gradproj.py*) echo "gradproj output"; exit "$STUB_GRADPROJ_RC" ;;
  *benchmarks/moe.py*) echo "moe output"; exit "$STUB_MOE_RC" ;;
  *"-m pytest"*) echo "pytest output"; exit "$STUB_PYTEST_RC" ;;
esac
"""


def _run_pass(tmp_path: Path, xdist_rc: int = 1, gradproj_rc: int = 0, moe_rc: int = 0, pytest_rc: int = 0
              ) -> tuple[subprocess.CompletedProcess, Path, list[str]]:
    """Run the pass with the stubs; returns (the process, $OUT, the stubbed python3 calls)."""
    bin_dir, out, work = tmp_path / "bin", tmp_path / "out", tmp_path / "work"
    for folder in (bin_dir, work):
        folder.mkdir()
    (bin_dir / "python3").write_text(PYTHON_STUB)
    (bin_dir / "nvidia-smi").write_text("#!/usr/bin/env bash\necho 'name'\necho 'NVIDIA H200'\n")
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    log = tmp_path / "calls.log"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OUT": str(out), "STUB_LOG": str(log),
           "STUB_XDIST_RC": str(xdist_rc), "STUB_GRADPROJ_RC": str(gradproj_rc), "STUB_MOE_RC": str(moe_rc),
           "STUB_PYTEST_RC": str(pytest_rc)}
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=work, env=env, capture_output=True, text=True, timeout=60)
    return proc, out, log.read_text().splitlines()


def test_a_failed_or_timed_out_step_is_reported_and_the_later_steps_still_run(tmp_path):
    proc, out, _calls = _run_pass(tmp_path, gradproj_rc=1, moe_rc=124)  # 124: `timeout` stopped it
    assert proc.returncode != 0, proc.stdout
    for log, text in (("gradproj.md", "gradproj output"), ("moe.md", "moe output"),
                      ("kernel_tests.txt", "pytest output")):
        assert text in (out / log).read_text()
    steps = (out / "steps.txt").read_text()
    assert "gradproj: failed (exit 1," in steps and "moe: timed out after 150 s" in steps, steps
    assert "kernel_tests: ok" in steps, steps
    assert "moe: timed out" in proc.stdout  # said at the end of the output too, where the reply shows it


def test_a_clean_pass_exits_zero(tmp_path):
    proc, out, _calls = _run_pass(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "steps.txt").read_text().count(": ok") == 3
@pytest.mark.parametrize("xdist_rc,parallel", [(0, True), (1, False)])
def test_kernel_tests_run_in_parallel_workers_when_xdist_is_there(tmp_path, xdist_rc, parallel):
    """~135 distinct kernel builds (0.1-2.6 s each, two of 6 and 11 s) take most of the step's limit serially."""
    _proc, _out, calls = _run_pass(tmp_path, xdist_rc=xdist_rc)
    pytest_calls = [call for call in calls if "-m pytest" in call]
    assert len(pytest_calls) == 1 and (" -n " in pytest_calls[0]) == parallel, calls


def test_the_benchmark_command_lines_of_the_pass_are_accepted_by_the_scripts():
    """The stubs above never run the benchmarks: here each benchmark line of the pass runs for real, without a GPU,
    so a renamed or misspelt option fails now (argparse's usage error) rather than on the lent machine."""
    lines = [line.split()[4:] for line in SCRIPT.read_text().splitlines()
             if line.startswith("step ") and "benchmarks/" in line]
    assert len(lines) == 2 and all(args[0] == "python3" for args in lines), lines
    for args in lines:
        proc = subprocess.run([sys.executable, *args[1:]], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
        assert proc.returncode != 0 and "cuda" in proc.stderr.lower(), (args, proc.stderr[-2000:])
        assert "usage:" not in proc.stderr, (args, proc.stderr[-2000:])


def test_the_moe_step_times_deepspeeds_einsum_gating_at_every_n_16k_case_within_an_h100(monkeypatch):
    """Issue 6's GPU target is set at N = 16k against DeepSpeed's gating with its einsum dispatch/combine. The pass's
    --ds-einsum-budget-gb must admit that formulation at every N = 16k case of moe.py's grid (k = 2: ~20 GiB by
    `ds_einsum_bytes`, about twice the peak measured on CPU) and leave room on an H100's ~78 GiB; at 16 GiB every
    k = 2 row at N = 16k read `skip`, half of the target's cases without the baseline on the one-try pass."""
    args = next(line.split() for line in SCRIPT.read_text().splitlines() if line.startswith("step moe "))
    budget_gib = float(args[args.index("--ds-einsum-budget-gb") + 1])
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")  # (moe.py sets it on import where unset)
    spec = importlib.util.spec_from_file_location("benchmark_moe", REPO_ROOT / "benchmarks" / "moe.py")
    moe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(moe)
    needed_gib = max(moe.ds_einsum_bytes(16384, e, k, d) for e in (8, 32, 64) for d in (512, 1024) for k in (1, 2)
                     ) / 2 ** 30
    assert needed_gib <= budget_gib <= 0.75 * 78, (needed_gib, budget_gib)
