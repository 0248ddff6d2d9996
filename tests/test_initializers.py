import json
import math

import numpy as np
import pytest

import fusednn as fd
from fusednn import initializers as I

from conftest import to_backend, to_numpy

# Rectangular, so fan_in (2000), fan_out (1000) and fan_avg (1500) differ.
SHAPE = (2000, 1000)
N = SHAPE[0] * SHAPE[1]
FANS = {"fan_in": 2000.0, "fan_out": 1000.0, "fan_avg": 1500.0}
K = 6.0  # tolerances are K standard errors of the statistic


def _pdf(x):
    return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _cdf(x):
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


# Standard deviation of a unit normal truncated to [-2, 2], from its formula.
TRUNC_STD = math.sqrt(1.0 - 4.0 * _pdf(2.0) / (_cdf(2.0) - _cdf(-2.0)))
# P(|z| > 1) for that truncated normal and for the untruncated one.
TRUNC_TAIL1 = 2 * (_cdf(2.0) - _cdf(1.0)) / (_cdf(2.0) - _cdf(-2.0))
NORMAL_TAIL1 = 2 * (1 - _cdf(1.0))
NORMAL_TAIL2 = 2 * (1 - _cdf(2.0))


def _frac_close(frac, p, n, what):
    se = math.sqrt(p * (1 - p) / n)
    assert abs(frac - p) <= K * se, f"{what}: {frac:.5f} vs {p:.5f} (se {se:.1e})"


def check_sample(w, dist, mean, var, bound=None):
    """Mean, variance, bounds and shape of w against the distribution.

    dist: "uniform" (bound = half width), "truncated" (bound = 2 * the
    pre-truncation stddev) or "normal" (no bound). var is the samples'
    variance. Standard errors use the normal's kurtosis, which bounds those of
    the uniform and the truncated normal.
    """
    x = to_numpy(w).astype(np.float64).ravel()
    n = x.size
    m, v = float(x.mean()), float(x.var())
    assert abs(m - mean) <= K * math.sqrt(var / n), f"mean {m} vs {mean}"
    assert abs(v - var) <= K * var * math.sqrt(2.0 / n), f"var {v} vs {var}"
    d = np.abs(x - mean)
    if dist == "uniform":
        # Bounds inclusive: float32 rounding may reach them. The extremes are
        # within a few (bound / n) of them.
        assert d.max() <= bound * (1 + 1e-6)
        assert x.max() >= mean + bound * (1 - 30.0 / n)
        assert x.min() <= mean - bound * (1 - 30.0 / n)
        _frac_close(float((d < bound / 2).mean()), 0.5, n, "P(|x| < bound/2)")
    elif dist == "truncated":
        sd = bound / 2
        assert d.max() <= bound * (1 + 1e-6), f"max |x - mean| {d.max()} > 2 stddev {bound}"
        assert d.max() >= bound * (1 - 1e-3)
        _frac_close(float((d > sd).mean()), TRUNC_TAIL1, n, "P(|z| > 1)")
    else:
        sd = math.sqrt(var)
        _frac_close(float((d > sd).mean()), NORMAL_TAIL1, n, "P(|z| > 1)")
        _frac_close(float((d > 2 * sd).mean()), NORMAL_TAIL2, n, "P(|z| > 2)")


def test_truncation_constant_matches_its_formula():
    assert TRUNC_STD == pytest.approx(0.87962566103423978, rel=1e-14)
    assert I._TRUNC_STD == pytest.approx(TRUNC_STD, rel=1e-14)


# ------------------------------------------------------------------ variance scaling

# (initializer, scale, mode, distribution) as stated by Keras 3.
NAMED = [
    (I.GlorotUniform, 1.0, "fan_avg", "uniform"),
    (I.GlorotNormal, 1.0, "fan_avg", "truncated_normal"),
    (I.HeUniform, 2.0, "fan_in", "uniform"),
    (I.HeNormal, 2.0, "fan_in", "truncated_normal"),
    (I.LecunUniform, 1.0, "fan_in", "uniform"),
    (I.LecunNormal, 1.0, "fan_in", "truncated_normal"),
]


