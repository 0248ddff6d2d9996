"""Whole training epochs: fd.Sequential.fit vs PyTorch vs plain NumPy.

Two networks on synthetic data (float32, N(0, 1) inputs, random labels):

  deep: 3072 -> 20 x [Dense(100) -> BN -> ELU] -> Dense(10), Nadam,
        He-normal kernels (the reference network of the chapter on training
        deep networks), at batch 32, 128 and 1024;
  wide: 784 -> 3 x [Dense(1024) -> BN -> ReLU -> Dropout(0.2)] -> Dense(10),
        Adam, at batch 256.

Each contender runs one epoch over the same arrays: shuffle, gather each
batch, forward, softmax cross-entropy, backward, one optimizer step, and the
batch loss read back to the host (what a progress bar needs):

  fusednn: ``model.fit(x, y, batch_size, epochs=1, verbose=0)``; BN ->
    activation (-> dropout) run as one fused kernel call per block, and the
    whole step as one native call (the compiled step, fusednn.models.engine);
  fusednn layer by layer: the same with ``compile(jit_compile=False)``, a
    Python call per block ("compiled / layers" is the step engine's gain);
  PyTorch: nn.Sequential of Linear / BatchNorm1d / ELU|ReLU / Dropout,
    ``torch.optim.NAdam`` / ``Adam`` (foreach), ``F.cross_entropy`` and
    autograd, the usual loop with ``loss.item()`` per batch, the same number
    of threads (``torch.set_num_threads``);
  NumPy: the same network written by hand in float32 (x @ w + b, the batch
    norm and ELU forward and backward, the optimizer as array expressions),
    as a NumPy user would.

Timing: `_harness.interleaved` (one epoch per turn, several rounds,
median); samples/s = samples per epoch / median epoch time. The roofline is
the GEMM work: 2 x batch x in x out FLOPs per layer forward and twice that
backward (the first layer's dx is not needed), against the rate of a bare
1024^3 sgemm (fusednn._C.gemm) timed interleaved with the contenders;
"of sgemm" = the GEMM FLOP/s fusednn achieves / that rate, "torch of
sgemm" the same for PyTorch's step (the ratio to PyTorch is the quotient of
the two: where both are near the roofline, as on the wide net, no
implementation can lead by more than 1 / PyTorch's fraction). The 100-wide
layers are small GEMMs that no BLAS runs at the 1024^3 rate, and at batch
32 the per-call overhead dominates: there the fraction measures how far
small GEMMs and overhead keep the step from the machine's peak.

Correctness is checked first: one fit step of the fusednn model in float64
equals the NumPy implementation's step (same weights, same batch).

With ``--device cuda`` the data live on the GPU (CuPy arrays for fusednn and
the NumPy code run on CuPy, CUDA tensors for PyTorch), and the roofline is a
4096^3 cuBLAS sgemm. There fusednn's compiled step is a CUDA graph replayed
per batch, and fit (verbose=0) reads the loss once per epoch; PyTorch's loop
reads it per batch as above, and a ``torch.compile`` of the same module runs
the same loop as one more peer (left out, and said so, where torch.compile
cannot build its kernels).

    python bench/train.py [--device cpu|cuda] [--rounds N] [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np

import fusednn as fd

sys.path.insert(0, os.path.dirname(__file__))
from _harness import chart, interleaved, machine, markdown, write_json  # noqa: E402

DEEP = {"name": "deep", "n_in": 3072, "blocks": [100] * 20, "act": "elu", "drop": 0.0,
        "opt": "nadam"}
WIDE = {"name": "wide", "n_in": 784, "blocks": [1024] * 3, "act": "relu", "drop": 0.2,
        "opt": "adam"}
N_OUT = 10
CASES = [(DEEP, 32), (DEEP, 128), (DEEP, 1024), (WIDE, 256)]
# what _harness.chart draws of the rows, by JSON name (bench/charts.py redraws saved ones)
CHARTS = {
    "train": {"labels": lambda r: f"{r['net']} net, batch {r['batch']}",
              "ratios": [("vs_torch", "vs torch"), ("vs_jax", "vs JAX jit"),
                         ("vs_numpy", "vs NumPy (CuPy on GPU)"),
                         ("vs_layers", "compiled / layer by layer")],
              "fractions": [("of_sgemm", "GEMM FLOP/s of sgemm"),
                            ("torch_of_sgemm", "torch's GEMM FLOP/s of sgemm")]},
    "predict": {"labels": lambda r: f"{r['net']} net, batch {r['batch']}",
                "ratios": [("vs_layers", "compiled / layer by layer")],
                "fractions": []}}


def widths(net):
    return [net["n_in"], *net["blocks"], N_OUT]


def gemm_flops_per_sample(net):
    """Forward 2·in·out per layer, backward 4·in·out (dW and dx) except the
    first layer's dx: 6·Σ in·out − 2·in0·out0."""
    w = widths(net)
    pairs = list(zip(w[:-1], w[1:]))
    return 6 * sum(a * b for a, b in pairs) - 2 * pairs[0][0] * pairs[0][1]


