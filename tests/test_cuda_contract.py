"""The one contract of fusednn._C and fusednn._C_cuda, checked without a GPU.

Both modules are built from the same binding files: they take the same
arguments, read arrays through one tensor view (NumPy directly,
__array_interface__, __cuda_array_interface__, DLPack) and allocate their
outputs themselves. Here the CUDA module is driven with a stand-in for CuPy
whose arrays carry fake device pointers and whose allocator records what the
binding asks for. Where no GPU is usable, every well-formed call reaches the
CUDA runtime and fails there with RuntimeError; a bad argument fails earlier,
with the same TypeError or ValueError as the CPU module gives.
"""

import contextlib

import numpy as np
import pytest

import fusednn as fd
from fusednn import _C
from fusednn._C import Act, BnConvention, Clip, Opt, OptStep, PointLoss
from fusednn.ops.batchnorm import BatchNormContext, BatchNormOptions, DenseBatchNormContext


def _cuda_module():
    from fusednn import _build_config

    if not _build_config.CUDA_BUILT:
        pytest.skip("built without CUDA")
    try:
        from fusednn import _C_cuda
    except ImportError as e:
        pytest.skip(f"CUDA module does not load here: {e}")
    if fd.has_cuda():
        pytest.skip("a GPU is usable: the real CUDA tests cover this")
    return _C_cuda


class _Ptr:
    def __init__(self, p):
        self.ptr = p


class _FakeArray:
    """Device memory as CuPy describes it, at an address nothing reads."""

    _next = 1 << 20

    def __init__(self, shape, dtype=np.float32, strides=None, readonly=False):
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.size = int(np.prod(self.shape))
        _FakeArray._next += 1 << 20
        self.data = _Ptr(_FakeArray._next)
        self.device = contextlib.nullcontext()
        self.__cuda_array_interface__ = {"shape": self.shape, "typestr": self.dtype.str,
                                         "data": (self.data.ptr, readonly), "strides": strides,
                                         "version": 3}


class _FakeCupy:
    """What CUDABackend takes from CuPy: the allocator and the current stream."""

    uint8, uint32, float64 = np.uint8, np.uint32, np.float64
    allocated = []

    class cuda:  # noqa: N801
        @staticmethod
        def get_current_stream():
            return _Ptr(0)

    @staticmethod
    def empty(shape, dtype):
        _FakeCupy.allocated.append((tuple(shape), np.dtype(dtype).name))
        return _FakeArray(shape, dtype)

    @staticmethod
    def ascontiguousarray(a, dtype=None):
        return a


def _backend(mod):
    from fusednn._backend import CUDABackend

    return CUDABackend(mod, _FakeCupy)


def _reaches_runtime(calls):
    for call in calls:
        with pytest.raises(RuntimeError):
            call()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["linear", "relu", "elu", "gelu_tanh", "swish"])
