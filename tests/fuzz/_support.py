"""What every fuzz test shares: the example budget, the case counter, the
strategies for arrays (dtypes, shapes, values, memory layouts) and the two
allowed outcomes of a case.

Outcomes. A case either returns a correct result, compared with
fusednn.testing.reference (``assert_close``), or raises ValueError or
TypeError whose message names the argument at fault (``expect_refused``).
Any other exception fails the case; a crash (segfault) fails the whole run,
since the cases run in the pytest process; a case that runs longer than
HANG_SECONDS kills the process with every thread's traceback
(faulthandler), so a hang fails the run too.

Budget. Each test declares a weight (its share of the examples, larger for
cheap tests) with ``@fuzz(weight)``; the profile's total is divided in
proportion (conftest.py selects the profile). TOTAL_WEIGHT is the sum of the
declared weights, checked by test_budget.py, so the shares add up to the
total.
"""

from __future__ import annotations

import collections
import faulthandler
import functools
import math
import os
import re
import sys

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fusednn.testing import reference as R

PROFILE = os.environ.get("FUSEDNN_FUZZ_PROFILE", "ci")
CI_TOTAL = 12_000       # the examples the ci profile plans
CI_MINIMUM = 10_000     # what a full ci run must have executed
RELEASE_TOTAL = int(os.environ.get("FUSEDNN_FUZZ_EXAMPLES", "100000"))
TOTAL_WEIGHT = 104      # the sum of the @fuzz weights (test_budget.py checks it)
HANG_SECONDS = 120      # one example running this long is a hang

WEIGHTS: dict[str, float] = {}                   # test -> weight
COUNTS: collections.Counter = collections.Counter()  # test -> examples run


def planned_total() -> int:
    return RELEASE_TOTAL if PROFILE == "release" else CI_TOTAL


def examples(weight: float) -> int:
    """The max_examples of a test of this weight under the active profile."""
    return max(1, round(planned_total() * weight / TOTAL_WEIGHT))


def fuzz(weight: float):
    """Decorator under @given: the test's share of the budget, and a body that
    counts each example and is killed (with tracebacks) if it hangs."""

    def deco(fn):
        name = f"{fn.__module__}.{fn.__name__}"
        WEIGHTS[name] = weight

        @functools.wraps(fn)
        def body(*args, **kwargs):
            COUNTS[name] += 1
            # to the real stderr: pytest's capture would keep the tracebacks
            faulthandler.dump_traceback_later(HANG_SECONDS, exit=True, file=sys.__stderr__)
            try:
                return fn(*args, **kwargs)
            finally:
                faulthandler.cancel_dump_traceback_later()

        return settings(max_examples=examples(weight))(body)

    return deco


# ------------------------------------------------------------------ outcomes

def names_arg(message: str, name: str) -> bool:
    """The message names `name` as a word (``x`` in "dense_forward: x has ...",
    ``params[0]`` in "params[0]: is read-only")."""
    return re.search(rf"(?<![\w.]){re.escape(name)}(?![\w(])", message) is not None


def expect_refused(exc: BaseException, *names: str) -> None:
    """exc is a ValueError or TypeError naming one of `names`."""
    assert isinstance(exc, (ValueError, TypeError)), \
        f"expected ValueError/TypeError naming {names}, got {type(exc).__name__}: {exc}"
    msg = str(exc)
    assert any(names_arg(msg, n) for n in names), \
        f"{type(exc).__name__} does not name {' or '.join(names)}: {msg}"


def attempt(fn, *args, **kwargs):
    """(result, None) or (None, the ValueError/TypeError raised). Any other
    exception propagates: it fails the case."""
    try:
        return fn(*args, **kwargs), None
    except (ValueError, TypeError) as e:
        return None, e


def to_np(a):
    """A NumPy view of a result (torch tensors come back from torch inputs)."""
    if a is None or isinstance(a, np.ndarray):
        return a
    if type(a).__module__.startswith("torch"):
        return a.detach().numpy()
    return np.asarray(a)


