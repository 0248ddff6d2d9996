"""Loading weights trained elsewhere into a fd.Sequential, in one call.

    model = fd.Sequential([fd.layers.Dense(64, activation="elu"),
                           fd.layers.BatchNormalization(),
                           fd.layers.Dense(10, activation="softmax")])
    fd.io.load_torch_state_dict(model, torch_net)            # an nn.Sequential
    fd.io.load_torch_state_dict(model, torch_net.state_dict(), epsilon=1e-5)
    fd.io.load_keras_weights(model, keras_model.get_weights())

Only the layers with weights are matched, in order: ``Dense``,
``BatchNormalization`` and ``PReLU`` (torch: ``Linear``, ``BatchNorm1d``,
``PReLU``). Parameter-free layers (activations, dropout) are not compared:
the fd model must apply the same functions between them (a torch
``Linear, ELU`` is a fd ``Dense(activation="elu")`` or ``Dense, ELU()``).
Every array is checked before any weight is written, so a failed load leaves
the model as it was. Arrays are cast to the model's dtype. Nothing is
unpickled: the caller hands over arrays (or torch tensors) already loaded.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np

from .._arrays import to_host
from .._validate import check_float, check_float_dtype
from ..layers import BatchNormalization, Dense, Layer, PReLU

__all__ = ["load_torch_state_dict", "load_keras_weights"]

_WEIGHTED = (Dense, BatchNormalization, PReLU)
_TORCH_EPS = 1e-5  # torch.nn.BatchNorm1d's default eps
_TORCH_BN_KEYS = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}


# ----------------------------------------------------------------- shared


def _check_model(caller, model):
    # a fd.Sequential, known by what is used of it (this module sits below
    # fd.models): fd layers in .layers, and build
    layers = getattr(model, "layers", None)
    if not (isinstance(layers, list) and all(isinstance(lay, Layer) for lay in layers)
            and callable(getattr(model, "build", None))):
        raise TypeError(f"{caller}: model must be a fd.Sequential, got {type(model).__name__}")
    if not model.layers:
        raise ValueError(f"{caller}: the model has no layers")


def _build(caller, model, input_dim, dtype, source):
    """Build an unbuilt model for `input_dim` features (NumPy, `dtype` or
    the model's own); a built model keeps its arrays, and a `dtype` other
    than its own is an error."""
    if model.built:
        if dtype is not None:
            have = next((w.dtype for w in model.weights), None)
            if have is not None and have != dtype:
                raise ValueError(f"{caller}: dtype={dtype.name} but the model is already built "
                                 f"in {np.dtype(have).name}")
        return
    if input_dim is None:
        raise ValueError(f"{caller}: cannot infer the input width from {source}; build the "
                         f"model first (model.build(input_dim))")
    model.build(int(input_dim), np, dtype)


def _weighted_layers(caller, model):
    """The layers that receive weights, in order; other layers must have none."""
    out = []
    for layer in model.layers:
        if isinstance(layer, _WEIGHTED):
            out.append(layer)
        elif layer.weights:
            raise ValueError(f"{caller}: layer {layer.name} ({type(layer).__name__}) has weights "
                             f"but cannot be loaded; supported: Dense, BatchNormalization, "
                             f"PReLU")
    return out


def _kind(layer) -> str:
    return type(layer).__name__


def _set_all(assignments) -> None:
    """Write (layer, arrays) pairs once all of them have been checked."""
    for layer, arrays in assignments:
        layer.set_weights(arrays)


def _alpha(caller, what, a, layer):
    """PReLU slopes: (units,), or (1,) (one shared slope) broadcast to (units,)."""
    units = layer.input_dim
    if a.ndim == 1 and a.shape[0] in (1, units):
        return np.broadcast_to(a, (units,))
    raise ValueError(f"{caller}: {what} has shape {a.shape}; layer {layer.name} (PReLU) "
                     f"expects ({units},) or (1,)")


# ------------------------------------------------------------------ torch


def _to_numpy(caller, key, value):
    """A NumPy copy of a torch tensor (duck-typed: torch is never imported),
    CuPy array or array-like."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        t = value.detach().cpu()
        try:
            a = t.numpy()
        except TypeError:  # bfloat16 and other dtypes NumPy lacks
            a = t.float().numpy()
    else:
        a = to_host(value)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{caller}: {key!r} has dtype {a.dtype}, expected a real number array")
    return np.array(a)


class _TorchModule:
    """One torch module of the state dict: its key prefix, parameters
    (name -> (key, array)), kind, and the nn.Module itself when known."""

    def __init__(self, prefix, params, kind, module=None):
        self.prefix, self.params, self.kind, self.module = prefix, params, kind, module

    def key(self, name):
        return f"{self.prefix}.{name}" if self.prefix else name

    def describe(self):
        shapes = ", ".join(f"{k}: {a.shape}" for k, a in self.params.values())
        return f"{self.kind} {self.prefix!r} ({shapes})"


def _torch_kind(caller, prefix, params):
    """Linear, BatchNorm1d or PReLU, from the parameter names and shapes."""
    names = set(params)
    weight = params.get("weight", (None, None))[1]
    if names & {"running_mean", "running_var", "num_batches_tracked"}:
        kind, allowed = "BatchNorm1d", _TORCH_BN_KEYS
    elif weight is not None and weight.ndim == 2:
        kind, allowed = "Linear", {"weight", "bias"}
    elif names == {"weight"} and weight.ndim == 1:
        kind, allowed = "PReLU", {"weight"}
    else:
        shapes = ", ".join(f"{k!r}: {a.shape}" for k, a in params.values())
        hint = ""
        if weight is not None and weight.ndim >= 3:
            hint = " (a convolution?)"
        elif names == {"weight", "bias"}:
            hint = (" (1-D weight and bias without running statistics: LayerNorm or "
                    "BatchNorm1d(track_running_stats=False)?)")
        raise ValueError(f"{caller}: unsupported module {prefix!r} with {shapes}{hint}; only "
                         f"Linear, BatchNorm1d and PReLU (and parameter-free modules between "
                         f"them) can be loaded")
    extra = sorted(params[n][0] for n in names - allowed)
    if extra:
        raise ValueError(f"{caller}: unexpected keys {extra} in {kind} {prefix!r} (its keys: "
                         f"{sorted(allowed)})")
    return kind


def _is_torch_module(obj) -> bool:
    return (callable(getattr(obj, "state_dict", None))
            and callable(getattr(obj, "named_modules", None)))


def _check_torch_modules(caller, net):
    """Every torch module with its own parameters or buffers must be a
    Linear, BatchNorm1d or PReLU (containers and activations have none)."""
    modules = {}
    for name, m in net.named_modules():
        own = list(m.parameters(recurse=False)) + list(m.buffers(recurse=False))
        tname = type(m).__name__
        if tname == "BatchNorm1d" and not getattr(m, "track_running_stats", True):
            raise ValueError(f"{caller}: module {name!r} is BatchNorm1d(track_running_stats="
                             f"False); fd's BatchNormalization always keeps moving statistics")
        if not own:
            continue
        if tname not in ("Linear", "BatchNorm1d", "PReLU"):
            raise ValueError(f"{caller}: unsupported module {name!r} ({tname}); only Linear, "
                             f"BatchNorm1d and PReLU (and parameter-free modules between them) "
                             f"can be loaded")
        modules[name] = m
    return modules


def _torch_modules(caller, state_dict, net):
    groups = {}  # prefix -> {param: (key, array)}, in state-dict order
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"{caller}: state_dict keys must be str, got {key!r}")
        prefix, _, name = key.rpartition(".")
        groups.setdefault(prefix, {})[name] = (key, _to_numpy(caller, key, value))
    modules = _check_torch_modules(caller, net) if net is not None else {}
    out = []
    for prefix, params in groups.items():
        kind = _torch_kind(caller, prefix, params)
        m = modules.get(prefix)
        if net is not None and (m is None or type(m).__name__ != kind):
            keys = sorted(k for k, _ in params.values())
            raise ValueError(f"{caller}: state_dict entries {keys} do not match module {prefix!r} "
                             f"({type(m).__name__ if m is not None else 'absent'})")
        out.append(_TorchModule(prefix, params, kind, m))
    return out


