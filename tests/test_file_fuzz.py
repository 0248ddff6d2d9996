"""Mutated model files, checkpoints and weight files.

Valid files (``model.save``, ``ModelCheckpoint``, ``save_weights``: Dense /
BatchNormalization / Dropout / PReLU / RReLU models, float32 and float64,
with and without optimizer state) are mutated: truncated in each region,
bit-flipped (anywhere, and in the header length, the JSON header, the data),
given a lying header length, header entries of the wrong types or ranges,
duplicate names, metadata and configs of the wrong types, missing, extra
and misshapen tensors. Each mutated file must either load to what it holds
(the loaded weights equal the bytes in the file; for most mutations that
change nothing meaningful, the original model) or be refused with a
ValueError that names the file; never another exception, never more memory
than the file's size implies, never a hang, never an unpickle.
"""

import contextlib
import io
import json
import os
import pickle
import re
import signal
import struct
import time
import tracemalloc
import warnings
import zipfile
import zlib
from collections import Counter

import numpy as np
import pytest

import fusednn as fd
from fusednn import saving
from fusednn.saving import weights as saving_weights

L = fd.layers
init = fd.initializers


# ------------------------------------------------------------- the valid files


def _data(d=5, n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64)


def _bn_adam_f32():
    """Dense(elu) + BN + Dropout + Dense(softmax), float32, Adam with slots.
    (Every layer is named: default names count the layers made so far in
    the process, and the files must not depend on which tests ran first.)"""
    model = fd.Sequential([L.Dense(8, activation="elu", kernel_initializer=init.HeNormal(seed=1),
                                   name="d0"),
                           L.BatchNormalization(name="bn"), L.Dropout(0.2, seed=2, name="drop"),
                           L.Dense(3, activation="softmax", name="d1",
                                   kernel_initializer=init.GlorotUniform(seed=3))], name="a")
    model.compile(fd.optimizers.Adam(1e-2), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    x, y = _data()
    model.fit(x.astype(np.float32), y, epochs=1, batch_size=16, verbose=0, seed=0)
    return model


def _prelu_f64():
    """Dense + PReLU + Dense, float64, never compiled: no optimizer state."""
    model = fd.Sequential([L.Dense(6, kernel_initializer=init.HeNormal(seed=4), name="d0"),
                           L.PReLU(name="p"),
                           L.Dense(2, kernel_initializer=init.GlorotUniform(seed=5), name="d1")],
                          name="b")
    model.build(5, np, np.float64)
    return model


def _checkpointed(path):
    """A float64 RReLU / BN(center=False) / Dropout model under Nadam with a
    schedule, written by ModelCheckpoint during fit (safetensors)."""
    model = fd.Sequential([L.Dense(7, kernel_initializer=init.HeNormal(seed=6), name="d0"),
                           L.BatchNormalization(center=False, name="bn"),
                           L.RReLU(seed=7, name="r"), L.Dropout(0.1, seed=8, name="drop"),
                           L.Dense(1, activation="sigmoid", name="d1",
                                   kernel_initializer=init.GlorotUniform(seed=9))], name="c")
    sched = fd.schedules.ExponentialDecay(0.01, decay_steps=3, decay_rate=0.9)
    model.compile(fd.optimizers.Nadam(learning_rate=sched), "binary_crossentropy")
    x, y = _data(seed=1)
    cb = fd.callbacks.ModelCheckpoint(str(path))
    model.fit(x, y.astype(np.float64), epochs=1, batch_size=16, verbose=0, seed=0,
              callbacks=[cb])
    return model


def _weights_npz(path):
    """ModelCheckpoint(save_weights_only=True): a float32 .npz of the weights."""
    model = fd.Sequential([L.Dense(4, activation="relu", kernel_initializer=init.HeNormal(seed=10)),
                           L.BatchNormalization(),
                           L.Dense(2, kernel_initializer=init.HeNormal(seed=11))])
    model.compile(fd.optimizers.SGD(0.05, momentum=0.9), "mse")
    x, _ = _data(seed=2)
    cb = fd.callbacks.ModelCheckpoint(str(path), save_weights_only=True)
    model.fit(x.astype(np.float32), x[:, :2].astype(np.float32), epochs=1, batch_size=16,
              verbose=0, seed=0, callbacks=[cb])
    return model


class Base:
    """A valid file and the model it came from (`fresh` makes an unloaded
    model of the same architecture for load_weights)."""

    def __init__(self, name, path, model, fresh=None):
        self.name, self.path, self.model, self.fresh = name, path, model, fresh
        self.raw = path.read_bytes()
        self.npz = fresh is not None


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    d = tmp_path_factory.mktemp("bases")
    out = []
    m = _bn_adam_f32()
    m.save(d / "bn_adam_f32.safetensors")
    out.append(Base("bn_adam_f32", d / "bn_adam_f32.safetensors", m))
    m = _prelu_f64()
    m.save(d / "prelu_f64.safetensors")
    out.append(Base("prelu_f64", d / "prelu_f64.safetensors", m))
    m = _checkpointed(d / "ckpt.safetensors")
    out.append(Base("ckpt_nadam_f64", d / "ckpt.safetensors", m))

    def fresh_npz():
        f = fd.Sequential([L.Dense(4, activation="relu"), L.BatchNormalization(), L.Dense(2)])
        f.build(5, np, np.float32)
        return f

    m = _weights_npz(d / "w.npz")
    out.append(Base("ckpt_npz_f32", d / "w.npz", m, fresh_npz))

    def fresh_prelu():
        f = fd.Sequential([L.Dense(6), L.PReLU(), L.Dense(2)])
        f.build(5, np, np.float64)
        return f

    m = _prelu_f64()
    saving_weights.save_weights(d / "w64.npz", m.get_weights())
    out.append(Base("weights_npz_f64", d / "w64.npz", m, fresh_prelu))
    return out


# ------------------------------------------------------------ reading by hand


def _split(raw):
    """(n, header dict, data) of a safetensors file, parsed by hand."""
    (n,) = struct.unpack("<Q", raw[:8])
    return n, json.loads(raw[8:8 + n]), raw[8 + n:]


def _join(header, data, n=None, text=None):
    """A safetensors file from a header (dict, or raw `text` bytes) and data."""
    if text is None:
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text) if n is None else n) + text + data


def _tensors_by_hand(raw):
    """The tensors of a safetensors file, read without fusednn."""
    _, header, data = _split(raw)
    header.pop("__metadata__", None)
    codes = {"F64": "<f8", "F32": "<f4"}
    return {k: np.frombuffer(data[v["data_offsets"][0]:v["data_offsets"][1]],
                             dtype=codes[v["dtype"]]).reshape(v["shape"])
            for k, v in header.items()}


def _with_sums(header, data):
    """`header`'s tensor_crc32 recomputed for the tensors as they now are,
    so that a check after the checksums is what refuses the file."""
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or "tensor_crc32" not in meta:
        return header
    sums = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        sums[k] = f"{zlib.crc32(data[b:e]):08x}"
    meta["tensor_crc32"] = json.dumps(sums)
    return header


# --------------------------------------------------- safetensors mutations


def _dump(obj):
    return json.dumps(obj, separators=(",", ":"))


