"""fusednn: fused CPU and CUDA kernels for training deep dense networks.

NumPy arrays run on the CPU kernels, CuPy arrays on the CUDA kernels.
"""

from __future__ import annotations

from . import (  # noqa: E402
    activations,
    callbacks,
    constraints,
    initializers,
    io,
    layers,
    memory,
    models,
    ops,
    optimizers,
    presets,
    pretrain,
    regularizers,
    schedules,
    tools,
)
from ._backend import (  # noqa: E402
    cuda_epilogue_counts,
    cuda_status,
    get_cuda_epilogues,
    get_float32_matmul_precision,
    has_cuda,
    set_cuda_epilogues,
    set_float32_matmul_precision,
)
from ._threads import num_threads, set_num_threads  # noqa: E402
from .memory import empty_cache, host_cache_info, set_host_cache_limit  # noqa: E402
from .layers import Input  # noqa: E402
from .models import Sequential  # noqa: E402
from ._threads import _register_threadpoolctl, _use_numpy_blas  # noqa: E402

_register_threadpoolctl()
_NUMPY_BLAS = _use_numpy_blas()

__version__ = "0.1.0"

__all__ = [
    "activations",
    "callbacks",
    "constraints",
    "build_info",
    "cuda_epilogue_counts",
    "cuda_status",
    "empty_cache",
    "get_cuda_epilogues",
    "get_float32_matmul_precision",
    "has_cuda",
    "host_cache_info",
    "initializers",
    "Input",
    "io",
    "layers",
    "memory",
    "models",
    "num_threads",
    "ops",
    "optimizers",
    "presets",
    "pretrain",
    "regularizers",
    "schedules",
    "Sequential",
    "set_cuda_epilogues",
    "set_float32_matmul_precision",
    "set_host_cache_limit",
    "set_num_threads",
    "tools",
]


def build_info() -> dict:
    """What was built and what is usable: CUDA (compiled, archs, usable), BLAS, threads."""
    from . import _C, _backend, _build_config as cfg

    info = {
        "version": __version__,
        "cuda_built": bool(cfg.CUDA_BUILT),
        "cuda_archs": [a for a in cfg.CUDA_ARCHS.replace(",", ";").split(";") if a],
        "cuda_compiler": cfg.CUDA_COMPILER_VERSION or None,
        "cublaslt": cfg.CUBLASLT_SOURCE or None,
        "cuda_usable": has_cuda(),
        # None when usable, else the first missing piece: "not-built",
        # "no-driver", "driver-too-old", "no-gpu", "no-cublaslt" or "no-cupy".
        "cuda_unavailable": _backend.cuda_unavailable_reason(),
        "cuda_status": cuda_status(),
        "blas": cfg.BLAS,
        "blas_config": _C.blas_config(),
        # The thread pool's limit and what chose it (FUSEDNN_NUM_THREADS,
        # OMP_NUM_THREADS or the CPUs); OpenBLAS runs one thread per call on
        # the pool's tiles.
        "cpu_threads": _C.num_threads(),
        "cpu_threads_chosen_by": _C.pool_stats()["chosen_by"],
        # NumPy's BLAS library, which GEMMs of 2^29 FMAs and more use (None:
        # fusednn's own OpenBLAS for all; FUSEDNN_NUMPY_BLAS=0).
        "numpy_blas": _NUMPY_BLAS,
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
