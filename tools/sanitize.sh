#!/usr/bin/env bash
# The tests against a build with AddressSanitizer and UndefinedBehaviorSanitizer
# (FUSEDNN_SANITIZE=address,undefined in CMakeLists.txt): fusednn._C, every
# level's kernel library and the thread pool, instrumented. Any report aborts
# the Python process that made it, so the pytest run fails (a report in a
# test's child process fails that test).
#
# usage: tools/sanitize.sh [--subset] [--build-only] [pytest arguments...]
#   (nothing)      the whole suite (tests/), at the level this CPU picks
#   --subset       the test files that call every binding in csrc/bindings and
#                  every CPU kernel (SUBSET below), plus the fuzz suite, once
#                  at every dispatch level this CPU runs
#   --build-only   build (or update) the sanitized copy and stop
#   anything else  passed to pytest (-x, -k ..., test paths: these replace
#                  tests/ or the subset's files)
# environment:
#   PYTHON                the interpreter: default the active virtual
#                         environment's, else ./.venv's, else python3. Its
#                         environment needs the build requirements
#                         (pyproject.toml's [build-system]; installed here
#                         where missing) and the test extra.
#   FUSEDNN_SANITIZE_DIR  default build/sanitize: <dir>/build holds the
#                         objects (a second run recompiles only what changed),
#                         <dir>/target the installed package.
#   FUSEDNN_CPU_DISPATCH  honoured: the level to test (--subset then runs it
#                         alone).
# The CUDA part is not built (the sanitizers instrument host code only; see
# CMakeLists.txt), so the CUDA tests skip as on a machine without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# Test files that between them call every binding of fusednn._C
# (csrc/bindings/*.cpp; found by recording each test file's calls) and every
# CPU kernel of the dispatch table (csrc/cpu/dispatch.h), float32 and
# float64. The two bindings no test calls, copy_into and blas_num_threads,
# are called below, before the tests.
SUBSET=(
  tests/test_activations.py     # activation_forward/backward, every activation
  tests/test_dense.py           # dense_forward, dense_backward
  tests/test_dense_stack.py     # dense_backward_weight, dense_backward_input
  tests/test_batchnorm.py       # batchnorm_forward (train, infer), batchnorm_backward
  tests/test_dense_batchnorm.py # batch norm fused with activation and dropout
  tests/test_dropout.py         # dropout_forward/backward, dropout_mask, philox4x32_10
  tests/test_losses.py          # softmax_cross_entropy (int32, int64 labels), point_loss
  tests/test_optimizers.py      # optimizer_step: every optimizer and clipping mode
  tests/test_engine.py          # StepPlan: run, grads, predict
  tests/test_memory.py          # host_cache_info/empty/set_limit, gemm, large outputs
  tests/test_threads.py         # set_num_threads, num_threads, pool_stats, peer BLAS, fork
  tests/test_cpu_dispatch.py    # cpu_dispatch; every level in a child process
  tests/test_build.py           # blas_config
)
# and, where they exist, the fuzz suite and its regressions
OPTIONAL=(tests/fuzz tests/test_fuzz_regressions.py)

subset=0
build_only=0
args=()
paths=0  # test paths among the pytest arguments: they replace the defaults
for a in "$@"; do
  case "$a" in
    --subset) subset=1 ;;
    --build-only) build_only=1 ;;
    *) args+=("$a"); [ -e "${a%%::*}" ] && paths=1 ;;
  esac
done

if [ -n "${PYTHON:-}" ]; then
  python=$PYTHON
elif [ -n "${VIRTUAL_ENV:-}" ]; then
  python=$VIRTUAL_ENV/bin/python
elif [ -x .venv/bin/python ]; then
  python=$root/.venv/bin/python
else
  python=python3
fi
python=$(command -v "$python")
# cmake and ninja from the interpreter's environment (pip's cmake and ninja
# wheels) come before any older system copy.
export PATH="$(dirname "$python"):$PATH"

dir=${FUSEDNN_SANITIZE_DIR:-$root/build/sanitize}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
target=$dir/target

