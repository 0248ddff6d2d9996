"""fd.export: the ONNX graph, run by onnxruntime, gives model.predict."""

import os
import subprocess
import sys

import numpy as np
import pytest

import fusednn as fd
from conftest import assert_scaled_close

L = fd.layers
RTOL = 1e-5


@pytest.fixture
def ort():
    pytest.importorskip("onnx")
    return pytest.importorskip("onnxruntime")


def _data(n=300, d=8, seed=0):
    rng = np.random.default_rng(seed)
    # shifted and scaled so the BN moving statistics move away from (0, 1)
    return rng.normal(size=(n, d)) * 3.0 + 2.0, rng


def _run(ort, path, x):
    s = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    return s.run(None, {"input": x})[0]


def _check(ort, model, path, x, sizes=(1, 100)):
    fd.export.onnx(model, path)
    for n in sizes:
        xb = np.ascontiguousarray(x[:n], dtype=model.dtype)
        got = _run(ort, path, xb)
        assert got.dtype == np.dtype(model.dtype)
        assert_scaled_close(got, model.predict(xb), RTOL, f"batch {n}")


def _classifier(dtype="float32"):
    x, rng = _data()
    y = rng.integers(0, 4, len(x))
    model = fd.Sequential([fd.Input((8,)), L.Dense(32), L.BatchNormalization(momentum=0.8),
                           L.ELU(), L.Dropout(0.2), L.Dense(16, activation="selu"),
                           L.Dense(4, activation="softmax")], dtype=dtype)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    return model, x


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_classifier_softmax_head(ort, tmp_path, dtype):
    model, x = _classifier(dtype)
    bn = model.layers[1]
    assert np.abs(bn.moving_mean).max() > 0.1  # trained statistics, not the initial ones
    _check(ort, model, tmp_path / "clf.onnx", x)
    probs = _run(ort, tmp_path / "clf.onnx", x[:5].astype(dtype))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)


def test_binary_sigmoid_head(ort, tmp_path):
    x, rng = _data(seed=1)
    y = (x[:, 0] > 2.0).astype(np.float32)
    model = fd.Sequential([fd.Input((8,)), L.Dense(16, activation="relu"),
                           L.BatchNormalization(momentum=0.8), L.Dense(1, activation="sigmoid")])
    model.compile("adam", "binary_crossentropy")
    assert model._loss.sigmoid_logits  # the last Dense computes logits, predict the sigmoid
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    _check(ort, model, tmp_path / "bin.onnx", x)


def test_linear_regressor(ort, tmp_path):
    x, rng = _data(seed=2)
    y = x @ rng.normal(size=(8, 2))
    model = fd.Sequential([fd.Input((8,)), L.Dense(16), L.BatchNormalization(momentum=0.8),
                           L.Activation("gelu"), L.Dense(2)])
    model.compile("sgd", "mse")
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    _check(ort, model, tmp_path / "reg.onnx", x)


def test_graph_is_inference_only(ort, tmp_path):
    """BN after a linear Dense is folded, BN after an activation is Mul/Add,
    dropout is gone; op-set >= 17, batch axis symbolic."""
    onnx = pytest.importorskip("onnx")
    model, _ = _classifier()
    model.add(L.BatchNormalization())  # after a softmax Dense: affine form
    model.build(8)
    proto = fd.export.onnx_model(model)
    onnx.checker.check_model(proto)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Gemm") == 3
    assert "Dropout" not in ops
    assert ops.count("Mul") >= 1 and ops.count("Add") >= 1  # the last BN
    assert "Softmax" not in ops  # the softmax Dense is not last: predict gives its logits
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == 8
    assert proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    path = tmp_path / "m.onnx"
    x, _ = _data(n=7)
    _check(ort, model, path, x, sizes=(7,))


