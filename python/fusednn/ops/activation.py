"""Element-wise activations as forward/backward pairs.

``y, ctx = activation_forward(x, "elu", alpha=1.0)`` computes ``y = f(x)``;
``dx = activation_backward(dy, ctx)`` computes ``dx = dy * f'(x)``, with f'
taken from the saved output y where the activation allows it (relu,
leaky_relu, elu, selu, sigmoid, tanh, softplus) and from the saved input x
otherwise (gelu, swish, mish). See ``fusednn.activations`` for the names,
parameters and defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _backend
from .. import activations as _act
from .._foreign import arrays
from .._validate import float_array

__all__ = ["ActivationContext", "activation_forward", "activation_backward"]

_F32_INF = 2.0**128 * (1 - 2.0**-25)  # the smallest double that rounds to float32 inf


def check_param_fits(caller, spec, dtype):
    """Refuse an activation parameter (alpha, swish's beta) beyond the range
    of float32 for float32 data: the kernels compute in the data's type, where
    it would become inf (and leaky_relu(0) = inf * 0 = NaN)."""
    if abs(spec.alpha) >= _F32_INF and dtype == np.float32:
        name = "beta" if spec.name == "swish" else "alpha"
        raise ValueError(f"{caller}: {name}={spec.alpha!r} is beyond the range of float32, the "
                         f"dtype of the data; pass float64 data or a smaller {name}")


@dataclass
class ActivationContext:
    """What activation_backward needs: the activation and the saved array."""

    spec: _act.ActivationSpec
    saved: object  # y or x (see spec.saves_input), None for linear
    shape: tuple
    dtype: object
    backend: object


@arrays("x")
def activation_forward(x, activation, **params):
    """y = f(x), element-wise, for an array of any shape. Returns (y, ctx)."""
    caller = "activation_forward"
    spec = _act.get(activation, caller, **params)
    backend = _backend.backend_for(caller, x=x)
    x = float_array(caller, "x", x, backend.xp)
    check_param_fits(caller, spec, x.dtype)
    y = backend.activation_forward(x, spec)
    return y, ActivationContext(spec, spec.saved(x, y), tuple(x.shape), x.dtype, backend)


@arrays("dy")
def activation_backward(dy, ctx: ActivationContext):
    """dx = dy * f'(x) from the context of activation_forward."""
    caller = "activation_backward"
    if not isinstance(ctx, ActivationContext):
        raise TypeError(f"{caller}: ctx must come from activation_forward, "
                        f"got {type(ctx).__name__}")
    backend = _backend.backend_for(caller, dy=dy, saved=ctx.saved)
    dy = float_array(caller, "dy", dy, backend.xp, dtype=ctx.dtype)
    if tuple(dy.shape) != ctx.shape:
        raise ValueError(f"{caller}: dy has shape {tuple(dy.shape)}, expected {ctx.shape} "
                         f"(the shape of the forward input)")
    return backend.activation_backward(dy, ctx.saved, ctx.spec)
