"""fd.callbacks: Keras 3 semantics, through direct hook calls on a fake model
(exact sequences of logs) and through small real fits."""

import csv
import math
import os
import warnings

import numpy as np
import pytest

import fusednn as fd
from fusednn import callbacks as cbs


class FakeOptimizer:
    def __init__(self, lr):
        self.learning_rate = lr


class FakeModel:
    """What a callback sees: stop_training, optimizer, get/set_weights."""

    def __init__(self, lr=0.1):
        self.stop_training = False
        self.optimizer = FakeOptimizer(lr)
        self.w = [np.zeros(3, np.float32)]

    def get_weights(self):
        return [a.copy() for a in self.w]

    def set_weights(self, ws):
        self.w = [np.array(a) for a in ws]


def drive(cb, values, key="val_loss", model=None, weights_per_epoch=False):
    """on_train_begin, then one epoch end per value; returns the epochs run."""
    model = model or FakeModel()
    cb.set_model(model)
    cb.on_train_begin({})
    run = 0
    for epoch, v in enumerate(values):
        if weights_per_epoch:
            model.w = [np.full(3, epoch, np.float32)]
        cb.on_epoch_begin(epoch, {})
        cb.on_epoch_end(epoch, {key: v})
        run += 1
        if model.stop_training:
            break
    cb.on_train_end({})
    return run


