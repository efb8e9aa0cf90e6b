#!/usr/bin/env bash
# One call on the lent GPU machine: the CuPy checks and the GPU benchmarks, results under $OUT.
#
#   bash benchmarks/gpu_run.sh          # NVRTC compile of the kernel variants, tests/backend/cupy (GPU and
#                                       # selection tests; the emulated ones run in CI),
#                                       # benchmarks/bench_gpu.py and bench_gpu_conv.py with a report
#                                       # (about 6-9 minutes)
#   bash benchmarks/gpu_run.sh suite    # the whole test suite, every backend (a second call)
#
# The machine has Python 3.12, numpy, numba, cupy-cuda13x, torch, pytest and pytest-benchmark and
# no network, so the project runs from the checkout (PYTHONPATH=.). MNIST: $FASTNET_DATA, else a
# carried copy in .gpu_data/mnist (cp -r ../shared/data/mnist .gpu_data/; echo /.gpu_data/ >>
# .git/info/exclude; name .gpu_data in the run's carry), else ../shared/data/mnist if it is there.
# At most 8 files come back from $OUT: env.txt, compile.txt, tests.txt, tests.xml, bench.txt,
# bench_gpu.json, report.md (or suite.txt).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
export PYTHONPATH=. FASTNET_OFFLINE=1 MPLBACKEND=Agg PYTHONUNBUFFERED=1
# a hung kernel fails its test instead of eating the whole call (pytest-timeout is on the GPU image)
PYTEST_TIMEOUT=""
python -c "import pytest_timeout" 2>/dev/null && PYTEST_TIMEOUT="--timeout=90"
if [ -z "${FASTNET_DATA:-}" ]; then
  for d in .gpu_data/mnist ../shared/data/mnist shared/data/mnist; do
    if [ -f "$d/train-images-idx3-ubyte.gz" ]; then FASTNET_DATA=$(cd "$d" && pwd); export FASTNET_DATA; break; fi
  done
fi

{
  date -u
  nvidia-smi || true
  python - <<'EOF'
import importlib, platform
print("python", platform.python_version())
for name in ("numpy", "numba", "cupy", "torch", "pytest", "pytest_benchmark"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as exc:
        print(name, "missing:", exc)
import fastnet
for k, v in fastnet.available_backends().items():
    print("backend", k, "available" if v.available else v.reason)
EOF
  echo "FASTNET_DATA=${FASTNET_DATA:-<none>}"
} >"$OUT/env.txt" 2>&1

if [ "${1:-}" = "suite" ]; then
  timeout 570 python -m pytest -q -rs --benchmark-disable tests >"$OUT/suite.txt" 2>&1
  echo "suite rc=$?" >>"$OUT/suite.txt"
  tail -n 3 "$OUT/suite.txt"
  exit 0
fi

# 1. every generated kernel variant through NVRTC for this GPU's architecture
timeout 90 python - >"$OUT/compile.txt" 2>&1 <<'EOF'
import sys
import cupy
sys.path.insert(0, "tests/backend/cupy")
import cuda_checks as checks
cc = cupy.cuda.Device().compute_capability
ok = bad = 0
for label, text in checks.variants(full=False):
    try:
        checks.compile_nvrtc(text, arch=cc)
        ok += 1
    except Exception as exc:
        bad += 1
        print("FAIL", label, exc)
print(f"NVRTC sm_{cc}: {ok} variants compiled, {bad} failed")
EOF
echo "compile rc=$?" >>"$OUT/compile.txt"

# 2. the CuPy tests (strict: a fused path that fails raises instead of falling back)
FASTNET_CUPY_STRICT=1 timeout 200 python -m pytest -q -rs --tb=short $PYTEST_TIMEOUT \
  tests/backend/cupy/test_cupy_gpu.py tests/backend/cupy/test_cupy_selection.py \
  --junitxml="$OUT/tests.xml" >"$OUT/tests.txt" 2>&1
echo "tests rc=$?" >>"$OUT/tests.txt"

# 3. the GPU benchmarks, then the report
FASTNET_CUPY_STRICT=1 timeout 330 python -m pytest -q -rs --tb=short $PYTEST_TIMEOUT benchmarks/bench_gpu.py \
  benchmarks/bench_gpu_conv.py \
  --benchmark-json="$OUT/bench_gpu.json" --benchmark-max-time=0.5 \
  --benchmark-group-by=group --benchmark-columns=median,min,rounds >"$OUT/bench.txt" 2>&1
echo "bench rc=$?" >>"$OUT/bench.txt"
if [ -f "$OUT/bench_gpu.json" ]; then
  timeout 60 python -m benchmarks.run --json "$OUT/bench_gpu.json" --no-chart \
    --report "$OUT/report.md" >/dev/null 2>&1 || echo "report failed" >>"$OUT/bench.txt"
fi
tail -n 2 "$OUT/compile.txt" "$OUT/tests.txt" "$OUT/bench.txt"
