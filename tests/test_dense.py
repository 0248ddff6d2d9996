import numpy as np
import pytest

import fusednn as fd
from fusednn.testing import reference as R

from conftest import (ACT_IDS, ACTIVATIONS, RTOL, assert_scaled_close, epilogue_counts,
                      epilogue_rtol, to_backend, to_numpy)

# (batch, in, units): 1x1, batch 1, odd sizes, and the large shapes of the issue.
SHAPES = [(1, 1, 1), (3, 17, 5), (1, 64, 33), (17, 3, 1)]
LARGE = [(1000, 4097, 7), (1000, 37, 4097)]


def _data(shape, dtype, bias, seed=0):
    batch, n_in, units = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, n_in)).astype(dtype)
    w = (rng.standard_normal((n_in, units)) * (2.0 / n_in) ** 0.5).astype(dtype)
    b = rng.standard_normal(units).astype(dtype) * 0.5 if bias else None
    dy = rng.standard_normal((batch, units)).astype(dtype)
    return x, w, b, dy


def _check(backend, shape, dtype, bias, name, params, rtol=None):
    x, w, b, dy = _data(shape, dtype, bias)
    rtol = RTOL[dtype] if rtol is None else rtol
    before = epilogue_counts(backend)
    y, ctx = fd.ops.dense_forward(to_backend(x, backend), to_backend(w, backend),
                                  to_backend(b, backend), name, **params)
    dx, dw, db = fd.ops.dense_backward(to_backend(dy, backend), ctx)
    rtol = epilogue_rtol(before, rtol)
    assert y.dtype == dtype
    assert_scaled_close(y, R.dense_forward(x, w, b, name, **params)[0], rtol, "y")
    rdx, rdw, rdb = R.dense_backward(dy, x, w, b, name, **params)
    assert_scaled_close(dx, rdx, rtol, "dx")
    assert_scaled_close(dw, rdw, rtol, "dw")
    if bias:
        assert_scaled_close(db, rdb, rtol, "db")
    else:
        assert db is None


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,params", ACTIVATIONS, ids=ACT_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_reference(backend, shape, name, params, dtype, bias):
    _check(backend, shape, dtype, bias, name, params)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,params", [("linear", {}), ("relu", {}), ("elu", {}),
                                         ("gelu", {}), ("gelu", {"approximate": True})],
                         ids=["linear", "relu", "elu", "gelu", "gelu-tanh"])
@pytest.mark.parametrize("shape", LARGE, ids=lambda s: "x".join(map(str, s)))
def test_large_shapes(backend, shape, name, params, dtype):
    _check(backend, shape, dtype, True, name, params)