def assert_close(actual, ref, rtol, what, *, scale=None, dtype=None, nonfinite="exact"):
    """`actual` equals the float64 reference `ref` rounded to actual's dtype:

    - NaN exactly where the rounded reference is NaN;
    - +-inf exactly where it is +-inf (also where the reference is finite but
      beyond the dtype's range, which rounds to inf);
    - elsewhere |actual - ref| <= rtol * scale + the smallest normal number
      (subnormal results may be flushed to zero), scale being max |ref| over
      the finite entries unless given (a number or an array of ref's shape).

    nonfinite="any": NaN and +-inf stand for each other (non-finite exactly
    where the reference is), for results whose infinities come out of a sum
    in an order-dependent way.
    """
    a = to_np(actual)
    assert isinstance(a, np.ndarray), f"{what}: got {type(actual).__name__}, expected an array"
    if dtype is not None:
        assert a.dtype == dtype, f"{what}: dtype {a.dtype}, expected {np.dtype(dtype)}"
    r = np.asarray(ref, dtype=np.float64)
    assert a.shape == r.shape, f"{what}: shape {a.shape} != reference {r.shape}"
    af = a.astype(np.float64)
    with np.errstate(all="ignore"):
        rc = r.astype(a.dtype).astype(np.float64) if a.dtype.kind == "f" else r
    if nonfinite == "any":
        af = np.where(np.isfinite(af), af, np.nan)
        rc = np.where(np.isfinite(rc), rc, np.nan)
    nan_a, nan_r = np.isnan(af), np.isnan(rc)
    if (nan_a != nan_r).any():
        i = tuple(np.argwhere(nan_a != nan_r)[0])
        raise AssertionError(f"{what}: NaN mismatch at {i}: got {af[i]!r}, reference {r[i]!r}")
    inf = (np.isinf(af) | np.isinf(rc)) & ~nan_r
    if (af[inf] != rc[inf]).any():
        i = tuple(np.argwhere(inf & (af != rc))[0])
        raise AssertionError(f"{what}: inf mismatch at {i}: got {af[i]!r}, reference {r[i]!r}")
    fin = ~nan_r & ~inf
    if not fin.any():
        return
    if scale is None:
        scale = float(np.max(np.abs(rc[fin])))
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), r.shape)
    with np.errstate(invalid="ignore"):  # inf - inf outside `fin`, not compared
        err = np.abs(af - rc)
    # results in the subnormal range have fewer significant bits, and BLAS
    # kernels may flush them to zero: the smallest normal number of slack
    atol = float(np.finfo(a.dtype).tiny) if a.dtype.kind == "f" else 0.0
    bad = fin & ~(err <= rtol * scale + atol)
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        raise AssertionError(f"{what}: at {i} got {af[i]!r}, reference {r[i]!r}: error "
                             f"{err[i]:.3e} > {rtol:.0e} * scale {scale[i]:.3e}")


# ---------------------------------------------------------------- strategies

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
F32_INF = 2.0**128 * (1 - 2.0**-25)  # the smallest double that rounds to float32 inf
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
EPS = {np.dtype(np.float32): float(np.finfo(np.float32).eps),
       np.dtype(np.float64): float(np.finfo(np.float64).eps)}
# dtypes an op that wants float32/float64 must refuse (TypeError naming the array)
NON_FLOATS = tuple(np.dtype(d) for d in (np.bool_, np.int8, np.int32, np.int64, np.uint8,
                                         np.uint64, np.float16, np.complex64, np.complex128,
                                         object))

float_dtypes = st.sampled_from(FLOATS)


def specials(dtype, huge=True):
    """NaN, infinities, signed zeros, subnormals and (huge=True) values near
    the top of dtype's range."""
    fi = np.finfo(dtype)
    vals = [math.nan, math.inf, -math.inf, 0.0, -0.0, float(fi.smallest_subnormal),
            -float(fi.smallest_subnormal) * 3, float(fi.tiny) / 2]
    if huge:
        vals += [float(fi.max), -float(fi.max), float(fi.max) / 3]
    return st.sampled_from([float(dtype.type(v)) for v in vals])


def values(dtype, special=False, huge=True, bound=4.0):
    """Elements of a float array: moderate values, and with `special` also
    NaN/inf/subnormal (and huge) values and any float of the dtype."""
    width = 32 if dtype == np.float32 else 64
    moderate = st.floats(-bound, bound, width=width)
    if not special:
        return moderate
    wild = st.floats(width=width) if huge else \
        st.floats(-1e6, 1e6, width=width, allow_subnormal=True)
    return st.one_of(moderate, moderate, specials(dtype, huge), wild)


