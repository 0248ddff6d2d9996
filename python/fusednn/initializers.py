"""Weight initializers (Keras 3 names, arguments, defaults and formulas).

Variance scaling (Glorot & Bengio 2010; He et al. 2015; LeCun et al. 1998)
draws weights with ``var = scale / n``, where ``n`` is a fan of the kernel:

====================  =====  =======  =================  ======================
name                  scale  n        distribution       use with
====================  =====  =======  =================  ======================
glorot_uniform        1      fan_avg  uniform            none, tanh, sigmoid,
glorot_normal         1      fan_avg  truncated normal   softmax
he_uniform            2      fan_in   uniform            ReLU family, ELU, GELU,
he_normal             2      fan_in   truncated normal   Swish, Mish
lecun_uniform         1      fan_in   uniform            SELU
lecun_normal          1      fan_in   truncated normal
====================  =====  =======  =================  ======================

- uniform: ``U(-limit, limit)`` with ``limit = sqrt(3 * scale / n)``;
- truncated normal: ``N(0, stddev^2)`` with
  ``stddev = sqrt(scale / n) / 0.87962566103423978``, values more than two
  stddev from the mean redrawn. 0.8796... is the standard deviation of a unit
  normal truncated at +-2, so the samples have variance exactly ``scale / n``;
- untruncated normal: ``N(0, scale / n)``.

Fans follow Keras' ``compute_fans``: a Dense kernel of shape ``(in, units)``
has ``fan_in = in`` and ``fan_out = units``; a 1-d shape ``(n,)`` has both
fans ``n``; a scalar has both ``1``; a rank >= 3 kernel ``(*receptive,
in, out)`` has ``fan_in = in * prod(receptive)``, ``fan_out = out *
prod(receptive)``; ``fan_avg = (fan_in + fan_out) / 2``. A fan of 0 counts as
1. PyTorch stores a Linear weight as ``(out, in)`` and a conv weight as
``(out, in, *receptive)``; its fans mean the same thing.

Defaults: Keras' Dense starts from ``glorot_uniform`` kernels and zero
biases. PyTorch's ``nn.Linear`` does not use Glorot: it draws both weight and
bias from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (``kaiming_uniform_`` with
``a=sqrt(5)``), which is ``VarianceScaling(scale=1/3, mode="fan_in",
distribution="uniform")``.

Calling an initializer::

    w = fd.initializers.get("he_normal")((784, 300))         # NumPy float32
    w = fd.initializers.HeNormal(seed=0)((784, 300), "float64")
    w = fd.initializers.HeNormal(seed=0)((784, 300), like=x)  # CuPy if x is

Random numbers: an integer seed gives the same values on every call and on
every machine (``numpy.random.Generator(PCG64(seed))``, drawn in float64 and
rounded to the requested dtype, so float32 and float64 agree up to rounding).
Like Keras 3, a seeded initializer therefore repeats itself when it is called
twice: give each layer its own seed. ``seed=None`` draws fresh values on every
call. The values are not those of Keras' or PyTorch's generators for the same
seed; their distributions are the same.
"""

from __future__ import annotations

import inspect
import math
import numbers
import operator
import re

import numpy as np

from ._arrays import array_module, is_cupy, on_device
from ._validate import check_float

__all__ = [
    "Constant",
    "GlorotNormal",
    "GlorotUniform",
    "HeNormal",
    "HeUniform",
    "Initializer",
    "LecunNormal",
    "LecunUniform",
    "Ones",
    "RandomNormal",
    "RandomUniform",
    "TruncatedNormal",
    "VarianceScaling",
    "Zeros",
    "compute_fans",
    "deserialize",
    "get",
    "names",
    "serialize",
]

# Standard deviation of a unit normal truncated to [-2, 2] (Keras' constant):
# sqrt(1 - 4 phi(2) / (Phi(2) - Phi(-2))).
_TRUNC_STD = 0.87962566103423978
_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")


# ------------------------------------------------------------------ checks


def _check_shape(caller, shape) -> tuple:
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"{caller}: shape must be a tuple of non-negative ints, got "
                        f"{type(shape).__name__} {shape!r}")
    dims = []
    for d in shape:
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, numbers.Integral):
            raise TypeError(f"{caller}: shape must be a tuple of non-negative ints, got "
                            f"{shape!r} (element {d!r} is {type(d).__name__})")
        if d < 0:
            raise ValueError(f"{caller}: shape must be a tuple of non-negative ints, got "
                             f"{shape!r} (negative dimension {int(d)})")
        dims.append(operator.index(d))
    return tuple(dims)


