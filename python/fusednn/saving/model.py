"""A fd.Sequential in one safetensors file: what ``Sequential.save`` writes
and ``fd.models.load`` reads, through the model's public methods only.

===============================  ============================================
tensor                           what
===============================  ============================================
``layers.{i}.vars.{j}``          weight j of layer i, in ``layer.weights``
                                 order (Keras' ``layers/dense/vars/0``)
``optimizer.vars.{p}.{s}``       slot s (0..2) of weight p of
                                 ``model.optimizer_weights``
===============================  ============================================

and in ``__metadata__``, each a JSON string: ``model`` (the Sequential's
config, the layers' configs and the build: input width and dtype),
``compile`` (optimizer config with its learning-rate schedule, loss,
metrics), ``optimizer_state`` (iterations, which slots exist, extra host
state such as Nadam's momentum product) and ``state`` (``model.get_state()``:
each layer's ``get_state()`` and the model's shuffle generator),
``tensor_crc32`` (each tensor's CRC32, ``zlib.crc32`` of its bytes as
stored, as 8 hex digits: ``fd.models.load`` refuses a tensor whose bytes no
longer match; files written before it existed have none and load
unchecked), plus ``fusednn_format: "1"``.
"""

from __future__ import annotations

import json

import numpy as np

from .. import _backend
from .. import optimizers as _optimizers
from .._arrays import module_for
from ..layers import BatchNormalization, Dense, Layer, PReLU
from .safetensors import (check_path, crc32, is_count, load_file, save_file, short_repr,
                          strict_json)

__all__ = ["save_model", "load_model"]

FORMAT_VERSION = "1"


def save_model(model, path) -> None:
    """Write `model` (a fd.Sequential) to `path`: see Sequential.save."""
    caller = "Sequential.save"
    config = {"class_name": type(model).__name__, "config": model.get_config(),
              "build_config": model.get_build_config()}
    tensors = {}
    if model.built:
        for i, layer in enumerate(model.layers):
            for j, w in enumerate(layer.get_weights()):  # host copies of CuPy weights
                tensors[f"layers.{i}.vars.{j}"] = w
    state = model.get_state()
    metadata = {"fusednn_format": FORMAT_VERSION, "model": _dumps(caller, "model config", config),
                "state": _dumps(caller, "layer state", state)}
    if model.optimizer is not None:
        opt = model.optimizer
        opt_config = opt.get_config()
        if callable(opt_config.get("learning_rate")):
            raise ValueError(f"{caller}: the optimizer's learning_rate {opt.learning_rate!r} is "
                             f"a callable that is not a fd.schedules schedule, so it cannot be "
                             f"written to a file; use a fd.schedules schedule")
        compile_config = {"optimizer": {"class_name": type(opt).__name__, "config": opt_config},
                          "loss": model.loss, "metrics": list(model.metrics)}
        st = opt.get_state()
        slots = st["slots"]
        layout = None
        if slots is not None:
            layout = [[s is not None for s in row] for row in slots]
            for p, row in enumerate(slots):
                for s, a in enumerate(row):
                    if a is not None:
                        tensors[f"optimizer.vars.{p}.{s}"] = np.asarray(a)
        extra = {k: v for k, v in st.items() if k not in ("iterations", "slots")}
        metadata["compile"] = _dumps(caller, "compile config", compile_config)
        metadata["optimizer_state"] = _dumps(caller, "optimizer state", {
            "iterations": st["iterations"], "slots": layout, "extra": extra})
    metadata["tensor_crc32"] = json.dumps({name: crc32(a) for name, a in tensors.items()})
    # the directories are made last, once nothing else can fail
    save_file(tensors, check_path(caller, path, reading=False, make_dirs=True), metadata)


def _dumps(caller, what, obj) -> str:
    try:
        return json.dumps(obj)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{caller}: the {what} is not JSON-serialisable: {e}") from None


