"""Arrays of other frameworks through DLPack: torch and JAX in, the same kind out.

Every result is compared with the NumPy call on the same data; in-place
updates are checked on the caller's tensor itself.
"""

import inspect

import numpy as np
import pytest

import fusednn as fd
from fusednn import _foreign

torch = pytest.importorskip("torch")

RTOL = 1e-6


def _rng(seed=0):
    return np.random.default_rng(seed)


def _t(a):
    """A torch tensor with its own copy of a's values (None stays None)."""
    return None if a is None else torch.from_numpy(np.array(a))


def _np(a):
    return a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _same(actual, expected, rtol=RTOL):
    """actual is a torch tensor whose values are expected's (a NumPy array)."""
    assert isinstance(actual, torch.Tensor), type(actual)
    np.testing.assert_allclose(_np(actual), expected, rtol=rtol, atol=0)
    assert _np(actual).dtype == np.asarray(expected).dtype


def _dense_data(batch=5, n_in=7, units=3, seed=0):
    rng = _rng(seed)
    return (rng.standard_normal((batch, n_in)).astype(np.float32),
            rng.standard_normal((n_in, units)).astype(np.float32),
            rng.standard_normal(units).astype(np.float32),
            rng.standard_normal((batch, units)).astype(np.float32))


# --- every public op is wrapped ---------------------------------------------

def test_every_public_op_accepts_dlpack():
    ops = [n for n in fd.ops.__all__ if inspect.isfunction(getattr(fd.ops, n))]
    assert "dense_forward" in ops and "softmax_cross_entropy" in ops
    missing = [n for n in ops if not hasattr(getattr(fd.ops, n), "__wrapped__")]
    assert missing == []
    # The wrapper keeps the signature users and docs read.
    params = list(inspect.signature(fd.ops.dense_forward).parameters)
    assert params[:4] == ["x", "w", "b", "activation"]


def test_numpy_calls_are_unchanged():
    x, w, b, dy = _dense_data()
    y, ctx = fd.ops.dense_forward(x, w, b, "relu")
    assert type(y) is np.ndarray and ctx.x is x
    y2, _ = fd.ops.dropout_forward(x, 0.0, seed=0, step=0)
    assert y2 is x
    with pytest.raises(TypeError, match="dense_forward: x must be a numpy.ndarray"):
        fd.ops.dense_forward(x.tolist(), w)


# --- dense --------------------------------------------------------------------

def test_dense_forward_torch_equals_matmul():
    x, w, _, _ = _dense_data(32, 100, 100)
    tx, tw = _t(x), _t(w)
    y, ctx = fd.ops.dense_forward(tx, tw)
    assert isinstance(y, torch.Tensor) and y.shape == (32, 100)
    ref = (tx.double() @ tw.double()).numpy()
    scale = np.abs(ref).max()
    assert np.abs(y.numpy() - ref).max() <= 1e-5 * scale
    # torch.from_dlpack reads it (it already is a tensor: the same one back).
    assert torch.from_dlpack(y).data_ptr() == y.data_ptr()
    # The context holds NumPy views of the caller's memory: no copy of x or w.
    assert isinstance(ctx.x, np.ndarray) and isinstance(ctx.w, np.ndarray)
    assert ctx.x.ctypes.data == tx.data_ptr() and ctx.w.ctypes.data == tw.data_ptr()


@pytest.mark.parametrize("activation", ["linear", "relu", "elu", "gelu"])
def test_dense_torch_matches_numpy(activation):
    x, w, b, dy = _dense_data()
    y, ctx = fd.ops.dense_forward(x, w, b, activation)
    dx, dw, db = fd.ops.dense_backward(dy, ctx)
    ty, tctx = fd.ops.dense_forward(_t(x), _t(w), _t(b), activation)
    tdx, tdw, tdb = fd.ops.dense_backward(_t(dy), tctx)
    for actual, expected in ((ty, y), (tdx, dx), (tdw, dw), (tdb, db)):
        _same(actual, expected)
    # need_dx=False: None passes through.
    assert fd.ops.dense_backward(_t(dy), tctx, need_dx=False)[0] is None


