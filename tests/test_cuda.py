"""Behaviour of the CUDA backend that the CPU has no counterpart for: GEMMs on
several streams at once, cuBLASLt's epilogues (which ran, NaN, GELU),
run-to-run determinism, CPU/GPU agreement of the optimizer step, devices.
Every test here needs a usable GPU and skips cleanly without one."""

import threading

import numpy as np
import pytest

import fusednn as fd
from fusednn.testing import reference as R

from conftest import GELU_EPILOGUE_RTOL, assert_scaled_close, to_numpy

F32 = np.float32

pytestmark = pytest.mark.skipif(not fd.has_cuda(),
                                reason=f"CUDA backend unavailable: {fd.cuda_status()}")


@pytest.fixture
def cp():
    import cupy

    return cupy


def _ran(before, name):
    """How often epilogue `name` ran since the counts `before`."""
    return fd.cuda_epilogue_counts()[name]["used"] - before[name]["used"]


@pytest.fixture
def epilogues_off():
    fd.set_cuda_epilogues(False)
    yield
    fd.set_cuda_epilogues(True)


def test_gemms_on_two_streams_do_not_share_a_workspace(cp):
    """Long inner dimensions make cuBLASLt split K and use its workspace for
    partial products; two threads on two streams, each checking every result
    against the one computed alone, would see each other's partials if the
    workspace were shared."""
    rng = np.random.default_rng(0)
    m, k, n = 64, 1 << 18, 64
    xs = [rng.standard_normal((m, k), dtype=F32) for _ in range(2)]
    w = (rng.standard_normal((k, n), dtype=F32) / np.sqrt(k)).astype(F32)
    refs = [R.dense_forward(x, w, None, "linear")[0] for x in xs]
    dw = cp.asarray(w)
    errors = []

    def worker(i):
        stream = cp.cuda.Stream(non_blocking=True)
        dx = cp.asarray(xs[i])
        with stream:
            outs = [fd.ops.dense_forward(dx, dw, None, "linear")[0] for _ in range(30)]
            stream.synchronize()
        for y in outs:
            err = float(np.abs(y.get() - refs[i]).max() / np.abs(refs[i]).max())
            if err > 1e-4:
                errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, f"{len(errors)} wrong results, worst scaled error {max(errors):.2e}"


def test_relu_nan_with_and_without_the_epilogue(cp, epilogues_off):
    """The CPU keeps a NaN pre-activation through relu. With the activation
    epilogues off, the GPU does too; with them on, a row whose GEMM ran
    through cuBLASLt's relu epilogue gives 0 there (max(z, 0)), as
    fd.set_cuda_epilogues documents, and the rest agrees with the CPU."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 32)).astype(F32)
    x[5, 3] = np.nan
    w = rng.standard_normal((32, 48)).astype(F32)
    b = rng.standard_normal(48).astype(F32)
    y_cpu, _ = fd.ops.dense_forward(x, w, b, "relu")
    assert np.isnan(y_cpu[5]).all() and not np.isnan(np.delete(y_cpu, 5, 0)).any()

    own, _ = fd.ops.dense_forward(cp.asarray(x), cp.asarray(w), cp.asarray(b), "relu")
    own = to_numpy(own)
    np.testing.assert_array_equal(np.isnan(own), np.isnan(y_cpu))
    assert_scaled_close(np.delete(own, 5, 0), np.delete(y_cpu, 5, 0), 1e-5, "relu, own kernel")

    fd.set_cuda_epilogues(True)
    before = fd.cuda_epilogue_counts()
    fused, _ = fd.ops.dense_forward(cp.asarray(x), cp.asarray(w), cp.asarray(b), "relu")
    fused = to_numpy(fused)
    assert_scaled_close(np.delete(fused, 5, 0), np.delete(y_cpu, 5, 0), 1e-5, "relu, epilogue")
    if _ran(before, "RELU_AUX_BIAS") + _ran(before, "RELU_BIAS"):
        np.testing.assert_array_equal(fused[5], 0.0)
    else:  # cuBLASLt refused the epilogue: the fallback is the CPU's relu
        np.testing.assert_array_equal(np.isnan(fused), np.isnan(y_cpu))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_epilogue_tolerance_and_own_kernel(cp, dtype, epilogues_off):
    """The tanh GELU through cuBLASLt's epilogue within its documented
    tolerance; with the epilogues off, within float rounding, as on the CPU."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((256, 128)).astype(dtype)
    w = (rng.standard_normal((128, 64)) / np.sqrt(128)).astype(dtype)
    b = rng.standard_normal(64).astype(dtype)
    dy = rng.standard_normal((256, 64)).astype(dtype)
    ref_y = R.dense_forward(x, w, b, "gelu", approximate=True)[0]
    ref = R.dense_backward(dy, x, w, b, "gelu", approximate=True)
    strict = 1e-5 if dtype == np.float32 else 1e-12
    for epilogues in (False, True):
        fd.set_cuda_epilogues(epilogues)
        before = fd.cuda_epilogue_counts()
        y, ctx = fd.ops.dense_forward(cp.asarray(x), cp.asarray(w), cp.asarray(b), "gelu",
                                      approximate=True)
        grads = fd.ops.dense_backward(cp.asarray(dy), ctx)
        used = _ran(before, "GELU_AUX_BIAS")
        if not epilogues:
            assert used == 0
        rtol = GELU_EPILOGUE_RTOL if used else strict
        assert_scaled_close(y, ref_y, rtol, f"y (epilogues {epilogues})")
        for g, r, name in zip(grads, ref, ("dx", "dw", "db")):
            assert_scaled_close(g, r, rtol, f"{name} (epilogues {epilogues})")


