"""``fusednn.build_info()``: what was built into this install and what is usable."""

from __future__ import annotations

from . import _C, _backend, _threads
from ._version import __version__


def build_info() -> dict:
    """What was built and what is usable: CUDA (compiled, archs, usable), BLAS, threads."""
    from . import _build_config as cfg  # written by the build

    info = {
        "version": __version__,
        "cuda_built": bool(cfg.CUDA_BUILT),
        "cuda_archs": [a for a in cfg.CUDA_ARCHS.replace(",", ";").split(";") if a],
        "cuda_compiler": cfg.CUDA_COMPILER_VERSION or None,
        "cublaslt": cfg.CUBLASLT_SOURCE or None,
        "cuda_usable": _backend.has_cuda(),
        # None when usable, else the first missing piece: "not-built",
        # "no-driver", "driver-too-old", "no-gpu", "no-cublaslt" or "no-cupy".
        "cuda_unavailable": _backend.cuda_unavailable_reason(),
        "cuda_status": _backend.cuda_status(),
        "blas": cfg.BLAS,
        "blas_config": _C.blas_config(),
        # The thread pool's limit and what chose it (FUSEDNN_NUM_THREADS,
        # OMP_NUM_THREADS or the CPUs); OpenBLAS runs one thread per call on
        # the pool's tiles.
        "cpu_threads": _C.num_threads(),
        "cpu_threads_chosen_by": _C.pool_stats()["chosen_by"],
        # NumPy's BLAS library, which GEMMs of 2^29 FMAs and more use (None:
        # fusednn's own OpenBLAS for all; FUSEDNN_NUMPY_BLAS=0).
        "numpy_blas": _threads.NUMPY_BLAS,
        # {"level", "chosen_by", "compiled", "supported"}: the CPU kernels'
        # instruction-set level in use (FUSEDNN_CPU_DISPATCH forces one).
        "cpu_dispatch": _C.cpu_dispatch(),
        "cxx_compiler": cfg.CXX_COMPILER,
    }
    if cfg.CUDA_BUILT:
        try:
            from . import _C_cuda

            cinfo = _C_cuda.build_info()
            info["cuda_runtime_version"] = cinfo["cuda_runtime_version"]
            info["cublaslt_version"] = cinfo["cublaslt_version"]
        except ImportError as e:  # built, but e.g. libcublasLt is not installed
            info["cuda_import_error"] = str(e)
    return info
