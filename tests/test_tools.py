"""fd.tools: the learning-rate range test leaves no trace on the model, and
magnitude pruning against NumPy and on L1-trained models."""

import math
import sys

import numpy as np
import pytest

import fusednn as fd

L = fd.layers


def _regression(n=512, d=10, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    y = x @ rng.standard_normal((d, 1)) + 0.1 * rng.standard_normal((n, 1))
    return x, y


def _model(optimizer=None, dropout=False):
    layers = [L.Dense(16, kernel_initializer=fd.initializers.HeNormal(seed=1))]
    if dropout:
        layers += [L.BatchNormalization(), L.Activation("relu"), L.Dropout(0.2, seed=5),
                   L.Dense(8, activation="relu",
                           kernel_initializer=fd.initializers.HeNormal(seed=3)),
                   L.Dropout(0.1, seed=6)]
    else:
        layers += [L.Activation("relu")]
    layers += [L.Dense(1, kernel_initializer=fd.initializers.GlorotUniform(seed=2))]
    model = fd.Sequential(layers)
    model.compile(optimizer=optimizer or fd.optimizers.SGD(learning_rate=0.01, momentum=0.9),
                  loss="mse")
    return model


def _assert_states_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if k == "slots":
            assert (a[k] is None) == (b[k] is None)
            for ra, rb in zip(a[k] or [], b[k] or []):
                for sa, sb in zip(ra, rb):
                    assert (sa is None) == (sb is None)
                    if sa is not None:
                        np.testing.assert_array_equal(sa, sb)
        else:
            assert a[k] == b[k], k


# ------------------------------------------------------------ find_learning_rate


@pytest.mark.parametrize("optimizer", [
    lambda: fd.optimizers.SGD(learning_rate=0.01, momentum=0.9),
    lambda: fd.optimizers.Nadam(learning_rate=fd.schedules.ExponentialDecay(1e-3, 100, 0.5)),
])
def test_find_learning_rate_restores_model_and_optimizer(optimizer):
    x, y = _regression()
    model, twin = _model(optimizer(), dropout=True), _model(optimizer(), dropout=True)
    for m in (model, twin):  # non-trivial slots, moving statistics and dropout counters
        m.fit(x, y, epochs=1, batch_size=32, verbose=0, seed=0)
    history = model.history
    weights = model.get_weights()
    state = model.optimizer.get_state()
    lr = model.optimizer.learning_rate
    steps = [(getattr(la, "step", None), getattr(la, "dropout_step", None))
             for la in model.layers]

    # no early stop: the sweep runs to max_lr, where the loss has diverged (~1e80); the
    # model is restored from there too
    lrs, losses = fd.tools.find_learning_rate(model, x, y, max_lr=1e3, epochs=2, batch_size=16,
                                              stop_factor=None, seed=1)
    assert lrs.size > 10

    assert model.optimizer.learning_rate is lr  # the same float or schedule object
    _assert_states_equal(model.optimizer.get_state(), state)
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(a, b)
    assert model.history is history and not model.stop_training
    assert [(getattr(la, "step", None), getattr(la, "dropout_step", None))
            for la in model.layers] == steps
    # and training goes on exactly as on a twin that never ran the sweep
    for m in (model, twin):
        m.fit(x, y, epochs=1, batch_size=32, verbose=0, seed=2)
    for a, b in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_find_learning_rate_geometric_rates_and_early_stop():
    x, y = _regression()
    model = _model()
    lrs, losses = fd.tools.find_learning_rate(model, x, y, min_lr=1e-5, max_lr=10.0, epochs=3,
                                              batch_size=16, seed=0)
    full = 3 * math.ceil(len(x) / 16)
    assert lrs.dtype == losses.dtype == np.float64 and lrs.shape == losses.shape
    assert lrs[0] == 1e-5
    ratio = lrs[1:] / lrs[:-1]
    np.testing.assert_allclose(ratio, (10.0 / 1e-5) ** (1 / (full - 1)), rtol=1e-12)
    # falls, then blows up: stopped early, at the first loss above 4x the best
    assert lrs.size < full
    best = np.minimum.accumulate(losses)
    assert losses[-1] > 4 * best[-2]
    assert np.all(losses[:-1] <= 4 * best[:-1])
    assert best[-1] < 0.5 * losses[0]
    assert 1e-3 < lrs[np.argmin(losses)] < lrs[-1]


def test_find_learning_rate_smoothing_and_steps():
    x, y = _regression()
    raw_lrs, raw = fd.tools.find_learning_rate(_model(), x, y, min_lr=1e-4, max_lr=1e-2,
                                               steps=20, smoothing=0.0, stop_factor=None,
                                               seed=0)
    sm_lrs, smooth = fd.tools.find_learning_rate(_model(), x, y, min_lr=1e-4, max_lr=1e-2,
                                                 steps=20, smoothing=0.5, stop_factor=None,
                                                 seed=0)
    assert raw.size == smooth.size == 20  # 20 steps over 16 batches per epoch: 2 epochs
    np.testing.assert_array_equal(raw_lrs, sm_lrs)
    assert sm_lrs[-1] == pytest.approx(1e-2, rel=1e-12)
    avg, ref = 0.0, []
    for i, loss in enumerate(raw):  # same seeds: the same raw losses, smoothed by hand
        avg = 0.5 * avg + 0.5 * loss
        ref.append(avg / (1 - 0.5 ** (i + 1)))
    np.testing.assert_allclose(smooth, ref, rtol=1e-12)


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"min_lr": 0.0}, ValueError, "min_lr must be > 0"),
    ({"min_lr": 1.0, "max_lr": 0.5}, ValueError, "max_lr must be > min_lr"),
    ({"max_lr": float("nan")}, ValueError, "max_lr must be finite"),
    ({"steps": 1}, ValueError, "steps must be an int >= 2"),
    ({"epochs": 0}, ValueError, "epochs must be an int >= 1"),
    ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1"),
    ({"batch_size": 1000}, ValueError, "needs at least 2"),
    ({"stop_factor": 1.0}, ValueError, "stop_factor must be > 1"),
    ({"smoothing": 1.0}, ValueError, "smoothing must be < 1"),
    ({"plot": "yes"}, TypeError, "plot must be a bool"),
    ({"seed": -1}, ValueError, "seed must be an int >= 0"),
])
def test_find_learning_rate_bad_arguments(kwargs, exc, match):
    x, y = _regression()
    model = _model()
    with pytest.raises(exc, match=match):
        fd.tools.find_learning_rate(model, x, y, **kwargs)


