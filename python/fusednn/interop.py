"""Whole models from and to PyTorch and Keras 3: architecture and weights.

    model = fd.interop.from_torch(torch_net)          # an nn.Sequential
    model = fd.interop.from_keras(keras_model)        # a built Keras 3 model
    net = fd.interop.to_torch(model)                  # an nn.Sequential, eval mode

The result's ``predict`` gives the source's inference output (torch's eval
mode, Keras' ``predict``), and ``to_torch`` the other way round, to float
rounding. The weights go through fd.io's loaders
(``load_torch_state_dict``, ``load_keras_weights``: fusednn.saving.interop),
which check every shape. torch and keras are imported inside the functions
only, so ``import fusednn`` needs neither.

Activations by name, the three libraries side by side (fd name, torch
module, Keras name): ``linear`` / ``Identity`` / ``linear``; ``relu`` /
``ReLU`` / ``relu``; ``leaky_relu(alpha)`` / ``LeakyReLU(negative_slope)``
/ ``leaky_relu`` (slope 0.2) and the ``LeakyReLU`` layer; ``elu(alpha)`` /
``ELU(alpha)`` / ``elu`` and the ``ELU`` layer; ``selu`` / ``SELU`` /
``selu``; ``gelu`` / ``GELU()`` / ``gelu``; ``gelu(approximate=True)`` /
``GELU("tanh")`` / -; ``swish`` (beta 1) / ``SiLU`` / ``silu``, ``swish``;
``mish`` / ``Mish`` / ``mish``; ``sigmoid`` / ``Sigmoid`` / ``sigmoid``;
``tanh`` / ``Tanh`` / ``tanh``; ``softplus`` / ``Softplus(beta=1)`` /
``softplus``. A softmax is only an output head (a last Dense with
``activation="softmax"``, fusednn.models.loss).

BatchNormalization: torch's ``BatchNorm1d(eps, momentum=m)`` becomes
``BatchNormalization(epsilon=eps, momentum=m, convention="torch")`` (torch's
running update and unbiased variance; Keras' momentum for the same decay is
``1 - m``); Keras' layer keeps Keras' convention. Inference is the same
formula in all three: ``gamma (x - mean) / sqrt(var + epsilon) + beta``.
"""

from __future__ import annotations

import numpy as np

from . import activations as _act
from ._arrays import to_host
from ._validate import check_int
from .layers import (ELU, Activation, AlphaDropout, BatchNormalization, Dense, Dropout, Input,
                     LeakyReLU, PReLU, RReLU)
from .saving.interop import load_keras_weights, load_torch_state_dict

__all__ = ["from_torch", "from_keras", "to_torch"]


def _sequential():
    from .models import Sequential  # fusednn.models imports the layers: import it late

    return Sequential


def _attach_softmax(caller, layers, where, is_last):
    """A softmax (a torch Softmax or a Keras softmax) at `where`: fd has it as
    the output head of a last Dense with a linear activation, so it must
    come last, right after such a Dense, which then takes it."""
    prev = layers[-1] if layers else None
    if not is_last or not (type(prev) is Dense and prev.activation.is_linear
                           and prev.output_activation is None):
        raise ValueError(f"{caller}: {where} is a softmax; fusednn has a softmax only as the "
                         f"output head, the last layer right after a Linear/Dense without "
                         f"activation")
    layers[-1] = Dense(prev.units, activation="softmax", use_bias=prev.use_bias, name=prev.name)


# ------------------------------------------------------------------ torch


def _torch_flat(net, prefix=""):
    """(dotted name, module) of every leaf of `net`, nested nn.Sequentials opened."""
    import torch.nn as nn

    out = []
    for name, m in net.named_children():
        full = f"{prefix}{name}"
        if type(m) is nn.Sequential:
            out += _torch_flat(m, full + ".")
        else:
            out.append((full, m))
    return out


