"""Plain NumPy float64 implementations: the test oracle and the readable
statement of each formula. Nothing here is fast; everything here is simple.

Derivatives are written as functions of the pre-activation z, independently
of the kernels' trick of reading them from the saved output.
"""

from __future__ import annotations

import math

import numpy as np

SELU_LAMBDA = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def sigmoid(z):
    z = _f64(z)
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def softplus(z):
    z = _f64(z)
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def phi(z):
    """Standard normal density."""
    return np.exp(-0.5 * _f64(z) ** 2) / math.sqrt(2.0 * math.pi)


def Phi(z):  # noqa: N802
    """Standard normal CDF."""
    return 0.5 * (1.0 + _erf(_f64(z) / math.sqrt(2.0)))


_GC = math.sqrt(2.0 / math.pi)


def activation(z, name, alpha=None, approximate=False, beta=1.0):
    """f(z) for the activation `name` (Keras names, see fusednn.activations)."""
    z = _f64(z)
    if name in ("linear", None):
        return z.copy()
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "leaky_relu":
        a = 0.2 if alpha is None else alpha
        return np.where(z > 0, z, a * z)
    if name == "elu":
        a = 1.0 if alpha is None else alpha
        return np.where(z > 0, z, a * np.expm1(np.minimum(z, 0.0)))
    if name == "selu":
        return SELU_LAMBDA * np.where(z > 0, z, SELU_ALPHA * np.expm1(np.minimum(z, 0.0)))
    if name == "gelu":
        if approximate:
            return 0.5 * z * (1.0 + np.tanh(_GC * (z + 0.044715 * z**3)))
        return z * Phi(z)
    if name in ("swish", "silu"):
        return z * sigmoid(beta * z)
    if name == "mish":
        return z * np.tanh(softplus(z))
    if name == "sigmoid":
        return sigmoid(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "softplus":
        return softplus(z)
    raise ValueError(f"unknown activation {name!r}")


def activation_grad(z, name, alpha=None, approximate=False, beta=1.0):
    """f'(z), with f'(0) taken from the z <= 0 side for the piecewise ones."""
    z = _f64(z)
    if name in ("linear", None):
        return np.ones_like(z)
    if name == "relu":
        return (z > 0).astype(np.float64)
    if name == "leaky_relu":
        a = 0.2 if alpha is None else alpha
        return np.where(z > 0, 1.0, a)
    if name == "elu":
        a = 1.0 if alpha is None else alpha
        return np.where(z > 0, 1.0, a * np.exp(np.minimum(z, 0.0)))
    if name == "selu":
        return SELU_LAMBDA * np.where(z > 0, 1.0, SELU_ALPHA * np.exp(np.minimum(z, 0.0)))
    if name == "gelu":
        if approximate:
            u = _GC * (z + 0.044715 * z**3)
            t = np.tanh(u)
            return 0.5 * (1 + t) + 0.5 * z * (1 - t**2) * _GC * (1 + 3 * 0.044715 * z**2)
        return Phi(z) + z * phi(z)
    if name in ("swish", "silu"):
        s = sigmoid(beta * z)
        return s + beta * z * s * (1 - s)
    if name == "mish":
        t = np.tanh(softplus(z))
        return t + z * sigmoid(z) * (1 - t**2)
    if name == "sigmoid":
        s = sigmoid(z)
        return s * (1 - s)
    if name == "tanh":
        return 1 - np.tanh(z) ** 2
    if name == "softplus":
        return sigmoid(z)
    raise ValueError(f"unknown activation {name!r}")


def dense_forward(x, w, b=None, activation_name="linear", **params):
    """y = f(x @ w + b) in float64. Returns (y, z)."""
    z = _f64(x) @ _f64(w)
    if b is not None:
        z = z + _f64(b)
    return activation(z, activation_name, **params), z


def dense_backward(dy, x, w, b=None, activation_name="linear", **params):
    """(dx, dw, db) in float64 for dy = dL/dy."""
    _, z = dense_forward(x, w, b, activation_name, **params)
    dz = _f64(dy) * activation_grad(z, activation_name, **params)
    dw = _f64(x).T @ dz
    dx = dz @ _f64(w).T
    db = dz.sum(axis=0) if b is not None else None
    return dx, dw, db


# --------------------------------------------------------------- optimizers
#
# One optimizer step, as Keras 3 defines it (keras/src/optimizers/*.py), in
# float64. Functional: nothing is updated in place; every function returns new
# arrays. The per-tensor order within a step is
#
#   1. g += l1*sign(p) + 2*l2*p                    (penalty, if the tensor has one)
#   2. clipvalue | clipnorm | global_clipnorm      (at most one)
#   3. p -= lr*wd*p                                (weight_decay, if not None)
#   4. the optimizer's rule                        (t = iterations + 1)
#   5. p = max_norm(p)                             (constraint, if the tensor has one)
#
# and then iterations += 1. lr is config["learning_rate"], or
# config["learning_rate"](iterations) when it is a callable schedule, with the
# iteration count from before the step. Frozen tensors (trainable False) keep
# their value and their slots, take no part in the global norm, and are not
# decayed; the step counter t is global all the same.

OPTIMIZER_COMMON_DEFAULTS = {
    "weight_decay": None,
    "clipnorm": None,
    "clipvalue": None,
    "global_clipnorm": None,
}

OPTIMIZER_DEFAULTS = {
    "SGD": {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False},
    "Adagrad": {"learning_rate": 0.001, "initial_accumulator_value": 0.1, "epsilon": 1e-7},
    "RMSprop": {"learning_rate": 0.001, "rho": 0.9, "momentum": 0.0, "epsilon": 1e-7,
                "centered": False},
    "Adam": {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7,
             "amsgrad": False},
    "AdamW": {"learning_rate": 0.001, "weight_decay": 0.004, "beta_1": 0.9, "beta_2": 0.999,
              "epsilon": 1e-7, "amsgrad": False},
    "Adamax": {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
    "Nadam": {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7,
              "momentum_decay": 1.0},
    "Ftrl": {"learning_rate": 0.001, "learning_rate_power": -0.5,
             "initial_accumulator_value": 0.1, "l1_regularization_strength": 0.0,
             "l2_regularization_strength": 0.0, "l2_shrinkage_regularization_strength": 0.0,
             "beta": 0.0},
}


def _optimizer_name(name):
    for key in OPTIMIZER_DEFAULTS:
        if key.lower() == str(name).lower():
            return key
    raise ValueError(f"unknown optimizer {name!r}")


def optimizer_config(name, config=None, **overrides):
    """The full config of optimizer `name`: its defaults, then `config`, then `overrides`."""
    name = _optimizer_name(name)
    return {**OPTIMIZER_COMMON_DEFAULTS, **OPTIMIZER_DEFAULTS[name], **(config or {}),
            **overrides}


# Each rule: (p, g, slots, lr, t, **hyper) -> (new p, new slots), all float64,
# where slots is a dict of arrays shaped like p and t = iterations + 1.


def sgd_update(p, g, s, lr, t, *, momentum, nesterov):
    """SGD with optional (Nesterov) momentum, Keras form (Sutskever et al. 2013):

        momentum == 0:  p = p - lr*g
        otherwise:      m = momentum*m - lr*g           (m starts at 0)
                        p = p + m                                  (classic)
                        p = p + momentum*m - lr*g                  (nesterov)
    """
    if momentum == 0:
        return p - lr * g, {}
    m = momentum * s["momentum"] - lr * g
    p = p + (momentum * m - lr * g if nesterov else m)
    return p, {"momentum": m}


def adagrad_update(p, g, s, lr, t, *, initial_accumulator_value, epsilon):
    """Adagrad (Duchi, Hazan & Singer 2011), Keras form:

        acc = acc + g^2                          (acc starts at initial_accumulator_value)
        p   = p - lr*g / sqrt(acc + epsilon)
    """
    acc = s["accumulator"] + g * g
    return p - lr * g / np.sqrt(acc + epsilon), {"accumulator": acc}


def rmsprop_update(p, g, s, lr, t, *, rho, momentum, epsilon, centered):
    """RMSprop (Hinton, Coursera lecture 6e; centered: Graves 2013), Keras form:

        v   = rho*v + (1-rho)*g^2
        centered:  a = rho*a + (1-rho)*g;  den = max(v - a^2, 0) + epsilon
        otherwise:                         den = v + epsilon
        inc = lr*g / sqrt(den)
        momentum > 0:  mom = momentum*mom + inc;  p = p - mom
        otherwise:                                p = p - inc
    """
    new = {}
    v = rho * s["velocity"] + (1 - rho) * g * g
    new["velocity"] = v
    if centered:
        a = rho * s["average_gradient"] + (1 - rho) * g
        new["average_gradient"] = a
        # v - a^2 >= 0 exactly; rounding can take it below 0 (clamped, as csrc)
        den = np.maximum(v - a * a, 0.0) + epsilon
    else:
        den = v + epsilon
    inc = lr * g / np.sqrt(den)
    if momentum > 0:
        mom = momentum * s["momentum"] + inc
        new["momentum"] = mom
        return p - mom, new
    return p - inc, new


def adam_update(p, g, s, lr, t, *, beta_1, beta_2, epsilon, amsgrad):
    """Adam (Kingma & Ba 2015, Algorithm 1 with the 'epsilon hat' of section 2;
    AMSGrad: Reddi, Kale & Kumar 2018), Keras form:

        m     = m + (g - m)*(1 - beta_1)
        v     = v + (g^2 - v)*(1 - beta_2)
        amsgrad:  vhat = max(vhat, v), used in place of v below
        alpha = lr*sqrt(1 - beta_2^t)/(1 - beta_1^t)
        p     = p - alpha*m/(sqrt(v) + epsilon)

    AdamW (Loshchilov & Hutter 2019) is this rule after the decoupled weight
    decay p = p - lr*weight_decay*p of the common step.
    """
    m = s["momentum"] + (g - s["momentum"]) * (1 - beta_1)
    v = s["velocity"] + (g * g - s["velocity"]) * (1 - beta_2)
    new = {"momentum": m, "velocity": v}
    if amsgrad:
        v = np.maximum(s["velocity_hat"], v)
        new["velocity_hat"] = v
    alpha = lr * math.sqrt(1 - beta_2**t) / (1 - beta_1**t)
    return p - alpha * m / (np.sqrt(v) + epsilon), new


def adamax_update(p, g, s, lr, t, *, beta_1, beta_2, epsilon):
    """Adamax (Kingma & Ba 2015, section 7.1), Keras form:

        m = m + (g - m)*(1 - beta_1)
        u = max(beta_2*u, |g|)
        p = p - lr*m/((1 - beta_1^t)*(u + epsilon))
    """
    m = s["m"] + (g - s["m"]) * (1 - beta_1)
    u = np.maximum(beta_2 * s["norm"], np.abs(g))
    return p - lr * m / ((1 - beta_1**t) * (u + epsilon)), {"m": m, "norm": u}


def nadam_momentum_cache(i, beta_1, momentum_decay=1.0):
    """u_i = beta_1*(1 - 0.5*0.96^(momentum_decay*i)) (Dozat 2016). momentum_decay=1
    is Keras' schedule, 0.004 PyTorch's."""
    return beta_1 * (1.0 - 0.5 * 0.96 ** (momentum_decay * i))


def nadam_update(p, g, s, lr, t, *, beta_1, beta_2, epsilon, momentum_decay):
    """Nadam (Dozat 2016, 'Incorporating Nesterov Momentum into Adam'), Keras form,
    with u_i = nadam_momentum_cache(i) and P_t = u_1*u_2*...*u_t:

        m     = m + (g - m)*(1 - beta_1)
        v     = v + (g^2 - v)*(1 - beta_2)
        m_hat = u_{t+1}*m/(1 - P_t*u_{t+1}) + (1 - u_t)*g/(1 - P_t)
        v_hat = v/(1 - beta_2^t)
        p     = p - lr*m_hat/(sqrt(v_hat) + epsilon)
    """
    u = [nadam_momentum_cache(i, beta_1, momentum_decay) for i in range(1, t + 2)]
    u_t, u_next = u[t - 1], u[t]
    prod_t = math.prod(u[:t])
    m = s["momentum"] + (g - s["momentum"]) * (1 - beta_1)
    v = s["velocity"] + (g * g - s["velocity"]) * (1 - beta_2)
    m_hat = u_next * m / (1 - prod_t * u_next) + (1 - u_t) * g / (1 - prod_t)
    v_hat = v / (1 - beta_2**t)
    return p - lr * m_hat / (np.sqrt(v_hat) + epsilon), {"momentum": m, "velocity": v}


def ftrl_update(p, g, s, lr, t, *, learning_rate_power, initial_accumulator_value,
                l1_regularization_strength, l2_regularization_strength,
                l2_shrinkage_regularization_strength, beta):
    """FTRL-Proximal (McMahan et al. 2013, 'Ad Click Prediction', Algorithm 1,
    with a general power of the accumulator and L2 shrinkage), Keras form, with
    n = -learning_rate_power, l1 = l1_regularization_strength,
    l2 = l2_regularization_strength + beta/(2*lr),
    shrink = l2_shrinkage_regularization_strength:

        g2     = g + 2*shrink*p
        new    = acc + g^2                      (acc starts at initial_accumulator_value)
        linear = linear + g2 - (new^n - acc^n)/lr * p       (linear starts at 0)
        quad   = new^n/lr + 2*l2
        p      = (clip(linear, -l1, l1) - linear)/quad
        acc    = new
    """
    n = -learning_rate_power
    l1 = l1_regularization_strength
    l2 = l2_regularization_strength + beta / (2.0 * lr)
    acc = s["accumulator"]
    g2 = g + 2.0 * l2_shrinkage_regularization_strength * p
    new = acc + g * g
    linear = s["linear"] + g2 - (new**n - acc**n) / lr * p
    quad = new**n / lr + 2.0 * l2
    p = (np.clip(linear, -l1, l1) - linear) / quad
    return p, {"accumulator": new, "linear": linear}


_RULES = {
    "SGD": sgd_update,
    "Adagrad": adagrad_update,
    "RMSprop": rmsprop_update,
    "Adam": adam_update,
    "AdamW": adam_update,
    "Adamax": adamax_update,
    "Nadam": nadam_update,
    "Ftrl": ftrl_update,
}


def _slot_init(name, cfg, p):
    """{slot name: initial array} for one parameter p (float64)."""
    z = lambda: np.zeros(p.shape, np.float64)  # noqa: E731
    if name == "SGD":
        return {"momentum": z()} if cfg["momentum"] != 0 else {}
    if name == "Adagrad":
        return {"accumulator": np.full(p.shape, float(cfg["initial_accumulator_value"]))}
    if name == "RMSprop":
        s = {"velocity": z()}
        if cfg["centered"]:
            s["average_gradient"] = z()
        if cfg["momentum"] > 0:
            s["momentum"] = z()
        return s
    if name in ("Adam", "AdamW"):
        s = {"momentum": z(), "velocity": z()}
        if cfg["amsgrad"]:
            s["velocity_hat"] = z()
        return s
    if name == "Adamax":
        return {"m": z(), "norm": z()}
    if name == "Nadam":
        return {"momentum": z(), "velocity": z()}
    if name == "Ftrl":
        return {"accumulator": np.full(p.shape, float(cfg["initial_accumulator_value"])),
                "linear": z()}
    raise ValueError(f"unknown optimizer {name!r}")


def optimizer_init(name, config, params):
    """The initial state of optimizer `name` for `params`: a list, one dict of
    float64 slot arrays per parameter (Keras' slot names: momentum, velocity,
    velocity_hat, average_gradient, accumulator, linear, m, norm)."""
    name = _optimizer_name(name)
    cfg = optimizer_config(name, config)
    return [_slot_init(name, cfg, _f64(p)) for p in params]


def penalty_gradient(p, l1=0.0, l2=0.0):
    """d/dp of l1*sum|p| + l2*sum p^2 (Keras' L1L2 regularizer): l1*sign(p) + 2*l2*p.
    A zero coefficient adds nothing (not 0 * inf = NaN at an infinite p)."""
    p = _f64(p)
    g = np.zeros_like(p)
    if l1:
        g = g + l1 * np.sign(p)
    if l2:
        g = g + 2.0 * l2 * p
    return g


def clip_gradients(grads, clipvalue=None, clipnorm=None, global_clipnorm=None):
    """Keras' gradient clipping (at most one option is set):

        clipvalue v:        g = clip(g, -v, v)
        clipnorm v:         g = g*v/max(||g||_2, v)            (per tensor)
        global_clipnorm v:  g = g*v/max(G, v),  G = sqrt(sum_k ||g_k||_2^2)
    """
    grads = [_f64(g) for g in grads]
    if clipvalue is not None:
        return [np.clip(g, -clipvalue, clipvalue) for g in grads]
    # g * (v / max(n, v)): the factor first, so that g * v cannot overflow
    if clipnorm is not None:
        return [g * (clipnorm / max(math.sqrt(float(np.sum(g * g))), clipnorm)) for g in grads]
    if global_clipnorm is not None:
        norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads))
        return [g * (global_clipnorm / max(norm, global_clipnorm)) for g in grads]
    return grads


