"""Callbacks (Keras 3 API): objects whose hooks Sequential.fit calls.

A callback sees the model through ``self.model`` (set by fit):
``model.stop_training`` (set True to stop after the current epoch),
``model.optimizer`` (its ``learning_rate`` may be reassigned between steps),
``model.get_weights()`` / ``model.set_weights()`` and ``model.history``.
``logs`` hold the epoch's ``loss``, metrics and ``val_*`` values.
"""

from __future__ import annotations

import contextlib
import csv
import inspect
import math
import numbers
import os
import re
import time
import warnings

import numpy as np

from ._arrays import to_host
from ._validate import check_bool, check_float, check_int, check_path
from .layers import Dropout
from .layers._util import set_rng_state
from . import health as _health
from .saving.weights import load_weights, save_weights

__all__ = [
    "BackupAndRestore",
    "CSVLogger",
    "Callback",
    "EarlyStopping",
    "GradientHealth",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "ReduceLROnPlateau",
    "TensorBoard",
    "TerminateOnNaN",
    "load_weights",
]


class Callback:
    """Base class: every hook does nothing.

    ``rank_zero_only``: in ``fit(distributed=True)`` a callback with this
    class attribute True runs on rank 0 only (ModelCheckpoint,
    BackupAndRestore, CSVLogger and TensorBoard, which write files); set it
    on a callback of your own that writes or prints.
    """

    rank_zero_only = False

    def __init__(self):
        self.model = None

    def set_model(self, model) -> None:
        self.model = model

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_batch_begin(self, batch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        pass

    # A callback that keeps this hook reads no batch's loss: fit need not
    # bring a GPU step's loss to the host for it (Sequential.fit).
    on_train_batch_end.reads_nothing = True


# ---------------------------------------------------------------- checks


def _str(caller, name, value):
    if not isinstance(value, str) or not value:
        raise TypeError(f"{caller}: {name} must be a non-empty str, got "
                        f"{type(value).__name__} {value!r}")
    return value


def _mode(caller, value):
    if value not in ("auto", "min", "max"):
        raise ValueError(f"{caller}: mode must be 'auto', 'min' or 'max', got {value!r}")
    return value


def _maximize(mode, monitor) -> bool:
    """mode 'auto': maximise when the name contains 'acc' (accuracy), else minimise."""
    if mode == "auto":
        return "acc" in monitor.lower()
    return mode == "max"




def _number(value):
    """The logged value as a float, or None when it is not a real number."""
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _save_freq(caller, value):
    """'epoch' or an int >= 1."""
    if isinstance(value, str):
        if value == "epoch":
            return value
        raise ValueError(f"{caller}: save_freq must be 'epoch' or an int >= 1, got {value!r}")
    return check_int(caller, "save_freq", value, 1)


def _write(caller, path, write) -> None:
    """Run ``write()``; an OSError (disk full, no permission, a file where a
    directory should be) is raised again as the same class and errno with a
    message naming `caller` and `path`. The writers under it (fusednn.saving)
    write to a temporary file that is renamed over `path` only once complete
    and removed on any error, so the file at `path` stays as it was."""
    try:
        write()
    except OSError as e:
        err = type(e)(f"{caller}: cannot write {path!r}: {e}; the file there before, if any, "
                      f"is left as it was")
        err.errno = e.errno  # without strerror, str(err) stays the message above
        raise err from e


def _optimizer(caller, model):
    opt = getattr(model, "optimizer", None)
    if opt is None or not hasattr(opt, "learning_rate"):
        raise ValueError(f"{caller}: the model's optimizer must have a 'learning_rate' "
                         f"attribute (compile the model first), got {opt!r}")
    return opt


# ---------------------------------------------------------- EarlyStopping


class EarlyStopping(Callback):
    """Stop training when a monitored quantity has stopped improving (Keras 3).

    At each epoch end (from epoch ``start_from_epoch`` on) the value
    ``logs[monitor]`` counts as an improvement when it beats the best so far
    by more than ``min_delta`` (``current < best - min_delta`` in mode min,
    ``current > best + min_delta`` in mode max; mode "auto" is max when the
    name contains "acc", min otherwise). After ``patience`` epochs without
    improvement (and never at epoch 0) it sets ``model.stop_training``.
    With a ``baseline``, the patience counter is only reset by a value that
    also beats the baseline: while the baseline is not reached, improving
    epochs still count, and the first epoch without improvement once
    ``patience`` epochs have passed stops training (Keras 3's rule). With
    ``restore_best_weights=True`` the weights of the best epoch are put back
    at the end of training, whether
    or not training stopped early (Keras 3; Keras 2 restored only on an early
    stop); if no epoch improved on the first one seen, those are the weights
    of the first monitored epoch.

    Attributes: ``best`` (best value seen, None before the first), ``best_epoch``
    (0-based), ``stopped_epoch`` (0-based epoch at which training was stopped,
    0 when it was not), ``wait``, ``best_weights``.

    A missing ``monitor`` key warns (``warnings.warn``) and does nothing, as
    Keras. Differences from Keras: an unknown ``mode`` raises ValueError
    (Keras warns and falls back to "auto"); ``min_delta`` is taken as
    ``abs(min_delta)``, as Keras does. PyTorch has no built-in equivalent.
    """

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):
        super().__init__()
        c = "EarlyStopping"
        self.monitor = _str(c, "monitor", monitor)
        self.min_delta = abs(check_float(c, "min_delta", min_delta))
        self.patience = check_int(c, "patience", patience, 0)
        self.verbose = check_int(c, "verbose", verbose, 0)
        self.mode = _mode(c, mode)
        self.baseline = None if baseline is None else check_float(c, "baseline", baseline)
        self.restore_best_weights = check_bool(c, "restore_best_weights", restore_best_weights)
        self.start_from_epoch = check_int(c, "start_from_epoch", start_from_epoch, 0)
        self._max = _maximize(self.mode, self.monitor)
        self._reset()

    def _reset(self):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0

    def _is_improvement(self, value, reference):
        if reference is None:
            return True
        if self._max:
            return value - self.min_delta > reference
        return value + self.min_delta < reference

    def on_train_begin(self, logs=None):
        self._reset()  # instances can be reused

    def on_epoch_end(self, epoch, logs=None):
        current = self._monitor_value(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            # the first monitored epoch is the reference, even without improvement
            self.best_weights = self.model.get_weights()
            self.best_epoch = epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            # only restart waiting when both the previous best and the baseline are beaten
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print("Restoring model weights from the end of the best epoch: "
                      f"{self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)

    def _monitor_value(self, logs):
        logs = logs or {}
        if self.monitor not in logs:
            warnings.warn(f"EarlyStopping: early stopping conditioned on metric "
                          f"{self.monitor!r} which is not available. Available metrics are: "
                          f"{','.join(logs)}", stacklevel=2)
            return None
        value = _number(logs[self.monitor])
        if value is None:
            warnings.warn(f"EarlyStopping: logs[{self.monitor!r}] is not a number: "
                          f"{logs[self.monitor]!r}", stacklevel=2)
        return value


# ------------------------------------------------------ ReduceLROnPlateau


class ReduceLROnPlateau(Callback):
    """Performance scheduling: multiply the learning rate by ``factor`` when
    the monitored quantity has stopped improving (Keras 3).

    At each epoch end, ``logs[monitor]`` improves when it beats the best by
    more than ``min_delta`` (mode min: ``current < best - min_delta``; mode
    max: ``current > best + min_delta``; "auto": max when the name contains
    "acc"). After ``patience`` epochs without improvement, and if the rate is
    above ``min_lr``, ``model.optimizer.learning_rate`` becomes
    ``max(lr * factor, min_lr)``; then ``cooldown`` epochs pass in which the
    wait counter stays at 0. As Keras, the current rate is written into the
    epoch's ``logs["learning_rate"]`` (seen by callbacks after this one; the
    fusednn History is recorded before the callbacks run, so it lacks it).

    The optimizer's learning rate must be a float: a ``fd.schedules``
    schedule (or any callable) cannot be reduced and raises TypeError at the
    start of training (Keras raises when it tries to set the rate).
    Differences from Keras: an unknown ``mode`` raises ValueError (Keras
    warns); ``factor`` must be in [0, 1), ``min_delta`` and ``min_lr`` >= 0.
    PyTorch's ``ReduceLROnPlateau`` is the same rule (its ``threshold_mode``
    "abs" with ``threshold=min_delta``; defaults patience 10, factor 0.1,
    threshold 1e-4 relative), stepped by hand with the metric.
    """

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto",
                 min_delta=1e-4, cooldown=0, min_lr=0.0):
        super().__init__()
        c = "ReduceLROnPlateau"
        self.monitor = _str(c, "monitor", monitor)
        self.factor = check_float(c, "factor", factor, low=0.0, high=1.0, high_open=True)
        self.patience = check_int(c, "patience", patience, 0)
        self.verbose = check_int(c, "verbose", verbose, 0)
        self.mode = _mode(c, mode)
        self.min_delta = check_float(c, "min_delta", min_delta, low=0.0)
        self.cooldown = check_int(c, "cooldown", cooldown, 0)
        self.min_lr = check_float(c, "min_lr", min_lr, low=0.0)
        self._max = _maximize(self.mode, self.monitor)
        self._reset()

    def _reset(self):
        self.best = -math.inf if self._max else math.inf
        self.cooldown_counter = 0
        self.wait = 0

    def _improved(self, current):
        if self._max:
            return current > self.best + self.min_delta
        return current < self.best - self.min_delta

    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def _float_lr(self):
        opt = _optimizer("ReduceLROnPlateau", self.model)
        lr = opt.learning_rate
        if callable(lr):
            raise TypeError(f"ReduceLROnPlateau: the optimizer's learning_rate is a schedule "
                            f"({type(lr).__name__}), which cannot be reduced; give the "
                            f"optimizer a float learning_rate to use ReduceLROnPlateau")
        return opt, float(lr)

    def on_train_begin(self, logs=None):
        self._reset()
        self._float_lr()

    def on_epoch_end(self, epoch, logs=None):
        opt, lr = self._float_lr()
        if logs is not None:
            logs["learning_rate"] = lr
        logs = logs or {}
        current = _number(logs.get(self.monitor))
        if current is None:
            warnings.warn(f"ReduceLROnPlateau: learning rate reduction is conditioned on "
                          f"metric {self.monitor!r} which is not available. Available metrics "
                          f"are: {','.join(logs)}", stacklevel=2)
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(current):
            self.best = current
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience:
                if lr > np.float32(self.min_lr):
                    new_lr = max(lr * self.factor, self.min_lr)
                    opt.learning_rate = new_lr
                    if self.verbose > 0:
                        print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning "
                              f"rate to {new_lr}.")
                    self.cooldown_counter = self.cooldown
                    self.wait = 0


