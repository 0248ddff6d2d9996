"""fusednn.distributed under a real MPI launcher: ``mpirun -n 2`` (and -n 1)
subprocesses running tests/_distributed_worker.py on loopback, each with a
bounded time. Skipped when mpi4py or mpirun is missing, or MPI cannot start.

Tolerances: with the same arrays on every rank and shuffle=False, a 2-rank
fit takes the steps of a one-process fit on the global batch; only the
order of the sums differs (the gradient mean over ranks, the shifted sums of
synchronized batch norm). float64: relative 1e-9 (measured: 5e-16 to
1e-14); float32: relative 1e-5 (measured: 1e-7); the moving statistics of
synchronized batch norm within 1e-6 (measured: 7e-16 in float64, 1.2e-7 in
float32). Across ranks the weights are bit-identical.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import fusednn as fd

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "_distributed_worker.py")
sys.path.insert(0, HERE)


_STARTS = {}  # n -> None when mpirun -n n starts, else why not


def _mpirun(n):
    """mpirun's path, once a trivial 'mpirun -n n' job has run (else skip)."""
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install '.[distributed]')")
    exe = os.path.join(os.path.dirname(sys.executable), "mpirun")
    exe = exe if os.path.exists(exe) else shutil.which("mpirun")
    if exe is None:
        pytest.skip("no mpirun on this machine")
    if n not in _STARTS:
        probe = "from mpi4py import MPI; MPI.COMM_WORLD.Barrier()"
        try:
            p = subprocess.run([exe, "-n", str(n), "--oversubscribe", sys.executable, "-c",
                                probe], env=_env(), capture_output=True, text=True, timeout=60)
            _STARTS[n] = None if p.returncode == 0 else (p.stdout + p.stderr)[-500:]
        except subprocess.TimeoutExpired:
            _STARTS[n] = "a one-line MPI job did not end within 60 s"
    if _STARTS[n] is not None:
        pytest.skip(f"MPI cannot start here (mpirun -n {n}): {_STARTS[n]}")
    return exe


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.dirname(os.path.dirname(
        fd.__file__)), env.get("PYTHONPATH")) if p)
    # Open MPI refuses root without these; harmless elsewhere. One thread per rank
    # (2 ranks on a 2-core machine), and loopback only.
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS="1", OMPI_MCA_btl_tcp_if_include="lo",
               OMPI_MCA_oob_tcp_if_include="lo")
    env.pop("FUSEDNN_DISTRIBUTED_TIMEOUT", None)
    return env


def run(mode, out, n=2, timeout=60):
    """(returncode, output, seconds) of the worker under mpirun -n n."""
    exe = _mpirun(n)
    env = _env()
    cmd = [exe, "-n", str(n), "--oversubscribe", sys.executable, WORKER, mode, str(out)]
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"mpirun -n {n} {mode} did not end within {timeout} s: "
                    f"{(e.stdout or b'')[-2000:]!r} {(e.stderr or b'')[-2000:]!r}")
    return p.returncode, p.stdout + p.stderr, time.monotonic() - t0


def weights(out, name, rank):
    with np.load(os.path.join(out, f"{name}.rank{rank}.npz")) as f:
        ws = [f[f"w{i}"] for i in range(sum(k.startswith("w") for k in f.files))]
        extra = {k: f[k] for k in f.files if not k.startswith("w")}
    return ws, extra


def assert_close(got, want, rtol):
    for i, (g, w) in enumerate(zip(got, want)):
        # relative to the tensor's scale: a bias that stays ~0 has no relative precision
        scale = max(float(np.max(np.abs(w))), 1e-3)
        err = float(np.max(np.abs(g - w))) / scale
        assert err <= rtol, f"weight {i}: relative error {err:.3g} > {rtol}"


@pytest.fixture(scope="module")
def equal_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("equal")
    rc, text, _ = run("equal", out)
    assert rc == 0, text[-3000:]
    (out / "output.txt").write_text(text)
    return out


def one_process(model, x, y, batch_size, epochs=3):
    h = model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    return model.get_weights(), h


