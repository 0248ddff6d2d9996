"""BatchNormalization over the batch axis of (batch, features), the fused
fd.ops.batchnorm op (optionally with an activation and dropout fused in)."""

from __future__ import annotations

from .. import activations as _act
from .. import initializers as _init
from .. import ops
from ..ops._checks import check_bool, check_float, check_rate, check_uint64
from ._util import check_input, require_built, require_forward
from .base import Layer, check_counter, check_state

__all__ = ["BatchNormalization"]


class BatchNormalization(Layer):
    """Batch normalisation (Ioffe & Szegedy 2015), Keras 3's
    ``BatchNormalization`` for (batch, features) inputs.

    Weights, in order: gamma (``scale=True``), beta (``center=True``) — the
    trainable ones — then moving_mean and moving_variance (non-trainable).
    ``forward(x, training=True)`` normalises with the batch statistics and
    updates the moving ones in place; ``training=False`` uses the moving ones.
    Keras defaults ``momentum=0.99``, ``epsilon=1e-3``, moving statistics
    ``moving = moving * momentum + batch * (1 - momentum)`` with the biased
    batch variance. ``convention="torch"`` follows ``torch.nn.BatchNorm1d``
    instead (``running = running * (1 - momentum) + batch * momentum``,
    unbiased variance; pass torch's ``momentum=0.1, epsilon=1e-5``).

    ``trainable=False`` makes the layer run in inference mode even when
    called with ``training=True`` (Keras' fine-tuning behaviour): the moving
    statistics stay frozen and gamma/beta are not updated.

    Fusion (Sequential plans it; the layer's own ``forward`` is always plain
    batch norm): the model sets ``fused_activation`` (an ActivationSpec) and
    ``fused_dropout`` (``(rate, alpha, seed)``; alpha: alpha dropout) for a
    BN -> Activation (-> Dropout) block, and ``fused_dense`` (the Dense layer
    before it, with a linear activation) for Dense -> BN. Its steps then run
    ``_forward_step``, which computes the whole block in one op
    (fd.ops.dense_batchnorm_forward or batchnorm_forward) and takes the
    Dense layer's input; ``backward`` returns dL/dx of the block's input and
    leaves the Dense layer's gradients in its ``grads``. The fused dropout is
    active when ``training`` is true (also when the layer is frozen) and
    keys its masks with ``seed`` and the layer's own ``dropout_step``,
    incremented at each such forward.
    """

    def __init__(self, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones",
                 moving_mean_initializer="zeros", moving_variance_initializer="ones",
                 convention="keras", **kwargs):
        super().__init__(**kwargs)
        c = "BatchNormalization"
        self.momentum = check_float(c, "momentum", momentum, low=0.0, high=1.0)
        self.epsilon = check_float(c, "epsilon", epsilon, low=0.0, low_open=True)
        self.center = check_bool(c, "center", center)
        self.scale = check_bool(c, "scale", scale)
        for arg, value in (("beta_initializer", beta_initializer),
                           ("gamma_initializer", gamma_initializer),
                           ("moving_mean_initializer", moving_mean_initializer),
                           ("moving_variance_initializer", moving_variance_initializer)):
            try:
                init = _init.get(value)
            except (TypeError, ValueError) as e:
                raise type(e)(f"{c}: {arg} {value!r}: {e}") from None
            if init is None:
                raise ValueError(f"{c}: {arg} must not be None")
            setattr(self, arg, init)
        if not isinstance(convention, str) or convention not in ("keras", "torch"):
            raise ValueError(f"{c}: convention must be 'keras' or 'torch', got {convention!r}")
        self.convention = convention
        self.gamma = self.beta = self.moving_mean = self.moving_variance = None
        self.fused_activation = None
        self.fused_dropout = None
        # the fused dropout also runs in inference (MC dropout) when True
        self.fused_dropout_mc = False
        self.dropout_step = 0
        self.fused_dense = None
        self._ctx = None

    def _build(self, input_dim, xp, dtype):
        like = None if xp.__name__ == "numpy" else xp.empty(0)
        shape = (input_dim,)
        self._trainable_weights = []
        if self.scale:
            self.gamma = self.gamma_initializer(shape, dtype, like=like)
            self._trainable_weights.append(self.gamma)
        if self.center:
            self.beta = self.beta_initializer(shape, dtype, like=like)
            self._trainable_weights.append(self.beta)
        self.moving_mean = xp.ascontiguousarray(self.moving_mean_initializer(shape, dtype,
                                                                             like=like))
        self.moving_variance = xp.ascontiguousarray(
            self.moving_variance_initializer(shape, dtype, like=like))
        self._non_trainable_weights = [self.moving_mean, self.moving_variance]

    def _fused_args(self, training):
        c = "BatchNormalization"
        act = self.fused_activation
        if act is None:
            act = _act.get("linear")
        elif not isinstance(act, _act.ActivationSpec):
            raise TypeError(f"{c}: fused_activation must be an ActivationSpec or None, got "
                            f"{type(act).__name__} {act!r}")
        kw = {"activation": act}
        if self.fused_dropout is not None:
            try:
                rate, alpha, seed = self.fused_dropout
            except (TypeError, ValueError):
                raise ValueError(f"{c}: fused_dropout must be (rate, alpha, seed) or None, got "
                                 f"{self.fused_dropout!r}") from None
            kw.update(dropout=check_rate(c, "fused_dropout rate", rate),
                      alpha_dropout=check_bool(c, "fused_dropout alpha", alpha),
                      seed=check_uint64(c, "fused_dropout seed", seed),
                      step=self.dropout_step,
                      dropout_training=bool(training) or self.fused_dropout_mc)
        return kw

    def forward(self, x, training=False):
        return self._run(x, training, fused=False)

    def _forward_step(self, x, training=False):
        return self._run(x, training, fused=True)

    def _run(self, x, training, fused):
        require_built(self)
        dense = self.fused_dense if fused else None
        x = check_input(self, x, self.input_dim if dense is None else dense.input_dim)
        training = check_bool("BatchNormalization", "training", training)
        kw = self._fused_args(training) if fused else {}
        batch_stats = training and self.trainable
        if dense is None:
            y, self._ctx = ops.batchnorm_forward(
                x, self.gamma, self.beta, self.moving_mean, self.moving_variance,
                training=batch_stats, momentum=self.momentum, epsilon=self.epsilon,
                convention=self.convention, **kw)
        else:
            y, self._ctx = ops.dense_batchnorm_forward(
                x, dense.kernel, dense.bias, self.gamma, self.beta, self.moving_mean,
                self.moving_variance, training=batch_stats, momentum=self.momentum,
                epsilon=self.epsilon, convention=self.convention, **kw)
        if fused and self.fused_dropout is not None and (training or self.fused_dropout_mc):
            self.dropout_step += 1
        return y

    def backward(self, dy, need_dx=True):
        require_forward(self, self._ctx)
        if isinstance(self._ctx, ops.DenseBatchNormContext):
            dx, dw, db, dgamma, dbeta = ops.dense_batchnorm_backward(dy, self._ctx,
                                                                     need_dx=need_dx)
            self.fused_dense.grads = [dw, db] if self._ctx.has_bias else [dw]
        else:
            dx, dgamma, dbeta = ops.batchnorm_backward(dy, self._ctx)
        self.grads = [g for g, on in ((dgamma, self.scale), (dbeta, self.center)) if on]
        return dx if need_dx else None

    def get_state(self):
        """``{"dropout_step": n}``: the fused dropout's mask counter (the
        moving statistics are weights)."""
        return {"dropout_step": self.dropout_step}

    def set_state(self, state):
        state = check_state(self, state, ("dropout_step",))
        self.dropout_step = check_counter(self, state, "dropout_step")

    def get_config(self):
        cfg = super().get_config()
        cfg.update(momentum=self.momentum, epsilon=self.epsilon, center=self.center,
                   scale=self.scale,
                   beta_initializer=_init.serialize(self.beta_initializer),
                   gamma_initializer=_init.serialize(self.gamma_initializer),
                   moving_mean_initializer=_init.serialize(self.moving_mean_initializer),
                   moving_variance_initializer=_init.serialize(
                       self.moving_variance_initializer),
                   convention=self.convention)
        return cfg