def test_backward_kind_follows_its_own_arguments():
    x, w, b, dy = _dense_data()
    _, ctx = fd.ops.dense_forward(_t(x), _t(w), _t(b), "relu")
    dx, dw, db = fd.ops.dense_backward(dy, ctx)  # NumPy dy: NumPy results
    assert type(dx) is np.ndarray and type(dw) is np.ndarray and type(db) is np.ndarray
    _, ctx = fd.ops.dense_forward(x, w, b, "relu")
    assert isinstance(fd.ops.dense_backward(_t(dy), ctx)[1], torch.Tensor)


def test_dense_stack_backward_torch():
    rng = _rng(1)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    w1, b1 = rng.standard_normal((4, 5)).astype(np.float32), rng.standard_normal(5).astype(
        np.float32)
    w2, b2 = rng.standard_normal((5, 3)).astype(np.float32), rng.standard_normal(3).astype(
        np.float32)
    dy = rng.standard_normal((6, 3)).astype(np.float32)
    h, c1 = fd.ops.dense_forward(x, w1, b1, "relu")
    _, c2 = fd.ops.dense_forward(h, w2, b2, "elu")
    dx, grads = fd.ops.dense_stack_backward(dy, [c1, c2], need_dx=True)
    th, t1 = fd.ops.dense_forward(_t(x), _t(w1), _t(b1), "relu")
    _, t2 = fd.ops.dense_forward(th, _t(w2), _t(b2), "elu")  # the torch output is the next x
    tdx, tgrads = fd.ops.dense_stack_backward(_t(dy), [t1, t2], need_dx=True)
    _same(tdx, dx)
    assert isinstance(tgrads, list) and len(tgrads) == 2
    for (tw, tb), (nw, nb) in zip(tgrads, grads):
        _same(tw, nw)
        _same(tb, nb)
    # A tensor with other memory is still refused as the next layer's input.
    _, t3 = fd.ops.dense_forward(th.clone(), _t(w2), _t(b2), "elu")
    with pytest.raises(ValueError, match=r"ctxs\[1\]\.x is not the output of ctxs\[0\]"):
        fd.ops.dense_stack_backward(_t(dy), [t1, t3])


def test_activation_parameters_reach_the_op():
    x, w, b, dy = _dense_data()
    y, ctx = fd.ops.dense_forward(x, w, b, "leaky_relu", alpha=0.3)
    ty, tctx = fd.ops.dense_forward(_t(x), _t(w), _t(b), "leaky_relu", alpha=0.3)
    _same(ty, y)
    assert tctx.spec.alpha == 0.3
    x, gamma, beta, mean, var, _ = _bn_data()
    y, _ = fd.ops.batchnorm_forward(x, gamma, beta, mean, var, training=False,
                                    activation="swish", beta=1.7)
    ty, _ = fd.ops.batchnorm_forward(_t(x), _t(gamma), _t(beta), _t(mean), _t(var),
                                     training=False, activation="swish", beta=1.7)
    _same(ty, y)
    assert not np.allclose(y, fd.ops.batchnorm_forward(x, gamma, beta, mean, var,
                                                       training=False, activation="swish")[0])


# --- the rule for mixed kinds -------------------------------------------------

def test_mixed_torch_and_numpy_give_torch():
    x, w, b, _ = _dense_data()
    ref, _ = fd.ops.dense_forward(x, w, b)
    for args in ((_t(x), w, b), (x, _t(w), b), (x, w, _t(b))):
        y, ctx = fd.ops.dense_forward(*args)
        _same(y, ref)
        assert isinstance(ctx.x, np.ndarray)
    y, _ = fd.ops.dense_forward(x, w=_t(w), b=b)  # by keyword too
    _same(y, ref)


# --- activations --------------------------------------------------------------