def expect_variance_scaling(scale, mode, distribution, fan):
    """(dist, var, bound) from Keras' formulas."""
    var = scale / fan
    if distribution == "uniform":
        return "uniform", var, math.sqrt(3.0 * var)
    if distribution == "truncated_normal":
        return "truncated", var, 2.0 * math.sqrt(var) / 0.87962566103423978
    return "normal", var, None


@pytest.mark.parametrize("cls,scale,mode,distribution", NAMED,
                         ids=[c[0].__name__ for c in NAMED])
def test_named_variance_scaling_statistics(cls, scale, mode, distribution):
    init = cls(seed=1)
    assert isinstance(init, I.VarianceScaling)
    assert (init.scale, init.mode, init.distribution) == (scale, mode, distribution)
    w = init(SHAPE)
    assert w.shape == SHAPE and w.dtype == np.float32 and isinstance(w, np.ndarray)
    dist, var, bound = expect_variance_scaling(scale, mode, distribution, FANS[mode])
    check_sample(w, dist, 0.0, var, bound)


@pytest.mark.parametrize("distribution", ["truncated_normal", "untruncated_normal", "uniform"])
@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg"])
def test_variance_scaling_statistics(mode, distribution):
    scale = 1.7
    w = I.VarianceScaling(scale, mode, distribution, seed=2)(SHAPE)
    dist, var, bound = expect_variance_scaling(scale, mode, distribution, FANS[mode])
    check_sample(w, dist, 0.0, var, bound)


def test_variance_scaling_defaults_and_normal_alias():
    init = I.VarianceScaling()
    assert init.get_config() == {"scale": 1.0, "mode": "fan_in",
                                 "distribution": "truncated_normal", "seed": None}
    alias = I.VarianceScaling(distribution="Normal", seed=3)
    assert alias.distribution == "truncated_normal"
    np.testing.assert_array_equal(alias(SHAPE),
                                  I.VarianceScaling(distribution="truncated_normal", seed=3)(SHAPE))


@pytest.mark.parametrize("shape,fans", [
    ((), (1, 1)),
    ((7,), (7, 7)),
    ((3, 5), (3, 5)),
    ((3, 64, 32), (3 * 64, 3 * 32)),
    ((3, 3, 64, 32), (9 * 64, 9 * 32)),
    ((0, 4), (0, 4)),
    ([6, 2], (6, 2)),
])
def test_compute_fans(shape, fans):
    assert I.compute_fans(shape) == fans


def test_fan_by_mode_counts_zero_as_one():
    assert [I.VarianceScaling(mode=m).fan(SHAPE) for m in FANS] == list(FANS.values())
    assert I.VarianceScaling(mode="fan_in").fan((0, 4)) == 1.0
    assert I.VarianceScaling(mode="fan_avg").fan(()) == 1.0


@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg"])
def test_conv_kernel_uses_receptive_field(mode):
    shape = (3, 3, 64, 32)
    fan = {"fan_in": 576.0, "fan_out": 288.0, "fan_avg": 432.0}[mode]
    w = I.VarianceScaling(2.0, mode, "uniform", seed=4)(shape)
    limit = math.sqrt(6.0 / fan)
    assert np.abs(w).max() <= limit * (1 + 1e-6)
    assert np.abs(w).max() >= limit * 0.995


def test_scalar_and_empty_shapes():
    for init in (I.HeNormal(seed=0), I.GlorotUniform(), I.Zeros(), I.RandomNormal()):
        assert init(()).shape == ()
        assert init((0, 5)).shape == (0, 5)
        assert init((4, 0, 3)).dtype == np.float32


# ------------------------------------------------------------------ fixed distributions


