from __future__ import annotations

from .._C import Opt
from ._base import Optimizer, check_float, check_unit


class RMSprop(Optimizer):
    """RMSprop (Hinton, Coursera lecture 6e): scale by a running RMS of g.

    ::

        v = rho * v + (1 - rho) * g^2
        centered: a = rho * a + (1 - rho) * g;  d = max(v - a^2, 0) + epsilon
        else:     d = v + epsilon
        inc = lr * g / sqrt(d)
        momentum > 0: b = momentum * b + inc; p -= b
        else:         p -= inc

    Keras defaults: learning_rate=0.001, rho=0.9, momentum=0.0,
    epsilon=1e-7, centered=False. PyTorch calls rho ``alpha`` (default
    0.99), uses eps=1e-8 outside the square root and lr=0.01.

    The centered variance v - a^2 is clamped at 0: it is >= 0 in exact
    arithmetic, but where the gradient barely varies it is rounding only and
    can fall below 0 (below -epsilon Keras' formula gives a NaN step).
    """

    _rule = Opt.RMSprop

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7,
                 centered=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.rho = check_unit("RMSprop", "rho", rho)
        self.momentum = check_float("RMSprop", "momentum", momentum, low=0.0, high=1.0)
        self.epsilon = check_float("RMSprop", "epsilon", epsilon, low=0.0)
        if not isinstance(centered, bool):
            raise TypeError(f"RMSprop: centered must be a bool, got {centered!r}")
        self.centered = centered

    def _slot_init(self):
        # fixed kernel positions: velocity, average gradient, momentum
        return [0.0, 0.0 if self.centered else None, 0.0 if self.momentum > 0 else None]

    def _step_fields(self, lr, t):
        return {"rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon,
                "centered": self.centered}

    def _config(self):
        return {"rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon,
                "centered": self.centered}
