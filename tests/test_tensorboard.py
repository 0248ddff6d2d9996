"""fd.callbacks.TensorBoard: what it writes, read back with TensorBoard's
own EventAccumulator: the epoch and batch scalars at their steps against
the History, weight and gradient histograms of the right size, and the
GradientHealth records as scalars."""

import numpy as np
import pytest

import fusednn as fd

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

L = fd.layers


def _model():
    model = fd.Sequential([
        L.Dense(8, activation="relu", kernel_initializer=fd.initializers.HeNormal(0)),
        L.BatchNormalization(),
        L.Dense(3, activation="softmax", kernel_initializer=fd.initializers.GlorotUniform(1))])
    model.compile(optimizer=fd.optimizers.Adam(learning_rate=1e-2),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _data(n=80, d=5):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1).astype(np.int64)


def _read(path):
    acc = event_accumulator.EventAccumulator(str(path), size_guidance={
        event_accumulator.SCALARS: 0, event_accumulator.HISTOGRAMS: 0})
    acc.Reload()
    return acc


def _scalars(acc, tag):
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def _assert_series(events, steps, values):
    assert [s for s, _ in events] == list(steps)
    np.testing.assert_allclose([v for _, v in events], values, rtol=1e-6)


class _BatchLosses(fd.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(logs["loss"])


def test_epoch_scalars_and_histograms(tmp_path):
    x, y = _data()
    model = _model()
    tb = fd.callbacks.TensorBoard(log_dir=tmp_path, histogram_freq=2)
    history = model.fit(x, y, epochs=3, batch_size=16, validation_split=0.25, verbose=0,
                        callbacks=[tb])
    train, val = _read(tmp_path / "train"), _read(tmp_path / "validation")
    for name in ("loss", "accuracy"):
        _assert_series(_scalars(train, f"epoch_{name}"), [0, 1, 2], history.history[name])
        _assert_series(_scalars(val, f"epoch_{name}"), [0, 1, 2], history.history[f"val_{name}"])
    _assert_series(_scalars(train, "epoch_learning_rate"), [0, 1, 2], [1e-2] * 3)
    assert not any(t.startswith("batch_") for t in train.Tags()["scalars"])
    assert val.Tags()["histograms"] == []

    tags = train.Tags()["histograms"]
    for layer in model.layers:
        for name, w in zip(("kernel", "bias"), layer.weights) if isinstance(layer, L.Dense) \
                else zip(("gamma", "beta", "moving_mean", "moving_variance"), layer.weights):
            events = train.Histograms(f"{layer.name}/{name}/histogram")
            assert [e.step for e in events] == [0, 2]  # every histogram_freq epochs
            h = events[-1].histogram_value
            assert h.num == w.size
            assert h.min == pytest.approx(float(w.min())) and h.max == pytest.approx(
                float(w.max()))
        names = ("kernel", "bias") if isinstance(layer, L.Dense) else ("gamma", "beta")
        for name, g in zip(names, layer.grads):
            events = train.Histograms(f"{layer.name}/{name}/gradient")
            assert [e.step for e in events] == [0, 2]
            assert events[-1].histogram_value.num == g.size
    assert f"{model.layers[1].name}/moving_mean/gradient" not in tags


@pytest.mark.parametrize("update_freq, every", [("batch", 1), (2, 2)])
def test_batch_scalars(tmp_path, update_freq, every):
    x, y = _data()
    model = _model()
    losses = _BatchLosses()
    tb = fd.callbacks.TensorBoard(log_dir=str(tmp_path), update_freq=update_freq,
                                  write_steps_per_second=True)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[losses, tb])
    train = _read(tmp_path / "train")
    steps = [s for s in range(1, len(losses.losses) + 1) if s % every == 0]
    _assert_series(_scalars(train, "batch_loss"), steps, [losses.losses[s - 1] for s in steps])
    assert [s for s, _ in _scalars(train, "batch_steps_per_second")] == steps
    rates = _scalars(train, "epoch_steps_per_second")
    assert [s for s, _ in rates] == [0, 1] and all(v > 0 for _, v in rates)
    assert not (tmp_path / "validation").exists()

    # a second fit goes on from the optimizer's step count
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[tb])
    first = len(losses.losses)
    later = [s for s, _ in _scalars(_read(tmp_path / "train"), "batch_loss")]
    assert later[-1] == first + 5 - (first + 5) % every


