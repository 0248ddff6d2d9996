"""Functional forward/backward pairs: forward returns (out, ctx), backward consumes ctx."""

from .activation import ActivationContext, activation_backward, activation_forward
from .dense import DenseContext, dense_backward, dense_forward, dense_stack_backward

# --- dropout ---

# --- batchnorm ---

# --- losses ---
from .losses import mean_squared_error, sigmoid_binary_cross_entropy, softmax_cross_entropy

__all__ = [
    "ActivationContext",
    "DenseContext",
    "activation_backward",
    "activation_forward",
    "dense_backward",
    "dense_forward",
    "dense_stack_backward",
    # --- dropout names ---
    # --- batchnorm names ---
    # --- losses names ---
    "mean_squared_error",
    "sigmoid_binary_cross_entropy",
    "softmax_cross_entropy",
]