def _torch_activation(m):
    """The fd ActivationSpec of torch module `m`, or None when it is not an
    activation fd has; ValueError for a setting fd lacks."""
    import torch.nn as nn

    kind = type(m)
    simple = {nn.ReLU: "relu", nn.SELU: "selu", nn.SiLU: "swish", nn.Mish: "mish",
              nn.Sigmoid: "sigmoid", nn.Tanh: "tanh"}
    if kind in simple:
        return _act.get(simple[kind])
    if kind is nn.LeakyReLU:
        return _act.get("leaky_relu", alpha=float(m.negative_slope))
    if kind is nn.ELU:
        return _act.get("elu", alpha=float(m.alpha))
    if kind is nn.GELU:
        if m.approximate not in ("none", "tanh"):
            raise ValueError(f"GELU(approximate={m.approximate!r}); expected 'none' or 'tanh'")
        return _act.get("gelu", approximate=m.approximate == "tanh")
    if kind is nn.Softplus:
        # torch returns x where beta x > threshold: log1p(e^-20) = 2e-9 off there
        if m.beta != 1 or m.threshold < 20:
            raise ValueError(f"Softplus(beta={m.beta}, threshold={m.threshold}); fd's softplus "
                             f"is log(1 + e^x): beta=1, threshold >= 20")
        return _act.get("softplus")
    return None


_TORCH_SUPPORTED = ("Linear, BatchNorm1d, ReLU, LeakyReLU, ELU, SELU, GELU, SiLU, Mish, Sigmoid, "
                    "Tanh, Softplus, PReLU, RReLU, Dropout, AlphaDropout, Identity, Softmax "
                    "(last, after a Linear)")


def _torch_layer(caller, name, m, layers, open_linear, is_last, width):
    """Append the fd layer of torch module `m` (named `name`) to `layers`.
    `open_linear`: the last layer is a Dense made from a Linear with no
    activation yet, which an activation module right after it becomes.
    Returns the new `open_linear`."""
    import torch.nn as nn

    where = f"module {name} ({type(m).__name__})"
    kind = type(m)
    try:
        spec = _torch_activation(m)
    except ValueError as e:
        raise ValueError(f"{caller}: {where}: {e}") from None
    if spec is not None:
        if open_linear:  # Linear then its activation: one Dense, as Keras writes it
            prev = layers[-1]
            layers[-1] = Dense(prev.units, activation=spec, use_bias=prev.use_bias,
                               name=prev.name)
        else:
            layers.append(Activation(spec))
        return False
    if kind is nn.Linear:
        if m.in_features != width:
            raise ValueError(f"{caller}: {where} takes {m.in_features} features, gets {width}")
        layers.append(Dense(m.out_features, use_bias=m.bias is not None))
        return True
    if kind is nn.BatchNorm1d:
        if m.num_features != width:
            raise ValueError(f"{caller}: {where} has {m.num_features} features, gets {width}")
        if not m.track_running_stats or m.running_mean is None:
            raise ValueError(f"{caller}: {where} has track_running_stats=False; fd's "
                             f"BatchNormalization keeps moving statistics")
        if m.momentum is None:
            raise ValueError(f"{caller}: {where} has momentum=None (a cumulative average), "
                             f"which fd's BatchNormalization does not offer")
        layers.append(BatchNormalization(momentum=float(m.momentum), epsilon=float(m.eps),
                                         center=m.affine, scale=m.affine, convention="torch"))
    elif kind is nn.PReLU:
        if m.num_parameters not in (1, width):
            raise ValueError(f"{caller}: {where} has {m.num_parameters} slopes for {width} "
                             f"features")
        layers.append(PReLU())
    elif kind is nn.RReLU:
        layers.append(RReLU(lower=float(m.lower), upper=float(m.upper)))
    elif kind in (nn.Dropout, nn.AlphaDropout):
        if not 0.0 <= m.p < 1.0:
            raise ValueError(f"{caller}: {where} has p={m.p}; fd's dropout rate is in [0, 1)")
        layers.append((Dropout if kind is nn.Dropout else AlphaDropout)(float(m.p)))
    elif kind is nn.Softmax:
        if m.dim not in (-1, 1):
            raise ValueError(f"{caller}: {where} has dim={m.dim}; fd's softmax head is over "
                             f"the features, dim=-1 or 1")
        _attach_softmax(caller, layers, where, is_last)
    elif kind is nn.Identity:
        return open_linear
    else:
        raise ValueError(f"{caller}: {where} is not supported; supported: {_TORCH_SUPPORTED}")
    return False