def _pack(entries, meta, resum=False):
    """A valid safetensors file of (name, dtype code, shape, bytes) entries,
    laid out in the order given, with `meta` (checksums recomputed where
    `resum`)."""
    header, blobs, offset = {}, [], 0
    for name, code, shape, blob in entries:
        header[name] = {"dtype": code, "shape": list(shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    if meta is not None:
        header = {"__metadata__": dict(meta), **header}
    data = b"".join(blobs)
    return _join(_with_sums(header, data) if resum else header, data)


def _entries(raw):
    """(entries as _pack takes them, metadata) of a valid file."""
    _, header, data = _split(raw)
    meta = header.pop("__metadata__", None)
    out = []
    for name, v in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        b, e = v["data_offsets"]
        out.append((name, v["dtype"], v["shape"], data[b:e]))
    return out, meta


def _flip(raw, lo, hi, rng, bits=1):
    out = bytearray(raw)
    for _ in range(bits):
        i = int(rng.integers(lo, hi))
        out[i] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def _pick(rng, values):
    return values[int(rng.integers(0, len(values)))]


BAD_OFFSET_VALUES = [-1, -8, 1.0, 0.5, "0", "8", None, True, [], {}, 2**63, 2**64 + 8, 10**30,
                     1e300]
BAD_SHAPES = [[-1], [-2, 4], [2**40, 2**40], [10**30], [0, 2**63], [0, 10**30],
              [0, 2**62, 2**62], [1.0], ["2"], [None], [True], "2", 2, None, {}, [[2]], [0] * 65,
              [1] * 65, [0.5, 2]]
BAD_DTYPES = ["BF16", "F8_E4M3", "f32", "float32", "", "Q4", "O", "V8", 32, None, ["F32"],
              {"F32": 1}, True]
JSON_VALUES = [None, True, False, 0, -1, 1.5, 2**63, 10**30, -1e308, float("nan"), float("inf"),
               "", "x", "os.system", [], [1, "a"], {}, {"a": 1}, "\u0000", 3, 0.99]
LAYER_NAMES = ["Conv2D", "os.system", "Layer", "Input", "__import__", "Sequential", "dense",
               "", "Dense ", "eval"]


def _header_mutation(raw, rng):
    """(kind, file) with one header entry of a wrong type or range."""
    _, header, data = _split(raw)
    names = [k for k in header if k != "__metadata__"]
    name = _pick(rng, names)
    entry = header[name]
    begin, end = entry["data_offsets"]
    choice = int(rng.integers(0, 10))
    if choice == 0:
        entry["dtype"] = _pick(rng, BAD_DTYPES)
        return "header_dtype", _join(header, data)
    if choice == 1:
        entry["shape"] = _pick(rng, BAD_SHAPES)
        return "header_shape", _join(header, data)
    if choice == 2:
        i = int(rng.integers(0, 2))
        entry["data_offsets"][i] = _pick(rng, BAD_OFFSET_VALUES)
        return "header_offsets_type", _join(header, data)
    if choice == 3:
        offsets = _pick(rng, [[end, begin] if end > begin else [begin + 4, begin],
                              [begin, len(data) + 4], [len(data), len(data) + end - begin],
                              [begin], [begin, end, end], [], f"{begin},{end}",
                              {"begin": begin, "end": end}, [begin + 4, end + 4],
                              [begin - 4, end - 4] if begin >= 4 else [begin + 1, end + 1]])
        entry["data_offsets"] = offsets
        return "header_offsets_range", _join(header, data)
    if choice == 4:  # two tensors' offsets swapped: overlapping or out of order
        other = header[_pick(rng, names)]
        entry["data_offsets"], other["data_offsets"] = other["data_offsets"], entry[
            "data_offsets"]
        return "header_offsets_swapped", _join(header, data)
    if choice == 5:
        key = _pick(rng, ["dtype", "shape", "data_offsets"])
        if rng.integers(0, 2):
            del entry[key]
        else:
            entry["extra"] = _pick(rng, JSON_VALUES)
        return "header_keys", _join(header, data)
    if choice == 6:
        header[name] = _pick(rng, JSON_VALUES[:-1])
        return "header_entry_type", _join(header, data)
    if choice == 7:  # the shape of another size than the bytes
        shape = list(entry["shape"]) or [1]
        shape[int(rng.integers(0, len(shape)))] += int(rng.integers(1, 4))
        entry["shape"] = shape
        return "header_shape_size", _join(header, data)
    if choice == 8:  # a dtype of another item size: the byte count no longer fits
        entry["dtype"] = _pick(rng, ["F16", "I8", "U8", "BOOL", "I64"] if entry["dtype"] == "F32"
                               else ["F32", "I32", "U16", "BOOL", "I8"])
        return "header_dtype_size", _join(header, data)
    # a name given twice (json.loads alone keeps the last)
    text = _dump(header)
    twin = _pick(rng, names + ["__metadata__"])
    dup = f'"{twin}":{_dump(header[twin])},'
    text = "{" + dup + text[1:] if rng.integers(0, 2) else text[:-1] + "," + dup[:-1] + "}"
    return "duplicate_name", _join(None, data, text=text.encode())


def _meta_mutation(raw, rng, base):
    """(kind, file) with the metadata of a wrong type, or a config edited."""
    entries, meta = _entries(raw)
    choice = int(rng.integers(0, 12))  # 8 and above: a node of a config edited
    if choice == 7:  # a width that building would allocate (10**9 floats: 4-8 GB)
        config = json.loads(meta["model"])
        big = _pick(rng, [10**5, 10**7, 10**9, 10**12, 2**31, 2**63 - 1, 2**64])
        dense = [c for c in config["config"]["layers"] if c["class_name"] == "Dense"]
        if rng.integers(0, 2) or not dense:
            config["build_config"]["input_dim"] = big
        else:
            _pick(rng, dense)["config"]["units"] = big
        meta["model"] = _dump(config)
        return "config_size", _pack(entries, meta)
    if choice == 0:
        _, header, data = _split(raw)
        header["__metadata__"] = _pick(rng, JSON_VALUES[:-2])
        return "metadata_type", _join(header, data)
    if choice == 1:
        key = _pick(rng, sorted(meta))
        _, header, data = _split(raw)
        header["__metadata__"][key] = _pick(rng, JSON_VALUES)
        return "metadata_value_type", _join(header, data)
    if choice == 2:
        key = _pick(rng, sorted(meta))
        del meta[key]
        return "metadata_missing", _pack(entries, meta)
    if choice == 3:  # a section that is not JSON, or JSON of another type
        key = _pick(rng, sorted(k for k in meta if k != "fusednn_format"))
        meta[key] = _pick(rng, ["{oops", "", "[]", "null", "1", '"x"', "NaN", "[" * 5000,
                                '{"a": ' + "9" * 5000 + "}", meta[key][:-1]])
        return "section_syntax", _pack(entries, meta)
    if choice == 4:  # a name twice in a section (json.loads keeps the last)
        key = _pick(rng, sorted(k for k in meta if meta[k].startswith("{")))
        obj = json.loads(meta[key])
        first = _pick(rng, sorted(obj))
        meta[key] = "{" + f'"{first}":{_dump(obj[first])},' + meta[key][1:]
        return "section_duplicate_name", _pack(entries, meta)
    if choice == 5:  # a layer class that is not a fd.layers class
        config = json.loads(meta["model"])
        layers = config["config"]["layers"]
        layers[int(rng.integers(0, len(layers)))]["class_name"] = _pick(rng, LAYER_NAMES)
        meta["model"] = _dump(config)
        return "unknown_layer_class", _pack(entries, meta)
    # any node of a section replaced, removed or given a sibling
    key = _pick(rng, sorted(k for k in ("model", "compile", "optimizer_state", "state")
                            if k in meta))
    obj = json.loads(meta[key])
    nodes = []

    def walk(node, path):
        nodes.append(path)
        if isinstance(node, dict):
            for k in node:
                walk(node[k], path + [k])
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, path + [i])

    walk(obj, [])
    path = _pick(rng, nodes[1:])
    parent = obj
    for step in path[:-1]:
        parent = parent[step]
    what = int(rng.integers(0, 4))
    if what == 3 and isinstance(parent, dict):
        del parent[path[-1]]
    elif what == 2 and isinstance(parent, dict):
        parent["unexpected"] = _pick(rng, JSON_VALUES)
    else:
        parent[path[-1]] = _pick(rng, JSON_VALUES)
    meta[key] = json.dumps(obj)
    return f"config_{key}", _pack(entries, meta)


def _tensor_mutation(raw, rng):
    """(kind, file): a valid safetensors file whose tensors do not fit the
    model (checksums recomputed, so the model-level check is what refuses),
    or one laid out differently that still holds the same model."""
    entries, meta = _entries(raw)
    i = int(rng.integers(0, len(entries)))
    name, code, shape, blob = entries[i]
    choice = int(rng.integers(0, 6))
    if choice == 0:
        del entries[i]
        return "tensor_missing", _pack(entries, meta, True)
    if choice == 1:
        extra = _pick(rng, ["extra", "layers.99.vars.0", f"{name}.copy", "optimizer.vars.0.7",
                            "layers.0.vars.9"])
        entries.insert(int(rng.integers(0, len(entries) + 1)), (extra, code, shape, blob))
        return "tensor_extra", _pack(entries, meta, True)
    if choice == 2:  # the other float dtype, same values
        a = np.frombuffer(blob, dtype="<f4" if code == "F32" else "<f8")
        code, a = ("F64", a.astype("<f8")) if code == "F32" else ("F32", a.astype("<f4"))
        entries[i] = (name, code, shape, a.tobytes())
        return "tensor_dtype", _pack(entries, meta, True)
    if choice == 3:  # the same bytes under another shape
        size = int(np.prod(shape))
        entries[i] = (name, code, _pick(rng, [[size], [1, size], shape[::-1] + [1], [size, 1]]),
                      blob)
        return "tensor_shape", _pack(entries, meta, True)
    if choice == 4:  # a weight's bytes changed, checksums recomputed: a valid file
        b = bytearray(blob)
        if b:
            b[int(rng.integers(0, len(b)))] ^= 1 << int(rng.integers(0, 8))
        entries[i] = (name, code, shape, bytes(b))
        return "tensor_bytes_resummed", _pack(entries, meta, True)
    # the data laid out in another order: the same model
    order = rng.permutation(len(entries))
    return "tensor_reordered", _pack([entries[j] for j in order], meta, True)


def _safetensors_mutant(raw, rng, base):
    """One mutated file of a valid safetensors file `raw`: (kind, bytes)."""
    n, _, data = _split(raw)
    size = len(raw)
    kind = _pick(rng, ["truncate_length", "truncate_header", "truncate_data", "flip_random",
                       "flip_length", "flip_header", "flip_data", "length_lie", "header", "header",
                       "header", "header", "meta", "meta", "meta", "tensor", "tensor",
                       "non_utf8", "not_object", "deep"])
    if kind == "truncate_length":
        return kind, raw[:int(rng.integers(0, 8))]
    if kind == "truncate_header":
        return kind, raw[:int(rng.integers(8, 8 + n))]
    if kind == "truncate_data":
        return kind, raw[:int(rng.integers(8 + n, size))] if data else raw[:-1]
    if kind == "flip_random":
        return kind, _flip(raw, 0, size, rng, bits=int(rng.integers(1, 5)))
    if kind == "flip_length":
        return kind, _flip(raw, 0, 8, rng)
    if kind == "flip_header":
        return kind, _flip(raw, 8, 8 + n, rng)
    if kind == "flip_data":
        return kind, _flip(raw, 8 + n, size, rng) if data else _flip(raw, 8, 8 + n, rng)
    if kind == "length_lie":
        lie = _pick(rng, [size, size - 7, size - 8, n + 1, n + 8, n - 1, n - 8, n // 2, 0, 1,
                          2**63 - 1, 2**63, 2**64 - 1, 2**32 + n, 100_000_001,
                          int(rng.integers(0, 2**63))])
        return kind, struct.pack("<Q", lie) + raw[8:]
    if kind == "header":
        return _header_mutation(raw, rng)
    if kind == "meta":
        return _meta_mutation(raw, rng, base)
    if kind == "tensor":
        return _tensor_mutation(raw, rng)
    if kind == "non_utf8":
        out = bytearray(raw)
        at = int(rng.integers(9, 8 + n - 4))
        bad = _pick(rng, [b"\xff", b"\xc0", b"\xed\xa0\x80", b"\x80", b"\xfe\xff"])
        out[at:at + len(bad)] = bad
        return kind, bytes(out)
    if kind == "not_object":
        text = _pick(rng, [b"[]", b"[1,2]", b"1", b'"x"', b"null", b"true", b"  ", b"",
                           b'[{"a": 1}]', b"NaN"])
        return kind, _join(None, data, text=text)
    text = _pick(rng, [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
                       b'{"a":{"dtype":"F32","shape":[' + b"9" * 5000
                       + b'],"data_offsets":[0,0]}}'])
    return "deep_or_huge_json", _join(None, b"", text=text)


# ----------------------------------------------------------- .npz mutations


def _npy(descr, shape, payload, fortran=False, version=1):
    """The bytes of an .npy file with the header given verbatim."""
    hdr = "{'descr': %s, 'fortran_order': %r, 'shape': %s, }" % (
        descr if isinstance(descr, str) and descr.startswith(("[", "'")) else repr(descr),
        fortran, shape if isinstance(shape, str) else repr(tuple(shape)))
    pre = 10 if version == 1 else 12
    hdr += " " * (-(pre + len(hdr) + 1) % 64) + "\n"
    length = struct.pack("<H" if version == 1 else "<I", len(hdr))
    return b"\x93NUMPY" + bytes([version, 0]) + length + hdr.encode("latin1") + payload


def _zip(members, compression=zipfile.ZIP_STORED):
    """An archive of (name, bytes) members, CRCs correct."""
    buf = io.BytesIO()
    with warnings.catch_warnings():  # zipfile's note on a name written twice
        warnings.simplefilter("ignore", UserWarning)
        with zipfile.ZipFile(buf, "w", compression) as z:
            for name, blob in members:
                z.writestr(name, blob)
    return buf.getvalue()


def _arrays(raw):
    with np.load(io.BytesIO(raw), allow_pickle=False) as f:
        return [(k, f[k]) for k in f.files]


BAD_NPY_SHAPES = ["(2000000000,)", "(-1,)", "(2**40,)", "(10**12, 10**12)", "(0, 2**63)",
                  "(1.5,)", "('4',)", "None", "[4]", "(" + "1, " * 70 + ")", "()", "(4, 4, 4)"]
BAD_NPY_DESCRS = ["'|O'", "'<c16'", "'|V8'", "'<U4'", "'|S8'", "[('a', '<f4')]", "'<M8[s]'",
                  "'>f4'", "'<f2'", "'<i4'", "'?'", "'not a dtype'", "42", "'<f4', 'x': 1"]


def _npz_mutant(raw, rng, base):
    """One mutated file of a valid .npz `raw`: (kind, bytes)."""
    size = len(raw)
    kind = _pick(rng, ["truncate", "truncate", "flip_random", "flip_npy_header", "flip_zip",
                       "npy_shape", "npy_descr", "npy_other", "members", "members",
                       "recompressed"])
    if kind == "truncate":
        return kind, raw[:int(rng.integers(0, size))]
    if kind == "flip_random":
        return kind, _flip(raw, 0, size, rng, bits=int(rng.integers(1, 4)))
    if kind == "flip_npy_header":
        starts = [m.start() for m in re.finditer(b"\x93NUMPY", raw)]
        at = _pick(rng, starts)
        return kind, _flip(raw, at, at + 64, rng)
    if kind == "flip_zip":
        starts = [m.start() for m in re.finditer(b"PK(\x03\x04|\x01\x02|\x05\x06)", raw)]
        at = _pick(rng, starts)
        return kind, _flip(raw, at, min(at + 46, size), rng)
    members = _arrays(raw)
    i = int(rng.integers(0, len(members)))
    name, a = members[i]
    blobs = [(f"{k}.npy", _npy(v.dtype.str, v.shape, v.tobytes())) for k, v in members]
    payload = np.ascontiguousarray(a).tobytes()
    if kind == "npy_shape":
        blobs[i] = (blobs[i][0], _npy(a.dtype.str, _pick(rng, BAD_NPY_SHAPES), payload))
        return kind, _zip(blobs)
    if kind == "npy_descr":
        blobs[i] = (blobs[i][0], _npy(_pick(rng, BAD_NPY_DESCRS), a.shape, payload))
        return kind, _zip(blobs)
    if kind == "npy_other":
        choice = int(rng.integers(0, 6))
        if choice == 0:  # a pickle where an array belongs
            blob = pickle.dumps(a)
        elif choice == 1:
            blob = b"\x93NUMPY\x09\x00" + payload
        elif choice == 2:
            blob = _npy(a.dtype.str, a.shape, payload[:-1])
        elif choice == 3:
            blob = _npy(a.dtype.str, a.shape, payload + b"\x00" * 4)
        elif choice == 4:  # a header length beyond the member
            blob = b"\x93NUMPY\x01\x00" + struct.pack("<H", 65535) + payload
        else:
            blob = b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**31) + payload
        blobs[i] = (blobs[i][0], blob)
        return kind, _zip(blobs)
    if kind == "members":
        choice = int(rng.integers(0, 6))
        if choice == 0:
            del blobs[i]
        elif choice == 1:
            blobs.append((f"weight_{len(blobs)}.npy", blobs[i][1]))
        elif choice == 2:
            blobs[i] = (_pick(rng, ["weight_x.npy", "w.npy", "weight_0", "../weight_0.npy",
                                    f"weight_{i}.pkl", "weight_00.npy"]), blobs[i][1])
        elif choice == 3:  # the arrays of two weights swapped: shapes no longer fit
            j = int(rng.integers(0, len(blobs)))
            blobs[i], blobs[j] = (blobs[i][0], blobs[j][1]), (blobs[j][0], blobs[i][1])
        elif choice == 4:  # the same name twice
            blobs.append(blobs[i])
        else:
            blobs[i] = (blobs[i][0], _npy(a.dtype.str, (a.size,) if a.ndim > 1 else (1, a.size),
                                          payload))
        return f"members_{['missing', 'extra', 'renamed', 'swapped', 'twice', 'shape'][choice]}", \
            _zip(blobs)
    # the same arrays in another valid form: compressed, Fortran order, version 2
    choice = int(rng.integers(0, 3))
    if choice == 0:
        return "valid_deflated", _zip(blobs, zipfile.ZIP_DEFLATED)
    if choice == 1:
        f = np.asfortranarray(a)
        blobs[i] = (blobs[i][0], _npy(a.dtype.str, a.shape, f.tobytes(order="F"), fortran=True))
        return "valid_fortran", _zip(blobs)
    blobs[i] = (blobs[i][0], _npy(a.dtype.str, a.shape, payload, version=2))
    return "valid_npy_v2", _zip(blobs)