_ACTIVATIONS = ["relu", "elu", "selu", "gelu", {"name": "gelu", "approximate": True}, "swish",
                {"name": "swish", "beta": 1.7}, "mish", "sigmoid", "tanh", "softplus",
                {"name": "leaky_relu", "alpha": 0.1}, {"name": "elu", "alpha": 0.4}, "linear"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", _ACTIVATIONS, ids=lambda a: a if isinstance(a, str) else
                         "-".join(str(v) for v in a.values()))
def test_every_activation(ort, tmp_path, act, dtype):
    x, _ = _data(n=100)
    x = x * 2.0  # into the tails of every activation
    model = fd.Sequential([fd.Input((8,)),
                           L.Dense(12, activation=act, kernel_initializer="he_normal"),
                           L.Activation(act), L.Dense(3)], dtype=dtype)
    _check(ort, model, tmp_path / "act.onnx", x, sizes=(100,))


def test_activation_layers_prelu_rrelu(ort, tmp_path):
    """PReLU with learned slopes, RReLU as its inference slope (lower + upper) / 2."""
    x, rng = _data(n=100)
    model = fd.Sequential([fd.Input((8,)), L.Dense(12), L.PReLU(), L.LeakyReLU(0.05),
                           L.RReLU(lower=0.1, upper=0.3), L.AlphaDropout(0.1),
                           L.BatchNormalization(), L.Dense(3, activation="tanh")])
    model.layers[1].set_weights([rng.uniform(0.0, 0.5, 12)])
    _check(ort, model, tmp_path / "p.onnx", x)


def test_overwrites_existing_file(ort, tmp_path):
    model, x = _classifier()
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")
    _check(ort, model, str(path), x, sizes=(3,))
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


# ------------------------------------------------------------------ errors


def test_missing_directory_writes_nothing(tmp_path):
    model, _ = _classifier()
    path = tmp_path / "nowhere" / "m.onnx"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        fd.export.onnx(model, path)
    assert os.listdir(tmp_path) == []


def test_directory_path_and_bad_types(tmp_path):
    model, _ = _classifier()
    with pytest.raises(ValueError, match="is a directory"):
        fd.export.onnx(model, tmp_path)
    with pytest.raises(TypeError, match="path"):
        fd.export.onnx(model, 3)
    with pytest.raises(TypeError, match="fd.Sequential"):
        fd.export.onnx("model", tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


def test_unbuilt_model(tmp_path):
    model = fd.Sequential([L.Dense(3)])
    with pytest.raises(ValueError, match="not built"):
        fd.export.onnx(model, tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


def test_custom_layer_is_named(tmp_path):
    class Scale(L.Layer):
        def forward(self, x, training=False):
            return 2 * x

    class MyDense(L.Dense):  # a subclass may compute something else: refused too
        pass

    for extra in (Scale(name="twice"), MyDense(4, name="mine")):
        model = fd.Sequential([fd.Input((8,)), L.Dense(4), extra])
        with pytest.raises(ValueError, match=f"{extra.name}.*{type(extra).__qualname__}"):
            fd.export.onnx(model, tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


def test_failure_while_writing_leaves_no_file(ort, tmp_path, monkeypatch):
    model, _ = _classifier()
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")

    def broken(onnx, model):
        raise RuntimeError("serialisation failed")

    monkeypatch.setattr(fd.export, "_build", broken)
    with pytest.raises(RuntimeError):
        fd.export.onnx(model, path)
    assert os.listdir(tmp_path) == ["m.onnx"] and path.read_bytes() == b"old"


def test_without_onnx(tmp_path, monkeypatch):
    """import fusednn needs no onnx/torch/keras; calling export says how to get onnx."""
    code = ("import sys\n"
            "for m in ('onnx', 'onnxruntime', 'torch', 'keras'): sys.modules[m] = None\n"
            "import fusednn as fd\n"
            "assert fd.export and fd.interop\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    monkeypatch.setitem(sys.modules, "onnx", None)
    model, _ = _classifier()
    with pytest.raises(ImportError, match="pip install onnx"):
        fd.export.onnx(model, tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []
