"""fd.io: PyTorch modules and state dicts, Keras get_weights() lists, against
torch itself and a NumPy float64 forward pass."""

import warnings

import numpy as np
import pytest

import fusednn as fd
from fusednn.testing import reference as R

from conftest import RTOL, assert_scaled_close

L = fd.layers


# ------------------------------------------------------------------ torch


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _trained_net(torch, dtype, dropout=True, momentum=0.1, eps=1e-5, out=3):
    """Linear, BN, ELU, [Dropout], Linear, BN, ReLU, Linear, trained a few steps
    so the running statistics and weights are not their initial values."""
    nn = torch.nn
    torch.manual_seed(0)
    mods = [nn.Linear(6, 8), nn.BatchNorm1d(8, eps=eps, momentum=momentum), nn.ELU()]
    mods += [nn.Dropout(0.2)] if dropout else []
    mods += [nn.Linear(8, 5), nn.BatchNorm1d(5, eps=eps, momentum=momentum), nn.ReLU(),
             nn.Linear(5, out)]
    net = nn.Sequential(*mods).to(dtype)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        xb = torch.randn(16, 6, generator=g, dtype=dtype) * 2 + 1
        loss = (net(xb) - 1).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    bn = net[1]
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    return net.eval()


def _fd_model(dropout=True, last_activation=None, out=3):
    layers = [L.Dense(8), L.BatchNormalization(), L.ELU()]
    layers += [L.Dropout(0.2)] if dropout else []
    layers += [L.Dense(5), L.BatchNormalization(), L.Activation("relu"),
               L.Dense(out, activation=last_activation)]
    return fd.Sequential(layers)


def _bns(model):
    return [la for la in model.layers if isinstance(la, L.BatchNormalization)]


def _x(n=20, d=6, dtype=np.float64, seed=2):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(dtype) * 2 + 1


