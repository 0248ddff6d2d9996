"""Batch normalisation fused with an activation and (optionally) dropout.

For x of shape (batch, features), per feature j:

    training:   mu_j, var_j = mean and biased variance of x[:, j] over the batch
    inference:  mu_j, var_j = moving_mean[j], moving_var[j]
    x_hat = (x - mu_j) / sqrt(var_j + epsilon)
    z     = gamma_j * x_hat + beta_j          (gamma = 1 without scale, beta = 0 without center)
    y     = dropout(activation(z))

in one pass over the data (after the statistics pass in training), and the
backward in two passes (one in inference). The statistics are shifted sums in
double precision, so a feature with mean 1e4 and std 1e-2 is normalised
correctly in float32.

Moving statistics (training only, updated in place):

- ``convention="keras"`` (default): ``moving = moving * momentum + batch *
  (1 - momentum)`` with the biased batch variance; Keras' defaults
  ``momentum=0.99``, ``epsilon=1e-3``.
- ``convention="torch"``: ``running = running * (1 - momentum) + batch *
  momentum`` with the unbiased variance ``var * n / (n - 1)``, as
  ``torch.nn.BatchNorm1d`` (whose defaults are ``momentum=0.1``,
  ``eps=1e-5``: pass them explicitly; torch's 0.1 is Keras' 0.9).

A batch of one sample in training: with the Keras convention the batch
variance is 0, x_hat is 0, the output is ``activation(beta)`` and dx is 0
(Keras' behaviour); with the torch convention it is a ValueError, as in
PyTorch ("expected more than 1 value per feature when training").

Dropout after the activation (``dropout=rate``): inverted dropout, or alpha
dropout with ``alpha_dropout=True``, with the counter-based mask of
``fusednn.ops.dropout_forward`` (the same ``seed``/``step`` give the same mask,
on CPU and GPU), stored as bits: ``ctx.mask_nbytes`` is ceil(n/32)*4 bytes.
It is active when ``dropout_training`` is true, which defaults to
``training``; ``training=False, dropout_training=True`` is MC dropout after a
BN layer in inference mode.

The context keeps references to x and y, not copies (the backward reads
both): modifying them in place between forward and backward changes the
gradients, as in other frameworks.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .. import _backend
from .. import activations as _act
from .._C import BnConvention
from .._foreign import arrays
from .._validate import (c_array, check_bool, check_float, check_rate, check_uint64,
                         float_array)
from .activation import check_param_fits

__all__ = ["BatchNormContext", "DenseBatchNormContext", "batchnorm_forward", "batchnorm_backward",
           "dense_batchnorm_forward", "dense_batchnorm_backward", "fold_batchnorm"]

_CONVENTIONS = {"keras": BnConvention.Keras, "torch": BnConvention.Torch}


class BatchNormOptions(NamedTuple):
    """The checked scalars of one batch norm, as both backends take them (a
    tuple: made once per call, it costs less than a dataclass)."""

    training: bool  # normalised with the batch statistics (moving ones updated)
    momentum: float
    epsilon: float
    convention: BnConvention
    spec: _act.ActivationSpec
    rate: float  # dropout rate actually applied (0: none)
    alpha_dropout: bool
    seed: int
    step: int


# The checked fields go straight into the tuple: NamedTuple's generated
# __new__ costs twice as much, on every call.
_new_options = functools.partial(tuple.__new__, BatchNormOptions)


@dataclass
class BatchNormContext:
    """What batchnorm_backward needs from batchnorm_forward."""

    x: object
    y: object
    cols: object  # (5, features): mean hi/lo, gamma*invstd, beta, invstd (see batchnorm.h)
    mask: object  # bit-packed dropout mask (uint32 words) or None
    has_gamma: bool
    has_beta: bool
    opts: BatchNormOptions
    backend: object
    mean: object = None  # the batch statistics (float64, training only)
    var: object = None

    @property
    def mask_nbytes(self) -> int:
        """Bytes held for the dropout mask: ceil(batch * features / 32) * 4, or 0."""
        return 0 if self.mask is None else int(self.mask.nbytes)


def _feature(caller, name, a, xp, n, dtype, *, writable=False):
    if a is None:
        return None
    dt = getattr(a, "dtype", None)
    if not isinstance(dt, np.dtype):
        raise TypeError(f"{caller}: {name} must be a numpy.ndarray, cupy.ndarray or None, got "
                        f"{type(a).__name__}")
    if dt is not dtype and dt != dtype and dt.newbyteorder("=") != dtype:
        raise TypeError(f"{caller}: {name} has dtype {dt.name}, expected {dtype.name} "
                        f"(the dtype of x)")
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{caller}: {name} has shape {tuple(a.shape)}, expected ({n},) for x "
                         f"with {n} features")
    if writable:
        # Updated in place: a copy would silently drop the update.
        if not a.flags.c_contiguous:
            raise ValueError(f"{caller}: {name} must be C-contiguous (it is updated in place)")
        if not a.flags.writeable:
            raise ValueError(f"{caller}: {name} is read-only (it is updated in place)")
        if not dt.isnative or not getattr(a.flags, "aligned", True):
            what = "byte-swapped" if not dt.isnative else "misaligned"
            raise ValueError(f"{caller}: {name} is {what}; it is updated in place, so it must "
                             f"be an aligned array in native byte order")
        return a
    return c_array(a, xp, dtype)  # dtype, ndim checked above


def _bn_options(caller, backend, batch, n, dtype, gamma, beta, moving_mean, moving_var, training,
                momentum, epsilon, convention, spec, dropout, seed, step, alpha_dropout,
                dropout_training):
    """(gamma, beta, moving_mean, moving_var, BatchNormOptions): the checked
    batch-norm arguments for inputs of (batch, n) features."""
    if batch == 0 or n == 0:
        raise ValueError(f"{caller}: x has shape {(batch, n)}; needs at least one sample "
                         f"and one feature")
    check_param_fits(caller, spec, dtype)
    gamma = _feature(caller, "gamma", gamma, backend.xp, n, dtype)
    beta = _feature(caller, "beta", beta, backend.xp, n, dtype)
    moving_mean = _feature(caller, "moving_mean", moving_mean, backend.xp, n, dtype, writable=True)
    moving_var = _feature(caller, "moving_var", moving_var, backend.xp, n, dtype, writable=True)
    training = check_bool(caller, "training", training)
    if (moving_mean is None) != (moving_var is None):
        raise ValueError(f"{caller}: moving_mean and moving_var must both be arrays or both be "
                         f"None")
    if not training and moving_mean is None:
        raise ValueError(f"{caller}: training=False normalises with moving_mean and moving_var, "
                         f"which are None")
    momentum = check_float(caller, "momentum", momentum, low=0.0, high=1.0)
    epsilon = check_float(caller, "epsilon", epsilon, low=0.0, low_open=True)
    if not isinstance(convention, str) or convention not in _CONVENTIONS:
        raise ValueError(f"{caller}: convention must be 'keras' or 'torch', got {convention!r}")
    if training and batch == 1 and convention == "torch":
        raise ValueError(f"{caller}: expected more than 1 sample per feature when training with "
                         f"convention='torch' (got x of shape {(batch, n)})")
    rate = 0.0
    if dropout is not None:
        rate = check_rate(caller, "dropout", dropout)
    seed = check_uint64(caller, "seed", seed)
    step = check_uint64(caller, "step", step)
    alpha_dropout = check_bool(caller, "alpha_dropout", alpha_dropout)
    if dropout_training is None:
        dropout_training = training
    if not check_bool(caller, "dropout_training", dropout_training):
        rate = 0.0
    return gamma, beta, moving_mean, moving_var, _new_options((
        training, momentum, epsilon, _CONVENTIONS[convention], spec, rate, alpha_dropout, seed,
        step))


@arrays("x", "gamma", "beta", "moving_mean", "moving_var",
        writable=("moving_mean", "moving_var"))
def batchnorm_forward(x, gamma, beta, moving_mean, moving_var, /, *, training, momentum=0.99,
                      epsilon=1e-3, activation="linear", dropout=None, seed=0, step=0,
                      alpha_dropout=False, dropout_training=None, convention="keras", **params):
    """y = dropout(activation(gamma * x_hat + beta)). Returns (y, ctx).

    x: (batch, features) float32/float64, NumPy (CPU) or CuPy (GPU).
    gamma, beta: (features,) or None (Keras ``scale=False`` / ``center=False``).
    moving_mean, moving_var: (features,), updated in place when training;
    both may be None in training (no moving statistics kept).
    training: normalise with the batch statistics (True) or the moving ones.
    activation and ``params``: as in fusednn.activations (the five arrays are
    positional-only, so swish's ``beta=`` reaches the activation). dropout: the rate in
    [0, 1) or None; seed, step: the mask's key and counter (ints >= 0).
    See the module docstring for the conventions and the batch-of-one case.
    """
    caller = "batchnorm_forward"
    spec = _act.get(activation, caller, **params)
    backend = _backend.backend_for(caller, x=x, gamma=gamma, beta=beta,
                                   moving_mean=moving_mean, moving_var=moving_var)
    x = float_array(caller, "x", x, backend.xp, ndim=2)
    gamma, beta, moving_mean, moving_var, opts = _bn_options(
        caller, backend, *x.shape, x.dtype, gamma, beta, moving_mean, moving_var, training,
        momentum, epsilon, convention, spec, dropout, seed, step, alpha_dropout,
        dropout_training)
    y, cols, mean, var, mask, _ = backend.batchnorm_forward(x, None, None, gamma, beta,
                                                            moving_mean, moving_var, opts)
    ctx = BatchNormContext(x, y, cols, mask, gamma is not None, beta is not None, opts,
                           backend, mean, var)
    return y, ctx


@dataclass
class DenseBatchNormContext:
    """What dense_batchnorm_backward needs: the block's input and kernel, and
    the batch norm's context (its x is z = x @ w + b)."""

    x: object
    w: object
    has_bias: bool
    bn: BatchNormContext


@arrays("x", "w", "b", "gamma", "beta", "moving_mean", "moving_var",
        writable=("moving_mean", "moving_var"))
def dense_batchnorm_forward(x, w, b, gamma, beta, moving_mean, moving_var, /, *, training,
                            momentum=0.99, epsilon=1e-3, activation="linear", dropout=None,
                            seed=0, step=0, alpha_dropout=False, dropout_training=None,
                            convention="keras", **params):
    """A Dense -> BatchNormalization -> activation (-> dropout) block in one call.

        z = x @ w + b,   y = dropout(activation(gamma * z_hat + beta))

    with z_hat normalised as in batchnorm_forward (same arguments, same
    conventions). x: (batch, in); w: (in, units); b: (units,) or None; the
    batch-norm arrays: (units,). Returns (y, ctx). The results are those of
    dense_forward(x, w, b) followed by batchnorm_forward(z, ...), bit for bit.
    On the CPU the GEMM (with its bias epilogue per row block) and the batch
    norm passes run in one C++ call with the GIL released once; on CUDA it is
    the cuBLASLt GEMM with the bias epilogue and the batch-norm kernels,
    queued on one stream with no host synchronisation.
    """
    caller = "dense_batchnorm_forward"
    spec = _act.get(activation, caller, **params)
    backend = _backend.backend_for(caller, x=x, w=w, b=b, gamma=gamma, beta=beta,
                                   moving_mean=moving_mean, moving_var=moving_var)
    x = float_array(caller, "x", x, backend.xp, ndim=2)
    w = float_array(caller, "w", w, backend.xp, ndim=2, dtype=x.dtype)
    if w.shape[0] != x.shape[1] or x.shape[1] == 0:
        raise ValueError(f"{caller}: w has shape {tuple(w.shape)} but x has {x.shape[1]} "
                         f"features; expected w of shape ({x.shape[1]}, units), in >= 1")
    units = w.shape[1]
    if b is not None:
        b = float_array(caller, "b", b, backend.xp, ndim=1, dtype=x.dtype)
        if b.shape[0] != units:
            raise ValueError(f"{caller}: b has shape {tuple(b.shape)}, expected ({units},) "
                             f"to match w of shape {tuple(w.shape)}")
    gamma, beta, moving_mean, moving_var, opts = _bn_options(
        caller, backend, x.shape[0], units, x.dtype, gamma, beta, moving_mean, moving_var,
        training, momentum, epsilon, convention, spec, dropout, seed, step, alpha_dropout,
        dropout_training)
    y, cols, mean, var, mask, z = backend.batchnorm_forward(
        x, w, b, gamma, beta, moving_mean, moving_var, opts)
    bn = BatchNormContext(z, y, cols, mask, gamma is not None, beta is not None, opts, backend,
                          mean, var)
    return y, DenseBatchNormContext(x, w, b is not None, bn)


@arrays("dy")
def dense_batchnorm_backward(dy, ctx: DenseBatchNormContext, *, need_dx: bool = True):
    """Gradients (dx, dw, db, dgamma, dbeta) of the block from dy = dL/dy.

    dz = batchnorm_backward's dx, then dw = x^T dz, db = sum_batch dz,
    dx = dz w^T (None when ``need_dx=False``); db (dgamma, dbeta) is None
    without a bias (gamma, beta). One call, as the forward.
    """
    caller = "dense_batchnorm_backward"
    if not isinstance(ctx, DenseBatchNormContext):
        raise TypeError(f"{caller}: ctx must come from dense_batchnorm_forward, "
                        f"got {type(ctx).__name__}")
    bn = ctx.bn
    backend = _backend.backend_for(caller, dy=dy, x=ctx.x)
    dy = float_array(caller, "dy", dy, backend.xp, ndim=2, dtype=ctx.x.dtype)
    if tuple(dy.shape) != tuple(bn.x.shape):
        raise ValueError(f"{caller}: dy has shape {tuple(dy.shape)}, expected "
                         f"{tuple(bn.x.shape)} (the shape of the forward output)")
    need_dx = check_bool(caller, "need_dx", need_dx)
    dx, dgamma, dbeta, dw, db = backend.batchnorm_backward(dy, bn, ctx, need_dx)
    return dx, dw, db, dgamma, dbeta


@arrays("dy")
def batchnorm_backward(dy, ctx: BatchNormContext):
    """Gradients (dx, dgamma, dbeta) from dy = dL/dy.

    With dz = dL/dz (through dropout and the activation) and m the batch size:
    dgamma = sum_batch dz * x_hat, dbeta = sum_batch dz, and
    dx = gamma / sqrt(var + eps) * (dz - mean(dz) - x_hat * mean(dz * x_hat))
    in training, dx = gamma / sqrt(var + eps) * dz in inference. dgamma
    (dbeta) is None when forward had no gamma (beta).
    """
    caller = "batchnorm_backward"
    if not isinstance(ctx, BatchNormContext):
        raise TypeError(f"{caller}: ctx must come from batchnorm_forward, "
                        f"got {type(ctx).__name__}")
    backend = _backend.backend_for(caller, dy=dy, x=ctx.x)
    dy = float_array(caller, "dy", dy, backend.xp, ndim=2, dtype=ctx.x.dtype)
    if tuple(dy.shape) != tuple(ctx.x.shape):
        raise ValueError(f"{caller}: dy has shape {tuple(dy.shape)}, expected "
                         f"{tuple(ctx.x.shape)} (the shape of the forward output)")
    return backend.batchnorm_backward(dy, ctx)[:3]


@arrays("w", "b", "gamma", "beta", "moving_mean", "moving_var")
def fold_batchnorm(w, b, gamma, beta, moving_mean, moving_var, epsilon=1e-3):
    """(w', b') such that x @ w' + b' == BN_inference(x @ w + b), for fast inference.

    w: (in, units), b: (units,) or None, the BN arrays: (units,) (gamma or
    beta None: 1 or 0). With s = gamma / sqrt(moving_var + epsilon):
    w' = w * s (each output unit's column scaled), b' = (b - moving_mean) * s + beta.
    Computed in float64, returned in w's dtype, on w's device.
    """
    caller = "fold_batchnorm"
    backend = _backend.backend_for(caller, w=w, b=b, gamma=gamma, beta=beta,
                                   moving_mean=moving_mean, moving_var=moving_var)
    xp = backend.xp
    w = float_array(caller, "w", w, xp, ndim=2)
    units = w.shape[1]
    arrays = {}
    for name, a in (("b", b), ("gamma", gamma), ("beta", beta), ("moving_mean", moving_mean),
                    ("moving_var", moving_var)):
        if a is None:
            arrays[name] = None
            continue
        a = float_array(caller, name, a, xp, ndim=1)
        if a.shape[0] != units:
            raise ValueError(f"{caller}: {name} has shape {tuple(a.shape)}, expected ({units},) "
                             f"to match w of shape {tuple(w.shape)}")
        arrays[name] = a.astype(xp.float64)
    for name in ("moving_mean", "moving_var"):
        if arrays[name] is None:
            raise ValueError(f"{caller}: {name} is required")
    epsilon = check_float(caller, "epsilon", epsilon, low=0.0, low_open=True)
    s = 1.0 / xp.sqrt(arrays["moving_var"] + epsilon)
    if arrays["gamma"] is not None:
        s = s * arrays["gamma"]
    b0 = arrays["b"] if arrays["b"] is not None else xp.zeros(units)
    b_new = (b0 - arrays["moving_mean"]) * s
    if arrays["beta"] is not None:
        b_new = b_new + arrays["beta"]
    w_new = w.astype(xp.float64) * s[None, :]
    return w_new.astype(w.dtype), b_new.astype(w.dtype)