# ------------------------------------------------------------------ outcomes


def _still_works(model):
    """A loaded model predicts and, compiled, trains a step."""
    x, y = _data()
    x = x.astype(model.layers[0].kernel.dtype)
    assert model.predict(x, verbose=0).shape[0] == len(x)
    if model.optimizer is not None:
        units = model.layers[-1].units
        target = (y % units) if model.loss == "sparse_categorical_crossentropy" else \
            np.ones((len(x), units), dtype=x.dtype)
        model.fit(x, target, epochs=1, batch_size=len(x), verbose=0)


def _same_model(a, b):
    if a.get_config() != b.get_config():
        return False
    wa, wb = a.get_weights(), b.get_weights()
    if len(wa) != len(wb) or not all(u.dtype == v.dtype and np.array_equal(u, v)
                                     for u, v in zip(wa, wb)):
        return False
    if a.get_state() != b.get_state():
        return False
    if (a.optimizer is None) != (b.optimizer is None):
        return False
    if a.optimizer is None:
        return True
    if a.optimizer.get_config() != b.optimizer.get_config():
        return False
    sa, sb = a.optimizer.get_state(), b.optimizer.get_state()
    if sa["iterations"] != sb["iterations"] or (sa["slots"] is None) != (sb["slots"] is None):
        return False
    return all((u is None and v is None) or np.array_equal(u, v)
               for ra, rb in zip(sa["slots"] or [], sb["slots"] or []) for u, v in zip(ra, rb))


