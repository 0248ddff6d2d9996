"""fit's data besides arrays in memory: sample and class weights, generators,
Sequences, arrays on disk, the prefetch threads, DataFrames and DLPack
tensors, and Keras' build((None, n))."""

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fusednn as fd
from fusednn.testing import reference as ref


def _data(n=96, features=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    y = rng.integers(0, classes, size=n)
    return x, y


def _model(features=8, classes=3, optimizer="sgd", jit=True, seed=0, bn=False, lr=None):
    layers = [fd.layers.Dense(16, activation="elu", kernel_initializer=fd.initializers.HeNormal(seed))]
    if bn:
        layers.append(fd.layers.BatchNormalization())
    layers.append(fd.layers.Dense(classes, activation="softmax",
                                  kernel_initializer=fd.initializers.GlorotUniform(seed + 1)))
    model = fd.Sequential(layers)
    model.build((None, features))
    opt = fd.optimizers.get(optimizer) if lr is None else fd.optimizers.SGD(learning_rate=lr)
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  jit_compile=jit)
    return model


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


# ------------------------------------------------------------------ build
def test_build_takes_keras_input_shapes():
    for shape in ((None, 5), (5,), [None, 5], 5):
        m = fd.Sequential([fd.layers.Dense(3)])
        m.build(shape)
        assert m.layers[0].input_dim == 5
    m = fd.Sequential([fd.layers.Dense(3)])
    for bad in ((None, 5, 2), (None,), 0, "5", (None, None)):
        with pytest.raises(ValueError, match="input"):
            m.build(bad)
    lines = []
    m.build((None, 5))
    m.summary(print_fn=lines.append)
    assert any("(None, 3)" in line and "18" in line for line in lines)


# --------------------------------------------------------- sample weights
@pytest.mark.parametrize("jit", [True, False])
def test_weighted_step_equals_dropping_samples(jit):
    """Weights (2, 2, 0, 0) over a batch of 4 give the loss (l1 + l2) / 2,
    the loss of the first two samples alone: the same step."""
    x, y = _data(n=4)
    a, b = _model(jit=jit, lr=0.1), _model(jit=jit, lr=0.1)
    a.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0,
          sample_weight=np.array([2.0, 2.0, 0.0, 0.0]))
    b.fit(x[:2], y[:2], batch_size=2, epochs=3, shuffle=False, verbose=0)
    for wa, wb in zip(_weights(a), _weights(b)):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)
    assert a.step_mode == ("compiled" if jit else "layer by layer (jit_compile=False)")


@pytest.mark.parametrize("jit", [True, False])
def test_doubled_weights_equal_doubled_learning_rate(jit):
    x, y = _data()
    a, b = _model(jit=jit, lr=0.05), _model(jit=jit, lr=0.1)
    a.fit(x, y, batch_size=16, epochs=2, seed=3, verbose=0, sample_weight=np.full(len(x), 2.0))
    b.fit(x, y, batch_size=16, epochs=2, seed=3, verbose=0)
    for wa, wb in zip(_weights(a), _weights(b)):
        np.testing.assert_array_equal(wa, wb)


def test_class_weight_is_sample_weight_by_class():
    x, y = _data()
    cw = {0: 0.5, 1: 2.0}  # class 2 not named: weight 1
    a, b = _model(), _model()
    a.fit(x, y, batch_size=16, epochs=2, seed=1, verbose=0, class_weight=cw)
    b.fit(x, y, batch_size=16, epochs=2, seed=1, verbose=0,
          sample_weight=np.array([cw.get(int(c), 1.0) for c in y]))
    for wa, wb in zip(_weights(a), _weights(b)):
        np.testing.assert_array_equal(wa, wb)
    both = _model()
    both.fit(x, y, batch_size=16, epochs=1, seed=1, verbose=0, class_weight=cw,
             sample_weight=np.full(len(x), 0.5))


