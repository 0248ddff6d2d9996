"""GradientHealth and fd.tools.diagnose: the chapter's ailments found, and
nothing found on a healthy network."""

import warnings

import numpy as np
import pytest

import fusednn as fd
from fusednn.callbacks import GradientHealth
from fusednn.health import findings


def _xy(n=256, features=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)).astype(np.float32), rng.integers(0, 10, n)


def _head():
    # every initializer seeded: an unseeded head made the ratio of the top and
    # bottom gradient std vary run to run (45x to 123x on the sigmoid net)
    return fd.layers.Dense(10, activation="softmax",
                           kernel_initializer=fd.initializers.GlorotUniform(seed=0))


def _fit(layers, every=4, epochs=1, jit="auto", **kw):
    x, y = _xy()
    model = fd.Sequential(layers + [_head()])
    model.build((None, x.shape[1]))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  jit_compile=jit)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, epochs=epochs, batch_size=64, verbose=0, seed=0,
                            callbacks=[GradientHealth(every=every, **kw)])
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    return model, history, messages


def _sigmoid_net():
    return [fd.layers.Dense(100, activation="sigmoid",
                            kernel_initializer=fd.initializers.RandomNormal(0.0, 1.0, seed=i))
            for i in range(15)]


def test_warns_on_saturated_sigmoid_network():
    _, history, messages = _fit(_sigmoid_net())
    assert len(messages) == 1 and "saturated activations" in messages[0]
    assert "Glorot" in messages[0] and "dense" in messages[0]
    sat = [r["saturated"] for r in history.health[0]["layers"][:-1]]
    assert min(sat) > 0.1 and all(r["dead"] is None for r in history.health[0]["layers"])


def test_warns_on_dead_relus():
    layers = [fd.layers.Dense(100, activation="relu", kernel_initializer="he_normal",
                              bias_initializer=fd.initializers.Constant(-10.0))
              for _ in range(5)]
    _, history, messages = _fit(layers)
    assert len(messages) == 1 and "dying ReLUs" in messages[0] and "leaky ReLU" in messages[0]
    assert [r["dead"] for r in history.health[0]["layers"][:5]] == [1.0] * 5


@pytest.mark.parametrize("jit", ["auto", False])
def test_silent_on_he_bn_elu(jit):
    layers = []
    for i in range(15):
        layers += [fd.layers.Dense(100, use_bias=False,
                                   kernel_initializer=fd.initializers.HeNormal(seed=i)),
                   fd.layers.BatchNormalization(), fd.layers.Activation("elu")]
    model, history, messages = _fit(layers, epochs=3, jit=jit)
    assert messages == []
    # 4 steps an epoch, recorded at iterations 1, 5, 9
    assert [h["step"] for h in history.health] == [1, 5, 9]
    assert [h["epoch"] for h in history.health] == [0, 1, 2]
    assert model.step_mode == ("compiled" if jit == "auto" else "layer by layer (jit_compile=False)")
    rec = history.health[0]["layers"]
    assert len(rec) == 16 and all(r["update_ratio"] > 0 for r in rec)


def test_records_match_the_step_they_describe():
    """The statistics are those of the recorded step: act_std from the
    activations, grad_std from the kernel gradient, update_ratio from the
    SGD update lr * grad."""
    x, y = _xy(n=64)
    model = fd.Sequential([fd.layers.Dense(20, activation="tanh",
                                           kernel_initializer=fd.initializers.GlorotUniform(0)),
                           fd.layers.Dense(10, activation="softmax")])
    model.build((None, 32))
    model.compile(optimizer=fd.optimizers.SGD(learning_rate=0.1),
                  loss="sparse_categorical_crossentropy")
    w0 = model.layers[0].kernel.copy()
    h = model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[GradientHealth(every=1)])
    rec = h.health[0]["layers"][0]
    act = np.tanh(x.astype(np.float64) @ w0 + 0.0)
    assert rec["act_std"] == pytest.approx(act.std(), rel=1e-4)
    grad = (w0 - model.layers[0].kernel) / 0.1
    assert rec["grad_std"] == pytest.approx(grad.std(), rel=1e-3)
    assert rec["update_ratio"] == pytest.approx(
        np.linalg.norm(w0 - model.layers[0].kernel) / np.linalg.norm(w0), rel=1e-4)
    assert rec["saturated"] == pytest.approx(float(np.mean(np.abs(act) >= 1 - 1e-3)), abs=1e-3)


def test_recorded_steps_train_as_the_compiled_step():
    layers = lambda: [fd.layers.Dense(30, use_bias=False,  # noqa: E731
                                      kernel_initializer=fd.initializers.HeNormal(1)),
                      fd.layers.BatchNormalization(), fd.layers.Activation("elu")]
    x, y = _xy()
    b = fd.Sequential(layers() + [fd.layers.Dense(10, activation="softmax")])
    b.build((None, 32))
    b.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    c = fd.models.clone_model(b, copy_weights=True)  # the same initial weights
    c.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    b.fit(x, y, epochs=2, batch_size=64, verbose=0, seed=0)
    c.fit(x, y, epochs=2, batch_size=64, verbose=0, seed=0, callbacks=[GradientHealth(every=2)])
    for wb, wc in zip(b.get_weights(), c.get_weights()):
        np.testing.assert_allclose(wb, wc, rtol=1e-4, atol=1e-6)


def test_diagnose_reports_without_changing_the_model():
    x, y = _xy()
    model = fd.Sequential(_sigmoid_net() + [_head()])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.build((None, 32))
    before = [w.copy() for w in model.get_weights()]
    report = fd.tools.diagnose(model, x, y, batch_size=64)
    assert not report.healthy and report.findings[0][0] == "saturation"
    assert "saturated" in str(report) and len(report.records) == 16
    for w0, w1 in zip(before, model.get_weights()):
        np.testing.assert_array_equal(w0, w1)
    with pytest.raises(TypeError, match="unknown threshold 'dying'"):
        fd.tools.diagnose(model, x, y, dying=0.1)


def test_findings_rules_and_bad_arguments():
    def rec(name, g, sat=None, dead=None):
        return {"name": name, "act_std": 1.0, "grad_std": g, "saturated": sat, "dead": dead,
                "update_ratio": None}

    assert findings([rec("a", 1e-5), rec("b", 1e-2)])[0][0] == "vanishing"
    assert findings([rec("a", 1.0), rec("b", 1e-3)])[0][0] == "exploding"
    assert findings([rec("a", float("nan")), rec("b", 1.0)])[0][0] == "exploding"
    assert findings([rec("a", 1e-3), rec("b", 1e-2)]) == []
    for bad, err in (({"every": 0}, ValueError), ({"every": 1.5}, TypeError),
                     ({"saturation": 2.0}, ValueError), ({"warn": 1}, TypeError)):
        with pytest.raises(err):
            GradientHealth(**bad)