# ----------------------------------------------------------------- fusednn
def fd_model(net, dtype=np.float32, seed=0, xp=np, jit_compile="auto"):
    layers = []
    for i, units in enumerate(net["blocks"]):
        layers += [fd.layers.Dense(units, use_bias=True,
                                   kernel_initializer=fd.initializers.HeNormal(seed=seed + i)),
                   fd.layers.BatchNormalization(),
                   fd.layers.Activation(net["act"])]
        if net["drop"]:
            layers.append(fd.layers.Dropout(net["drop"], seed=seed + 100 + i))
    layers.append(fd.layers.Dense(N_OUT, kernel_initializer=fd.initializers.GlorotUniform(
        seed=seed + 99)))
    model = fd.Sequential(layers)
    opt = fd.optimizers.Nadam() if net["opt"] == "nadam" else fd.optimizers.Adam()
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", jit_compile=jit_compile)
    model.build(net["n_in"], xp, dtype)
    return model


# ------------------------------------------------------------------- NumPy
class NumpyNet:
    """The network by hand: Dense (+ BN + act (+ inverted dropout)) blocks,
    softmax cross-entropy, Keras' Adam / Nadam. Keras BN conventions
    (epsilon 1e-3, momentum 0.99, biased moving variance). ``xp``: numpy,
    or cupy for the same code on the GPU."""

    def __init__(self, net, weights, dtype=np.float32, seed=0, xp=np):
        self.net, self.dtype, self.xp = net, dtype, xp
        self.params = [xp.array(w, dtype=dtype) for w in weights["train"]]
        self.moving = [xp.array(w, dtype=dtype) for w in weights["moving"]]
        self.m = [xp.zeros_like(p) for p in self.params]
        self.v = [xp.zeros_like(p) for p in self.params]
        self.t = 0
        self.u_prod = 1.0
        self.rng = np.random.default_rng(seed)

    def step(self, x, y):
        net, dt, xp = self.net, self.dtype, self.xp
        p, caches, h = self.params, [], x
        nb = len(net["blocks"])
        for i in range(nb):
            w, b, g, be = p[4 * i:4 * i + 4]
            z = h @ w + b
            mu = z.mean(axis=0)
            zc = z - mu
            var = (zc * zc).mean(axis=0)
            inv = 1.0 / xp.sqrt(var + dt(1e-3))
            xh = zc * inv
            u = xh * g + be
            if net["act"] == "elu":
                a = xp.where(u > 0, u, xp.expm1(xp.minimum(u, 0)))
            else:
                a = xp.maximum(u, 0)
            mask = None
            if net["drop"]:
                mask = (self._uniform(a.shape) >= net["drop"]) / dt(1 - net["drop"])
                a = a * mask
            mm, mv = self.moving[2 * i:2 * i + 2]
            mm *= dt(0.99)
            mm += dt(0.01) * mu
            mv *= dt(0.99)
            mv += dt(0.01) * var
            caches.append((h, xh, inv, a, mask))
            h = a
        w, b = p[-2:]
        logits = h @ w + b
        e = xp.exp(logits - logits.max(axis=1, keepdims=True))
        prob = e / e.sum(axis=1, keepdims=True)
        n = x.shape[0]
        loss = -xp.log(prob[xp.arange(n), y]).mean()
        d = prob
        d[xp.arange(n), y] -= 1
        d /= n
        grads = [None] * len(p)
        grads[-2], grads[-1] = h.T @ d, d.sum(axis=0)
        dh = d @ w.T
        for i in range(nb - 1, -1, -1):
            hin, xh, inv, a, mask = caches[i]
            g = p[4 * i + 2]
            if mask is not None:
                dh = dh * mask
                a = a / xp.where(mask > 0, mask, 1)
            if net["act"] == "elu":
                du = dh * xp.where(a > 0, 1, a + 1)
            else:
                du = dh * (a > 0)
            grads[4 * i + 3] = du.sum(axis=0)
            grads[4 * i + 2] = (du * xh).sum(axis=0)
            dxh = du * g
            dz = inv / n * (n * dxh - dxh.sum(axis=0) - xh * (dxh * xh).sum(axis=0))
            grads[4 * i + 1] = dz.sum(axis=0)
            grads[4 * i] = hin.T @ dz
            if i:
                dh = dz @ p[4 * i].T
        self._update(grads)
        return loss

    def _uniform(self, shape):
        if self.xp is np:
            return self.rng.random(shape, dtype=self.dtype)
        return self.xp.random.random_sample(shape, dtype=self.dtype)

    def _update(self, grads):
        xp = self.xp
        self.t += 1
        t, lr, b1, b2, eps = self.t, 1e-3, 0.9, 0.999, 1e-7
        dt = self.dtype
        if self.net["opt"] == "nadam":
            u_t = b1 * (1 - 0.5 * 0.96 ** t)  # Keras' schedule
            u_n = b1 * (1 - 0.5 * 0.96 ** (t + 1))
            self.u_prod *= u_t
            c_m = dt(u_n / (1 - self.u_prod * u_n))
            c_g = dt((1 - u_t) / (1 - self.u_prod))
            c_v = dt(1 / (1 - b2 ** t))
            for p_, g_, m_, v_ in zip(self.params, grads, self.m, self.v):
                m_ *= dt(b1)
                m_ += dt(1 - b1) * g_
                v_ *= dt(b2)
                v_ += dt(1 - b2) * g_ * g_
                p_ -= dt(lr) * (c_m * m_ + c_g * g_) / (xp.sqrt(v_ * c_v) + dt(eps))
        else:
            alpha = dt(lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t))
            for p_, g_, m_, v_ in zip(self.params, grads, self.m, self.v):
                m_ *= dt(b1)
                m_ += dt(1 - b1) * g_
                v_ *= dt(b2)
                v_ += dt(1 - b2) * g_ * g_
                p_ -= alpha * m_ / (xp.sqrt(v_) + dt(eps))

    def epoch(self, x, y, batch):
        order = self.xp.asarray(self.rng.permutation(x.shape[0]))
        total = 0.0
        for s in range(0, x.shape[0], batch):
            idx = order[s:s + batch]
            total += float(self.step(x[idx], y[idx]))
        return total


