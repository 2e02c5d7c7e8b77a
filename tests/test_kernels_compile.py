"""Every Triton kernel builds for an H100/H200 (sm_90) down to a cubin, without a GPU.

The interpreter that runs the kernel tests does not enforce the GPU compiler's rules (tl.dot tile shapes,
layouts, resources); `benchmarks/gpu/compile_check.py` compiles the wrappers' launch variants with Triton's
bundled ptxas. It runs in a subprocess because this test session imports the kernels under the interpreter.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from engine_helpers import REPO

pytestmark = pytest.mark.slow


def test_every_kernel_variant_compiles_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu" / "compile_check.py"), "--arch", "90"],
                          env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, f"{proc.stdout[-6000:]}\n{proc.stderr[-4000:]}"
    assert re.search(r"^0 of \d+ variants failed$", proc.stdout, re.M), proc.stdout
