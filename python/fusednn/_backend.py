"""The one place that dispatches by array type.

NumPy arrays go to the CPU kernels (``fusednn._C``), CuPy arrays to the CUDA
kernels (``fusednn._C_cuda``). Mixing the two in one call is a TypeError.
The CUDA module is imported lazily, so ``import fusednn`` never loads CUDA
libraries on a machine that does not use them.
"""

from __future__ import annotations

import functools

import numpy as np

from . import _C
from ._arrays import is_cupy

_cuda_state: dict = {}
_settings = {"tf32": False, "epilogues": True}

# The fix for each reason the CUDA backend can be unusable, in the order they
# are probed: the first missing piece is the one reported.
_FIXES = {
    "not-built": "reinstall with FUSEDNN_CUDA=ON where nvcc is installed",
    "no-driver": "install the NVIDIA driver, 580 or newer, on a machine with an NVIDIA GPU",
    "driver-too-old": "update the NVIDIA driver to 580 or newer",
    "no-gpu": "check that nvidia-smi lists the GPU and that CUDA_VISIBLE_DEVICES admits it",
    "no-cublaslt": "pip install 'fusednn[cuda]'",
    "no-cupy": "pip install 'fusednn[cuda]'",
}


def _probe_driver(built_cuda_major: int):
    """(reason, message) from the driver library alone, or None when it finds
    a GPU. Loading libcuda through ctypes needs neither cuBLASLt nor CuPy, so
    a machine without a GPU is told so before anything else is tried."""
    import ctypes

    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no-driver", ("no GPU driver: libcuda.so.1 not found (no NVIDIA GPU here, or its "
                             "driver is not installed)")
    version = ctypes.c_int(0)
    if lib.cuDriverGetVersion(ctypes.byref(version)) == 0 and built_cuda_major and \
            0 < version.value // 1000 < built_cuda_major:
        return "driver-too-old", (f"driver too old: it supports CUDA {version.value // 1000}."
                                  f"{version.value % 1000 // 10}, fusednn was built with CUDA "
                                  f"{built_cuda_major}")
    count = ctypes.c_int(0)
    rc = lib.cuInit(0)
    if rc == 0:
        rc = lib.cuDeviceGetCount(ctypes.byref(count))
    if rc != 0 or count.value < 1:
        detail = f"cuInit/cuDeviceGetCount returned error {rc}" if rc else "0 devices"
        return "no-gpu", f"no GPU: the NVIDIA driver found no usable device ({detail})"
    return None


def _load_cuda():
    """(module or None, cupy or None, (reason, message)), cached. reason is
    None when the backend is usable (message then names the GPU)."""
    if "status" not in _cuda_state:
        mod = cp = None
        status = None
        from . import _build_config

        if not _build_config.CUDA_BUILT:
            status = ("not-built", "fusednn was built without CUDA")
        if status is None:
            major = int(_build_config.CUDA_COMPILER_VERSION.split(".")[0] or 0) \
                if _build_config.CUDA_COMPILER_VERSION else 0
            status = _probe_driver(major)
        if status is None:
            try:
                from . import _C_cuda as mod  # noqa: N813
            except ImportError as e:
                reason = "no-cublaslt" if "cublas" in str(e).lower() else "not-built"
                what = "no cuBLASLt" if reason == "no-cublaslt" else "the CUDA module does not load"
                status = (reason, f"{what}: {e}")
        if status is None:
            ok, msg = mod.runtime_status()
            if not ok:
                reason = ("driver-too-old" if msg.startswith("driver too old") else
                          "no-driver" if msg.startswith("no NVIDIA driver") else "no-gpu")
                mod, status = None, (reason, f"no GPU: {msg}" if reason == "no-gpu" else msg)
            else:
                try:
                    import cupy as cp
                except ImportError as e:
                    mod, status = None, ("no-cupy", f"no CuPy: GPU found ({msg}) but CuPy "
                                                    f"does not import ({e})")
                else:
                    mod.set_activation_epilogues(_settings["epilogues"])
                    mod.set_tf32(_settings["tf32"])
                    status = (None, msg)
        _cuda_state.update(module=mod, cupy=cp, status=status)
    return _cuda_state["module"], _cuda_state["cupy"], _cuda_state["status"]