def test_ranks_hold_bit_identical_weights(equal_run):
    for name in ("syncbn", "syncbn32", "plainbn", "torchbn", "mlp", "dropout", "stopped"):
        w0, _ = weights(equal_run, name, 0)
        w1, _ = weights(equal_run, name, 1)
        assert len(w0) == len(w1) > 0
        for a, b in zip(w0, w1):
            assert a.dtype == b.dtype and np.array_equal(a, b), name


def test_two_ranks_equal_one_process_on_the_global_batch(equal_run):
    import _distributed_worker as wk

    x, y = wk.data()
    # float64 with synchronized batch norm: batch 8 per rank == batch 16 in one process
    want, h = one_process(wk.bn_model(False), x, y, 16)
    got, extra = weights(equal_run, "syncbn", 0)
    assert_close(got, want, 1e-9)
    # the moving statistics (weights 3 and 4: BN's moving mean and variance) within 1e-6
    for i in (3, 4):
        np.testing.assert_allclose(got[i], want[i], rtol=1e-6, atol=1e-6)
    # the epoch's loss and accuracy are the means over all ranks' samples
    np.testing.assert_allclose(extra["loss"], h.history["loss"], rtol=1e-9)
    np.testing.assert_allclose(extra["accuracy"], h.history["accuracy"], rtol=1e-12)
    # float32, SGD: the moving statistics within 1e-6, the weights within 1e-5
    want, _ = one_process(wk.bn_model(False, dtype="float32", optimizer=fd.optimizers.SGD(0.05)),
                          x, y, 16)
    got, _ = weights(equal_run, "syncbn32", 0)
    assert_close(got, want, 1e-5)
    for i in (3, 4):
        np.testing.assert_allclose(got[i], want[i], rtol=1e-6, atol=1e-6)
    # torch's convention (unbiased variance of the global batch), no gamma, Dense bias, ELU
    want, _ = one_process(wk.torch_bn_model(), x, y, 16, epochs=2)
    got, _ = weights(equal_run, "torchbn", 0)
    assert_close(got, want, 1e-9)
    # float32 MLP, SGD with momentum: batch 16 per rank == batch 32
    want, _ = one_process(wk.mlp_model(), x.astype(np.float32), y, 32)
    got, _ = weights(equal_run, "mlp", 0)
    assert_close(got, want, 1e-5)


def test_unsynchronized_batch_norm_differs_from_the_global_batch(equal_run):
    """Without synchronized=True each rank normalises with its own half batch:
    the result is not the one-process fit (the synchronized one is)."""
    import _distributed_worker as wk

    x, y = wk.data()
    want, _ = one_process(wk.bn_model(False), x, y, 16)
    got, _ = weights(equal_run, "plainbn", 0)
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(got, want)) > 1e-4


def test_a_stop_on_one_rank_stops_all_and_writers_run_on_rank_0(equal_run):
    _, e0 = weights(equal_run, "stopped", 0)
    _, e1 = weights(equal_run, "stopped", 1)
    assert int(e0["iterations"]) == int(e1["iterations"]) == 3
    assert (equal_run / "ck0.fdnn").is_file() and not (equal_run / "ck1.fdnn").exists()
    text = (equal_run / "output.txt").read_text()
    assert text.count("Epoch 1/3") == 1  # the progress of rank 0 alone


def test_dropout_seeds_differ_between_ranks_and_are_restored(equal_run):
    _, e0 = weights(equal_run, "dropout", 0)
    _, e1 = weights(equal_run, "dropout", 1)
    assert int(e0["seed_in_fit"]) == 5  # rank 0 keeps the layer's seed
    assert int(e1["seed_in_fit"]) != 5
    assert int(e0["seed_after"]) == int(e1["seed_after"]) == 5
    assert int(e0["step"]) == int(e1["step"]) == 2 * 96 // 16  # one mask per step


@pytest.fixture(scope="module")
def resume_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume")
    rc, text, _ = run("resume", out)
    assert rc == 0, text[-3000:]
    return out


