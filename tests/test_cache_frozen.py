"""fit(cache_frozen=True): a frozen, deterministic bottom of the model runs
once per fit, and the training result equals that of an ordinary fit."""

import numpy as np
import pytest

import fusednn as fd

init = fd.initializers


def _data(n=150, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    return x, np.argmax(x @ rng.standard_normal((d, k)), axis=1)


def _model(bottom):
    """`bottom` (frozen) under a trainable Dense(8, relu) + softmax head,
    float64, Nadam; BN statistics made non-trivial."""
    head = [fd.layers.Dense(8, activation="relu", kernel_initializer=init.HeNormal(seed=11)),
            fd.layers.Dense(3, activation="softmax",
                            kernel_initializer=init.GlorotUniform(seed=12))]
    for layer in bottom:
        layer.trainable = False
    model = fd.Sequential(bottom + head)
    # Layer by layer: the tests count the rows each Step's forward is given
    # (the compiled step runs no Python Step; tests/test_engine.py covers it).
    model.compile(fd.optimizers.Nadam(learning_rate=0.01), "sparse_categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=False)
    model.build(6, np, np.float64)
    rng = np.random.default_rng(5)
    for layer in model.layers:
        if isinstance(layer, fd.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, 12), rng.normal(0, 0.1, 12),
                               rng.normal(0, 0.5, 12), rng.uniform(0.5, 2.0, 12)])
    return model


def _dense_bn_elu_dense():
    return [fd.layers.Dense(12, kernel_initializer=init.HeNormal(seed=1)),
            fd.layers.BatchNormalization(), fd.layers.ELU(),
            fd.layers.Dense(12, activation="elu", kernel_initializer=init.HeNormal(seed=2))]


def _count_rows(model):
    """Wrap each of the model's steps to count the rows it is given, under
    the name of the layer that leads it (the BN of a fused Dense -> BN ->
    activation step; a layer absorbed into a fused step counts none)."""
    counts = {layer.name: 0 for layer in model.layers}
    for step in model._steps:
        lead = getattr(step, "bn", step.layers[0]).name

        def forward(x, training, mc=False, _f=step.forward, _n=lead):
            counts[_n] += x.shape[0]
            return _f(x, training, mc)

        step.forward = forward
    return counts


FIT = dict(epochs=3, batch_size=16, validation_split=0.2, seed=0, verbose=0)


def _fit_both(bottom_factory):
    plain, cached = _model(bottom_factory()), _model(bottom_factory())
    x, y = _data()
    counts_plain = _count_rows(plain)
    counts_cached = _count_rows(cached)
    h_plain = plain.fit(x, y, **FIT)
    h_cached = cached.fit(x, y, cache_frozen=True, **FIT)
    return plain, cached, h_plain, h_cached, counts_plain, counts_cached


def _assert_close(a, b, what):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(float(np.abs(b).max()), 1e-300)
    assert float(np.abs(a - b).max()) <= 1e-12 * scale, what


def _assert_same_training(plain, cached, h_plain, h_cached):
    for i, (a, b) in enumerate(zip(plain.get_weights(), cached.get_weights())):
        _assert_close(b, a, f"weight {i}")
    for key, values in h_plain.history.items():
        _assert_close(h_cached.history[key], values, key)
    assert plain.optimizer.iterations == cached.optimizer.iterations


def test_cached_fit_equals_the_plain_fit_and_runs_the_prefix_once():
    plain, cached, hp, hc, cp, cc = _fit_both(_dense_bn_elu_dense)
    assert cached._cacheable_steps() == 2  # Dense + BN + ELU (one fused step), Dense
    _assert_same_training(plain, cached, hp, hc)
    n, n_train = 150, 120
    for layer in (cached.layers[1], cached.layers[3]):  # the two steps' layers
        assert cc[layer.name] == n, layer.name  # once per sample per fit
    assert cc[cached.layers[0].name] == cc[cached.layers[2].name] == 0  # absorbed into BN
    bn, head = cached.layers[1].name, cached.layers[4].name
    # the plain fit runs it each epoch: training rows plus the validation rows
    assert cp[plain.layers[1].name] == 3 * n
    assert cc[head] == cp[plain.layers[4].name] == 3 * n
    assert cc[bn] == n and n_train < n
    # the frozen layers are unchanged by either fit
    fresh = _model(_dense_bn_elu_dense())
    for a, b in zip(fresh.get_weights()[:8], cached.get_weights()[:8]):
        assert np.array_equal(a, b)


def test_a_frozen_dropout_is_not_cached():
    def bottom():
        return [fd.layers.Dense(12, activation="elu", kernel_initializer=init.HeNormal(seed=1)),
                fd.layers.Dropout(0.3, seed=4),
                fd.layers.Dense(12, activation="elu", kernel_initializer=init.HeNormal(seed=2))]

    plain, cached, hp, hc, cp, cc = _fit_both(bottom)
    assert cached._cacheable_steps() == 1
    _assert_same_training(plain, cached, hp, hc)
    assert cc[cached.layers[0].name] == 150
    drop = cached.layers[1]
    assert cc[drop.name] == cp[plain.layers[1].name] == 3 * 150  # every epoch
    assert drop.step == plain.layers[1].step == 3 * 8  # one mask per training batch


def test_a_batchnorm_with_fused_dropout_or_an_rrelu_ends_the_cached_prefix():
    def bn_dropout():
        return [fd.layers.Dense(12, kernel_initializer=init.HeNormal(seed=1)),
                fd.layers.BatchNormalization(), fd.layers.ELU(), fd.layers.Dropout(0.2, seed=3)]

    plain, cached, hp, hc, cp, cc = _fit_both(bn_dropout)
    # the Dense is fused into the BN -> ELU -> Dropout step, which is random
    assert cached._cacheable_steps() == 0
    _assert_same_training(plain, cached, hp, hc)
    assert cc[cached.layers[1].name] == 3 * 150 and cached.layers[3].step == 3 * 8

    def rrelu_first():
        return [fd.layers.RReLU(seed=2),
                fd.layers.Dense(12, kernel_initializer=init.HeNormal(seed=1))]

    plain, cached, hp, hc, cp, cc = _fit_both(rrelu_first)
    assert cached._cacheable_steps() == 0
    _assert_same_training(plain, cached, hp, hc)
    assert cc[cached.layers[1].name] == 3 * 150


def test_nothing_to_cache_trains_as_usual():
    def trainable_bottom():
        return [fd.layers.Dense(12, activation="elu", kernel_initializer=init.HeNormal(seed=1))]

    plain, cached = _model(trainable_bottom()), _model(trainable_bottom())
    for model in (plain, cached):
        model.layers[0].trainable = True
    x, y = _data()
    counts = _count_rows(cached)
    hp = plain.fit(x, y, **FIT)
    hc = cached.fit(x, y, cache_frozen=True, **FIT)
    assert cached._cacheable_steps() == 0
    assert counts[cached.layers[0].name] == 3 * 150
    for a, b in zip(plain.get_weights(), cached.get_weights()):
        assert np.array_equal(a, b)
    assert hp.history == hc.history


def test_cache_frozen_must_be_a_bool():
    model = _model(_dense_bn_elu_dense())
    x, y = _data()
    for bad in ("yes", 1, None):
        with pytest.raises(TypeError, match="cache_frozen must be a bool"):
            model.fit(x, y, cache_frozen=bad)
