"""Fuzzing the constructor arguments of every callback in fd.callbacks.

Each case gives one argument a value of any kind (numbers in and out of
range, NaN, inf, bools, strings, None, containers, NumPy scalars and 0-d
arrays) and the others valid values. What "correct" means: the
constructor either accepts the value, or raises ValueError/TypeError naming
that argument; nothing else (no AttributeError, no OverflowError, no
crash). Where the callback's docstring states the argument's rule (ints >=
0, a non-empty str, a mode of 'auto'/'min'/'max', a factor in [0, 1), ...),
the rule is checked both ways: a value that breaks it must be refused, and
one that keeps it accepted.
"""

from __future__ import annotations

import inspect
import math
import os
import tempfile
import warnings

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import fusednn as fd

from ._support import any_scalars, as_float, as_int, expect_refused, fuzz

_TMP = tempfile.mkdtemp(prefix="fusednn-fuzz-callbacks-")


def _nonneg_int(v):
    i = as_int(v)
    return i is not None and i >= 0


def _pos_int(v):
    i = as_int(v)
    return i is not None and i >= 1


def _finite(v):
    f = as_float(v) if not isinstance(v, np.ndarray) else None
    return f is not None and math.isfinite(f)


def _bool(v):
    return isinstance(v, (bool, np.bool_))


def _path(v):
    s = os.fspath(v) if isinstance(v, (str, os.PathLike)) else None
    return isinstance(s, str) and s != "" and "\0" not in s


# argument -> rule (a predicate on the value), where the docstrings state one;
# (class, argument) overrides the argument's rule for that class
RULES = {
    "monitor": lambda v: isinstance(v, str) and v != "",
    "patience": _nonneg_int, "verbose": _nonneg_int, "cooldown": _nonneg_int,
    "start_from_epoch": _nonneg_int, "histogram_freq": _nonneg_int,
    "embeddings_freq": _nonneg_int,
    "mode": lambda v: isinstance(v, str) and v in ("auto", "min", "max"),
    "min_delta": _finite,
    "baseline": lambda v: v is None or _finite(v),
    "initial_value_threshold": lambda v: v is None or _finite(v),
    "restore_best_weights": _bool, "save_best_only": _bool, "save_weights_only": _bool,
    "append": _bool, "write_graph": _bool, "write_images": _bool,
    "write_steps_per_second": _bool,
    "factor": lambda v: _finite(v) and 0.0 <= float(v) < 1.0,
    "min_lr": lambda v: _finite(v) and float(v) >= 0.0,
    "schedule": callable,
    "filepath": _path, "filename": _path, "log_dir": _path, "backup_dir": _path,
    "save_freq": lambda v: (isinstance(v, str) and v == "epoch") or _pos_int(v),
    "separator": lambda v: isinstance(v, str) and len(v) == 1,
    "update_freq": lambda v: (isinstance(v, str) and v in ("epoch", "batch")) or _pos_int(v),
    "embeddings_metadata": lambda v: v is None or isinstance(v, (str, dict)),
}
CLASS_RULES = {
    ("ReduceLROnPlateau", "min_delta"): lambda v: _finite(v) and float(v) >= 0.0,
}
# valid values for the arguments without a default
REQUIRED = {"schedule": lambda epoch, lr=None: 0.01}


def _classes():
    out = []
    for name in fd.callbacks.__all__:
        obj = getattr(fd.callbacks, name)
        if inspect.isclass(obj) and issubclass(obj, fd.callbacks.Callback) and \
                obj is not fd.callbacks.Callback:
            out.append(obj)
    return out


CLASSES = _classes()


def _params(cls):
    return [p for p in inspect.signature(cls.__init__).parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _valid_default(cls, p):
    if p.name in ("filepath", "filename", "log_dir", "backup_dir"):
        return os.path.join(tempfile.mkdtemp(dir=_TMP), "f")
    if p.default is not p.empty:
        return p.default
    return REQUIRED[p.name]


@given(st.data())
@fuzz(4)
def test_callback_arguments(data):
    """One argument of one callback takes any value; the rest are valid."""
    cls = data.draw(st.sampled_from(CLASSES), "callback")
    params = _params(cls)
    if not params:
        cls()
        return
    target = data.draw(st.sampled_from(params), "argument")
    value = data.draw(st.one_of(any_scalars(), st.text(max_size=3),
                                st.sampled_from(["epoch", "batch", "min", "max", "auto", ",",
                                                 "val_acc", "1,2", "a,b", (1, 2), (1,),
                                                 lambda e: 0.1, _TMP])), "value")
    kwargs = {p.name: _valid_default(cls, p) for p in params}
    kwargs[target.name] = value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cls(**kwargs)
            err = None
        except (ValueError, TypeError) as e:
            err = e
        except ImportError:  # TensorBoard without the tensorboard package
            return
    rule = CLASS_RULES.get((cls.__name__, target.name), RULES.get(target.name))
    if err is not None:
        expect_refused(err, target.name)
        if rule is not None:
            assert not rule(value), f"{cls.__name__} refused a valid {target.name}={value!r}: " \
                                    f"{err}"
    elif rule is not None:
        assert rule(value), f"{cls.__name__} accepted {target.name}={value!r}"