def max_norm(p, max_value=2.0, axis=0):
    """Keras' MaxNorm constraint: n = sqrt(sum(p^2, axis, keepdims));
    p = p*clip(n, 0, max_value)/(1e-7 + n)."""
    p = _f64(p)
    n = np.sqrt(np.sum(p * p, axis=axis, keepdims=True))
    return p * np.clip(n, 0.0, max_value) / (1e-7 + n)


def optimizer_learning_rate(config, iterations):
    """The learning rate of the step taken at `iterations` (a float or a schedule)."""
    lr = config["learning_rate"]
    return float(lr(iterations)) if callable(lr) else float(lr)


def optimizer_step(name, config, grads, params, state, iterations, *, trainable=None,
                   penalties=None, constraints=None):
    """One step of optimizer `name` (see the section comment for the order).

    config: the constructor kwargs (missing ones take the defaults).
    state: from optimizer_init or a previous step. iterations: steps taken before.
    trainable: list of bools or None. penalties: list of None or (l1, l2).
    constraints: list of None or (max_value, axis) for MaxNorm.
    Returns (new_params, new_state) as float64 copies; the inputs are untouched.
    """
    name = _optimizer_name(name)
    cfg = optimizer_config(name, config)
    n = len(params)
    if len(grads) != n or len(state) != n:
        raise ValueError("grads, params and state must have the same length")
    trainable = [True] * n if trainable is None else list(trainable)
    penalties = [None] * n if penalties is None else list(penalties)
    constraints = [None] * n if constraints is None else list(constraints)
    lr = optimizer_learning_rate(cfg, iterations)
    t = iterations + 1
    hyper = {k: v for k, v in cfg.items()
             if k not in OPTIMIZER_COMMON_DEFAULTS and k != "learning_rate"}

    new_params = [_f64(p).copy() for p in params]
    new_state = [{k: _f64(v).copy() for k, v in s.items()} for s in state]
    live = [i for i in range(n) if trainable[i]]

    g = {}
    for i in live:
        g[i] = _f64(grads[i])
        if penalties[i] is not None:
            g[i] = g[i] + penalty_gradient(new_params[i], *penalties[i])
    clipped = clip_gradients([g[i] for i in live], cfg["clipvalue"], cfg["clipnorm"],
                             cfg["global_clipnorm"])
    for i, gi in zip(live, clipped):
        p = new_params[i]
        if cfg["weight_decay"] is not None:
            p = p - lr * cfg["weight_decay"] * p
        p, new_state[i] = _RULES[name](p, gi, new_state[i], lr, t, **hyper)
        if constraints[i] is not None:
            p = max_norm(p, *constraints[i])
        new_params[i] = p
    return new_params, new_state


