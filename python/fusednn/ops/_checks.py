"""Input checks shared by every op: one place, errors that name the argument."""

from __future__ import annotations

_FLOAT_CHARS = ("f", "d")  # float32, float64; dtype.char is a cheap C attribute


def float_array(caller: str, name: str, a, xp, ndim: int | None = None, dtype=None):
    """Check dtype and ndim; return a C-contiguous view or copy.

    Non-contiguous and Fortran-ordered arrays are accepted and copied once to
    C order, since every kernel reads row-major contiguous memory.
    """
    dt = a.dtype
    if dt.char not in _FLOAT_CHARS:
        raise TypeError(f"{caller}: {name} has dtype {dt.name}, expected float32 or float64")
    if dtype is not None and dt is not dtype and dt != dtype:
        raise TypeError(f"{caller}: {name} has dtype {dt.name} but the other inputs are "
                        f"{dtype.name}; cast them to one dtype")
    if ndim is not None and a.ndim != ndim:
        what = {1: "(features,)", 2: "(batch, features)"}.get(ndim, "")
        raise ValueError(f"{caller}: {name} has {a.ndim} dims, expected {ndim} {what}".rstrip())
    return a if a.flags.c_contiguous else xp.ascontiguousarray(a)