# -------------------------------------------------- LearningRateScheduler


def _arity(fn):
    """1 or 2: how many positional arguments `fn` takes (2 when unknown)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return 2
    n = 0
    for p in sig.parameters.values():
        if p.kind == p.VAR_POSITIONAL:
            return 2
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            n += 1
    return 1 if n == 1 else 2


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of each epoch (Keras 3).

    ``schedule(epoch, lr)`` gets the 0-based epoch and the current rate (a
    float) and returns the new rate, which is assigned to
    ``model.optimizer.learning_rate`` before the epoch's first step. A
    one-argument ``schedule(epoch)`` is accepted too (decided from its
    signature; Keras tries two arguments and falls back on a TypeError).
    If the optimizer currently holds a schedule, ``lr`` is the rate it would
    use at the next step, and the float returned replaces the schedule.
    As Keras, ``logs["learning_rate"]`` is set at each epoch end.

    Differences from Keras: any real number (int too) is accepted as the
    result; a negative, NaN or infinite one raises ValueError naming the
    epoch (Keras requires a float and does not check its range). PyTorch's
    ``LambdaLR`` multiplies the initial rate by ``lr_lambda(epoch)`` instead.
    """

    def __init__(self, schedule, verbose=0):
        super().__init__()
        c = "LearningRateScheduler"
        if not callable(schedule):
            raise TypeError(f"{c}: schedule must be callable as schedule(epoch, lr) or "
                            f"schedule(epoch), got {type(schedule).__name__} {schedule!r}")
        self.schedule = schedule
        self.verbose = check_int(c, "verbose", verbose, 0)
        self._nargs = _arity(schedule)

    def on_epoch_begin(self, epoch, logs=None):
        c = "LearningRateScheduler"
        opt = _optimizer(c, self.model)
        lr = opt.learning_rate
        if callable(lr):
            lr = opt.current_learning_rate() if hasattr(opt, "current_learning_rate") else None
        if self._nargs == 1:
            new = self.schedule(epoch)
        else:
            new = self.schedule(epoch, None if lr is None else float(lr))
        if isinstance(new, (bool, np.bool_)) or not isinstance(new, numbers.Real):
            raise TypeError(f"{c}: the output of schedule must be a float, got "
                            f"{type(new).__name__} {new!r} at epoch {epoch}")
        new = float(new)
        if not math.isfinite(new) or new < 0.0:
            raise ValueError(f"{c}: the output of schedule must be a finite float >= 0, got "
                             f"{new} at epoch {epoch}")
        opt.learning_rate = new
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {new}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            lr = self.model.optimizer.learning_rate
            if not callable(lr):
                logs["learning_rate"] = float(lr)


