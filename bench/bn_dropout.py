"""Fused BN + ELU (+ dropout) and softmax cross-entropy vs NumPy and PyTorch.

One training step's forward + backward in float32, timed interleaved with
  - the roofline: the bytes the step must move at the machine's copy
    bandwidth, measured in the same run with the same threads (a parallel
    memcpy of 512 MB, fusednn._C.copy_into on CPU, a CuPy copy on GPU;
    STREAM's convention, read + write bytes);
  - NumPy as a careful NumPy user writes it (float32 throughout, no float64
    temporaries, in place where it can be; on the GPU the same code on CuPy);
  - PyTorch (where installed, same thread count): torch.nn modules in train
    mode and autograd.
Correctness is checked against the float64 reference before timing.

Bytes that must move (float32; per element of x, of shape (batch, features)):

  BN + ELU forward: 12. The statistics need a whole pass over x before any
    output can be normalised, so x is read twice (once for the per-feature
    mean and variance, once to normalise) and y written once.
  BN + ELU backward: 20. dbeta and dgamma (column sums of dz and dz * x_hat)
    are needed by every element of dx, so dy and x are read twice (once for
    the column sums, once for dx) and dx written once; ELU's derivative could
    come from z, recomputed from x and the per-feature statistics, so y need
    not be read. (fusednn reads y in its first backward pass instead, 4 more
    bytes, to take ELU's derivative from the output without an expm1 per
    element, and keeps dz in dx between its two passes: 40 bytes in all.)
  Dropout: + 3/8. The mask is one bit per element, written by the forward
    and read by both passes of the backward.
  So 32 bytes per element without dropout, 32.375 with it. The per-feature
  vectors (gamma, beta, statistics, moving averages) are negligible.

  Softmax cross-entropy, forward + gradient: 8 bytes per logit (read the
    logits, write the gradient; a row of logits fits in the L1 cache, so the
    max / sum-of-exp pass and the gradient pass need one read from memory)
    + 8 bytes per row for the int64 labels.

GB/s = these bytes / the step time; "of copy bw" = that / the copy
bandwidth. At small shapes everything fits in the caches and the per-call
overhead dominates: there the numbers measure overhead, not memory. Every
contender allocates its outputs afresh per call (first-touch page faults
included), as a training step does.

    python bench/bn_dropout.py [--device cpu|cuda] [--rounds N] [--quick]

--quick shrinks every shape (rows by 64, columns by 4) and the copy by 64,
for checking that the script runs; its JSON goes to bn_dropout-<device>-quick.json.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

import numpy as np

import fusednn as fd
from fusednn import _C
from fusednn.testing import reference as R

sys.path.insert(0, os.path.dirname(__file__))
from _harness import chart, interleaved, machine, markdown, write_json  # noqa: E402

# The copy roofline moves at least this much, far beyond the caches, so that
# it measures memory (on the CPU glibc copies such ranges with non-temporal
# stores: the bytes counted are the bytes that move).
COPY_BYTES = 512 << 20
BN_SHAPES = [(32, 100), (1024, 1024), (65536, 1024)]
CE_SHAPES = [(1024, 10), (65536, 1000)]
RATE = 0.2
EPS = 1e-3  # fusednn's (Keras') default epsilon; passed to torch too
MOMENTUM = 0.99  # Keras convention; torch's momentum=0.01 is the same update
BN_BYTES = 12 + 20  # per element, forward + backward
MASK_BYTES = 3 / 8  # per element: one bit written, read twice
DROPOUT_BYTES = 16 + 2 / 8  # x read, y written; dy read, dx written; the mask bit written, read
POINT_BYTES = 12  # prediction and target read, gradient written
ELEMENTWISE_SHAPE = (65536, 1024)
# what _harness.chart draws of the rows, by JSON name (bench/charts.py redraws saved ones)
CHARTS = {"bn_dropout": {
    "labels": lambda r: f"{r['op']} {r['shape']}" + ("" if r.get("dropout") in (None, "-")
                                                   else f" dropout {r['dropout']}"),
    "ratios": [("vs_numpy", "vs NumPy (CuPy on GPU)"), ("vs_torch", "vs torch")],
    "fractions": [("of_copy", "of copy bandwidth")]}}


def quick_shape(shape):
    rows, cols = shape
    return max(8, rows // 64), max(10, cols // 4)


# ------------------------------------------------------------------ peers


def numpy_bn(xp, gamma, beta, mm, mv, rate, seed=0):
    """BN + ELU (+ inverted dropout) forward and backward written with
    (Num|Cu)Py ufuncs in float32, in place where the values are not needed
    again. Returns (fwd, bwd, fwdbwd): fwd(x) -> (y, saved), bwd(dy, saved)
    -> (dx, dgamma, dbeta)."""
    f32 = np.float32
    eps, mom = f32(EPS), f32(MOMENTUM)
    scale = f32(1.0 / (1.0 - rate)) if rate else None
    rng = xp.random.default_rng(seed)

    def fwd(x):
        m = x.shape[0]
        mean = x.mean(axis=0)
        xhat = x - mean
        var = xp.square(xhat).mean(axis=0)
        invstd = f32(1) / xp.sqrt(var + eps)
        xhat *= invstd
        z = xhat * gamma
        z += beta
        a = xp.minimum(z, f32(0))
        xp.expm1(a, out=a)
        act = xp.where(z > 0, z, a)  # ELU
        del a
        mm[:] *= mom  # moving statistics, as every contender keeps them
        mm[:] += (f32(1) - mom) * mean
        mv[:] *= mom
        mv[:] += (f32(1) - mom) * var
        keep = None
        if rate:
            keep = rng.random(x.shape, dtype=np.float32) >= rate
            y = act * keep
            y *= scale
        else:
            y = act
        return y, (m, xhat, z, act, keep, invstd)

    def bwd(dy, saved):
        m, xhat, z, act, keep, invstd = saved
        if keep is not None:
            d = dy * keep
            d *= scale
        else:
            d = dy
        act += f32(1)  # ELU' = exp(z) = act + 1 where z <= 0; act is not needed again
        dz = d * xp.where(z > 0, f32(1), act)
        dbeta = dz.sum(axis=0)
        dgamma = (dz * xhat).sum(axis=0)
        dx = xhat
        dx *= dgamma / f32(m)
        xp.subtract(dz, dx, out=dx)
        dx -= dbeta / f32(m)
        dx *= gamma * invstd
        return dx, dgamma, dbeta

    def fwdbwd(x, dy):
        y, saved = fwd(x)
        return bwd(dy, saved)

    return fwd, bwd, fwdbwd


def numpy_ce(xp):
    """Softmax cross-entropy (batch mean) and its gradient, float32, one
    scratch array: max-subtracted logits, exponentiated in place, scaled in
    place into (softmax - onehot) / N."""
    f32 = np.float32

    def step(logits, labels):
        n = logits.shape[0]
        rows = xp.arange(n)
        s = logits - logits.max(axis=1, keepdims=True)
        picked = s[rows, labels]
        xp.exp(s, out=s)
        se = s.sum(axis=1)
        s *= (f32(1) / (se * f32(n)))[:, None]
        s[rows, labels] -= f32(1) / f32(n)
        loss = (xp.log(se) - picked).mean()
        return loss, s

    return step


def torch_module():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(fd.num_threads())
    return torch


def torch_bn(torch, n, rate, device, tx, tdy):
    """BatchNorm1d + ELU (+ Dropout) in train mode; forward, y.backward(dy)."""
    layers = [torch.nn.BatchNorm1d(n, momentum=1 - MOMENTUM, eps=EPS), torch.nn.ELU()]
    if rate:
        layers.append(torch.nn.Dropout(rate))
    model = torch.nn.Sequential(*layers).to(device).train()
    bn = layers[0]
    with torch.no_grad():
        g = torch.Generator().manual_seed(3)
        bn.weight.copy_(1 + 0.1 * torch.randn(n, generator=g))
        bn.bias.copy_(0.1 * torch.randn(n, generator=g))
    txg = tx.detach().requires_grad_(True)

    def step():
        model(txg).backward(tdy)
        txg.grad = None
        bn.weight.grad = bn.bias.grad = None

    return step, model, txg


def torch_ce(torch, tlogits, tlabels):
    tl = tlogits.detach().requires_grad_(True)

    def step():
        torch.nn.functional.cross_entropy(tl, tlabels).backward()
        tl.grad = None

    return step


# ------------------------------------------------------------- correctness


def relerr(got, ref):
    return float(np.abs(np.asarray(got, dtype=np.float64) - ref).max()
                 / max(np.abs(ref).max(), 1e-30))


def check_bn(xp, to_np, torch, device):
    """Ours (and the peers) == the float64 reference on a small shape."""
    rng = np.random.default_rng(1)
    m, n = 96, 37
    x = (rng.standard_normal((m, n)) * 2 + 0.5).astype(np.float32)
    dy = rng.standard_normal((m, n)).astype(np.float32)
    gamma = (1 + 0.1 * rng.standard_normal(n)).astype(np.float32)
    beta = (0.1 * rng.standard_normal(n)).astype(np.float32)
    mean, var = R.batchnorm_statistics(x)
    for rate in (None, RATE):
        r = rate or 0.0
        mm, mv = xp.zeros(n, dtype=np.float32), xp.ones(n, dtype=np.float32)
        y, ctx = fd.ops.batchnorm_forward(xp.asarray(x), xp.asarray(gamma), xp.asarray(beta),
                                          mm, mv, training=True, activation="elu",
                                          dropout=rate, seed=0, step=5)
        dx, dg, db = fd.ops.batchnorm_backward(xp.asarray(dy), ctx)
        keep = None
        if rate:
            bits = np.unpackbits(to_np(ctx.mask).view(np.uint8), bitorder="little")
            keep = bits[:x.size].reshape(x.shape).astype(bool)
            frac = keep.mean()
            assert abs(frac - (1 - rate)) < 0.05, f"kept fraction {frac:.3f} for rate {rate}"
        ry = R.batchnorm_forward(x, gamma, beta, mean, var, EPS, "elu", keep=keep, rate=r)
        rdx, rdg, rdb = R.batchnorm_backward(dy, x, gamma, beta, mean, var, EPS, True, "elu",
                                             keep=keep, rate=r)
        for what, got, ref in (("y", y, ry), ("dx", dx, rdx), ("dgamma", dg, rdg),
                               ("dbeta", db, rdb)):
            err = relerr(to_np(got), ref)
            assert err < 1e-4, f"BN dropout={rate}: fusednn {what} disagrees with the " \
                               f"reference ({err:.2e})"
        # the NumPy composition, with its own mask
        fwd, bwd, _ = numpy_bn(xp, xp.asarray(gamma), xp.asarray(beta),
                               xp.zeros(n, dtype=np.float32), xp.ones(n, dtype=np.float32), r)
        ny, saved = fwd(xp.asarray(x))
        ny = np.array(to_np(ny))  # bwd updates the activation in place
        nkeep = None if saved[4] is None else to_np(saved[4])
        ry = R.batchnorm_forward(x, gamma, beta, mean, var, EPS, "elu", keep=nkeep, rate=r)
        rdx = R.batchnorm_backward(dy, x, gamma, beta, mean, var, EPS, True, "elu",
                                   keep=nkeep, rate=r)[0]
        ndx = bwd(xp.asarray(dy), saved)[0]
        for what, got, ref in (("y", ny, ry), ("dx", ndx, rdx)):
            err = relerr(to_np(got), ref)
            assert err < 1e-4, f"BN dropout={rate}: the NumPy peer's {what} disagrees " \
                               f"({err:.2e})"
    if torch is not None:  # torch without dropout (its mask is not visible)
        tx = torch.as_tensor(x, device=device)
        step, model, txg = torch_bn(torch, n, None, device, tx,
                                    torch.as_tensor(dy, device=device))
        g = model[0].weight.detach().cpu().numpy()
        b = model[0].bias.detach().cpu().numpy()
        model(txg).backward(torch.as_tensor(dy, device=device))
        rdx = R.batchnorm_backward(dy, x, g, b, mean, var, EPS, True, "elu")[0]
        err = relerr(txg.grad.cpu().numpy(), rdx)
        assert err < 1e-4, f"BN: the torch peer's dx disagrees with the reference ({err:.2e})"


def reference_ce(logits, labels):
    """(loss, gradient) in float64: the reference's if it has one."""
    if hasattr(R, "softmax_cross_entropy"):
        return R.softmax_cross_entropy(logits, labels)
    z = logits.astype(np.float64)
    n = z.shape[0]
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    onehot = np.zeros_like(z)
    onehot[np.arange(n), labels] = 1.0
    return float(-logp[np.arange(n), labels].mean()), (np.exp(logp) - onehot) / n


