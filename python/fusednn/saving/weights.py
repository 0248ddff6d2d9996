"""Weights only, as ``ModelCheckpoint(save_weights_only=True)`` writes them:
an .npz archive of arrays named ``weight_0 .. weight_{n-1}`` in
``model.get_weights()`` order: NumPy's format, read here member by member
(not through ``np.load``, which allocates what an .npy header claims
before reading it), never unpickled."""

from __future__ import annotations

import io
import math
import os
import stat
import struct
import warnings
import zipfile
import zlib

import numpy as np

from .._arrays import to_host
from .._validate import check_path
from .safetensors import atomic_write

__all__ = ["save_weights", "load_weights"]

_WEIGHT_KEY = "weight_{}"


def save_weights(path, weights):
    """Write `weights` (a list of arrays) as an .npz file at `path`, atomically:
    to a temporary file in the same directory, then renamed over `path`."""
    arrays = {}
    for i, w in enumerate(weights):
        a = to_host(w)
        if a.dtype.hasobject:
            raise TypeError(f"ModelCheckpoint: weight {i} has dtype object; only numeric "
                            f"arrays are written (never pickled)")
        arrays[_WEIGHT_KEY.format(i)] = a
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_weights(model, path) -> None:
    """Load weights written by ``ModelCheckpoint`` (the .npz form) into `model`.

    The file must be a zip archive of exactly the members ``weight_0.npy ..
    weight_{n-1}.npy`` (each once), each an .npy array of a real number
    dtype (float, int or uint: cast to the model's dtype), stored or
    deflated, whose byte count matches its shape, and `n` and the shapes
    must match ``model.get_weights()``. Every size is checked before it is
    read: an .npy header's shape against its member's size, and a member's
    size against the archive's (a deflated member: at most 1032 times its
    compressed size, deflate's largest ratio), so a file never costs more
    memory than its size implies; the zip CRC of every member is checked.
    Anything else raises ValueError naming the file, the member and the
    problem (a missing file raises FileNotFoundError); nothing is ever
    unpickled. Then calls ``model.set_weights``.
    """
    c = "load_weights"
    path = check_path(c, "path", path)

    def bad(problem):
        return ValueError(f"{c}: {path!r} is not a weights file written by ModelCheckpoint "
                          f"(.npz, no pickles): {problem}")

    mine = model.get_weights() if hasattr(model, "get_weights") else None
    if not stat.S_ISREG(os.stat(path).st_mode):  # opening a FIFO blocks; a device never ends
        raise bad("not a regular file")
    with open(path, "rb") as f:
        try:
            weights = _read_npz(f, os.fstat(f.fileno()).st_size, mine)
        except _Malformed as e:
            raise bad(str(e)) from None
        except _Mismatch as e:
            raise ValueError(f"{c}: {path!r}: {e}") from None
        except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, NotImplementedError,
                RuntimeError, EOFError, OSError, struct.error, ValueError, OverflowError) as e:
            # what zipfile raises for a damaged archive: a bad CRC, an unknown
            # compression method or zip version, encryption, offsets off the file
            raise bad(f"{type(e).__name__}: {e}") from None
    model.set_weights(weights)


class _Malformed(Exception):
    """A problem with the archive's content, raised while it is read (and
    turned into the ValueError of load_weights)."""


class _Mismatch(Exception):
    """A well-formed archive whose weights do not fit the model."""


# deflate never expands data more than 1032 times (RFC 1951's longest
# match, 258 bytes, from a 2-bit code): a larger claim is a lie
_DEFLATE_RATIO = 1032
_NPY_MAX_HEADER = 10_000  # NumPy's own limit (np.load's max_header_size)


