"""fd.ops.batchnorm_forward / batchnorm_backward / fold_batchnorm against the
float64 reference (fusednn.testing.reference), finite differences and the
documented special cases. Every kernel test runs on every backend."""

import math

import numpy as np
import pytest

import fusednn as fd
from fusednn.testing import reference as R

from conftest import ACT_IDS, ACTIVATIONS, RTOL, assert_scaled_close, to_backend, to_numpy

EPS = 1e-3  # Keras' default epsilon, the op's default
SEED, STEP = 1234, 7

# Dropout modes: (id, forward kwargs, rate, alpha_dropout)
DROPS = [
    ("nodrop", {}, 0.0, False),
    ("drop0.3", {"dropout": 0.3}, 0.3, False),
    ("alpha0.1", {"dropout": 0.1, "alpha_dropout": True}, 0.1, True),
]
DROP = {d[0]: d for d in DROPS}


# ----------------------------------------------------------------- helpers


def _on(a, backend):
    """A copy of a on the backend: moving statistics are updated in place, and a
    test that compares them (or x, gamma, beta) with the originals must not
    alias them."""
    if a is None:
        return None
    return np.array(a, copy=True) if backend == "cpu" else to_backend(a, backend)


def _data(batch, n, dtype, seed=0):
    """x with per-feature offsets and scales; gamma, beta, moving stats, dy."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((batch, n)) * rng.uniform(0.5, 3.0, n)
         + rng.uniform(-3.0, 3.0, n)).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, n).astype(dtype)
    beta = rng.uniform(-0.5, 0.5, n).astype(dtype)
    mm = rng.uniform(-1.0, 1.0, n).astype(dtype)
    mv = rng.uniform(0.5, 2.0, n).astype(dtype)
    dy = rng.standard_normal((batch, n)).astype(dtype)
    return x, gamma, beta, mm, mv, dy


def _keep(ctx, shape):
    """The boolean keep mask of shape `shape` from ctx.mask (None without dropout)."""
    if ctx.mask is None:
        return None
    mask = to_numpy(ctx.mask)
    assert mask.dtype == np.uint32
    numel = int(np.prod(shape))
    bits = np.unpackbits(mask.view(np.uint8), bitorder="little")[:numel]
    return bits.astype(bool).reshape(shape)


def _act_kw(name, params):
    """activation= and its parameters as keywords (swish's beta included: the
    op's arrays are positional-only)."""
    return {"activation": name, **params}


def _ref_forward(x, gamma, beta, mean, var, eps, name, params, keep, rate, alpha):
    return R.batchnorm_forward(x, gamma, beta, mean, var, eps, name, keep, rate, alpha, **params)


def _ref_backward(dy, x, gamma, beta, mean, var, eps, batch_stats, name, params, keep, rate,
                  alpha):
    return R.batchnorm_backward(dy, x, gamma, beta, mean, var, eps, batch_stats, name, keep,
                                rate, alpha, **params)


def _check_training(backend, batch, n, dtype, name, params, drop, seed=0, rtol=None):
    _, kw, rate, alpha = DROP[drop]
    rtol = RTOL[dtype] if rtol is None else rtol
    x, gamma, beta, mm, mv, dy = _data(batch, n, dtype, seed)
    mm_b, mv_b = _on(mm, backend), _on(mv, backend)
    y, ctx = fd.ops.batchnorm_forward(
        _on(x, backend), _on(gamma, backend), _on(beta, backend), mm_b, mv_b,
        training=True, seed=SEED, step=STEP, **_act_kw(name, params), **kw)
    assert y.dtype == dtype and y.shape == (batch, n)
    keep = _keep(ctx, (batch, n))
    assert (keep is None) == (rate == 0.0)
    mean, var = R.batchnorm_statistics(x)
    ref_y = _ref_forward(x, gamma, beta, mean, var, EPS, name, params, keep, rate, alpha)
    assert_scaled_close(y, ref_y, rtol, "y")
    # moving statistics: Keras convention, momentum 0.99 by default
    rmm, rmv = R.batchnorm_moving_update(mm, mv, mean, var, 0.99, batch)
    assert_scaled_close(mm_b, rmm, rtol, "moving_mean")
    assert_scaled_close(mv_b, rmv, rtol, "moving_var")
    dx, dgamma, dbeta = fd.ops.batchnorm_backward(_on(dy, backend), ctx)
    assert dx.dtype == dtype and dgamma.dtype == dtype and dbeta.dtype == dtype
    rdx, rdg, rdb = _ref_backward(dy, x, gamma, beta, mean, var, EPS, True, name, params, keep,
                                  rate, alpha)
    # dx = scale (dz - mean(dz) - x_hat mean(dz x_hat)) cancels when x_hat^2 is
    # close to 1 (batch 2: dx ~ eps / var * scale * dz): its rounding error is
    # relative to scale * dz, the inference-mode dx, so that is the scale here.
    dx_scale = _ref_backward(dy, x, gamma, beta, mean, var, EPS, False, name, params, keep, rate,
                             alpha)[0]
    dx = to_numpy(dx).astype(np.float64)
    scale = max(np.max(np.abs(rdx)), np.max(np.abs(dx_scale)), 1e-300)
    err = np.max(np.abs(dx - rdx)) / scale
    assert err <= rtol, f"dx: error {err:.3e} > {rtol:.0e} (scaled by max |scale * dz|)"
    assert_scaled_close(dgamma, rdg, rtol, "dgamma")
    assert_scaled_close(dbeta, rdb, rtol, "dbeta")
    return ctx


# --------------------------------------------------- training vs reference


@pytest.mark.parametrize("drop", [d[0] for d in DROPS])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,params", ACTIVATIONS, ids=ACT_IDS)
def test_training_every_activation(backend, name, params, dtype, drop):
    _check_training(backend, 17, 31, dtype, name, params, drop)


def test_swish_beta_reaches_the_kernel(backend):
    """swish's beta, as a keyword or in a resolved ActivationSpec, reaches the
    kernel (the BN offset `beta` is positional-only)."""
    x, gamma, beta, _, _, _ = _data(10, 6, np.float64)
    args = [_on(a, backend) for a in (x, gamma, beta)]
    spec = fd.activations.get("swish", beta=1.7)
    y17, _ = fd.ops.batchnorm_forward(*args, None, None, training=True, activation=spec)
    y1, _ = fd.ops.batchnorm_forward(*args, None, None, training=True, activation="swish")
    y17k, _ = fd.ops.batchnorm_forward(*args, None, None, training=True, activation="swish",
                                       beta=1.7)
    assert_scaled_close(y17k, to_numpy(y17), 0.0, "beta=1.7 keyword")
    mean, var = R.batchnorm_statistics(x)
    z = R.batchnorm_forward(x, gamma, beta, mean, var, EPS)
    assert_scaled_close(y17, R.activation(z, "swish", beta=1.7), 1e-12, "beta=1.7")
    assert_scaled_close(y1, R.activation(z, "swish"), 1e-12, "beta=1")
    with pytest.raises(ValueError, match="batchnorm_forward: parameters"):
        fd.ops.batchnorm_forward(*args, None, None, training=True, activation=spec, alpha=0.5)


# Every batch size and every feature count of the issue, each with a
# nonlinear activation and with dropout (inverted or alpha).
SHAPE_CASES = [
    (1, 1, "elu", "drop0.3"),
    (1, 4097, "tanh", "alpha0.1"),
    (2, 2, "selu", "drop0.3"),
    (2, 1024, "swish", "nodrop"),
    (3, 31, "mish", "drop0.3"),
    (3, 100, "leaky_relu", "alpha0.1"),
    (1000, 1, "softplus", "drop0.3"),
    (1000, 2, "sigmoid", "alpha0.1"),
    (1000, 31, "gelu", "drop0.3"),
    (1000, 100, "elu", "alpha0.1"),
    (1000, 1024, "relu", "drop0.3"),
    (1000, 4097, "elu", "drop0.3"),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch,n,name,drop", SHAPE_CASES,
                         ids=[f"{b}x{n}-{a}-{d}" for b, n, a, d in SHAPE_CASES])
def test_training_shapes(backend, batch, n, name, drop, dtype):
    _check_training(backend, batch, n, dtype, name, {}, drop)


def test_non_contiguous_inputs(backend):
    x, gamma, beta, mm, mv, dy = _data(9, 6, np.float64)
    xf = np.asfortranarray(x)
    gs = np.repeat(gamma, 2)[::2]
    assert not xf.flags.c_contiguous and not gs.flags.c_contiguous
    y, ctx = fd.ops.batchnorm_forward(_on(xf, backend), _on(gs, backend),
                                      _on(beta, backend), None, None, training=True,
                                      activation="elu")
    mean, var = R.batchnorm_statistics(x)
    assert_scaled_close(y, R.batchnorm_forward(x, gamma, beta, mean, var, EPS, "elu"), 1e-12)
    dx, dg, db = fd.ops.batchnorm_backward(_on(np.asfortranarray(dy), backend), ctx)
    rdx, rdg, rdb = R.batchnorm_backward(dy, x, gamma, beta, mean, var, EPS, True, "elu")
    assert_scaled_close(dx, rdx, 1e-12, "dx")
    assert_scaled_close(dg, rdg, 1e-12, "dgamma")
    assert_scaled_close(db, rdb, 1e-12, "dbeta")


# ------------------------------------------------------------ dropout mask


@pytest.mark.parametrize("shape", [(1, 1), (3, 31), (4, 8), (2, 1024), (1000, 31), (7, 4097)],
                         ids=lambda s: "x".join(map(str, s)))
def test_mask_nbytes(backend, shape):
    x = _on(np.random.default_rng(0).standard_normal(shape).astype(np.float32), backend)
    _, ctx = fd.ops.batchnorm_forward(x, None, None, None, None, training=True, dropout=0.3)
    numel = shape[0] * shape[1]
    assert ctx.mask_nbytes == math.ceil(numel / 32) * 4
    assert int(ctx.mask.nbytes) == ctx.mask_nbytes
    if numel % 32 == 0:
        assert ctx.mask_nbytes <= numel / 8
    _, ctx = fd.ops.batchnorm_forward(x, None, None, None, None, training=True)
    assert ctx.mask is None and ctx.mask_nbytes == 0


@pytest.mark.parametrize("drop", ["drop0.3", "alpha0.1"])
def test_kept_fraction(backend, drop):
    _, kw, rate, alpha = DROP[drop]
    shape = (1000, 1024)
    x = _on(np.random.default_rng(1).standard_normal(shape).astype(np.float32), backend)
    y, ctx = fd.ops.batchnorm_forward(x, None, None, None, None, training=True, seed=99, step=3,
                                      **kw)
    keep = _keep(ctx, shape)
    numel = keep.size
    sd = math.sqrt(rate * (1 - rate) / numel)
    assert abs(keep.mean() - (1 - rate)) <= 4 * sd, (keep.mean(), 1 - rate, sd)
    # dropped elements hold one value, the "dropped" value of the transform,
    # within 1 ulp of the reference (which takes a = (...)**-0.5 where the
    # kernel takes 1 / sqrt(...))
    y = to_numpy(y)
    values = np.unique(y[~keep])
    assert values.size == 1, values
    dropped = np.float32([R.dropout_coef(rate, alpha)[2]])
    np.testing.assert_array_max_ulp(values, dropped, maxulp=1)
    # the bits are not trivially correlated along rows or columns
    assert abs(keep[:, 0].mean() - (1 - rate)) < 0.1
    assert abs(keep[0, :].mean() - (1 - rate)) < 0.1


def test_same_seed_and_step_reproduce(backend):
    x, gamma, beta, _, _, _ = _data(50, 37, np.float32)
    args = [_on(a, backend) for a in (x, gamma, beta)]

    def run(seed, step):
        y, ctx = fd.ops.batchnorm_forward(*args, None, None, training=True, activation="elu",
                                          dropout=0.3, seed=seed, step=step)
        return to_numpy(y), to_numpy(ctx.mask)

    y1, m1 = run(5, 11)
    y2, m2 = run(5, 11)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(m1, m2)
    y3, m3 = run(5, 12)
    assert not np.array_equal(m1, m3)
    assert not np.array_equal(y1, y3)
    _, m4 = run(6, 11)
    assert not np.array_equal(m1, m4)
    # large seeds and steps (both 32-bit halves of the key and counter) are valid
    _, m5 = run(2**64 - 1, 2**40 + 1)
    _, m6 = run(2**64 - 1, 2**40 + 1)
    np.testing.assert_array_equal(m5, m6)


def test_mask_counted_by_flat_index(backend):
    """The bit of element e depends on (seed, step, e) only: not on the shape,
    the dtype, the activation or the training flag."""
    rng = np.random.default_rng(2)

    def mask_bits(shape, dtype, **kw):
        x = _on(rng.standard_normal(shape).astype(dtype), backend)
        mm = _on(np.zeros(shape[1], dtype), backend)
        mv = _on(np.ones(shape[1], dtype), backend)
        _, ctx = fd.ops.batchnorm_forward(x, None, None, mm, mv, dropout=0.25, seed=3, step=4,
                                          **kw)
        return _keep(ctx, shape).ravel()

    ref = mask_bits((100, 7), np.float32, training=True)
    np.testing.assert_array_equal(mask_bits((4, 8), np.float64, training=True), ref[:32])
    np.testing.assert_array_equal(mask_bits((7, 100), np.float32, training=True,
                                            activation="gelu"), ref)
    np.testing.assert_array_equal(
        mask_bits((700, 1), np.float64, training=False, dropout_training=True), ref)


@pytest.mark.parametrize("shape", [(1, 1), (3, 11), (37, 13), (64, 32)])
def test_mask_is_the_dropout_ops_mask(backend, shape):
    """BN's mask words are those of fd.ops.dropout_mask and of the Philox
    reference for the same (seed, step), bits past the end included."""
    x, gamma, beta, _, _, _ = _data(*shape, np.float32)
    args = [_on(a, backend) for a in (x, gamma, beta)]
    kw = dict(dropout=0.4, seed=2**40 + 9, step=12345)
    _, ctx = fd.ops.batchnorm_forward(*args, None, None, training=True, activation="elu", **kw)
    numel = shape[0] * shape[1]
    words = fd.ops.dropout_mask(numel, 0.4, seed=kw["seed"], step=kw["step"])
    np.testing.assert_array_equal(to_numpy(ctx.mask), words)
    np.testing.assert_array_equal(_keep(ctx, shape).ravel(),
                                  R.dropout_mask_bits(numel, 0.4, kw["seed"], kw["step"]))


def test_cuda_mask_matches_cpu(backend):
    if backend != "cuda":
        pytest.skip("compares the CUDA mask with the CPU one")
    x, gamma, beta, _, _, _ = _data(300, 45, np.float32)
    kw = dict(training=True, activation="tanh", dropout=0.3, seed=77, step=2**33 + 5)
    _, c_cpu = fd.ops.batchnorm_forward(x, gamma, beta, None, None, **kw)
    _, c_gpu = fd.ops.batchnorm_forward(*(_on(a, "cuda") for a in (x, gamma, beta)),
                                        None, None, **kw)
    np.testing.assert_array_equal(_keep(c_gpu, x.shape), _keep(c_cpu, x.shape))


def test_dropout_rate_zero_is_no_dropout(backend):
    x, gamma, beta, _, _, _ = _data(20, 5, np.float64)
    args = [_on(a, backend) for a in (x, gamma, beta)]
    y0, c0 = fd.ops.batchnorm_forward(*args, None, None, training=True, activation="elu")
    y1, c1 = fd.ops.batchnorm_forward(*args, None, None, training=True, activation="elu",
                                      dropout=0.0)
    assert c1.mask is None and c1.mask_nbytes == 0
    np.testing.assert_array_equal(to_numpy(y0), to_numpy(y1))


# ------------------------------------------------------- moving statistics


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("convention", ["keras", "torch"])
def test_moving_statistics_in_place(backend, convention, dtype):
    batch, n = 50, 13
    _, _, _, mm, mv, _ = _data(batch, n, dtype)
    mm_b, mv_b = _on(mm, backend), _on(mv, backend)
    rmm, rmv = mm.astype(np.float64), mv.astype(np.float64)
    kw = {} if convention == "keras" else {"momentum": 0.1, "epsilon": 1e-5,
                                           "convention": "torch"}
    momentum = 0.99 if convention == "keras" else 0.1
    eps = kw.get("epsilon", EPS)
    for step in range(3):
        x = _data(batch, n, dtype, seed=10 + step)[0]
        y, ctx = fd.ops.batchnorm_forward(_on(x, backend), None, None, mm_b, mv_b,
                                          training=True, **kw)
        mean, var = R.batchnorm_statistics(x)
        rmm, rmv = R.batchnorm_moving_update(rmm, rmv, mean, var, momentum, batch, convention)
        assert_scaled_close(mm_b, rmm, RTOL[dtype], f"moving_mean step {step}")
        assert_scaled_close(mv_b, rmv, RTOL[dtype], f"moving_var step {step}")
        # normalised with the biased batch variance in both conventions
        assert_scaled_close(y, R.batchnorm_forward(x, None, None, mean, var, eps),
                            RTOL[dtype], "y")
        assert_scaled_close(ctx.mean, mean, RTOL[dtype], "ctx.mean")
        assert_scaled_close(ctx.var, var, RTOL[dtype], "ctx.var")
    # the update happened in place, in the caller's arrays, and really moved them
    assert not np.allclose(to_numpy(mm_b), mm)
    assert not np.allclose(to_numpy(mv_b), mv)


def test_torch_and_keras_normalise_alike(backend):
    x, gamma, beta, mm, mv, _ = _data(8, 5, np.float64)
    args = [_on(a, backend) for a in (x, gamma, beta)]
    y_k, _ = fd.ops.batchnorm_forward(*args, _on(mm.copy(), backend),
                                      _on(mv.copy(), backend), training=True,
                                      momentum=0.9)
    mm_t, mv_t = _on(mm.copy(), backend), _on(mv.copy(), backend)
    y_t, _ = fd.ops.batchnorm_forward(*args, mm_t, mv_t, training=True, momentum=0.1,
                                      convention="torch")
    np.testing.assert_array_equal(to_numpy(y_k), to_numpy(y_t))
    mean, var = R.batchnorm_statistics(x)
    np.testing.assert_allclose(to_numpy(mm_t), 0.9 * mm + 0.1 * mean, rtol=1e-13)
    np.testing.assert_allclose(to_numpy(mv_t), 0.9 * mv + 0.1 * var * 8 / 7, rtol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_moving_statistics_in_training(backend, dtype):
    x, gamma, beta, _, _, dy = _data(30, 9, dtype)
    g_b, b_b = _on(gamma, backend), _on(beta, backend)
    x_b = _on(x, backend)
    y, ctx = fd.ops.batchnorm_forward(x_b, g_b, b_b, None, None, training=True,
                                      activation="selu", dropout=0.3)
    keep = _keep(ctx, x.shape)
    mean, var = R.batchnorm_statistics(x)
    assert_scaled_close(y, R.batchnorm_forward(x, gamma, beta, mean, var, EPS, "selu", keep, 0.3),
                        RTOL[dtype], "y")
    dx, dg, db = fd.ops.batchnorm_backward(_on(dy, backend), ctx)
    rdx, rdg, rdb = R.batchnorm_backward(dy, x, gamma, beta, mean, var, EPS, True, "selu", keep,
                                         0.3)
    assert_scaled_close(dx, rdx, RTOL[dtype], "dx")
    assert_scaled_close(dg, rdg, RTOL[dtype], "dgamma")
    assert_scaled_close(db, rdb, RTOL[dtype], "dbeta")
    # the inputs are left alone
    np.testing.assert_array_equal(to_numpy(x_b), x)
    np.testing.assert_array_equal(to_numpy(g_b), gamma)
    np.testing.assert_array_equal(to_numpy(b_b), beta)


# --------------------------------------------------------------- inference


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["linear", "relu", "elu", "gelu", "sigmoid"])
def test_inference_matches_reference(backend, name, dtype):
    x, gamma, beta, mm, mv, dy = _data(40, 23, dtype)
    mm_b, mv_b = _on(mm, backend), _on(mv, backend)
    y, ctx = fd.ops.batchnorm_forward(_on(x, backend), _on(gamma, backend),
                                      _on(beta, backend), mm_b, mv_b, training=False,
                                      activation=name, dropout=0.3)  # no dropout in inference
    assert ctx.mask is None and ctx.mask_nbytes == 0
    np.testing.assert_array_equal(to_numpy(mm_b), mm)  # unchanged, bit for bit
    np.testing.assert_array_equal(to_numpy(mv_b), mv)
    assert_scaled_close(y, R.batchnorm_forward(x, gamma, beta, mm, mv, EPS, name), RTOL[dtype],
                        "y")
    dx, dg, db = fd.ops.batchnorm_backward(_on(dy, backend), ctx)
    rdx, rdg, rdb = R.batchnorm_backward(dy, x, gamma, beta, mm, mv, EPS, False, name)
    assert_scaled_close(dx, rdx, RTOL[dtype], "dx")
    assert_scaled_close(dg, rdg, RTOL[dtype], "dgamma")
    assert_scaled_close(db, rdb, RTOL[dtype], "dbeta")
    if name == "linear":  # dx = scale * dz exactly as stated
        scale = gamma.astype(np.float64) / np.sqrt(mv.astype(np.float64) + EPS)
        assert_scaled_close(dx, scale * dy, RTOL[dtype], "dx = scale*dy")


@pytest.mark.parametrize("drop", ["drop0.3", "alpha0.1"])
def test_mc_dropout_in_inference(backend, drop):
    _, kw, rate, alpha = DROP[drop]
    x, gamma, beta, mm, mv, dy = _data(64, 17, np.float64)
    mm_b, mv_b = _on(mm, backend), _on(mv, backend)
    y, ctx = fd.ops.batchnorm_forward(_on(x, backend), _on(gamma, backend),
                                      _on(beta, backend), mm_b, mv_b, training=False,
                                      dropout_training=True, activation="elu", **kw)
    keep = _keep(ctx, x.shape)
    assert keep is not None and not keep.all() and keep.any()
    np.testing.assert_array_equal(to_numpy(mm_b), mm)
    np.testing.assert_array_equal(to_numpy(mv_b), mv)
    assert_scaled_close(y, R.batchnorm_forward(x, gamma, beta, mm, mv, EPS, "elu", keep, rate,
                                               alpha), 1e-12, "y")
    dx, dg, db = fd.ops.batchnorm_backward(_on(dy, backend), ctx)
    rdx, rdg, rdb = R.batchnorm_backward(dy, x, gamma, beta, mm, mv, EPS, False, "elu", keep,
                                         rate, alpha)
    assert_scaled_close(dx, rdx, 1e-12, "dx")
    assert_scaled_close(dg, rdg, 1e-12, "dgamma")
    assert_scaled_close(db, rdb, 1e-12, "dbeta")


def test_training_without_dropout_training(backend):
    x, gamma, beta, mm, mv, dy = _data(64, 17, np.float64)
    mm_b, mv_b = _on(mm, backend), _on(mv, backend)
    y, ctx = fd.ops.batchnorm_forward(_on(x, backend), _on(gamma, backend),
                                      _on(beta, backend), mm_b, mv_b, training=True,
                                      dropout_training=False, activation="elu", dropout=0.3)
    assert ctx.mask is None and ctx.mask_nbytes == 0
    mean, var = R.batchnorm_statistics(x)
    assert_scaled_close(y, R.batchnorm_forward(x, gamma, beta, mean, var, EPS, "elu"), 1e-12)
    rmm, rmv = R.batchnorm_moving_update(mm, mv, mean, var, 0.99, 64)
    assert_scaled_close(mm_b, rmm, 1e-12, "moving_mean")  # BN itself still trains
    assert_scaled_close(mv_b, rmv, 1e-12, "moving_var")
    dx, _, _ = fd.ops.batchnorm_backward(_on(dy, backend), ctx)
    rdx = R.batchnorm_backward(dy, x, gamma, beta, mean, var, EPS, True, "elu")[0]
    assert_scaled_close(dx, rdx, 1e-12, "dx")


# ------------------------------------------------------- center / scale off


@pytest.mark.parametrize("training", [True, False], ids=["train", "infer"])
@pytest.mark.parametrize("has_gamma,has_beta", [(False, True), (True, False), (False, False)],
                         ids=["nogamma", "nobeta", "neither"])
def test_gamma_beta_none(backend, has_gamma, has_beta, training):
    x, gamma, beta, mm, mv, dy = _data(25, 11, np.float64)
    g = gamma if has_gamma else None
    b = beta if has_beta else None
    y, ctx = fd.ops.batchnorm_forward(_on(x, backend), _on(g, backend),
                                      _on(b, backend), _on(mm, backend),
                                      _on(mv, backend), training=training,
                                      activation="tanh", dropout=0.3, seed=1, step=2)
    keep = _keep(ctx, x.shape)
    assert (keep is None) == (not training)
    mean, var = R.batchnorm_statistics(x) if training else (mm, mv)
    # the reference with explicit gamma = 1, beta = 0
    g1 = gamma if has_gamma else np.ones(11)
    b0 = beta if has_beta else np.zeros(11)
    assert_scaled_close(y, R.batchnorm_forward(x, g1, b0, mean, var, EPS, "tanh", keep, 0.3),
                        1e-12, "y")
    dx, dg, db = fd.ops.batchnorm_backward(_on(dy, backend), ctx)
    rdx, rdg, rdb = R.batchnorm_backward(dy, x, g1, b0, mean, var, EPS, training, "tanh", keep,
                                         0.3)
    assert_scaled_close(dx, rdx, 1e-12, "dx")
    if has_gamma:
        assert_scaled_close(dg, rdg, 1e-12, "dgamma")
    else:
        assert dg is None
    if has_beta:
        assert_scaled_close(db, rdb, 1e-12, "dbeta")
    else:
        assert db is None


# ------------------------------------------------------ finite differences


@pytest.mark.parametrize("drop", [d[0] for d in DROPS])
@pytest.mark.parametrize("name", ["elu", "gelu", "tanh", "selu"])
def test_backward_matches_finite_differences(backend, name, drop):
    """Central differences of L = sum(dy * y) in float64 w.r.t. x, gamma, beta,
    in training (the batch statistics depend on x). Moving stats are None, so
    nothing changes between calls; seed and step fix the mask."""
    _, kw, _, _ = DROP[drop]
    x, gamma, beta, _, _, dy = _data(6, 3, np.float64, seed=5)
    mean, var = R.batchnorm_statistics(x)
    z = (x - mean) / np.sqrt(var + EPS) * gamma + beta
    assert np.abs(z).min() > 1e-3  # away from selu's kink

    def forward(x_, g_, b_):
        return fd.ops.batchnorm_forward(_on(x_, backend), _on(g_, backend),
                                        _on(b_, backend), None, None, training=True,
                                        activation=name, seed=SEED, step=STEP, **kw)

    def loss(x_, g_, b_):
        return float(np.sum(to_numpy(forward(x_, g_, b_)[0]) * dy))

    _, ctx = forward(x, gamma, beta)
    if drop != "nodrop":
        keep = _keep(ctx, x.shape)
        assert keep.any() and not keep.all()  # the mask matters in this case
    grads = [to_numpy(g) for g in fd.ops.batchnorm_backward(_on(dy, backend), ctx)]
    h = 1e-6
    for arr, grad, what in zip((x, gamma, beta), grads, ("dx", "dgamma", "dbeta")):
        num = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + h
            up = loss(x, gamma, beta)
            arr[i] = old - h
            down = loss(x, gamma, beta)
            arr[i] = old
            num[i] = (up - down) / (2 * h)
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-7, err_msg=what)


