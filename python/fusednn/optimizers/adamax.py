from __future__ import annotations

from .._C import Opt
from ._base import Optimizer, check_float, check_unit


class Adamax(Optimizer):
    """Adamax (Kingma & Ba 2015, section 7.1): Adam with the infinity norm.

    Step t = 1, 2, ...::

        m += (g - m) * (1 - beta_1)
        u = max(beta_2 * u, |g|)
        p -= lr * m / ((1 - beta_1^t) * (u + epsilon))

    Keras defaults: learning_rate=0.001, beta_1=0.9, beta_2=0.999,
    epsilon=1e-7. PyTorch: lr=2e-3, eps=1e-8 (added inside the max).
    """

    _rule = Opt.Adamax

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.beta_1 = check_unit("Adamax", "beta_1", beta_1)
        self.beta_2 = check_unit("Adamax", "beta_2", beta_2)
        self.epsilon = check_float("Adamax", "epsilon", epsilon, low=0.0)

    def _slot_init(self):
        return [0.0, 0.0, None]

    def _step_fields(self, lr, t):
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                "step_size": lr / (1.0 - self.beta_1 ** t)}

    def _config(self):
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}
