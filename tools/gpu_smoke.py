"""Every CUDA op once, on small odd shapes: the program tools/gpu_check.sh runs
under compute-sanitizer. CuPy's memory pool is switched off first, so each
array is its own allocation and an access past its end is caught.

Exits 0 when every call ran and its result agrees with the CPU backend, 1
otherwise (the sanitizer then adds its own errors)."""

from __future__ import annotations

import sys

import numpy as np


def main() -> int:
    import fusednn as fd

    if not fd.has_cuda():
        print(f"gpu_smoke: no CUDA backend: {fd.cuda_status()}", file=sys.stderr)
        return 2
    import cupy as cp

    cp.cuda.set_allocator(None)
    rng = np.random.default_rng(0)
    failures = []

    def agree(name, gpu, cpu, rtol=1e-4):
        gpu = [g for g in (gpu if isinstance(gpu, (tuple, list)) else [gpu]) if g is not None]
        cpu = [c for c in (cpu if isinstance(cpu, (tuple, list)) else [cpu]) if c is not None]
        for g, c in zip(gpu, cpu):
            g = np.asarray(g.get() if hasattr(g, "get") else g, dtype=np.float64)
            c = np.asarray(c, dtype=np.float64)
            scale = max(float(np.abs(c).max()) if c.size else 0.0, 1e-30)
            err = float(np.abs(g - c).max()) / scale if c.size else 0.0
            if not err <= rtol:
                failures.append(f"{name}: scaled error {err:.2e}")

    def both(fn, *arrays):
        """fn on the CPU arrays and on their GPU copies."""
        return fn(*arrays), fn(*[None if a is None else cp.asarray(a) for a in arrays])

    m, k, n = 37, 19, 45
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    dy = rng.standard_normal((m, n)).astype(np.float32)
    for act in ("linear", "relu", "elu", "gelu", "swish"):
        for approximate in ((False, True) if act == "gelu" else (False,)):
            kw = {"approximate": True} if approximate else {}
            tag = act + ("_tanh" if approximate else "")

            def fwd_bwd(x_, w_, b_, dy_, act=act, kw=kw):
                y, ctx = fd.ops.dense_forward(x_, w_, b_, act, **kw)
                return (y, *fd.ops.dense_backward(dy_, ctx))

            c, g = both(fwd_bwd, x, w, b, dy)
            agree(f"dense {tag}", g, c, 2.0 ** -10 if approximate else 1e-4)

            def act_fb(x_, dy_, act=act, kw=kw):
                y, ctx = fd.ops.activation_forward(x_, act, **kw)
                return y, fd.ops.activation_backward(dy_, ctx)

            c, g = both(act_fb, x, x)
            agree(f"activation {tag}", g, c)

    # a stack whose backward fuses each layer's dx GEMM with the layer below
    dims = [k, 24, 17, 5]
    ws = [(rng.standard_normal((dims[i], dims[i + 1])) / 4).astype(np.float32)
          for i in range(3)]
    bs = [rng.standard_normal(dims[i + 1]).astype(np.float32) for i in range(3)]
    dy3 = rng.standard_normal((m, 5)).astype(np.float32)
    for act in ("relu", "gelu"):
        def stack(x_, dy_, *wb, act=act):
            h, ctxs = x_, []
            for i in range(3):
                kw = {"approximate": True} if act == "gelu" and i < 2 else {}
                h, c = fd.ops.dense_forward(h, wb[i], wb[3 + i], act if i < 2 else "linear", **kw)
                ctxs.append(c)
            dx, grads = fd.ops.dense_stack_backward(dy_, ctxs, need_dx=True)
            return [dx] + [a for pair in grads for a in pair]

        c, g = both(stack, x, dy3, *ws, *bs)
        agree(f"dense stack {act}", g, c, 2.0 ** -10)

    gamma, beta = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    for rate in (0.0, 0.3):
        def bn(z, dy_, gamma_, beta_, rate=rate):
            mm, mv = z[0] * 0, z[0] * 0 + 1
            y, ctx = fd.ops.batchnorm_forward(z, gamma_, beta_, mm, mv, training=True,
                                              activation="elu", dropout=rate, seed=3, step=1)
            return (y, *fd.ops.batchnorm_backward(dy_, ctx), mm, mv)

        c, g = both(bn, dy, dy, gamma, beta)
        agree(f"batchnorm dropout={rate}", g, c)

        def dense_bn(x_, w_, dy_, gamma_, beta_, rate=rate):
            mm, mv = dy_[0] * 0, dy_[0] * 0 + 1
            y, ctx = fd.ops.dense_batchnorm_forward(x_, w_, None, gamma_, beta_, mm, mv,
                                                    training=True, activation="elu",
                                                    dropout=rate, seed=3, step=1)
            return (y, *fd.ops.dense_batchnorm_backward(dy_, ctx))

        c, g = both(dense_bn, x, w, dy, gamma, beta)
        agree(f"dense+batchnorm dropout={rate}", g, c)

    for alpha in (False, True):
        for store in (True, False):
            def drop(x_, dy_, alpha=alpha, store=store):
                y, ctx = fd.ops.dropout_forward(x_, 0.25, seed=5, step=2, alpha=alpha,
                                                store_mask=store)
                return y, fd.ops.dropout_backward(dy_, ctx)

            c, g = both(drop, dy, dy)
            agree(f"dropout alpha={alpha} store={store}", g, c)

    labels = rng.integers(0, n, m)
    c, g = both(lambda z, t: fd.ops.softmax_cross_entropy(z, t), dy, labels)
    agree("softmax cross-entropy", g, c)
    target = (rng.random((m, n)) > 0.5).astype(np.float32)
    c, g = both(lambda z, t: fd.ops.sigmoid_binary_cross_entropy(z, t), dy, target)
    agree("binary cross-entropy", g, c)
    c, g = both(lambda z, t: fd.ops.mean_squared_error(z, t), dy, target)
    agree("mean squared error", g, c)

    shapes = [(k, n), (n,), (3, 70001), (1,)]
    p0 = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    g0 = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    for name in ("SGD", "Adagrad", "RMSprop", "Adam", "Adamax", "Nadam", "AdamW", "Ftrl"):
        for clip in ({}, {"clipnorm": 0.5}, {"global_clipnorm": 1.0}, {"clipvalue": 0.1}):
            def step(*arrays, name=name, clip=clip):
                params = [a.copy() for a in arrays[:4]]
                opt = getattr(fd.optimizers, name)(**clip)
                cons = [fd.constraints.MaxNorm(1.0), None, None, None]
                for _ in range(2):
                    opt.apply(list(arrays[4:]), params, constraints=cons)
                return params

            c, g = both(step, *p0, *g0)
            agree(f"{name} {clip}", g, c)

    # fit's compiled step (a CUDA graph from the second batch of each shape on)
    # against the same fit layer by layer
    fits = {}
    for jit in (True, False):
        model = fd.presets.default_dnn(k, 10, depth=3, width=32, seed=0, like=cp.zeros(1))
        model.compile("nadam", "sparse_categorical_crossentropy", metrics=["accuracy"],
                      jit_compile=jit)
        hist = model.fit(cp.asarray(x), cp.asarray(labels % 10), epochs=2, batch_size=16,
                         verbose=0, seed=1)
        fits[jit] = (model, hist.history["loss"])
        graphs = getattr(getattr(model._engine, "_plan", None), "graphs", 0)
        if jit and (model.step_mode != "compiled" or graphs < 1):
            failures.append(f"fit: step {model.step_mode!r}, {graphs} graphs")
    agree("fit: compiled step's weights", fits[True][0].get_weights(),
          fits[False][0].get_weights(), rtol=1e-5)
    agree("fit: compiled step's losses", fits[True][1], fits[False][1], rtol=1e-5)
    fits[True][0].predict(cp.asarray(x))
    cp.cuda.get_current_stream().synchronize()

    for f in failures:
        print("gpu_smoke:", f, file=sys.stderr)
    print(f"gpu_smoke: {'FAILED' if failures else 'ok'}, {len(failures)} disagreements")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