@pytest.mark.parametrize("init,expect", [
    (I.RandomNormal(seed=5), ("normal", 0.0, 0.05**2, None)),
    (I.RandomNormal(mean=0.3, stddev=0.2, seed=5), ("normal", 0.3, 0.04, None)),
    (I.TruncatedNormal(seed=6), ("truncated", 0.0, (0.05 * TRUNC_STD) ** 2, 0.1)),
    (I.TruncatedNormal(mean=-0.1, stddev=0.5, seed=6),
     ("truncated", -0.1, (0.5 * TRUNC_STD) ** 2, 1.0)),
    (I.RandomUniform(seed=7), ("uniform", 0.0, 0.1**2 / 12, 0.05)),
    (I.RandomUniform(minval=-0.2, maxval=0.7, seed=7), ("uniform", 0.25, 0.9**2 / 12, 0.45)),
], ids=["normal", "normal-args", "truncated", "truncated-args", "uniform", "uniform-args"])
def test_random_statistics(init, expect):
    check_sample(init(SHAPE), *expect)


def test_keras_defaults():
    assert I.RandomNormal().get_config() == {"mean": 0.0, "stddev": 0.05, "seed": None}
    assert I.TruncatedNormal().get_config() == {"mean": 0.0, "stddev": 0.05, "seed": None}
    assert I.RandomUniform().get_config() == {"minval": -0.05, "maxval": 0.05, "seed": None}
    assert I.Constant().get_config() == {"value": 0.0}


def test_degenerate_random():
    np.testing.assert_array_equal(I.RandomNormal(mean=2.0, stddev=0.0)((3, 4)), 2.0)
    np.testing.assert_array_equal(I.TruncatedNormal(mean=-1.0, stddev=0.0)((3, 4)), -1.0)
    np.testing.assert_array_equal(I.RandomUniform(minval=0.5, maxval=0.5)((3, 4)), 0.5)


