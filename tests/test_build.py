import os

import numpy as np
import pytest

import fusednn as fd
from fusednn import _backend


def test_build_info_reports_what_was_built():
    info = fd.build_info()
    assert isinstance(info["cuda_built"], bool)
    assert info["cuda_usable"] == fd.has_cuda()
    assert "OpenBLAS" in info["blas_config"]
    if info["cuda_built"]:
        assert info["cuda_archs"], info
        if "cuda_import_error" in info:
            # built and linked, but cuBLASLt (the [cuda] extra) is not installed here
            assert "libcublasLt" in info["cuda_import_error"], info
            assert not info["cuda_usable"]
            # the driver is probed first: without one, that is what is reported
            assert info["cuda_unavailable"] in ("no-driver", "driver-too-old", "no-gpu",
                                                "no-cublaslt"), info
        else:
            assert info["cublaslt_version"] > 0, info
    if info["cuda_usable"]:
        assert info["cuda_unavailable"] is None
    else:
        assert info["cuda_unavailable"] in _backend._FIXES, info
        assert info["cuda_status"].endswith("to fix: " + _backend._FIXES[info["cuda_unavailable"]])


class _FakeDriver:
    """A stand-in for libcuda.so.1 with a given version and device count."""

    def __init__(self, version, devices, init_error=0):
        self.version, self.devices, self.init_error = version, devices, init_error

    def cuDriverGetVersion(self, ref):  # noqa: N802
        ref._obj.value = self.version
        return 0

    def cuInit(self, flags):  # noqa: N802
        return self.init_error

    def cuDeviceGetCount(self, ref):  # noqa: N802
        ref._obj.value = self.devices
        return 0


@pytest.mark.parametrize("driver,expect", [
    (None, "no-driver"),
    (_FakeDriver(12080, 1), "driver-too-old"),
    (_FakeDriver(13000, 0), "no-gpu"),
    (_FakeDriver(13000, 1, init_error=100), "no-gpu"),
    (_FakeDriver(13020, 1), None),
    (_FakeDriver(14000, 2), None),
])
def test_driver_probe_names_the_missing_piece(monkeypatch, driver, expect):
    """The first missing piece is named: no driver, a driver of an older CUDA
    major version than the build's (13 here), or no device."""
    import ctypes

    def cdll(name):
        assert name == "libcuda.so.1"
        if driver is None:
            raise OSError("libcuda.so.1: cannot open shared object file")
        return driver

    monkeypatch.setattr(ctypes, "CDLL", cdll)
    found = _backend._probe_driver(13)
    if expect is None:
        assert found is None
    else:
        reason, msg = found
        assert reason == expect, msg
        if expect == "driver-too-old":
            assert "CUDA 12.8" in msg and "CUDA 13" in msg, msg


def test_cuda_epilogue_switch():
    assert fd.get_cuda_epilogues() is True
    fd.set_cuda_epilogues(False)
    try:
        assert fd.get_cuda_epilogues() is False
    finally:
        fd.set_cuda_epilogues(True)
    with pytest.raises(TypeError, match="enabled"):
        fd.set_cuda_epilogues("no")
    counts = fd.cuda_epilogue_counts()
    assert isinstance(counts, dict)
    if fd.has_cuda():
        assert {"RELU_AUX_BIAS", "DRELU_BGRAD", "GELU_AUX_BIAS", "BGRADA"} <= set(counts)
    else:
        assert counts == {}


def test_expected_build_flavour():
    """CI sets FUSEDNN_EXPECT_CUDA=1 so that a build that silently dropped CUDA fails."""
    expect = os.environ.get("FUSEDNN_EXPECT_CUDA")
    if expect is None:
        return
    assert fd.build_info()["cuda_built"] == (expect == "1"), fd.build_info()


def test_threads_setting_roundtrip():
    n = fd.num_threads()
    fd.set_num_threads(1)
    try:
        assert fd.num_threads() == 1
        y, _ = fd.ops.dense_forward(np.ones((3, 2), np.float32), np.ones((2, 2), np.float32))
        np.testing.assert_array_equal(y, 2.0)
    finally:
        fd.set_num_threads(n)
