"""Fused dense layer vs bare GEMM, NumPy and PyTorch.

For each (batch, in, units) and activation: the forward y = f(x @ w + b) and
forward + backward (dx, dw, db), timed interleaved with
  - bare GEMM (OpenBLAS sgemm via fusednn._C.gemm; cuBLAS via CuPy on GPU):
    the roofline. Forward+backward is three GEMMs of the same size, so its
    roofline is 3x the bare GEMM time;
  - NumPy as a NumPy user writes it: x @ w + b, then the activation;
  - PyTorch (where installed), same thread count: F.<act>(torch.addmm(b, x, w)),
    and autograd for the backward.
Correctness is checked against the float64 reference before timing.

Interleaved with NumPy (CPU, shapes up to 1024^3): as in a NumPy program that
calls fusednn between its own matrix products, each timed call of the fused
forward (and of NumPy's x @ w + b then activation) follows a NumPy sgemm
x @ w at once, no pause, so whichever thread pool the other left spinning is
still there; the sgemm calls are timed too. Median of 7 rounds.

    python bench/dense.py [--quick] [--device cpu|cuda] [--activation elu]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import fusednn as fd
from fusednn import _C
from fusednn.testing import reference as R

sys.path.insert(0, __import__("os").path.dirname(__file__))
from _harness import chart, interleaved, machine, markdown, write_json  # noqa: E402

SHAPES = [(32, 3072, 100), (1024, 1024, 1024), (4096, 4096, 4096)]
# what _harness.chart draws of the rows, by JSON name (bench/charts.py redraws saved ones)
CHARTS = {"dense": {
    "labels": ("shape", "precision"),
    "ratios": [("fwd_vs_numpy", "fwd vs NumPy"), ("fwd_vs_torch", "fwd vs torch"),
               ("fb_vs_numpy", "fwd+bwd vs NumPy"), ("fb_vs_torch", "fwd+bwd vs torch")],
    "fractions": [("fwd_vs_gemm", "fwd / bare GEMM"), ("fb_vs_3gemm", "fwd+bwd / 3 GEMMs")]}}


def numpy_act(name):
    if name == "relu":
        return lambda z: np.maximum(z, 0), lambda z, y: (z > 0).astype(z.dtype)
    if name == "elu":
        return (lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0))),
                lambda z, y: np.where(z > 0, 1, y + 1).astype(z.dtype))
    raise ValueError(name)


def torch_peer(name, threads):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch, getattr(torch.nn.functional, name)


def torch_contenders(peer, tx, tw, tb, tdy):
    """PyTorch's forward (no_grad) and forward+backward (autograd) of the layer."""
    torch, F = peer
    txg, twg, tbg = (t.clone().requires_grad_(True) for t in (tx, tw, tb))

    def torch_fwd():
        with torch.no_grad():
            return F(torch.addmm(tb, tx, tw))

    def torch_fwdbwd():
        F(torch.addmm(tbg, txg, twg)).backward(tdy)
        txg.grad = twg.grad = tbg.grad = None

    return torch_fwd, torch_fwdbwd


def check(x, w, b, act, xp_to_np):
    y, ctx = fd.ops.dense_forward(x, w, b, act)
    dy = y * 0 + 1
    dx, dw, db = fd.ops.dense_backward(dy, ctx)
    xs, ws, bs = (xp_to_np(a).astype(np.float64) for a in (x, w, b))
    ry = R.dense_forward(xs, ws, bs, act)[0]
    rdx, rdw, _ = R.dense_backward(np.ones_like(ry), xs, ws, bs, act)
    for got, ref in [(y, ry), (dx, rdx), (dw, rdw)]:
        err = np.abs(xp_to_np(got) - ref).max() / max(np.abs(ref).max(), 1e-30)
        assert err < 1e-4, f"fusednn disagrees with the reference: {err:.2e}"