def float_arrays(dtype, shape, special=False, huge=True, bound=4.0):
    return hnp.arrays(dtype, shape, elements=values(dtype, special, huge, bound))


def shapes(min_dims=0, max_dims=4, min_side=0, max_side=5):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                            max_side=max_side)


# Memory layouts an array argument may come in. Every one but "broadcast"
# keeps the values; "broadcast" repeats the first entry along axis 0 (a
# zero-stride view), so references are computed from np.array(the argument).
LAYOUTS = ("c", "fortran", "strided", "negative", "readonly", "unaligned", "byteswapped",
           "broadcast", "torch")
# Layouts an array updated in place may be refused for (with an error naming it).
UNWRITABLE = ("readonly", "broadcast")


def relayout(a: np.ndarray, kind: str):
    """`a`'s values in memory layout `kind` (see LAYOUTS)."""
    if kind == "c":
        return np.array(a)
    if kind == "fortran":  # (asfortranarray makes a 0-d array 1-d)
        return np.asfortranarray(a) if a.ndim else np.array(a)
    if kind == "strided":
        if a.ndim == 0:
            return np.array(a)
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    if kind == "negative":
        return np.array(a[::-1])[::-1] if a.ndim else np.array(a)
    if kind == "readonly":
        c = np.array(a)
        c.flags.writeable = False
        return c
    if kind == "unaligned":
        buf = np.zeros(a.nbytes + 1, dtype=np.uint8)
        v = buf[1:].view(a.dtype).reshape(a.shape)
        v[...] = a
        return v
    if kind == "byteswapped":
        return a.astype(a.dtype.newbyteorder())
    if kind == "broadcast":
        if a.ndim == 0 or a.shape[0] == 0:
            return np.array(a)
        return np.broadcast_to(a[:1], a.shape)
    if kind == "torch":
        import torch

        return torch.from_numpy(np.array(a))
    raise ValueError(kind)


layouts = st.sampled_from(LAYOUTS)


@st.composite
def laid_out(draw, a, kinds=LAYOUTS):
    """(the argument, its values as a plain C array): `a` in a drawn layout."""
    kind = draw(st.sampled_from(kinds))
    v = relayout(a, kind)
    return v, np.array(to_np(v) if kind == "torch" else v)


# Values of the wrong Python type for an array argument.
NOT_ARRAYS = (None, 1.0, 3, "x", [1.0, 2.0], [[1.0]], (1.0,), {"a": 1}, b"\x00\x00\x80?",
              np.float32(1.0), True)
not_arrays = st.sampled_from(NOT_ARRAYS)


def any_scalars():
    """Option values of every kind: numbers in and out of range, NaN, inf,
    bools, strings, None, containers, NumPy scalars."""
    return st.one_of(
        st.sampled_from([None, True, False, "", "auto", "nan", [], [1], (0.5,), {}, object(),
                         math.nan, math.inf, -math.inf, 0, -1, 1, 2**64, -2**63, 0.0, -0.0,
                         1.0, 0.5, 1e-300, 1e300, np.float32(0.1), np.float64(0.9),
                         np.int64(3), np.bool_(True), np.array(0.5), 1 + 1j]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-5, 5),
    )


def as_float(v):
    """float(v) for a real number that is not a bool, else None."""
    import numbers

    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        return None
    return float(v)


def as_int(v):
    """int(v) for an integer that is not a bool, else None."""
    import numbers

    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        return None
    return int(v)


# --------------------------------------------------------------- activations

NAMES = ["linear", "relu", "leaky_relu", "elu", "selu", "gelu", "swish", "mish", "sigmoid",
         "tanh", "softplus"]
# name -> (parameter, kind): kind "nonneg" a real >= 0, "real" any finite real, "bool"
PARAMS = {"leaky_relu": ("alpha", "nonneg"), "elu": ("alpha", "nonneg"),
          "swish": ("beta", "real"), "gelu": ("approximate", "bool")}
SELU_LIPSCHITZ = 1.0507009873554805 * 1.6732632423543772