def _torch_input_dim(caller, flat, input_dim):
    import torch.nn as nn

    for name, m in flat:
        width = {nn.Linear: "in_features", nn.BatchNorm1d: "num_features"}.get(type(m))
        if width is None and type(m) is nn.PReLU and m.num_parameters > 1:
            width = "num_parameters"
        if width is not None:
            found = int(getattr(m, width))
            if input_dim is not None and input_dim != found:
                raise ValueError(f"{caller}: input_dim={input_dim}, but module {name} "
                                 f"({type(m).__name__}) has {width}={found}")
            return found
    if input_dim is None:
        raise ValueError(f"{caller}: no module tells the input width (no Linear, BatchNorm1d "
                         f"or per-feature PReLU); pass input_dim")
    return input_dim


def from_torch(nn_sequential, input_dim=None):
    """A built fd.Sequential computing `nn_sequential`'s eval-mode output.

    Modules, in order (nested nn.Sequentials are opened; names in errors are
    their dotted indices, e.g. ``"2"`` or ``"1.0"``):

    - ``Linear(in, out, bias)`` -> ``Dense(out, use_bias=bias)``, kernel =
      ``weight.T``; an activation module right after it becomes the Dense's
      activation, elsewhere an ``Activation`` layer (table in the module
      docstring; ``LeakyReLU``, ``ELU``, ``GELU`` keep their parameter).
    - ``BatchNorm1d`` -> ``BatchNormalization(momentum=m, epsilon=eps,
      convention="torch")`` with the running statistics (``affine=False``:
      ``center=False, scale=False``).
    - ``PReLU`` (one slope or one per feature) -> ``PReLU`` (per unit);
      ``RReLU(lower, upper)`` -> ``RReLU``; ``Dropout(p)``, ``AlphaDropout(p)``
      -> the fd layers of the same name and rate; ``Identity`` -> nothing;
      ``Softmax(dim=-1 or 1)`` as the last module, right after a Linear ->
      that Dense's ``activation="softmax"`` (predict's output head).

    input_dim: the input width, needed only when no module tells it (no
    Linear, BatchNorm1d or per-feature PReLU); when given it must agree.
    The model's dtype is float64 when the first parameter is, else float32
    (weights cast to it). Raises TypeError for an argument that is not an
    nn.Sequential and ValueError naming the module index and class for one
    fusednn does not have (Conv1d, LayerNorm, ...) or a setting it lacks
    (Softplus(beta != 1), BatchNorm1d(momentum=None), a softmax that is not
    the head)."""
    caller = "fd.interop.from_torch"
    import torch
    import torch.nn as nn

    if not isinstance(nn_sequential, nn.Sequential):
        raise TypeError(f"{caller}: nn_sequential must be a torch.nn.Sequential, got "
                        f"{type(nn_sequential).__name__}")
    if input_dim is not None:
        input_dim = check_int(caller, "input_dim", input_dim, 1)
    flat = _torch_flat(nn_sequential)
    if not flat:
        raise ValueError(f"{caller}: nn_sequential has no modules")
    width = _torch_input_dim(caller, flat, input_dim)
    params = list(nn_sequential.parameters())
    dtype = "float64" if params and params[0].dtype == torch.float64 else "float32"
    layers, dim, open_linear = [], width, False
    for i, (name, m) in enumerate(flat):
        is_last = all(type(rest) is nn.Identity for _, rest in flat[i + 1:])
        open_linear = _torch_layer(caller, name, m, layers, open_linear, is_last, dim)
        if type(m) is nn.Linear:
            dim = m.out_features
    if not layers:  # only Identity modules
        layers = [Activation("linear")]
    model = _sequential()([Input((width,)), *layers], dtype=dtype)
    if any(layer.weights for layer in layers):
        load_torch_state_dict(model, nn_sequential)
    return model


def _torch_activation_module(caller, layer, spec):
    import torch.nn as nn

    name, a = spec.name, spec.alpha
    if name == "linear":
        return None
    if name == "swish" and a != 1.0:
        raise ValueError(f"{caller}: layer {layer.name!r} ({type(layer).__name__}) uses swish "
                         f"with beta={a}; torch has only SiLU (beta=1)")
    make = {"relu": nn.ReLU, "selu": nn.SELU, "swish": nn.SiLU, "mish": nn.Mish,
            "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "softplus": nn.Softplus,
            "gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
            "leaky_relu": lambda: nn.LeakyReLU(a), "elu": lambda: nn.ELU(a)}
    return make[name]()