# ------------------------------------------------------------ batch of one


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["linear", "relu", "elu", "tanh", "gelu"])
def test_batch_of_one_keras(backend, name, dtype):
    x, gamma, beta, mm, mv, dy = _data(1, 9, dtype)
    beta[:3] = 0  # activation(0): relu's kink, gelu(0) = 0 ...
    mm_b, mv_b = _on(mm, backend), _on(mv, backend)
    y, ctx = fd.ops.batchnorm_forward(_on(x, backend), _on(gamma, backend),
                                      _on(beta, backend), mm_b, mv_b, training=True,
                                      activation=name)
    y = to_numpy(y)
    if name in ("linear", "relu"):
        np.testing.assert_array_equal(y[0], beta if name == "linear" else np.maximum(beta, 0))
    assert_scaled_close(y, R.activation(beta, name)[None, :], RTOL[dtype], "y")
    dx, dg, db = (to_numpy(a) for a in fd.ops.batchnorm_backward(_on(dy, backend), ctx))
    np.testing.assert_array_equal(dx, np.zeros_like(dx))  # exactly 0
    np.testing.assert_array_equal(dg, np.zeros_like(dg))  # x_hat is exactly 0
    assert_scaled_close(db, dy[0] * R.activation_grad(beta, name), RTOL[dtype], "dbeta")
    # moving statistics: the batch's mean is x, its variance 0
    rmm, rmv = R.batchnorm_moving_update(mm, mv, x[0], np.zeros(9), 0.99, 1)
    assert_scaled_close(mm_b, rmm, RTOL[dtype], "moving_mean")
    assert_scaled_close(mv_b, rmv, RTOL[dtype], "moving_var")