def data(n=200, d=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    return x, y


def model(lr=0.05, optimizer=None):
    m = fd.Sequential([fd.layers.Dense(8, activation="relu"),
                       fd.layers.Dense(2, activation="softmax")])
    m.compile(optimizer=optimizer or fd.optimizers.SGD(learning_rate=lr),
              loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


# ----------------------------------------------------------- EarlyStopping


def test_early_stopping_patience():
    # best at epoch 1; patience 2 -> stops at epoch 3 (two epochs without improvement)
    cb = cbs.EarlyStopping(patience=2)
    assert drive(cb, [1.0, 0.5, 0.6, 0.7, 0.1, 0.1]) == 4
    assert cb.stopped_epoch == 3 and cb.best == 0.5 and cb.best_epoch == 1
    # patience 0: stops at the first epoch without improvement (never at epoch 0)
    cb = cbs.EarlyStopping()
    assert drive(cb, [1.0, 0.9, 0.95, 0.1]) == 3
    assert cb.stopped_epoch == 2
    # steady improvement: never stops
    cb = cbs.EarlyStopping(patience=1)
    assert drive(cb, [5, 4, 3, 2, 1]) == 5 and cb.stopped_epoch == 0


def test_early_stopping_min_delta():
    # improvements of 0.05 do not count with min_delta=0.1 (min_delta sign ignored, as Keras)
    for md in (0.1, -0.1):
        cb = cbs.EarlyStopping(min_delta=md, patience=1)
        assert drive(cb, [1.0, 0.95, 0.9, 0.85]) == 2
        assert cb.best == 1.0
    cb = cbs.EarlyStopping(min_delta=0.01, patience=1)
    assert drive(cb, [1.0, 0.95, 0.9, 0.85]) == 4


def test_early_stopping_mode_max_for_accuracy():
    cb = cbs.EarlyStopping(monitor="val_accuracy", patience=1)  # auto -> max
    assert drive(cb, [0.5, 0.7, 0.6, 0.9], key="val_accuracy") == 3
    assert cb.best == 0.7
    cb = cbs.EarlyStopping(monitor="val_loss", mode="max", patience=0)
    assert drive(cb, [0.5, 0.7, 0.6], key="val_loss") == 3 and cb.best == 0.7
    cb = cbs.EarlyStopping(monitor="val_accuracy", mode="min", patience=0)
    assert drive(cb, [0.5, 0.7], key="val_accuracy") == 2


def test_early_stopping_baseline():
    # the baseline 0.5 is never beaten: improving epochs do not reset the wait
    # (Keras 3), so the first epoch without improvement after `patience` stops
    cb = cbs.EarlyStopping(patience=2, baseline=0.5)
    assert drive(cb, [0.9, 0.8, 0.85, 0.1]) == 3
    assert cb.stopped_epoch == 2 and cb.best == 0.8
    assert drive(cbs.EarlyStopping(patience=2), [0.9, 0.8, 0.85, 0.1]) == 4
    # beaten at epoch 1: waiting restarts there
    cb = cbs.EarlyStopping(patience=2, baseline=0.5)
    assert drive(cb, [0.9, 0.4, 0.45, 0.46, 0.47]) == 4
    assert cb.stopped_epoch == 3


def test_early_stopping_start_from_epoch():
    cb = cbs.EarlyStopping(patience=0, start_from_epoch=3)
    # epochs 0..2 are ignored although they get worse
    assert drive(cb, [0.1, 0.5, 0.9, 1.0, 0.8, 0.85]) == 6
    assert cb.best == 0.8 and cb.best_epoch == 4


def test_early_stopping_missing_monitor_warns():
    cb = cbs.EarlyStopping(monitor="val_loss")
    with pytest.warns(UserWarning, match="val_loss"):
        assert drive(cb, [1.0, 2.0, 3.0], key="loss") == 3
    assert cb.best is None and cb.stopped_epoch == 0


def test_early_stopping_restore_best_weights_fake():
    m = FakeModel()
    cb = cbs.EarlyStopping(patience=2, restore_best_weights=True)
    drive(cb, [1.0, 0.3, 0.5, 0.6, 0.7], model=m, weights_per_epoch=True)
    np.testing.assert_array_equal(m.w[0], np.full(3, 1.0))
    # Keras 3: restored at the end of training also without an early stop
    m = FakeModel()
    cb = cbs.EarlyStopping(patience=10, restore_best_weights=True)
    drive(cb, [1.0, 0.3, 0.5], model=m, weights_per_epoch=True)
    assert cb.stopped_epoch == 0
    np.testing.assert_array_equal(m.w[0], np.full(3, 1.0))
    # without restore_best_weights: the last weights stay
    m = FakeModel()
    drive(cbs.EarlyStopping(patience=1), [1.0, 0.3, 0.5, 0.6], model=m, weights_per_epoch=True)
    np.testing.assert_array_equal(m.w[0], np.full(3, 2.0))  # stopped at epoch 2


class Recorder(fd.callbacks.Callback):
    """Keeps each epoch's weights and logs (runs before EarlyStopping)."""

    def __init__(self):
        super().__init__()
        self.weights, self.logs = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())
        self.logs.append(dict(logs))


def test_early_stopping_restore_best_weights_fit():
    x, y = data()
    m = model(lr=0.5)
    rec = Recorder()
    es = cbs.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    # validation labels flipped: the better the fit, the worse val_loss
    hist = m.fit(x[:150], y[:150], epochs=12, batch_size=50, verbose=0, seed=1,
                 validation_data=(x[150:], 1 - y[150:]), callbacks=[rec, es])
    vals = hist.history["val_loss"]
    assert len(vals) == 3 and es.stopped_epoch == 2 and vals[2] > vals[1] > vals[0]
    assert es.best_epoch == 0 and es.best == vals[0]
    for a, b, last in zip(m.get_weights(), rec.weights[0], rec.weights[-1]):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, last)


# ------------------------------------------------------- ReduceLROnPlateau


def test_reduce_lr_factor_after_patience():
    m = FakeModel(lr=1.0)
    cb = cbs.ReduceLROnPlateau(factor=0.5, patience=2)
    cb.set_model(m)
    cb.on_train_begin({})
    lrs = []
    for e, v in enumerate([1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5]):
        logs = {"val_loss": v}
        cb.on_epoch_end(e, logs)
        assert logs["learning_rate"] == lrs[-1] if lrs else logs["learning_rate"] == 1.0
        lrs.append(m.optimizer.learning_rate)
    # no improvement at epochs 1, 2 -> reduce at 2; epochs 3, 4 -> reduce at 4; 5 improves
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125]