def fd_weights(model):
    """The fd model's weights split as NumpyNet wants them: per block
    (kernel, bias, gamma, beta), then the output (kernel, bias); moving
    statistics separately."""
    train, moving = [], []
    for layer in model.layers:
        if isinstance(layer, fd.layers.BatchNormalization):
            train += [layer.gamma, layer.beta]
            moving += [layer.moving_mean, layer.moving_variance]
        elif isinstance(layer, fd.layers.Dense):
            train += [layer.kernel, layer.bias]
    return {"train": train, "moving": moving}


# ----------------------------------------------------------------- PyTorch
def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def torch_model(net, weights, threads, device="cpu"):
    import torch

    torch.set_num_threads(threads)
    mods, w = [], iter(_host(a) for a in weights["train"])
    dims = widths(net)
    for i, units in enumerate(net["blocks"]):
        lin = torch.nn.Linear(dims[i], units)
        bn = torch.nn.BatchNorm1d(units, eps=1e-3, momentum=0.01)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(next(w).T)))
            lin.bias.copy_(torch.from_numpy(next(w)))
            bn.weight.copy_(torch.from_numpy(next(w)))
            bn.bias.copy_(torch.from_numpy(next(w)))
        mods += [lin, bn, torch.nn.ELU() if net["act"] == "elu" else torch.nn.ReLU()]
        if net["drop"]:
            mods.append(torch.nn.Dropout(net["drop"]))
    out = torch.nn.Linear(dims[-2], N_OUT)
    with torch.no_grad():
        out.weight.copy_(torch.from_numpy(np.ascontiguousarray(next(w).T)))
        out.bias.copy_(torch.from_numpy(next(w)))
    model = torch.nn.Sequential(*mods, out).to(device)
    if net["opt"] == "nadam":
        opt = torch.optim.NAdam(model.parameters(), lr=1e-3, eps=1e-7, foreach=True)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7, foreach=True)
    return model, opt


