"""The program tests/test_distributed.py runs under ``mpirun``: one mode per
run, results written under the output folder (one file per rank) or printed.

    python _distributed_worker.py MODE OUT_DIR
"""

from __future__ import annotations

import json
import os
import signal
import sys

import numpy as np

import fusednn as fd

OUT = None  # the output folder (argv[2])
N, FEATURES, CLASSES = 96, 6, 3


def data(n=N):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, FEATURES))
    y = rng.integers(0, CLASSES, n)
    return x, y


def init(seed):
    return fd.initializers.HeNormal(seed=seed)


def bn_model(synchronized, dropout=0.0, dtype="float64", optimizer=None):
    """Dense (no bias: BN's beta takes its place) -> BN -> relu [-> dropout] -> Dense."""
    layers = [fd.Input((FEATURES,)),
              fd.layers.Dense(12, use_bias=False, kernel_initializer=init(1)),
              fd.layers.BatchNormalization(synchronized=synchronized),
              fd.layers.Activation("relu")]
    if dropout:
        layers.append(fd.layers.Dropout(dropout, seed=5))
    layers.append(fd.layers.Dense(CLASSES, kernel_initializer=init(2)))
    m = fd.Sequential(layers, dtype=dtype)
    m.compile(optimizer or fd.optimizers.Adam(1e-2), "sparse_categorical_crossentropy",
              metrics=["accuracy"])
    return m


