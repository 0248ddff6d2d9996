"""model.save / fd.models.load (safetensors, exact resume), the per-layer
state hooks, clone_model and the transfer-learning idiom."""

import json
import os
import re
import struct
import zlib

import numpy as np
import pytest

import fusednn as fd
from fusednn import saving

init = fd.initializers


def _data(n=120, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    return x, np.argmax(x @ rng.standard_normal((d, k)), axis=1)


def _model(rrelu_seed=5):
    """Every kind of training state: BN + ELU + Dropout (fused: the
    Dropout's step), a standalone Dropout (step), RReLU (generator), Nadam
    (slots, momentum product) with a schedule, and fit's shuffle generator."""
    model = fd.Sequential([
        fd.layers.Dense(12, kernel_initializer=init.HeNormal(seed=1)),
        fd.layers.BatchNormalization(),
        fd.layers.ELU(),
        fd.layers.Dropout(0.2, seed=3),
        fd.layers.Dense(10, kernel_initializer=init.HeNormal(seed=2)),
        fd.layers.RReLU(seed=rrelu_seed),
        fd.layers.Dropout(0.1, seed=4),
        fd.layers.Dense(3, activation="softmax", kernel_initializer=init.GlorotUniform(seed=6)),
    ])
    sched = fd.schedules.ExponentialDecay(0.01, decay_steps=5, decay_rate=0.9)
    model.compile(fd.optimizers.Nadam(learning_rate=sched), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.build(6, np, np.float64)
    return model


FIT = dict(batch_size=16, validation_split=0.2, verbose=0)


def _assert_same_state(a, b):
    """Weights, layer states and optimizer state bit-identical."""
    wa, wb = a.get_weights(), b.get_weights()
    assert len(wa) == len(wb)
    for u, v in zip(wa, wb):
        assert u.dtype == v.dtype and np.array_equal(u, v)
    assert [layer.get_state() for layer in a.layers] == [layer.get_state() for layer in b.layers]
    sa, sb = a.optimizer.get_state(), b.optimizer.get_state()
    assert sa["iterations"] == sb["iterations"] and sa["u_product"] == sb["u_product"]
    for ra, rb in zip(sa["slots"], sb["slots"]):
        for u, v in zip(ra, rb):
            assert (u is None and v is None) or np.array_equal(u, v)


# ------------------------------------------------------------- exactness


def test_save_load_predict_is_bit_identical(tmp_path):
    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=2, seed=0, **FIT)
    path = tmp_path / "m.safetensors"
    model.save(path)
    loaded = fd.models.load(path)
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    _assert_same_state(model, loaded)
    assert np.array_equal(loaded.predict(x), model.predict(x))
    # MC dropout continues both models' mask counters identically
    for got, want in zip(loaded.predict(x, mc_samples=3), model.predict(x, mc_samples=3)):
        assert np.array_equal(got, want)
    assert loaded.loss == model.loss and loaded.metrics == model.metrics
    assert loaded.optimizer.get_config() == model.optimizer.get_config()


def test_resume_from_a_file_equals_an_uninterrupted_fit(tmp_path):
    x, y = _data()
    whole = _model()
    h = whole.fit(x, y, epochs=4, seed=0, **FIT)
    first = _model()
    h1 = first.fit(x, y, epochs=2, seed=0, **FIT)
    first.save(tmp_path / "m.safetensors")
    resumed = fd.models.load(tmp_path / "m.safetensors")
    seen = []

    class Spy(fd.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(epoch)

    h2 = resumed.fit(x, y, epochs=4, initial_epoch=2, callbacks=[Spy()], **FIT)
    assert seen == [2, 3] and h2.epoch == [2, 3]
    _assert_same_state(whole, resumed)
    assert h1.epoch + h2.epoch == h.epoch
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert h1.history[key] + h2.history[key] == h.history[key], key


def test_resume_on_the_same_object_equals_an_uninterrupted_fit():
    x, y = _data()
    whole = _model()
    h = whole.fit(x, y, epochs=4, seed=0, **FIT)
    again = _model()
    h1 = again.fit(x, y, epochs=2, seed=0, **FIT)
    h2 = again.fit(x, y, epochs=4, initial_epoch=2, **FIT)
    _assert_same_state(whole, again)
    assert h1.history["loss"] + h2.history["loss"] == h.history["loss"]
    twice = _model()
    twice.fit(x, y, epochs=2, seed=0, **FIT)
    h3 = twice.fit(x, y, epochs=2, **FIT)  # no seed: the model's generator continues
    assert h3.epoch == [0, 1] and h3.history["val_loss"] == h.history["val_loss"][2:]
    _assert_same_state(whole, twice)


def test_learning_rate_scheduler_sees_the_true_epochs(tmp_path):
    """An epoch-indexed rate: the resumed epochs 2, 3 get the rates of an
    uninterrupted run's epochs 2, 3."""
    x, y = _data()

    def sgd_model():
        model = fd.Sequential([fd.layers.Dense(
            3, activation="softmax", kernel_initializer=fd.initializers.GlorotUniform(seed=1))])
        model.compile(fd.optimizers.SGD(learning_rate=0.1), "sparse_categorical_crossentropy")
        return model

    def schedule(epoch):
        return 0.1 / (1 + epoch)

    whole = sgd_model()
    h = whole.fit(x, y, epochs=4, seed=0, verbose=0,
                  callbacks=[fd.callbacks.LearningRateScheduler(schedule)])
    first = sgd_model()
    first.fit(x, y, epochs=2, seed=0, verbose=0,
              callbacks=[fd.callbacks.LearningRateScheduler(schedule)])
    first.save(tmp_path / "m.safetensors")
    resumed = fd.models.load(tmp_path / "m.safetensors")
    h2 = resumed.fit(x, y, epochs=4, initial_epoch=2, verbose=0,
                     callbacks=[fd.callbacks.LearningRateScheduler(schedule)])
    assert h2.history["learning_rate"] == h.history["learning_rate"][2:] == [0.1 / 3, 0.1 / 4]
    assert np.array_equal(resumed.layers[0].kernel, whole.layers[0].kernel)


def test_a_new_seed_restarts_the_shuffle_order():
    x, y = _data()
    a, b = _model(), _model()
    a.fit(x, y, epochs=2, seed=0, **FIT)
    b.fit(x, y, epochs=2, seed=0, **FIT)
    a.fit(x, y, epochs=4, initial_epoch=2, **FIT)
    b.fit(x, y, epochs=4, initial_epoch=2, seed=0, **FIT)  # epochs 0-1's order again
    assert not np.array_equal(a.layers[0].kernel, b.layers[0].kernel)


def test_a_resume_without_the_saved_state_differs(tmp_path):
    """The state in the file matters: rebuilding from weights and optimizer
    state alone (no layer states, no shuffle generator) does not resume."""
    x, y = _data()
    whole = _model()
    whole.fit(x, y, epochs=3, seed=0, **FIT)
    first = _model()
    first.fit(x, y, epochs=2, seed=0, **FIT)
    first.save(tmp_path / "m.safetensors")
    for forget in ("layers", "shuffle_rng"):
        tensors, meta = saving.load_file(tmp_path / "m.safetensors")
        state = json.loads(meta["state"])
        if forget == "layers":
            state["layers"] = [{k: 0 for k in s} if "rng" not in s else s
                               for s in state["layers"]]
        else:
            state["shuffle_rng"] = json.loads(json.dumps(
                np.random.default_rng(0).bit_generator.state))
        saving.save_file(tensors, tmp_path / "f.safetensors", {**meta, "state": json.dumps(state)})
        other = fd.models.load(tmp_path / "f.safetensors")
        other.fit(x, y, epochs=3, initial_epoch=2, **FIT)
        assert not np.array_equal(other.layers[0].kernel, whole.layers[0].kernel), forget


def test_fit_resume_arguments_bad_input():
    x, y = _data()
    model = _model()
    for kwargs, match in (({"epochs": 2, "initial_epoch": 2}, "initial_epoch must be < epochs"),
                          ({"epochs": 2, "initial_epoch": 3}, "initial_epoch must be < epochs"),
                          ({"initial_epoch": -1}, "initial_epoch must be an int >= 0"),
                          ({"initial_epoch": 1.0}, "initial_epoch must be an int"),
                          ({"seed": -1}, "seed must be an int >= 0"),
                          ({"seed": "0"}, "seed must be an int")):
        with pytest.raises(ValueError, match=match):
            model.fit(x, y, verbose=0, **kwargs)
    with pytest.raises(TypeError, match="shuffle must be a bool"):
        model.fit(x, y, shuffle="yes", verbose=0)
    assert model.optimizer.iterations == 0  # nothing ran
    assert model.fit(x, y, epochs=0, verbose=0).epoch == []  # as before: a no-op


# ------------------------------------------------------------ the format


def _read_by_hand(path):
    """An independent reader of the safetensors layout."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    meta = header.pop("__metadata__")
    dt = {"F64": "<f8", "F32": "<f4"}
    out = {k: np.frombuffer(data[v["data_offsets"][0]:v["data_offsets"][1]],
                            dtype=dt[v["dtype"]]).reshape(v["shape"]) for k, v in header.items()}
    return out, meta, n


def test_the_file_is_safetensors(tmp_path):
    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=1, seed=0, **FIT)
    model.save(str(tmp_path / "m.safetensors"))
    tensors, meta, n = _read_by_hand(tmp_path / "m.safetensors")
    assert (8 + n) % 8 == 0  # data aligned, as safetensors writes
    np.testing.assert_array_equal(tensors["layers.0.vars.0"], model.layers[0].kernel)
    np.testing.assert_array_equal(tensors["layers.1.vars.3"], model.layers[1].moving_variance)
    slots = model.optimizer.get_state()["slots"]
    np.testing.assert_array_equal(tensors["optimizer.vars.0.1"], slots[0][1])
    assert json.loads(meta["model"])["build_config"] == {"input_dim": 6, "dtype": "float64"}
    assert json.loads(meta["compile"])["optimizer"]["config"]["learning_rate"]["class_name"] \
        == "ExponentialDecay"
    st = pytest.importorskip("safetensors.numpy")
    other = st.load_file(str(tmp_path / "m.safetensors"))
    assert sorted(other) == sorted(tensors)
    for k in tensors:
        np.testing.assert_array_equal(other[k], tensors[k])
    # and a file written by safetensors loads as the model
    st.save_file(other, str(tmp_path / "st.safetensors"), metadata=meta)
    again = fd.models.load(tmp_path / "st.safetensors")
    assert np.array_equal(again.predict(x), model.predict(x))


def test_save_file_and_load_file_round_trip(tmp_path):
    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3),
               "b": np.array(2.5), "empty": np.zeros((0, 4)),
               "big_endian": np.arange(3, dtype=">i4"), "flag": np.array([True, False])}
    saving.save_file(tensors, tmp_path / "t.safetensors", {"k": "v"})
    got, meta = saving.load_file(tmp_path / "t.safetensors")
    assert meta == {"k": "v"} and sorted(got) == sorted(tensors)
    for k, v in tensors.items():
        assert got[k].shape == v.shape and np.array_equal(got[k], v)
    raw = open(tmp_path / "t.safetensors", "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    assert json.loads(raw[8:8 + n])["big_endian"]["dtype"] == "I32"
    assert raw[-2:] == b"\x01\x00"  # the bools, last and unpadded
    with pytest.raises(TypeError, match="dtype complex128"):
        saving.save_file({"c": np.zeros(2, dtype=np.complex128)}, tmp_path / "c.safetensors")
    with pytest.raises(TypeError, match="metadata"):
        saving.save_file({}, tmp_path / "c.safetensors", {"k": 1})
    assert not (tmp_path / "c.safetensors").exists()


def _write_raw(path, header, data=b"", n=None):
    text = json.dumps(header).encode() if isinstance(header, dict) else header
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text) if n is None else n) + text + data)
    return path


F32_2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize("header,data,n,match", [
    (None, None, None, "truncated: 5 bytes"),
    ({"a": F32_2}, bytes(8), 1000, "bad header length 1000"),
    ({"a": F32_2}, bytes(8), 2**40, "bad header length"),
    (b"{not json", b"", None, "not UTF-8 JSON"),
    (b"\xff\xfe{}", b"", None, "not UTF-8 JSON"),
    (b"[1, 2]", b"", None, "expected an object"),
    (b'{"a": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}, "a": {}}', b"", None,
     "twice"),
    ({"a": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}, bytes(4), None,
     "unknown or unsupported dtype 'BF16'"),
    ({"a": {"dtype": "Q8", "shape": [2], "data_offsets": [0, 4]}}, bytes(4), None,
     "unknown or unsupported dtype 'Q8'"),
    ({"a": {"dtype": "F32", "shape": [2]}}, bytes(8), None, "expected {dtype, shape"),
    ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, bytes(8), None,
     "shape must be a list of ints"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 800]}}, bytes(8), None,
     "out of range"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, bytes(8), None,
     "out of range"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8), None,
     "needs 12 bytes"),
    ({"a": F32_2, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12),
     None, "overlap"),
    ({"a": F32_2, "b": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}}, bytes(20),
     None, r"bytes \[8, 12\) of the data belong to no tensor"),
    ({"a": F32_2}, bytes(16), None, "the last 8 belong to no tensor"),
    ({"a": F32_2, "__metadata__": {"k": 1}}, bytes(8), None, "str -> str"),
])
def test_load_file_rejects_malformed_files(tmp_path, header, data, n, match):
    path = tmp_path / "bad.safetensors"
    if header is None:
        path.write_bytes(b"\x01\x02\x03\x04\x05")
    else:
        _write_raw(path, header, data, n)
    for load in (saving.load_file, fd.models.load):
        with pytest.raises(ValueError, match=match) as e:
            load(path)
        assert str(path) in str(e.value)


def test_load_rejects_a_truncated_model_file(tmp_path):
    model = _model()
    model.save(tmp_path / "m.safetensors")
    raw = (tmp_path / "m.safetensors").read_bytes()
    for cut in (len(raw) - 4, 20):
        (tmp_path / "t.safetensors").write_bytes(raw[:cut])
        with pytest.raises(ValueError, match="out of range|bad header length"):
            fd.models.load(tmp_path / "t.safetensors")


def _trained_file(tmp_path):
    """(x, model, path): a model fitted one epoch, saved at path."""
    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=1, seed=0, **FIT)
    path = tmp_path / "m.safetensors"
    model.save(path)
    return x, model, path


def test_each_tensor_carries_its_crc32(tmp_path):
    _, _, path = _trained_file(tmp_path)
    tensors, meta, _ = _read_by_hand(path)
    sums = json.loads(meta["tensor_crc32"])
    assert sorted(sums) == sorted(tensors)
    for name, a in tensors.items():  # zlib's CRC32 of the bytes as stored, 8 hex digits
        assert sums[name] == f"{zlib.crc32(a.tobytes()):08x}", name


def _flip(path, offset):
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


def test_a_corrupted_byte_is_refused_naming_its_tensor(tmp_path):
    x, model, src = _trained_file(tmp_path)
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__")
    last = max(header, key=lambda k: header[k]["data_offsets"][1])
    begin = 8 + n + header["layers.0.vars.0"]["data_offsets"][0]
    for name, offset in ((last, len(raw) - 1), ("layers.0.vars.0", begin + 5)):
        bad = tmp_path / "bad.safetensors"
        bad.write_bytes(raw)
        _flip(bad, offset)
        with pytest.raises(ValueError, match=rf"fd.models.load: .*bad.safetensors.*: tensor "
                                             rf"'{re.escape(name)}' is corrupted: its bytes "
                                             rf"have CRC32 [0-9a-f]{{8}}, the file recorded"):
            fd.models.load(bad)
    # a file saved before checksums were recorded loads as before
    old = _rewrite(src, tmp_path / "old.safetensors", tensor_crc32=None)
    assert "tensor_crc32" not in saving.load_file(old)[1]
    assert np.array_equal(fd.models.load(old).predict(x), model.predict(x))
    sums = json.loads(saving.load_file(src)[1]["tensor_crc32"])
    del sums[last]
    with pytest.raises(ValueError, match=rf"checksums .* do not match the tensors: "
                                         rf"\['{re.escape(last)}'\]"):
        fd.models.load(_rewrite(src, tmp_path / "short.safetensors", tensor_crc32=sums))


def test_save_and_checkpoint_both_create_missing_directories(tmp_path):
    x, y = _data()
    model = _model()
    model.save(tmp_path / "a" / "b" / "m.safetensors")
    assert fd.models.load(tmp_path / "a" / "b" / "m.safetensors").built
    cb = fd.callbacks.ModelCheckpoint(str(tmp_path / "c" / "d" / "ckpt-{epoch}.safetensors"))
    model.fit(x, y, epochs=1, seed=0, callbacks=[cb], **FIT)
    assert os.listdir(tmp_path / "c" / "d") == ["ckpt-1.safetensors"]


def _rewrite(src, dst, tensors=None, **meta_json):
    """A copy of the model file src with tensors and metadata entries edited;
    edited tensors drop the checksums (as in a file saved before them), so
    the checks after them are reached."""
    t, meta = saving.load_file(src)
    for k, v in meta_json.items():
        if v is None:
            meta.pop(k)
        else:
            meta[k] = v if isinstance(v, str) else json.dumps(v)
    if tensors is not None:
        meta.pop("tensor_crc32")
    saving.save_file(t if tensors is None else tensors(t), dst, meta)
    return dst


def test_a_file_with_the_fused_counter_in_the_batchnorm_resumes_its_masks(tmp_path):
    """Files written while a fused dropout's mask counter lived in its
    BatchNormalization's state ({"dropout_step": n}, the Dropout's own step
    0) load with the counter on the Dropout, so the masks continue."""
    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=1, seed=0, **FIT)
    src = tmp_path / "m.safetensors"
    model.save(src)
    state = json.loads(saving.load_file(src)[1]["state"])
    bn, drop = model.layers[1], model.layers[3]
    assert isinstance(bn, fd.layers.BatchNormalization) and isinstance(drop, fd.layers.Dropout)
    assert state["layers"][1] == {} and drop.step > 0
    state["layers"][1] = {"dropout_step": drop.step}
    state["layers"][3] = {"step": 0}
    old = fd.models.load(_rewrite(src, tmp_path / "old.safetensors", state=state))
    assert old.layers[3].step == drop.step
    old.fit(x, y, epochs=2, initial_epoch=1, **FIT)
    model.fit(x, y, epochs=2, initial_epoch=1, **FIT)
    for a, b in zip(old.get_weights(), model.get_weights()):
        assert np.array_equal(a, b)


def test_load_rejects_files_it_did_not_write(tmp_path):
    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=1, seed=0, **FIT)
    src = tmp_path / "m.safetensors"
    model.save(src)
    _, meta = saving.load_file(src)
    config = json.loads(meta["model"])
    evil = json.loads(meta["model"])
    evil["config"]["layers"][2]["class_name"] = "os.system"
    unknown_opt = json.loads(meta["compile"])
    unknown_opt["optimizer"]["class_name"] = "Lion"
    bad_kwarg = json.loads(meta["model"])
    bad_kwarg["config"]["layers"][0]["config"]["units"] = -1
    cases = [
        (dict(model=evil), "unknown layer class 'os.system'"),
        (dict(compile=unknown_opt), "optimizer must be"),
        (dict(model=bad_kwarg), "units must be an int"),
        (dict(model="{oops"), "'model' is not valid JSON"),
        (dict(fusednn_format=None), "fusednn_format"),
        (dict(state=None), "no 'state' entry"),
        (dict(optimizer_state=None), "without the other"),
        (dict(model={**config, "build_config": {"input_dim": 7, "dtype": "float64"}}),
         "tensor 'layers.0.vars.0' is \\(6, 12\\)"),
        (dict(tensors=lambda t: {k: v for k, v in t.items() if k != "layers.1.vars.2"}),
         "missing tensor 'layers.1.vars.2'"),
        (dict(tensors=lambda t: {k: v for k, v in t.items() if k != "optimizer.vars.3.0"}),
         "missing tensor 'optimizer.vars.3.0'"),
        (dict(tensors=lambda t: {**t, "extra": np.zeros(2)}), "unexpected tensors \\['extra'\\]"),
        (dict(tensors=lambda t: {**t, "layers.0.vars.0": t["layers.0.vars.0"].astype(np.float32)}),
         "float32"),
    ]
    for i, (edit, match) in enumerate(cases):
        dst = _rewrite(src, tmp_path / f"bad{i}.safetensors", **edit)
        with pytest.raises(ValueError, match=match) as e:
            fd.models.load(dst)
        assert str(dst) in str(e.value), match
    dst = _rewrite(src, tmp_path / "ok.safetensors")  # the rewrite itself is harmless
    assert np.array_equal(fd.models.load(dst).predict(x), model.predict(x))


def test_every_layer_class_round_trips(tmp_path):
    """All fd.layers classes, float32, a sigmoid output under binary
    cross-entropy, Adam with clipping: configs, predictions and a resumed
    epoch are identical."""
    x, y = _data()
    x, y = x.astype(np.float32), (y > 0).astype(np.float32)

    def make():
        model = fd.Sequential([
            fd.layers.Dense(8, kernel_initializer=init.HeNormal(seed=1),
                            kernel_regularizer=fd.regularizers.L2(1e-3),
                            kernel_constraint=fd.constraints.MaxNorm(3.0)),
            fd.layers.PReLU(alpha_initializer=init.Constant(0.25)),
            fd.layers.BatchNormalization(center=False, convention="torch", momentum=0.1),
            fd.layers.LeakyReLU(0.1),
            fd.layers.AlphaDropout(0.1, seed=2),
            fd.layers.Dense(8, activation="selu", kernel_initializer=init.LecunNormal(seed=3)),
            fd.layers.Activation("gelu", approximate=True),
            fd.layers.Dropout(0.1, seed=4),
            fd.layers.Dense(1, activation="sigmoid", kernel_initializer=init.GlorotUniform(5)),
        ])
        model.compile(fd.optimizers.Adam(learning_rate=3e-3, global_clipnorm=1.0, amsgrad=True),
                      "binary_crossentropy", ["accuracy"])
        return model

    whole, first = make(), make()
    whole.fit(x, y, epochs=2, seed=3, **FIT)
    first.fit(x, y, epochs=1, seed=3, **FIT)
    first.save(tmp_path / "m.safetensors")
    loaded = fd.models.load(tmp_path / "m.safetensors")
    assert loaded.get_config() == first.get_config()
    assert np.array_equal(loaded.predict(x), first.predict(x))
    loaded.fit(x, y, epochs=2, initial_epoch=1, **FIT)
    for a, b in zip(loaded.get_weights(), whole.get_weights()):
        assert a.dtype == np.float32 and np.array_equal(a, b)


def test_sequential_config_round_trip_and_bad_configs():
    model = _model()
    again = fd.Sequential.from_config(json.loads(json.dumps(model.get_config())))
    assert again.get_config() == model.get_config() and not again.built
    for bad, match in (([1], "expected a dict"), ({"layers": "dense"}, "must be a list"),
                       ({"layers": [{"class_name": "Dense"}]}, "must be {'class_name'"),
                       ({"layers": [{"class_name": "Layer", "config": {}}]}, "unknown layer"),
                       ({"layers": [], "name": 3}, "name must be a str")):
        with pytest.raises(ValueError, match=match):
            fd.Sequential.from_config(bad)


def test_load_without_compile_and_unbuilt_or_uncompiled_models(tmp_path):
    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=1, seed=0, **FIT)
    model.save(tmp_path / "m.safetensors")
    bare = fd.models.load(tmp_path / "m.safetensors", compile=False)
    assert bare.optimizer is None and bare.built
    assert np.array_equal(bare.predict(x), model.predict(x))
    plain = fd.Sequential([fd.layers.Dense(4, activation="relu"), fd.layers.Dense(2)])
    plain.save(tmp_path / "p.safetensors")  # neither built nor compiled
    again = fd.models.load(tmp_path / "p.safetensors")
    assert not again.built and again.optimizer is None
    assert [layer.units for layer in again.layers] == [4, 2]
    x32 = x.astype(np.float32)
    plain.compile("adam", "mse")
    plain.predict(x32)  # built (float32), compiled, never trained: no slots yet
    plain.save(tmp_path / "p.safetensors")
    again = fd.models.load(tmp_path / "p.safetensors")
    assert again.layers[0].kernel.dtype == np.float32
    assert np.array_equal(again.predict(x32), plain.predict(x32))
    assert again.optimizer.get_state()["slots"] is None


def test_save_is_atomic(tmp_path, monkeypatch):
    x, y = _data()
    model = _model()
    path = tmp_path / "m.safetensors"
    model.save(path)
    before = path.read_bytes()
    model.fit(x, y, epochs=1, seed=0, **FIT)

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(saving.safetensors.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["m.safetensors"] and path.read_bytes() == before
    model.optimizer.learning_rate = lambda step: 0.01  # not serialisable
    with pytest.raises(ValueError, match="not a fd.schedules schedule"):
        model.save(path)
    assert os.listdir(tmp_path) == ["m.safetensors"] and path.read_bytes() == before


def test_checkpoint_writes_a_loadable_model(tmp_path):
    x, y = _data()
    model = _model()
    cb = fd.callbacks.ModelCheckpoint(str(tmp_path / "ckpt-{epoch}.safetensors"))
    model.fit(x, y, epochs=2, seed=0, callbacks=[cb], **FIT)
    resumed = fd.models.load(tmp_path / "ckpt-2.safetensors")
    _assert_same_state(model, resumed)


def test_save_and_load_bad_input(tmp_path):
    model = _model()
    for bad in (123, None, b"m.safetensors"):
        with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
            model.save(bad)
        with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
            fd.models.load(bad)
    with pytest.raises(ValueError, match="non-empty"):
        model.save("")
    with pytest.raises(FileNotFoundError, match="no such file"):
        fd.models.load(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="is a directory"):
        fd.models.load(tmp_path)
    with pytest.raises(ValueError, match="is a directory"):
        model.save(tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match=r"Sequential.save: cannot create the directory"):
        model.save(tmp_path / "file" / "m.safetensors")
    model.save(tmp_path / "m.safetensors")
    with pytest.raises(TypeError, match="compile must be a bool"):
        fd.models.load(tmp_path / "m.safetensors", compile="yes")
    with pytest.raises(ValueError, match="device must be"):
        fd.models.load(tmp_path / "m.safetensors", device="gpu")
    if not fd.has_cuda():
        with pytest.raises(RuntimeError, match="device='cuda'"):
            fd.models.load(tmp_path / "m.safetensors", device="cuda")

    class Custom(fd.layers.Dense):
        pass

    odd = fd.Sequential([Custom(2)])
    with pytest.raises(ValueError, match="not a fd.layers class"):
        odd.save(tmp_path / "o.safetensors")
    assert not (tmp_path / "o.safetensors").exists()


def test_load_to_the_gpu(tmp_path, backend):
    if backend != "cuda":
        pytest.skip("device='cuda' needs CuPy")
    import cupy

    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=1, seed=0, **FIT)
    model.save(tmp_path / "m.safetensors")
    gpu = fd.models.load(tmp_path / "m.safetensors", device="cuda")
    assert isinstance(gpu.layers[0].kernel, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(gpu.predict(cupy.asarray(x))), model.predict(x),
                               rtol=1e-10)
    gpu.fit(cupy.asarray(x), cupy.asarray(y), epochs=2, initial_epoch=1, **FIT)
    gpu.save(tmp_path / "g.safetensors")  # copied to the host
    assert isinstance(fd.models.load(tmp_path / "g.safetensors").layers[0].kernel, np.ndarray)


# ------------------------------------------------------------ layer state


def test_layer_state_hooks():
    x = np.random.default_rng(0).standard_normal((5, 4))
    rrelu = fd.layers.RReLU()  # seed=None: the state is all there is
    saved = rrelu.get_state()
    json.dumps(saved)
    a = rrelu.forward(x, training=True)
    rrelu.set_state(saved)
    assert np.array_equal(rrelu.forward(x, training=True), a)
    other = fd.layers.RReLU()
    other.set_state(saved)
    assert np.array_equal(other.forward(x, training=True), a)

    drop = fd.layers.Dropout(0.5, seed=1)
    first = drop.forward(x, training=True)
    assert drop.get_state() == {"step": 1}
    second = drop.forward(x, training=True)
    drop.set_state({"step": 1})
    assert np.array_equal(drop.forward(x, training=True), second)
    assert not np.array_equal(first, second)

    model = fd.Sequential([fd.layers.BatchNormalization(), fd.layers.ELU(),
                           fd.layers.Dropout(0.5, seed=2)])
    model.build(4, np, np.float64)
    bn, fused_drop = model.layers[0], model.layers[2]
    model(x, training=True)  # the model's fused step draws a mask, counted by the Dropout
    assert bn.get_state() == {} and fused_drop.get_state() == {"step": 1}
    assert fd.layers.Dense(2).get_state() == {}

    for layer, bad in ((drop, {"step": -1}), (drop, {"steps": 1}), (drop, [1]),
                       (bn, {"dropout_step": 1.5}), (fd.layers.Dense(2), {"x": 1}),
                       (rrelu, {"rng": {"bit_generator": "MT19937"}}),
                       (rrelu, {"rng": {"bit_generator": "PCG64", "state": "?"}})):
        with pytest.raises(ValueError, match="set_state"):
            layer.set_state(bad)


# ------------------------------------------------------------ clone_model


def test_clone_model_fresh_and_copied():
    x, y = _data()
    model = _model()
    initial = model.get_weights()
    model.fit(x, y, epochs=1, seed=0, **FIT)
    clone = fd.models.clone_model(model)
    assert clone.built and clone.optimizer is None and clone.name == model.name
    for a, b in zip(model.layers, clone.layers):
        assert a is not b and a.name != b.name and type(a) is type(b)
        ca, cb = a.get_config(), b.get_config()
        ca.pop("name"), cb.pop("name")
        assert ca == cb
    # seeded initializers: the clone starts where the original started
    for got, want in zip(clone.get_weights(), initial):
        assert np.array_equal(got, want)
    unseeded = fd.Sequential([fd.layers.Dense(4)])
    unseeded.build(3)
    assert not np.array_equal(fd.models.clone_model(unseeded).layers[0].kernel,
                              unseeded.layers[0].kernel)

    copy = fd.models.clone_model(model, copy_weights=True)
    for got, want in zip(copy.get_weights(), model.get_weights()):
        assert np.array_equal(got, want)
    assert np.array_equal(copy.predict(x), model.predict(x))
    # independent: training the copy leaves the original alone, and back
    before = model.get_weights()
    copy.compile("sgd", "sparse_categorical_crossentropy")
    copy.fit(x, y, epochs=1, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before))
    copied = copy.get_weights()
    model.fit(x, y, epochs=1, **FIT)
    assert all(np.array_equal(a, b) for a, b in zip(copy.get_weights(), copied))
    assert not all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before))


def test_clone_model_bad_input():
    with pytest.raises(TypeError, match="model must be a fd.Sequential"):
        fd.models.clone_model(fd.layers.Dense(2))
    model = fd.Sequential([fd.layers.Dense(2)])
    for bad in (1, "yes", None):
        with pytest.raises(TypeError, match="copy_weights must be a bool"):
            fd.models.clone_model(model, copy_weights=bad)
    with pytest.raises(ValueError, match="needs a built model"):
        fd.models.clone_model(model, copy_weights=True)
    clone = fd.models.clone_model(model)
    assert not clone.built and clone.layers[0].units == 2


# ------------------------------------------------------- transfer learning


def test_transfer_learning_reuses_frozen_layers():
    x, y = _data()
    model_a = _model()
    model_a.fit(x, y, epochs=2, seed=0, **FIT)
    reused = model_a.layers[:-1]
    head = fd.layers.Dense(3, activation="softmax",
                           kernel_initializer=fd.initializers.GlorotUniform(seed=9))
    model_b = fd.Sequential(reused + [head])
    for layer in reused:
        layer.trainable = False
    before = [w.copy() for layer in reused for w in layer.get_weights()]
    pred_a = model_a.predict(x)
    model_b.compile(fd.optimizers.Adam(learning_rate=0.01), "sparse_categorical_crossentropy")
    hist = model_b.fit(x, y, epochs=3, seed=1, **FIT)
    after = [w for layer in reused for w in layer.get_weights()]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))  # BN statistics too
    assert head.built and head.kernel.shape == (10, 3) and head.kernel.dtype == np.float64
    assert not np.array_equal(head.kernel, fd.initializers.GlorotUniform(seed=9)((10, 3),
                                                                                np.float64))
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert np.array_equal(model_a.predict(x), pred_a)  # the shared layers are unchanged
    with pytest.raises(ValueError, match="holds numpy float64 weights"):
        fd.Sequential(reused + [fd.layers.Dense(3)]).build(6, np, np.float32)
    with pytest.raises(ValueError, match="built for 6 input features, gets 5"):
        fd.Sequential(reused).build(5, np, np.float64)
