"""Input checks shared by every op: one place, errors that name the argument."""

from __future__ import annotations

import math
import numbers
import os

import numpy as np

_FLOAT_CHARS = ("f", "d")  # float32, float64; dtype.char is a cheap C attribute
_UINT64_END = 2**64  # seeds and steps are below it


def float_array(caller: str, name: str, a, xp, ndim: int | None = None, dtype=None):
    """Check type, dtype and ndim; return a C-contiguous view or copy.

    Non-contiguous, Fortran-ordered, misaligned and byte-swapped arrays are
    accepted and copied once to aligned native C order, since every kernel
    reads row-major contiguous memory of the machine's floats. Anything but
    an array (None, a list, a scalar) is a TypeError naming `name`.
    """
    if type(a) is not np.ndarray and not (isinstance(getattr(a, "dtype", None), np.dtype)
                                         and hasattr(a, "ndim")):
        raise TypeError(f"{caller}: {name} must be a numpy.ndarray or cupy.ndarray, got "
                        f"{type(a).__name__}")
    dt = a.dtype
    if dt.char not in _FLOAT_CHARS:
        raise TypeError(f"{caller}: {name} has dtype {dt.name}, expected float32 or float64")
    if not dt.isnative:  # compared as, and copied to (c_array), the native type
        dt = dt.newbyteorder("=")
    if dtype is not None and dt is not dtype and dt != dtype:
        raise TypeError(f"{caller}: {name} has dtype {dt.name} but the other inputs are "
                        f"{dtype.name}; cast them to one dtype")
    if ndim is not None and a.ndim != ndim:
        what = {1: "(features,)", 2: "(batch, features)"}.get(ndim, "")
        raise ValueError(f"{caller}: {name} has {a.ndim} dims, expected {ndim} {what}".rstrip())
    # the common case in one flag (C order, aligned, writeable), without c_array's call
    if type(a) is np.ndarray and dt is a.dtype and a.flags.carray:
        return a
    return c_array(a, xp)


def c_array(a, xp, dtype=None):
    """`a` (cast to `dtype` if given) as an aligned, native, C-contiguous
    array: `a` itself when it is one, else a copy. The kernels read raw
    memory, so a float32 view at an odd byte offset or a big-endian array
    must be copied, which ``ascontiguousarray`` alone does not do."""
    flags = a.flags
    if flags.c_contiguous and getattr(flags, "aligned", True) and (
            a.dtype == dtype if dtype is not None else a.dtype.isnative):
        return a  # (CuPy's flags have no `aligned`: its arrays are)
    if dtype is None:
        dtype = a.dtype.newbyteorder("=")
    out = xp.empty(a.shape, dtype=dtype)
    out[...] = a
    return out


def check_float(caller, name, value, *, low=None, high=None, low_open=False, high_open=False):
    """float(value) after checking type and range; errors name the argument."""
    t = type(value)
    # Exact float/int first: the isinstance check against the numbers ABC costs
    # more than the rest of the check, and these run on every op call.
    if t is not float and t is not int and (
            isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real)):
        raise TypeError(f"{caller}: {name} must be a float, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{caller}: {name} must be finite, got {v}")
    if low is not None and (v < low or (low_open and v == low)):
        raise ValueError(f"{caller}: {name} must be {'>' if low_open else '>='} {low}, got {v}")
    if high is not None and (v > high or (high_open and v == high)):
        raise ValueError(f"{caller}: {name} must be {'<' if high_open else '<='} {high}, got {v}")
    return v


def check_unit(caller, name, value):
    """A decay rate in [0, 1)."""
    return check_float(caller, name, value, low=0.0, high=1.0, high_open=True)


def check_uint64(caller, name, value):
    """int(value) after checking it is an integer in [0, 2**64) (seeds, steps)."""
    if type(value) is int and 0 <= value < _UINT64_END:
        return value  # the common case, without the numbers ABC check
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{caller}: {name} must be an integer in [0, 2**64), got "
                        f"{type(value).__name__} {value!r}")
    v = int(value)
    if not 0 <= v < _UINT64_END:
        raise ValueError(f"{caller}: {name} must be in [0, 2**64), got {v}")
    return v


def check_rate(caller, name, value):
    """A dropout rate: a real number in [0, 1)."""
    if type(value) is float and 0.0 <= value < 1.0:
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{caller}: {name} must be a real number in [0, 1), got "
                        f"{type(value).__name__} {value!r}")
    r = float(value)
    if not 0.0 <= r < 1.0:  # also refuses NaN
        raise ValueError(f"{caller}: {name} must be in [0, 1), got {value!r}")
    return r


def check_bool(caller, name, value):
    if value is True or value is False:
        return value
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{caller}: {name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def check_int(caller, name, value, low):
    """int(value) after checking it is an integer (not a bool) >= low."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{caller}: {name} must be an int >= {low}, got "
                        f"{type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"{caller}: {name} must be an int >= {low}, got {value!r}")
    return int(value)


def check_float_dtype(caller, name, value):
    """np.dtype float32 or float64 for a dtype-like `value` (``"float64"``,
    ``np.float64``, ...); None stays None."""
    if value is None:
        return None
    try:
        dt = np.dtype(value)
    except TypeError:
        raise TypeError(f"{caller}: {name} must be float32, float64 or None, got "
                        f"{value!r}") from None
    if dt not in (np.float32, np.float64):
        raise ValueError(f"{caller}: {name} must be float32, float64 or None, got {dt.name}")
    return dt


def check_path(caller, name, value) -> str:
    """A str or os.PathLike naming a non-empty str path without NUL bytes
    (no file system has such a name), as a str."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{caller}: {name} must be a str or os.PathLike, got "
                        f"{type(value).__name__} {value!r}")
    value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{caller}: {name} must be a non-empty path, got {value!r}")
    if "\0" in value:
        raise ValueError(f"{caller}: {name} contains a NUL byte, which no path can hold: "
                         f"{value!r}")
    return value