def check_ce(xp, to_np):
    rng = np.random.default_rng(2)
    logits = (rng.standard_normal((77, 13)) * 3).astype(np.float32)
    labels = rng.integers(0, 13, 77, dtype=np.int64)
    rl, rg = reference_ce(logits, labels)
    for who, (loss, g) in (
            ("fusednn", fd.ops.softmax_cross_entropy(xp.asarray(logits), xp.asarray(labels))),
            ("the NumPy peer", numpy_ce(xp)(xp.asarray(logits), xp.asarray(labels)))):
        lerr = abs(float(loss) - rl) / abs(rl)
        gerr = relerr(to_np(g), rg)
        assert lerr < 1e-5 and gerr < 1e-4, \
            f"softmax CE: {who} disagrees with the reference (loss {lerr:.2e}, grad {gerr:.2e})"


# ------------------------------------------------------------------- bench


def rounds_for(rounds, elements):
    """Fewer rounds for the largest shapes (a NumPy turn there takes seconds)."""
    return min(rounds, max(3, int(4e8 / elements)))


def bench(device, bn_shapes, ce_shapes, rounds, copy_bytes, elementwise_shape=ELEMENTWISE_SHAPE):
    torch = torch_module()
    if device == "cuda":
        import cupy as cp

        xp, to_np = cp, cp.asnumpy
        stream_sync = cp.cuda.get_current_stream().synchronize

        def sync():
            stream_sync()
            if torch is not None:
                torch.cuda.synchronize()

        src = cp.ones(copy_bytes, dtype=np.uint8)
        dst = cp.empty_like(src)

        def copy():
            cp.copyto(dst, src)

        peer_name, extra = "cupy", {"rounds_mult": 4, "warmup": 3, "settle": 0.0}
    else:
        xp, to_np, sync = np, (lambda a: a), None
        src = np.ones(copy_bytes, dtype=np.uint8)
        dst = np.empty_like(src)

        def copy():
            _C.copy_into(dst, src)

        peer_name, extra = "numpy", {"rounds_mult": 1, "warmup": 1, "settle": 0.3}

    def run(fns, elements):
        r = rounds_for(rounds, elements) * extra["rounds_mult"]
        return interleaved(fns, r, sync=sync, warmup=extra["warmup"], settle=extra["settle"])

    def row_from(t, op, shape, dropout, moved):
        copy_gbs = 2 * src.size / t.median("copy") / 1e9
        ours = t.median("ours")
        row = {"op": op, "shape": f"{shape[0]}x{shape[1]}", "dropout": dropout,
               "copy_gbs": round(copy_gbs, 1),
               "ms": round(ours * 1e3, 4 if ours < 1e-3 else 3),
               "gbs": round(moved / ours / 1e9, 2),
               "of_copy": round(moved / ours / 1e9 / copy_gbs, 3),
               "vs_numpy": round(t.ratio(peer_name, "ours"), 2)}
        if "torch" in t:
            row["vs_torch"] = round(t.ratio("torch", "ours"), 2)
        rows.append(row)
        print(row, flush=True)

    rows = []
    check_bn(xp, to_np, torch, device)
    for shape in bn_shapes:
        m, n = shape
        rng = np.random.default_rng(0)
        x = xp.asarray((rng.standard_normal((m, n), dtype=np.float32) * np.float32(2)
                        + np.float32(0.5)))
        dy = xp.asarray(rng.standard_normal((m, n), dtype=np.float32))
        gamma = xp.asarray(np.float32(1)
                           + np.float32(0.1) * rng.standard_normal(n, dtype=np.float32))
        beta = xp.asarray(np.float32(0.1) * rng.standard_normal(n, dtype=np.float32))
        for rate in (None, RATE):
            mm, mv = xp.zeros(n, dtype=np.float32), xp.ones(n, dtype=np.float32)
            steps = itertools.count()

            def ours(mm=mm, mv=mv, rate=rate, steps=steps):
                y, ctx = fd.ops.batchnorm_forward(x, gamma, beta, mm, mv, training=True,
                                                  activation="elu", dropout=rate, seed=0,
                                                  step=next(steps))
                return fd.ops.batchnorm_backward(dy, ctx)

            peer = numpy_bn(xp, gamma, beta, xp.zeros(n, dtype=np.float32),
                            xp.ones(n, dtype=np.float32), rate or 0.0)[2]
            fns = {"copy": copy, "ours": ours, peer_name: lambda peer=peer: peer(x, dy)}
            if torch is not None:
                fns["torch"] = torch_bn(torch, n, rate, device,
                                        torch.as_tensor(x, device=device),
                                        torch.as_tensor(dy, device=device))[0]
            t = run(fns, m * n)
            moved = (BN_BYTES + (MASK_BYTES if rate else 0)) * m * n
            row_from(t, "BN+ELU", shape, rate or "-", moved)
            del fns
    if not hasattr(fd.ops, "softmax_cross_entropy"):
        print("fd.ops.softmax_cross_entropy is missing from this build: "
              "softmax cross-entropy skipped", flush=True)
        return rows
    check_ce(xp, to_np)
    for shape in ce_shapes:
        m, n = shape
        rng = np.random.default_rng(0)
        logits = xp.asarray(rng.standard_normal((m, n), dtype=np.float32) * np.float32(3))
        labels = xp.asarray(rng.integers(0, n, m, dtype=np.int64))
        peer = numpy_ce(xp)
        fns = {"copy": copy, "ours": lambda: fd.ops.softmax_cross_entropy(logits, labels),
               peer_name: lambda: peer(logits, labels)}
        if torch is not None:
            fns["torch"] = torch_ce(torch, torch.as_tensor(logits, device=device),
                                    torch.as_tensor(labels, device=device))
        t = run(fns, m * n)
        row_from(t, "softmax CE", shape, "-", 8 * m * n + 8 * m)
    elementwise(xp, to_np, torch, device, elementwise_shape, run, row_from, copy, peer_name)
    return rows


