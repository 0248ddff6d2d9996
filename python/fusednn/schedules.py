"""Learning-rate schedules (Keras 3 names): the rate as a function of the step.

A schedule is passed as any optimizer's ``learning_rate``; the optimizer
calls it with its iteration count before each step (0 for the first step)
and uses the float it returns, so changing the rate costs no allocation::

    sched = fd.schedules.ExponentialDecay(0.01, decay_steps=1000, decay_rate=0.1)
    opt = fd.optimizers.SGD(learning_rate=sched)

The chapter's schedules and where they live:

- power scheduling ``eta0 / (1 + t/s)^c``: ``InverseTimeDecay(eta0, s, 1.0,
  power=c)``;
- exponential scheduling ``eta0 * 0.1^(t/s)``: ``ExponentialDecay(eta0, s,
  0.1)``;
- piecewise constant scheduling: ``PiecewiseConstantDecay(boundaries,
  values)``;
- 1cycle: ``OneCycle`` (PyTorch's ``OneCycleLR``, with the cycled momentum);
- cosine decay (with linear warmup): ``CosineDecay``;
- performance scheduling (reduce the rate when a validation metric stops
  improving) depends on the metric, not the step, so it is a callback
  (``ReduceLROnPlateau``), not a schedule.

Every schedule computes in double on the host and returns a Python float.
``get_config()``/``from_config()`` round-trip; ``serialize``/``deserialize``
use Keras' ``{"class_name": ..., "config": {...}}`` form and accept the
configs Keras writes (extra "module"/"registered_name" keys are ignored).
``name`` is keyword-only here (Keras takes it positionally, before
``warmup_target`` in ``CosineDecay``).
"""

from __future__ import annotations

import bisect
import math
import numbers

from ._validate import check_bool, check_float, check_int, check_uint64

__all__ = [
    "CosineDecay",
    "ExponentialDecay",
    "InverseTimeDecay",
    "LearningRateSchedule",
    "OneCycle",
    "PiecewiseConstantDecay",
    "deserialize",
    "get",
    "serialize",
]


# ---------------------------------------------------------------- checks


def _rate(caller, name, value):
    return check_float(caller, name, value, low=0.0)


def _positive(caller, name, value):
    return check_float(caller, name, value, low=0.0, low_open=True)


def _steps(caller, name, value, *, low=0.0, low_open=False):
    """A step count: a finite real number, kept an int when given one."""
    v = check_float(caller, name, value, low=low, low_open=low_open)
    return int(value) if isinstance(value, numbers.Integral) else v


def _name(caller, name, default):
    if name is None:
        return default
    if not isinstance(name, str):
        raise TypeError(f"{caller}: name must be a str or None, got {name!r}")
    return name


def _sequence(caller, name, value):
    if isinstance(value, (str, bytes, dict)):
        raise TypeError(f"{caller}: {name} must be a list of numbers, got {value!r}")
    try:
        return list(value)
    except TypeError:
        raise TypeError(f"{caller}: {name} must be a list of numbers, got {value!r}") from None


# ---------------------------------------------------------------- base


class LearningRateSchedule:
    """Base class: ``schedule(step) -> float``, ``get_config``, ``from_config``.

    ``step`` is the optimizer's iteration count before the step, an int >= 0
    (Python or NumPy); anything else raises TypeError (not an integer) or
    ValueError (negative). Subclasses implement ``_value(step: int)``;
    a subclass written Keras' way, overriding ``__call__``, works too.
    """

    name: str

    def __call__(self, step) -> float:
        return self._value(check_uint64(type(self).__name__, "step", step))

    def _value(self, step: int) -> float:
        raise NotImplementedError(f"learning rate schedule {type(self).__name__} must override "
                                  f"__call__(self, step) or _value(self, step)")

    def get_config(self) -> dict:
        raise NotImplementedError(f"learning rate schedule {type(self).__name__} must override "
                                  f"get_config() to be serializable")

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self):
        try:
            cfg = self.get_config()
        except NotImplementedError:
            return f"{type(self).__name__}()"
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in cfg.items())})"


# ---------------------------------------------------------------- decays


