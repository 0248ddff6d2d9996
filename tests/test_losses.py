"""Fused losses (fusednn.ops.loss): loss and gradient against the float64
reference, finite differences and PyTorch; stability at |z| = 1e4; NaN
propagation; every bad input; the binding guards."""


import numpy as np
import pytest

import fusednn as fd
from fusednn import _C
from fusednn.testing import reference as R

from conftest import RTOL, assert_scaled_close, to_backend, to_numpy
from test_cuda_contract import _cuda_module, _FakeArray, _FakeCupy

XENT_SHAPES = [(1, 1), (1, 10), (3, 17), (1024, 10), (257, 1000), (5, 2500)]
POINT_SHAPES = [(1,), (17,), (1, 1), (3, 17), (1024, 10), (257, 1000)]
LABEL_KINDS = ["int32", "int64", "uint8", "onehot", "soft"]
# (weighted, reduction, label_smoothing)
CONFIGS = [
    (False, "sum_over_batch_size", 0.0),
    (True, "sum", 0.0),
    (True, "mean", 0.1),
    (False, "sum", 0.2),
]
CONFIG_IDS = [f"{'w' if w else 'nw'}-{r}-eps{e}" for w, r, e in CONFIGS]


def _labels(kind, n, c, rng):
    if kind in ("int32", "int64", "uint8"):
        return rng.integers(0, min(c, 256), n).astype(kind)
    if kind == "onehot":
        return np.eye(c)[rng.integers(0, c, n)]
    y = rng.random((n, c)) + 1e-3
    if kind == "soft":
        return y / y.sum(axis=1, keepdims=True)
    return y  # "unnormalised": rows that do not sum to 1