def _check_loaded_model(model, raw):
    """The loaded weights are the bytes in the file, tensor by tensor."""
    tensors = _tensors_by_hand(raw)
    for i, layer in enumerate(model.layers):
        for j, w in enumerate(layer.get_weights()):
            t = tensors[f"layers.{i}.vars.{j}"]
            assert w.dtype == t.dtype and np.array_equal(w, t, equal_nan=True), (i, j)


def _load(base, path):
    """Load `path` as `base` was written; the loaded model."""
    if base.npz:
        model = base.fresh()
        fd.callbacks.load_weights(model, path)
        return model
    return fd.models.load(path)


def _attempt(base, path):
    """(model, None) or (None, the ValueError) of loading `path`, with the
    peak of memory allocated meanwhile (tracemalloc, which sees NumPy's
    buffers too)."""
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    try:
        with _deadline(10, f"loading {path}"):
            result = _load(base, path), None
    except ValueError as e:
        result = None, e
    return result, tracemalloc.get_traced_memory()[1] - before


def _classify(base, path, raw, model, error):
    """'refused', 'loaded_equal' or 'loaded_changed' (checked: the weights
    are the file's bytes; a changed model still predicts and trains)."""
    if error is not None:
        assert str(path) in str(error), f"the error does not name the file: {error}"
        return "refused"
    if base.npz:
        if all(np.array_equal(u, v) for u, v in zip(model.get_weights(),
                                                    base.model.get_weights())):
            return "loaded_equal"
        arrays = dict(_arrays(raw))
        for i, w in enumerate(model.get_weights()):
            assert np.array_equal(w, arrays[f"weight_{i}"].astype(w.dtype), equal_nan=True), i
        return "loaded_changed"
    if _same_model(model, base.model):
        return "loaded_equal"
    _check_loaded_model(model, raw)
    _still_works(model)
    return "loaded_changed"


