"""Plain NumPy float64 implementations: the test oracle and the readable
statement of each formula. Nothing here is fast; everything here is simple.

Derivatives are written as functions of the pre-activation z, independently
of the kernels' trick of reading them from the saved output.
"""

from __future__ import annotations

import math

import numpy as np

SELU_LAMBDA = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def sigmoid(z):
    z = _f64(z)
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def softplus(z):
    z = _f64(z)
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def phi(z):
    """Standard normal density."""
    return np.exp(-0.5 * _f64(z) ** 2) / math.sqrt(2.0 * math.pi)


def Phi(z):  # noqa: N802
    """Standard normal CDF."""
    return 0.5 * (1.0 + _erf(_f64(z) / math.sqrt(2.0)))


_GC = math.sqrt(2.0 / math.pi)


def activation(z, name, alpha=None, approximate=False, beta=1.0):
    """f(z) for the activation `name` (Keras names, see fusednn.activations)."""
    z = _f64(z)
    if name in ("linear", None):
        return z.copy()
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "leaky_relu":
        a = 0.2 if alpha is None else alpha
        return np.where(z > 0, z, a * z)
    if name == "elu":
        a = 1.0 if alpha is None else alpha
        return np.where(z > 0, z, a * np.expm1(np.minimum(z, 0.0)))
    if name == "selu":
        return SELU_LAMBDA * np.where(z > 0, z, SELU_ALPHA * np.expm1(np.minimum(z, 0.0)))
    if name == "gelu":
        if approximate:
            return 0.5 * z * (1.0 + np.tanh(_GC * (z + 0.044715 * z**3)))
        return z * Phi(z)
    if name in ("swish", "silu"):
        return z * sigmoid(beta * z)
    if name == "mish":
        return z * np.tanh(softplus(z))
    if name == "sigmoid":
        return sigmoid(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "softplus":
        return softplus(z)
    raise ValueError(f"unknown activation {name!r}")


def activation_grad(z, name, alpha=None, approximate=False, beta=1.0):
    """f'(z), with f'(0) taken from the z <= 0 side for the piecewise ones."""
    z = _f64(z)
    if name in ("linear", None):
        return np.ones_like(z)
    if name == "relu":
        return (z > 0).astype(np.float64)
    if name == "leaky_relu":
        a = 0.2 if alpha is None else alpha
        return np.where(z > 0, 1.0, a)
    if name == "elu":
        a = 1.0 if alpha is None else alpha
        return np.where(z > 0, 1.0, a * np.exp(np.minimum(z, 0.0)))
    if name == "selu":
        return SELU_LAMBDA * np.where(z > 0, 1.0, SELU_ALPHA * np.exp(np.minimum(z, 0.0)))
    if name == "gelu":
        if approximate:
            u = _GC * (z + 0.044715 * z**3)
            t = np.tanh(u)
            return 0.5 * (1 + t) + 0.5 * z * (1 - t**2) * _GC * (1 + 3 * 0.044715 * z**2)
        return Phi(z) + z * phi(z)
    if name in ("swish", "silu"):
        s = sigmoid(beta * z)
        return s + beta * z * s * (1 - s)
    if name == "mish":
        t = np.tanh(softplus(z))
        return t + z * sigmoid(z) * (1 - t**2)
    if name == "sigmoid":
        s = sigmoid(z)
        return s * (1 - s)
    if name == "tanh":
        return 1 - np.tanh(z) ** 2
    if name == "softplus":
        return sigmoid(z)
    raise ValueError(f"unknown activation {name!r}")


def dense_forward(x, w, b=None, activation_name="linear", **params):
    """y = f(x @ w + b) in float64. Returns (y, z)."""
    z = _f64(x) @ _f64(w)
    if b is not None:
        z = z + _f64(b)
    return activation(z, activation_name, **params), z


def dense_backward(dy, x, w, b=None, activation_name="linear", **params):
    """(dx, dw, db) in float64 for dy = dL/dy."""
    _, z = dense_forward(x, w, b, activation_name, **params)
    dz = _f64(dy) * activation_grad(z, activation_name, **params)
    dw = _f64(x).T @ dz
    dx = dz @ _f64(w).T
    db = dz.sum(axis=0) if b is not None else None
    return dx, dw, db