def interleaved_with_numpy(x, w, b, act, rounds=7, pairs=5):
    """{'fused': s, 'numpy': s, 'sgemm_fused': s, 'sgemm_numpy': s}: medians
    over rounds of the median per round of `pairs` calls, each right after a
    NumPy sgemm (the sgemm's own time kept under 'sgemm_<name>')."""
    f_np = numpy_act(act)[0]
    z = np.empty((x.shape[0], w.shape[1]), x.dtype)
    fns = {"fused": lambda: fd.ops.dense_forward(x, w, b, act),
           "numpy": lambda: f_np(x @ w + b)}
    out = {k: [] for k in ("fused", "numpy", "sgemm_fused", "sgemm_numpy")}
    for fn in fns.values():  # warm both, and NumPy's pool
        np.matmul(x, w, out=z)
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            t_sg, t_fn = [], []
            for _ in range(pairs):
                t0 = time.perf_counter()
                np.matmul(x, w, out=z)
                t1 = time.perf_counter()
                fn()
                t2 = time.perf_counter()
                t_sg.append(t1 - t0)
                t_fn.append(t2 - t1)
            out[name].append(float(np.median(t_fn)))
            out["sgemm_" + name].append(float(np.median(t_sg)))
    return {k: float(np.median(v)) for k, v in out.items()}


def bench_cpu(act, shapes, rounds):
    threads = fd.num_threads()
    peer = torch_peer(act, threads)
    f_np, g_np = numpy_act(act)
    rows = []
    for (m, k, n) in shapes:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((m, k), dtype=np.float32)
        w = (rng.standard_normal((k, n), dtype=np.float32) * np.float32((2 / k) ** 0.5))
        b = rng.standard_normal(n, dtype=np.float32) * np.float32(0.1)
        dy = rng.standard_normal((m, n), dtype=np.float32)
        if m * k * n <= 2**31:
            check(x, w, b, act, lambda a: a)
        r = max(3, min(rounds, int(2e10 / (m * k * n))))

        def np_fwd():
            return f_np(x @ w + b)

        def np_fwdbwd():
            z = x @ w + b
            y = f_np(z)
            dz = dy * g_np(z, y)
            return dz @ w.T, x.T @ dz, dz.sum(0)

        def ours_fwdbwd():
            y, ctx = fd.ops.dense_forward(x, w, b, act)
            return fd.ops.dense_backward(dy, ctx)

        fwd = {"ours": lambda: fd.ops.dense_forward(x, w, b, act),
               "gemm": lambda: _C.gemm(x, w), "numpy": np_fwd}
        fb = {"ours": ours_fwdbwd, "numpy": np_fwdbwd}
        if peer:
            fwd["torch"], fb["torch"] = torch_contenders(
                peer, *(peer[0].from_numpy(a) for a in (x, w, b, dy)))
        tf = interleaved(fwd, r)
        tb_ = interleaved(fb, r)
        flops = 2.0 * m * k * n
        row = {"shape": f"{m}x{k}x{n}", "act": act,
               "gemm_gflops": round(flops / tf.median("gemm") / 1e9, 1),
               "fwd_ms": round(tf.median("ours") * 1e3, 3),
               "fwd_vs_gemm": round(tf.ratio("gemm", "ours"), 3),
               "fwd_vs_numpy": round(tf.ratio("numpy", "ours"), 2),
               "fb_ms": round(tb_.median("ours") * 1e3, 3),
               "fb_vs_3gemm": round(3 * tf.median("gemm") / tb_.median("ours"), 3),
               "fb_vs_numpy": round(tb_.ratio("numpy", "ours"), 2)}
        if peer:
            row["fwd_vs_torch"] = round(tf.ratio("torch", "ours"), 2)
            row["fb_vs_torch"] = round(tb_.ratio("torch", "ours"), 2)
        if m * k * n <= 2**30:
            t = interleaved_with_numpy(x, w, b, act)
            row["inter_fwd_vs_npsgemm"] = round(t["fused"] / t["sgemm_fused"], 3)
            row["inter_vs_numpy"] = round(t["numpy"] / t["fused"], 2)
        rows.append(row)
        print(row, flush=True)
    return rows