# --no-build-isolation (so that the build directory, and with it every
# object, survives from one run to the next) builds with this environment's
# packages: install the build requirements it lacks.
# (scikit-build-core fetches cmake and ninja itself only inside an isolated
# build.)
missing=$("$python" - <<'PY'
import importlib.util, re, shutil, subprocess, tomllib
with open("pyproject.toml", "rb") as f:
    reqs = tomllib.load(f)["build-system"]["requires"]
need = [r for r in reqs
        if importlib.util.find_spec(re.split("[<>=!~ ;]", r)[0].replace("-", "_")) is None]
cmake = shutil.which("cmake")
version = subprocess.run([cmake, "--version"], capture_output=True, text=True).stdout if cmake else ""
m = re.search(r"(\d+)\.(\d+)", version)
if m is None or (int(m[1]), int(m[2])) < (3, 24):  # CMakeLists.txt's minimum
    need.append("cmake>=3.24")
if shutil.which("ninja") is None:
    need.append("ninja")
print(" ".join(need))
PY
)
if [ -n "$missing" ]; then
  echo "sanitize: installing the build requirements: $missing" >&2
  # shellcheck disable=SC2086
  "$python" -m pip install -q $missing
fi

# The sanitized copy is installed afresh each time (pip --target does not
# replace a package already there); the objects stay in $dir/build.
rm -rf "$target"
echo "sanitize: building into $target" >&2
start=$SECONDS
FUSEDNN_SANITIZE=address,undefined FUSEDNN_CUDA=OFF \
  "$python" -m pip install -q --no-deps --no-build-isolation --target "$target" \
  -C build-dir="$dir/build" .
echo "sanitize: build took $((SECONDS - start)) s" >&2
# The modules find OpenBLAS at $ORIGIN/../scipy_openblas32/lib, as in
# site-packages: link the environment's copy beside the package.
openblas=$("$python" -c 'import os, scipy_openblas32 as s; print(os.path.dirname(s.__file__))')
ln -sfn "$openblas" "$target/scipy_openblas32"
[ "$build_only" = 1 ] && exit 0

# The sanitizer runtimes the modules were linked with (ldd names the
# compiler's own, whichever compiler CMake used). The interpreter itself is
# not instrumented, so ASan's runtime must be loaded before anything else:
# LD_PRELOAD, which the tests' child processes inherit too.
runtime() {
  ldd "$target"/fusednn/_C.*.so | awk -v lib="$1" '$1 ~ "^"lib"\\.so" { print $3 }'
}
asan=$(runtime libasan)
ubsan=$(runtime libubsan)
if [ -z "$asan" ] || [ -z "$ubsan" ]; then
  echo "sanitize: $target/fusednn/_C is not linked with libasan and libubsan" >&2
  exit 1
