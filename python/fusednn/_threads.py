"""fusednn's CPU thread pool: its limit, and threadpoolctl's view of it.

The kernels share one pool (csrc/cpu/threads.h, ``libfusednn_threads.so``):
the calling thread and the awake workers claim chunks of each op, so the
caller never waits for a worker whose core another process holds, and idle
workers sleep after ~50 microseconds. OpenBLAS runs one thread per call, on
pieces of the product cut by the pool; products of 2^29 FMAs and more go to
NumPy's own BLAS (threaded by NumPy's pool, which a NumPy program keeps
awake anyway), the epilogue after them to the pool.

The limit is ``FUSEDNN_NUM_THREADS``, else ``OMP_NUM_THREADS`` (its first
level), else the CPUs this process may run on; ``set_num_threads`` and
``threadpoolctl.threadpool_limits`` change it.
"""

from __future__ import annotations

import numbers
import os

from . import _C
from ._version import __version__


def num_threads() -> int:
    """The CPU kernels' thread limit (the caller included)."""
    return _C.num_threads()


def set_num_threads(n: int) -> None:
    """Sets the CPU kernels' thread limit to ``n`` >= 1 (the caller included).

    ``threadpoolctl.threadpool_limits(n)`` does the same for a ``with`` block,
    together with every other native pool in the process."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"set_num_threads: n must be an int >= 1, got {n!r} "
                        f"({type(n).__name__})")
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    _C.set_num_threads(int(min(n, 256)))


def _numpy_blas_path():
    """The file of the BLAS library NumPy loaded (its scipy-openblas64, or a
    system OpenBLAS), from the process's memory map; None where there is no
    /proc (not Linux) or NumPy links another BLAS."""
    import numpy as np  # noqa: F401  (NumPy's BLAS is loaded with it)

    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split(None, 5)[5].strip() for line in maps if "openblas" in line
                     and len(line.split(None, 5)) == 6}
    except OSError:
        return None
    own = os.path.join("scipy_openblas32", "")
    candidates = sorted(p for p in paths if own not in p and os.path.basename(p).startswith(
        ("libscipy_openblas64_", "libopenblas")))
    return candidates[0] if candidates else None


def _use_numpy_blas():
    """Large GEMMs go to NumPy's BLAS where it is found (see csrc/cpu/blas.h);
    ``FUSEDNN_NUMPY_BLAS=0`` keeps them on fusednn's own. Returns the
    library's path, or None."""
    setting = os.environ.get("FUSEDNN_NUMPY_BLAS", "1")
    if setting not in ("0", "1"):
        raise ValueError(f"FUSEDNN_NUMPY_BLAS={setting!r} must be 0 or 1")
    if setting == "0":
        _C.clear_peer_blas()
        return None
    path = _numpy_blas_path()
    if path is None or _C.use_peer_blas(path) is None:
        return None
    return path


def _register_threadpoolctl() -> bool:
    """Registers fusednn's pool with threadpoolctl (>= 3.5), so that
    ``threadpool_info()`` lists it and ``threadpool_limits`` governs it.
    Returns whether it did (False without threadpoolctl, or an older one)."""
    try:
        import threadpoolctl
    except ImportError:
        return False
    if not (hasattr(threadpoolctl, "register") and hasattr(threadpoolctl, "LibController")):
        return False
    if getattr(threadpoolctl, "_fusednn_registered", False):
        return True

    class FusednnController(threadpoolctl.LibController):
        """fusednn's CPU thread pool (libfusednn_threads.so)."""

        user_api = "fusednn"
        internal_api = "fusednn"
        filename_prefixes = ("libfusednn_threads",)
        check_symbols = ("fusednn_get_num_threads", "fusednn_set_num_threads")

        def get_num_threads(self):
            return self.dynlib.fusednn_get_num_threads()

        def set_num_threads(self, num_threads):
            self.dynlib.fusednn_set_num_threads(int(num_threads))

        def get_version(self):
            return __version__

    threadpoolctl.register(FusednnController)
    threadpoolctl._fusednn_registered = True
    return True


# At import, before any op runs: threadpoolctl sees the pool, and large GEMMs
# know NumPy's BLAS (its path, or None; build_info()["numpy_blas"]).
_register_threadpoolctl()
NUMPY_BLAS = _use_numpy_blas()