def _torch_modules(caller, model):
    """(torch modules, their (parameter or buffer, array) pairs) for `model`."""
    import torch.nn as nn

    mods, copies = [], []
    last = len(model.layers) - 1
    for i, layer in enumerate(model.layers):
        kind = type(layer)
        if kind is Dense:
            n_in = layer.input_dim
            lin = nn.Linear(n_in, layer.units, bias=layer.use_bias)
            copies.append((lin.weight, to_host(layer.kernel).T))
            if layer.use_bias:
                copies.append((lin.bias, to_host(layer.bias)))
            mods.append(lin)
            if layer.output_activation == "softmax":
                if i == last:  # predict's head; elsewhere predict gives the logits
                    mods.append(nn.Softmax(dim=-1))
            else:
                mods.append(_torch_activation_module(caller, layer, layer.activation))
        elif kind is BatchNormalization:
            n = layer.input_dim
            momentum = layer.momentum if layer.convention == "torch" else 1.0 - layer.momentum
            affine = layer.scale or layer.center
            bn = nn.BatchNorm1d(n, eps=layer.epsilon, momentum=momentum, affine=affine)
            if affine:
                copies.append((bn.weight, to_host(layer.gamma) if layer.scale else np.ones(n)))
                copies.append((bn.bias, to_host(layer.beta) if layer.center else np.zeros(n)))
            copies += [(bn.running_mean, to_host(layer.moving_mean)),
                       (bn.running_var, to_host(layer.moving_variance))]
            mods.append(bn)
        elif kind in (Activation, LeakyReLU, ELU):
            mods.append(_torch_activation_module(caller, layer, layer.activation))
        elif kind is PReLU:
            p = nn.PReLU(num_parameters=layer.input_dim)
            copies.append((p.weight, to_host(layer.alpha)))
            mods.append(p)
        elif kind is RReLU:  # eval mode: slope (lower + upper) / 2, as fd's inference
            mods.append(nn.RReLU(layer.lower, layer.upper))
        elif kind in (Dropout, AlphaDropout):
            mods.append((nn.Dropout if kind is Dropout else nn.AlphaDropout)(layer.rate))
        else:
            cls = type(layer)
            raise ValueError(f"{caller}: layer {i} {layer.name!r} ({cls.__module__}."
                             f"{cls.__qualname__}) has no torch module; supported: Dense, "
                             f"BatchNormalization, Activation, LeakyReLU, ELU, PReLU, RReLU, "
                             f"Dropout, AlphaDropout")
    return [m for m in mods if m is not None], copies


def to_torch(model):
    """`model` as a torch ``nn.Sequential`` in eval mode, in the model's
    dtype (float32 or float64), on the CPU, whose output is ``model.predict``.

    ``Dense`` -> ``Linear`` (weight = kernel.T) and its activation module
    (table in the module docstring; swish with beta != 1 has none: a
    ValueError); a last Dense with ``activation="softmax"`` is followed by
    ``Softmax(dim=-1)`` (predict's head; a sigmoid head is the Dense's
    ``Sigmoid``). ``BatchNormalization`` -> ``BatchNorm1d(eps=epsilon,
    momentum)`` with the moving statistics as running ones; momentum is
    torch's decay, ``1 - momentum`` for a Keras-convention layer (further
    training in torch updates the running variance with the unbiased batch
    variance). gamma/beta absent in fd (``scale``/``center`` False) become
    1/0 in an ``affine`` BatchNorm1d, or no affine at all when both are
    absent. ``PReLU`` -> ``PReLU(num_parameters=units)``; ``RReLU`` ->
    ``RReLU(lower, upper)``; ``LeakyReLU``, ``ELU``, ``Activation`` -> their
    modules; ``Dropout``/``AlphaDropout`` -> torch's (identity in eval mode;
    ``mc=True`` has no torch counterpart).

    Raises TypeError for a `model` that is not a fd.Sequential, ValueError
    for one that is not built or that holds a layer without a torch module
    (named, with its class)."""
    caller = "fd.interop.to_torch"
    import torch
    import torch.nn as nn

    if not isinstance(model, _sequential()):
        raise TypeError(f"{caller}: model must be a fd.Sequential, got {type(model).__name__}")
    if not model.built:
        raise ValueError(f"{caller}: the model {model.name!r} is not built; start it with "
                         f"fd.Input(shape), call build(input_dim), or fit/predict first")
    mods, copies = _torch_modules(caller, model)
    dtype = torch.float64 if model.dtype == "float64" else torch.float32
    net = nn.Sequential(*mods)
    with torch.no_grad():
        for dst, src in copies:
            dst.copy_(torch.from_numpy(np.ascontiguousarray(src, dtype=np.float64)))
    return net.to(dtype).eval()


