"""A short check that fusednn's CPU kernels run and agree with NumPy on this
CPU: a fused dense forward against NumPy, then a few steps of a Sequential
model with batch norm, ELU, dropout and Nadam. Run by tests/test_cpu_dispatch.py
under qemu-user's older CPU models; prints the dispatch level and "ok".
Exits 1 on a disagreement."""

from __future__ import annotations

import sys

import numpy as np


def main() -> int:
    import fusednn as fd
    from fusednn import _C

    rng = np.random.default_rng(0)
    x = rng.standard_normal((67, 45)).astype(np.float32)
    w = (rng.standard_normal((45, 33)) / np.sqrt(45)).astype(np.float32)
    b = rng.standard_normal(33).astype(np.float32)
    y, _ = fd.ops.dense_forward(x, w, b, "elu")
    z = x.astype(np.float64) @ w + b
    ref = np.where(z > 0, z, np.expm1(np.minimum(z, 0)))
    err = float(np.abs(y - ref).max() / np.abs(ref).max())
    if not err < 1e-5:
        print(f"cpu_smoke: dense forward disagrees with NumPy ({err:.2e})")
        return 1

    labels = (x[:, 0] > 0).astype(np.int64)
    model = fd.Sequential([fd.layers.Dense(32, use_bias=False,
                                            kernel_initializer=fd.initializers.HeNormal(seed=0)),
                           fd.layers.BatchNormalization(), fd.layers.Activation("elu"),
                           fd.layers.Dropout(0.2, seed=1),
                           fd.layers.Dense(2, activation="softmax",
                                            kernel_initializer=fd.initializers.GlorotUniform(seed=1))])
    model.compile("nadam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    hist = model.fit(x, labels, epochs=3, batch_size=16, seed=0, verbose=0)
    losses = hist.history["loss"]
    if not (np.all(np.isfinite(losses)) and losses[-1] < losses[0]):
        print(f"cpu_smoke: training did not reduce the loss: {losses}")
        return 1
    print(f"cpu_smoke: level {_C.cpu_dispatch()['level']}, dense error {err:.1e}, "
          f"losses {losses[0]:.3f} -> {losses[-1]:.3f}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