def _weights(n, rng):
    w = rng.random(n) * 2.0
    if n > 2:
        w[n // 2] = 0.0  # a zero weight is valid
    return w


def _xent(backend, z, labels, w=None, **kw):
    return fd.ops.softmax_cross_entropy(to_backend(z, backend), to_backend(labels, backend),
                                        sample_weight=to_backend(w, backend), **kw)


def _assert_grad_close(grad, ref, rtol, w, reduction):
    """As assert_scaled_close, with the scale at least max_i w_i / D: a gradient
    entry is a difference of terms of that size (softmax(z) sum(y') - y'), so
    where it is 0 exactly (one class: always) rounding leaves a few ulps of
    that size, not of 0."""
    n = ref.shape[0]
    size = (1.0 if w is None else float(np.max(w))) / (n if reduction != "sum" else 1)
    actual = to_numpy(grad).astype(np.float64)
    assert actual.shape == ref.shape
    err = float(np.max(np.abs(actual - ref))) / max(float(np.max(np.abs(ref))), size, 1e-300)
    assert err <= rtol, f"grad: scaled error {err:.3e} > {rtol:.0e}"


def _check_outputs(loss, grad, like, dtype):
    assert type(loss) is type(like) and loss.shape == () and loss.dtype == np.float64
    assert type(grad) is type(like) and grad.shape == like.shape and grad.dtype == dtype


# ------------------------------------------------------------- softmax CE


@pytest.mark.parametrize("weighted,reduction,eps", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("kind", LABEL_KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", XENT_SHAPES, ids=str)
def test_softmax_ce_matches_reference(backend, shape, dtype, kind, weighted, reduction, eps):
    rng = np.random.default_rng(sum(shape))
    n, c = shape
    z = (rng.standard_normal(shape) * 3).astype(dtype)
    labels = _labels(kind, n, c, rng)
    w = _weights(n, rng) if weighted else None
    zb = to_backend(z, backend)
    loss, grad = fd.ops.softmax_cross_entropy(zb, to_backend(labels, backend),
                                              sample_weight=to_backend(w, backend),
                                              label_smoothing=eps, reduction=reduction)
    _check_outputs(loss, grad, zb, dtype)
    ref_loss, ref_grad = R.softmax_cross_entropy(z, labels, w, eps, reduction)
    assert_scaled_close(loss, ref_loss, RTOL[dtype], "loss")
    _assert_grad_close(grad, ref_grad, RTOL[dtype], w, reduction)


@pytest.mark.parametrize("weighted,reduction,eps", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("kind", ["int64", "onehot", "soft", "unnormalised"])
def test_softmax_ce_gradient_is_the_derivative_of_the_loss(backend, kind, weighted, reduction,
                                                           eps):
    rng = np.random.default_rng(3)
    n, c = 3, 5
    z = rng.standard_normal((n, c)) * 2
    labels = _labels(kind, n, c, rng)
    w = _weights(n, rng) + 0.5 if weighted else None
    kw = dict(label_smoothing=eps, reduction=reduction)
    loss, grad = _xent(backend, z, labels, w, **kw)
    h = 1e-6  # central differences: rounding noise ~1e-16 |loss| / h
    fd_grad = np.empty_like(z)
    for idx in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += h
        zm[idx] -= h
        fd_grad[idx] = (float(_xent(backend, zp, labels, w, **kw)[0]) -
                        float(_xent(backend, zm, labels, w, **kw)[0])) / (2 * h)
    atol = 1e-8 * max(1.0, abs(float(loss)))
    np.testing.assert_allclose(to_numpy(grad), fd_grad, rtol=1e-6, atol=atol)


@pytest.mark.parametrize("kind", ["int64", "soft"])
def test_softmax_ce_matches_torch(backend, kind):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    z = rng.standard_normal((37, 11)) * 2
    labels = _labels(kind, 37, 11, rng)
    loss, grad = _xent(backend, z, labels, label_smoothing=0.15)
    zt = torch.tensor(z, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(zt, torch.tensor(labels), label_smoothing=0.15)
    ref.backward()
    assert abs(float(loss) - ref.item()) <= 1e-12 * abs(ref.item())
    assert_scaled_close(grad, zt.grad.numpy(), 1e-12, "grad")


@pytest.mark.parametrize("c", [4, 2500])  # a warp per row / a block per row on CUDA
def test_softmax_ce_large_logits_stay_finite(backend, c):
    rng = np.random.default_rng(5)
    z = rng.choice(np.array([-1e4, -9990.0, 0.0, 5e3, 1e4]), size=(6, c)).astype(np.float32)
    z[0, :] = -1e4  # all equal and very negative: uniform softmax
    z[1, :] = 1e4
    z[2, 0], z[2, 1:] = 1e4, -1e4  # one class dominates completely
    labels = np.array([0, 1, 0, 1, 2, 3]) % c
    for eps in (0.0, 0.1):
        loss, grad = _xent(backend, z, labels, label_smoothing=eps)
        assert np.isfinite(float(loss)) and np.all(np.isfinite(to_numpy(grad)))
        ref_loss, ref_grad = R.softmax_cross_entropy(z, labels, label_smoothing=eps)
        assert ref_loss > 1e3  # the wrong-class rows cost ~2e4: this is no trivial case
        assert_scaled_close(loss, ref_loss, 1e-6, "loss")
        assert_scaled_close(grad, ref_grad, 1e-5, "grad")


@pytest.mark.parametrize("c", [6, 2500])
def test_softmax_ce_masked_class_is_exactly_excluded(backend, c):
    """A -inf logit (a masked class) has probability 0: without smoothing the
    loss is that of the other classes and the gradient there is exactly 0;
    with smoothing, which gives the masked class label mass, the loss is
    +inf."""
    rng = np.random.default_rng(11)
    z = rng.standard_normal((5, c)).astype(np.float32)
    masked = np.zeros(c, bool)
    masked[[1, c - 1]] = True
    z[:, masked] = -np.inf
    z[4, :] = -np.inf  # the row's max is one finite logit
    z[4, 2] = 3.0
    labels = np.array([0, 2, 3, 0, 2]) % c
    assert not masked[labels].any()
    loss, grad = _xent(backend, z, labels)
    grad = to_numpy(grad)
    # the reference row by row over its finite logits (the masked ones drop out)
    ref_loss, ref_grad = 0.0, np.zeros(z.shape)
    for i in range(z.shape[0]):
        keep = np.flatnonzero(np.isfinite(z[i]))
        li, gi = R.softmax_cross_entropy(z[i:i + 1, keep], np.searchsorted(keep, labels[i:i + 1]))
        ref_loss += li / z.shape[0]
        ref_grad[i, keep] = gi[0] / z.shape[0]
    assert_scaled_close(loss, ref_loss, 1e-6, "loss")
    assert np.all(grad[~np.isfinite(z)] == 0.0)
    assert_scaled_close(grad, ref_grad, 1e-5, "grad")
    loss, grad = _xent(backend, z, labels, label_smoothing=0.1)
    assert float(loss) == np.inf and np.all(np.isfinite(to_numpy(grad)))


@pytest.mark.parametrize("c", [6, 2500])
@pytest.mark.parametrize("kind", ["int32", "soft"])
def test_softmax_ce_nan_logit_poisons_only_its_row(backend, kind, c):
    rng = np.random.default_rng(6)
    z = rng.standard_normal((4, c)).astype(np.float32)
    z[1, 2] = np.nan
    labels = _labels(kind, 4, c, rng)
    loss, grad = _xent(backend, z, labels)
    grad = to_numpy(grad)
    assert np.isnan(float(loss))
    assert np.all(np.isnan(grad[1]))
    keep = [0, 2, 3]
    _, ref_grad = R.softmax_cross_entropy(z[keep], labels[keep])
    assert_scaled_close(grad[keep], ref_grad * 3 / 4, 1e-5, "other rows")  # D = 4, not 3


@pytest.mark.parametrize("c", [10, 2500])
@pytest.mark.parametrize("dtype", ["int32", "int64", "uint8", "uint64"])
def test_softmax_ce_unchecked_bad_label_gives_nan_row(backend, dtype, c):
    rng = np.random.default_rng(7)
    n = 5
    z = rng.standard_normal((n, c)).astype(np.float32)
    good = rng.integers(0, min(c, 200), n)
    bad_value = {"int32": -3, "int64": 2**40, "uint8": 255, "uint64": 2**63 + 5}[dtype]
    bad_row = 3
    labels = good.astype(dtype)
    labels[bad_row] = bad_value
    if c > 255 and dtype == "uint8":
        pytest.skip("255 is a valid class here")
    loss, grad = _xent(backend, z, labels, check_labels=False)
    grad = to_numpy(grad)
    assert np.isnan(float(loss))
    assert np.all(np.isnan(grad[bad_row]))
    keep = [i for i in range(n) if i != bad_row]
    _, ref_grad = R.softmax_cross_entropy(z[keep], good[keep])
    assert_scaled_close(grad[keep], ref_grad * (n - 1) / n, 1e-5, "other rows")
    with pytest.raises(ValueError, match=rf"labels\[{bad_row}\] = {bad_value} is out of range"):
        _xent(backend, z, labels)


def test_softmax_ce_empty_batch(backend):
    for labels in (np.zeros(0, np.int64), np.zeros((0, 4))):
        loss, grad = _xent(backend, np.zeros((0, 4), np.float32), labels)
        assert float(loss) == 0.0 and grad.shape == (0, 4)


def test_softmax_ce_accepts_noncontiguous_inputs(backend):
    rng = np.random.default_rng(8)
    z = rng.standard_normal((12, 9))
    labels = rng.integers(0, 9, 24)[::2]
    w = rng.random(24)[::2]
    loss, grad = _xent(backend, z.T.copy().T, labels, w)  # Fortran order
    ref_loss, ref_grad = R.softmax_cross_entropy(z, labels, w)
    assert_scaled_close(loss, ref_loss, 1e-12, "loss")
    assert_scaled_close(grad, ref_grad, 1e-12, "grad")


# --------------------------------------------------------- point losses

POINT = {
    "bce": (fd.ops.sigmoid_binary_cross_entropy, R.sigmoid_binary_cross_entropy),
    "mse": (fd.ops.mean_squared_error, R.mean_squared_error),
}


def _targets(kind, shape, rng):
    if kind == "float":
        return rng.random(shape)
    if kind == "int":
        return rng.integers(0, 2, shape).astype(np.int32)
    return rng.random(shape) < 0.5  # bool


def _point(backend, name, p, t, w=None, **kw):
    return POINT[name][0](to_backend(p, backend), to_backend(t, backend),
                          sample_weight=to_backend(w, backend), **kw)


@pytest.mark.parametrize("weighted,reduction", [(False, "sum_over_batch_size"), (True, "sum"),
                                                (True, "mean"), (False, "sum")])
@pytest.mark.parametrize("target_kind", ["float", "int", "bool"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", POINT_SHAPES, ids=str)
@pytest.mark.parametrize("name", ["bce", "mse"])
def test_point_loss_matches_reference(backend, name, shape, dtype, target_kind, weighted,
                                      reduction):
    rng = np.random.default_rng(sum(shape) + 1)
    p = (rng.standard_normal(shape) * 3).astype(dtype)
    t = _targets(target_kind, shape, rng)
    w = _weights(shape[0], rng) if weighted else None
    pb = to_backend(p, backend)
    loss, grad = POINT[name][0](pb, to_backend(t, backend), sample_weight=to_backend(w, backend),
                                reduction=reduction)
    _check_outputs(loss, grad, pb, dtype)
    ref_loss, ref_grad = POINT[name][1](p, t, w, reduction)
    assert_scaled_close(loss, ref_loss, RTOL[dtype], "loss")
    assert_scaled_close(grad, ref_grad, RTOL[dtype], "grad")


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum"])
@pytest.mark.parametrize("shape", [(4,), (3, 5)], ids=str)
@pytest.mark.parametrize("name", ["bce", "mse"])
def test_point_loss_gradient_is_the_derivative_of_the_loss(backend, name, shape, reduction):
    rng = np.random.default_rng(9)
    p = rng.standard_normal(shape) * 2
    t = rng.random(shape)
    w = rng.random(shape[0]) + 0.5
    loss, grad = _point(backend, name, p, t, w, reduction=reduction)
    h = 1e-6
    fd_grad = np.empty_like(p)
    for idx in np.ndindex(p.shape):
        pp, pm = p.copy(), p.copy()
        pp[idx] += h
        pm[idx] -= h
        fd_grad[idx] = (float(_point(backend, name, pp, t, w, reduction=reduction)[0]) -
                        float(_point(backend, name, pm, t, w, reduction=reduction)[0])) / (2 * h)
    atol = 1e-8 * max(1.0, abs(float(loss)))
    np.testing.assert_allclose(to_numpy(grad), fd_grad, rtol=1e-6, atol=atol)


@pytest.mark.parametrize("name", ["bce", "mse"])
def test_point_loss_matches_torch(backend, name):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(10)
    p, t = rng.standard_normal((29, 6)) * 2, rng.random((29, 6))
    loss, grad = _point(backend, name, p, t)
    pt = torch.tensor(p, requires_grad=True)
    f = (torch.nn.functional.binary_cross_entropy_with_logits if name == "bce"
         else torch.nn.functional.mse_loss)
    ref = f(pt, torch.tensor(t))
    ref.backward()
    assert abs(float(loss) - ref.item()) <= 1e-12 * abs(ref.item())
    assert_scaled_close(grad, pt.grad.numpy(), 1e-12, "grad")


def test_bce_large_logits_stay_finite(backend):
    z = np.array([[-1e4, 1e4, -1e4, 1e4, 0.0, 88.0, -88.0]], np.float32)
    y = np.array([[0.0, 1.0, 1.0, 0.0, 0.5, 0.3, 0.7]], np.float32)
    loss, grad = _point(backend, "bce", z, y)
    assert np.isfinite(float(loss)) and np.all(np.isfinite(to_numpy(grad)))
    ref_loss, ref_grad = R.sigmoid_binary_cross_entropy(z, y)
    assert ref_loss > 1e3
    assert_scaled_close(loss, ref_loss, 1e-6, "loss")
    assert_scaled_close(grad, ref_grad, 1e-6, "grad")


def test_bce_float32_accurate_across_the_logit_range(backend):
    """The float32 exponential and log1p of the binary cross-entropy, element
    by element: the gradient sigmoid(z) (target 0) within 4e-7 of its value
    for every z down to where it leaves the normal floats, and the loss
    log1p(e^z) (z < 0, target 0) within 4e-7 per band of magnitudes and for
    single tiny terms."""
    z = np.concatenate([-np.logspace(-30, np.log10(87.0), 3000), np.logspace(-30, 2, 3000),
                        np.array([0.0, -0.3465, -0.6931, -1.0, -20.0, -80.0])]).astype(np.float32)
    y = np.zeros_like(z)
    _, grad = _point(backend, "bce", z, y, reduction="sum")
    ref = R.sigmoid(z.astype(np.float64))
    err = np.abs(to_numpy(grad).astype(np.float64) - ref) / ref
    worst = int(np.argmax(err))
    assert err[worst] <= 4e-7, f"z={z[worst]!r}: {to_numpy(grad)[worst]!r} vs {ref[worst]!r}"
    for lo, hi in [(-1e-30, -1e-3), (-1e-3, -1.0), (-1.0, -10.0), (-10.0, -87.0)]:
        zb = np.linspace(lo, hi, 1001).astype(np.float32)
        loss, _ = _point(backend, "bce", zb, np.zeros_like(zb), reduction="sum")
        ref_loss = float(np.log1p(np.exp(zb.astype(np.float64))).sum())
        assert abs(float(loss) - ref_loss) <= 4e-7 * ref_loss, (lo, hi)
    for zi in [-1e-20, -1e-7, -40.0, -85.0]:
        zb = np.array([zi], np.float32)
        loss, _ = _point(backend, "bce", zb, np.zeros(1, np.float32), reduction="sum")
        ref_loss = float(np.log1p(np.exp(np.float64(zb[0]))))
        assert abs(float(loss) - ref_loss) <= 4e-7 * ref_loss, zi


@pytest.mark.parametrize("name", ["bce", "mse"])
def test_point_loss_nan_poisons_only_its_element(backend, name):
    p = np.array([[0.5, np.nan, -1.0], [2.0, 0.1, -0.3]], np.float32)
    t = np.full(p.shape, 0.25, np.float32)
    loss, grad = _point(backend, name, p, t)
    grad = to_numpy(grad)
    assert np.isnan(float(loss)) and np.isnan(grad[0, 1])
    finite = np.isfinite(p)
    assert np.all(np.isfinite(grad[finite]))
    _, ref_grad = POINT[name][1](np.where(finite, p, 0.0), t)
    assert_scaled_close(grad[finite], ref_grad[finite], 1e-5, "other elements")


@pytest.mark.parametrize("name", ["bce", "mse"])
def test_point_loss_empty_batch(backend, name):
    loss, grad = _point(backend, name, np.zeros((0, 3)), np.zeros((0, 3)))
    assert float(loss) == 0.0 and grad.shape == (0, 3)


# ------------------------------------------------------------- bad input

Z = np.zeros((4, 10), np.float32)
LAB = np.array([0, 3, 9, 2])


@pytest.mark.parametrize("labels,match", [
    (np.array([0, 3, 10, 2]), r"labels\[2\] = 10 is out of range for 10 classes \(row 2"),
    (np.array([0, -1, 12, 2]), r"labels\[1\] = -1 is out of range"),
    (np.array([0, 3, 200, 2], np.uint8), r"labels\[2\] = 200 is out of range"),
    (np.array([0, 3, 9, -7], np.int32), r"labels\[3\] = -7 is out of range"),
])
def test_softmax_ce_rejects_out_of_range_labels(backend, labels, match):
    with pytest.raises(ValueError, match=match):
        _xent(backend, Z, labels)


@pytest.mark.parametrize("labels,err,match", [
    (LAB.astype(np.float32), TypeError, r"labels of shape \(4,\) are class indices and need an "
                                        r"integer dtype, got float32"),
    (LAB.astype(np.float64), TypeError, "need an integer dtype, got float64"),
    (LAB > 1, TypeError, "need an integer dtype, got bool"),
    (np.array([0, 1, 2]), ValueError, r"labels has shape \(3,\), expected \(4,\)"),
    (np.zeros((4, 9)), ValueError, r"labels has shape \(4, 9\), expected \(4, 10\)"),
    (np.zeros((5, 10)), ValueError, r"labels has shape \(5, 10\), expected \(4, 10\)"),
    (np.zeros((4, 10, 1)), ValueError, "labels has 3 dims"),
    (np.zeros((4, 10), np.complex64), TypeError, "labels has dtype complex64"),
])
def test_softmax_ce_rejects_bad_labels(backend, labels, err, match):
    with pytest.raises(err, match=match):
        _xent(backend, Z, labels)


@pytest.mark.parametrize("z,err,match", [
    (np.zeros((4, 10), np.int64), TypeError, "logits has dtype int64, expected float32 or float64"),
    (np.zeros((4, 10), np.float16), TypeError, "logits has dtype float16"),
    (np.zeros(4, np.float32), ValueError, "logits has 1 dims, expected 2"),
    (np.zeros((4, 0), np.float32), ValueError, "0 classes"),
])
def test_softmax_ce_rejects_bad_logits(backend, z, err, match):
    with pytest.raises(err, match=match):
        _xent(backend, z, LAB)


W_BAD = [
    (np.ones(5), ValueError, r"sample_weight has shape \(5,\), expected \(4,\)"),
    (np.ones((4, 1)), ValueError, r"sample_weight has shape \(4, 1\), expected \(4,\)"),
    (np.array([1.0, -1.0, 1.0, 1.0]), ValueError, r"sample_weight\[1\] = -1.0 is negative or not"),
    (np.array([1.0, 1.0, np.nan, 1.0]), ValueError, r"sample_weight\[2\] = nan"),
    (np.array([1.0, 1.0, 1.0, np.inf]), ValueError, r"sample_weight\[3\] = inf"),
    (np.array([1, 2, -3, 4]), ValueError, r"sample_weight\[2\] = -3.0"),
    (np.array([1.0, 1e300, 1.0, 1.0]), ValueError, r"sample_weight\[1\] = 1e\+300 \(as float32"),
    (np.ones(4, np.complex128), TypeError, "sample_weight has dtype complex128"),
    (np.ones(4, bool), TypeError, "sample_weight has dtype bool"),
]


@pytest.mark.parametrize("w,err,match", W_BAD)
def test_softmax_ce_rejects_bad_sample_weight(backend, w, err, match):
    with pytest.raises(err, match="softmax_cross_entropy: " + match):
        _xent(backend, Z, LAB, w)


@pytest.mark.parametrize("w,err,match", W_BAD)
@pytest.mark.parametrize("name", ["bce", "mse"])
def test_point_loss_rejects_bad_sample_weight(backend, name, w, err, match):
    with pytest.raises(err, match=match):
        _point(backend, name, Z, np.zeros((4, 10)), w)


@pytest.mark.parametrize("reduction", ["none", "auto", "MEAN", None, 1])
def test_bad_reduction(backend, reduction):
    msg = r"reduction must be 'sum_over_batch_size' \(alias 'mean'\) or 'sum'"
    with pytest.raises(ValueError, match="softmax_cross_entropy: " + msg):
        _xent(backend, Z, LAB, reduction=reduction)
    for name in POINT:
        with pytest.raises(ValueError, match=msg):
            _point(backend, name, Z, Z, reduction=reduction)


@pytest.mark.parametrize("eps,err", [(-0.1, ValueError), (1.5, ValueError),
                                     (float("nan"), ValueError), ("0.1", TypeError),
                                     (None, TypeError), (True, TypeError)])
def test_softmax_ce_rejects_bad_label_smoothing(backend, eps, err):
    with pytest.raises(err, match="softmax_cross_entropy: label_smoothing must be"):
        _xent(backend, Z, LAB, label_smoothing=eps)


def test_softmax_ce_accepts_label_smoothing_bounds(backend):
    for eps in (0, 1, np.float32(0.5)):
        loss, _ = _xent(backend, Z, LAB, label_smoothing=eps)
        assert np.isfinite(float(loss))


def test_non_arrays_are_rejected():
    with pytest.raises(TypeError, match="softmax_cross_entropy: logits must be a numpy.ndarray"):
        fd.ops.softmax_cross_entropy([[0.0, 1.0]], np.array([0]))
    with pytest.raises(TypeError, match="softmax_cross_entropy: labels must be a numpy.ndarray"):
        fd.ops.softmax_cross_entropy(Z, [0, 1, 2, 3])
    with pytest.raises(TypeError, match="mean_squared_error: y_true must be a numpy.ndarray"):
        fd.ops.mean_squared_error(Z, 0.0)
    with pytest.raises(TypeError, match="softmax_cross_entropy: labels must be .* got None"):
        fd.ops.softmax_cross_entropy(Z, None)
    with pytest.raises(TypeError, match="sigmoid_binary_cross_entropy: logits must be .* got None"):
        fd.ops.sigmoid_binary_cross_entropy(None, Z)


@pytest.mark.parametrize("name,pred,target", [("bce", "logits", "labels"),
                                              ("mse", "y_pred", "y_true")])
def test_point_loss_rejects_bad_shapes_and_dtypes(backend, name, pred, target):
    cases = [
        (Z, np.zeros((4, 9)), ValueError,
         rf"{target} has shape \(4, 9\), expected \(4, 10\) \(the shape of {pred}\)"),
        (Z[:, 0], np.zeros((4, 1)), ValueError, rf"{target} has shape \(4, 1\), expected \(4,\)"),
        (np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), ValueError, f"{pred} has 3 dims"),
        (np.zeros((4, 0)), np.zeros((4, 0)), ValueError, "0 outputs per sample"),
        (np.zeros((4, 10), np.int32), Z, TypeError, f"{pred} has dtype int32"),
        (Z, np.zeros((4, 10), np.complex64), TypeError, f"{target} has dtype complex64"),
    ]
    for p, t, err, match in cases:
        with pytest.raises(err, match=match):
            _point(backend, name, p, t)


# -------------------------------------------------- the CPU binding guards


def test_cpu_binding_guards_against_inconsistent_arrays():
    z = np.zeros((4, 10), np.float32)
    lab = np.zeros(4, np.int64)
    y = np.zeros((4, 10), np.float32)
    w = np.ones(4, np.float32)
    bad = [
        ((z, lab[:3], None, None, 0.0, True), ValueError),
        ((z, lab.astype(np.int16), None, None, 0.0, True), TypeError),
        ((z, None, y[:, :9].copy(), None, 0.0, True), ValueError),
        ((z, None, y.astype(np.float64), None, 0.0, True), TypeError),
        ((z, lab, y, None, 0.0, True), ValueError),
        ((z, None, None, None, 0.0, True), ValueError),
        ((z, lab, None, w[:3], 0.0, True), ValueError),
        ((z, lab, None, w.astype(np.float64), 0.0, True), TypeError),
        ((z, lab, None, None, 1.5, True), ValueError),
        ((z, lab, None, None, float("nan"), True), ValueError),
        ((z[:, ::2], lab, None, None, 0.0, True), ValueError),
        ((z[:, :0], lab, None, None, 0.0, True), ValueError),
        ((z.astype(np.int32), lab, None, None, 0.0, True), TypeError),
    ]
    for args, err in bad:
        with pytest.raises(err):
            _C.softmax_cross_entropy(*args)
    bce, mse = _C.PointLoss.SigmoidBCE, _C.PointLoss.MSE
    bad = [
        ((bce, z, y[:3], None, True), ValueError),
        ((bce, z, y.astype(np.float64), None, True), TypeError),
        ((mse, z, y, w[:2], True), ValueError),
        ((_C.PointLoss(2), z, y, None, True), ValueError),
        ((_C.PointLoss(-1), z, y, None, True), ValueError),
        ((0, z, y, None, True), TypeError),  # a number is not a loss
        ((bce, z[:, ::2], y[:, ::2], None, True), ValueError),
        ((bce, np.zeros((2, 2, 2), np.float32), np.zeros((2, 2, 2), np.float32), None, True),
         ValueError),
    ]
    for args, err in bad:
        with pytest.raises(err):
            _C.point_loss(*args)


# ------------------------------------------- the CUDA calling contract


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_loss_entry_points_are_called_correctly(dtype):
    """Well-formed calls get through the binding's checks to the CUDA runtime,
    which fails there without a GPU (RuntimeError, not TypeError/ValueError)."""
    mod = _cuda_module()
    from fusednn._backend import CUDABackend

    be = CUDABackend(mod, _FakeCupy)
    z = _FakeArray((5, 7), dtype)
    w = _FakeArray((5,), dtype)
    calls = [
        lambda: be.softmax_cross_entropy(z, _FakeArray((5,), np.int32), None, w, 0.1, True),
        lambda: be.softmax_cross_entropy(z, _FakeArray((5,), np.int64), None, None, 0.0,
                                         False),
        lambda: be.softmax_cross_entropy(z, None, _FakeArray((5, 7), dtype), w, 0.0, True),
        lambda: be.point_loss(_C.PointLoss.SigmoidBCE, z, _FakeArray((5, 7), dtype), w, True),
        lambda: be.point_loss(_C.PointLoss.MSE, _FakeArray((5,), dtype), _FakeArray((5,), dtype),
                              None, False),
    ]
    for call in calls:
        with pytest.raises(RuntimeError, match="CUDA error"):
            call()


def test_cuda_binding_guards_against_inconsistent_arguments():
    """The CUDA module's own guards, the arrays given as device memory."""
    mod = _cuda_module()
    from fusednn._backend import CUDABackend

    CUDABackend(mod, _FakeCupy)

    def f(shape, dtype=np.float32):
        return _FakeArray(shape, dtype)

    z, lab = f((4, 10)), f((4,), np.int64)
    bad = [((f((4, 10), np.float16), lab, None, None, 0.0, True), TypeError),
           ((f((4,)), lab, None, None, 0.0, True), ValueError),
           ((f((4, 0)), lab, None, None, 0.0, True), ValueError),
           ((z, f((3,), np.int64), None, None, 0.0, True), ValueError),
           ((z, f((4,), np.int16), None, None, 0.0, True), TypeError),
           ((z, lab, f((4, 10)), None, 0.0, True), ValueError),
           ((z, None, None, None, 0.0, True), ValueError),
           ((z, None, f((4, 9)), None, 0.0, True), ValueError),
           ((z, lab, None, f((3,)), 0.0, True), ValueError),
           ((z, lab, None, None, -0.5, True), ValueError),
           ((z, lab, None, None, float("nan"), True), ValueError)]
    for args, err in bad:
        with pytest.raises(err):
            mod.softmax_cross_entropy(*args)
    p = f((4, 3), np.float64)
    bce = _C.PointLoss.SigmoidBCE
    bad = [((_C.PointLoss(2), p, p, None, True), ValueError),
           ((_C.PointLoss(-1), p, p, None, True), ValueError),
           ((bce, p, f((4, 2), np.float64), None, True), ValueError),
           ((bce, f((4, 0), np.float64), f((4, 0), np.float64), None, True), ValueError),
           ((bce, p, p, f((5,), np.float64), True), ValueError),
           ((bce, f((4, 3), np.int32), f((4, 3), np.int32), None, True), TypeError),
           ((0, p, p, None, True), TypeError)]  # a number is not a loss
    for args, err in bad:
        with pytest.raises(err):
            mod.point_loss(*args)
