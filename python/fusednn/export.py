"""Export a fd.Sequential as an ONNX inference graph.

    fd.export.onnx(model, "model.onnx")          # writes the file
    proto = fd.export.onnx_model(model)          # the onnx.ModelProto, in memory

The graph computes ``model.predict`` (inference mode) for an input named
``"input"`` of shape ``("batch", features)`` and gives ``"output"`` of shape
``("batch", units)``, in the model's dtype (float32 or float64; the batch axis
is symbolic). Layer by layer:

- ``Dense``: ``Gemm(x, kernel, bias)`` (``MatMul`` without a bias), then its
  activation. A ``BatchNormalization`` right after a Dense with a linear
  activation is folded into it (fd.ops.fold_batchnorm: with
  ``s = gamma / sqrt(moving_variance + epsilon)``, ``kernel' = kernel * s``,
  ``bias' = (bias - moving_mean) * s + beta``).
- Any other ``BatchNormalization``: its inference affine map
  ``y = x * s + (beta - moving_mean * s)`` (``Mul``, ``Add``; s and the
  shift computed in float64 and stored in the model's dtype).
- ``Dropout``, ``AlphaDropout``: removed (inference is the identity; an
  ``mc=True`` layer's expected value, which is also the identity).
- ``RReLU``: its inference slope ``(lower + upper) / 2`` (``LeakyRelu``).
- ``PReLU``: ``PRelu`` with the per-unit slopes.
- The output head (fusednn.models.loss): a last Dense with
  ``activation="softmax"`` computes logits and predict applies the softmax,
  so the graph ends in ``Softmax(axis=-1)``; a sigmoid last Dense ends in
  ``Sigmoid`` (applied by the layer or by predict, the same output). A
  softmax Dense that is not last gives logits in predict, and so here.

Activations (fusednn.activations), with the ONNX op or the composition used:
``relu`` Relu; ``leaky_relu`` LeakyRelu(alpha); ``elu`` Elu(alpha); ``selu``
Selu(alpha=1.6732632423543772, gamma=1.0507009873554805); ``sigmoid``,
``tanh``, ``softplus``, ``mish``: the ops of the same name; ``gelu``
``0.5 z (1 + Erf(z / sqrt(2)))``; ``gelu`` with ``approximate=True``
``z * Sigmoid(2 sqrt(2/pi) (z + 0.044715 z^3))`` (fusednn's form of
``0.5 z (1 + tanh(u))``); ``swish`` ``z * Sigmoid(beta z)``; ``linear``
nothing. ONNX's op-set 20 has Gelu, but onnxruntime and older runtimes do
not all take it, hence the composition. onnxruntime has no float64 Erf
kernel, so a float64 graph evaluates the exact GELU's erf in float32 (Cast
there and back): an absolute error below 1e-7 |z|. ONNX op attributes are
float32, so in a float64 graph the slopes of LeakyRelu (leaky_relu, RReLU)
and Elu, and Selu's constants, are rounded to float32 (relative 6e-8).

Op-set 18 (IR version 8): Mish is an op from 18 on, and onnxruntime runs
float64 Elu, Selu and Softplus from 18 on (through their function bodies).
The graph passes ``onnx.checker.check_model``. Only calling the functions
needs the ``onnx`` package (``pip install onnx``); ``import fusednn`` does not.
"""

from __future__ import annotations

import importlib
import math

import numpy as np

from . import ops
from ._arrays import to_host
from ._version import __version__
from .layers import (ELU, Activation, AlphaDropout, BatchNormalization, Dense, Dropout,
                     LeakyReLU, PReLU, RReLU)
from .saving.safetensors import atomic_write, check_path

__all__ = ["onnx", "onnx_model", "OPSET", "IR_VERSION"]

OPSET = 18
IR_VERSION = 8

# Klambauer et al. 2017 (the values of csrc/include/fusednn/activation.h).
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_LAMBDA = 1.0507009873554804934193349852946
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_TANH_C = 0.044715

_LAYERS = (Dense, BatchNormalization, Activation, LeakyReLU, ELU, PReLU, RReLU, Dropout,
           AlphaDropout)
# protobuf refuses to serialise a message of 2 GiB or more
_PROTO_LIMIT = 2**31 - 2**20


def _require_onnx():
    try:
        return importlib.import_module("onnx")
    except ImportError as e:
        raise ImportError(f"fd.export needs the onnx package, which is not installed ({e}); "
                          f"pip install onnx") from None


