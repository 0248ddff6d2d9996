"""The one place that dispatches by array type.

NumPy arrays go to the CPU kernels (``fusednn._C``), CuPy arrays to the CUDA
kernels (``fusednn._C_cuda``). Mixing the two in one call is a TypeError.
The CUDA module is imported lazily, so ``import fusednn`` never loads CUDA
libraries on a machine that does not use them.
"""

from __future__ import annotations

import numpy as np

from . import _C
from ._arrays import is_cupy
from .activations import get as _get_activation

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


def get_float32_matmul_precision() -> str:
    return "high" if _settings["tf32"] else "highest"


# the identity activation, for the dense stage of a Dense -> BN block
_LINEAR = _get_activation("linear")


class CPUBackend:
    """NumPy arrays -> fusednn._C (OpenBLAS + OpenMP)."""

    name = "cpu"
    xp = np

    @staticmethod
    def activation_forward(z, spec):
        return _C.activation_forward(z, spec.kind, spec.alpha)

    @staticmethod
    def activation_backward(dy, saved, spec):
        return _C.activation_backward(dy, saved, spec.kind, spec.alpha)

    @staticmethod
    def dense_forward(x, w, b, spec):
        """(y, z or None, relu mask or None)."""
        y, z = _C.dense_forward(x, w, b, spec.kind, spec.alpha)
        return y, z, None

    @staticmethod
    def dense_backward(dy, saved, x, w, has_bias, need_dx, spec):
        return _C.dense_backward(dy, saved, x, w, has_bias, need_dx, spec.kind, spec.alpha)

    @staticmethod
    def dense_backward_weight(dz, x, need_db):
        return _C.dense_backward_weight(dz, x, need_db)

    @staticmethod
    def dense_backward_input(dz, w, prev, need_db_prev):
        """(dz_prev, db_prev) through the layer whose context is `prev` (None: plain dx)."""
        if prev is None:
            return _C.dense_backward_input(dz, w, None, _LINEAR.kind, 0.0, False)
        return _C.dense_backward_input(dz, w, prev.saved, prev.spec.kind, prev.spec.alpha,
                                       need_db_prev)

    @staticmethod
    def optimizer_step(rule, step, params, grads, slots, per_tensor, clip, norms):
        """One fused step over all tensors, in place. per_tensor: (l1, l2,
        max_norm, views) lists, one entry per tensor; clip: (Clip mode,
        bound); norms: GPU only."""
        l1, l2, max_norm, views = per_tensor
        _C.optimizer_step(rule, step, params, grads, slots, l1, l2, max_norm, views, *clip)

    # --- dropout (CPU) ---

    @staticmethod
    def dropout_forward(x, rate, alpha, seed, step, store_mask):
        """(y, mask words or None)."""
        return _C.dropout_forward(x, rate, alpha, seed, step, store_mask)

    @staticmethod
    def dropout_backward(dy, mask, rate, alpha, seed, step):
        return _C.dropout_backward(dy, mask, rate, alpha, seed, step)

    @staticmethod
    def dropout_mask(n, rate, seed, step, like=None):
        return _C.dropout_mask(n, rate, seed, step)

    @staticmethod
    def philox4x32_10(counters, key):
        return _C.philox4x32_10(counters, key)

    # --- batchnorm (CPU) ---
    @staticmethod
    def batchnorm_forward(x, gamma, beta, moving_mean, moving_var, opts):
        """(y, cols, mean, var, mask); moving_* updated in place when
        opts.training (opts: fusednn.ops.batchnorm.BatchNormOptions)."""
        return _C.batchnorm_forward(x, gamma, beta, moving_mean, moving_var, opts.training,
                                    opts.momentum, opts.epsilon, opts.convention, opts.spec.kind,
                                    opts.spec.alpha, opts.rate, opts.alpha_dropout, opts.seed,
                                    opts.step)

    @staticmethod
    def batchnorm_backward(dy, ctx):
        """(dx, dgamma or None, dbeta or None) through the forward of `ctx`
        (a BatchNormContext)."""
        o = ctx.opts
        return _C.batchnorm_backward(dy, ctx.x, ctx.y, ctx.cols, ctx.mask, ctx.has_gamma,
                                     ctx.has_beta, o.spec.kind, o.spec.alpha, o.rate,
                                     o.alpha_dropout, o.training)

    @staticmethod
    def dense_batchnorm_forward(x, w, b, gamma, beta, moving_mean, moving_var, opts):
        """(y, cols, mean, var, mask, z), z = x @ w + b: one C++ call."""
        return _C.dense_batchnorm_forward(x, w, b, gamma, beta, moving_mean, moving_var,
                                          opts.training, opts.momentum, opts.epsilon,
                                          opts.convention, opts.spec.kind, opts.spec.alpha,
                                          opts.rate, opts.alpha_dropout, opts.seed, opts.step)

    @staticmethod
    def dense_batchnorm_backward(dy, ctx, need_dx):
        """(dx or None, dgamma, dbeta, dw, db or None) through the block of
        `ctx` (a DenseBatchNormContext): one C++ call."""
        bn, o = ctx.bn, ctx.bn.opts
        return _C.dense_batchnorm_backward(dy, ctx.x, ctx.w, bn.x, bn.y, bn.cols, bn.mask,
                                           ctx.has_bias, need_dx, bn.has_gamma, bn.has_beta,
                                           o.spec.kind, o.spec.alpha, o.rate, o.alpha_dropout,
                                           o.training)

    # --- losses (CPU) ---

    @staticmethod
    def softmax_cross_entropy(logits, labels, y, w, eps, mean):
        """(0-d float64 loss, dlogits); labels int32/int64 class indices or y label rows."""
        loss, g = _C.softmax_cross_entropy(logits, labels, y, w, eps, mean)
        return np.array(loss, dtype=np.float64), g

    @staticmethod
    def point_loss(kind, pred, target, w, mean):
        """(0-d float64 loss, dpred) of an element-wise loss (fusednn::PointLoss kind)."""
        loss, g = _C.point_loss(kind, pred, target, w, mean)
        return np.array(loss, dtype=np.float64), g

    @staticmethod
    def loss_input_flags(flags):
        """The 0-d boolean arrays of the loss input checks, as Python bools."""
        return [bool(f) for f in flags]