def test_batch_of_one_torch_raises(backend):
    x, gamma, beta, mm, mv, _ = _data(1, 4, np.float32)
    mm_b, mv_b = _on(mm, backend), _on(mv, backend)
    with pytest.raises(ValueError, match=r"batchnorm_forward: expected more than 1 sample"):
        fd.ops.batchnorm_forward(_on(x, backend), _on(gamma, backend),
                                 _on(beta, backend), mm_b, mv_b, training=True,
                                 momentum=0.1, convention="torch")
    np.testing.assert_array_equal(to_numpy(mm_b), mm)
    np.testing.assert_array_equal(to_numpy(mv_b), mv)
    # inference with one sample is fine in either convention
    y, _ = fd.ops.batchnorm_forward(_on(x, backend), _on(gamma, backend),
                                    _on(beta, backend), mm_b, mv_b, training=False,
                                    convention="torch", epsilon=1e-5)
    assert_scaled_close(y, R.batchnorm_forward(x, gamma, beta, mm, mv, 1e-5), RTOL[np.float32])


# ---------------------------------------------------------------- numerics


def test_large_mean_small_std_float32(backend):
    """A column with mean 1e4 and std 1e-2 (and others) normalised in float32
    as in float64: x_hat has mean ~0 and std ~1 (epsilon small against var)."""
    rng = np.random.default_rng(4)
    offsets = np.array([1e4, -3e3, 0.5, 1e4])
    stds = np.array([1e-2, 1e-2, 1.0, 1.0])
    x = (offsets + stds * rng.standard_normal((1000, 4))).astype(np.float32)
    dy = rng.standard_normal((1000, 4)).astype(np.float32)
    eps = 1e-8
    mm_b = _on(np.zeros(4, np.float32), backend)
    mv_b = _on(np.ones(4, np.float32), backend)
    y, ctx = fd.ops.batchnorm_forward(_on(x, backend), None, None, mm_b, mv_b,
                                      training=True, epsilon=eps)
    mean, var = R.batchnorm_statistics(x)
    ref = R.batchnorm_forward(x, None, None, mean, var, eps)
    y = to_numpy(y).astype(np.float64)
    assert np.max(np.abs(y - ref)) <= 1e-4
    assert np.all(np.abs(y.mean(axis=0)) < 1e-4)
    assert np.all(np.abs(y.std(axis=0) - 1) < 1e-4)
    assert_scaled_close(mm_b, R.batchnorm_moving_update(0, 1, mean, var, 0.99, 1000)[0], 1e-6)
    dx, dg, db = fd.ops.batchnorm_backward(_on(dy, backend), ctx)
    rdx, rdg, rdb = R.batchnorm_backward(dy, x, None, None, mean, var, eps, True)
    assert dg is None and db is None
    dx = to_numpy(dx).astype(np.float64)
    # dx is ~100x dy on the narrow columns: compare per column, scaled
    for j in range(4):
        assert_scaled_close(dx[:, j], rdx[:, j], 1e-4, f"dx[:, {j}]")
    # with gamma/beta: dgamma and dbeta
    g = np.ones(4, np.float32)
    b = np.zeros(4, np.float32)
    _, ctx = fd.ops.batchnorm_forward(_on(x, backend), _on(g, backend),
                                      _on(b, backend), None, None, training=True,
                                      epsilon=eps)
    _, dg, db = fd.ops.batchnorm_backward(_on(dy, backend), ctx)
    rdg, rdb = R.batchnorm_backward(dy, x, g, b, mean, var, eps, True)[1:]
    assert_scaled_close(dg, rdg, 1e-4, "dgamma")
    assert_scaled_close(db, rdb, 1e-4, "dbeta")


