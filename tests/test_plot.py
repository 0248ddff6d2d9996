"""fd.plot: each figure carries the data it was given (line data, image
array, histogram counts), path= writes the file, bad arguments are named;
and importing fusednn does not import matplotlib."""

import subprocess
import sys

import numpy as np
import pytest

import fusednn as fd

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

L = fd.layers


def _model(seed=0):
    model = fd.Sequential([
        L.Dense(12, activation="relu", kernel_initializer=fd.initializers.HeNormal(seed)),
        L.BatchNormalization(),
        L.Dense(8, activation="tanh", kernel_initializer=fd.initializers.GlorotUniform(seed + 1)),
        L.Dropout(0.2, seed=3),
        L.Dense(3, activation="softmax",
                kernel_initializer=fd.initializers.GlorotUniform(seed + 2))])
    model.compile(optimizer=fd.optimizers.Adam(learning_rate=1e-2),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _data(n=96, d=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1).astype(np.int64)
    return x, y


def _health(names=("dense_a", "dense_b", "dense_c"), steps=(1, 5, 9, 13)):
    rng = np.random.default_rng(1)
    records = []
    for i, step in enumerate(steps):
        layers = [{"name": n, "act_std": float(rng.uniform(0.5, 2)),
                   "grad_std": float(10.0 ** rng.uniform(-4, -1)),
                   "saturated": float(rng.uniform()) if j == 1 else None,
                   "dead": float(rng.uniform()) if j == 0 else None,
                   "update_ratio": None if i == 0 else float(10.0 ** rng.uniform(-4, -2))}
                  for j, n in enumerate(names)]
        records.append({"epoch": i // 2, "step": step, "layers": layers})
    return records


class _History:
    def __init__(self, records):
        self.health = records


def _png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    return data


def test_import_fusednn_does_not_import_matplotlib():
    code = "import sys, fusednn; fusednn.plot; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------- learning curves


def test_learning_curves_carry_train_and_validation_values(tmp_path):
    x, y = _data()
    model = _model()
    history = model.fit(x, y, epochs=3, batch_size=32, validation_split=0.25, verbose=0)
    fig = fd.plot.learning_curves(history, path=tmp_path / "curves.png")
    assert isinstance(fig, Figure)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["loss", "accuracy"]
    for ax in axes:
        name = ax.get_title()
        lines = {ln.get_label(): ln for ln in ax.get_lines()}
        assert set(lines) == {"train", "validation"}
        for label, key in (("train", name), ("validation", "val_" + name)):
            np.testing.assert_array_equal(lines[label].get_xdata(), history.epoch)
            np.testing.assert_allclose(lines[label].get_ydata(), history.history[key])
    _png(tmp_path / "curves.png")


def test_learning_curves_from_a_dict_and_val_only_names():
    fig = fd.plot.learning_curves({"val_auc": [0.5, 0.7], "loss": [2.0, 1.0]})
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["loss", "auc"]
    (line,) = fig.axes[1].get_lines()
    np.testing.assert_array_equal(line.get_xdata(), [0, 1])
    np.testing.assert_array_equal(line.get_ydata(), [0.5, 0.7])


@pytest.mark.parametrize("history, err, match", [
    ({}, ValueError, "no recorded epochs"),
    ([1.0, 2.0], TypeError, "history"),
    ({"loss": [1.0, 2.0], "val_loss": [1.0]}, ValueError, r"history\['val_loss'\]"),
    ({"loss": ["a", "b"]}, TypeError, r"history\['loss'\]"),
])
def test_learning_curves_rejects(history, err, match):
    with pytest.raises(err, match=match):
        fd.plot.learning_curves(history)


# ----------------------------------------------------------- gradient health


def test_gradient_health_image_is_layers_by_steps(tmp_path):
    records = _health()
    fig = fd.plot.gradient_health(_History(records), path=tmp_path / "health.png")
    ax = fig.axes[0]
    (image,) = ax.get_images()
    data = image.get_array()
    assert data.shape == (3, 4)  # layers x recorded steps
    expected = np.array([[r["layers"][j]["grad_std"] for r in records] for j in range(3)])
    np.testing.assert_allclose(data, expected)
    assert type(image.norm).__name__ == "LogNorm"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["dense_a", "dense_b", "dense_c"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "5", "9", "13"]
    _png(tmp_path / "health.png")


def test_gradient_health_missing_values_are_masked():
    records = _health()
    fig = fd.plot.gradient_health(records, metric="dead")  # the list itself is accepted
    data = fig.axes[0].get_images()[0].get_array()
    assert data.shape == (3, 4)
    assert not data.mask[0].any() and data.mask[1:].all()  # only dense_a is a ReLU layer
    assert type(fig.axes[0].get_images()[0].norm).__name__ == "Normalize"
    ratio = fd.plot.gradient_health(records, metric="update_ratio").axes[0].get_images()[0]
    assert ratio.get_array().mask[:, 0].all() and not ratio.get_array().mask[:, 1:].any()


def test_gradient_health_from_a_fit():
    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0,
              callbacks=[fd.callbacks.GradientHealth(every=2, warn=False)])
    records = model.history.health
    fig = fd.plot.gradient_health(model.history, metric="act_std")
    assert fig.axes[0].get_images()[0].get_array().shape == (len(records[0]["layers"]),
                                                             len(records))


def test_gradient_health_rejects():
    with pytest.raises(ValueError, match="GradientHealth"):
        fd.plot.gradient_health(object())
    with pytest.raises(ValueError, match="GradientHealth"):
        fd.plot.gradient_health(_History([]))
    with pytest.raises(ValueError, match="metric must be one of .*'grad_norm'"):
        fd.plot.gradient_health(_health(), metric="grad_norm")
    with pytest.raises(TypeError, match="metric"):
        fd.plot.gradient_health(_health(), metric=3)
    records = _health()
    records[2]["layers"] = records[2]["layers"][:2]
    with pytest.raises(ValueError, match=r"history.health\[2\]"):
        fd.plot.gradient_health(records)


# -------------------------------------------------------------- lr finder


def test_lr_finder_marks_the_suggested_rate(tmp_path):
    lrs = np.geomspace(1e-5, 10.0, 60)
    losses = 1.0 + (np.log10(lrs) + 1.0) ** 2 / 10  # lowest at 0.1
    losses[-3:] = [20.0, np.inf, np.nan]  # a diverged end
    fig = fd.plot.lr_finder(lrs, losses, path=tmp_path / "lr.png")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    curve = lines["loss"]
    np.testing.assert_array_equal(curve.get_xdata(), lrs)
    np.testing.assert_array_equal(curve.get_ydata(), losses)
    best = lrs[np.argmin(losses[:-2])] / 10
    assert fd.plot.suggested_learning_rate(lrs, losses) == pytest.approx(best)
    (marker,) = [ln for label, ln in lines.items() if label.startswith("suggested")]
    assert marker.get_xdata()[0] == pytest.approx(best)
    expected = np.interp(np.log(best), np.log(lrs[:-2]), losses[:-2])
    assert marker.get_ydata()[0] == pytest.approx(expected)
    _png(tmp_path / "lr.png")


def test_lr_finder_takes_find_learning_rate_output():
    x, y = _data()
    model = _model()
    lrs, losses = fd.tools.find_learning_rate(model, x, y, batch_size=8, seed=0)
    fig = fd.plot.lr_finder(lrs, losses)
    np.testing.assert_array_equal(fig.axes[0].get_lines()[0].get_xdata(), lrs)


@pytest.mark.parametrize("lrs, losses, err, match", [
    ([1e-3, 1e-2], [1.0], ValueError, "same length"),
    ([1e-3], [1.0], ValueError, "at least 2"),
    ([0.0, 1e-2], [1.0, 0.5], ValueError, "lrs must be finite and > 0"),
    ([1e-3, 1e-2], [np.nan, np.inf], ValueError, "losses has no finite value"),
    ("fast", [1.0], TypeError, "lrs"),
    ([[1e-3, 1e-2]], [[1.0, 0.5]], ValueError, "lrs must be 1-D"),
])
def test_lr_finder_rejects(lrs, losses, err, match):
    with pytest.raises(err, match=match):
        fd.plot.lr_finder(lrs, losses)


# ---------------------------------------------------- activation histograms


def test_activation_histograms_count_every_output(tmp_path):
    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    fig = fd.plot.activation_histograms(model, x, bins=20, path=tmp_path / "acts.png")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == len(model.layers)
    widths = [12, 12, 8, 8, 3]
    for ax, layer, width in zip(axes, model.layers, widths):
        assert ax.get_title().startswith(layer.name)
        counts = [p.get_height() for p in ax.patches]
        assert len(counts) == 20
        assert sum(counts) == x.shape[0] * width
    # the last layer's outputs are the probabilities predict returns
    probs = model.predict(x)
    heights, _ = np.histogram(probs.ravel(), bins=20)
    np.testing.assert_array_equal([p.get_height() for p in axes[-1].patches], heights)
    _png(tmp_path / "acts.png")


def test_activation_histograms_leave_the_model_as_it_was():
    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    before = [w.copy() for w in model.get_weights()]
    drop = model.layers[3].step
    fd.plot.activation_histograms(model, x)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.layers[3].step == drop


def test_activation_histograms_rejects():
    x, _ = _data()
    with pytest.raises(TypeError, match="model must be a fd.Sequential"):
        fd.plot.activation_histograms([L.Dense(3)], x)
    with pytest.raises(ValueError, match="model must be built"):
        fd.plot.activation_histograms(fd.Sequential([L.Dense(3)]), x)
    model = _model()
    model.build(6)
    with pytest.raises(ValueError, match="x has 5 features"):
        fd.plot.activation_histograms(model, x[:, :5])
    with pytest.raises(ValueError, match="x has 1 dims"):
        fd.plot.activation_histograms(model, x[0])
    with pytest.raises(ValueError, match="bins must be an int >= 1"):
        fd.plot.activation_histograms(model, x, bins=0)


# --------------------------------------------------------------- schedules


def test_schedule_draws_the_rate_at_each_step(tmp_path):
    sched = fd.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    fig = fd.plot.schedule(sched, 50, path=tmp_path / "sched.svg")
    (line,) = fig.axes[0].get_lines()
    np.testing.assert_array_equal(line.get_xdata(), np.arange(50))
    np.testing.assert_allclose(line.get_ydata(), [sched(s) for s in range(50)])
    assert len(fig.axes) == 1
    assert (tmp_path / "sched.svg").read_text().lstrip().startswith("<?xml")


def test_schedule_one_cycle_draws_its_momentum():
    sched = fd.schedules.OneCycle(0.1, total_steps=100)
    fig = fd.plot.schedule(sched, [0, 10, 50, 99])
    assert len(fig.axes) == 2
    (rate,) = fig.axes[0].get_lines()
    (momentum,) = fig.axes[1].get_lines()
    np.testing.assert_array_equal(rate.get_xdata(), [0, 10, 50, 99])
    np.testing.assert_allclose(rate.get_ydata(), [sched(s) for s in (0, 10, 50, 99)])
    np.testing.assert_allclose(momentum.get_ydata(), [sched.momentum(s) for s in (0, 10, 50, 99)])


def test_schedule_takes_a_plain_callable():
    fig = fd.plot.schedule(lambda step: 1.0 / (1 + step), 4)
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), [1, 1 / 2, 1 / 3, 1 / 4])