class CUDABackend:
    """CuPy arrays -> fusednn._C_cuda (cuBLASLt + own kernels), on CuPy's current stream."""

    name = "cuda"

    def __init__(self, mod, cp):
        self._C = mod
        self.xp = cp

    def _stream(self):
        return self.xp.cuda.get_current_stream().ptr

    @staticmethod
    def _ptr(a):
        return 0 if a is None else a.data.ptr

    def activation_forward(self, z, spec):
        with z.device:
            return self._activation_forward(z, spec)

    def activation_backward(self, dy, saved, spec):
        with dy.device:
            return self._activation_backward(dy, saved, spec)

    def dense_forward(self, x, w, b, spec):
        with x.device:
            return self._dense_forward(x, w, b, spec)

    def dense_backward(self, dy, saved, x, w, has_bias, need_dx, spec):
        with x.device:
            return self._dense_backward(dy, saved, x, w, has_bias, need_dx, spec)

    def dense_backward_weight(self, dz, x, need_db):
        (m, k), n = x.shape, dz.shape[1]
        with x.device:
            dw = self.xp.empty((k, n), dtype=x.dtype)
            db = self.xp.empty((n,), dtype=x.dtype) if need_db else None
            self._C.dense_backward_weight(x.dtype.name, m, k, n, dz.data.ptr, x.data.ptr,
                                          dw.data.ptr, self._ptr(db), tf32(), self._stream())
        return dw, db

    def dense_backward_input(self, dz, w, prev, need_db_prev):
        (k, n), m = w.shape, dz.shape[0]
        with dz.device:
            out = self.xp.empty((m, k), dtype=dz.dtype)
            db = self.xp.empty((k,), dtype=dz.dtype) if prev is not None and need_db_prev else None
            kind, alpha, saved, mask, ld = _LINEAR.kind, 0.0, None, None, 0
            if prev is not None:
                kind, alpha, saved = prev.spec.kind, prev.spec.alpha, prev.saved
                if prev.mask is not None:
                    mask, ld = prev.mask
            self._C.dense_backward_input(dz.dtype.name, m, k, n, dz.data.ptr, w.data.ptr,
                                         out.data.ptr, self._ptr(db), kind, alpha,
                                         self._ptr(saved), self._ptr(mask), ld, tf32(),
                                         self._stream())
        return out, db

    def _activation_forward(self, z, spec):
        y = self.xp.empty_like(z)
        self._C.activation_forward(z.dtype.name, spec.kind, spec.alpha, z.size, z.data.ptr,
                                   y.data.ptr, self._stream())
        return y

    def _activation_backward(self, dy, saved, spec):
        dz = self.xp.empty_like(dy)
        self._C.activation_backward(dy.dtype.name, spec.kind, spec.alpha, dy.size, dy.data.ptr,
                                    self._ptr(saved), dz.data.ptr, self._stream())
        return dz

    def _dense_forward(self, x, w, b, spec):
        (m, k), n = x.shape, w.shape[1]
        y = self.xp.empty((m, n), dtype=x.dtype)
        z = self.xp.empty((m, n), dtype=x.dtype) if spec.saves_input else None
        # relu: cuBLASLt's forward epilogue also writes a bit mask (about 1/32
        # of y's size, laid out as the binding says), which the DRELU_BGRAD
        # epilogue of the next layer's backward GEMM reads.
        mask, ld = None, 0
        if spec.name == "relu":
            nbytes, ld = self._C.relu_mask_layout(m, n)
            mask = self.xp.empty((nbytes,), dtype=self.xp.uint8)
        wrote = self._C.dense_forward(x.dtype.name, m, k, n, x.data.ptr, w.data.ptr,
                                      self._ptr(b), y.data.ptr, self._ptr(z), self._ptr(mask),
                                      ld, spec.kind, spec.alpha, tf32(), self._stream())
        return y, z, ((mask, ld) if wrote else None)

    def _dense_backward(self, dy, saved, x, w, has_bias, need_dx, spec):
        (m, k), n = x.shape, w.shape[1]
        xp = self.xp
        dw = xp.empty((k, n), dtype=x.dtype)
        db = xp.empty((n,), dtype=x.dtype) if has_bias else None
        dx = xp.empty((m, k), dtype=x.dtype) if need_dx else None
        dz = xp.empty((m, n), dtype=x.dtype) if not spec.is_linear else None
        self._C.dense_backward(x.dtype.name, m, k, n, dy.data.ptr, self._ptr(saved),
                               x.data.ptr, w.data.ptr, self._ptr(dz), self._ptr(dx),
                               dw.data.ptr, self._ptr(db), spec.kind, spec.alpha, tf32(),
                               self._stream())
        return dx, dw, db

    def optimizer_step(self, rule, step, params, grads, slots, per_tensor, clip, norms):
        """One fused step over all tensors, in place, as CPUBackend's; `norms`
        (float64, one per tensor) holds the clipping norms on the device."""
        tensors = [(p.data.ptr, g.data.ptr, *(self._ptr(s) for s in row), int(p.size), a, b,
                    mn, *view)
                   for p, g, row, a, b, mn, view in zip(params, grads, slots, *per_tensor)]
        clip_mode, clip = clip
        # The kernels run on the current device: the parameters' (one for all,
        # checked by backend_for), whichever device the caller has current.
        with params[0].device:
            self._C.optimizer_step(params[0].dtype.name, rule, step, tensors, clip_mode, clip,
                                   self._ptr(norms), self._stream())

    # --- dropout (CUDA) ---

    def _mask_words(self, n):
        return self.xp.empty((self._C.mask_words(n),), dtype=self.xp.uint32)

    def dropout_forward(self, x, rate, alpha, seed, step, store_mask):
        """(y, mask words or None), the words on x's device."""
        with x.device:
            y = self.xp.empty_like(x)
            mask = self._mask_words(x.size) if store_mask else None
            self._C.dropout_forward(x.dtype.name, x.size, rate, alpha, seed, step, x.data.ptr,
                                    y.data.ptr, self._ptr(mask), self._stream())
        return y, mask

    def dropout_backward(self, dy, mask, rate, alpha, seed, step):
        with dy.device:
            dx = self.xp.empty_like(dy)
            self._C.dropout_backward(dy.dtype.name, dy.size, rate, alpha, seed, step,
                                     dy.data.ptr, self._ptr(mask), dx.data.ptr, self._stream())
        return dx

    def dropout_mask(self, n, rate, seed, step, like):
        with like.device:
            words = self._mask_words(n)
            self._C.dropout_mask(words.size, rate, seed, step, words.data.ptr, self._stream())
        return words

    def philox4x32_10(self, counters, key):
        """counters: (N, 4) uint32 CuPy array; key: two ints."""
        with counters.device:
            counters = self.xp.ascontiguousarray(counters, dtype=self.xp.uint32)
            out = self.xp.empty_like(counters)
            self._C.philox4x32_10(counters.shape[0], counters.data.ptr, int(key[0]), int(key[1]),
                                  out.data.ptr, self._stream())
        return out

    # --- batchnorm (CUDA) ---
    def batchnorm_forward(self, x, gamma, beta, moving_mean, moving_var, opts):
        """(y, cols, mean, var, mask), as CPUBackend.batchnorm_forward."""
        xp = self.xp
        (m, n), dt = x.shape, x.dtype
        with x.device:
            y = xp.empty((m, n), dtype=dt)
            cols = xp.empty((self._C.batchnorm_cols, n), dtype=dt)
            mean = xp.empty((n,), dtype=xp.float64) if opts.training else None
            var = xp.empty((n,), dtype=xp.float64) if opts.training else None
            mask = self._mask_words(m * n) if opts.rate > 0 else None
            ws = xp.empty((self._C.batchnorm_workspace(m, n),), dtype=xp.float64)
            self._C.batchnorm_forward(
                dt.name, m, n, x.data.ptr, self._ptr(gamma), self._ptr(beta),
                self._ptr(moving_mean), self._ptr(moving_var), opts.training, opts.momentum,
                opts.epsilon, opts.convention, y.data.ptr, cols.data.ptr, self._ptr(mean),
                self._ptr(var), self._ptr(mask), ws.data.ptr, opts.spec.kind, opts.spec.alpha,
                opts.rate, opts.alpha_dropout, opts.seed, opts.step, self._stream())
        return y, cols, mean, var, mask

    def batchnorm_backward(self, dy, ctx):
        """(dx, dgamma or None, dbeta or None), as CPUBackend.batchnorm_backward."""
        xp, o = self.xp, ctx.opts
        (m, n), dt = ctx.x.shape, ctx.x.dtype
        with ctx.x.device:
            dx = xp.empty((m, n), dtype=dt)
            dgamma = xp.empty((n,), dtype=dt) if ctx.has_gamma else None
            dbeta = xp.empty((n,), dtype=dt) if ctx.has_beta else None
            ws = xp.empty((self._C.batchnorm_workspace(m, n),), dtype=xp.float64)
            self._C.batchnorm_backward(
                dt.name, m, n, dy.data.ptr, ctx.x.data.ptr, ctx.y.data.ptr, ctx.cols.data.ptr,
                self._ptr(ctx.mask), dx.data.ptr, self._ptr(dgamma), self._ptr(dbeta),
                ws.data.ptr, o.spec.kind, o.spec.alpha, o.rate, o.alpha_dropout, o.training,
                self._stream())
        return dx, dgamma, dbeta

    def dense_batchnorm_forward(self, x, w, b, gamma, beta, moving_mean, moving_var, opts):
        """As CPUBackend's: the cuBLASLt GEMM with the bias epilogue, then the
        batch-norm kernels, on one stream."""
        z, _, _ = self.dense_forward(x, w, b, _LINEAR)
        return (*self.batchnorm_forward(z, gamma, beta, moving_mean, moving_var, opts), z)

    def dense_batchnorm_backward(self, dy, ctx, need_dx):
        """As CPUBackend's: the batch-norm backward kernels, then the dense
        backward GEMMs (bias gradient in the dw GEMM's epilogue)."""
        dz, dgamma, dbeta = self.batchnorm_backward(dy, ctx.bn)
        dx, dw, db = self.dense_backward(dz, None, ctx.x, ctx.w, ctx.has_bias, need_dx, _LINEAR)
        return dx, dgamma, dbeta, dw, db

    # --- losses (CUDA) ---

    def softmax_cross_entropy(self, logits, labels, y, w, eps, mean):
        """(0-d float64 loss, dlogits), both left on the device: no synchronisation."""
        n, c = logits.shape
        with logits.device:
            g = self.xp.empty_like(logits)
            loss = self.xp.empty((), dtype="float64")
            kind = "dense" if labels is None else labels.dtype.name
            self._C.softmax_cross_entropy(logits.dtype.name, n, c, logits.data.ptr, kind,
                                          self._ptr(labels), self._ptr(y), self._ptr(w),
                                          g.data.ptr, loss.data.ptr, eps, mean, self._stream())
        return loss, g

    def point_loss(self, kind, pred, target, w, mean):
        n = pred.shape[0]
        k = pred.shape[1] if len(pred.shape) == 2 else 1
        with pred.device:
            g = self.xp.empty_like(pred)
            loss = self.xp.empty((), dtype="float64")
            self._C.point_loss(pred.dtype.name, kind, n, k, pred.data.ptr, target.data.ptr,
                               self._ptr(w), g.data.ptr, loss.data.ptr, mean, self._stream())
        return loss, g

    def loss_input_flags(self, flags):
        """The 0-d boolean device arrays of the loss input checks, read back in one
        transfer (the one synchronisation the checks cost)."""
        if not flags:
            return []
        return [bool(f) for f in self.xp.stack(flags).get()]


def backend_for(caller: str, **arrays):
    """The backend object for the named arrays; None values are skipped.

    Raises TypeError for anything other than NumPy/CuPy arrays and for a mix.
    """
    if all(type(a) is np.ndarray or a is None for a in arrays.values()):
        return CPUBackend  # the common case, without building the report below
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
        return CPUBackend
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


def tf32() -> bool:
    return _settings["tf32"]