# ------------------------------------------------------------------ Keras


_KERAS_ACTIVATIONS = {"linear": "linear", "relu": "relu", "elu": "elu", "selu": "selu",
                      "gelu": "gelu", "silu": "swish", "swish": "swish", "mish": "mish",
                      "sigmoid": "sigmoid", "tanh": "tanh", "softplus": "softplus",
                      "leaky_relu": "leaky_relu"}
_KERAS_SUPPORTED = ("InputLayer, Dense, BatchNormalization, Activation, Dropout, AlphaDropout, "
                    "LeakyReLU, PReLU, ELU, Softmax (last, after a Dense)")


def _keras_activation_name(caller, where, fn):
    """The Keras activation `fn` by name: an fd name, "softmax", or a ValueError."""
    name = getattr(fn, "__name__", None)
    if name == "softmax" or name in _KERAS_ACTIVATIONS:
        return name
    raise ValueError(f"{caller}: {where} uses activation {name or fn!r}, which fusednn does not "
                     f"have; supported: {', '.join(sorted(_KERAS_ACTIVATIONS))}, softmax (last)")


def _keras_chain(caller, model, input_layer):
    """The layers of a one-input one-output chain (`input_layer`, Keras'
    InputLayer class, left out), and the input tensor."""
    inputs, outputs = getattr(model, "inputs", None), getattr(model, "outputs", None)
    if not (isinstance(inputs, (list, tuple)) and len(inputs) == 1
            and isinstance(outputs, (list, tuple)) and len(outputs) == 1):
        raise ValueError(f"{caller}: expected a Keras Sequential or functional model with one "
                         f"input and one output, got {type(model).__name__} with inputs "
                         f"{inputs!r}")
    layers = [la for la in model.layers if type(la) is not input_layer]
    prev = inputs[0]
    for layer in layers:
        try:
            src = layer.input
        except (AttributeError, ValueError) as e:  # a layer called more than once
            raise ValueError(f"{caller}: layer {layer.name!r} ({type(layer).__name__}) is not "
                             f"part of a simple chain: {e}") from None
        if src is not prev:
            raise ValueError(f"{caller}: layer {layer.name!r} ({type(layer).__name__}) does not "
                             f"take the previous layer's output; only a chain of layers (one "
                             f"input, no branches) can be converted")
        prev = layer.output
    if prev is not outputs[0]:
        raise ValueError(f"{caller}: the model's output is not its last layer's; only a chain "
                         f"of layers can be converted")
    return layers, inputs[0]


