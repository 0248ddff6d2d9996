"""Fuzzing Sequential.fit / predict / evaluate, fd.models.load (paths and
options only: the file contents are fuzzed in tests/test_file_fuzz.py) and
the importers fd.io.load_keras_weights / load_torch_state_dict.

What "correct" means:

- predict: the layers' forward pass in inference mode computed with the
  float64 reference from the layers' own weights (Dense: f(x @ W + b);
  BatchNormalization with its moving statistics; Dropout the identity),
  x cast to the model's dtype, within rtol of the terms' size, NaN where
  the reference is NaN; for losses with a softmax / sigmoid head, the
  probabilities of that head.
- evaluate (mse): mean_i w_i mean_k (p_ik - y_ik)^2 / n of predict's output.
- fit: returns a History with one loss per epoch; NaN inputs give a NaN
  loss (with a RuntimeWarning), never an exception; a refused call leaves
  the weights as they were.
- the importers: after a load that succeeds every weight equals the array
  given (cast to the model's dtype; torch's Linear weight transposed); a
  load that fails raises ValueError/TypeError naming the argument, key or
  index at fault, and writes nothing.

Data of the wrong type, dtype, rank or width, labels out of range, and
every option out of range (epochs, batch_size, validation_split, verbose,
shuffle, seed, sample_weight, class_weight) are refused naming them.
"""

from __future__ import annotations

import math
import os
import pathlib
import tempfile
import warnings

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import fusednn as fd
from fusednn.testing import reference as R

from ._support import (NOT_ARRAYS, any_scalars, as_float, as_int, assert_close, attempt,
                       expect_refused, float_arrays, fuzz, relayout, to_np)

LOSSES = ("mse", "binary_crossentropy", "categorical_crossentropy",
          "sparse_categorical_crossentropy")
HIDDEN = ("relu", "elu", "tanh", "linear", "selu", "swish", "gelu", "sigmoid", "leaky_relu")


def _spec_ref(spec):
    """(name, params) of the reference for a layer's ActivationSpec."""
    if spec.name == "gelu_tanh":
        return "gelu", {"approximate": True}
    if spec.name in ("leaky_relu", "elu"):
        return spec.name, {"alpha": spec.alpha}
    if spec.name == "swish":
        return "swish", {"beta": spec.alpha}
    return spec.name, {}


def _reference_predict(model, x):
    """(the inference forward pass of `model` in float64, see the docstring;
    the size of the terms summed on the way, a bound for the rounding error
    of each output, with 2 bounding |f'| of the activations used)."""
    h = np.asarray(x, dtype=np.float64)
    size = np.abs(h)
    last = model.layers[-1]
    for layer in model.layers:
        if isinstance(layer, fd.layers.Dense):
            name, params = _spec_ref(layer.activation)
            if layer is last and layer.output_activation == "softmax":
                name, params = "linear", {}
            h, _ = R.dense_forward(h, layer.kernel, layer.bias, name, **params)
            b = 0.0 if layer.bias is None else np.abs(layer.bias)
            size = 2 * (size @ np.abs(layer.kernel) + b) + np.abs(h)
        elif isinstance(layer, fd.layers.BatchNormalization):
            h = R.batchnorm_forward(h, layer.gamma, layer.beta, layer.moving_mean,
                                    layer.moving_variance, layer.epsilon)
            g = 1.0 if layer.gamma is None else np.abs(layer.gamma)
            b = 0.0 if layer.beta is None else np.abs(layer.beta)
            invstd = 1.0 / np.sqrt(np.asarray(layer.moving_variance, np.float64) + layer.epsilon)
            size = g * (size + np.abs(layer.moving_mean)) * invstd + b + np.abs(h)
    if model._loss.output == "softmax":
        h = np.exp(R.log_softmax(h)) if h.size else h
    return h, np.where(np.isnan(size), np.inf, size)