def has_cuda() -> bool:
    """True when the CUDA kernels were built, a GPU is usable and CuPy imports."""
    return _load_cuda()[0] is not None


def cuda_status() -> str:
    """The GPU in use, or the first missing piece and its fix: no NVIDIA
    driver, a driver too old for the CUDA the package was built with, no GPU,
    no cuBLASLt, or no CuPy."""
    reason, msg = _load_cuda()[2]
    if reason is None:
        return msg
    return f"{msg}; to fix: {_FIXES[reason]}"


def cuda_unavailable_reason():
    """None when the CUDA backend is usable, else one of "not-built",
    "no-driver", "driver-too-old", "no-gpu", "no-cublaslt", "no-cupy"."""
    return _load_cuda()[2][0]


def set_cuda_epilogues(enabled: bool) -> None:
    """Whether CUDA dense layers may fuse relu and the tanh GELU (and their
    gradients) into cuBLASLt's GEMM epilogues. On by default: one pass over
    the output instead of two, and a 1-bit relu mask for the backward pass.

    Off, cuBLASLt still computes the GEMM and the bias, and the activation
    runs in fusednn's own kernels, which match the CPU: cuBLASLt's relu is
    max(z, 0) and turns a NaN pre-activation into 0 (the CPU, PyTorch and
    fusednn's kernels keep the NaN), and its GELU uses a faster tanh whose
    error is larger than float32 rounding."""
    if not isinstance(enabled, (bool, np.bool_)):
        raise TypeError(f"set_cuda_epilogues: enabled must be a bool, got {enabled!r}")
    _settings["epilogues"] = bool(enabled)
    mod = _cuda_state.get("module")
    if mod is not None:
        mod.set_activation_epilogues(bool(enabled))


def get_cuda_epilogues() -> bool:
    return _settings["epilogues"]


def cuda_epilogue_counts() -> dict:
    """{epilogue: {"used": n, "refused": n}} for this process's cuBLASLt GEMMs:
    how often each epilogue ran, and how often cuBLASLt had no algorithm for
    it and the unfused fallback ran instead (set FUSEDNN_LOG_EPILOGUES=1 to
    have each refused shape printed). Empty without a usable GPU."""
    mod = _load_cuda()[0]
    return {} if mod is None else mod.epilogue_counts()


def set_float32_matmul_precision(precision: str) -> None:
    """``"highest"``: full float32 GEMMs; ``"high"``: TF32 tensor cores on GPU.

    Same names as ``torch.set_float32_matmul_precision``. The CPU is unaffected.
    """
    if precision not in ("highest", "high"):
        raise ValueError(f"set_float32_matmul_precision: precision must be 'highest' or "
                         f"'high', got {precision!r}")
    _settings["tf32"] = precision == "high"
    mod = _cuda_state.get("module")
    if mod is not None:
        mod.set_tf32(_settings["tf32"])


def get_float32_matmul_precision() -> str:
    return "high" if _settings["tf32"] else "highest"