@pytest.mark.parametrize("activation", ["relu", "selu", "swish", "softplus"])
def test_activation_torch_matches_numpy(activation):
    rng = _rng(2)
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    dy = rng.standard_normal((4, 3, 5)).astype(np.float32)
    y, ctx = fd.ops.activation_forward(x, activation)
    dx = fd.ops.activation_backward(dy, ctx)
    ty, tctx = fd.ops.activation_forward(_t(x), activation)
    _same(ty, y)
    _same(fd.ops.activation_backward(_t(dy), tctx), dx)


# --- batch norm ---------------------------------------------------------------

def _bn_data(seed=3):
    rng = _rng(seed)
    x = (rng.standard_normal((8, 4)) * 3 + 1).astype(np.float32)
    gamma = rng.uniform(0.5, 2.0, 4).astype(np.float32)
    beta = rng.standard_normal(4).astype(np.float32)
    mean = rng.standard_normal(4).astype(np.float32)
    var = rng.uniform(0.5, 2.0, 4).astype(np.float32)
    dy = rng.standard_normal((8, 4)).astype(np.float32)
    return x, gamma, beta, mean, var, dy


def test_batchnorm_torch_matches_numpy_and_updates_moving_stats():
    x, gamma, beta, mean, var, dy = _bn_data()
    m, v = mean.copy(), var.copy()
    y, ctx = fd.ops.batchnorm_forward(x, gamma, beta, m, v, training=True, activation="relu")
    grads = fd.ops.batchnorm_backward(dy, ctx)
    tm, tv = _t(mean), _t(var)
    ty, tctx = fd.ops.batchnorm_forward(_t(x), _t(gamma), _t(beta), tm, tv, training=True,
                                        activation="relu")
    _same(ty, y)
    # The moving statistics moved, in the caller's tensors, as in the NumPy call.
    assert not np.allclose(m, mean)
    _same(tm, m)
    _same(tv, v)
    for actual, expected in zip(fd.ops.batchnorm_backward(_t(dy), tctx), grads):
        _same(actual, expected)