# -------------------------------------------------------- ModelCheckpoint

class ModelCheckpoint(Callback):
    """Save the model or its weights during training (Keras 3).

    ``filepath`` may hold ``str.format`` fields filled with ``epoch``
    (1-based, as Keras), ``batch`` (1-based, with an int ``save_freq``) and
    the logs, e.g. ``"ckpt/w-{epoch:02d}-{val_loss:.2f}.npz"``; missing
    directories are created (as ``model.save`` does). ``save_freq="epoch"`` saves at each epoch end;
    an int N saves every N training batches (with the batch logs, which
    hold only ``loss``). With ``save_best_only`` a file is written only when
    ``logs[monitor]`` beats ``best`` (mode as in EarlyStopping; a missing
    monitor warns and skips); ``initial_value_threshold`` is the starting
    ``best``, as Keras.

    What is written: if the model has a ``save(path)`` method,
    ``save_weights_only`` is False and the path does not end in ``.npz``,
    ``model.save(path)`` is called (for fd.Sequential: one safetensors file
    with the optimizer and random state, read back by ``fd.models.load``);
    otherwise ``model.get_weights()`` is written as an .npz archive (arrays
    ``weight_0 ..``; never pickled) to a temporary file in the same
    directory, renamed over ``path`` (atomic). Read that back with
    ``fd.callbacks.load_weights(model, path)``.

    Crash safety: every file is written whole or not at all (a kill, a full
    disk or a refused write leaves the previous file at `path` as it was);
    a failed write raises the OSError's own class (PermissionError,
    NotADirectoryError ...) with a message naming the callback and the path,
    and fit stops there. Resuming: a file written at an epoch end continues
    bit for bit with ``fd.models.load(path).fit(..., epochs=E,
    initial_epoch=n)``, n the number of epochs done (the 1-based ``{epoch}``
    of its name), without ``seed``, which would start the shuffle generator
    anew. A file written inside an epoch (int ``save_freq``) holds the state
    after that batch, which ``initial_epoch`` cannot continue exactly (it
    starts whole epochs): ``BackupAndRestore(save_freq=N)`` resumes at the
    batch.

    Differences from Keras: the files are safetensors / .npz, not
    .keras/.weights.h5, and the extension only decides .npz or not (the
    file is written at exactly the formatted path).
    """

    rank_zero_only = True  # it writes files

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False,
                 save_weights_only=False, mode="auto", save_freq="epoch",
                 initial_value_threshold=None):
        super().__init__()
        c = "ModelCheckpoint"
        self.filepath = check_path(c, "filepath", filepath)
        self.monitor = _str(c, "monitor", monitor)
        self.verbose = check_int(c, "verbose", verbose, 0)
        self.save_best_only = check_bool(c, "save_best_only", save_best_only)
        self.save_weights_only = check_bool(c, "save_weights_only", save_weights_only)
        self.mode = _mode(c, mode)
        self.save_freq = _save_freq(c, save_freq)
        self.initial_value_threshold = (None if initial_value_threshold is None else
                                        check_float(c, "initial_value_threshold",
                                                    initial_value_threshold))
        self._max = _maximize(self.mode, self.monitor)
        self.best = self._initial_best()
        self._batches_since_save = 0
        self._current_epoch = 0

    def _initial_best(self):
        if self.initial_value_threshold is not None:
            return self.initial_value_threshold
        return -math.inf if self._max else math.inf

    def on_train_begin(self, logs=None):
        self._batches_since_save = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq == "epoch":
            return
        self._batches_since_save += 1
        if self._batches_since_save >= self.save_freq:
            self._batches_since_save = 0
            self._save(self._current_epoch, batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch, None, logs)

    def _file_path(self, epoch, batch, logs):
        fields = dict(logs)
        fields["epoch"] = epoch + 1
        if batch is not None:
            fields["batch"] = batch + 1
        try:
            return self.filepath.format(**fields)
        except (KeyError, IndexError, ValueError) as e:
            raise KeyError(f"ModelCheckpoint: failed to format filepath {self.filepath!r} with "
                           f"epoch, batch and the logs {sorted(logs)}: {e!r}") from e

    def _save(self, epoch, batch, logs):
        logs = dict(logs or {})
        if self.save_best_only:
            current = _number(logs.get(self.monitor))
            if current is None:
                warnings.warn(f"ModelCheckpoint: can save best model only with "
                              f"{self.monitor!r} available, skipping.", stacklevel=2)
                return
            better = current > self.best if self._max else current < self.best
            if not better:
                if self.verbose > 0:
                    print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from "
                          f"{self.best:.5f}")
                return
            path = self._file_path(epoch, batch, logs)
            if self.verbose > 0:
                print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to "
                      f"{current:.5f}, saving model to {path}")
            self.best = current
        else:
            path = self._file_path(epoch, batch, logs)
            if self.verbose > 0:
                print(f"\nEpoch {epoch + 1}: saving model to {path}")
        save = getattr(self.model, "save", None)

        def write():
            directory = os.path.dirname(path)
            if directory:
                os.makedirs(directory, exist_ok=True)
            if not self.save_weights_only and callable(save) and not path.endswith(".npz"):
                save(path)
            else:
                save_weights(path, self.model.get_weights())

        _write("ModelCheckpoint", path, write)