class _StepDecay(LearningRateSchedule):
    """The arguments ExponentialDecay and InverseTimeDecay share, and their
    progress ``step / decay_steps`` (floored with ``staircase``)."""

    def _decay_args(self, initial_learning_rate, decay_steps, decay_rate, staircase):
        c = type(self).__name__
        self.initial_learning_rate = _rate(c, "initial_learning_rate", initial_learning_rate)
        self.decay_steps = _steps(c, "decay_steps", decay_steps, low_open=True)
        self.decay_rate = _rate(c, "decay_rate", decay_rate)
        self.staircase = check_bool(c, "staircase", staircase)

    def _progress(self, step):
        p = step / self.decay_steps
        return math.floor(p) if self.staircase else p

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "decay_rate": self.decay_rate,
                "staircase": self.staircase, "name": self.name}


class ExponentialDecay(_StepDecay):
    """``initial_learning_rate * decay_rate ^ (step / decay_steps)`` (Keras).

    With ``staircase=True`` the exponent is ``floor(step / decay_steps)``:
    the rate drops by ``decay_rate`` every ``decay_steps`` steps. The
    chapter's exponential scheduling ``eta0 * 0.1^(t/s)`` is
    ``ExponentialDecay(eta0, decay_steps=s, decay_rate=0.1)``; a decay_rate
    above 1 grows the rate (the learning-rate range test: from 1e-5 to 10
    over n steps is ``ExponentialDecay(1e-5, n, 1e6)``). A rate too large for
    a double is returned as inf, as in Keras, and the optimizer refuses it.
    PyTorch's ``ExponentialLR(gamma)`` is ``decay_steps=1, decay_rate=gamma``.
    """

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, *,
                 name=None):
        self._decay_args(initial_learning_rate, decay_steps, decay_rate, staircase)
        self.name = _name(type(self).__name__, name, "ExponentialDecay")

    def _value(self, step):
        try:
            return self.initial_learning_rate * self.decay_rate ** self._progress(step)
        except OverflowError:
            return math.inf if self.initial_learning_rate > 0 else 0.0


class InverseTimeDecay(_StepDecay):
    """``initial_learning_rate / (1 + decay_rate * step / decay_steps) ^ power``.

    With the default power=1 this is Keras' InverseTimeDecay; with
    ``staircase=True`` the ratio ``step / decay_steps`` is floored. ``power``
    generalises it to the chapter's power scheduling ``eta0 / (1 + t/s)^c``,
    which is ``InverseTimeDecay(eta0, decay_steps=s, decay_rate=1.0,
    power=c)`` (the chapter suggests c=1). ``power`` is not a Keras argument.
    """

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False,
                 power=1.0, *, name=None):
        self._decay_args(initial_learning_rate, decay_steps, decay_rate, staircase)
        c = type(self).__name__
        self.power = _rate(c, "power", power)
        self.name = _name(c, name, "InverseTimeDecay")

    def _value(self, step):
        try:
            return (self.initial_learning_rate
                    / (1.0 + self.decay_rate * self._progress(step)) ** self.power)
        except OverflowError:
            return 0.0

    def get_config(self):
        return {**super().get_config(), "power": self.power}


