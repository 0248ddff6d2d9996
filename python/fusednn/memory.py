"""The host buffer cache behind the CPU ops' large outputs.

Outputs of at least ``host_cache_info()["min_block_bytes"]`` (1 MiB) come
from a cache of memory blocks, not from the system: a training step
allocates outputs of the same sizes every step, and fresh memory from the
system costs a page fault and the zeroing of every page on first touch,
about as long as a memory-bound op's own pass over the data. Freed blocks
go back to the cache and are handed out again, as the GPU frameworks'
caching allocators do (CuPy arrays use CuPy's memory pool instead).

The cache keeps at most ``FUSEDNN_HOST_CACHE_MB`` MiB of idle blocks
(default: 1 GiB or an eighth of the physical memory, whichever is less; 0
turns it off), returning the oldest to the system first.
Memory in use by live arrays is never held back: it returns to the cache
when the last array on it is freed.
"""

from __future__ import annotations

from . import _C
from ._validate import check_int


def host_cache_info() -> dict:
    """Sizes and counters of the cache.

    ``idle_bytes`` (kept for reuse), ``used_bytes`` (under live arrays),
    ``limit_bytes`` (the most idle bytes kept), ``hits`` and ``misses``
    (outputs served from the cache / from the system), ``min_block_bytes``
    (outputs smaller than this use NumPy's allocator).
    """
    return dict(_C.host_cache_info())


def empty_cache() -> None:
    """Return every idle block of the cache to the system."""
    _C.host_cache_empty()


def set_host_cache_limit(megabytes: int) -> None:
    """Keep at most ``megabytes`` MiB of idle blocks (0: none); trims at once."""
    mb = check_int("set_host_cache_limit", "megabytes", megabytes, 0)
    if mb > (1 << 40):
        raise ValueError(f"set_host_cache_limit: megabytes must be <= 2**40, got {mb}")
    _C.host_cache_set_limit(mb << 20)