@pytest.mark.parametrize("sched, steps, err, match", [
    (0.1, 10, TypeError, "schedule must be"),
    (lambda s: 0.1, 0, ValueError, "steps must be an int >= 1"),
    (lambda s: 0.1, 2.5, TypeError, "steps must be an int"),
    (lambda s: 0.1, [0, -1], ValueError, "steps must be a non-empty sequence of ints >= 0"),
    (lambda s: 0.1, [0.5], ValueError, "steps must be"),
])
def test_schedule_rejects(sched, steps, err, match):
    with pytest.raises(err, match=match):
        fd.plot.schedule(sched, steps)


# ------------------------------------------------------------------ path=


def test_path_extension_must_be_a_format(tmp_path):
    with pytest.raises(ValueError, match=r"path must end in a format .*'/.*curves.xyz'"):
        fd.plot.learning_curves({"loss": [1.0]}, path=str(tmp_path / "curves.xyz"))
    with pytest.raises(TypeError, match="path must be a str"):
        fd.plot.learning_curves({"loss": [1.0]}, path=3)
    assert not list(tmp_path.iterdir())


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"fd.plot.schedule needs matplotlib: pip install "
                                          r"'fusednn\[plot\]'"):
        fd.plot.schedule(lambda step: 0.1, 3)