def _torch_input_dim(first):
    if first.kind == "Linear":
        return first.params["weight"][1].shape[1]
    if first.kind == "BatchNorm1d":
        return next((a.shape[0] for _, a in first.params.values() if a.ndim == 1), None)
    w = first.params["weight"][1]
    return w.shape[0] if w.shape[0] > 1 else None


def _need(caller, tm, name, layer, why):
    if name not in tm.params:
        raise ValueError(f"{caller}: missing key {tm.key(name)!r} for layer {layer.name} "
                         f"({_kind(layer)}, {why})")
    return tm.params[name][1]


def _refuse(caller, tm, name, layer, why):
    if name in tm.params:
        raise ValueError(f"{caller}: unexpected key {tm.key(name)!r} for layer {layer.name} "
                         f"({_kind(layer)}, {why})")


def _check_shape(caller, key, a, expected, layer, what):
    if tuple(a.shape) != tuple(expected):
        raise ValueError(f"{caller}: {key!r} has shape {tuple(a.shape)}; layer {layer.name} "
                         f"({_kind(layer)}) expects {tuple(expected)} for its {what}")


def _torch_arrays(caller, tm, layer):
    """The fd arrays (in ``layer.weights`` order) from one torch module."""
    if tm.kind == "Linear":
        if not isinstance(layer, Dense):
            raise ValueError(f"{caller}: {tm.describe()} is matched with layer {layer.name} "
                             f"({_kind(layer)}); expected a Dense")
        w = tm.params["weight"][1]
        n_in, units = layer.kernel.shape
        _check_shape(caller, tm.key("weight"), w, (units, n_in), layer,
                     f"kernel of shape {(n_in, units)} (torch stores it transposed, (out, in))")
        arrays = [w.T]
        if layer.use_bias:
            b = _need(caller, tm, "bias", layer,
                      "use_bias=True; a Linear(bias=False) loads into Dense(use_bias=False)")
            _check_shape(caller, tm.key("bias"), b, (units,), layer, "bias")
            arrays.append(b)
        else:
            _refuse(caller, tm, "bias", layer, "use_bias=False")
        return arrays
    if tm.kind == "BatchNorm1d":
        if not isinstance(layer, BatchNormalization):
            raise ValueError(f"{caller}: {tm.describe()} is matched with layer {layer.name} "
                             f"({_kind(layer)}); expected a BatchNormalization")
        n = layer.input_dim
        arrays = []
        for name, on, flag in (("weight", layer.scale, "scale"), ("bias", layer.center, "center")):
            if on:
                a = _need(caller, tm, name, layer, f"{flag}=True; a BatchNorm1d(affine=False) "
                          f"loads into BatchNormalization(scale=False, center=False)")
                _check_shape(caller, tm.key(name), a, (n,), layer,
                             "gamma" if name == "weight" else "beta")
                arrays.append(a)
            else:
                _refuse(caller, tm, name, layer, f"{flag}=False")
        for name, what in (("running_mean", "moving_mean"), ("running_var", "moving_variance")):
            a = _need(caller, tm, name, layer, f"its {what}")
            _check_shape(caller, tm.key(name), a, (n,), layer, what)
            arrays.append(a)
        return arrays
    if not isinstance(layer, PReLU):
        raise ValueError(f"{caller}: {tm.describe()} is matched with layer {layer.name} "
                         f"({_kind(layer)}); expected a PReLU")
    return [_alpha(caller, repr(tm.key("weight")), tm.params["weight"][1], layer)]