def test_reduce_lr_min_delta_and_mode_max():
    m = FakeModel(lr=1.0)
    cb = cbs.ReduceLROnPlateau(factor=0.1, patience=1, min_delta=0.1)
    cb.set_model(m)
    cb.on_train_begin({})
    cb.on_epoch_end(0, {"val_loss": 1.0})
    cb.on_epoch_end(1, {"val_loss": 0.95})  # not enough improvement
    assert m.optimizer.learning_rate == pytest.approx(0.1)
    m = FakeModel(lr=1.0)
    cb = cbs.ReduceLROnPlateau(monitor="val_accuracy", factor=0.5, patience=1)
    cb.set_model(m)
    cb.on_train_begin({})
    for e, v in enumerate([0.5, 0.6, 0.7]):
        cb.on_epoch_end(e, {"val_accuracy": v})
    assert m.optimizer.learning_rate == 1.0  # accuracy rising: auto picks max
    cb.on_epoch_end(3, {"val_accuracy": 0.65})
    assert m.optimizer.learning_rate == 0.5


def test_reduce_lr_cooldown_and_min_lr():
    m = FakeModel(lr=1.0)
    cb = cbs.ReduceLROnPlateau(factor=0.5, patience=1, cooldown=2, min_lr=0.2)
    cb.set_model(m)
    cb.on_train_begin({})
    lrs = []
    for e in range(10):
        cb.on_epoch_end(e, {"val_loss": 1.0})
        lrs.append(m.optimizer.learning_rate)
    # Keras' counting: reduce at 1; the cooldown counter (2) is spent at epochs
    # 2 and 3, and epoch 3 already counts towards patience -> reduce at 3, 5;
    # then the floor min_lr 0.2 (0.125 -> 0.2) and no further reduction
    assert lrs == [1.0, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2, 0.2, 0.2, 0.2]


def test_reduce_lr_schedule_errors():
    sched = fd.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    m = FakeModel(lr=sched)
    cb = cbs.ReduceLROnPlateau()
    cb.set_model(m)
    with pytest.raises(TypeError, match="ReduceLROnPlateau.*schedule"):
        cb.on_train_begin({})
    x, y = data(40)
    with pytest.raises(TypeError, match="ReduceLROnPlateau.*schedule"):
        model(optimizer=fd.optimizers.SGD(learning_rate=sched)).fit(
            x, y, epochs=1, verbose=0, callbacks=[cbs.ReduceLROnPlateau()])


def test_reduce_lr_fit():
    x, y = data()
    m = model(lr=0.05)
    cb = cbs.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=10.0)
    m.fit(x, y, epochs=3, batch_size=50, verbose=0, callbacks=[cb])
    # min_delta 10: no epoch counts as an improvement after the first
    assert m.optimizer.learning_rate == pytest.approx(0.05 * 0.25)


# --------------------------------------------------- LearningRateScheduler


def test_lr_scheduler_sets_lr_each_epoch():
    m = FakeModel(lr=1.0)
    cb = cbs.LearningRateScheduler(lambda epoch, lr: lr * 0.5)
    cb.set_model(m)
    seen = []
    for e in range(3):
        cb.on_epoch_begin(e, {})
        seen.append(m.optimizer.learning_rate)
        logs = {}
        cb.on_epoch_end(e, logs)
        assert logs["learning_rate"] == seen[-1]
    assert seen == [0.5, 0.25, 0.125]
    cb = cbs.LearningRateScheduler(lambda epoch: 0.1 * (epoch + 1))  # one-argument form
    cb.set_model(m)
    cb.on_epoch_begin(2, {})
    assert m.optimizer.learning_rate == pytest.approx(0.3)


class LrSpy(fd.callbacks.Callback):
    """Records the optimizer's rate at each batch (what the step uses)."""

    def __init__(self):
        super().__init__()
        self.lrs = []

    def on_train_batch_begin(self, batch, logs=None):
        self.lrs.append(self.model.optimizer.current_learning_rate())


