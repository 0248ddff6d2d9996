"""dense_stack_backward (cross-layer fused backward) == dense_backward layer by layer."""

import numpy as np
import pytest

import fusednn as fd
from fusednn.testing import reference as R

from conftest import (ACT_IDS, ACTIVATIONS, RTOL, assert_scaled_close, epilogue_counts,
                      epilogue_rtol, to_backend, to_numpy)


def _stack(backend, dims, acts, dtype, bias, batch, seed=0):
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal((batch, dims[0])).astype(dtype)
    params = []
    for i in range(len(dims) - 1):
        w = (rng.standard_normal((dims[i], dims[i + 1])) * (2.0 / dims[i]) ** 0.5).astype(dtype)
        b = (rng.standard_normal(dims[i + 1]) * 0.3).astype(dtype) if bias else None
        params.append((w, b))
    ctxs, h = [], to_backend(x0, backend)
    for (w, b), (name, p) in zip(params, acts):
        h, c = fd.ops.dense_forward(h, to_backend(w, backend), to_backend(b, backend), name, **p)
        ctxs.append(c)
    dy = rng.standard_normal(h.shape).astype(dtype)
    return x0, params, ctxs, dy


def _reference(x0, params, acts, dy):
    """Chain rule through the float64 reference, layer by layer."""
    hs = [np.asarray(x0, np.float64)]
    for (w, b), (name, p) in zip(params, acts):
        hs.append(R.dense_forward(hs[-1], w, b, name, **p)[0])
    grads, g = [None] * len(params), np.asarray(dy, np.float64)
    for i in range(len(params) - 1, -1, -1):
        (w, b), (name, p) = params[i], acts[i]
        g, dw, db = R.dense_backward(g, hs[i], w, b, name, **p)
        grads[i] = (dw, db)
    return g, grads


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lower", ACTIVATIONS, ids=ACT_IDS)
def test_matches_layer_by_layer_and_reference(backend, lower, dtype, bias):
    acts = [lower, lower, ("elu", {})]
    dims = [13, 24, 17, 5]  # 24: a multiple of 8 (cuBLASLt aux rows), 17: not
    before = epilogue_counts(backend)
    x0, params, ctxs, dy = _stack(backend, dims, acts, dtype, bias, batch=9)
    dx, grads = fd.ops.dense_stack_backward(to_backend(dy, backend), ctxs, need_dx=True)
    rtol = epilogue_rtol(before, RTOL[dtype])

    g = to_backend(dy, backend)
    for i in range(len(ctxs) - 1, -1, -1):  # the unfused path
        g, dw, db = fd.ops.dense_backward(g, ctxs[i])
        assert_scaled_close(grads[i][0], to_numpy(dw), 10 * rtol, f"dw[{i}] vs unfused")
        if bias:
            assert_scaled_close(grads[i][1], to_numpy(db), 10 * rtol, f"db[{i}] vs unfused")
        else:
            assert grads[i][1] is None
    assert_scaled_close(dx, to_numpy(g), 10 * rtol, "dx vs unfused")

    rdx, rgrads = _reference(x0, params, acts, dy)
    assert_scaled_close(dx, rdx, rtol, "dx")
    for i, ((dw, db), (rdw, rdb)) in enumerate(zip(grads, rgrads)):
        assert_scaled_close(dw, rdw, rtol, f"dw[{i}]")
        if bias:
            assert_scaled_close(db, rdb, rtol, f"db[{i}]")


SHAPES = [(1, [1, 1, 1]), (1000, [37, 129, 4097, 3]), (3, [4097, 8, 17])]
SHAPE_IDS = ["tiny", "wide", "deep-in"]


@pytest.mark.parametrize("batch,dims", SHAPES, ids=SHAPE_IDS)
def test_shapes_against_reference(backend, batch, dims):
    # Smooth activations: with relu, a float64 re-computation of the forward
    # puts a few of the 4M pre-activations on the other side of the kink.
    acts = [("elu", {})] * (len(dims) - 2) + [("linear", {})]
    x0, params, ctxs, dy = _stack(backend, dims, acts, np.float32, True, batch)
    dx, grads = fd.ops.dense_stack_backward(to_backend(dy, backend), ctxs, need_dx=True)
    rdx, rgrads = _reference(x0, params, acts, dy)
    assert_scaled_close(dx, rdx, 1e-5, "dx")
    for (dw, db), (rdw, rdb) in zip(grads, rgrads):
        assert_scaled_close(dw, rdw, 1e-5, "dw")
        assert_scaled_close(db, rdb, 1e-5, "db")


@pytest.mark.parametrize("act", [("relu", {}), ("gelu", {"approximate": True})],
                         ids=["relu", "gelu-tanh"])
@pytest.mark.parametrize("batch,dims", SHAPES, ids=SHAPE_IDS)
def test_shapes_against_unfused(backend, batch, dims, act):
    """The cuBLASLt DRELU/DGELU paths (with padded bit-mask rows) at odd sizes."""
    acts = [act] * (len(dims) - 2) + [("linear", {})]
    _, _, ctxs, dy = _stack(backend, dims, acts, np.float32, True, batch)
    before = epilogue_counts(backend)  # the fused backward's DGELU against our own kernel
    dx, grads = fd.ops.dense_stack_backward(to_backend(dy, backend), ctxs, need_dx=True)
    rtol = epilogue_rtol(before, 1e-5)
    g = to_backend(dy, backend)
    for i in range(len(ctxs) - 1, -1, -1):
        g, dw, db = fd.ops.dense_backward(g, ctxs[i])
        assert_scaled_close(grads[i][0], to_numpy(dw), rtol, f"dw[{i}]")
        assert_scaled_close(grads[i][1], to_numpy(db), rtol, f"db[{i}]")
    assert_scaled_close(dx, to_numpy(g), rtol, "dx")


def test_single_layer_and_no_dx(backend):
    acts = [("gelu", {"approximate": True})]
    before = epilogue_counts(backend)
    x0, params, ctxs, dy = _stack(backend, [6, 8], acts, np.float64, True, 4)
    dx, [(dw, db)] = fd.ops.dense_stack_backward(to_backend(dy, backend), ctxs)
    rtol = epilogue_rtol(before, 1e-12)
    assert dx is None
    _, [(rdw, rdb)] = _reference(x0, params, acts, dy)
    assert_scaled_close(dw, rdw, rtol)
    assert_scaled_close(db, rdb, rtol)


def test_bad_input():
    x = np.ones((2, 3), np.float32)
    y1, c1 = fd.ops.dense_forward(x, np.ones((3, 4), np.float32), None, "relu")
    y2, c2 = fd.ops.dense_forward(y1.copy(), np.ones((4, 2), np.float32), None, "relu")
    with pytest.raises(ValueError, match=r"ctxs\[1\].x is not the output of ctxs\[0\]"):
        fd.ops.dense_stack_backward(np.ones((2, 2), np.float32), [c1, c2])
    with pytest.raises(ValueError, match="ctxs is empty"):
        fd.ops.dense_stack_backward(np.ones((2, 2), np.float32), [])
    with pytest.raises(TypeError, match="ctxs must be a list"):
        fd.ops.dense_stack_backward(np.ones((2, 2), np.float32), c2)
    with pytest.raises(TypeError, match=r"ctxs\[0\] must come from dense_forward"):
        fd.ops.dense_stack_backward(np.ones((2, 2), np.float32), [object()])
    with pytest.raises(ValueError, match=r"dy has shape \(2, 3\), expected \(2, 2\)"):
        fd.ops.dense_stack_backward(np.ones((2, 3), np.float32), [c2])
