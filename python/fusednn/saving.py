"""Model files: the safetensors format, written and read here (no pickles).

A file is what the safetensors format specifies
(https://github.com/huggingface/safetensors), so other safetensors tools
read it (``safetensors.numpy.load_file``, ``safe_open``):

- 8 bytes: N, the length of the header, an unsigned little-endian 64-bit int;
- N bytes: a UTF-8 JSON object mapping each tensor name to ``{"dtype":
  "F32", "shape": [...], "data_offsets": [begin, end]}`` plus an optional
  ``"__metadata__"`` object of str -> str; padded with spaces so that the
  data start at a multiple of 8 bytes;
- the data: each tensor's bytes, C order, little-endian, at ``[begin, end)``
  counted from the end of the header. The tensors cover the data exactly,
  without gaps or overlaps.

``save_file(tensors, path, metadata)`` / ``load_file(path)`` are the
format alone (the names and arguments of ``safetensors.numpy``);
``save_model`` / ``load_model`` put a ``fd.Sequential`` into one such file
(see ``Sequential.save`` and ``fd.models.load``):

===============================  ============================================
tensor                           what
===============================  ============================================
``layers.{i}.vars.{j}``          weight j of layer i, in ``layer.weights``
                                 order (Keras' ``layers/dense/vars/0``)
``optimizer.vars.{p}.{s}``       slot s (0..2) of trainable weight p
===============================  ============================================

and in ``__metadata__``, each a JSON string: ``model`` (the Sequential's
config, the layers' configs and the build: input width and dtype),
``compile`` (optimizer config with its learning-rate schedule, loss,
metrics), ``optimizer_state`` (iterations, which slots exist, extra host
state such as Nadam's momentum product) and ``state`` (each layer's
``get_state()`` and the model's shuffle generator), ``tensor_crc32``
(each tensor's CRC32, ``zlib.crc32`` of its bytes as stored, as 8 hex
digits: ``fd.models.load`` refuses a tensor whose bytes no longer match;
files written before it existed have none and load unchecked), plus
``fusednn_format: "1"``.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
import zlib

import numpy as np

from .ops._checks import check_path as _check_path

__all__ = ["save_file", "load_file", "save_model", "load_model"]

FORMAT_VERSION = "1"
# safetensors' own limit on the header (its Rust reader refuses larger ones)
_MAX_HEADER = 100_000_000
_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4",
           "I16": "<i2", "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1",
           "BOOL": "?"}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


# ------------------------------------------------------------------ paths


def check_path(caller: str, path, *, reading: bool, make_dirs: bool = False) -> str:
    """`path` as a str after checking its type; for reading it must be an
    existing file (FileNotFoundError otherwise), for writing not a directory
    and in an existing directory, which `make_dirs` creates when missing."""
    path = _check_path(caller, "path", path)
    if os.path.isdir(path):
        raise ValueError(f"{caller}: path {path!r} is a directory, expected a file")
    if reading and not os.path.exists(path):
        raise FileNotFoundError(f"{caller}: no such file: {path!r}")
    if not reading:
        directory = os.path.dirname(os.path.abspath(path))
        if make_dirs:
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as e:  # e.g. a file where a directory should be
                raise type(e)(f"{caller}: cannot create the directory of {path!r}: {e}") \
                    from None
        elif not os.path.isdir(directory):
            raise FileNotFoundError(f"{caller}: the directory of {path!r} does not exist")
    return path


# ----------------------------------------------------------- the format


def save_file(tensors: dict, path, metadata: dict | None = None) -> None:
    """Write `tensors` (name -> NumPy array) and `metadata` (str -> str) as a
    safetensors file at `path`, atomically: to a temporary file in the same
    directory, flushed to disk, then renamed over `path` (``os.replace``);
    on any error the temporary file is removed and `path` is untouched.

    Arrays are written in C order, little-endian; dtypes: float16/32/64,
    (u)int8..64, bool (bfloat16 has no NumPy dtype). Tensors are laid out in
    the order given.
    """
    caller = "save_file"
    path = check_path(caller, path, reading=False)
    if not isinstance(tensors, dict):
        raise TypeError(f"{caller}: tensors must be a dict of name -> array, got "
                        f"{type(tensors).__name__}")
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise TypeError(f"{caller}: metadata must be a dict of str -> str, got {metadata!r}")
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, a in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError(f"{caller}: tensor names must be non-empty strs other than "
                             f"'__metadata__', got {name!r}")
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{caller}: tensor {name!r} must be a NumPy array, got "
                            f"{type(a).__name__}")
        key = _NAMES.get(a.dtype.newbyteorder("<") if a.dtype.itemsize > 1 else a.dtype)
        if key is None:
            raise TypeError(f"{caller}: tensor {name!r} has dtype {a.dtype}, which safetensors "
                            f"cannot hold here; expected one of {sorted(_NAMES.values())}")
        data = _stored(a).tobytes()
        header[name] = {"dtype": key, "shape": [int(s) for s in a.shape],
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)  # data 8-byte aligned, as safetensors writes

    def write(f):
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)

    atomic_write(path, write)


def atomic_write(path, write) -> None:
    """Call ``write(f)`` on a temporary file in `path`'s directory, flush it to
    disk, then rename it over `path`: readers see the old file or the whole
    new one, never a partial write; on any error the temporary file is
    removed and `path` is left as it was."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), 0o644)  # mkstemp creates 0600
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_file(path, caller: str = "load_file") -> tuple[dict, dict]:
    """Read a safetensors file: ``(tensors, metadata)``, tensors a dict of
    name -> read-only NumPy array (native byte order), metadata a dict of
    str -> str ({} when absent).

    The whole file is checked before anything is returned; each of these
    raises ValueError naming the file and the problem: a file shorter than
    8 bytes, a header length beyond the file or above 100 MB, a header that
    is not a UTF-8 JSON object, a duplicate name, an entry without exactly
    dtype/shape/data_offsets, an unknown dtype (bfloat16 included), a shape
    that is not a list of ints >= 0, offsets out of range, overlapping or
    leaving bytes uncovered, a byte count that does not match the shape, a
    metadata value that is not a str. Nothing is ever unpickled.
    """
    path = check_path(caller, path, reading=True)

    def bad(problem):
        return ValueError(f"{caller}: {path!r} is not a valid safetensors file: {problem}")

    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise bad(f"truncated: {len(raw)} bytes, fewer than the 8-byte header length")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > _MAX_HEADER:
        raise bad(f"bad header length {n} (more than {_MAX_HEADER} bytes)")
    if 8 + n > len(raw):
        raise bad(f"bad header length {n}: the file has only {len(raw) - 8} bytes after it "
                  f"(truncated?)")

    def unique(pairs):
        seen = {}
        for k, v in pairs:
            if k in seen:
                raise bad(f"the header names {k!r} twice")
            seen[k] = v
        return seen

    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"), object_pairs_hook=unique)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad(f"the header is not UTF-8 JSON: {e}") from None
    if not isinstance(header, dict):
        raise bad(f"the header is a JSON {type(header).__name__}, expected an object")
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise bad("__metadata__ must be an object of str -> str")
    data = memoryview(raw)[8 + n:]
    entries = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise bad(f"tensor {name!r}: expected {{dtype, shape, data_offsets}}, got {info!r}")
        dtype = _DTYPES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
        if dtype is None:
            raise bad(f"tensor {name!r}: unknown or unsupported dtype {info['dtype']!r}; "
                      f"supported: {', '.join(_DTYPES)}")
        shape, offsets = info["shape"], info["data_offsets"]
        if not isinstance(shape, list) or not all(_is_count(s) for s in shape):
            raise bad(f"tensor {name!r}: shape must be a list of ints >= 0, got {shape!r}")
        if not isinstance(offsets, list) or len(offsets) != 2 or \
                not all(_is_count(o) for o in offsets) or offsets[0] > offsets[1] or \
                offsets[1] > len(data):
            raise bad(f"tensor {name!r}: data_offsets {offsets!r} out of range: expected "
                      f"[begin, end] with 0 <= begin <= end <= {len(data)} (the data's size)")
        dtype = np.dtype(dtype)
        want = math.prod(shape) * dtype.itemsize
        if offsets[1] - offsets[0] != want:
            raise bad(f"tensor {name!r}: shape {shape} of {info['dtype']} needs {want} bytes, "
                      f"data_offsets {offsets} hold {offsets[1] - offsets[0]}")
        entries.append((offsets[0], offsets[1], name, dtype, shape))
    end = 0
    for begin, stop, name, _, _ in sorted(entries, key=lambda e: (e[0], e[1])):
        if begin < end:
            raise bad(f"tensor {name!r}: data_offsets [{begin}, {stop}] overlap the previous "
                      f"tensor, which ends at {end}")
        if begin > end:
            raise bad(f"bytes [{end}, {begin}) of the data belong to no tensor")
        end = stop
    if end != len(data):
        raise bad(f"the tensors cover {end} bytes of the data but it has {len(data)} "
                  f"(the last {len(data) - end} belong to no tensor)")
    tensors = {}
    for begin, stop, name, dtype, shape in entries:
        a = np.frombuffer(data[begin:stop], dtype=dtype).reshape(shape)
        tensors[name] = a.astype(dtype.newbyteorder("="), copy=False)
    return tensors, metadata