class PiecewiseConstantDecay(LearningRateSchedule):
    """``values[i]`` while ``boundaries[i-1] < step <= boundaries[i]`` (Keras).

    That is: ``values[0]`` for ``step <= boundaries[0]``, ``values[-1]`` for
    ``step > boundaries[-1]``; a boundary step still takes the value before
    it. ``boundaries=[1000, 2000], values=[0.1, 0.01, 0.001]`` uses 0.1 for
    steps 0..1000, 0.01 for 1001..2000 and 0.001 after. ``values`` has one
    entry more than ``boundaries``, which must be strictly increasing (Keras
    requires it too, without checking). PyTorch's ``MultiStepLR`` switches
    at the milestone itself: its milestones are these boundaries plus one.
    """

    def __init__(self, boundaries, values, *, name=None):
        c = type(self).__name__
        bounds = _sequence(c, "boundaries", boundaries)
        vals = _sequence(c, "values", values)
        if len(vals) != len(bounds) + 1:
            raise ValueError(f"{c}: values must have len(boundaries) + 1 = {len(bounds) + 1} "
                             f"entries, got {len(vals)}: boundaries={bounds}, values={vals}")
        self.boundaries = [_steps(c, f"boundaries[{i}]", b, low=None)
                           for i, b in enumerate(bounds)]
        for i in range(1, len(self.boundaries)):
            if not self.boundaries[i] > self.boundaries[i - 1]:
                raise ValueError(f"{c}: boundaries must be strictly increasing, got "
                                 f"boundaries[{i - 1}]={self.boundaries[i - 1]} and "
                                 f"boundaries[{i}]={self.boundaries[i]}")
        self.values = [_rate(c, f"values[{i}]", v) for i, v in enumerate(vals)]
        self.name = _name(c, name, "PiecewiseConstant")

    def _value(self, step):
        return self.values[bisect.bisect_left(self.boundaries, step)]

    def get_config(self):
        return {"boundaries": list(self.boundaries), "values": list(self.values),
                "name": self.name}


class CosineDecay(LearningRateSchedule):
    """Cosine decay (Loshchilov & Hutter 2017) after an optional linear warmup
    (Goyal et al. 2017), as in Keras 3.

    Without ``warmup_target``::

        t = min(step, decay_steps)
        lr = initial_learning_rate * ((1 - alpha) * 0.5 * (1 + cos(pi * t / decay_steps)) + alpha)

    With ``warmup_target``, the rate first rises linearly from
    ``initial_learning_rate`` to ``warmup_target`` over ``warmup_steps``
    (``initial + (target - initial) * step / warmup_steps`` for step <
    warmup_steps), then decays as above from ``warmup_target`` over the
    next ``decay_steps`` steps, to ``alpha * warmup_target``, and stays
    there. ``warmup_steps`` is ignored without ``warmup_target``. alpha is
    in [0, 1]. PyTorch's ``CosineAnnealingLR(T_max, eta_min)`` (before its
    period ends) is ``decay_steps=T_max, alpha=eta_min / lr``.
    """

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, warmup_target=None,
                 warmup_steps=0, *, name=None):
        c = type(self).__name__
        self.initial_learning_rate = _rate(c, "initial_learning_rate", initial_learning_rate)
        self.decay_steps = _steps(c, "decay_steps", decay_steps, low_open=True)
        self.alpha = check_float(c, "alpha", alpha, low=0.0, high=1.0)
        self.warmup_target = None if warmup_target is None else \
            _rate(c, "warmup_target", warmup_target)
        self.warmup_steps = _steps(c, "warmup_steps", warmup_steps)
        self.name = _name(c, name, "CosineDecay")

    def _value(self, step):
        if self.warmup_target is None:
            return self._decay(min(step, self.decay_steps), self.initial_learning_rate)
        step = min(step, self.decay_steps + self.warmup_steps)
        if step < self.warmup_steps:
            delta = self.warmup_target - self.initial_learning_rate
            return delta * (step / self.warmup_steps) + self.initial_learning_rate
        return self._decay(step - self.warmup_steps, self.warmup_target)

    def _decay(self, step, start):
        cosine = 0.5 * (1.0 + math.cos(math.pi * (step / self.decay_steps)))
        return start * ((1.0 - self.alpha) * cosine + self.alpha)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "alpha": self.alpha, "name": self.name,
                "warmup_target": self.warmup_target, "warmup_steps": self.warmup_steps}


# ---------------------------------------------------------------- 1cycle


