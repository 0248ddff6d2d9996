"""fd.ops.dense_batchnorm_forward/backward: the Dense -> BN -> activation
(-> dropout) block in one call equals the two ops it fuses, bit for bit, and
the float64 reference and finite differences."""

import numpy as np
import pytest

import fusednn as fd
from fusednn.testing import reference as R

from conftest import to_backend, to_numpy


def _block(rng, m, k, n, dtype, bias=True):
    x = rng.standard_normal((m, k)).astype(dtype)
    w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(dtype)
    b = rng.standard_normal(n).astype(dtype) if bias else None
    gamma = (1 + 0.1 * rng.standard_normal(n)).astype(dtype)
    beta = (0.1 * rng.standard_normal(n)).astype(dtype)
    mm = (0.1 * rng.standard_normal(n)).astype(dtype)
    mv = (1 + rng.random(n)).astype(dtype)
    return x, w, b, gamma, beta, mm, mv


CASES = [
    # (m, k, n, activation, dropout, training, bias)
    (1, 3, 1, "elu", None, True, True),
    (3, 17, 5, "relu", None, True, True),
    (17, 33, 100, "elu", 0.3, True, True),
    (128, 100, 100, "selu", None, False, True),
    (64, 7, 4097, "swish", 0.2, True, False),
    (1000, 3, 17, "relu", 0.5, False, True),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,k,n,act,drop,training,bias", CASES)
def test_block_equals_dense_then_batchnorm(backend, dtype, m, k, n, act, drop, training, bias):
    rng = np.random.default_rng(m * 31 + n)
    x, w, b, g, be, mm, mv = [to_backend(a, backend) for a in _block(rng, m, k, n, dtype, bias)]
    mm2, mv2 = mm.copy(), mv.copy()
    kw = dict(training=training, activation=act, dropout=drop, seed=7, step=3,
              dropout_training=drop is not None)
    y, ctx = fd.ops.dense_batchnorm_forward(x, w, b, g, be, mm, mv, **kw)
    z, dctx = fd.ops.dense_forward(x, w, b)
    y2, bctx = fd.ops.batchnorm_forward(z, g, be, mm2, mv2, **kw)
    assert np.array_equal(to_numpy(y), to_numpy(y2))
    assert np.array_equal(to_numpy(mm), to_numpy(mm2)) and np.array_equal(to_numpy(mv),
                                                                          to_numpy(mv2))
    dy = to_backend(rng.standard_normal((m, n)).astype(dtype), backend)
    dx, dw, db, dg, dbe = fd.ops.dense_batchnorm_backward(dy, ctx)
    dz, dg2, dbe2 = fd.ops.batchnorm_backward(dy, bctx)
    dx2, dw2, db2 = fd.ops.dense_backward(dz, dctx)
    for got, want in ((dx, dx2), (dw, dw2), (db, db2), (dg, dg2), (dbe, dbe2)):
        assert (got is None) == (want is None)
        if got is not None:
            assert np.array_equal(to_numpy(got), to_numpy(want))
    assert fd.ops.dense_batchnorm_backward(dy, ctx, need_dx=False)[0] is None


def test_block_matches_the_float64_reference_and_finite_differences():
    rng = np.random.default_rng(3)
    m, k, n = 9, 6, 5
    x, w, b, g, be, mm, mv = _block(rng, m, k, n, np.float64)
    c = rng.standard_normal((m, n))

    def loss(x_, w_, b_, g_):
        y, _ = fd.ops.dense_batchnorm_forward(x_, w_, b_, g_, be, mm.copy(), mv.copy(),
                                              training=True, activation="elu")
        return float((y * c).sum())

    y, ctx = fd.ops.dense_batchnorm_forward(x, w, b, g, be, mm.copy(), mv.copy(), training=True,
                                            activation="elu")
    z = x @ w + b
    mu, var = z.mean(0), z.var(0)
    ref = R.activation((z - mu) / np.sqrt(var + 1e-3) * g + be, "elu")
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    dx, dw, db, dg, _ = fd.ops.dense_batchnorm_backward(c, ctx)
    h = 1e-6
    for name, arr, grad in (("x", x, dx), ("w", w, dw), ("b", b, db), ("gamma", g, dg)):
        num = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            keep = arr[idx]
            arr[idx] = keep + h
            up = loss(x, w, b, g)
            arr[idx] = keep - h
            down = loss(x, w, b, g)
            arr[idx] = keep
            num[idx] = (up - down) / (2 * h)
        np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("change,exc,match", [
    (dict(w=np.zeros((4, 3), np.float32)), ValueError, "w has shape"),
    (dict(w=np.zeros((5, 3), np.float64)), TypeError, "dtype"),
    (dict(b=np.zeros(4, np.float32)), ValueError, "b has shape"),
    (dict(gamma=np.zeros(4, np.float32)), ValueError, "gamma has shape"),
    (dict(dropout=1.0), ValueError, "dropout"),
    (dict(convention="tf"), ValueError, "convention"),
    (dict(x=np.zeros((0, 5), np.float32)), ValueError, "needs at least one sample"),
])
def test_block_bad_arguments(change, exc, match):
    rng = np.random.default_rng(0)
    x, w, b, g, be, mm, mv = _block(rng, 4, 5, 3, np.float32)
    args = dict(x=x, w=w, b=b, gamma=g, beta=be, moving_mean=mm, moving_var=mv)
    kw = dict(training=True)
    for key, v in change.items():
        (args if key in args else kw)[key] = v
    with pytest.raises(exc, match=match):
        fd.ops.dense_batchnorm_forward(*args.values(), **kw)


def test_block_backward_checks_its_context():
    rng = np.random.default_rng(1)
    x, w, b, g, be, mm, mv = _block(rng, 4, 5, 3, np.float32)
    _, ctx = fd.ops.dense_batchnorm_forward(x, w, b, g, be, mm, mv, training=True)
    with pytest.raises(TypeError, match="ctx"):
        fd.ops.dense_batchnorm_backward(np.zeros((4, 3), np.float32), ctx.bn)
    with pytest.raises(ValueError, match="dy has shape"):
        fd.ops.dense_batchnorm_backward(np.zeros((4, 5), np.float32), ctx)
