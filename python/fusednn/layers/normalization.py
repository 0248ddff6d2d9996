"""BatchNormalization over the batch axis of (batch, features), the fused
fd.ops.batchnorm op (optionally with an activation and dropout fused in)."""

from __future__ import annotations

from .. import initializers as _init
from .. import ops
from .._validate import check_bool, check_float
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

    In a Sequential model a Dense before the layer, and an activation and a
    dropout layer after it, run with it as one op (fusednn.models.plan); the
    layer's own ``forward`` is plain batch norm.

    ``synchronized=True`` (Keras' argument; torch's SyncBatchNorm): in a
    ``fit(distributed=True)`` the batch statistics are those of the global
    batch, all ranks' samples together, in every step (forward and
    backward; see fusednn.distributed). Elsewhere (one process, predict,
    the layer's own ``forward``) it changes nothing.
    """

    def __init__(self, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones",
                 moving_mean_initializer="zeros", moving_variance_initializer="ones",
                 convention="keras", synchronized=False, **kwargs):
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
        self.synchronized = check_bool(c, "synchronized", synchronized)
        self.gamma = self.beta = self.moving_mean = self.moving_variance = None
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

    def forward(self, x, training=False):
        require_built(self)
        x = check_input(self, x, self.input_dim)
        training = check_bool("BatchNormalization", "training", training)
        y, self._ctx = ops.batchnorm_forward(
            x, self.gamma, self.beta, self.moving_mean, self.moving_variance,
            training=training and self.trainable, momentum=self.momentum,
            epsilon=self.epsilon, convention=self.convention)
        return y

    def backward(self, dy, need_dx=True):
        require_forward(self, self._ctx)
        dx, dgamma, dbeta = ops.batchnorm_backward(dy, self._ctx)
        self.grads = [g for g, on in ((dgamma, self.scale), (dbeta, self.center)) if on]
        return dx if need_dx else None

    def set_state(self, state):
        """``{}`` (the moving statistics are weights); files written before
        a fused dropout's mask counter moved to its Dropout layer give
        ``{"dropout_step": n}``, which Sequential.set_state hands on."""
        if isinstance(state, dict) and "dropout_step" in state:
            check_counter(self, check_state(self, state, ("dropout_step",)), "dropout_step")
        else:
            check_state(self, state, ())

    def get_config(self):
        cfg = super().get_config()
        cfg.update(momentum=self.momentum, epsilon=self.epsilon, center=self.center,
                   scale=self.scale,
                   beta_initializer=_init.serialize(self.beta_initializer),
                   gamma_initializer=_init.serialize(self.gamma_initializer),
                   moving_mean_initializer=_init.serialize(self.moving_mean_initializer),
                   moving_variance_initializer=_init.serialize(
                       self.moving_variance_initializer),
                   convention=self.convention, synchronized=self.synchronized)
        return cfg