def test_resume_from_a_checkpoint_equals_the_straight_run(resume_run):
    tmp_path = resume_run
    straight, _ = weights(tmp_path, "straight", 0)
    for r in (0, 1):
        resumed, _ = weights(tmp_path, "resumed", r)
        for a, b in zip(straight, resumed):
            assert np.array_equal(a, b)
    files = json.load(open(tmp_path / "files.json"))
    assert "ckpt.fdnn" in files  # written by rank 0 alone (ModelCheckpoint runs there only)


def test_resume_with_another_number_of_ranks(resume_run):
    """The 2-rank checkpoint goes on in one process (at the global batch):
    the optimizer's state and step count carry over."""
    import _distributed_worker as wk

    m = fd.models.load(str(resume_run / "ckpt.fdnn"))
    assert m.optimizer.iterations == 2 * 96 // 16
    m.fit(*wk.data(), batch_size=16, epochs=3, initial_epoch=2, verbose=0)
    assert m.optimizer.iterations == 3 * 96 // 16


def test_a_killed_job_resumes_from_its_backup_with_any_number_of_ranks(tmp_path):
    """Rank 1 killed in epoch 2; the same fit run again resumes from rank 0's
    BackupAndRestore backup: on 2 ranks bit for bit as the uninterrupted
    fit, and on 1 rank (another number of ranks) at the same epoch."""
    rc, text, _ = run("backup_kill", tmp_path, timeout=90)
    assert rc != 0 and "rank 1" in text
    names = sorted(os.listdir(tmp_path / "backup"))
    assert names == ["backup-epoch2-batch0.safetensors"], names
    one = tmp_path / "one"
    shutil.copytree(tmp_path / "backup", one / "backup")
    rc, text, _ = run("backup_resume", tmp_path)
    assert rc == 0, text[-3000:]
    resumed, extra = weights(tmp_path, "bresumed", 0)
    assert list(extra["epochs"]) == [2, 3]
    straight, _ = weights(tmp_path, "bstraight", 0)
    for a, b in zip(resumed, straight):
        assert np.array_equal(a, b)
    rc, text, _ = run("backup_resume", one, n=1)
    assert rc == 0, text[-3000:]
    _, extra = weights(one, "bresumed", 0)
    assert list(extra["epochs"]) == [2, 3]


def test_one_rank_equals_a_plain_fit(tmp_path):
    """A world of one: distributed=True takes exactly the steps of fit()."""
    import _distributed_worker as wk

    rc, text, _ = run("equal", tmp_path, n=1)
    assert rc == 0, text[-3000:]
    x, y = wk.data()
    want, _ = one_process(wk.mlp_model(), x.astype(np.float32), y, 32)
    got, _ = weights(tmp_path, "mlp", 0)
    for a, b in zip(got, want):
        assert np.array_equal(a, b)
    m = wk.bn_model(False, dropout=0.3)
    m.fit(x, y, batch_size=8, epochs=2, seed=3, verbose=0)
    got, _ = weights(tmp_path, "dropout", 0)
    for a, b in zip(got, m.get_weights()):
        assert np.array_equal(a, b)


def test_one_gpu_nccl_world_equals_a_plain_fit(tmp_path):
    """The NCCL path in a world of one GPU (CuPy arrays go through NCCL even
    alone): the same fits as a plain fit of the same model."""
    if not fd.has_cuda():
        pytest.skip("no GPU: the NCCL path is not run here")
    pytest.importorskip("cupy.cuda.nccl", reason="CuPy without NCCL")
    rc, text, _ = run("equal_gpu", tmp_path, n=1, timeout=300)
    assert rc == 0, text[-3000:]
    errors = json.loads(text.split("gpu errors: ", 1)[1].splitlines()[0])
    assert errors["mlp"] == 0.0  # a sum over one rank is the gradient itself
    assert errors["syncbn"] < 1e-9


def test_a_killed_rank_ends_the_job(tmp_path):
    rc, text, seconds = run("kill", tmp_path, timeout=90)
    assert rc != 0
    assert seconds < 60
    assert "survived" not in text
    assert re.search(r"rank 1\b", text), text[-2000:]