def torch_compiled(net, weights):
    """(torch.compile of the CUDA model, its optimizer), compiled and warmed
    on one batch here (its first calls trace and build kernels), or None
    where torch.compile cannot run (no Triton or no compiler): said so."""
    import torch
    import torch.nn.functional as F

    model, opt = torch_model(net, weights, torch.get_num_threads(), "cuda")
    try:
        cmodel = torch.compile(model)
        x = torch.zeros((128, net["n_in"]), device="cuda")
        y = torch.zeros(128, dtype=torch.int64, device="cuda")
        for _ in range(2):
            loss = F.cross_entropy(cmodel(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        torch.cuda.synchronize()
    except Exception as e:  # the peer is optional; its absence is reported
        print(f"torch.compile unavailable here, left out: {type(e).__name__}: {e}"[:300])
        return None
    return cmodel, opt


def torch_epoch(model, opt, tx, ty, batch, gen):
    import torch
    import torch.nn.functional as F

    model.train()
    order = torch.randperm(tx.shape[0], generator=gen).to(tx.device)
    total = 0.0
    for s in range(0, tx.shape[0], batch):
        idx = order[s:s + batch]
        loss = F.cross_entropy(model(tx[idx]), ty[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item()
    return total


# --------------------------------------------------------------------- JAX
def jax_trainer(net, weights, seed=0):
    """The same network in JAX, the whole step (forward, loss, gradient,
    Keras-convention batch norm with moving statistics, optax Nadam / Adam
    with epsilon 1e-7) one ``jax.jit``-compiled function; an epoch loops over
    the batches in Python and reads each loss back, as the others do.
    None when JAX or optax is not installed."""
    try:
        import jax
        import jax.numpy as jnp
        import optax
    except ImportError:
        return None
    params = [jnp.asarray(_host(a)) for a in weights["train"]]
    moving = [jnp.asarray(_host(a)) for a in weights["moving"]]
    make = optax.nadam if net["opt"] == "nadam" else optax.adam
    tx = make(1e-3, eps=1e-7)
    state = {"params": params, "moving": moving, "opt": tx.init(params),
             "key": jax.random.PRNGKey(seed)}
    nb, drop = len(net["blocks"]), net["drop"]

    def loss_fn(p, moving, x, y, key):
        h, new_moving = x, []
        for i in range(nb):
            w, b, g, be = p[4 * i:4 * i + 4]
            z = h @ w + b
            mu = z.mean(axis=0)
            var = ((z - mu) ** 2).mean(axis=0)
            u = (z - mu) * jax.lax.rsqrt(var + 1e-3) * g + be
            h = jax.nn.elu(u) if net["act"] == "elu" else jax.nn.relu(u)
            if drop:
                key, sub = jax.random.split(key)
                h = jnp.where(jax.random.bernoulli(sub, 1 - drop, h.shape), h / (1 - drop), 0)
            mm, mv = moving[2 * i:2 * i + 2]
            new_moving += [0.99 * mm + 0.01 * mu, 0.99 * mv + 0.01 * var]
        logits = h @ p[-2] + p[-1]
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, new_moving

    @jax.jit
    def step(st, x, y):
        key, sub = jax.random.split(st["key"])
        (loss, moving), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            st["params"], st["moving"], x, y, sub)
        updates, opt_state = tx.update(grads, st["opt"], st["params"])
        params = optax.apply_updates(st["params"], updates)
        return {"params": params, "moving": moving, "opt": opt_state, "key": key}, loss

    rng = np.random.default_rng(seed)

    def epoch(x, y, batch):
        order = rng.permutation(x.shape[0])
        total = 0.0
        for s in range(0, x.shape[0] - batch + 1, batch):  # whole batches: one compilation
            idx = order[s:s + batch]
            new, loss = step(state["st"], x[idx], y[idx])
            state["st"] = new
            total += float(loss)
        return total

    state = {"st": state}
    return epoch


# ------------------------------------------------------------------ checks
def check(net):
    """One float64 fit step of the fusednn model equals NumpyNet's step."""
    n = 64
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, net["n_in"]))
    y = rng.integers(0, N_OUT, n)
    small = dict(net, drop=0.0)  # dropout masks differ by design (Philox vs NumPy)
    model = fd_model(small, np.float64)
    ref = NumpyNet(small, fd_weights(model),
                   np.float64)
    model.fit(x, y, batch_size=n, epochs=1, verbose=0, shuffle=False)
    ref.step(x, y)
    got = fd_weights(model)
    # The biases of the Dense layers before a BN get a zero gradient up to
    # rounding (BN removes the batch mean); Adam-type steps magnify that noise
    # to +-lr, so they are left out of the comparison.
    skip = {4 * i + 1 for i in range(len(net["blocks"]))}
    pairs = [(a, b) for i, (a, b) in enumerate(zip(got["train"], ref.params)) if i not in skip]
    pairs += list(zip(got["moving"], ref.moving))
    err = max(float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))
              for a, b in pairs)
    if err > 1e-9:
        raise SystemExit(f"check failed: {net['name']} fit step differs from NumPy by {err:.2e}")