def test_dense_batchnorm_and_fold_torch():
    x, gamma, beta, mean, var, dy = _bn_data(4)
    rng = _rng(5)
    xin = rng.standard_normal((8, 6)).astype(np.float32)
    w = rng.standard_normal((6, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    m, v = mean.copy(), var.copy()
    y, ctx = fd.ops.dense_batchnorm_forward(xin, w, b, gamma, beta, m, v, training=True)
    grads = fd.ops.dense_batchnorm_backward(dy, ctx)
    tm, tv = _t(mean), _t(var)
    ty, tctx = fd.ops.dense_batchnorm_forward(_t(xin), _t(w), _t(b), _t(gamma), _t(beta), tm,
                                              tv, training=True)
    _same(ty, y)
    _same(tm, m)
    _same(tv, v)
    tgrads = fd.ops.dense_batchnorm_backward(_t(dy), tctx)
    assert len(tgrads) == 5
    for actual, expected in zip(tgrads, grads):
        _same(actual, expected)
    folded = fd.ops.fold_batchnorm(w, b, gamma, beta, mean, var)
    tfolded = fd.ops.fold_batchnorm(_t(w), _t(b), _t(gamma), _t(beta), _t(mean), _t(var))
    for actual, expected in zip(tfolded, folded):
        _same(actual, expected)


# --- dropout ------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [False, True])
def test_dropout_torch_matches_numpy(alpha):
    rng = _rng(6)
    x = rng.standard_normal((9, 7)).astype(np.float32)
    dy = rng.standard_normal((9, 7)).astype(np.float32)
    y, ctx = fd.ops.dropout_forward(x, 0.3, seed=11, step=2, alpha=alpha)
    ty, tctx = fd.ops.dropout_forward(_t(x), 0.3, seed=11, step=2, alpha=alpha)
    _same(ty, y)
    _same(fd.ops.dropout_backward(_t(dy), tctx), fd.ops.dropout_backward(dy, ctx))


def test_dropout_identity_returns_the_callers_tensor():
    tx = _t(_rng(7).standard_normal((3, 4)).astype(np.float32))
    y, ctx = fd.ops.dropout_forward(tx, 0.5, seed=0, step=0, training=False)
    assert y is tx
    tdy = _t(np.ones((3, 4), np.float32))
    assert fd.ops.dropout_backward(tdy, ctx) is tdy


def test_dropout_mask_like_torch():
    words = fd.ops.dropout_mask(100, 0.25, seed=3, step=1)
    twords = fd.ops.dropout_mask(100, 0.25, seed=3, step=1, like=_t(np.zeros(1, np.float32)))
    assert isinstance(twords, torch.Tensor)
    np.testing.assert_array_equal(_np(twords), words)


# --- losses -------------------------------------------------------------------

def test_softmax_cross_entropy_torch():
    rng = _rng(8)
    logits = rng.standard_normal((10, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 10)
    weight = rng.uniform(0.0, 2.0, 10).astype(np.float32)
    loss, grad = fd.ops.softmax_cross_entropy(logits, labels, sample_weight=weight)
    tloss, tgrad = fd.ops.softmax_cross_entropy(_t(logits), _t(labels), sample_weight=_t(weight))
    assert tloss.dim() == 0 and tloss.dtype == torch.float64
    _same(tloss, loss)
    _same(tgrad, grad)
    # Mixed: only the labels are torch.
    tloss, tgrad = fd.ops.softmax_cross_entropy(logits, _t(labels), sample_weight=weight)
    _same(tgrad, grad)


@pytest.mark.parametrize("fn", [fd.ops.sigmoid_binary_cross_entropy, fd.ops.mean_squared_error])
def test_point_losses_torch(fn):
    rng = _rng(9)
    pred = rng.standard_normal((6, 3)).astype(np.float32)
    target = rng.uniform(0, 1, (6, 3)).astype(np.float32)
    loss, grad = fn(pred, target)
    tloss, tgrad = fn(_t(pred), _t(target))
    _same(tloss, loss)
    _same(tgrad, grad)


# --- optimizers ---------------------------------------------------------------

OPTIMIZERS = [fd.optimizers.SGD(0.1, momentum=0.9), fd.optimizers.Adagrad(0.1),
              fd.optimizers.RMSprop(0.01, centered=True), fd.optimizers.Adam(0.01),
              fd.optimizers.AdamW(0.01), fd.optimizers.Adamax(0.01), fd.optimizers.Nadam(0.01),
              fd.optimizers.Ftrl(0.1)]


def _opt_data(seed=10):
    rng = _rng(seed)
    params = [rng.standard_normal((5, 3)).astype(np.float32),
              rng.standard_normal(3).astype(np.float32)]
    grads = [[rng.standard_normal(p.shape).astype(np.float32) for p in params]
             for _ in range(3)]
    return params, grads


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: type(o).__name__)
def test_optimizer_updates_torch_params_in_place(opt):
    params, steps = _opt_data()
    ref = type(opt).from_config(opt.get_config())
    ref_params = [p.copy() for p in params]
    tparams = [_t(p) for p in params]
    ptrs = [t.data_ptr() for t in tparams]
    for grads in steps:
        ref.apply(grads, ref_params)
        opt.apply([_t(g) for g in grads], tparams)
    for t, p, before, ptr in zip(tparams, ref_params, params, ptrs):
        assert t.data_ptr() == ptr  # the same storage, updated in place
        assert not np.allclose(t.numpy(), before)
        np.testing.assert_allclose(t.numpy(), p, rtol=RTOL, atol=1e-7)
    for row in opt._slots:
        assert all(s is None or type(s) is np.ndarray for s in row)


def test_apply_gradients_torch():
    params, steps = _opt_data(11)
    tparams = [_t(p) for p in params]
    opt = fd.optimizers.Adam(0.05)
    opt.apply_gradients(zip([_t(g) for g in steps[0]], tparams))
    ref = [p.copy() for p in params]
    fd.optimizers.Adam(0.05).apply(steps[0], ref)
    for t, p in zip(tparams, ref):
        np.testing.assert_allclose(t.numpy(), p, rtol=RTOL, atol=1e-7)


def test_optimizer_torch_grads_numpy_params():
    params, steps = _opt_data(12)
    ref = [p.copy() for p in params]
    fd.optimizers.SGD(0.1).apply(steps[0], ref)
    fd.optimizers.SGD(0.1).apply([_t(g) for g in steps[0]], params)
    for p, r in zip(params, ref):
        np.testing.assert_allclose(p, r, rtol=RTOL)


# --- errors -------------------------------------------------------------------

def test_requires_grad_is_refused():
    x, w, _, _ = _dense_data()
    tx = _t(x).requires_grad_()
    with pytest.raises(TypeError, match=r"dense_forward: x requires grad; pass x\.detach\(\)"):
        fd.ops.dense_forward(tx, w)
    y, _ = fd.ops.dense_forward(tx.detach(), w)
    _same(y, fd.ops.dense_forward(x, w)[0])
    p = torch.nn.Parameter(_t(w))
    with pytest.raises(TypeError, match=r"Adam\.apply: params\[0\] requires grad"):
        fd.optimizers.Adam().apply([_t(w)], [p])
    before = p.detach().clone()
    fd.optimizers.Adam(0.1).apply([_t(np.ones_like(w))], [p.detach()])
    assert torch.all(p.detach() < before)  # detach() shares memory: the update lands in p


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "int64", "int32"])
def test_unsupported_dtypes_name_the_argument(dtype):
    x, w, _, _ = _dense_data()
    tx = _t(x).to(getattr(torch, dtype))
    with pytest.raises(TypeError, match=rf"dense_forward: x .*{dtype}"):
        fd.ops.dense_forward(tx, w)
    with pytest.raises(TypeError, match=rf"SGD\.apply: (params|grads)\[0\] .*{dtype}"):
        fd.optimizers.SGD().apply([_t(w).to(getattr(torch, dtype))], [_t(w)])