def test_weighted_step_compiled_equals_layer_by_layer():
    x, y = _data(n=64)
    w = np.random.default_rng(1).uniform(0, 3, size=len(x))
    a, b = _model(jit=True, bn=True, optimizer="nadam"), _model(jit=False, bn=True,
                                                                 optimizer="nadam")
    ha = a.fit(x, y, batch_size=16, epochs=2, seed=0, verbose=0, sample_weight=w)
    hb = b.fit(x, y, batch_size=16, epochs=2, seed=0, verbose=0, sample_weight=w)
    for wa, wb in zip(_weights(a), _weights(b)):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ha.history["loss"], hb.history["loss"], rtol=1e-5)


def test_weighted_evaluate_against_reference():
    x, y = _data(n=50)
    w = np.random.default_rng(2).uniform(0, 2, size=len(x))
    model = _model()
    model.fit(x, y, epochs=1, verbose=0)
    p = model.predict(x).astype(np.float64)
    logits = np.log(p)  # log-probabilities: softmax gives p back
    got = model.evaluate(x, y, sample_weight=w, batch_size=7, return_dict=True)
    want, _ = ref.softmax_cross_entropy(logits, y, sample_weight=w)
    assert got["loss"] == pytest.approx(want, rel=1e-5)
    assert want == pytest.approx(float(np.sum(w * -logits[np.arange(len(y)), y]) / len(y)))
    # accuracy is not weighted (Keras' metrics)
    assert got["accuracy"] == pytest.approx(float(np.mean(p.argmax(1) == y)))
    unweighted = model.evaluate(x, y, return_dict=True)["loss"]
    assert unweighted == pytest.approx(ref.softmax_cross_entropy(logits, y)[0], rel=1e-5)


def test_bad_weights_name_the_argument():
    x, y = _data()
    model = _model()
    with pytest.raises(ValueError, match=r"sample_weight has shape \(3,\)"):
        model.fit(x, y, verbose=0, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match=r"sample_weight\[5\]"):
        w = np.ones(len(x))
        w[5] = -1
        model.fit(x, y, verbose=0, sample_weight=w)
    with pytest.raises(ValueError, match="class_weight has key 7"):
        model.fit(x, y, verbose=0, class_weight={7: 1.0})
    with pytest.raises(ValueError, match=r"class_weight\[0\]"):
        model.fit(x, y, verbose=0, class_weight={0: float("nan")})
    with pytest.raises(TypeError, match="class_weight must be a dict"):
        model.fit(x, y, verbose=0, class_weight=[1.0, 2.0])
    with pytest.raises(ValueError, match="samples but y has"):
        model.fit(x, y[:-1], verbose=0)


# ------------------------------------------------------ generators & co.
def _batches(x, y, bs):
    for b in range(0, len(x), bs):
        yield x[b:b + bs], y[b:b + bs]


class _Seq(fd.utils.Sequence):
    def __init__(self, x, y, bs, **kw):
        super().__init__(**kw)
        self.x, self.y, self.bs = x, y, bs
        self.ends = 0

    def __len__(self):
        return -(-len(self.x) // self.bs)

    def __getitem__(self, i):
        return self.x[i * self.bs:(i + 1) * self.bs], self.y[i * self.bs:(i + 1) * self.bs]

    def on_epoch_end(self):
        self.ends += 1


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_sequence_fit_equals_in_memory_fit(workers):
    x, y = _data(n=100)
    a, b = _model(optimizer="adam"), _model(optimizer="adam")
    seq = _Seq(x, y, 16)
    ha = a.fit(seq, epochs=3, shuffle=False, verbose=0, workers=workers)
    hb = b.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    for wa, wb in zip(_weights(a), _weights(b)):
        np.testing.assert_array_equal(wa, wb)
    assert ha.history["loss"] == hb.history["loss"]
    assert seq.ends == 3 and ha.params["steps"] == 7


def test_generator_fit_equals_in_memory_fit_and_validates():
    x, y = _data(n=64)

    def forever():
        while True:
            yield from _batches(x, y, 16)

    a, b = _model(), _model()
    ha = a.fit(forever(), steps_per_epoch=4, epochs=3, verbose=0,
               validation_data=_Seq(x, y, 32))
    hb = b.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0, validation_data=(x, y))
    for wa, wb in zip(_weights(a), _weights(b)):
        np.testing.assert_array_equal(wa, wb)
    np.testing.assert_allclose(ha.history["val_loss"], hb.history["val_loss"], rtol=1e-6)


