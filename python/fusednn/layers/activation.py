"""Activation layers: Activation, LeakyReLU, ELU (the fused activation ops),
PReLU (a learned slope per unit) and RReLU (a random slope in training).

Each maps (batch, features) to the same shape, element-wise.
"""

from __future__ import annotations

import numpy as np

from .. import constraints as _constraints
from .. import initializers as _init
from .. import ops
from .. import regularizers as _reg
from .._arrays import array_module
from .._validate import check_float
from ._util import (check_input, check_seed, require_built, require_forward, resolve_activation,
                    rng_state, serialize_object, set_rng_state)
from .base import Layer, check_state

__all__ = ["Activation", "LeakyReLU", "ELU", "PReLU", "RReLU"]


class _FusedActivationLayer(Layer):
    """A layer that is one fused activation op (``self.activation``, an ActivationSpec)."""

    activation = None

    def forward(self, x, training=False):
        y, self._ctx = ops.activation_forward(x, self.activation)
        return y

    def backward(self, dy, need_dx=True):
        require_forward(self, getattr(self, "_ctx", None))
        self.grads = []
        if not need_dx:
            return None
        return ops.activation_backward(dy, self._ctx)


class Activation(_FusedActivationLayer):
    """Applies an activation function, Keras' ``Activation(activation)``.

    ``activation``: a name of fusednn.activations (``"relu"``, ``"elu"``,
    ``"gelu"``, ...), None (linear), an ActivationSpec, or the dict of
    ``ActivationSpec.get_config()``; ``params`` are the activation's
    parameters (``Activation("leaky_relu", alpha=0.1)``,
    ``Activation("gelu", approximate=True)``). Runs fd.ops.activation_forward;
    a fusing model folds it into the preceding Dense or BatchNormalization.
    """

    def __init__(self, activation, *, trainable=True, name=None, input_shape=None,
                 input_dim=None, **params):
        super().__init__(trainable=trainable, name=name, input_shape=input_shape,
                         input_dim=input_dim)
        self.activation = resolve_activation(activation, "Activation", **params)
        self._ctx = None

    def get_config(self):
        cfg = super().get_config()
        cfg["activation"] = self.activation.get_config()
        return cfg


class LeakyReLU(_FusedActivationLayer):
    """``y = x if x > 0 else negative_slope * x``, Keras 3's ``LeakyReLU`` layer.

    Default ``negative_slope=0.3`` (Keras layer); the Keras ``leaky_relu``
    function uses 0.2 and ``torch.nn.LeakyReLU`` 0.01. Must be >= 0.
    """

    def __init__(self, negative_slope=0.3, **kwargs):
        super().__init__(**kwargs)
        self.negative_slope = check_float("LeakyReLU", "negative_slope", negative_slope, low=0.0)
        self.activation = resolve_activation("leaky_relu", "LeakyReLU",
                                             alpha=self.negative_slope)
        self._ctx = None

    def get_config(self):
        cfg = super().get_config()
        cfg["negative_slope"] = self.negative_slope
        return cfg


class ELU(_FusedActivationLayer):
    """``y = x if x > 0 else alpha * (exp(x) - 1)``, Keras' ``ELU(alpha=1.0)``
    (torch.nn.ELU has the same default). ``alpha`` must be >= 0."""

    def __init__(self, alpha=1.0, **kwargs):
        super().__init__(**kwargs)
        self.alpha = check_float("ELU", "alpha", alpha, low=0.0)
        self.activation = resolve_activation("elu", "ELU", alpha=self.alpha)
        self._ctx = None

    def get_config(self):
        cfg = super().get_config()
        cfg["alpha"] = self.alpha
        return cfg


