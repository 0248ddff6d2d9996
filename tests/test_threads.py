"""fusednn's CPU thread pool (csrc/cpu/threads.h) and the GEMM tiles it runs.

The pool's caller claims chunks itself, so a wrong pool shows as a wrong
result, a lost chunk or a hang: each case checks results against float64 (or
the same op at one thread, bit for bit) and runs in a subprocess with a
timeout where a hang is possible.
"""

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import fusednn as fd
from fusednn import _C
from fusednn.testing import reference as ref


def _run(code, env_extra=None, timeout=120):
    env = dict(os.environ, **(env_extra or {}))
    for key, value in list(env.items()):
        if value is None:
            del env[key]
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def _env_without(*names, **extra):
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update(extra)
    return env


class threads:
    """Sets fd.set_num_threads(n) for a block."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.old = fd.num_threads()
        fd.set_num_threads(self.n)

    def __exit__(self, *exc):
        fd.set_num_threads(self.old)


# Row tiles (m large), column tiles (m small, n large; or n > m, both
# large: (256, 300, 1024)), K slices (m small, k large), and one piece; the
# backward's products (dx = dz w^T, dw = x^T dz) cut the other ways.
# (1024, 512, 1024) is 2^29 FMAs: NumPy's BLAS where it was found.
GEMM_SHAPES = [(512, 256, 300), (40, 200, 2048), (32, 3072, 100), (40, 1024, 2048),
               (32, 100, 100), (1000, 3, 7), (256, 300, 1024), (1024, 512, 1024)]


@pytest.mark.parametrize("m,k,n", GEMM_SHAPES)
@pytest.mark.parametrize("nthreads", [1, 2, 3])
def test_tiled_gemm_against_float64(m, k, n, nthreads):
    rng = np.random.default_rng(m + n)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    with threads(nthreads):
        y = _C.gemm(x, w)
        out = fd.ops.dense_forward(x, w, b, activation="elu")
    exact = x.astype(np.float64) @ w.astype(np.float64)
    scale = np.max(np.abs(exact))
    assert np.max(np.abs(y - exact)) <= 1e-5 * scale
    expect, _ = ref.dense_forward(x, w, b, "elu")
    y_elu = out[0]
    assert np.max(np.abs(y_elu - expect)) <= 1e-5 * scale
    dy = rng.standard_normal((m, n)).astype(np.float32)
    with threads(nthreads):
        dx, dw, db = fd.ops.dense_backward(dy, out[1])
    for got, want in zip((dx, dw, db), ref.dense_backward(dy, x, w, b, "elu")):
        assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))


def test_reductions_give_the_same_bits_at_any_thread_count():
    """Chunk boundaries depend on the sizes only, and partial sums are added
    in chunk order: 1, 2 and 3 threads give the same bits for the bias
    gradient, BN's statistics and gradients, the losses and the optimizer's
    clip norms. (GEMM tiles follow the thread count, so a GEMM's last bits
    may differ between thread counts, as with any threaded BLAS; a given
    thread count repeats its bits.)"""
    rng = np.random.default_rng(0)
    m, k, n = 600, 96, 130
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    y = rng.standard_normal((m, n)).astype(np.float32)
    dy = rng.standard_normal((m, n)).astype(np.float32)
    labels = rng.integers(0, n, m)
    params = [rng.standard_normal(s).astype(np.float32) for s in [(300, 200), (200,), (70000,)]]
    grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]

    with threads(1):
        _, ctx = fd.ops.dense_forward(x, w, b, activation="elu")

    def reductions():
        out = [fd.ops.dense_backward(dy, ctx)[2]]  # db (dx and dw are GEMMs)
        yb, bctx = fd.ops.batchnorm_forward(y, np.ones(n, np.float32), np.zeros(n, np.float32),
                                            None, None, training=True, activation="elu",
                                            dropout=0.3, seed=1)
        out += [yb, *fd.ops.batchnorm_backward(dy, bctx)]
        out += list(fd.ops.softmax_cross_entropy(y, labels))
        ps = [p.copy() for p in params]
        opt = fd.optimizers.Nadam(1e-3, global_clipnorm=0.5)
        for _ in range(3):
            opt.apply_gradients(zip(grads, ps))
        return out + ps

    with threads(1):
        one = reductions()
    for nt in (2, 3):
        with threads(nt):
            other = reductions()
        for a, c in zip(one, other):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(c))


@pytest.mark.parametrize("m", [32, 128])
def test_backward_products_of_two_pieces_run_side_by_side(m):
    """dW and dx of a product cut into two pieces each (m=128) run side by
    side, a chunk each; of one piece each (m=32), one after the other on the
    caller. Either way dW has the bits it has alone (need_dx=False runs it
    alone), dx matches float64; the pool took the pair only at m=128."""
    rng = np.random.default_rng(m)
    x = rng.standard_normal((m, 100)).astype(np.float32)
    w = rng.standard_normal((100, 100)).astype(np.float32) * 0.1
    dy = rng.standard_normal((m, 100)).astype(np.float32)
    with threads(2):
        _, ctx = fd.ops.dense_forward(x, w, None, activation="elu")
        before = _C.pool_stats()["calls"]
        dx, dw, _ = fd.ops.dense_backward(dy, ctx)
        assert _C.pool_stats()["calls"] == before + (1 if m == 128 else 0)
        _, dw_alone, _ = fd.ops.dense_backward(dy, ctx, need_dx=False)
    np.testing.assert_array_equal(dw, dw_alone)
    rdx, rdw, _ = ref.dense_backward(dy.astype(np.float64), x.astype(np.float64),
                                     w.astype(np.float64), None, "elu")
    np.testing.assert_allclose(dx, rdx, rtol=1e-4, atol=1e-4 * np.abs(rdx).max())
    np.testing.assert_allclose(dw, rdw, rtol=1e-4, atol=1e-4 * np.abs(rdw).max())


def test_a_fit_repeats_its_bits_at_a_given_thread_count():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((600, 96)).astype(np.float32)
    labels = rng.integers(0, 10, 600)

    def fit(start=None):
        model = fd.Sequential([fd.layers.Dense(256, activation="elu"),
                               fd.layers.BatchNormalization(), fd.layers.Dropout(0.2, seed=3),
                               fd.layers.Dense(10)])
        model.compile(optimizer=fd.optimizers.Nadam(1e-3, global_clipnorm=0.5),
                      loss="sparse_categorical_crossentropy")
        model.build(96)
        if start is not None:
            model.set_weights(start)
        else:
            return model.get_weights()
        model.fit(x, labels, epochs=2, batch_size=300, shuffle=False, verbose=0)
        return model.get_weights()

    start = fit()
    with threads(2):
        first, second = fit(start), fit(start)
    with threads(1):
        single = fit(start)
    for a, c, s in zip(first, second, single):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_allclose(a, s, rtol=1e-4, atol=1e-5)


def test_concurrent_calls_from_python_threads_are_correct():
    """While one thread's call holds the pool, another's runs inline."""
    errors = [None] * 6
    rng = np.random.default_rng(1)
    operands = [(rng.standard_normal((384, 256)).astype(np.float32),
                 rng.standard_normal((256, 320)).astype(np.float32)) for _ in errors]

    def work(i):
        x, w = operands[i]
        exact = x.astype(np.float64) @ w.astype(np.float64)
        worst = 0.0
        for _ in range(20):
            worst = max(worst, float(np.max(np.abs(_C.gemm(x, w) - exact)) / np.max(np.abs(exact))))
        errors[i] = worst

    ts = [threading.Thread(target=work, args=(i,)) for i in range(len(errors))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in ts), "a concurrent call hung"
    assert all(e is not None and e < 1e-5 for e in errors), errors


def test_workers_take_chunks_when_there_are_cores():
    if (os.cpu_count() or 1) < 2 or fd.num_threads() < 2:
        pytest.skip("one CPU: the caller runs every chunk")
    x = np.ones((1024, 512), np.float32)
    w = np.ones((512, 512), np.float32)
    before = _C.pool_stats()
    for _ in range(20):
        _C.gemm(x, w)
    after = _C.pool_stats()
    assert after["calls"] > before["calls"]
    assert after["workers"] >= 1
    assert after["worker_chunks"] > before["worker_chunks"]


def test_forked_child_runs_parallel_ops():
    """A forked child has no workers: its pool starts again (or its caller
    runs every chunk), and the results stay right."""
    code = """
    import os, numpy as np, fusednn as fd
    from fusednn import _C
    rng = np.random.default_rng(0)
    x = rng.standard_normal((700, 300)).astype(np.float32)
    w = rng.standard_normal((300, 500)).astype(np.float32)
    exact = x.astype(np.float64) @ w.astype(np.float64)
    def err():
        return float(np.max(np.abs(_C.gemm(x, w) - exact)) / np.max(np.abs(exact)))
    assert err() < 1e-5
    pid = os.fork()
    if pid == 0:
        ok = all(err() < 1e-5 for _ in range(5))
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert err() < 1e-5
    """
    r = _run(code, {"FUSEDNN_NUM_THREADS": "2"}, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_large_products_use_numpy_blas_where_found():
    info = fd.build_info()
    if info["numpy_blas"] is None:
        pytest.skip("NumPy's BLAS was not found (not Linux, or not an OpenBLAS)")
    assert os.path.exists(info["numpy_blas"])
    code = """
    import numpy as np, fusednn as fd
    from fusednn import _C
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1024, 512)).astype(np.float32)
    w = rng.standard_normal((512, 1024)).astype(np.float32)
    exact = x.astype(np.float64) @ w.astype(np.float64)
    err = float(np.max(np.abs(_C.gemm(x, w) - exact)) / np.max(np.abs(exact)))
    print(fd.build_info()["numpy_blas"], err)
    """
    r = _run(code, {"FUSEDNN_NUMPY_BLAS": "0", "FUSEDNN_NUM_THREADS": "2"})
    assert r.returncode == 0, r.stderr
    path, err = r.stdout.split()
    assert path == "None" and float(err) < 1e-5
    r = _run(code, {"FUSEDNN_NUMPY_BLAS": "1", "FUSEDNN_NUM_THREADS": "2"})
    path, err = r.stdout.split()
    assert path == info["numpy_blas"] and float(err) < 1e-5


def test_bad_fusednn_numpy_blas_is_an_import_error():
    r = _run("import fusednn", {"FUSEDNN_NUMPY_BLAS": "yes"})
    assert r.returncode != 0 and "FUSEDNN_NUMPY_BLAS='yes' must be 0 or 1" in r.stderr


# ------------------------------------------------------------- the limit
@pytest.mark.parametrize("bad,error", [(0, ValueError), (-3, ValueError), (2.5, TypeError),
                                       ("2", TypeError), (True, TypeError), (None, TypeError)])
def test_set_num_threads_refuses_bad_values(bad, error):
    before = fd.num_threads()
    with pytest.raises(error, match=r"set_num_threads: n must be"):
        fd.set_num_threads(bad)
    assert fd.num_threads() == before


def test_set_num_threads_round_trip():
    before = fd.num_threads()
    try:
        fd.set_num_threads(3)
        assert fd.num_threads() == 3 and fd.build_info()["cpu_threads"] == 3
        fd.set_num_threads(np.int64(1))
        assert fd.num_threads() == 1
    finally:
        fd.set_num_threads(before)


@pytest.mark.parametrize("value", ["0", "-1", "two", "2.5", "2,1"])
def test_bad_fusednn_num_threads_is_an_import_error(value):
    r = _run("import fusednn", {"FUSEDNN_NUM_THREADS": value})
    assert r.returncode != 0
    assert f"FUSEDNN_NUM_THREADS={value}" in r.stderr and "whole number >= 1" in r.stderr


@pytest.mark.parametrize("env,expect,by", [
    ({"FUSEDNN_NUM_THREADS": "3"}, 3, "FUSEDNN_NUM_THREADS"),
    ({"FUSEDNN_NUM_THREADS": "3", "OMP_NUM_THREADS": "1"}, 3, "FUSEDNN_NUM_THREADS"),
    ({"OMP_NUM_THREADS": "1"}, 1, "OMP_NUM_THREADS"),
    ({"OMP_NUM_THREADS": "2,1"}, 2, "OMP_NUM_THREADS"),
])
def test_thread_limit_from_the_environment(env, expect, by):
    code = """
    import fusednn as fd
    info = fd.build_info()
    print(info["cpu_threads"], info["cpu_threads_chosen_by"])
    """
    r = _run(code, dict(_env_without("FUSEDNN_NUM_THREADS", "OMP_NUM_THREADS"), **env))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(expect), by]


def test_default_limit_is_the_cpus_this_process_may_use():
    code = """
    import os, fusednn as fd
    print(fd.num_threads(), len(os.sched_getaffinity(0)), fd.build_info()["cpu_threads_chosen_by"])
    """
    env = _env_without("FUSEDNN_NUM_THREADS", "OMP_NUM_THREADS")
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                       capture_output=True, text=True, timeout=60)
    n, cpus, by = r.stdout.split()
    assert n == cpus and by == "cpus"


# ------------------------------------------------------------ threadpoolctl
threadpoolctl = pytest.importorskip("threadpoolctl")


def _fusednn_pools():
    return [i for i in threadpoolctl.threadpool_info() if i["internal_api"] == "fusednn"]


def test_threadpool_info_lists_the_pool():
    pools = _fusednn_pools()
    assert len(pools) == 1
    assert pools[0]["filepath"].endswith("libfusednn_threads.so")
    assert pools[0]["num_threads"] == fd.num_threads()
    assert pools[0]["version"] == fd.__version__


def test_threadpool_limits_governs_the_pool():
    before = fd.num_threads()
    with threadpoolctl.threadpool_limits(1):
        assert fd.num_threads() == 1
        assert _fusednn_pools()[0]["num_threads"] == 1
    assert fd.num_threads() == before
    with threadpoolctl.threadpool_limits(limits=1, user_api="fusednn"):
        assert fd.num_threads() == 1
    assert fd.num_threads() == before


def _cores_used(fn, seconds=1.0):
    """CPU time of the whole process over wall time while fn runs in a loop."""
    fn()
    t0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        fn()
    return (time.process_time() - c0) / (time.perf_counter() - t0)


def test_threadpool_limits_one_keeps_the_forward_loop_on_one_core():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1024, 1024)).astype(np.float32)
    w = rng.standard_normal((1024, 1024)).astype(np.float32)
    b = np.zeros(1024, np.float32)
    step = lambda: fd.ops.dense_forward(x, w, b, activation="elu")  # noqa: E731
    with threadpoolctl.threadpool_limits(1):
        before = _C.pool_stats()["worker_chunks"]
        used = _cores_used(step)
        assert _C.pool_stats()["worker_chunks"] == before
    assert used <= 1.3, used


def test_joblib_workers_each_get_their_share():
    """GridSearchCV-style: two fits under joblib n_jobs=2. Each worker's pool
    is limited to its share of the CPUs (loky's limits reach it), and the fits
    give the same weights as in this process."""
    joblib = pytest.importorskip("joblib")
    from tests._joblib_fit import fit_once

    serial = [fit_once(seed) for seed in (0, 1)]
    par = joblib.Parallel(n_jobs=2, backend="loky")(joblib.delayed(fit_once)(s) for s in (0, 1))
    share = max(1, len(os.sched_getaffinity(0)) // 2)
    for (w_serial, _), (w_par, limit) in zip(serial, par):
        assert limit == share
        for a, c in zip(w_serial, w_par):
            np.testing.assert_allclose(a, c, rtol=1e-6, atol=1e-7)
