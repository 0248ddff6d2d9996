"""Functional forward/backward pairs: forward returns (out, ctx), backward consumes ctx.

Every op takes NumPy arrays (CPU kernels), CuPy arrays (CUDA kernels), and any
array with ``__dlpack__`` (torch, JAX, ...), read without a copy; results then
come back as the kind of the first such argument. See ``fusednn._foreign``.
"""

from .activation import ActivationContext, activation_backward, activation_forward
from .dense import DenseContext, dense_backward, dense_forward, dense_stack_backward

# --- dropout ---
from .dropout import DropoutContext, dropout_backward, dropout_forward, dropout_mask

# --- batchnorm ---
from .batchnorm import (BatchNormContext, DenseBatchNormContext, batchnorm_backward,
                        batchnorm_forward, dense_batchnorm_backward, dense_batchnorm_forward,
                        fold_batchnorm)

# --- losses ---
from .loss import mean_squared_error, sigmoid_binary_cross_entropy, softmax_cross_entropy

__all__ = [
    "ActivationContext",
    "DenseContext",
    "activation_backward",
    "activation_forward",
    "dense_backward",
    "dense_forward",
    "dense_stack_backward",
    # --- dropout names ---
    "DropoutContext",
    "dropout_backward",
    "dropout_forward",
    "dropout_mask",
    # --- batchnorm names ---
    "BatchNormContext",
    "batchnorm_backward",
    "batchnorm_forward",
    "DenseBatchNormContext",
    "dense_batchnorm_backward",
    "dense_batchnorm_forward",
    "fold_batchnorm",
    # --- losses names ---
    "mean_squared_error",
    "sigmoid_binary_cross_entropy",
    "softmax_cross_entropy",
]
