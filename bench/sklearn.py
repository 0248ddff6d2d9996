"""fusednn.sklearn.FusedClassifier against scikit-learn's MLPClassifier.

The same task and the same network for both: make_classification (60000
samples x 100 features, 10 classes, 50 informative, random_state=0), split
50000 / 10000 (random_state=0); 100 -> 3 x Dense(256, relu) -> 10 softmax,
Adam (learning rate 1e-3), batch 128, L2 alpha=1e-4 (MLPClassifier's
meaning for both), 10 epochs with shuffling:

  MLPClassifier: ``max_iter=10, tol=0, n_iter_no_change=10**9`` (all 10
    epochs; its ConvergenceWarning is silenced), float64 NumPy, NumPy's
    BLAS threads;
  FusedClassifier: ``epochs=10`` (exactly 10), float32, fusednn's CPU
    kernels with the compiled step (one native call per batch);
  FusedClassifier, preset="default": the chapter's default network of the
    same widths (he_normal, BatchNormalization before each activation, ELU),
    the same optimizer and epochs.

Timing: one whole ``fit`` per turn (data validation and the network's
construction included), the contenders interleaved round after round with a
pause before each turn for the previous one's thread pool to fall asleep
(see _harness.py); fit seconds are medians over the rounds, the ratio the
median of per-round ratios (MLPClassifier's time / ours). Test accuracy is
that of each contender's fit (deterministic for a fixed random_state: the
same every round). Target: FusedClassifier at least 2x faster than
MLPClassifier at equal accuracy (within 0.01).

    python bench/sklearn.py [--rounds N] [--quick]

JSON: bench/results/sklearn-cpu.json, or under FUSEDNN_BENCH_OUT.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

# This file has the name of the package it measures: its folder must not
# shadow scikit-learn, so it leaves sys.path before anything imports sklearn.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

from sklearn.datasets import make_classification  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402

from fusednn.sklearn import FusedClassifier  # noqa: E402

sys.path.append(_HERE)
from _harness import Timings, chart, machine, markdown, write_json  # noqa: E402

# what _harness.chart draws of the rows, by JSON name (bench/charts.py redraws saved ones)
CHARTS = {"sklearn": {"labels": ("contender",),
                      "ratios": [("speedup", "MLPClassifier time / this")], "fractions": [],
                      "ratio_label": "MLPClassifier's fit time / this fit time (> 1: faster)"}}

WIDTHS = (256, 256, 256)
EPOCHS = 10
BATCH = 128


def data(n_samples, seed=0):
    X, y = make_classification(n_samples=n_samples, n_features=100, n_informative=50,
                               n_redundant=10, n_classes=10, random_state=seed)
    return train_test_split(X, y, test_size=1 / 6, random_state=seed)


def contenders(epochs):
    mlp = MLPClassifier(hidden_layer_sizes=WIDTHS, activation="relu", solver="adam",
                        learning_rate_init=1e-3, batch_size=BATCH, max_iter=epochs, tol=0.0,
                        n_iter_no_change=10**9, alpha=1e-4, random_state=0)
    ours = FusedClassifier(hidden_layer_sizes=WIDTHS, activation="relu", dropout=0.0,
                           optimizer="adam", learning_rate=1e-3, batch_size=BATCH,
                           epochs=epochs, alpha=1e-4, random_state=0)
    preset = FusedClassifier(hidden_layer_sizes=WIDTHS, preset="default", optimizer="adam",
                             learning_rate=1e-3, batch_size=BATCH, epochs=epochs, alpha=1e-4,
                             random_state=0)
    return {"MLPClassifier": mlp, "FusedClassifier": ours,
            "FusedClassifier preset=default": preset}


def run(rounds, n_samples, epochs, settle=2.0):
    X_train, X_test, y_train, y_test = data(n_samples)
    ests = contenders(epochs)
    times = Timings({name: [] for name in ests})
    accuracy, iters = {}, {}
    for _ in range(rounds):
        for name, est in ests.items():
            time.sleep(settle)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                est.fit(X_train, y_train)
            times[name].append(time.perf_counter() - t0)
            acc = float(est.score(X_test, y_test))
            # fits are deterministic: every round must give the same model
            assert accuracy.setdefault(name, acc) == acc, (name, accuracy[name], acc)
            iters[name] = int(est.n_iter_)
    rows = []
    base = "MLPClassifier"
    for name in ests:
        rows.append({
            "contender": name, "fit_s": round(times.median(name), 2),
            "epochs": iters[name], "test_accuracy": round(accuracy[name], 4),
            "speedup": round(times.ratio(base, name), 2),
            "accuracy_diff": round(accuracy[name] - accuracy[base], 4),
            "times_s": [round(t, 3) for t in times[name]],
            "step_mode": getattr(getattr(ests[name], "model_", None), "step_mode", "-"),
        })
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true",
                   help="6000 samples, 2 epochs, 1 round (a check that the script runs)")
    args = p.parse_args(argv)
    n_samples, epochs, rounds = (6000, 2, 1) if args.quick else (60000, EPOCHS, args.rounds)
    rows = run(rounds, n_samples, epochs)
    info = machine()
    info["numpy_threads"] = _numpy_threads()
    import sklearn

    info["sklearn"] = sklearn.__version__
    config = {"samples": n_samples, "features": 100, "classes": 10, "widths": WIDTHS,
              "batch_size": BATCH, "epochs": epochs, "rounds": rounds}
    path = write_json(f"sklearn-cpu{'-quick' if args.quick else ''}.json",
                      {"machine": info, "config": config, "rows": rows})
    print(f"\n{info['date']}, {info['cpu']}, fusednn {info['threads']} threads, NumPy "
          f"{info['numpy_threads']} BLAS threads, scikit-learn {info['sklearn']}; "
          f"{n_samples} x 100, 10 classes, {epochs} epochs, median of {rounds}")
    print(markdown(rows, [("contender", "contender"), ("fit_s", "fit s"),
                          ("epochs", "epochs"), ("test_accuracy", "test accuracy"),
                          ("accuracy_diff", "accuracy - MLP's"),
                          ("speedup", "MLPClassifier time / this")]))
    print(f"\n(speedup > 1: faster than MLPClassifier)\nJSON: {path}")
    chart(path, rows, info=info, **CHARTS["sklearn"])


def _numpy_threads():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"
             and "scipy_openblas32" not in p.get("filepath", "")]
    return pools[0]["num_threads"] if pools else None


if __name__ == "__main__":
    main()