@pytest.mark.parametrize("source", ["module", "state_dict", "numpy_state_dict"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_torch_predictions_match(source, dtype, torch):
    net = _trained_net(torch, torch.float64 if dtype == np.float64 else torch.float32)
    model = _fd_model()
    model.build(6, dtype=dtype)
    if source == "module":
        fd.io.load_torch_state_dict(model, net)
    else:
        sd = net.state_dict()
        if source == "numpy_state_dict":
            sd = {k: v.numpy() for k, v in sd.items()}
        fd.io.load_torch_state_dict(model, sd, epsilon=1e-5)
    x = _x(dtype=dtype)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    out = model.predict(x)
    assert out.dtype == dtype
    assert_scaled_close(out, ref, RTOL[dtype], "predictions")


def test_torch_softmax_output_gives_probabilities(torch):
    net = _trained_net(torch, torch.float64)
    model = _fd_model(last_activation="softmax")
    fd.io.load_torch_state_dict(model, net, dtype=np.float64)
    x = _x()
    with torch.no_grad():
        ref = torch.softmax(net(torch.from_numpy(x)), dim=1).numpy()
    assert_scaled_close(model.predict(x), ref, 1e-12, "softmax")


def test_torch_builds_unbuilt_model_from_first_linear(torch):
    net = _trained_net(torch, torch.float32)
    model = _fd_model()
    assert not model.built
    fd.io.load_torch_state_dict(model, net)
    assert model.built and model.layers[0].input_dim == 6
    assert model.layers[0].kernel.dtype == np.float32
    np.testing.assert_array_equal(model.layers[0].kernel, net[0].weight.detach().numpy().T)
    np.testing.assert_array_equal(model.layers[1].moving_variance,
                                  net[1].running_var.numpy())


def test_torch_module_sets_bn_convention_and_training_step_matches(torch):
    """After loading, one SGD step in train mode updates the running statistics
    and the weights exactly as torch does (BN momentum and eps not torch's
    defaults, so they must come from the module)."""
    net = _trained_net(torch, torch.float64, dropout=False, momentum=0.3, eps=1e-4)
    model = _fd_model(dropout=False)
    fd.io.load_torch_state_dict(model, net, dtype=np.float64)
    for bn in _bns(model):
        assert (bn.convention, bn.momentum, bn.epsilon) == ("torch", 0.3, 1e-4)

    x = _x(n=24)
    y = np.random.default_rng(3).standard_normal((24, 3))
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    loss = torch.nn.functional.mse_loss(net(torch.from_numpy(x)), torch.from_numpy(y))
    opt.zero_grad()
    loss.backward()
    opt.step()

    model.compile(optimizer=fd.optimizers.SGD(learning_rate=0.05), loss="mse")
    model.fit(x, y, batch_size=24, epochs=1, shuffle=False, verbose=0)
    for bn, tbn in zip(_bns(model), (net[1], net[4])):
        assert_scaled_close(bn.moving_mean, tbn.running_mean.numpy(), 1e-12, "running_mean")
        assert_scaled_close(bn.moving_variance, tbn.running_var.numpy(), 1e-12, "running_var")
    assert_scaled_close(model.layers[0].kernel, net[0].weight.detach().numpy().T, 1e-12,
                        "kernel after the step")
    assert_scaled_close(model.layers[1].gamma, net[1].weight.detach().numpy(), 1e-12,
                        "gamma after the step")


def test_torch_bare_state_dict_keeps_epsilon_and_warns(torch):
    net = _trained_net(torch, torch.float64, dropout=False)
    x = _x()
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()

    model = _fd_model(dropout=False)
    with pytest.warns(UserWarning, match="keeps epsilon=0.001"):
        fd.io.load_torch_state_dict(model, net.state_dict(), dtype=np.float64)
    for bn in _bns(model):
        assert (bn.epsilon, bn.convention, bn.momentum) == (1e-3, "keras", 0.99)
    err = np.abs(model.predict(x) - ref).max() / np.abs(ref).max()
    assert err > 1e-6  # Keras' epsilon is not torch's: the outputs differ

    model = _fd_model(dropout=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fd.io.load_torch_state_dict(model, net.state_dict(), epsilon=1e-5, momentum=0.1,
                                    dtype=np.float64)
    for bn in _bns(model):
        assert (bn.epsilon, bn.convention, bn.momentum) == (1e-5, "torch", 0.1)
    assert_scaled_close(model.predict(x), ref, 1e-12, "with epsilon=1e-5")


def test_torch_prelu_bias_free_linear_and_affine_free_bn(torch):
    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6, bias=False), nn.PReLU(), nn.BatchNorm1d(6, affine=False),
                        nn.Linear(6, 3), nn.PReLU(num_parameters=3)).double()
    with torch.no_grad():
        net[1].weight.fill_(0.3)
        net[4].weight.copy_(torch.tensor([0.1, 0.2, 0.4]))
        net[2].running_mean.copy_(torch.linspace(-1, 1, 6))
        net[2].running_var.copy_(torch.linspace(0.5, 2, 6))
    net.eval()
    model = fd.Sequential([L.Dense(6, use_bias=False), L.PReLU(),
                           L.BatchNormalization(scale=False, center=False), L.Dense(3),
                           L.PReLU()])
    fd.io.load_torch_state_dict(model, net, dtype=np.float64)
    x = _x(d=4)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    assert_scaled_close(model.predict(x), ref, 1e-12, "prelu net")


def _sd(torch, net):
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("case,match", [
    ("shape", r"'3\.weight' has shape \(5, 8\).*dense.*\(4, 8\)"),
    ("missing_bias", r"missing key '0\.bias'"),
    ("missing_running_var", r"missing key '1\.running_var'"),
    ("unexpected_key", r"unexpected keys \['0\.extra'\]"),
    ("extra_module", r"unexpected keys \['7\.weight', '7\.bias'\]"),
    ("fewer_modules", r"has no module"),
    ("conv", r"'0\.weight'.*\(8, 6, 3\).*convolution"),
    ("order", r"BatchNorm1d '1'.*matched with layer dense\S* \(Dense\); expected a "
              r"BatchNormalization"),
])
def test_torch_state_dict_errors(case, match, torch):
    net = _trained_net(torch, torch.float32, dropout=False)
    sd = _sd(torch, net)
    model = _fd_model(dropout=False)
    if case == "shape":
        model = fd.Sequential([L.Dense(8), L.BatchNormalization(), L.Dense(4),
                               L.BatchNormalization(), L.Dense(3)])
    elif case == "missing_bias":
        del sd["0.bias"]
    elif case == "missing_running_var":
        del sd["1.running_var"]
    elif case == "unexpected_key":
        sd["0.extra"] = torch.zeros(3)
    elif case == "extra_module":
        sd["7.weight"], sd["7.bias"] = torch.zeros(2, 3), torch.zeros(2)
    elif case == "fewer_modules":
        del sd["6.weight"], sd["6.bias"]
    elif case == "conv":
        sd["0.weight"] = torch.zeros(8, 6, 3)
    elif case == "order":
        model = fd.Sequential([L.Dense(8), L.Dense(8), L.Dense(5), L.BatchNormalization(),
                               L.Dense(3)])
    model.build(6)
    before = model.get_weights()
    with pytest.raises(ValueError, match=match):
        fd.io.load_torch_state_dict(model, sd, epsilon=1e-5)
    for a, b in zip(before, model.get_weights()):  # nothing written
        np.testing.assert_array_equal(a, b)


def test_torch_module_errors(torch):
    nn = torch.nn
    conv = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"'0' \(Conv1d\)"):
        fd.io.load_torch_state_dict(fd.Sequential([L.Dense(2)]), conv)
    cma = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, momentum=None)).eval()
    model = fd.Sequential([L.Dense(4), L.BatchNormalization()])
    with pytest.raises(ValueError, match="momentum=None"):
        fd.io.load_torch_state_dict(model, cma)
    fd.io.load_torch_state_dict(model, cma, momentum=0.1)
    assert (model.layers[1].convention, model.layers[1].momentum) == ("torch", 0.1)
    no_stats = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False))
    with pytest.raises(ValueError, match="track_running_stats=False"):
        fd.io.load_torch_state_dict(fd.Sequential([L.Dense(4), L.BatchNormalization()]),
                                    no_stats)
    lin = nn.Sequential(nn.Linear(3, 4))
    with pytest.raises(ValueError, match=r"Linear '0'.*expected a Dense"):
        fd.io.load_torch_state_dict(fd.Sequential([L.BatchNormalization()]), lin)
    with pytest.raises(TypeError, match="state_dict must be a Mapping"):
        fd.io.load_torch_state_dict(fd.Sequential([L.Dense(4)]), [1, 2])
    with pytest.raises(TypeError, match="model must be a fd.Sequential"):
        fd.io.load_torch_state_dict(lin, lin.state_dict())
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        fd.io.load_torch_state_dict(fd.Sequential([L.Dense(4)]), lin, epsilon=0.0)
    model = fd.Sequential([L.Dense(4)])
    model.build(3, dtype=np.float32)
    with pytest.raises(ValueError, match="dtype=float64 but the model is already built"):
        fd.io.load_torch_state_dict(model, lin, dtype=np.float64)


