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
import stat
import struct
import tempfile
import zlib

import numpy as np

__all__ = ["save_file", "load_file", "atomic_write", "check_path", "crc32", "strict_json"]

# safetensors' own limit on the header (its Rust reader refuses larger ones)
_MAX_HEADER = 100_000_000
_MAX_DIMS = 64  # NumPy's limit on ndim
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

    Every size is checked against the file's size before anything is read or
    allocated, so a file of S bytes costs at most about S bytes of memory,
    whatever its header claims; the whole file is checked before anything
    is returned. Each of these raises ValueError (plain ValueError: a bad
    file is a bad value) naming the file, the tensor or field and the
    problem: something other than a regular file, a file shorter than 8
    bytes, a header length beyond the file or above 100 MB, a header that is
    not a UTF-8 JSON object (or is nested too deeply, or holds an integer of
    more digits than Python converts), a name given twice (in any object of
    the header), an entry without exactly dtype/shape/data_offsets, an
    unknown dtype (bfloat16 included), a shape that is not a list of at most
    64 ints >= 0 whose nonzero product times the item size is below 2**63,
    offsets that are not two ints with 0 <= begin <= end <= the data's size,
    tensors that overlap or leave bytes uncovered, a byte count that does
    not match the shape, a metadata value that is not a str. Nothing is
    ever unpickled.
    """
    path = check_path(caller, path, reading=True)

    def bad(problem):
        return ValueError(f"{caller}: {path!r} is not a valid safetensors file: {problem}")

    if not stat.S_ISREG(os.stat(path).st_mode):  # opening a FIFO blocks; a device never ends
        raise bad("not a regular file")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise bad(f"truncated: {size} bytes, fewer than the 8-byte header length")
        (n,) = struct.unpack("<Q", _read(f, 8, bad, "the header length"))
        if 8 + n > size:
            raise bad(f"bad header length {n}: 8 + header length exceeds the file size {size} "
                      f"(truncated, or not a safetensors file)")
        if n > _MAX_HEADER:
            raise bad(f"bad header length {n}: above the limit of {_MAX_HEADER} bytes")
        header = strict_json(_read(f, n, bad, "the header"), lambda p: bad(f"the header {p}"))
        if not isinstance(header, dict):
            raise bad(f"the header is a JSON {_json_type(header)}, expected an object")
        metadata = header.pop("__metadata__", None)
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict):
            raise bad(f"__metadata__ is a JSON {_json_type(metadata)}; it must be an object "
                      f"of str -> str")
        for k, v in metadata.items():
            if not isinstance(v, str):
                raise bad(f"__metadata__[{short_repr(k)}] is a JSON {_json_type(v)}; the metadata "
                          f"must be an object of str -> str")
        size -= 8 + n
        entries = [_entry(bad, name, info, size) for name, info in header.items()]
        end = 0
        for begin, stop, name, _, _ in sorted(entries, key=lambda e: (e[0], e[1])):
            if begin < end:
                raise bad(f"tensor {short_repr(name)}: data_offsets [{begin}, {stop}] overlap the "
                          f"previous tensor, which ends at {end}")
            if begin > end:
                raise bad(f"bytes [{end}, {begin}) of the data belong to no tensor")
            end = stop
        if end != size:
            raise bad(f"the tensors cover {end} bytes of the data but it has {size} "
                      f"(the last {size - end} belong to no tensor)")
        data = memoryview(_read(f, size, bad, "the data"))
    tensors = {}
    for begin, stop, name, dtype, shape in entries:
        a = np.frombuffer(data[begin:stop], dtype=dtype).reshape(shape)
        tensors[name] = a.astype(dtype.newbyteorder("="), copy=False)
    return tensors, metadata


def _read(f, n, bad, what) -> bytes:
    """Exactly `n` bytes of `f` (a file that shrank while it was read is refused)."""
    raw = f.read(n)
    if len(raw) != n:
        raise bad(f"{what}: expected {n} bytes, read {len(raw)} (the file changed while it "
                  f"was read?)")
    return raw


def _entry(bad, name, info, size):
    """(begin, end, name, dtype, shape) of one header entry, checked against
    a data section of `size` bytes."""
    where = f"tensor {short_repr(name)}"
    if not isinstance(info, dict):
        raise bad(f"{where}: the entry is a JSON {_json_type(info)}, expected an object "
                  f"{{dtype, shape, data_offsets}}")
    if set(info) != {"dtype", "shape", "data_offsets"}:
        raise bad(f"{where}: expected {{dtype, shape, data_offsets}}, the entry has the keys "
                  f"{short_repr(sorted(info))}")
    code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    dtype = _DTYPES.get(code) if isinstance(code, str) else None
    if dtype is None:
        raise bad(f"{where}: unknown or unsupported dtype {short_repr(code)}; supported: "
                  f"{', '.join(_DTYPES)}")
    dtype = np.dtype(dtype)
    # NumPy refuses a shape whose nonzero dims overflow, even with a zero dim
    if not isinstance(shape, list) or len(shape) > _MAX_DIMS or \
            not all(is_count(s) for s in shape) or \
            math.prod(s for s in shape if s) * dtype.itemsize >= 2**63:
        raise bad(f"{where}: shape must be a list of ints >= 0 (at most {_MAX_DIMS}, the nonzero "
                  f"ones' product times the item size below 2**63), got {short_repr(shape)}")
    if not isinstance(offsets, list) or len(offsets) != 2 or \
            not all(is_count(o) for o in offsets) or offsets[0] > offsets[1] or \
            offsets[1] > size:
        raise bad(f"{where}: data_offsets {short_repr(offsets)} out of range: expected [begin, "
                  f"end], ints with 0 <= begin <= end <= {size} (the data's size)")
    want = math.prod(shape) * dtype.itemsize
    if offsets[1] - offsets[0] != want:
        raise bad(f"{where}: shape {shape} of {code} needs {want} bytes, data_offsets {offsets} "
                  f"hold {offsets[1] - offsets[0]}")
    return offsets[0], offsets[1], name, dtype, shape


class _Twice(Exception):
    """A name given twice in one JSON object (raised inside json.loads)."""


def _unique(pairs) -> dict:
    out = {}
    for k, v in pairs:
        if k in out:
            raise _Twice(k)
        out[k] = v
    return out


def strict_json(text, bad):
    """JSON `text` (str, or bytes holding UTF-8) parsed. Every refusal is
    ``bad(problem)``, a ValueError, with `problem` a phrase such as "is not
    UTF-8 JSON: ...", also where ``json.loads`` would let the text through
    or raise something else: a name given twice in one object
    (``json.loads`` keeps the last), a nesting too deep for the parser
    (RecursionError), an integer of more digits than Python converts."""
    form = "UTF-8 JSON" if isinstance(text, bytes) else "valid JSON"
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text, object_pairs_hook=_unique)
    except _Twice as e:
        raise bad(f"names {short_repr(e.args[0])} twice in one object") from None
    except RecursionError:
        raise bad(f"is not {form}: nested too deeply to parse") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, too many digits
        raise bad(f"is not {form}: {e}") from None


def _json_type(v) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number", type(None): "null"}.get(type(v), type(v).__name__)


def short_repr(v, limit=80) -> str:
    """repr(v), cut to `limit` characters (a header value can be megabytes)."""
    r = repr(v)
    return r if len(r) <= limit else r[:limit - 4] + " ..."


def _stored(a) -> np.ndarray:
    """`a` as safetensors stores it: C order, little-endian."""
    return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<") if a.dtype.itemsize > 1
                                else a.dtype)


def crc32(a) -> str:
    """CRC32 of `a`'s stored bytes, as 8 hex digits."""
    return f"{zlib.crc32(_stored(a)):08x}"


def is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0
