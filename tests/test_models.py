import json

import numpy as np
import pytest

import fusednn as fd
from fusednn.testing import reference as R

from conftest import assert_scaled_close, to_backend, to_numpy


def _blobs(n=600, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((d, k))
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x, np.argmax(x @ w, axis=1)


# ------------------------------------------------------------------ Dense


@pytest.mark.parametrize("activation", ["linear", "elu", "gelu"])
def test_dense_layer_matches_reference(backend, activation):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((9, 5))
    layer = fd.layers.Dense(4, activation=activation, kernel_initializer="he_normal")
    layer.build(5, np if backend == "cpu" else __import__("cupy"), np.float64)
    w, b = layer.get_weights()
    y = layer.forward(to_backend(x, backend), training=True)
    assert_scaled_close(y, R.dense_forward(x, w, b, activation)[0], 1e-12, "forward")
    dy = rng.standard_normal((9, 4))
    dx = layer.backward(to_backend(dy, backend))
    rdx, rdw, rdb = R.dense_backward(dy, x, w, b, activation)
    assert_scaled_close(dx, rdx, 1e-12, "dx")
    assert_scaled_close(layer.grads[0], rdw, 1e-12, "dw")
    assert_scaled_close(layer.grads[1], rdb, 1e-12, "db")
    assert layer.backward(to_backend(dy, backend), need_dx=False) is None


def test_dense_config_round_trip_and_weights():
    layer = fd.layers.Dense(7, activation="leaky_relu", use_bias=False,
                            kernel_initializer=fd.initializers.HeNormal(seed=3),
                            kernel_regularizer=fd.regularizers.L2(1e-3),
                            kernel_constraint=fd.constraints.MaxNorm(2.0), name="d")
    cfg = json.loads(json.dumps(layer.get_config()))
    clone = fd.layers.Dense.from_config(cfg)
    assert clone.get_config() == layer.get_config()
    layer.build(3)
    clone.build(3)
    np.testing.assert_array_equal(layer.get_weights()[0], clone.get_weights()[0])  # same seed
    new = [np.full((3, 7), 0.5, np.float32)]
    layer.set_weights(new)
    np.testing.assert_array_equal(layer.kernel, new[0])
    with pytest.raises(ValueError, match="weight 0 has shape"):
        layer.set_weights([np.zeros((2, 7))])
    with pytest.raises(ValueError, match="set_weights got 2 arrays"):
        layer.set_weights([np.zeros((3, 7)), np.zeros(7)])


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"units": 0}, ValueError, "units must be an int >= 1"),
    ({"units": 2.5}, ValueError, "units must be an int"),
    ({"units": 3, "activation": "nope"}, ValueError, "unknown activation"),
    ({"units": 3, "use_bias": "yes"}, TypeError, "use_bias must be a bool"),
    ({"units": 3, "trainable": 1}, TypeError, "trainable must be a bool"),
    ({"units": 3, "kernel_initializer": "nope"}, ValueError, "nope"),
])
def test_dense_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fd.layers.Dense(**kwargs)


# --------------------------------------------------------------- training