def load_model(path, compile: bool, device: str, from_config):
    """Read a model written by save_model: see fd.models.load. `from_config`
    makes the (unbuilt) model from its saved config.

    Order of the checks: the safetensors layout (load_file), the checksums,
    each metadata section (a JSON object, no name twice), then the weights'
    shapes that the config implies against the file's tensors, before the
    model is built (building allocates them: a config claiming a width of
    10**9 is refused without it), then the build, weights, states (counters
    below 2**64) and optimizer. Every refusal is a ValueError naming the
    file."""
    caller = "fd.models.load"
    tensors, metadata = load_file(path, caller)

    def bad(problem):
        return ValueError(f"{caller}: {path!r}: {problem}")

    def section(key, required=True):
        """metadata[key] parsed: a JSON object (None where absent and not `required`)."""
        if key not in metadata:
            if required:
                raise bad(f"no {key!r} entry in the safetensors metadata; not a file written by "
                          f"Sequential.save")
            return None
        value = strict_json(metadata[key], lambda p: bad(f"metadata {key!r} {p}"))
        if not isinstance(value, dict):
            raise bad(f"metadata {key!r} must hold a JSON object, got {short_repr(value)}")
        return value

    if metadata.get("fusednn_format") != FORMAT_VERSION:
        raise bad(f"metadata 'fusednn_format' is {short_repr(metadata.get('fusednn_format'))}, "
                  f"expected {FORMAT_VERSION!r}; not a file written by Sequential.save")
    sums = section("tensor_crc32", False)
    if sums is not None:
        if set(sums) != set(tensors):
            raise bad(f"the checksums in metadata 'tensor_crc32' do not match the tensors: "
                      f"{short_repr(sorted(set(sums) ^ set(tensors)))}")
        for name, a in tensors.items():
            got = crc32(a)
            if sums[name] != got:
                raise bad(f"tensor {short_repr(name)} is corrupted: its bytes have CRC32 {got}, "
                          f"the file recorded {short_repr(sums[name])} when it was saved")
    config, state = section("model"), section("state")
    compile_config, opt_state = section("compile", False), section("optimizer_state", False)
    if not isinstance(config, dict) or config.get("class_name") != "Sequential" or \
            not isinstance(config.get("config"), dict):
        raise bad(f"the model config must be {{'class_name': 'Sequential', 'config': {{...}}}}, "
                  f"got {short_repr(config)}")
    try:
        model = from_config(config["config"])
    except (TypeError, ValueError) as e:
        raise bad(f"cannot rebuild the model from its config: {e}") from None

    used = set()
    build = config.get("build_config")
    if build is not None:
        if not isinstance(build, dict) or not is_count(build.get("input_dim")) or \
                build.get("dtype") not in ("float32", "float64"):
            raise bad(f"build_config must be {{'input_dim': int, 'dtype': 'float32' or "
                      f"'float64'}}, got {short_repr(build)}")
        if device == "cuda":
            if not _backend.has_cuda():
                raise RuntimeError(f"{caller}: device='cuda' needs the CUDA backend: "
                                   f"{_backend.cuda_status()}")
        xp = module_for(device)
        dtype = np.dtype(build["dtype"])
        # Building allocates the weights, and their shapes come from the
        # config: check them against the file's tensors first, so a config
        # that claims a width of 10**9 is refused without allocating it.
        dim = build["input_dim"]
        for i, layer in enumerate(model.layers):
            for j, shape in enumerate(_weight_shapes(layer, dim) or ()):
                _take(bad, tensors, set(), f"layers.{i}.vars.{j}", shape, dtype,
                      f"weight {j} of layer {i}, {layer.name}", f"layer {layer.name} needs")
            dim = layer.output_dim(dim)
        try:
            model.build(build["input_dim"], xp, dtype)
        except (TypeError, ValueError) as e:
            raise bad(f"cannot build the model: {e}") from None
        for i, layer in enumerate(model.layers):
            layer.set_weights([
                _take(bad, tensors, used, f"layers.{i}.vars.{j}", w.shape, dtype,
                      f"weight {j} of layer {i}, {layer.name}", f"layer {layer.name} needs")
                for j, w in enumerate(layer.weights)])

    _check_counters(bad, state)
    try:
        model.set_state(state)
    except (TypeError, ValueError) as e:
        raise bad(f"cannot restore the layers' state: {e}") from None

    if compile_config is not None and opt_state is not None:
        opt = _load_optimizer(bad, compile_config, opt_state, tensors, used, model)
        if compile:
            try:
                model.compile(opt, compile_config.get("loss"), compile_config.get("metrics"))
            except (TypeError, ValueError) as e:
                raise bad(f"cannot compile the model from the saved compile config: {e}") \
                    from None
    elif compile_config is not None or opt_state is not None:
        raise bad("the metadata has one of 'compile' and 'optimizer_state' without the other")
    unused = sorted(set(tensors) - used)
    if unused:
        raise bad(f"unexpected tensors {unused[:5]}{' ...' if len(unused) > 5 else ''}")
    return model


