import io
import json
import math
import re
import warnings

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
    ({"units": 2.5}, TypeError, "units must be an int >= 1, got float 2.5"),
    ({"units": "10"}, TypeError, "units must be an int >= 1, got str '10'"),
    ({"units": True}, TypeError, "units must be an int >= 1, got bool True"),
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
    with pytest.warns(UserWarning, match=r"Sequential.predict: mc_samples=4, but the model has "
                                         r"no Dropout or AlphaDropout layer"):
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
    with pytest.raises(TypeError, match="x must be an array"):
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
         "Sequential.fit: x has 1 features, the model expects 6"),
        (lambda: model.predict(x[:, :1]), ValueError,
         "Sequential.predict: x has 1 features, the model expects 6"),
        (lambda: model.evaluate(np.hstack([x, x]), y), ValueError,
         "Sequential.evaluate: x has 12 features, the model expects 6"),
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


# ---------------------------------------------------- Keras' dtype rules


def _mlp(dtype=None, **first):
    model = fd.Sequential([
        fd.layers.Dense(8, activation="elu", kernel_initializer=fd.initializers.HeNormal(1),
                        **first),
        fd.layers.Dense(3, activation="softmax",
                        kernel_initializer=fd.initializers.GlorotUniform(2))], dtype=dtype)
    model.compile(fd.optimizers.SGD(learning_rate=0.1), "sparse_categorical_crossentropy",
                  ["accuracy"])
    return model


def test_float64_data_do_not_make_a_float64_model():
    x, y = _blobs(n=64)
    x64 = x.astype(np.float64)
    a, b = _mlp(), _mlp()
    assert a.dtype == "float32"
    ha = a.fit(x64, y, epochs=2, batch_size=16, seed=0, verbose=0)
    hb = b.fit(x64.astype(np.float32), y, epochs=2, batch_size=16, seed=0, verbose=0)
    assert all(w.dtype == np.float32 for w in a.weights)
    assert x64.dtype == np.float64  # the caller's array is left alone: fit casts a copy
    # casting first by hand or letting fit cast gives the same training, bit for bit
    assert ha.history == hb.history
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(u, v)
    for xin in (x64, x, np.rint(x * 4).astype(np.int64), x > 0):
        p = a.predict(xin)
        assert p.dtype == np.float32
        np.testing.assert_array_equal(p, a.predict(xin.astype(np.float32)))
    assert isinstance(a.evaluate(x64, y), list)


def test_integer_data_train_a_float32_model():
    x, y = _blobs(n=64)
    xi = np.rint(x * 4).astype(np.int64)
    model = _mlp()
    model.fit(xi, y, epochs=1, verbose=0)
    assert model.dtype == "float32" and model.layers[0].kernel.dtype == np.float32
    mse = fd.Sequential([fd.layers.Dense(1)])
    mse.compile("sgd", "mse")
    mse.fit(xi, y.reshape(-1, 1), epochs=1, verbose=0)  # integer targets are cast too
    assert mse.layers[0].kernel.dtype == np.float32


def test_a_float64_model_casts_float32_data():
    x, y = _blobs(n=40)
    model = _mlp("float64")
    assert model.dtype == "float64" and not model.built
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert all(w.dtype == np.float64 for w in model.weights)
    p = model.predict(x)
    assert p.dtype == np.float64
    np.testing.assert_array_equal(p, model.predict(x.astype(np.float64)))
    w1, b1, w2, b2 = model.get_weights()
    h = R.dense_forward(x, w1, b1, "elu")[0]
    logits = R.dense_forward(h, w2, b2)[0]
    ref = np.exp(logits - logits.max(axis=1, keepdims=True))
    assert_scaled_close(p, ref / ref.sum(axis=1, keepdims=True), 1e-12, "float64 predict")
    built = fd.Sequential([fd.layers.Dense(3)])
    built.build(6, np, "float64")
    assert built.dtype == "float64"


