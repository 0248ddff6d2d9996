"""Where fit's batches come from, besides NumPy/CuPy arrays in memory.

- ``Sequence``: Keras' ``PyDataset`` protocol, a sized, indexable source of
  batches (``__len__``, ``__getitem__``, ``on_epoch_end``).
- Python generators and other iterables of ``(x, y)`` or ``(x, y,
  sample_weight)`` batches (``steps_per_epoch`` batches an epoch).
- Arrays on disk: ``np.memmap`` and h5py datasets, read a batch of
  contiguous rows at a time (a memmap through ``os.preadv`` on its file, so
  its pages never become part of the process's resident memory); an epoch
  shuffles the order of the batches, not the rows inside them.

Batches are loaded and checked by ``workers`` threads while the step runs
(the native step releases the GIL), at most ``max_queue_size`` ahead; with
``workers=0`` they are loaded in the calling thread. A generator is read by
one thread at a time (generators are not thread-safe), a Sequence's batches
by all workers, in order. An exception raised while loading (in the
generator, in ``__getitem__`` or by the batch's checks) is raised again in
the thread that called fit, at the batch where it happened.
"""

from __future__ import annotations

import collections
import mmap
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["Sequence", "is_stream", "is_disk_array", "read_rows", "Feeder", "SequenceFeeder"]


class Sequence:
    """A source of batches by index, Keras' ``PyDataset`` (``Sequence`` in
    Keras 2): subclasses define ``__len__`` (batches per epoch) and
    ``__getitem__(i)``, which returns batch i as ``(x, y)``, ``(x, y,
    sample_weight)``, or ``x`` alone for predict. ``on_epoch_end()`` runs
    after each epoch of fit (reshuffle the data there).

    workers, max_queue_size: the threads that load batches ahead of the step
    and how many batches they may hold (fit's own ``workers`` /
    ``max_queue_size`` win where given). use_multiprocessing=True is not
    supported: batches are loaded by threads of this process.
    """

    def __init__(self, workers=1, use_multiprocessing=False, max_queue_size=10):
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
            raise ValueError(f"Sequence: workers must be an int >= 0, got {workers!r}")
        if use_multiprocessing:
            raise ValueError("Sequence: use_multiprocessing=True is not supported; batches are "
                             "loaded by threads (workers=)")
        if isinstance(max_queue_size, bool) or \
                not isinstance(max_queue_size, (int, np.integer)) or max_queue_size < 1:
            raise ValueError(f"Sequence: max_queue_size must be an int >= 1, got "
                             f"{max_queue_size!r}")
        self.workers = int(workers)
        self.use_multiprocessing = False
        self.max_queue_size = int(max_queue_size)

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define __len__")

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")

    def on_epoch_end(self) -> None:
        """Called after each epoch of fit; does nothing by default."""

    @property
    def num_batches(self) -> int:
        return len(self)


def is_sequence(obj) -> bool:
    """A fd.utils.Sequence, or any object with its three methods."""
    return isinstance(obj, Sequence) or all(
        callable(getattr(obj, m, None)) for m in ("__len__", "__getitem__", "on_epoch_end"))


def is_stream(obj) -> bool:
    """An iterable of batches rather than an array: an iterator (a
    generator) or an iterable that is not an array, a DataFrame, a str or a
    list/tuple/dict (those are data, not streams)."""
    if isinstance(obj, (np.ndarray, str, bytes, list, tuple, dict)) or obj is None:
        return False
    if hasattr(obj, "__array__") or hasattr(obj, "__dlpack__") or hasattr(obj, "shape"):
        return False
    return hasattr(obj, "__next__") or hasattr(obj, "__iter__")


def is_disk_array(obj) -> bool:
    """An np.memmap or an h5py dataset: read in batches, never whole."""
    return isinstance(obj, np.memmap) or (
        type(obj).__module__.startswith("h5py") and hasattr(obj, "shape")
        and hasattr(obj, "dtype"))


def _memmap_file_position(a: np.memmap):
    """The file and byte offset of memmap `a`'s first element, or None when
    they cannot be told (not C-contiguous, or not backed by a file)."""
    if not a.flags.c_contiguous or getattr(a, "filename", None) is None:
        return None
    root = a
    while isinstance(root, np.ndarray) and not isinstance(root.base, mmap.mmap):
        root = root.base
    if not isinstance(root, np.ndarray):
        return None
    # the root's data is the file's byte `offset`; views lie at a distance from it
    return a.filename, a.offset + (a.ctypes.data - root.ctypes.data)


