#!/usr/bin/env bash
# The whole GPU check in one command, for a fresh machine with an NVIDIA GPU
# and no network (bench/README.md, "GPU check", has the exact device call):
#   1. what the machine has: nvidia-smi, nvcc, the Python packages used;
#   2. fusednn built from this tree for this GPU's architecture only, with
#      every core, without build isolation; wheels the machine lacks come
#      from .whl/ (made here beforehand by tools/gpu_wheels.sh);
#   3. the whole test suite with the GPU visible: fails unless fd.has_cuda()
#      and unless every CUDA-parametrised test ran (none skipped for want of
#      a GPU);
#   4. bench/dense.py, optimizers.py, bn_dropout.py and train.py with
#      --device cuda, cut to fit about 3 minutes, and one compute-sanitizer
#      memcheck pass over tools/gpu_smoke.py (every CUDA op once);
#   5. a summary table, last.
# Logs and JSON go to $OUT (or ./gpu-check-out): check.log, junit.xml,
# sanitizer.log, summary.json. Exit status: 0 when everything passed, 3 when
# no GPU is usable (after the build), 1 otherwise.
#
# Environment: PYTHON (default python3), CUDAARCHS (default: the GPU's
# compute capability, 90 where nvidia-smi is missing), GPU_CHECK_SKIP_BUILD=1
# to test an installed fusednn.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
LOG="$OUT/check.log"
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
start=$(date +%s)
stamp() { echo "[$(($(date +%s) - start)) s] $*"; }
declare -A RESULT

stamp "1. the machine"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')
else
  echo "nvidia-smi: not found (no NVIDIA driver on this machine)"
  cap=""
fi
nvcc --version 2>/dev/null | tail -n 2 || echo "nvcc: not found"
"$PY" --version
"$PY" -m pip list 2>/dev/null | grep -i -E '^(numpy|cupy|torch|jax|scikit-build-core|pybind11|scipy-openblas32|nvidia-cublas|pytest|pytest-xdist|pytest-timeout|scikit-learn|threadpoolctl) ' || true

stamp "2. build and install"
if [ "${GPU_CHECK_SKIP_BUILD:-0}" != 1 ]; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-cache-dir .whl/*.whl || exit 1
  fi
  export CUDAARCHS="${CUDAARCHS:-${cap:-90}}" FUSEDNN_CUDA=ON
  export CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)"
  stamp "CUDAARCHS=$CUDAARCHS, $CMAKE_BUILD_PARALLEL_LEVEL jobs"
  if ! timeout 420 "$PY" -m pip install --no-index --no-deps --no-build-isolation \
      --no-cache-dir . >"$OUT/build.log" 2>&1; then
    tail -n 60 "$OUT/build.log"
    stamp "BUILD FAILED (whole log: build.log)"
    exit 1
  fi
  rm -f "$OUT/build.log"
fi
"$PY" - <<'PY'
import fusednn as fd
info = fd.build_info()
print({k: info.get(k) for k in ("cuda_built", "cuda_archs", "cublaslt", "cuda_runtime_version",
                                "cublaslt_version", "cuda_usable", "cuda_status")})
PY
if ! "$PY" -c "import fusednn as fd, sys; sys.exit(0 if fd.has_cuda() else 1)"; then
  stamp "NO GPU: $("$PY" -c 'import fusednn as fd; print(fd.cuda_status())')"
  stamp "stopping: the checks below need a usable GPU"
  exit 3
fi

stamp "3. the test suite"
xdist=()
"$PY" -c "import xdist" 2>/dev/null && xdist=(-n 8)
timeout_opt=()
"$PY" -c "import pytest_timeout" 2>/dev/null && timeout_opt=(--timeout 300)
# Every failure in one run: the run is scarce, so it does not stop at the first.
OMP_NUM_THREADS=2 timeout 300 "$PY" -m pytest -q -p no:cacheprovider --maxfail 30 \
  "${xdist[@]}" "${timeout_opt[@]}" -rfEs --junitxml "$OUT/junit.xml" tests 2>&1 | tail -n 80
RESULT[tests]=${PIPESTATUS[0]}

stamp "4. benches and the sanitizer"
bench_dir=$(mktemp -d)
export FUSEDNN_BENCH_OUT="$bench_dir"
run_bench() {  # name, time limit, command...
  local name=$1 limit=$2
  shift 2
  stamp "bench: $*"
  timeout "$limit" "$PY" "$@" 2>&1 | tail -n 30
  RESULT[$name]=${PIPESTATUS[0]}
}
run_bench dense_relu 60 bench/dense.py --device cuda --activation relu --rounds 3
run_bench dense_elu 45 bench/dense.py --device cuda --activation elu --rounds 3
run_bench optimizers 60 bench/optimizers.py --device cuda --rounds 5
run_bench bn_dropout 60 bench/bn_dropout.py --device cuda --rounds 3
# the quick case with torch.compile as a peer: its first calls build kernels
run_bench train 150 bench/train.py --device cuda --quick
if command -v compute-sanitizer >/dev/null; then
  stamp "compute-sanitizer --tool memcheck tools/gpu_smoke.py"
  timeout 240 compute-sanitizer --tool memcheck --error-exitcode 99 --print-limit 50 \
    "$PY" tools/gpu_smoke.py >"$OUT/sanitizer.log" 2>&1
  RESULT[sanitizer]=$?
  tail -n 20 "$OUT/sanitizer.log"
else
  echo "compute-sanitizer: not found; running tools/gpu_smoke.py alone"
  "$PY" tools/gpu_smoke.py
  RESULT[sanitizer]=$?
fi

stamp "5. summary"
for k in "${!RESULT[@]}"; do echo "$k=${RESULT[$k]}"; done >"$bench_dir/status.txt"
"$PY" tools/gpu_summary.py "$OUT" "$bench_dir"
status=$?
stamp "done"
exit $status
