"""Weight penalties (Keras names): L1, L2, L1L2.

A penalty adds ``l1 * sum|w| + l2 * sum w^2`` to the loss (no 1/2 factor, as
in Keras), i.e. ``l1 * sign(w) + 2 * l2 * w`` to the gradient. The fused
optimizers apply that gradient term inside their step
(``opt.apply(..., penalties=[...])``), so no extra pass over the weights is
made; calling a regularizer gives the loss term.
"""

from __future__ import annotations

from ._serializable import Serializable
from ._validate import check_float


class L1L2(Serializable):
    """``l1 * sum|w| + l2 * sum w^2``. Keras defaults: l1=0.0, l2=0.0."""

    def __init__(self, l1=0.0, l2=0.0):
        self.l1 = check_float(type(self).__name__, "l1", l1, low=0.0)
        self.l2 = check_float(type(self).__name__, "l2", l2, low=0.0)

    def __call__(self, w) -> float:
        total = 0.0
        if self.l1:
            total += self.l1 * float(abs(w).sum())
        if self.l2:
            total += self.l2 * float((w * w).sum())
        return total

    def get_config(self) -> dict:
        return {"l1": self.l1, "l2": self.l2}


class L1(L1L2):
    """``l1 * sum|w|``. Keras default l1=0.01."""

    def __init__(self, l1=0.01):
        super().__init__(l1=l1)

    def get_config(self):
        return {"l1": self.l1}


class L2(L1L2):
    """``l2 * sum w^2``. Keras default l2=0.01 (PyTorch's weight_decay=wd in
    SGD corresponds to l2 = wd / 2)."""

    def __init__(self, l2=0.01):
        super().__init__(l2=l2)

    def get_config(self):
        return {"l2": self.l2}


def get(identifier):
    """A regularizer from None, a name ("l1", "l2", "l1_l2") or an instance."""
    if identifier is None or isinstance(identifier, L1L2):
        return identifier
    names = {"l1": L1, "l2": L2, "l1_l2": L1L2, "l1l2": L1L2}
    if isinstance(identifier, dict) and set(identifier) >= {"class_name", "config"}:
        cls = names.get(str(identifier["class_name"]).lower())
        if cls is None:
            raise ValueError(f"unknown regularizer class {identifier['class_name']!r}")
        cfg = dict(identifier["config"])
        if cls is not L1L2:  # L1 / L2 take their one coefficient
            cfg = {k: v for k, v in cfg.items() if k == cls.__name__.lower()}
        return cls(**cfg)
    if isinstance(identifier, str) and identifier.lower() in names:
        return names[identifier.lower()]()
    raise ValueError(f"unknown regularizer {identifier!r}; expected one of l1, l2, l1_l2")
