"""The Python -> fusednn._C_cuda calling contract, checked without a GPU.

CUDABackend is driven with a stand-in for CuPy whose arrays carry fake device
pointers. Where no GPU is usable, every correctly-formed call reaches the
CUDA runtime and fails there with RuntimeError; a wrong argument count or
type would fail earlier with TypeError, and bad sizes with ValueError.
"""

import contextlib

import numpy as np
import pytest

import fusednn as fd
from fusednn._C import Act, BnConvention, Clip, Opt, OptStep
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
    _next = 1 << 20

    def __init__(self, shape, dtype):
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.size = int(np.prod(self.shape))
        _FakeArray._next += 1 << 20
        self.data = _Ptr(_FakeArray._next)
        self.device = contextlib.nullcontext()


class _FakeCupy:
    uint8 = np.uint8

    class cuda:  # noqa: N801
        @staticmethod
        def get_current_stream():
            return _Ptr(0)

    @staticmethod
    def empty(shape, dtype):
        return _FakeArray(shape if isinstance(shape, tuple) else (shape,), dtype)

    @staticmethod
    def empty_like(a):
        return _FakeArray(a.shape, a.dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["linear", "relu", "elu", "gelu_tanh", "swish"])
def test_every_cuda_entry_point_is_called_correctly(name, dtype):
    mod = _cuda_module()
    from fusednn._backend import CUDABackend

    be = CUDABackend(mod, _FakeCupy)
    spec = (fd.activations.get("gelu", approximate=True) if name == "gelu_tanh"
            else fd.activations.get(name))
    x, w, b = _FakeArray((5, 3), dtype), _FakeArray((3, 4), dtype), _FakeArray((4,), dtype)
    dy = _FakeArray((5, 4), dtype)
    prev = fd.ops.DenseContext(x, w, True, spec, be, _FakeArray((5, 3), dtype),
                               _FakeArray((5, 3), dtype) if spec.saves_input else None,
                               (_FakeArray((5 * 128 // 8,), np.uint8), 128)
                               if name == "relu" else None)
    calls = [
        lambda: be.activation_forward(x, spec),
        lambda: be.activation_backward(x, x, spec),
        lambda: be.dense_forward(x, w, b, spec),
        lambda: be.dense_backward(dy, dy, x, w, True, True, spec),
        lambda: be.dense_backward_weight(dy, x, True),
        lambda: be.dense_backward_input(dy, w, prev, True),
        lambda: be.dense_backward_input(dy, w, None, False),
    ]
    for call in calls:
        with pytest.raises(RuntimeError):
            call()


def test_relu_mask_layout_comes_from_the_binding():
    """cuBLASLt's relu bitmask: rows padded to 128 bits, one bit per element;
    Python allocates what the binding says and passes its leading dimension."""
    mod = _cuda_module()
    assert mod.relu_mask_layout(5, 100) == (5 * 128 // 8, 128)
    assert mod.relu_mask_layout(3, 128) == (3 * 128 // 8, 128)
    assert mod.relu_mask_layout(2, 129) == (2 * 256 // 8, 256)
    assert mod.relu_mask_layout(0, 7) == (0, 128)
    with pytest.raises(ValueError):
        mod.relu_mask_layout(-1, 7)
    with pytest.raises(ValueError):
        mod.relu_mask_layout(2**40, 2**40)
    # the other buffers Python allocates: dropout mask words, batch-norm columns
    assert [mod.mask_words(n) for n in (0, 1, 32, 33)] == [0, 1, 1, 2]
    assert mod.batchnorm_cols == 5


def test_binding_rejects_bad_arguments():
    mod = _cuda_module()
    with pytest.raises(ValueError, match="float16"):
        mod.activation_forward("float16", Act.Relu, 0.0, 4, 1 << 20, 2 << 20, 0)
    with pytest.raises(ValueError):  # an int dressed as an Act
        mod.activation_forward("float32", Act(99), 0.0, 4, 1 << 20, 2 << 20, 0)
    with pytest.raises(TypeError):  # a bare number is not an activation
        mod.activation_forward("float32", 1, 0.0, 4, 1 << 20, 2 << 20, 0)
    with pytest.raises(ValueError):
        mod.dense_forward("float32", -1, 3, 4, 1 << 20, 2 << 20, 0, 3 << 20, 0, 0, 0,
                          Act.Linear, 0.0, False, 0)
    with pytest.raises(ValueError):  # a mask row length that is not a multiple of 128 bits
        mod.dense_forward("float32", 5, 3, 4, 1 << 20, 2 << 20, 0, 3 << 20, 0, 4 << 20, 100,
                          Act.Relu, 0.0, False, 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("clip_mode", list(Clip.__members__.values()))
def test_optimizer_step_is_called_correctly(dtype, clip_mode):
    """CUDABackend.optimizer_step with the lists Optimizer.apply builds."""
    mod = _cuda_module()
    from fusednn._backend import CUDABackend

    be = CUDABackend(mod, _FakeCupy)
    params = [_FakeArray((7, 5), dtype), _FakeArray((17,), dtype)]
    grads = [_FakeArray(p.shape, dtype) for p in params]
    slots = [[_FakeArray(p.shape, dtype), None, _FakeArray(p.shape, dtype)] for p in params]
    norms = _FakeArray((2,), np.float64)
    step = OptStep()
    step.lr = step.beta_1 = step.beta_2 = step.epsilon = step.step_size = 0.1
    for rule in Opt.__members__.values():
        with pytest.raises(RuntimeError):
            be.optimizer_step(rule, step, params, grads, slots,
                              ([0.0, 0.01], [0.0, 0.0], [2.0, 0.0], [(1, 7, 5), (1, 1, 1)]),
                              (clip_mode, 1.0), norms)


def test_optimizer_binding_rejects_bad_arguments():
    mod = _cuda_module()
    t = (1 << 20, 2 << 20, 3 << 20, 0, 0, 10, 0.0, 0.0, 0.0, 1, 1, 1)
    step, adam, off = OptStep(), Opt.Adam, Clip.Off
    with pytest.raises(ValueError):  # unknown optimizer kind
        mod.optimizer_step("float32", Opt(99), step, [t], off, 0.0, 0, 0)
    with pytest.raises(TypeError):  # the step's scalars as a bare list
        mod.optimizer_step("float32", adam, [0.0] * 15, [t], off, 0.0, 0, 0)
    with pytest.raises(ValueError):  # negative size
        mod.optimizer_step("float32", adam, step, [t[:5] + (-1,) + t[6:]], off, 0.0, 0, 0)
    with pytest.raises(ValueError):  # max-norm view that does not cover the tensor
        mod.optimizer_step("float32", adam, step, [t[:8] + (2.0, 1, 3, 3)], off, 0.0, 0, 0)
    with pytest.raises(ValueError):  # norm clipping without its device buffer
        mod.optimizer_step("float32", adam, step, [t], Clip.Norm, 1.0, 0, 0)


class _FakeCupyBN(_FakeCupy):
    float64 = np.float64
    uint32 = np.uint32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["linear", "elu", "gelu"])
def test_batchnorm_is_called_correctly(name, dtype):
    """CUDABackend's batch-norm methods against the real binding: training and
    inference, with and without gamma/beta, moving statistics and dropout."""
    mod = _cuda_module()
    from fusednn._backend import CUDABackend

    be = CUDABackend(mod, _FakeCupyBN)
    spec = fd.activations.get(name)
    x = _FakeArray((6, 5), dtype)
    vec = [_FakeArray((5,), dtype) for _ in range(4)]
    cols, mask = _FakeArray((5, 5), dtype), _FakeArray((1,), np.uint32)
    keras, torch = BnConvention.Keras, BnConvention.Torch

    def opts(training, momentum, epsilon, convention, rate, alpha, seed, step):
        return BatchNormOptions(training, momentum, epsilon, convention, spec, rate, alpha, seed,
                                step)

    def ctx(mask, has_gamma, has_beta, rate, alpha, training):
        return BatchNormContext(x, x, cols, mask, has_gamma, has_beta,
                                opts(training, 0.99, 1e-3, keras, rate, alpha, 0, 0), be)

    calls = [
        lambda: be.batchnorm_forward(x, *vec, opts(True, 0.99, 1e-3, keras, 0.0, False, 0, 0)),
        lambda: be.batchnorm_forward(x, None, None, None, None,
                                     opts(True, 0.1, 1e-5, torch, 0.3, True, 2**64 - 1, 2**40)),
        lambda: be.batchnorm_forward(x, *vec, opts(False, 0.99, 1e-3, keras, 0.3, False, 1, 2)),
        lambda: be.batchnorm_backward(x, ctx(None, True, True, 0.0, False, True)),
        lambda: be.batchnorm_backward(x, ctx(mask, False, False, 0.3, True, True)),
        lambda: be.batchnorm_backward(x, ctx(mask, True, False, 0.3, False, False)),
    ]
    for call in calls:
        with pytest.raises(RuntimeError):
            call()


def test_batchnorm_binding_rejects_bad_arguments():
    mod = _cuda_module()
    p = [k << 20 for k in range(1, 12)]
    ws = mod.batchnorm_workspace(6, 5)
    assert ws >= 2 * 5 * 2

    def fwd(m=6, n=5, rate=0.0, mask=0, conv=BnConvention.Keras, eps=1e-3, mm=p[3], mv=p[4],
            training=True):
        mod.batchnorm_forward("float32", m, n, p[0], 0, 0, mm, mv, training, 0.99, eps, conv,
                              p[5], p[6], p[7], p[8], mask, p[9], Act.Elu, 1.0, rate, False, 0, 0,
                              0)

    for kw in ({"m": 0}, {"n": -1}, {"rate": 1.0}, {"rate": float("nan")},
               {"rate": 0.5},  # dropout without a mask buffer
               {"conv": BnConvention(2)}, {"eps": 0.0}, {"mv": 0},  # moving_mean without moving_var
               {"mm": 0, "mv": 0, "training": False}):  # inference without moving statistics
        with pytest.raises(ValueError):
            fwd(**kw)
    with pytest.raises(ValueError):  # backward with dropout but no mask
        mod.batchnorm_backward("float32", 6, 5, p[0], p[1], p[2], p[3], 0, p[4], 0, 0, p[5],
                               Act.Elu, 1.0, 0.3, False, True, 0)
    with pytest.raises(ValueError):
        mod.batchnorm_workspace(0, 5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_batchnorm_is_called_correctly(dtype, monkeypatch):
    """CUDABackend's Dense -> BN block: each stage reaches the real binding
    with the arrays of the previous one (the stage before is stubbed, since
    the fake runtime fails at the first call)."""
    mod = _cuda_module()
    from fusednn._backend import CUDABackend

    be = CUDABackend(mod, _FakeCupyBN)
    spec = fd.activations.get("elu")
    x, w, b = _FakeArray((6, 3), dtype), _FakeArray((3, 5), dtype), _FakeArray((5,), dtype)
    z = _FakeArray((6, 5), dtype)
    vec = [_FakeArray((5,), dtype) for _ in range(4)]
    cols, mask = _FakeArray((5, 5), dtype), _FakeArray((1,), np.uint32)
    opts = BatchNormOptions(True, 0.99, 1e-3, BnConvention.Keras, spec, 0.3, False, 1, 2)
    ctx = DenseBatchNormContext(x, w, True, BatchNormContext(z, z, cols, mask, True, True, opts,
                                                             be))
    with pytest.raises(RuntimeError):  # the GEMM, first
        be.dense_batchnorm_forward(x, w, b, *vec, opts)
    monkeypatch.setattr(be, "dense_forward", lambda *a: (z, None, None))
    with pytest.raises(RuntimeError):  # then the batch norm of z
        be.dense_batchnorm_forward(x, w, b, *vec, opts)
    with pytest.raises(RuntimeError):  # backward: the batch norm first
        be.dense_batchnorm_backward(z, ctx, True)
    monkeypatch.setattr(be, "batchnorm_backward", lambda *a: (z, vec[0], vec[1]))
    with pytest.raises(RuntimeError):  # then the dense GEMMs on dz
        be.dense_batchnorm_backward(z, ctx, True)


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
    __cuda_array_interface__ = {}

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

    def optimizer_step(self, dtype, rule, step, tensors, clip_mode, clip, norms_ptr, stream):
        self.calls.append((_Device.current, stream))


def test_optimizer_runs_on_the_parameters_device(monkeypatch):
    """Parameters on GPU 1 while GPU 0 is current: the slots, the norms
    buffer, the kernels and the stream are GPU 1's, and GPU 0 is current
    again afterwards."""
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
    assert opt._norms.device.id == 1
    assert _Device.current == 0
    # the same optimizer given parameters on another GPU is refused, not run there
    moved = [_DevArray(p.shape, np.float32, 0) for p in params]
    with pytest.raises(ValueError, match="GPU 0.*GPU 1"):
        opt.apply(grads, moved)
