"""PEP 517 backend: scikit-build-core, with three decisions of fusednn's own.

1. Whether to build the CUDA part. FUSEDNN_CUDA=ON builds it (and fails
   without nvcc), OFF never does, and AUTO (the default) builds it where it
   can run or costs nothing extra: nvcc is found and either an NVIDIA driver
   is present or the toolkit ships cuBLAS. A machine with nvcc but no GPU
   (a CI runner, a container) then builds the CPU part only, quickly and
   without a download; FUSEDNN_CUDA=ON builds CUDA wheels there.
2. The cuBLAS wheel. The CUDA part links cuBLASLt. A toolkit that ships
   cuBLAS needs nothing more; a toolkit without it (nvcc + cudart only) gets
   headers and libcublasLt from the `nvidia-cublas` wheel of the same CUDA
   line, added here as a build requirement so that `pip install .` stays one
   command (a ~420 MB download, only when CUDA is built).
3. The build directory carries over between builds. pip's build isolation
   installs scikit-build-core into a new temporary environment every time,
   and scikit-build-core takes a new location of itself as a reason to clear
   the build directory. CMakeLists.txt compiles against copies of the build
   requirements' files in the build tree, so nothing else changes from one
   isolated build to the next: telling scikit-build-core where it lives now
   keeps the objects, and a second `pip install .` recompiles nothing.
"""

from __future__ import annotations

import ctypes
import glob
import json
import os
import re
import shutil
import subprocess

import scikit_build_core
from scikit_build_core import build as _skbuild
from scikit_build_core.build import (  # noqa: F401  (re-exported hooks)
    build_sdist,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

_OFF = ("OFF", "0", "FALSE", "NO")


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


def _toolkit_has_cublas(nvcc: str) -> bool:
    root = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    return any(os.path.exists(os.path.join(root, inc, "cublasLt.h"))
               for inc in ("include", os.path.join("targets", "x86_64-linux", "include"),
                           os.path.join("targets", "sbsa-linux", "include")))


def _driver_present() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def _cuda_mode() -> str:
    """"ON" or "OFF": FUSEDNN_CUDA with AUTO resolved (see the module docstring)."""
    mode = os.environ.get("FUSEDNN_CUDA", "AUTO").upper()
    if mode in _OFF:
        return "OFF"
    if mode != "AUTO":
        return "ON"
    nvcc = _find_nvcc()
    if nvcc is None:
        return "OFF"
    return "ON" if _driver_present() or _toolkit_has_cublas(nvcc) else "OFF"


def _cuda_requirements() -> list[str]:
    if _cuda_mode() == "OFF":
        return []
    nvcc = _find_nvcc()
    if nvcc is None or _toolkit_has_cublas(nvcc):
        return []  # ON without nvcc fails in CMake, with its own message
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


def _keep_build_dir() -> None:
    """Point the build directories' record of scikit-build-core at this
    environment's copy, where it records the same version for this source
    tree (decision 3 in the module docstring). Anything unexpected leaves
    the record alone, and the build then starts from scratch."""
    here = os.path.dirname(os.path.realpath(scikit_build_core.__file__))
    for path in glob.glob(os.path.join("build", "*", ".skbuild-info.json")):
        try:
            with open(path, encoding="utf-8") as f:
                info = json.load(f)
            if (info.get("skbuild_version") != scikit_build_core.__version__
                    or os.path.realpath(info.get("source_dir", "")) != os.path.realpath(".")
                    or info.get("skbuild_path") == here):
                continue
            info["skbuild_path"] = here
            with open(path, "w", encoding="utf-8") as f:
                json.dump(info, f, indent=2)
        except (OSError, ValueError, AttributeError):
            continue


def _prepare() -> None:
    os.environ["FUSEDNN_CUDA"] = _cuda_mode()
    _keep_build_dir()


def get_requires_for_build_wheel(config_settings=None):
    return list(_skbuild.get_requires_for_build_wheel(config_settings)) + _cuda_requirements()


def get_requires_for_build_editable(config_settings=None):
    return list(_skbuild.get_requires_for_build_editable(config_settings)) + _cuda_requirements()


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _prepare()
    return _skbuild.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    _prepare()
    return _skbuild.build_editable(wheel_directory, config_settings, metadata_directory)