def gemm_contender():
    """A bare 1024^3 sgemm (fusednn._C.gemm) and its FLOP count: the roofline,
    timed inside each configuration's interleaved rounds so that it sees the
    same machine state as the contenders."""
    from fusednn import _C

    a = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
    return (lambda: _C.gemm(a, a)), 2 * 1024 ** 3


# ------------------------------------------------------------------- bench
def result_row(net, batch, n, t, gemm_flops):
    """One table row from the interleaved timings `t` of an n-sample epoch
    (contenders fusednn, numpy, torch when timed, and the bare gemm)."""
    rate = gemm_flops / t.median("gemm")
    sps = n / t.median("fusednn")
    row = {"net": net["name"], "batch": batch, "samples": n, "fd_sps": round(sps),
           "numpy_sps": round(n / t.median("numpy")),
           "vs_numpy": round(t.ratio("numpy", "fusednn"), 2),
           "sgemm_gflops": round(rate / 1e9, 1),
           "of_sgemm": round(sps * gemm_flops_per_sample(net) / rate, 3)}
    if "layers" in t:
        row["layers_sps"] = round(n / t.median("layers"))
        row["vs_layers"] = round(t.ratio("layers", "fusednn"), 2)
    for peer in ("torch", "jax", "torch_compile"):
        if peer in t:
            row[f"{peer}_sps"] = round(n / t.median(peer))
            row[f"vs_{peer}"] = round(t.ratio(peer, "fusednn"), 2)
    if "torch" in t:
        row["torch_of_sgemm"] = round(n / t.median("torch") * gemm_flops_per_sample(net) / rate,
                                      3)
    return row