def _load_optimizer(bad, compile_config, opt_state, tensors, used, model):
    """The compiled optimizer with its state restored (slots checked
    against the model's trainable weights)."""
    classes = {name: getattr(_optimizers, name) for name in _optimizers.__all__
               if name != "Optimizer"}
    entry = compile_config.get("optimizer") if isinstance(compile_config, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str) or \
            entry["class_name"] not in classes or not isinstance(entry.get("config"), dict):
        raise bad(f"the optimizer must be {{'class_name': one of {sorted(classes)}, 'config': "
                  f"{{...}}}}, got {short_repr(entry)}")
    try:
        opt = classes[entry["class_name"]].from_config(entry["config"])
    except (TypeError, ValueError) as e:
        raise bad(f"cannot rebuild the optimizer {entry['class_name']}: {e}") from None
    if not isinstance(opt_state, dict) or set(opt_state) != {"iterations", "slots", "extra"} \
            or not isinstance(opt_state["extra"], dict):
        raise bad(f"optimizer_state must be {{'iterations', 'slots', 'extra'}}, got "
                  f"{short_repr(opt_state)}")
    layout = opt_state["slots"]
    slots = None
    if layout is not None:
        params = model.optimizer_weights
        if not model.built or not isinstance(layout, list) or len(layout) != len(params):
            count = len(layout) if isinstance(layout, list) else short_repr(layout)
            raise bad(f"the optimizer state has slots for {count} weights, the model has "
                      f"{len(params) if model.built else 'no built'} trainable weights")
        slots = []
        for p, (row, w) in enumerate(zip(layout, params)):
            if not isinstance(row, list) or not all(isinstance(v, bool) for v in row):
                raise bad(f"optimizer slots of weight {p} must be a list of bools, got "
                          f"{short_repr(row)}")
            got = []
            for s, present in enumerate(row):
                if not present:
                    got.append(None)
                    continue
                got.append(_take(bad, tensors, used, f"optimizer.vars.{p}.{s}", w.shape, w.dtype,
                                 f"optimizer slot {s} of weight {p}", "the weight is"))
            slots.append(got)
    try:
        opt.set_state({"iterations": opt_state["iterations"], "slots": slots,
                       **opt_state["extra"]})
    except (TypeError, ValueError) as e:
        raise bad(f"cannot restore the optimizer state: {e}") from None
    return opt


def _check_counters(bad, state):
    """Refuse a layer state whose counters (the int entries of a layer's
    state: a Dropout's step) reach 2**64: the kernels count in 64 bits, and
    such a state would load and then fail at the first fit."""
    layers = state.get("layers")
    for i, st in enumerate(layers if isinstance(layers, list) else ()):
        for key, v in st.items() if isinstance(st, dict) else ():
            if type(v) is int and v >= 2**64:
                raise bad(f"cannot restore the layers' state: layer {i}'s {key} is {v}, a "
                          f"counter must be below 2**64")


def _weight_shapes(layer, input_dim):
    """The shapes of the weights `layer` creates when built for `input_dim`
    features, in ``layer.weights`` order, known without building it:
    Dense, BatchNormalization and PReLU; none for a layer that keeps
    Layer's weight-free ``_build``; None (unknown until built) for any
    other class."""
    if isinstance(layer, Dense):
        return [(input_dim, layer.units)] + ([(layer.units,)] if layer.use_bias else [])
    if isinstance(layer, BatchNormalization):
        return [(input_dim,)] * (layer.scale + layer.center + 2)
    if isinstance(layer, PReLU):
        return [(input_dim,)]
    if type(layer)._build is Layer._build:
        return []
    return None


def _take(bad, tensors, used, name, shape, dtype, what, needs):
    """tensors[name], checked to be `shape` `dtype` (ValueError from `bad`
    naming `what` it is, and what `needs` it, otherwise); marked used."""
    if name not in tensors:
        raise bad(f"missing tensor {name!r} ({what})")
    a = tensors[name]
    if a.shape != tuple(shape) or a.dtype != dtype:
        raise bad(f"tensor {name!r} is {a.shape} {a.dtype}, {needs} {tuple(shape)} "
                  f"{np.dtype(dtype)}")
    used.add(name)
    return a