def test_non_contiguous_input_is_copied_and_correct():
    x, w, b, _ = _dense_data()
    tx = _t(np.asfortranarray(x))
    tw_t = _t(w.T.copy()).t()  # a transposed view: not C-contiguous
    assert not tw_t.is_contiguous()
    y, _ = fd.ops.dense_forward(tx, tw_t, _t(b))
    _same(y, fd.ops.dense_forward(x, w, b)[0])


def test_non_contiguous_param_is_refused():
    w = _rng(13).standard_normal((4, 6)).astype(np.float32)
    tp = _t(w)[:, ::2]
    before = tp.clone()
    with pytest.raises(ValueError, match=r"SGD\.apply: params\[0\] must be C-contiguous"):
        fd.optimizers.SGD(0.1).apply([_t(np.ones((4, 3), np.float32))], [tp])
    assert torch.equal(tp, before)
    x, gamma, beta, mean, var, _ = _bn_data()
    tm = _t(np.repeat(mean, 2))[::2]
    with pytest.raises(ValueError, match="batchnorm_forward: moving_mean must be C-contiguous"):
        fd.ops.batchnorm_forward(x, gamma, beta, tm, _t(var), training=True)


def test_read_only_params_are_refused(tmp_path):
    w = np.ones((3, 2), np.float32)
    ro = w.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"SGD\.apply: params\[0\] is read-only"):
        fd.optimizers.SGD().apply([w], [ro])
    path = tmp_path / "w.bin"
    w.tofile(path)
    mm = np.memmap(path, dtype=np.float32, mode="r", shape=(3, 2))
    with pytest.raises(ValueError, match=r"Adam\.apply: params\[0\] is read-only"):
        fd.optimizers.Adam().apply([w], [mm])
    mm_m = np.memmap(path, dtype=np.float32, mode="r", shape=(2,))
    x, gamma, beta, _, var, _ = _bn_data()
    with pytest.raises(ValueError, match="batchnorm_forward: moving_mean is read-only"):
        fd.ops.batchnorm_forward(x[:, :2], gamma[:2], beta[:2], mm_m, var[:2].copy(),
                                 training=True)
    # A memmap opened for writing is updated in place.
    mw = np.memmap(path, dtype=np.float32, mode="r+", shape=(3, 2))
    fd.optimizers.SGD(0.5).apply([w], [mw])
    np.testing.assert_array_equal(np.fromfile(path, np.float32), np.full(6, 0.5, np.float32))


