"""The layer protocol every fd.layers class follows.

A layer maps a 2-D batch ``x`` of shape (batch, features) to ``y`` of shape
(batch, units). It is built once from its input width (``build``), then runs
``forward(x, training)`` and, after it, ``backward(dy, need_dx)``, which returns dL/dx
and leaves dL/dw of each trainable weight in ``grads`` (aligned with
``trainable_weights``). Weights are NumPy or CuPy arrays, updated in place by
the optimizer. Keras' names: ``trainable``, ``get_weights``/``set_weights``,
``get_config``/``from_config``.
"""

from __future__ import annotations

import itertools

import numpy as np

from .._arrays import array_module, to_host
from ._util import declared_input_dim

_counters: dict = {}


def _unique_name(prefix: str) -> str:
    n = _counters.setdefault(prefix, itertools.count())
    i = next(n)
    return prefix if i == 0 else f"{prefix}_{i}"


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


class Layer:
    """Base class. Subclasses implement ``_build``, ``forward``, ``backward``
    and ``output_dim``, and list their constructor arguments in ``get_config``.

    Attributes:
      trainable: when False the optimizer skips this layer's weights (takes
        effect at the next step, no rebuild); BatchNormalization then also
        runs in inference mode, as in Keras.
      weights: every weight, trainable ones first (Keras order).
      grads: dL/dw of the trainable weights after ``backward`` (None before).

    ``input_shape=(features,)`` or ``input_dim=features`` (Keras' arguments)
    declare the input width: on the first layer of a Sequential they build
    the model at once (as ``fd.Input(shape)`` does); a layer built for
    another width raises ValueError.
    """

    def __init__(self, *, trainable: bool = True, name: str | None = None, input_shape=None,
                 input_dim=None):
        if not isinstance(trainable, (bool, np.bool_)):
            raise TypeError(f"{type(self).__name__}: trainable must be a bool, got {trainable!r}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"{type(self).__name__}: name must be a str, got {name!r}")
        self.declared_input_dim = declared_input_dim(type(self).__name__, input_shape,
                                                     input_dim)
        self.trainable = bool(trainable)
        self.name = name or _unique_name(_snake(type(self).__name__))
        self.built = False
        self.input_dim: int | None = None
        self._trainable_weights: list = []
        self._non_trainable_weights: list = []
        self.grads: list | None = None

    # ------------------------------------------------------------ building
    def build(self, input_dim: int, xp=np, dtype=np.float32) -> None:
        """Create the weights for inputs of `input_dim` features, with the
        array module `xp` (numpy or cupy) and `dtype`."""
        if isinstance(input_dim, bool) or not isinstance(input_dim, (int, np.integer)) \
                or input_dim < 1:
            raise ValueError(f"{self.name}: input_dim must be an int >= 1, got {input_dim!r}")
        if self.declared_input_dim not in (None, input_dim):
            raise ValueError(f"{self.name}: built for {input_dim} input features, but it was "
                             f"declared with input_shape=({self.declared_input_dim},)")
        self.input_dim = int(input_dim)
        self._build(self.input_dim, xp, np.dtype(dtype))
        self.built = True

    def _build(self, input_dim: int, xp, dtype) -> None:  # weights-free layers
        pass

    def output_dim(self, input_dim: int) -> int:
        """Features of the output for `input_dim` input features."""
        return input_dim

    # ------------------------------------------------------------- running
    def forward(self, x, training: bool = False):
        raise NotImplementedError

    def backward(self, dy, need_dx: bool = True):
        """dL/dx from dL/dy of the last ``forward`` (None when not need_dx),
        with dL/dw of the trainable weights left in ``grads``."""
        raise NotImplementedError

    def __call__(self, x, training: bool = False):
        if not self.built:
            xp = array_module(x)
            self.build(x.shape[-1], xp, x.dtype)
        return self.forward(x, training)

    # ------------------------------------------------------------- weights
    @property
    def trainable_weights(self) -> list:
        return list(self._trainable_weights) if self.trainable else []

    @property
    def non_trainable_weights(self) -> list:
        if self.trainable:
            return list(self._non_trainable_weights)
        return list(self._trainable_weights) + list(self._non_trainable_weights)

    @property
    def weights(self) -> list:
        return list(self._trainable_weights) + list(self._non_trainable_weights)

    def count_params(self) -> int:
        """The number of scalars in the weights, trainable or not (Keras'
        ``count_params``); ValueError for a layer that is not built."""
        if not self.built:
            raise ValueError(f"{type(self).__name__} {self.name}: count_params needs a built "
                             f"layer; call build(input_dim) or the layer on data first")
        return sum(int(w.size) for w in self.weights)

    def weight_penalties(self) -> list:
        """Per trainable weight: a regularizer or None (see fd.regularizers)."""
        return [None] * len(self._trainable_weights)

    def weight_constraints(self) -> list:
        """Per trainable weight: a constraint or None (see fd.constraints)."""
        return [None] * len(self._trainable_weights)

    def penalty_loss(self) -> float:
        """The regularisation term this layer adds to the loss."""
        total = 0.0
        for w, reg in zip(self._trainable_weights, self.weight_penalties()):
            if reg is not None:
                total += float(reg(w))
        return total

    def get_weights(self) -> list:
        """Copies of the weights as NumPy arrays, in ``weights`` order."""
        return [np.array(to_host(w)) for w in self.weights]

    def set_weights(self, weights) -> None:
        """Copy `weights` (arrays in ``weights`` order) into the layer's arrays."""
        mine = self.weights
        weights = list(weights)
        if len(weights) != len(mine):
            raise ValueError(f"{self.name}: set_weights got {len(weights)} arrays, the layer has "
                             f"{len(mine)} weights")
        for i, (dst, src) in enumerate(zip(mine, weights)):
            src_shape = tuple(np.shape(src))
            if src_shape != tuple(dst.shape):
                raise ValueError(f"{self.name}: weight {i} has shape {tuple(dst.shape)}, "
                                 f"got {src_shape}")
            dst[...] = array_module(dst).asarray(src, dtype=dst.dtype)

    # --------------------------------------------------------------- state
    def get_state(self) -> dict:
        """The non-weight state that training changes and that an exact resume
        needs (a dropout step counter, a random generator's state), as a
        JSON-ready dict; ``{}`` for a layer without any. ``model.save`` writes
        it and ``fd.models.load`` gives it back to ``set_state``."""
        return {}

    def set_state(self, state: dict) -> None:
        """Restore a ``get_state`` result (ValueError if it does not fit)."""
        check_state(self, state, ())

    # -------------------------------------------------------------- config
    def get_config(self) -> dict:
        cfg = {"name": self.name, "trainable": self.trainable}
        if self.declared_input_dim is not None:
            cfg["input_shape"] = (self.declared_input_dim,)
        return cfg

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}>"


def check_state(layer, state, keys: tuple) -> dict:
    """`state` as a dict with exactly the keys `keys`; ValueError otherwise."""
    caller = f"{type(layer).__name__} {layer.name}: set_state"
    if not isinstance(state, dict):
        raise ValueError(f"{caller}: state must be a dict from get_state, got "
                         f"{type(state).__name__} {state!r}")
    if set(state) != set(keys):
        raise ValueError(f"{caller}: state has keys {sorted(state, key=str)}, expected "
                         f"{sorted(keys)}")
    return state


def check_counter(layer, state, key) -> int:
    """state[key] as an int in [0, 2**64) (a step counter: the kernels key
    masks by a uint64)."""
    v = state[key]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < 2**64:
        raise ValueError(f"{type(layer).__name__} {layer.name}: set_state: {key} must be an "
                         f"int in [0, 2**64), got {v!r}")
    return int(v)


