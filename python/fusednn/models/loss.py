"""The model's loss and its output head: what the last layer's activation
becomes in training and in predict.

A last Dense with ``activation="softmax"`` computes logits; predict applies
the softmax, and the fused softmax cross-entropy reads the logits (the
numerically stable form, as Keras does internally). A last Dense with
``activation="sigmoid"`` under ``binary_crossentropy`` is treated the same
way (logits, fused sigmoid cross-entropy, sigmoid in predict). With a linear
last layer the cross-entropies read the output as logits (Keras'
``from_logits=True``). Losses by name: ``sparse_categorical_crossentropy``,
``categorical_crossentropy``, ``binary_crossentropy``, ``mse``
(``mean_squared_error``), averaged over the batch.
"""

from __future__ import annotations

import numpy as np

from .. import ops
from .._arrays import array_module
from ..layers import Dense

__all__ = ["Loss", "LOSSES"]

# accepted names -> canonical name
LOSSES = {
    "sparse_categorical_crossentropy": "sparse_categorical_crossentropy",
    "categorical_crossentropy": "categorical_crossentropy",
    "binary_crossentropy": "binary_crossentropy",
    "mse": "mse",
    "mean_squared_error": "mse",
}


class Loss:
    """The loss `name` (canonical, or None before compile) for a model whose
    last layer is `last`.

    - ``output``: the activation applied outside the kernels, to the steps'
      output, in predict: ``"softmax"``, ``"sigmoid"`` or None.
    - ``from_logits``: the steps' output is logits of ``output`` (which the
      loss reads as such).
    - ``threshold``: binary accuracy's threshold on the steps' output (0 on
      logits of a sigmoid, else 0.5).
    """

    def __init__(self, name, last):
        self.name = name
        self.output = None
        if isinstance(last, Dense):
            if last.output_activation == "softmax":
                self.output = "softmax"
            elif name == "binary_crossentropy" and last.activation.name == "sigmoid":
                self.output = "sigmoid"
        self.from_logits = self.output is not None
        self.threshold = 0.0 if self.output == "sigmoid" else 0.5

    @property
    def sigmoid_logits(self) -> bool:
        """The last Dense must compute logits instead of its sigmoid."""
        return self.output == "sigmoid"

    def __call__(self, out, y, weight=None):
        """(loss as a 0-d array, dL/dout) of the batch; weight: None or one
        factor per sample, the loss then ``sum_i w_i l_i / batch`` (Keras'
        sample_weight with ``sum_over_batch_size``)."""
        if self.name == "sparse_categorical_crossentropy":
            return ops.softmax_cross_entropy(out, y.reshape(-1), sample_weight=weight)
        if self.name == "categorical_crossentropy":
            return ops.softmax_cross_entropy(out, y.astype(out.dtype, copy=False),
                                             sample_weight=weight)
        target = y.reshape(out.shape).astype(out.dtype, copy=False)
        if self.name == "binary_crossentropy":
            return ops.sigmoid_binary_cross_entropy(out, target, sample_weight=weight)
        return ops.mean_squared_error(out, target, sample_weight=weight)

    def classes(self, y, xp):
        """The class index of each sample of y (checked labels), what
        class_weight is looked up by: the index itself (sparse), the label
        row's argmax (categorical), target > 0.5 (binary, one output).
        None for mse and for binary losses with several outputs."""
        if self.name == "sparse_categorical_crossentropy":
            return y.reshape(-1)
        if self.name == "categorical_crossentropy":
            return xp.argmax(y, axis=1)
        if self.name == "binary_crossentropy" and y.size == y.shape[0]:
            return (y.reshape(-1) > 0.5).astype(np.int64)
        return None

    def accuracy(self, out, y) -> float:
        """The fraction of samples classified right, as Keras' accuracy for
        this loss (binary: output above ``threshold`` against y > 0.5; else
        the argmax against the class index or label row)."""
        xp = array_module(out)
        if self.name == "binary_crossentropy":  # y has out.size targets (fit checks)
            return float(xp.mean((out.reshape(y.shape) > self.threshold) == (y > 0.5)))
        if self.name == "sparse_categorical_crossentropy":
            return float(xp.mean(xp.argmax(out, axis=1) == y.reshape(-1)))
        return float(xp.mean(xp.argmax(out, axis=1) == xp.argmax(y, axis=1)))

    def predictions(self, out):
        """`out` with the output activation applied (probabilities)."""
        xp = array_module(out)
        if self.output == "softmax" and out.shape[0]:
            z = out - out.max(axis=1, keepdims=True)
            e = xp.exp(z)
            return e / e.sum(axis=1, keepdims=True)
        if self.output == "sigmoid":
            return 1.0 / (1.0 + xp.exp(-out))
        return out
