"""Networks built from the chapter's default-configuration table.

| | default_dnn | self_normalizing_dnn |
|---|---|---|
| initializer | He | LeCun |
| activation | ELU or Swish (ReLU if shallow) | SELU |
| normalisation | BN before each activation (if deep) | none |
| regularisation | early stopping, weight decay | alpha dropout if needed |
| optimizer | Nadam (or Nesterov SGD, AdamW) | Nesterov SGD |

Each returns an uncompiled ``fd.Sequential``; ``default_optimizer`` gives the
optimizer of the table for a preset. Inputs should be standardised (zero
mean, unit variance per feature), which SELU networks require.
"""

from __future__ import annotations

import numbers

from . import layers as _layers
from . import optimizers as _optimizers
from .models import Sequential

__all__ = ["default_dnn", "self_normalizing_dnn", "default_optimizer"]


def _positive_int(caller, name, v):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise ValueError(f"{caller}: {name} must be an int >= 1, got {v!r}")
    return int(v)


def default_dnn(n_inputs, n_outputs, depth=20, width=100, *, activation="elu",
                batch_norm=None, dropout=None, output_activation="softmax", seed=None,
                like=None, dtype="float32"):
    """depth x [Dense(width, He init) -> (BN) -> activation (-> Dropout)] -> Dense(n_outputs).

    batch_norm: None means "if deep" (depth > 5), as the table says. With BN
    the Dense layers drop their bias (BN's beta replaces it) and the
    activation follows BN, the arrangement Sequential fuses into one BN +
    activation (+ dropout) kernel per layer. n_inputs is the input width
    (the model is built for it, with NumPy weights, or CuPy weights on the
    device of ``like`` when that is a CuPy array).
    """
    caller = "default_dnn"
    n_inputs = _positive_int(caller, "n_inputs", n_inputs)
    n_outputs = _positive_int(caller, "n_outputs", n_outputs)
    depth = _positive_int(caller, "depth", depth)
    width = _positive_int(caller, "width", width)
    if batch_norm is None:
        batch_norm = depth > 5
    model = Sequential(name="default_dnn")
    for i in range(depth):
        init = _init(seed, i, "he_normal")
        if batch_norm:
            model.add(_layers.Dense(width, use_bias=False, kernel_initializer=init))
            model.add(_layers.BatchNormalization())
            model.add(_layers.Activation(activation))
        else:
            model.add(_layers.Dense(width, activation=activation, kernel_initializer=init))
        if dropout:
            model.add(_layers.Dropout(dropout, seed=None if seed is None else seed + 7919 * i))
    model.add(_layers.Dense(n_outputs, activation=output_activation,
                            kernel_initializer=_init(seed, depth, "glorot_uniform")))
    _build(model, n_inputs, like, dtype)
    return model


def self_normalizing_dnn(n_inputs, n_outputs, depth=20, width=100, *, alpha_dropout=None,
                         output_activation="softmax", seed=None, like=None, dtype="float32"):
    """depth x [Dense(width, selu, lecun_normal) (-> AlphaDropout)] -> Dense(n_outputs).

    Self-normalising (Klambauer et al. 2017): with standardised inputs the
    activations keep mean ~0 and std ~1 through the layers, without BN.
    Built like default_dnn (``like``, ``dtype``).
    """
    caller = "self_normalizing_dnn"
    n_inputs = _positive_int(caller, "n_inputs", n_inputs)
    n_outputs = _positive_int(caller, "n_outputs", n_outputs)
    depth = _positive_int(caller, "depth", depth)
    width = _positive_int(caller, "width", width)
    model = Sequential(name="self_normalizing_dnn")
    for i in range(depth):
        model.add(_layers.Dense(width, activation="selu",
                                kernel_initializer=_init(seed, i, "lecun_normal")))
        if alpha_dropout:
            model.add(_layers.AlphaDropout(alpha_dropout,
                                           seed=None if seed is None else seed + 7919 * i))
    model.add(_layers.Dense(n_outputs, activation=output_activation,
                            kernel_initializer=_init(seed, depth, "lecun_normal")))
    _build(model, n_inputs, like, dtype)
    return model


def default_optimizer(preset="default_dnn", learning_rate=None):
    """The table's optimizer: Nadam (1e-3) for default_dnn, SGD with Nesterov
    momentum 0.9 (1e-2) for self_normalizing_dnn."""
    if preset == "default_dnn":
        return _optimizers.Nadam(learning_rate=1e-3 if learning_rate is None else learning_rate)
    if preset == "self_normalizing_dnn":
        return _optimizers.SGD(learning_rate=1e-2 if learning_rate is None else learning_rate,
                               momentum=0.9, nesterov=True)
    raise ValueError(f"default_optimizer: preset must be 'default_dnn' or "
                     f"'self_normalizing_dnn', got {preset!r}")


def _build(model, n_inputs, like, dtype):
    import numpy as np

    if like is None or isinstance(like, np.ndarray):
        model.build(n_inputs, np, np.dtype(dtype))
    else:
        from ._arrays import array_module

        xp = array_module(like)
        with like.device:
            model.build(n_inputs, xp, np.dtype(dtype))


def _init(seed, i, name):
    """A seeded initializer per layer (different seeds per layer), or by name."""
    if seed is None:
        return name
    from . import initializers

    return type(initializers.get(name))(seed=seed + 104729 * i)