def bench_cpu(cases, rounds, samples, use_jax=True):
    threads = fd.num_threads()
    try:
        import torch
    except ImportError:
        torch = None
    for net in {id(n): n for n, _ in cases}.values():
        check(net)
    gemm, gemm_flops = gemm_contender()
    rows = []
    for net, batch in cases:
        n = samples or max(4096, 16 * batch)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, net["n_in"]), dtype=np.float32)
        y = rng.integers(0, N_OUT, n)
        model = fd_model(net)
        layered = fd_model(net, jit_compile=False)
        ref = NumpyNet(net, fd_weights(model))
        fns = {"fusednn": lambda: model.fit(x, y, batch_size=batch, epochs=1, verbose=0),
               "layers": lambda: layered.fit(x, y, batch_size=batch, epochs=1, verbose=0),
               "numpy": lambda: ref.epoch(x, y, batch)}
        if torch is not None:
            tm, topt = torch_model(net, fd_weights(model), threads)
            tx, ty = torch.from_numpy(x), torch.from_numpy(y)
            gen = torch.Generator().manual_seed(0)
            fns["torch"] = lambda: torch_epoch(tm, topt, tx, ty, batch, gen)
        jax_epoch = jax_trainer(net, fd_weights(model)) if use_jax else None
        if jax_epoch is not None:
            fns["jax"] = lambda: jax_epoch(x, y, batch)
        fns["gemm"] = gemm
        t = interleaved(fns, rounds=rounds, min_turn=0.3)
        row = result_row(net, batch, n, t, gemm_flops)
        rows.append(row)
        print(row, flush=True)
    return rows


def bench_predict(rounds, batches=(1, 256)):
    """predict latency on the deep net, inference mode: fusednn (one call
    per batch; and layer by layer) against PyTorch eager (``model.eval()``
    under ``torch.inference_mode()``), interleaved; the net's last layer is
    linear, so both return logits."""
    try:
        import torch
    except ImportError:
        return []
    net = DEEP
    model, layered = fd_model(net), fd_model(net, jit_compile=False)
    tm, _ = torch_model(net, fd_weights(model), fd.num_threads())
    tm.eval()
    rows = []
    for batch in batches:
        x = np.random.default_rng(1).standard_normal((batch, net["n_in"]), dtype=np.float32)
        tx = torch.from_numpy(x)

        def torch_predict():
            with torch.inference_mode():
                return tm(tx).numpy()

        fns = {"fusednn": lambda: model.predict(x, batch_size=batch),
               "layers": lambda: layered.predict(x, batch_size=batch),
               "torch": torch_predict}
        ours = fns["fusednn"]()
        np.testing.assert_allclose(ours, torch_predict(), rtol=1e-3, atol=1e-5)
        np.testing.assert_array_equal(ours, fns["layers"]())
        t = interleaved(fns, rounds=rounds, min_turn=0.2, settle=0.1)
        row = {"net": "deep", "batch": batch, "fd_us": round(t.median("fusednn") * 1e6, 1),
               "layers_us": round(t.median("layers") * 1e6, 1),
               "torch_us": round(t.median("torch") * 1e6, 1),
               "latency_of_torch": round(1.0 / t.ratio("torch", "fusednn"), 2),
               "vs_layers": round(t.ratio("layers", "fusednn"), 2)}
        rows.append(row)
        print(row, flush=True)
    return rows


