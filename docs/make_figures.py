"""Draw the README's fd.plot figures into docs/figures/ (a few seconds on a
CPU; needs matplotlib).

    python docs/make_figures.py [--out docs/figures]

The data are synthetic: three classes of points in 20 dimensions, labelled by
two noisy linear rules, so that the figures come out the same on every
machine and need no download.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

import fusednn as fd
from fusednn.callbacks import GradientHealth

L = fd.layers
HERE = os.path.dirname(os.path.abspath(__file__))


def data(n=3000, features=20, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype(np.float32)
    w = rng.standard_normal((features, 2)).astype(np.float32)
    z = x @ w + 0.5 * rng.standard_normal((n, 2)).astype(np.float32)
    y = (z[:, 0] > 0).astype(np.int64) + (z[:, 1] > 0.5).astype(np.int64)
    return x, y


def network(activation, initializer, depth, units=64, seed=0):
    """`depth` Dense(units, activation) layers, their kernels drawn by
    ``initializer(seed)``, then a softmax over 3 classes."""
    layers = [fd.Input((20,))]
    for i in range(depth):
        layers.append(L.Dense(units, activation=activation,
                              kernel_initializer=initializer(seed + i)))
    layers.append(L.Dense(3, activation="softmax",
                          kernel_initializer=fd.initializers.GlorotUniform(seed + depth)))
    model = fd.Sequential(layers)
    model.compile(optimizer=fd.optimizers.Nadam(learning_rate=2e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join(HERE, "figures"))
    args = p.parse_args(argv)
    out = args.out
    os.makedirs(out, exist_ok=True)
    x, y = data()

    # an ELU network with He initialisation: the chapter's default recipe
    model = network("elu", fd.initializers.HeNormal, depth=6)
    lrs, losses = fd.tools.find_learning_rate(model, x, y, min_lr=1e-5, max_lr=10.0,
                                              batch_size=32, seed=0)
    fd.plot.lr_finder(lrs, losses, path=os.path.join(out, "lr_finder.png"))
    history = model.fit(x, y, epochs=15, batch_size=64, validation_split=0.2, verbose=0,
                        seed=0)
    fd.plot.learning_curves(history, path=os.path.join(out, "learning_curves.png"))
    fd.plot.activation_histograms(model, x[:500], path=os.path.join(out,
                                                                    "activation_histograms.png"))

    # a deep sigmoid network drawn from N(0, 1), before Glorot: the
    # gradients fade towards the bottom layers (vanishing gradients)
    sigmoid = network("sigmoid", lambda seed: fd.initializers.RandomNormal(stddev=1.0, seed=seed),
                      depth=8)
    sigmoid.fit(x, y, epochs=3, batch_size=64, verbose=0, seed=0,
                callbacks=[GradientHealth(every=10, warn=False)])
    fd.plot.gradient_health(sigmoid.history, metric="grad_std",
                            path=os.path.join(out, "gradient_health.png"))

    steps = 15 * int(np.ceil(0.8 * len(x) / 64))
    fd.plot.schedule(fd.schedules.OneCycle(0.05, total_steps=steps),
                     steps, path=os.path.join(out, "schedule.png"))
    for name in sorted(os.listdir(out)):
        print(os.path.join(out, name), os.path.getsize(os.path.join(out, name)), "bytes")


if __name__ == "__main__":
    main()
