"""fd.pretrain.greedy_autoencoder on sklearn's digits (bundled, no download):
each stage learns to reconstruct its input, the reported losses equal a NumPy
float64 recomputation, and the layers stack into a model that fits."""

import numpy as np
import pytest

import fusednn as fd
from fusednn.testing import reference as R

L = fd.layers


@pytest.fixture(scope="module")
def digits():
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_digits()
    return d.data / 16.0, d.target  # pixels 0..16 scaled to [0, 1], float64


def _layers():
    return [L.Dense(32, activation="elu", kernel_initializer=fd.initializers.HeNormal(seed=0)),
            L.BatchNormalization(),
            L.Dense(16, activation="elu", kernel_initializer=fd.initializers.HeNormal(seed=1)),
            L.Dropout(0.1, seed=3)]


def test_each_stage_learns_and_losses_match_numpy(digits):
    x, _ = digits
    layers = _layers()
    d1, bn, d2, drop = layers
    d1.build(64, np, np.float64)  # built as float64: every stage follows it
    out = fd.pretrain.greedy_autoencoder(layers, x, epochs=5, seed=0)

    assert isinstance(out, list) and len(out) == 4
    assert all(a is b for a, b in zip(out, layers))  # the same objects, trained in place
    assert all(la.built for la in layers)
    assert all(w.dtype == np.float64 for la in layers for w in la.weights)
    assert all(d.kernel.dtype == np.float64 for d in out.decoders)
    assert len(out.histories) == len(out.decoders) == 2
    for k in range(2):
        assert len(out.histories[k].history["loss"]) == 5
        assert out.final_losses[k] < 0.5 * out.initial_losses[k]

    # The reported losses, recomputed in NumPy float64 in inference mode:
    # stage 1 = Dense + BN (moving statistics), stage 2 = Dense + Dropout (identity).
    dec1, dec2 = out.decoders
    assert dec1.kernel.shape == (32, 64) and dec2.kernel.shape == (16, 32)
    h1 = R.activation(x @ d1.kernel + d1.bias, "elu")
    h1 = bn.gamma * (h1 - bn.moving_mean) / np.sqrt(bn.moving_variance + bn.epsilon) + bn.beta
    np.testing.assert_allclose(out.final_losses[0],
                               np.mean((h1 @ dec1.kernel + dec1.bias - x) ** 2), rtol=1e-10)
    h2 = R.activation(h1 @ d2.kernel + d2.bias, "elu")
    np.testing.assert_allclose(out.final_losses[1],
                               np.mean((h2 @ dec2.kernel + dec2.bias - h1) ** 2), rtol=1e-10)
    assert drop.step > 0  # the dropout was active while its stage trained


def test_unbuilt_layers_are_float32_whatever_the_data(digits):
    """Keras' rule: float64 data do not make a float64 model; x is cast."""
    x, y = digits
    assert x.dtype == np.float64
    layers = fd.pretrain.greedy_autoencoder(_layers(), x[:300], epochs=1, seed=0)
    assert all(w.dtype == np.float32 for la in layers for w in la.weights)
    assert all(d.kernel.dtype == np.float32 for d in layers.decoders)
    model = fd.Sequential(layers + [L.Dense(10, activation="softmax")])
    assert model.dtype == "float32"
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:300], y[:300], epochs=1, verbose=0)
    assert model.layers[-1].kernel.dtype == np.float32


def test_pretrained_layers_stack_with_a_head_and_fit(digits):
    x, y = digits
    layers = fd.pretrain.greedy_autoencoder(_layers(), x[:1500], epochs=3, seed=0)
    head = L.Dense(10, activation="softmax",
                   kernel_initializer=fd.initializers.GlorotUniform(seed=4))
    model = fd.Sequential(layers + [head])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x[:1500], y[:1500], epochs=3, verbose=0, seed=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    _, acc = model.evaluate(x[1500:], y[1500:])
    assert acc > 0.7  # ten classes: chance is 0.1


def test_seed_reproduces_and_optimizer_is_fresh_per_stage(digits):
    x, _ = digits
    opt = fd.optimizers.Adam(learning_rate=2e-3)
    a = fd.pretrain.greedy_autoencoder(_layers(), x, epochs=1, optimizer=opt, seed=7)
    b = fd.pretrain.greedy_autoencoder(_layers(), x, epochs=1, optimizer=opt, seed=7)
    for la, lb in zip(a, b):
        for wa, wb in zip(la.get_weights(), lb.get_weights()):
            np.testing.assert_array_equal(wa, wb)
    assert opt.iterations == 0  # cloned from its config, never stepped itself
    c = fd.pretrain.greedy_autoencoder(_layers(), x, epochs=1,
                                       optimizer=lambda: fd.optimizers.SGD(0.05), seed=7)
    assert not np.array_equal(c[0].kernel, a[0].kernel)