@contextlib.contextmanager
def _deadline(seconds, what):
    """A TimeoutError after `seconds` (SIGALRM, where there is one), so a
    hang fails the test instead of stalling it."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def fire(*_):
        raise TimeoutError(f"{what}: still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture
def no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a loader tried to unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)


def _memory_bound(size):
    """What loading a file of `size` bytes may allocate: a few copies of it
    plus the fixed cost of a model (layers, optimizer, plan: about 250 kB
    alone, up to about 700 kB after other tests in the same process), far
    below what a lying size field claims (GBs)."""
    return 4 * size + 2**21


# files per valid file: 2,600 in all, about 30 s with tracemalloc on
FUZZ_COUNTS = {"bn_adam_f32": 650, "prelu_f64": 500, "ckpt_nadam_f64": 600, "ckpt_npz_f32": 480,
               "weights_npz_f64": 370}


def test_mutated_files_load_what_they_hold_or_are_refused(bases, tmp_path, no_unpickling,
                                                          capsys):
    counts = Counter()
    worst = 0.0
    tracemalloc.start()
    try:
        for k, base in enumerate(bases):
            rng = np.random.default_rng([19, k])
            mutant = _npz_mutant if base.npz else _safetensors_mutant
            for i in range(FUZZ_COUNTS[base.name]):
                kind, raw = mutant(base.raw, rng, base)
                path = tmp_path / f"{base.name}-{i:04d}-{kind}{base.path.suffix}"
                path.write_bytes(raw)
                where = f"{base.name} mutant {i} ({kind}, {path})"
                start = time.perf_counter()
                try:
                    (model, error), peak = _attempt(base, path)
                except Exception as e:  # anything but the ValueError of a refusal
                    raise AssertionError(f"{where}: {type(e).__name__}: {e}") from e
                worst = max(worst, time.perf_counter() - start)
                assert peak <= _memory_bound(len(raw)), \
                    f"{where}: loading allocated {peak} bytes for a file of {len(raw)}"
                outcome = _classify(base, path, raw, model, error)
                counts[kind, outcome] += 1
                path.unlink()  # what is left after a failure is the file that failed
    finally:
        tracemalloc.stop()
    kinds = sorted({kind for kind, _ in counts})
    outcomes = ("refused", "loaded_equal", "loaded_changed")
    total = {o: sum(counts[k, o] for k in kinds) for o in outcomes}
    with capsys.disabled():
        print(f"\n{'mutation':26} {'files':>6} " + " ".join(f"{o:>14}" for o in outcomes))
        for kind in kinds:
            row = [counts[kind, o] for o in outcomes]
            print(f"{kind:26} {sum(row):6} " + " ".join(f"{n:14}" for n in row))
        print(f"{'all':26} {sum(total.values()):6} " +
              " ".join(f"{total[o]:14}" for o in outcomes) + f"   slowest load {worst:.3f} s")
    assert sum(total.values()) == sum(FUZZ_COUNTS.values())
    assert total["refused"] >= 2000
    assert worst < 2.0
    # the valid variants load as the original (a check on the oracle itself)
    for kind in ("tensor_reordered", "valid_deflated", "valid_fortran", "valid_npy_v2"):
        assert counts[kind, "loaded_equal"] > 0 and counts[kind, "refused"] == 0, kind
    for kind in ("truncate_length", "truncate_header", "truncate_data", "truncate", "length_lie",
                 "duplicate_name", "non_utf8", "not_object", "deep_or_huge_json", "config_size",
                 "tensor_missing", "tensor_extra", "tensor_dtype", "header_dtype",
                 "header_offsets_type", "header_offsets_range", "header_dtype_size",
                 "header_shape_size", "section_duplicate_name", "unknown_layer_class",
                 "npy_shape", "members_missing", "members_extra", "members_renamed",
                 "members_twice", "members_shape"):
        assert counts[kind, "refused"] > 0 and counts[kind, "loaded_equal"] + \
            counts[kind, "loaded_changed"] == 0, kind


# ------------------------------------------------------------ targeted tests


def _base(bases, name):
    return next(b for b in bases if b.name == name)


def _refused(load, path, match):
    """The message of the ValueError `load(path)` raises; it names the file."""
    with _deadline(10, f"loading {path}"), pytest.raises(ValueError, match=match) as e:
        load(path)
    assert str(path) in str(e.value)
    return str(e.value)


def _edited(raw, edit):
    """`raw` with its header edited in place by `edit(header)` (the data kept)."""
    _, header, data = _split(raw)
    edit(header)
    return _join(header, data)


def _write(tmp_path, raw, name="m.safetensors"):
    path = tmp_path / name
    path.write_bytes(raw)
    return path


def test_a_file_cut_anywhere_is_refused_naming_the_region(bases, tmp_path):
    base = _base(bases, "bn_adam_f32")
    raw = base.raw
    n = _split(raw)[0]
    for cut in [*range(0, 72), *range(72, 8 + n + 16, 13), *range(8 + n - 8, len(raw), 5)]:
        path = _write(tmp_path, raw[:cut])
        if cut < 8:
            match = rf"truncated: {cut} bytes, fewer than the 8-byte header length"
        elif cut < 8 + n:
            match = rf"bad header length {n}: 8 \+ header length exceeds the file size {cut}"
        else:
            match = r"tensor '[a-z0-9.]+': data_offsets \[\d+, \d+\] out of range"
        _refused(fd.models.load, path, match)
        _refused(saving.load_file, path, match)
    npz = _base(bases, "ckpt_npz_f32")
    for cut in range(0, len(npz.raw), 5):
        _refused(lambda p: fd.callbacks.load_weights(npz.fresh(), p),
                 _write(tmp_path, npz.raw[:cut], "w.npz"), "is not a weights file written by")


@pytest.mark.parametrize("lie", [2**63 - 1, 2**63, 2**64 - 1, 2**32, 100_000_001, "size - 7"])
def test_a_header_length_beyond_the_file_is_refused_before_reading(bases, tmp_path, lie):
    raw = _base(bases, "prelu_f64").raw
    lie = len(raw) - 7 if lie == "size - 7" else lie
    path = _write(tmp_path, struct.pack("<Q", lie) + raw[8:])
    tracemalloc.start()
    try:
        msg = _refused(fd.models.load, path,
                       rf"bad header length {lie}: 8 \+ header length exceeds the file size "
                       rf"{len(raw)} \(truncated, or not a safetensors file\)")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < _memory_bound(len(raw)), msg


def test_a_header_length_shorter_than_the_header_is_refused(bases, tmp_path):
    raw = _base(bases, "prelu_f64").raw
    n = _split(raw)[0]
    for short in (n - 1, n - 8, n // 2, 1, 0):
        path = _write(tmp_path, struct.pack("<Q", short) + raw[8:])
        _refused(fd.models.load, path, r"the header is not UTF-8 JSON|belong to no tensor")


def test_the_header_length_limit(tmp_path):
    """Above 100 MB the header is refused without being read, as safetensors does."""
    path = tmp_path / "big.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", 100_000_001))
        f.truncate(8 + 100_000_001)  # sparse: no disk, and never read
    _refused(saving.load_file, path, r"bad header length 100000001: above the limit of "
                                     r"100000000 bytes")


NAME = "layers.0.vars.1"  # the first Dense's bias


@pytest.mark.parametrize("field,value,match", [
    ("data_offsets", ["0", 24], r"data_offsets \['0', 24\] out of range: expected \[begin, end\]"),
    ("data_offsets", [0.0, 24.0], r"data_offsets \[0.0, 24.0\] out of range"),
    ("data_offsets", [-24, 0], r"data_offsets \[-24, 0\] out of range"),
    ("data_offsets", [True, 24], r"data_offsets \[True, 24\] out of range"),
    ("data_offsets", [48, 24], r"data_offsets \[48, 24\] out of range"),  # begin > end
    ("data_offsets", [0, 10**6], r"data_offsets \[0, 1000000\] out of range: .* <= 448 \(the "
                                 r"data's size\)"),  # past the end
    ("data_offsets", [0, 2**64], r"data_offsets \[0, 18446744073709551616\] out of range"),
    ("data_offsets", [24], r"data_offsets \[24\] out of range"),
    ("data_offsets", None, r"data_offsets None out of range"),
    ("dtype", "BF16", r"unknown or unsupported dtype 'BF16'; supported: F64, F32"),
    ("dtype", "float32", r"unknown or unsupported dtype 'float32'"),
    ("dtype", 7, r"unknown or unsupported dtype 7"),
    ("dtype", "F32", r"shape \[6\] of F32 needs 24 bytes, data_offsets \[\d+, \d+\] hold 48"),
    ("shape", [-6], r"shape must be a list of ints >= 0 .*, got \[-6\]"),
    ("shape", [6.0], r"shape must be a list of ints >= 0 .*, got \[6.0\]"),
    ("shape", ["6"], r"shape must be a list of ints >= 0"),
    ("shape", "6", r"shape must be a list of ints >= 0"),
    ("shape", [0, 2**62, 2**62], r"shape must be a list of ints >= 0 \(at most 64, the nonzero ones' "
                                 r"product times the item size below 2\*\*63\), got \[0, 46"),
    ("shape", [0] * 65, r"shape must be a list of ints >= 0 \(at most 64"),
    ("shape", [2**40, 2**40], r"shape must be .*, got \[1099511627776, 1099511627776\]"),
    ("shape", [2**20, 2**20], r"shape \[1048576, 1048576\] of F64 needs 8796093022208 bytes"),
    ("shape", [7], r"shape \[7\] of F64 needs 56 bytes, data_offsets \[\d+, \d+\] hold 48"),
])
def test_a_header_entry_of_the_wrong_type_or_range_is_refused(bases, tmp_path, field, value,
                                                              match):
    raw = _base(bases, "prelu_f64").raw  # float64: the bias is 6 x 8 bytes
    begin = _split(raw)[1][NAME]["data_offsets"][0]
    if field == "data_offsets" and isinstance(value, list) and len(value) == 2 and \
            all(type(v) is int for v in value) and value[1] < 10**6 and value[0] >= 0:
        value = [v + begin for v in value]  # relative to the tensor's own place
        match = re.sub(r"\\\[\d+, \d+\\\]", re.escape(str(value)), match, count=1)

    def edit(header):
        header[NAME][field] = value

    path = _write(tmp_path, _edited(raw, edit))
    for load in (saving.load_file, fd.models.load):
        _refused(load, path, rf"is not a valid safetensors file: tensor '{re.escape(NAME)}': "
                             rf"{match}")


def test_overlapping_and_uncovered_data_are_refused_and_any_order_is_valid(bases, tmp_path):
    base = _base(bases, "prelu_f64")
    header = _split(base.raw)[1]
    kernel = header["layers.0.vars.0"]["data_offsets"]

    def overlap(h):  # the bias moved 8 bytes into the kernel, the rest of the data kept
        b, e = h[NAME]["data_offsets"]
        h[NAME]["data_offsets"] = [b - 8, e - 8]

    _refused(fd.models.load, _write(tmp_path, _edited(base.raw, overlap)),
             rf"tensor '{re.escape(NAME)}': data_offsets \[{kernel[1] - 8}, \d+\] overlap the "
             rf"previous tensor, which ends at {kernel[1]}")

    def gap(h):
        del h["layers.1.vars.0"]

    _refused(fd.models.load, _write(tmp_path, _edited(base.raw, gap)),
             r"bytes \[\d+, \d+\) of the data belong to no tensor")
    # the data in the reverse order of the header: valid safetensors, the same model
    entries, meta = _entries(base.raw)
    path = _write(tmp_path, _pack(entries[::-1], meta))
    assert _same_model(fd.models.load(path), base.model)


def test_a_name_given_twice_is_refused(bases, tmp_path):
    """json.loads keeps the last of two equal names; the readers refuse them,
    in the header, in __metadata__ and in each JSON section of it."""
    raw = _base(bases, "bn_adam_f32").raw
    _, header, data = _split(raw)
    text = _dump(header)
    twice = '{"%s":%s,' % (NAME, _dump(header[NAME])) + text[1:]
    path = _write(tmp_path, _join(None, data, text=twice.encode()))
    _refused(saving.load_file, path, rf"the header names '{re.escape(NAME)}' twice in one object")
    meta = header["__metadata__"]
    twice = text.replace('"__metadata__":{', '"__metadata__":{"model":"{}",', 1)
    path = _write(tmp_path, _join(None, data, text=twice.encode()))
    _refused(fd.models.load, path, r"the header names 'model' twice in one object")
    config = meta["model"]
    for key, value in (("model", '{"class_name": "Sequential", ' + config[1:]),
                       ("state", '{"layers": [], ' + meta["state"][1:]),
                       ("tensor_crc32", '{"layers.0.vars.0": "00000000", '
                                        + meta["tensor_crc32"][1:])):
        entries, m = _entries(raw)
        path = _write(tmp_path, _pack(entries, {**m, key: value}))
        _refused(fd.models.load, path, rf"metadata '{key}' names '[a-z_.0-9]+' twice in one object")


def test_tensors_that_do_not_fit_the_config_are_refused(bases, tmp_path):
    raw = _base(bases, "bn_adam_f32").raw
    entries, meta = _entries(raw)
    by_name = {e[0]: e for e in entries}

    def replaced(name, code, shape, blob):
        return _pack([(name, code, shape, blob) if e[0] == name else e for e in entries], meta,
                     True)

    _, _, shape, blob = by_name["layers.0.vars.0"]
    as64 = np.frombuffer(blob, "<f4").astype("<f8").tobytes()
    cases = [
        (replaced("layers.0.vars.0", "F64", shape, as64),
         r"tensor 'layers.0.vars.0' is \(5, 8\) float64, layer d0 needs \(5, 8\) float32"),
        (replaced("layers.0.vars.0", "F32", shape[::-1], blob),
         r"tensor 'layers.0.vars.0' is \(8, 5\) float32, layer d0 needs \(5, 8\) float32"),
        (replaced("optimizer.vars.0.1", "F32", [40], by_name["optimizer.vars.0.1"][3]),
         r"tensor 'optimizer.vars.0.1' is \(40,\) float32, the weight is \(5, 8\) float32"),
        (_pack([e for e in entries if e[0] != "layers.1.vars.3"], meta, True),
         r"missing tensor 'layers.1.vars.3' \(weight 3 of layer 1, bn\)"),
        (_pack([e for e in entries if e[0] != "optimizer.vars.2.0"], meta, True),
         r"missing tensor 'optimizer.vars.2.0' \(optimizer slot 0 of weight 2\)"),
        (_pack(entries + [("layers.3.vars.2", "F32", [3], bytes(12))], meta, True),
         r"unexpected tensors \['layers.3.vars.2'\]"),
    ]
    for i, (raw_i, match) in enumerate(cases):
        _refused(fd.models.load, _write(tmp_path, raw_i, f"{i}.safetensors"), match)


def _section_edit(key, edit):
    def apply(meta):
        obj = json.loads(meta[key])
        edit(obj)
        meta[key] = json.dumps(obj)
    return apply


@pytest.mark.parametrize("edit,match", [
    (lambda m: m.clear() or m.update(__metadata__=None), r"no 'model' entry|fusednn_format"),
    (lambda m: m.update(model="null"), r"metadata 'model' must hold a JSON object, got None"),
    (lambda m: m.update(model="[1, 2]"), r"metadata 'model' must hold a JSON object, got \[1, 2\]"),
    (lambda m: m.update(state='"x"'), r"metadata 'state' must hold a JSON object, got 'x'"),
    (lambda m: m.update(tensor_crc32="null"), r"metadata 'tensor_crc32' must hold a JSON object"),
    (lambda m: m.update(compile="{oops"), r"metadata 'compile' is not valid JSON: Expecting"),
    (lambda m: m.update(model="[" * 100_000), r"metadata 'model' is not valid JSON: nested too"),
    (lambda m: m.update(model='{"a": ' + "1" * 5000 + "}"),
     r"metadata 'model' is not valid JSON: Exceeds the limit \(4300 digits\)"),
    (lambda m: m.update(fusednn_format="2"), r"metadata 'fusednn_format' is '2', expected '1'"),
    (_section_edit("model", lambda c: c.update(class_name="Functional")),
     r"the model config must be \{'class_name': 'Sequential'"),
    (_section_edit("model", lambda c: c["build_config"].update(input_dim="5")),
     r"build_config must be \{'input_dim': int"),
    (_section_edit("model", lambda c: c["build_config"].update(dtype="float16")),
     r"build_config must be \{'input_dim': int, 'dtype': 'float32' or 'float64'\}"),
    (_section_edit("model", lambda c: c["config"].update(layers={"a": 1})),
     r"cannot rebuild the model from its config: .*'layers' must be a list"),
    (_section_edit("model", lambda c: c["config"]["layers"][0]["config"].update(units="8")),
     r"cannot rebuild the model from its config: .*units must be an int"),
    (_section_edit("model", lambda c: c["config"]["layers"][1]["config"].update(momentum=[1])),
     r"cannot rebuild the model from its config: .*momentum"),
    (_section_edit("compile", lambda c: c["optimizer"].update(class_name="Lion")),
     r"the optimizer must be \{'class_name': one of \['Adagrad'"),
    (_section_edit("compile", lambda c: c["optimizer"]["config"].update(beta_1="0.9")),
     r"cannot rebuild the optimizer Adam: .*beta_1"),
    (_section_edit("compile", lambda c: c.update(loss=7)),
     r"cannot compile the model from the saved compile config"),
    (_section_edit("optimizer_state", lambda c: c.update(iterations=-1)),
     r"cannot restore the optimizer state: .*iterations must be an int >= 0, got -1"),
    (_section_edit("optimizer_state", lambda c: c.update(slots=[[True, True]])),
     r"the optimizer state has slots for 1 weights, the model has 6 trainable weights"),
    (_section_edit("optimizer_state", lambda c: c["slots"].__setitem__(0, [1, 1])),
     r"optimizer slots of weight 0 must be a list of bools, got \[1, 1\]"),
    (_section_edit("optimizer_state", lambda c: c.update(extra=[])),
     r"optimizer_state must be \{'iterations', 'slots', 'extra'\}"),
    (_section_edit("state", lambda c: c.update(layers=c["layers"][:2])),
     r"cannot restore the layers' state: .*one state per layer \(4\)"),
    (_section_edit("state", lambda c: c["layers"][2].update(step="3")),
     r"cannot restore the layers' state: .*step must be an int in \[0, 2\*\*64\), got '3'"),
    (_section_edit("state", lambda c: c.update(shuffle_rng={"bit_generator": "PCG64"})),
     r"cannot restore the layers' state: .*shuffle_rng"),
])
def test_metadata_and_configs_of_the_wrong_type_are_refused(bases, tmp_path, edit, match):
    entries, meta = _entries(_base(bases, "bn_adam_f32").raw)
    edit(meta)
    if "__metadata__" in meta:
        meta = None
    _refused(fd.models.load, _write(tmp_path, _pack(entries, meta)), match)


@pytest.mark.parametrize("value,match", [
    ([], r"__metadata__ is a JSON array; it must be an object of str -> str"),
    ("x", r"__metadata__ is a JSON string"),
    ({"model": 1}, r"__metadata__\['model'\] is a JSON number; the metadata must be an object "
                   r"of str -> str"),
    ({"model": {"class_name": "Sequential"}}, r"__metadata__\['model'\] is a JSON object"),
])
def test_metadata_that_is_not_str_to_str_is_refused(bases, tmp_path, value, match):
    raw = _edited(_base(bases, "prelu_f64").raw, lambda h: h.update(__metadata__=value))
    _refused(saving.load_file, _write(tmp_path, raw), match)


@pytest.mark.parametrize("name", ["os.system", "Conv2D", "Layer", "Input", "__import__",
                                  "Sequential", "dense", ""])
def test_a_config_naming_an_unknown_layer_class_is_refused(bases, tmp_path, name):
    entries, meta = _entries(_base(bases, "ckpt_nadam_f64").raw)
    config = json.loads(meta["model"])
    config["config"]["layers"][2]["class_name"] = name
    meta["model"] = json.dumps(config)
    _refused(fd.models.load, _write(tmp_path, _pack(entries, meta)),
             rf"layers\[2\] has the unknown layer class '{re.escape(name)}'; expected one of "
             rf"\['Activation'")


@pytest.mark.parametrize("text,match", [
    (b"[]", "the header is a JSON array, expected an object"),
    (b"[1, 2]", "the header is a JSON array"),
    (b"7", "the header is a JSON number"),
    (b'"x"', "the header is a JSON string"),
    (b"null", "the header is a JSON null"),
    (b"true", "the header is a JSON boolean"),
    (b"", "the header is not UTF-8 JSON: Expecting value"),
    (b'{"a": NaN}', "tensor 'a': the entry is a JSON number, expected an object"),
    (b'{"a": 1}\xff', "the header is not UTF-8 JSON: 'utf-8' codec can't decode byte 0xff"),
    (b'{"\xed\xa0\x80": 1}', "the header is not UTF-8 JSON: 'utf-8' codec can't decode"),
    (b'{"a": "\xc0\xaf"}', "the header is not UTF-8 JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "the header is not UTF-8 JSON: nested too deeply"),
    (b'{"a": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 0]}}',
     r"the header is not UTF-8 JSON: Exceeds the limit \(4300 digits\)"),
])
def test_a_header_that_is_not_a_utf8_json_object_is_refused(tmp_path, text, match):
    path = _write(tmp_path, _join(None, b"", text=text))
    for load in (saving.load_file, fd.models.load):
        _refused(load, path, rf"is not a valid safetensors file: {match}")


def test_non_utf8_bytes_inside_a_model_header_are_refused(bases, tmp_path):
    raw = _base(bases, "bn_adam_f32").raw
    n = _split(raw)[0]
    at = raw.index(b"units")
    for bad in (b"\xff", b"\x80", b"\xc3", b"\xed\xa0\x80"):
        mutated = raw[:at + 1] + bad + raw[at + 1 + len(bad):]
        assert len(mutated) == len(raw) and _split(raw)[0] == n
        _refused(fd.models.load, _write(tmp_path, mutated), r"the header is not UTF-8 JSON: "
                                                            r"'utf-8' codec can't decode")


def _peak_while(fn):
    """fn()'s exception (or None) and the peak memory it allocated."""
    tracemalloc.start()
    try:
        try:
            fn()
            error = None
        except ValueError as e:
            error = e
        return error, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_sizes_are_checked_against_the_file_before_allocating(bases, tmp_path):
    """Files that claim gigabytes (a config width, a shape with a zero, an
    .npy header, a zip member's size) are refused within a few times their
    own size of memory; before the checks, the config width made
    fd.models.load build a (10**9, 8) kernel and np.load allocate 8 GB."""
    raw = _base(bases, "bn_adam_f32").raw
    entries, meta = _entries(raw)
    claims = {}
    for where, big in (("input_dim", 10**9), ("units", 10**9), ("input_dim", 2**63 - 1)):
        config = json.loads(meta["model"])
        if where == "input_dim":
            config["build_config"]["input_dim"] = big
        else:
            config["config"]["layers"][3]["config"]["units"] = big
        claims[f"config {where}={big}"] = (fd.models.load, _pack(entries, {**meta, "model":
                                                                            json.dumps(config)}),
                                           r"tensor 'layers\.[03]\.vars\.0' is \(\d+, \d+\) "
                                           r"float32, layer d[01] needs \(\d+, \d+\) float32")
    claims["header shape [0, 2**62, 2**62]"] = (
        saving.load_file,
        _edited(raw, lambda h: h["layers.0.vars.1"].update(shape=[0, 2**62, 2**62])),
        r"shape must be a list of ints")
    npz = _base(bases, "ckpt_npz_f32")
    members = _arrays(npz.raw)
    blobs = [(f"{k}.npy", _npy(v.dtype.str, v.shape, v.tobytes())) for k, v in members]
    lying = list(blobs)
    lying[0] = (lying[0][0], _npy("<f4", (2_000_000_000,), b""))
    claims["npy shape (2e9,)"] = (lambda p: fd.callbacks.load_weights(npz.fresh(), p),
                                  _zip(lying), r"member 'weight_0.npy': shape \(2000000000,\) of "
                                               r"float32 needs 8000000000 bytes")
    deflated = bytearray(_zip(blobs, zipfile.ZIP_DEFLATED))
    for sig, field in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # uncompressed size fields
        at = deflated.index(sig)
        deflated[at + field:at + field + 4] = struct.pack("<I", 4_000_000_000)
    claims["zip member of 4e9 bytes"] = (lambda p: fd.callbacks.load_weights(npz.fresh(), p),
                                         bytes(deflated), r"member 'weight_0.npy' claims "
                                                          r"4000000000 bytes")
    for what, (load, blob, match) in claims.items():
        path = _write(tmp_path, blob)
        error, peak = _peak_while(lambda: load(path))
        assert error is not None and re.search(match, str(error)), (what, error)
        assert peak < _memory_bound(len(blob)), (what, peak, len(blob))


