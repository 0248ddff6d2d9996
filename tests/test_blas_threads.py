"""OpenBLAS's parallel jobs run on fusednn's OpenMP team (csrc/cpu/blas.cpp).

The callback must run every job of a call at the same time (OpenBLAS's level-3
jobs wait on each other), one call at a time (jobs of two calls would share
OpenBLAS's scratch buffers), and fall back correctly where the OpenMP team is
short or the process has forked. A wrong callback shows as a wrong product or
a hang, so each case checks the product against float64 and runs in a
subprocess with a timeout where a hang is possible.
"""

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np

import fusednn as fd
from fusednn import _C

# Large enough that OpenBLAS splits the GEMM into one job per thread.
M, K, N = 384, 256, 320


def _operands(seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((M, K)).astype(np.float32), rng.standard_normal((K, N)).astype(np.float32)


def _product_error(x, w, y):
    ref = x.astype(np.float64) @ w.astype(np.float64)
    return float(np.max(np.abs(y - ref)) / np.max(np.abs(ref)))


def _run(code, env_extra, timeout=120):
    env = dict(os.environ, **env_extra)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_gemm_goes_through_the_openmp_team():
    native = os.environ.get("FUSEDNN_BLAS_THREADS") == "native"
    assert fd.build_info()["blas_threads"] == ("openblas" if native else "openmp")
    x, w = _operands(0)
    before = _C.blas_callback_calls()
    y, _ = fd.ops.dense_forward(x, w, activation="relu")
    ref = np.maximum(x.astype(np.float64) @ w.astype(np.float64), 0.0)
    assert float(np.max(np.abs(y - ref)) / np.max(np.abs(ref))) < 1e-5
    if fd.build_info()["blas_threads"] == "openmp" and _C.blas_num_threads() > 1:
        assert _C.blas_callback_calls() > before


def test_concurrent_calls_from_python_threads_are_correct():
    """Calls from several threads are serialised, so no two share scratch buffers."""
    errors = [None] * 6
    operands = [_operands(i) for i in range(len(errors))]

    def work(i):
        x, w = operands[i]
        worst = 0.0
        for _ in range(5):
            worst = max(worst, _product_error(x, w, _C.gemm(x, w)))
        errors[i] = worst

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(errors))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a concurrent GEMM hung"
    assert all(e is not None and e < 1e-5 for e in errors), errors


PRODUCT_CHECK = f"""
    import numpy as np, fusednn as fd
    from fusednn import _C
    rng = np.random.default_rng(0)
    x = rng.standard_normal(({M}, {K})).astype(np.float32)
    w = rng.standard_normal(({K}, {N})).astype(np.float32)
    def err():
        ref = x.astype(np.float64) @ w.astype(np.float64)
        return float(np.max(np.abs(_C.gemm(x, w) - ref)) / np.max(np.abs(ref)))
"""


def test_short_openmp_team_falls_back_to_threads():
    """OMP_THREAD_LIMIT=1 gives a one-thread team for a two-job GEMM: the jobs
    must then run on their own threads, not one after the other (a hang)."""
    code = PRODUCT_CHECK + """
    before = _C.blas_callback_calls()
    e = err()
    print(_C.blas_num_threads(), _C.blas_callback_calls() - before, e)
    assert e < 1e-5, e
    """
    r = _run(code, {"OMP_THREAD_LIMIT": "1", "OPENBLAS_NUM_THREADS": "2", "FUSEDNN_BLAS_THREADS": ""})
    assert r.returncode == 0, r.stdout + r.stderr
    nthreads, calls, _ = r.stdout.split()
    assert int(nthreads) == 2 and int(calls) >= 1, r.stdout


def test_native_pool_opt_out():
    code = PRODUCT_CHECK + """
    import os
    assert fd.build_info()["blas_threads"] == "openblas"
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    e = err()
    assert e < 1e-5, e
    assert _C.blas_callback_calls() == 0
    """
    r = _run(code, {"FUSEDNN_BLAS_THREADS": "native", "OPENBLAS_NUM_THREADS": "2"})
    assert r.returncode == 0, r.stdout + r.stderr


def test_forked_child_can_multiply():
    """After fork the child's GEMMs go back to OpenBLAS's own pool."""
    code = PRODUCT_CHECK + """
    import os
    assert err() < 1e-5
    pid = os.fork()
    if pid == 0:
        os._exit(0 if err() < 1e-5 else 3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    """
    r = _run(code, {"OPENBLAS_NUM_THREADS": "2", "FUSEDNN_BLAS_THREADS": ""}, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