# --------------------------------------------------------------------- NaN


@pytest.mark.parametrize("name", ["linear", "relu", "elu", "gelu"])
def test_nan_training_confined_to_column(backend, name):
    x, gamma, beta, mm, mv, dy = _data(6, 4, np.float32)
    x[2, 1] = np.nan
    mm_b, mv_b = _on(mm, backend), _on(mv, backend)
    y, ctx = fd.ops.batchnorm_forward(_on(x, backend), _on(gamma, backend),
                                      _on(beta, backend), mm_b, mv_b, training=True,
                                      activation=name)
    y = to_numpy(y)
    # the column's statistics are NaN, so the whole column is
    assert np.all(np.isnan(y[:, 1]))
    ok = [0, 2, 3]
    assert np.all(np.isfinite(y[:, ok]))
    mean, var = R.batchnorm_statistics(x[:, ok])
    assert_scaled_close(y[:, ok], R.batchnorm_forward(x[:, ok], gamma[ok], beta[ok], mean, var,
                                                      EPS, name), 1e-5, "y")
    dx, dg, db = (to_numpy(a) for a in fd.ops.batchnorm_backward(_on(dy, backend), ctx))
    assert np.all(np.isnan(dx[:, 1])) and np.isnan(dg[1])
    if name == "linear":  # dbeta = sum dy does not read x
        assert db[1] == pytest.approx(float(dy[:, 1].astype(np.float64).sum()), rel=1e-5)
    else:
        assert np.isnan(db[1])
    rdx, rdg, rdb = R.batchnorm_backward(dy[:, ok], x[:, ok], gamma[ok], beta[ok], mean, var, EPS,
                                         True, name)
    assert_scaled_close(dx[:, ok], rdx, 1e-5, "dx")
    assert_scaled_close(dg[ok], rdg, 1e-5, "dgamma")
    assert_scaled_close(db[ok], rdb, 1e-5, "dbeta")


