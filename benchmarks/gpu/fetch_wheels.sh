#!/usr/bin/env bash
# Run HERE (a machine with PyPI access) before a GPU run: fetch into .whl/ the benchmark dependencies the
# lent GPU machine lacks (its image has torch, triton, scipy, pytest, numpy but no deepspeed, torchjd,
# libmtl, hjson or pydantic). The GPU machine runs Python 3.12 on x86-64 and reaches no registry, so the
# wheels travel with the working tree: name `.whl` in the run's `carry` (it is git-ignored).
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=.whl
rm -rf "$dest" && mkdir -p "$dest"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
# Binary or pure-Python wheels for cp312. pydantic and pydantic-core 2.50.5 require typing-extensions >= 4.16, newer
# than the GPU image may hold (the install there is --no-deps, so nothing would catch it before `import deepspeed`).
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d "$dest" \
  torchjd==0.18.0 libmtl==1.1.5 hjson pydantic==2.14.4 pydantic-core==2.50.5 annotated-types typing-inspection \
  "typing-extensions>=4.16"
# DeepSpeed ships only a source distribution: build its pure-Python wheel here (no ops compiled).
DS_BUILD_OPS=0 python3 -m pip wheel --quiet --no-deps --no-build-isolation -w "$dest" deepspeed==0.19.8
ls -l "$dest"
du -sh "$dest"
