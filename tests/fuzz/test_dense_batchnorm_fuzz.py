"""Fuzzing dense_forward/backward, dense_stack_backward, batchnorm_forward/
backward, dense_batchnorm_forward/backward and fold_batchnorm.

What "correct" means:

- dense: y = f(x @ w + b) of the float64 reference, within rtol of the
  size of the terms summed (L * (|x| @ |w| + |b|) + |y|, L a bound on
  |f'|), so cancellation in the sum is not held against the kernel; NaN
  exactly where the reference is NaN (NaN and inf * 0 in a row of x or a
  column of w spread along it), +-inf where it is. No value is near the
  top of the float range here: a float32 GEMM may overflow in a partial sum
  that float64 does not, which is float32 arithmetic, not a fault. Backward:
  dz = dy * f'(z) with f' taken on the kernel's side of a kink (relu & co.
  at z within rounding of 0), then dx, dw, db within rtol of the summed
  terms' size; f'(NaN) is NaN (as in test_elementwise_fuzz).
- dense_stack_backward: the same as dense_backward layer by layer
  (documented), within rtol.
- batchnorm: y, the moving statistics and (dx, dgamma, dbeta) of the
  reference with the batch's statistics (training) or the moving ones,
  within rtol of the terms' size; a NaN or inf in a column makes that
  column's outputs NaN exactly where the reference's are. The moving
  statistics of such a column are non-finite where the reference's are,
  NaN and inf alike: the kernels' shifted sums make the mean of a column
  holding inf NaN, where the reference's plain mean is inf.
- dense_batchnorm: bit for bit the unfused dense_forward + batchnorm_forward
  (documented), and the same gradients as the unfused backward within rtol.
- fold_batchnorm: the reference's (w', b') within rtol.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import fusednn as fd
from fusednn.testing import reference as R

from ._support import (NON_FLOATS, NOT_ARRAYS, RTOL, activations, any_scalars, as_float,
                       as_int, assert_close, attempt, expect_refused, float_arrays,
                       float_dtypes, for_dtype, fuzz, kernel_activation_grad, laid_out,
                       lipschitz, relayout, to_np)

PIECEWISE = ("relu", "leaky_relu", "elu", "selu")
READ_LAYOUTS = ("c", "fortran", "strided", "negative", "readonly", "unaligned", "byteswapped",
                "broadcast", "torch")


def _abs(a):
    return np.abs(np.asarray(a, dtype=np.float64))


def _nan_inf(a):
    """NaN (from inf * 0 in a bound) read as inf: no finite bound there."""
    return np.where(np.isnan(a), np.inf, a)


def _grad_at(z_ref, y_kernel, canon, ref, zscale):
    """f'(z) of the reference, on the kernel's side of the kink for
    piecewise activations where z is within rounding (zscale) of 0, or
    below the kernel dtype's smallest normal number (a subnormal z may be
    flushed to 0, or a product below the subnormals round to 0)."""
    fp = kernel_activation_grad(z_ref, canon, ref)
    if canon in PIECEWISE:
        yk = to_np(y_kernel)
        tiny = np.finfo(yk.dtype).tiny
        amb = (np.abs(z_ref) <= zscale + tiny) & np.isfinite(zscale)  # (+-inf is no kink)
        side = np.where(yk > 0, 1e-300, -1e-300)
        fp = np.where(amb, R.activation_grad(side, canon, **ref), fp)
    return fp


@given(st.data())
@fuzz(8)
def test_dense(data):
    """dense_forward / dense_backward: shapes with 0- and 1-sized dims and
    mismatches, every layout of x, w, b and dy, NaN/inf/subnormal values."""
    ident, params, expected = data.draw(activations(), "activation")
    dtype = data.draw(float_dtypes, "dtype")
    expected = for_dtype(expected, dtype)
    batch, n_in, units = (data.draw(st.integers(0, 5)) for _ in range(3))
    w_rows = n_in if data.draw(st.integers(0, 9)) else data.draw(st.integers(0, 6))
    bias = data.draw(st.sampled_from(["none", "ok", "ok", "bad"]))
    special = data.draw(st.booleans(), "special")
    arr = lambda shape: float_arrays(dtype, shape, special, huge=False)  # noqa: E731
    x, xv = data.draw(laid_out(data.draw(arr((batch, n_in)), "x"), READ_LAYOUTS), "x layout")
    w, wv = data.draw(laid_out(data.draw(arr((w_rows, units)), "w"), READ_LAYOUTS), "w layout")
    b = bv = None
    if bias != "none":
        n_b = units if bias == "ok" else data.draw(st.integers(0, 6).filter(lambda k: k != units))
        b, bv = data.draw(laid_out(data.draw(arr((n_b,)), "b"), READ_LAYOUTS), "b layout")
    errors = []
    if n_in == 0:
        errors.append("x")
    if w_rows != n_in or units == 0:
        errors.append("w")
    if bias == "bad" and units != 0 and w_rows == n_in:
        errors.append("b")
    if expected[0] == "error":
        errors += list(expected[1])
    out, err = attempt(fd.ops.dense_forward, x, w, b, ident, **params)
    if errors:
        assert err is not None, f"accepted: {errors}"
        return expect_refused(err, *errors)
    assert err is None, f"refused a valid call: {err!r}"
    _, canon, ref = expected
    y, ctx = out
    L = lipschitz(canon, ref)
    with np.errstate(all="ignore"):
        z_ref = xv.astype(np.float64) @ wv.astype(np.float64)
        zscale = _abs(xv) @ _abs(wv)
        if bv is not None:
            z_ref = z_ref + bv
            zscale = zscale + _abs(bv)
        zscale = _nan_inf(zscale)
        y_ref = R.activation(z_ref, canon, **ref)
        rtol = RTOL[dtype]
        # z in the subnormal range is rounded to the subnormals' spacing (or
        # flushed to 0 by the BLAS): an absolute error up to the smallest normal
        # number in z, which the activation's slope L carries into y
        ztiny = L * float(np.finfo(dtype).tiny) / rtol
        assert_close(y, y_ref, rtol, "y", scale=L * zscale + _abs(y_ref) + ztiny, dtype=dtype)

    need_dx = data.draw(st.booleans())
    dy, dyv = data.draw(laid_out(data.draw(arr((batch, units)), "dy"), READ_LAYOUTS),
                        "dy layout")
    grads, err = attempt(fd.ops.dense_backward, dy, ctx, need_dx=need_dx)
    assert err is None, f"refused a valid backward: {err!r}"
    dx, dw, db = grads
    # Where dy is infinite, inf * f' is inf or NaN by whether f' rounds to 0 in
    # the kernel's dtype (tanh and sigmoid take f' from the rounded output:
    # tanh(10) is 1 in float32, so 1 - y^2 = 0) and by the order of the sums
    # of infinities: non-finite exactly where the reference is, of either kind.
    with np.errstate(all="ignore"):
        fp = _grad_at(z_ref, y, canon, ref, 4 * rtol * zscale)
        dz = dyv * fp
        dzs = _nan_inf(_abs(dyv) * L)
        if need_dx:
            assert_close(dx, dz @ wv.T.astype(np.float64), 4 * rtol,
                         "dx", scale=_nan_inf(dzs @ _abs(wv).T), dtype=dtype, nonfinite="any")
        else:
            assert dx is None
        assert_close(dw, xv.T.astype(np.float64) @ dz, 4 * rtol, "dw",
                     scale=_nan_inf(_abs(xv).T @ dzs), dtype=dtype, nonfinite="any")
        if bv is None:
            assert db is None
        else:
            assert_close(db, dz.sum(axis=0), 4 * rtol, "db", scale=_nan_inf(dzs.sum(axis=0)),
                         dtype=dtype, nonfinite="any")


@given(st.data())
@fuzz(2)
def test_dense_bad_arrays(data):
    """x, w, b, dy of the wrong type, dtype or rank, and a foreign ctx, name themselves."""
    dtype = data.draw(float_dtypes)
    x, w, b = np.ones((2, 3), dtype), np.ones((3, 4), dtype), np.ones(4, dtype)
    which = data.draw(st.sampled_from(["x", "w", "b", "dy", "ctx"]))
    kind = data.draw(st.sampled_from(["type", "dtype", "rank"]))
    if kind == "type":
        bad = data.draw(st.sampled_from([v for v in NOT_ARRAYS if v is not None or which
                                         in ("x", "w", "dy")]))
    elif kind == "dtype":
        bad = np.ones({"x": (2, 3), "w": (3, 4), "b": (4,), "dy": (2, 4)}.get(which, (1,)),
                      data.draw(st.sampled_from(NON_FLOATS)))
    else:
        bad = np.ones(data.draw(st.sampled_from([(), (3,), (2, 3, 4), (1, 1, 1, 1)])), dtype)
    if which == "ctx":
        _, err = attempt(fd.ops.dense_backward, np.ones((2, 4), dtype), bad)
        return expect_refused(err, "ctx")
    if which == "dy":
        _, ctx = fd.ops.dense_forward(x, w, b)
        _, err = attempt(fd.ops.dense_backward, bad, ctx)
        return expect_refused(err, "dy")
    args = {"x": x, "w": w, "b": b}
    args[which] = bad
    _, err = attempt(fd.ops.dense_forward, args["x"], args["w"], args["b"])
    expect_refused(err, which)


@given(st.data())
@fuzz(3)
def test_dense_stack(data):
    """dense_stack_backward equals dense_backward layer by layer; contexts
    that are not a stack, not contexts, or empty are refused naming ctxs."""
    dtype = data.draw(float_dtypes)
    depth = data.draw(st.integers(1, 3))
    widths = [data.draw(st.integers(1, 4)) for _ in range(depth + 1)]
    batch = data.draw(st.integers(0, 4))
    h = data.draw(float_arrays(dtype, (batch, widths[0])))
    ctxs = []
    for i in range(depth):
        ident, params, expected = data.draw(activations())
        expected = for_dtype(expected, dtype)
        if expected[0] != "ok":
            ident, params = "relu", {}
        w = data.draw(float_arrays(dtype, (widths[i], widths[i + 1])))
        b = data.draw(st.one_of(st.none(), float_arrays(dtype, (widths[i + 1],))))
        h, ctx = fd.ops.dense_forward(h, w, b, ident, **params)
        ctxs.append(ctx)
    misuse = data.draw(st.sampled_from([None, None, None, "empty", "order", "type", "single"]))
    dy = data.draw(float_arrays(dtype, (batch, widths[-1])))
    need_dx = data.draw(st.booleans())
    if misuse == "empty":
        _, err = attempt(fd.ops.dense_stack_backward, dy, [])
        return expect_refused(err, "ctxs")
    if misuse == "order" and depth > 1 and widths[0] == widths[1] == widths[2]:
        _, err = attempt(fd.ops.dense_stack_backward, dy, ctxs[::-1])
        return expect_refused(err, "ctxs[1]")
    if misuse == "type":
        bad = data.draw(st.sampled_from([None, 3, "ctx", [None], [object()]]))
        _, err = attempt(fd.ops.dense_stack_backward, dy, bad)
        return expect_refused(err, "ctxs", "ctxs[0]")
    if misuse == "single":
        _, err = attempt(fd.ops.dense_stack_backward, dy, ctxs[-1])
        return expect_refused(err, "ctxs")
    dx, grads = fd.ops.dense_stack_backward(dy, ctxs, need_dx=need_dx)
    g = dy
    rtol = 8 * RTOL[dtype]
    for i in range(depth - 1, -1, -1):
        rdx, rdw, rdb = fd.ops.dense_backward(g, ctxs[i], need_dx=True)
        assert_close(grads[i][0], rdw, rtol, f"dw[{i}]", dtype=dtype)
        if rdb is None:
            assert grads[i][1] is None
        else:
            assert_close(grads[i][1], rdb, rtol, f"db[{i}]", dtype=dtype)
        g = rdx
    if need_dx:
        assert_close(dx, g, rtol, "dx", dtype=dtype)
    else:
        assert dx is None


# ----------------------------------------------------------------- batchnorm

epsilons = st.one_of(st.sampled_from([1e-3, 1e-5, 1.0, 1e-12]), st.floats(1e-8, 10.0))
momenta = st.one_of(st.sampled_from([0.0, 0.99, 0.1, 1.0, 0]), st.floats(0.0, 1.0))


def _bn_option_valid(name, v):
    f = as_float(v) if not isinstance(v, np.ndarray) else None
    if name == "momentum":
        return f is not None and 0.0 <= f <= 1.0
    if name == "epsilon":
        return f is not None and math.isfinite(f) and f > 0.0
    if name == "dropout":
        return v is None or (f is not None and 0.0 <= f < 1.0)
    if name in ("seed", "step"):
        i = as_int(v)
        return i is not None and 0 <= i < 2**64
    if name in ("alpha_dropout", "training"):
        return isinstance(v, (bool, np.bool_))
    if name == "dropout_training":
        return v is None or isinstance(v, (bool, np.bool_))
    if name == "convention":
        return isinstance(v, str) and v in ("keras", "torch")
    raise AssertionError(name)


def _bn_backward_ref(dy, x, gamma, beta, mean, var, eps, batch_stats, canon, ref, keep, rate,
                     alpha_dropout, y_kernel, zscale):
    """reference.batchnorm_backward's formula with f'(z) as _grad_at takes it:
    as the kernels define it (_support.kernel_activation_grad), and on the kernel's side of a kink where z is within
    rounding (zscale) of 0 (for a feature whose inputs are near the bottom
    of float32's range, the variance underflows there: z ~ 1e-44 may come
    out 0, which flips relu' and, through the batch means, every dx of the
    feature). Alpha dropout moves y off the kink's sign: no side is taken."""
    x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    m = x.shape[0]
    invstd = 1.0 / np.sqrt(np.asarray(var, np.float64) + eps)
    g = 1.0 if gamma is None else np.asarray(gamma, np.float64)
    x_hat = (x - mean) * invstd
    z = x_hat * g + (0.0 if beta is None else np.asarray(beta, np.float64))
    side = None if alpha_dropout and keep is not None else y_kernel
    fp = _grad_at(z, side, canon, ref, np.broadcast_to(zscale, z.shape)) if side is not None \
        else kernel_activation_grad(z, canon, ref)
    dz = dy * fp
    if keep is not None:
        dz = np.where(keep, dz * R.dropout_coef(rate, alpha_dropout)[0], 0.0)
    dbeta = dz.sum(axis=0)
    dgamma = (dz * x_hat).sum(axis=0)
    if batch_stats:
        return g * invstd * (dz - dbeta / m - x_hat * dgamma / m), dgamma, dbeta
    return g * invstd * dz, dgamma, dbeta