@pytest.mark.parametrize("init,value", [(I.Zeros(), 0.0), (I.Ones(), 1.0),
                                        (I.Constant(2.5), 2.5), (I.Constant(-3), -3.0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_constants(init, value, dtype):
    w = init((17, 3), dtype)
    assert w.dtype == dtype and w.shape == (17, 3)
    np.testing.assert_array_equal(w, value)


# ------------------------------------------------------------------ seeds and dtypes

RANDOM = [I.VarianceScaling, I.GlorotUniform, I.GlorotNormal, I.HeUniform, I.HeNormal,
          I.LecunUniform, I.LecunNormal, I.RandomNormal, I.RandomUniform, I.TruncatedNormal]
RIDS = [c.__name__ for c in RANDOM]


@pytest.mark.parametrize("cls", RANDOM, ids=RIDS)
def test_seed_reproducible_and_distinct(cls):
    shape = (300, 200)
    a = cls(seed=11)(shape)
    np.testing.assert_array_equal(a, cls(seed=11)(shape))  # another instance
    init = cls(seed=11)
    np.testing.assert_array_equal(init(shape), init(shape))  # the same instance twice
    assert not np.array_equal(a, cls(seed=12)(shape))
    fresh = cls()
    assert not np.array_equal(fresh(shape), fresh(shape))


def test_seed_gives_fixed_values():
    # The stream is NumPy's PCG64: the same on every machine.
    expect = np.random.Generator(np.random.PCG64(42)).uniform(-0.05, 0.05, (2, 3))
    np.testing.assert_array_equal(I.RandomUniform(seed=42)((2, 3), "float64"), expect)
    assert I.RandomUniform(seed=2**70)((2,)).shape == (2,)


@pytest.mark.parametrize("cls", RANDOM, ids=RIDS)
def test_float64_and_float32_agree_up_to_rounding(cls):
    w64 = cls(seed=3)((50, 40), "float64")
    w32 = cls(seed=3)((50, 40), np.float32)
    assert w64.dtype == np.float64 and w32.dtype == np.float32
    np.testing.assert_array_equal(w32, w64.astype(np.float32))
    assert cls(seed=3)((50, 40), np.dtype("float64")).dtype == np.float64
    assert cls(seed=3)((50, 40), None).dtype == np.float32


def test_float64_statistics():
    w = I.HeNormal(seed=8)(SHAPE, "float64")
    assert w.dtype == np.float64
    dist, var, bound = expect_variance_scaling(2.0, "fan_in", "truncated_normal", 2000.0)
    check_sample(w, dist, 0.0, var, bound)


# ------------------------------------------------------------------ get / config

ALL = [I.VarianceScaling, I.GlorotUniform, I.GlorotNormal, I.HeUniform, I.HeNormal,
       I.LecunUniform, I.LecunNormal, I.Zeros, I.Ones, I.Constant, I.RandomNormal,
       I.RandomUniform, I.TruncatedNormal]
SNAKE = {"variance_scaling": I.VarianceScaling, "glorot_uniform": I.GlorotUniform,
         "glorot_normal": I.GlorotNormal, "he_uniform": I.HeUniform, "he_normal": I.HeNormal,
         "lecun_uniform": I.LecunUniform, "lecun_normal": I.LecunNormal, "zeros": I.Zeros,
         "ones": I.Ones, "constant": I.Constant, "random_normal": I.RandomNormal,
         "random_uniform": I.RandomUniform, "truncated_normal": I.TruncatedNormal}
ALIASES = {"normal": I.RandomNormal, "uniform": I.RandomUniform, "one": I.Ones, "zero": I.Zeros}


def test_names():
    assert sorted(I.names()) == sorted(SNAKE)


@pytest.mark.parametrize("name,cls", list(SNAKE.items()) + list(ALIASES.items())
                         + [(c.__name__, c) for c in ALL])
def test_get_by_name(name, cls):
    init = fd.initializers.get(name)
    assert type(init) is cls
    assert init.get_config() == cls().get_config()


def test_get_passes_through():
    init = I.HeNormal(seed=1)
    assert I.get(init) is init
    assert I.get(None) is None

    def custom(shape, dtype="float32"):
        return np.full(shape, 7.0, dtype)

    assert I.get(custom) is custom
    assert type(I.get(I.LecunNormal)) is I.LecunNormal


# Non-default arguments for every class.
CONFIGS = {
    I.VarianceScaling: {"scale": 0.5, "mode": "fan_avg", "distribution": "uniform", "seed": 3},
    I.Constant: {"value": -1.5},
    I.RandomNormal: {"mean": 0.1, "stddev": 0.3, "seed": 4},
    I.RandomUniform: {"minval": -1.0, "maxval": 2.0, "seed": 5},
    I.TruncatedNormal: {"mean": -0.2, "stddev": 0.7, "seed": 6},
}


@pytest.mark.parametrize("cls", ALL, ids=[c.__name__ for c in ALL])
def test_config_round_trip(cls):
    cfg = CONFIGS.get(cls, {} if cls in (I.Zeros, I.Ones) else {"seed": 9})
    init = cls(**cfg)
    assert init.get_config() == cfg
    json.dumps(init.get_config())
    for back in (cls.from_config(init.get_config()),
                 I.get({"class_name": cls.__name__, "config": init.get_config()}),
                 I.get(I.serialize(init)), I.deserialize(I.serialize(init))):
        assert type(back) is cls and back.get_config() == cfg
        np.testing.assert_array_equal(back((20, 30)), init((20, 30)))
    assert repr(init).startswith(cls.__name__ + "(")


def test_get_dict_forms():
    init = I.get({"class_name": "he_uniform", "config": {"seed": 1}})
    assert type(init) is I.HeUniform and init.seed == 1
    assert type(I.get({"class_name": "Zeros"})) is I.Zeros
    # Keras 3's serialized form carries module and registered_name.
    keras = {"module": "keras.initializers", "class_name": "GlorotNormal",
             "config": {"seed": None}, "registered_name": None}
    assert type(I.get(keras)) is I.GlorotNormal


def test_get_unknown_name_lists_names():
    with pytest.raises(ValueError, match=r"'he_norm'.*glorot_uniform.*he_normal"):
        I.get("he_norm")


@pytest.mark.parametrize("ident,err,match", [
    (3, TypeError, r"initializers.get: .* got int 3"),
    (1.5, TypeError, "got float"),
    (["he_normal"], TypeError, "got list"),
    (int, TypeError, "got type"),
    ({"config": {}}, ValueError, "class_name"),
    ({"class_name": 3}, ValueError, "class_name"),
    ({"class_name": "HeNormal", "extra": 1}, ValueError, "extra"),
    ({"class_name": "nope", "config": {}}, ValueError, "unknown initializer 'nope'"),
    ({"class_name": "HeNormal", "config": {"scale": 2.0}}, ValueError,
     r"HeNormal.from_config: unknown keys \['scale'\]; expected seed"),
    ({"class_name": "HeNormal", "config": [1]}, TypeError, "config must be a dict"),
    ({"class_name": "HeNormal", "config": {"seed": -1}}, ValueError, "seed"),
])
def test_get_bad_identifier(ident, err, match):
    with pytest.raises(err, match=match):
        I.get(ident)


def test_serialize_needs_an_initializer():
    with pytest.raises(TypeError, match="serialize: expected an Initializer"):
        I.serialize("he_normal")
    with pytest.raises(TypeError, match="deserialize: expected a dict"):
        I.deserialize("he_normal")


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("make,err,match", [
    (lambda: I.VarianceScaling(scale=0.0), ValueError, r"VarianceScaling: scale must be > 0"),
    (lambda: I.VarianceScaling(scale=-1), ValueError, r"scale must be > 0.0, got -1.0"),
    (lambda: I.VarianceScaling(scale=float("inf")), ValueError, "scale must be finite"),
    (lambda: I.VarianceScaling(scale="2"), TypeError, "scale must be a float, got '2'"),
    (lambda: I.VarianceScaling(mode="fan_sum"), ValueError,
     r"mode must be one of fan_in, fan_out, fan_avg, got 'fan_sum'"),
    (lambda: I.VarianceScaling(mode=None), TypeError, "mode must be one of"),
    (lambda: I.VarianceScaling(distribution="gamma"), ValueError,
     r"distribution must be one of truncated_normal, untruncated_normal, uniform, got 'gamma'"),
    (lambda: I.VarianceScaling(distribution=1), TypeError, "distribution must be one of"),
    (lambda: I.HeNormal(seed=-1), ValueError, r"HeNormal: seed must be an int >= 0 or None, "
                                              r"got -1"),
    (lambda: I.HeNormal(seed=1.0), TypeError, "seed must be an int >= 0 or None, got float"),
    (lambda: I.HeNormal(seed=True), TypeError, "seed must be an int"),
    (lambda: I.HeNormal(seed="0"), TypeError, "seed must be an int"),
    (lambda: I.RandomNormal(stddev=-0.1), ValueError, r"RandomNormal: stddev must be >= 0"),
    (lambda: I.RandomNormal(mean=float("nan")), ValueError, "mean must be finite"),
    (lambda: I.TruncatedNormal(stddev=-1), ValueError, r"TruncatedNormal: stddev must be >= 0"),
    (lambda: I.TruncatedNormal(stddev=None), TypeError, "stddev must be a float"),
    (lambda: I.RandomUniform(minval=1.0, maxval=0.0), ValueError,
     r"RandomUniform: minval must be <= maxval, got minval=1.0, maxval=0.0"),
    (lambda: I.RandomUniform(maxval="1"), TypeError, "maxval must be a float"),
    (lambda: I.Constant(value=[1, 2]), TypeError, r"Constant: value must be a float"),
    (lambda: I.Constant(value=float("inf")), ValueError, "value must be finite"),
])
def test_bad_arguments(make, err, match):
    with pytest.raises(err, match=match):
        make()


@pytest.mark.parametrize("shape,err,match", [
    (5, TypeError, r"HeNormal: shape must be a tuple of non-negative ints, got int 5"),
    ("ab", TypeError, "shape must be a tuple"),
    (np.array([2, 3]), TypeError, "got ndarray"),
    ((2, -3), ValueError, r"got \(2, -3\) \(negative dimension -3\)"),
    ((2, 3.0), TypeError, r"element 3.0 is float"),
    ((True, 3), TypeError, "element True is bool"),
    ((2, None), TypeError, "element None"),
])
def test_bad_shape(shape, err, match):
    with pytest.raises(err, match=match):
        I.HeNormal()(shape)


def test_shape_accepts_numpy_ints_and_lists():
    assert I.Zeros()((np.int64(3), np.int32(2))).shape == (3, 2)
    assert I.GlorotUniform()([4, 5]).shape == (4, 5)


@pytest.mark.parametrize("cls", ALL, ids=[c.__name__ for c in ALL])
@pytest.mark.parametrize("dtype", ["int32", np.float16, "bool", "complex64", "nonsense"])
def test_bad_dtype(cls, dtype):
    with pytest.raises(TypeError, match=rf"{cls.__name__}: dtype must be float32 or float64"):
        cls()((2, 2), dtype)


def test_bad_like():
    with pytest.raises(TypeError, match="Zeros: like must be a NumPy or CuPy array or None, "
                                        "got list"):
        I.Zeros()((2, 2), like=[1.0])


# ------------------------------------------------------------------ devices


@pytest.mark.parametrize("cls", ALL, ids=[c.__name__ for c in ALL])
def test_like_places_the_result(backend, cls):
    like = to_backend(np.zeros(1, np.float32), backend)
    init = cls(**CONFIGS.get(cls, {} if cls in (I.Zeros, I.Ones) else {"seed": 9}))
    w = init((30, 20), "float64", like=like)
    assert type(w) is type(like) and w.dtype == np.float64 and w.shape == (30, 20)
    if backend == "cuda":
        assert w.device == like.device
    np.testing.assert_array_equal(to_numpy(w), init((30, 20), "float64"))


# ------------------------------------------------------------------ PyTorch


def test_matches_torch_equivalents():
    """The docstrings' PyTorch equivalents: same bound or standard deviation.

    A torch Linear weight is (out, in); ours (in, out)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    n_in, n_out = 500, 300

    def t(fn, **kw):
        w = torch.empty(n_out, n_in, dtype=torch.float64)
        fn(w, **kw)
        return w.numpy()

    def ours(init):
        return init((n_in, n_out), "float64")

    # Uniform: same limit (max |w| within 0.5% of it for both).
    pairs = [
        (t(torch.nn.init.xavier_uniform_), ours(I.GlorotUniform(seed=0))),
        (t(torch.nn.init.kaiming_uniform_, nonlinearity="relu"), ours(I.HeUniform(seed=0))),
        (t(torch.nn.init.kaiming_uniform_, nonlinearity="linear"), ours(I.LecunUniform(seed=0))),
        (torch.nn.Linear(n_in, n_out).weight.detach().double().numpy(),
         ours(I.VarianceScaling(1 / 3, "fan_in", "uniform", seed=0))),
    ]
    for a, b in pairs:
        assert np.abs(a).max() == pytest.approx(np.abs(b).max(), rel=5e-3)
    # Normal: same standard deviation; torch's is untruncated, ours truncated.
    n = n_in * n_out
    tol = K * math.sqrt(2.0 / n)
    for a, b, var in [
            (t(torch.nn.init.kaiming_normal_, nonlinearity="relu"), ours(I.HeNormal(seed=0)),
             2.0 / n_in),
            (t(torch.nn.init.xavier_normal_), ours(I.GlorotNormal(seed=0)), 2.0 / (n_in + n_out)),
    ]:
        assert a.var() == pytest.approx(var, rel=tol) and b.var() == pytest.approx(var, rel=tol)
        assert np.abs(a).max() > 2.5 * math.sqrt(var)  # torch: untruncated
        assert np.abs(b).max() <= 2 * math.sqrt(var) / TRUNC_STD  # ours: truncated
    untrunc = ours(I.VarianceScaling(2.0, "fan_in", "untruncated_normal", seed=0))
    assert np.abs(untrunc).max() > 2.5 * untrunc.std()
