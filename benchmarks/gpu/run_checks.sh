#!/usr/bin/env bash
# Run ON a lent GPU machine, from the repository root, after `bash benchmarks/gpu/fetch_wheels.sh` here:
#   device run: command "bash benchmarks/gpu/run_checks.sh", carry [".whl"], timeout_s 480
# One prepared pass (about 7.5 minutes at most) over what needs a GPU: the gradient-surgery and MoE-routing
# benchmarks with the Triton kernels compiled for the device (HBM bandwidth, speed against TorchJD and
# DeepSpeed, errors against the cuBLAS/PyTorch reference, int64 offsets at P·T > 2^31), then the kernel
# tests on CUDA tensors. Each step has its own time limit so a slow one cannot eat the others; every log is
# written under $OUT (returned by the device tool) as it goes, each step's outcome to $OUT/steps.txt and to the
# end of the output; the pass exits 1 if any step failed or timed out.
set -uo pipefail
OUT=${OUT:-/tmp/t2t-mtl-gpu}
mkdir -p "$OUT"
: >"$OUT/steps.txt"
failed=0

# step NAME LIMIT LOG COMMAND...: run COMMAND, its output shown and written to $OUT/LOG as it goes; at LIMIT
# seconds it gets SIGINT (Python then prints where it was, pytest its summary so far), 5 s later SIGKILL. The
# outcome goes to $OUT/steps.txt; a failed step fails the pass but does not stop it.
step() {
  local name=$1 limit=$2 log=$3 rc outcome
  shift 3
  echo "== $name (limit $limit s)"
  timeout -s INT -k 5 "$limit" "$@" 2>&1 | tee "$OUT/$log"
  rc=${PIPESTATUS[0]}
  case $rc in
    0) outcome=ok ;;
    124 | 137) outcome="timed out after $limit s (see $log)" ;;
    *) outcome="failed (exit $rc, see $log)" ;;
  esac
  echo "$name: $outcome" >>"$OUT/steps.txt"
  [ "$rc" = 0 ] || failed=1
}

# The wheels serve only the peer comparisons: without them (or if they fail to install) the rest still runs.
if compgen -G ".whl/*.whl" >/dev/null && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl; then
  export PYTHONPATH=/tmp/site:$PWD
else
  echo "no .whl/ carried, or installing it failed: going on without TorchJD/DeepSpeed" \
    "(run benchmarks/gpu/fetch_wheels.sh here first)" | tee "$OUT/wheels.txt"
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 DS_ACCELERATOR=cuda DS_BUILD_OPS=0 T2T_MTL_TRITON_ON_GPU=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee "$OUT/env.txt"
step gradproj 160 gradproj.md python3 benchmarks/gradproj.py --device cuda
# DeepSpeed's einsum gating (dense [S, E, C] tensors) runs wherever moe.py estimates it under 40 GiB: every
# N <= 16k case, the sizes issue 6's target names (k = 2: ~20 GiB estimated, about half that measured), not 64k.
step moe 150 moe.md python3 benchmarks/moe.py --device cuda --repeats 5 --ds-einsum-budget-gb 40
# The kernel tests build ~135 kernel variants (sm_90 with Triton 3.6: 0.1-2.6 s each, the E = 16384 dispatch tiles
# 6 and 11 s): one at a time that is most of the limit, so they run in 8 pytest-xdist workers where python3 has
# it (the H200 image does).
workers=$(python3 -c "import xdist" 2>/dev/null && echo "-n 8")
step kernel_tests 120 kernel_tests.txt python3 -m pytest -q -p no:cacheprovider $workers \
  tests/test_gradproj_kernels.py tests/test_moe_kernels.py
echo "== steps"
cat "$OUT/steps.txt"
exit "$failed"