# ------------------------------------------------------- BackupAndRestore

# a backup's name: the epoch fit resumes at (0-based) and the batches of it already trained
_BACKUP = re.compile(r"backup-epoch(\d+)-batch(\d+)\.safetensors")
# what fusednn.saving's atomic write leaves behind when it is killed: .<name>.<random>.tmp
_BACKUP_TEMP = re.compile(r"\.backup-epoch\d+-batch\d+\.safetensors\..+\.tmp")


def _fsync_dir(directory) -> None:
    """Flush `directory`'s entries (a rename in it) to disk, where the OS
    allows it (POSIX)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BackupAndRestore(Callback):
    """Back up the training state, and restore it when fit is run again
    after an interruption (Keras 3's callback and arguments).

    One line makes a fit resumable::

        model.fit(x, y, epochs=10, seed=0,
                  callbacks=[fd.callbacks.BackupAndRestore("backup")])

    and after a crash (``kill -9``, a power cut, an exception) the same line,
    run again on a model built and compiled the same way, continues where
    the last backup was made: the weights at the end of that fit are bit
    for bit those of an uninterrupted one (CPU).

    Backups: ``model.save`` files (weights, optimizer state with its
    iterations and learning rate, layer states such as dropout counters,
    the shuffle generator) named ``backup-epoch<E>-batch<B>.safetensors``
    in `backup_dir` (created when missing): fit resumes at epoch E
    (0-based) after its first B batches. ``save_freq="epoch"`` writes one
    at each epoch end (E = the next epoch, B = 0); an int N every N
    training batches (counted across epochs), with the generator's state
    from the start of that epoch so that the resumed epoch draws the same
    shuffle order and skips the B batches already trained; a batch save
    that falls on the last batch of an epoch is made at that epoch's end
    instead (a resume then starts at the next epoch, not in an epoch with
    no batch left). Each backup is written to a temporary file, flushed to
    disk and renamed (fusednn.saving), the directory is flushed, and only
    then are older backups deleted: at every moment the newest backup on
    disk is complete. ``double_checkpoint=True`` keeps the previous backup
    too.

    Restoring, in ``on_train_begin``: stray temporary files of a killed
    write are removed; the newest backup is read with ``fd.models.load``
    and put into the model (weights, each Dropout's seed, since
    ``Dropout(seed=None)`` draws one when built, layer states, the shuffle
    generator, the optimizer's state and learning rate); fit then starts at
    its epoch and batch, whatever ``initial_epoch`` says (fit's ``seed``
    only sets the generator that the backup's replaces). A backup that
    cannot be read (a corrupted disk) is skipped with a warning when an
    older one is there, else it raises ValueError naming it. A backup of
    another model (other layer classes or weight shapes, another optimizer
    class) raises ValueError. Put this callback first in ``callbacks`` when
    others read the model in their own ``on_train_begin``.

    ``delete_checkpoint=True``: the backups are deleted when fit ends
    normally (early stopping included), then `backup_dir` if it is left
    empty; an exception out of fit keeps them.

    Exactness needs the same data, batch size and fit arguments on the
    rerun. Arrays (in memory or on disk) and ``fd.utils.Sequence`` resume
    bit for bit at the batch; a generator is read anew from its start, so
    a batch-level resume skips the generator's first B batches. After a
    resume inside an epoch, that epoch's logged loss and metrics average
    the batches run after the resume only.

    Errors: ``backup_dir`` that is not a str/os.PathLike raises TypeError,
    an existing file there ValueError; a failed write raises the OSError's
    own class naming the file, and the previous backup stays (fit stops).
    Differences from Keras: the backup is one safetensors file holding the
    epoch and batch in its name (Keras writes weights and a JSON of the
    epoch, not atomically together); a batch-level backup resumes at the
    batch (Keras restarts the epoch); ``delete_checkpoint`` removes the
    backups, not all of `backup_dir`.
    """

    rank_zero_only = True  # it writes files

    def __init__(self, backup_dir, save_freq="epoch", delete_checkpoint=True, *,
                 double_checkpoint=False):
        super().__init__()
        c = "BackupAndRestore"
        self.backup_dir = check_path(c, "backup_dir", backup_dir)
        if os.path.exists(self.backup_dir) and not os.path.isdir(self.backup_dir):
            raise ValueError(f"{c}: backup_dir {self.backup_dir!r} is a file, expected a "
                             f"directory (it is created when missing)")
        self.save_freq = _save_freq(c, save_freq)
        self.delete_checkpoint = check_bool(c, "delete_checkpoint", delete_checkpoint)
        self.double_checkpoint = check_bool(c, "double_checkpoint", double_checkpoint)
        self._batches_since_save = 0
        self._epoch = 0
        self._epoch_rng = None       # the shuffle generator's state at the epoch's start
        self._save_at_epoch_end = False

    # ------------------------------------------------------------- files
    def _backups(self) -> list:
        """[(epoch, batch, path)] of the backups in backup_dir, oldest first."""
        try:
            names = os.listdir(self.backup_dir)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            m = _BACKUP.fullmatch(name)
            if m:
                found.append((int(m.group(1)), int(m.group(2)),
                              os.path.join(self.backup_dir, name)))
        return sorted(found)

    def _remove_temporaries(self) -> None:
        try:
            names = os.listdir(self.backup_dir)
        except FileNotFoundError:
            return
        for name in names:
            if _BACKUP_TEMP.fullmatch(name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.backup_dir, name))

    def _save(self, epoch, batch, epoch_rng=None) -> None:
        """Write the backup of position (epoch, batch), with the shuffle
        generator at `epoch_rng` (its state at the epoch's start) where given,
        then delete the older backups."""
        model = self.model
        path = os.path.join(self.backup_dir, f"backup-epoch{epoch}-batch{batch}.safetensors")

        def write():
            os.makedirs(self.backup_dir, exist_ok=True)
            model.save(path)
            # the rename must be on disk before the older backups are deleted
            _fsync_dir(self.backup_dir)

        current = model._shuffle_rng
        if epoch_rng is not None:
            # fit keeps drawing from `current`: the file gets a copy at the epoch's start
            rng = np.random.default_rng()
            set_rng_state("BackupAndRestore", rng, epoch_rng)
            model._shuffle_rng = rng
        try:
            _write("BackupAndRestore", path, write)
        finally:
            model._shuffle_rng = current
        older = [p for _, _, p in self._backups() if p != path]
        keep = 1 if self.double_checkpoint else 0
        for p in older[:len(older) - keep]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)

    # ------------------------------------------------------------ restore
    def _read_newest(self):
        """(epoch, batch, path, model) of the newest backup that reads, None
        without any; one that does not read is skipped with a warning when
        an older one is there, else ValueError."""
        from .models.sequential import load  # models imports this module (through health)

        backups = self._backups()
        for i in range(len(backups) - 1, -1, -1):
            epoch, batch, path = backups[i]
            try:
                return epoch, batch, path, load(path)
            except (ValueError, OSError) as e:
                if i == 0:
                    raise ValueError(f"BackupAndRestore: cannot restore the backup {path!r}: "
                                     f"{e}; delete it to start afresh") from e
                warnings.warn(f"BackupAndRestore: cannot restore the backup {path!r} ({e}); "
                              f"restoring the older {backups[i - 1][2]!r}", stacklevel=3)
        return None

    def _restore(self, path, saved) -> None:
        """Put the model `saved` (read from `path`) into self.model."""
        model = self.model

        def mismatch(what, mine, theirs):
            return ValueError(f"BackupAndRestore: the backup {path!r} is of another model: its "
                              f"{what} {theirs}, this model's {mine}; delete {self.backup_dir!r} "
                              f"to start afresh")

        kinds = [type(layer).__name__ for layer in model.layers]
        saved_kinds = [type(layer).__name__ for layer in saved.layers]
        if kinds != saved_kinds:
            raise mismatch("layers are", kinds, saved_kinds)
        shapes = [tuple(np.shape(w)) for w in model.weights]
        saved_shapes = [tuple(np.shape(w)) for w in saved.weights]
        if shapes != saved_shapes:
            raise mismatch("weight shapes are", shapes, saved_shapes)
        opt, saved_opt = model.optimizer, saved.optimizer
        if saved_opt is None or type(opt) is not type(saved_opt):
            raise mismatch("optimizer is", type(opt).__name__, type(saved_opt).__name__)
        model.set_weights(saved.get_weights())
        for mine, theirs in zip(model.layers, saved.layers):
            if isinstance(mine, Dropout):  # seed=None: each construction draws another
                mine.seed = theirs.seed
        model.set_state(saved.get_state())
        opt.learning_rate = saved_opt.learning_rate
        opt.set_state(saved_opt.get_state())

    # -------------------------------------------------------------- hooks
    def on_train_begin(self, logs=None):
        self._batches_since_save = 0
        self._epoch_rng = None
        self._save_at_epoch_end = False
        # a path that cannot be a directory fails now, not after the first epoch
        _write("BackupAndRestore", self.backup_dir,
               lambda: os.makedirs(self.backup_dir, exist_ok=True))
        self._remove_temporaries()
        found = self._read_newest()
        if found is None:
            return
        epoch, batch, path, saved = found
        self._restore(path, saved)
        self._epoch = epoch
        self.model._resume_at = (epoch, batch)  # fit reads it after every on_train_begin

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self.save_freq != "epoch":
            self._epoch_rng = self.model.get_state()["shuffle_rng"]  # before the epoch's draw

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq == "epoch":
            return
        self._batches_since_save += 1
        if self._batches_since_save < self.save_freq:
            return
        self._batches_since_save = 0
        history = getattr(self.model, "history", None)
        steps = getattr(history, "params", {}).get("steps")
        if steps is not None and batch + 1 >= steps:
            self._save_at_epoch_end = True
        else:
            self._save(self._epoch, batch + 1, self._epoch_rng)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch" or self._save_at_epoch_end:
            self._save_at_epoch_end = False
            self._save(epoch + 1, 0)

    def on_train_end(self, logs=None):
        if not self.delete_checkpoint:
            return
        self._remove_temporaries()
        for _, _, path in self._backups():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        try:
            os.rmdir(self.backup_dir)
        except OSError:  # missing, or holding other files
            pass


# ---------------------------------------------------------- TerminateOnNaN


class TerminateOnNaN(Callback):
    """Stop training as soon as a batch loss is NaN or infinite (Keras 3).

    Reads ``logs["loss"]`` at each ``on_train_batch_end``; on NaN/inf it
    prints a line and sets ``model.stop_training``, and fit stops after that
    batch (Keras too ends the epoch there). PyTorch has no equivalent.
    """

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        value = _number(loss)
        if value is not None and not math.isfinite(value):
            print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True


# --------------------------------------------------------------- CSVLogger


class CSVLogger(Callback):
    """Stream the epoch results to a CSV file (Keras 3).

    One row per epoch: ``epoch`` (0-based, as Keras) then the log keys in
    sorted order, fixed by the first epoch (keys that appear later are
    ignored, keys that go missing are written "NA"). The header is written
    once: with ``append=True`` rows are appended and the header is only
    written when the file is missing or empty. The file is flushed after
    each row and closed at the end of training. Difference from Keras: when
    the first epoch has no ``val_*`` keys, Keras adds empty ``val_`` columns
    (for ``validation_freq``, which fusednn's fit does not have); fusednn
    does not.
    """

    rank_zero_only = True  # it writes files

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        c = "CSVLogger"
        self.filename = check_path(c, "filename", filename)
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(f"CSVLogger: separator must be a one-character str, got "
                             f"{separator!r}")
        self.sep = separator
        self.append = check_bool(c, "append", append)
        self.keys = None
        self.writer = None
        self.csv_file = None
        self.append_header = True

    def on_train_begin(self, logs=None):
        if self.append:
            if os.path.exists(self.filename):
                with open(self.filename, "r", newline="") as f:
                    self.append_header = not bool(len(f.readline()))
            else:
                self.append_header = True
            mode = "a"
        else:
            self.append_header = True
            mode = "w"
        self._close()
        self.csv_file = open(self.filename, mode, newline="")
        self.writer = None
        self.keys = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.csv_file is None:  # hooks called without on_train_begin
            self.on_train_begin()
        if self.keys is None:
            self.keys = sorted(logs)
        if self.writer is None:
            self.writer = csv.DictWriter(self.csv_file, fieldnames=["epoch"] + self.keys,
                                         delimiter=self.sep, extrasaction="ignore",
                                         lineterminator="\n")
            if self.append_header:
                self.writer.writeheader()
        row = {"epoch": epoch}
        for k in self.keys:
            v = logs.get(k, "NA")
            row[k] = v
        self.writer.writerow(row)
        self.csv_file.flush()

    def _close(self):
        if self.csv_file is not None:
            self.csv_file.close()
        self.csv_file = None

    def on_train_end(self, logs=None):
        self._close()
        self.writer = None


# ------------------------------------------------------------- TensorBoard


class _EventWriter:
    """One TensorBoard run directory: scalars and histograms as TensorBoard's
    own Summary protos, through TensorBoard's EventFileWriter (the writer
    PyTorch's SummaryWriter uses too), whose flush waits until every queued
    event is on disk."""

    BINS = 30  # tf.summary.histogram's default bucket count

    def __init__(self, modules, logdir):
        self._event_pb2, self._summary_pb2, writer = modules
        self._file = writer.EventFileWriter(logdir)

    def _add(self, step, value):
        self._file.add_event(self._event_pb2.Event(
            wall_time=time.time(), step=int(step),
            summary=self._summary_pb2.Summary(value=[value])))

    def add_scalar(self, tag, value, step):
        self._add(step, self._summary_pb2.Summary.Value(tag=tag, simple_value=float(value)))

    def add_histogram(self, tag, values, step):
        """values: a non-empty 1-D float64 array of finite numbers."""
        counts, edges = np.histogram(values, bins=self.BINS)
        # TensorBoard reads bucket i as (bucket_limit[i-1], bucket_limit[i]]: an empty
        # first bucket makes the lowest edge one of the limits
        histo = self._summary_pb2.HistogramProto(
            min=float(values.min()), max=float(values.max()), num=int(values.size),
            sum=float(values.sum()), sum_squares=float(values @ values),
            bucket_limit=edges.tolist(), bucket=[0.0, *counts.tolist()])
        self._add(step, self._summary_pb2.Summary.Value(tag=tag, histo=histo))

    def flush(self):
        self._file.flush()

    def close(self):
        self._file.close()


def _tensorboard_modules():
    """TensorBoard's protos and event file writer; ImportError naming the
    package where it is not installed."""
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer import event_file_writer
    except ImportError as e:
        raise ImportError("fd.callbacks.TensorBoard writes its event files with TensorBoard's "
                          "own writer: pip install tensorboard (or pip install "
                          "'fusednn[tensorboard]')") from e
    return event_pb2, summary_pb2, event_file_writer


# the attribute names of fd layers' weights, for the histograms' tags
_WEIGHT_ATTRIBUTES = ("kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance",
                      "alpha")


def _weight_names(layer) -> list:
    """A name for each of ``layer.weights``: the attribute that holds it
    (kernel, bias, gamma ...), else ``weight_<i>``."""
    by_id = {}
    for attr in _WEIGHT_ATTRIBUTES:
        w = getattr(layer, attr, None)
        if w is not None and hasattr(w, "shape"):
            by_id.setdefault(id(w), attr)
    return [by_id.get(id(w), f"weight_{i}") for i, w in enumerate(layer.weights)]


class TensorBoard(Callback):
    """Write TensorBoard event files of the training (Keras 3's callback and
    arguments).

    The event files are written with TensorBoard's own protos and event
    file writer (``pip install tensorboard``); view them with
    ``tensorboard --logdir logs``. ``log_dir`` gets a
    ``train/`` and a ``validation/`` run, as in Keras:

    - at each epoch end, step = the epoch (0-based): ``epoch_<name>`` for the
      loss and each metric of the logs in ``train/``, and for each ``val_*``
      entry (without its prefix) in ``validation/``; ``epoch_learning_rate``,
      the optimizer's current rate (a schedule's at its step), in ``train/``
      unless the logs hold ``learning_rate`` already; with
      ``write_steps_per_second``, ``epoch_steps_per_second`` (batches over
      the epoch's seconds).
    - with ``update_freq="batch"`` or an int N: ``batch_<name>`` of the batch
      logs (fit's ``loss``) after every batch, or every N-th, in ``train/``,
      with ``batch_steps_per_second`` (one over the batch's seconds) when
      ``write_steps_per_second``. Step: the optimizer's iteration count
      after the batch (1 for a first fit's first batch, as Keras counts; a
      second fit of the same model goes on from there, where Keras starts
      again at 1). ``update_freq="epoch"`` (default) writes no batch
      scalars.
    - every ``histogram_freq`` epochs (epochs 0, f, 2f ...; 0 never), step =
      the epoch: a histogram of each weight,
      ``<layer>/<weight>/histogram`` (weight: kernel, bias, gamma, beta,
      moving_mean, moving_variance, alpha), and of its gradient of the last
      step, ``<layer>/<weight>/gradient``, where the layer holds ``grads``
      for its trainable weights.
    - the records of ``fd.callbacks.GradientHealth`` (``model.history.health``)
      made during the epoch, at its end: ``health/<layer>/<field>`` for
      act_std, grad_std, saturated, dead and update_ratio (None values are
      left out), step = the record's step, in ``train/``.

    The files are flushed at each epoch end and closed at the end of
    training. Differences from Keras: ``write_graph`` defaults to False and
    is ignored (a Sequential of fused steps has no TensorFlow graph); as
    are ``write_images``, ``profile_batch``, ``embeddings_freq`` and
    ``embeddings_metadata`` (there are no image summaries of weights,
    profiler traces or embedding projections): setting any of them warns.
    Histograms do not need validation data (Keras asks for it); each has
    30 equal-width buckets, tf.summary.histogram's default. Without the
    tensorboard package, creating the callback raises ImportError naming it.
    """

    rank_zero_only = True  # it writes files

    def __init__(self, log_dir="logs", histogram_freq=0, write_graph=False, write_images=False,
                 write_steps_per_second=False, update_freq="epoch", profile_batch=0,
                 embeddings_freq=0, embeddings_metadata=None):
        super().__init__()
        c = "TensorBoard"
        self.log_dir = check_path(c, "log_dir", log_dir)
        self.histogram_freq = check_int(c, "histogram_freq", histogram_freq, 0)
        self.write_graph = check_bool(c, "write_graph", write_graph)
        self.write_images = check_bool(c, "write_images", write_images)
        self.write_steps_per_second = check_bool(c, "write_steps_per_second",
                                                 write_steps_per_second)
        if update_freq == "batch":
            update_freq = 1
        elif update_freq != "epoch":
            if isinstance(update_freq, str):
                raise ValueError(f"{c}: update_freq must be 'epoch', 'batch' or an int >= 1, "
                                 f"got {update_freq!r}")
            update_freq = check_int(c, "update_freq", update_freq, 1)
        self.update_freq = update_freq
        self.profile_batch = self._profile_batch(profile_batch)
        self.embeddings_freq = check_int(c, "embeddings_freq", embeddings_freq, 0)
        if embeddings_metadata is not None and not isinstance(embeddings_metadata, (str, dict)):
            raise TypeError(f"{c}: embeddings_metadata must be None, a str or a dict, got "
                            f"{type(embeddings_metadata).__name__} {embeddings_metadata!r}")
        self.embeddings_metadata = embeddings_metadata
        ignored = [name for name, on in (("write_graph", self.write_graph),
                                         ("write_images", self.write_images),
                                         ("profile_batch", self.profile_batch != 0),
                                         ("embeddings_freq", self.embeddings_freq),
                                         ("embeddings_metadata", embeddings_metadata is not None))
                   if on]
        if ignored:
            warnings.warn(f"{c}: {', '.join(ignored)} ignored: fusednn writes scalars and "
                          f"histograms only", UserWarning, stacklevel=2)
        self._modules = _tensorboard_modules()
        self._writers = {}
        self._step = 0
        self._health_written = 0
        self._epoch_start = self._batch_start = 0.0
        self._epoch_batches = 0

    @staticmethod
    def _profile_batch(value):
        """Keras' forms: an int >= 0, a pair of ints, or a str "start,stop"."""
        if isinstance(value, str):
            parts = value.split(",")
            if not all(p.strip().isdigit() for p in parts) or len(parts) > 2:
                raise ValueError(f"TensorBoard: profile_batch must be an int >= 0, a pair of "
                                 f"ints or a str 'start,stop', got {value!r}")
            return value
        if isinstance(value, (tuple, list)):
            if len(value) != 2:
                raise ValueError(f"TensorBoard: profile_batch must be an int >= 0, a pair of "
                                 f"ints or a str 'start,stop', got {value!r}")
            return tuple(check_int("TensorBoard", "profile_batch", v, 0) for v in value)
        return check_int("TensorBoard", "profile_batch", value, 0)

    # ------------------------------------------------------------ writers
    def _writer(self, run):
        w = self._writers.get(run)
        if w is None:
            w = self._writers[run] = _EventWriter(self._modules, os.path.join(self.log_dir, run))
        return w

    def _scalars(self, run, prefix, logs, step):
        for name, value in logs.items():
            v = _number(value)
            if v is not None:
                self._writer(run).add_scalar(prefix + name, v, step)

    def _close(self):
        for w in self._writers.values():
            w.close()
        self._writers = {}

    # -------------------------------------------------------------- hooks
    def on_train_begin(self, logs=None):
        self._close()
        iterations = getattr(getattr(self.model, "optimizer", None), "iterations", 0)
        self._step = int(iterations) if isinstance(iterations, numbers.Integral) else 0
        self._health_written = 0
        self._writer("train")  # the run exists from the start, as in Keras

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self._epoch_batches = 0

    def on_train_batch_begin(self, batch, logs=None):
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        self._epoch_batches += 1
        if self.update_freq == "epoch" or self._step % self.update_freq:
            return
        self._scalars("train", "batch_", logs or {}, self._step)
        if self.write_steps_per_second:
            seconds = time.perf_counter() - self._batch_start
            if seconds > 0:
                self._writer("train").add_scalar("batch_steps_per_second", 1.0 / seconds,
                                                 self._step)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        train = {k: v for k, v in logs.items() if not k.startswith("val_")}
        val = {k[4:]: v for k, v in logs.items() if k.startswith("val_")}
        if "learning_rate" not in train:
            rate = self._learning_rate()
            if rate is not None:
                train["learning_rate"] = rate
        if self.write_steps_per_second:
            seconds = time.perf_counter() - self._epoch_start
            if seconds > 0:
                train["steps_per_second"] = self._epoch_batches / seconds
        self._scalars("train", "epoch_", train, epoch)
        if val:
            self._scalars("validation", "epoch_", val, epoch)
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            self._histograms(epoch)
        self._health()
        for w in self._writers.values():
            w.flush()

    def on_train_end(self, logs=None):
        self._health()
        self._close()

    # -------------------------------------------------------------- parts
    def _learning_rate(self):
        opt = getattr(self.model, "optimizer", None)
        lr = getattr(opt, "learning_rate", None)
        if callable(lr):
            current = getattr(opt, "current_learning_rate", None)
            return float(current()) if callable(current) else None
        return _number(lr)

    def _histograms(self, epoch):
        writer = self._writer("train")
        for layer in getattr(self.model, "layers", []):
            names = _weight_names(layer)
            for name, w in zip(names, layer.weights):
                self._histogram(writer, f"{layer.name}/{name}/histogram", w, epoch)
            trainable = list(getattr(layer, "_trainable_weights", []))
            grads = getattr(layer, "grads", None)
            if layer.trainable and grads and len(grads) == len(trainable):
                for name, g in zip(names, grads):
                    self._histogram(writer, f"{layer.name}/{name}/gradient", g, epoch)

    @staticmethod
    def _histogram(writer, tag, array, step):
        values = np.asarray(to_host(array), dtype=np.float64).ravel()
        values = values[np.isfinite(values)]  # np.histogram refuses NaN and inf
        if values.size:
            writer.add_histogram(tag, values, step)

    def _health(self):
        """health/<layer>/<field> of the GradientHealth records not written yet."""
        records = getattr(getattr(self.model, "history", None), "health", None)
        if not records:
            return
        for rec in records[self._health_written:]:
            for layer in rec.get("layers", []):
                name = layer.get("name")
                fields = {k: v for k, v in layer.items() if k != "name"}
                self._scalars("train", f"health/{name}/", fields, int(rec["step"]))
        self._health_written = len(records)


class GradientHealth(Callback):
    """Records the training's health every `every` steps (fusednn.health)
    into ``model.history.health``, a list of ``{"epoch", "step",
    "layers": [records]}`` (step: the optimizer's iteration), and warns once
    per kind and fit (RuntimeWarning) with the layers and the remedy.

    A recorded step runs layer by layer (its ops keep their outputs and
    gradients), the others as fit runs them; the step's result is the same.
    warn=False records without warning. The thresholds: see
    fusednn.health.
    """

    def __init__(self, every=50, warn=True, vanishing=100.0, exploding=100.0, saturation=0.1,
                 dead=0.25):
        super().__init__()
        caller = "GradientHealth"
        self.every = check_int(caller, "every", every, low=1)
        if not isinstance(warn, bool):
            raise TypeError(f"{caller}: warn must be a bool, got {warn!r}")
        self.warn = warn
        self.thresholds = {
            "vanishing": check_float(caller, "vanishing", vanishing, low=1.0, low_open=True),
            "exploding": check_float(caller, "exploding", exploding, low=1.0, low_open=True),
            "saturation": check_float(caller, "saturation", saturation, low=0.0, high=1.0),
            "dead": check_float(caller, "dead", dead, low=0.0, high=1.0)}
        self._warned = set()
        self._epoch = 0

    def on_train_begin(self, logs=None):
        self._warned = set()
        if not hasattr(self.model.history, "health"):
            self.model.history.health = []

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def health_due(self, iteration: int) -> bool:
        """fit asks before each step (iteration: the optimizer's, from 1)."""
        return (iteration - 1) % self.every == 0

    def health_record(self, iteration, records):
        """fit hands over a recorded step's records."""
        self.model.history.health.append({"epoch": self._epoch, "step": iteration,
                                          "layers": records})
        if not self.warn:
            return
        for kind, message in _health.findings(records, **self.thresholds):
            if kind not in self._warned:
                self._warned.add(kind)
                warnings.warn(f"GradientHealth at step {iteration}: {message}", RuntimeWarning,
                              stacklevel=2)