@st.composite
def activations(draw):
    """(identifier, params, expected): expected is ("ok", canonical name,
    reference kwargs) or ("error", names the error must mention)."""
    ident = draw(st.one_of(st.sampled_from(NAMES), st.sampled_from(
        ["silu", None, "RELU", "Gelu", "unknown", "", "softmax", "gelu_tanh", 3, b"relu",
         ["relu"]])))
    params = {}
    if isinstance(ident, str) or ident is None:
        canon = {"silu": "swish", None: "linear"}.get(
            ident.lower() if isinstance(ident, str) else ident,
            ident.lower() if isinstance(ident, str) else ident)
    else:
        canon = None
    if canon in PARAMS and draw(st.booleans()):
        pname, kind = PARAMS[canon]
        if kind == "bool":
            v = draw(st.one_of(st.booleans(), any_scalars()))
        else:
            v = draw(st.one_of(st.floats(0.0, 3.0), st.integers(0, 3),
                               st.floats(-3.0, 3.0), any_scalars()))
        params[pname] = v
    elif draw(st.integers(0, 9)) == 0:
        params[draw(st.sampled_from(["alpha", "beta", "approximate", "gamma"]))] = 0.5
    if canon not in NAMES:
        return ident, params, ("error", ("activation",))
    ref = {}
    for k, v in params.items():
        if canon not in PARAMS or PARAMS[canon][0] != k:
            return ident, params, ("error", (k,))
        if v is None:
            continue
        kind = PARAMS[canon][1]
        if kind == "bool":
            if not isinstance(v, bool):
                return ident, params, ("error", (k,))
            ref[k] = v
            continue
        f = as_float(v) if isinstance(v, (int, float)) else None
        if f is None or not math.isfinite(f) or (kind == "nonneg" and f < 0):
            return ident, params, ("error", (k,))
        ref[k] = f
    return ident, params, ("ok", canon, ref)


def kernel_activation_grad(z, canon, ref):
    """f'(z) of the reference as the kernels define it (csrc's activation.h)
    where the two differ on purpose:

    - at a NaN z, and where f(z) itself is NaN (0 * inf at an infinite z),
      f'(z) is NaN for every activation but linear (a NaN propagates
      through training instead of vanishing), where the reference's
      comparisons give e.g. relu'(NaN) = 0;
    - where the formula of swish or tanh-GELU overflows float64 at a finite
      z (beta z or z^3: inf * 0 = NaN), the term with sigma (1 - sigma) is 0,
      as the kernels drop it: f'(z) is its saturated value, not NaN.
    """
    z = np.asarray(z, dtype=np.float64)
    with np.errstate(all="ignore"):
        fp = np.array(R.activation_grad(z, canon, **ref), dtype=np.float64)
        if canon != "linear":
            # also where the forward itself is NaN at an infinite z (0 * inf:
            # leaky_relu with alpha = 0, gelu and swish at -inf)
            fp[np.isnan(z) | np.isnan(R.activation(z, canon, **ref))] = np.nan
        fix = np.isfinite(z) & np.isnan(fp)
        if canon == "swish":
            bz = ref.get("beta", 1.0) * z
            s = R.sigmoid(bz)
            w = s * (1 - s)
            fp = np.where(fix, s + np.where(w == 0, 0.0, bz * w), fp)
        elif canon == "gelu" and ref.get("approximate"):
            u = 2 * np.sqrt(2 / np.pi) * (z + 0.044715 * z ** 3)
            s = R.sigmoid(u)
            w = s * (1 - s)
            du = np.sqrt(2 / np.pi) * (1 + 3 * 0.044715 * z * z)
            fp = np.where(fix, s + np.where(w == 0, 0.0, 2 * z * du * w), fp)
    return fp


def lipschitz(canon, ref):
    """A bound on |f'| (with margin) for the backward tolerance."""
    if canon in ("leaky_relu", "elu"):
        return max(1.2, ref.get("alpha", 1.0))
    if canon == "selu":
        return SELU_LIPSCHITZ
    return 1.2


def for_dtype(expected, dtype):
    """`expected` of activations() for data of `dtype`: a parameter beyond
    float32's range is refused for float32 data (it would be inf there);
    one within it is used rounded to float32, as the kernels compute in the
    data's type (alpha = 5e-324 is 0 there, and 0 * -inf is NaN)."""
    if expected[0] == "ok" and dtype == np.float32:
        for k, v in expected[2].items():
            if not isinstance(v, bool) and abs(v) >= F32_INF:
                return ("error", (k,))
        ref = {k: v if isinstance(v, bool) else float(np.float32(v))
               for k, v in expected[2].items()}
        return expected[:2] + (ref,)
    return expected
