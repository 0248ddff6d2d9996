"""The host buffer cache behind the CPU ops' large outputs (fusednn.memory).

The cache hands out blocks that held earlier arrays, so every op must write
every element of its outputs: each op here runs once on fresh memory (cache
off) and once on blocks poisoned with NaN, and the results must be equal bit
for bit.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import fusednn as fd
from fusednn import _C

MIB = 1 << 20


@pytest.fixture
def cache():
    """A 256 MiB cache, emptied before and after; the limit restored after."""
    limit = fd.host_cache_info()["limit_bytes"]
    fd.set_host_cache_limit(256)
    fd.empty_cache()
    yield
    fd.empty_cache()
    _C.host_cache_set_limit(limit)


def _poison(max_bytes=24 * MIB, per_size=4):
    """Leaves `per_size` NaN-filled idle blocks of every cached size up to max_bytes."""
    keep = []
    for nbytes in range(2 * MIB, max_bytes + 1, 2 * MIB):
        nan = np.full(nbytes // 4, np.nan, np.float32)
        for _ in range(per_size):
            y, _ = fd.ops.activation_forward(nan, "relu")  # relu passes NaN through
            assert np.isnan(y).all()
            keep.append(y)
    del keep, y


def _fresh_and_poisoned(run):
    """run() with the cache off (fresh pages) and on poisoned blocks."""
    fd.set_host_cache_limit(0)
    fresh = run()
    fd.set_host_cache_limit(256)
    _poison()
    hits = fd.host_cache_info()["hits"]
    poisoned = run()
    assert fd.host_cache_info()["hits"] > hits, "the op did not use the cache"
    return fresh, poisoned


def _flatten(out, depth=0):
    """The arrays in an op's results, its contexts' saved arrays included."""
    if isinstance(out, np.ndarray):
        return [out]
    if depth > 3 or isinstance(out, (str, bytes)):
        return []
    if isinstance(out, (tuple, list)):
        return [a for o in out for a in _flatten(o, depth + 1)]
    if type(out).__module__.startswith("fusednn.ops"):
        fields = vars(out) if hasattr(out, "__dict__") else {
            k: getattr(out, k) for k in getattr(type(out), "__slots__", ())}
        return [a for o in fields.values() for a in _flatten(o, depth + 1)]
    return []


def _assert_same(fresh, poisoned):
    a, b = _flatten(fresh), _flatten(poisoned)
    assert len(a) == len(b) and a
    for x, y in zip(a, b):
        assert x.shape == y.shape and x.dtype == y.dtype
        assert x.tobytes() == y.tobytes()


M, N, K = 1000, 1025, 300


def _data(dtype):
    rng = np.random.default_rng(0)
    return {
        "x": rng.standard_normal((M, N)).astype(dtype),
        "xk": rng.standard_normal((M, K)).astype(dtype),
        "w": (rng.standard_normal((K, N)) * 0.1).astype(dtype),
        "b": rng.standard_normal(N).astype(dtype),
        "dy": rng.standard_normal((M, N)).astype(dtype),
        "g": (1 + 0.1 * rng.standard_normal(N)).astype(dtype),
        "beta": (0.1 * rng.standard_normal(N)).astype(dtype),
        "labels": rng.integers(0, N, M),
        "t": rng.random((M, N)).astype(dtype),
    }


def _bn(d, **kw):
    stats = [np.zeros(N, d["x"].dtype), np.ones(N, d["x"].dtype)]
    y, ctx = fd.ops.batchnorm_forward(d["x"], d["g"], d["beta"], *stats, training=True, **kw)
    return y, ctx, fd.ops.batchnorm_backward(d["dy"], ctx)


def _dense_bn(d, **kw):
    stats = [np.zeros(N, d["x"].dtype), np.ones(N, d["x"].dtype)]
    y, ctx = fd.ops.dense_batchnorm_forward(d["xk"], d["w"], d["b"], d["g"], d["beta"], *stats,
                                            training=True, **kw)
    return y, ctx, fd.ops.dense_batchnorm_backward(d["dy"], ctx)


def _act(d, name):
    y, ctx = fd.ops.activation_forward(d["x"], name)
    return y, fd.ops.activation_backward(d["dy"], ctx)


def _dense(d, name, bias):
    y, ctx = fd.ops.dense_forward(d["xk"], d["w"], d["b"] if bias else None, name)
    return y, ctx, fd.ops.dense_backward(d["dy"], ctx)


def _dropout(d, alpha):
    y, ctx = fd.ops.dropout_forward(d["x"], 0.3, seed=5, step=2, alpha=alpha)
    return y, ctx, fd.ops.dropout_backward(d["dy"], ctx)


OPS = {
    "activation elu": lambda d: _act(d, "elu"),
    "activation gelu": lambda d: _act(d, "gelu"),
    "dense relu": lambda d: _dense(d, "relu", True),
    "dense gelu": lambda d: _dense(d, "gelu", True),
    "dense linear, no bias": lambda d: _dense(d, "linear", False),
    "batchnorm elu dropout": lambda d: _bn(d, activation="elu", dropout=0.2, seed=3, step=1),
    "batchnorm selu alpha dropout": lambda d: _bn(d, activation="selu", dropout=0.1,
                                                  alpha_dropout=True, seed=3, step=1),
    "batchnorm swish": lambda d: _bn(d, activation="swish"),
    "dense_batchnorm relu dropout": lambda d: _dense_bn(d, activation="relu", dropout=0.2,
                                                        seed=1, step=4),
    "dropout": lambda d: _dropout(d, False),
    "alpha dropout": lambda d: _dropout(d, True),
    "softmax cross-entropy": lambda d: fd.ops.softmax_cross_entropy(d["x"], d["labels"]),
    "sigmoid binary cross-entropy": lambda d: fd.ops.sigmoid_binary_cross_entropy(d["x"], d["t"]),
    "mean squared error": lambda d: fd.ops.mean_squared_error(d["x"], d["t"]),
    "gemm": lambda d: _C.gemm(d["xk"], d["w"]),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", list(OPS))
def test_outputs_do_not_depend_on_reused_memory(cache, op, dtype):
    d = _data(dtype)
    fresh, poisoned = _fresh_and_poisoned(lambda: OPS[op](d))
    _assert_same(fresh, poisoned)


def test_a_freed_output_is_reused(cache):
    x = np.random.default_rng(1).standard_normal((1024, 1024)).astype(np.float32)  # 4 MiB
    y, _ = fd.ops.activation_forward(x, "relu")
    first = y.__array_interface__["data"][0]
    info = fd.host_cache_info()
    assert info["used_bytes"] >= x.nbytes and info["idle_bytes"] == 0
    del y, _
    assert fd.host_cache_info()["idle_bytes"] >= x.nbytes
    y, _ = fd.ops.activation_forward(x, "relu")
    after = fd.host_cache_info()
    assert after["hits"] == info["hits"] + 1
    assert y.__array_interface__["data"][0] == first
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    assert y.flags.writeable and y.flags.c_contiguous and y.dtype == np.float32
    y[0, 0] = 5.0  # writable like any NumPy output


def test_a_view_keeps_its_block(cache):
    x = np.arange(1 << 20, dtype=np.float32).reshape(1024, 1024)
    y, _ = fd.ops.activation_forward(x, "relu")
    view = y[10:20]
    del y, _
    # The block is still in use by the view: a new output gets another one.
    z, _ = fd.ops.activation_forward(-x, "relu")
    np.testing.assert_array_equal(view, x[10:20])
    assert not np.shares_memory(view, z)
    del view
    assert fd.host_cache_info()["idle_bytes"] > 0


def test_small_outputs_bypass_the_cache(cache):
    before = fd.host_cache_info()
    y, _ = fd.ops.activation_forward(np.ones((100, 100), np.float32), "relu")
    after = fd.host_cache_info()
    assert (after["hits"], after["misses"]) == (before["hits"], before["misses"])
    assert y.nbytes < after["min_block_bytes"]


def test_limit_and_empty_cache(cache):
    x = np.ones((1024, 1024), np.float32)
    y, _ = fd.ops.activation_forward(x, "relu")
    del y, _
    assert fd.host_cache_info()["idle_bytes"] > 0
    fd.empty_cache()
    assert fd.host_cache_info()["idle_bytes"] == 0
    fd.set_host_cache_limit(0)
    misses = fd.host_cache_info()["misses"]
    for _ in range(3):
        y, _ = fd.ops.activation_forward(x, "relu")
        del y, _
    info = fd.host_cache_info()
    assert info["idle_bytes"] == 0 and info["limit_bytes"] == 0
    assert info["misses"] == misses + 3
    # Lowering the limit trims the idle blocks at once, oldest first.
    fd.set_host_cache_limit(256)
    ys = [fd.ops.activation_forward(x, "relu")[0] for _ in range(4)]
    del ys
    assert fd.host_cache_info()["idle_bytes"] == 4 * 4 * MIB
    fd.set_host_cache_limit(9)
    assert fd.host_cache_info()["idle_bytes"] == 2 * 4 * MIB


@pytest.mark.parametrize("bad, exc", [(-1, ValueError), (2**41, ValueError), ("1", TypeError),
                                      (1.5, TypeError), (True, TypeError), (None, TypeError)])
def test_set_host_cache_limit_checks_its_argument(bad, exc):
    with pytest.raises(exc, match="megabytes"):
        fd.set_host_cache_limit(bad)


@pytest.mark.parametrize("env, limit", [("0", 0), ("5", 5 * MIB)])
def test_limit_from_the_environment(env, limit):
    code = "import fusednn as fd; print(fd.host_cache_info()['limit_bytes'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "FUSEDNN_HOST_CACHE_MB": env})
    assert int(out.stdout) == limit