def test_find_learning_rate_bad_model_and_data():
    x, y = _regression()
    with pytest.raises(TypeError, match="model must be a fd.Sequential"):
        fd.tools.find_learning_rate([L.Dense(1)], x, y)
    with pytest.raises(ValueError, match="not compiled"):
        fd.tools.find_learning_rate(fd.Sequential([L.Dense(1)]), x, y)
    with pytest.raises(ValueError, match="x has 1 dims"):
        fd.tools.find_learning_rate(_model(), x[:, 0], y)
    with pytest.raises(ValueError, match="y has 10"):
        fd.tools.find_learning_rate(_model(), x, y[:10])
    with pytest.raises(TypeError, match="x must be a NumPy or CuPy array"):
        fd.tools.find_learning_rate(_model(), x.tolist(), y)


def test_find_learning_rate_plot_needs_matplotlib(monkeypatch):
    x, y = _regression()
    model = _model()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match="needs matplotlib: pip install 'fusednn\\[plot\\]'"):
        fd.tools.find_learning_rate(model, x, y, plot=True)
    assert not model.built  # refused before any training


def test_find_learning_rate_plot_draws_log_axis():
    plt = pytest.importorskip("matplotlib.pyplot")
    x, y = _regression()
    lrs, losses = fd.tools.find_learning_rate(_model(), x, y, plot=True, seed=0)
    ax = plt.gca()
    assert ax.get_xscale() == "log"
    np.testing.assert_array_equal(ax.lines[-1].get_xdata(), lrs)
    np.testing.assert_array_equal(ax.lines[-1].get_ydata(), losses)
    plt.close("all")


# ------------------------------------------------------------------- prune