def test_lr_scheduler_fit_uses_the_rate():
    x, y = data()
    m = model(lr=0.05)
    spy = LrSpy()
    sched = cbs.LearningRateScheduler(lambda epoch: [0.1, 0.01, 0.0][epoch])
    m.fit(x, y, epochs=3, batch_size=100, verbose=0, callbacks=[sched, spy])
    assert spy.lrs == [0.1, 0.1, 0.01, 0.01, 0.0, 0.0]
    assert m.optimizer.learning_rate == 0.0
    # with lr 0 in the last epoch the weights do not move
    w = m.get_weights()
    m.fit(x, y, epochs=1, batch_size=100, verbose=0,
          callbacks=[cbs.LearningRateScheduler(lambda e, lr: 0.0)])
    for a, b in zip(w, m.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_lr_scheduler_bad_output():
    m = FakeModel()
    for bad, err in ((lambda e: "x", TypeError), (lambda e: -1.0, ValueError),
                     (lambda e: math.nan, ValueError)):
        cb = cbs.LearningRateScheduler(bad)
        cb.set_model(m)
        with pytest.raises(err, match="LearningRateScheduler"):
            cb.on_epoch_begin(0, {})


# -------------------------------------------------------- ModelCheckpoint


def test_checkpoint_save_best_only(tmp_path):
    m = FakeModel()
    path = str(tmp_path / "best.npz")
    cb = cbs.ModelCheckpoint(path, save_best_only=True)
    cb.set_model(m)
    cb.on_train_begin({})
    written = []
    m2 = FakeModel()
    for e, v in enumerate([1.0, 0.5, 0.7, 0.4, 0.4]):
        m.w = [np.full(3, e, np.float32)]
        cb.on_epoch_end(e, {"val_loss": v})
        cbs.load_weights(m2, path)
        written.append(float(m2.w[0][0]))
    assert written == [0.0, 1.0, 1.0, 3.0, 3.0]
    assert os.listdir(tmp_path) == ["best.npz"]
    assert cb.best == 0.4
    m2 = FakeModel()
    cbs.load_weights(m2, path)
    np.testing.assert_array_equal(m2.w[0], np.full(3, 3.0))


def test_checkpoint_filepath_format(tmp_path):
    m = FakeModel()
    cb = cbs.ModelCheckpoint(str(tmp_path / "sub" / "w-{epoch:02d}-{val_loss:.2f}.npz"))
    drive(cb, [0.5, 0.25], model=m)
    assert sorted(os.listdir(tmp_path / "sub")) == ["w-01-0.50.npz", "w-02-0.25.npz"]
    cb = cbs.ModelCheckpoint(str(tmp_path / "{nope}.npz"))
    with pytest.raises(KeyError, match="ModelCheckpoint.*nope"):
        drive(cb, [0.5], model=m)
    # an int save_freq saves every N batches, with epoch and batch in the name
    cb = cbs.ModelCheckpoint(str(tmp_path / "b-{epoch}-{batch}.npz"), save_freq=2)
    cb.set_model(m)
    cb.on_train_begin({})
    for e in range(2):
        cb.on_epoch_begin(e, {})
        for b in range(3):
            cb.on_train_batch_end(b, {"loss": 1.0})
        cb.on_epoch_end(e, {"loss": 1.0})
    assert sorted(f for f in os.listdir(tmp_path) if f.startswith("b-")) == \
        ["b-1-2.npz", "b-2-1.npz", "b-2-3.npz"]


def test_checkpoint_roundtrip_fit(tmp_path):
    x, y = data()
    m = model()
    path = str(tmp_path / "ckpt-{epoch}.npz")
    m.fit(x, y, epochs=2, batch_size=50, verbose=0, validation_split=0.2,
          callbacks=[cbs.ModelCheckpoint(path)])
    files = sorted(os.listdir(tmp_path))
    assert files == ["ckpt-1.npz", "ckpt-2.npz"]  # no temporary file left behind
    with np.load(tmp_path / "ckpt-2.npz", allow_pickle=False) as z:
        assert sorted(z.files) == [f"weight_{i}" for i in range(4)]
    m2 = model()
    m2.build(4)
    cbs.load_weights(m2, str(tmp_path / "ckpt-2.npz"))
    np.testing.assert_array_equal(m.predict(x), m2.predict(x))


def test_checkpoint_uses_model_save(tmp_path):
    class Saver(FakeModel):
        def __init__(self):
            super().__init__()
            self.saved = []

        def save(self, path):
            self.saved.append(path)

    m = Saver()
    drive(cbs.ModelCheckpoint(str(tmp_path / "m{epoch}.keras")), [1.0], model=m)
    assert m.saved == [str(tmp_path / "m1.keras")]
    drive(cbs.ModelCheckpoint(str(tmp_path / "w.npz"), save_weights_only=True), [1.0], model=m)
    assert len(m.saved) == 1 and os.path.exists(tmp_path / "w.npz")


def test_checkpoint_missing_monitor_warns(tmp_path):
    cb = cbs.ModelCheckpoint(str(tmp_path / "w.npz"), save_best_only=True)
    with pytest.warns(UserWarning, match="val_loss"):
        drive(cb, [1.0], key="loss")
    assert not os.listdir(tmp_path)


def test_load_weights_rejects_malformed(tmp_path):
    m = FakeModel()
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="load_weights"):
        cbs.load_weights(m, str(junk))
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ValueError, match="single array"):
        cbs.load_weights(m, str(single))
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, foo=np.zeros(3))
    with pytest.raises(ValueError, match="not a weights file"):
        cbs.load_weights(m, str(wrong))
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, weight_0=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="load_weights"):
        cbs.load_weights(m, str(pickled))
    shape = tmp_path / "shape.npz"
    np.savez(shape, weight_0=np.zeros(4))
    with pytest.raises(ValueError, match="shape"):
        cbs.load_weights(m, str(shape))
    count = tmp_path / "count.npz"
    np.savez(count, weight_0=np.zeros(3), weight_1=np.zeros(3))
    with pytest.raises(ValueError, match="holds 2 weights"):
        cbs.load_weights(m, str(count))
    with pytest.raises(FileNotFoundError):
        cbs.load_weights(m, str(tmp_path / "missing.npz"))
    # .npz is a zip, which keeps a CRC32 per array: a corrupted byte is refused
    good = tmp_path / "good.npz"
    np.savez(good, weight_0=np.full(3, 0.5))
    raw = bytearray(good.read_bytes())
    raw[raw.index(np.full(3, 0.5).tobytes()) + 2] ^= 0x01
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"load_weights: .*corrupt.npz.*CRC"):
        cbs.load_weights(m, str(corrupt))
    np.testing.assert_array_equal(m.w[0], np.zeros(3))  # untouched