def from_keras(keras_model):
    """A built fd.Sequential computing `keras_model`'s ``predict``.

    keras_model: a built Keras 3 ``Sequential`` or functional ``Model`` that
    is a chain of layers from one ``(None, features)`` input. Layers:

    - ``Dense`` -> ``Dense`` (units, use_bias, activation by name: table in
      the module docstring; ``softmax`` only on the last layer);
    - ``BatchNormalization`` (axis -1) -> ``BatchNormalization`` with its
      ``epsilon``, ``momentum``, ``center``, ``scale`` (Keras' convention);
    - ``Activation`` -> ``Activation`` (a ``softmax`` one, or a ``Softmax``
      layer, must be last, right after a Dense without activation, which
      then takes it as its output head);
    - ``Dropout(rate)``, ``AlphaDropout(rate)``, ``LeakyReLU(negative_slope)``,
      ``ELU(alpha)``, ``PReLU`` (``shared_axes`` None or [1]) -> fd's layers
      of the same name; ``InputLayer`` -> nothing.

    Weights are copied with fd.io.load_keras_weights (Keras' order is fd's).
    The model's dtype is float64 when the first layer with weights holds
    float64 variables, else float32. Raises TypeError for an argument that
    is not a Keras model and ValueError for one that is not built, not a
    chain, or holds a layer fusednn does not have (named, with its class:
    Conv2D, LayerNormalization, ...) or a setting it lacks."""
    caller = "fd.interop.from_keras"
    import keras

    if not isinstance(keras_model, keras.Model):
        raise TypeError(f"{caller}: keras_model must be a keras.Model, got "
                        f"{type(keras_model).__name__}")
    if not keras_model.built:
        raise ValueError(f"{caller}: the Keras model {keras_model.name!r} is not built; give "
                         f"it a keras.Input(shape), call build((None, features)) or predict "
                         f"first")
    kl = keras.layers
    klayers, kinput = _keras_chain(caller, keras_model, kl.InputLayer)
    layers, arrays, dtype = [], [], None
    for i, k in enumerate(klayers):
        where = f"layer {k.name!r} ({type(k).__name__})"
        is_last = i == len(klayers) - 1
        kind = type(k)
        if k.weights and dtype is None:
            dtype = "float64" if str(k.variable_dtype) == "float64" else "float32"
        if kind is kl.Dense:
            act = _keras_activation_name(caller, where, k.activation)
            if act == "softmax" and not is_last:
                raise ValueError(f"{caller}: {where} has a softmax activation but is not the "
                                 f"last layer; fusednn has a softmax only as the output head")
            layers.append(Dense(k.units, activation=_KERAS_ACTIVATIONS.get(act, act),
                                use_bias=k.use_bias, name=k.name))
        elif kind is kl.BatchNormalization:
            if k.axis not in (-1, 1):
                raise ValueError(f"{caller}: {where} normalises axis {k.axis}; fusednn's "
                                 f"normalises the features, axis -1")
            layers.append(BatchNormalization(momentum=float(k.momentum),
                                             epsilon=float(k.epsilon), center=k.center,
                                             scale=k.scale, name=k.name))
        elif kind is kl.Activation:
            act = _keras_activation_name(caller, where, k.activation)
            if act == "softmax":
                _attach_softmax(caller, layers, where, is_last)
            else:
                layers.append(Activation(_KERAS_ACTIVATIONS[act], name=k.name))
        elif kind is kl.Softmax:
            if k.axis not in (-1, 1):
                raise ValueError(f"{caller}: {where} has axis={k.axis}; fd's softmax head is "
                                 f"over the features, axis -1")
            _attach_softmax(caller, layers, where, is_last)
        elif kind in (kl.Dropout, kl.AlphaDropout):
            layers.append((Dropout if kind is kl.Dropout else AlphaDropout)(float(k.rate),
                                                                           name=k.name))
        elif kind is kl.LeakyReLU:
            layers.append(LeakyReLU(negative_slope=float(k.negative_slope), name=k.name))
        elif kind is kl.ELU:
            layers.append(ELU(alpha=float(k.alpha), name=k.name))
        elif kind is kl.PReLU:
            if k.shared_axes not in (None, [1], (1,)):
                raise ValueError(f"{caller}: {where} has shared_axes={k.shared_axes}; fusednn's "
                                 f"PReLU has one slope per feature (None) or one shared ([1])")
            layers.append(PReLU(name=k.name))
        else:
            raise ValueError(f"{caller}: {where} is not supported; supported: "
                             f"{_KERAS_SUPPORTED}")
        arrays += k.get_weights()
    shape = tuple(kinput.shape)
    if len(shape) != 2 or not isinstance(shape[1], int):
        raise ValueError(f"{caller}: the model's input has shape {shape}; fusednn takes "
                         f"(batch, features) inputs")
    if not layers:
        layers = [Activation("linear")]
    if dtype is None:
        dtype = "float64" if str(kinput.dtype) == "float64" else "float32"
    model = _sequential()([Input((shape[1],)), *layers], dtype=dtype)
    if arrays:
        load_keras_weights(model, arrays)
    return model
