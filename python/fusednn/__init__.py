"""fusednn: fused CPU and CUDA kernels for training deep dense networks.

NumPy arrays run on the CPU kernels, CuPy arrays on the CUDA kernels.
"""

from __future__ import annotations

from . import (  # noqa: E402
    activations,
    callbacks,
    constraints,
    distributed,
    initializers,
    layers,
    memory,
    models,
    ops,
    optimizers,
    plot,
    presets,
    pretrain,
    regularizers,
    saving,
    schedules,
    tools,
)
from .saving import interop as io  # noqa: E402  (the importers' short name)
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
from . import export, interop  # noqa: E402  (onnx, torch and keras load on first use)
from ._info import build_info  # noqa: E402
from ._version import __version__  # noqa: E402,F401

__all__ = [
    "activations",
    "callbacks",
    "constraints",
    "build_info",
    "cuda_epilogue_counts",
    "cuda_status",
    "distributed",
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
    "plot",
    "presets",
    "pretrain",
    "regularizers",
    "saving",
    "schedules",
    "Sequential",
    "set_cuda_epilogues",
    "set_float32_matmul_precision",
    "set_host_cache_limit",
    "set_num_threads",
    "tools",
]
