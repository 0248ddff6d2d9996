"""Training health: the chapter's four ailments read off one training step
(fd.callbacks.GradientHealth records them during fit, ``diagnose`` for one
batch).

For each Dense layer with weights (bottom to top) a record holds, from the
step's own buffers (the outputs its ops returned and the gradients its
backward left in ``layer.grads``; nothing is run twice):

- ``act_std``: the standard deviation of the layer's activations, the output
  of its block (the Dense with what follows it up to the next Dense:
  batch norm, activation; a dropout in the block is part of it);
- ``grad_std``: the standard deviation of the gradient of its kernel;
- ``saturated``: for a sigmoid or tanh block, the fraction of activations
  within 1e-3 of the function's bounds (else None);
- ``dead``: for a ReLU block, the fraction of units that are zero for every
  sample of the batch (else None);
- ``update_ratio``: ``||W_after - W_before|| / ||W_before||`` of the kernel
  over the step (None where there was no update: ``diagnose``).

Findings, each named once per fit in words of the chapter (Glorot & Bengio
2010; He et al. 2015; Ioffe & Szegedy 2015; Pascanu et al. 2013):

- vanishing gradients: ``grad_std`` of the top layer over that of the bottom
  one above ``vanishing`` (default 100);
- exploding gradients: that ratio below ``1 / exploding`` (the gradients
  grow by more than ``exploding``, default 100, towards the bottom), or a
  gradient that is not finite;
- saturation: a layer with more than ``saturation`` (default 0.1) of its
  sigmoid/tanh activations at the bounds (a Glorot-initialised sigmoid
  network has next to none; one initialised N(0, 1) about a quarter);
- dead units: a layer with more than ``dead`` (default 0.25) of its ReLU
  units zero over the whole batch (He-initialised ReLU layers: a few %).
"""

from __future__ import annotations

import math

import numpy as np

from ._arrays import to_host
from ._validate import check_int
from .layers import Dense, Dropout

__all__ = ["HealthReport", "blocks", "diagnose", "findings", "layer_stats", "snapshot"]

_SATURATING = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}
_BOUND = 1e-3


def _activation_name(layers) -> str:
    """The nonlinearity of a block: the last non-linear activation of its
    layers (a Dense's own, an Activation/ELU/LeakyReLU layer's)."""
    name = "linear"
    for layer in layers:
        spec = getattr(layer, "activation", None)
        n = getattr(spec, "name", None)
        if n and n != "linear":
            name = n
    return name


def blocks(model, start=0):
    """[(dense layer, index in ``model._steps`` of the block's last step,
    activation name)] for the Dense layers of the steps from `start` up."""
    steps = model._steps
    out = []
    for i in range(start, len(steps)):
        dense = [la for la in steps[i].layers if isinstance(la, Dense) and la.kernel is not None]
        if dense:
            out.append([dense[0], i, list(steps[i].layers)])
        elif out and not all(isinstance(la, Dropout) for la in steps[i].layers):
            out[-1][1] = i  # an activation, batch norm ... of the block below
            out[-1][2] += list(steps[i].layers)
        elif out:
            out[-1][2] += list(steps[i].layers)
    head = len(steps) - 1 if model._loss is not None and model._loss.output else None
    # the head's step outputs logits (the loss applies its softmax/sigmoid)
    return [(d, last, "linear" if last == head else _activation_name(layers))
            for d, last, layers in out]


def snapshot(model, start=0) -> dict:
    """id(kernel) -> a copy of it, for update_ratio."""
    return {id(d.kernel): d.kernel.copy() for d, _, _ in blocks(model, start)}


def layer_stats(model, start, outputs, before) -> list:
    """The records of one step (see the module docstring). `outputs` are the
    outputs of ``model._steps[start:]`` in that step, `before` the kernels'
    snapshot (or None)."""
    records = []
    for dense, last, act in blocks(model, start):
        y = to_host(outputs[last - start])
        g = dense.grads[0] if dense.grads else None
        g = None if g is None else to_host(g)
        rec = {"name": dense.name,
               "act_std": float(np.std(y)),
               "grad_std": float(np.std(g)) if g is not None else float("nan"),
               "saturated": None, "dead": None, "update_ratio": None}
        if act in _SATURATING:
            lo, hi = _SATURATING[act]
            rec["saturated"] = float(np.mean((y <= lo + _BOUND) | (y >= hi - _BOUND)))
        elif act == "relu":
            rec["dead"] = float(np.mean(np.all(y == 0, axis=0)))
        if before is not None and id(dense.kernel) in before:
            w0 = before[id(dense.kernel)]
            norm = float(np.linalg.norm(to_host(w0)))
            delta = float(np.linalg.norm(to_host(dense.kernel - w0)))
            rec["update_ratio"] = delta / norm if norm > 0 else float("inf")
        records.append(rec)
    return records


