"""Fused optimizers: one kernel call updates every parameter in place.

Keras 3 names, defaults and formulas; each class's docstring gives its rule
and how PyTorch differs. Works on plain NumPy or CuPy arrays::

    opt = fd.optimizers.Adam(learning_rate=1e-3)
    opt.apply(grads, params)          # params updated in place
"""

from ._base import Optimizer
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .adamax import Adamax
from .ftrl import Ftrl
from .nadam import Nadam
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["SGD", "Adagrad", "Adam", "AdamW", "Adamax", "Ftrl", "Nadam", "Optimizer", "RMSprop"]


def get(identifier, **kwargs) -> Optimizer:
    """An optimizer by name ("adam", "sgd", ...) or an Optimizer as is."""
    if isinstance(identifier, Optimizer):
        return identifier
    if not isinstance(identifier, str):
        raise TypeError(f"optimizer must be a name or an Optimizer, got {identifier!r}")
    classes = {c.__name__.lower(): c for c in (SGD, Adagrad, Adam, AdamW, Adamax, Ftrl, Nadam,
                                               RMSprop)}
    cls = classes.get(identifier.lower())
    if cls is None:
        raise ValueError(f"unknown optimizer {identifier!r}; expected one of "
                         f"{', '.join(sorted(classes))}")
    return cls(**kwargs)
