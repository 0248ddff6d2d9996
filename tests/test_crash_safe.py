"""Crash-safe training: fit killed with SIGKILL at random moments leaves
complete, loadable checkpoints and backups, and resuming from them in a
fresh process ends bit-identical to an uninterrupted fit;
fd.callbacks.BackupAndRestore; failed writes (disk full, a file where a
directory should be) keep the previous file and name the path."""

import errno
import os
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fusednn as fd
from fusednn import saving

init = fd.initializers
BackupAndRestore = fd.callbacks.BackupAndRestore

# ------------------------------------------------------------ in process


def _data(n=96, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    return x, np.argmax(x @ rng.standard_normal((d, k)), axis=1)


def _model(width=12, draw=0, rrelu=False, optimizer=None):
    """A Dropout without seed (drawn from NumPy's global generator, seeded
    with `draw`), an RReLU seeded by `draw`, BN, Nadam with a schedule: every
    kind of state a resume must bring back. rrelu=True trains layer by
    layer, else the compiled step."""
    np.random.seed(draw)
    layers = [fd.layers.Dense(width, kernel_initializer=init.HeNormal(seed=1)),
              fd.layers.BatchNormalization(), fd.layers.ELU(), fd.layers.Dropout(0.2)]
    if rrelu:
        layers += [fd.layers.Dense(8, kernel_initializer=init.HeNormal(seed=4)),
                   fd.layers.RReLU(seed=draw)]
    layers.append(fd.layers.Dense(3, activation="softmax",
                                  kernel_initializer=init.GlorotUniform(seed=2)))
    model = fd.Sequential(layers)
    sched = fd.schedules.ExponentialDecay(0.01, decay_steps=5, decay_rate=0.9)
    model.compile(optimizer or fd.optimizers.Nadam(learning_rate=sched),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


FIT = dict(epochs=4, batch_size=16, validation_split=0.25, seed=0, verbose=0)
STEPS = 5  # 72 training samples in batches of 16


class _Interrupt(fd.callbacks.Callback):
    """Raises after the `at`-th training batch (counted over the fit)."""

    def __init__(self, at):
        super().__init__()
        self.at, self.seen = at, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.at:
            raise KeyboardInterrupt(f"interrupted after batch {self.seen}")


def _assert_same(a, b):
    """Weights, layer states and optimizer state bit-identical."""
    for u, v in zip(a.get_weights(), b.get_weights(), strict=True):
        assert u.dtype == v.dtype and np.array_equal(u, v)
    assert a.get_state() == b.get_state()
    sa, sb = a.optimizer.get_state(), b.optimizer.get_state()
    assert sa["iterations"] == sb["iterations"]
    for ra, rb in zip(sa["slots"], sb["slots"], strict=True):
        for u, v in zip(ra, rb, strict=True):
            assert (u is None and v is None) or np.array_equal(u, v)


def _backups(directory):
    return sorted(n for n in os.listdir(directory) if n.startswith("backup-"))


@pytest.mark.parametrize("rrelu", [False, True], ids=["compiled", "layer_by_layer"])
@pytest.mark.parametrize("save_freq, at, resumed_at", [
    ("epoch", 7, 1),   # in epoch 1: back to its start
    ("epoch", 15, 2),  # on an epoch's last batch, before its end: that epoch again
    (3, 8, 1),         # backups after batches 3 and 6: epoch 1 after its first batch
    (1, 12, 2),        # every batch: epoch 2 after its second
    (5, 10, 1),        # every 5 = every epoch's last batch: written at the epoch's end
])
def test_rerunning_the_same_fit_resumes_bit_exact(tmp_path, rrelu, save_freq, at, resumed_at):
    """An interrupted fit run again (a new model object whose Dropout and
    RReLU drew other seeds) ends where an uninterrupted fit does."""
    x, y = _data()
    whole = _model(rrelu=rrelu)
    h = whole.fit(x, y, **FIT)
    backup = str(tmp_path / "backup")
    first = _model(rrelu=rrelu)
    with pytest.raises(KeyboardInterrupt):
        first.fit(x, y, callbacks=[BackupAndRestore(backup, save_freq=save_freq),
                                   _Interrupt(at)], **FIT)
    assert len(_backups(backup)) == 1
    again = _model(rrelu=rrelu, draw=1)
    seen = []

    class Spy(fd.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append((batch, self.model.optimizer.iterations))

    h2 = again.fit(x, y, callbacks=[BackupAndRestore(backup, save_freq=save_freq), Spy()],
                   **FIT)
    _assert_same(whole, again)
    assert h2.epoch == list(range(resumed_at, 4))
    # the batches keep their numbers in the epoch and the optimizer its count
    done = seen[0][1]
    assert seen[0] == (done % STEPS, done) and len(seen) == 4 * STEPS - done
    # epochs after the resumed one log what the uninterrupted fit logged
    for key in ("loss", "val_loss", "accuracy"):
        assert h2.history[key][1:] == h.history[key][resumed_at + 1:]
    assert h2.history["val_loss"][0] == h.history["val_loss"][resumed_at]
    assert not os.path.exists(backup)  # deleted at the end of the completed fit


def test_arrays_on_disk_resume_at_the_batch(tmp_path):
    """A memmap x is read a batch at a time in a shuffled batch order: the
    resumed epoch reads the same order and skips the batches done."""
    x, y = _data()
    xm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=x.dtype, shape=x.shape)
    xm[:] = x
    xm.flush()
    whole = _model()
    whole.fit(xm, y, **FIT)
    d = str(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        _model().fit(xm, y, callbacks=[BackupAndRestore(d, save_freq=2), _Interrupt(13)], **FIT)
    again = _model(draw=1)
    assert again.fit(xm, y, callbacks=[BackupAndRestore(d, save_freq=2)], **FIT).epoch == \
        [2, 3]
    _assert_same(whole, again)


def test_the_same_model_object_resumes_too(tmp_path):
    """Keras' own example: fit interrupted, then called again on the model."""
    x, y = _data()
    whole = _model()
    whole.fit(x, y, **FIT)
    model = _model()
    cb = BackupAndRestore(str(tmp_path / "b"), save_freq=2)
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, callbacks=[cb, _Interrupt(13)], **FIT)
    model.fit(x, y, callbacks=[cb], **FIT)
    _assert_same(whole, model)


def test_backups_on_disk_as_training_goes(tmp_path):
    """One backup at a time, named by the position fit resumes at;
    double_checkpoint keeps the previous one; delete_checkpoint=False keeps
    the last, and a rerun goes on from it to the same end."""
    x, y = _data()
    d = tmp_path / "b"
    names = []

    class Look(fd.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            names.append(_backups(d) if d.exists() else [])

    model = _model()
    model.fit(x, y, callbacks=[BackupAndRestore(str(d), save_freq=3, delete_checkpoint=False),
                               Look()], **FIT)
    assert names[2] == ["backup-epoch0-batch3.safetensors"]
    assert names[5] == ["backup-epoch1-batch1.safetensors"]  # batch 6: epoch 1, its 1st
    assert names[14] == ["backup-epoch2-batch2.safetensors"]  # batch 15 (last) is deferred
    assert names[15] == ["backup-epoch3-batch0.safetensors"]  # ... to epoch 2's end
    assert all(len(n) <= 1 for n in names)
    assert _backups(d) == ["backup-epoch3-batch3.safetensors"]  # the last, after batch 18
    after = model.get_weights()
    h = model.fit(x, y, callbacks=[BackupAndRestore(str(d), save_freq=3)], **FIT)
    assert h.epoch == [3]  # batches 19 and 20 again, to the same end
    assert all(np.array_equal(a, b) for a, b in zip(after, model.get_weights(), strict=True))
    assert not d.exists()

    d2 = tmp_path / "b2"
    names.clear()
    (tmp_path / "b2").mkdir()
    (d2 / "notes.txt").write_text("mine")
    d = d2
    _model().fit(x, y, callbacks=[BackupAndRestore(str(d2), double_checkpoint=True), Look()],
                 **FIT)
    assert names[STEPS * 2] == ["backup-epoch1-batch0.safetensors",
                                "backup-epoch2-batch0.safetensors"]
    assert os.listdir(d2) == ["notes.txt"]  # the backups go, other files and the dir stay


def test_a_backup_of_another_model_is_refused(tmp_path):
    x, y = _data()
    d = str(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        _model().fit(x, y, callbacks=[BackupAndRestore(d), _Interrupt(7)], **FIT)
    for other, what in ((_model(width=13), "weight shapes"),
                        (_model(optimizer=fd.optimizers.Adam()), "optimizer is Nadam")):
        with pytest.raises(ValueError, match=f"BackupAndRestore: the backup .*backup-epoch1-"
                                             f"batch0.safetensors' is of another model: its "
                                             f"{what}"):
            other.fit(x, y, callbacks=[BackupAndRestore(d)], **FIT)
    assert _backups(d) == ["backup-epoch1-batch0.safetensors"]  # kept


def test_an_unreadable_backup_falls_back_or_raises(tmp_path):
    x, y = _data()
    d = tmp_path / "b"
    whole = _model()
    whole.fit(x, y, **FIT)
    with pytest.raises(KeyboardInterrupt):
        _model().fit(x, y, callbacks=[BackupAndRestore(str(d), double_checkpoint=True),
                                      _Interrupt(12)], **FIT)
    newest = d / "backup-epoch2-batch0.safetensors"
    raw = bytearray(newest.read_bytes())
    raw[-1] ^= 0xFF  # a flipped bit in the last tensor: its CRC32 no longer matches
    newest.write_bytes(bytes(raw))
    (d / ".backup-epoch3-batch0.safetensors.x1y2.tmp").write_bytes(b"half a file")
    model = _model()
    with pytest.warns(UserWarning, match="cannot restore the backup .*epoch2-batch0.*corrupted"):
        h = model.fit(x, y, callbacks=[BackupAndRestore(str(d), delete_checkpoint=False)],
                      **FIT)
    assert h.epoch == [1, 2, 3]
    _assert_same(whole, model)
    assert os.listdir(d) == ["backup-epoch4-batch0.safetensors"]  # the stray .tmp removed
    newest = d / "backup-epoch4-batch0.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.raises(ValueError, match="BackupAndRestore: cannot restore the backup "
                                         ".*epoch4-batch0.safetensors'.*truncated.*delete it"):
        _model().fit(x, y, callbacks=[BackupAndRestore(str(d))], **FIT)


@pytest.mark.parametrize("factory, arg, err", [
    (lambda p: BackupAndRestore(3), "backup_dir", TypeError),
    (lambda p: BackupAndRestore(""), "backup_dir", ValueError),
    (lambda p: BackupAndRestore(p / "file"), "backup_dir", ValueError),
    (lambda p: BackupAndRestore(p, save_freq="batch"), "save_freq", ValueError),
    (lambda p: BackupAndRestore(p, save_freq=0), "save_freq", ValueError),
    (lambda p: BackupAndRestore(p, save_freq=1.5), "save_freq", TypeError),
    (lambda p: BackupAndRestore(p, save_freq=True), "save_freq", TypeError),
    (lambda p: BackupAndRestore(p, delete_checkpoint="yes"), "delete_checkpoint", TypeError),
    (lambda p: BackupAndRestore(p, double_checkpoint=1), "double_checkpoint", TypeError),
])
def test_bad_arguments(tmp_path, factory, arg, err):
    (tmp_path / "file").write_text("")
    with pytest.raises(err, match=f"^BackupAndRestore: {arg}"):
        factory(tmp_path)


def test_exported():
    assert "BackupAndRestore" in fd.callbacks.__all__
    cb = BackupAndRestore("backups")
    assert (cb.backup_dir, cb.save_freq, cb.delete_checkpoint) == ("backups", "epoch", True)


# ------------------------------------------------------- failed writes


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["replace", "fsync"])
def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch, where):
    """The disk fills while a checkpoint is written (at its flush, or its
    rename): the error names the callback and the file, keeps its class and
    errno, the previous file is intact and the temporary one is gone."""
    x, y = _data()
    path = tmp_path / "ckpt.safetensors"
    model = _model()
    model.fit(x, y, callbacks=[fd.callbacks.ModelCheckpoint(str(path))], **dict(FIT, epochs=1))
    before = path.read_bytes()
    monkeypatch.setattr(saving.safetensors.os, where, _no_space)
    with pytest.raises(OSError, match=r"^ModelCheckpoint: cannot write '.*ckpt.safetensors': "
                                      r"\[Errno 28\] No space left on device; the file there "
                                      r"before, if any, is left as it was") as info:
        model.fit(x, y, callbacks=[fd.callbacks.ModelCheckpoint(str(path))],
                  **dict(FIT, epochs=2, initial_epoch=1, seed=None))
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ckpt.safetensors"] and path.read_bytes() == before
    fd.models.load(path)


def test_a_full_disk_keeps_the_previous_backup(tmp_path, monkeypatch):
    x, y = _data()
    whole = _model()
    whole.fit(x, y, **FIT)
    d = tmp_path / "b"
    model = _model()
    real = saving.safetensors.os.replace
    calls = []

    def replace(src, dst):  # the disk is full from the third backup on
        calls.append(dst)
        if len(calls) > 2:
            _no_space()
        real(src, dst)

    monkeypatch.setattr(saving.safetensors.os, "replace", replace)
    with pytest.raises(OSError, match="^BackupAndRestore: cannot write .*backup-epoch3-batch0"
                                      ".safetensors': .*No space") as info:
        model.fit(x, y, callbacks=[BackupAndRestore(str(d))], **FIT)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert os.listdir(d) == ["backup-epoch2-batch0.safetensors"]
    model = _model(draw=1)
    assert model.fit(x, y, callbacks=[BackupAndRestore(str(d))], **FIT).epoch == [2, 3]
    _assert_same(whole, model)


def test_a_file_where_a_directory_should_be(tmp_path):
    """Root ignores permission bits, a file in the path refuses everyone."""
    x, y = _data()
    (tmp_path / "file").write_text("")
    model = _model()
    for cb, name in ((fd.callbacks.ModelCheckpoint(str(tmp_path / "file" / "c.safetensors")),
                      "ModelCheckpoint"),
                     (fd.callbacks.ModelCheckpoint(str(tmp_path / "file" / "c.npz"),
                                                   save_weights_only=True), "ModelCheckpoint"),
                     (BackupAndRestore(str(tmp_path / "file" / "b")), "BackupAndRestore")):
        with pytest.raises(OSError, match=f"^{name}: cannot write '.*file/.*': .*file"):
            model.fit(x, y, callbacks=[cb], **FIT)
    assert os.listdir(tmp_path) == ["file"] and (tmp_path / "file").read_text() == ""


# ------------------------------------------------------------ kill -9

EPOCHS, BATCH = 5, 16
TOTAL = EPOCHS * STEPS      # training steps of the whole fit
GUARD = TOTAL - 2           # a killed child stops (sleeps) after this step: kills land in fit
KILLS = 20
INTERVALS = {"backup_batch": 3, "backup_epoch": STEPS, "ckpt_epoch.safetensors": STEPS,
             "ckpt_batch.safetensors": 2}  # batches between two saves of each

_CHILD = f'''
import os, sys, time
import numpy as np
import fusednn as fd

mode, work = sys.argv[1], sys.argv[2]
init = fd.initializers
rng = np.random.default_rng(0)
x = rng.standard_normal((96, 6))
y = np.argmax(x @ rng.standard_normal((6, 3)), axis=1)
FIT = dict(epochs={EPOCHS}, batch_size={BATCH}, validation_split=0.25, verbose=0)


def make():
    np.random.seed(0)  # the Dropout's seed
    model = fd.Sequential([
        fd.layers.Dense(16, kernel_initializer=init.HeNormal(seed=1)),
        fd.layers.BatchNormalization(), fd.layers.ELU(), fd.layers.Dropout(0.2),
        fd.layers.Dense(3, activation="softmax", kernel_initializer=init.GlorotUniform(seed=2))])
    sched = fd.schedules.ExponentialDecay(0.01, decay_steps=5, decay_rate=0.9)
    model.compile(fd.optimizers.Nadam(learning_rate=sched), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def at(name):
    return os.path.join(work, name)


def backup(name, freq):
    return fd.callbacks.BackupAndRestore(at(name), save_freq=freq)


class Progress(fd.callbacks.Callback):
    """Reports each step done, before the checkpoints of that step."""

    def __init__(self, record=None):
        super().__init__()
        self.record = record

    def on_train_begin(self, logs=None):
        if self.record is not None:
            self.record[0] = self.model.get_weights()

    def on_train_batch_end(self, batch, logs=None):
        n = self.model.optimizer.iterations
        if self.record is not None:
            self.record[n] = self.model.get_weights()
            return
        sys.stdout.write(f"{{n}}\\n")
        sys.stdout.flush()
        if n >= {GUARD}:
            time.sleep(600)  # the parent kills it here at the latest


out = {{}}
if mode == "reference":
    record = {{}}
    make().fit(x, y, seed=0, callbacks=[Progress(record)], **FIT)
    out = {{f"s{{s}}_{{i}}": w for s, ws in record.items() for i, w in enumerate(ws)}}
elif mode == "kill":
    make().fit(x, y, seed=0, callbacks=[
        Progress(), backup("backup_batch", 3), backup("backup_epoch", "epoch"),
        fd.callbacks.ModelCheckpoint(at("ckpt_epoch.safetensors")),
        fd.callbacks.ModelCheckpoint(at("ckpt_batch.safetensors"), save_freq=2)], **FIT)
    print("finished")
else:  # resume: each way, the same line as the killed fit
    for name, freq in (("backup_batch", 3), ("backup_epoch", "epoch")):
        model = make()
        h = model.fit(x, y, seed=0, callbacks=[backup(name, freq)], **FIT)
        out.update({{f"{{name}}_{{i}}": w for i, w in enumerate(model.get_weights())}})
        out[name + "_first_epoch"] = np.array(h.epoch[0])
    path = at("ckpt_epoch.safetensors")
    if os.path.exists(path):
        model = fd.models.load(path)
        done = model.optimizer.iterations // {STEPS}
        h = model.fit(x, y, initial_epoch=done, **FIT)
    else:
        model = make()
        h = model.fit(x, y, seed=0, **FIT)
    out.update({{f"ckpt_epoch_{{i}}": w for i, w in enumerate(model.get_weights())}})
    out["ckpt_epoch_first_epoch"] = np.array(h.epoch[0])
np.savez(at(mode + ".npz"), **out)
'''


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(fd.__file__)), env.get("PYTHONPATH", "")])
    # one thread: the same sums in every process, and room on a small machine
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _run(script, mode, work):
    done = subprocess.run([sys.executable, str(script), mode, str(work)], env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(work / f"{mode}.npz") as f:
        return dict(f)


def _kill_at(script, work, target, delay):
    """Start a killed-mode child, SIGKILL it `delay` seconds after it reports
    step `target`; the last step it reported."""
    with open(work / "stderr.txt", "w") as err:
        p = subprocess.Popen([sys.executable, str(script), "kill", str(work)], env=_env(),
                             stdout=subprocess.PIPE, stderr=err)
    last, buf, deadline = 0, b"", time.monotonic() + 60
    try:
        fd_out = p.stdout.fileno()
        while last < target:
            ready, _, _ = select.select([fd_out], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(fd_out, 4096) if ready else b""
            assert chunk, f"the child stopped at step {last}: " + \
                (work / "stderr.txt").read_text()[-3000:]
            buf += chunk
            *lines, buf = buf.split(b"\n")
            last = max([last] + [int(s) for s in lines])
        time.sleep(delay)
    finally:
        os.kill(p.pid, signal.SIGKILL)
        rest = p.stdout.read()
        p.stdout.close()
        p.wait()
    assert p.returncode == -signal.SIGKILL and b"finished" not in rest
    lines = (buf + rest).split(b"\n")
    return max([last] + [int(s) for s in lines if s.strip().isdigit()])


def _check_on_disk(work, name, last, ref):
    """The checkpoint or newest backup `name` in `work` after a kill at
    step `last`: loads, is the uninterrupted fit's state at some step s
    (weights bit-identical), no later than `last` and at most one save
    interval behind it; None when no save was due yet. Returns s."""
    interval = INTERVALS[name]
    path = work / name
    if name.startswith("backup"):
        files = _backups(path) if path.exists() else []
        assert len(files) <= 2, files  # a kill between a write and the older one's deletion
        if not files:
            assert last <= interval, f"{name}: no backup after step {last}"
            return None
        epoch, batch = max(tuple(int(v) for v in f[len("backup-epoch"):-len(".safetensors")]
                                 .split("-batch")) for f in files)
        path = path / f"backup-epoch{epoch}-batch{batch}.safetensors"
    elif not path.exists():
        assert last <= interval, f"{name}: no checkpoint after step {last}"
        return None
    model = fd.models.load(path)
    s = model.optimizer.iterations
    assert 0 < s <= last and last - s <= interval, (name, s, last)
    weights = model.get_weights()
    for i, w in enumerate(weights):
        assert np.array_equal(w, ref[f"s{s}_{i}"]), (name, s, i)
    if name.startswith("backup"):
        assert s == epoch * STEPS + batch
    if "epoch" in name:
        assert s % STEPS == 0
    return s


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL and select on pipes: POSIX")
def test_sigkill_at_random_moments_then_resume_bit_exact(tmp_path):
    """KILLS fits, each with two BackupAndRestore (every 3 batches, every
    epoch) and two ModelCheckpoint (every epoch, every 2 batches), killed
    with SIGKILL at a seeded random moment inside fit; after each kill every
    file on disk is a complete earlier state, and a fresh process that runs
    the same fit line (BackupAndRestore) or loads the epoch checkpoint and
    fits with initial_epoch ends bit-identical to an uninterrupted fit."""
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    ref = _run(script, "reference", tmp_path)
    final = [ref[f"s{TOTAL}_{i}"] for i in range(sum(1 for k in ref if k.startswith("s0_")))]
    rng = np.random.default_rng(19)
    torn, resumed_mid_epoch = 0, 0
    for k in range(KILLS):
        work = tmp_path / f"kill{k}"
        work.mkdir()
        target = int(rng.integers(1, GUARD))
        last = _kill_at(script, work, target, float(rng.uniform(0.0, 0.02)))
        assert target <= last <= GUARD
        torn += any(n.endswith(".tmp") for _, _, names in os.walk(work) for n in names)
        steps = {name: _check_on_disk(work, name, last, ref) for name in INTERVALS}
        got = _run(script, "resume", work)
        for way in ("backup_batch", "backup_epoch", "ckpt_epoch"):
            for i, w in enumerate(final):
                assert np.array_equal(got[f"{way}_{i}"], w), (k, target, last, way, i)
            s = steps[way if way != "ckpt_epoch" else "ckpt_epoch.safetensors"]
            assert got[f"{way}_first_epoch"] == (s or 0) // STEPS
        resumed_mid_epoch += (steps["backup_batch"] or 0) % STEPS != 0
        assert not (work / "backup_batch").exists() and not (work / "backup_epoch").exists()
    # the seeded kill points cover resumes inside epochs; `torn` counts the kills
    # that landed inside a write (left a temporary file), which vary with timing
    assert resumed_mid_epoch >= KILLS // 4
    print(f"{KILLS} kills, {3 * KILLS} resumes bit-identical; {resumed_mid_epoch} resumed "
          f"inside an epoch; {torn} kills left a half-written temporary file")