class OneCycle(LearningRateSchedule):
    """The 1cycle policy (Smith 2018, "A disciplined approach to neural network
    hyper-parameters"), with PyTorch's ``OneCycleLR`` rates step for step.

    The chapter's description: raise the rate linearly from eta0 to eta1
    over the first half of about 90% of training, bring it back down to eta0
    over the second half, then drop it by several orders of magnitude (to
    about eta0/1000) over the last steps, while the momentum does the
    opposite, 0.95 -> 0.85 -> 0.95, and stays at 0.95 at the end. eta1 is
    found with a learning-rate range test and eta0 is about eta1/10. That is::

        OneCycle(eta1, total_steps, pct_start=0.45, div_factor=10.0,
                 final_div_factor=1000.0, anneal_strategy="linear", three_phase=True)

    PyTorch's policy, which this follows exactly: with ``initial =
    max_learning_rate / div_factor``, ``min = initial / final_div_factor``
    and T = total_steps, the phases end at these steps (interpolating by
    cosine or linearly within each, from the previous phase's end step,
    starting at 0)::

        two-phase (default):  p*T - 1: initial -> max    T - 1: max -> min
        three_phase:          p*T - 1: initial -> max    2*p*T - 2: max -> initial
                              T - 1: initial -> min

    with p = pct_start. Step 0 gives ``initial``. ``momentum(step)`` cycles
    inversely, max_momentum -> base_momentum over the rise and back over the
    fall (three_phase: held at max_momentum in the last phase).

    Differences from PyTorch: after step T - 1 the final rate (``min``) and
    momentum are kept (PyTorch extrapolates the last phase at step T, which
    can go negative with anneal_strategy="linear", and raises beyond it); a
    phase of zero length (e.g. p*T == 1) takes its end value where PyTorch
    divides by zero; one rate for all parameters (no per-group lists), and
    ``total_steps`` only (pass ``epochs * steps_per_epoch``).

    The schedule sets the learning rate only. To cycle the momentum, assign
    ``sched.momentum(opt.iterations)`` to ``opt.momentum`` (SGD, built with
    momentum > 0 so that it keeps a velocity) or ``opt.beta_1`` (Adam,
    Nadam) before each step; it returns None when ``cycle_momentum`` is
    False. fusednn's SGD keeps Keras' velocity ``m = mu m - lr g``, which
    holds the learning rate inside the velocity; PyTorch's ``b = mu b + g;
    p -= lr b`` does not, so with a changing rate the two trajectories
    differ.
    """

    def __init__(self, max_learning_rate, total_steps, pct_start=0.3, div_factor=25.0,
                 final_div_factor=1e4, anneal_strategy="cos", three_phase=False,
                 cycle_momentum=True, base_momentum=0.85, max_momentum=0.95, *, name=None):
        c = type(self).__name__
        self.max_learning_rate = _rate(c, "max_learning_rate", max_learning_rate)
        self.total_steps = check_int(c, "total_steps", total_steps, 1)
        self.pct_start = check_float(c, "pct_start", pct_start, low=0.0, high=1.0,
                                     low_open=True, high_open=True)
        self.div_factor = _positive(c, "div_factor", div_factor)
        self.final_div_factor = _positive(c, "final_div_factor", final_div_factor)
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"{c}: anneal_strategy must be 'cos' or 'linear', got "
                             f"{anneal_strategy!r}")
        self.anneal_strategy = anneal_strategy
        self.three_phase = check_bool(c, "three_phase", three_phase)
        self.cycle_momentum = check_bool(c, "cycle_momentum", cycle_momentum)
        self.base_momentum = check_float(c, "base_momentum", base_momentum, low=0.0, high=1.0)
        self.max_momentum = check_float(c, "max_momentum", max_momentum, low=0.0, high=1.0)
        self.name = _name(c, name, "OneCycle")

        # (end step, start lr, end lr, start momentum, end momentum), with
        # PyTorch's arithmetic so that the rates agree to the last bit.
        initial = self.max_learning_rate / self.div_factor
        final = initial / self.final_div_factor
        top, base, last = self.max_learning_rate, self.base_momentum, self.max_momentum
        T, p = self.total_steps, self.pct_start
        rise = (float(p * T) - 1, initial, top, last, base)
        if self.three_phase:
            self._phases = (rise, (float(2 * p * T) - 2, top, initial, base, last),
                            (T - 1, initial, final, last, last))
        else:
            self._phases = (rise, (T - 1, top, final, base, last))
        self._cos = anneal_strategy == "cos"

    def _locate(self, step):
        """The phase holding `step` (held at T - 1 after the end) and the
        fraction of it done."""
        step = min(step, self.total_steps - 1)
        start = 0.0
        for i, phase in enumerate(self._phases):
            end = phase[0]
            if step <= end or i == len(self._phases) - 1:
                length = end - start
                return phase, ((step - start) / length if length != 0 else 1.0)
            start = end
        raise AssertionError("unreachable")

    def _anneal(self, start, end, pct):
        if self._cos:
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _value(self, step):
        phase, pct = self._locate(step)
        return self._anneal(phase[1], phase[2], pct)

    def momentum(self, step):
        """The momentum (or Adam's beta_1) for the step taken at ``step``, or
        None when ``cycle_momentum`` is False."""
        step = check_uint64(f"{type(self).__name__}.momentum", "step", step)
        if not self.cycle_momentum:
            return None
        phase, pct = self._locate(step)
        return self._anneal(phase[3], phase[4], pct)

    def get_config(self):
        return {"max_learning_rate": self.max_learning_rate, "total_steps": self.total_steps,
                "pct_start": self.pct_start, "div_factor": self.div_factor,
                "final_div_factor": self.final_div_factor,
                "anneal_strategy": self.anneal_strategy, "three_phase": self.three_phase,
                "cycle_momentum": self.cycle_momentum, "base_momentum": self.base_momentum,
                "max_momentum": self.max_momentum, "name": self.name}