def read_rows(a, begin: int, end: int) -> np.ndarray:
    """Rows [begin, end) of disk array `a` as a new in-memory array. A
    C-contiguous memmap is read with ``os.preadv`` (its mapping is not
    touched, so the process's resident memory does not grow with the pages
    read); others through slicing (h5py reads the rows itself)."""
    if isinstance(a, np.memmap):
        where = _memmap_file_position(a)
        if where is not None:
            row = int(np.prod(a.shape[1:], dtype=np.int64)) * a.itemsize
            out = np.empty((end - begin,) + a.shape[1:], dtype=a.dtype)
            view = memoryview(out.reshape(-1).view(np.uint8))
            fd = os.open(where[0], os.O_RDONLY)
            try:
                done, total, pos = 0, out.nbytes, where[1] + begin * row
                while done < total:  # preadv may return less than asked
                    n = os.preadv(fd, [view[done:]], pos + done)
                    if n <= 0:
                        raise OSError(f"{where[0]}: unexpected end of file")
                    done += n
            finally:
                os.close(fd)
            return out
        return np.array(a[begin:end])
    return np.asarray(a[begin:end])


_END = object()  # the producer's last item: the iterator is exhausted


class Feeder:
    """Items of `iterator`, each passed through ``prepare(item, index)``
    (index counts from 0 over the feeder's life), loaded by one thread at
    most `max_queue_size` ahead, or in the caller's thread with
    ``threaded=False``. ``take(k)`` yields up to k prepared items (all with
    k=None) and stops early when the iterator is exhausted (``exhausted``
    turns True); an exception in the iterator or in prepare is raised again
    from ``take``. ``close()`` stops the thread (it may have read up to
    max_queue_size + 1 items that are never used, as Keras' enqueuers do)."""

    def __init__(self, iterator, prepare, max_queue_size=10, threaded=True):
        self._it = iterator
        self._prepare = prepare
        self._index = 0
        self.exhausted = False
        self._thread = None
        if threaded:
            self._q = queue.Queue(max_queue_size)
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._produce, daemon=True,
                                            name="fusednn-feeder")
            self._thread.start()

    def _next(self):
        try:
            item = next(self._it)
        except StopIteration:
            return _END
        out = self._prepare(item, self._index)
        self._index += 1
        return out

    def _produce(self):
        while not self._stop.is_set():
            try:
                item, err = self._next(), None
            except BaseException as e:  # delivered to the consumer, which raises it
                item, err = None, e
            while not self._stop.is_set():
                try:
                    self._q.put((item, err), timeout=0.05)
                    break
                except queue.Full:
                    continue
            if err is not None or item is _END:
                return

    def take(self, k=None):
        n = 0
        while not self.exhausted and (k is None or n < k):
            if self._thread is None:
                item = self._next()
            else:
                item, err = self._q.get()
                if err is not None:
                    self.exhausted = True
                    raise err
            if item is _END:
                self.exhausted = True
                return
            n += 1
            yield item

    def close(self):
        if self._thread is None:
            return
        self._stop.set()
        try:  # a put blocked on a full queue returns, and the thread sees the stop
            while True:
                self._q.get_nowait()
        except queue.Empty:
            pass
        # Joined, so that no later reader calls next() on the iterator while this
        # thread still is inside it; bounded, for an iterator that blocks for good.
        self._thread.join(timeout=10.0)


class SequenceFeeder:
    """``prepare(load(i), i)`` for each index i of `order`, in that order,
    computed by `workers` threads at most `max_queue_size` ahead (in the
    caller's thread with workers=0). Iterate it; ``close()`` cancels what
    is still queued."""

    def __init__(self, load, order, prepare, workers=1, max_queue_size=10):
        self._load, self._order, self._prepare = load, list(order), prepare
        self._pool = ThreadPoolExecutor(workers, "fusednn-loader") if workers > 0 else None
        self._ahead = max(max_queue_size, workers, 1)

    def _one(self, i):
        return self._prepare(self._load(i), i)

    def __iter__(self):
        if self._pool is None:
            for i in self._order:
                yield self._one(i)
            return
        pending = collections.deque()
        todo = iter(self._order)
        for i in todo:
            pending.append(self._pool.submit(self._one, i))
            if len(pending) >= self._ahead:
                break
        while pending:
            result = pending.popleft().result()  # raises the loader's exception here
            for i in todo:
                pending.append(self._pool.submit(self._one, i))
                break
            yield result

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