def test_a_stuck_rank_is_named_by_the_watchdog(tmp_path):
    rc, text, seconds = run("stuck", tmp_path, timeout=90)
    assert rc != 0 and seconds < 60
    assert "barrier has not completed after 4 s" in text
    assert "rank(s) [1]" in text


def test_an_error_on_one_rank_ends_the_job(tmp_path):
    rc, text, seconds = run("fail_alone", tmp_path, timeout=90)
    assert rc != 0 and seconds < 60
    assert "ZeroDivisionError: rank 1 fails alone" in text
    assert "rank(s) [1] ended their program while this rank waits in barrier" in text


def test_bad_input_is_refused_on_every_rank(tmp_path):
    rc, text, _ = run("bad", tmp_path)
    assert rc == 0, text[-3000:]
    expect = {
        "noinit": "RuntimeError: Sequential.fit: distributed=True, but fd.distributed.init() "
                  "has not been called",
        "unequal": "ValueError: Sequential.fit: distributed=True needs the same number of "
                   "training samples on every rank",
        "indivisible": "must be a multiple of size()=2; got 95",
        "batch_size": "ValueError: Sequential.fit: distributed=True needs the same batch_size on "
                      "every rank; the ranks pass {0: 8, 1: 9}",
        "generator": "distributed=True takes arrays in memory",
        "op": "ValueError: fd.distributed.allreduce: op must be one of",
        "arrays": "TypeError: fd.distributed.allreduce: arrays[1] must be a NumPy or CuPy array",
        "strided": "ValueError: fd.distributed.allreduce: arrays must be C-contiguous",
        "intmean": "TypeError: fd.distributed.allreduce: op='mean' needs float arrays",
        "root": "ValueError: fd.distributed.broadcast: root must be a rank in [0, 2), got 5",
    }
    for r in (0, 1):
        for what, msg in expect.items():
            line = next((ln for ln in text.splitlines() if ln.startswith(f"rank {r} {what}:")),
                        None)
            assert line is not None and msg in line, (r, what, line)
        values = json.loads(next(ln for ln in text.splitlines()
                                 if ln.startswith(f"rank {r} values: ")).split(": ", 1)[1])
        assert values["a"] == [3.0] * 4 and values["b"] == [0, 3, 6]  # sum, float and int
        assert values["c"] == [1.0] and values["d"] == [0.5, 1.0]     # max, mean
        assert values["e"] == [1.0, 1.0]                             # broadcast from rank 1
        assert values["logs"] == {"loss": 0.5, "n": 1.0}
        assert values["size"] == 2 and values["local_rank"] == r


def test_import_error_names_the_extra(monkeypatch):
    import builtins

    import fusednn.distributed as dist

    real = builtins.__import__

    def no_mpi(name, *args, **kwargs):
        if name.startswith("mpi4py"):
            raise ImportError("No module named 'mpi4py'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mpi)
    with pytest.raises(ImportError, match=r'pip install "\.\[distributed\]"'):
        dist._mpi()


def test_public_functions_need_init():
    import fusednn.distributed as dist

    if dist.is_initialized():
        pytest.skip("this process has initialised MPI")
    for fn in (dist.rank, dist.size, dist.local_rank, dist.barrier, dist.stats):
        with pytest.raises(RuntimeError, match="init\\(\\) has not been called"):
            fn()
    with pytest.raises(RuntimeError, match="init\\(\\) has not been called"):
        dist.allreduce([np.ones(2)])


def test_synchronized_is_in_the_config():
    bn = fd.layers.BatchNormalization(synchronized=True)
    assert bn.get_config()["synchronized"] is True
    assert fd.layers.BatchNormalization.from_config(bn.get_config()).synchronized is True
    with pytest.raises(TypeError, match="synchronized"):
        fd.layers.BatchNormalization(synchronized="yes")


def test_ring_allreduce_model():
    from fusednn.distributed import ring_allreduce_seconds

    assert ring_allreduce_seconds(1e9, 1, 1e9, 1e-5) == 0.0
    # 2 (p-1)/p * bytes / bandwidth + 2 (p-1) latency
    assert ring_allreduce_seconds(1e9, 4, 1e9, 1e-5) == pytest.approx(1.5 + 6e-5)