fi
export LD_PRELOAD="$asan $ubsan${LD_PRELOAD:+ $LD_PRELOAD}"
# detect_leaks=0: CPython, NumPy and PyTorch keep their allocations until exit
# by design, so leak reports would be theirs. abort_on_error: SIGABRT, so
# that Python's faulthandler prints the test that was running.
# allocator_may_return_null: tests that ask for an impossible size expect a
# MemoryError, which ASan would otherwise report as a bug of the caller.
# log_path: each report goes to a file of its own (<reports>/asan.<pid>;
# ubsan.<pid> below), not to stderr, which pytest captures into a file that
# dies with the process, and which a test of a child process may read and
# let pass; the reports are printed, and fail this script, after each
# pytest run.
reports=$dir/reports
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:allocator_may_return_null=1:check_initialization_order=1:strict_init_order=1:log_path=$reports/asan${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:abort_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
# GCC's UBSan runtime, loaded beside ASan's, leaves its options' log_path
# unread and writes to stderr; every Python process (the tests' children
# too) points it at the reports through a sitecustomize of its own.
mkdir -p "$dir/site"
cat >"$dir/site/sitecustomize.py" <<PY
# Written by tools/sanitize.sh: UBSan's reports to files, as ASan's.
import ctypes

ctypes.CDLL("$ubsan").__sanitizer_set_report_path(b"$reports/ubsan")
PY
export PYTHONPATH="$target:$dir/site"
# The build is CPU-only whatever the caller builds otherwise (.ci/run
# expects CUDA of its own build): test_build checks that it is.
export FUSEDNN_EXPECT_CUDA=0
# Not the tests: emulating an older CPU with qemu-user under ASan (its
# shadow memory is terabytes of reserved address space) says nothing about
# fusednn's code and takes minutes; those tests run in the normal suite.
deselect=(--deselect tests/test_cpu_dispatch.py::test_default_build_runs_on_older_cpus
          --deselect tests/test_cpu_dispatch.py::test_a_level_this_cpu_lacks_is_refused_at_import)
pytest=("$python" -m pytest -q -p no:cacheprovider "${deselect[@]}")

# Prints the reports of the last run, if any, and fails. The runtimes also
# log warnings there (an allocation too large for ASan, refused as
# allocator_may_return_null asks, which the tests expect): counted, not
# printed.
check_reports() {
  local errors warnings
  errors=$(grep -l -r -E "ERROR: (AddressSanitizer|UndefinedBehaviorSanitizer)|runtime error:" \
           "$reports" 2>/dev/null | sort || true)
  warnings=$(find "$reports" -type f 2>/dev/null | wc -l)
  if [ -n "$errors" ]; then
    # shellcheck disable=SC2086
    cat $errors >&2
    echo "sanitize: the reports above, in $reports" >&2
    return 1
  fi
  [ "$warnings" = 0 ] || echo "sanitize: $warnings log(s) of warnings only, in $reports" >&2
}

# One pytest run (and its children) at a level ("" for this CPU's choice);
# fails on a failed test or on a report of any process.
failed=0
run_tests() {
  local level=$1 start=$SECONDS rc=0
  shift
  rm -rf "$reports" && mkdir -p "$reports"
  echo "sanitize: pytest $* (level ${level:-auto})" >&2
  if [ -n "$level" ]; then
    FUSEDNN_CPU_DISPATCH=$level "${pytest[@]}" "$@" || rc=$?
  else
    "${pytest[@]}" "$@" || rc=$?
  fi
  check_reports || rc=1
  echo "sanitize: level ${level:-auto}: exit $rc, $((SECONDS - start)) s" >&2
  [ "$rc" = 0 ] || failed=1
}

# Fails here, not in the middle of the tests, if the sanitized build does not
# load (its import is the first code it runs). Then the two bindings that no
# test calls: copy_into (bench/'s roofline) and blas_num_threads.
rm -rf "$reports" && mkdir -p "$reports"
"$python" - "$target" <<'PY' || { check_reports; exit 1; }
import sys
import numpy as np
import fusednn
from fusednn import _C

assert fusednn.__file__.startswith(sys.argv[1]), fusednn.__file__
src = np.arange(3 << 18, dtype=np.float32)  # 3 MiB: several chunks of the copy
dst = np.empty_like(src)
_C.copy_into(dst, src)
assert np.array_equal(dst, src)
assert _C.blas_num_threads() >= 1
PY
check_reports || exit 1

if [ "$subset" = 0 ]; then
  [ "$paths" = 1 ] || args+=(tests)
  run_tests "${FUSEDNN_CPU_DISPATCH:-}" "${args[@]}"
  exit "$failed"
fi

if [ "$paths" = 0 ]; then
  args+=("${SUBSET[@]}")
  for t in "${OPTIONAL[@]}"; do
    [ -e "$t" ] && args+=("$t")
  done
fi
if [ -n "${FUSEDNN_CPU_DISPATCH:-}" ]; then
  levels=$FUSEDNN_CPU_DISPATCH
else
  levels=$("$python" -c 'import fusednn as fd; print(" ".join(fd.build_info()["cpu_dispatch"]["supported"]))')
fi
for level in $levels; do
  run_tests "$level" "${args[@]}"
done
exit "$failed"