@given(st.data())
@fuzz(8)
def test_batchnorm(data):
    """batchnorm_forward / batchnorm_backward over shapes (0- and 1-sized),
    optional gamma/beta/moving statistics in every layout (the moving ones
    updated in place: refused naming them when they cannot be), options in
    and out of range, dropout, and NaN/inf/subnormal values."""
    ident, params, expected = data.draw(activations(), "activation")
    dtype = data.draw(float_dtypes, "dtype")
    expected = for_dtype(expected, dtype)
    m, n = data.draw(st.integers(0, 6)), data.draw(st.integers(0, 5))
    special = data.draw(st.booleans(), "special")
    x, xv = data.draw(laid_out(data.draw(float_arrays(dtype, (m, n), special, huge=False)),
                               READ_LAYOUTS), "x")
    errors = []
    if m == 0 or n == 0:
        errors.append("x")
    feats = {}
    for name, lo in (("gamma", 0.2), ("beta", -2.0), ("moving_mean", -2.0), ("moving_var", 0.0)):
        mode = data.draw(st.sampled_from(["none", "ok", "ok", "ok", "shape"]), name)
        if mode == "none":
            feats[name] = (None, None)
            continue
        k = n if mode == "ok" else data.draw(st.integers(0, 6).filter(lambda j: j != n))
        a = data.draw(float_arrays(dtype, (k,), bound=2.0)) if name != "moving_var" else \
            np.abs(data.draw(float_arrays(dtype, (k,), bound=3.0)))
        writable = name.startswith("moving")
        kinds = ("c", "c", "c", "torch", "strided", "readonly", "unaligned") if writable else \
            READ_LAYOUTS
        kind = data.draw(st.sampled_from(kinds), f"{name} layout")
        v = relayout(a, kind)
        feats[name] = (v, np.array(to_np(v) if kind == "torch" else v))
        if mode == "shape" and n > 0:
            errors.append(name)
        elif writable and (kind in ("readonly", "unaligned") or (kind == "strided" and n > 1)) \
                and n > 0 and m > 0:
            errors.append(name)
    alias = data.draw(st.sampled_from([None] * 8 + ["moving_var", "gamma"]), "alias")
    src = feats.get(alias, (None, None))[0]
    target = feats["moving_mean"][0]
    if alias and type(src) is np.ndarray and type(target) is np.ndarray and src.size and \
            src.flags.writeable and src.flags.c_contiguous and src.flags.aligned and \
            target.flags.writeable and target.flags.c_contiguous and target.flags.aligned and \
            src.shape == target.shape and src.dtype == target.dtype:
        # moving_mean passed as the same array as moving_var or gamma: refused
        # (it is written while they are read), or computed on those values
        # where nothing is written (inference)
        feats["moving_mean"] = feats[alias]
    else:
        alias = None
    mm, mv = feats["moving_mean"][0], feats["moving_var"][0]
    opts = {"training": data.draw(st.booleans()), "momentum": data.draw(momenta),
            "epsilon": data.draw(epsilons),
            "dropout": data.draw(st.one_of(st.none(), st.floats(0.0, 0.9))),
            "seed": data.draw(st.integers(0, 2**64 - 1)), "step": data.draw(st.integers(0, 9)),
            "alpha_dropout": data.draw(st.booleans()),
            "dropout_training": data.draw(st.sampled_from([None, True, False])),
            "convention": data.draw(st.sampled_from(["keras", "torch"]))}
    bad = data.draw(st.sampled_from([None] * 8 + sorted(opts)), "bad option")
    if bad is not None:
        opts[bad] = data.draw(any_scalars(), "bad value")
        if not _bn_option_valid(bad, opts[bad]):
            errors.append(bad)
    if m and n:
        if (mm is None) != (mv is None):
            errors += ["moving_mean", "moving_var"]
        elif mm is None and opts["training"] is False:
            errors += ["moving_mean", "moving_var"]
        if opts["training"] is True and m == 1 and opts["convention"] == "torch":
            errors += ["x", "convention"]
    if expected[0] == "error":
        errors += list(expected[1])
    before = {k: None if v[1] is None else v[1].copy() for k, v in feats.items()}
    out, err = attempt(fd.ops.batchnorm_forward, x, feats["gamma"][0], feats["beta"][0], mm,
                       mv, activation=ident, **params, **opts)
    if alias and not errors and (err is not None or opts["training"] is True):
        assert err is not None, f"accepted moving_mean aliasing {alias} in training"
        errors += ["moving_mean", "moving_var"]
    if errors:
        assert err is not None, f"accepted: {errors}"
        expect_refused(err, *errors)
        for k in ("moving_mean", "moving_var"):  # a refused call writes nothing
            if before[k] is not None:
                np.testing.assert_array_equal(np.array(to_np(feats[k][0])), before[k])
        return
    assert err is None, f"refused a valid call: {err!r}"
    _, canon, ref = expected
    y, ctx = out
    training = bool(opts["training"])
    eps, mom = float(opts["epsilon"]), float(opts["momentum"])
    g, bt = before["gamma"], before["beta"]
    drop_on = opts["dropout"] is not None and float(opts["dropout"]) > 0 and (
        training if opts["dropout_training"] is None else bool(opts["dropout_training"]))
    rate = float(opts["dropout"]) if drop_on else 0.0
    keep = R.dropout_mask_bits(m * n, rate, int(opts["seed"]), int(opts["step"])).reshape(m, n) \
        if drop_on else None
    with np.errstate(all="ignore"):
        if training:
            mean, var = R.batchnorm_statistics(xv)
        else:
            mean, var = before["moving_mean"].astype(np.float64), \
                before["moving_var"].astype(np.float64)
        y_ref = R.batchnorm_forward(xv, g, bt, mean, var, eps, canon, keep, rate,
                                    bool(opts["alpha_dropout"]), **ref)
        invstd = 1.0 / np.sqrt(var + eps)
        # x - mean rounds relative to |x| + |mean|, not to |x - mean|: where the
        # variance is tiny against mean^2 (a nearly constant feature) x_hat is
        # that rounding, times invstd (the kernel's may be exactly 0)
        xhat_s = _nan_inf((_abs(xv) + _abs(mean)) * invstd + 1.0)
        gs = 1.0 if g is None else _abs(g)
        L = lipschitz(canon, ref)
        km = R.dropout_coef(rate, bool(opts["alpha_dropout"]))[0] if drop_on else 1.0
        y_scale = _nan_inf(km * L * (gs * xhat_s + (0.0 if bt is None else _abs(bt))) + 1.0)
        rtol = 8 * RTOL[dtype]
        assert_close(y, y_ref, rtol, "y", scale=y_scale, dtype=dtype)
        if training and mm is not None:
            rmm, rmv = R.batchnorm_moving_update(before["moving_mean"], before["moving_var"],
                                                 mean, var, mom, m, opts["convention"])
            assert_close(np.array(to_np(mm)), rmm, rtol, "moving_mean",
                         scale=_nan_inf(_abs(before["moving_mean"]) + _abs(mean)), dtype=dtype,
                         nonfinite="any")
            # the reference's own variance is off by (eps mean)^2 where the batch is
            # constant (its mean rounded), where the kernel's may be exactly 0
            assert_close(np.array(to_np(mv)), rmv, rtol, "moving_var",
                         scale=_nan_inf(_abs(before["moving_var"]) + _abs(var) * 2 +
                                        mean ** 2 * np.finfo(dtype).eps), dtype=dtype,
                         nonfinite="any")

    dy, dyv = data.draw(laid_out(data.draw(float_arrays(dtype, (m, n), special, huge=False)),
                                 READ_LAYOUTS), "dy")
    res, err = attempt(fd.ops.batchnorm_backward, dy, ctx)
    assert err is None, f"refused a valid backward: {err!r}"
    dx, dgamma, dbeta = res
    with np.errstate(all="ignore"):
        rdx, rdg, rdb = _bn_backward_ref(dyv, xv, g, bt, mean, var, eps, training, canon, ref,
                                         keep, rate, bool(opts["alpha_dropout"]), y,
                                         rtol * _nan_inf(gs * xhat_s + (0.0 if bt is None else
                                                                        _abs(bt))))
        dzs = _nan_inf(_abs(dyv) * L * km)
        dx_scale = _nan_inf(np.max(gs * invstd * dzs, initial=0.0) * (1 + 2 * m))
        assert_close(dx, rdx, rtol, "dx", scale=dx_scale, dtype=dtype)
        if g is None:
            assert dgamma is None
        else:
            # an infinite dy times an x_hat that is 0 within rounding: inf, -inf or NaN
            assert_close(dgamma, rdg, rtol, "dgamma", scale=_nan_inf((dzs * xhat_s).sum(0)),
                         dtype=dtype, nonfinite="any")
        if bt is None:
            assert dbeta is None
        else:
            assert_close(dbeta, rdb, rtol, "dbeta", scale=_nan_inf(dzs.sum(0)), dtype=dtype)


