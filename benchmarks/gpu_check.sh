#!/usr/bin/env bash
# GPU checks on a lent GPU machine (the `device` tool): the GPU-marked tests and the GPU benchmarks, in one go.
# That machine has Python 3.12 with torch and CuPy but no internet: the few geo packages the tests import
# travel as wheels in .whl/ (see docs/benchmarks.md, "GPU checks", for how to download them).
# Usage there: bash benchmarks/gpu_check.sh      (figures land in $OUT, or ./gpu-out without $OUT)
set -uo pipefail
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD || exit 1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, cupy; print('torch', torch.__version__, 'cupy', cupy.__version__)" | tee -a "$OUT/gpu.txt"
# every test that has a gpu case (the CPU cases of those files run too)
python3 -m pytest -q -p no:cacheprovider -o addopts="" -m gpu -rs \
  tests/kernels tests/mapping/test_embedder.py tests/models \
  2>&1 | tee "$OUT/gpu-tests.txt"
status=${PIPESTATUS[0]}
python3 benchmarks/bench_embed.py --device cpu --device cuda --pixels 65536 --batch-size 8192 \
  2>&1 | tee "$OUT/bench-embed.txt"
exit "$status"
