from __future__ import annotations

from .._C import Opt
from ._base import Optimizer, check_float


class SGD(Optimizer):
    """Stochastic gradient descent, with optional (Nesterov) momentum.

    Without momentum: ``p -= lr * g``. With momentum mu (Keras' form,
    Polyak 1964; Nesterov: Sutskever et al. 2013)::

        m = mu * m - lr * g
        p += m                       (momentum)
        p += mu * m - lr * g         (nesterov=True)

    Keras defaults: learning_rate=0.01, momentum=0.0. PyTorch keeps
    ``b = mu b + g; p -= lr b`` (lr outside the velocity) and defaults to
    lr=1e-3; with a constant rate both give the same trajectory.
    """

    _rule = Opt.SGD

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.momentum = check_float("SGD", "momentum", momentum, low=0.0, high=1.0)
        if not isinstance(nesterov, bool):
            raise TypeError(f"SGD: nesterov must be a bool, got {nesterov!r}")
        self.nesterov = nesterov

    def _slot_init(self):
        return [0.0 if self.momentum > 0 else None, None, None]

    def _step_fields(self, lr, t):
        return {"momentum": self.momentum, "nesterov": self.nesterov}

    def _config(self):
        return {"momentum": self.momentum, "nesterov": self.nesterov}