def peak_rss(contender, samples=4096, batch=256):
    """Peak RSS (MiB) of one process that builds the wide net and fits it
    for one epoch with `contender` ("fusednn" or "torch"), data included."""
    import subprocess

    code = (f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
            f"import train; train._rss_child({contender!r}, {samples}, {batch})")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return round(int(out.stdout.split()[-1]) / 1024, 1)


def _rss_child(contender, samples, batch):
    """Fit as peak_rss says and print this process's peak RSS in KiB: VmHWM,
    the high-water mark of its own address space (ru_maxrss would start from
    the RSS of the parent that forked it)."""
    _fit_for_rss(contender, samples, batch)
    with open("/proc/self/status") as f:
        print(next(line.split()[1] for line in f if line.startswith("VmHWM:")))


def _fit_for_rss(contender, samples, batch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((samples, WIDE["n_in"]), dtype=np.float32)
    y = rng.integers(0, N_OUT, samples)
    model = fd_model(WIDE)
    if contender == "fusednn":
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
        return
    import torch

    tm, opt = torch_model(WIDE, fd_weights(model), fd.num_threads())
    del model
    torch_epoch(tm, opt, torch.from_numpy(x), torch.from_numpy(y), batch,
                torch.Generator().manual_seed(0))


def bench_cuda(cases, rounds, samples):
    """The same epochs with the data on the GPU: fusednn on CuPy arrays,
    PyTorch on CUDA tensors, and the NumPy implementation run on CuPy. The
    roofline is a 4096^3 cuBLAS sgemm through CuPy (fusednn's float32 matmul
    precision is left at its default)."""
    import cupy
    import torch

    dev = cupy.cuda.Device()

    def sync():
        dev.synchronize()
        torch.cuda.synchronize()

    g = cupy.random.default_rng(0).standard_normal((4096, 4096), dtype=cupy.float32)
    gemm, gemm_flops = (lambda: g @ g), 2 * 4096 ** 3
    rows = []
    for net, batch in cases:
        n = samples or max(16384, 16 * batch)
        rng = np.random.default_rng(0)
        x = cupy.asarray(rng.standard_normal((n, net["n_in"]), dtype=np.float32))
        y = cupy.asarray(rng.integers(0, N_OUT, n))
        model = fd_model(net, xp=cupy)
        layered = fd_model(net, xp=cupy, jit_compile=False)
        ref = NumpyNet(net, fd_weights(model), xp=cupy)
        tm, topt = torch_model(net, fd_weights(model), torch.get_num_threads(), "cuda")
        tx, ty = torch.as_tensor(x, device="cuda"), torch.as_tensor(y, device="cuda")
        tgen = torch.Generator().manual_seed(0)
        fns = {"fusednn": lambda: model.fit(x, y, batch_size=batch, epochs=1, verbose=0),
               "layers": lambda: layered.fit(x, y, batch_size=batch, epochs=1, verbose=0),
               "numpy": lambda: ref.epoch(x, y, batch),
               "torch": lambda: torch_epoch(tm, topt, tx, ty, batch, tgen)}
        compiled = torch_compiled(net, fd_weights(model))
        if compiled is not None:
            cgen = torch.Generator().manual_seed(0)
            fns["torch_compile"] = lambda: torch_epoch(*compiled, tx, ty, batch, cgen)
        fns["gemm"] = gemm
        t = interleaved(fns, rounds=rounds, sync=sync, min_turn=0.3, settle=0.0)
        row = result_row(net, batch, n, t, gemm_flops)
        rows.append(row)
        print(row, flush=True)
    return rows


class Busy:
    """`count` CPU-bound processes beside the contenders, as another user's
    job on a shared machine would be (``--busy``)."""

    def __init__(self, count):
        self.count, self.procs = count, []

    def __enter__(self):
        import subprocess

        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                      for _ in range(self.count)]
        return self

    def __exit__(self, *exc):
        for proc in self.procs:
            proc.kill()
            proc.wait()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--samples", type=int, default=0,
                   help="samples per epoch (default: max(4096, 16 x batch))")
    p.add_argument("--quick", action="store_true", help="batch 128 deep net only, 3 rounds")
    p.add_argument("--batches", default=None,
                   help="comma-separated deep-net batch sizes to run (default: every row)")
    p.add_argument("--busy", type=int, default=0,
                   help="CPU-bound processes to run beside the contenders (a shared machine)")
    p.add_argument("--threads", type=int, default=0,
                   help="threads for fusednn and PyTorch (default: their own defaults)")
    p.add_argument("--no-jax", action="store_true", help="leave JAX out on the CPU")
    p.add_argument("--predict", action="store_true",
                   help="predict latency (batch 1 and 256) and the peak RSS of a wide-net fit, "
                        "instead of the training table")
    args = p.parse_args(argv)
    cases = CASES[1:2] if args.quick else CASES
    if args.batches:
        wanted = {int(b) for b in args.batches.split(",")}
        cases = [(net, b) for net, b in CASES if net is DEEP and b in wanted]
    rounds = 3 if args.quick else args.rounds
    if args.threads:
        fd.set_num_threads(args.threads)
    if args.predict:
        rows = bench_predict(rounds)
        rss = {c: peak_rss(c) for c in ("fusednn", "torch")}  # one process each
        info = machine()
        path = write_json("predict-cpu.json", {"machine": info, "rows": rows, "peak_rss_mib": rss})
        print(f"\n{info['date']}, {info['cpu']}, {info['threads']} threads")
        print(markdown(rows, [("net", "net"), ("batch", "batch"), ("fd_us", "fusednn us"),
                              ("layers_us", "layer by layer us"), ("torch_us", "torch eager us"),
                              ("latency_of_torch", "latency / torch's"),
                              ("vs_layers", "compiled / layers")]))
        print(f"\npeak RSS of a wide-net fit (MiB): {rss}\nJSON: {path}")
        chart(path, rows, info=info, **CHARTS["predict"])
        return
    if args.device == "cuda":
        if not fd.has_cuda():
            sys.exit(f"no CUDA backend: {fd.cuda_status()}")
        check(DEEP)
        rows = bench_cuda(cases, rounds, args.samples)
    else:
        with Busy(args.busy):
            rows = bench_cpu(cases, rounds, args.samples, use_jax=not args.no_jax)
    info = machine()
    info["busy_processes"] = args.busy
    tag = (f"-busy{args.busy}" if args.busy else "") + \
        (f"-threads{args.threads}" if args.threads else "") + ("-quick" if args.quick else "")
    path = write_json(f"train-{args.device}{tag}.json",
                      {"machine": info, "rows": rows})
    peer = "CuPy" if args.device == "cuda" else "NumPy"
    cols = [("net", "net"), ("batch", "batch"), ("fd_sps", "fusednn samples/s"),
            ("layers_sps", "layer by layer samples/s"), ("vs_layers", "compiled / layers"),
            ("torch_sps", "torch samples/s"), ("jax_sps", "JAX jit samples/s"),
            ("torch_compile_sps", "torch.compile samples/s"),
            ("numpy_sps", f"{peer} samples/s"), ("vs_torch", "vs torch"), ("vs_jax", "vs JAX"),
            ("vs_torch_compile", "vs torch.compile"),
            ("vs_numpy", f"vs {peer}"), ("sgemm_gflops", "sgemm GFLOP/s"),
            ("of_sgemm", "GEMM FLOP/s of sgemm"), ("torch_of_sgemm", "torch of sgemm")]
    print(f"\n{info['date']}, {info['cpu']}, {info['threads']} threads"
          + (f", {args.busy} busy processes beside" if args.busy else ""))
    print(markdown(rows, [c for c in cols if any(c[0] in r for r in rows)]))
    print(f"\n(ratios > 1: fusednn is faster)\nJSON: {path}")
    chart(path, rows, info=info, **CHARTS["train"])


if __name__ == "__main__":
    main()