@pytest.mark.parametrize("convention", ["keras", "torch"])
def test_nan_training_moving_statistics(backend, convention):
    """The batch mean and variance of a column holding a NaN are NaN (as in the
    reference), so its moving statistics become NaN; the other columns update
    normally."""
    x, _, _, mm, mv, _ = _data(6, 4, np.float32)
    x[2, 1] = np.nan
    mm_b, mv_b = _on(mm, backend), _on(mv, backend)
    _, ctx = fd.ops.batchnorm_forward(_on(x, backend), None, None, mm_b, mv_b, training=True,
                                      momentum=0.9, convention=convention)
    with np.errstate(invalid="ignore"):
        mean, var = R.batchnorm_statistics(x)
    assert np.isnan(mean[1]) and np.isnan(var[1])
    rmm, rmv = R.batchnorm_moving_update(mm, mv, mean, var, 0.9, 6, convention)
    mm_n, mv_n = to_numpy(mm_b), to_numpy(mv_b)
    ok = [0, 2, 3]
    assert_scaled_close(mm_n[ok], rmm[ok], 1e-5, "moving_mean")
    assert_scaled_close(mv_n[ok], rmv[ok], 1e-5, "moving_var")
    assert np.isnan(to_numpy(ctx.mean)[1]), "batch mean of the NaN column"
    assert np.isnan(mm_n[1]), f"moving_mean of the NaN column is {mm_n[1]}"
    assert np.isnan(to_numpy(ctx.var)[1]), f"batch var of the NaN column is {ctx.var[1]}"
    assert np.isnan(mv_n[1]), f"moving_var of the NaN column is {mv_n[1]} (expected NaN)"