@pytest.mark.parametrize("block_rows", [1, 7, 64, 1000])
def test_cpu_row_blocks_agree(block_rows):
    """The row-blocked CPU epilogue gives the same result for any block size
    (up to GEMM rounding: OpenBLAS picks other kernels for other row counts)."""
    from fusednn import _C

    x, w, b, _ = _data((1000, 31, 45), np.float64, True)
    spec = fd.activations.get("mish")
    y_ref, z_ref, _ = _C.dense_forward(x, w, b, spec.kind, spec.alpha, block_rows=1000)
    y, z, _ = _C.dense_forward(x, w, b, spec.kind, spec.alpha, block_rows=block_rows)
    np.testing.assert_allclose(y, y_ref, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(z, z_ref, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("name,params", ACTIVATIONS, ids=ACT_IDS)
def test_backward_matches_finite_differences(backend, name, params, bias):
    """Central differences of L = sum(dy * y) in float64 w.r.t. x, w and b."""
    x, w, b, dy = _data((4, 5, 3), np.float64, bias, seed=7)
    # keep pre-activations away from the kinks of relu & co.
    z = x @ w + (b if bias else 0)
    x[np.abs(z).min(axis=1) < 1e-3] += 0.01

    def loss(x_, w_, b_):
        y, _ = fd.ops.dense_forward(to_backend(x_, backend), to_backend(w_, backend),
                                    to_backend(b_, backend), name, **params)
        return float(np.sum(to_numpy(y) * dy))

    _, ctx = fd.ops.dense_forward(to_backend(x, backend), to_backend(w, backend),
                                  to_backend(b, backend), name, **params)
    dx, dw, db = (to_numpy(g) for g in fd.ops.dense_backward(to_backend(dy, backend), ctx))
    h = 1e-6
    for arr, grad in [(x, dx), (w, dw)] + ([(b, db)] if bias else []):
        num = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + h
            up = loss(x, w, b)
            arr[i] = old - h
            down = loss(x, w, b)
            arr[i] = old
            num[i] = (up - down) / (2 * h)
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-7)


def test_need_dx_false_skips_input_gradient(backend):
    x, w, b, dy = _data((5, 4, 3), np.float32, True)
    _, ctx = fd.ops.dense_forward(to_backend(x, backend), to_backend(w, backend),
                                  to_backend(b, backend), "elu")
    dx, dw, db = fd.ops.dense_backward(to_backend(dy, backend), ctx, need_dx=False)
    assert dx is None
    rdx, rdw, rdb = R.dense_backward(dy, x, w, b, "elu")
    assert_scaled_close(dw, rdw, 1e-5)
    assert_scaled_close(db, rdb, 1e-5)


@pytest.mark.parametrize("layout", ["fortran", "strided", "transposed_w"])
def test_non_contiguous_inputs(backend, layout):
    x, w, b, dy = _data((9, 6, 5), np.float64, True)
    if layout == "fortran":
        xi, wi = np.asfortranarray(x), np.asfortranarray(w)
    elif layout == "strided":
        xi = np.repeat(x, 2, axis=1)[:, ::2]
        wi = np.repeat(w, 2, axis=0)[::2]
    else:
        xi, wi = x, np.ascontiguousarray(w.T).T
    assert not (xi.flags.c_contiguous and wi.flags.c_contiguous)
    y, ctx = fd.ops.dense_forward(to_backend(xi, backend), to_backend(wi, backend),
                                  to_backend(b, backend), "tanh")
    assert_scaled_close(y, R.dense_forward(x, w, b, "tanh")[0], 1e-12)
    dyi = np.asfortranarray(dy)
    dx, dw, db = fd.ops.dense_backward(to_backend(dyi, backend), ctx)
    rdx, rdw, rdb = R.dense_backward(dy, x, w, b, "tanh")
    assert_scaled_close(dx, rdx, 1e-12)
    assert_scaled_close(dw, rdw, 1e-12)


def test_empty_batch(backend):
    x, w, b, _ = _data((0, 4, 3), np.float32, True)
    y, ctx = fd.ops.dense_forward(to_backend(x, backend), to_backend(w, backend),
                                  to_backend(b, backend), "relu")
    assert y.shape == (0, 3)
    dx, dw, db = fd.ops.dense_backward(to_backend(np.zeros((0, 3), np.float32), backend), ctx)
    assert dx.shape == (0, 4)
    np.testing.assert_array_equal(to_numpy(dw), 0)
    np.testing.assert_array_equal(to_numpy(db), 0)


@pytest.mark.parametrize("name", ["linear", "elu", "gelu", "sigmoid", "relu"])
def test_nan_propagates_without_crash(backend, name):
    x, w, b, dy = _data((4, 6, 5), np.float32, True)
    x[1, 2] = np.nan
    y, ctx = fd.ops.dense_forward(to_backend(x, backend), to_backend(w, backend),
                                  to_backend(b, backend), name)
    dx, dw, db = (to_numpy(g) for g in fd.ops.dense_backward(to_backend(dy, backend), ctx))
    y = to_numpy(y)
    assert np.all(np.isfinite(np.delete(y, 1, axis=0)))
    if backend == "cpu" or name != "relu":  # cuBLASLt's relu epilogue may map NaN to 0
        assert np.all(np.isnan(y[1]))
        assert np.isnan(dw).any()


def test_tf32_precision_setting(backend):
    assert fd.get_float32_matmul_precision() == "highest"
    fd.set_float32_matmul_precision("high")
    try:
        # TF32 has a 10-bit mantissa: results are close, not float32-exact.
        _check(backend, (64, 256, 32), np.float32, True, "relu", {}, rtol=5e-3)
    finally:
        fd.set_float32_matmul_precision("highest")
    with pytest.raises(ValueError, match="precision must be"):
        fd.set_float32_matmul_precision("medium")


# ---------------------------------------------------------------- bad input

F32 = np.float32


def _ok():
    return np.zeros((4, 3), F32), np.zeros((3, 2), F32), np.zeros(2, F32)


@pytest.mark.parametrize("args,exc,match", [
    ((np.zeros((2, 4, 3), F32), np.zeros((3, 2), F32)), ValueError,
     r"dense_forward: x has 3 dims, expected 2 \(batch, features\)"),
    ((np.zeros(3, F32), np.zeros((3, 2), F32)), ValueError, "x has 1 dims, expected 2"),
    ((np.zeros((4, 3), F32), np.zeros(3, F32)), ValueError, "w has 1 dims, expected 2"),
    ((np.zeros((4, 3), F32), np.zeros((5, 2), F32)), ValueError,
     r"w has shape \(5, 2\) but x has 3 features; expected w of shape \(3, units\)"),
    ((np.zeros((4, 3), F32), np.zeros((3, 2), F32), np.zeros(3, F32)), ValueError,
     r"b has shape \(3,\), expected \(2,\)"),
    ((np.zeros((4, 3), F32), np.zeros((3, 2), F32), np.zeros((1, 2), F32)), ValueError,
     "b has 2 dims, expected 1"),
    ((np.zeros((4, 3), np.int64), np.zeros((3, 2), F32)), TypeError,
     "x has dtype int64, expected float32 or float64"),
    ((np.zeros((4, 3), np.float16), np.zeros((3, 2), np.float16)), TypeError,
     "x has dtype float16"),
    ((np.zeros((4, 3), F32), np.zeros((3, 2), np.float64)), TypeError,
     "w has dtype float64 but the other inputs are float32"),
    ((np.zeros((4, 3), F32), np.zeros((3, 2), F32), np.zeros(2, np.int32)), TypeError,
     "b has dtype int32"),
    ((np.zeros((4, 0), F32), np.zeros((0, 2), F32)), ValueError, "x has 0 features"),
    ((np.zeros((4, 3), F32), np.zeros((3, 0), F32)), ValueError, "w has 0 units"),
    (([[1.0, 2.0]], np.zeros((2, 2), F32)), TypeError, "x must be a numpy.ndarray"),
])
def test_bad_forward_input(args, exc, match):
    with pytest.raises(exc, match=match):
        fd.ops.dense_forward(*args)


def test_bad_activation():
    x, w, b = _ok()
    with pytest.raises(ValueError, match="dense_forward: unknown activation 'elux'"):
        fd.ops.dense_forward(x, w, b, "elux")
    with pytest.raises(ValueError, match="takes no parameter alpha"):
        fd.ops.dense_forward(x, w, b, "relu", alpha=0.1)


def test_bad_backward_input():
    x, w, b = _ok()
    _, ctx = fd.ops.dense_forward(x, w, b, "relu")
    with pytest.raises(ValueError, match=r"dy has shape \(4, 3\), expected \(4, 2\)"):
        fd.ops.dense_backward(np.zeros((4, 3), F32), ctx)
    with pytest.raises(ValueError, match="dy has 1 dims"):
        fd.ops.dense_backward(np.zeros(8, F32), ctx)
    with pytest.raises(TypeError, match="dy has dtype float64"):
        fd.ops.dense_backward(np.zeros((4, 2)), ctx)
    with pytest.raises(TypeError, match="ctx must come from dense_forward"):
        fd.ops.dense_backward(np.zeros((4, 2), F32), {"x": x})


class _FakeCupyArray:
    """Looks like a CuPy array to the dispatcher, without needing a GPU."""

    __module__ = "cupy._core.core"
    __cuda_array_interface__ = {}
    dtype = np.dtype(np.float32)


def test_mixed_numpy_cupy_is_type_error():
    x, w, b = _ok()
    with pytest.raises(TypeError, match="mixed NumPy and CuPy inputs"):
        fd.ops.dense_forward(x, _FakeCupyArray(), b)
    with pytest.raises(TypeError, match=r"mixed NumPy and CuPy inputs \(x is CuPy, w is NumPy"):
        fd.ops.dense_forward(_FakeCupyArray(), w)


def test_mixed_with_real_cupy():
    if not fd.has_cuda():
        pytest.skip(f"CUDA backend unavailable: {fd.cuda_status()}")
    import cupy

    x, w, b = _ok()
    with pytest.raises(TypeError, match="mixed NumPy and CuPy"):
        fd.ops.dense_forward(cupy.asarray(x), w, b)


def test_private_module_guards_against_bad_shapes():
    """The binding itself refuses inconsistent arrays instead of reading out of bounds."""
    from fusednn import _C

    Act = _C.Act
    with pytest.raises(ValueError):
        _C.dense_forward(np.zeros((4, 3), F32), np.zeros((5, 2), F32), None, Act.Linear, 0.0)
    with pytest.raises(ValueError):
        _C.dense_backward(np.zeros((4, 3), F32), None, np.zeros((4, 2), F32),
                          np.zeros((2, 2), F32), False, True, Act.Relu, 0.0)
    with pytest.raises(ValueError):
        _C.activation_forward(np.zeros(3, F32), Act(99), 0.0)
    with pytest.raises(TypeError):  # a number is not an activation: the enum is the contract
        _C.activation_forward(np.zeros(3, F32), 1, 0.0)
    with pytest.raises(TypeError):
        _C.dense_forward(np.zeros((4, 3), np.int32), np.zeros((3, 2), np.int32), None,
                         Act.Linear, 0.0)