@given(st.data())
@fuzz(4)
def test_dense_batchnorm(data):
    """dense_batchnorm_forward is bit for bit dense_forward + batchnorm_forward,
    and its backward matches the unfused one; bad w / b shapes name them."""
    dtype = data.draw(float_dtypes)
    m, k, n = (data.draw(st.integers(1, 5)) for _ in range(3))
    x = data.draw(float_arrays(dtype, (m, k)))
    w_rows = k if data.draw(st.integers(0, 7)) else data.draw(st.integers(0, 6))
    w = data.draw(float_arrays(dtype, (w_rows, n)))
    b = data.draw(st.one_of(st.none(), float_arrays(dtype, (n,))))
    g = data.draw(st.one_of(st.none(), float_arrays(dtype, (n,), bound=2.0)))
    bt = data.draw(st.one_of(st.none(), float_arrays(dtype, (n,), bound=2.0)))
    mm = data.draw(float_arrays(dtype, (n,)))
    mv = np.abs(data.draw(float_arrays(dtype, (n,))))
    training = data.draw(st.booleans())
    ident, params, expected = data.draw(activations())
    if for_dtype(expected, dtype)[0] != "ok":
        ident, params = "elu", {}
    drop = data.draw(st.one_of(st.none(), st.floats(0.0, 0.9)))
    kw = dict(training=training, activation=ident, dropout=drop, seed=3, step=4,
              epsilon=data.draw(epsilons), momentum=data.draw(momenta), **params)
    mm1, mv1 = mm.copy(), mv.copy()
    out, err = attempt(fd.ops.dense_batchnorm_forward, x, w, b, g, bt, mm1, mv1, **kw)
    if w_rows != k:
        return expect_refused(err, "w")
    assert err is None, f"refused a valid call: {err!r}"
    y, ctx = out
    z, dctx = fd.ops.dense_forward(x, w, b)
    mm2, mv2 = mm.copy(), mv.copy()
    y2, bctx = fd.ops.batchnorm_forward(z, g, bt, mm2, mv2, **kw)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(mm1, mm2)
    np.testing.assert_array_equal(mv1, mv2)
    dy = data.draw(float_arrays(dtype, (m, n)))
    need_dx = data.draw(st.booleans())
    dx, dw, db, dgamma, dbeta = fd.ops.dense_batchnorm_backward(dy, ctx, need_dx=need_dx)
    dz, rdg, rdb = fd.ops.batchnorm_backward(dy, bctx)
    rdx, rdw, rdbias = fd.ops.dense_backward(dz, dctx, need_dx=True)
    rtol = 8 * RTOL[dtype]
    for got, want, what in ((dw, rdw, "dw"), (db, rdbias, "db"), (dgamma, rdg, "dgamma"),
                            (dbeta, rdb, "dbeta"), (dx if need_dx else None,
                                                    rdx if need_dx else None, "dx")):
        if want is None:
            assert got is None, what
        else:
            assert_close(got, want, rtol, what, dtype=dtype)


