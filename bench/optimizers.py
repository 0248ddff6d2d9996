"""Fused optimizer step vs NumPy in place and PyTorch (foreach / fused).

One step of Adam, RMSprop and Nadam over many float32 tensors (CPU: 10M
parameters in 60 tensors; GPU: 100M), timed interleaved with
  - the roofline: the bytes one step must move at the machine's copy
    bandwidth, measured in the same run with the same threads (a parallel
    memcpy of 512 MB; STREAM's convention, read + write bytes). Adam and Nadam read
    p, g, m, v and write p, m, v: 28 bytes per float32 parameter; RMSprop
    reads p, g, v and writes p, v: 20 bytes;
  - NumPy as a careful NumPy user writes it: in place, with one scratch
    buffer per tensor (no temporaries per step);
  - PyTorch (where installed, same thread count): torch.optim with
    foreach=True, and on the GPU fused=True where torch has it.
Correctness is checked against the float64 reference before timing.

    python bench/optimizers.py [--device cpu|cuda] [--params N] [--tensors K]
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np

import fusednn as fd
from fusednn import _C

sys.path.insert(0, os.path.dirname(__file__))
from _harness import chart, interleaved, machine, markdown, write_json  # noqa: E402

# The copy roofline moves at least this much, far beyond the caches, so that
# it measures memory (on the CPU, glibc copies such ranges with non-temporal
# stores: the bytes counted are the bytes that move).
COPY_BYTES = 512 << 20
# bytes moved per float32 parameter by one step
BYTES = {"adam": 28, "rmsprop": 20, "nadam": 28}
LR = 1e-3
# what _harness.chart draws of the rows, by JSON name (bench/charts.py redraws saved ones)
CHARTS = {"optimizers": {
    "labels": ("optimizer", "params"),
    "ratios": [("vs_numpy", "vs NumPy"), ("vs_foreach", "vs torch foreach"),
               ("vs_fused", "vs torch fused")],
    "fractions": [("of_copy", "of copy bandwidth")]}}


def sizes(total, count, seed=0):
    """`count` tensor sizes summing to `total`, uneven like a real network's."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.2, 1.8, count)
    s = np.maximum(1, np.floor(w / w.sum() * total)).astype(np.int64)
    s[0] += total - s.sum()
    return [int(v) for v in s]


CLASSES = {"adam": fd.optimizers.Adam, "rmsprop": fd.optimizers.RMSprop,
           "nadam": fd.optimizers.Nadam}


def numpy_step(name, params, grads):
    """One step of `name` in place on NumPy arrays, the fastest plain-NumPy
    way: in-place ufuncs and scratch buffers allocated once."""
    b1, b2, rho, eps = 0.9, 0.999, 0.9, 1e-7
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    tmp = [np.empty_like(p) for p in params]
    tmp2 = [np.empty_like(p) for p in params] if name == "nadam" else tmp
    state = {"t": 0, "u_product": 1.0}

    def u(i):
        return b1 * (1 - 0.5 * 0.96 ** i)

    def step():
        state["t"] += 1
        t = state["t"]
        p_t = state["u_product"] * u(t)
        state["u_product"] = p_t
        for p, g, mi, vi, ti, t2 in zip(params, grads, m, v, tmp, tmp2):
            if name == "rmsprop":
                vi *= rho
                np.multiply(g, g, out=ti)
                ti *= 1 - rho
                vi += ti
                np.add(vi, eps, out=ti)
                np.sqrt(ti, out=ti)
                np.divide(g, ti, out=ti)
                ti *= LR
                p -= ti
                continue
            mi *= b1
            np.multiply(g, 1 - b1, out=ti)
            mi += ti
            vi *= b2
            np.multiply(g, g, out=ti)
            ti *= 1 - b2
            vi += ti
            if name == "adam":
                np.sqrt(vi, out=ti)
                ti += eps
                np.divide(mi, ti, out=ti)
                ti *= LR * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                p -= ti
            else:  # nadam
                np.multiply(vi, 1 / (1 - b2 ** t), out=ti)
                np.sqrt(ti, out=ti)
                ti += eps
                np.divide(mi, ti, out=t2)
                t2 *= LR * u(t + 1) / (1 - p_t * u(t + 1))
                p -= t2
                np.divide(g, ti, out=t2)
                t2 *= LR * (1 - u(t)) / (1 - p_t)
                p -= t2

    return step


def torch_steps(name, params, grads, device, threads):
    try:
        import torch
    except ImportError:
        return {}
    torch.set_num_threads(threads)
    cls = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop,
           "nadam": torch.optim.NAdam}[name]
    out = {}
    variants = [("torch foreach", {"foreach": True})]
    if device == "cuda" and name in ("adam",):
        variants.append(("torch fused", {"fused": True}))
    for label, kw in variants:
        tp = [torch.as_tensor(p).clone() for p in params]
        for p, g in zip(tp, grads):
            p.grad = torch.as_tensor(g)
        opt = cls(tp, lr=LR, **kw)
        out[label] = opt.step
    return out


