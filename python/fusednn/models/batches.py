"""The batches of an epoch, from each kind of data fit takes.

Every source has ``steps`` (batches per epoch, None when a generator's
length is unknown), ``epoch(rng, shuffle)`` (an iterator of checked ``(x,
y, sample_weight)`` batches), ``end_epoch()`` and ``close()``. Sources that
load (disk arrays, generators, Sequences) run ``prepare(item, index)`` on
each raw batch, in the loading threads (fusednn.utils.data), so the checks
and casts overlap the step too.

- ``ArrayBatches``: arrays in memory, checked and cast once; an epoch
  gathers the rows of a permutation of all samples (the model's
  Generator), ``batch_size`` at a time (x's by fusednn's threads where it
  is a C-contiguous NumPy float array: ``_take_rows``).
- ``DiskBatches``: a memmap or h5py x, rows [lo, hi); batch b is the
  contiguous rows ``lo + b * batch_size ...``, and an epoch permutes the
  order of the batches (the rows inside a batch stay together, so each
  batch is one read).
- ``SequenceBatches``: a fd.utils.Sequence; an epoch permutes the batch
  indices (shuffle=True) and calls ``on_epoch_end`` after.
- ``StreamBatches``: a generator or iterator, read on across epochs
  (``steps_per_epoch`` batches each, or until it ends), or an iterable that
  is not an iterator, read anew each epoch.
"""

from __future__ import annotations

import itertools

import numpy as np

from .. import _C
from .._arrays import array_module
from ..utils.data import Feeder, SequenceFeeder, is_disk_array, read_rows

__all__ = ["ArrayBatches", "DiskBatches", "SequenceBatches", "StreamBatches"]


def _fed(load, order, prepare, workers, max_queue_size):
    """``prepare(load(i), i)`` for i in `order`, by a SequenceFeeder that is
    closed when the epoch ends or is left."""
    feeder = SequenceFeeder(load, order, prepare, workers, max_queue_size)
    try:
        yield from feeder
    finally:
        feeder.close()


def _take_rows(x):
    """A function idx -> x[idx] (a new array). For a C-contiguous NumPy
    float array, the rows are copied by fusednn's threads with the GIL
    released (fusednn._C.take_rows): a shuffled batch's rows come from all
    over x, mostly from DRAM, where NumPy's one-thread gather is 1.6-2x
    slower on two cores. Anything else: NumPy's (or CuPy's) indexing."""
    if type(x) is not np.ndarray or x.dtype not in (np.float32, np.float64) or \
            x.ndim < 1 or not x.flags.c_contiguous:
        return x.__getitem__

    def take(idx):
        out = np.empty((idx.shape[0],) + x.shape[1:], x.dtype)
        _C.take_rows(x, idx.astype(np.int64, copy=False), out)
        return out
    return take


class ArrayBatches:
    """x, y, w in memory (w: None or one weight per sample)."""

    def __init__(self, x, y, w, batch_size):
        self.x, self.y, self.w, self.batch_size = x, y, w, batch_size
        self.n = x.shape[0]
        self.steps = -(-self.n // batch_size)
        self.ran_out = False

    def epoch(self, rng, shuffle):
        order = rng.permutation(self.n) if shuffle else np.arange(self.n)
        order = array_module(self.x).asarray(order)
        bs = self.batch_size
        take = _take_rows(self.x)
        for step in range(self.steps):
            idx = order[step * bs:(step + 1) * bs]
            yield take(idx), self.y[idx], None if self.w is None else self.w[idx]

    def end_epoch(self):
        pass

    def close(self):
        pass


class DiskBatches:
    """Rows [lo, hi) of a disk array x with y and w (each a disk array, an
    array in memory, or None), in contiguous batches of `batch_size`."""

    def __init__(self, x, y, w, lo, hi, batch_size, prepare, workers, max_queue_size):
        self.x, self.y, self.w = x, y, w
        self.lo, self.hi, self.batch_size = lo, hi, batch_size
        self.prepare, self.workers, self.max_queue_size = prepare, workers, max_queue_size
        self.steps = -(-(hi - lo) // batch_size)
        self.ran_out = False

    def _rows(self, a, begin, end):
        if a is None:
            return None
        return read_rows(a, begin, end) if is_disk_array(a) else a[begin:end]

    def load(self, b):
        begin = self.lo + b * self.batch_size
        end = min(self.hi, begin + self.batch_size)
        item = (self._rows(self.x, begin, end), self._rows(self.y, begin, end))
        return item if self.w is None else item + (self._rows(self.w, begin, end),)

    def epoch(self, rng, shuffle):
        order = rng.permutation(self.steps) if shuffle else range(self.steps)
        return _fed(self.load, order, self.prepare, self.workers, self.max_queue_size)

    def end_epoch(self):
        pass

    def close(self):
        pass


class SequenceBatches:
    """A fd.utils.Sequence; `steps` the first batches of each epoch's order
    (all of them without steps_per_epoch)."""

    def __init__(self, seq, prepare, steps_per_epoch, workers, max_queue_size):
        self.seq, self.prepare = seq, prepare
        self.workers, self.max_queue_size = workers, max_queue_size
        self.n = len(seq)
        self.steps = self.n if steps_per_epoch is None else min(steps_per_epoch, self.n)
        self.ran_out = False

    def epoch(self, rng, shuffle):
        order = rng.permutation(self.n)[:self.steps] if shuffle else range(self.steps)
        return _fed(self.seq.__getitem__, order, self.prepare, self.workers,
                    self.max_queue_size)

    def end_epoch(self):
        self.seq.on_epoch_end()

    def close(self):
        pass


class StreamBatches:
    """A generator, iterator or other iterable of batches. `first` is the
    first item, already read from `iterator` (what the model was built
    from); ``ran_out`` turns True when an epoch got fewer batches than
    ``steps`` (or none), which ends fit with a warning, as in Keras."""

    def __init__(self, obj, iterator, first, prepare, steps_per_epoch, workers,
                 max_queue_size):
        self.obj, self.prepare = obj, prepare
        self.one_shot = iterator is obj
        self.threaded = workers != 0
        self.max_queue_size = max_queue_size
        length = None
        if not self.one_shot and hasattr(obj, "__len__"):
            length = len(obj)
        self.steps = steps_per_epoch if steps_per_epoch is not None else length
        self._pending = itertools.chain([first], iterator)  # the first epoch's
        self._feeder = None  # an iterator's, made at the first epoch and kept
        self.ran_out = False

    def _new_feeder(self, iterator):
        return Feeder(iterator, self.prepare, self.max_queue_size, self.threaded)

    def epoch(self, rng, shuffle):
        if self.one_shot:
            if self._feeder is None:
                self._feeder = self._new_feeder(self._pending)
            feeder = self._feeder
        else:
            it, self._pending = (self._pending or iter(self.obj)), None
            feeder = self._new_feeder(it)
        n = 0
        try:
            for item in feeder.take(self.steps):
                n += 1
                yield item
        finally:
            if not self.one_shot:
                feeder.close()
        if n == 0 or (self.steps is not None and n < self.steps):
            self.ran_out = True

    def end_epoch(self):
        pass

    def close(self):
        if self._feeder is not None:
            self._feeder.close()
