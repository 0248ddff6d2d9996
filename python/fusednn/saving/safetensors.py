"""The safetensors format, read and written here (no pickles, no fusednn imports).

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

``save_file(tensors, path, metadata)`` / ``load_file(path)`` have the names
and arguments of ``safetensors.numpy``.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
import zlib

import numpy as np

__all__ = ["save_file", "load_file", "atomic_write", "check_path", "crc32"]

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
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{caller}: path must be a str or os.PathLike, got "
                        f"{type(path).__name__} {path!r}")
    path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise ValueError(f"{caller}: path must be a non-empty path, got {path!r}")
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
        if not isinstance(shape, list) or not all(is_count(s) for s in shape):
            raise bad(f"tensor {name!r}: shape must be a list of ints >= 0, got {shape!r}")
        if not isinstance(offsets, list) or len(offsets) != 2 or \
                not all(is_count(o) for o in offsets) or offsets[0] > offsets[1] or \
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


def crc32(a) -> str:
    """CRC32 of `a`'s stored bytes, as 8 hex digits."""
    return f"{zlib.crc32(_stored(a)):08x}"


def is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0
