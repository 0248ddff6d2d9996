"""PEP 517 backend: scikit-build-core, plus the cuBLAS wheel when CUDA is built.

The CUDA part links cuBLASLt. A toolkit that ships cuBLAS needs nothing more;
a toolkit without it (nvcc + cudart only) gets headers and libcublasLt from
the `nvidia-cublas` wheel of the same CUDA line, added here as a build
requirement so that `pip install .` stays one command. CPU-only builds
(FUSEDNN_CUDA=OFF, or no nvcc) never download it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from scikit_build_core import build as _skbuild
from scikit_build_core.build import (  # noqa: F401  (re-exported hooks)
    build_editable,
    build_sdist,
    build_wheel,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)


def _find_nvcc() -> str | None:
    for var in ("CUDACXX",):
        if os.environ.get(var) and os.path.exists(os.environ[var]):
            return os.environ[var]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        root = os.environ.get(var)
        if root and os.path.exists(os.path.join(root, "bin", "nvcc")):
            return os.path.join(root, "bin", "nvcc")
    found = shutil.which("nvcc")
    if found:
        return found
    default = "/usr/local/cuda/bin/nvcc"
    return default if os.path.exists(default) else None


def _cuda_requirements() -> list[str]:
    mode = os.environ.get("FUSEDNN_CUDA", "AUTO").upper()
    if mode in ("OFF", "0", "FALSE", "NO"):
        return []
    nvcc = _find_nvcc()
    if nvcc is None:
        return []
    root = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    for inc in ("include", os.path.join("targets", "x86_64-linux", "include"),
                os.path.join("targets", "sbsa-linux", "include")):
        if os.path.exists(os.path.join(root, inc, "cublasLt.h")):
            return []  # the toolkit has cuBLAS: nothing to add
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    m = re.search(r"release (\d+)\.(\d+)", out)
    if not m:
        return []
    major, minor = int(m.group(1)), int(m.group(2))
    if major >= 13:
        return [f"nvidia-cublas=={major}.{minor}.*"]
    if major == 12:
        return [f"nvidia-cublas-cu12=={major}.{minor}.*"]
    return []


def get_requires_for_build_wheel(config_settings=None):
    return list(_skbuild.get_requires_for_build_wheel(config_settings)) + _cuda_requirements()


def get_requires_for_build_editable(config_settings=None):
    return list(_skbuild.get_requires_for_build_editable(config_settings)) + _cuda_requirements()