def _stored(a) -> np.ndarray:
    """`a` as safetensors stores it: C order, little-endian."""
    return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<") if a.dtype.itemsize > 1
                                else a.dtype)


def _crc32(a) -> str:
    """CRC32 of `a`'s stored bytes, as 8 hex digits."""
    return f"{zlib.crc32(_stored(a)):08x}"


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


# ------------------------------------------------------------ the model


def save_model(model, path) -> None:
    """Write `model` (a fd.Sequential) to `path`: see Sequential.save."""
    from .layers._util import rng_state

    caller = "Sequential.save"
    config = {"class_name": type(model).__name__, "config": model.get_config(),
              "build_config": model._build_config()}
    tensors = {}
    if model.built:
        for i, layer in enumerate(model.layers):
            for j, w in enumerate(layer.get_weights()):  # host copies of CuPy weights
                tensors[f"layers.{i}.vars.{j}"] = w
    state = {"layers": [layer.get_state() for layer in model.layers],
             "shuffle_rng": None if model._shuffle_rng is None else rng_state(model._shuffle_rng)}
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
    metadata["tensor_crc32"] = json.dumps({name: _crc32(a) for name, a in tensors.items()})
    # the directories are made last, once nothing else can fail
    save_file(tensors, check_path(caller, path, reading=False, make_dirs=True), metadata)