def test_a_pickle_is_never_loaded(bases, tmp_path, no_unpickling):
    npz = _base(bases, "weights_npz_f64")
    members = _arrays(npz.raw)
    blobs = [(f"{k}.npy", _npy(v.dtype.str, v.shape, v.tobytes())) for k, v in members]
    blobs[1] = (blobs[1][0], pickle.dumps(members[1][1]))
    _refused(lambda p: fd.callbacks.load_weights(npz.fresh(), p), _write(tmp_path, _zip(blobs)),
             r"member 'weight_1.npy' is a pickle, which is never loaded")
    obj = tmp_path / "obj.npz"
    np.savez(obj, weight_0=np.array([{"a": 1}] * 30, dtype=object), weight_1=np.zeros(6),
             weight_2=np.zeros(6), weight_3=np.zeros((6, 2)), weight_4=np.zeros(2))
    _refused(lambda p: fd.callbacks.load_weights(npz.fresh(), p), obj,
             r"member 'weight_0.npy' has dtype object, expected a real number array")


@pytest.mark.parametrize("kind", ["deflated", "fortran", "v2", "int"])
def test_valid_npz_variants_load(bases, tmp_path, kind):
    """What np.savez / np.savez_compressed may write loads: deflated members,
    Fortran order, .npy format 2.0, integer arrays (cast)."""
    npz = _base(bases, "weights_npz_f64")
    members = _arrays(npz.raw)
    want = [v for _, v in members]
    blobs = []
    for k, v in members:
        if kind == "fortran":
            blob = _npy(v.dtype.str, v.shape, np.asfortranarray(v).tobytes("F"), fortran=True)
        elif kind == "int":
            v = np.round(v * 100).astype("<i8")
            want[len(blobs)] = v.astype(np.float64)
            blob = _npy(v.dtype.str, v.shape, v.tobytes())
        else:
            blob = _npy(v.dtype.str, v.shape, v.tobytes(), version=2 if kind == "v2" else 1)
        blobs.append((f"{k}.npy", blob))
    path = _write(tmp_path, _zip(blobs, zipfile.ZIP_DEFLATED if kind == "deflated"
                                 else zipfile.ZIP_STORED), "w.npz")
    model = npz.fresh()
    fd.callbacks.load_weights(model, path)
    for a, b in zip(model.get_weights(), want):
        assert np.array_equal(a, b)


