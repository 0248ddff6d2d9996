"""Fuzzing the fused losses: softmax_cross_entropy, sigmoid_binary_cross_entropy
and mean_squared_error.

What "correct" means: (loss, grad) of the float64 reference. A -inf logit
is a masked class (csrc's loss.h): where the label mass on it is 0 it adds
nothing to the loss (the reference's 0 * log 0 = NaN is not followed), and
where the label mass is > 0 the loss is +inf. The loss is a
0-d float64 array within rtol of the size of its terms (sum_i |w_i l_i| / D);
the gradient has the logits' dtype and shape and is within rtol of the
largest term of its row. NaN where the reference is NaN, for the loss and
per element of the gradient (a NaN or +inf logit poisons its row of the
softmax, its element of the element-wise losses), with one exception
written in the docstring of softmax_cross_entropy: with check_labels=False
a class index out of range gives a NaN loss and a NaN gradient row.
Labels and targets of any real or bool dtype are cast to the logits'
dtype; a float array of class indices, a weight that is negative or not
finite, an unknown reduction and a label_smoothing outside [0, 1] are
refused naming the argument.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import fusednn as fd
from fusednn.testing import reference as R

from ._support import (NON_FLOATS, NOT_ARRAYS, RTOL, any_scalars, as_float, assert_close,
                       attempt, expect_refused, float_arrays, float_dtypes, fuzz, laid_out,
                       to_np)

INT_DTYPES = tuple(np.dtype(d) for d in (np.int8, np.int16, np.int32, np.int64, np.uint8,
                                         np.uint16, np.uint32, np.uint64))
REAL_DTYPES = INT_DTYPES + (np.dtype(np.bool_), np.dtype(np.float16), np.dtype(np.float32),
                            np.dtype(np.float64))
REDUCTIONS = ("sum_over_batch_size", "mean", "sum")
LAYOUTS = ("c", "fortran", "strided", "negative", "readonly", "unaligned", "byteswapped",
           "broadcast", "torch")
TORCH_OK = {np.dtype(d) for d in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.bool_,
                                  np.float16, np.float32, np.float64)}


@st.composite
def weights(draw, n, cast):
    """(sample_weight or None, its values cast to `cast` (the logits' dtype,
    as the op casts them) in float64, or None; valid)."""
    mode = draw(st.sampled_from(["none", "none", "ok", "ok", "bad-value", "bad-shape",
                                 "bad-dtype", "bad-type"]))
    if mode == "none":
        return None, None, True
    if mode == "bad-type":
        return draw(st.sampled_from([v for v in NOT_ARRAYS if v is not None])), None, False
    if mode == "bad-dtype":
        return np.zeros(n, draw(st.sampled_from([np.complex64, object]))), None, False
    if mode == "bad-shape":
        shape = draw(st.sampled_from([(n + 1,), (n, 1), (), (1, n)]))
        return np.ones(shape), None, False
    dtype = draw(st.sampled_from(REAL_DTYPES))
    if dtype.kind == "f":
        vals = draw(float_arrays(dtype, (n,), special=(mode == "bad-value"), bound=3.0))
        vals = np.abs(vals) if mode == "ok" else vals
    else:
        vals = np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), dtype=dtype)
    kinds = LAYOUTS if dtype in TORCH_OK else LAYOUTS[:-1]
    v, vv = draw(laid_out(vals, kinds))
    with np.errstate(all="ignore"):  # (a broadcast layout repeats the first weight)
        f = vv.astype(cast).astype(np.float64)
    # bool weights are refused (documented: a real, float or integer, dtype)
    ok = bool(np.all(np.isfinite(f) & (f >= 0))) and dtype.kind != "b"
    return v, f, ok


def _reduction(draw):
    return draw(st.one_of(st.sampled_from(REDUCTIONS),
                          st.sampled_from(["SUM", "none", "", None, 0, "auto"])))


def _masked_xent_loss(z, labels, w, eps, reduction):
    """reference.softmax_cross_entropy's loss with 0 * log(0) = 0: a -inf
    logit is a masked class (csrc's loss.h), which adds nothing where its
    label mass y' is 0; the reference's y' * log p gives NaN there."""
    z = np.asarray(z, dtype=np.float64)
    n, c = z.shape
    y = R.smoothed_labels(labels, n, c, eps)
    logp = R.log_softmax(z) if n else np.zeros((0, c))
    per = -np.where((y == 0) & (logp == -np.inf), 0.0, y * logp).sum(axis=1)
    scale = (np.ones(n) if w is None else w) / {"sum": 1}.get(reduction, n)
    return float((scale * per).sum())


def _term_scale(w, d, per):
    """sum_i |w_i| per_i / d: the size of the terms of a reduced loss."""
    return float(np.sum((1.0 if w is None else np.abs(w)) * per) / d)


def _check_loss(loss, rloss, rtol, w, d, per, k=1):
    """The reduced loss against the reference: the terms' sum may overflow
    before the divisions by d and by the k outputs a sample's loss averages
    over (as Keras' sum(w l) / n does), so where that sum is beyond float64
    an inf loss is allowed for a finite reference."""
    with np.errstate(all="ignore"):
        undivided = float(np.sum((1.0 if w is None else np.abs(w)) * per) * k)
    if d * k > 1 and undivided == math.inf and math.isfinite(rloss) and \
            float(loss) == math.inf:
        return
    assert_close(loss, rloss, rtol, "loss", scale=_nan_inf_scalar(_term_scale(w, d, per)))


@given(st.data())
@fuzz(7)
def test_softmax_cross_entropy(data):
    """Class indices of every integer dtype (in and out of range, with
    check_labels on and off), one-hot / soft label rows of any real dtype,
    sample weights, label smoothing and reductions in and out of range."""
    dtype = data.draw(float_dtypes, "dtype")
    n, c = data.draw(st.integers(0, 5)), data.draw(st.integers(0, 5))
    special = data.draw(st.booleans())
    logits, zv = data.draw(laid_out(data.draw(float_arrays(dtype, (n, c), special, huge=False,
                                                           bound=8.0)), LAYOUTS))
    form = data.draw(st.sampled_from(["index", "index", "rows", "bad-dtype", "bad-shape",
                                      "bad-type"]))
    errors = []
    if c == 0:
        errors.append("logits")
    bad_rows = np.zeros(n, bool)
    if form == "index":
        ldt = data.draw(st.sampled_from(INT_DTYPES))
        info = np.iinfo(ldt)
        lab = np.array([data.draw(st.one_of(st.integers(0, max(c - 1, 0)),
                                             st.integers(int(info.min), int(info.max))))
                        for _ in range(n)], dtype=ldt)
        kinds = LAYOUTS if ldt in TORCH_OK else LAYOUTS[:-1]
        labels, lv = data.draw(laid_out(lab, kinds))
        bad_rows = ((lv.astype(object) < 0) | (lv.astype(object) >= c)).astype(bool)
    elif form == "rows":
        ldt = data.draw(st.sampled_from(REAL_DTYPES))
        raw = data.draw(float_arrays(np.dtype(np.float32), (n, c), bound=1.0))
        lab = np.abs(raw).astype(ldt) if ldt.kind != "b" else raw > 0
        kinds = LAYOUTS if ldt in TORCH_OK else LAYOUTS[:-1]
        labels, lv = data.draw(laid_out(lab, kinds))
    elif form == "bad-dtype":
        labels = np.zeros((n,), data.draw(st.sampled_from(
            [np.float32, np.float64, np.bool_, np.complex64, object])))
        errors.append("labels")
    elif form == "bad-shape":
        labels = np.zeros(data.draw(st.sampled_from([(n + 1,), (n, c + 1), (n, c, 1), ()])),
                          np.int64)
        errors.append("labels")
    else:
        labels = data.draw(st.sampled_from(NOT_ARRAYS))
        errors.append("labels")
    sw, wv, w_ok = data.draw(weights(n, dtype))
    if not w_ok:
        errors.append("sample_weight")
    eps = data.draw(st.one_of(st.sampled_from([0.0, 0.1, 1.0, 0]), st.floats(0, 1),
                              any_scalars()))
    f = as_float(eps) if not isinstance(eps, np.ndarray) else None
    if f is None or not 0.0 <= f <= 1.0:
        errors.append("label_smoothing")
    red = _reduction(data.draw)
    if red not in REDUCTIONS:
        errors.append("reduction")
    check_labels = data.draw(st.booleans())
    if form == "index" and check_labels and bad_rows.any() and c > 0:
        errors.append("labels[" + str(int(np.argmax(bad_rows))) + "]")
    out, err = attempt(fd.ops.softmax_cross_entropy, logits, labels, sample_weight=sw,
                       label_smoothing=eps, reduction=red, check_labels=check_labels)
    if errors:
        assert err is not None, f"accepted: {errors}"
        return expect_refused(err, *errors, "labels")
    assert err is None, f"refused a valid call: {err!r}"
    loss, grad = out
    loss_np = to_np(loss)
    assert loss_np.shape == () and loss_np.dtype == np.float64, (loss_np.shape, loss_np.dtype)
    safe = np.where(bad_rows, 0, lv.astype(np.int64)) if form == "index" else lv
    with np.errstate(all="ignore"):
        rloss, rgrad = R.softmax_cross_entropy(zv, safe, wv, f, red)
        rloss = _masked_xent_loss(zv, safe, wv, f, red)
        if bad_rows.any():
            rgrad[bad_rows] = np.nan
            rloss = math.nan
        z = zv.astype(np.float64)
        zmax = np.max(np.abs(np.where(np.isfinite(z), z, 0)), axis=1, initial=0.0)
        per = 2 * zmax + np.log(max(c, 1)) + 1.0
        d = n if red != "sum" else 1
        ysum = 1.0 if form == "index" else np.abs(lv.astype(np.float64)).sum(axis=1) + 1.0
        _check_loss(loss_np, rloss, 8 * RTOL[dtype], wv, max(d, 1), per * ysum)
        gscale = np.broadcast_to((1.0 if wv is None else np.abs(wv)) * ysum / max(d, 1),
                                 (n,))[:, None]
        assert_close(grad, rgrad, 8 * RTOL[dtype], "dlogits", scale=np.broadcast_to(
            gscale + 1e-300, (n, c)), dtype=dtype)


def _point(data, op, pname, tname, ref_fn):
    dtype = data.draw(float_dtypes, "dtype")
    ndim = data.draw(st.sampled_from([1, 2, 2, 0, 3]))
    n, k = data.draw(st.integers(0, 5)), data.draw(st.integers(0, 4))
    shape = {0: (), 1: (n,), 2: (n, k), 3: (n, k, 2)}[ndim]
    special = data.draw(st.booleans())
    errors = []
    if ndim in (0, 3) or (ndim == 2 and k == 0):
        errors.append(pname)
    pred, pv = data.draw(laid_out(data.draw(float_arrays(dtype, shape, special, huge=False,
                                                         bound=6.0)), LAYOUTS))
    form = data.draw(st.sampled_from(["ok", "ok", "ok", "bad-shape", "bad-dtype", "bad-type"]))
    if form == "ok":
        tdt = data.draw(st.sampled_from(REAL_DTYPES))
        raw = data.draw(float_arrays(np.dtype(np.float64), shape, special, huge=False,
                                     bound=2.0))
        with np.errstate(all="ignore"):
            t = np.asarray((raw > 0) if tdt.kind == "b" else (
                np.nan_to_num(raw).astype(tdt) if tdt.kind in "iu" else raw.astype(tdt)))
        kinds = LAYOUTS if tdt in TORCH_OK else LAYOUTS[:-1]
        target, tv = data.draw(laid_out(t, kinds))
    elif form == "bad-shape":
        target = np.zeros(tuple(shape) + (2,))
        errors.append(tname)
    elif form == "bad-dtype":
        target = np.zeros(shape, data.draw(st.sampled_from([np.complex64, object])))
        errors.append(tname)
    else:
        target = data.draw(st.sampled_from(NOT_ARRAYS))
        errors.append(tname)
    n_w = shape[0] if shape else 0
    sw, wv, w_ok = data.draw(weights(n_w, dtype))
    if not w_ok:
        errors.append("sample_weight")
    red = _reduction(data.draw)
    if red not in REDUCTIONS:
        errors.append("reduction")
    out, err = attempt(op, pred, target, sample_weight=sw, reduction=red)
    if errors:
        assert err is not None, f"accepted: {errors}"
        return expect_refused(err, *errors)
    assert err is None, f"refused a valid call: {err!r}"
    loss, grad = out
    loss_np = to_np(loss)
    assert loss_np.shape == () and loss_np.dtype == np.float64
    with np.errstate(all="ignore"):
        tvc = tv.astype(dtype).astype(np.float64)  # targets are cast to the logits' dtype
        if pv.size == 0:  # (the reference cannot reshape an empty batch)
            rloss, rgrad = 0.0, np.zeros(pv.shape)
        else:
            rloss, rgrad = ref_fn(pv, tvc, wv, red)
        kk = shape[1] if len(shape) == 2 else 1
        p2 = np.abs(pv.astype(np.float64)).reshape(n_w, kk)
        t2 = np.abs(tvc).reshape(n_w, kk)
        per = ((p2 + t2 + 1.0) ** 2).mean(axis=1)
        d = max(n_w if red != "sum" else 1, 1)
        _check_loss(loss_np, rloss, 8 * RTOL[dtype], wv, d, per, kk)
        wsc = (1.0 if wv is None else np.abs(wv)) / (d * kk)
        gscale = (wsc[:, None] if np.ndim(wsc) else wsc) * 2 * (p2 + t2 + 1.0)
        assert_close(grad, rgrad, 8 * RTOL[dtype], "grad",
                     scale=np.where(np.isnan(gscale), np.inf, gscale).reshape(np.shape(rgrad)),
                     dtype=dtype)


def _nan_inf_scalar(v):
    return math.inf if math.isnan(v) else v


@given(st.data())
@fuzz(5)
def test_sigmoid_binary_cross_entropy(data):
    """(N,) and (N, K) logits with targets of any real or bool dtype (cast),
    sample weights and reductions in and out of range, NaN/inf logits."""
    _point(data, fd.ops.sigmoid_binary_cross_entropy, "logits", "labels",
           lambda p, t, w, r: R.sigmoid_binary_cross_entropy(p, t, w, r))


@given(st.data())
@fuzz(5)
def test_mean_squared_error(data):
    """As test_sigmoid_binary_cross_entropy, for y_pred / y_true."""
    _point(data, fd.ops.mean_squared_error, "y_pred", "y_true",
           lambda p, t, w, r: R.mean_squared_error(p, t, w, r))


@given(st.data())
@fuzz(2)
def test_loss_bad_logits(data):
    """Logits / predictions of the wrong type or dtype name themselves."""
    op, pname, tname = data.draw(st.sampled_from([
        (fd.ops.softmax_cross_entropy, "logits", "labels"),
        (fd.ops.sigmoid_binary_cross_entropy, "logits", "labels"),
        (fd.ops.mean_squared_error, "y_pred", "y_true")]))
    bad = data.draw(st.one_of(st.sampled_from(NOT_ARRAYS),
                              st.sampled_from(NON_FLOATS).map(lambda d: np.zeros((2, 2), d))))
    target = np.zeros(2, np.int64) if op is fd.ops.softmax_cross_entropy else np.zeros((2, 2))
    _, err = attempt(op, bad, target)
    expect_refused(err, pname)
