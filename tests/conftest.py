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

# cuBLASLt documents no error bound for its GELU epilogue. Its tanh is taken to
# be the hardware approximation (tanh.approx.f32, relative error 2^-10.987), so
# 0.5 z (1 + tanh u) is off by up to 0.5 |z| 2^-11 against a largest |y| of
# about max |z|: 2^-10 bounds the scaled error with margin. fusednn's own
# kernels (fd.set_cuda_epilogues(False)) keep the float rounding of RTOL.
GELU_EPILOGUE_RTOL = 2.0 ** -10
_GELU_EPILOGUES = ("GELU_AUX", "GELU_AUX_BIAS", "DGELU", "DGELU_BGRAD")


def epilogue_counts(backend):
    """Counts to pass to epilogue_rtol after the calls under test."""
    return fd.cuda_epilogue_counts() if backend == "cuda" else None


def epilogue_rtol(before, rtol):
    """rtol, or the GELU epilogue's tolerance if cuBLASLt's GELU epilogue ran
    since the counts `before` (from epilogue_counts)."""
    if before is None:
        return rtol
    after = fd.cuda_epilogue_counts()
    ran = sum(after[k]["used"] - before[k]["used"] for k in _GELU_EPILOGUES)
    return max(rtol, GELU_EPILOGUE_RTOL) if ran else rtol

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