def test_one_step_equals_the_hand_computed_update():
    """A linear model under MSE and plain SGD: one fit step is w -= lr dL/dw."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 3))
    y = rng.standard_normal((8, 2))
    model = fd.Sequential([fd.layers.Dense(2, kernel_initializer=fd.initializers.GlorotUniform(0))])
    model.compile(fd.optimizers.SGD(learning_rate=0.1), "mse")
    model.build(3, np, np.float64)
    w0, b0 = model.get_weights()
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    err = x @ w0 + b0 - y
    g = 2 * err / err.size  # d mean((p - t)^2) / dp
    np.testing.assert_allclose(model.layers[0].kernel, w0 - 0.1 * x.T @ g, rtol=1e-12)
    np.testing.assert_allclose(model.layers[0].bias, b0 - 0.1 * g.sum(0), rtol=1e-12)


@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy", "categorical_crossentropy"])
def test_fit_learns_a_separable_problem(loss):
    x, y = _blobs()
    target = y if loss.startswith("sparse") else np.eye(3, dtype=np.float32)[y]
    model = fd.Sequential([
        fd.layers.Dense(32, activation="elu", kernel_initializer=fd.initializers.HeNormal(8)),
        fd.layers.Dense(3, activation="softmax",
                        kernel_initializer=fd.initializers.GlorotUniform(9))])
    model.compile(fd.optimizers.Nadam(learning_rate=3e-3), loss, metrics=["accuracy"])
    hist = model.fit(x, target, epochs=8, batch_size=32, validation_split=0.2, verbose=0, seed=0)
    assert hist.epoch == list(range(8))
    assert set(hist.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert hist.history["loss"][-1] < 0.5 * hist.history["loss"][0]
    assert hist.history["val_accuracy"][-1] > 0.85
    loss_value, acc = model.evaluate(x, target)
    assert acc > 0.85 and loss_value < hist.history["loss"][0]
    p = model.predict(x[:10])
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    assert (p >= 0).all()


def test_binary_and_mse_models():
    x, y = _blobs(k=2)
    model = fd.Sequential([
        fd.layers.Dense(16, activation="relu", kernel_initializer=fd.initializers.HeNormal(4)),
        fd.layers.Dense(1, activation="sigmoid",
                        kernel_initializer=fd.initializers.GlorotUniform(5))])
    model.compile("adam", "binary_crossentropy", ["accuracy"])
    hist = model.fit(x, y.astype(np.float32), epochs=20, verbose=0, seed=1)
    assert hist.history["accuracy"][-1] > 0.9
    p = model.predict(x)
    assert p.shape == (len(x), 1) and (p > 0).all() and (p < 1).all()

    reg = fd.Sequential([fd.layers.Dense(1, kernel_initializer=fd.initializers.GlorotUniform(6))])
    reg.compile(fd.optimizers.SGD(learning_rate=0.05), "mse")
    target = x[:, :1] * 2 - x[:, 1:2]
    hist = reg.fit(x, target, epochs=20, verbose=0)
    assert hist.history["loss"][-1] < 1e-3
    assert isinstance(reg.evaluate(x, target), float)


def test_validation_split_takes_the_last_samples():
    x, y = _blobs(n=100)
    seen = []

    class Spy(fd.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(batch)

    model = fd.Sequential([fd.layers.Dense(3, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=10, epochs=1, validation_split=0.3, verbose=0, callbacks=[Spy()])
    assert seen == list(range(7))  # 70 training samples, 10 per batch
    val = model.evaluate(x[70:], y[70:])
    hist = model.fit(x, y, batch_size=10, epochs=1, validation_data=(x[70:], y[70:]), verbose=0)
    assert "val_loss" in hist.history and np.isfinite(val)


def test_frozen_layer_is_not_updated_and_unfreezing_needs_no_rebuild():
    x, y = _blobs()
    model = fd.Sequential([fd.layers.Dense(8, activation="relu"),
                           fd.layers.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.layers[0].trainable = False
    before = model.layers[0].get_weights() if model.built else None
    model.fit(x, y, epochs=1, verbose=0)
    before = [w.copy() for w in model.layers[0].get_weights()]
    top = [w.copy() for w in model.layers[1].get_weights()]
    model.fit(x, y, epochs=1, verbose=0)
    for a, b in zip(before, model.layers[0].get_weights()):
        np.testing.assert_array_equal(a, b)
    assert any((a != b).any() for a, b in zip(top, model.layers[1].get_weights()))
    assert model.layers[0].trainable_weights == [] and len(model.trainable_weights) == 2
    model.layers[0].trainable = True
    model.fit(x, y, epochs=1, verbose=0)
    assert any((a != b).any() for a, b in zip(before, model.layers[0].get_weights()))


def test_mc_predict_without_dropout_has_zero_spread():
    x, y = _blobs(n=50)
    model = fd.Sequential([fd.layers.Dense(3, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    mean, std = model.predict(x, mc_samples=4)
    np.testing.assert_allclose(mean, model.predict(x), rtol=1e-6)
    assert np.abs(std).max() < 1e-6


def test_stop_training_from_a_callback():
    x, y = _blobs(n=64)

    class Stop(fd.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True

    model = fd.Sequential([fd.layers.Dense(3, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    hist = model.fit(x, y, epochs=10, verbose=0, callbacks=[Stop()])
    assert hist.epoch == [0, 1]


def test_summary_and_weights(capsys):
    model = fd.Sequential([fd.layers.Dense(4, activation="relu"), fd.layers.Dense(2)])
    model.build(3)
    model.summary()
    out = capsys.readouterr().out
    assert "Total params: 26" in out and "Trainable params: 26" in out
    ws = model.get_weights()
    assert [w.shape for w in ws] == [(3, 4), (4,), (4, 2), (2,)]
    model.set_weights([np.zeros_like(w) for w in ws])
    assert all((w == 0).all() for w in model.get_weights())
    with pytest.raises(ValueError, match="got 3 arrays"):
        model.set_weights(ws[:3])


def test_history_plot():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    x, y = _blobs(n=64)
    model = fd.Sequential([fd.layers.Dense(3, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", ["accuracy"])
    hist = model.fit(x, y, epochs=2, validation_split=0.25, verbose=0)
    ax = hist.plot()
    assert len(ax.get_lines()) == 4
    with pytest.raises(ValueError, match="no metric"):
        hist.plot(metrics=["f1"])


def test_fit_on_the_gpu(backend):
    if backend != "cuda":
        pytest.skip("CuPy data stays on the GPU")
    import cupy

    x, y = _blobs()
    model = fd.Sequential([fd.layers.Dense(16, activation="elu"),
                           fd.layers.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    hist = model.fit(cupy.asarray(x), cupy.asarray(y), epochs=5, verbose=0)
    assert hist.history["accuracy"][-1] > 0.8
    assert isinstance(model.layers[0].kernel, cupy.ndarray)
    assert isinstance(model.predict(cupy.asarray(x)), cupy.ndarray)


# --------------------------------------------------------------- bad input


def test_bad_model_use():
    x, y = _blobs(n=20)
    model = fd.Sequential([fd.layers.Dense(3, activation="softmax")])
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(x, y)
    with pytest.raises(ValueError, match="loss must be one of"):
        model.compile("sgd", "hinge")
    with pytest.raises(TypeError, match="optimizer must be"):
        model.compile(42, "mse")
    with pytest.raises(ValueError, match="unknown optimizer"):
        model.compile("adamx", "mse")
    with pytest.raises(ValueError, match="unknown metric"):
        model.compile("sgd", "mse", ["f1"])
    model.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="x has 1 dims"):
        model.fit(x[:, 0], y)
    with pytest.raises(ValueError, match="x has 20 samples but y has 19"):
        model.fit(x, y[:-1])
    with pytest.raises(TypeError, match="x must be a NumPy or CuPy array"):
        model.fit(x.tolist(), y)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        model.fit(x, y, batch_size=0)
    with pytest.raises(ValueError, match="validation_split must be in"):
        model.fit(x, y, validation_split=1.0)
    with pytest.raises(ValueError, match="not both"):
        model.fit(x, y, validation_split=0.1, validation_data=(x, y))
    with pytest.raises(ValueError, match="verbose must be"):
        model.fit(x, y, verbose=3)
    with pytest.raises(ValueError, match="mc_samples must be an int >= 1"):
        model.predict(x, mc_samples=0)
    with pytest.raises(TypeError, match="expected a fd.layers layer"):
        model.add("dense")


def test_history_keeps_what_callbacks_add_to_the_logs():
    x, y = _blobs(n=64)
    model = fd.Sequential([fd.layers.Dense(3, activation="softmax")])
    model.compile(fd.optimizers.SGD(learning_rate=0.1), "sparse_categorical_crossentropy")
    sched = fd.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5)
    hist = model.fit(x, y, epochs=3, verbose=0, callbacks=[sched,
                     fd.callbacks.ReduceLROnPlateau(monitor="loss", patience=100)])
    np.testing.assert_allclose(hist.history["learning_rate"], [0.05, 0.025, 0.0125])


def test_fit_equals_a_hand_loop_over_ops_and_optimizers():
    """3 epochs of fit on a 2-layer model == the same loop written with
    fd.ops and fd.optimizers (same shuffling seed), float64, to 1e-10."""
    x, y = _blobs(n=100, d=5)
    x = x.astype(np.float64)
    init = [fd.initializers.HeNormal(seed=1), fd.initializers.GlorotUniform(seed=2)]
    model = fd.Sequential([fd.layers.Dense(8, activation="elu", kernel_initializer=init[0]),
                           fd.layers.Dense(3, activation="softmax",
                                           kernel_initializer=init[1])])
    model.compile(fd.optimizers.Adam(learning_rate=0.01), "sparse_categorical_crossentropy")
    model.build(5, np, np.float64)
    w1, b1, w2, b2 = (w.copy() for w in model.get_weights())
    model.fit(x, y, batch_size=16, epochs=3, seed=7, verbose=0)

    opt = fd.optimizers.Adam(learning_rate=0.01)
    rng = np.random.default_rng(7)
    for _ in range(3):
        order = rng.permutation(len(x))
        for start in range(0, len(x), 16):
            idx = order[start:start + 16]
            h, c1 = fd.ops.dense_forward(x[idx], w1, b1, "elu")
            logits, c2 = fd.ops.dense_forward(h, w2, b2)
            _, dlogits = fd.ops.softmax_cross_entropy(logits, y[idx])
            dh, dw2, db2 = fd.ops.dense_backward(dlogits, c2)
            _, dw1, db1 = fd.ops.dense_backward(dh, c1, need_dx=False)
            opt.apply([dw1, db1, dw2, db2], [w1, b1, w2, b2])
    for got, want in zip(model.get_weights(), (w1, b1, w2, b2)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_bad_data_gives_a_clear_error_before_any_step():
    """The issue's bad-input list (the NaN-loss case is
    test_callbacks.py's TerminateOnNaN test): each is an error naming the
    problem, raised before the first step, so the weights are untouched."""
    x, y = _blobs(n=20)
    model = fd.Sequential([fd.layers.Dense(3, activation="softmax",
                                           kernel_initializer=fd.initializers.GlorotUniform(0))])
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    before = model.get_weights()
    cases = [
        (lambda: model.fit(x, y[:-1], verbose=0), ValueError, "x has 20 samples but y has 19"),
        (lambda: model.fit(x[:, :1], y, verbose=0), ValueError,
         "x has 1 features, the model was built for 6"),
        (lambda: model.predict(x[:, :1]), ValueError, "built for 6"),
        (lambda: model.evaluate(np.hstack([x, x]), y), ValueError, "built for 6"),
        (lambda: model.fit(x, np.where(y == 2, 3, y), verbose=0), ValueError,
         r"labels in \[0, 3\], the model has 3 classes"),
        (lambda: model.fit(x, y - 1, verbose=0), ValueError, r"labels must be in \[0, 3\)"),
        (lambda: model.fit(x, y.astype(np.float64), verbose=0), TypeError, "integer class"),
        (lambda: model.fit(x, y, validation_data=(x, y + 5), verbose=0), ValueError,
         "y_val has labels"),
        (lambda: model.fit(x[:0], y[:0], verbose=0), ValueError, "no training samples"),
        (lambda: model.evaluate(x[:0], y[:0]), ValueError, "no samples"),
        (lambda: model.fit(x, y, validation_data=(x[:0], y[:0]), verbose=0), ValueError,
         "validation_data has no samples"),
        (lambda: model.fit(x, y, validation_split=-0.1, verbose=0), ValueError,
         r"validation_split must be in \[0, 1\)"),
        (lambda: model.fit(x, y, validation_split=1.0, verbose=0), ValueError,
         r"validation_split must be in \[0, 1\)"),
        (lambda: model.fit(x, y, validation_split="0.2", verbose=0), TypeError,
         "validation_split must be a number"),
    ]
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()
    for a, b in zip(before, model.get_weights()):
        assert np.array_equal(a, b)
    assert model.predict(x[:0]).shape == (0, 3)  # an empty batch predicts nothing, as Keras

    onehot = fd.Sequential([fd.layers.Dense(3, activation="softmax")])
    onehot.compile("sgd", "categorical_crossentropy")
    with pytest.raises(ValueError, match=r"label rows of shape \(20, 3\)"):
        onehot.fit(x, np.eye(4)[y], verbose=0)
    mse = fd.Sequential([fd.layers.Dense(2)])
    mse.compile("sgd", "mse")
    with pytest.raises(ValueError, match=r"needs \(20, 2\) targets"):
        mse.fit(x, y, verbose=0)