def test_model_dtype_from_built_layers_config_and_files(tmp_path):
    x, y = _blobs(n=32)
    trained = _mlp("float64")
    trained.fit(x, y, epochs=1, verbose=0)
    head = fd.Sequential(trained.layers[:-1] + [fd.layers.Dense(2, activation="softmax")])
    assert head.dtype == "float64"  # that of the layers it reuses
    head.build(6)
    assert head.layers[-1].kernel.dtype == np.float64
    with pytest.raises(ValueError, match="holds numpy float64 weights, the model is built for "
                                         "numpy float32"):
        fd.Sequential(trained.layers[:1], dtype="float32").build(6)
    with pytest.raises(ValueError, match="dtype=float32, but the model's dtype is float64"):
        fd.Sequential([fd.layers.Dense(2)], dtype="float64").build(6, np, np.float32)
    assert trained.get_config()["dtype"] == "float64"
    again = fd.Sequential.from_config(json.loads(json.dumps(trained.get_config())))
    assert again.dtype == "float64" and not again.built
    old = trained.get_config()
    del old["dtype"]  # a config written before models had a dtype
    assert fd.Sequential.from_config(old).dtype == "float32"
    assert fd.models.clone_model(trained).dtype == "float64"
    trained.save(tmp_path / "m.safetensors")
    loaded = fd.models.load(tmp_path / "m.safetensors")
    assert loaded.dtype == "float64"
    np.testing.assert_array_equal(loaded.predict(x), trained.predict(x))


@pytest.mark.parametrize("dtype,exc,match", [
    ("int32", ValueError, "Sequential: dtype must be float32, float64 or None, got int32"),
    ("float16", ValueError, "got float16"),
    (3.5, TypeError, "Sequential: dtype must be float32, float64 or None, got 3.5"),
])
def test_bad_model_dtype(dtype, exc, match):
    with pytest.raises(exc, match=match):
        fd.Sequential([fd.layers.Dense(2)], dtype=dtype)


