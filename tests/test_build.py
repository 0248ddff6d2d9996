import os

import numpy as np

import fusednn as fd


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
            assert "pip install 'fusednn[cuda]'" in info["cuda_status"], info
            assert not info["cuda_usable"]
        else:
            assert info["cublaslt_version"] > 0, info
    if not info["cuda_usable"]:
        assert info["cuda_status"]


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
