#!/usr/bin/env bash
# Wheels that tools/gpu_check.sh installs on a GPU machine without network
# access: what fusednn needs there that the machine's image lacks. Run here,
# in the repository root, with network access; they land in .whl/ (ignored
# by git), which the device call carries along.
#
# The lent machines' image (Python 3.12, x86-64) has NumPy, CuPy, PyTorch,
# JAX, pytest(-xdist, -timeout), scikit-build-core, pybind11, scikit-learn and
# the nvidia-cublas wheel; it lacks scipy-openblas32, fusednn's BLAS. The
# version is the one this machine built with, so both sides agree.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
version=$("$PY" -c "import scipy_openblas32 as s; print(s.__version__)" 2>/dev/null || true)
spec="scipy-openblas32${version:+==$version}"
rm -rf .whl
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "$spec"
ls -l .whl