def test_messages_name_the_argument_and_the_method():
    x, y = _blobs(n=20)
    model = fd.Sequential([fd.layers.Dense(3, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.build(6)
    x63 = np.zeros((4, 5))
    for call, method in ((lambda: model.predict(x63), "predict"),
                         (lambda: model(x63), "__call__"),
                         (lambda: model.evaluate(x63, y[:4]), "evaluate"),
                         (lambda: model.fit(x63, y[:4], verbose=0), "fit")):
        with pytest.raises(ValueError, match=rf"^Sequential\.{re.escape(method)}: x has 5 "
                                             rf"features, the model expects 6$"):
            call()
    with pytest.raises(ValueError, match=r"Sequential.fit: x_val has 5 features, the model "
                                         r"expects 6"):
        model.fit(x, y, validation_data=(x63, y[:4]), verbose=0)
    with pytest.raises(TypeError, match=r"Sequential.predict: x has dtype complex128; expected "
                                        r"real numbers .* cast to the model's dtype float32"):
        model.predict(x.astype(np.complex128))
    with pytest.raises(TypeError, match=r"Sequential.fit: y has dtype str32; expected real "
                                        r"numbers"):
        model.fit(x, np.array(["a"] * 20), verbose=0)
    # an unbuilt model whose first layer is built (reused) expects that width
    reuse = fd.Sequential([model.layers[0]])
    with pytest.raises(ValueError, match="Sequential.predict: x has 5 features, the model "
                                         "expects 6"):
        reuse.predict(x63)


# --------------------------------------------------------- Keras' habits


def test_model_call_is_a_one_batch_predict():
    x, y = _blobs(n=50)
    model = _mlp()
    model.fit(x, y, epochs=1, verbose=0)
    out = model(x)
    assert isinstance(out, np.ndarray) and out.shape == (50, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out, model.predict(x, batch_size=50))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-6)  # probabilities
    assert model(x[:0]).shape == (0, 3)
    with pytest.raises(TypeError, match="Sequential.__call__: training must be a bool"):
        model(x, training=1)
    bn = fd.Sequential([fd.layers.Dense(4), fd.layers.BatchNormalization(), fd.layers.Dense(2)])
    bn.build(6)
    before = bn.layers[1].moving_mean.copy()
    bn(x)
    np.testing.assert_array_equal(bn.layers[1].moving_mean, before)  # inference
    bn(x, training=True)  # Keras: the batch's statistics, the moving ones updated
    assert not np.array_equal(bn.layers[1].moving_mean, before)


def test_count_params():
    model = fd.Sequential([fd.layers.Dense(10, input_shape=(64,)),
                           fd.layers.BatchNormalization(), fd.layers.Dropout(0.1),
                           fd.layers.Dense(3, use_bias=False)])
    # Keras' counts: 64*10 + 10, BN 4*10 (2*10 non-trainable), 10*3
    assert model.count_params() == 650 + 40 + 30
    assert [la.count_params() for la in model.layers] == [650, 40, 0, 30]
    unbuilt = fd.Sequential([fd.layers.Dense(3)])
    with pytest.raises(ValueError, match="Sequential.count_params: the model .* is not built"):
        unbuilt.count_params()
    with pytest.raises(ValueError, match="count_params needs a built layer"):
        unbuilt.layers[0].count_params()


def test_input_builds_the_model():
    assert fd.Input is fd.layers.Input
    model = fd.Sequential([fd.Input((64,)), fd.layers.Dense(10, activation="softmax")])
    assert model.built and model.count_params() == 650
    assert len(model.layers) == 1 and model.layers[0].kernel.shape == (64, 10)
    model.add(fd.layers.Dense(4))  # built at once too
    assert model.built and model.layers[1].kernel.shape == (10, 4)
    f64 = fd.Sequential([fd.layers.Input(shape=[5]), fd.layers.Dense(2)], dtype="float64")
    assert f64.layers[0].kernel.dtype == np.float64
    with pytest.raises(ValueError, match="must be the model's first entry"):
        fd.Sequential([fd.layers.Dense(2), fd.Input((3,))])
    with pytest.raises(ValueError, match=r"Sequential.predict: x has 63 features, the model "
                                         r"expects 64"):
        model.predict(np.zeros((2, 63), np.float32))
    with pytest.raises(ValueError, match=r"Input: shape must be \(features,\).*\(8, 8\)"):
        fd.Input((8, 8))
    with pytest.raises(TypeError, match=r"Input: shape must be a tuple \(features,\), e.g. "
                                        r"\(64,\), got int 64"):
        fd.Input(64)
    with pytest.raises(ValueError, match=r"Input: shape\[0\] must be an int >= 1, got 0"):
        fd.Input((0,))


@pytest.mark.parametrize("first", [
    fd.layers.Dense(4, input_shape=(6,)), fd.layers.Dense(4, input_dim=6),
    fd.layers.BatchNormalization(input_shape=(6,)), fd.layers.Activation("relu", input_dim=6),
    fd.layers.Dropout(0.5, input_shape=[6]), fd.layers.PReLU(input_shape=(6,))],
    ids=["Dense-input_shape", "Dense-input_dim", "BatchNormalization", "Activation", "Dropout",
         "PReLU"])
def test_input_shape_on_the_first_layer(first):
    model = fd.Sequential([first, fd.layers.Dense(2)])
    assert model.built and model._input_spec[0] == 6
    config = json.loads(json.dumps(first.get_config()))
    assert config["input_shape"] == [6]
    assert type(first).from_config(config).declared_input_dim == 6
    # rebuilt from a config the model waits for its build (load and
    # clone_model build it on their own device)
    again = fd.Sequential.from_config(json.loads(json.dumps(model.get_config())))
    assert not again.built and again.layers[0].declared_input_dim == 6
    again.build(6)
    clone = fd.models.clone_model(model)
    assert clone.built and clone._input_spec == model._input_spec


def test_input_shape_checks():
    with pytest.raises(ValueError, match=r"Dense: input_shape=\(5,\) and input_dim=6 disagree"):
        fd.layers.Dense(2, input_shape=(5,), input_dim=6)
    with pytest.raises(TypeError, match="Dense: input_dim must be an int >= 1, got str '6'"):
        fd.layers.Dense(2, input_dim="6")
    with pytest.raises(ValueError, match=r"Dense: input_shape must be \(features,\)"):
        fd.layers.Dense(2, input_shape=(8, 8))
    layer = fd.layers.Dense(2, input_shape=(5,))
    with pytest.raises(ValueError, match=r"built for 4 input features, but it was declared with "
                                         r"input_shape=\(5,\)"):
        layer.build(4)
    assert "input_shape" not in fd.layers.Dense(2).get_config()  # configs as before


def _mc_model(dtype="float64"):
    model = fd.Sequential([fd.layers.Dense(5, kernel_initializer=fd.initializers.HeNormal(1)),
                           fd.layers.Dropout(0.5, seed=11),
                           fd.layers.Dense(4, use_bias=False,
                                           kernel_initializer=fd.initializers.HeNormal(2)),
                           fd.layers.BatchNormalization(), fd.layers.Activation("elu"),
                           fd.layers.Dropout(0.3, seed=12), fd.layers.Dense(2)], dtype=dtype)
    model.build(6)
    return model


def test_mc_dropout_seed_reproduces_and_follows_the_documented_keys():
    x, _ = _blobs(n=10)
    model = _mc_model()
    steps = (model.layers[1].step, model.layers[5].step)
    mean, std = model.predict(x, mc_samples=3, seed=7, batch_size=10)
    assert (model.layers[1].step, model.layers[5].step) == steps  # left as they were
    assert model.layers[1].seed == 11 and model.layers[5].seed == 12
    again = model.predict(x, mc_samples=3, seed=7, batch_size=10)
    np.testing.assert_array_equal(again[0], mean)
    np.testing.assert_array_equal(again[1], std)
    other = model.predict(x, mc_samples=3, seed=8, batch_size=10)
    assert not np.array_equal(other[0], mean)

    # the masks: layer i keys them by default_rng([seed, i]).integers(2**63)
    # and a counter from 0 (one batch here, so pass p uses step p)
    w1, b1, w3, gamma, beta, mm, mv, w7, b7 = model.get_weights()
    s1, s5 = (int(np.random.default_rng([7, i]).integers(2**63)) for i in (1, 5))
    bn = model.layers[3]
    runs = []
    for p in range(3):
        h = R.dropout_forward(R.dense_forward(x, w1, b1)[0], 0.5, s1, p)
        h = R.dense_forward(h, w3)[0]
        keep = R.dropout_mask_bits(h.size, 0.3, s5, p).reshape(h.shape)
        h = R.batchnorm_forward(h, gamma, beta, mm, mv, bn.epsilon, "elu", keep, 0.3)
        runs.append(R.dense_forward(h, w7, b7)[0])
    assert_scaled_close(mean, np.mean(runs, axis=0), 1e-12, "mean")
    assert_scaled_close(std, np.std(runs, axis=0), 1e-12, "std")


def test_mc_dropout_without_seed_draws_on():
    x, _ = _blobs(n=10)
    model = _mc_model()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a model with dropout does not warn
        a = model.predict(x, mc_samples=2, batch_size=5)
    b = model.predict(x, mc_samples=2, batch_size=5)
    assert not np.array_equal(a[0], b[0])
    assert model.layers[1].step == 8 and model.layers[5].step == 8  # 2 x 2 x 2 batches
    with pytest.raises(ValueError, match="Sequential.predict: seed=3 seeds MC dropout; pass "
                                         "mc_samples too"):
        model.predict(x, seed=3)
    with pytest.raises(TypeError, match="Sequential.predict: seed must be an int"):
        model.predict(x, mc_samples=2, seed=1.5)


# -------------------------------------------------------- progress report


def _progress_fit(monkeypatch, stream, verbose, epochs=2):
    x, y = _blobs(n=100)
    model = _mlp()
    monkeypatch.setattr("sys.stdout", stream)
    hist = model.fit(x, y, epochs=epochs, batch_size=10, validation_split=0.2, seed=0,
                     verbose=verbose)
    return hist, stream.getvalue()


def _epoch_line_pattern(hist, epoch):
    items = " - ".join(f"{k}: {v[epoch]:.4f}" for k, v in hist.history.items())
    return rf"Epoch {epoch + 1}/2 - 8/8 - \d+\.\ds - {re.escape(items)}"


@pytest.mark.parametrize("verbose", [1, 2])
def test_progress_in_a_log_file_is_one_line_per_epoch(monkeypatch, verbose):
    hist, out = _progress_fit(monkeypatch, io.StringIO(), verbose)
    assert "\r" not in out
    lines = out.splitlines()
    assert len(lines) == 2
    assert set(hist.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    for epoch, line in enumerate(lines):
        assert re.fullmatch(_epoch_line_pattern(hist, epoch), line), line


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("columns", [200, 100, 72, 40])
def test_progress_bar_fits_the_terminal(monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", str(columns))  # what shutil.get_terminal_size reads first
    hist, out = _progress_fit(monkeypatch, _Terminal(), 1)
    lines = out.split("\n")
    assert len(lines) == 3 and lines[2] == ""  # one line per epoch
    for epoch, line in enumerate(lines[:2]):
        *bars, last = line.split("\r")
        assert len(bars) >= 2 and bars[0] == ""  # at least the last batch is drawn
        for bar in bars[1:]:
            assert len(bar.rstrip()) < columns, bar
        # the end of the epoch: one clean line with every metric, validation included
        assert re.fullmatch(_epoch_line_pattern(hist, epoch) + " *", last), last
        assert len(last) >= max(len(b) for b in bars)  # it covers the bar
        drawn = bars[-1]
        assert drawn.startswith(f"Epoch {epoch + 1}/2 8/8")
        assert ("samples/s" in drawn) == (columns >= 100)


def test_progress_bar_drops_the_rate_before_the_metrics():
    bar = fd.models.history._Progress(0, 10, 100, 0)
    logs = {"loss": 0.25, "accuracy": 0.875}
    full = bar.line(37, 1.5, logs, "12345 samples/s", 1000)
    assert full == ("Epoch 1/10  37/100 [===========>..................] 1.5s - loss: 0.2500 - "
                    "accuracy: 0.8750 - 12345 samples/s")
    metrics = "1.5s - loss: 0.2500 - accuracy: 0.8750"
    for width in range(1, 120):
        line = bar.line(37, 1.5, logs, "12345 samples/s", width)
        assert len(line) <= width
        if metrics not in line:  # metrics cut: the rate went first, and the bar
            assert "samples/s" not in line and "[" not in line
            assert line == f"Epoch 1/10  37/100 - {metrics}"[:width]
        if "samples/s" in line:
            assert metrics in line and "[" in line


# ------------------------------------------------------------ NaN losses


def test_fit_warns_once_when_the_loss_turns_nan():
    x, y = _blobs(n=40)
    x[25, 2] = np.nan
    model = _mlp()
    with pytest.warns(RuntimeWarning) as record:
        hist = model.fit(x, y, epochs=3, batch_size=10, shuffle=False, verbose=0)
    nan = [w for w in record if "loss is" in str(w.message)]
    assert len(nan) == 1
    assert str(nan[0].message).startswith("Sequential.fit: the loss is nan at epoch 1, batch 3; "
                                          "training goes on (add "
                                          "fd.callbacks.TerminateOnNaN() to stop)")
    assert nan[0].filename == __file__  # points at the caller's fit
    assert len(hist.history["loss"]) == 3 and all(math.isnan(v) for v in hist.history["loss"])
    stop = _mlp()
    with pytest.warns(RuntimeWarning, match="the loss is nan"):
        hist = stop.fit(x, y, epochs=3, batch_size=10, shuffle=False, verbose=0,
                        callbacks=[fd.callbacks.TerminateOnNaN()])
    assert hist.epoch == [0]  # TerminateOnNaN still does the stopping
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _mlp().fit(x[:20], y[:20], epochs=2, verbose=0)  # finite losses: no warning


def test_the_plan_follows_the_layers_and_the_loss():
    """Sequential's Steps (fusednn.models.plan) are planned again when a
    layer's activation or the loss changes, and nothing is written onto the
    layers: the loss takes a sigmoid head's activation, the Dense keeps it."""
    from fusednn.models.plan import DenseBatchNormStep, DenseStep, LayerStep

    model = fd.Sequential([fd.layers.Dense(4), fd.layers.BatchNormalization(),
                           fd.layers.Dense(1, activation="sigmoid")])
    model.build(3, np, np.float64)
    assert [type(s) for s in model._steps] == [DenseBatchNormStep, LayerStep]
    model.compile("adam", "binary_crossentropy")
    assert [type(s) for s in model._steps] == [DenseBatchNormStep, DenseStep]
    assert model.layers[2].activation.name == "sigmoid"
    assert model.layers[2].get_config()["activation"] == {"name": "sigmoid"}
    x = np.random.default_rng(0).standard_normal((5, 3))
    p = model.predict(x)
    assert np.all((p > 0) & (p < 1))
    model.layers[0].activation = fd.activations.get("relu")
    model.predict(x)
    # the relu Dense runs on its own; the BN still takes its (absent) activation
    assert [type(s) for s in model._steps] == [LayerStep, DenseBatchNormStep, DenseStep]
    assert model._steps[1].dense is None
    model.compile("adam", "mse")
    assert [type(s) for s in model._steps] == [LayerStep, DenseBatchNormStep, LayerStep]
    # under mse the sigmoid runs in the Dense's kernel: predict is the steps' output
    np.testing.assert_array_equal(model.predict(x), model._forward(x, False))


def _bn_model(dtype, convention, scale, center, use_bias):
    """Dense -> BN -> ELU -> Dense(elu) -> BN -> Dense(softmax), trained a
    little so the moving statistics and gamma/beta are not their defaults."""
    bn = dict(convention=convention, scale=scale, center=center, momentum=0.5)
    model = fd.Sequential([
        fd.layers.Dense(16, use_bias=use_bias, input_shape=(6,)),
        fd.layers.BatchNormalization(**bn), fd.layers.Activation("elu"),
        fd.layers.Dense(12, activation="elu"), fd.layers.BatchNormalization(**bn),
        fd.layers.Dense(3, activation="softmax")], dtype=dtype)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    x, y = _blobs(200, 6, 3)
    model.fit(x.astype(dtype), y, batch_size=32, epochs=2, verbose=0, seed=0)
    return model, x.astype(dtype), y


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("convention,scale,center,use_bias", [
    ("keras", True, True, True), ("torch", True, True, False), ("keras", False, False, False),
    ("keras", True, False, True)])
def test_fold_batchnorm_gives_the_same_predictions(dtype, convention, scale, center, use_bias):
    model, x, y = _bn_model(dtype, convention, scale, center, use_bias)
    folded = model.fold_batchnorm()
    # the first BN (after a linear Dense) is folded; the second follows an
    # ELU Dense and stays
    kinds = [type(layer).__name__ for layer in folded.layers]
    assert kinds == ["Dense", "Activation", "Dense", "BatchNormalization", "Dense"]
    assert folded.layers[0].use_bias
    # reference: the first Dense and the inference-mode BN in float64
    dense, bn = model.layers[0], model.layers[1]
    w, b = (np.asarray(a, np.float64) for a in (dense.kernel, dense.bias if use_bias else
                                                np.zeros(16)))
    z = x.astype(np.float64) @ w + b
    gamma = np.asarray(bn.gamma, np.float64) if scale else 1.0
    beta = np.asarray(bn.beta, np.float64) if center else 0.0
    want = (z - bn.moving_mean) / np.sqrt(bn.moving_variance + bn.epsilon) * gamma + beta
    got = x.astype(np.float64) @ folded.layers[0].kernel.astype(np.float64) + \
        folded.layers[0].bias.astype(np.float64)
    assert_scaled_close(got, want, 1e-6 if dtype == "float32" else 1e-12, "folded dense")
    tol = 1e-5 if dtype == "float32" else 1e-12
    assert_scaled_close(folded.predict(x), model.predict(x), tol, "predict")
    np.testing.assert_allclose(folded.evaluate(x, y, return_dict=True)["loss"],
                               model.evaluate(x, y, return_dict=True)["loss"], rtol=tol * 10)
    # the two models share no array: training the original leaves the fold as it was
    before = folded.get_weights()
    model.fit(x, y, epochs=1, verbose=0)
    for a, b_ in zip(before, folded.get_weights()):
        np.testing.assert_array_equal(a, b_)


def test_fold_batchnorm_refuses_what_it_cannot_fold():
    with pytest.raises(TypeError, match="fold_batchnorm"):
        fd.models.fold_batchnorm("model")
    unbuilt = fd.Sequential([fd.layers.Dense(3), fd.layers.BatchNormalization()])
    with pytest.raises(ValueError, match="not built"):
        unbuilt.fold_batchnorm()
    # nothing to fold: the same layers and outputs
    model = fd.Sequential([fd.layers.Dense(4, activation="relu", input_shape=(3,)),
                           fd.layers.BatchNormalization()])
    x = np.random.default_rng(0).standard_normal((5, 3))
    model.build(3)
    folded = model.fold_batchnorm()
    assert [type(la).__name__ for la in folded.layers] == ["Dense", "BatchNormalization"]
    np.testing.assert_allclose(folded.predict(x), model.predict(x), rtol=1e-6)
