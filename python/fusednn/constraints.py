"""Weight constraints applied after each optimizer step (Keras names)."""

from __future__ import annotations

import numbers

from ._serializable import Serializable
from ._validate import check_float


class MaxNorm(Serializable):
    """Max-norm (Srebro et al. 2005; Hinton et al. 2012's dropout recipe).

    After each step, every unit's weights w (the slice along ``axis``) are
    rescaled: ``w *= min(||w||, max_value) / (1e-7 + ||w||)``, so that
    ``||w||_2 <= max_value``. For a Dense kernel of shape (inputs, units),
    axis=0 bounds each unit's incoming weights. Keras defaults:
    max_value=2.0, axis=0. PyTorch has no constraint objects; this is
    ``torch.renorm`` applied after ``step()``.

    The fused optimizers apply it inside their step
    (``opt.apply(..., constraints=[...])``); calling it returns a rescaled
    copy.
    """

    def __init__(self, max_value=2.0, axis=0):
        self.max_value = check_float("MaxNorm", "max_value", max_value, low=0.0, low_open=True)
        if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
            raise TypeError(f"MaxNorm: axis must be an int, got {axis!r}")
        self.axis = int(axis)

    def __call__(self, w):
        norms = (w * w).sum(axis=self.axis, keepdims=True) ** 0.5
        desired = norms.clip(0, self.max_value)
        return w * (desired / (1e-7 + norms))

    def get_config(self) -> dict:
        return {"max_value": self.max_value, "axis": self.axis}


def get(identifier):
    """A constraint from None, "max_norm" or an instance."""
    if identifier is None or isinstance(identifier, MaxNorm):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in ("max_norm", "maxnorm"):
        return MaxNorm()
    if isinstance(identifier, dict) and set(identifier) >= {"class_name", "config"} and \
            str(identifier["class_name"]).lower() in ("maxnorm", "max_norm"):
        return MaxNorm(**identifier["config"])
    raise ValueError(f"unknown constraint {identifier!r}; expected max_norm")
