"""Fuzzing the element-wise ops: activation_forward/backward, dropout_forward/
backward and dropout_mask.

What "correct" means here, for any values including NaN, +-inf, signed
zeros, subnormals and the dtype's largest numbers:

- activation_forward: y equals the float64 reference f(x) rounded to x's
  dtype, NaN where the reference is NaN (a NaN input stays NaN; at -inf,
  z * sigmoid(z)-type products are NaN in the reference's arithmetic, and
  must be NaN here too), +-inf where it is +-inf, and within
  rtol * max |f(x)| elsewhere (exact GELU: rtol * max(|f(x)|, |x| / 2), the
  kernel's 1 + erf(x / sqrt 2) cancelling for x << 0).
- activation_backward: dx equals dy * f'(x) of the reference with the same
  NaN/inf rule, within rtol * max |dy| * sup |f'| (the derivative is read
  from the saved output for most activations, whose rounding is relative
  to the size of dy, not of dx). One exception to the reference: where x is
  NaN, f'(x) is NaN for every activation but linear (csrc's activation.h:
  a NaN propagates through training instead of vanishing), where the
  reference's comparisons give relu'(NaN) = 0; and where the reference's
  formula for swish / tanh-GELU overflows float64 at a finite x (beta x or
  x^3: inf * 0 = NaN), the derivative is its saturated value (the kernels
  drop the term that is 0 there).
- dropout: kept elements are x * (1 / (1 - rate)) (alpha dropout: a x + b),
  dropped ones the dropped value whatever x holds (NaN included), on the mask
  of reference.dropout_mask_bits; backward likewise with 0 for dropped.

Every other input (unknown names, bad parameter values, arrays of the
wrong type or dtype) must be a ValueError or TypeError naming the argument.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import fusednn as fd
from fusednn.testing import reference as R

from ._support import (FLOATS, NAMES, NON_FLOATS, NOT_ARRAYS, RTOL, activations, any_scalars,
                       as_float, as_int, assert_close, attempt, expect_refused, float_arrays,
                       float_dtypes, for_dtype, fuzz, kernel_activation_grad, laid_out,
                       lipschitz, shapes)

@given(st.data())
@fuzz(8)
def test_activation(data):
    """activation_forward / activation_backward over names, parameters,
    dtypes, shapes (0-d to 4-d, 0- and 1-sized dims), layouts and values."""
    ident, params, expected = data.draw(activations(), "activation")
    dtype = data.draw(float_dtypes, "dtype")
    expected = for_dtype(expected, dtype)
    shape = data.draw(shapes(), "shape")
    special = data.draw(st.booleans(), "special")
    x0 = data.draw(float_arrays(dtype, shape, special), "x")
    x, xv = data.draw(laid_out(x0), "x layout")
    out, err = attempt(fd.ops.activation_forward, x, ident, **params)
    if expected[0] == "error":
        assert err is not None, f"accepted activation {ident!r} with {params}"
        expect_refused(err, *expected[1])
        return
    assert err is None, f"refused a valid call: {err!r}"
    _, canon, ref = expected
    y, ctx = out
    with np.errstate(all="ignore"):
        ref_y = R.activation(xv, canon, **ref)
        scale = None
        if canon == "gelu" and not ref.get("approximate"):
            # 0.5 z (1 + erf(z / sqrt 2)) cancels for z << 0: its error is
            # relative to |z|, not to the tiny gelu(z) (a known limit of the kernel)
            fin = np.abs(ref_y[np.isfinite(ref_y)])
            xs = np.abs(xv[np.isfinite(xv)]).astype(np.float64)
            scale = max(fin.max(initial=0.0), 0.5 * xs.max(initial=0.0))
    assert_close(y, ref_y, RTOL[dtype], "y", dtype=dtype, scale=scale)

    dy0 = data.draw(float_arrays(dtype, shape, special), "dy")
    dy, dyv = data.draw(laid_out(dy0), "dy layout")
    dx, err = attempt(fd.ops.activation_backward, dy, ctx)
    assert err is None, f"refused a valid backward: {err!r}"
    with np.errstate(all="ignore"):
        ref_dx = dyv.astype(np.float64) * kernel_activation_grad(xv, canon, ref)
        finite_dy = np.abs(dyv[np.isfinite(dyv)]).astype(np.float64)
    with np.errstate(over="ignore"):  # an inf scale: no finite bound on dx
        scale = (finite_dy.max() if finite_dy.size else 0.0) * lipschitz(canon, ref)
    # an infinite dy times an f' that rounds to 0 in the kernel's dtype (tanh and
    # sigmoid take it from the rounded output) is NaN where the reference has inf
    assert_close(dx, ref_dx, 4 * RTOL[dtype], "dx", scale=scale, dtype=dtype, nonfinite="any")


@given(st.data())
@fuzz(3)
def test_activation_bad_arrays(data):
    """Arrays of the wrong type, dtype or shape are refused naming x / dy / ctx."""
    what = data.draw(st.sampled_from(["x-type", "x-dtype", "dy-type", "dy-dtype", "dy-shape",
                                      "ctx"]))
    dtype = data.draw(float_dtypes)
    shape = data.draw(shapes(max_dims=3))
    name = data.draw(st.sampled_from(NAMES))
    x = np.zeros(shape, dtype)
    if what == "x-type":
        _, err = attempt(fd.ops.activation_forward, data.draw(st.sampled_from(NOT_ARRAYS)), name)
        return expect_refused(err, "x")
    if what == "x-dtype":
        bad = data.draw(st.sampled_from(NON_FLOATS))
        _, err = attempt(fd.ops.activation_forward, np.zeros(shape, bad), name)
        return expect_refused(err, "x")
    _, ctx = fd.ops.activation_forward(x, name)
    if what == "dy-type":
        dy = data.draw(st.sampled_from(NOT_ARRAYS))
    elif what == "dy-dtype":
        other = [d for d in FLOATS + NON_FLOATS if d != dtype]
        dy = np.zeros(shape, data.draw(st.sampled_from(other)))
    elif what == "dy-shape":
        other = data.draw(shapes(max_dims=3))
        if tuple(other) == tuple(shape):
            other = tuple(shape) + (1,)
        dy = np.zeros(other, dtype)
    else:
        _, err = attempt(fd.ops.activation_backward, x,
                         data.draw(st.sampled_from([None, "ctx", (x, x), object()])))
        return expect_refused(err, "ctx")
    _, err = attempt(fd.ops.activation_backward, dy, ctx)
    expect_refused(err, "dy")


# ------------------------------------------------------------------- dropout

def _check_rate(v):
    f = as_float(v) if not isinstance(v, np.ndarray) else None
    return f is not None and 0.0 <= f < 1.0


def _check_u64(v):
    i = as_int(v)
    return i is not None and 0 <= i < 2**64


u64s = st.one_of(st.integers(0, 3), st.integers(0, 2**64 - 1), st.sampled_from([2**64 - 1, 2**63]))
rates = st.one_of(st.floats(0.0, 0.99), st.sampled_from([0.0, 0, 0.5, 0.999999, 1.0 - 2**-53]))


@given(st.data())
@fuzz(7)
def test_dropout(data):
    """dropout_forward / dropout_backward against the reference mask and formula,
    over rates, seeds, steps (up to 2**64 - 1), alpha, training, store_mask,
    dtypes, shapes, layouts and values; invalid options name themselves."""
    dtype = data.draw(float_dtypes, "dtype")
    shape = data.draw(shapes(), "shape")
    special = data.draw(st.booleans(), "special")
    x0 = data.draw(float_arrays(dtype, shape, special), "x")
    x, xv = data.draw(laid_out(x0), "x layout")
    bad = data.draw(st.sampled_from([None] * 6 + ["rate", "seed", "step", "alpha", "training",
                                                  "store_mask"]), "bad option")
    opts = {"rate": data.draw(rates), "seed": data.draw(u64s), "step": data.draw(u64s),
            "alpha": data.draw(st.booleans()), "training": data.draw(st.booleans()),
            "store_mask": data.draw(st.booleans())}
    if bad is not None:
        opts[bad] = data.draw(any_scalars(), "bad value")
    valid = (_check_rate(opts["rate"]) and _check_u64(opts["seed"]) and _check_u64(opts["step"])
             and all(isinstance(opts[k], (bool, np.bool_))
                     for k in ("alpha", "training", "store_mask")))
    rate = opts.pop("rate")
    out, err = attempt(fd.ops.dropout_forward, x, rate, **opts)
    if not valid:
        assert err is not None, f"accepted {bad}={opts.get(bad, rate)!r}"
        return expect_refused(err, bad)
    assert err is None, f"refused a valid call: {err!r}"
    y, ctx = out
    r, seed, step = float(rate), int(opts["seed"]), int(opts["step"])
    identity = r == 0.0 or not opts["training"]
    if identity:
        assert y is x, "the identity must return x itself"
        keep = np.ones(shape, bool)
        ref_y = xv.astype(np.float64)
    else:
        keep = R.dropout_mask_bits(xv.size, r, seed, step).reshape(shape)
        with np.errstate(all="ignore"):
            ref_y = R.dropout_forward(xv, r, seed, step, bool(opts["alpha"]))
    if not identity:  # (the identity returns x itself, in x's layout and byte order)
        assert_close(y, ref_y, RTOL[dtype], "y", dtype=dtype)
    dy0 = data.draw(float_arrays(dtype, shape, special), "dy")
    dy, dyv = data.draw(laid_out(dy0), "dy layout")
    dx, err = attempt(fd.ops.dropout_backward, dy, ctx)
    assert err is None, f"refused a valid backward: {err!r}"
    if identity:
        assert dx is dy
        return
    with np.errstate(all="ignore"):
        ref_dx = R.dropout_backward(dyv, keep, r, bool(opts["alpha"]))
    assert_close(dx, ref_dx, RTOL[dtype], "dx", dtype=dtype)


@given(st.data())
@fuzz(2)
def test_dropout_bad_arrays(data):
    """x / dy of the wrong type, dtype or shape, and a foreign ctx, name themselves."""
    what = data.draw(st.sampled_from(["x-type", "x-dtype", "dy-type", "dy-dtype", "dy-shape",
                                      "ctx"]))
    dtype = data.draw(float_dtypes)
    shape = data.draw(shapes(max_dims=3))
    training = data.draw(st.booleans())
    x = np.zeros(shape, dtype)
    if what == "x-type":
        _, err = attempt(fd.ops.dropout_forward, data.draw(st.sampled_from(NOT_ARRAYS)), 0.5,
                         seed=0, step=0, training=training)
        return expect_refused(err, "x")
    if what == "x-dtype":
        _, err = attempt(fd.ops.dropout_forward, np.zeros(shape, data.draw(
            st.sampled_from(NON_FLOATS))), 0.5, seed=0, step=0, training=training)
        return expect_refused(err, "x")
    _, ctx = fd.ops.dropout_forward(x, 0.5, seed=1, step=2, training=training)
    if what == "dy-type":
        dy = data.draw(st.sampled_from(NOT_ARRAYS))
    elif what == "dy-dtype":
        dy = np.zeros(shape, data.draw(st.sampled_from(
            [d for d in FLOATS + NON_FLOATS if d != dtype])))
    elif what == "dy-shape":
        other = data.draw(shapes(max_dims=3))
        dy = np.zeros(other if tuple(other) != tuple(shape) else tuple(shape) + (2,), dtype)
    else:
        _, err = attempt(fd.ops.dropout_backward, x, data.draw(st.sampled_from(
            [None, {}, "ctx", fd.ops.activation_forward(x, "relu")[1]])))
        return expect_refused(err, "ctx")
    _, err = attempt(fd.ops.dropout_backward, dy, ctx)
    expect_refused(err, "dy")


@given(st.data())
@fuzz(3)
def test_dropout_mask(data):
    """dropout_mask(n, ...) equals the reference words for n in [0, 4000];
    n that is negative, not an integer, or too large for the kernels' int64
    count (a size_t/int64 overflow of ceil(n / 32) words) is refused naming n.
    An n the checks admit but whose mask cannot be allocated (around 2**63)
    may raise MemoryError, as NumPy does for such a request."""
    kind = data.draw(st.sampled_from(["small", "small", "small", "huge", "bad"]))
    if kind == "small":
        n = data.draw(st.integers(0, 4000))
    elif kind == "huge":
        n = data.draw(st.one_of(st.integers(2**63 - 40, 2**64 + 40),
                                st.sampled_from([np.uint64(2**64 - 1), np.int64(2**63 - 1)])))
    else:
        n = data.draw(st.one_of(st.integers(-2**70, -1), any_scalars()))
    rate, seed, step = data.draw(rates), data.draw(u64s), data.draw(u64s)
    ni = as_int(n)
    if ni is not None and 2**63 - 40 <= ni <= 2**63 - 32:
        try:
            fd.ops.dropout_mask(n, rate, seed=seed, step=step)
        except MemoryError:
            return
        raise AssertionError(f"allocated a mask for n={ni}")
    words, err = attempt(fd.ops.dropout_mask, n, rate, seed=seed, step=step)
    if ni is None or not 0 <= ni <= 4000:
        assert err is not None, f"accepted n={n!r}"
        return expect_refused(err, "n")
    assert err is None, f"refused n={n!r}: {err!r}"
    np.testing.assert_array_equal(words, R.dropout_mask_words(ni, float(rate), seed, step))


@given(st.data())
@fuzz(2)
def test_dropout_huge_views(data):
    """A zero-stride view whose element count or byte size is beyond the
    machine (e.g. (2**31, 2**31) of float32 read as one element) is never
    wrapped into a small size: NumPy refuses to make the view, or the op
    refuses or fails to allocate it (MemoryError), and never returns."""
    dtype = data.draw(float_dtypes)
    # each at least 2**50 bytes, beyond any address space a malloc could map
    shape = data.draw(st.sampled_from([(2**31, 2**31), (2**31, 2**29), (2**24, 2**24),
                                       (2**50,), (3, 2**47), (2**20, 1, 2**28)]))
    op = data.draw(st.sampled_from(["activation", "dropout", "mse"]))
    try:
        x = np.broadcast_to(dtype.type(1.0), shape)
    except ValueError:
        return  # NumPy itself refuses: "array is too big"
    try:
        if op == "activation":
            fd.ops.activation_forward(x, "relu")
        elif op == "dropout":
            fd.ops.dropout_forward(x, 0.5, seed=0, step=0)
        else:
            fd.ops.mean_squared_error(x, x)
    except MemoryError:
        return
    except (ValueError, TypeError) as e:
        return expect_refused(e, "x", "y_pred", "y_true")
    raise AssertionError(f"{op} returned for a {shape} view")

