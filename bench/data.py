"""fit's data sources against arrays in memory: a slow generator with and
without the prefetch thread, a Sequence loaded by two workers, and a memmap.

The network is issue W1's deep one (3072 -> 20 x [Dense(100) -> BN -> ELU]
-> Dense(10) softmax, Nadam) at batch 128, whose step takes a few
milliseconds on a CPU: the loader's 2 ms per batch (time.sleep, as a
stand-in for reading and decoding) can hide behind the step only when it
runs in another thread. Each contender trains one epoch of `--steps`
batches; the contenders run in turn, round after round (bench/_harness.py),
and each row gives its median epoch and the ratio to the in-memory epoch
(1.00: no cost; the target for the prefetched generator is <= 1.10).

Then the gather of a shuffled batch from arrays in memory, alone: NumPy's
``x[idx]`` against fit's (fusednn.models.batches._take_rows, fusednn's
threads) for 32, 128 and 1024 random rows of a 3072-wide float32 array of
192 MiB (beyond the caches), with the roofline a threaded contiguous copy of
as many bytes (fusednn._C.copy_into); GB/s count the bytes read and written.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _harness import chart, interleaved, machine, markdown, write_json  # noqa: E402

import fusednn as fd  # noqa: E402

SLEEP = 0.002
# what _harness.chart draws of the rows, by JSON name (bench/charts.py redraws saved ones)
CHARTS = {"data": {"labels": ("source",), "ratios": [("vs_arrays", "time / arrays' time")],
                   "fractions": [],
                   "ratio_label": "epoch time / in-memory arrays' epoch time (1: no cost)"}}


def network(features, seed=0):
    layers = [fd.Input((features,))]
    for i in range(20):
        layers += [fd.layers.Dense(100, use_bias=False,
                                   kernel_initializer=fd.initializers.HeNormal(seed + i)),
                   fd.layers.BatchNormalization(), fd.layers.Activation("elu")]
    layers.append(fd.layers.Dense(10, activation="softmax"))
    model = fd.Sequential(layers)
    model.compile(optimizer="nadam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


class SlowSequence(fd.utils.Sequence):
    """Batch i of (x, y) after `SLEEP` seconds, in a fresh order each epoch."""

    def __init__(self, x, y, batch, **kw):
        super().__init__(**kw)
        self.x, self.y, self.batch = x, y, batch
        self.order = np.random.default_rng(0).permutation(len(x))

    def __len__(self):
        return len(self.x) // self.batch

    def __getitem__(self, i):
        time.sleep(SLEEP)
        idx = self.order[i * self.batch:(i + 1) * self.batch]
        return self.x[idx], self.y[idx]

    def on_epoch_end(self):
        self.order = np.random.default_rng(len(self.order)).permutation(len(self.x))


def slow_batches(x, y, batch):
    """The same batches as SlowSequence, from a generator, forever."""
    rng = np.random.default_rng(0)
    while True:
        order = rng.permutation(len(x))
        for b in range(0, len(x) - batch + 1, batch):
            time.sleep(SLEEP)
            idx = order[b:b + batch]
            yield x[idx], y[idx]


def bench_gather(rounds, n=16384, features=3072, batches=(32, 128, 1024)):
    """Rows of the gather table: each gather's GB/s and its fraction of the
    copy roofline, interleaved (every batch of an epoch's permutation per
    turn)."""
    from fusednn import _C
    from fusednn.models.batches import _take_rows

    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, features), dtype=np.float32)
    take = _take_rows(x)
    rows = []
    for batch in batches:
        perm = rng.permutation(n)
        starts = range(0, n - batch + 1, batch)
        out = np.empty((batch, features), np.float32)

        def gather(f):
            def epoch():
                for s in starts:  # each batch dropped before the next, as in fit
                    f(perm[s:s + batch])
            return epoch

        def copy():
            for s in starts:
                _C.copy_into(out, x[s:s + batch])
        fns = {"numpy": gather(x.__getitem__), "fusednn": gather(take), "copy": copy}
        t = interleaved(fns, rounds, min_turn=0.1)
        moved = 2 * len(starts) * out.nbytes
        gbs = {k: moved / t.median(k) / 1e9 for k in fns}
        rows.append({"batch": batch, "numpy_gbs": round(gbs["numpy"], 1),
                     "fusednn_gbs": round(gbs["fusednn"], 1), "copy_gbs": round(gbs["copy"], 1),
                     "numpy_of_copy": round(gbs["numpy"] / gbs["copy"], 2),
                     "fusednn_of_copy": round(gbs["fusednn"] / gbs["copy"], 2),
                     "vs_numpy": round(t.ratio("numpy", "fusednn"), 2)})
        print(rows[-1], flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100, help="batches per epoch")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    features, n = 3072, args.steps * args.batch
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, features)).astype(np.float32)
    y = rng.integers(0, 10, size=n)
    tmp = tempfile.NamedTemporaryFile(suffix=".bin", delete=False)
    tmp.close()
    mm = np.memmap(tmp.name, dtype=np.float32, mode="w+", shape=x.shape)
    mm[:] = x
    mm.flush()
    mm = np.memmap(tmp.name, dtype=np.float32, mode="r", shape=x.shape)
    models = {k: network(features) for k in
              ("arrays", "generator, no prefetch", "generator, prefetch",
               "Sequence, 2 workers", "memmap")}
    gens = {k: slow_batches(x, y, args.batch) for k in models if k.startswith("generator")}
    seq = SlowSequence(x, y, args.batch)
    bs = args.batch
    fns = {
        "arrays": lambda: models["arrays"].fit(x, y, batch_size=bs, verbose=0),
        "generator, no prefetch": lambda: models["generator, no prefetch"].fit(
            gens["generator, no prefetch"], steps_per_epoch=args.steps, verbose=0, workers=0),
        "generator, prefetch": lambda: models["generator, prefetch"].fit(
            gens["generator, prefetch"], steps_per_epoch=args.steps, verbose=0, workers=1),
        "Sequence, 2 workers": lambda: models["Sequence, 2 workers"].fit(
            seq, verbose=0, workers=2),
        "memmap": lambda: models["memmap"].fit(mm, y, batch_size=bs, verbose=0),
    }
    try:
        t = interleaved(fns, args.rounds, min_turn=0.0)
    finally:
        os.unlink(tmp.name)  # the mapping stays valid until the process ends
    rows = []
    for k in fns:
        rows.append({"source": k, "epoch_ms": round(t.median(k) * 1e3, 1),
                     "step_ms": round(t.median(k) * 1e3 / args.steps, 2),
                     "vs_arrays": round(t.ratio(k, "arrays"), 3)})
        print(rows[-1], flush=True)
    cols = [("source", "source"), ("epoch_ms", "epoch ms"), ("step_ms", "per batch ms"),
            ("vs_arrays", "time / arrays' time")]
    info = machine()
    path = write_json("data.json", {"machine": info, "sleep_s": SLEEP, "steps": args.steps,
                                    "batch": args.batch, "rows": rows})
    print(f"\n{info['date']}, {info['cpu']}, {info['threads']} threads; "
          f"{args.steps} batches of {args.batch}, loader sleeps {SLEEP * 1e3:g} ms a batch")
    print(markdown(rows, cols))
    print(f"\nJSON: {path}")
    chart(path, rows, info=info, **CHARTS["data"])
    gather = bench_gather(args.rounds)
    path = write_json("data-gather.json", {"machine": info, "rows": gather})
    print("\nA shuffled batch's rows from a 192 MiB float32 array (16384 x 3072):")
    print(markdown(gather, [("batch", "batch"), ("numpy_gbs", "NumPy x[idx] GB/s"),
                            ("fusednn_gbs", "fit's gather GB/s"), ("copy_gbs", "copy GB/s"),
                            ("numpy_of_copy", "NumPy of copy"),
                            ("fusednn_of_copy", "fit's of copy"), ("vs_numpy", "vs NumPy")]))
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