def _check_dtype(caller, dtype) -> np.dtype:
    if dtype is None:
        return np.dtype(np.float32)
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.char not in ("f", "d"):
        raise TypeError(f"{caller}: dtype must be float32 or float64, got {dtype!r}")
    return dt


def _check_seed(caller, seed):
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{caller}: seed must be an int >= 0 or None, got "
                        f"{type(seed).__name__} {seed!r}")
    if seed < 0:
        raise ValueError(f"{caller}: seed must be an int >= 0 or None, got {int(seed)}")
    return int(seed)


def _check_choice(caller, name, value, choices):
    if not isinstance(value, str):
        raise TypeError(f"{caller}: {name} must be one of {', '.join(choices)}, got "
                        f"{type(value).__name__} {value!r}")
    if value not in choices:
        raise ValueError(f"{caller}: {name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def compute_fans(shape) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a kernel shape, as Keras' ``compute_fans``.

    ``()`` -> (1, 1); ``(n,)`` -> (n, n); ``(in, out)`` -> (in, out);
    ``(*receptive, in, out)`` -> (in * prod(receptive), out * prod(receptive)).
    """
    shape = _check_shape("compute_fans", shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


# ------------------------------------------------------------------ base classes


class Initializer:
    """Base class: ``init(shape, dtype="float32", *, like=None) -> array``.

    ``shape`` is a tuple (or list) of non-negative ints; ``dtype`` float32
    (also ``None``, Keras' floatx) or float64. The result is a NumPy array,
    or, when ``like`` is a CuPy array, a CuPy array on ``like``'s device
    (drawn on the host and copied; ``like`` gives the device, not the dtype).
    Subclasses implement ``_draw(shape, dtype)`` -> NumPy array.
    """

    def __call__(self, shape, dtype="float32", *, like=None):
        caller = type(self).__name__
        shape = _check_shape(caller, shape)
        dt = _check_dtype(caller, dtype)
        on_gpu = like is not None and is_cupy(like)
        if like is not None and not on_gpu and not isinstance(like, np.ndarray):
            raise TypeError(f"{caller}: like must be a NumPy or CuPy array or None, got "
                            f"{type(like).__name__}")
        out = self._draw(shape, dt)
        if on_gpu:
            with on_device(like):
                return array_module(like).asarray(out)
        return out

    def _draw(self, shape, dtype):
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config):
        """``cls(**config)``, refusing keys that are not arguments of ``cls``."""
        if not isinstance(config, dict):
            raise TypeError(f"{cls.__name__}.from_config: config must be a dict, got "
                            f"{type(config).__name__} {config!r}")
        params = list(inspect.signature(cls).parameters)
        unknown = sorted(set(config) - set(params), key=str)
        if unknown:
            raise ValueError(f"{cls.__name__}.from_config: unknown keys {unknown}; expected "
                             f"{', '.join(params) if params else 'none'}")
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class RandomInitializer(Initializer):
    """An initializer that draws from ``numpy.random.Generator(PCG64(seed))``.

    An int seed gives the same values on every call; ``None`` fresh values on
    every call.
    """

    def __init__(self, seed=None):
        self.seed = _check_seed(type(self).__name__, seed)

    def _rng(self) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(self.seed))

    def get_config(self) -> dict:
        return {"seed": self.seed}


def _truncated_normal(rng, shape, mean, stddev, dtype):
    """N(mean, stddev^2) with values beyond 2 stddev redrawn (rejection)."""
    z = rng.standard_normal(shape)
    flat = z.reshape(-1)
    bad = np.flatnonzero(np.abs(flat) > 2.0)
    while bad.size:  # ~4.6% per round: a few rounds even for millions of values
        flat[bad] = rng.standard_normal(bad.size)
        bad = bad[np.abs(flat[bad]) > 2.0]
    z *= stddev
    z += mean
    return z.astype(dtype, copy=False)


# ------------------------------------------------------------------ constants


class Zeros(Initializer):
    """All zeros (PyTorch ``nn.init.zeros_``). Keras' default bias initializer."""

    def _draw(self, shape, dtype):
        return np.zeros(shape, dtype)


class Ones(Initializer):
    """All ones (PyTorch ``nn.init.ones_``)."""

    def _draw(self, shape, dtype):
        return np.ones(shape, dtype)


class Constant(Initializer):
    """Every value ``value`` (a real scalar; Keras default 0.0). PyTorch:
    ``nn.init.constant_(w, value)``."""

    def __init__(self, value=0.0):
        self.value = check_float("Constant", "value", value)

    def _draw(self, shape, dtype):
        return np.full(shape, self.value, dtype)

    def get_config(self) -> dict:
        return {"value": self.value}


# ------------------------------------------------------------------ fixed-range random


class RandomNormal(RandomInitializer):
    """``N(mean, stddev^2)``, untruncated. Keras defaults mean=0.0, stddev=0.05.

    PyTorch: ``nn.init.normal_(w, mean, std)``, whose default std is 1.0.
    """

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean = check_float("RandomNormal", "mean", mean)
        self.stddev = check_float("RandomNormal", "stddev", stddev, low=0.0)
        super().__init__(seed)

    def _draw(self, shape, dtype):
        z = self._rng().standard_normal(shape)
        z *= self.stddev
        z += self.mean
        return z.astype(dtype, copy=False)

    def get_config(self) -> dict:
        return {"mean": self.mean, "stddev": self.stddev, **super().get_config()}


class TruncatedNormal(RandomInitializer):
    """``N(mean, stddev^2)`` with values beyond ``mean +- 2 stddev`` redrawn.

    Keras defaults mean=0.0, stddev=0.05. ``stddev`` is that of the normal
    before truncation: the samples' standard deviation is
    ``0.87962566 * stddev``. PyTorch's ``nn.init.trunc_normal_(w, mean, std,
    a, b)`` takes absolute bounds (default a=-2, b=2, which with a small std
    truncates almost nothing); ``a = mean - 2 std, b = mean + 2 std`` matches
    this initializer.
    """

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean = check_float("TruncatedNormal", "mean", mean)
        self.stddev = check_float("TruncatedNormal", "stddev", stddev, low=0.0)
        super().__init__(seed)

    def _draw(self, shape, dtype):
        return _truncated_normal(self._rng(), shape, self.mean, self.stddev, dtype)

    def get_config(self) -> dict:
        return {"mean": self.mean, "stddev": self.stddev, **super().get_config()}


class RandomUniform(RandomInitializer):
    """``U(minval, maxval)``. Keras defaults minval=-0.05, maxval=0.05.

    PyTorch: ``nn.init.uniform_(w, a, b)``, whose defaults are a=0, b=1.
    """

    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        self.minval = check_float("RandomUniform", "minval", minval)
        self.maxval = check_float("RandomUniform", "maxval", maxval)
        if self.minval > self.maxval:
            raise ValueError(f"RandomUniform: minval must be <= maxval, got "
                             f"minval={self.minval}, maxval={self.maxval}")
        super().__init__(seed)

    def _draw(self, shape, dtype):
        return self._rng().uniform(self.minval, self.maxval, shape).astype(dtype, copy=False)

    def get_config(self) -> dict:
        return {"minval": self.minval, "maxval": self.maxval, **super().get_config()}


# ------------------------------------------------------------------ variance scaling


class VarianceScaling(RandomInitializer):
    """Weights with variance ``scale / n``, ``n`` the fan chosen by ``mode``.

    ``n = max(1, fan_in)``, ``max(1, fan_out)`` or ``max(1, (fan_in +
    fan_out) / 2)`` for mode ``"fan_in"``, ``"fan_out"``, ``"fan_avg"`` (fans
    from :func:`compute_fans`). Then, by ``distribution``:

    - ``"truncated_normal"`` (alias ``"normal"``, as in Keras): ``N(0,
      stddev^2)`` truncated at 2 stddev, ``stddev = sqrt(scale / n) /
      0.87962566103423978``, so the samples' variance is ``scale / n``;
    - ``"untruncated_normal"``: ``N(0, scale / n)``;
    - ``"uniform"``: ``U(-limit, limit)``, ``limit = sqrt(3 * scale / n)``.

    Keras defaults: scale=1.0, mode="fan_in", distribution="truncated_normal".
    PyTorch's ``kaiming_normal_``/``kaiming_uniform_`` are the untruncated
    normal / uniform cases with ``scale = gain^2`` and mode fan_in or fan_out
    (no fan_avg); its normals are never truncated.
    """

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        caller = type(self).__name__
        self.scale = check_float(caller, "scale", scale, low=0.0, low_open=True)
        self.mode = _check_choice(caller, "mode", mode, _MODES)
        if isinstance(distribution, str):
            distribution = distribution.lower()
            if distribution == "normal":
                distribution = "truncated_normal"
        self.distribution = _check_choice(caller, "distribution", distribution, _DISTRIBUTIONS)
        super().__init__(seed)

    def fan(self, shape) -> float:
        """``n`` for ``shape``: the fan chosen by ``mode``, at least 1."""
        fan_in, fan_out = compute_fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}
        return max(1.0, float(n[self.mode]))

    def _draw(self, shape, dtype):
        var = self.scale / self.fan(shape)
        rng = self._rng()
        if self.distribution == "truncated_normal":
            return _truncated_normal(rng, shape, 0.0, math.sqrt(var) / _TRUNC_STD, dtype)
        if self.distribution == "untruncated_normal":
            z = rng.standard_normal(shape)
            z *= math.sqrt(var)
            return z.astype(dtype, copy=False)
        limit = math.sqrt(3.0 * var)
        return rng.uniform(-limit, limit, shape).astype(dtype, copy=False)

    def get_config(self) -> dict:
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution,
                **super().get_config()}