def torch_bn_model():
    """BN in torch's convention, without gamma, after a Dense with a bias, then ELU."""
    m = fd.Sequential([fd.Input((FEATURES,)),
                       fd.layers.Dense(12, kernel_initializer=init(5)),
                       fd.layers.BatchNormalization(momentum=0.1, epsilon=1e-5, scale=False,
                                                    convention="torch", synchronized=True),
                       fd.layers.ELU(),
                       fd.layers.Dense(CLASSES, kernel_initializer=init(6))], dtype="float64")
    m.compile(fd.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    return m


def mlp_model():
    m = fd.Sequential([fd.Input((FEATURES,)),
                       fd.layers.Dense(10, activation="tanh", kernel_initializer=init(3)),
                       fd.layers.Dense(CLASSES, kernel_initializer=init(4))], dtype="float32")
    m.compile(fd.optimizers.SGD(0.05, momentum=0.9), "sparse_categorical_crossentropy")
    return m


def save(name, model, **extra):
    arrays = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    np.savez(os.path.join(OUT, f"{name}.rank{fd.distributed.rank()}.npz"), **arrays,
             **{k: np.asarray(v) for k, v in extra.items()})


class SeedProbe(fd.callbacks.Callback):
    """Records the dropout layer's seed in use during the fit."""

    def on_epoch_begin(self, epoch, logs=None):
        self.seed = [la.seed for la in self.model.layers if isinstance(la, fd.layers.Dropout)][0]


class StopOnRank1(fd.callbacks.Callback):
    """Rank 1 alone asks to stop after its third batch."""

    def on_train_batch_end(self, batch, logs=None):
        if fd.distributed.rank() == 1 and batch == 2:
            self.model.stop_training = True


def equal():
    """The fits test_distributed compares with one-process fits."""
    fd.distributed.init(timeout=60)
    p = fd.distributed.size()
    x, y = data()
    a = bn_model(True)
    ha = a.fit(x, y, batch_size=16 // p, epochs=3, shuffle=False, verbose=0, distributed=True)
    save("syncbn", a, loss=ha.history["loss"], accuracy=ha.history["accuracy"])
    a = bn_model(False)
    a.fit(x, y, batch_size=16 // p, epochs=3, shuffle=False, verbose=0, distributed=True)
    save("plainbn", a)
    a = bn_model(True, dtype="float32", optimizer=fd.optimizers.SGD(0.05))
    a.fit(x, y, batch_size=16 // p, epochs=3, shuffle=False, verbose=0, distributed=True)
    save("syncbn32", a)
    a = torch_bn_model()
    a.fit(x, y, batch_size=16 // p, epochs=2, shuffle=False, verbose=0, distributed=True)
    save("torchbn", a)
    b = mlp_model()
    b.fit(x.astype(np.float32), y, batch_size=32 // p, epochs=3, shuffle=False, verbose=0,
          distributed=True)
    save("mlp", b)
    # per-rank BN and dropout, shuffled: the weights must still agree between ranks
    c = bn_model(False, dropout=0.3)
    probe = SeedProbe()
    c.fit(x, y, batch_size=8, epochs=2, seed=3, verbose=0, distributed=True, callbacks=[probe])
    save("dropout", c, seed_in_fit=probe.seed, seed_after=c.layers[3].seed,
         step=c.layers[3].step)
    # one rank stops: every rank stops after the same step; the writers run on rank 0 only
    d = mlp_model()
    ck = fd.callbacks.ModelCheckpoint(os.path.join(OUT, f"ck{fd.distributed.rank()}.fdnn"),
                                      monitor="loss")
    d.fit(x.astype(np.float32), y, batch_size=8, epochs=3, verbose=2, distributed=True,
          callbacks=[StopOnRank1(), ck])
    save("stopped", d, iterations=d.optimizer.iterations)


def resume():
    """4 epochs straight against 2 + checkpoint (rank 0 writes) + load + 2."""
    fd.distributed.init(timeout=60)
    x, y = data()
    a = bn_model(False, dropout=0.2)
    a.fit(x, y, batch_size=8, epochs=4, seed=7, verbose=0, distributed=True)
    save("straight", a)
    path = os.path.join(OUT, "ckpt.fdnn")
    b = bn_model(False, dropout=0.2)
    ck = fd.callbacks.ModelCheckpoint(path, monitor="loss", save_best_only=False)
    b.fit(x, y, batch_size=8, epochs=2, seed=7, verbose=0, distributed=True, callbacks=[ck])
    fd.distributed.barrier()
    files = sorted(os.listdir(OUT))
    # a fresh model on every rank but rank 0: fit takes rank 0's state
    c = fd.models.load(path) if fd.distributed.rank() == 0 else bn_model(False, dropout=0.2)
    c.fit(x, y, batch_size=8, epochs=4, initial_epoch=2, verbose=0, distributed=True)
    save("resumed", c)
    if fd.distributed.rank() == 0:
        with open(os.path.join(OUT, "files.json"), "w") as f:
            json.dump(files, f)


class Kill(fd.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if fd.distributed.rank() == 1 and batch == 3:
            os.kill(os.getpid(), signal.SIGKILL)


def kill():
    fd.distributed.init(timeout=20)
    x, y = data()
    m = bn_model(True)
    m.fit(x, y, batch_size=4, epochs=50, verbose=0, distributed=True, callbacks=[Kill()])
    print("survived", flush=True)


class KillInEpoch(fd.callbacks.Callback):
    """Kills rank 1 in the middle of epoch 2."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if fd.distributed.rank() == 1 and self.epoch == 2 and batch == 2:
            os.kill(os.getpid(), signal.SIGKILL)


def backup_fit(extra=()):
    m = bn_model(False, dropout=0.2)
    backup = fd.callbacks.BackupAndRestore(os.path.join(OUT, "backup"), delete_checkpoint=False)
    h = m.fit(*data(), batch_size=8, epochs=4, seed=7, verbose=0, distributed=True,
              callbacks=[backup, *extra])
    return m, h


def backup_kill():
    fd.distributed.init(timeout=20)
    backup_fit([KillInEpoch()])


def backup_resume():
    """The fit again after the kill: it resumes from rank 0's last backup
    (epoch 2); then the same fit uninterrupted, for comparison."""
    fd.distributed.init(timeout=60)
    m, h = backup_fit()
    save("bresumed", m, epochs=h.epoch)
    straight = bn_model(False, dropout=0.2)
    straight.fit(*data(), batch_size=8, epochs=4, seed=7, verbose=0, distributed=True)
    save("bstraight", straight)


def equal_gpu():
    """CuPy models in a world of one GPU: the NCCL path (allreduce of the
    gradients and of synchronized batch norm's sums, broadcast of the
    weights) against a plain fit of the same model; prints the errors."""
    import cupy

    fd.distributed.init(timeout=120)
    cupy.cuda.Device(fd.distributed.local_rank()).use()
    x, y = data()
    xg, yg = cupy.asarray(x), cupy.asarray(y)
    errors = {}
    for name, make, xs in (("syncbn", lambda: bn_model(True), xg),
                           ("mlp", mlp_model, xg.astype(cupy.float32))):
        a, b = make(), make()
        a.fit(xs, yg, batch_size=16, epochs=2, shuffle=False, verbose=0, distributed=True)
        b.fit(xs, yg, batch_size=16, epochs=2, shuffle=False, verbose=0)
        errors[name] = max(float(abs(u - v).max()) / max(float(abs(v).max()), 1e-3)
                           for u, v in zip(a.get_weights(), b.get_weights()))
    print("gpu errors: " + json.dumps(errors), flush=True)


def report(what, fn):
    r = os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK", "?"))
    try:
        fn()
    except (ValueError, TypeError, RuntimeError) as e:
        print(f"rank {r} {what}: {type(e).__name__}: {e}", flush=True)
    else:
        print(f"rank {r} {what}: no error", flush=True)


def bad():
    """Each refused input, on every rank, in one run."""
    x, y = data()
    report("noinit", lambda: bn_model(False).fit(x, y, batch_size=8, verbose=0,
                                                 distributed=True))
    fd.distributed.init(timeout=60)
    r = fd.distributed.rank()
    n = N - 2 * r  # rank 1 has two samples fewer
    report("unequal", lambda: bn_model(False).fit(x[:n], y[:n], batch_size=8, verbose=0,
                                                  distributed=True))
    report("batch_size", lambda: bn_model(False).fit(x, y, batch_size=8 + r, verbose=0,
                                                     distributed=True))
    report("indivisible", lambda: bn_model(False).fit(x[:N - 1], y[:N - 1], batch_size=8,
                                                      verbose=0, distributed=True))
    report("generator", lambda: bn_model(False).fit(iter([(x, y)]), verbose=0,
                                                    distributed=True))
    report("op", lambda: fd.distributed.allreduce([np.ones(3)], op="prod"))
    report("arrays", lambda: fd.distributed.allreduce([np.ones(3), "a"]))
    report("strided", lambda: fd.distributed.allreduce(np.ones(3)[::2]))
    report("intmean", lambda: fd.distributed.allreduce(np.ones(3, np.int64)))
    report("root", lambda: fd.distributed.broadcast(np.ones(3), root=5))
    # the collectives themselves: mean, sum, max and broadcast
    a = np.full(4, float(r + 1))
    b = np.arange(3, dtype=np.int64) * (r + 1)
    fd.distributed.allreduce([a, b], op="sum")
    c = np.array([float(r)])
    fd.distributed.allreduce(c, op="max")
    d = np.array([float(r), 2.0 * r])
    fd.distributed.allreduce(d)
    e = np.full(2, float(r))
    fd.distributed.broadcast(e, root=fd.distributed.size() - 1)
    logs = fd.distributed.average_metrics({"loss": float(r), "n": 1})
    print(f"rank {r} values: " + json.dumps({"a": a.tolist(), "b": b.tolist(), "c": c.tolist(),
                                             "d": d.tolist(), "e": e.tolist(), "logs": logs,
                                             "size": fd.distributed.size(),
                                             "local_rank": fd.distributed.local_rank()}),
          flush=True)


def stuck():
    """Rank 1 stops answering collectives (but lives): the watchdog ends the job."""
    fd.distributed.init(timeout=4)
    if fd.distributed.rank() == 1:
        import time

        time.sleep(120)
    fd.distributed.barrier()


def fail_alone():
    """An uncaught error on rank 1 only: the job must end, not hang."""
    fd.distributed.init(timeout=60)
    if fd.distributed.rank() == 1:
        raise ZeroDivisionError("rank 1 fails alone")
    fd.distributed.barrier()


if __name__ == "__main__":
    OUT = sys.argv[2]
    {"equal": equal, "resume": resume, "kill": kill, "bad": bad, "fail_alone": fail_alone,
     "stuck": stuck, "backup_kill": backup_kill, "backup_resume": backup_resume,
     "equal_gpu": equal_gpu}[sys.argv[1]]()