def test_frozen_stage_is_kept_and_codes_still_flow(digits):
    x, _ = digits
    first = L.Dense(24, activation="relu", trainable=False,
                    kernel_initializer=fd.initializers.HeNormal(seed=0))
    first.build(64, np, np.float64)
    kernel = first.kernel.copy()
    second = L.Dense(8, activation="elu", kernel_initializer=fd.initializers.HeNormal(seed=1))
    out = fd.pretrain.greedy_autoencoder([first, second], x, epochs=2,
                                         decoder_activation=["sigmoid", None], seed=0)
    np.testing.assert_array_equal(first.kernel, kernel)
    assert out.histories[0] is None and out.initial_losses[0] is None
    assert second.input_dim == 24 and out.final_losses[1] < out.initial_losses[1]


def test_binary_crossentropy_with_sigmoid_decoder(digits):
    x, _ = digits
    out = fd.pretrain.greedy_autoencoder([L.Dense(16, activation="elu")], x, epochs=3,
                                         loss="binary_crossentropy",
                                         decoder_activation="sigmoid", seed=0)
    assert out.final_losses[0] < out.initial_losses[0]


@pytest.mark.parametrize("layers,x,kwargs,exc,match", [
    ("empty", "ok", {}, ValueError, "layers is empty"),
    ("bn_first", "ok", {}, ValueError, r"layers\[0\] must be a Dense"),
    ("not_list", "ok", {}, TypeError, "layers must be a list"),
    ("not_layer", "ok", {}, TypeError, r"layers\[1\] must be a fd layer"),
    ("twice", "ok", {}, ValueError, r"layers\[1\] .* appears twice"),
    ("softmax", "ok", {}, ValueError, "output activation 'softmax'"),
    ("ok", "1d", {}, ValueError, "x has 1 dims"),
    ("ok", "int", {}, TypeError, "x has dtype int64"),
    ("ok", "list", {}, TypeError, "x must be a NumPy or CuPy array"),
    ("built", "ok", {}, ValueError, "was built for 10 input features, x has 64"),
    ("ok", "ok", {"epochs": 0}, ValueError, "epochs must be an int >= 1"),
    ("ok", "ok", {"epochs": 1.5}, TypeError, "epochs must be an int"),
    ("ok", "ok", {"batch_size": 0}, ValueError, "batch_size must be an int >= 1"),
    ("ok", "ok", {"loss": "sparse_categorical_crossentropy"}, ValueError, "loss must be one of"),
    ("ok", "ok", {"optimizer": "adamz"}, ValueError, "unknown optimizer"),
    ("ok", "ok", {"optimizer": 3}, TypeError, "optimizer must be a name"),
    ("ok", "ok", {"decoder_activation": "softmax"}, ValueError, "softmax"),
    ("ok", "ok", {"decoder_activation": ["relu"] * 3}, ValueError, "3 entries for 1 stages"),
    ("ok", "ok", {"verbose": 3}, ValueError, "verbose must be 0, 1 or 2"),
    ("ok", "ok", {"seed": -2}, ValueError, "seed must be an int >= 0"),
])
def test_bad_arguments(layers, x, kwargs, exc, match):
    dense = L.Dense(4)
    layers = {"empty": [], "bn_first": [L.BatchNormalization(), L.Dense(4)],
              "not_list": dense, "not_layer": [dense, "relu"], "twice": [dense, dense],
              "softmax": [L.Dense(4, activation="softmax")], "ok": [dense],
              "built": [dense]}[layers]
    if isinstance(layers, list) and layers and layers[0] is dense and "built" in match:
        dense.build(10)
    rng = np.random.default_rng(0)
    x = {"ok": rng.random((20, 64)), "1d": rng.random(20), "int": np.ones((20, 64), np.int64),
         "list": [[0.0] * 64] * 20}[x]
    with pytest.raises(exc, match=match):
        fd.pretrain.greedy_autoencoder(layers, x, **kwargs)
    assert not dense.built or "built" in match  # nothing was trained on a refusal