def _dumps(caller, what, obj) -> str:
    try:
        return json.dumps(obj)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{caller}: the {what} is not JSON-serialisable: {e}") from None


def load_model(path, compile: bool, device: str):
    """Read a model written by save_model: see fd.models.load."""
    from . import _backend
    from . import optimizers as _optimizers
    from .layers._util import set_rng_state
    from .models import Sequential

    caller = "fd.models.load"
    tensors, metadata = load_file(path, caller)

    def bad(problem):
        return ValueError(f"{caller}: {path!r}: {problem}")

    def section(key, required=True):
        if key not in metadata:
            if required:
                raise bad(f"no {key!r} entry in the safetensors metadata; not a file written by "
                          f"Sequential.save")
            return None
        try:
            return json.loads(metadata[key])
        except json.JSONDecodeError as e:
            raise bad(f"metadata {key!r} is not valid JSON: {e}") from None

    if metadata.get("fusednn_format") != FORMAT_VERSION:
        raise bad(f"metadata 'fusednn_format' is {metadata.get('fusednn_format')!r}, expected "
                  f"{FORMAT_VERSION!r}; not a file written by Sequential.save")
    sums = section("tensor_crc32", False)
    if sums is not None:
        if not isinstance(sums, dict) or set(sums) != set(tensors):
            raise bad(f"the checksums in metadata 'tensor_crc32' do not match the tensors: "
                      f"{sorted(set(sums) ^ set(tensors)) if isinstance(sums, dict) else sums!r}")
        for name, a in tensors.items():
            got = _crc32(a)
            if sums[name] != got:
                raise bad(f"tensor {name!r} is corrupted: its bytes have CRC32 {got}, the "
                          f"file recorded {sums[name]!r} when it was saved")
    config, state = section("model"), section("state")
    compile_config, opt_state = section("compile", False), section("optimizer_state", False)
    if not isinstance(config, dict) or config.get("class_name") != "Sequential" or \
            not isinstance(config.get("config"), dict):
        raise bad(f"the model config must be {{'class_name': 'Sequential', 'config': {{...}}}}, "
                  f"got {config!r}")
    try:
        model = Sequential.from_config(config["config"])
    except (TypeError, ValueError) as e:
        raise bad(f"cannot rebuild the model from its config: {e}") from None

    used = set()
    build = config.get("build_config")
    if build is not None:
        if not isinstance(build, dict) or not _is_count(build.get("input_dim")) or \
                build.get("dtype") not in ("float32", "float64"):
            raise bad(f"build_config must be {{'input_dim': int, 'dtype': 'float32' or "
                      f"'float64'}}, got {build!r}")
        if device == "cuda":
            if not _backend.has_cuda():
                raise RuntimeError(f"{caller}: device='cuda' needs the CUDA backend: "
                                   f"{_backend.cuda_status()}")
            import cupy as xp
        else:
            xp = np
        dtype = np.dtype(build["dtype"])
        try:
            model.build(build["input_dim"], xp, dtype)
        except (TypeError, ValueError) as e:
            raise bad(f"cannot build the model: {e}") from None
        for i, layer in enumerate(model.layers):
            weights = []
            for j, w in enumerate(layer.weights):
                name = f"layers.{i}.vars.{j}"
                if name not in tensors:
                    raise bad(f"missing tensor {name!r} (weight {j} of layer {i}, "
                              f"{layer.name})")
                a = tensors[name]
                if a.shape != tuple(w.shape) or a.dtype != dtype:
                    raise bad(f"tensor {name!r} is {a.shape} {a.dtype}, layer {layer.name} "
                              f"needs {tuple(w.shape)} {dtype}")
                weights.append(a)
                used.add(name)
            layer.set_weights(weights)

    if not isinstance(state, dict) or set(state) != {"layers", "shuffle_rng"} or \
            not isinstance(state["layers"], list) or len(state["layers"]) != len(model.layers):
        raise bad(f"the state entry must hold one state per layer ({len(model.layers)}) and "
                  f"shuffle_rng")
    try:
        for layer, st in zip(model.layers, state["layers"]):
            layer.set_state(st)
        if state["shuffle_rng"] is not None:
            model._shuffle_rng = np.random.default_rng()
            set_rng_state("shuffle_rng", model._shuffle_rng, state["shuffle_rng"])
    except (TypeError, ValueError) as e:
        raise bad(f"cannot restore the layers' state: {e}") from None

    if compile_config is not None and opt_state is not None:
        opt = _load_optimizer(bad, compile_config, opt_state, tensors, used, model,
                              _optimizers)
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