def test_nan_training_with_dropout(backend):
    x, gamma, beta, _, _, _ = _data(40, 4, np.float32)
    x[2, 1] = np.nan
    y, ctx = fd.ops.batchnorm_forward(_on(x, backend), _on(gamma, backend),
                                      _on(beta, backend), None, None, training=True,
                                      activation="elu", dropout=0.3)
    y = to_numpy(y)
    keep = _keep(ctx, x.shape)
    assert keep[:, 1].any() and not keep[:, 1].all()
    # kept elements of the NaN column are NaN, dropped ones the dropped value 0
    assert np.all(np.isnan(y[:, 1][keep[:, 1]]))
    assert np.all(y[:, 1][~keep[:, 1]] == 0)
    assert np.all(np.isfinite(np.delete(y, 1, axis=1)))


def test_nan_inference_confined_to_element(backend):
    x, gamma, beta, mm, mv, dy = _data(6, 4, np.float32)
    x[2, 1] = np.nan
    mm_b, mv_b = _on(mm, backend), _on(mv, backend)
    y, ctx = fd.ops.batchnorm_forward(_on(x, backend), _on(gamma, backend),
                                      _on(beta, backend), mm_b, mv_b, training=False,
                                      activation="elu")
    y = to_numpy(y)
    nan = np.zeros(x.shape, bool)
    nan[2, 1] = True
    np.testing.assert_array_equal(np.isnan(y), nan)
    np.testing.assert_array_equal(to_numpy(mm_b), mm)
    np.testing.assert_array_equal(to_numpy(mv_b), mv)
    dx, dg, db = (to_numpy(a) for a in fd.ops.batchnorm_backward(_on(dy, backend), ctx))
    np.testing.assert_array_equal(np.isnan(dx), nan)
    assert np.isnan(dg[1]) and np.isnan(db[1])
    assert np.all(np.isfinite(np.delete(dg, 1))) and np.all(np.isfinite(np.delete(db, 1)))