def test_generator_reaches_090_on_digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(x))
    tr, te = idx[:1400], idx[1400:]

    def stream():
        r = np.random.default_rng(1)
        while True:
            order = r.permutation(tr)
            for b in range(0, len(order) - 31, 32):
                yield x[order[b:b + 32]], y[order[b:b + 32]]

    model = fd.Sequential([fd.layers.Dense(64, activation="relu"),
                           fd.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(stream(), steps_per_epoch=40, epochs=8, verbose=0)
    acc = model.evaluate(x[te], y[te], return_dict=True)["accuracy"]
    assert acc >= 0.9


def test_reiterable_reads_anew_each_epoch_and_list_of_batches_is_data_error():
    x, y = _data(n=48)

    class Loader:  # an iterable that is not an iterator, as a DataLoader
        def __iter__(self):
            return _batches(x, y, 16)

        def __len__(self):
            return 3

    a, b = _model(), _model()
    h = a.fit(Loader(), epochs=2, verbose=0)
    b.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    for wa, wb in zip(_weights(a), _weights(b)):
        np.testing.assert_array_equal(wa, wb)
    assert h.params["steps"] == 3


def test_generator_errors_name_the_batch():
    x, y = _data(n=64)
    model = _model()

    def bad_shape():
        yield x[:16], y[:16]
        yield x[16:32], y[16:32]
        yield x[32:48, :5], y[32:48]

    with pytest.raises(ValueError, match="x of batch 2 has 5 features, the model expects 8"):
        model.fit(bad_shape(), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="yielded no batch"):
        model.fit(iter(()), epochs=1, verbose=0)

    def mismatched():
        yield x[:16], y[:15]

    with pytest.raises(ValueError, match="x of batch 0 has 16 samples but y of batch 0 has 15"):
        model.fit(mismatched(), epochs=1, verbose=0)

    def not_pairs():
        yield x[:16]

    with pytest.raises(ValueError, match=r"batch 0 of x is a ndarray"):
        model.fit(not_pairs(), epochs=1, verbose=0)

    def boom():
        yield x[:16], y[:16]
        raise KeyError("broken loader")

    with pytest.raises(KeyError, match="broken loader"):
        model.fit(boom(), steps_per_epoch=2, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="y=.* with x a generator"):
        model.fit(_batches(x, y, 16), y, verbose=0)
    with pytest.raises(ValueError, match="steps_per_epoch=2 is for generators"):
        model.fit(x, y, steps_per_epoch=2, verbose=0)
    with pytest.raises(ValueError, match="give validation_steps"):
        model.fit(_Seq(x, y, 16), validation_data=_batches(x, y, 16), verbose=0)


def test_generator_that_runs_out_stops_with_a_warning():
    x, y = _data(n=64)
    model = _model()
    with pytest.warns(UserWarning, match="ran out of data at epoch 2"):
        h = model.fit(_batches(x, y, 16), steps_per_epoch=3, epochs=5, verbose=0)
    assert len(h.history["loss"]) == 2  # 3 batches, then 1 of 3


def test_prefetch_overlaps_a_slow_loader():
    """Loading sleeps 10 ms a batch; the step runs meanwhile, so workers=2
    takes well under the serial time."""
    x, y = _data(n=32 * 20, features=8)

    class Slow(_Seq):
        def __getitem__(self, i):
            time.sleep(0.01)
            return super().__getitem__(i)

    model = _model()
    seq = Slow(x, y, 32)
    t0 = time.perf_counter()
    model.fit(seq, epochs=1, verbose=0, workers=0)
    serial = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.fit(seq, epochs=1, verbose=0, workers=4)
    parallel = time.perf_counter() - t0
    assert serial >= 0.2  # 20 sleeps of 10 ms
    assert parallel < 0.75 * serial


# ------------------------------------------------------------ disk arrays
def test_memmap_and_h5py_fit_equal_in_memory_fit(tmp_path):
    x, y = _data(n=80)
    mm = np.memmap(tmp_path / "x.bin", dtype=np.float32, mode="w+", shape=x.shape)
    mm[:] = x
    mm.flush()
    ro = np.memmap(tmp_path / "x.bin", dtype=np.float32, mode="r", shape=x.shape)
    a, b = _model(), _model()
    a.fit(ro, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    b.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    for wa, wb in zip(_weights(a), _weights(b)):
        np.testing.assert_array_equal(wa, wb)
    np.testing.assert_array_equal(a.predict(ro), a.predict(x))
    # a view into the file (rows 16: of it) reads the same rows
    c, d = _model(), _model()
    c.fit(ro[16:], y[16:], batch_size=16, epochs=1, shuffle=False, verbose=0)
    d.fit(x[16:], y[16:], batch_size=16, epochs=1, shuffle=False, verbose=0)
    for wa, wb in zip(_weights(c), _weights(d)):
        np.testing.assert_array_equal(wa, wb)
    # shuffled: every batch once per epoch, in a permuted order
    e = _model()
    h = e.fit(ro, y, batch_size=16, epochs=2, seed=0, verbose=0, validation_split=0.2)
    assert h.params["steps"] == 4 and len(h.history["val_loss"]) == 2
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["x"] = x
        f["y"] = y
    with h5py.File(tmp_path / "d.h5", "r") as f:
        g = _model()
        g.fit(f["x"], f["y"], batch_size=16, epochs=2, shuffle=False, verbose=0)
        np.testing.assert_allclose(g.predict(f["x"]), g.predict(x))
    for wa, wb in zip(_weights(g), _weights(b)):
        np.testing.assert_array_equal(wa, wb)


def test_4gib_memmap_trains_in_bounded_memory(tmp_path):
    """One epoch over a 4 GiB float32 memmap: the peak resident memory stays
    within 1 GiB of the built model's (measured in a fresh process)."""
    path = tmp_path / "big.bin"
    rows, features = 1 << 20, 1024  # 4 GiB of float32
    with open(path, "wb") as f:
        f.truncate(rows * features * 4)  # sparse: no disk used, reads give zeros
        rng = np.random.default_rng(0)
        for start in range(0, rows, rows // 8):  # some real rows among them
            f.seek(start * features * 4)
            f.write(rng.normal(size=(256, features)).astype(np.float32).tobytes())
    script = textwrap.dedent(f"""
        import numpy as np, fusednn as fd
        def rss(key):
            for line in open("/proc/self/status"):
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        x = np.memmap({str(path)!r}, dtype=np.float32, mode="r", shape=({rows}, {features}))
        y = (np.arange({rows}) % 10).astype(np.int64)
        model = fd.Sequential([fd.layers.Dense(10, activation="softmax")])
        model.build((None, {features}))
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        model.fit(x[:4096], y[:4096], batch_size=4096, epochs=1, verbose=0)  # warm
        base = rss("VmRSS")
        model.fit(x, y, batch_size=4096, epochs=1, verbose=0)
        print(base, rss("VmHWM"))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=600, env={**os.environ})
    assert out.returncode == 0, out.stderr
    base, peak = map(int, out.stdout.split())
    path.unlink()
    assert peak - base <= 1 << 30, f"peak {peak / 2**20:.0f} MiB, model {base / 2**20:.0f} MiB"


# ------------------------------------------------- DataFrames and tensors
def test_dataframe_fit_keeps_feature_names():
    pd = pytest.importorskip("pandas")
    x, y = _data()
    cols = [f"f{i}" for i in range(x.shape[1])]
    df = pd.DataFrame(x, columns=cols)
    model = _model()
    model.fit(df, pd.Series(y), epochs=1, verbose=0)
    assert list(model.feature_names_in_) == cols
    with pytest.raises(ValueError, match="feature names should match"):
        model.predict(df.rename(columns={"f0": "other"}))
    with pytest.warns(UserWarning, match="no feature names"):
        plain = model.predict(x)
    np.testing.assert_array_equal(model.predict(df), plain)
    bad = df.assign(city=["a"] * len(df))
    with pytest.raises(TypeError, match="city"):
        model.fit(bad, y, verbose=0)


def test_torch_tensors_in_fit_and_predict():
    torch = pytest.importorskip("torch")
    x, y = _data()
    a, b = _model(), _model()
    a.fit(torch.from_numpy(x), torch.from_numpy(y), batch_size=16, epochs=2, seed=0, verbose=0)
    b.fit(x, y, batch_size=16, epochs=2, seed=0, verbose=0)
    for wa, wb in zip(_weights(a), _weights(b)):
        np.testing.assert_array_equal(wa, wb)
    out = a.predict(torch.from_numpy(x))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_array_equal(out.numpy(), a.predict(x))
    with pytest.raises(TypeError, match="requires grad"):
        a.predict(torch.from_numpy(x).requires_grad_())


# --------------------------------------------- fit's gather of shuffled rows
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(50,), (50, 7), (50, 3, 5), (0, 4)])
def test_take_rows_equals_numpy_indexing(dtype, shape):
    from fusednn.models.batches import _take_rows

    rng = np.random.default_rng(len(shape))
    x = rng.normal(size=shape).astype(dtype)
    n = shape[0]
    for rows in [rng.integers(0, n, 40) if n else np.zeros(0, np.int64),  # repeats too
                 np.arange(n)[::-1].copy(), np.zeros(0, np.int64),
                 rng.permutation(n).astype(np.int32)]:
        got = _take_rows(x)(rows)
        assert got.dtype == x.dtype and got.shape == x[rows].shape
        np.testing.assert_array_equal(got, x[rows])
    # Fortran order, integers and lists go through NumPy's indexing
    for other in [np.asfortranarray(rng.normal(size=(9, 4))), np.arange(9)]:
        np.testing.assert_array_equal(_take_rows(other)(np.array([8, 0, 3])), other[[8, 0, 3]])


def test_take_rows_refuses_what_it_cannot_do_safely():
    from fusednn import _C

    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    out = np.empty((2, 4), np.float32)
    for rows in ([6, 0], [0, -1]):
        with pytest.raises(ValueError, match="rows: index .* out of range for x's 6 rows"):
            _C.take_rows(x, np.array(rows, np.int64), out)
    with pytest.raises(TypeError, match="rows"):
        _C.take_rows(x, np.array([0, 1], np.int32), out)
    with pytest.raises(ValueError, match="out"):
        _C.take_rows(x, np.array([0, 1], np.int64), np.empty((2, 5), np.float32))
    with pytest.raises((TypeError, ValueError), match="out"):
        _C.take_rows(x, np.array([0, 1], np.int64), np.empty((2, 4), np.float64))
    with pytest.raises(ValueError, match="overlap"):
        _C.take_rows(x, np.array([0, 1], np.int64), x[4:])
    ro = np.empty((2, 4), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out"):
        _C.take_rows(x, np.array([0, 1], np.int64), ro)


@pytest.mark.parametrize("jit", [True, False])
def test_threaded_gather_fit_equals_numpy_gather_fit(jit, monkeypatch):
    """fit's shuffled batches by fusednn._C.take_rows train the very weights
    that NumPy's x[idx] batches do."""
    from fusednn.models import batches

    x, y = _data(n=200)
    a, b = _model(jit=jit, bn=True), _model(jit=jit, bn=True)
    a.fit(x, y, batch_size=32, epochs=2, verbose=0, seed=3)
    monkeypatch.setattr(batches, "_take_rows", lambda arr: arr.__getitem__)
    b.fit(x, y, batch_size=32, epochs=2, verbose=0, seed=3)
    for wa, wb in zip(_weights(a), _weights(b)):
        np.testing.assert_array_equal(wa, wb)