# ----------------------------------------------------------- TerminateOnNaN


def test_terminate_on_nan_fake():
    m = FakeModel()
    cb = cbs.TerminateOnNaN()
    cb.set_model(m)
    cb.on_train_batch_end(0, {"loss": 1.0})
    cb.on_train_batch_end(1, {})
    assert not m.stop_training
    cb.on_train_batch_end(2, {"loss": math.inf})
    assert m.stop_training
    m.stop_training = False
    cb.on_train_batch_end(3, {"loss": float("nan")})
    assert m.stop_training


def test_terminate_on_nan_fit():
    x, y = data()
    x = x * 1e3
    m = fd.Sequential([fd.layers.Dense(8), fd.layers.Dense(1)])
    m.compile(optimizer=fd.optimizers.SGD(learning_rate=1e6), loss="mse")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            hist = m.fit(x, y.astype(np.float32), epochs=5, batch_size=10, verbose=0,
                         callbacks=[cbs.TerminateOnNaN()])
    assert len(hist.epoch) == 1
    assert not math.isfinite(hist.history["loss"][0])


# --------------------------------------------------------------- CSVLogger


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_csv_logger_fit_and_append(tmp_path):
    x, y = data()
    path = str(tmp_path / "log.csv")
    model().fit(x, y, epochs=3, batch_size=50, verbose=0, validation_split=0.2,
                callbacks=[cbs.CSVLogger(path)])
    rows = read_csv(path)
    assert rows[0] == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"]
    assert all(len(r) == 5 and math.isfinite(float(r[2])) for r in rows[1:])
    model().fit(x, y, epochs=2, batch_size=50, verbose=0, validation_split=0.2,
                callbacks=[cbs.CSVLogger(path, append=True)])
    rows = read_csv(path)
    assert len(rows) == 6 and rows.count(rows[0]) == 1  # header once
    # without append the file starts over; a separator
    model().fit(x, y, epochs=1, batch_size=50, verbose=0,
                callbacks=[cbs.CSVLogger(path, separator=";")])
    with open(path) as f:
        lines = f.read().splitlines()
    assert lines[0] == "epoch;accuracy;loss" and len(lines) == 2


