"""The cost of fd.callbacks.GradientHealth: fit with it (every=50) against
fit without, on issue W1's deep network (3072 -> 20 x [Dense(100) -> BN ->
ELU] -> Dense(10) softmax, Nadam) at batch 128, in turn, round after round
(bench/_harness.py). A recorded step runs layer by layer and adds one
statistics pass over its activations and gradients; the target is a cost of
at most 5% of fit time.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _harness import chart, interleaved, machine, markdown, write_json  # noqa: E402
from data import network  # noqa: E402

from fusednn.callbacks import GradientHealth  # noqa: E402

# what _harness.chart draws of the rows, by JSON name (bench/charts.py redraws saved ones)
CHARTS = {"health": {"labels": ("run",), "ratios": [("vs_fit", "time / fit's time")],
                     "fractions": [],
                     "ratio_label": "fit time / fit's time without GradientHealth (1: no cost)"}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200, help="batches per fit")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    n = args.steps * args.batch
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3072)).astype(np.float32)
    y = rng.integers(0, 10, size=n)
    plain, watched = network(3072), network(3072)
    cb = GradientHealth(every=args.every, warn=False)
    warnings.simplefilter("ignore")
    fns = {"fit": lambda: plain.fit(x, y, batch_size=args.batch, verbose=0),
           "fit + GradientHealth": lambda: watched.fit(x, y, batch_size=args.batch, verbose=0,
                                                      callbacks=[cb])}
    t = interleaved(fns, args.rounds, min_turn=0.0)
    rows = [{"run": k, "s": round(t.median(k), 3), "vs_fit": round(t.ratio(k, "fit"), 3)}
            for k in fns]
    info = machine()
    path = write_json("health.json", {"machine": info, "steps": args.steps, "batch": args.batch,
                                      "every": args.every, "rows": rows})
    print(f"\n{info['date']}, {info['cpu']}, {info['threads']} threads; {args.steps} batches of "
          f"{args.batch}, GradientHealth(every={args.every}): "
          f"{len(watched.history.health)} records a fit")
    print(markdown(rows, [("run", "run"), ("s", "fit s"), ("vs_fit", "time / fit's time")]))
    print(f"\nJSON: {path}")
    chart(path, rows, info=info, **CHARTS["health"])


if __name__ == "__main__":
    main()
