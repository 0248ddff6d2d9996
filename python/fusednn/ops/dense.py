"""The fused dense (fully connected) layer.

Forward: ``y = f(x @ w + b)`` with x of shape (batch, in), w (in, units) as in
Keras, b (units,) or None. The GEMM and the bias + activation epilogue run as
one fused op: on the CPU the epilogue is applied per block of rows right
after that block's GEMM, while it is in cache; on CUDA through cuBLASLt
epilogues (bias, relu, gelu-tanh) or one fused kernel for the others.

Backward, from dy = dL/dy:
``dz = dy * f'(.)``, ``db = sum_batch dz``, ``dw = x^T dz``, ``dx = dz w^T``.
The derivative comes from the saved output y where the activation allows it,
else from the saved pre-activation z (gelu, swish, mish): one buffer of
shape (batch, units) is kept, never two.

The context keeps references to x and w, not copies: modifying them in place
between forward and backward changes the gradients (as in other frameworks).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import _backend
from .. import activations as _act
from .._foreign import arrays, same_array
from .._validate import float_array
from .activation import check_param_fits

__all__ = ["DenseContext", "dense_forward", "dense_backward", "dense_stack_backward"]


@dataclass
class DenseContext:
    """What dense_backward needs from dense_forward."""

    x: object
    w: object
    has_bias: bool
    spec: _act.ActivationSpec
    backend: object
    y: object  # the output (also what identifies the next layer's input)
    z: object = None  # the pre-activation, kept only for activations that save their input
    mask: object = None  # CUDA relu: cuBLASLt's bit mask of z > 0 (uint8 device array)

    @property
    def saved(self):
        """What the activation's derivative is computed from: z, y or None (linear)."""
        return self.spec.saved(self.z, self.y)


@arrays("x", "w", "b")
def dense_forward(x, w, b=None, activation="linear", **params):
    """y = activation(x @ w + b). Returns (y, ctx).

    x: (batch, in) float32 or float64; w: (in, units), same dtype; b: (units,)
    or None. ``params`` are the activation's (``alpha``, ``approximate``,
    ``beta``; see fusednn.activations). NumPy inputs run on the CPU, CuPy
    inputs on the GPU. Non-contiguous inputs are copied to C order first.
    """
    caller = "dense_forward"
    spec = _act.get(activation, caller, **params)
    backend = _backend.backend_for(caller, x=x, w=w, b=b)
    x = float_array(caller, "x", x, backend.xp, ndim=2)
    w = float_array(caller, "w", w, backend.xp, ndim=2, dtype=x.dtype)
    check_param_fits(caller, spec, x.dtype)
    batch, n_in = x.shape
    if n_in == 0:
        raise ValueError(f"{caller}: x has 0 features; a dense layer needs at least one input")
    if w.shape[0] != n_in:
        raise ValueError(f"{caller}: w has shape {tuple(w.shape)} but x has {n_in} features; "
                         f"expected w of shape ({n_in}, units)")
    units = w.shape[1]
    if units == 0:
        raise ValueError(f"{caller}: w has 0 units (shape {tuple(w.shape)})")
    if b is not None:
        b = float_array(caller, "b", b, backend.xp, ndim=1, dtype=x.dtype)
        if b.shape[0] != units:
            raise ValueError(f"{caller}: b has shape {tuple(b.shape)}, expected ({units},) "
                             f"to match w of shape {tuple(w.shape)}")
    y, z, mask = backend.dense_forward(x, w, b, spec)
    return y, DenseContext(x, w, b is not None, spec, backend, y, z, mask)


def _output_grad(caller, dy, ctx):
    """(backend, dy checked against the output of the layer of `ctx`)."""
    backend = _backend.backend_for(caller, dy=dy, x=ctx.x)
    dy = float_array(caller, "dy", dy, backend.xp, ndim=2, dtype=ctx.x.dtype)
    expected = (ctx.x.shape[0], ctx.w.shape[1])
    if tuple(dy.shape) != expected:
        raise ValueError(f"{caller}: dy has shape {tuple(dy.shape)}, expected {expected} "
                         f"(batch, units) of the layer's output")
    return backend, dy


@arrays("dy")
def dense_backward(dy, ctx: DenseContext, *, need_dx: bool = True):
    """Gradients (dx, dw, db) of the layer from dy = dL/dy.

    dx is None when ``need_dx=False`` (the first layer needs no input
    gradient, which saves one GEMM); db is None when the layer had no bias.
    """
    caller = "dense_backward"
    if not isinstance(ctx, DenseContext):
        raise TypeError(f"{caller}: ctx must come from dense_forward, got {type(ctx).__name__}")
    backend, dy = _output_grad(caller, dy, ctx)
    return backend.dense_backward(dy, ctx.saved, ctx.x, ctx.w, ctx.has_bias, bool(need_dx),
                                  ctx.spec)


@arrays("dy")
def dense_stack_backward(dy, ctxs, *, need_dx: bool = False):
    """Backward through a stack of dense layers, fused across layers.

    ``ctxs`` are the contexts of consecutive ``dense_forward`` calls, in
    forward order, each layer's input being the previous layer's output.
    Returns ``(dx, grads)`` with ``grads[i] = (dw_i, db_i)`` in forward order
    (db_i None without bias) and dx the gradient of the first layer's input,
    None unless ``need_dx``.

    Same results as calling dense_backward layer by layer, with less memory
    traffic: each layer's dx GEMM is fused with the layer below's activation
    derivative and bias gradient, dz_{i-1} = (dz_i w_i^T) * f_{i-1}'(.) and
    db_{i-1} = sum_batch dz_{i-1}. On CUDA this is cuBLASLt's DRELU_BGRAD
    (relu) or DGELU_BGRAD (gelu with approximate=True) epilogue, and BGRADA
    for the top layer's bias gradient; on the CPU the dx GEMM runs per row
    block, each followed by the f' and column-sum pass while it is in cache.
    """
    caller = "dense_stack_backward"
    if isinstance(ctxs, DenseContext) or not hasattr(ctxs, "__len__"):
        raise TypeError(f"{caller}: ctxs must be a list of DenseContext, got {type(ctxs).__name__}")
    ctxs = list(ctxs)
    if not ctxs:
        raise ValueError(f"{caller}: ctxs is empty")
    for i, c in enumerate(ctxs):
        if not isinstance(c, DenseContext):
            raise TypeError(f"{caller}: ctxs[{i}] must come from dense_forward, "
                            f"got {type(c).__name__}")
        if i and not same_array(c.x, ctxs[i - 1].y):
            raise ValueError(f"{caller}: ctxs[{i}].x is not the output of ctxs[{i - 1}]; the "
                             f"layers must be stacked (y of one is x of the next)")
    top = ctxs[-1]
    backend, dy = _output_grad(caller, dy, top)

    dz = dy if top.spec.is_linear else backend.activation_backward(dy, top.saved, top.spec)
    db = None
    grads = [None] * len(ctxs)
    dx = None
    for i in range(len(ctxs) - 1, -1, -1):
        c = ctxs[i]
        top_layer = i == len(ctxs) - 1
        dw, db_w = backend.dense_backward_weight(dz, c.x, c.has_bias and top_layer)
        grads[i] = (dw, db_w if top_layer else db)
        if i > 0:
            prev = ctxs[i - 1]
            dz, db = backend.dense_backward_input(dz, c.w, prev, prev.has_bias)
        elif need_dx:
            dx, _ = backend.dense_backward_input(dz, c.w, None, False)
    return dx, grads