def _load_optimizer(bad, compile_config, opt_state, tensors, used, model, optimizers):
    """The compiled optimizer with its state restored (slots checked
    against the model's trainable weights)."""
    classes = {name: getattr(optimizers, name) for name in optimizers.__all__
               if name != "Optimizer"}
    entry = compile_config.get("optimizer") if isinstance(compile_config, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str) or \
            entry["class_name"] not in classes or not isinstance(entry.get("config"), dict):
        raise bad(f"the optimizer must be {{'class_name': one of {sorted(classes)}, 'config': "
                  f"{{...}}}}, got {entry!r}")
    try:
        opt = classes[entry["class_name"]].from_config(entry["config"])
    except (TypeError, ValueError) as e:
        raise bad(f"cannot rebuild the optimizer {entry['class_name']}: {e}") from None
    if not isinstance(opt_state, dict) or set(opt_state) != {"iterations", "slots", "extra"} \
            or not isinstance(opt_state["extra"], dict):
        raise bad(f"optimizer_state must be {{'iterations', 'slots', 'extra'}}, got "
                  f"{opt_state!r}")
    layout = opt_state["slots"]
    slots = None
    if layout is not None:
        params = [w for layer in model.layers for w in layer._trainable_weights]
        if not model.built or not isinstance(layout, list) or len(layout) != len(params):
            raise bad(f"the optimizer state has slots for "
                      f"{len(layout) if isinstance(layout, list) else layout!r} weights, the "
                      f"model has {len(params) if model.built else 'no built'} trainable "
                      f"weights")
        needed = [v is not None for v in opt._slot_init()]
        slots = []
        for p, (row, w) in enumerate(zip(layout, params)):
            if row != needed:
                raise bad(f"optimizer slots of weight {p} are {row!r}, {type(opt).__name__} "
                          f"keeps {needed}")
            got = []
            for s, present in enumerate(row):
                if not present:
                    got.append(None)
                    continue
                name = f"optimizer.vars.{p}.{s}"
                if name not in tensors:
                    raise bad(f"missing tensor {name!r} (optimizer slot {s} of weight {p})")
                a = tensors[name]
                if a.shape != tuple(w.shape) or a.dtype != w.dtype:
                    raise bad(f"tensor {name!r} is {a.shape} {a.dtype}, the weight is "
                              f"{tuple(w.shape)} {w.dtype}")
                used.add(name)
                got.append(a)
            slots.append(got)
    try:
        opt.set_state({"iterations": opt_state["iterations"], "slots": slots,
                       **opt_state["extra"]})
    except (TypeError, ValueError) as e:
        raise bad(f"cannot restore the optimizer state: {e}") from None
    return opt