class PReLU(Layer):
    """Parametric ReLU (He et al. 2015), Keras' ``PReLU`` on (batch, units)
    with ``shared_axes=None``: one learned slope per unit,

        y = x if x > 0 else alpha_j * x,   dalpha_j = sum_batch dy * min(x, 0).

    Keras defaults: ``alpha_initializer="zeros"`` (the layer starts as a
    ReLU). ``torch.nn.PReLU()`` learns one slope shared by all units,
    initialised to 0.25: use ``alpha_initializer=Constant(0.25)`` for its
    start (per-unit slopes are torch's ``PReLU(num_parameters=units)``).
    ``alpha_regularizer``/``alpha_constraint`` as Dense's kernel ones.
    Computed with the array module of the input (NumPy or CuPy).
    """

    def __init__(self, alpha_initializer="zeros", alpha_regularizer=None,
                 alpha_constraint=None, **kwargs):
        super().__init__(**kwargs)
        try:
            self.alpha_initializer = _init.get(alpha_initializer)
        except (TypeError, ValueError) as e:
            raise type(e)(f"PReLU: alpha_initializer {alpha_initializer!r}: {e}") from None
        if self.alpha_initializer is None:
            raise ValueError("PReLU: alpha_initializer must not be None")
        try:
            self.alpha_regularizer = _reg.get(alpha_regularizer)
        except (TypeError, ValueError) as e:
            raise type(e)(f"PReLU: alpha_regularizer {alpha_regularizer!r}: {e}") from None
        try:
            self.alpha_constraint = _constraints.get(alpha_constraint)
        except (TypeError, ValueError) as e:
            raise type(e)(f"PReLU: alpha_constraint {alpha_constraint!r}: {e}") from None
        self.alpha = None
        self._x = None

    def _build(self, input_dim, xp, dtype):
        like = None if xp.__name__ == "numpy" else xp.empty(0)
        self.alpha = self.alpha_initializer((input_dim,), dtype, like=like)
        self._trainable_weights = [self.alpha]

    def forward(self, x, training=False):
        require_built(self)
        x = check_input(self, x, self.input_dim)
        if x.dtype != self.alpha.dtype:
            raise TypeError(f"PReLU: x has dtype {x.dtype.name}, the layer's alpha is "
                            f"{self.alpha.dtype.name}")
        xp = array_module(x)
        self._x = x
        return xp.where(x > 0, x, x * self.alpha)

    def backward(self, dy, need_dx=True):
        require_forward(self, self._x)
        x = self._x
        if tuple(dy.shape) != tuple(x.shape) or dy.dtype != x.dtype:
            raise ValueError(f"PReLU: dy has shape {tuple(dy.shape)} and dtype {dy.dtype.name}, "
                             f"expected {tuple(x.shape)} {x.dtype.name}")
        xp = array_module(x)
        neg = xp.minimum(x, 0)
        self.grads = [(dy * neg).sum(axis=0, dtype=x.dtype)]
        if not need_dx:
            return None
        return xp.where(x > 0, dy, dy * self.alpha)

    def weight_penalties(self):
        return [self.alpha_regularizer]

    def weight_constraints(self):
        return [self.alpha_constraint]

    def get_config(self):
        cfg = super().get_config()
        cfg.update(alpha_initializer=_init.serialize(self.alpha_initializer),
                   alpha_regularizer=serialize_object(self.alpha_regularizer),
                   alpha_constraint=serialize_object(self.alpha_constraint))
        return cfg


class RReLU(Layer):
    """Randomized leaky ReLU (Xu et al. 2015), ``torch.nn.RReLU`` semantics.

    Training: ``y = x if x >= 0 else a * x`` with a drawn for each element
    uniformly in [lower, upper] (kept for backward, ``self.slopes``);
    inference: the fixed slope ``(lower + upper) / 2`` (the fused
    leaky_relu op). torch defaults ``lower=1/8``, ``upper=1/3``; Keras has
    no RReLU. Slopes come from ``numpy.random.Generator(PCG64(seed))``,
    created at construction (``seed=None``: fresh entropy), drawn in float64
    on the host and rounded to x's dtype (copied to the GPU for CuPy inputs).
    """

    def __init__(self, lower=1.0 / 8.0, upper=1.0 / 3.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.lower = check_float("RReLU", "lower", lower, low=0.0)
        self.upper = check_float("RReLU", "upper", upper, low=0.0)
        if self.lower > self.upper:
            raise ValueError(f"RReLU: lower must be <= upper, got lower={self.lower}, "
                             f"upper={self.upper}")
        self.seed = check_seed("RReLU", seed)
        self._rng = np.random.default_rng(self.seed)
        self._inference = resolve_activation("leaky_relu", "RReLU",
                                             alpha=(self.lower + self.upper) / 2.0)
        self.slopes = None
        self._noise = None
        self._ctx = None

    def forward(self, x, training=False):
        x = check_input(self, x)
        if not training:
            self._noise = None
            y, self._ctx = ops.activation_forward(x, self._inference)
            return y
        xp = array_module(x)
        slopes = self._rng.uniform(self.lower, self.upper, size=x.shape).astype(x.dtype)
        self.slopes = slopes if xp is np else xp.asarray(slopes)
        self._noise = xp.where(x >= 0, xp.ones((), dtype=x.dtype), self.slopes)
        self._ctx = None
        return x * self._noise

    def backward(self, dy, need_dx=True):
        self.grads = []
        if self._noise is None:
            require_forward(self, self._ctx)
            return ops.activation_backward(dy, self._ctx) if need_dx else None
        if tuple(dy.shape) != tuple(self._noise.shape) or dy.dtype != self._noise.dtype:
            raise ValueError(f"RReLU: dy has shape {tuple(dy.shape)} and dtype {dy.dtype.name}, "
                             f"expected {tuple(self._noise.shape)} {self._noise.dtype.name}")
        return dy * self._noise if need_dx else None

    def get_state(self):
        """``{"rng": ...}``: the slope generator's ``bit_generator.state``
        (JSON-ready), so a resumed run draws the slopes an uninterrupted one
        would, also when ``seed`` is None."""
        return {"rng": rng_state(self._rng)}

    def set_state(self, state):
        state = check_state(self, state, ("rng",))
        set_rng_state(f"RReLU {self.name}: set_state", self._rng, state["rng"])

    def get_config(self):
        cfg = super().get_config()
        cfg.update(lower=self.lower, upper=self.upper, seed=self.seed)
        return cfg
