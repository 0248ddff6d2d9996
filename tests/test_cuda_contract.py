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


def test_binding_rejects_bad_arguments():
    mod = _cuda_module()
    with pytest.raises(ValueError, match="float16"):
        mod.activation_forward("float16", 1, 0.0, 4, 1 << 20, 2 << 20, 0)
    with pytest.raises(ValueError):
        mod.activation_forward("float32", 99, 0.0, 4, 1 << 20, 2 << 20, 0)
    with pytest.raises(ValueError):
        mod.dense_forward("float32", -1, 3, 4, 1 << 20, 2 << 20, 0, 3 << 20, 0, 0, 0, 0, 0.0,
                          False, 0)
    with pytest.raises(ValueError):  # a mask row length that is not a multiple of 128 bits
        mod.dense_forward("float32", 5, 3, 4, 1 << 20, 2 << 20, 0, 3 << 20, 0, 4 << 20, 100, 1,
                          0.0, False, 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("clip_mode", [0, 1, 2, 3])
def test_optimizer_step_is_called_correctly(dtype, clip_mode):
    """CUDABackend.optimizer_step with the lists Optimizer.apply builds."""
    mod = _cuda_module()
    from fusednn._backend import CUDABackend
    from fusednn.optimizers._base import _STEP_FIELDS

    be = CUDABackend(mod, _FakeCupy)
    params = [_FakeArray((7, 5), dtype), _FakeArray((17,), dtype)]
    grads = [_FakeArray(p.shape, dtype) for p in params]
    slots = [[_FakeArray(p.shape, dtype), None, _FakeArray(p.shape, dtype)] for p in params]
    norms = _FakeArray((2,), np.float64)
    for kind in range(7):
        with pytest.raises(RuntimeError):
            be.optimizer_step(kind, [0.1] * len(_STEP_FIELDS), params, grads, slots, [0.0, 0.01],
                              [0.0, 0.0], [2.0, 0.0], [(1, 7, 5), (1, 1, 1)], clip_mode, 1.0,
                              norms)


def test_optimizer_binding_rejects_bad_arguments():
    mod = _cuda_module()
    t = (1 << 20, 2 << 20, 3 << 20, 0, 0, 10, 0.0, 0.0, 0.0, 1, 1, 1)
    with pytest.raises(ValueError):  # unknown optimizer kind
        mod.optimizer_step("float32", 99, [0.0] * 15, [t], 0, 0.0, 0, 0)
    with pytest.raises(ValueError):  # wrong number of step fields
        mod.optimizer_step("float32", 3, [0.0] * 14, [t], 0, 0.0, 0, 0)
    with pytest.raises(ValueError):  # negative size
        mod.optimizer_step("float32", 3, [0.0] * 15, [t[:5] + (-1,) + t[6:]], 0, 0.0, 0, 0)
    with pytest.raises(ValueError):  # max-norm view that does not cover the tensor
        mod.optimizer_step("float32", 3, [0.0] * 15, [t[:8] + (2.0, 1, 3, 3)], 0, 0.0, 0, 0)
    with pytest.raises(ValueError):  # norm clipping without its device buffer
        mod.optimizer_step("float32", 3, [0.0] * 15, [t], 2, 1.0, 0, 0)