def test_epilogue_counts_show_the_fused_forward(cp):
    """A relu layer's forward runs RELU_AUX_BIAS or counts a refusal of it."""
    x = cp.ones((32, 64), dtype=F32)
    w = cp.ones((64, 128), dtype=F32)
    b = cp.zeros(128, dtype=F32)
    before = fd.cuda_epilogue_counts()
    fd.ops.dense_forward(x, w, b, "relu")
    after = fd.cuda_epilogue_counts()
    moved = {k: (after[k]["used"] - before[k]["used"], after[k]["refused"] - before[k]["refused"])
             for k in after}
    assert moved["RELU_AUX_BIAS"] != (0, 0), moved


@pytest.mark.parametrize("m,n", [(100_000, 10), (37, 3), (4097, 1000)])
def test_bias_gradient_column_sums(cp, m, n):
    """The bias gradient below an ELU layer in a stack is summed by fusednn's
    own column kernel (cuBLASLt has no ELU epilogue to fuse it into): against
    the float64 CPU result, and the same bits in two runs (fixed-order
    partials, no atomics)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((m, 8))
    ws = [rng.standard_normal((8, n)) / np.sqrt(8), rng.standard_normal((n, 4)) / np.sqrt(n)]
    bs = [rng.standard_normal(n), rng.standard_normal(4)]
    dy = rng.standard_normal((m, 4))

    def stack(xp, dtype):
        h, ctxs = xp.asarray(x, dtype=dtype), []
        for w, b, act in zip(ws, bs, ("elu", "linear")):
            h, c = fd.ops.dense_forward(h, xp.asarray(w, dtype=dtype), xp.asarray(b, dtype=dtype),
                                        act)
            ctxs.append(c)
        return fd.ops.dense_stack_backward(xp.asarray(dy, dtype=dtype), ctxs)[1][0][1]

    ref = stack(np, np.float64)
    db1, db2 = stack(cp, F32), stack(cp, F32)
    assert_scaled_close(db1, ref, 1e-5, "db")
    np.testing.assert_array_equal(to_numpy(db1), to_numpy(db2))


@pytest.mark.parametrize("clip", [{"clipnorm": 0.5}, {"global_clipnorm": 1.0}])
def test_clipped_step_is_the_same_in_every_run(cp, clip):
    """Norm clipping sums squares over many chunks; the sums are added in a
    fixed order, so two runs from the same state give the same bits."""
    rng = np.random.default_rng(4)
    shapes = [(1000, 1000), (1000,), (3, 70001), (17,)]
    p0 = [rng.standard_normal(s).astype(F32) for s in shapes]
    gs = [[cp.asarray(rng.standard_normal(s).astype(F32)) for s in shapes] for _ in range(5)]
    results = []
    for _ in range(2):
        params = [cp.asarray(p) for p in p0]
        opt = fd.optimizers.Adam(learning_rate=0.01, **clip)
        for g in gs:
            opt.apply(g, params)
        results.append([to_numpy(p) for p in params])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name,kw", [("SGD", {"learning_rate": 0.05, "momentum": 0.9}),
                                     ("RMSprop", {"learning_rate": 0.01, "centered": True}),
                                     ("Adam", {"learning_rate": 0.02}),
                                     ("AdamW", {"learning_rate": 0.02, "weight_decay": 0.1}),
                                     ("Nadam", {"learning_rate": 0.02}),
                                     ("Adagrad", {"learning_rate": 0.1})])
def test_float32_step_matches_the_cpu(cp, name, kw):
    """The GPU computes the parameter's increment in float32 from the rounded
    slots, as the CPU does, so the two stay within a few ulps (the order of
    float operations and fused multiply-adds may differ) instead of drifting
    apart by the increment's rounding every step."""
    rng = np.random.default_rng(5)
    p0 = (rng.uniform(0.5, 1.5, 4097) * rng.choice([-1, 1], 4097)).astype(F32)
    grads = [rng.standard_normal(4097).astype(F32) for _ in range(20)]
    cpu, gpu = p0.copy(), cp.asarray(p0)
    opt_c, opt_g = getattr(fd.optimizers, name)(**kw), getattr(fd.optimizers, name)(**kw)
    for g in grads:
        opt_c.apply([g], [cpu])
        opt_g.apply([cp.asarray(g)], [gpu])
    ulps = np.abs(to_numpy(gpu).astype(np.float64) - cpu) / np.spacing(np.abs(cpu))
    assert ulps.max() <= 4, f"{name}: GPU and CPU differ by up to {ulps.max():.0f} ulps"


def test_optimizer_on_a_second_gpu(cp):
    """Parameters on GPU 1 while GPU 0 is current."""
    if cp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two GPUs")
    with cp.cuda.Device(1):
        p = cp.ones(1000, F32)
        g = cp.full(1000, 0.5, F32)
    opt = fd.optimizers.Adam(learning_rate=0.1, global_clipnorm=1.0)
    opt.apply([g], [p])
    cp.cuda.Device(1).synchronize()
    ref = np.ones(1000, F32)
    fd.optimizers.Adam(learning_rate=0.1, global_clipnorm=1.0).apply(
        [np.full(1000, 0.5, F32)], [ref])
    assert_scaled_close(p, ref, 1e-6, "p")
