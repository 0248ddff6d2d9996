"""fd.layers beyond Dense: activation layers, PReLU, RReLU, BatchNormalization,
Dropout and AlphaDropout, against float64 NumPy (fusednn.testing.reference)."""

import json

import numpy as np
import pytest

import fusednn as fd
from fusednn import layers as L
from fusednn.testing import reference as R

from conftest import RTOL, assert_scaled_close, to_backend, to_numpy

DTYPES = [np.float32, np.float64]


def _xdy(shape=(7, 5), dtype=np.float64, seed=0, away_from_zero=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if away_from_zero:  # keep finite differences off the kink at 0
        x = np.where(np.abs(x) < 0.1, np.sign(x + 1e-12) * 0.1 + x, x)
    dy = rng.standard_normal(shape)
    return x.astype(dtype), dy.astype(dtype)


# ------------------------------------------------------------ activation layers

ACT_LAYERS = [
    (lambda: L.Activation("elu"), "elu", {}),
    (lambda: L.Activation("leaky_relu", alpha=0.1), "leaky_relu", {"alpha": 0.1}),
    (lambda: L.Activation("gelu", approximate=True), "gelu", {"approximate": True}),
    (lambda: L.Activation(None), "linear", {}),
    (lambda: L.Activation("swish"), "swish", {}),
    (lambda: L.LeakyReLU(), "leaky_relu", {"alpha": 0.3}),
    (lambda: L.LeakyReLU(negative_slope=0.01), "leaky_relu", {"alpha": 0.01}),
    (lambda: L.ELU(), "elu", {"alpha": 1.0}),
    (lambda: L.ELU(alpha=0.5), "elu", {"alpha": 0.5}),
]
ACT_IDS = ["act-elu", "act-leaky0.1", "act-gelu-tanh", "act-linear", "act-swish",
           "leaky-default", "leaky0.01", "elu-default", "elu0.5"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make,name,params", ACT_LAYERS, ids=ACT_IDS)
def test_activation_layers_match_reference(backend, make, name, params, dtype):
    x, dy = _xdy(dtype=dtype)
    layer = make()
    for training in (False, True):
        y = layer(to_backend(x, backend), training=training)
        assert y.dtype == dtype and y.shape == x.shape
        assert_scaled_close(y, R.activation(x, name, **params), RTOL[dtype], "y")
        dx = layer.backward(to_backend(dy, backend))
        assert_scaled_close(dx, dy * R.activation_grad(x, name, **params), RTOL[dtype], "dx")
        assert layer.grads == [] and layer.weights == []
        assert layer.backward(to_backend(dy, backend), need_dx=False) is None


def test_leaky_relu_default_is_keras_layer_default():
    assert L.LeakyReLU().negative_slope == 0.3
    assert L.ELU().alpha == 1.0


# ------------------------------------------------------------------------ PReLU


def _prelu(units, alpha, dtype=np.float64):
    layer = L.PReLU()
    layer.build(units, dtype=dtype)
    layer.set_weights([np.asarray(alpha, dtype)])
    return layer


@pytest.mark.parametrize("dtype", DTYPES)
def test_prelu_matches_reference(backend, dtype):
    x, dy = _xdy((6, 4), dtype)
    alpha = np.array([0.0, 0.25, -0.5, 1.5])
    layer = L.PReLU()
    layer.build(4, np if backend == "cpu" else __import__("cupy"), dtype)
    layer.set_weights([alpha])
    assert_scaled_close(layer.alpha, alpha, RTOL[dtype], "alpha")
    y = layer.forward(to_backend(x, backend), training=True)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    assert y.dtype == dtype
    assert_scaled_close(y, np.where(x64 > 0, x64, alpha * x64), RTOL[dtype], "y")
    dx = layer.backward(to_backend(dy, backend))
    assert_scaled_close(dx, np.where(x64 > 0, dy64, alpha * dy64), RTOL[dtype], "dx")
    (dalpha,) = layer.grads
    assert dalpha.shape == (4,) and dalpha.dtype == dtype
    assert_scaled_close(dalpha, (dy64 * np.minimum(x64, 0)).sum(axis=0), RTOL[dtype], "dalpha")


def test_prelu_default_is_relu():
    x, _ = _xdy()
    y = L.PReLU()(x)
    np.testing.assert_array_equal(y, np.maximum(x, 0))


def test_prelu_finite_differences():
    x, dy = _xdy((5, 3), np.float64, seed=1, away_from_zero=True)
    alpha = np.array([0.1, -0.3, 0.7])
    layer = _prelu(3, alpha)

    def loss(xv, av):
        layer.set_weights([av])
        return float((layer.forward(xv) * dy).sum())

    layer.forward(x)
    dx = layer.backward(dy)
    (dalpha,) = layer.grads
    h = 1e-6
    num_dx = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        xp_, xm = x.copy(), x.copy()
        xp_[idx] += h
        xm[idx] -= h
        num_dx[idx] = (loss(xp_, alpha) - loss(xm, alpha)) / (2 * h)
    num_da = np.zeros_like(alpha)
    for j in range(3):
        ap, am = alpha.copy(), alpha.copy()
        ap[j] += h
        am[j] -= h
        num_da[j] = (loss(x, ap) - loss(x, am)) / (2 * h)
    np.testing.assert_allclose(dx, num_dx, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(dalpha, num_da, rtol=1e-7, atol=1e-8)


def test_prelu_weights_penalty_constraint():
    layer = L.PReLU(alpha_initializer=fd.initializers.Constant(0.25),
                    alpha_regularizer=fd.regularizers.L2(0.5),
                    alpha_constraint=fd.constraints.MaxNorm(1.0))
    layer.build(4)
    np.testing.assert_array_equal(layer.alpha, np.full(4, 0.25, np.float32))
    assert layer.trainable_weights[0] is layer.alpha
    assert layer.weight_penalties() == [layer.alpha_regularizer]
    assert layer.weight_constraints() == [layer.alpha_constraint]
    assert layer.penalty_loss() == pytest.approx(0.5 * 4 * 0.25**2)
    with pytest.raises(ValueError, match="PReLU: x has 5 features"):
        layer.forward(np.zeros((2, 5), np.float32))


def test_prelu_not_trainable():
    layer = _prelu(3, [0.1, 0.2, 0.3])
    layer.trainable = False
    assert layer.trainable_weights == [] and len(layer.non_trainable_weights) == 1
    x, dy = _xdy((4, 3))
    layer.forward(x, training=True)
    layer.backward(dy)  # grads may still be computed; the optimizer skips them


# ------------------------------------------------------------------------ RReLU


@pytest.mark.parametrize("dtype", DTYPES)
def test_rrelu_training_slopes(backend, dtype):
    x, dy = _xdy((50, 8), dtype)
    layer = L.RReLU(lower=0.1, upper=0.4, seed=3)
    y = layer(to_backend(x, backend), training=True)
    slopes = to_numpy(layer.slopes)
    assert slopes.shape == x.shape and slopes.dtype == dtype
    assert slopes.min() >= dtype(0.1) and slopes.max() <= dtype(0.4)
    assert np.unique(slopes).size > x.size // 2  # one draw per element
    x64 = x.astype(np.float64)
    noise = np.where(x64 >= 0, 1.0, slopes.astype(np.float64))
    assert_scaled_close(y, x64 * noise, RTOL[dtype], "y")
    dx = layer.backward(to_backend(dy, backend))
    assert_scaled_close(dx, dy.astype(np.float64) * noise, RTOL[dtype], "dx")
    assert layer.grads == []
    # A new draw each step; the same seed replays the sequence.
    layer(to_backend(x, backend), training=True)
    assert not np.array_equal(to_numpy(layer.slopes), slopes)
    again = L.RReLU(lower=0.1, upper=0.4, seed=3)
    again(to_backend(x, backend), training=True)
    np.testing.assert_array_equal(to_numpy(again.slopes), slopes)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rrelu_inference_slope(backend, dtype):
    x, dy = _xdy((6, 4), dtype)
    layer = L.RReLU()  # torch defaults 1/8, 1/3
    mid = (1 / 8 + 1 / 3) / 2
    y = layer(to_backend(x, backend), training=False)
    assert_scaled_close(y, R.activation(x, "leaky_relu", alpha=mid), RTOL[dtype], "y")
    dx = layer.backward(to_backend(dy, backend))
    assert_scaled_close(dx, dy * R.activation_grad(x, "leaky_relu", alpha=mid), RTOL[dtype],
                        "dx")


def test_rrelu_matches_torch_statistics():
    torch = pytest.importorskip("torch")
    x = -np.ones((200, 50))
    ours = L.RReLU(seed=0)(x, training=True)
    theirs = torch.nn.RReLU()(torch.from_numpy(x)).numpy()
    for a in (ours, theirs):
        assert -a.max() >= 1 / 8 - 1e-12 and -a.min() <= 1 / 3 + 1e-12
    assert abs(-ours.mean() - (1 / 8 + 1 / 3) / 2) < 5e-3
    assert abs(ours.mean() - theirs.mean()) < 1e-2
    mid = torch.nn.RReLU().eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(L.RReLU()(x, training=False), mid, rtol=1e-12)


# ----------------------------------------------------------- BatchNormalization


def _bn(features, dtype, backend, **kwargs):
    layer = L.BatchNormalization(**kwargs)
    xp = np if backend == "cpu" else __import__("cupy")
    layer.build(features, xp, dtype)
    rng = np.random.default_rng(7)
    weights = []
    if layer.scale:
        weights.append(rng.uniform(0.5, 1.5, features))
    if layer.center:
        weights.append(rng.standard_normal(features) * 0.3)
    weights += [rng.standard_normal(features) * 0.2, rng.uniform(0.5, 2.0, features)]
    layer.set_weights(weights)
    return layer


@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False),
                                          (False, False)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_training_matches_reference(backend, dtype, center, scale):
    x, dy = _xdy((9, 6), dtype)
    x = x * 3 + 1
    layer = _bn(6, dtype, backend, center=center, scale=scale, momentum=0.9)
    assert len(layer.trainable_weights) == int(center) + int(scale)
    assert len(layer.weights) == 2 + int(center) + int(scale)
    w = [w.astype(np.float64) for w in layer.get_weights()]
    gamma = w[0] if scale else None
    beta = w[int(scale)] if center else None
    mm, mv = w[-2], w[-1]
    y = layer.forward(to_backend(x, backend), training=True)
    mean, var = R.batchnorm_statistics(x)
    assert_scaled_close(y, R.batchnorm_forward(x, gamma, beta, mean, var, 1e-3), 10 * RTOL[dtype],
                        "y")
    rmm, rmv = R.batchnorm_moving_update(mm, mv, mean, var, 0.9, 9)
    assert_scaled_close(layer.moving_mean, rmm, 10 * RTOL[dtype], "moving_mean")
    assert_scaled_close(layer.moving_variance, rmv, 10 * RTOL[dtype], "moving_variance")
    dx = layer.backward(to_backend(dy, backend))
    rdx, rdg, rdb = R.batchnorm_backward(dy, x, gamma, beta, mean, var, 1e-3, True)
    assert_scaled_close(dx, rdx, 10 * RTOL[dtype], "dx")
    expect = ([rdg] if scale else []) + ([rdb] if center else [])
    assert len(layer.grads) == len(expect)
    for g, r in zip(layer.grads, expect):
        assert_scaled_close(g, r, 10 * RTOL[dtype], "grad")


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_inference_leaves_moving_stats(backend, dtype):
    x, dy = _xdy((5, 4), dtype)
    layer = _bn(4, dtype, backend)
    before = layer.get_weights()
    gamma, beta, mm, mv = (w.astype(np.float64) for w in before)
    y = layer.forward(to_backend(x, backend), training=False)
    for a, b in zip(layer.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    assert_scaled_close(y, R.batchnorm_forward(x, gamma, beta, mm, mv, 1e-3), 10 * RTOL[dtype],
                        "y")
    dx = layer.backward(to_backend(dy, backend))
    rdx, rdg, rdb = R.batchnorm_backward(dy, x, gamma, beta, mm, mv, 1e-3, False)
    assert_scaled_close(dx, rdx, 10 * RTOL[dtype], "dx")
    assert_scaled_close(layer.grads[0], rdg, 10 * RTOL[dtype], "dgamma")
    assert_scaled_close(layer.grads[1], rdb, 10 * RTOL[dtype], "dbeta")


def test_batchnorm_not_trainable_runs_in_inference_mode(backend):
    x, _ = _xdy((8, 3), np.float32)
    layer = _bn(3, np.float32, backend)
    expected = to_numpy(layer.forward(to_backend(x, backend), training=False))
    layer.trainable = False
    assert layer.trainable_weights == [] and len(layer.non_trainable_weights) == 4
    before = layer.get_weights()
    y = layer.forward(to_backend(x, backend), training=True)
    np.testing.assert_array_equal(to_numpy(y), expected)
    for a, b in zip(layer.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    layer.trainable = True
    layer.forward(to_backend(x, backend), training=True)
    assert not np.array_equal(layer.get_weights()[2], before[2])


def test_batchnorm_torch_convention():
    torch = pytest.importorskip("torch")
    x, _ = _xdy((10, 4))
    layer = L.BatchNormalization(momentum=0.1, epsilon=1e-5, convention="torch")
    layer.build(4, dtype=np.float64)
    y = layer(x, training=True)
    tbn = torch.nn.BatchNorm1d(4, dtype=torch.float64)
    ty = tbn(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(y, ty, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.moving_mean, tbn.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer.moving_variance, tbn.running_var.numpy(), rtol=1e-12)


@pytest.mark.parametrize("alpha", [False, True], ids=["dropout", "alpha_dropout"])
def test_batchnorm_fused_activation_dropout(backend, alpha):
    """The model's BN -> ELU -> Dropout step (fusednn.models.plan): one op,
    masks keyed by the Dropout layer's seed and step counter."""
    from fusednn.models.plan import DenseBatchNormStep

    x, dy = _xdy((16, 5), np.float64)
    layer = _bn(5, np.float64, backend)
    drop = (L.AlphaDropout if alpha else L.Dropout)(0.3, seed=11)
    step_ = DenseBatchNormStep(None, layer, L.ELU(), drop)
    gamma, beta, mm, mv = layer.get_weights()
    masks = []
    for step in range(2):
        assert drop.step == step
        y = step_.forward(to_backend(x, backend), training=True)
        mean, var = R.batchnorm_statistics(x)
        keep = R.dropout_mask_bits(x.size, 0.3, 11, step).reshape(x.shape)
        masks.append(keep)
        kw = dict(keep=keep, rate=0.3, alpha_dropout=alpha)
        assert_scaled_close(y, R.batchnorm_forward(x, gamma, beta, mean, var, 1e-3, "elu", **kw),
                            1e-12, "y")
        dx = step_.backward(to_backend(dy, backend), need_dx=True)
        rdx, rdg, rdb = R.batchnorm_backward(dy, x, gamma, beta, mean, var, 1e-3, True, "elu",
                                             **kw)
        assert_scaled_close(dx, rdx, 1e-12, "dx")
        assert_scaled_close(layer.grads[0], rdg, 1e-12, "dgamma")
        assert_scaled_close(layer.grads[1], rdb, 1e-12, "dbeta")
    assert not np.array_equal(masks[0], masks[1])
    # Inference: no dropout, the activation stays, the step does not move.
    y = step_.forward(to_backend(x, backend), training=False)
    gamma, beta, mm, mv = layer.get_weights()
    assert_scaled_close(y, R.batchnorm_forward(x, gamma, beta, mm, mv, 1e-3, "elu"), 1e-12, "y")
    assert drop.step == 2
    # The next mask, drawn by the Dropout layer on its own, is the one its
    # seed and counter give (on ones: one value where kept, one where dropped).
    keep = R.dropout_mask_bits(x.size, 0.3, 11, 2).reshape(x.shape).astype(bool)
    alone = np.asarray(to_numpy(drop.forward(to_backend(np.ones_like(x), backend), True)))
    assert np.ptp(alone[keep]) == 0 and np.ptp(alone[~keep]) == 0
    assert alone[keep][0] != alone[~keep][0]


def test_batchnorm_frozen_fused_dropout_still_drops():
    from fusednn.models.plan import DenseBatchNormStep

    x, _ = _xdy((16, 5))
    layer = _bn(5, np.float64, "cpu", trainable=False)
    gamma, beta, mm, mv = layer.get_weights()
    y = DenseBatchNormStep(None, layer, None, L.Dropout(0.5, seed=1)).forward(x, training=True)
    keep = R.dropout_mask_bits(x.size, 0.5, 1, 0).reshape(x.shape)
    np.testing.assert_allclose(
        y, R.batchnorm_forward(x, gamma, beta, mm, mv, 1e-3, keep=keep, rate=0.5), rtol=1e-12)
    np.testing.assert_array_equal(layer.moving_mean, mm)


def test_batchnorm_forward_outside_a_model_is_plain_batch_norm():
    """Fusion is the model's plan: a BN layer of a fused model, called
    directly, is plain batch norm (no activation applied twice), and the
    plan wrote nothing onto it."""
    from fusednn.models.plan import DenseBatchNormStep

    rng = np.random.default_rng(4)
    x = rng.standard_normal((16, 5))
    model = fd.Sequential([fd.layers.Dense(5), fd.layers.BatchNormalization(),
                           fd.layers.ELU(), fd.layers.Dropout(0.3)])
    model.build(5, np, np.float64)
    bn = model.layers[1]
    (step,) = model._steps
    assert isinstance(step, DenseBatchNormStep) and step.layers == tuple(model.layers)
    assert step.dense is model.layers[0] and step.activation.activation.name == "elu"
    y = bn.forward(x, training=False)
    assert_scaled_close(y, R.batchnorm_forward(x, None, None, np.zeros(5), np.ones(5), 1e-3,
                                               "linear"), 1e-12, "y")
    assert bn.get_state() == {} and not any(k.startswith("fused") for k in vars(bn))


# -------------------------------------------------------------------- Dropout


@pytest.mark.parametrize("cls,alpha", [(L.Dropout, False), (L.AlphaDropout, True)],
                         ids=["Dropout", "AlphaDropout"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_layers_match_reference(backend, cls, alpha, dtype):
    x, dy = _xdy((9, 13), dtype)
    layer = cls(0.25, seed=5)
    xb = to_backend(x, backend)
    assert layer.forward(xb, training=False) is xb  # identity in inference
    assert layer.backward(to_backend(dy, backend)) is not None and layer.step == 0
    masks = []
    for step in range(3):
        assert layer.step == step
        y = layer.forward(xb, training=True)
        keep = R.dropout_mask_bits(x.size, 0.25, 5, step).reshape(x.shape)
        masks.append(keep)
        assert_scaled_close(y, R.dropout_forward(x, 0.25, 5, step, alpha), RTOL[dtype], "y")
        dx = layer.backward(to_backend(dy, backend))
        assert_scaled_close(dx, R.dropout_backward(dy, keep, 0.25, alpha), RTOL[dtype], "dx")
        assert layer.grads == []
    assert not np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[1], masks[2])


@pytest.mark.parametrize("cls,alpha", [(L.Dropout, False), (L.AlphaDropout, True)],
                         ids=["Dropout", "AlphaDropout"])
def test_mc_dropout_active_in_inference(backend, cls, alpha):
    x, _ = _xdy((8, 8))
    layer = cls(0.5, seed=2, mc=True)
    y0 = layer.forward(to_backend(x, backend), training=False)
    y1 = layer.forward(to_backend(x, backend), training=False)
    assert_scaled_close(y0, R.dropout_forward(x, 0.5, 2, 0, alpha), 1e-12, "mc step 0")
    assert_scaled_close(y1, R.dropout_forward(x, 0.5, 2, 1, alpha), 1e-12, "mc step 1")
    assert layer.step == 2


def test_dropout_seeds_differ_between_layers():
    a, b = L.Dropout(0.5), L.Dropout(0.5)
    assert isinstance(a.seed, int) and a.seed != b.seed
    x = np.ones((16, 16), np.float32)
    assert not np.array_equal(a(x, training=True), b(x, training=True))
    np.random.seed(123)
    s1 = L.Dropout(0.5).seed
    np.random.seed(123)
    assert L.Dropout(0.5).seed == s1


def test_dropout_rate_zero_and_not_trainable():
    x, dy = _xdy((3, 4))
    layer = L.Dropout(0.0, seed=1)
    assert layer.forward(x, training=True) is x and layer.step == 0
    layer = L.Dropout(0.5, seed=1, trainable=False)  # trainable does not affect dropout
    assert not np.array_equal(layer.forward(x, training=True), x)


# --------------------------------------------------- weights, configs, errors

ALL_LAYERS = [
    lambda: L.Activation("leaky_relu", alpha=0.1, name="act"),
    lambda: L.Activation("gelu", approximate=True),
    lambda: L.LeakyReLU(0.05, trainable=False),
    lambda: L.ELU(0.7),
    lambda: L.PReLU(alpha_initializer=fd.initializers.RandomUniform(seed=1),
                    alpha_regularizer=fd.regularizers.L2(0.01),
                    alpha_constraint=fd.constraints.MaxNorm(3.0)),
    lambda: L.PReLU(),
    lambda: L.RReLU(0.2, 0.3, seed=4),
    lambda: L.RReLU(),
    lambda: L.BatchNormalization(momentum=0.9, epsilon=1e-5, center=False,
                                 gamma_initializer="he_normal", convention="torch"),
    lambda: L.BatchNormalization(),
    lambda: L.Dropout(0.3, seed=9, mc=True),
    lambda: L.AlphaDropout(0.1),
]


@pytest.mark.parametrize("make", ALL_LAYERS, ids=range(len(ALL_LAYERS)))
def test_config_round_trip(make):
    layer = make()
    cfg = layer.get_config()
    text = json.dumps(cfg)
    clone = type(layer).from_config(json.loads(text))
    assert type(clone) is type(layer)
    assert clone.get_config() == cfg
    # Same behaviour once the weights are copied (seeded masks included).
    x, _ = _xdy((4, 3), np.float32)
    layer.build(3)
    clone.build(3)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(layer(x), clone(x))


@pytest.mark.parametrize("make", [lambda: L.PReLU(),
                                  lambda: L.BatchNormalization(),
                                  lambda: L.BatchNormalization(center=False),
                                  lambda: L.BatchNormalization(scale=False, center=False)],
                         ids=["prelu", "bn", "bn-nocenter", "bn-plain"])
def test_get_set_weights_round_trip(make):
    layer = make()
    layer.build(5)
    rng = np.random.default_rng(0)
    new = [rng.uniform(0.1, 1.0, w.shape).astype(w.dtype) for w in layer.get_weights()]
    layer.set_weights(new)
    for a, b in zip(layer.get_weights(), new):
        np.testing.assert_array_equal(a, b)
    clone = make()
    clone.build(5)
    clone.set_weights(layer.get_weights())
    x, _ = _xdy((4, 5), np.float32)
    np.testing.assert_array_equal(layer(x), clone(x))
    with pytest.raises(ValueError, match="set_weights got"):
        layer.set_weights(new[:-1])


BAD = [
    (lambda: L.Activation("nope"), ValueError, "Activation: unknown activation 'nope'"),
    (lambda: L.Activation(3), TypeError, "Activation: activation must be"),
    (lambda: L.Activation("relu", alpha=0.1), ValueError, "Activation: activation 'relu'"),
    (lambda: L.Activation("elu", alpha=-1.0), ValueError, "Activation: elu needs alpha"),
    (lambda: L.LeakyReLU(-0.1), ValueError, "LeakyReLU: negative_slope must be >= 0.0, got -0.1"),
    (lambda: L.LeakyReLU("a"), TypeError, "LeakyReLU: negative_slope must be a float, got 'a'"),
    (lambda: L.ELU(-1), ValueError, "ELU: alpha must be >= 0.0, got -1"),
    (lambda: L.ELU(None), TypeError, "ELU: alpha must be a float, got None"),
    (lambda: L.PReLU(alpha_initializer="nope"), ValueError, "PReLU: alpha_initializer 'nope'"),
    (lambda: L.PReLU(alpha_initializer=None), ValueError, "PReLU: alpha_initializer must not"),
    (lambda: L.PReLU(alpha_regularizer="l3"), ValueError, "PReLU: alpha_regularizer 'l3'"),
    (lambda: L.PReLU(alpha_constraint="unit"), ValueError, "PReLU: alpha_constraint 'unit'"),
    (lambda: L.RReLU(lower=-0.1), ValueError, "RReLU: lower must be >= 0.0, got -0.1"),
    (lambda: L.RReLU(upper=float("nan")), ValueError, "RReLU: upper must be finite, got nan"),
    (lambda: L.RReLU(0.5, 0.2), ValueError, "RReLU: lower must be <= upper, got lower=0.5"),
    (lambda: L.RReLU(seed=-1), ValueError, "RReLU: seed must be an int in"),
    (lambda: L.RReLU(seed=1.5), TypeError, "RReLU: seed must be an int >= 0 or None, got float"),
    (lambda: L.BatchNormalization(momentum=1.5), ValueError,
     "BatchNormalization: momentum must be <= 1.0, got 1.5"),
    (lambda: L.BatchNormalization(epsilon=0), ValueError,
     "BatchNormalization: epsilon must be > 0.0, got 0"),
    (lambda: L.BatchNormalization(center=1), TypeError,
     "BatchNormalization: center must be a bool, got int 1"),
    (lambda: L.BatchNormalization(scale="yes"), TypeError,
     "BatchNormalization: scale must be a bool, got str 'yes'"),
    (lambda: L.BatchNormalization(gamma_initializer="nope"), ValueError,
     "BatchNormalization: gamma_initializer 'nope'"),
    (lambda: L.BatchNormalization(moving_variance_initializer=None), ValueError,
     "BatchNormalization: moving_variance_initializer must not be None"),
    (lambda: L.BatchNormalization(convention="tf"), ValueError,
     "BatchNormalization: convention must be 'keras' or 'torch', got 'tf'"),
    (lambda: L.Dropout(1.0), ValueError, r"Dropout: rate must be in \[0, 1\), got 1.0"),
    (lambda: L.Dropout(-0.1), ValueError, r"Dropout: rate must be in \[0, 1\), got -0.1"),
    (lambda: L.Dropout("0.5"), TypeError, "Dropout: rate must be a real number"),
    (lambda: L.AlphaDropout(1.5), ValueError, r"AlphaDropout: rate must be in \[0, 1\), got 1.5"),
    (lambda: L.Dropout(0.5, seed="s"), TypeError, "Dropout: seed must be an int >= 0 or None"),
    (lambda: L.Dropout(0.5, mc=1), TypeError, "Dropout: mc must be a bool, got int 1"),
    (lambda: L.AlphaDropout(0.5, mc="no"), TypeError, "AlphaDropout: mc must be a bool"),
    (lambda: L.Dropout(0.5, trainable=0), TypeError, "Dropout: trainable must be a bool, got 0"),
    (lambda: L.ELU(name=3), TypeError, "ELU: name must be a str, got 3"),
]


@pytest.mark.parametrize("make,exc,match", BAD, ids=range(len(BAD)))
def test_bad_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_bad_runtime_use():
    with pytest.raises(RuntimeError, match="PReLU .*before forward"):
        L.PReLU().forward(np.zeros((2, 3), np.float32))
    with pytest.raises(RuntimeError, match="BatchNormalization .*before forward"):
        L.BatchNormalization().forward(np.zeros((2, 3), np.float32))
    with pytest.raises(RuntimeError, match="Dropout .*backward called before forward"):
        L.Dropout(0.5).backward(np.zeros((2, 3), np.float32))
    with pytest.raises(RuntimeError, match="ELU .*backward called before forward"):
        L.ELU().backward(np.zeros((2, 3), np.float32))
    bn = L.BatchNormalization()
    bn.build(3)
    with pytest.raises(ValueError, match="BatchNormalization: x has 4 features"):
        bn.forward(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="BatchNormalization: x has 3 dims"):
        bn.forward(np.zeros((2, 3, 1), np.float32))
    with pytest.raises(TypeError, match="BatchNormalization: training must be a bool"):
        bn.forward(np.zeros((2, 3), np.float32), training=None)
    prelu = L.PReLU()
    prelu.build(3)
    with pytest.raises(TypeError, match="PReLU: x has dtype float64"):
        prelu.forward(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="Dropout: training must be a bool"):
        L.Dropout(0.5).forward(np.zeros((2, 3), np.float32), training="yes")
    with pytest.raises(TypeError, match="RReLU: x has dtype int64"):
        L.RReLU().forward(np.zeros((2, 3), np.int64))
