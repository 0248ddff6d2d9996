"""Dense: y = activation(x @ kernel + bias), the fused fd.ops.dense op."""

from __future__ import annotations

from .. import activations as _act
from .. import constraints as _constraints
from .. import initializers as _init
from .. import ops
from .. import regularizers as _reg
from .._validate import check_int
from .base import Layer


class Dense(Layer):
    """A fully connected layer, Keras' ``Dense``.

    kernel (in, units) and bias (units,), y = activation(x @ kernel + bias)
    in one fused op (fd.ops.dense_forward). Keras defaults:
    ``kernel_initializer="glorot_uniform"``, ``bias_initializer="zeros"``;
    PyTorch's nn.Linear stores the kernel transposed (out, in) and
    initialises it with VarianceScaling(1/3, "fan_in", "uniform").
    ``kernel_regularizer`` adds its penalty inside the fused optimizer step;
    ``kernel_constraint`` (e.g. MaxNorm) is applied after each step.
    """

    def __init__(self, units, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, kernel_constraint=None, **kwargs):
        super().__init__(**kwargs)
        self.units = check_int("Dense", "units", units, 1)
        # softmax is an output activation: the layer computes logits, the
        # model's loss reads them (fused softmax cross-entropy) and predict
        # applies the softmax. A sigmoid output under binary_crossentropy is
        # handled the same way (Sequential.compile sets it).
        self.output_activation = None
        if activation == {"name": "softmax"}:  # get_config's entry for the output activation
            activation = "softmax"
        if isinstance(activation, dict):  # a get_config() entry
            activation = dict(activation)
            activation = _act.get(activation.pop("name"), "Dense", **activation)
        if isinstance(activation, str) and activation.lower() == "softmax":
            self.output_activation, activation = "softmax", None
        self.activation = _act.get(activation, "Dense")
        if not isinstance(use_bias, bool):
            raise TypeError(f"Dense: use_bias must be a bool, got {use_bias!r}")
        self.use_bias = use_bias
        self.kernel_initializer = _init.get(kernel_initializer)
        self.bias_initializer = _init.get(bias_initializer)
        self.kernel_regularizer = _reg.get(kernel_regularizer)
        self.kernel_constraint = _constraints.get(kernel_constraint)
        self.kernel = self.bias = None
        self._ctx = None

    def _build(self, input_dim, xp, dtype):
        if input_dim * self.units * 8 >= 2**63:
            # No memory holds it, and the kernels count bytes in int64: a clear
            # refusal rather than NumPy's "array is too big" naming no argument.
            raise ValueError(f"Dense: a kernel of input_dim={input_dim} x units={self.units} "
                             f"is beyond any memory (its byte count overflows int64)")
        like = None if xp.__name__ == "numpy" else xp.empty(0)
        self.kernel = self.kernel_initializer((input_dim, self.units), dtype, like=like)
        self._trainable_weights = [self.kernel]
        if self.use_bias:
            self.bias = self.bias_initializer((self.units,), dtype, like=like)
            self._trainable_weights.append(self.bias)

    def output_dim(self, input_dim):
        return self.units

    def forward(self, x, training=False):
        y, self._ctx = ops.dense_forward(x, self.kernel, self.bias, self.activation)
        return y

    def backward(self, dy, need_dx=True):
        dx, dw, db = ops.dense_backward(dy, self._ctx, need_dx=need_dx)
        self.grads = [dw, db] if self.use_bias else [dw]
        return dx

    def weight_penalties(self):
        return [self.kernel_regularizer] + ([None] if self.use_bias else [])

    def weight_constraints(self):
        return [self.kernel_constraint] + ([None] if self.use_bias else [])

    def get_config(self):
        cfg = super().get_config()
        act = ({"name": self.output_activation} if self.output_activation
               else self.activation.get_config())
        cfg.update(units=self.units, activation=act,
                   use_bias=self.use_bias,
                   kernel_initializer=_init.serialize(self.kernel_initializer),
                   bias_initializer=_init.serialize(self.bias_initializer),
                   kernel_regularizer=None if self.kernel_regularizer is None
                   else {"class_name": type(self.kernel_regularizer).__name__,
                         "config": self.kernel_regularizer.get_config()},
                   kernel_constraint=None if self.kernel_constraint is None
                   else {"class_name": type(self.kernel_constraint).__name__,
                         "config": self.kernel_constraint.get_config()})
        return cfg
