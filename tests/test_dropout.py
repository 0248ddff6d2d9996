import math

import numpy as np
import pytest

import fusednn as fd
from fusednn import _C
from fusednn import _backend
from fusednn.testing import reference as R

from conftest import RTOL, assert_scaled_close, to_backend, to_numpy

# Random123 kat_vectors, philox4x32 10: (counter, key, output).
PHILOX_KAT = [
    ([0x00000000, 0x00000000, 0x00000000, 0x00000000], [0x00000000, 0x00000000],
     [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
    ([0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF], [0xFFFFFFFF, 0xFFFFFFFF],
     [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
    ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
     [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]),
]

# (seed, step) pairs; the large ones exercise the high words of key and counter.
SEED_STEPS = [(0, 0), (2**32 + 5, 7), (3, 2**32 + 9), (2**64 - 1, 2**64 - 1)]
SIZES = [1, 31, 32, 33, 4097, 10**5 + 3]


def unpack(words, n):
    """Keep flags (bool, n) of bit-packed mask words."""
    return np.unpackbits(to_numpy(words).view(np.uint8), bitorder="little")[:n].astype(bool)


def philox_on(backend, counters, key):
    if backend == "cpu":
        return _C.philox4x32_10(np.asarray(counters, np.uint32), np.asarray(key, np.uint32))
    c = to_backend(np.asarray(counters, np.uint32), backend)
    return to_numpy(_backend.backend_for("test", c=c).philox4x32_10(c, key))


# ------------------------------------------------------------------ generator


@pytest.mark.parametrize("ctr,key,out", PHILOX_KAT)
def test_philox_known_answers_kernel(backend, ctr, key, out):
    got = philox_on(backend, [ctr], key)
    assert got.dtype == np.uint32 and got.shape == (1, 4)
    assert got[0].tolist() == out


@pytest.mark.parametrize("ctr,key,out", PHILOX_KAT)
def test_philox_known_answers_reference(ctr, key, out):
    got = R.philox4x32_10(np.array([ctr], np.uint32), key)
    assert got.dtype == np.uint32
    assert got[0].tolist() == out


def test_philox_kernel_matches_reference_on_many_counters(backend):
    rng = np.random.default_rng(0)
    ctr = rng.integers(0, 2**32, size=(1000, 4), dtype=np.uint64).astype(np.uint32)
    key = [0xDEADBEEF, 0x12345678]
    np.testing.assert_array_equal(philox_on(backend, ctr, key), R.philox4x32_10(ctr, key))


# ----------------------------------------------------------------------- mask


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.999])
@pytest.mark.parametrize("seed,step", SEED_STEPS)
def test_mask_matches_reference_bit_for_bit(backend, n, rate, seed, step):
    ref_words = R.dropout_mask_words(n, rate, seed, step)
    ref_bits = R.dropout_mask_bits(n, rate, seed, step)
    np.testing.assert_array_equal(unpack(ref_words, n), ref_bits)  # the two references agree
    x = to_backend(np.ones(n, np.float32), backend)
    like = None if backend == "cpu" else x
    words = fd.ops.dropout_mask(n, rate, seed=seed, step=step, like=like)
    assert words.dtype == np.uint32 and type(words) is type(x)
    np.testing.assert_array_equal(to_numpy(words), ref_words)
    y, ctx = fd.ops.dropout_forward(x, rate, seed=seed, step=step)
    assert type(ctx.mask) is type(x)
    np.testing.assert_array_equal(to_numpy(ctx.mask), ref_words)
    np.testing.assert_array_equal(to_numpy(y) != 0, ref_bits)


def test_mask_words_layout():
    # Element e sits at bit e % 32 of word e // 32 (little-endian bit order).
    n = 100
    words = fd.ops.dropout_mask(n, 0.5, seed=11, step=12)
    bits = R.dropout_mask_bits(n, 0.5, 11, 12)
    for e in range(n):
        assert bool((int(words[e // 32]) >> (e % 32)) & 1) == bits[e]


def test_cpu_cuda_bit_identical():
    if not fd.has_cuda():
        pytest.skip(f"CUDA backend unavailable: {fd.cuda_status()}")
    rng = np.random.default_rng(3)
    for n in [1, 33, 4097, 10**5 + 3]:
        for seed, step in SEED_STEPS:
            for dtype in (np.float32, np.float64):
                x = rng.standard_normal(n).astype(dtype)
                dy = rng.standard_normal(n).astype(dtype)
                xg = to_backend(x, "cuda")
                wc = fd.ops.dropout_mask(n, 0.3, seed=seed, step=step)
                wg = fd.ops.dropout_mask(n, 0.3, seed=seed, step=step, like=xg)
                np.testing.assert_array_equal(to_numpy(wg), wc)
                for alpha in (False, True):
                    for store in (True, False):
                        yc, cc = fd.ops.dropout_forward(x, 0.3, seed=seed, step=step, alpha=alpha,
                                                        store_mask=store)
                        yg, cg = fd.ops.dropout_forward(xg, 0.3, seed=seed, step=step,
                                                        alpha=alpha, store_mask=store)
                        dxc = fd.ops.dropout_backward(dy, cc)
                        dxg = to_numpy(fd.ops.dropout_backward(to_backend(dy, "cuda"), cg))
                        if store:
                            np.testing.assert_array_equal(to_numpy(cg.mask), cc.mask)
                        np.testing.assert_array_equal(dxg, dxc)
                        if alpha:
                            # a * x + b: one rounding where the compiler fuses it into an
                            # FMA (nvcc always, the CPU build where -march has FMA), two
                            # otherwise.
                            np.testing.assert_array_max_ulp(to_numpy(yg), yc, maxulp=1)
                        else:
                            np.testing.assert_array_equal(to_numpy(yg), yc)


def test_misaligned_views_match_cpu(backend):
    # A contiguous view at an odd offset: the CUDA kernels fall back from
    # 4-element vector accesses to single elements.
    rng = np.random.default_rng(4)
    base = rng.standard_normal(1 + 1000).astype(np.float32)
    dy = rng.standard_normal(1000).astype(np.float32)
    x = to_backend(base, backend)[1:]
    y, ctx = fd.ops.dropout_forward(x, 0.4, seed=5, step=6)
    dx = fd.ops.dropout_backward(to_backend(np.concatenate([[0], dy]).astype(np.float32),
                                            backend)[1:], ctx)
    yc, cc = fd.ops.dropout_forward(base[1:].copy(), 0.4, seed=5, step=6)
    np.testing.assert_array_equal(to_numpy(y), yc)
    np.testing.assert_array_equal(to_numpy(dx), fd.ops.dropout_backward(dy, cc))


# ---------------------------------------------------------------- the values


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("alpha", [False, True])
@pytest.mark.parametrize("shape", [(1,), (3, 17), (1000, 41), (2, 3, 5), (4097,)])
@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_matches_reference(backend, dtype, alpha, shape, rate):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    seed, step = 2**40 + 17, 2**35 + 1
    y, ctx = fd.ops.dropout_forward(to_backend(x, backend), rate, seed=seed, step=step,
                                    alpha=alpha)
    assert y.dtype == dtype and y.shape == shape
    assert_scaled_close(y, R.dropout_forward(x, rate, seed, step, alpha), RTOL[dtype], "forward")
    dx = fd.ops.dropout_backward(to_backend(dy, backend), ctx)
    assert dx.dtype == dtype and dx.shape == shape
    keep = R.dropout_mask_bits(x.size, rate, seed, step)
    assert_scaled_close(dx, R.dropout_backward(dy, keep, rate, alpha), RTOL[dtype], "backward")

    # Regenerating the mask in backward gives the very same numbers.
    y2, ctx2 = fd.ops.dropout_forward(to_backend(x, backend), rate, seed=seed, step=step,
                                      alpha=alpha, store_mask=False)
    assert ctx2.mask is None and ctx2.mask_nbytes == 0
    np.testing.assert_array_equal(to_numpy(y2), to_numpy(y))
    np.testing.assert_array_equal(to_numpy(fd.ops.dropout_backward(to_backend(dy, backend), ctx2)),
                                  to_numpy(dx))


def test_alpha_dropout_coefficients():
    # Klambauer et al. 2017: a = ((1 - q)(1 + q alpha'^2))^-1/2, b = -a alpha' q
    # (q = rate), as torch.nn.functional.alpha_dropout; dropped units -> a alpha' + b.
    ap = -1.0507009873554804934193349852946 * 1.6732632423543772848170429916717
    assert R.SELU_ALPHA_PRIME == pytest.approx(ap, rel=1e-15)
    x = np.array([0.0, 1.0, -2.0, 5.0] * 64)
    rate = 0.25
    y, _ = fd.ops.dropout_forward(x, rate, seed=9, step=9, alpha=True)
    a = 1.0 / math.sqrt((1 - rate) * (1 + rate * ap * ap))
    b = -a * ap * rate
    keep = R.dropout_mask_bits(x.size, rate, 9, 9)
    assert keep.any() and not keep.all()
    np.testing.assert_allclose(y[keep], a * x[keep] + b, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(y[~keep], a * ap + b, rtol=1e-14)


def test_noncontiguous_input(backend):
    rng = np.random.default_rng(5)
    full = rng.standard_normal((40, 66))
    x = to_backend(full, backend)[:, ::2]
    y, ctx = fd.ops.dropout_forward(x, 0.3, seed=1, step=2)
    assert_scaled_close(y, R.dropout_forward(full[:, ::2], 0.3, 1, 2), RTOL[np.float64])
    dy = to_backend(full.T.copy(), backend).T[:, ::2]  # Fortran-ordered view
    ref = R.dropout_backward(full[:, ::2], R.dropout_mask_bits(40 * 33, 0.3, 1, 2), 0.3)
    assert_scaled_close(fd.ops.dropout_backward(dy, ctx), ref, RTOL[np.float64])


def test_empty_input(backend):
    x = to_backend(np.zeros((0, 5), np.float32), backend)
    y, ctx = fd.ops.dropout_forward(x, 0.5, seed=0, step=0)
    assert y.shape == (0, 5) and ctx.mask_nbytes == 0
    assert fd.ops.dropout_backward(x, ctx).shape == (0, 5)
    assert fd.ops.dropout_mask(0, 0.5, seed=0, step=0).shape == (0,)


# ---------------------------------------------------------------- statistics


@pytest.mark.parametrize("rate", [0.05, 0.3, 0.5, 0.9])
def test_kept_fraction(backend, rate):
    n = 10**6
    y, ctx = fd.ops.dropout_forward(to_backend(np.ones(n, np.float32), backend), rate,
                                    seed=123, step=rate_step(rate))
    kept = int(np.count_nonzero(to_numpy(y)))
    sd = math.sqrt(n * rate * (1 - rate))
    assert abs(kept - n * (1 - rate)) <= 4 * sd, (kept, n * (1 - rate), sd)
    assert int(unpack(ctx.mask, n).sum()) == kept


def rate_step(rate):
    return int(rate * 1000)  # a different mask per rate, fixed across runs


def test_same_and_different_masks(backend):
    n = 10**4
    x = to_backend(np.ones(n, np.float32), backend)

    def mask(seed, step):
        return to_numpy(fd.ops.dropout_forward(x, 0.5, seed=seed, step=step)[1].mask)

    m = mask(7, 100)
    np.testing.assert_array_equal(mask(7, 100), m)
    for seed, step in [(7, 101), (8, 100), (7 + 2**32, 100), (7, 100 + 2**32)]:
        other = mask(seed, step)
        # Independent masks agree on about half the bits; equal ones on all.
        agree = np.mean(unpack(other, n) == unpack(m, n))
        assert 0.45 < agree < 0.55, (seed, step, agree)


@pytest.mark.parametrize("numel", [1, 31, 32, 64, 100, 4096, 4097])
def test_mask_memory(backend, numel):
    x = to_backend(np.ones(numel, np.float32), backend)
    _, ctx = fd.ops.dropout_forward(x, 0.5, seed=1, step=1)
    assert ctx.mask.dtype == np.uint32 and type(ctx.mask) is type(x)
    assert ctx.mask_nbytes == -(-numel // 32) * 4 == ctx.mask.nbytes
    if numel % 32 == 0:
        assert ctx.mask_nbytes <= numel / 8
    _, ctx = fd.ops.dropout_forward(x, 0.5, seed=1, step=1, store_mask=False)
    assert ctx.mask is None and ctx.mask_nbytes == 0


def alpha_moment_tolerances(rate, n):
    """Standard errors of the sample mean and variance of alpha dropout of n
    standard-normal inputs: y is a*x + b (kept, prob 1 - rate) or d = a alpha' + b,
    mean 0 and variance 1, so SE(mean) = 1/sqrt(n) and SE(var) = sqrt((m4 - 1) / n)
    with m4 = E[y^4] = (1 - rate)(3a^4 + 6a^2 b^2 + b^4) + rate d^4."""
    a, b, d = R.dropout_coef(rate, alpha=True)
    m4 = (1 - rate) * (3 * a**4 + 6 * a**2 * b**2 + b**4) + rate * d**4
    return 1 / math.sqrt(n), math.sqrt((m4 - 1) / n)


@pytest.mark.parametrize("rate", [0.05, 0.1, 0.3])
def test_alpha_dropout_keeps_mean_and_variance(backend, rate):
    n = 10**6
    x = np.random.default_rng(6).standard_normal(n)
    y, _ = fd.ops.dropout_forward(to_backend(x, backend), rate, seed=77, step=rate_step(rate),
                                  alpha=True)
    y = to_numpy(y)
    se_mean, se_var = alpha_moment_tolerances(rate, n)
    assert abs(y.mean()) <= 5 * se_mean, (y.mean(), se_mean)
    assert abs(y.var() - 1.0) <= 5 * se_var, (y.var(), se_var)
    # The check has power: plain inverted dropout changes the variance by far more.
    y_plain, _ = fd.ops.dropout_forward(x, rate, seed=77, step=rate_step(rate))
    assert abs(y_plain.var() - 1.0) > 20 * se_var


# ------------------------------------------------------- identity, NaN, grads


@pytest.mark.parametrize("kwargs", [{"rate": 0.0}, {"rate": 0.5, "training": False},
                                    {"rate": 0.0, "alpha": True}])
def test_identity(backend, kwargs):
    x = to_backend(np.arange(12.0, dtype=np.float32).reshape(3, 4), backend)
    y, ctx = fd.ops.dropout_forward(x, seed=0, step=0, **kwargs)
    assert y is x
    assert ctx.mask is None and ctx.mask_nbytes == 0
    dy = to_backend(np.ones((3, 4), np.float32), backend)
    assert fd.ops.dropout_backward(dy, ctx) is dy
    xt = x.T  # not C-contiguous: still returned as is, no copy
    assert fd.ops.dropout_forward(xt, 0.0, seed=0, step=0)[0] is xt


@pytest.mark.parametrize("alpha", [False, True])
def test_nan_and_inf(backend, alpha):
    n = 256
    rate = 0.5
    x = np.full(n, np.nan, np.float32)
    x[::2] = np.inf
    y, ctx = fd.ops.dropout_forward(to_backend(x, backend), rate, seed=3, step=4, alpha=alpha)
    y = to_numpy(y)
    keep = R.dropout_mask_bits(n, rate, 3, 4)
    assert keep.any() and not keep.all()
    # Kept elements propagate NaN and inf; dropped ones take the dropped value.
    np.testing.assert_array_equal(y[keep], x[keep])
    # one value for every dropped element, that of the transform: the
    # reference takes a = (...)**-0.5 where the kernel takes 1 / sqrt(...),
    # so the two may differ in the last bit
    values = np.unique(y[~keep])
    assert values.size == 1, values
    dropped = np.float32([R.dropout_coef(rate, alpha)[2]])
    np.testing.assert_array_max_ulp(values, dropped, maxulp=1)
    dx = to_numpy(fd.ops.dropout_backward(to_backend(np.full(n, np.nan, np.float32), backend),
                                          ctx))
    assert np.all(np.isnan(dx[keep])) and np.all(dx[~keep] == 0)


@pytest.mark.parametrize("alpha", [False, True])
@pytest.mark.parametrize("store_mask", [True, False])
def test_backward_matches_finite_differences(backend, alpha, store_mask):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((9, 13))
    dy = rng.standard_normal(x.shape)

    def f(v):
        y, _ = fd.ops.dropout_forward(to_backend(v, backend), 0.35, seed=2**33, step=5,
                                      alpha=alpha, store_mask=store_mask)
        return to_numpy(y)

    _, ctx = fd.ops.dropout_forward(to_backend(x, backend), 0.35, seed=2**33, step=5,
                                    alpha=alpha, store_mask=store_mask)
    dx = to_numpy(fd.ops.dropout_backward(to_backend(dy, backend), ctx))
    h = 1e-6
    fd_grad = (f(x + h) - f(x - h)) / (2 * h)  # elementwise: the Jacobian is diagonal
    np.testing.assert_allclose(dx, dy * fd_grad, rtol=1e-7, atol=1e-9)
    assert np.any(dx == 0) and np.any(dx != 0)


def test_tiny_and_large_rates():
    x = np.ones(4096)
    y, _ = fd.ops.dropout_forward(x, 1e-12, seed=0, step=0)  # threshold 0: all kept
    np.testing.assert_array_equal(y, np.full(4096, 1 / (1 - 1e-12)))
    y, _ = fd.ops.dropout_forward(x, np.nextafter(1.0, 0.0), seed=0, step=0)
    assert np.count_nonzero(y) <= 1  # keep probability 2^-32
    assert np.all(np.isfinite(y))


# ------------------------------------------------------------------- errors


@pytest.mark.parametrize("rate,exc", [(-0.1, ValueError), (1.0, ValueError), (1.5, ValueError),
                                      (float("nan"), ValueError), (float("inf"), ValueError),
                                      (True, TypeError), (np.bool_(False), TypeError),
                                      ("0.5", TypeError), (None, TypeError),
                                      (np.array([0.5]), TypeError)])
def test_bad_rate(rate, exc):
    with pytest.raises(exc, match="dropout_forward: rate"):
        fd.ops.dropout_forward(np.ones(4), rate, seed=0, step=0)
    with pytest.raises(exc, match="dropout_mask: rate"):
        fd.ops.dropout_mask(4, rate, seed=0, step=0)


@pytest.mark.parametrize("name", ["seed", "step"])
@pytest.mark.parametrize("value,exc", [(-1, ValueError), (2**64, ValueError),
                                       (np.int64(-3), ValueError), (1.0, TypeError),
                                       ("1", TypeError), (True, TypeError), (None, TypeError)])
def test_bad_seed_or_step(name, value, exc):
    kw = {"seed": 0, "step": 0, name: value}
    with pytest.raises(exc, match=f"dropout_forward: {name}"):
        fd.ops.dropout_forward(np.ones(4), 0.5, **kw)
    with pytest.raises(exc, match=f"dropout_mask: {name}"):
        fd.ops.dropout_mask(4, 0.5, **kw)


def test_numpy_integer_seed_and_step_accepted():
    a = fd.ops.dropout_mask(100, 0.5, seed=np.uint64(2**64 - 1), step=np.int32(3))
    np.testing.assert_array_equal(a, fd.ops.dropout_mask(100, 0.5, seed=2**64 - 1, step=3))


@pytest.mark.parametrize("name", ["alpha", "training", "store_mask"])
def test_bad_flags(name):
    with pytest.raises(TypeError, match=f"dropout_forward: {name}"):
        fd.ops.dropout_forward(np.ones(4), 0.5, seed=0, step=0, **{name: "yes"})


@pytest.mark.parametrize("x", [np.ones(4, np.int32), np.ones(4, np.float16),
                               np.ones(4, np.complex128), np.ones(4, bool)])
def test_bad_x_dtype(x):
    with pytest.raises(TypeError, match="dropout_forward: x has dtype"):
        fd.ops.dropout_forward(x, 0.5, seed=0, step=0)
    with pytest.raises(TypeError, match="dropout_forward: x has dtype"):
        fd.ops.dropout_forward(x, 0.0, seed=0, step=0)  # identity path checks too


def test_x_not_an_array():
    with pytest.raises(TypeError, match="dropout_forward: x must be"):
        fd.ops.dropout_forward([1.0, 2.0], 0.5, seed=0, step=0)


@pytest.mark.parametrize("rate", [0.0, 0.5])
def test_bad_backward_inputs(rate):
    _, ctx = fd.ops.dropout_forward(np.ones((4, 8), np.float32), rate, seed=0, step=0)
    with pytest.raises(TypeError, match="dropout_backward: ctx"):
        fd.ops.dropout_backward(np.ones((4, 8), np.float32), None)
    _, act_ctx = fd.ops.activation_forward(np.ones(3), "relu")
    with pytest.raises(TypeError, match="dropout_backward: ctx"):
        fd.ops.dropout_backward(np.ones(3), act_ctx)
    with pytest.raises(ValueError, match="dropout_backward: dy has shape"):
        fd.ops.dropout_backward(np.ones((8, 4), np.float32), ctx)
    with pytest.raises(ValueError, match="dropout_backward: dy has shape"):
        fd.ops.dropout_backward(np.ones(32, np.float32), ctx)
    with pytest.raises(TypeError, match="dropout_backward: dy has dtype"):
        fd.ops.dropout_backward(np.ones((4, 8), np.float64), ctx)
    with pytest.raises(TypeError, match="dropout_backward: dy has dtype"):
        fd.ops.dropout_backward(np.ones((4, 8), np.int32), ctx)
    with pytest.raises(TypeError, match="dropout_backward: dy must be"):
        fd.ops.dropout_backward([[1.0] * 8] * 4, ctx)


def test_bad_mask_size():
    with pytest.raises(ValueError, match="dropout_mask: n"):
        fd.ops.dropout_mask(-1, 0.5, seed=0, step=0)
    with pytest.raises(TypeError, match="dropout_mask: n"):
        fd.ops.dropout_mask(2.0, 0.5, seed=0, step=0)
    with pytest.raises(TypeError, match="dropout_mask: like"):
        fd.ops.dropout_mask(4, 0.5, seed=0, step=0, like=[1.0])


def test_private_bindings_guard_out_of_bounds():
    # The Python layer never passes these; a direct call must raise, not overrun.
    dy = np.ones(100, np.float32)
    with pytest.raises(ValueError, match="mask"):
        _C.dropout_backward(dy, np.zeros(3, np.uint32), 0.5, False, 0, 0)  # needs 4 words
    with pytest.raises(TypeError, match="mask"):
        _C.dropout_backward(dy, np.zeros(4, np.int32), 0.5, False, 0, 0)
    with pytest.raises(TypeError, match="mask"):
        _C.dropout_backward(dy, [0, 0, 0, 0], 0.5, False, 0, 0)
    with pytest.raises(ValueError, match="mask"):
        _C.dropout_backward(dy, np.zeros(8, np.uint32)[::2], 0.5, False, 0, 0)
    for rate in (1.0, -0.5, float("nan")):
        with pytest.raises(ValueError, match="rate"):
            _C.dropout_forward(dy, rate, False, 0, 0, True)
        with pytest.raises(ValueError, match="rate"):
            _C.dropout_backward(dy, None, rate, False, 0, 0)
        with pytest.raises(ValueError, match="rate"):
            _C.dropout_mask(10, rate, 0, 0)
    with pytest.raises(TypeError, match="x"):
        _C.dropout_forward(np.ones(4, np.int64), 0.5, False, 0, 0, True)
    with pytest.raises(ValueError, match="x"):
        _C.dropout_forward(np.ones((4, 4))[:, ::2], 0.5, False, 0, 0, True)
    with pytest.raises(ValueError, match="n"):
        _C.dropout_mask(-1, 0.5, 0, 0)
    with pytest.raises(ValueError, match="counters"):
        _C.philox4x32_10(np.zeros((2, 3), np.uint32), np.zeros(2, np.uint32))
    with pytest.raises(ValueError, match="key"):
        _C.philox4x32_10(np.zeros((2, 4), np.uint32), np.zeros(3, np.uint32))
    with pytest.raises(TypeError, match="counters"):
        _C.philox4x32_10(np.zeros((2, 4), np.int64), np.zeros(2, np.uint32))


# ------------------------------------------- CUDA calling contract, no GPU


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_entry_points_are_called_correctly(dtype):
    """CUDABackend's dropout methods against the real binding (see
    test_cuda_contract.py): well-formed calls reach the CUDA runtime, which
    fails with RuntimeError where no GPU is usable."""
    from test_cuda_contract import _cuda_module, _FakeArray, _FakeCupy

    mod = _cuda_module()
    be = _backend.CUDABackend(mod, _FakeCupy)
    x = _FakeArray((5, 7), dtype)
    mask = _FakeArray((2,), np.uint32)
    calls = [
        lambda: be.dropout_forward(x, 0.5, False, 2**64 - 1, 2**63, True),
        lambda: be.dropout_forward(x, 0.5, True, 1, 2, False),
        lambda: be.dropout_backward(x, mask, 0.5, True, 1, 2),
        lambda: be.dropout_backward(x, None, 0.5, False, 1, 2),
        lambda: be.dropout_mask(100, 0.5, 1, 2, x),
        lambda: be.philox4x32_10(_FakeArray((3, 4), np.uint32), (2**32 - 1, 0)),
    ]
    for call in calls:
        with pytest.raises(RuntimeError):
            call()


def test_cuda_binding_rejects_bad_arguments():
    """The CUDA module's own guards, the arrays given as device memory."""
    from test_cuda_contract import _cuda_module, _FakeArray, _FakeCupy

    mod = _cuda_module()
    _backend.CUDABackend(mod, _FakeCupy)
    x = _FakeArray((4,), np.float32)
    with pytest.raises(TypeError, match="float16"):
        mod.dropout_forward(_FakeArray((4,), np.float16), 0.5, False, 0, 0, True)
    for rate in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="rate"):
            mod.dropout_forward(x, rate, False, 0, 0, True)
        with pytest.raises(ValueError, match="rate"):
            mod.dropout_backward(x, None, rate, False, 0, 0)
        with pytest.raises(ValueError, match="rate"):
            mod.dropout_mask(4, rate, 0, 0)
    with pytest.raises(ValueError, match="n"):
        mod.dropout_mask(-1, 0.5, 0, 0)
    with pytest.raises(ValueError, match="mask"):
        mod.dropout_backward(_FakeArray((100,), np.float32), _FakeArray((3,), np.uint32), 0.5,
                             False, 0, 0)
    with pytest.raises(TypeError, match="mask"):
        mod.dropout_backward(x, np.zeros(1, np.uint32), 0.5, False, 0, 0)  # host memory
    with pytest.raises(ValueError, match="counters"):
        mod.philox4x32_10(_FakeArray((2, 3), np.uint32), (0, 0))


@pytest.mark.parametrize("alpha", [False, True])
def test_formula_matches_torch(alpha):
    # torch draws its own mask; read it back from its output and check that the
    # kept and dropped values follow the same formula as ours.
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    rate = 0.3
    x = np.random.default_rng(8).standard_normal(4000) + 5.0  # no kept value near the dropped
    t = torch.from_numpy(x)
    yt = (torch.nn.functional.alpha_dropout(t, rate, training=True) if alpha
          else torch.nn.functional.dropout(t, rate, training=True)).numpy()
    mul, add, dropped = R.dropout_coef(rate, alpha)
    kept_t = np.abs(yt - dropped) > 1e-9
    assert 0.6 < kept_t.mean() < 0.8
    np.testing.assert_allclose(yt[kept_t], x[kept_t] * mul + add, rtol=1e-12)
    np.testing.assert_allclose(yt[~kept_t], dropped, atol=1e-12)
    y, _ = fd.ops.dropout_forward(x, rate, seed=1, step=2, alpha=alpha)
    keep = R.dropout_mask_bits(x.size, rate, 1, 2)
    np.testing.assert_allclose(y[keep], x[keep] * mul + add, rtol=1e-14)
    np.testing.assert_allclose(y[~keep], dropped, rtol=1e-14, atol=0)
