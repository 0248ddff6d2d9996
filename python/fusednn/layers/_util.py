"""Helpers shared by the layer modules: argument checks and config entries."""

from __future__ import annotations

import json
import numbers

import numpy as np

from .. import activations as _act
from .._validate import check_int


def serialize_object(obj):
    """A regularizer or constraint as ``{"class_name", "config"}`` (None stays None)."""
    if obj is None:
        return None
    return {"class_name": type(obj).__name__, "config": obj.get_config()}


def resolve_activation(activation, caller, **params):
    """An ActivationSpec from a name, a spec or a get_config() dict."""
    if isinstance(activation, dict):  # a get_config() entry
        activation = dict(activation)
        if "name" not in activation:
            raise ValueError(f"{caller}: activation config {activation!r} has no 'name'")
        activation = _act.get(activation.pop("name"), caller, **activation, **params)
        return activation
    return _act.get(activation, caller, **params)


def check_seed(caller, seed):
    """An int in [0, 2**63), or None."""
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{caller}: seed must be an int >= 0 or None, got "
                        f"{type(seed).__name__} {seed!r}")
    if not 0 <= int(seed) < 2**63:
        raise ValueError(f"{caller}: seed must be an int in [0, 2**63) or None, got {int(seed)}")
    return int(seed)


def draw_seed() -> int:
    """A fresh layer seed from NumPy's global RNG (so ``np.random.seed`` makes
    it reproducible) in [0, 2**63)."""
    return int(np.random.randint(0, 2**63 - 1, dtype=np.int64))


def rng_state(rng) -> dict:
    """A numpy Generator's ``bit_generator.state``, deep-copied (JSON-ready:
    ints, strs and dicts for PCG64)."""
    return json.loads(json.dumps(rng.bit_generator.state))


def set_rng_state(caller, rng, state) -> None:
    """Put `state` (from ``rng_state``) into the Generator `rng`, whose bit
    generator must be of the same kind; ValueError if it does not fit."""
    kind = type(rng.bit_generator).__name__
    if not isinstance(state, dict) or state.get("bit_generator") != kind:
        raise ValueError(f"{caller}: expected a {kind} bit_generator.state dict, got {state!r}")
    try:
        rng.bit_generator.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as e:
        raise ValueError(f"{caller}: invalid {kind} state {state!r}: {e}") from None


def check_input_shape(caller, name, shape) -> int:
    """The width of a ``(features,)`` input shape (Keras' ``input_shape``
    without the batch axis): a tuple or list of one int >= 1."""
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"{caller}: {name} must be a tuple (features,), e.g. (64,), got "
                        f"{type(shape).__name__} {shape!r}")
    if len(shape) != 1:
        raise ValueError(f"{caller}: {name} must be (features,): fusednn layers take 2-D "
                         f"(batch, features) data, so the shape has one entry (flatten images "
                         f"to one axis first); got {tuple(shape)!r}")
    return check_int(caller, f"{name}[0]", shape[0], 1)


def declared_input_dim(caller, input_shape, input_dim):
    """The input width a layer was declared with (Keras' ``input_shape=`` or
    ``input_dim=``), or None; both given must agree."""
    width = None if input_shape is None else check_input_shape(caller, "input_shape",
                                                               input_shape)
    if input_dim is not None:
        dim = check_int(caller, "input_dim", input_dim, 1)
        if width is not None and width != dim:
            raise ValueError(f"{caller}: input_shape={tuple(input_shape)!r} and "
                             f"input_dim={dim} disagree")
        width = dim
    return width


def check_input(layer, x, width=None):
    """A 2-D float array with `width` features (when given)."""
    caller = type(layer).__name__
    if not hasattr(x, "ndim") or not hasattr(x, "dtype"):
        raise TypeError(f"{caller}: x must be a NumPy or CuPy array, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{caller}: x has {x.ndim} dims, expected 2 (batch, features)")
    if x.dtype.char not in ("f", "d"):
        raise TypeError(f"{caller}: x has dtype {x.dtype.name}, expected float32 or float64")
    if width is not None and x.shape[1] != width:
        raise ValueError(f"{caller}: x has {x.shape[1]} features, the layer was built for "
                         f"{width}")
    return x


def require_built(layer):
    if not layer.built:
        raise RuntimeError(f"{type(layer).__name__} {layer.name}: call build(input_dim) (or the "
                           f"layer itself) before forward")


def require_forward(layer, ctx):
    if ctx is None:
        raise RuntimeError(f"{type(layer).__name__} {layer.name}: backward called before "
                           f"forward")