class _Device:
    """The kernels of one device. fusednn._C and fusednn._C_cuda are built
    from the same binding files and take the same arguments (arrays, enums,
    the OptStep record, and the stream last); each allocates its outputs. A
    device class only says which module runs a call, on which stream, and
    (on a GPU) with which device current."""

    name = ""
    xp = np
    _C = _C
    stream = 0  # the CPU kernels run on the calling thread and fusednn's pool

    def activation_forward(self, z, spec):
        return self._C.activation_forward(z, spec.kind, spec.alpha, self.stream)

    def activation_backward(self, dy, saved, spec):
        return self._C.activation_backward(dy, saved, spec.kind, spec.alpha, self.stream)

    def dense_forward(self, x, w, b, spec):
        """(y, z or None, relu mask or None): the mask is cuBLASLt's (GPU relu)."""
        return self._C.dense_forward(x, w, b, spec.kind, spec.alpha, self.stream)

    def dense_backward(self, dy, saved, x, w, has_bias, need_dx, spec):
        """(dx or None, dw, db or None)."""
        return self._C.dense_backward(dy, saved, x, w, has_bias, need_dx, spec.kind, spec.alpha,
                                      self.stream)

    def dense_backward_weight(self, dz, x, need_db):
        return self._C.dense_backward_weight(dz, x, need_db, self.stream)

    def dense_backward_input(self, dz, w, prev, need_db_prev):
        """(dz_prev, db_prev) through the layer whose context is `prev` (None: plain dx)."""
        if prev is None:
            return self._C.dense_backward_input(dz, w, None, None, _LINEAR, 0.0, False,
                                                self.stream)
        return self._C.dense_backward_input(dz, w, prev.saved, prev.mask, prev.spec.kind,
                                            prev.spec.alpha, need_db_prev, self.stream)

    def optimizer_step(self, rule, step, params, grads, slots, per_tensor, clip):
        """One fused step over all tensors, in place. per_tensor: (l1, l2,
        max_norm, views) lists, one entry per tensor; clip: (Clip mode, bound)."""
        self._C.optimizer_step(rule, step, params, grads, slots, *per_tensor, *clip, self.stream)

    def dropout_forward(self, x, rate, alpha, seed, step, store_mask):
        """(y, mask words or None)."""
        return self._C.dropout_forward(x, rate, alpha, seed, step, store_mask, self.stream)

    def dropout_backward(self, dy, mask, rate, alpha, seed, step):
        return self._C.dropout_backward(dy, mask, rate, alpha, seed, step, self.stream)

    def dropout_mask(self, n, rate, seed, step, like=None):
        """The mask words of an n-element tensor, on `like`'s device."""
        return self._C.dropout_mask(n, rate, seed, step, self.stream)

    def philox4x32_10(self, counters, key):
        """counters: (N, 4) uint32 array; key: two uint32 values."""
        return self._C.philox4x32_10(self.xp.ascontiguousarray(counters, dtype=np.uint32), key,
                                     self.stream)

    def batchnorm_forward(self, x, w, b, gamma, beta, moving_mean, moving_var, opts):
        """(y, cols, mean, var, mask, z): batch norm of z = x @ w + b, or of x
        (z None) when w is None, in one call; moving_* updated in place when
        opts.training (opts: fusednn.ops.batchnorm.BatchNormOptions)."""
        return self._C.batchnorm_forward(x, w, b, gamma, beta, moving_mean, moving_var,
                                         opts.training, opts.momentum, opts.epsilon,
                                         opts.convention, opts.spec.kind, opts.spec.alpha,
                                         opts.rate, opts.alpha_dropout, opts.seed, opts.step,
                                         self.stream)

    def batchnorm_backward(self, dy, bn, dense=None, need_dx=True):
        """(dx, dgamma, dbeta, dw, db) through the forward of `bn` (a
        BatchNormContext) and, given `dense` (the DenseBatchNormContext it
        belongs to), its dense layer: dx is then dL/dx of the block (None
        unless need_dx), else dL/d(BN input) with dw, db None. One call."""
        o = bn.opts
        x_in, w, has_bias = (None, None, False) if dense is None else \
            (dense.x, dense.w, dense.has_bias)
        return self._C.batchnorm_backward(dy, x_in, w, bn.x, bn.y, bn.cols, bn.mask, has_bias,
                                          need_dx, bn.has_gamma, bn.has_beta, o.spec.kind,
                                          o.spec.alpha, o.rate, o.alpha_dropout, o.training,
                                          self.stream)

    def softmax_cross_entropy(self, logits, labels, y, w, eps, mean):
        """(0-d float64 loss, dlogits), both on the device (no synchronisation);
        labels: int32/int64 class indices, or y: label rows."""
        return self._C.softmax_cross_entropy(logits, labels, y, w, eps, mean, self.stream)

    def point_loss(self, kind, pred, target, w, mean):
        """(0-d float64 loss, dpred) of an element-wise loss (PointLoss kind)."""
        return self._C.point_loss(kind, pred, target, w, mean, self.stream)

    def loss_input_flags(self, flags):
        """The 0-d boolean arrays of the loss input checks, as Python bools."""
        return [bool(f) for f in flags]