class _FakeDevice:
    """An array on another DLPack device: only __dlpack_device__ is ever read."""

    def __init__(self, device_type):
        self.device_type = device_type
        self.dtype = "float32"

    def __dlpack__(self, **kwargs):
        raise AssertionError("read before the device check")

    def __dlpack_device__(self):
        return (self.device_type, 0)


@pytest.mark.skipif(fd.has_cuda(), reason="checks the build without a usable GPU")
def test_cuda_tensor_without_cuda_backend():
    x, w, _, _ = _dense_data()
    with pytest.raises(TypeError, match="dense_forward: w is on CUDA device 0 but fusednn's CUDA "
                                        "backend is unavailable"):
        fd.ops.dense_forward(x, _FakeDevice(2))
    with pytest.raises(TypeError, match=r"Adam\.apply: grads\[1\] is on CUDA device 0"):
        fd.optimizers.Adam().apply([w, _FakeDevice(2)], [w.copy(), w.copy()])


def test_other_device_is_refused():
    with pytest.raises(TypeError, match="activation_forward: x .* is on DLPack device type 8"):
        fd.ops.activation_forward(_FakeDevice(8), "relu")


class _ApiArray:
    """A minimal array-API producer: a NumPy buffer behind __dlpack__."""

    def __init__(self, a):
        self.a = a

    def __dlpack__(self, **kwargs):
        return self.a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()

    def __array_namespace__(self, api_version=None):
        return _ApiNamespace


class _ApiNamespace:
    @staticmethod
    def from_dlpack(obj):
        return _ApiArray(np.from_dlpack(obj))


def test_array_api_producer_gets_its_own_kind():
    x, w, b, _ = _dense_data()
    y, _ = fd.ops.dense_forward(_ApiArray(x), w, b)
    assert isinstance(y, _ApiArray)
    np.testing.assert_array_equal(y.a, fd.ops.dense_forward(x, w, b)[0])


def test_accept_and_give_back():
    a = np.ones(3, np.float32)
    assert _foreign.accept("f", "a", a) == (a, None)
    assert _foreign.give_back((a, [a], {"k": a}, 3), None)[0] is a
    t = torch.arange(3, dtype=torch.float32)
    view, kind = _foreign.accept("f", "a", t, writable=True)
    assert type(view) is np.ndarray and view.ctypes.data == t.data_ptr()
    out = _foreign.give_back((view * 2, [view + 1, None], {"k": view}, "s"), kind)
    assert isinstance(out, tuple) and isinstance(out[1], list) and out[3] == "s"
    assert torch.equal(out[0], torch.tensor([0.0, 2.0, 4.0]))
    assert torch.equal(out[1][0], torch.tensor([1.0, 2.0, 3.0])) and out[1][1] is None
    assert out[2]["k"].data_ptr() == t.data_ptr()  # zero-copy both ways


# --- JAX (CPU) ----------------------------------------------------------------

def test_jax_dense_forward_and_optimizer():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    x, w, b, _ = _dense_data()
    y, ctx = fd.ops.dense_forward(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b), "relu")
    assert isinstance(y, jax.Array)
    np.testing.assert_allclose(np.asarray(y), fd.ops.dense_forward(x, w, b, "relu")[0],
                               rtol=RTOL)
    assert isinstance(ctx.x, np.ndarray)
    params, steps = _opt_data(14)
    ref = [p.copy() for p in params]
    fd.optimizers.Adam(0.1).apply(steps[0], ref)
    tparams = [_t(p) for p in params]
    fd.optimizers.Adam(0.1).apply([jnp.asarray(g) for g in steps[0]], tparams)
    for t, r in zip(tparams, ref):
        np.testing.assert_allclose(t.numpy(), r, rtol=RTOL)
    with pytest.raises(TypeError, match=r"Adam\.apply: params\[0\] is a JAX array, which is "
                                        r"immutable"):
        fd.optimizers.Adam().apply([steps[0][0]], [jnp.asarray(params[0])])
