"""Every kernel test runs on every backend: "cpu" always, "cuda" where a GPU,
the CUDA build and CuPy are all present (skipped cleanly otherwise)."""

import numpy as np
import pytest

import fusednn as fd


@pytest.fixture(params=["cpu", "cuda"])
def backend(request):
    if request.param == "cuda" and not fd.has_cuda():
        pytest.skip(f"CUDA backend unavailable: {fd.cuda_status()}")
    return request.param


def to_backend(a, backend):
    if a is None or backend == "cpu":
        return a
    import cupy

    return cupy.asarray(a)


def to_numpy(a):
    if a is None or isinstance(a, np.ndarray):
        return a
    return a.get()


def assert_scaled_close(actual, ref, rtol, what=""):
    """max |actual - ref| <= rtol * max |ref|: the error scaled by the result's size."""
    actual = to_numpy(actual).astype(np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert actual.shape == ref.shape, f"{what}: shape {actual.shape} != {ref.shape}"
    scale = max(float(np.max(np.abs(ref))) if ref.size else 0.0, 1e-300)
    err = float(np.max(np.abs(actual - ref))) / scale if ref.size else 0.0
    assert err <= rtol, f"{what}: scaled error {err:.3e} > {rtol:.0e}"


RTOL = {np.float32: 1e-5, np.float64: 1e-12}

# (name, params) for every activation and its variants.
ACTIVATIONS = [
    ("linear", {}),
    ("relu", {}),
    ("leaky_relu", {}),
    ("leaky_relu", {"alpha": 0.01}),
    ("elu", {}),
    ("elu", {"alpha": 0.5}),
    ("selu", {}),
    ("gelu", {}),
    ("gelu", {"approximate": True}),
    ("swish", {}),
    ("swish", {"beta": 1.7}),
    ("mish", {}),
    ("sigmoid", {}),
    ("tanh", {}),
    ("softplus", {}),
]
ACT_IDS = [n + "".join(f"-{k}={v}" for k, v in p.items()) for n, p in ACTIVATIONS]
