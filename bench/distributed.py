"""Data-parallel training on one machine: 2 ranks x 1 thread against 1 rank x
1 thread and 1 rank x 2 threads, and a paper projection to many ranks.

The network is issue W2's wide one: 784 -> 3 x [Dense(1024) -> BN -> ReLU ->
Dropout(0.2)] -> Dense(10), Adam, float32, synthetic data. The contenders
train on the same global batch (``--batch``, default 256) for one epoch of
``--steps`` steps, but one:

  1 rank x 1 thread, fit: the compiled step (one native call per batch);
  1 rank x 1 thread, layer by layer: ``jit_compile=False``, the path a
    distributed fit takes (backward, gradient allreduce, update);
  1 rank x 2 threads, fit: the compiled step on both cores;
  1 rank x 1 thread, layer by layer, batch/2: one rank's share of the
    work alone, half the samples (its throughput counts its half batch);
  2 ranks x 1 thread: ``fit(distributed=True)``, batch/2 per rank, one
    allreduce of all gradients per step (MPI on loopback, shared memory).

The contenders run in turn, round after round, inside one ``mpirun -n 2``
job: while rank 0 times a one-rank contender, rank 1 waits in a sleeping
barrier (a blocking MPI barrier would spin on a core). Step time = the time
from the end of the first batch to the end of the last, over steps - 1
(the first step and fit's start-up, the broadcast of the weights
included, are left out); medians over rounds. Communication: the time
rank 0 spends inside fusednn's collectives per step (waiting for the
other rank included) and the bytes it reduces per step
(fd.distributed.stats); "allreduce alone" times fd.distributed.allreduce of
the same bytes with both ranks released together by a barrier (packing
and the division by p included), the transfer without the wait.

Projection (on paper, printed after the table): per-rank batch b = batch/2,
the measured 1-thread layer-by-layer step at that batch as the compute time
T_c, and the ring allreduce of the gradient bytes S over p ranks,
``T_ar = 2 (p - 1) / p * S / B + 2 (p - 1) * alpha``, plus the per-step
stop-flag allreduce (4 bytes: ``2 log2(p) * alpha``, recursive doubling);
no overlap of communication with the backward (fusednn reduces after it),
so efficiency = T_c / (T_c + T_ar + T_flag), weak scaling (the global batch
grows with p).

    python bench/distributed.py [--rounds N] [--steps N] [--batch N]
    (runs itself under mpirun -n 2; or: mpirun -n 2 python bench/distributed.py)
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _harness import machine, markdown, write_json  # noqa: E402

import fusednn as fd  # noqa: E402

CHARTS = {}  # no chart: the table has one ratio column


def network():
    layers = [fd.Input((784,))]
    for i in range(3):
        layers += [fd.layers.Dense(1024, use_bias=False,
                                   kernel_initializer=fd.initializers.HeNormal(seed=i)),
                   fd.layers.BatchNormalization(), fd.layers.Activation("relu"),
                   fd.layers.Dropout(0.2, seed=10 + i)]
    layers.append(fd.layers.Dense(10, kernel_initializer=fd.initializers.GlorotUniform(seed=9)))
    return fd.Sequential(layers)


class StepClock(fd.callbacks.Callback):
    """Times the steps after the first; resets the collective counters there."""

    def __init__(self, distributed):
        super().__init__()
        self.distributed = distributed
        self.t = []
        self.comm = None

    def on_train_batch_end(self, batch, logs=None):
        self.t.append(time.perf_counter())
        if self.distributed:
            if batch == 0:
                fd.distributed.reset_stats()
            self.comm = fd.distributed.stats()

    def per_step(self):
        return (self.t[-1] - self.t[0]) / (len(self.t) - 1)


def quiet_barrier(comm):
    """A barrier that sleeps instead of spinning on a core while it waits."""
    req = comm.Ibarrier()
    while not req.Test():
        time.sleep(0.002)


def one_epoch(model, x, y, batch, distributed, compiled=True):
    model.compile(fd.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                  jit_compile="auto" if compiled else False)
    clock = StepClock(distributed)
    model.fit(x, y, batch_size=batch, epochs=1, shuffle=True, seed=0, verbose=0,
              callbacks=[clock], distributed=distributed)
    return clock


def worker(args):
    from mpi4py import MPI

    fd.distributed.init(timeout=600)
    comm = MPI.COMM_WORLD
    r, p = fd.distributed.rank(), fd.distributed.size()
    if p != 2:
        raise SystemExit("bench/distributed.py: run it under mpirun -n 2")
    rng = np.random.default_rng(0)
    n = args.batch * args.steps
    x = rng.standard_normal((n, 784), dtype=np.float32)
    y = rng.integers(0, 10, n)
    half = f"1 rank x 1 thread, layer by layer, batch {args.batch // 2}"
    names = ["1 rank x 1 thread, fit (compiled)", "1 rank x 1 thread, layer by layer",
             "1 rank x 2 threads, fit (compiled)", half, "2 ranks x 1 thread, distributed"]
    times = {k: [] for k in names}
    comm_s, comm_bytes, comm_calls = [], [], []
    # correctness first: 2 ranks at batch/2 equal one process at batch (no dropout,
    # synchronized BN, float64) -- the fit tests check it; here one step of W2 itself
    check = network()
    for la in check.layers:
        if isinstance(la, fd.layers.BatchNormalization):
            la.synchronized = True
        if isinstance(la, fd.layers.Dropout):
            la.rate = 0.0
    w0 = [w.copy() for w in check.get_weights()]
    # SGD: the difference of the weights is that of the gradients (Adam's first step,
    # g / (|g| + eps), would magnify the rounding of gradients near zero)
    check.compile(fd.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    check.fit(x[:args.batch], y[:args.batch], batch_size=args.batch // 2, epochs=1,
              shuffle=False, verbose=0, distributed=True)
    if r == 0:
        ref = network()
        for la in ref.layers:
            if isinstance(la, fd.layers.Dropout):
                la.rate = 0.0
        ref.set_weights(w0)
        ref.compile(fd.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
        ref.fit(x[:args.batch], y[:args.batch], batch_size=args.batch, epochs=1,
                shuffle=False, verbose=0)
        err = max(float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-3))
                  for a, b in zip(check.get_weights(), ref.get_weights()))
        print(f"check: one step on 2 ranks vs one process, max relative error {err:.2e}")
        if err > 1e-5:
            raise SystemExit("check failed")
    for rnd in range(args.rounds + 1):  # round 0 warms up and is not kept
        for k in names[:4]:
            if r == 0:
                fd.set_num_threads(2 if "2 threads" in k else 1)
                b = args.batch // 2 if k == half else args.batch
                # the per-rank compute: half the samples, so half the epoch's steps' worth
                xs, ys = (x[:n // 2], y[:n // 2]) if k == half else (x, y)
                clock = one_epoch(network(), xs, ys, b, False, "layer" not in k)
                if rnd:
                    times[k].append(clock.per_step())
            quiet_barrier(comm)
        fd.set_num_threads(1)
        clock = one_epoch(network(), x, y, args.batch // 2, True, False)
        quiet_barrier(comm)
        if rnd:
            times[names[4]].append(clock.per_step())
            steps = len(clock.t) - 1
            c = clock.comm
            comm_s.append(c["allreduce_seconds"] / steps)
            comm_bytes.append(c["allreduce_bytes"] / steps)
            comm_calls.append(c["allreduce_calls"] / steps)
    # the allreduce alone, both ranks released together: the transfer without the
    # wait for a slower rank that the in-fit figure includes
    params = sum(int(w.size) for w in network().trainable_weights)
    grads = [np.ones(params, np.float32)]
    bare = []
    for _ in range(args.rounds * 4):
        quiet_barrier(comm)
        t0 = time.perf_counter()
        fd.distributed.allreduce(grads)
        bare.append(time.perf_counter() - t0)
    if r != 0:
        return
    base = float(np.median(times[names[0]]))
    rows = []
    for k in names:
        t = float(np.median(times[k]))
        b = args.batch // 2 if k == half else args.batch
        row = {"contender": k, "step_ms": round(1e3 * t, 2),
               "samples_s": round(b / t), "speedup": round(base / t * b / args.batch, 3)}
        if k == names[4]:
            row["comm_ms"] = round(1e3 * float(np.median(comm_s)), 2)
            row["bytes_step"] = int(np.median(comm_bytes))
            row["calls_step"] = round(float(np.median(comm_calls)), 1)
            row["comm_share"] = round(float(np.median(comm_s)) / t, 3)
            row["bare_ms"] = round(1e3 * float(np.median(bare)), 2)
        rows.append(row)
    cols = [("contender", "contender"), ("step_ms", "step ms"), ("samples_s", "samples/s"),
            ("speedup", "throughput vs 1x1 fit"), ("comm_ms", "comm ms/step"),
            ("bytes_step", "bytes reduced/step"), ("calls_step", "allreduces/step"),
            ("comm_share", "comm / step"), ("bare_ms", "allreduce alone ms")]
    print(f"\nW2, float32, global batch {args.batch}, {args.steps} steps an epoch, "
          f"{args.rounds} rounds; {params} trainable parameters "
          f"({4 * params / 1e6:.2f} MB of float32 gradients)\n")
    print(markdown(rows, cols))
    t_c = float(np.median(times[half]))  # one rank's compute: 1 thread at the per-rank batch
    proj = projection(t_c, 4 * params, args.bandwidth, args.latency)
    print(f"\nProjection: per-rank batch {args.batch // 2}, compute {1e3 * t_c:.1f} ms/step "
          f"(the 1-thread layer-by-layer step at that batch, measured above), "
          f"{args.bandwidth:g} Gb/s, alpha = {1e6 * args.latency:g} us\n")
    print(markdown(proj, [("p", "ranks"), ("ar_ms", "gradient allreduce ms"),
                          ("flag_ms", "stop flag ms"), ("eff", "efficiency"),
                          ("eff_10x", "efficiency, 10x faster compute")]))
    path = write_json("distributed.json", {"machine": machine(), "args": vars(args),
                                           "rows": rows, "projection": proj,
                                           "times": times, "allreduce_alone": bare})
    print(f"\n{path}")


def projection(t_compute, nbytes, gbits, alpha):
    """Weak-scaling efficiency on paper (see the module docstring)."""
    bw = gbits * 1e9 / 8
    rows = []
    for p in (2, 8, 64, 512):
        ar = fd.distributed.ring_allreduce_seconds(nbytes, p, bw, alpha)
        flag = 2 * math.log2(p) * alpha
        rows.append({"p": p, "ar_ms": round(1e3 * ar, 2), "flag_ms": round(1e3 * flag, 3),
                     "eff": round(t_compute / (t_compute + ar + flag), 3),
                     "eff_10x": round(t_compute / 10 / (t_compute / 10 + ar + flag), 3)})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--bandwidth", type=float, default=100.0, help="Gb/s of the projection")
    ap.add_argument("--latency", type=float, default=5e-6, help="alpha (s) of the projection")
    args = ap.parse_args(argv)
    if args.batch % 2 or args.steps < 3:
        ap.error("--batch must be even and --steps >= 3")
    under_mpi = any(k in os.environ for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE"))
    if under_mpi:
        return worker(args)
    exe = os.path.join(os.path.dirname(sys.executable), "mpirun")
    exe = exe if os.path.exists(exe) else shutil.which("mpirun")
    if exe is None:
        raise SystemExit('bench/distributed.py: no mpirun; pip install ".[distributed]"')
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    cmd = [exe, "-n", "2", "--oversubscribe", sys.executable, os.path.abspath(__file__),
           *(argv if argv is not None else sys.argv[1:])]
    return subprocess.call(cmd, env=env)


if __name__ == "__main__":
    sys.exit(main())