def _check_model(caller, model):
    """`model` as a built fd.Sequential whose layers all have an export."""
    from .models import Sequential  # fusednn.models imports the layers: import it late

    if not isinstance(model, Sequential):
        raise TypeError(f"{caller}: model must be a fd.Sequential, got {type(model).__name__}")
    if not model.built:
        raise ValueError(f"{caller}: the model {model.name!r} is not built; start it with "
                         f"fd.Input(shape), call build(input_dim), or fit/predict first")
    for i, layer in enumerate(model.layers):
        if type(layer) not in _LAYERS:  # exact: a subclass may override forward
            cls = type(layer)
            raise ValueError(f"{caller}: layer {i} {layer.name!r} ({cls.__module__}."
                             f"{cls.__qualname__}) cannot be exported; supported: "
                             f"{', '.join(c.__name__ for c in _LAYERS)}")


class _Graph:
    """The nodes and initializers of one graph, with fresh value names."""

    def __init__(self, onnx, dtype):
        self.onnx = onnx
        self.helper = onnx.helper
        self.dtype = np.dtype(dtype)
        self.elem = onnx.helper.np_dtype_to_tensor_dtype(self.dtype)
        self.nodes, self.initializers, self._names = [], [], set()
        self._consts = {}

    def name(self, base):
        name, i = base, 1
        while name in self._names:
            name, i = f"{base}_{i}", i + 1
        self._names.add(name)
        return name

    def tensor(self, base, array):
        """An initializer holding `array` in the graph's dtype; its name."""
        name = self.name(base)
        a = np.ascontiguousarray(np.asarray(array, dtype=np.float64).astype(self.dtype))
        self.initializers.append(self.onnx.numpy_helper.from_array(a, name))
        return name

    def scalar(self, value):
        """A shared 0-d constant."""
        key = float(value)
        if key not in self._consts:
            self._consts[key] = self.tensor(f"const_{key:.17g}", np.float64(key))
        return self._consts[key]

    def node(self, op, inputs, base, **attrs):
        """One node of `op` on `inputs`; the name of its output."""
        out = self.name(base)
        self.nodes.append(self.helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out


def _activation(g, spec, x, base):
    """Nodes computing the activation `spec` (an ActivationSpec) of x."""
    name, a = spec.name, spec.alpha
    if name == "linear":
        return x
    if name == "relu":
        return g.node("Relu", [x], base)
    if name == "leaky_relu":
        return g.node("LeakyRelu", [x], base, alpha=a)
    if name == "elu":
        return g.node("Elu", [x], base, alpha=a)
    if name == "selu":
        return g.node("Selu", [x], base, alpha=_SELU_ALPHA, gamma=_SELU_LAMBDA)
    if name in ("sigmoid", "tanh", "softplus", "mish"):
        return g.node({"sigmoid": "Sigmoid", "tanh": "Tanh", "softplus": "Softplus",
                       "mish": "Mish"}[name], [x], base)
    if name == "swish":
        z = x if a == 1.0 else g.node("Mul", [x, g.scalar(a)], f"{base}/beta_z")
        return g.node("Mul", [x, g.node("Sigmoid", [z], f"{base}/sigmoid")], base)
    if name == "gelu_tanh":
        # z sigmoid(2u), 2u = z (2 sqrt(2/pi) + 2 sqrt(2/pi) c z^2)
        z2 = g.node("Mul", [x, x], f"{base}/z2")
        p = g.node("Mul", [z2, g.scalar(2.0 * _SQRT_2_OVER_PI * _GELU_TANH_C)], f"{base}/cz2")
        p = g.node("Add", [p, g.scalar(2.0 * _SQRT_2_OVER_PI)], f"{base}/poly")
        u2 = g.node("Mul", [x, p], f"{base}/2u")
        return g.node("Mul", [x, g.node("Sigmoid", [u2], f"{base}/sigmoid")], base)
    if name == "gelu":
        t = g.node("Mul", [x, g.scalar(1.0 / math.sqrt(2.0))], f"{base}/z_sqrt2")
        if g.dtype == np.float64:  # onnxruntime's Erf takes float32 only
            f32 = g.onnx.TensorProto.FLOAT
            t = g.node("Cast", [t], f"{base}/to_float32", to=f32)
            e = g.node("Erf", [t], f"{base}/erf32")
            e = g.node("Cast", [e], f"{base}/erf", to=g.elem)
        else:
            e = g.node("Erf", [t], f"{base}/erf")
        e = g.node("Add", [e, g.scalar(1.0)], f"{base}/1_erf")
        h = g.node("Mul", [x, g.scalar(0.5)], f"{base}/half_z")
        return g.node("Mul", [h, e], base)
    raise ValueError(f"activation {name!r} has no ONNX export")  # every fd activation has one


def _dense(g, layer, bn, x, last):
    """Nodes of a Dense (with the BatchNormalization `bn` folded in, or None)."""
    kernel = to_host(layer.kernel)
    bias = None if layer.bias is None else to_host(layer.bias)
    if bn is not None:
        kernel, bias = ops.fold_batchnorm(
            kernel, bias, *(None if w is None else to_host(w) for w in
                            (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance)),
            bn.epsilon)
    base = layer.name
    w = g.tensor(f"{base}/kernel", kernel)
    if bias is None:
        y = g.node("MatMul", [x, w], f"{base}/matmul")
    else:
        y = g.node("Gemm", [x, w, g.tensor(f"{base}/bias", bias)], f"{base}/gemm")
    if layer.output_activation == "softmax":
        return g.node("Softmax", [y], f"{base}/softmax", axis=-1) if last else y
    return _activation(g, layer.activation, y, f"{base}/{layer.activation.name}")


def _batchnorm(g, layer, x):
    """y = x * s + (beta - moving_mean * s), s = gamma / sqrt(moving_variance + epsilon)."""
    s = 1.0 / np.sqrt(to_host(layer.moving_variance).astype(np.float64) + layer.epsilon)
    if layer.gamma is not None:
        s = s * to_host(layer.gamma)
    shift = -to_host(layer.moving_mean) * s
    if layer.beta is not None:
        shift = shift + to_host(layer.beta)
    base = layer.name
    y = g.node("Mul", [x, g.tensor(f"{base}/scale", s)], f"{base}/mul")
    return g.node("Add", [y, g.tensor(f"{base}/shift", shift)], f"{base}/add")


def _build(onnx, model):
    layers = model.layers
    g = _Graph(onnx, model.dtype)
    x = g.name("input")
    y = x
    i = 0
    while i < len(layers):
        layer = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        kind = type(layer)
        if kind is Dense:
            fold = (type(nxt) is BatchNormalization and layer.activation.is_linear
                    and layer.output_activation is None)
            y = _dense(g, layer, nxt if fold else None, y, last=i + 1 + fold == len(layers))
            i += 1 + fold
            continue
        if kind is BatchNormalization:
            y = _batchnorm(g, layer, y)
        elif kind is PReLU:
            y = g.node("PRelu", [y, g.tensor(f"{layer.name}/alpha", to_host(layer.alpha))],
                       f"{layer.name}/prelu")
        elif kind is RReLU:
            y = g.node("LeakyRelu", [y], f"{layer.name}/leaky_relu",
                       alpha=(layer.lower + layer.upper) / 2.0)
        elif kind in (Activation, LeakyReLU, ELU):
            y = _activation(g, layer.activation, y, f"{layer.name}/{layer.activation.name}")
        # Dropout, AlphaDropout: the identity in inference
        i += 1
    if y == x:  # a graph output must be produced by a node
        y = g.node("Identity", [x], "identity")
    out = "output"
    g.nodes.append(onnx.helper.make_node("Identity", [y], [out], name=out))
    h = onnx.helper
    graph = h.make_graph(
        g.nodes, model.name,
        [h.make_tensor_value_info(x, g.elem, ["batch", layers[0].input_dim])],
        [h.make_tensor_value_info(out, g.elem, ["batch", _output_dim(model)])],
        initializer=g.initializers,
        doc_string=f"fusednn {__version__} Sequential {model.name!r}: predict in inference mode")
    proto = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)],
                         producer_name="fusednn", producer_version=__version__,
                         ir_version=IR_VERSION)
    onnx.checker.check_model(proto)
    return proto


