"""`python -m fusednn`: what was built, then the chapter's reference network
trained on the handwritten digits bundled with scikit-learn (8x8 images, 10
classes; nothing is downloaded): 20 x [Dense(100, He) -> BN -> ELU] ->
softmax, Nadam, early stopping, with a progress bar per epoch; prints the
test accuracy and the training throughput.

`--preset selu` trains the self-normalising variant (SELU, LeCun init, no
BN, SGD with Nesterov momentum); `--dense` runs the older demo instead: the
fused dense layer checked against the float64 reference and timed against
NumPy's separate ops."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import fusednn as fd
from fusednn._arrays import module_for
from fusednn.testing import reference as R


def _median_ms(fn, sync, reps):
    fn()
    sync()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(ts))


def load_digits_split(seed=0):
    """(x_train, y_train, x_test, y_test): scikit-learn's digits, shuffled,
    80/20, standardised with the training statistics, float32. A pixel that
    is constant over the training images (a corner, always 0) is only
    centred, as scikit-learn's StandardScaler does: dividing by its zero
    standard deviation would turn a test image's stray ink there into a
    value of 1e6."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = d.data.astype(np.float32), d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_train = int(0.8 * len(x))
    mu, sd = x[:n_train].mean(axis=0), x[:n_train].std(axis=0)
    x = (x - mu) / np.where(sd > 1e-6, sd, 1.0)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def train_demo(args, xp) -> int:
    x_train, y_train, x_test, y_test = (xp.asarray(a) for a in load_digits_split(args.seed))
    if args.preset == "default":
        model = fd.presets.default_dnn(64, 10, depth=args.depth, width=100, seed=args.seed,
                                       like=x_train)
        opt = fd.presets.default_optimizer("default_dnn")
    else:
        model = fd.presets.self_normalizing_dnn(64, 10, depth=args.depth, width=100,
                                                seed=args.seed, like=x_train)
        opt = fd.presets.default_optimizer("self_normalizing_dnn")
    model.compile(opt, "sparse_categorical_crossentropy", metrics=["accuracy"])
    print(f"\ndigits: {len(x_train)} training and {len(x_test)} test images; model: "
          f"{args.preset} preset, {args.depth} hidden layers of 100, "
          f"{sum(int(np.prod(w.shape)) for w in model.weights)} weights")
    stop = fd.callbacks.EarlyStopping(monitor="val_accuracy", patience=10,
                                      restore_best_weights=True)
    t0 = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                        validation_split=0.1, callbacks=[stop], seed=args.seed, verbose=1)
    seconds = time.perf_counter() - t0
    epochs = len(history.epoch)
    seen = epochs * (len(x_train) - int(np.ceil(0.1 * len(x_train))))
    loss, acc = model.evaluate(x_test, y_test)
    print(f"\ntest accuracy {acc:.4f} (loss {loss:.4f}) after {epochs} epochs; "
          f"training {seen / seconds:,.0f} samples/s (validation included) on {args.device}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fusednn", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--preset", choices=["default", "selu"], default="default")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dense", action="store_true",
                   help="the dense-layer demo instead of training")
    p.add_argument("--activation", default="elu", help="--dense: the activation")
    p.add_argument("--reps", type=int, default=7, help="--dense: timing repetitions")
    args = p.parse_args(argv)
    for name in ("epochs", "depth", "batch_size", "reps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")

    info = fd.build_info()
    print(f"fusednn {info['version']}: CPU ({info['blas_config']}, {info['cpu_threads']} threads)"
          f"; CUDA built: {info['cuda_built']}"
          + (f" (sm {info['cuda_archs']}, cuBLASLt from {info['cublaslt']})" if info["cuda_built"] else "")
          # Why there is no GPU only where it matters: with --device cuda.
          + (f"; GPU: {info['cuda_status']}" if info["cuda_usable"] else ""))
    if args.device == "cuda" and not fd.has_cuda():
        print(f"--device cuda: no CUDA backend: {fd.cuda_status()}", file=sys.stderr)
        return 2
    xp = module_for(args.device)
    sync = xp.cuda.get_current_stream().synchronize if args.device == "cuda" else (lambda: None)
    if not args.dense:
        return train_demo(args, xp)

    act = args.activation
    rng = np.random.default_rng(0)
    print(f"\ndense layer y = {act}(x @ w + b), float32, forward and forward+backward:")
    print(f"{'batch x in x out':>18} {'max err':>9} {'fused fwd':>10} {'NumPy fwd':>10} "
          f"{'fused f+b':>10} {'NumPy f+b':>10} {'speed-up':>9}")
    for m, k, n in [(32, 3072, 100), (256, 784, 1024), (1024, 1024, 1024)]:
        x = rng.standard_normal((m, k), dtype=np.float32)
        w = rng.standard_normal((k, n), dtype=np.float32) * np.float32((2.0 / k) ** 0.5)
        b = rng.standard_normal(n, dtype=np.float32) * np.float32(0.1)
        dy = rng.standard_normal((m, n), dtype=np.float32)
        ry = R.dense_forward(x, w, b, act)[0]
        rdx, rdw, rdb = R.dense_backward(dy, x, w, b, act)
        dx_, dw_, db_ = (xp.asarray(a) for a in (x, w, b))
        ddy = xp.asarray(dy)
        y, ctx = fd.ops.dense_forward(dx_, dw_, db_, act)
        gx, gw, gb = fd.ops.dense_backward(ddy, ctx)
        host = (lambda a: a) if xp is np else xp.asnumpy
        err = max(float(np.abs(host(g) - r).max() / np.abs(r).max())
                  for g, r in [(y, ry), (gx, rdx), (gw, rdw), (gb, rdb)])

        f_np = (lambda z: xp.where(z > 0, z, xp.expm1(xp.minimum(z, 0)))) if act == "elu" else \
            (lambda z: xp.maximum(z, 0)) if act == "relu" else None

        def fused_fb():
            yy, c = fd.ops.dense_forward(dx_, dw_, db_, act)
            return fd.ops.dense_backward(ddy, c)

        t_fwd = _median_ms(lambda: fd.ops.dense_forward(dx_, dw_, db_, act), sync, args.reps)
        t_fb = _median_ms(fused_fb, sync, args.reps)
        if f_np is not None:
            def np_fb():
                z = dx_ @ dw_ + db_
                yy = f_np(z)
                dz = ddy * (xp.where(z > 0, 1, yy + 1) if act == "elu" else (z > 0))
                return dz @ dw_.T, dx_.T @ dz, dz.sum(0)

            n_fwd = _median_ms(lambda: f_np(dx_ @ dw_ + db_), sync, args.reps)
            n_fb = _median_ms(np_fb, sync, args.reps)
            ratio = f"{n_fb / t_fb:8.2f}x"
        else:
            n_fwd = n_fb = float("nan")
            ratio = "      n/a"
        print(f"{f'{m}x{k}x{n}':>18} {err:9.1e} {t_fwd:8.2f}ms {n_fwd:8.2f}ms "
              f"{t_fb:8.2f}ms {n_fb:8.2f}ms {ratio}")
    print("\n(max err: worst scaled error of y, dx, dw, db against the float64 reference; "
          "speed-up: NumPy f+b time / fused f+b time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