def test_prune_zeroes_small_kernel_weights_exactly(backend):
    xp = np if backend == "cpu" else pytest.importorskip("cupy")
    model = fd.Sequential([L.Dense(7, kernel_initializer=fd.initializers.RandomNormal(stddev=1.0,
                                                                                    seed=0),
                                   bias_initializer=fd.initializers.RandomNormal(seed=1)),
                           L.BatchNormalization(gamma_initializer=fd.initializers.Constant(1e-4)),
                           L.Dropout(0.1), L.Dense(3, kernel_initializer="he_normal")])
    model.build(5, xp, np.float64)
    before = model.get_weights()
    kernels = [la.kernel for la in model.layers if isinstance(la, L.Dense)]
    report = fd.tools.prune(model, 0.5)
    after = model.get_weights()
    assert [la.kernel for la in model.layers if isinstance(la, L.Dense)] == kernels  # in place
    expected = {}
    for i in (0, 6):  # the kernels in the weights list: Dense 1, Dense 2
        ref = np.where(np.abs(before[i]) < 0.5, 0.0, before[i])
        np.testing.assert_array_equal(after[i], ref)
        expected[i] = (int(np.sum(ref == 0)), ref.size, int(np.sum(ref == 0)))
    for i in (1, 2, 3, 4, 5, 7):  # bias, BN gamma (all < 0.5), beta, moving stats, bias
        np.testing.assert_array_equal(after[i], before[i])
    names = [model.layers[0].name, model.layers[3].name]
    assert report.layers == {names[0]: expected[0], names[1]: expected[6]}
    zeros = expected[0][0] + expected[6][0]
    assert report.fraction == zeros / (35 + 21)
    assert report.fractions[names[0]] == expected[0][0] / 35
    text = repr(report)
    assert "threshold=0.5" in text and names[0] in text and "total" in text
    again = fd.tools.prune(model, 0.5)  # nothing left to prune
    assert again.pruned == 0 and again.zeros == report.zeros


def _classification(n=1000, d=20, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    return x, (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] > 0).astype(np.int64)


def _fit_and_prune(regularizer, threshold=1e-2):
    x, y = _classification()
    model = fd.Sequential([
        L.Dense(16, activation="relu", kernel_regularizer=regularizer,
                kernel_initializer=fd.initializers.HeNormal(seed=1)),
        L.Dense(2, activation="softmax", kernel_regularizer=regularizer,
                kernel_initializer=fd.initializers.GlorotUniform(seed=2))])
    model.compile(optimizer=fd.optimizers.SGD(learning_rate=0.1),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=20, batch_size=32, verbose=0, seed=0)
    report = fd.tools.prune(model, threshold)
    return report, model.evaluate(x, y, batch_size=1000)[1]


def test_prune_l1_model_is_much_sparser_at_similar_accuracy():
    """3 of 20 inputs matter: L1 drives most kernel weights to ~0, which
    prune then zeroes; without L1 few weights fall under the threshold."""
    plain, plain_acc = _fit_and_prune(None)
    sparse, sparse_acc = _fit_and_prune(fd.regularizers.L1(5e-3))
    assert sparse.fraction > 0.5
    assert sparse.fraction > 10 * plain.fraction
    assert plain_acc > 0.97 and sparse_acc > 0.97
    assert abs(plain_acc - sparse_acc) < 0.02


@pytest.mark.parametrize("threshold,exc,match", [
    (-1e-3, ValueError, "threshold must be >= 0"),
    (float("nan"), ValueError, "threshold must be finite"),
    ("0.1", TypeError, "threshold must be a float"),
    (True, TypeError, "threshold must be a float"),
    (None, TypeError, "threshold must be a float"),
])
def test_prune_bad_threshold(threshold, exc, match):
    model = fd.Sequential([L.Dense(3)])
    model.build(4)
    before = model.get_weights()
    with pytest.raises(exc, match=match):
        fd.tools.prune(model, threshold)
    np.testing.assert_array_equal(model.get_weights()[0], before[0])


def test_prune_bad_model():
    with pytest.raises(TypeError, match="model must be a fd.Sequential or a list"):
        fd.tools.prune("model", 0.1)
    with pytest.raises(ValueError, match="is not built"):
        fd.tools.prune(fd.Sequential([L.Dense(3)]), 0.1)
    layers = [L.Dense(3), L.Activation("relu")]
    layers[0].build(2)
    layers[0].kernel[...] = [[0.05, 1.0, -0.01], [2.0, -0.2, 0.0]]
    report = fd.tools.prune(layers, 0.1)  # a list of layers works too
    np.testing.assert_array_equal(layers[0].kernel,
                                  np.array([[0, 1.0, 0], [2.0, -0.2, 0]], np.float32))
    assert report.pruned == 2 and report.zeros == 3