def _output_dim(model):
    dim = model.layers[0].input_dim
    for layer in model.layers:
        dim = layer.output_dim(dim)
    return dim


def onnx_model(model):
    """The ONNX graph of `model`'s predict (see the module docstring) as an
    ``onnx.ModelProto``, checked by ``onnx.checker.check_model``.

    Raises TypeError for a `model` that is not a fd.Sequential, ValueError
    for one that is not built or that holds a layer without an export (a
    user-defined Layer subclass: the error names the layer and its class),
    ImportError without the onnx package."""
    caller = "fd.export.onnx_model"
    _check_model(caller, model)
    return _build(_require_onnx(), model)


def onnx(model, path) -> None:
    """Write `model`'s predict as an ONNX file at `path` (see the module
    docstring for the graph).

    The file is written to a temporary name in `path`'s directory and renamed
    over `path` (``os.replace``), so a failure leaves no partial file and an
    existing file is either kept or replaced whole. Every check comes before
    anything is written: TypeError for a `path` that is not a str or
    os.PathLike or a `model` that is not a fd.Sequential; FileNotFoundError
    naming `path` when its directory does not exist; ValueError for a `path`
    that is a directory, an unbuilt model, a layer without an export (named,
    with its class) or a graph over protobuf's 2 GiB; ImportError without the
    onnx package (``pip install onnx``)."""
    caller = "fd.export.onnx"
    path = check_path(caller, path, reading=False)
    _check_model(caller, model)
    onnx = _require_onnx()
    size = sum(int(w.nbytes) for w in model.weights)
    if size >= _PROTO_LIMIT:
        raise ValueError(f"{caller}: the model's weights take {size} bytes; an ONNX file in one "
                         f"piece holds less than 2 GiB")
    data = _build(onnx, model).SerializeToString()
    atomic_write(path, lambda f: f.write(data))
