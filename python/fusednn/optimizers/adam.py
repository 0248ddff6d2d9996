from __future__ import annotations

import math

from .._C import Opt
from ._base import Optimizer, check_float, check_unit


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015), with AMSGrad as an option (Reddi et al. 2018).

    Step t = 1, 2, ...::

        m += (g - m) * (1 - beta_1)
        v += (g^2 - v) * (1 - beta_2)
        amsgrad: v_hat = max(v_hat, v), used in place of v
        p -= lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)

    Keras defaults: learning_rate=0.001, beta_1=0.9, beta_2=0.999,
    epsilon=1e-7. epsilon is added to sqrt(v) before the bias correction is
    folded in (Keras' "epsilon hat"); PyTorch adds eps=1e-8 after correcting
    v, so the same number means a slightly different damping.
    """

    _rule = Opt.Adam

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        name = type(self).__name__
        self.beta_1 = check_unit(name, "beta_1", beta_1)
        self.beta_2 = check_unit(name, "beta_2", beta_2)
        self.epsilon = check_float(name, "epsilon", epsilon, low=0.0)
        if not isinstance(amsgrad, bool):
            raise TypeError(f"{name}: amsgrad must be a bool, got {amsgrad!r}")
        self.amsgrad = amsgrad

    def _slot_init(self):
        return [0.0, 0.0, 0.0 if self.amsgrad else None]

    def _step_fields(self, lr, t):
        step_size = lr * math.sqrt(1.0 - self.beta_2 ** t) / (1.0 - self.beta_1 ** t)
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                "step_size": step_size, "amsgrad": self.amsgrad}

    def _config(self):
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                "amsgrad": self.amsgrad}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019).

    Before each Adam step: ``p -= lr * weight_decay * p``. Keras default
    weight_decay=0.004; PyTorch's AdamW defaults to 0.01 (and eps=1e-8).
    """

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-7, amsgrad=False, **kwargs):
        if weight_decay is None:
            raise ValueError("AdamW: weight_decay must be a float >= 0, got None")
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad,
                         weight_decay=weight_decay, **kwargs)