# ------------------------------------------------------------------ Keras


def _keras_model():
    return fd.Sequential([L.Dense(8, activation="elu"), L.BatchNormalization(), L.Dropout(0.3),
                          L.Dense(5), L.PReLU(), L.BatchNormalization(scale=False),
                          L.Dense(3, activation="softmax")])


def _keras_weights(rng, shared_alpha=False):
    """What Keras' get_weights() lists for _keras_model(), in its order."""
    return [rng.standard_normal((6, 8)), rng.standard_normal(8),               # Dense
            rng.uniform(0.5, 2, 8), rng.standard_normal(8),                    # gamma, beta
            rng.standard_normal(8), rng.uniform(0.5, 2, 8),                    # moving stats
            rng.standard_normal((8, 5)), rng.standard_normal(5),               # Dense
            rng.uniform(0, 0.5, 1 if shared_alpha else 5),                     # PReLU alpha
            rng.standard_normal(5), rng.standard_normal(5), rng.uniform(0.5, 2, 5),  # BN
            rng.standard_normal((5, 3)), rng.standard_normal(3)]               # Dense


def _keras_forward(x, w, eps=1e-3):
    """The Keras model in NumPy float64, inference mode."""
    h = R.activation(x @ w[0] + w[1], "elu")
    h = w[2] * (h - w[4]) / np.sqrt(w[5] + eps) + w[3]
    h = h @ w[6] + w[7]
    h = np.where(h > 0, h, w[8] * h)
    h = (h - w[10]) / np.sqrt(w[11] + eps) + w[9]
    z = h @ w[12] + w[13]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("shared_alpha", [False, True])
