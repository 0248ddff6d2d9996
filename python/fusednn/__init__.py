"""fusednn: fused CPU and CUDA kernels for training deep dense networks.

NumPy arrays run on the CPU kernels, CuPy arrays on the CUDA kernels.
"""

from __future__ import annotations

from . import activations, ops
from ._backend import (
    cuda_status,
    get_float32_matmul_precision,
    has_cuda,
    set_float32_matmul_precision,
)
from ._C import num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = [
    "activations",
    "build_info",
    "cuda_status",
    "get_float32_matmul_precision",
    "has_cuda",
    "num_threads",
    "ops",
    "set_float32_matmul_precision",
    "set_num_threads",
]


def build_info() -> dict:
    """What was built and what is usable: CUDA (compiled, archs, usable), BLAS, threads."""
    from . import _C, _build_config as cfg

    info = {
        "version": __version__,
        "cuda_built": bool(cfg.CUDA_BUILT),
        "cuda_archs": [a for a in cfg.CUDA_ARCHS.replace(",", ";").split(";") if a],
        "cuda_compiler": cfg.CUDA_COMPILER_VERSION or None,
        "cublaslt": cfg.CUBLASLT_SOURCE or None,
        "cuda_usable": has_cuda(),
        "cuda_status": cuda_status(),
        "blas": cfg.BLAS,
        "blas_config": _C.blas_config(),
        "cpu_threads": _C.num_threads(),
        "cxx_compiler": cfg.CXX_COMPILER,
    }
    if cfg.CUDA_BUILT:
        try:
            from . import _C_cuda

            info.update({f"cuda_{k}": v for k, v in _C_cuda.build_info().items()})
        except ImportError as e:  # built, but e.g. libcublasLt is not installed
            info["cuda_import_error"] = str(e)
    return info