def _bn_settings(caller, tm, layer, epsilon, momentum):
    """(epsilon, momentum) to give a BatchNormalization loaded from `tm`, or
    None for a value left as it is."""
    if tm.module is not None:
        m = tm.module
        if epsilon is None:
            epsilon = check_float(caller, f"{tm.prefix}.eps", m.eps, low=0.0, low_open=True)
        if momentum is None:
            if m.momentum is None:
                raise ValueError(f"{caller}: module {tm.prefix!r} is BatchNorm1d(momentum=None) "
                                 f"(a cumulative average), which fd's BatchNormalization does "
                                 f"not offer; pass momentum= to choose one")
            momentum = check_float(caller, f"{tm.prefix}.momentum", m.momentum, low=0.0,
                                   high=1.0)
    elif epsilon is None and layer.epsilon != _TORCH_EPS:
        warnings.warn(f"{caller}: layer {layer.name} keeps epsilon={layer.epsilon}; a "
                      f"state_dict does not record BatchNorm1d's eps (torch's default is "
                      f"{_TORCH_EPS}): pass epsilon= or load from the nn.Module",
                      UserWarning, stacklevel=3)
    return epsilon, momentum


def load_torch_state_dict(model, state_dict, *, epsilon=None, momentum=None, dtype=None):
    """Load a PyTorch ``nn.Sequential`` of Linear / BatchNorm1d / PReLU into `model`.

    state_dict: the ``nn.Module`` itself, or its ``state_dict()`` (a Mapping
    of name -> torch tensor or NumPy array, keys such as ``"0.weight"``,
    ``"1.running_var"``). Tensors are converted with
    ``.detach().cpu().numpy()``; torch is not imported. The torch modules with
    parameters are taken in order (state-dict order, which is the order of an
    ``nn.Sequential``) and matched with the fd layers that have weights:

    - ``Linear`` -> ``Dense``: ``kernel = weight.T`` (torch stores (out, in)),
      ``bias = bias``; a Linear(bias=False) needs ``Dense(use_bias=False)``.
    - ``BatchNorm1d`` -> ``BatchNormalization``: ``gamma = weight``,
      ``beta = bias``, ``moving_mean = running_mean``, ``moving_variance =
      running_var``; ``affine=False`` needs ``scale=False, center=False``.
      ``num_batches_tracked`` is ignored.
    - ``PReLU`` -> ``PReLU``: ``alpha = weight`` (one shared slope is
      broadcast to every unit).

    BatchNormalization settings. Torch's ``running_var`` is the unbiased
    batch variance and its update is ``running = (1 - m) running + m batch``
    (``m = momentum``, default 0.1; Keras' ``momentum`` is ``1 - m`` with the
    biased variance), and its default ``eps`` is 1e-5 (Keras: 1e-3).

    - From an ``nn.Module``: each loaded layer gets ``epsilon = eps``,
      ``convention = "torch"`` and ``momentum = m``, so inference matches
      torch and further training updates the moving statistics as torch
      would. ``momentum=None`` in torch (a cumulative average) is refused
      unless `momentum` is given here.
    - From a bare state_dict: eps and momentum are not recorded. Each layer
      keeps its own ``epsilon``, ``momentum`` and ``convention`` (the
      defaults of ``BatchNormalization()`` are Keras': 1e-3, 0.99, "keras");
      a UserWarning names every layer whose epsilon is not torch's 1e-5.
      Pass ``epsilon=`` (e.g. 1e-5) to set it on every loaded layer, and
      ``momentum=`` (torch's value, e.g. 0.1) to switch every loaded layer to
      ``convention="torch"`` with that momentum.

    `epsilon` and `momentum`, when given, also override the module's values.

    An unbuilt model is built for the input width of the first module
    (a Linear's ``weight.shape[1]``), with NumPy arrays of `dtype` (default:
    the model's dtype, float32 unless it was made with another; torch's
    default too). Arrays are cast to the model's dtype.

    Raises ValueError naming the key and the shapes for: a different number
    of modules with weights than of fd layers with weights, a shape that does
    not fit, a missing or unexpected key, and an unsupported module (Conv,
    LayerNorm, ...). Returns `model`.
    """
    caller = "load_torch_state_dict"
    _check_model(caller, model)
    dtype = check_float_dtype(caller, "dtype", dtype)
    if epsilon is not None:
        epsilon = check_float(caller, "epsilon", epsilon, low=0.0, low_open=True)
    if momentum is not None:
        momentum = check_float(caller, "momentum", momentum, low=0.0, high=1.0)
    if _is_torch_module(state_dict):
        net, sd = state_dict, state_dict.state_dict()
    elif isinstance(state_dict, Mapping):
        net, sd = None, state_dict
    else:
        raise TypeError(f"{caller}: state_dict must be a Mapping of name -> tensor or an "
                        f"nn.Module, got {type(state_dict).__name__}")
    mods = _torch_modules(caller, sd, net)
    if not mods:
        raise ValueError(f"{caller}: the state_dict has no weights")
    _build(caller, model, _torch_input_dim(mods[0]), dtype,
           f"the first module ({mods[0].describe()})")
    layers = _weighted_layers(caller, model)
    for i in range(max(len(mods), len(layers))):
        if i >= len(layers):
            keys = [k for tm in mods[i:] for k, _ in tm.params.values()]
            raise ValueError(f"{caller}: unexpected keys {keys}: the state_dict has "
                             f"{len(mods)} modules with weights, the model {len(layers)} layers "
                             f"with weights ({', '.join(la.name for la in layers)})")
        if i >= len(mods):
            raise ValueError(f"{caller}: layer {layers[i].name} ({_kind(layers[i])}) has no "
                             f"module: the state_dict has {len(mods)} modules with weights "
                             f"({', '.join(repr(tm.prefix) for tm in mods)}), the model "
                             f"{len(layers)} layers with weights")
    assignments, settings = [], []
    for tm, layer in zip(mods, layers):
        assignments.append((layer, _torch_arrays(caller, tm, layer)))
        if isinstance(layer, BatchNormalization):
            settings.append((layer, *_bn_settings(caller, tm, layer, epsilon, momentum)))
    _set_all(assignments)
    for layer, eps, mom in settings:
        if eps is not None:
            layer.epsilon = eps
        if mom is not None:
            layer.convention, layer.momentum = "torch", mom
    return model