class _FixedVarianceScaling(VarianceScaling):
    """A named VarianceScaling: only ``seed`` is an argument."""

    _SCALE = 1.0
    _MODE = "fan_in"
    _DISTRIBUTION = "truncated_normal"

    def __init__(self, seed=None):
        super().__init__(self._SCALE, self._MODE, self._DISTRIBUTION, seed)

    def get_config(self) -> dict:
        return {"seed": self.seed}


class GlorotUniform(_FixedVarianceScaling):
    """Glorot (Xavier) uniform: ``U(-limit, limit)``, ``limit = sqrt(6 /
    (fan_in + fan_out))`` (scale 1, fan_avg). Keras' default kernel initializer.

    PyTorch: ``nn.init.xavier_uniform_(w)`` (gain 1), the same distribution.
    It is not PyTorch's ``nn.Linear`` default (``U(+-1/sqrt(fan_in))``).
    """

    _MODE = "fan_avg"
    _DISTRIBUTION = "uniform"


class GlorotNormal(_FixedVarianceScaling):
    """Glorot (Xavier) normal: truncated at 2 stddev, ``stddev = sqrt(2 /
    (fan_in + fan_out)) / 0.87962566`` (scale 1, fan_avg); variance ``2 /
    (fan_in + fan_out)``.

    PyTorch's ``nn.init.xavier_normal_(w)`` has the same variance but is
    untruncated (``std = sqrt(2 / (fan_in + fan_out))``).
    """

    _MODE = "fan_avg"


