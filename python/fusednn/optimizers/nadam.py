from __future__ import annotations

from .._C import Opt
from ._base import Optimizer, check_float, check_unit


class Nadam(Optimizer):
    """Nadam (Dozat 2016): Adam with Nesterov momentum and a momentum schedule.

    With u_i = beta_1 * (1 - 0.5 * 0.96^(momentum_decay * i)) and
    P_t = u_1 ... u_t, step t = 1, 2, ...::

        m += (g - m) * (1 - beta_1)
        v += (g^2 - v) * (1 - beta_2)
        m_hat = u_{t+1} m / (1 - P_t u_{t+1}) + (1 - u_t) g / (1 - P_t)
        v_hat = v / (1 - beta_2^t)
        p -= lr * m_hat / (sqrt(v_hat) + epsilon)

    Keras defaults: learning_rate=0.001, beta_1=0.9, beta_2=0.999,
    epsilon=1e-7, and its schedule is 0.96^t, i.e. momentum_decay=1.0.
    PyTorch's NAdam uses momentum_decay=0.004 (the paper's psi), lr=2e-3
    and eps=1e-8: pass momentum_decay=0.004 for its schedule.
    """

    _rule = Opt.Nadam

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 momentum_decay=1.0, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.beta_1 = check_unit("Nadam", "beta_1", beta_1)
        self.beta_2 = check_unit("Nadam", "beta_2", beta_2)
        self.epsilon = check_float("Nadam", "epsilon", epsilon, low=0.0)
        self.momentum_decay = check_float("Nadam", "momentum_decay", momentum_decay, low=0.0)
        self._u_product = 1.0  # P_t of the steps taken

    def _u(self, i):
        return self.beta_1 * (1.0 - 0.5 * 0.96 ** (self.momentum_decay * i))

    def _slot_init(self):
        return [0.0, 0.0, None]

    def _step_fields(self, lr, t):
        u_t, u_next = self._u(t), self._u(t + 1)
        p_t = self._u_product * u_t
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                "m_weight": u_next / (1.0 - p_t * u_next), "g_weight": (1.0 - u_t) / (1.0 - p_t),
                "v_correction": 1.0 / (1.0 - self.beta_2 ** t)}

    def _advance(self, t):
        self._u_product *= self._u(t)

    def _extra_state(self):
        return {"u_product": self._u_product}

    def _set_extra_state(self, state):
        self._u_product = float(state.get("u_product", 1.0))

    def _config(self):
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                "momentum_decay": self.momentum_decay}