def bench_cuda(act, shapes, rounds):
    import cupy as cp

    peer = torch_peer(act, fd.num_threads())
    sync = cp.cuda.get_current_stream().synchronize
    rows = []
    for precision in ("highest", "high"):
        fd.set_float32_matmul_precision(precision)
        for (m, k, n) in shapes:
            rng = np.random.default_rng(0)
            x = cp.asarray(rng.standard_normal((m, k), dtype=np.float32))
            w = cp.asarray(rng.standard_normal((k, n), dtype=np.float32) * np.float32((2 / k) ** 0.5))
            b = cp.asarray(rng.standard_normal(n, dtype=np.float32) * np.float32(0.1))
            dy = cp.asarray(rng.standard_normal((m, n), dtype=np.float32))
            if precision == "highest" and m * k * n <= 2**31:
                check(x, w, b, act, cp.asnumpy)

            def ours_fwdbwd():
                y, ctx = fd.ops.dense_forward(x, w, b, act)
                return fd.ops.dense_backward(dy, ctx)

            fwd = {"ours": lambda: fd.ops.dense_forward(x, w, b, act), "gemm": lambda: x @ w}
            fb = {"ours": ours_fwdbwd}
            if peer:
                torch = peer[0]
                torch.backends.cuda.matmul.allow_tf32 = precision == "high"
                tx, tw, tb, tdy = (torch.as_tensor(a, device="cuda") for a in (x, w, b, dy))
                fwd["torch"], fb["torch"] = torch_contenders(peer, tx, tw, tb, tdy)
                # cuBLAS through torch honours allow_tf32, so it is the roofline
                # in both precisions (CuPy fixes TF32 at import time).
                fwd["gemm"] = lambda: torch.mm(tx, tw)

            def sync_all():
                sync()
                if peer:
                    peer[0].cuda.synchronize()

            # No settling pause: GPU contenders leave no spinning host threads.
            tf = interleaved(fwd, rounds * 4, sync_all, warmup=3, settle=0.0)
            tb_ = interleaved(fb, rounds * 4, sync_all, warmup=3, settle=0.0)
            flops = 2.0 * m * k * n
            row = {"shape": f"{m}x{k}x{n}", "act": act, "precision": precision,
                   "gemm_tflops": round(flops / tf.median("gemm") / 1e12, 2),
                   "fwd_ms": round(tf.median("ours") * 1e3, 4),
                   "fwd_vs_gemm": round(tf.ratio("gemm", "ours"), 3),
                   "fb_ms": round(tb_.median("ours") * 1e3, 4),
                   "fb_vs_3gemm": round(3 * tf.median("gemm") / tb_.median("ours"), 3)}
            if peer:
                row["fwd_vs_torch"] = round(tf.ratio("torch", "ours"), 2)
                row["fb_vs_torch"] = round(tb_.ratio("torch", "ours"), 2)
            rows.append(row)
            print(row, flush=True)
    fd.set_float32_matmul_precision("highest")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--activation", default="elu", choices=["elu", "relu"])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--quick", action="store_true", help="small shapes only")
    args = p.parse_args(argv)
    shapes = SHAPES[:2] if args.quick else SHAPES
    if args.device == "cuda":
        if not fd.has_cuda():
            sys.exit(f"no CUDA backend: {fd.cuda_status()}")
        rows = bench_cuda(args.activation, shapes, args.rounds)
        cols = [("shape", "batch x in x out"), ("precision", "fp32 mode"),
                ("gemm_tflops", "cuBLAS TFLOP/s"), ("fwd_ms", "fwd ms"),
                ("fwd_vs_gemm", "fwd / bare GEMM"), ("fwd_vs_torch", "vs torch"),
                ("fb_ms", "fwd+bwd ms"), ("fb_vs_3gemm", "fwd+bwd / 3 GEMMs"),
                ("fb_vs_torch", "vs torch")]
    else:
        rows = bench_cpu(args.activation, shapes, args.rounds)
        cols = [("shape", "batch x in x out"), ("gemm_gflops", "sgemm GFLOP/s"),
                ("fwd_ms", "fwd ms"), ("fwd_vs_gemm", "fwd / bare sgemm"),
                ("fwd_vs_numpy", "vs NumPy"), ("fwd_vs_torch", "vs torch"),
                ("fb_ms", "fwd+bwd ms"), ("fb_vs_3gemm", "fwd+bwd / 3 sgemm"),
                ("fb_vs_numpy", "vs NumPy"), ("fb_vs_torch", "vs torch"),
                ("inter_fwd_vs_npsgemm", "interleaved: fwd / NumPy sgemm"),
                ("inter_vs_numpy", "interleaved: vs NumPy")]
    info = machine()
    path = write_json(f"dense-{args.device}-{args.activation}.json",
                      {"machine": info, "rows": rows})
    print(f"\n{info['date']}, {info['cpu']}, {info['threads']} threads"
          + (f", {info['gpu']}" if args.device == "cuda" else ""))
    print(markdown(rows, cols))
    print(f"\n(ratios > 1: fusednn is faster; 'fwd / bare sgemm' is the fraction of the "
          f"GEMM roofline)\nJSON: {path}")
    chart(path, rows, info=info, **CHARTS["dense"])


if __name__ == "__main__":
    main()
