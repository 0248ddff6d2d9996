"""The fusion planner: a model's layers turned into Steps, the units that fit,
predict and evaluate run. ``plan`` only reads the layers; nothing is written
onto them, and a layer's own ``forward`` stays the plain layer.

A Step runs one or more consecutive layers as one op call; its backward
leaves each layer's weight gradients in that layer's ``grads``:

- ``DenseBatchNormStep(dense, bn, activation, dropout)``: [Dense (linear) ->]
  BatchNormalization [-> Activation / ELU / LeakyReLU [-> Dropout /
  AlphaDropout]] as one fd.ops.dense_batchnorm_forward (batchnorm_forward
  without the Dense): the GEMM, the normalisation, the activation and the
  dropout mask in one pass. The mask is keyed by the Dropout layer's seed
  and step counter, as that layer's own forward keys it, so the fused and
  the layer-by-layer model draw the same masks.
- ``DenseStep(dense, activation)``: a Dense whose output activation the loss
  takes over (a sigmoid under binary cross-entropy: the step computes
  logits, see fusednn.models.loss).
- ``LayerStep(layer)``: any other layer, on its own.
"""

from __future__ import annotations

from .. import activations as _act
from .. import distributed as _distributed
from .. import ops
from ..layers import (ELU, Activation, AlphaDropout, BatchNormalization, Dense, Dropout,
                      LeakyReLU, RReLU)

__all__ = ["LayerStep", "DenseStep", "DenseBatchNormStep", "plan"]

_LINEAR = _act.get("linear")
_FUSED_ACTIVATIONS = (Activation, ELU, LeakyReLU)  # weight-free, one ActivationSpec each


class LayerStep:
    """One layer on its own: its forward and backward."""

    def __init__(self, layer):
        self.layer = layer
        self.layers = (layer,)
        # draws random numbers in training: ends fit(cache_frozen=True)'s prefix
        self.random = isinstance(layer, (Dropout, RReLU))

    def forward(self, x, training, mc=False):
        """The layer's output; `mc` keeps a dropout layer active (MC dropout)."""
        if mc and isinstance(self.layer, Dropout):  # AlphaDropout too
            return self.layer.forward(x, True)
        return self.layer.forward(x, training)

    def backward(self, dy, need_dx):
        return self.layer.backward(dy, need_dx=need_dx)


class DenseStep:
    """A Dense layer run with another activation than its own (the loss
    applies the layer's; see plan)."""

    def __init__(self, dense, activation):
        self.dense, self.activation = dense, activation
        self.layers = (dense,)
        self.random = False
        self._ctx = None

    def forward(self, x, training, mc=False):
        d = self.dense
        y, self._ctx = ops.dense_forward(x, d.kernel, d.bias, self.activation)
        return y

    def backward(self, dy, need_dx):
        dx, dw, db = ops.dense_backward(dy, self._ctx, need_dx=need_dx)
        self.dense.grads = [dw, db] if self.dense.use_bias else [dw]
        return dx


class DenseBatchNormStep:
    """[Dense ->] BatchNormalization [-> activation layer [-> dropout layer]]
    in one op call; `dense`, `activation` and `dropout` may be None.

    The batch statistics are used when ``training`` and the BN layer is
    trainable (a frozen BN normalises with its moving statistics, as in
    Keras); the dropout is active when ``training``, or for a dropout layer
    with ``mc=True``, or with ``mc`` (MC dropout in predict)."""

    def __init__(self, dense, bn, activation=None, dropout=None):
        self.dense, self.bn, self.activation, self.dropout = dense, bn, activation, dropout
        self.layers = tuple(la for la in (dense, bn, activation, dropout) if la is not None)
        self.random = dropout is not None
        self._ctx = None

    def forward(self, x, training, mc=False):
        bn, dense, drop = self.bn, self.dense, self.dropout
        activation = _LINEAR if self.activation is None else self.activation.activation
        if drop is None:
            active, rate, alpha, seed, step = False, None, False, 0, 0
        else:
            active = bool(training) or drop.mc or mc
            rate, alpha, seed, step = drop.rate, isinstance(drop, AlphaDropout), drop.seed, \
                drop.step
        if bn.synchronized and training and bn.trainable and _distributed.sync_active():
            y, self._ctx = _distributed.sync_batchnorm_forward(x, dense, bn, activation, rate,
                                                               alpha, seed, step, active)
            if active and drop.rate > 0.0:
                drop.step += 1
            return y
        arrays = (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance)
        if dense is not None:
            op, arrays = ops.dense_batchnorm_forward, (x, dense.kernel, dense.bias, *arrays)
        else:
            op, arrays = ops.batchnorm_forward, (x, *arrays)
        y, self._ctx = op(*arrays, training=bool(training) and bn.trainable,
                          momentum=bn.momentum, epsilon=bn.epsilon, convention=bn.convention,
                          activation=activation, dropout=rate, alpha_dropout=alpha, seed=seed,
                          step=step, dropout_training=active)
        if active and drop.rate > 0.0:
            drop.step += 1  # the next forward draws a new mask, as Dropout.forward does
        return y

    def backward(self, dy, need_dx):
        bn, dense = self.bn, self.dense
        if isinstance(self._ctx, _distributed.SyncBatchNormContext):
            dx, dw, db, dgamma, dbeta = _distributed.sync_batchnorm_backward(dy, self._ctx,
                                                                             need_dx)
            if dense is not None:
                dense.grads = [dw, db] if dense.use_bias else [dw]
        elif dense is None:
            dx, dgamma, dbeta = ops.batchnorm_backward(dy, self._ctx)
        else:
            dx, dw, db, dgamma, dbeta = ops.dense_batchnorm_backward(dy, self._ctx,
                                                                     need_dx=need_dx)
            dense.grads = [dw, db] if self._ctx.has_bias else [dw]
        bn.grads = [g for g, on in ((dgamma, bn.scale), (dbeta, bn.center)) if on]
        for layer in (self.activation, self.dropout):
            if layer is not None:
                layer.grads = []
        return dx if need_dx else None


def plan(layers, logits_head: bool = False) -> list:
    """The Steps that run `layers` in order.

    A Dense with a linear activation followed by a BatchNormalization joins
    its step, as do an activation layer after the BN and a dropout layer
    after that activation. `logits_head`: the last layer is a Dense whose
    sigmoid the loss applies (DenseStep with a linear activation)."""
    steps, i, n = [], 0, len(layers)

    def at(j):
        return layers[j] if j < n else None

    while i < n:
        layer = layers[i]
        dense = None
        if (isinstance(layer, Dense) and layer.activation.name == "linear"
                and layer.output_activation is None and isinstance(at(i + 1), BatchNormalization)):
            dense, layer = layer, at(i + 1)
        if isinstance(layer, BatchNormalization):
            j = i + 1 + (dense is not None)
            activation = at(j) if isinstance(at(j), _FUSED_ACTIVATIONS) else None
            dropout = at(j + 1) if activation is not None and isinstance(at(j + 1), Dropout) \
                else None
            step = DenseBatchNormStep(dense, layer, activation, dropout)
        elif logits_head and i == n - 1 and isinstance(layer, Dense):
            step = DenseStep(layer, _LINEAR)
        else:
            step = LayerStep(layer)
        steps.append(step)
        i += len(step.layers)
    return steps