class _FakeHealth(fd.callbacks.Callback):
    """Appends a GradientHealth-style record after every other batch."""

    def on_train_begin(self, logs=None):
        self.model.history.health = []
        self.step = 0
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % 2:
            return
        self.model.history.health.append({"epoch": self.epoch, "step": self.step, "layers": [
            {"name": "dense_x", "act_std": 1.0 + self.step, "grad_std": 1e-3 * self.step,
             "saturated": None, "dead": 0.25, "update_ratio": 1e-4 * self.step},
            {"name": "dense_y", "act_std": 2.0 * self.step, "grad_std": 1e-2,
             "saturated": 0.5, "dead": None, "update_ratio": None}]})


def test_health_scalars(tmp_path):
    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0,
              callbacks=[_FakeHealth(), fd.callbacks.TensorBoard(log_dir=tmp_path)])
    records = model.history.health
    assert len(records) == 5  # steps 2, 4, ..., 10 over 2 epochs of 5 batches
    train = _read(tmp_path / "train")
    steps = [r["step"] for r in records]
    for j, layer in enumerate(("dense_x", "dense_y")):
        for field in ("act_std", "grad_std", "saturated", "dead", "update_ratio"):
            values = [r["layers"][j][field] for r in records]
            tag = f"health/{layer}/{field}"
            if values[0] is None:
                assert tag not in train.Tags()["scalars"]
            else:
                _assert_series(_scalars(train, tag), steps, values)


def test_health_scalars_are_written_at_each_epoch_end(tmp_path):
    x, y = _data()
    model = _model()

    class Check(fd.callbacks.Callback):
        seen = []

        def on_epoch_end(self, epoch, logs=None):
            acc = _read(tmp_path / "train")
            Check.seen.append(len(acc.Scalars("health/dense_x/act_std")))

    # TensorBoard's epoch end runs before Check's, and has flushed the file
    model.fit(x, y, epochs=2, batch_size=16, verbose=0,
              callbacks=[_FakeHealth(), fd.callbacks.TensorBoard(log_dir=tmp_path), Check()])
    assert Check.seen == [2, 5]


@pytest.mark.parametrize("kwargs, err, match", [
    ({"log_dir": 3}, TypeError, "log_dir"),
    ({"log_dir": ""}, ValueError, "log_dir"),
    ({"histogram_freq": -1}, ValueError, "histogram_freq must be an int >= 0, got -1"),
    ({"histogram_freq": 1.5}, TypeError, "histogram_freq"),
    ({"update_freq": "step"}, ValueError, "update_freq must be 'epoch', 'batch' or an int"),
    ({"update_freq": 0}, ValueError, "update_freq must be an int >= 1, got 0"),
    ({"write_steps_per_second": "yes"}, TypeError, "write_steps_per_second"),
    ({"profile_batch": (1, 2, 3)}, ValueError, "profile_batch"),
    ({"profile_batch": "a,b"}, ValueError, "profile_batch"),
    ({"embeddings_freq": -2}, ValueError, "embeddings_freq"),
    ({"embeddings_metadata": 3}, TypeError, "embeddings_metadata"),
])
def test_rejects(tmp_path, kwargs, err, match):
    kwargs.setdefault("log_dir", tmp_path)
    with pytest.raises(err, match=match):
        fd.callbacks.TensorBoard(**kwargs)


def test_ignored_keras_arguments_warn(tmp_path):
    with pytest.warns(UserWarning, match="write_graph, profile_batch ignored"):
        fd.callbacks.TensorBoard(log_dir=tmp_path, write_graph=True, profile_batch="10,20")


def test_missing_writer_names_the_package(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorboard.summary.writer", None)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        fd.callbacks.TensorBoard(log_dir=tmp_path)
    assert not tmp_path.joinpath("train").exists()


def test_histogram_buckets_hold_every_value(tmp_path):
    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0,
              callbacks=[fd.callbacks.TensorBoard(log_dir=tmp_path, histogram_freq=1)])
    kernel = model.layers[0].kernel
    (event,) = _read(tmp_path / "train").Histograms(f"{model.layers[0].name}/kernel/histogram")
    h = event.histogram_value
    assert sum(h.bucket) == h.num == kernel.size
    assert h.bucket_limit[0] == pytest.approx(float(kernel.min()))
    assert h.bucket_limit[-1] == pytest.approx(float(kernel.max()))
    assert h.sum == pytest.approx(float(kernel.sum(dtype=np.float64)), rel=1e-6)
    counts, _ = np.histogram(kernel.astype(np.float64), bins=30)
    np.testing.assert_array_equal(h.bucket[1:], counts)