class HeUniform(_FixedVarianceScaling):
    """He (Kaiming) uniform: ``U(-limit, limit)``, ``limit = sqrt(6 /
    fan_in)`` (scale 2, fan_in).

    PyTorch: ``nn.init.kaiming_uniform_(w, nonlinearity="relu")`` (gain
    sqrt(2)), the same distribution; its default ``a=0, nonlinearity=
    "leaky_relu"`` gives the same gain.
    """

    _SCALE = 2.0
    _DISTRIBUTION = "uniform"


class HeNormal(_FixedVarianceScaling):
    """He (Kaiming) normal: truncated at 2 stddev, ``stddev = sqrt(2 / fan_in)
    / 0.87962566`` (scale 2, fan_in); variance ``2 / fan_in``.

    PyTorch's ``nn.init.kaiming_normal_(w, nonlinearity="relu")`` (gain
    sqrt(2)) has the same variance but is untruncated (``std = sqrt(2 /
    fan_in)``); ``VarianceScaling(2.0, "fan_in", "untruncated_normal")``
    matches it.
    """

    _SCALE = 2.0


class LecunUniform(_FixedVarianceScaling):
    """LeCun uniform: ``U(-limit, limit)``, ``limit = sqrt(3 / fan_in)``
    (scale 1, fan_in).

    PyTorch has no named one: ``nn.init.kaiming_uniform_(w,
    nonlinearity="linear")`` is the same distribution.
    """

    _DISTRIBUTION = "uniform"


