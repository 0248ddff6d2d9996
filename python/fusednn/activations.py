"""Activation functions by name, as used by every op and layer.

Names follow Keras 3: ``linear`` (also ``None``), ``relu``, ``leaky_relu``,
``elu``, ``selu``, ``gelu``, ``swish`` (alias ``silu``), ``mish``,
``sigmoid``, ``tanh``, ``softplus``.

Parameters and defaults:

- ``leaky_relu``: ``alpha`` = negative slope, default 0.2 (Keras'
  ``leaky_relu`` function; the Keras ``LeakyReLU`` layer uses 0.3 and
  PyTorch 0.01). Must be >= 0.
- ``elu``: ``alpha`` = saturation, default 1.0. Must be >= 0.
- ``gelu``: ``approximate=False`` is the exact ``z * Phi(z)`` (Keras and
  PyTorch default); ``approximate=True`` the tanh form
  ``0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)))``.
- ``swish``: ``beta`` in ``z * sigmoid(beta z)``, default 1 (= SiLU).

The per-element math lives once in ``csrc/include/fusednn/activation.h``;
``fusednn.testing.reference`` states it again in NumPy float64 as the oracle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._C import Act

__all__ = ["ActivationSpec", "get", "names"]

# name -> the kernel (fusednn::Act, exported by the extension)
_KINDS = {
    "linear": Act.Linear,
    "relu": Act.Relu,
    "leaky_relu": Act.LeakyRelu,
    "elu": Act.Elu,
    "selu": Act.Selu,
    "gelu": Act.Gelu,
    "gelu_tanh": Act.GeluTanh,  # internal: gelu with approximate=True
    "swish": Act.Swish,
    "mish": Act.Mish,
    "sigmoid": Act.Sigmoid,
    "tanh": Act.Tanh,
    "softplus": Act.Softplus,
}
_ALIASES = {"silu": "swish", None: "linear"}
# Activations whose derivative is computed from the saved input z, not y.
_SAVES_INPUT = frozenset({"gelu", "gelu_tanh", "swish", "mish"})
# Parameter name -> default, per activation.
_PARAMS = {
    "leaky_relu": {"alpha": 0.2},
    "elu": {"alpha": 1.0},
    "gelu": {"approximate": False},
    "swish": {"beta": 1.0},
}


@dataclass(frozen=True)
class ActivationSpec:
    """A resolved activation: its canonical name, kernel id and parameter."""

    name: str
    kind: Act
    alpha: float = 0.0

    @property
    def is_linear(self) -> bool:
        """True for the identity (no activation kernel, nothing saved)."""
        return self.name == "linear"

    @property
    def saves_input(self) -> bool:
        """True when backward needs the pre-activation z (else the output y)."""
        return self.name in _SAVES_INPUT

    def saved(self, z, y):
        """What backward keeps of f(z) = y: None (linear), z or y."""
        if self.name == "linear":
            return None
        return z if self.saves_input else y

    def get_config(self) -> dict:
        if self.name == "gelu_tanh":
            return {"name": "gelu", "approximate": True}
        cfg: dict = {"name": self.name}
        for p in _PARAMS.get(self.name, {}):
            cfg[p] = self.alpha
        return cfg


def names() -> list[str]:
    """The public activation names."""
    return [n for n in _KINDS if n != "gelu_tanh"] + ["silu"]


# Names resolved without parameters, so a hot loop does not re-parse them.
# Specs are frozen, so sharing one is safe.
_RESOLVED: dict[str, ActivationSpec] = {}


def get(identifier, caller: str = "activation", **params) -> ActivationSpec:
    """Resolve a name (or an ActivationSpec) and its parameters.

    Raises ValueError for an unknown name, an unknown parameter or a bad
    value, and TypeError for a non-string identifier.
    """
    if params or type(identifier) is not str:
        return _resolve(identifier, caller, params)
    spec = _RESOLVED.get(identifier)
    if spec is None:
        spec = _RESOLVED[identifier] = _resolve(identifier, caller, params)
    return spec


def _resolve(identifier, caller: str, params: dict) -> ActivationSpec:
    if isinstance(identifier, ActivationSpec):
        if params:
            raise ValueError(f"{caller}: parameters {sorted(params)} given with a resolved "
                             f"activation {identifier.name!r}")
        return identifier
    if identifier is not None and not isinstance(identifier, str):
        raise TypeError(f"{caller}: activation must be a string or None, "
                        f"got {type(identifier).__name__}: {identifier!r}")
    key = identifier.lower() if isinstance(identifier, str) else identifier
    name = _ALIASES.get(key, key)
    if name not in _KINDS or name == "gelu_tanh":
        raise ValueError(f"{caller}: unknown activation {identifier!r}; expected one of "
                         f"{', '.join(names())}")
    allowed = _PARAMS.get(name, {})
    unknown = set(params) - set(allowed)
    if unknown:
        raise ValueError(f"{caller}: activation {name!r} takes no parameter "
                         f"{', '.join(sorted(unknown))}"
                         + (f" (it takes {', '.join(allowed)})" if allowed else ""))
    values = {**allowed, **{k: v for k, v in params.items() if v is not None}}
    if name == "gelu":
        approx = values["approximate"]
        if not isinstance(approx, bool):
            raise TypeError(f"{caller}: approximate must be a bool, got {approx!r}")
        return ActivationSpec("gelu_tanh", _KINDS["gelu_tanh"]) if approx else \
            ActivationSpec("gelu", _KINDS["gelu"])
    if not values:
        return ActivationSpec(name, _KINDS[name])
    (pname, value), = values.items()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{caller}: {pname} must be a float, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{caller}: {pname} must be finite, got {value}")
    if name in ("leaky_relu", "elu") and value < 0:
        raise ValueError(f"{caller}: {name} needs {pname} >= 0, got {value}")
    return ActivationSpec(name, _KINDS[name], value)