def _read_npz(f, size, mine) -> list:
    """The arrays of the archive open as `f` (`size` bytes), checked against
    `mine` (the model's weights, or None)."""
    if f.read(6) == b"\x93NUMPY":
        raise _Malformed("it holds a single array (an .npy file), not a weights .npz archive")
    f.seek(0)
    with zipfile.ZipFile(f) as z:
        infos = z.infolist()
        names = [i.filename for i in infos]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise _Malformed(f"the archive holds {twice[:3]} more than once")
        want = [_WEIGHT_KEY.format(i) + ".npy" for i in range(len(names))]
        if sorted(names) != sorted(want):
            raise _Malformed(f"expected the members {want[:3]}{' ...' if len(want) > 3 else ''}, "
                             f"got {sorted(names)[:5]}")
        if mine is not None and len(mine) != len(names):
            raise _Mismatch(f"the file holds {len(names)} weights, the model has {len(mine)}")
        by_name = {i.filename: i for i in infos}
        out = []
        for k, name in enumerate(want):
            info = by_name[name]
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise _Malformed(f"member {name!r}: compression method {info.compress_type}, "
                                 f"expected stored (0) or deflated (8)")
            bound = info.compress_size * (1 if info.compress_type == zipfile.ZIP_STORED
                                          else _DEFLATE_RATIO)
            if info.compress_size > size or info.file_size > bound:
                raise _Malformed(f"member {name!r} claims {info.file_size} bytes "
                                 f"({info.compress_size} compressed), more than the archive of "
                                 f"{size} bytes can hold")
            with z.open(info) as m:
                a = _read_npy(m, info.file_size, name)
            if mine is not None and tuple(np.shape(mine[k])) != a.shape:
                raise _Mismatch(f"weight {k} has shape {a.shape}, the model's has "
                                f"{tuple(np.shape(mine[k]))}")
            out.append(a)
    return out


def _read_npy(m, size, name) -> np.ndarray:
    """The array of the .npy member `name` open as `m` (`size` bytes)."""
    prefix = m.read(8)
    if not prefix.startswith(b"\x93NUMPY"):
        what = "a pickle, which is never loaded" if prefix[:1] == b"\x80" else "not an .npy array"
        raise _Malformed(f"member {name!r} is {what} (it starts with {prefix[:8]!r})")
    version = (prefix[6], prefix[7])
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise _Malformed(f"member {name!r}: .npy format version {version}, expected 1.0, 2.0 "
                         f"or 3.0")
    length_format = "<H" if version == (1, 0) else "<I"
    raw_length = m.read(struct.calcsize(length_format))
    if len(raw_length) != struct.calcsize(length_format):
        raise _Malformed(f"member {name!r}: truncated .npy header")
    (length,) = struct.unpack(length_format, raw_length)
    start = 8 + len(raw_length) + length
    if length > _NPY_MAX_HEADER or start > size:
        raise _Malformed(f"member {name!r}: .npy header length {length} exceeds the member "
                         f"size {size} or the limit of {_NPY_MAX_HEADER}")
    header = io.BytesIO(raw_length + m.read(length))
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    try:
        with warnings.catch_warnings():  # the note on headers written by Python 2
            warnings.simplefilter("ignore", UserWarning)
            shape, fortran, dtype = read_header(header, max_header_size=_NPY_MAX_HEADER)
    except (ValueError, SyntaxError, RecursionError, MemoryError, TypeError) as e:
        raise _Malformed(f"member {name!r}: bad .npy header: {e}") from None
    if dtype.kind not in "fiu" or dtype.hasobject:
        raise _Malformed(f"member {name!r} has dtype {dtype}, expected a real number array "
                         f"(float, int or uint)")
    if len(shape) > 64 or not all(type(d) is int and d >= 0 for d in shape):
        raise _Malformed(f"member {name!r}: shape {shape!r} is not at most 64 ints >= 0")
    nbytes = math.prod(shape) * dtype.itemsize
    if start + nbytes != size:
        raise _Malformed(f"member {name!r}: shape {shape} of {dtype} needs {nbytes} bytes after "
                         f"its header, the member holds {size - start}")
    data = m.read(nbytes)
    if len(data) != nbytes or m.read(1):  # reading to the end checks the member's CRC
        raise _Malformed(f"member {name!r}: expected {nbytes} bytes of data, read {len(data)}")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
