"""The compiled training step (fusednn.models.engine, fusednn._C.StepPlan):
the same weights, optimizer state, moving statistics, dropout counters and
history as the layer-by-layer path, the fallback for what it does not run,
and its input checks."""

import numpy as np
import pytest

import fusednn as fd
from fusednn import _C
from fusednn.layers import (ELU, Activation, AlphaDropout, BatchNormalization, Dense, Dropout,
                            LeakyReLU, RReLU)

L = fd.layers


def _data(n=203, d=12, k=4, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(dtype)
    w = rng.standard_normal((d, k))
    labels = np.argmax(x @ w + 0.3 * rng.standard_normal((n, k)), axis=1)
    return x, labels


def _w1_like(dtype, drop=True, head="softmax"):
    """A deep BN net as the step engine issue's W1, small."""
    layers = [fd.Input((12,))]
    for i in range(3):
        layers += [Dense(16, use_bias=False, kernel_initializer="he_normal"),
                   BatchNormalization(), ELU()]
        if drop and i == 1:
            layers.append(Dropout(0.2, seed=7))
    layers.append(Dense(4 if head == "softmax" else 1, activation=head))
    return fd.Sequential(layers, dtype=dtype)


MODELS = {
    "w1_nadam": (lambda dt: _w1_like(dt), lambda: fd.optimizers.Nadam(1e-3),
                 "sparse_categorical_crossentropy"),
    "mixed_layers_adam": (
        lambda dt: fd.Sequential([
            fd.Input((12,)), Dense(20, activation="relu"), Dropout(0.3, seed=3),
            Dense(20), LeakyReLU(0.1), BatchNormalization(center=False),
            Activation("gelu"), AlphaDropout(0.1, seed=5), Dense(16, activation="selu"),
            BatchNormalization(convention="torch", momentum=0.1, epsilon=1e-5),
            Dense(4, activation="softmax")], dtype=dt),
        lambda: fd.optimizers.Adam(2e-3, amsgrad=True, global_clipnorm=1.0),
        "categorical_crossentropy"),
    "penalties_sgd": (
        lambda dt: fd.Sequential([
            fd.Input((12,)),
            Dense(24, activation="swish", kernel_regularizer=fd.regularizers.L1L2(1e-4, 1e-3),
                  kernel_constraint=fd.constraints.MaxNorm(1.5)),
            BatchNormalization(scale=False), Activation("tanh"),
            Dense(4, activation="softmax")], dtype=dt),
        lambda: fd.optimizers.SGD(0.05, momentum=0.9, nesterov=True, clipnorm=0.5),
        "sparse_categorical_crossentropy"),
    "binary_rmsprop": (lambda dt: _w1_like(dt, head="sigmoid"),
                       lambda: fd.optimizers.RMSprop(1e-3, centered=True, momentum=0.5),
                       "binary_crossentropy"),
    "mse_adamw": (
        lambda dt: fd.Sequential([fd.Input((12,)), Dense(32, activation="mish"),
                                  Dense(1)], dtype=dt),
        lambda: fd.optimizers.AdamW(1e-3, weight_decay=0.01, clipvalue=0.2), "mse"),
}


def _targets(loss, labels, dtype):
    if loss == "categorical_crossentropy":
        return np.eye(4, dtype=dtype)[labels]
    if loss in ("binary_crossentropy", "mse"):
        return (labels % 2).astype(dtype)
    return labels


def _train(name, dtype, jit, epochs=3, callbacks=None, frozen=None, batch_size=32,
           backend="cpu", deferred=False):
    """MODELS[name] fit on `backend`; with `deferred`, the compiled step keeps
    its loss where it runs and fit reads its tally (the GPU's way, forced on
    the CPU)."""
    from fusednn.models.engine import CompiledStep

    from conftest import to_backend

    build, make_opt, loss = MODELS[name]
    np.random.seed(0)
    model = build(dtype)
    init = np.random.default_rng(1)
    model.set_weights([init.standard_normal(w.shape).astype(dtype) * 0.3
                       if w.ndim == 2 else w for w in model.get_weights()])
    if frozen is not None:
        model.layers[frozen].trainable = False
    metrics = [] if loss == "mse" else ["accuracy"]
    model.compile(make_opt(), loss, metrics=metrics, jit_compile=jit)
    if deferred:
        model._engine = CompiledStep(model)
        model._engine.deferred = True
    x, labels = _data(dtype=dtype)
    hist = model.fit(to_backend(x, backend), to_backend(_targets(loss, labels, dtype), backend),
                     batch_size=batch_size, epochs=epochs, verbose=0, seed=4, callbacks=callbacks)
    return model, hist


def _state(model):
    opt = model.optimizer.get_state()
    slots = [s for row in opt["slots"] for s in row if s is not None]
    steps = [la.step for la in model.layers if isinstance(la, Dropout)]
    return model.get_weights() + slots, opt["iterations"], steps


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_step_equals_the_layer_by_layer_path(name, dtype):
    a, ha = _train(name, dtype, False)
    b, hb = _train(name, dtype, True)
    assert a.step_mode == "layer by layer (jit_compile=False)"
    assert b.step_mode == "compiled"
    lines = []
    b.summary(print_fn=lines.append)
    assert lines[-1] == "Training step: compiled"
    wa, ia, sa = _state(a)
    wb, ib, sb = _state(b)
    assert ia == ib == 3 * 7 and sa == sb
    for u, v in zip(wa, wb):
        if dtype == np.float64:
            np.testing.assert_array_equal(u, v)
        else:
            np.testing.assert_allclose(v, u, rtol=1e-6, atol=1e-7 * np.abs(u).max())
    assert ha.history.keys() == hb.history.keys()
    for k in ha.history:
        np.testing.assert_allclose(hb.history[k], ha.history[k], rtol=1e-6)


def test_float32_steps_are_bit_identical_too():
    # The same kernel calls in the same order: not just close.
    a, _ = _train("w1_nadam", np.float32, False)
    b, _ = _train("w1_nadam", np.float32, True)
    for u, v in zip(_state(a)[0], _state(b)[0]):
        np.testing.assert_array_equal(u, v)


def test_frozen_layers_and_a_callback_that_unfreezes():
    class Unfreeze(fd.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                self.model.layers[0].trainable = True

    for frozen in (0, 4):
        a, _ = _train("w1_nadam", np.float64, False, frozen=frozen, callbacks=[Unfreeze()])
        b, _ = _train("w1_nadam", np.float64, True, frozen=frozen, callbacks=[Unfreeze()])
        for u, v in zip(_state(a)[0], _state(b)[0]):
            np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("schedule", [True, False])
def test_schedules_and_reduce_lr_on_plateau_reach_the_compiled_step(schedule):
    def run(jit):
        build, _, loss = MODELS["w1_nadam"]
        model = build(np.float64)
        model.set_weights([np.full(w.shape, 0.05) if w.ndim == 2 else w
                           for w in model.get_weights()])
        lr = fd.schedules.ExponentialDecay(1e-2, decay_steps=5, decay_rate=0.5) if schedule \
            else 1e-2
        model.compile(fd.optimizers.Adam(lr), loss, jit_compile=jit)
        x, labels = _data(dtype=np.float64)
        cbs = [] if schedule else [fd.callbacks.ReduceLROnPlateau(monitor="loss", patience=0,
                                                                  factor=0.5, min_delta=10.0)]
        model.fit(x, labels, epochs=3, verbose=0, seed=0, callbacks=cbs)
        return model.get_weights(), model.optimizer.current_learning_rate()

    (wa, lra), (wb, lrb) = run(False), run(True)
    assert lra == lrb < 1e-2
    for u, v in zip(wa, wb):
        np.testing.assert_array_equal(u, v)


def test_resume_from_a_saved_model_equals_one_run(tmp_path):
    build, make_opt, loss = MODELS["w1_nadam"]
    x, labels = _data(dtype=np.float32)

    def fresh():
        model = build(np.float32)
        model.set_weights([np.full(w.shape, 0.1, np.float32) if w.ndim == 2 else w
                           for w in model.get_weights()])
        model.compile(make_opt(), loss)
        return model

    one = fresh()
    one.fit(x, labels, epochs=4, verbose=0, seed=2)
    two = fresh()
    two.fit(x, labels, epochs=2, verbose=0, seed=2)
    two.save(tmp_path / "m.fdnn")
    three = fd.models.load(tmp_path / "m.fdnn")
    three.fit(x, labels, epochs=4, initial_epoch=2, verbose=0)
    assert three.step_mode == "compiled"
    for u, v in zip(one.get_weights(), three.get_weights()):
        np.testing.assert_array_equal(u, v)


def test_terminate_on_nan_stops_the_compiled_fit():
    model = _w1_like(np.float32)
    model.compile(fd.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    x, labels = _data()
    x[5:, :] = np.nan
    with pytest.warns(RuntimeWarning, match="the loss is nan"):
        hist = model.fit(x, labels, epochs=3, batch_size=4, verbose=0, shuffle=False,
                         callbacks=[fd.callbacks.TerminateOnNaN()])
    assert model.step_mode == "compiled"
    assert len(hist.history["loss"]) == 1 and model.optimizer.iterations == 2


@pytest.mark.parametrize("layer, reason", [(RReLU(), "RReLU"), (L.PReLU(), "PReLU")])
def test_unsupported_layers_fall_back_and_say_why(layer, reason):
    model = fd.Sequential([fd.Input((12,)), Dense(8), layer, Dense(4, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    assert model.step_mode == f"layer by layer ({reason})"
    lines = []
    model.summary(print_fn=lines.append)
    assert lines[-1] == f"Training step: layer by layer ({reason})"
    x, labels = _data()
    model.fit(x, labels, epochs=1, verbose=0)
    assert model.step_mode == f"layer by layer ({reason})"
    model.compile("adam", "sparse_categorical_crossentropy", jit_compile=True)
    with pytest.raises(ValueError, match=f"jit_compile=True.*{reason}"):
        model.fit(x, labels, epochs=1, verbose=0)


def test_cache_frozen_falls_back():
    model, _ = _train("w1_nadam", np.float32, "auto", epochs=1)
    assert model.step_mode == "compiled"
    for layer in model.layers[:3]:
        layer.trainable = False
    x, labels = _data()
    model.fit(x, labels, epochs=1, verbose=0, cache_frozen=True)
    assert model.step_mode == "layer by layer (cache_frozen)"


def test_bad_jit_compile():
    model = _w1_like(np.float32)
    with pytest.raises(ValueError, match="jit_compile must be True, False or 'auto', got 'yes'"):
        model.compile("adam", "mse", jit_compile="yes")


def test_weights_replaced_between_fits_rebuild_the_plan():
    model, _ = _train("mse_adamw", np.float64, True, epochs=1)
    x, labels = _data(dtype=np.float64)
    y = (labels % 2).astype(np.float64)
    model.layers[0].kernel = model.layers[0].kernel.copy()  # a new array object
    model.layers[0]._trainable_weights[0] = model.layers[0].kernel
    before = model.layers[0].kernel.copy()
    model.fit(x, y, epochs=1, verbose=0)
    assert not np.array_equal(before, model.layers[0].kernel)  # the new array was trained


def _plan(dtype=np.float32):
    w = np.ones((3, 2), dtype)
    blocks = [{"kind": _C.BlockKind.Dense, "in": 3, "out": 2, "w": w, "b": None,
               "act": _C.Act.Linear, "alpha": 0.0}]
    return _C.StepPlan(blocks, dtype == np.float64, _C.LossKind.Mse, False, 0.5, 0, _C.Opt.SGD,
                       [(0, "w", [None, None, None], 0.0, 0.0, 0.0, (1, 1, 1))]), w


def test_step_plan_checks_its_inputs():
    plan, w = _plan()
    step = _C.OptStep()
    step.lr = 0.1
    clip = _C.Clip.Off
    x = np.ones((4, 3), np.float32)
    t = np.zeros((4, 2), np.float32)
    loss, correct = plan.run(x, t, [], step, clip, 0.0)
    # y = 3 everywhere: loss = mean over outputs and rows of 9; dL/dy = 2 * 3 / 2 / 4,
    # dL/dw = x^T dL/dy = 4 * 0.75 = 3
    assert loss == pytest.approx(9.0) and correct == 0
    np.testing.assert_allclose(w, 1 - 0.1 * 3.0)
    with pytest.raises(ValueError, match="x"):
        plan.run(np.ones((4, 5), np.float32), t, [], step, clip, 0.0)
    with pytest.raises(TypeError, match="x"):
        plan.run(np.ones((4, 3)), t, [], step, clip, 0.0)
    with pytest.raises(ValueError, match="target"):
        plan.run(x, np.zeros((3, 2), np.float32), [], step, clip, 0.0)
    with pytest.raises(ValueError, match="counters"):
        plan.run(x, t, [1], step, clip, 0.0)
    with pytest.raises(ValueError, match="x"):
        plan.run(np.ones((0, 3), np.float32), t[:0], [], step, clip, 0.0)
    bad = [{"kind": _C.BlockKind.Dense, "in": 3, "out": 2, "w": np.ones((2, 2), np.float32),
            "act": _C.Act.Linear}]
    with pytest.raises(ValueError, match="w"):
        _C.StepPlan(bad, False, _C.LossKind.Mse, False, 0.5, 0, _C.Opt.SGD, [])
    with pytest.raises(ValueError, match="tensors"):
        _C.StepPlan(_plan_blocks(), False, _C.LossKind.Mse, False, 0.5, 0, _C.Opt.SGD,
                    [(0, "gamma", [None, None, None], 0.0, 0.0, 0.0, (1, 1, 1))])
    with pytest.raises(ValueError, match="blocks"):
        _C.StepPlan([], False, _C.LossKind.Mse, False, 0.5, 0, _C.Opt.SGD, [])


def _plan_blocks():
    return [{"kind": _C.BlockKind.Dense, "in": 3, "out": 2, "w": np.ones((3, 2), np.float32),
             "act": _C.Act.Linear}]


def test_a_larger_batch_grows_the_buffers():
    plan, w = _plan(np.float64)
    step = _C.OptStep()
    for m, rows in ((2, 2), (8, 8), (3, 8)):
        plan.run(np.ones((m, 3)), np.zeros((m, 2)), [], step, _C.Clip.Off, 0.0)
        assert plan.rows == rows


@pytest.mark.parametrize("name", ["w1_nadam", "mixed_layers_adam", "binary_rmsprop"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_predict_and_evaluate_equal_the_layer_by_layer_path(name, dtype):
    a, _ = _train(name, dtype, False, epochs=1)
    b, _ = _train(name, dtype, "auto", epochs=1)
    x, labels = _data(n=77, seed=3, dtype=dtype)
    y = _targets(MODELS[name][2], labels, dtype)
    np.testing.assert_array_equal(a.predict(x, batch_size=16), b.predict(x, batch_size=16))
    assert a.evaluate(x, y, batch_size=10) == b.evaluate(x, y, batch_size=10)
    for seed in (None, 5):  # MC dropout: the layers' counters, or a seeded run
        ma, sa = a.predict(x, batch_size=32, mc_samples=3, seed=seed)
        mb, sb = b.predict(x, batch_size=32, mc_samples=3, seed=seed)
        np.testing.assert_array_equal(ma, mb)
        np.testing.assert_array_equal(sa, sb)
    assert _state(a)[2] == _state(b)[2]  # the dropout counters moved alike
    np.testing.assert_array_equal(a(x[:5]), b(x[:5]))
    np.testing.assert_array_equal(a(x[:5], training=True), b(x[:5], training=True))


def test_mc_dropout_layer_is_on_in_a_compiled_predict():
    def model(jit):
        m = fd.Sequential([fd.Input((12,)), Dense(8, activation="relu"),
                           Dropout(0.5, seed=1, mc=True), Dense(3)])
        m.set_weights([np.full(w.shape, 0.1, np.float32) for w in m.get_weights()])
        m.compile("sgd", "mse", jit_compile=jit)
        return m

    x, _ = _data(n=20)
    a, b = model(False), model("auto")
    pa, pb = a.predict(x), b.predict(x)
    np.testing.assert_array_equal(pa, pb)
    pa2, pb2 = a.predict(x), b.predict(x)
    np.testing.assert_array_equal(pa2, pb2)
    assert not np.array_equal(pa, pa2)  # a new mask each call
    assert a.layers[1].step == b.layers[1].step == 2


def test_predict_plan_checks_its_inputs():
    plan, _ = _plan()
    x = np.ones((4, 3), np.float32)
    plan.predict(x, out := np.empty((4, 2), np.float32), [], [])
    np.testing.assert_array_equal(out, 3.0)
    with pytest.raises(ValueError, match="out"):
        plan.predict(x, np.empty((3, 2), np.float32), [], [])
    with pytest.raises(ValueError, match="out"):
        ro = np.empty((4, 2), np.float32)
        ro.flags.writeable = False
        plan.predict(x, ro, [], [])
    with pytest.raises(ValueError, match="counters"):
        plan.predict(x, out, [0], [True])
    runs = np.zeros((3, 6, 2), np.float32)  # MC passes: rows 2..5 of each
    plan.predict(x, runs, [], [], 2)
    np.testing.assert_array_equal(runs[:, 2:], 3.0)
    np.testing.assert_array_equal(runs[:, :2], 0.0)
    with pytest.raises(ValueError, match="row0"):
        plan.predict(x, runs, [], [], 3)
    with pytest.raises(ValueError, match="out"):
        plan.predict(x, np.zeros((1, 3, 6, 2), np.float32), [], [])


def test_layers_hold_the_compiled_steps_gradients():
    a, _ = _train("mixed_layers_adam", np.float64, False, epochs=1)
    b, _ = _train("mixed_layers_adam", np.float64, True, epochs=1)
    for la, lb in zip(a.layers, b.layers):
        assert len(la.grads) == len(lb.grads), la.name
        for ga, gb in zip(la.grads, lb.grads):
            np.testing.assert_array_equal(ga, gb)


# ------------------------------------------------- the deferred step (the GPU's form)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_deferred_step_gives_the_same_fit(name):
    # The sums read once per epoch (or per batch for the penalised model) give the
    # history the per-batch reads give, and the same weights.
    a, ha = _train(name, np.float32, True)
    b, hb = _train(name, np.float32, True, deferred=True)
    assert b._engine.deferred and b.step_mode == "compiled"
    for u, v in zip(_state(a)[0], _state(b)[0]):
        np.testing.assert_array_equal(u, v)
    assert ha.history.keys() == hb.history.keys()
    for k in ha.history:
        np.testing.assert_allclose(hb.history[k], ha.history[k], rtol=1e-12)


def test_a_deferred_step_still_warns_of_a_nan_loss_and_stops_on_terminate_on_nan():
    x, labels = _data()
    x[5:, :] = np.nan
    for callbacks, epochs in (([], 3), ([fd.callbacks.TerminateOnNaN()], 1)):
        model = _w1_like(np.float32)
        model.compile(fd.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
        from fusednn.models.engine import CompiledStep

        model._engine = CompiledStep(model)
        model._engine.deferred = True
        with pytest.warns(RuntimeWarning, match="the loss is nan"):
            hist = model.fit(x, labels, epochs=3, batch_size=4, verbose=0, shuffle=False,
                             callbacks=callbacks)
        assert len(hist.history["loss"]) == epochs
        # TerminateOnNaN reads each batch's loss: the fit stops at the second batch
        assert model.optimizer.iterations == (2 if callbacks else 3 * 51)


def test_the_tally_sums_the_steps_and_starts_again():
    plan, w = _plan(np.float64)
    step = _C.OptStep()
    assert plan.tally() == (0.0, 0, 0, 0, 0.0)
    losses = []
    for m in (4, 2):
        loss, _ = plan.run(np.ones((m, 3)), np.zeros((m, 2)), [], step, _C.Clip.Off, 0.0)
        losses.append(loss)
    loss_sum, correct, samples, batches, last = plan.tally()
    assert loss_sum == 4 * losses[0] + 2 * losses[1] and last == losses[1]
    assert (correct, samples, batches) == (0, 6, 2)
    assert plan.tally() == (0.0, 0, 0, 0, 0.0)
    assert plan.graphs == 0  # graphs are the GPU's
    with pytest.raises(ValueError, match="stream"):
        plan.run(np.ones((4, 3)), np.zeros((4, 2)), [], step, _C.Clip.Off, 0.0, None, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["w1_nadam", "mixed_layers_adam", "penalties_sgd"])
def test_the_compiled_step_on_each_backend_equals_the_layer_by_layer_path(backend, name, dtype):
    # On a GPU the step is a CUDA graph replayed from the second batch on, with the
    # record, the dropout counters and the loss in device memory.
    a, ha = _train(name, dtype, False, backend=backend)
    b, hb = _train(name, dtype, True, backend=backend)
    assert b.step_mode == "compiled"
    assert b._engine.deferred == (backend == "cuda")
    if backend == "cuda":
        assert b._engine._plan.graphs >= 1
    from conftest import to_numpy

    for u, v in zip(_state(a)[0], _state(b)[0]):
        u, v = to_numpy(u), to_numpy(v)
        if dtype == np.float64:
            np.testing.assert_allclose(v, u, rtol=1e-12, atol=1e-14 * np.abs(u).max())
        else:
            np.testing.assert_allclose(v, u, rtol=1e-6, atol=1e-7 * np.abs(u).max())
    assert _state(a)[1:] == _state(b)[1:]
    for k in ha.history:
        np.testing.assert_allclose(hb.history[k], ha.history[k], rtol=1e-6)


def test_a_deferred_step_reads_its_loss_once_per_epoch_unless_a_batch_needs_it():
    """The GPU's contract, on the CPU plan: the loss reaches the host once per
    epoch (and at a progress-bar redraw; once more before the first, for
    what an earlier fit left), not per batch; per batch only where a callback
    has its own on_train_batch_end."""
    from fusednn.models.engine import CompiledStep

    class Counting(CompiledStep):
        reads = 0

        def tally(self):
            Counting.reads += 1
            return super().tally()

    x, labels = _data()
    for callbacks, per_batch in (([fd.callbacks.EarlyStopping("loss", patience=5)], False),
                                 ([fd.callbacks.TerminateOnNaN()], True)):
        model = _w1_like(np.float32)
        model.compile(fd.optimizers.SGD(0.01), "sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        model._engine = Counting(model)
        model._engine.deferred = True
        Counting.reads = 0
        hist = model.fit(x, labels, epochs=2, batch_size=32, verbose=0, callbacks=callbacks)
        batches = 2 * 7
        assert Counting.reads == 1 + (batches if per_batch else 2)
        assert all(np.isfinite(hist.history["loss"])) and len(hist.history["accuracy"]) == 2


@pytest.mark.parametrize("loss_kind", ["sparse", "binary"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_tally_against_the_reference(backend, loss_kind, dtype):
    """The step's tally (a host loop on the CPU, one kernel on the GPU)
    against testing/reference.py's loss and NumPy's argmax / threshold on the
    same outputs: a plan of one linear Dense block at learning rate 0 (the
    weights, hence the outputs, stay), two batches of different sizes."""
    from conftest import to_backend

    from fusednn._backend import backend_for
    from fusednn.testing import reference as ref

    rng = np.random.default_rng(3)
    c = 5 if loss_kind == "sparse" else 3
    w = rng.standard_normal((6, c)).astype(dtype)
    w_dev = to_backend(w, backend)
    dev = backend_for("test", w=w_dev)
    blocks = [{"kind": _C.BlockKind.Dense, "in": 6, "out": c, "w": w_dev, "b": None,
               "act": _C.Act.Linear, "alpha": 0.0}]
    kind = _C.LossKind.SparseSoftmax if loss_kind == "sparse" else _C.LossKind.SigmoidBce
    plan = dev._C.StepPlan(blocks, dtype == np.float64, kind, True, 0.5, 0, _C.Opt.SGD, [])
    want_loss, want_hits, last = 0.0, 0, None
    for m in (7, 4):
        x = rng.standard_normal((m, 6)).astype(dtype)
        out = x.astype(np.float64) @ w.astype(np.float64)
        if loss_kind == "sparse":
            t = rng.integers(0, c, m)
            last, _ = ref.softmax_cross_entropy(out, t)
            want_hits += int(np.sum(np.argmax(out, axis=1) == t))
        else:
            t = (rng.random((m, c)) > 0.5).astype(dtype)
            last, _ = ref.sigmoid_binary_cross_entropy(out, t)
            want_hits += int(np.sum((out > 0.5) == (t > 0.5)))
        want_loss += last * m
        plan.run(to_backend(x, backend), to_backend(t, backend), [], _C.OptStep(), _C.Clip.Off,
                 0.0, None, dev.stream)
    loss_sum, correct, samples, batches, got_last = plan.tally()
    assert (samples, batches, correct) == (11, 2, want_hits)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert loss_sum == pytest.approx(want_loss, rel=tol)
    assert got_last == pytest.approx(last, rel=tol)


def _wide(dtype, constraint=None):
    """Large enough (> 2^16 parameters) for the update to run beside the
    backward (cpu/device.h UpdateBeside) when the pool has two threads."""
    return fd.Sequential([
        fd.Input((12,)), Dense(64, activation="relu"),
        Dense(256, use_bias=False, kernel_regularizer=fd.regularizers.L2(1e-3),
              kernel_constraint=constraint),
        BatchNormalization(), ELU(), Dropout(0.1, seed=2),
        Dense(256, use_bias=False), BatchNormalization(), Activation("gelu"),
        Dense(4, activation="softmax")], dtype=dtype)


MODELS_WIDE = {
    "wide_nadam_clipvalue": lambda: fd.optimizers.Nadam(1e-3, clipvalue=0.05),
    "wide_adamw": lambda: fd.optimizers.AdamW(2e-3, weight_decay=0.01, amsgrad=True),
    "wide_sgd_clipnorm": lambda: fd.optimizers.SGD(0.01, momentum=0.9, clipnorm=1.0),
    "wide_maxnorm": lambda: fd.optimizers.RMSprop(1e-3, centered=True),
}


@pytest.fixture
def background():
    """_C.set_background, put back to 'auto' afterwards."""
    yield _C.set_background
    _C.set_background("auto")


@pytest.mark.parametrize("name", sorted(MODELS_WIDE))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("frozen", [None, 1])
def test_the_update_beside_the_backward_gives_the_same_bits(name, dtype, frozen, background):
    """A block's parameters are updated as soon as its backward is done, by
    an idle worker; the result is bit for bit the layer-by-layer path's
    (optimizer_step after the whole backward), with one thread or two, with
    the update beside the backward always, never, or where the caller was
    not preempted lately (auto: either, step by step). Clipping by norm and
    max-norm constraints need every gradient first and keep the update after
    the backward."""
    from test_threads import threads as Threads

    def run(jit, threads, mode="auto"):
        background(mode)
        with Threads(threads):
            np.random.seed(0)
            model = _wide(dtype, fd.constraints.MaxNorm(0.5) if name == "wide_maxnorm" else None)
            init = np.random.default_rng(1)
            model.set_weights([init.standard_normal(w.shape).astype(dtype) * 0.1
                               if w.ndim == 2 else w for w in model.get_weights()])
            if frozen is not None:
                model.layers[frozen].trainable = False
            model.compile(MODELS_WIDE[name](), "sparse_categorical_crossentropy",
                          jit_compile=jit)
            x, labels = _data(n=160, dtype=dtype)
            before = _C.pool_stats()["background"]
            model.fit(x, labels, batch_size=32, epochs=2, verbose=0, seed=4)
            return _state(model)[0], _C.pool_stats()["background"] - before

    ref, _ = run(False, 1)
    # (frozen=1 freezes the max-norm layer: no constraint is left)
    needs_all = name == "wide_sgd_clipnorm" or (name == "wide_maxnorm" and frozen is None)
    for threads in (1, 2):
        for mode in ("always", "never", "auto"):
            got, count = run(True, threads, mode)
            for u, v in zip(ref, got):
                np.testing.assert_array_equal(u, v)
            beside = threads == 2 and not needs_all
            if mode == "always":
                assert count == (2 * 5 if beside else 0), (threads, count)
            elif mode == "never":
                assert count == 0, (threads, count)
            else:
                assert 0 <= count <= (2 * 5 if beside else 0), (threads, count)


def test_set_background_names_its_modes(background):
    for mode in ("always", "never", "auto"):
        background(mode)
        assert _C.pool_stats()["background_setting"] == mode
    with pytest.raises(ValueError, match="set_background.*'sometimes'"):
        background("sometimes")
    assert _C.pool_stats()["background_setting"] == "auto"


def test_auto_keeps_the_update_after_the_backward_for_a_threads_first_steps(background):
    """'auto' hands the update to a worker only after 16 steps of the
    calling thread without an involuntary context switch, so a fresh
    thread's first 10 steps keep it after the backward."""
    import threading

    from test_threads import threads as Threads

    background("auto")
    model = _wide(np.float32)
    model.compile(fd.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    x, labels = _data(n=160, dtype=np.float32)
    counts = []

    def fit():
        before = _C.pool_stats()["background"]
        model.fit(x, labels, batch_size=32, epochs=2, verbose=0)
        counts.append(_C.pool_stats()["background"] - before)

    with Threads(2):
        t = threading.Thread(target=fit)
        t.start()
        t.join()
    assert counts == [0]