def elementwise(xp, to_np, torch, device, shape, run, row_from, copy, peer_name):
    """Dropout alone and the point-wise losses, forward + gradient."""
    m, n = shape
    rng = np.random.default_rng(1)
    x = xp.asarray(rng.standard_normal((m, n), dtype=np.float32))
    dy = xp.asarray(rng.standard_normal((m, n), dtype=np.float32))
    target = xp.asarray(rng.random((m, n), dtype=np.float32))

    # correctness on a slice first
    xs, ts = x[:64], target[:64]
    y, ctx = fd.ops.dropout_forward(xs, RATE, seed=3, step=1)
    assert relerr(to_np(y), R.dropout_forward(to_np(xs), RATE, 3, 1)) < 1e-6
    for ours_fn, ref_fn in ((fd.ops.sigmoid_binary_cross_entropy, R.sigmoid_binary_cross_entropy),
                            (fd.ops.mean_squared_error, R.mean_squared_error)):
        loss, g = ours_fn(xs, ts)
        ref_loss, ref_g = ref_fn(to_np(xs), to_np(ts))
        assert relerr(to_np(g), ref_g) < 1e-5 and abs(float(loss) - ref_loss) < 1e-5 * abs(ref_loss)

    steps = itertools.count()

    def ours_dropout():
        yy, c = fd.ops.dropout_forward(x, RATE, seed=0, step=next(steps))
        return fd.ops.dropout_backward(dy, c)

    scale = np.float32(1 / (1 - RATE))
    gen = np.random.default_rng(2) if xp is np else None

    def peer_dropout():
        keep = (gen.random((m, n), dtype=np.float32) if gen is not None
                else xp.random.random((m, n), dtype=np.float32)) >= RATE
        yy = x * keep * scale
        return yy, dy * keep * scale

    fns = {"copy": copy, "ours": ours_dropout, peer_name: peer_dropout}
    if torch is not None:
        tx = torch.as_tensor(x, device=device).requires_grad_(True)
        tdy = torch.as_tensor(dy, device=device)

        def torch_dropout():
            torch.nn.functional.dropout(tx, RATE, training=True).backward(tdy)
            tx.grad = None

        fns["torch"] = torch_dropout
    row_from(run(fns, m * n), "dropout", shape, RATE, DROPOUT_BYTES * m * n)

    def peer_bce():
        e = xp.exp(-xp.abs(x))
        loss = (xp.maximum(x, 0) - x * target + xp.log1p(e)).mean()
        sig = xp.where(x >= 0, 1 / (1 + e), e / (1 + e))
        return loss, (sig - target) / np.float32(x.size)

    def peer_mse():
        d = x - target
        return (d * d).mean(), d * np.float32(2 / d.size)

    for name, ours_fn, peer_fn, torch_loss in (
            ("binary CE", fd.ops.sigmoid_binary_cross_entropy, peer_bce,
             "binary_cross_entropy_with_logits"),
            ("MSE", fd.ops.mean_squared_error, peer_mse, "mse_loss")):
        fns = {"copy": copy, "ours": lambda f=ours_fn: f(x, target), peer_name: peer_fn}
        if torch is not None:
            tz = torch.as_tensor(x, device=device).requires_grad_(True)
            tt = torch.as_tensor(target, device=device)
            loss_fn = getattr(torch.nn.functional, torch_loss)

            def torch_step(tz=tz, tt=tt, loss_fn=loss_fn):
                loss_fn(tz, tt).backward()
                tz.grad = None

            fns["torch"] = torch_step
        row_from(run(fns, m * n), name, shape, "-", POINT_BYTES * m * n)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--rounds", type=int, default=None,
                   help="rounds per configuration (default 9; 3 with --quick; the largest "
                        "shapes run fewer, at least 3)")
    p.add_argument("--quick", action="store_true",
                   help="shrink every shape (rows / 64, columns / 4) and the copy (/ 64)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not fd.has_cuda():
        sys.exit(f"no CUDA backend: {fd.cuda_status()}")
    rounds = args.rounds or (3 if args.quick else 9)
    bn_shapes, ce_shapes, copy_bytes = BN_SHAPES, CE_SHAPES, COPY_BYTES
    if args.quick:
        bn_shapes = [quick_shape(s) for s in BN_SHAPES]
        ce_shapes = [quick_shape(s) for s in CE_SHAPES]
        copy_bytes = COPY_BYTES // 64
    ew_shape = quick_shape(ELEMENTWISE_SHAPE) if args.quick else ELEMENTWISE_SHAPE
    rows = bench(args.device, bn_shapes, ce_shapes, rounds, copy_bytes, ew_shape)
    peer = "CuPy" if args.device == "cuda" else "NumPy"
    cols = [("op", "op"), ("shape", "shape"), ("dropout", "dropout"),
            ("copy_gbs", "copy GB/s"), ("ms", "ours ms"), ("gbs", "GB/s"),
            ("of_copy", "of copy bw"), ("vs_numpy", f"vs {peer}"), ("vs_torch", "vs torch")]
    info = machine()
    copy_gbs = float(np.median([r["copy_gbs"] for r in rows]))
    name = f"bn_dropout-{args.device}" + ("-quick" if args.quick else "") + ".json"
    path = write_json(name, {"machine": info, "copy_gbs": copy_gbs,
                             "copy_bytes": copy_bytes, "rounds": rounds,
                             "bytes_per_element": {"bn_elu": BN_BYTES,
                                                   "bn_elu_dropout": BN_BYTES + MASK_BYTES,
                                                   "softmax_ce": "8 + 8 per row",
                                                   "dropout": DROPOUT_BYTES,
                                                   "binary_ce, mse": POINT_BYTES},
                             "rows": rows})
    print(f"\n{info['date']}, {info['cpu']}, {info['threads']} threads"
          + (f", {info['gpu']}" if args.device == "cuda" else "")
          + f", copy {copy_gbs:g} GB/s (median over rows)")
    print(markdown(rows, cols))
    print(f"\n(ratios > 1: fusednn is faster; 'of copy bw' is the fraction of the memory "
          f"roofline)\nJSON: {path}")
    chart(path, rows, info=info, **CHARTS["bn_dropout"])


if __name__ == "__main__":
    main()
