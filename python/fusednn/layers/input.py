"""Input: the input shape of a Sequential model, Keras' ``keras.Input``."""

from __future__ import annotations

from ._util import check_input_shape

__all__ = ["Input"]


class Input:
    """The input of a model, Keras' ``keras.Input(shape)``::

        model = fd.Sequential([fd.Input((64,)), fd.layers.Dense(32, activation="relu"),
                               fd.layers.Dense(10, activation="softmax")])

    As the first entry of a Sequential it builds the model at once for
    ``shape[0]`` features (NumPy weights in the model's dtype), so
    ``summary()``, ``count_params()`` and ``get_weights()`` work before any
    data is seen. ``shape`` is ``(features,)``: fusednn layers take 2-D
    (batch, features) data. It is not a layer: ``model.layers`` does not list
    it (as in Keras). Also ``fd.layers.Input``.
    """

    def __init__(self, shape):
        self.shape = (check_input_shape("Input", "shape", shape),)

    def __repr__(self):
        return f"Input(shape={self.shape!r})"
