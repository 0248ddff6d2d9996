"""The README's code examples run as written and do what they say."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _example(name):
    text = README.read_text()
    m = re.search(rf"<!-- example: {name} -->\s*```python\n(.*?)```\s*<!-- end example -->",
                  text, re.S)
    assert m, f"README has no example {name!r}"
    return m.group(1)


def test_logistic_regression_trains_with_opt_apply():
    scope = {}
    exec(compile(_example("logistic-regression"), "README.md", "exec"), scope)
    assert scope["opt"].iterations == 200
    assert scope["accuracy"] > 0.95, scope["accuracy"]
    # the arrays the user made were updated in place
    assert np.abs(scope["w"]).max() > 0


def test_batchnorm_dropout_losses_example():
    scope = {}
    exec(compile(_example("batchnorm-dropout-losses"), "README.md", "exec"), scope)
    x = scope["x"]
    # training moved the moving statistics towards the batch's (Keras, 0.99)
    np.testing.assert_allclose(scope["moving_mean"], 0.01 * x.mean(axis=0), rtol=1e-4,
                               atol=1e-7)
    assert scope["dx"].shape == x.shape and scope["dgamma"].shape == (100,)
    assert 0.75 < (scope["y"] != 0).mean() < 0.85  # dropout 0.2 of the last call
    assert scope["loss"].shape == () and np.isfinite(float(scope["loss"]))
    assert scope["dlogits"].shape == (256, 10)
    assert scope["w"].shape == (100, 100) and scope["b"].shape == (100,)


def test_reuse_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(_example("reuse"), "README.md", "exec"), scope)
    model, again, new = scope["model"], scope["again"], scope["new"]
    assert (tmp_path / "digits.safetensors").is_file()
    assert again.optimizer.iterations > model.optimizer.iterations  # resumed, then trained on
    assert all(not layer.trainable for layer in new.layers[:-1])
    assert 0.0 <= scope["report"].sparsity <= 1.0
    assert len(scope["lrs"]) == len(scope["losses"]) > 0


def test_out_of_core_example():
    scope = {}
    exec(compile(_example("out-of-core"), "README.md", "exec"), scope)
    assert scope["accuracy"] > 0.9, scope["accuracy"]
    assert scope["model"].optimizer.iterations == 704 + 400 + 390
    del scope["x"]
    import os
    os.unlink(scope["path"])


def test_dlpack_example():
    import pytest

    torch = pytest.importorskip("torch")
    scope = {}
    exec(compile(_example("dlpack"), "README.md", "exec"), scope)
    assert isinstance(scope["logits"], torch.Tensor) and isinstance(scope["loss"], torch.Tensor)
    assert scope["opt"].iterations == 100
    assert scope["accuracy"] > 0.95, scope["accuracy"]
    assert float(scope["w"].abs().max()) > 0.2  # trained in place from 0.1 * N(0, 1)


def test_sklearn_example():
    import pytest

    pytest.importorskip("sklearn")
    scope = {}
    exec(compile(_example("sklearn"), "README.md", "exec"), scope)
    assert scope["test_accuracy"] > 0.95 and scope["cv_accuracy"] >= 0.95
    assert scope["est"].model_.count_params() == 64 * 512 + 512 + 512 * 10 + 10


def test_export_example(tmp_path, monkeypatch):
    import pytest

    for name in ("onnx", "onnxruntime", "torch"):
        pytest.importorskip(name)
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(_example("export"), "README.md", "exec"), scope)
    x, torch = scope["x"], scope["torch"]
    np.testing.assert_allclose(scope["probs"], scope["model"].predict(x[:5]), rtol=1e-5,
                               atol=1e-6)
    want = scope["net"](torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(scope["clone"].predict(x), want, atol=1e-6)
    np.testing.assert_allclose(scope["back"](torch.from_numpy(x)).detach().numpy(), want,
                               atol=1e-6)
