"""Dropout and alpha dropout as forward/backward pairs.

``y, ctx = dropout_forward(x, rate, seed=s, step=t)`` drops each element with
probability ``rate``; ``dx = dropout_backward(dy, ctx)`` is its gradient.

Inverted dropout (Srivastava et al. 2014), as Keras ``Dropout(rate)`` and
``torch.nn.Dropout(p)``::

    y = keep * x / (1 - rate)          dx = keep * dy / (1 - rate)

Alpha dropout (``alpha=True``; Klambauer et al. 2017, "Self-normalizing
neural networks"), as Keras ``AlphaDropout(rate)`` and
``torch.nn.AlphaDropout(p)``: dropped units take SELU's saturation value
alpha' = -lambda * alpha = -1.7580993408473766 instead of 0, and an affine
map restores zero mean and unit variance for standardised inputs::

    y = a * (keep * x + (1 - keep) * alpha') + b       dx = keep * a * dy
    a = ((1 - rate) * (1 + rate * alpha'^2))^(-1/2),  b = -a * alpha' * rate

The mask. Element e (flat row-major index) is kept iff u(e) >= floor(rate *
2^32), u(e) being lane e % 4 of Philox4x32-10 (Salmon et al. 2011) at counter
(e // 4, step) under key ``seed`` (64-bit words split low/high; see
csrc/include/fusednn/dropout.h). The mask is a pure function of (seed, step,
e): bit-identical on the CPU and the GPU, independent of thread counts, and
it can be regenerated in backward instead of stored. Give each layer its own
``seed`` and pass the training step as ``step``. PyTorch and Keras draw
their masks from other generators (torch: its global generator, mt19937 on
the CPU and Philox at its own counter offsets on CUDA; Keras: its backend's),
so the same seed gives a different mask there: the formulas agree, the masks
do not; compare statistics, not masks, with those libraries.

Differences from Keras / PyTorch: ``seed`` and ``step`` are required
(there is no global generator state); ``noise_shape`` (Keras) and
``inplace`` (torch) are not offered. ``training=False`` returns x itself,
as both libraries do at inference; keep ``training=True`` at inference for
MC dropout. NaN and inf: kept elements propagate them (x / (1 - rate));
dropped elements become the dropped value (0, or a * alpha' + b for alpha
dropout) whatever x holds, as Keras does (a select); torch multiplies by the
mask, so there a NaN input stays NaN even where it is dropped. Likewise in
backward, dropped elements get 0 whatever dy holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _backend
from .._foreign import arrays
from .._validate import _FLOAT_CHARS, check_bool, check_rate, check_uint64, float_array

__all__ = ["DropoutContext", "dropout_backward", "dropout_forward", "dropout_mask"]

_MAX_N = 2**63 - 32  # mask_words rounds n + 31 up, in int64


@dataclass
class DropoutContext:
    """What dropout_backward needs from dropout_forward.

    ``mask`` is the bit-packed keep mask (uint32 words, ceil(x.size / 32) of
    them, on x's device; element e at bit e % 32 of word e // 32), or None
    when the mask is regenerated from (seed, step) in backward
    (``store_mask=False``) or when the op was the identity.
    """

    rate: float
    alpha: bool
    seed: int
    step: int
    shape: tuple
    dtype: object
    backend: object
    mask: object = None
    identity: bool = False  # rate == 0 or training=False: backward returns dy itself

    @property
    def mask_nbytes(self) -> int:
        """Bytes the op holds for the mask: ceil(numel / 32) * 4, or 0."""
        return 0 if self.mask is None else int(self.mask.nbytes)


@arrays("x")
def dropout_forward(x, rate, *, seed, step, alpha=False, training=True, store_mask=True):
    """Dropout (or alpha dropout) of x, an array of any shape. Returns (y, ctx).

    x: float32 or float64, NumPy (CPU kernels) or CuPy (CUDA kernels).
    rate: the probability of dropping an element, in [0, 1) (Keras ``rate``,
    torch ``p``). seed, step: integers in [0, 2**64) that select the mask
    (see the module docstring); the same (seed, step, x.size) gives the same
    mask on every device. alpha: alpha dropout instead of inverted dropout.
    training: False (inference) makes the op the identity. store_mask: keep
    the mask bit-packed in ctx (1 bit per element, ``ctx.mask_nbytes``) for
    backward; False keeps nothing and backward regenerates the mask from
    (seed, step), trading memory for recomputation.

    With rate == 0 or training=False, y is x itself (no copy) and backward
    returns dy itself.
    """
    caller = "dropout_forward"
    r = check_rate(caller, "rate", rate)
    seed = check_uint64(caller, "seed", seed)
    step = check_uint64(caller, "step", step)
    alpha = check_bool(caller, "alpha", alpha)
    training = check_bool(caller, "training", training)
    store_mask = check_bool(caller, "store_mask", store_mask)
    backend = _backend.backend_for(caller, x=x)
    dt = getattr(x, "dtype", None)
    if not isinstance(dt, np.dtype):
        raise TypeError(f"{caller}: x must be a numpy.ndarray or cupy.ndarray, got "
                        f"{type(x).__name__}")
    if dt.char not in _FLOAT_CHARS:
        raise TypeError(f"{caller}: x has dtype {dt.name}, expected float32 or float64")
    ctx = DropoutContext(r, alpha, seed, step, tuple(x.shape), dt.newbyteorder("="), backend)
    if r == 0.0 or not training:
        ctx.identity = True
        return x, ctx
    x = float_array(caller, "x", x, backend.xp)
    y, ctx.mask = backend.dropout_forward(x, r, alpha, seed, step, store_mask)
    return y, ctx


@arrays("dy")
def dropout_backward(dy, ctx: DropoutContext):
    """dx = dL/dx from dy = dL/dy and the context of dropout_forward.

    Inverted dropout: dx = keep * dy / (1 - rate); alpha dropout:
    dx = keep * a * dy. Dropped elements get 0 whatever dy holds. dy must have
    the shape and dtype of the forward input and live on the same kind of
    device (NumPy / CuPy).
    """
    caller = "dropout_backward"
    if not isinstance(ctx, DropoutContext):
        raise TypeError(f"{caller}: ctx must come from dropout_forward, got {type(ctx).__name__}")
    if dy is None:
        raise TypeError(f"{caller}: dy must be a numpy.ndarray or cupy.ndarray, got NoneType")
    backend = _backend.backend_for(caller, dy=dy, mask=ctx.mask)
    if backend is not ctx.backend:
        raise TypeError(f"{caller}: dy runs on the {backend.name} backend but the forward ran on "
                        f"{ctx.backend.name}; move dy to the forward's device")
    if dy.dtype.char not in _FLOAT_CHARS or dy.dtype.newbyteorder("=") != ctx.dtype:
        raise TypeError(f"{caller}: dy has dtype {dy.dtype.name}, expected {ctx.dtype.name} "
                        f"(the dtype of the forward input)")
    if tuple(dy.shape) != ctx.shape:
        raise ValueError(f"{caller}: dy has shape {tuple(dy.shape)}, expected {ctx.shape} "
                         f"(the shape of the forward input)")
    if ctx.identity:
        return dy
    dy = float_array(caller, "dy", dy, backend.xp)
    return backend.dropout_backward(dy, ctx.mask, ctx.rate, ctx.alpha, ctx.seed, ctx.step)


@arrays("like")
def dropout_mask(n, rate, *, seed, step, like=None):
    """The bit-packed dropout mask of an n-element tensor, for inspection.

    Returns ceil(n / 32) uint32 words: element e is kept iff bit e % 32 of
    word e // 32 is set (``np.unpackbits(words.view(np.uint8),
    bitorder="little")[:n]`` gives the keep flags). The bits past n are the
    generator's bits for the elements that would follow. The same words as
    ``dropout_forward(x, rate, seed=seed, step=step)`` stores for an x of n
    elements (alpha or not). Computed by the CPU kernel into a NumPy array,
    or, when ``like`` is a CuPy array, by the CUDA kernel on its device.
    """
    caller = "dropout_mask"
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{caller}: n must be an integer >= 0, got {type(n).__name__} {n!r}")
    n = int(n)
    if not 0 <= n <= _MAX_N:
        raise ValueError(f"{caller}: n must be in [0, 2**63 - 32], got {n}")
    r = check_rate(caller, "rate", rate)
    seed = check_uint64(caller, "seed", seed)
    step = check_uint64(caller, "step", step)
    backend = _backend.backend_for(caller, like=like)
    return backend.dropout_mask(n, r, seed, step, like)