# ------------------------------------------------------------------ folding


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fold_matches_reference(backend, dtype):
    rng = np.random.default_rng(6)
    w = rng.standard_normal((7, 5)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    _, gamma, beta, mm, mv, _ = _data(1, 5, dtype)
    args = [_on(a, backend) for a in (w, b, gamma, beta, mm, mv)]
    w2, b2 = fd.ops.fold_batchnorm(*args)
    assert w2.dtype == dtype and b2.dtype == dtype and type(w2) is type(args[0])
    rw, rb = R.fold_batchnorm(w, b, gamma, beta, mm, mv, EPS)
    assert_scaled_close(w2, rw, RTOL[dtype], "w'")
    assert_scaled_close(b2, rb, RTOL[dtype], "b'")
    w3, b3 = fd.ops.fold_batchnorm(*args, epsilon=1e-5)
    rw, rb = R.fold_batchnorm(w, b, gamma, beta, mm, mv, 1e-5)
    assert_scaled_close(w3, rw, RTOL[dtype], "w' eps")
    assert_scaled_close(b3, rb, RTOL[dtype], "b' eps")


@pytest.mark.parametrize("none", ["b", "gamma", "beta", "gamma+beta"])
def test_fold_with_none(backend, none):
    rng = np.random.default_rng(7)
    w = rng.standard_normal((6, 4))
    b = rng.standard_normal(4)
    _, gamma, beta, mm, mv, _ = _data(1, 4, np.float64)
    arrs = {"b": b, "gamma": gamma, "beta": beta}
    for k in none.split("+"):
        arrs[k] = None
    w2, b2 = fd.ops.fold_batchnorm(_on(w, backend),
                                   *(_on(arrs[k], backend) for k in ("b", "gamma", "beta")),
                                   _on(mm, backend), _on(mv, backend))
    g1 = np.ones(4) if arrs["gamma"] is None else gamma
    b0 = np.zeros(4) if arrs["beta"] is None else beta
    rw, rb = R.fold_batchnorm(w, arrs["b"], g1, b0, mm, mv, EPS)
    assert_scaled_close(w2, rw, 1e-12, "w'")
    assert_scaled_close(b2, rb, 1e-12, "b'")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("name", ["linear", "elu"])
def test_fold_end_to_end(backend, name, bias, dtype):
    """dense(x, w', b') == BN_inference(dense(x, w, b)), activation after both."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((33, 12)).astype(dtype)
    w = (rng.standard_normal((12, 9)) / np.sqrt(12)).astype(dtype)
    b = rng.standard_normal(9).astype(dtype) if bias else None
    _, gamma, beta, mm, mv, _ = _data(1, 9, dtype)
    mm = (mm * 0.3).astype(dtype)
    xb, wb, bb = (_on(a, backend) for a in (x, w, b))
    gb, betab, mmb, mvb = (_on(a, backend) for a in (gamma, beta, mm, mv))
    h, _ = fd.ops.dense_forward(xb, wb, bb)
    y_bn, _ = fd.ops.batchnorm_forward(h, gb, betab, mmb, mvb, training=False, activation=name)
    w2, b2 = fd.ops.fold_batchnorm(wb, bb, gb, betab, mmb, mvb)
    y_fold, _ = fd.ops.dense_forward(xb, w2, b2, name)
    rtol = {np.float32: 1e-5, np.float64: 1e-12}[dtype]
    assert_scaled_close(y_fold, to_numpy(y_bn), rtol, "folded vs BN")
    # and both against the float64 reference
    hr = R.dense_forward(x, w, b)[0]
    ref = R.batchnorm_forward(hr, gamma, beta, mm, mv, EPS, name)
    assert_scaled_close(y_fold, ref, rtol, "folded vs reference")


def test_fold_bad_input():
    w = np.zeros((3, 2))
    v = np.ones(2)
    with pytest.raises(ValueError, match="fold_batchnorm: moving_var is required"):
        fd.ops.fold_batchnorm(w, None, None, None, v, None)
    with pytest.raises(ValueError,
                       match=r"fold_batchnorm: gamma has shape \(3,\), expected \(2,\)"):
        fd.ops.fold_batchnorm(w, None, np.ones(3), None, v, v)
    with pytest.raises(ValueError, match="fold_batchnorm: epsilon must be > 0"):
        fd.ops.fold_batchnorm(w, None, None, None, v, v, epsilon=0.0)


# ---------------------------------------------------------------- bad input

F32 = np.float32


def _good():
    return {
        "x": np.zeros((4, 3), F32),
        "gamma": np.ones(3, F32),
        "beta": np.zeros(3, F32),
        "moving_mean": np.zeros(3, F32),
        "moving_var": np.ones(3, F32),
    }


def _read_only(a):
    a.setflags(write=False)
    return a


BAD_FORWARD = [
    ("gamma-shape", {"gamma": np.ones(4, F32)}, ValueError,
     r"batchnorm_forward: gamma has shape \(4,\), expected \(3,\)"),
    ("gamma-2d", {"gamma": np.ones((1, 3), F32)}, ValueError,
     r"batchnorm_forward: gamma has shape \(1, 3\)"),
    ("gamma-dtype", {"gamma": np.ones(3, np.float64)}, TypeError,
     "batchnorm_forward: gamma has dtype float64"),
    ("gamma-int", {"gamma": np.ones(3, np.int32)}, TypeError,
     "batchnorm_forward: gamma has dtype int32"),
    ("beta-shape", {"beta": np.zeros(2, F32)}, ValueError,
     r"batchnorm_forward: beta has shape \(2,\), expected \(3,\)"),
    ("beta-dtype", {"beta": np.zeros(3, np.float64)}, TypeError,
     "batchnorm_forward: beta has dtype float64"),
    ("x-1d", {"x": np.zeros(3, F32)}, ValueError, "batchnorm_forward: x has 1 dims, expected 2"),
    ("x-3d", {"x": np.zeros((2, 4, 3), F32)}, ValueError,
     "batchnorm_forward: x has 3 dims, expected 2"),
    ("x-int", {"x": np.zeros((4, 3), np.int64)}, TypeError,
     "batchnorm_forward: x has dtype int64"),
    ("x-empty", {"x": np.zeros((0, 3), F32)}, ValueError,
     r"batchnorm_forward: x has shape \(0, 3\)"),
    ("x-list", {"x": [[1.0, 2.0, 3.0]]}, TypeError, "batchnorm_forward: x must be a numpy"),
    ("dropout-neg", {"dropout": -0.1}, ValueError, r"batchnorm_forward: dropout must be in \[0, 1\), got -0.1"),
    ("dropout-one", {"dropout": 1.0}, ValueError, r"batchnorm_forward: dropout must be in \[0, 1\), got 1.0"),
    ("dropout-nan", {"dropout": float("nan")}, ValueError,
     r"batchnorm_forward: dropout must be in \[0, 1\), got nan"),
    ("dropout-str", {"dropout": "0.5"}, TypeError, "batchnorm_forward: dropout must be a real number"),
    ("seed-neg", {"seed": -1}, ValueError, r"batchnorm_forward: seed must be in \[0, 2\*\*64\)"),
    ("seed-big", {"seed": 2**64}, ValueError, r"batchnorm_forward: seed must be in \[0, 2\*\*64\)"),
    ("step-float", {"step": 1.5}, TypeError, "batchnorm_forward: step must be an integer"),
    ("convention", {"convention": "caffe"}, ValueError,
     "batchnorm_forward: convention must be 'keras' or 'torch', got 'caffe'"),
    ("momentum", {"momentum": 1.5}, ValueError, "batchnorm_forward: momentum must be <= 1"),
    ("epsilon-zero", {"epsilon": 0}, ValueError, "batchnorm_forward: epsilon must be > 0"),
    ("epsilon-neg", {"epsilon": -1}, ValueError, "batchnorm_forward: epsilon must be > 0"),
    ("training-str", {"training": "yes"}, TypeError,
     "batchnorm_forward: training must be a bool, got str 'yes'"),
    ("mean-without-var", {"moving_var": None}, ValueError,
     "batchnorm_forward: moving_mean and moving_var must both be"),
    ("var-without-mean", {"moving_mean": None}, ValueError,
     "batchnorm_forward: moving_mean and moving_var must both be"),
    ("infer-no-moving", {"training": False, "moving_mean": None, "moving_var": None}, ValueError,
     "batchnorm_forward: training=False normalises with moving_mean and moving_var"),
    ("mean-read-only", {"moving_mean": _read_only(np.zeros(3, F32))}, ValueError,
     "batchnorm_forward: moving_mean is read-only"),
    ("var-read-only", {"moving_var": _read_only(np.ones(3, F32))}, ValueError,
     "batchnorm_forward: moving_var is read-only"),
    ("mean-strided", {"moving_mean": np.zeros(6, F32)[::2]}, ValueError,
     "batchnorm_forward: moving_mean must be C-contiguous"),
    ("var-strided", {"moving_var": np.ones(6, F32)[::2]}, ValueError,
     "batchnorm_forward: moving_var must be C-contiguous"),
    ("mean-shape", {"moving_mean": np.zeros(4, F32)}, ValueError,
     r"batchnorm_forward: moving_mean has shape \(4,\), expected \(3,\)"),
    ("activation", {"activation": "elux"}, ValueError,
     "batchnorm_forward: unknown activation 'elux'"),
    ("activation-param", {"activation": "relu", "alpha": 0.1}, ValueError,
     "takes no parameter alpha"),
]


@pytest.mark.parametrize("over,exc,match", [c[1:] for c in BAD_FORWARD],
                         ids=[c[0] for c in BAD_FORWARD])
def test_bad_forward_input(over, exc, match):
    args = {**_good(), **over}
    kw = {k: v for k, v in args.items()
          if k not in ("x", "gamma", "beta", "moving_mean", "moving_var")}
    kw.setdefault("training", True)
    mm, mv = args["moving_mean"], args["moving_var"]
    before = [None if a is None else a.copy() for a in (mm, mv)]
    with pytest.raises(exc, match=match):
        fd.ops.batchnorm_forward(args["x"], args["gamma"], args["beta"], mm, mv, **kw)
    for a, b in zip((mm, mv), before):  # nothing half-updated
        if a is not None:
            np.testing.assert_array_equal(a, b)


def _ctx():
    g = _good()
    return fd.ops.batchnorm_forward(g["x"], g["gamma"], g["beta"], None, None, training=True)[1]


def test_backward_ctx_from_other_op():
    _, actx = fd.ops.activation_forward(np.zeros((4, 3), F32), "relu")
    with pytest.raises(TypeError, match="batchnorm_backward: ctx must come from batchnorm_forward"):
        fd.ops.batchnorm_backward(np.zeros((4, 3), F32), actx)
    with pytest.raises(TypeError, match="batchnorm_backward: ctx must come from batchnorm_forward"):
        fd.ops.batchnorm_backward(np.zeros((4, 3), F32), None)


def test_backward_dy_wrong_shape():
    with pytest.raises(ValueError, match=r"batchnorm_backward: dy has shape \(3, 4\), "
                                         r"expected \(4, 3\)"):
        fd.ops.batchnorm_backward(np.zeros((3, 4), F32), _ctx())


def test_backward_dy_wrong_ndim():
    with pytest.raises(ValueError, match="batchnorm_backward: dy has 1 dims"):
        fd.ops.batchnorm_backward(np.zeros(12, F32), _ctx())


def test_backward_dy_wrong_dtype():
    with pytest.raises(TypeError, match="batchnorm_backward: dy has dtype float64"):
        fd.ops.batchnorm_backward(np.zeros((4, 3)), _ctx())
    with pytest.raises(TypeError, match="batchnorm_backward: dy has dtype int32"):
        fd.ops.batchnorm_backward(np.zeros((4, 3), np.int32), _ctx())