# ---------------------------------------------------------------- by name

_CLASSES = (ExponentialDecay, InverseTimeDecay, PiecewiseConstantDecay, CosineDecay, OneCycle)
_BY_KEY = {c.__name__.lower(): c for c in _CLASSES}
_BY_KEY.update({"piecewiseconstant": PiecewiseConstantDecay, "1cycle": OneCycle,
                "onecyclelr": OneCycle})


def _lookup(caller, name, custom_objects=None):
    if not isinstance(name, str):
        raise TypeError(f"{caller}: a schedule name must be a str, got {name!r}")
    if custom_objects and name in custom_objects:
        return custom_objects[name]
    cls = _BY_KEY.get(name.lower().replace("_", ""))
    if cls is None:
        raise ValueError(f"{caller}: unknown schedule {name!r}; expected one of "
                         f"{', '.join(c.__name__ for c in _CLASSES)}")
    return cls


def serialize(schedule) -> dict:
    """``{"class_name": ..., "config": schedule.get_config()}`` (Keras' form)."""
    if not isinstance(schedule, LearningRateSchedule):
        raise TypeError(f"serialize: expected a LearningRateSchedule, got {schedule!r}")
    return {"class_name": type(schedule).__name__, "config": schedule.get_config()}


def deserialize(config, custom_objects=None):
    """A schedule from ``{"class_name": ..., "config": {...}}``; other keys
    that Keras writes ("module", "registered_name") are ignored.
    custom_objects maps class names to classes of your own."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise TypeError(f"deserialize: expected a dict with 'class_name' and 'config', got "
                        f"{config!r}")
    cls = _lookup("deserialize", config["class_name"], custom_objects)
    inner = config.get("config") or {}
    if not isinstance(inner, dict):
        raise TypeError(f"deserialize: 'config' must be a dict, got {inner!r}")
    return cls.from_config(dict(inner))


def get(identifier, **kwargs):
    """A schedule from None (returned as is), an instance (as is), a
    serialized dict, or a name with its arguments:
    ``get("exponential_decay", initial_learning_rate=0.1, decay_steps=100,
    decay_rate=0.5)``. Names are the class names in any case, with or
    without underscores, plus "piecewise_constant" and "1cycle"."""
    if identifier is None or isinstance(identifier, LearningRateSchedule):
        if kwargs:
            raise TypeError(f"get: arguments {sorted(kwargs)} go with a schedule name, not "
                            f"with {identifier!r}")
        return identifier
    if isinstance(identifier, dict):
        if kwargs:
            raise TypeError(f"get: arguments {sorted(kwargs)} go with a schedule name, not "
                            f"with a config dict")
        return deserialize(identifier)
    if isinstance(identifier, str):
        return _lookup("get", identifier)(**kwargs)
    raise TypeError(f"get: expected None, a schedule name, a config dict or a "
                    f"LearningRateSchedule, got {identifier!r}")
