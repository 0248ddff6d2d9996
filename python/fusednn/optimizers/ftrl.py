from __future__ import annotations

from .._C import Opt
from ._base import Optimizer, check_float


class Ftrl(Optimizer):
    """FTRL-Proximal (McMahan et al. 2013), for sparse linear-style models.

    With n the accumulator (starts at initial_accumulator_value), z the
    linear term (starts at 0), k = -learning_rate_power and
    l2' = l2 + beta / (2 lr)::

        g' = g + 2 * l2_shrinkage * p
        n_new = n + g^2
        z += g' - (n_new^k - n^k) / lr * p
        p = (clip(z, -l1, l1) - z) / (n_new^k / lr + 2 l2')
        n = n_new

    so |z| <= l1 gives p = 0 exactly (sparsity). Keras defaults:
    learning_rate=0.001, learning_rate_power=-0.5,
    initial_accumulator_value=0.1, all strengths 0. PyTorch has no FTRL.
    The learning rate must be > 0.
    """

    _rule = Opt.Ftrl

    def __init__(self, learning_rate=0.001, learning_rate_power=-0.5,
                 initial_accumulator_value=0.1, l1_regularization_strength=0.0,
                 l2_regularization_strength=0.0, l2_shrinkage_regularization_strength=0.0,
                 beta=0.0, **kwargs):
        super().__init__(learning_rate, **kwargs)
        c = "Ftrl"
        self.learning_rate_power = check_float(c, "learning_rate_power", learning_rate_power,
                                               high=0.0)
        self.initial_accumulator_value = check_float(c, "initial_accumulator_value",
                                                     initial_accumulator_value, low=0.0)
        self.l1_regularization_strength = check_float(c, "l1_regularization_strength",
                                                      l1_regularization_strength, low=0.0)
        self.l2_regularization_strength = check_float(c, "l2_regularization_strength",
                                                      l2_regularization_strength, low=0.0)
        self.l2_shrinkage_regularization_strength = check_float(
            c, "l2_shrinkage_regularization_strength", l2_shrinkage_regularization_strength,
            low=0.0)
        self.beta = check_float(c, "beta", beta, low=0.0)

    def _slot_init(self):
        return [self.initial_accumulator_value, 0.0, None]

    def _step_fields(self, lr, t):
        if lr <= 0:
            raise ValueError(f"Ftrl: learning_rate must be > 0, got {lr}")
        return {"l2": self.l2_regularization_strength + self.beta / (2.0 * lr),
                "l1": self.l1_regularization_strength,
                "shrinkage": self.l2_shrinkage_regularization_strength,
                "lr_power": self.learning_rate_power}

    def _config(self):
        return {"learning_rate_power": self.learning_rate_power,
                "initial_accumulator_value": self.initial_accumulator_value,
                "l1_regularization_strength": self.l1_regularization_strength,
                "l2_regularization_strength": self.l2_regularization_strength,
                "l2_shrinkage_regularization_strength": self.l2_shrinkage_regularization_strength,
                "beta": self.beta}