class LecunNormal(_FixedVarianceScaling):
    """LeCun normal: truncated at 2 stddev, ``stddev = sqrt(1 / fan_in) /
    0.87962566`` (scale 1, fan_in); variance ``1 / fan_in``. The initializer
    for SELU networks (Klambauer et al. 2017).

    PyTorch has no named one: ``nn.init.kaiming_normal_(w,
    nonlinearity="linear")`` has the same variance, untruncated. (PyTorch's
    ``calculate_gain("selu")`` is 3/4, not LeCun; its docs advise
    ``nonlinearity="linear"`` for self-normalising networks.)
    """


# ------------------------------------------------------------------ lookup


_CLASSES = (VarianceScaling, GlorotUniform, GlorotNormal, HeUniform, HeNormal, LecunUniform,
            LecunNormal, Zeros, Ones, Constant, RandomNormal, RandomUniform, TruncatedNormal)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


_SNAKE = {_snake(c.__name__): c for c in _CLASSES}
# Keras 3's aliases.
_ALIASES = {"normal": RandomNormal, "uniform": RandomUniform, "one": Ones, "zero": Zeros}
_BY_NAME = {**_SNAKE, **{c.__name__: c for c in _CLASSES}, **_ALIASES}


def names() -> list[str]:
    """The snake_case names ``get`` accepts (it also takes the class names
    and Keras' aliases normal, uniform, one, zero)."""
    return list(_SNAKE)


def _lookup(caller, name):
    cls = _BY_NAME.get(name) or _BY_NAME.get(name.lower())
    if cls is None:
        raise ValueError(f"{caller}: unknown initializer {name!r}; expected one of "
                         f"{', '.join(names())} (or a class name such as 'HeNormal', or "
                         f"an alias: {', '.join(_ALIASES)})")
    return cls


def serialize(initializer) -> dict:
    """``{"class_name": ..., "config": {...}}``, which ``get`` accepts back."""
    if not isinstance(initializer, Initializer):
        raise TypeError(f"serialize: expected an Initializer, got "
                        f"{type(initializer).__name__} {initializer!r}")
    return {"class_name": type(initializer).__name__, "config": initializer.get_config()}


def deserialize(config: dict) -> Initializer:
    """The initializer of a ``{"class_name": ..., "config": {...}}`` dict.

    ``class_name`` may be a class name or a snake_case name. Keras' extra
    keys ``module`` and ``registered_name`` are accepted and ignored.
    """
    caller = "initializers.deserialize"
    if not isinstance(config, dict):
        raise TypeError(f"{caller}: expected a dict, got {type(config).__name__} {config!r}")
    unknown = sorted(set(config) - {"class_name", "config", "module", "registered_name"},
                     key=str)
    if unknown or not isinstance(config.get("class_name"), str):
        raise ValueError(f"{caller}: expected {{'class_name': str, 'config': dict}}, got "
                         f"{config!r}")
    cls = _lookup(caller, config["class_name"])
    return cls.from_config(config.get("config", {}))


def get(identifier):
    """Resolve an initializer, as Keras' ``initializers.get``.

    - a name: snake_case (``"he_normal"``, ``"glorot_uniform"``, ``"zeros"``),
      a class name (``"HeNormal"``) or a Keras alias (``"normal"``,
      ``"uniform"``, ``"one"``, ``"zero"``) -> a new instance with defaults;
    - a dict ``{"class_name": ..., "config": {...}}`` -> ``deserialize``;
    - an Initializer, or any other callable ``(shape, dtype) -> array``, is
      returned as is; an Initializer class is instantiated with defaults;
    - ``None`` -> ``None``.

    Raises ValueError for an unknown name or a malformed dict, TypeError for
    anything else.
    """
    if identifier is None or isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, str):
        return _lookup("initializers.get", identifier)()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if inspect.isclass(identifier) and issubclass(identifier, Initializer):
        return identifier()
    if callable(identifier) and not inspect.isclass(identifier):
        return identifier
    raise TypeError(f"initializers.get: expected a name, a config dict, an Initializer or a "
                    f"callable, got {type(identifier).__name__} {identifier!r}; names: "
                    f"{', '.join(names())}")