def test_dense_and_activation_entry_points(name, dtype):
    be = _backend(_cuda_module())
    spec = (fd.activations.get("gelu", approximate=True) if name == "gelu_tanh"
            else fd.activations.get(name))
    x, w, b = _FakeArray((5, 3), dtype), _FakeArray((3, 4), dtype), _FakeArray((4,), dtype)
    dy = _FakeArray((5, 4), dtype)
    prev = fd.ops.DenseContext(x, w, True, spec, be, _FakeArray((5, 3), dtype),
                               _FakeArray((5, 3), dtype) if spec.saves_input else None,
                               _FakeArray((5 * 128 // 8,), np.uint8) if name == "relu" else None)
    _reaches_runtime([
        lambda: be.activation_forward(x, spec),
        lambda: be.activation_backward(x, x, spec),
        lambda: be.dense_forward(x, w, b, spec),
        lambda: be.dense_backward(dy, dy, x, w, True, True, spec),
        lambda: be.dense_backward_weight(dy, x, True),
        lambda: be.dense_backward_input(dy, w, prev, True),
        lambda: be.dense_backward_input(dy, w, None, False),
    ])


def test_outputs_come_from_the_registered_allocator():
    """The binding sizes every output, the relu bit mask included (cuBLASLt's
    layout: each row's bits padded to 128), and takes it from the allocator."""
    be = _backend(_cuda_module())
    x, w = _FakeArray((5, 3), np.float32), _FakeArray((3, 130), np.float32)
    _FakeCupy.allocated.clear()
    with pytest.raises(RuntimeError):
        be.dense_forward(x, w, None, fd.activations.get("relu"))
    assert _FakeCupy.allocated == [((5, 130), "float32"), ((5 * 256 // 8,), "uint8")]
    _FakeCupy.allocated.clear()
    with pytest.raises(RuntimeError):
        be.dropout_forward(_FakeArray((33,), np.float64), 0.5, False, 0, 0, True)
    assert _FakeCupy.allocated == [((33,), "float64"), ((2,), "uint32")]


def test_a_mask_of_the_wrong_size_is_refused():
    mod = _cuda_module()
    _backend(mod)
    dz, w = _FakeArray((5, 4), np.float32), _FakeArray((3, 4), np.float32)
    saved = _FakeArray((5, 3), np.float32)
    with pytest.raises(ValueError, match="mask_prev"):
        mod.dense_backward_input(dz, w, saved, _FakeArray((5 * 128 // 8 - 1,), np.uint8),
                                 Act.Relu, 0.0, False)
    with pytest.raises(ValueError, match="mask_prev"):  # a mask for a non-relu layer
        mod.dense_backward_input(dz, w, saved, _FakeArray((80,), np.uint8), Act.Elu, 1.0, False)
    with pytest.raises(ValueError, match="mask_prev"):  # the CPU writes none
        _C.dense_backward_input(np.zeros((5, 4), np.float32), np.zeros((3, 4), np.float32),
                                np.zeros((5, 3), np.float32), np.zeros(80, np.uint8), Act.Relu,
                                0.0, False)


def _modules():
    """(module, array maker) of each module this build has: NumPy arrays for
    fusednn._C, fake device arrays for fusednn._C_cuda."""
    yield "cpu", _C, lambda shape, dtype=np.float32: np.zeros(shape, dtype)
    from fusednn import _build_config

    if _build_config.CUDA_BUILT:
        try:
            from fusednn import _C_cuda
        except ImportError:
            return
        if not fd.has_cuda():
            _backend(_C_cuda)
            yield "cuda", _C_cuda, _FakeArray


@pytest.mark.parametrize("which", ["cpu", "cuda"])
def test_both_modules_refuse_the_same_bad_arguments(which):
    """One table of bad calls, one expected error each, for both modules."""
    found = {name: (mod, arr) for name, mod, arr in _modules()}
    if which not in found:
        pytest.skip("the CUDA module is not loadable here without a GPU")
    mod, arr = found[which]
    f32 = arr((4, 3))
    step = OptStep()
    lists = ([f32], [arr((4, 3))], [[None, None, None]], [0.0], [0.0], [0.0], [(1, 1, 12)])
    bad = [
        (TypeError, "z", lambda: mod.activation_forward(arr((4,), np.float16), Act.Relu, 0.0)),
        (ValueError, "activation", lambda: mod.activation_forward(f32, Act(99), 0.0)),
        (TypeError, "incompatible", lambda: mod.activation_forward(f32, 1, 0.0)),  # a bare int
        (TypeError, "z", lambda: mod.activation_forward([1.0, 2.0], Act.Relu, 0.0)),
        (ValueError, "saved", lambda: mod.activation_backward(f32, None, Act.Elu, 1.0)),
        (ValueError, "w", lambda: mod.dense_forward(f32, arr((5, 2)), None, Act.Linear, 0.0)),
        (TypeError, "w", lambda: mod.dense_forward(f32, arr((3, 2), np.float64), None,
                                                   Act.Linear, 0.0)),
        (ValueError, "b", lambda: mod.dense_forward(f32, arr((3, 2)), arr((3,)), Act.Linear,
                                                    0.0)),
        (ValueError, "saved", lambda: mod.dense_backward(arr((4, 2)), None, f32, arr((3, 2)),
                                                         True, True, Act.Elu, 1.0)),
        (ValueError, "dy", lambda: mod.dense_backward(arr((4, 3)), None, f32, arr((3, 2)),
                                                      True, True, Act.Linear, 0.0)),
        (ValueError, "rate", lambda: mod.dropout_forward(f32, 1.0, False, 0, 0, True)),
        (ValueError, "rate", lambda: mod.dropout_mask(10, float("nan"), 0, 0)),
        (ValueError, "n", lambda: mod.dropout_mask(-1, 0.5, 0, 0)),
        (ValueError, "mask", lambda: mod.dropout_backward(f32, arr((3,), np.uint32), 0.5,
                                                          False, 0, 0)),
        (TypeError, "mask", lambda: mod.dropout_backward(f32, arr((1,), np.int32), 0.5, False,
                                                         0, 0)),
        (ValueError, "counters", lambda: mod.philox4x32_10(arr((2, 3), np.uint32), (0, 0))),
        (ValueError, "key", lambda: mod.philox4x32_10(arr((2, 4), np.uint32), (0, 0, 0))),
        (ValueError, "eps", lambda: mod.softmax_cross_entropy(f32, arr((4,), np.int64), None,
                                                              None, 1.5, True)),
        (TypeError, "labels", lambda: mod.softmax_cross_entropy(f32, arr((4,), np.uint8), None,
                                                                None, 0.0, True)),
        (ValueError, "exactly one", lambda: mod.softmax_cross_entropy(f32, None, None, None,
                                                                      0.0, True)),
        (ValueError, "point loss", lambda: mod.point_loss(PointLoss(2), f32, f32, None, True)),
        (ValueError, "target", lambda: mod.point_loss(PointLoss.MSE, f32, arr((3, 3)), None,
                                                      True)),
        (ValueError, "optimizer kind", lambda: mod.optimizer_step(Opt(99), step, *lists,
                                                                  Clip.Off, 0.0)),
        (ValueError, "clip_mode", lambda: mod.optimizer_step(Opt.Adam, step, *lists, Clip(7),
                                                             0.0)),
        (TypeError, "incompatible", lambda: mod.optimizer_step(Opt.Adam, [0.0] * 15, *lists, Clip.Off,
                                                   0.0)),
        (ValueError, "grads", lambda: mod.optimizer_step(Opt.Adam, step, [f32], [arr((5,))],
                                                         *lists[2:], Clip.Off, 0.0)),
        (ValueError, "max-norm", lambda: mod.optimizer_step(
            Opt.Adam, step, *lists[:5], [2.0], [(1, 3, 3)], Clip.Off, 0.0)),
        (ValueError, "differ", lambda: mod.optimizer_step(Opt.Adam, step, [f32], [], *lists[2:],
                                                          Clip.Off, 0.0)),
    ]
    bn = dict(x=arr((6, 5)), w=None, b=None, gamma=None, beta=None, moving_mean=arr((5,)),
              moving_var=arr((5,)), training=True, momentum=0.99, epsilon=1e-3,
              convention=BnConvention.Keras, kind=Act.Elu, alpha=1.0, rate=0.0,
              alpha_dropout=False, seed=0, step=0)
    for change, match in [({"x": arr((0, 5))}, "x"), ({"rate": 1.0}, "rate"),
                          ({"convention": BnConvention(2)}, "convention"),
                          ({"epsilon": 0.0}, "epsilon"), ({"moving_var": None}, "moving"),
                          ({"moving_mean": None, "moving_var": None, "training": False},
                           "inference"), ({"gamma": arr((4,))}, "gamma"),
                          ({"w": arr((4, 5))}, "w")]:
        bad.append((ValueError, match,
                    lambda change=change: mod.batchnorm_forward(**{**bn, **change})))
    bad.append((ValueError, "mask", lambda: mod.batchnorm_backward(
        arr((6, 5)), None, None, arr((6, 5)), arr((6, 5)), arr((5, 5)), None, False, False,
        True, True, Act.Elu, 1.0, 0.3, False, True)))
    for err, match, call in bad:
        with pytest.raises(err, match=match):
            call()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("clip_mode", list(Clip.__members__.values()))
def test_optimizer_step_is_called_correctly(dtype, clip_mode):
    """CUDABackend.optimizer_step with the lists Optimizer.apply builds; the
    binding allocates the norm clips' per-tensor scratch itself."""
    be = _backend(_cuda_module())
    params = [_FakeArray((7, 5), dtype), _FakeArray((17,), dtype)]
    grads = [_FakeArray(p.shape, dtype) for p in params]
    slots = [[_FakeArray(p.shape, dtype), None, _FakeArray(p.shape, dtype)] for p in params]
    step = OptStep()
    step.lr = step.beta_1 = step.beta_2 = step.epsilon = step.step_size = 0.1
    for rule in Opt.__members__.values():
        _FakeCupy.allocated.clear()
        with pytest.raises(RuntimeError):
            be.optimizer_step(rule, step, params, grads, slots,
                              ([0.0, 0.01], [0.0, 0.0], [2.0, 0.0], [(1, 7, 5), (1, 1, 1)]),
                              (clip_mode, 1.0))
        norm_clip = clip_mode in (Clip.Norm, Clip.Global)
        assert _FakeCupy.allocated == ([((2,), "float64")] if norm_clip else [])
    with pytest.raises(ValueError, match="read-only"):
        be.optimizer_step(Opt.Adam, step, [_FakeArray((3,), dtype, readonly=True)],
                          [_FakeArray((3,), dtype)], [[None] * 3],
                          ([0.0], [0.0], [0.0], [(1, 1, 3)]), (Clip.Off, 0.0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["linear", "elu", "gelu"])
def test_batchnorm_is_called_correctly(name, dtype):
    """CUDABackend's batch-norm methods against the real binding: training and
    inference, with and without gamma/beta, moving statistics and dropout,
    alone and after a dense layer."""
    be = _backend(_cuda_module())
    spec = fd.activations.get(name)
    x = _FakeArray((6, 5), dtype)
    vec = [_FakeArray((5,), dtype) for _ in range(4)]
    cols, mask = _FakeArray((5, 5), dtype), _FakeArray((1,), np.uint32)
    keras, torch = BnConvention.Keras, BnConvention.Torch
    xin, w, b = _FakeArray((6, 3), dtype), _FakeArray((3, 5), dtype), _FakeArray((5,), dtype)

    def opts(training, momentum, epsilon, convention, rate, alpha, seed, step):
        return BatchNormOptions(training, momentum, epsilon, convention, spec, rate, alpha, seed,
                                step)

    def ctx(mask, has_gamma, has_beta, rate, alpha, training):
        return BatchNormContext(x, x, cols, mask, has_gamma, has_beta,
                                opts(training, 0.99, 1e-3, keras, rate, alpha, 0, 0), be)

    dense_opts = opts(True, 0.99, 1e-3, keras, 0.3, False, 1, 2)
    bn_ctx = ctx(mask, True, True, 0.3, False, True)
    _reaches_runtime([
        lambda: be.batchnorm_forward(x, None, None, *vec,
                                     opts(True, 0.99, 1e-3, keras, 0.0, False, 0, 0)),
        lambda: be.batchnorm_forward(x, None, None, None, None, None, None,
                                     opts(True, 0.1, 1e-5, torch, 0.3, True, 2**64 - 1, 2**40)),
        lambda: be.batchnorm_forward(x, None, None, *vec,
                                     opts(False, 0.99, 1e-3, keras, 0.3, False, 1, 2)),
        lambda: be.batchnorm_backward(x, ctx(None, True, True, 0.0, False, True)),
        lambda: be.batchnorm_backward(x, ctx(mask, False, False, 0.3, True, True)),
        lambda: be.batchnorm_backward(x, ctx(mask, True, False, 0.3, False, False)),
        lambda: be.batchnorm_forward(xin, w, b, *vec, dense_opts),
        lambda: be.batchnorm_backward(x, bn_ctx, DenseBatchNormContext(xin, w, True, bn_ctx),
                                      True),
    ])


def test_loss_entry_points():
    be = _backend(_cuda_module())
    z, w = _FakeArray((5, 7), np.float32), _FakeArray((5,), np.float32)
    _reaches_runtime([
        lambda: be.softmax_cross_entropy(z, _FakeArray((5,), np.int32), None, w, 0.1, True),
        lambda: be.softmax_cross_entropy(z, None, _FakeArray((5, 7), np.float32), w, 0.0, True),
        lambda: be.point_loss(PointLoss.MSE, _FakeArray((5,), np.float32),
                              _FakeArray((5,), np.float32), None, False),
    ])


# ------------------------------------------------ the tensor view itself


class _Interface:
    """A host array seen only through __array_interface__."""

    def __init__(self, a):
        self._a = a
        self.__array_interface__ = a.__array_interface__


def test_the_cpu_module_reads_every_host_array_protocol():
    x = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)
    want = _C.activation_forward(x, Act.Elu, 1.0)
    np.testing.assert_array_equal(_C.activation_forward(_Interface(x), Act.Elu, 1.0), want)
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(_C.activation_forward(torch.from_numpy(x), Act.Elu, 1.0), want)
    # in place through DLPack: the optimizer writes into the torch tensor itself
    p = torch.ones(6, dtype=torch.float64)
    g = torch.full((6,), 0.5, dtype=torch.float64)
    step = OptStep()
    step.lr = 0.1
    _C.optimizer_step(Opt.SGD, step, [p], [g], [[None] * 3], [0.0], [0.0], [0.0], [(1, 1, 6)],
                      Clip.Off, 0.0)
    np.testing.assert_allclose(p.numpy(), 0.95)


def test_the_view_refuses_what_the_kernels_cannot_read():
    x = np.zeros((3, 4), np.float32)
    buf = np.zeros(4 * 12 + 1, np.uint8)
    unaligned = buf[1:].view(np.float32).reshape(3, 4)
    cases = [
        (ValueError, "C-contiguous", x.T),
        (ValueError, "C-contiguous", x[:, ::2]),
        (ValueError, "C-contiguous", x[::-1]),
        (ValueError, "aligned", unaligned),
        (TypeError, "dtype", x.astype(">f4")),
        (TypeError, "dtype", x.astype(np.complex64)),
        (TypeError, "dtype", x.astype(object)),
        (TypeError, "GPU|device|host", _FakeArray((3, 4), np.float32)),
        (TypeError, "expected an array", 3.0),
        (TypeError, "expected an array", "x"),
    ]
    for err, match, bad in cases:
        with pytest.raises(err, match=match):
            _C.activation_forward(bad, Act.Relu, 0.0)
    ro = np.ones(4, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        _C.optimizer_step(Opt.SGD, OptStep(), [ro], [np.ones(4, np.float32)], [[None] * 3],
                          [0.0], [0.0], [0.0], [(1, 1, 4)], Clip.Off, 0.0)
    with pytest.raises(ValueError, match="stream"):  # the CPU kernels run on no stream
        _C.activation_forward(x, Act.Relu, 0.0, 5)


def test_the_cuda_module_refuses_host_memory():
    mod = _cuda_module()
    _backend(mod)
    with pytest.raises(TypeError, match="GPU"):
        mod.activation_forward(np.zeros(4, np.float32), Act.Relu, 0.0)
    with pytest.raises(ValueError, match="C-contiguous"):
        mod.activation_forward(_FakeArray((3, 4), np.float32, strides=(4, 12)), Act.Relu, 0.0)


# ------------------------------------------------ the compiled step (CUDA graph)


def _plan_blocks(dtype, w_cls):
    """A Dense -> BN+ELU+dropout -> Dense plan's blocks over arrays made by w_cls."""
    return [{"kind": _C.BlockKind.Dense, "in": 6, "out": 8, "w": w_cls((6, 8), dtype),
             "b": w_cls((8,), dtype), "act": Act.Relu, "alpha": 0.0},
            {"kind": _C.BlockKind.BatchNorm, "in": 8, "out": 8, "w": w_cls((8, 8), dtype),
             "b": None, "gamma": w_cls((8,), dtype), "beta": w_cls((8,), dtype),
             "moving_mean": w_cls((8,), dtype), "moving_var": w_cls((8,), dtype),
             "batch_stats": True, "momentum": 0.99, "epsilon": 1e-3,
             "convention": BnConvention.Keras, "act": Act.Elu, "alpha": 1.0, "rate": 0.2,
             "alpha_dropout": False, "seed": 3},
            {"kind": _C.BlockKind.Dense, "in": 8, "out": 3, "w": w_cls((8, 3), dtype),
             "b": w_cls((3,), dtype), "act": Act.Linear, "alpha": 0.0}]


def _plan_tensors(w_cls, dtype):
    return [(0, "w", [w_cls((6, 8), dtype), w_cls((6, 8), dtype), None], 0.0, 0.0, 0.0,
             (1, 1, 1)),
            (2, "b", [w_cls((3,), dtype), w_cls((3,), dtype), None], 0.0, 1e-3, 0.0,
             (1, 1, 1))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_step_plan_is_the_same_contract_on_both_modules(dtype):
    """fusednn._C_cuda.StepPlan takes what fusednn._C.StepPlan takes: it is
    built without touching the GPU (its gradient buffers from the allocator),
    refuses the same bad arguments with the same errors, and a well-formed
    step reaches the CUDA runtime."""
    mod = _cuda_module()
    _backend(mod)
    step = OptStep()
    step.lr = step.beta_1 = step.beta_2 = step.epsilon = step.step_size = 0.1

    def host(shape, dt):
        return np.ones(shape, dt)

    plans = {}
    for name, m, arr in (("cpu", _C, host), ("cuda", mod, _FakeArray)):
        _FakeCupy.allocated.clear()
        plans[name] = (m.StepPlan(_plan_blocks(dtype, arr), dtype == np.float64,
                                  _C.LossKind.SparseSoftmax, True, 0.5, 0, Opt.Adam,
                                  _plan_tensors(arr, dtype)), arr)
    # dw, db of each dense part and dgamma, dbeta: from the allocator, nothing else yet
    assert sorted(_FakeCupy.allocated) == sorted(
        [((6, 8), np.dtype(dtype).name), ((8,), np.dtype(dtype).name),
         ((8, 8), np.dtype(dtype).name), ((8,), np.dtype(dtype).name),
         ((8,), np.dtype(dtype).name), ((8, 3), np.dtype(dtype).name),
         ((3,), np.dtype(dtype).name), ((0,), np.dtype(dtype).name)])
    for name, (plan, arr) in plans.items():
        x, y = arr((5, 6), dtype), arr((5,), np.int64)
        bad = [(lambda: plan.run(arr((5, 7), dtype), y, [0], step, Clip.Off, 0.0), ValueError,
                "x"),
               (lambda: plan.run(x, arr((4,), np.int64), [0], step, Clip.Off, 0.0), ValueError,
                "target"),
               (lambda: plan.run(x, y, [], step, Clip.Off, 0.0), ValueError, "counters"),
               (lambda: plan.run(x, y, [0], step, Clip.Off, 0.0, arr((4,), dtype)), ValueError,
                "weight"),
               (lambda: plan.run(arr((5, 6), np.float64 if dtype == np.float32 else np.float32),
                                 y, [0], step, Clip.Off, 0.0), TypeError, "x")]
        for call, err, match in bad:
            with pytest.raises(err, match=match):
                call()
        assert plan.tally() == (0.0, 0, 0, 0, 0.0) and plan.graphs == 0
    cuda_plan = plans["cuda"][0]
    x, y = _FakeArray((5, 6), dtype), _FakeArray((5,), np.int64)
    _reaches_runtime([
        lambda: cuda_plan.run(x, y, [0], step, Clip.Global, 1.0, None, 0),
        lambda: cuda_plan.predict(x, _FakeArray((5, 3), dtype), [0], [0]),
    ])
    with pytest.raises(TypeError, match="GPU"):
        cuda_plan.run(np.ones((5, 6), dtype), y, [0], step, Clip.Off, 0.0)
    loss, correct = plans["cpu"][0].run(np.ones((5, 6), dtype), np.zeros(5, np.int64), [0], step,
                                        Clip.Global, 1.0)
    assert np.isfinite(loss) and correct in (0, 5)


# ------------------------------------------------ the device of each call


class _Device:
    """A stand-in for cupy.cuda.Device: entering it makes it current (and it
    may be entered again while entered, as CuPy's may)."""

    current = 0

    def __init__(self, dev_id):
        self.id = dev_id
        self._saved = []

    def __enter__(self):
        self._saved.append(_Device.current)
        _Device.current = self.id
        return self

    def __exit__(self, *exc):
        _Device.current = self._saved.pop()


class _DevArray(_FakeArray):
    """A fake CuPy array made on the device current at its creation."""

    __module__ = "cupy"

    def __init__(self, shape, dtype, dev_id=None):
        super().__init__(shape, dtype)
        self.device = _Device(_Device.current if dev_id is None else dev_id)
        self.flags = type("Flags", (), {"c_contiguous": True})()


class _DevCupy:
    float64 = np.float64

    class cuda:  # noqa: N801
        @staticmethod
        def get_current_stream():  # CuPy's current stream is per device
            return _Ptr(100 + _Device.current)

    @staticmethod
    def empty(shape, dtype):
        return _DevArray(shape if isinstance(shape, tuple) else (shape,), dtype)

    @staticmethod
    def full(shape, value, dtype):
        return _DevArray(shape, dtype)


class _RecordingModule:
    """Records the current device and the stream of each optimizer_step call."""

    def __init__(self):
        self.calls = []

    def set_allocator(self, allocate):
        pass

    def optimizer_step(self, rule, step, params, grads, slots, l1, l2, max_norm, views,
                       clip_mode, clip, stream):
        self.calls.append((_Device.current, stream))


def test_optimizer_runs_on_the_parameters_device(monkeypatch):
    """Parameters on GPU 1 while GPU 0 is current: the slots, the kernels and
    the stream are GPU 1's, and GPU 0 is current again afterwards."""
    from fusednn._backend import CUDABackend
    from fusednn.optimizers import _base

    mod = _RecordingModule()
    be = CUDABackend(mod, _DevCupy)
    monkeypatch.setattr(_base._backend, "backend_for", lambda caller, **arrays: be)
    params = [_DevArray((7, 5), np.float32, 1), _DevArray((5,), np.float32, 1)]
    grads = [_DevArray(p.shape, np.float32, 1) for p in params]
    opt = fd.optimizers.Adam(global_clipnorm=1.0)
    assert _Device.current == 0
    opt.apply(grads, params)
    opt.apply(grads, params)
    assert mod.calls == [(1, 101), (1, 101)]
    assert {s.device.id for row in opt._slots for s in row if s is not None} == {1}
    assert _Device.current == 0
    # the same optimizer given parameters on another GPU is refused, not run there
    moved = [_DevArray(p.shape, np.float32, 0) for p in params]
    with pytest.raises(ValueError, match="GPU 0.*GPU 1"):
        opt.apply(grads, moved)
