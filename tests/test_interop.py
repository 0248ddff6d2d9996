"""fd.interop: whole models from torch and Keras 3, and to torch, with the
same predictions."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is first imported

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import fusednn as fd  # noqa: E402
from conftest import assert_scaled_close  # noqa: E402

L = fd.layers
RTOL = 1e-5
# Keras' torch backend calls np.array(tensor, copy=False) on torch tensors (NumPy 2 warns)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


@pytest.fixture
def keras():
    return pytest.importorskip("keras")


def _x(n=64, d=6, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)) * 2.0 + 1.0).astype(dtype)


def _torch_out(torch, net, x):
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


def _train_torch(torch, net, x, steps=5):
    """A few SGD steps in train mode, so the BN running statistics and the
    weights are not the initial ones; then eval mode."""
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    net.train()
    xt = torch.from_numpy(x)
    for _ in range(steps):
        opt.zero_grad()
        net(xt).square().mean().backward()
        opt.step()
    return net.eval()


# ------------------------------------------------------------------ torch


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_from_torch_trained(torch, dtype):
    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16, eps=1e-4, momentum=0.3), nn.ELU(0.7),
                        nn.Dropout(0.2), nn.Linear(16, 12), nn.GELU("tanh"), nn.PReLU(),
                        nn.Linear(12, 8, bias=False), nn.BatchNorm1d(8), nn.PReLU(8), nn.SiLU(),
                        nn.AlphaDropout(0.1), nn.Linear(8, 4), nn.Softmax(dim=1))
    net = net.to(getattr(torch, dtype))
    x = _x(dtype=dtype)
    _train_torch(torch, net, x)
    assert net[1].running_mean.abs().max() > 0.1
    model = fd.interop.from_torch(net)
    assert model.dtype == dtype and model.built
    bn = model.layers[1]
    assert (bn.convention, bn.epsilon, bn.momentum) == ("torch", 1e-4, 0.3)
    assert model.layers[-1].output_activation == "softmax"
    for n in (1, 64):
        assert_scaled_close(model.predict(x[:n]), _torch_out(torch, net, x[:n]), RTOL)


_TORCH_MODULES = {
    "ReLU": lambda nn: nn.ReLU(), "LeakyReLU": lambda nn: nn.LeakyReLU(0.1),
    "ELU": lambda nn: nn.ELU(0.5), "SELU": lambda nn: nn.SELU(), "GELU": lambda nn: nn.GELU(),
    "GELU-tanh": lambda nn: nn.GELU(approximate="tanh"), "SiLU": lambda nn: nn.SiLU(),
    "Mish": lambda nn: nn.Mish(), "Sigmoid": lambda nn: nn.Sigmoid(),
    "Tanh": lambda nn: nn.Tanh(), "Softplus": lambda nn: nn.Softplus(),
    "PReLU": lambda nn: nn.PReLU(init=0.1), "PReLU-16": lambda nn: nn.PReLU(16, init=0.2),
    "RReLU": lambda nn: nn.RReLU(0.1, 0.3), "Dropout": lambda nn: nn.Dropout(0.5),
    "AlphaDropout": lambda nn: nn.AlphaDropout(0.5), "Identity": lambda nn: nn.Identity(),
}


@pytest.mark.parametrize("name", sorted(_TORCH_MODULES))
def test_from_torch_each_module(torch, name):
    """Each module right after a Linear (merged into the Dense where it is an
    activation) and after a BatchNorm1d (a layer of its own)."""
    nn = torch.nn
    make = _TORCH_MODULES[name]
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(6, 16), make(nn), nn.BatchNorm1d(16), make(nn),
                        nn.Linear(16, 3)).eval()
    x = _x()
    model = fd.interop.from_torch(net)
    assert_scaled_close(model.predict(x), _torch_out(torch, net, x), RTOL, name)
    back = fd.interop.to_torch(model)
    assert_scaled_close(_torch_out(torch, back, x), model.predict(x), RTOL, name)


def test_from_torch_nested_and_input_dim(torch):
    nn = torch.nn
    torch.manual_seed(2)
    net = nn.Sequential(nn.Sequential(nn.Linear(5, 7), nn.Tanh()),
                        nn.BatchNorm1d(7, affine=False), nn.Linear(7, 2))
    _train_torch(torch, net, _x(d=5, seed=9))
    x = _x(d=5)
    assert_scaled_close(fd.interop.from_torch(net).predict(x), _torch_out(torch, net, x), RTOL)
    only_act = nn.Sequential(nn.ReLU(), nn.Sigmoid())
    with pytest.raises(ValueError, match="pass input_dim"):
        fd.interop.from_torch(only_act)
    model = fd.interop.from_torch(only_act, input_dim=5)
    assert_scaled_close(model.predict(x), _torch_out(torch, only_act, x), RTOL)
    with pytest.raises(ValueError, match="input_dim=4.*in_features=5"):
        fd.interop.from_torch(net, input_dim=4)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_to_torch_round_trip(torch, dtype):
    """fd -> torch -> fd: the same predictions, softmax head included."""
    rng = np.random.default_rng(3)
    x = _x(n=200, seed=3)
    y = rng.integers(0, 3, len(x))
    model = fd.Sequential([fd.Input((6,)), L.Dense(16, kernel_initializer="he_normal"),
                           L.BatchNormalization(momentum=0.8), L.Activation("gelu"),
                           L.Dropout(0.2), L.Dense(16), L.PReLU(), L.LeakyReLU(0.2),
                           L.BatchNormalization(scale=False), L.ELU(0.8), L.RReLU(),
                           L.Dense(8, activation="mish"), L.AlphaDropout(0.1),
                           L.Dense(3, activation="softmax")], dtype=dtype)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    net = fd.interop.to_torch(model)
    assert not net.training
    assert next(net.parameters()).dtype == getattr(torch, dtype)
    assert isinstance(net[-1], torch.nn.Softmax)
    assert net[1].momentum == pytest.approx(0.2)  # Keras' 0.8 as torch's decay
    ref = model.predict(x)
    for n in (1, 200):
        assert_scaled_close(_torch_out(torch, net, x[:n].astype(dtype)), ref[:n], RTOL)
    back = fd.interop.from_torch(net)
    assert back.dtype == dtype
    assert_scaled_close(back.predict(x), ref, RTOL)


def test_to_torch_sigmoid_head(torch):
    x = _x(n=100)
    model = fd.Sequential([fd.Input((6,)), L.Dense(8, activation="swish"),
                           L.BatchNormalization(center=False, scale=False, momentum=0.5),
                           L.Dense(1, activation="sigmoid")])
    model.compile("adam", "binary_crossentropy")
    model.fit(x, (x[:, 0] > 1).astype(np.float32), epochs=1, verbose=0)
    net = fd.interop.to_torch(model)
    assert not net[2].affine and isinstance(net[-1], torch.nn.Sigmoid)
    assert_scaled_close(_torch_out(torch, net, x), model.predict(x), RTOL)
    assert_scaled_close(fd.interop.from_torch(net).predict(x), model.predict(x), RTOL)


def test_torch_errors(torch):
    nn = torch.nn
    with pytest.raises(ValueError, match=r"module 1 \(Conv1d\)"):
        fd.interop.from_torch(nn.Sequential(nn.Linear(4, 4), nn.Conv1d(1, 1, 3)))
    with pytest.raises(ValueError, match=r"module 1\.0 \(LayerNorm\)"):
        fd.interop.from_torch(nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.LayerNorm(4))))
    with pytest.raises(ValueError, match=r"module 1 \(Softmax\).*output head"):
        fd.interop.from_torch(nn.Sequential(nn.Linear(4, 4), nn.Softmax(-1), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match=r"module 1 \(Softplus\).*beta=2"):
        fd.interop.from_torch(nn.Sequential(nn.Linear(4, 4), nn.Softplus(beta=2)))
    with pytest.raises(ValueError, match=r"module 1 \(BatchNorm1d\).*momentum=None"):
        fd.interop.from_torch(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, momentum=None)))
    with pytest.raises(ValueError, match=r"module 1 \(Linear\) takes 5 features, gets 4"):
        fd.interop.from_torch(nn.Sequential(nn.Linear(3, 4), nn.Linear(5, 2)))
    with pytest.raises(TypeError, match="nn.Sequential"):
        fd.interop.from_torch(nn.Linear(3, 4))
    with pytest.raises(ValueError, match="not built"):
        fd.interop.to_torch(fd.Sequential([L.Dense(3)]))
    swish = fd.Sequential([fd.Input((3,)), L.Dense(2, activation={"name": "swish", "beta": 2.0},
                                                   name="sw")])
    with pytest.raises(ValueError, match="'sw'.*beta=2.0"):
        fd.interop.to_torch(swish)

    class Custom(L.Layer):
        def forward(self, x, training=False):
            return x

    with pytest.raises(ValueError, match="'odd'.*Custom"):
        fd.interop.to_torch(fd.Sequential([fd.Input((3,)), Custom(name="odd")]))


# ------------------------------------------------------------------ Keras


def _fit_keras(keras, model, x, y, loss):
    model.compile(optimizer="adam", loss=loss)
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    return model


def test_from_keras_sequential_trained(keras):
    kl = keras.layers
    keras.utils.set_random_seed(0)
    x = _x(n=128)
    y = np.random.default_rng(0).integers(0, 3, len(x))
    km = keras.Sequential([keras.Input((6,)), kl.Dense(16, activation="gelu"),
                           kl.BatchNormalization(momentum=0.5, epsilon=1e-4), kl.PReLU(),
                           kl.Dropout(0.3), kl.LeakyReLU(negative_slope=0.1), kl.Dense(8),
                           kl.ELU(alpha=0.5), kl.Activation("selu"), kl.AlphaDropout(0.1),
                           kl.Dense(8, activation="silu", use_bias=False),
                           kl.BatchNormalization(center=False), kl.Dense(3),
                           kl.Activation("softmax")])
    _fit_keras(keras, km, x, y, "sparse_categorical_crossentropy")
    model = fd.interop.from_keras(km)
    bn = model.layers[1]
    assert (bn.momentum, bn.epsilon, bn.convention) == (0.5, 1e-4, "keras")
    assert np.abs(bn.moving_mean).max() > 0.1
    assert model.layers[-1].output_activation == "softmax"
    for n in (1, 128):
        assert_scaled_close(model.predict(x[:n]), km.predict(x[:n], verbose=0), RTOL)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_from_keras_functional_chain(keras, dtype):
    kl = keras.layers
    keras.utils.set_random_seed(1)
    x = _x(n=128, dtype=dtype)
    inp = keras.Input((6,), dtype=dtype)
    h = kl.Dense(12, activation="mish", dtype=dtype)(inp)
    h = kl.BatchNormalization(dtype=dtype)(h)
    h = kl.PReLU(shared_axes=[1], dtype=dtype)(h)
    h = kl.Dense(12, activation="softplus", dtype=dtype)(h)
    h = kl.Dense(12, activation="leaky_relu", dtype=dtype)(h)
    out = kl.Dense(1, activation="sigmoid", dtype=dtype)(h)
    km = _fit_keras(keras, keras.Model(inp, out), x, (x[:, 0] > 1).astype(dtype),
                    "binary_crossentropy")
    model = fd.interop.from_keras(km)
    assert model.dtype == dtype
    assert_scaled_close(model.predict(x), km.predict(x, verbose=0), RTOL)
    # and on to torch and back
    assert_scaled_close(fd.interop.from_torch(fd.interop.to_torch(model)).predict(x),
                        model.predict(x), RTOL)


def test_from_keras_softmax_dense_untrained(keras):
    kl = keras.layers
    km = keras.Sequential([kl.Dense(5, activation="tanh"), kl.Dense(3, activation="softmax")])
    km.build((None, 6))  # built without an Input
    x = _x()
    model = fd.interop.from_keras(km)
    assert model.layers[-1].output_activation == "softmax"
    assert_scaled_close(model.predict(x), km.predict(x, verbose=0), RTOL)


def test_keras_errors(keras):
    kl = keras.layers
    conv = keras.Sequential([keras.Input((8, 8, 1)), kl.Conv2D(2, 3, name="c2"), kl.Flatten(),
                             kl.Dense(2)])
    with pytest.raises(ValueError, match=r"'c2' \(Conv2D\)"):
        fd.interop.from_keras(conv)
    with pytest.raises(ValueError, match="not built"):
        fd.interop.from_keras(keras.Sequential([kl.Dense(3)]))
    ln = keras.Sequential([keras.Input((4,)), kl.Dense(4), kl.LayerNormalization(name="ln")])
    with pytest.raises(ValueError, match=r"'ln' \(LayerNormalization\)"):
        fd.interop.from_keras(ln)
    mid = keras.Sequential([keras.Input((4,)), kl.Dense(4, activation="softmax", name="sm"),
                            kl.Dense(2)])
    with pytest.raises(ValueError, match="'sm'.*softmax"):
        fd.interop.from_keras(mid)
    odd = keras.Sequential([keras.Input((4,)), kl.Dense(4, activation="hard_sigmoid",
                                                        name="hs")])
    with pytest.raises(ValueError, match="'hs'.*hard_sigmoid"):
        fd.interop.from_keras(odd)
    inp = keras.Input((4,))
    a = kl.Dense(4)(inp)
    branch = keras.Model(inp, kl.Add(name="add")([a, kl.Dense(4)(inp)]))
    with pytest.raises(ValueError, match="chain"):
        fd.interop.from_keras(branch)
    with pytest.raises(TypeError, match="keras.Model"):
        fd.interop.from_keras(fd.Sequential([L.Dense(2)]))
