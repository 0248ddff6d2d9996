"""NumPy or CuPy: the one module that tells the two array types apart.

Every other module asks here which library an array belongs to, which device
it lives on, or for a host copy; none imports CuPy or tests a type's module
itself. CuPy is imported only when a CuPy array is actually seen.
"""

from __future__ import annotations

import contextlib

import numpy as np


def is_cupy(a) -> bool:
    """True for a cupy.ndarray (checked without importing CuPy)."""
    return type(a).__module__.startswith("cupy") and hasattr(a, "__cuda_array_interface__")


def is_array(a) -> bool:
    """True for a numpy.ndarray or a cupy.ndarray."""
    return isinstance(a, np.ndarray) or is_cupy(a)


def array_module(a):
    """``numpy`` for a NumPy array, ``cupy`` for a CuPy one."""
    if isinstance(a, np.ndarray):
        return np
    import cupy

    return cupy


def to_host(a) -> np.ndarray:
    """A NumPy array with `a`'s values: `a` itself when it is NumPy, a copy
    from the GPU when it is CuPy, ``np.asarray(a)`` otherwise."""
    if isinstance(a, np.ndarray):
        return a
    if is_cupy(a):
        return a.get()
    return np.asarray(a)


def device_of(a):
    """None for a NumPy array, the GPU's number for a CuPy one."""
    return None if isinstance(a, np.ndarray) else a.device.id


def device_name(device) -> str:
    """"the CPU" for None, "GPU <n>" for a device number."""
    return "the CPU" if device is None else f"GPU {device}"


def on_device(a):
    """A context that makes `a`'s GPU the current one (CuPy), or does nothing
    (NumPy): scratch and kernels then go to the device the data is on."""
    if isinstance(a, np.ndarray):
        return contextlib.nullcontext()
    return a.device


def module_for(device: str):
    """``numpy`` for ``"cpu"``, ``cupy`` for ``"cuda"``."""
    if device == "cpu":
        return np
    import cupy

    return cupy