@given(st.data())
@fuzz(3)
def test_fold_batchnorm(data):
    """fold_batchnorm against the reference; missing moving statistics, bad
    shapes and a bad epsilon name themselves."""
    dtype = data.draw(float_dtypes)
    k, n = data.draw(st.integers(0, 4)), data.draw(st.integers(0, 4))
    w, wv = data.draw(laid_out(data.draw(float_arrays(dtype, (k, n))), READ_LAYOUTS))
    arrays, errors = {}, []
    for name in ("b", "gamma", "beta", "moving_mean", "moving_var"):
        mode = data.draw(st.sampled_from(["none", "ok", "ok", "ok", "shape"]))
        if mode == "none":
            arrays[name] = None
            if name.startswith("moving"):
                errors.append(name)
            continue
        size = n if mode == "ok" else data.draw(st.integers(0, 5).filter(lambda j: j != n))
        a = data.draw(float_arrays(dtype, (size,)))
        if name == "moving_var":
            a = np.abs(a)
        arrays[name] = a
        if mode == "shape":
            errors.append(name)
    eps = data.draw(st.one_of(epsilons, any_scalars()))
    if not _bn_option_valid("epsilon", eps):
        errors.append("epsilon")
    out, err = attempt(fd.ops.fold_batchnorm, w, arrays["b"], arrays["gamma"], arrays["beta"],
                       arrays["moving_mean"], arrays["moving_var"], eps)
    if errors:
        assert err is not None, f"accepted: {errors}"
        return expect_refused(err, *errors)
    assert err is None, f"refused a valid call: {err!r}"
    w2, b2 = out
    ones, zeros = np.ones(n), np.zeros(n)
    g = ones if arrays["gamma"] is None else arrays["gamma"]
    bt = zeros if arrays["beta"] is None else arrays["beta"]
    with np.errstate(all="ignore"):
        rw, rb = R.fold_batchnorm(wv, arrays["b"], g, bt, arrays["moving_mean"],
                                  arrays["moving_var"], float(eps))
    assert_close(w2, rw, RTOL[dtype], "w'", dtype=dtype)
    assert_close(b2, rb, RTOL[dtype], "b'", dtype=dtype)