def test_csv_logger_flushes_each_epoch(tmp_path):
    path = str(tmp_path / "log.csv")
    cb = cbs.CSVLogger(path)
    cb.set_model(FakeModel())
    cb.on_train_begin({})
    cb.on_epoch_end(0, {"loss": 1.5, "a": 2})
    assert read_csv(path) == [["epoch", "a", "loss"], ["0", "2", "1.5"]]
    cb.on_epoch_end(1, {"loss": 1.0})
    assert read_csv(path)[2] == ["1", "NA", "1.0"]
    cb.on_train_end({})
    assert cb.csv_file is None


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize("factory, arg, err", [
    (lambda: cbs.EarlyStopping(patience=-1), "patience", ValueError),
    (lambda: cbs.EarlyStopping(patience=1.5), "patience", TypeError),
    (lambda: cbs.EarlyStopping(mode="up"), "mode", ValueError),
    (lambda: cbs.EarlyStopping(monitor=3), "monitor", TypeError),
    (lambda: cbs.EarlyStopping(min_delta="a"), "min_delta", TypeError),
    (lambda: cbs.EarlyStopping(baseline=math.nan), "baseline", ValueError),
    (lambda: cbs.EarlyStopping(restore_best_weights=1), "restore_best_weights", TypeError),
    (lambda: cbs.EarlyStopping(start_from_epoch=-2), "start_from_epoch", ValueError),
    (lambda: cbs.EarlyStopping(verbose=True), "verbose", TypeError),
    (lambda: cbs.ReduceLROnPlateau(factor=1.0), "factor", ValueError),
    (lambda: cbs.ReduceLROnPlateau(factor=-0.1), "factor", ValueError),
    (lambda: cbs.ReduceLROnPlateau(patience=None), "patience", TypeError),
    (lambda: cbs.ReduceLROnPlateau(min_delta=-1), "min_delta", ValueError),
    (lambda: cbs.ReduceLROnPlateau(cooldown=-1), "cooldown", ValueError),
    (lambda: cbs.ReduceLROnPlateau(min_lr=-1e-3), "min_lr", ValueError),
    (lambda: cbs.ReduceLROnPlateau(mode="MAX"), "mode", ValueError),
    (lambda: cbs.LearningRateScheduler(0.1), "schedule", TypeError),
    (lambda: cbs.LearningRateScheduler(lambda e: 0.1, verbose=-1), "verbose", ValueError),
    (lambda: cbs.ModelCheckpoint(3), "filepath", TypeError),
    (lambda: cbs.ModelCheckpoint(""), "filepath", ValueError),
    (lambda: cbs.ModelCheckpoint("w.npz", save_freq="batch"), "save_freq", ValueError),
    (lambda: cbs.ModelCheckpoint("w.npz", save_freq=0), "save_freq", ValueError),
    (lambda: cbs.ModelCheckpoint("w.npz", save_best_only="yes"), "save_best_only", TypeError),
    (lambda: cbs.ModelCheckpoint("w.npz", save_weights_only=None), "save_weights_only",
     TypeError),
    (lambda: cbs.ModelCheckpoint("w.npz", mode=None), "mode", ValueError),
    (lambda: cbs.CSVLogger(None), "filename", TypeError),
    (lambda: cbs.CSVLogger("a.csv", separator=",,"), "separator", ValueError),
    (lambda: cbs.CSVLogger("a.csv", append="no"), "append", TypeError),
])
def test_bad_arguments(factory, arg, err):
    with pytest.raises(err) as info:
        factory()
    msg = str(info.value)
    assert msg.split(":")[0] in {"EarlyStopping", "ReduceLROnPlateau", "LearningRateScheduler",
                                 "ModelCheckpoint", "CSVLogger"}
    assert arg in msg


def test_exports():
    for name in ("EarlyStopping", "ReduceLROnPlateau", "LearningRateScheduler",
                 "ModelCheckpoint", "TerminateOnNaN", "CSVLogger", "load_weights", "Callback"):
        assert name in fd.callbacks.__all__ and hasattr(fd.callbacks, name)
    assert "History" not in fd.callbacks.__all__