def test_keras_weights_match_numpy_forward(shared_alpha):
    w = _keras_weights(np.random.default_rng(0), shared_alpha)
    model = _keras_model()
    fd.io.load_keras_weights(model, w, dtype=np.float64)
    assert model.built and model.layers[0].input_dim == 6
    x = _x()
    assert_scaled_close(model.predict(x), _keras_forward(x, w), 1e-12, "keras forward")

    model32 = _keras_model()
    fd.io.load_keras_weights(model32, w)
    assert model32.layers[0].kernel.dtype == np.float32
    assert_scaled_close(model32.predict(x.astype(np.float32)), _keras_forward(x, w), 1e-5,
                        "float32")
    # without dtype= an unbuilt model is built in its own dtype
    model64 = fd.Sequential(_keras_model().layers, dtype="float64")
    fd.io.load_keras_weights(model64, w)
    assert all(a.dtype == np.float64 for a in model64.weights)
    assert_scaled_close(model64.predict(x), _keras_forward(x, w), 1e-12, "the model's float64")


def test_keras_weights_errors():
    rng = np.random.default_rng(0)
    w = _keras_weights(rng)
    model = _keras_model()
    model.build(6, dtype=np.float64)
    before = model.get_weights()
    bad = list(w)
    bad[6] = np.zeros((8, 4))
    with pytest.raises(ValueError, match=r"weights\[6\] has shape \(8, 4\); layer dense\S* "
                                         r"\(Dense\) expects its kernel of shape \(8, 5\)"):
        fd.io.load_keras_weights(model, bad)
    with pytest.raises(ValueError, match=r"got 13 arrays, the model needs 14: layer dense\S* "
                                         r"\(Dense\) expects its bias of shape \(3,\) at "
                                         r"weights\[13\]"):
        fd.io.load_keras_weights(model, w[:-1])
    with pytest.raises(ValueError, match=r"got 15 arrays, the model needs 14 .*left over"):
        fd.io.load_keras_weights(model, w + [np.zeros(3)])
    with pytest.raises(ValueError, match=r"weights\[8\] has shape \(4,\).*PReLU"):
        fd.io.load_keras_weights(model, w[:8] + [np.zeros(4)] + w[9:])
    for a, b in zip(before, model.get_weights()):  # nothing written
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="weights must be a list"):
        fd.io.load_keras_weights(model, {"a": w[0]})
    with pytest.raises(ValueError, match="weights is empty"):
        fd.io.load_keras_weights(_keras_model(), [])
    with pytest.raises(TypeError, match="real number array"):
        fd.io.load_keras_weights(_keras_model(), [np.array(["a", "b"])])
    with pytest.raises(ValueError, match="dtype must be float32, float64 or None"):
        fd.io.load_keras_weights(_keras_model(), w, dtype=np.int32)
    with pytest.raises(TypeError, match="model must be a fd.Sequential"):
        fd.io.load_keras_weights(w, w)