def test_npz_members_that_do_not_fit_are_refused(bases, tmp_path):
    npz = _base(bases, "ckpt_npz_f32")
    members = _arrays(npz.raw)
    blobs = [(f"{k}.npy", _npy(v.dtype.str, v.shape, v.tobytes())) for k, v in members]
    load = lambda p: fd.callbacks.load_weights(npz.fresh(), p)  # noqa: E731
    cases = [
        (blobs + [blobs[0]], r"the archive holds \['weight_0.npy'\] more than once"),
        (blobs[:-1], r"load_weights: .*: the file holds 7 weights, the model has 8"),
        (blobs + [("weight_8.npy", blobs[0][1])], r"the file holds 9 weights, the model has 8"),
        ([("weight_0", blobs[0][1])] + blobs[1:], r"expected the members \['weight_0.npy'"),
        ([blobs[1]] + [(blobs[0][0], blobs[1][1])] + blobs[2:],
         r"load_weights: .*: weight 0 has shape \(4,\), the model's has \(5, 4\)"),
        ([(blobs[0][0], b"\x93NUMPY\x09\x00" + bytes(20))] + blobs[1:],
         r"member 'weight_0.npy': .npy format version \(9, 0\)"),
        ([(blobs[0][0], b"\x93NUMPY\x01\x00" + struct.pack("<H", 65535))] + blobs[1:],
         r"member 'weight_0.npy': .npy header length 65535 exceeds the member size"),
        ([(blobs[0][0], _npy("<f4", (5, 4), bytes(79)))] + blobs[1:],
         r"needs 80 bytes after its header, the member holds 79"),
        ([(blobs[0][0], _npy("<f4", "(5, -4)", bytes(80)))] + blobs[1:],
         r"shape \(5, -4\) is not at most 64 ints >= 0"),
        ([(blobs[0][0], _npy("<c8", (5, 4), bytes(160)))] + blobs[1:],
         r"has dtype complex64, expected a real number array"),
        ([(blobs[0][0], _npy("'not a dtype'", (5, 4), bytes(80)))] + blobs[1:],
         r"member 'weight_0.npy': bad .npy header: descr is not a valid dtype descriptor"),
    ]
    for i, (members_i, match) in enumerate(cases):
        _refused(load, _write(tmp_path, _zip(members_i), f"{i}.npz"), match)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    _refused(load, single, r"it holds a single array \(an .npy file\), not a weights .npz")
    _refused(load, _base(bases, "bn_adam_f32").path, r"BadZipFile: File is not a zip file")
    _refused(fd.models.load, npz.path, r"is not a valid safetensors file")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_without_blocking(bases, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    npz = _base(bases, "ckpt_npz_f32")
    _refused(saving.load_file, fifo, r"not a regular file")
    _refused(fd.models.load, fifo, r"not a regular file")
    _refused(lambda p: fd.callbacks.load_weights(npz.fresh(), p), fifo, r"not a regular file")


def test_every_layer_class_declares_its_weight_shapes_before_it_is_built():
    """fd.models.load checks the weights' shapes against the file before it
    builds the model (which allocates them); a layer class added without
    its shapes in fusednn.saving.model._weight_shapes fails here."""
    from fusednn.saving.model import _weight_shapes

    layers = [L.Dense(3), L.Dense(3, use_bias=False), L.Activation("relu"), L.LeakyReLU(),
              L.ELU(), L.PReLU(), L.RReLU(), L.BatchNormalization(),
              L.BatchNormalization(scale=False), L.BatchNormalization(center=False, scale=False),
              L.Dropout(0.1), L.AlphaDropout(0.1)]
    assert {type(la).__name__ for la in layers} == set(L.__all__) - {"Layer", "Input"}
    for layer in layers:
        shapes = _weight_shapes(layer, 5)
        layer.build(5)
        assert shapes == [w.shape for w in layer.weights], layer


def test_a_state_counter_beyond_64_bits_is_refused(bases, tmp_path):
    """Dropout.set_state takes any int step, the kernels only steps below
    2**64: fd.models.load refuses the file rather than fail at the first fit."""
    entries, meta = _entries(_base(bases, "bn_adam_f32").raw)
    state = json.loads(meta["state"])
    state["layers"][2]["step"] = 2**64
    path = _write(tmp_path, _pack(entries, {**meta, "state": json.dumps(state)}))
    _refused(fd.models.load, path, r"cannot restore the layers' state: layer 2's step is "
                                   r"18446744073709551616, a counter must be below 2\*\*64")