def findings(records, vanishing=100.0, exploding=100.0, saturation=0.1, dead=0.25) -> list:
    """[(kind, message)] for one step's records: kind is "vanishing",
    "exploding", "saturation" or "dead"."""
    out = []
    if not records:
        return out
    bad = [r["name"] for r in records if not math.isfinite(r["grad_std"])]
    bottom, top = records[0], records[-1]
    if bad:
        out.append(("exploding", f"exploding gradients: the gradients of {', '.join(bad)} are "
                                 f"not finite. Remedies: gradient clipping (clipnorm= or "
                                 f"clipvalue= on the optimizer), a lower learning rate, batch "
                                 f"normalization"))
    elif len(records) > 1 and bottom["grad_std"] > 0 and top["grad_std"] > 0:
        ratio = top["grad_std"] / bottom["grad_std"]
        if ratio > vanishing:
            out.append(("vanishing", f"vanishing gradients: the gradient std falls {ratio:.3g}x "
                                     f"from the top layer {top['name']} to the bottom layer "
                                     f"{bottom['name']}, whose weights barely learn. Remedies: "
                                     f"He (ReLU family) or LeCun (SELU) initialization, "
                                     f"non-saturating activations (ELU, SELU, leaky ReLU), "
                                     f"batch normalization"))
        elif 1.0 / ratio > exploding:
            out.append(("exploding", f"exploding gradients: the gradient std grows "
                                     f"{1 / ratio:.3g}x from the top layer {top['name']} to the "
                                     f"bottom layer {bottom['name']}. Remedies: gradient "
                                     f"clipping (clipnorm=), He/Glorot initialization, batch "
                                     f"normalization, a lower learning rate"))
    sat = [(r["name"], r["saturated"]) for r in records
           if r["saturated"] is not None and r["saturated"] > saturation]
    if sat:
        names = ", ".join(f"{n} ({f:.0%})" for n, f in sat)
        out.append(("saturation", f"saturated activations: in {names} the sigmoid/tanh "
                                  f"outputs sit at their bounds, where the derivative is near 0. "
                                  f"Remedies: Glorot initialization for sigmoid/tanh, ReLU/ELU/"
                                  f"SELU instead, batch normalization before the activation"))
    dd = [(r["name"], r["dead"]) for r in records if r["dead"] is not None and r["dead"] > dead]
    if dd:
        names = ", ".join(f"{n} ({f:.0%} of units)" for n, f in dd)
        out.append(("dead", f"dying ReLUs: in {names} units output 0 for every sample and get "
                            f"no gradient. Remedies: leaky ReLU, ELU or SELU, He "
                            f"initialization with zero biases, a lower learning rate"))
    return out


class HealthReport:
    """One step's ``records`` (a dict per Dense layer, bottom to top) and
    the ``findings`` [(kind, message)] on them; str() is a table."""

    def __init__(self, records, found):
        self.records = records
        self.findings = found

    @property
    def healthy(self) -> bool:
        return not self.findings

    def __str__(self):
        def f(v, fmt):
            return "-" if v is None else format(v, fmt)

        lines = [f"{'layer':<20} {'act std':>9} {'grad std':>10} {'saturated':>9} {'dead':>6} "
                 f"{'update':>9}"]
        for r in self.records:
            lines.append(f"{r['name']:<20} {r['act_std']:>9.3g} {r['grad_std']:>10.3g} "
                         f"{f(r['saturated'], '.0%'):>9} {f(r['dead'], '.0%'):>6} "
                         f"{f(r['update_ratio'], '.2g'):>9}")
        lines += [m for _, m in self.findings] or ["no sign of vanishing or exploding gradients, "
                                                   "saturation or dead units"]
        return "\n".join(lines)

    __repr__ = __str__


def diagnose(model, x, y, batch_size=None, **thresholds) -> HealthReport:
    """The GradientHealth report for one batch (the first `batch_size` rows
    of x, y; all of them by default): a forward in training mode and a
    backward, no update (update_ratio None). The model is left as it was:
    its weights, batch-norm statistics and dropout counters are put back."""
    caller = "fd.tools.diagnose"
    if model.optimizer is None:
        raise RuntimeError(f"{caller}: compile the model first (the loss gives the gradients)")
    x, _, _ = model._input(caller, "x", x)
    y, _, _ = model._input(caller, "y", y)
    x, y = model._check_xy(caller, x, y)
    if y is None or x.shape[0] == 0:
        raise ValueError(f"{caller}: needs samples and their targets")
    if batch_size is not None:
        batch_size = check_int(caller, "batch_size", batch_size, low=1)
        x, y = x[:batch_size], y[:batch_size]
    model._ensure_built(x)
    model._check_labels(caller, y)
    y = model._fit_labels(y)
    saved = [w.copy() for w in model.get_weights()]
    drops = model._dropout_state()
    grads = [(layer, getattr(layer, "grads", None)) for layer in model.layers]
    try:
        outputs = []
        out = model._forward(x, True, 0, None, outputs)
        _, grad = model._loss(out, y)
        for i in range(len(model._steps) - 1, -1, -1):
            grad = model._steps[i].backward(grad, need_dx=i > 0)
        records = layer_stats(model, 0, outputs, None)
    finally:
        model.set_weights(saved)
        for layer, attr, value in drops:
            setattr(layer, attr, value)
        for layer, g in grads:
            layer.grads = g
    th = {"vanishing": 100.0, "exploding": 100.0, "saturation": 0.1, "dead": 0.25}
    unknown = set(thresholds) - set(th)
    if unknown:
        raise TypeError(f"{caller}: unknown threshold {sorted(unknown)[0]!r}; known: {sorted(th)}")
    th.update(thresholds)
    return HealthReport(records, findings(records, **th))