def check(name, xp):
    """Our step == the float64 reference on a few tensors, before timing."""
    from fusednn.testing import reference as R

    rng = np.random.default_rng(1)
    ps = [rng.standard_normal(s).astype(np.float32) for s in (5, 17, 300)]
    gs = [rng.standard_normal(p.shape).astype(np.float32) for p in ps]
    cfg = {"learning_rate": 0.01}
    ref_state = R.optimizer_init(name, cfg, ps)
    ref, _ = R.optimizer_step(name, cfg, gs, ps, ref_state, 0)
    mine = [xp.asarray(p) for p in ps]
    ours_opt = CLASSES[name](0.01)
    ours_opt.apply([xp.asarray(g) for g in gs], mine)
    for a, b in zip(mine, ref):
        a = a if isinstance(a, np.ndarray) else a.get()
        err = np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)
        assert err < 1e-5, f"{name}: fusednn disagrees with the reference ({err:.2e})"


def bench(device, total, count, rounds):
    threads = fd.num_threads()
    rows = []
    sz = sizes(total, count)
    rng = np.random.default_rng(0)
    host_p = [rng.standard_normal(s).astype(np.float32) for s in sz]
    host_g = [rng.standard_normal(s).astype(np.float32) * np.float32(1e-3) for s in sz]
    if device == "cuda":
        import cupy as cp

        xp, sync = cp, cp.cuda.get_current_stream().synchronize
        params = [cp.asarray(p) for p in host_p]
        grads = [cp.asarray(g) for g in host_g]
        src = cp.empty(max(total * 4, COPY_BYTES), dtype=np.uint8)
        dst = cp.empty_like(src)

        def copy():
            cp.copyto(dst, src)
    else:
        xp, sync = np, None
        params, grads = host_p, host_g
        src = np.ones(max(total * 4, COPY_BYTES), dtype=np.uint8)
        dst = np.empty_like(src)

        def copy():
            _C.copy_into(dst, src)
    for name in ("adam", "rmsprop", "nadam"):
        check(name, xp)
        opt = CLASSES[name](LR)
        fns = {"copy": copy, "ours": lambda opt=opt: opt.apply(grads, params)}
        if device == "cpu":
            np_params = [p.copy() for p in host_p]
            fns["numpy"] = numpy_step(name, np_params, host_g)
        fns.update(torch_steps(name, params, grads, device, threads))
        t = interleaved(fns, rounds, sync=sync, settle=0.3 if device == "cpu" else 0.0)
        copy_gbs = 2 * src.size / t.median("copy") / 1e9
        moved = BYTES[name] * total
        row = {"optimizer": name, "params": f"{total / 1e6:g}M in {count}",
               "copy_gbs": round(copy_gbs, 1),
               "ms": round(t.median("ours") * 1e3, 3),
               "gbs": round(moved / t.median("ours") / 1e9, 1),
               "of_copy": round(moved / t.median("ours") / 1e9 / copy_gbs, 2)}
        if "numpy" in t:
            row["vs_numpy"] = round(t.ratio("numpy", "ours"), 2)
        for label in ("torch foreach", "torch fused"):
            if label in t:
                row["vs_" + label.split()[1]] = round(t.ratio(label, "ours"), 2)
        rows.append(row)
        print(row, flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--params", type=int, default=None,
                   help="total parameters (default 10M on CPU, 100M on GPU)")
    p.add_argument("--tensors", type=int, default=60)
    p.add_argument("--rounds", type=int, default=9)
    args = p.parse_args(argv)
    if args.device == "cuda" and not fd.has_cuda():
        sys.exit(f"no CUDA backend: {fd.cuda_status()}")
    total = args.params or (100_000_000 if args.device == "cuda" else 10_000_000)
    rows = bench(args.device, total, args.tensors, args.rounds)
    cols = [("optimizer", "optimizer"), ("params", "params"), ("copy_gbs", "copy GB/s"),
            ("ms", "step ms"), ("gbs", "GB/s"), ("of_copy", "of copy bw"),
            ("vs_numpy", "vs NumPy"), ("vs_foreach", "vs torch foreach"),
            ("vs_fused", "vs torch fused")]
    info = machine()
    path = write_json(f"optimizers-{args.device}.json", {"machine": info, "rows": rows})
    print(f"\n{info['date']}, {info['cpu']}, {info['threads']} threads"
          + (f", {info['gpu']}" if args.device == "cuda" else ""))
    print(markdown(rows, cols))
    print(f"\n(ratios > 1: fusednn is faster)\nJSON: {path}")
    chart(path, rows, info=info, **CHARTS["optimizers"])


if __name__ == "__main__":
    main()