@st.composite
def models(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    loss = draw(st.sampled_from(LOSSES))
    n_in = draw(st.integers(1, 4))
    out = draw(st.integers(1, 3)) if loss != "binary_crossentropy" else draw(st.integers(1, 2))
    layers = [fd.layers.Dense(draw(st.integers(1, 4)), activation=draw(st.sampled_from(HIDDEN)))]
    if draw(st.booleans()):
        layers.append(fd.layers.BatchNormalization())
    if draw(st.booleans()):
        layers.append(fd.layers.Dropout(draw(st.sampled_from([0.0, 0.3])), seed=1))
    head = {"mse": draw(st.sampled_from(["linear", "elu"])),
            "binary_crossentropy": "sigmoid", "categorical_crossentropy": "softmax",
            "sparse_categorical_crossentropy": "softmax"}[loss]
    layers.append(fd.layers.Dense(out, activation=head))
    model = fd.Sequential(layers, dtype=np.dtype(dtype).name)
    opt = draw(st.sampled_from(["sgd", "adam", "rmsprop", "nadam"]))
    model.compile(optimizer=opt, loss=loss, jit_compile=draw(st.sampled_from(["auto", False])))
    return model, np.dtype(dtype), loss, n_in, out


def _targets(draw, loss, n, out):
    if loss == "mse":
        return draw(float_arrays(np.dtype(np.float64), (n, out), bound=2.0))
    if loss == "binary_crossentropy":
        return np.array(draw(st.lists(st.integers(0, 1), min_size=n * out,
                                      max_size=n * out)), dtype=np.float32).reshape(n, out)
    idx = np.array(draw(st.lists(st.integers(0, out - 1), min_size=n, max_size=n)), np.int64)
    if loss == "sparse_categorical_crossentropy":
        return idx
    return np.eye(out)[idx].reshape(n, out)


def _valid_int(v, low):
    i = as_int(v)
    return i is not None and i >= low


@given(st.data())
@fuzz(5)
def test_fit_predict_evaluate(data):
    """fit, then predict and evaluate, over models, dtypes, data of every
    real dtype and layout (and wrong ones), NaN inputs, and options in and
    out of range; predict checked against the reference forward pass."""
    model, dtype, loss, n_in, out = data.draw(models(), "model")
    if data.draw(st.booleans(), "built"):
        model.build(n_in)
    n = data.draw(st.integers(1, 6), "samples")
    x_dtype = data.draw(st.sampled_from([dtype, dtype, np.dtype(np.float16), np.dtype(np.int32),
                                         np.dtype(np.bool_), np.dtype(np.float64)]))
    special = data.draw(st.booleans(), "special")
    x0 = data.draw(float_arrays(np.dtype(np.float64), (n, n_in), special, huge=False))
    with np.errstate(all="ignore"):
        x0 = (x0 > 0) if x_dtype.kind == "b" else np.nan_to_num(x0).astype(x_dtype) \
            if x_dtype.kind in "iu" else x0.astype(x_dtype)
    kind = data.draw(st.sampled_from(["c", "fortran", "strided", "negative", "readonly",
                                      "unaligned", "byteswapped", "broadcast", "torch"]))
    if kind == "torch" and x_dtype == np.float16:
        kind = "c"
    x = relayout(x0, kind)
    xv = np.array(to_np(x))
    y = _targets(data.draw, loss, n, out)
    opts = {"epochs": data.draw(st.integers(1, 2)), "batch_size": data.draw(st.integers(1, 4)),
            "shuffle": data.draw(st.booleans()), "seed": data.draw(st.integers(0, 2**32)),
            "validation_split": data.draw(st.sampled_from([0.0, 0.0, 0.25])),
            "verbose": 0}
    errors = []
    bad = data.draw(st.sampled_from([None] * 5 + ["epochs", "batch_size", "shuffle", "seed",
                                                  "validation_split", "verbose", "x", "y",
                                                  "sample_weight", "class_weight"]), "bad")
    sw = None
    cw = None
    if bad in ("epochs", "batch_size", "shuffle", "seed", "validation_split", "verbose"):
        opts[bad] = data.draw(any_scalars(), "bad value")
        v = opts[bad]
        ok = {"epochs": _valid_int(v, 0), "batch_size": v is None or _valid_int(v, 1),
              "shuffle": isinstance(v, (bool, np.bool_)), "seed": v is None or _valid_int(v, 0),
              "validation_split": as_float(v) is not None and not isinstance(v, np.ndarray)
              and 0.0 <= float(v) < 1.0,
              # compared as Keras compares it: False == 0, 1.0 == 1
              "verbose": isinstance(v, (int, float, str, np.number, np.bool_)) and not isinstance(
                  v, np.ndarray) and (v == "auto" or any(v == k and type(v) is not str
                                                         for k in (0, 1, 2)))}[bad]
        if bad == "epochs" and ok and int(v) > 3:
            return  # valid, and as long to train as it asks (2**64 epochs)
        if not ok:
            errors.append(bad)
        elif bad == "validation_split" and float(v) and math.ceil(n * float(v)) >= n:
            errors.append("x")  # nothing left to train on
        if bad == "verbose" and ok:
            opts[bad] = 0
    elif bad == "x":
        x = data.draw(st.one_of(st.sampled_from([v for v in NOT_ARRAYS if v is not None]),
                                st.sampled_from([np.zeros((n, n_in), np.complex64),
                                                 np.zeros((n, n_in + 1)) if model.built else
                                                 np.zeros((n, 0)), np.zeros((n,)),
                                                 np.zeros((n, n_in, 1)),
                                                 np.array([["a"] * n_in] * n)])))
        errors.append("x")
    elif bad == "y":
        bad_y = [None, "y", np.zeros((n + 1, out)), np.zeros((n, out + 1)),
                 np.zeros((n, out), np.complex64)]
        if loss == "sparse_categorical_crossentropy":  # class indices out of range, or floats
            bad_y += [np.full(n, out), np.full(n, -1), np.zeros(n)]
        y = data.draw(st.sampled_from(bad_y))
        errors += ["y"]
    elif bad == "sample_weight":
        sw = data.draw(st.sampled_from([np.full(n, -1.0), np.full(n, np.nan), np.ones(n + 1),
                                        np.ones((n, 2)), "w", np.full(n, np.inf)]))
        errors.append("sample_weight")
    elif bad == "class_weight":
        cw = data.draw(st.sampled_from([{out + 5: 1.0}, {0: -1.0}, {0: math.nan}, [1.0],
                                        {"a": 1.0}, {True: 1.0}]))
        errors.append("class_weight")
    if opts["validation_split"] and isinstance(opts["validation_split"], float) and \
            0 < opts["validation_split"] < 1 and math.ceil(n * opts["validation_split"]) >= n \
            and "x" not in errors:
        errors.append("x")
    if isinstance(y, np.ndarray) and loss == "sparse_categorical_crossentropy" and \
            y.dtype.kind == "f" and bad == "y":
        errors.append("y")
    before = [np.array(w) for w in model.get_weights()] if model.built else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hist, err = attempt(model.fit, x, y, sample_weight=sw, class_weight=cw, **opts)
    if errors:
        assert err is not None, f"fit accepted: {errors}"
        expect_refused(err, *errors, "y" if "y" in errors else "x",
                       *(["validation_split"] if "x" in errors else []))
        if before is not None:
            for w, b in zip(model.get_weights(), before):
                np.testing.assert_array_equal(w, b)
        return
    assert err is None, f"fit refused a valid call: {err!r}"
    epochs = int(opts["epochs"])
    assert len(hist.history.get("loss", [])) == epochs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = model.predict(x, batch_size=data.draw(st.integers(1, 5)))
    pred = np.array(to_np(pred))
    assert pred.shape == (n, out) and pred.dtype == dtype, (pred.shape, pred.dtype)
    with np.errstate(all="ignore"):
        ref, size = _reference_predict(model, xv.astype(dtype))
    if model._loss.output is None:
        assert_close(pred, ref, 1e-5 if dtype == np.float32 else 1e-12, "predict", dtype=dtype,
                     scale=size)
    elif not np.isnan(ref).any():
        assert np.all((pred >= 0) & (pred <= 1)), "probabilities outside [0, 1]"
    if loss == "mse":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = model.evaluate(x, y, batch_size=data.draw(st.integers(1, 5)))
        with np.errstate(all="ignore"):
            want = float(np.mean(np.mean((pred.astype(np.float64) - y) ** 2, axis=1)))
        if math.isnan(want):
            assert math.isnan(got), got
        elif math.isinf(want):
            assert got == want, (got, want)
        else:
            assert abs(got - want) <= 1e-4 * (abs(want) + 1e-6) + 1e-6, (got, want)


@given(st.data())
@fuzz(2)
def test_predict_evaluate_arguments(data):
    """predict and evaluate refuse data and options of the wrong kind naming
    them (an unbuilt model too), and accept every real dtype and layout."""
    model, dtype, loss, n_in, out = data.draw(models())
    built = data.draw(st.booleans())
    if built:
        model.build(n_in)
    case = data.draw(st.sampled_from(["x-type", "x-rank", "x-width", "batch_size", "mc_samples",
                                      "y", "steps", "layout"]))
    n = data.draw(st.integers(1, 4))
    x = np.ones((n, n_in), dtype)
    if case == "layout":
        kind = data.draw(st.sampled_from(["fortran", "strided", "negative", "readonly",
                                          "unaligned", "byteswapped", "broadcast", "torch"]))
        xr = relayout(x * 0.5, kind)
        p1 = np.array(to_np(model.predict(xr)))
        p2 = model.predict(np.array(to_np(xr)))
        np.testing.assert_array_equal(p1, p2)
        return
    if case == "x-type":
        _, err = attempt(model.predict, data.draw(st.sampled_from(
            [v for v in NOT_ARRAYS if v is not None])))
        return expect_refused(err, "x")
    if case == "x-rank":
        _, err = attempt(model.predict, np.ones(data.draw(st.sampled_from(
            [(n,), (n, n_in, 1), ()])), dtype))
        return expect_refused(err, "x")
    if case == "x-width":
        if not built:
            model.build(n_in)
        _, err = attempt(model.predict, np.ones((n, n_in + data.draw(st.integers(1, 3))), dtype))
        return expect_refused(err, "x")
    if case == "batch_size":
        v = data.draw(st.sampled_from([0, -1, 1.5, True, "8", None]))
        _, err = attempt(model.predict, x, batch_size=v)
        return expect_refused(err, "batch_size")
    if case == "mc_samples":
        v = data.draw(st.sampled_from([0, -1, 1.5, True, "8"]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, err = attempt(model.predict, x, mc_samples=v)
        return expect_refused(err, "mc_samples")
    if case == "steps":
        v = data.draw(st.sampled_from([0, -1, 1.5, True, "8"]))
        _, err = attempt(model.evaluate, x, np.zeros((n, out)), steps=v)
        return expect_refused(err, "steps")
    y = data.draw(st.sampled_from([None, np.zeros((n + 1, out)), "y"]))
    _, err = attempt(model.evaluate, x, y)
    expect_refused(err, "y")


# ---------------------------------------------------------------- load paths

_SAVED = {}


def _saved_model():
    """A small trained model saved once per session: (path, model)."""
    if "path" not in _SAVED:
        d = tempfile.mkdtemp(prefix="fusednn-fuzz-")
        model = fd.Sequential([fd.layers.Dense(3, activation="elu"), fd.layers.Dense(2)])
        model.compile(optimizer="adam", loss="mse")
        model.fit(np.ones((4, 2), np.float32), np.zeros((4, 2), np.float32), epochs=1,
                  verbose=0)
        path = os.path.join(d, "model.safetensors")
        model.save(path)
        with open(os.path.join(d, "notes.txt"), "w") as f:
            f.write("not a model")
        _SAVED.update(path=path, model=model, dir=d)
    return _SAVED["path"], _SAVED["model"], _SAVED["dir"]


@given(st.data())
@fuzz(2)
def test_load_paths(data):
    """fd.models.load: a saved model loads and predicts as the original; a
    path that is not a str/os.PathLike is a TypeError naming path; a missing
    file (a name too long for the file system included) is
    FileNotFoundError; a directory, an empty path, a path with a NUL byte
    and a file that is not a model are ValueError naming the path; compile
    and device out of range name themselves."""
    path, model, d = _saved_model()
    case = data.draw(st.sampled_from(["good", "good-pathlike", "type", "missing", "dir", "empty",
                                      "nul", "long", "not-model", "compile", "device"]))
    compile_, device = True, "cpu"
    if case == "good-pathlike":
        arg = pathlib.Path(path)
    elif case == "good":
        arg = path
    elif case == "type":
        arg = data.draw(st.sampled_from([None, 3, 1.5, b"model.safetensors", ["a"],
                                         object(), True]))
    elif case == "missing":
        arg = os.path.join(d, data.draw(st.text("abc_-.", min_size=1, max_size=8)) + ".missing")
    elif case == "dir":
        arg = d
    elif case == "empty":
        arg = ""
    elif case == "nul":
        arg = path + "\x00x"
    elif case == "long":
        arg = os.path.join(d, "a" * data.draw(st.integers(256, 5000)))
    elif case == "not-model":
        arg = os.path.join(d, "notes.txt")
    elif case == "compile":
        arg = path
        compile_ = data.draw(st.sampled_from([None, "yes", 1, 0.0, [True]]))
    else:
        arg = path
        device = data.draw(st.sampled_from([None, "gpu", "CPU", 0, "cuda:0"]))
    try:
        loaded = fd.models.load(arg, compile=compile_, device=device)
    except FileNotFoundError as e:  # (a name too long for the file system does not exist)
        assert case in ("missing", "long"), f"FileNotFoundError for {case}: {e}"
        return
    except (ValueError, TypeError) as e:
        assert case not in ("good", "good-pathlike"), f"refused a saved model: {e!r}"
        names = {"compile": ("compile",), "device": ("device",)}.get(case, ("path",))
        if case not in ("compile", "device", "type"):
            assert repr(os.fspath(arg))[:30] in str(e) or "path" in str(e), \
                f"{type(e).__name__} does not name the path: {e}"
        else:
            expect_refused(e, *names)
        return
    except OSError as e:
        assert case in ("long",), f"{type(e).__name__} for {case}: {e}"
        return
    assert case in ("good", "good-pathlike"), f"loaded {case} {arg!r}"
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(4, 2)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


# ----------------------------------------------------------------- importers

def _weighted_model(draw):
    """An fd model of Dense / BatchNormalization / PReLU layers and the
    Keras-order list of arrays that fits it (float64)."""
    n_in = draw(st.integers(1, 4))
    layers, arrays, dim = [], [], n_in
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["dense", "dense", "bn", "prelu"]))
        if kind == "dense":
            units, use_bias = draw(st.integers(1, 4)), draw(st.booleans())
            layers.append(fd.layers.Dense(units, use_bias=use_bias))
            arrays.append(draw(float_arrays(np.dtype(np.float64), (dim, units))))
            if use_bias:
                arrays.append(draw(float_arrays(np.dtype(np.float64), (units,))))
            dim = units
        elif kind == "bn":
            center, scale = draw(st.booleans()), draw(st.booleans())
            layers.append(fd.layers.BatchNormalization(center=center, scale=scale))
            for on in (scale, center, True):
                if on:
                    arrays.append(draw(float_arrays(np.dtype(np.float64), (dim,))))
            arrays.append(np.abs(draw(float_arrays(np.dtype(np.float64), (dim,)))))
        else:
            layers.append(fd.layers.PReLU())
            arrays.append(draw(float_arrays(np.dtype(np.float64), (dim,))))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    return fd.Sequential(layers, dtype=dtype), arrays, n_in, np.dtype(dtype)


@given(st.data())
@fuzz(3)
def test_load_keras_weights(data):
    """A fitting list loads exactly (cast to the model's dtype); a list with
    an entry missing, extra, misshapen, of the wrong dtype or type, or not a
    list at all, is refused naming the entry, and writes nothing."""
    model, arrays, n_in, dtype = _weighted_model(data.draw)
    built = data.draw(st.booleans())
    if built:
        model.build(n_in)
    before = [np.array(w) for w in model.get_weights()] if built else None
    case = data.draw(st.sampled_from(["ok", "ok", "torch", "drop", "extra", "shape", "dtype",
                                      "type", "container", "model", "dtype-option"]))
    weights = [a.copy() for a in arrays]
    kw = {}
    if case == "torch":
        import torch

        weights = [torch.from_numpy(a) for a in weights]
    elif case == "drop":
        weights.pop(data.draw(st.integers(0, len(weights) - 1)))
    elif case == "extra":
        weights.append(np.zeros(data.draw(st.integers(0, 3))))
    elif case == "shape":
        i = data.draw(st.integers(0, len(weights) - 1))
        weights[i] = np.zeros(weights[i].shape + (1,))
    elif case == "dtype":
        i = data.draw(st.integers(0, len(weights) - 1))
        weights[i] = weights[i].astype(data.draw(st.sampled_from([np.complex64, object,
                                                                  np.bool_, "U3"])))
    elif case == "type":
        i = data.draw(st.integers(0, len(weights) - 1))
        weights[i] = data.draw(st.sampled_from([None, "w", 3, {"a": 1}]))
    elif case == "container":
        weights = data.draw(st.sampled_from([None, "weights", 3, {"a": np.zeros(1)},
                                             np.zeros(3)]))
    elif case == "model":
        _, err = attempt(fd.io.load_keras_weights, data.draw(st.sampled_from(
            [None, [], "model", fd.layers.Dense(2)])), weights)
        return expect_refused(err, "model")
    elif case == "dtype-option":
        kw["dtype"] = data.draw(st.sampled_from(["float16", "int32", "x", 3, np.complex64]))
    out, err = attempt(fd.io.load_keras_weights, model, weights, **kw)
    if case in ("ok", "torch"):
        assert err is None, f"refused a fitting list: {err!r}"
        for w, a in zip(model.get_weights(), arrays):
            want = np.broadcast_to(a, w.shape).astype(dtype)
            np.testing.assert_array_equal(w, want)
        return
    if err is None and case == "dtype" and weights[i].dtype == np.bool_:
        return  # bool is a real-number array here: 0 and 1
    assert err is not None, f"accepted case {case}"
    assert isinstance(err, (ValueError, TypeError))
    assert str(err).startswith("load_keras_weights:"), str(err)
    names = {"container": ("weights",), "dtype-option": ("dtype",)}.get(case)
    if names:
        expect_refused(err, *names)
    elif case in ("dtype", "type", "shape"):
        expect_refused(err, f"weights[{i}]")
    if before is not None:
        for w, b in zip(model.get_weights(), before):
            np.testing.assert_array_equal(w, b)


@given(st.data())
@fuzz(3)
def test_load_torch_state_dict(data):
    """A torch nn.Sequential (or its state_dict) of the model's shapes loads
    exactly; keys missing, extra, misshapen, of the wrong type, and options
    out of range are refused naming them, and write nothing."""
    import torch

    model, arrays, n_in, dtype = _weighted_model(data.draw)
    mods, it = [], iter(arrays)
    dim = n_in
    expected = []
    for layer in model.layers:
        if isinstance(layer, fd.layers.Dense):
            k = next(it)
            m = torch.nn.Linear(dim, layer.units, bias=layer.use_bias, dtype=torch.float64)
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(k.T.copy()))
                expected.append(k)
                if layer.use_bias:
                    b = next(it)
                    m.bias.copy_(torch.from_numpy(b))
                    expected.append(b)
            dim = layer.units
        elif isinstance(layer, fd.layers.BatchNormalization):
            m = torch.nn.BatchNorm1d(dim, affine=layer.scale and layer.center,
                                     dtype=torch.float64)
            vals = [next(it) for _ in range(int(layer.scale) + int(layer.center) + 2)]
            if layer.scale != layer.center:  # torch has one affine switch: build the fd side
                return
            with torch.no_grad():
                if layer.scale:
                    m.weight.copy_(torch.from_numpy(vals[0]))
                    m.bias.copy_(torch.from_numpy(vals[1]))
                m.running_mean.copy_(torch.from_numpy(vals[-2]))
                m.running_var.copy_(torch.from_numpy(vals[-1]))
            expected += vals
        else:
            m = torch.nn.PReLU(dim, dtype=torch.float64)
            a = next(it)
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(a))
            expected.append(a)
        mods.append(m)
    net = torch.nn.Sequential(*mods)
    if data.draw(st.booleans()):
        model.build(n_in)
    # an unbuilt model takes its width from the first module: a PReLU with one
    # shared slope has none to give (documented)
    no_width = not model.built and isinstance(model.layers[0], fd.layers.PReLU) and n_in == 1
    case = data.draw(st.sampled_from(["module", "dict", "drop", "extra", "shape", "value-type",
                                      "key-type", "container", "epsilon", "momentum"]))
    sd = dict(net.state_dict())
    kw = {}
    keys = [k for k in sd if not k.endswith("num_batches_tracked")]
    src = net if case == "module" else sd
    if case == "drop":
        sd.pop(data.draw(st.sampled_from(keys)))
    elif case == "extra":
        sd[data.draw(st.sampled_from(["9.weight", "0.gamma", "x"]))] = torch.zeros(2)
    elif case == "shape":
        k = data.draw(st.sampled_from(keys))
        sd[k] = torch.zeros(tuple(sd[k].shape) + (2,), dtype=torch.float64)
    elif case == "value-type":
        k = data.draw(st.sampled_from(keys))
        sd[k] = data.draw(st.sampled_from([None, "w", np.zeros(2, np.complex64)]))
    elif case == "key-type":
        sd[data.draw(st.sampled_from([3, None, ("a",)]))] = torch.zeros(1)
    elif case == "container":
        src = data.draw(st.sampled_from([None, [np.zeros(1)], "sd", 3]))
    elif case in ("epsilon", "momentum"):
        kw[case] = data.draw(any_scalars())
    before = [np.array(w) for w in model.get_weights()] if model.built else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a bare state_dict's epsilon warning
        out, err = attempt(fd.io.load_torch_state_dict, model, src, **kw)
    good = case in ("module", "dict") or (case in ("epsilon", "momentum") and _torch_opt_ok(
        case, kw[case]))
    if good and not no_width:
        assert err is None, f"refused: {err!r}"
        for w, a in zip(model.get_weights(), expected):
            np.testing.assert_array_equal(w, np.broadcast_to(a, w.shape).astype(dtype))
        return
    assert err is not None, f"accepted case {case}"
    assert isinstance(err, (ValueError, TypeError))
    assert str(err).startswith("load_torch_state_dict:"), str(err)
    if no_width and "build" in str(err):
        pass
    elif case in ("epsilon", "momentum"):
        expect_refused(err, case)
    elif case == "container":
        expect_refused(err, "state_dict")
    if before is not None:  # nothing written
        for w, b in zip(model.get_weights(), before):
            np.testing.assert_array_equal(w, b)


def _torch_opt_ok(name, v):
    if v is None:
        return True
    f = as_float(v) if not isinstance(v, np.ndarray) else None
    if f is None or not math.isfinite(f):
        return False
    return f > 0 if name == "epsilon" else 0.0 <= f <= 1.0


@given(st.data())
@fuzz(1)
def test_huge_layer_sizes(data):
    """Shapes passed as ints: a Dense of `units` built for `input_dim` inputs,
    each product at least 2**47 bytes (no address space maps it). Refused
    with ValueError naming units / input_dim when the byte count overflows
    int64 (never wrapped to a small size), else MemoryError from the
    allocator, as NumPy does; never a model that builds."""
    units = data.draw(st.sampled_from([2**45, 2**50, 2**61, 2**62, 2**63, 2**64, 3 * 2**61]))
    input_dim = data.draw(st.sampled_from([4, 2**20, 2**40, 2**62]))
    model = fd.Sequential([fd.layers.Dense(units)])
    try:
        model.build(input_dim)
    except MemoryError:
        assert input_dim * units * 8 < 2**63, "a size beyond int64 reached the allocator"
        return
    except ValueError as e:
        expect_refused(e, "units", "input_dim")
        return
    raise AssertionError(f"built a {input_dim} x {units} kernel")