class CPUBackend(_Device):
    """NumPy arrays -> fusednn._C (OpenBLAS GEMM tiles, fusednn's thread pool)."""

    name = "cpu"


class CUDABackend(_Device):
    """CuPy arrays -> fusednn._C_cuda (cuBLASLt + own kernels): each call runs
    with its arrays' device current, on that device's current CuPy stream;
    outputs come from CuPy's pool."""

    name = "cuda"

    def __init__(self, mod, cp):
        self._C = mod
        self.xp = cp
        mod.set_allocator(cp.empty)

    @property
    def stream(self):
        return self.xp.cuda.get_current_stream().ptr

    def loss_input_flags(self, flags):
        """The 0-d boolean device arrays of the loss input checks, read back in one
        transfer (the one synchronisation the checks cost)."""
        if not flags:
            return []
        return [bool(f) for f in self.xp.stack(flags).get()]


def _on_device(method, where):
    """`method` run with the device of the array where(args) current, so that
    its allocations, kernels and stream are that device's."""

    @functools.wraps(method)
    def call(self, *args):
        with where(args).device:
            return method(self, *args)

    return call


# Where each kernel call finds its device: the first argument, except these.
_DEVICE_ARG = {"optimizer_step": lambda a: a[2][0], "dropout_mask": lambda a: a[4],
               "point_loss": lambda a: a[1]}
for _name, _method in vars(_Device).items():
    if callable(_method) and not _name.startswith("_") and _name != "loss_input_flags":
        setattr(CUDABackend, _name, _on_device(_method, _DEVICE_ARG.get(_name, lambda a: a[0])))

_LINEAR = _C.Act.Linear
_CPU = CPUBackend()


def backend_for(caller: str, **arrays):
    """The backend object for the named arrays; None values are skipped.

    Raises TypeError for anything other than NumPy/CuPy arrays and for a mix.
    """
    for a in arrays.values():  # the common case first: a loop, not all() over a generator
        if a is not None and type(a) is not np.ndarray:
            break
    else:
        return _CPU
    kinds = {}
    for name, a in arrays.items():
        if a is None:
            continue
        if isinstance(a, np.ndarray):
            kinds[name] = "cpu"
        elif is_cupy(a):
            kinds[name] = "cuda"
        else:
            raise TypeError(f"{caller}: {name} must be a numpy.ndarray or cupy.ndarray, "
                            f"got {type(a).__module__}.{type(a).__name__}")
    found = set(kinds.values())
    if len(found) > 1:
        detail = ", ".join(f"{n} is {'CuPy' if k == 'cuda' else 'NumPy'}" for n, k in kinds.items())
        raise TypeError(f"{caller}: mixed NumPy and CuPy inputs ({detail}); move them to one "
                        f"device first")
    if found != {"cuda"}:
        return _CPU
    mod, cp, _ = _load_cuda()
    if mod is None:
        raise RuntimeError(f"{caller}: CuPy arrays given but the CUDA backend is unavailable: "
                           f"{cuda_status()}")
    devices = {n: a.device.id for n, a in arrays.items() if a is not None}
    if len(set(devices.values())) > 1:
        raise ValueError(f"{caller}: inputs on different GPUs: {devices}")
    if "backend" not in _cuda_state:
        _cuda_state["backend"] = CUDABackend(mod, cp)
    return _cuda_state["backend"]