# ------------------------------------------------------------------ Keras


def _keras_expected(layer):
    """(what, shape) of each array Keras' get_weights() lists for `layer`."""
    n = layer.input_dim
    if isinstance(layer, Dense):
        out = [("kernel", (n, layer.units))]
        return out + ([("bias", (layer.units,))] if layer.use_bias else [])
    if isinstance(layer, BatchNormalization):
        out = [("gamma", (n,))] if layer.scale else []
        out += [("beta", (n,))] if layer.center else []
        return out + [("moving_mean", (n,)), ("moving_variance", (n,))]
    return [("alpha", (n,))]


def load_keras_weights(model, weights, *, dtype=None):
    """Load a Keras ``model.get_weights()`` list into `model`, in one call.

    The list is flat, in Keras' order, which is also fd's: per Dense
    ``kernel (in, units)``, ``bias (units,)`` (absent with
    ``use_bias=False``); per BatchNormalization ``gamma``, ``beta``,
    ``moving_mean``, ``moving_variance`` (gamma absent with ``scale=False``,
    beta with ``center=False``); per PReLU ``alpha (units,)`` (or (1,) from
    ``shared_axes=[1]``, broadcast to every unit). Layers without weights
    (Dropout, Activation, ...) list nothing.

    Keras' BatchNormalization defaults (``momentum=0.99``, ``epsilon=1e-3``,
    biased variance) are fd's, so nothing else changes; a Keras layer built
    with another epsilon needs the fd layer built with it too. (torch's
    BatchNorm1d uses eps=1e-5: see load_torch_state_dict.)

    An unbuilt model is built for ``weights[0].shape[0]`` input features
    (the first kernel's rows), with NumPy arrays of `dtype` (default: the
    model's dtype, float32 unless it was made with another). Arrays are cast
    to the model's dtype. A wrong count or shape raises ValueError naming the
    layer, the index and the expected shape; nothing is written unless every
    array fits. Returns `model`.
    """
    caller = "load_keras_weights"
    _check_model(caller, model)
    dtype = check_float_dtype(caller, "dtype", dtype)
    if isinstance(weights, (str, bytes, Mapping)) or not hasattr(weights, "__iter__"):
        raise TypeError(f"{caller}: weights must be a list of arrays (Keras' get_weights()), "
                        f"got {type(weights).__name__}")
    arrays = [_to_numpy(caller, f"weights[{i}]", w) for i, w in enumerate(weights)]
    if not arrays:
        raise ValueError(f"{caller}: weights is empty")
    first = arrays[0]
    _build(caller, model, first.shape[0] if first.ndim >= 1 else None, dtype,
           f"weights[0] of shape {first.shape}")
    layers = _weighted_layers(caller, model)
    need = sum(len(_keras_expected(layer)) for layer in layers)
    assignments, i = [], 0
    for layer in layers:
        mine = []
        for what, shape in _keras_expected(layer):
            if i >= len(arrays):
                raise ValueError(f"{caller}: got {len(arrays)} arrays, the model needs {need}: "
                                 f"layer {layer.name} ({_kind(layer)}) expects its {what} of "
                                 f"shape {shape} at weights[{i}]")
            a = arrays[i]
            if isinstance(layer, PReLU):
                a = _alpha(caller, f"weights[{i}]", a, layer)
            elif tuple(a.shape) != shape:
                raise ValueError(f"{caller}: weights[{i}] has shape {tuple(a.shape)}; layer "
                                 f"{layer.name} ({_kind(layer)}) expects its {what} of shape "
                                 f"{shape}")
            mine.append(a)
            i += 1
        assignments.append((layer, mine))
    if i != len(arrays):
        raise ValueError(f"{caller}: got {len(arrays)} arrays, the model needs {need} "
                         f"(weights[{i}:] of shapes {[tuple(a.shape) for a in arrays[i:]]} are "
                         f"left over)")
    _set_all(assignments)
    return model
