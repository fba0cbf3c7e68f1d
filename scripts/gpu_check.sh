#!/usr/bin/env bash
# The first run of sem_fast on a GPU, in one command (issue 13): on a machine with one H100/H200,
# a CUDA build of torch, Triton, nvcc, pytest, pytest-benchmark and hypothesis (nothing is
# downloaded), from the repository's working tree:
#
#   scripts/gpu_check.sh [OUT_DIR]      # OUT_DIR (default gpu_check_out): one log per step,
#                                       # bench.json and the updated RESULTS.md
#
# Steps, in order; each has a time limit, and the script stops at the first failure, naming the
# step, its exit status and its log:
#   preflight  CUDA device, versions
#   build      the extension with its CUDA kernels, for sm_90 only (TORCH_CUDA_ARCH_LIST=9.0)
#   backends   both fast backends ('triton', 'native') available on CUDA
#   nan        bf16 NaN propagation on CUDA, both fast backends (tests/ops -k "nan or cast")
#   tests      the fused-op and step tests on CUDA, both fast backends (tests/ops, tests/test_step.py)
#   sanitizer  compute-sanitizer --tool memcheck over scripts/gpu_smoke.py (a small mix + loss
#              forward/backward of both backends); skipped, loudly, where the toolkit has no
#              compute-sanitizer (then scripts/gpu_smoke.py runs alone) or the device refuses it
#   bench      the mix, loss and step benchmarks (SEM_FAST_BENCH_ROUNDS=10) -> bench.json
#   report     the GPU section of benchmarks/RESULTS.md (benchmarks/report.py)
# Expected well within 8 minutes (the step limits below are upper bounds, not estimates); the
# elapsed time is printed after each step.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-gpu_check_out}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET  # compile the Triton kernels for the GPU
START=$SECONDS

# step NAME LIMIT_SECONDS COMMAND...: run COMMAND with its output in $OUT/NAME.log (tail shown).
step() {
  local name=$1 limit=$2 rc=0
  shift 2
  echo "=== [$((SECONDS - START)) s] $name (limit ${limit} s): $*"
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1 || rc=$?
  tail -n 25 "$OUT/$name.log"
  if [ "$rc" -ne 0 ]; then
    [ "$rc" -eq 124 ] && echo "GPU CHECK FAILED: step '$name' ran past ${limit} s" >&2
    echo "GPU CHECK FAILED: step '$name' exited with status $rc; full log: $OUT/$name.log" >&2
    exit 1
  fi
}

step preflight 60 "$PY" -c "
import torch, triton
assert torch.cuda.is_available(), 'no CUDA device visible to torch ' + torch.__version__
print('torch', torch.__version__, 'triton', triton.__version__, 'device', torch.cuda.get_device_name())
"
step build 300 env TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS="$(nproc)" SEM_FAST_REQUIRE_EXT=1 \
  "$PY" setup.py -q build_ext --inplace
step backends 60 "$PY" -c "
from sem_fast import available_backends
why = available_backends('cuda')
assert why['triton'] is None and why['native'] is None, why
print('fast backends on cuda:', why)
"
step nan 120 "$PY" -m pytest -q -x -p no:cacheprovider tests/ops -k "nan or cast"
step tests 300 "$PY" -m pytest -q -x -p no:cacheprovider tests/ops tests/test_step.py \
  --ignore=tests/ops/test_kernels_compile_for_gpu.py --ignore=tests/ops/test_native_build.py

if command -v compute-sanitizer >/dev/null; then
  rc=0
  echo "=== [$((SECONDS - START)) s] sanitizer (limit 240 s)"
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 240 compute-sanitizer --tool memcheck --error-exitcode 1 \
    "$PY" scripts/gpu_smoke.py >"$OUT/sanitizer.log" 2>&1 || rc=$?
  tail -n 25 "$OUT/sanitizer.log"
  if [ "$rc" -ne 0 ] && grep -q "Device not supported" "$OUT/sanitizer.log"; then
    echo "SANITIZER SKIPPED: compute-sanitizer cannot attach to this device (see $OUT/sanitizer.log)" >&2
  elif [ "$rc" -ne 0 ]; then
    echo "GPU CHECK FAILED: step 'sanitizer' exited with status $rc; full log: $OUT/sanitizer.log" >&2
    exit 1
  fi
else
  echo "SANITIZER SKIPPED: no compute-sanitizer on PATH in this toolkit" >&2
  step smoke 120 "$PY" scripts/gpu_smoke.py
fi

BENCH="pytest benchmarks/bench_mix.py benchmarks/bench_sem_loss.py benchmarks/bench_step.py --benchmark-only -q -p no:cacheprovider"
step bench 240 env SEM_FAST_BENCH_ROUNDS=10 "$PY" -m $BENCH --benchmark-json "$OUT/bench.json"
step report 60 "$PY" -m benchmarks.report "$OUT/bench.json" \
  --command "SEM_FAST_BENCH_ROUNDS=10 python -m $BENCH --benchmark-json bench.json (scripts/gpu_check.sh)"
cp benchmarks/RESULTS.md "$OUT/RESULTS.md"
echo "GPU CHECK PASSED in $((SECONDS - START)) s; results in $OUT"
[ $((SECONDS - START)) -le 480 ] || echo "WARNING: over the 8-minute target ($((SECONDS - START)) s)" >&2
