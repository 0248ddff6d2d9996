from __future__ import annotations

from .._C import Opt
from ._base import Optimizer, check_float


class Adagrad(Optimizer):
    """Adagrad (Duchi et al. 2011): per-coordinate rates from the summed squares.

    ::

        s += g^2                     (s starts at initial_accumulator_value)
        p -= lr * g / sqrt(s + epsilon)

    Keras defaults: learning_rate=0.001, initial_accumulator_value=0.1,
    epsilon=1e-7 (inside the square root). PyTorch: accumulator starts at 0,
    eps=1e-10 added outside the square root, lr=0.01.
    """

    _rule = Opt.Adagrad

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7,
                 **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.initial_accumulator_value = check_float(
            "Adagrad", "initial_accumulator_value", initial_accumulator_value, low=0.0)
        self.epsilon = check_float("Adagrad", "epsilon", epsilon, low=0.0)

    def _slot_init(self):
        return [self.initial_accumulator_value, None, None]

    def _step_fields(self, lr, t):
        return {"epsilon": self.epsilon}

    def _config(self):
        return {"initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}
