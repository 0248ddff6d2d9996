"""Weights only, as ``ModelCheckpoint(save_weights_only=True)`` writes them:
an .npz archive of arrays named ``weight_0 .. weight_{n-1}`` in
``model.get_weights()`` order (NumPy's format, read without pickles)."""

from __future__ import annotations

import zipfile

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

    Reads with ``allow_pickle=False``; a file that is not an .npz archive of
    arrays named ``weight_0 .. weight_{n-1}``, or whose count or shapes do
    not match ``model.get_weights()``, raises ValueError naming the file
    (a missing file raises FileNotFoundError). Then calls
    ``model.set_weights``.
    """
    c = "load_weights"
    path = check_path(c, "path", path)
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{c}: {path!r} is not a weights file written by ModelCheckpoint "
                         f"(.npz, no pickles): {e}") from e
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{c}: {path!r} holds a single array, not a weights .npz archive")
    try:
        keys = list(data.files)
        want = [_WEIGHT_KEY.format(i) for i in range(len(keys))]
        if sorted(keys) != sorted(want):
            raise ValueError(f"{c}: {path!r} is not a weights file written by ModelCheckpoint: "
                             f"expected arrays {want[:3]}{'...' if len(want) > 3 else ''}, "
                             f"got {sorted(keys)[:5]}")
        try:
            weights = [data[k] for k in want]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
            raise ValueError(f"{c}: {path!r}: cannot read its arrays (malformed or pickled "
                             f"data): {e}") from e
    finally:
        data.close()
    for i, w in enumerate(weights):
        if w.dtype.kind not in "fiu":
            raise ValueError(f"{c}: {path!r}: weight {i} has dtype {w.dtype}, expected a "
                             f"numeric array")
    if hasattr(model, "get_weights"):
        mine = model.get_weights()
        if len(mine) != len(weights):
            raise ValueError(f"{c}: {path!r} holds {len(weights)} weights, the model has "
                             f"{len(mine)}")
        for i, (a, b) in enumerate(zip(mine, weights)):
            if tuple(np.shape(a)) != tuple(b.shape):
                raise ValueError(f"{c}: {path!r}: weight {i} has shape {tuple(b.shape)}, the "
                                 f"model's has {tuple(np.shape(a))}")
    model.set_weights(weights)
