import numpy as np
import pytest

import fusednn as fd
from fusednn.testing import reference as R

from conftest import ACT_IDS, ACTIVATIONS, RTOL, assert_scaled_close, to_backend, to_numpy


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,params", ACTIVATIONS, ids=ACT_IDS)
@pytest.mark.parametrize("shape", [(1,), (3, 17), (1000, 41), (2, 3, 5)])
def test_matches_reference(backend, name, params, dtype, shape):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    y, ctx = fd.ops.activation_forward(to_backend(x, backend), name, **params)
    assert y.dtype == dtype and y.shape == shape
    assert_scaled_close(y, R.activation(x, name, **params), RTOL[dtype], "forward")
    dx = fd.ops.activation_backward(to_backend(dy, backend), ctx)
    ref = dy.astype(np.float64) * R.activation_grad(x, name, **params)
    assert_scaled_close(dx, ref, RTOL[dtype], "backward")


@pytest.mark.parametrize("name,params", ACTIVATIONS, ids=ACT_IDS)
def test_backward_matches_finite_differences(backend, name, params):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(64) * 2
    x = x[np.abs(x) > 1e-3]  # keep away from the kinks of relu & co.
    dy = rng.standard_normal(x.shape)
    _, ctx = fd.ops.activation_forward(to_backend(x, backend), name, **params)
    dx = to_numpy(fd.ops.activation_backward(to_backend(dy, backend), ctx))
    h = 1e-6
    f = lambda v: to_numpy(fd.ops.activation_forward(to_backend(v, backend), name, **params)[0])
    fd_grad = (f(x + h) - f(x - h)) / (2 * h)
    np.testing.assert_allclose(dx, dy * fd_grad, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name,params", ACTIVATIONS, ids=ACT_IDS)
def test_large_inputs_stay_finite(backend, name, params):
    x = np.array([-1e4, -88.0, -20.0, 0.0, 20.0, 88.0, 1e4], dtype=np.float32)
    y, ctx = fd.ops.activation_forward(to_backend(x, backend), name, **params)
    dx = fd.ops.activation_backward(to_backend(np.ones_like(x), backend), ctx)
    assert np.all(np.isfinite(to_numpy(y))), to_numpy(y)
    assert np.all(np.isfinite(to_numpy(dx))), to_numpy(dx)
    assert_scaled_close(y, R.activation(x, name, **params), 1e-5, "forward")


@pytest.mark.parametrize("name,params", ACTIVATIONS, ids=ACT_IDS)
def test_nan_propagates(backend, name, params):
    x = np.array([np.nan, 1.0, -1.0], dtype=np.float32)
    y, ctx = fd.ops.activation_forward(to_backend(x, backend), name, **params)
    dx = fd.ops.activation_backward(to_backend(np.ones(3, np.float32), backend), ctx)
    y, dx = to_numpy(y), to_numpy(dx)
    assert np.isnan(y[0]) and np.all(np.isfinite(y[1:]))
    if name != "linear":  # linear's derivative does not read x
        assert np.isnan(dx[0])
    assert np.all(np.isfinite(dx[1:]))


def test_elu_float32_accurate_per_element(backend):
    """ELU's expm1 in float32 (the CPU inlines its own) is within 2 ulp of the
    double-precision value at every element, across its whole range: tiny and
    denormal inputs, -0, the saturation near -87, and beyond it."""
    rng = np.random.default_rng(7)
    grids = [-np.logspace(-45, 2.1, 20000), -rng.uniform(0, 1, 20000), -rng.uniform(1, 100, 20000),
             np.array([-0.0, -1e-45, -1e-38, -1e-30, -2.0**-24, -2.0**-25, -0.3465, -0.3466,
                       -0.6931, -86.9, -87.0, -87.1, -88.0, -103.0, -1e30, -np.inf])]
    z = np.concatenate(grids).astype(np.float32)
    y = to_numpy(fd.ops.activation_forward(to_backend(z, backend), "elu")[0])
    ref = np.expm1(z.astype(np.float64))
    err = np.abs(y.astype(np.float64) - ref) / np.maximum(np.abs(ref), np.finfo(np.float32).tiny)
    worst = int(np.argmax(err))
    assert err[worst] <= 2.4e-7, f"z={z[worst]!r}: {y[worst]!r} vs {ref[worst]!r}"
    assert np.all(y[z < -87.5] == -1.0) and np.signbit(y[0])


@pytest.mark.parametrize("name,params,lo,tol", [
    ("sigmoid", {}, -100, 5e-7), ("tanh", {}, -100, 5e-7), ("softplus", {}, -100, 5e-7),
    ("swish", {}, -100, 5e-7), ("mish", {}, -100, 5e-7),
    ("gelu", {"approximate": True}, -4, 2e-6)],
    ids=lambda v: "" if isinstance(v, dict) else str(v))
def test_exp_based_activations_float32_accurate_per_element(backend, name, params, lo, tol):
    """The float32 activations built on exp(-|z|) (sigmoid, softplus, swish,
    mish, gelu_tanh as z sigmoid(2u)) and tanh (from expm1) are within a few
    ulp of the double-precision value at every element, including where the
    value is tiny: no 1 - e or 1 + tanh cancellation. gelu_tanh's own
    conditioning (u = c (z + 0.044715 z^3) carries its rounding into e^2u)
    limits it to 2e-6 from -4 up."""
    rng = np.random.default_rng(8)
    z = np.concatenate([rng.uniform(lo, 100, 40000), np.logspace(-30, 2, 2000),
                        -np.logspace(-30, np.log10(-lo), 2000), [0.0, -0.0]]).astype(np.float32)
    y = to_numpy(fd.ops.activation_forward(to_backend(z, backend), name, **params)[0])
    ref = R.activation(z.astype(np.float64), name, **params)
    y = y.astype(np.float64)
    # exp(-|z|) is 0 where it would be denormal (|z| > 87.5): an absolute
    # error up to max(|z|, 1) 2^-126 is allowed there
    floor = np.maximum(np.abs(z.astype(np.float64)), 1.0) * np.finfo(np.float32).tiny
    err = np.abs(y - ref)
    bad = np.flatnonzero((err > tol * np.abs(ref)) & (err > floor))
    assert bad.size == 0, f"z={z[bad[0]]!r}: {y[bad[0]]!r} vs {ref[bad[0]]!r}"


def test_derivative_from_saved_output_where_possible():
    for name in ["relu", "leaky_relu", "elu", "selu", "sigmoid", "tanh", "softplus"]:
        assert not fd.activations.get(name).saves_input, name
    for name in ["gelu", "swish", "mish"]:
        assert fd.activations.get(name).saves_input, name
    x = np.linspace(-3, 3, 11)
    y, ctx = fd.ops.activation_forward(x, "elu")
    np.testing.assert_array_equal(ctx.saved, y)  # the output itself, bit for bit
    # float64 expm1 comes from glibc's libmvec, whose variant (and last bit)
    # follows the CPU's ISA: 1 ulp from NumPy at x = -1.2 with AVX-512;
    # libmvec documents errors of up to 4 ulp
    np.testing.assert_array_max_ulp(ctx.saved, R.activation(x, "elu"), maxulp=4)


def test_names_and_aliases():
    assert fd.activations.get("silu") == fd.activations.get("swish")
    assert fd.activations.get(None).name == "linear"
    assert fd.activations.get("ReLU").name == "relu"
    assert fd.activations.get("leaky_relu").alpha == 0.2  # Keras' function default
    assert fd.activations.get("gelu", approximate=True).name == "gelu_tanh"
    spec = fd.activations.get("elu", alpha=0.5)
    cfg = spec.get_config()
    assert cfg == {"name": "elu", "alpha": 0.5}
    assert fd.activations.get(cfg.pop("name"), **cfg) == spec  # config round-trips


@pytest.mark.parametrize("bad,exc,match", [
    ("nope", ValueError, "unknown activation 'nope'"),
    (3, TypeError, "activation must be a string"),
    ("softmax", ValueError, "unknown activation"),
])
def test_bad_activation_name(bad, exc, match):
    with pytest.raises(exc, match=match):
        fd.ops.activation_forward(np.zeros(3, np.float32), bad)


@pytest.mark.parametrize("name,params,match", [
    ("relu", {"alpha": 0.1}, "takes no parameter alpha"),
    ("leaky_relu", {"alpha": -0.1}, "alpha >= 0"),
    ("elu", {"alpha": float("nan")}, "finite"),
    ("gelu", {"approximate": 1}, "approximate must be a bool"),
])
def test_bad_activation_params(name, params, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fd.ops.activation_forward(np.zeros(3, np.float32), name, **params)


@pytest.mark.parametrize("dtype", [np.int32, np.float16, np.complex64, bool])
def test_bad_dtype(dtype):
    with pytest.raises(TypeError, match="x has dtype"):
        fd.ops.activation_forward(np.zeros(3, dtype), "relu")


def test_bad_backward_inputs():
    _, ctx = fd.ops.activation_forward(np.zeros((2, 3), np.float32), "relu")
    with pytest.raises(ValueError, match=r"dy has shape \(3, 2\), expected \(2, 3\)"):
        fd.ops.activation_backward(np.zeros((3, 2), np.float32), ctx)
    with pytest.raises(TypeError, match="dy has dtype float64"):
        fd.ops.activation_backward(np.zeros((2, 3)), ctx)
    with pytest.raises(TypeError, match="ctx must come from activation_forward"):
        fd.ops.activation_backward(np.zeros((2, 3), np.float32), object())
    with pytest.raises(TypeError, match="must be a numpy.ndarray"):
        fd.ops.activation_forward([1.0, 2.0], "relu")


def test_non_contiguous_input(backend):
    x = np.random.default_rng(3).standard_normal((8, 10)).astype(np.float32)
    xs = to_backend(x, backend)[:, ::2]
    y, _ = fd.ops.activation_forward(xs, "elu")
    assert_scaled_close(y, R.activation(x[:, ::2], "elu"), 1e-5)