# ------------------------------------------------------------------ dropout

# Philox4x32-10 (Salmon et al. 2011; Random123's philox4x32_R(10, ...)) on
# uint64 NumPy arrays holding 32-bit values, so each 32 x 32 multiply is exact.
_PHILOX_M0, _PHILOX_M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_PHILOX_W0, _PHILOX_W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
_U32 = np.uint64(0xFFFFFFFF)


def philox4x32_10(counters, key):
    """Philox4x32-10 of each row of counters (N, 4) under key (k0, k1): (N, 4) uint32."""
    c = np.asarray(counters, dtype=np.uint64).reshape(-1, 4)
    c0, c1, c2, c3 = (c[:, i].copy() for i in range(4))
    k0, k1 = np.uint64(int(key[0])), np.uint64(int(key[1]))
    for _ in range(10):
        p0, p1 = _PHILOX_M0 * c0, _PHILOX_M1 * c2
        c0, c1, c2, c3 = (p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & _U32, \
            (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & _U32
        k0, k1 = (k0 + _PHILOX_W0) & _U32, (k1 + _PHILOX_W1) & _U32
    return np.stack([c0, c1, c2, c3], axis=1).astype(np.uint32)


def dropout_threshold(rate):
    """floor(rate * 2^32), the drop threshold on a 32-bit draw (rate in [0, 1))."""
    return min(int(math.floor(rate * 4294967296.0)), 0xFFFFFFFF)


def dropout_mask_bits(n, rate, seed, step):
    """Keep flags (bool, n) of the n elements: element e is kept iff lane e % 4 of
    Philox4x32-10 at counter (lo(e // 4), hi(e // 4), lo(step), hi(step)) under
    key (lo(seed), hi(seed)) is >= floor(rate * 2^32)."""
    q = np.arange(-(-n // 4), dtype=np.uint64)
    step = np.uint64(step)
    counters = np.stack([q & _U32, q >> np.uint64(32), np.full_like(q, step & _U32),
                         np.full_like(q, step >> np.uint64(32))], axis=1)
    draws = philox4x32_10(counters, (seed & 0xFFFFFFFF, seed >> 32)).reshape(-1)[:n]
    return draws >= np.uint32(dropout_threshold(rate))


def dropout_mask_words(n, rate, seed, step):
    """The ceil(n / 32) uint32 words of the bit-packed mask, element e at bit e % 32
    of word e // 32; the bits past n are those of the elements that would follow."""
    bits = dropout_mask_bits(-(-n // 32) * 32, rate, seed, step)
    return np.packbits(bits, bitorder="little").view("<u4").astype(np.uint32)


SELU_ALPHA_PRIME = -SELU_LAMBDA * SELU_ALPHA  # the value SELU saturates to


def dropout_coef(rate, alpha=False):
    """(kept_mul, kept_add, dropped): y = kept_mul x + kept_add if kept, else dropped.

    Inverted dropout: (1 / (1 - rate), 0, 0). Alpha dropout (Klambauer et al.
    2017; Keras AlphaDropout, torch AlphaDropout): y = a (x keep + alpha' (1 -
    keep)) + b with a = ((1 - rate)(1 + rate alpha'^2))^-1/2, b = -a alpha' rate,
    which keeps mean 0 and variance 1 of standardised inputs.
    """
    if not alpha:
        return 1.0 / (1.0 - rate), 0.0, 0.0
    ap = SELU_ALPHA_PRIME
    a = ((1.0 - rate) * (1.0 + rate * ap * ap)) ** -0.5
    b = -a * ap * rate
    return a, b, a * ap + b


def dropout_forward(x, rate, seed, step, alpha=False):
    """y for x (any shape), the mask of (seed, step) over the flat index."""
    x = _f64(x)
    keep = dropout_mask_bits(x.size, rate, seed, step).reshape(x.shape)
    mul, add, dropped = dropout_coef(rate, alpha)
    return np.where(keep, x * mul + add, dropped)


def dropout_backward(dy, keep, rate, alpha=False):
    """dx = keep * kept_mul * dy (dropped elements: 0, whatever dy holds)."""
    dy = _f64(dy)
    mul = dropout_coef(rate, alpha)[0]
    return np.where(np.asarray(keep).reshape(dy.shape), dy * mul, 0.0)


# ---------------------------------------------------------------- batchnorm

# Batch normalisation for x of shape (batch, features), float64. keep is the
# boolean dropout mask (None: no dropout), transformed as dropout_coef says.


def batchnorm_statistics(x):
    """Batch mean and biased variance per feature."""
    x = _f64(x)
    mean = x.mean(axis=0)
    return mean, ((x - mean) ** 2).mean(axis=0)


def batchnorm_moving_update(moving_mean, moving_var, mean, var, momentum, batch,
                            convention="keras"):
    """New (moving_mean, moving_var): Keras or PyTorch convention."""
    mm, mv = _f64(moving_mean), _f64(moving_var)
    if convention == "keras":
        return mm * momentum + mean * (1 - momentum), mv * momentum + var * (1 - momentum)
    unbiased = var * batch / (batch - 1) if batch > 1 else var
    return mm * (1 - momentum) + mean * momentum, mv * (1 - momentum) + unbiased * momentum


def batchnorm_forward(x, gamma, beta, mean, var, epsilon, /, activation_name="linear", keep=None,
                      rate=0.0, alpha_dropout=False, **params):
    """y = drop(act(gamma (x - mean) / sqrt(var + eps) + beta)) with the given statistics."""
    x = _f64(x)
    x_hat = (x - mean) / np.sqrt(_f64(var) + epsilon)
    z = x_hat * (1.0 if gamma is None else _f64(gamma)) + (0.0 if beta is None else _f64(beta))
    a = activation(z, activation_name, **params)
    if keep is None:
        return a
    km, ka, dr = dropout_coef(rate, alpha_dropout)
    return np.where(keep, a * km + ka, dr)


def batchnorm_backward(dy, x, gamma, beta, mean, var, epsilon, batch_stats, /,
                       activation_name="linear", keep=None, rate=0.0, alpha_dropout=False,
                       **params):
    """(dx, dgamma, dbeta). batch_stats: mean/var are the batch's (training),
    so dx includes their dependence on x; else they are constants."""
    x, dy = _f64(x), _f64(dy)
    m = x.shape[0]
    invstd = 1.0 / np.sqrt(_f64(var) + epsilon)
    g = 1.0 if gamma is None else _f64(gamma)
    x_hat = (x - mean) * invstd
    z = x_hat * g + (0.0 if beta is None else _f64(beta))
    dz = dy * activation_grad(z, activation_name, **params)
    if keep is not None:
        dz = np.where(keep, dz * dropout_coef(rate, alpha_dropout)[0], 0.0)
    dbeta = dz.sum(axis=0)
    dgamma = (dz * x_hat).sum(axis=0)
    if batch_stats:
        dx = g * invstd * (dz - dbeta / m - x_hat * dgamma / m)
    else:
        dx = g * invstd * dz
    return dx, dgamma, dbeta


def fold_batchnorm(w, b, gamma, beta, moving_mean, moving_var, epsilon):
    """(w', b') of a Dense (w, b) followed by an inference-mode BN."""
    s = _f64(gamma) / np.sqrt(_f64(moving_var) + epsilon)
    b = 0.0 if b is None else _f64(b)
    return _f64(w) * s, (b - _f64(moving_mean)) * s + _f64(beta)


# ------------------------------------------------------------------- losses

# Each loss returns (loss, grad): the reduced loss as a float and its gradient
# with respect to the logits / predictions, float64. Per-sample losses l_i and
# weights w_i (1 without sample_weight) reduce as sum_i w_i l_i / D, with
# D = N for "sum_over_batch_size" (= "mean") and D = 1 for "sum".


def _loss_divisor(n, reduction):
    return {"sum_over_batch_size": n, "mean": n, "sum": 1}[reduction]


def _loss_weights(sample_weight, n):
    return np.ones(n) if sample_weight is None else _f64(sample_weight)


def log_softmax(z):
    z = _f64(z)
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def smoothed_labels(labels, n, c, label_smoothing=0.0):
    """y' = y (1 - eps) + eps / C, (n, c): y the one-hot rows of integer
    class indices (labels of shape (n,)) or the given label rows."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        y = np.zeros((n, c))
        y[np.arange(n), labels.astype(np.int64)] = 1.0
    else:
        y = _f64(labels)
    return y * (1.0 - label_smoothing) + label_smoothing / c


def softmax_cross_entropy(logits, labels, sample_weight=None, label_smoothing=0.0,
                          reduction="sum_over_batch_size"):
    """l_i = -sum_c y'_ic log softmax(z_i)_c, y' = y (1 - eps) + eps / C, y the
    one-hot rows of integer class indices or the given label rows."""
    z = _f64(logits)
    n, c = z.shape
    y = smoothed_labels(labels, n, c, label_smoothing)
    logp = log_softmax(z)
    per_sample = -(y * logp).sum(axis=1)
    scale = _loss_weights(sample_weight, n) / _loss_divisor(n, reduction)
    grad = scale[:, None] * (np.exp(logp) * y.sum(axis=1, keepdims=True) - y)
    return float((scale * per_sample).sum()), grad


def sigmoid_binary_cross_entropy(logits, labels, sample_weight=None,
                                 reduction="sum_over_batch_size"):
    """l = max(z, 0) - z y + log(1 + e^-|z|) per element, averaged over the
    last axis ((N,) is N samples of one output); dl/dz = sigmoid(z) - y."""
    z, y = _f64(logits), _f64(labels)
    z2, y2 = z.reshape(z.shape[0], -1), y.reshape(z.shape[0], -1)
    n, k = z2.shape
    elem = np.maximum(z2, 0.0) - z2 * y2 + np.log1p(np.exp(-np.abs(z2)))
    scale = _loss_weights(sample_weight, n) / _loss_divisor(n, reduction)
    grad = (scale[:, None] / k) * (sigmoid(z2) - y2)
    return float((scale * elem.mean(axis=1)).sum()), grad.reshape(z.shape)


def mean_squared_error(y_pred, y_true, sample_weight=None, reduction="sum_over_batch_size"):
    """l_i = mean_k (p_ik - t_ik)^2; dl/dp = 2 (p - t) / K."""
    p, t = _f64(y_pred), _f64(y_true)
    p2, t2 = p.reshape(p.shape[0], -1), t.reshape(p.shape[0], -1)
    n, k = p2.shape
    scale = _loss_weights(sample_weight, n) / _loss_divisor(n, reduction)
    grad = (scale[:, None] / k) * 2.0 * (p2 - t2)
    return float((scale * ((p2 - t2) ** 2).mean(axis=1)).sum()), grad.reshape(p.shape)
