"""Figures of a training run: learning curves, gradient health, the
learning-rate range test, activation histograms and schedules.

matplotlib is optional (``pip install 'fusednn[plot]'``) and imported by
these functions only, so ``import fusednn`` never imports it. Each function
returns a ``matplotlib.figure.Figure`` made without pyplot, so no GUI
backend is needed (show it in a notebook by leaving it as the cell's value,
or with ``fig.savefig``); ``path=`` also writes it to a file whose format is
taken from the extension (``.png``, ``.svg``, ``.pdf`` ...)::

    fd.plot.learning_curves(model.fit(x, y, validation_split=0.1, epochs=20))
    fd.plot.gradient_health(model.history, metric="grad_std", path="health.png")
    fd.plot.lr_finder(*fd.tools.find_learning_rate(model, x, y))
    fd.plot.activation_histograms(model, x[:512])
    fd.plot.schedule(fd.schedules.OneCycle(0.1, 1000), 1000)
"""

from __future__ import annotations

import math
import numbers
import os

import numpy as np

from ._arrays import to_host
from ._validate import check_int, check_path
from .models import Sequential

__all__ = ["activation_histograms", "gradient_health", "learning_curves", "lr_finder",
           "schedule", "suggested_learning_rate"]

HEALTH_METRICS = ("act_std", "grad_std", "saturated", "dead", "update_ratio")
# fields whose values span decades: coloured on a log scale
_LOG_METRICS = ("act_std", "grad_std", "update_ratio")


# ---------------------------------------------------------------- helpers


def _figure(caller, **kwargs):
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise _no_matplotlib(caller) from e
    return Figure(layout="constrained", **kwargs)


def _no_matplotlib(caller):
    return ImportError(f"fd.plot.{caller} needs matplotlib: pip install 'fusednn[plot]' "
                       f"(or pip install matplotlib)")


def _check_target(caller, path):
    """`path` as a str (or None), checked before anything is drawn."""
    if path is None:
        return None
    path = check_path(f"fd.plot.{caller}", "path", path)
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError as e:
        raise _no_matplotlib(caller) from e

    ext = os.path.splitext(path)[1].lower().lstrip(".")
    formats = FigureCanvasBase.get_supported_filetypes()
    if ext not in formats:
        raise ValueError(f"fd.plot.{caller}: path must end in a format matplotlib writes "
                         f"({', '.join('.' + f for f in sorted(formats))}), got {path!r}")
    return path


def _finish(fig, path):
    if path is not None:
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        fig.savefig(path)
    return fig


def _grid(n):
    """(rows, columns) for n panels, at most three a row."""
    cols = min(n, 3)
    return -(-n // cols), cols


def _series(caller, name, values):
    """values as a 1-D float64 array: TypeError naming `name` for what is
    not numbers, ValueError for another shape."""
    if isinstance(values, (str, bytes, dict)):
        raise TypeError(f"fd.plot.{caller}: {name} must be a sequence of numbers, got "
                        f"{type(values).__name__} {values!r}")
    try:
        a = np.asarray(to_host(values) if hasattr(values, "__cuda_array_interface__")
                       else values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"fd.plot.{caller}: {name} must be a sequence of numbers, got "
                        f"{values!r}") from None
    if a.ndim != 1:
        raise ValueError(f"fd.plot.{caller}: {name} must be 1-D, got shape {a.shape}")
    return a


# ---------------------------------------------------------- learning curves


def _history_dict(caller, history):
    """(epochs, {name: values as arrays}) from a History or a Keras-style
    dict; every name must have a value per epoch."""
    logs = getattr(history, "history", history)
    if not isinstance(logs, dict):
        raise TypeError(f"fd.plot.{caller}: history must be what fit returns (a History) or "
                        f"its .history dict, got {type(history).__name__}")
    series = {key: _series(caller, f"history[{key!r}]", v) for key, v in logs.items()}
    n = max((v.size for v in series.values()), default=0)
    if n == 0:
        raise ValueError(f"fd.plot.{caller}: history has no recorded epochs")
    epochs = getattr(history, "epoch", None)
    if epochs is None or len(epochs) != n:
        epochs = range(n)
    epochs = _series(caller, "history.epoch", list(epochs))
    for key, v in series.items():
        if v.size != n:
            raise ValueError(f"fd.plot.{caller}: history[{key!r}] has {v.size} values for "
                             f"{n} epochs")
    return epochs, series


def learning_curves(history, path=None):
    """The loss and each metric over the epochs, one axes per quantity.

    `history` is what ``fit`` returns (a History) or its ``.history`` dict
    ``{name: [value per epoch]}``. Each quantity ``q`` gets one axes with
    the training values ``q`` (solid, "train") and the validation values
    ``val_q`` where recorded (dashed, "validation"); a ``val_q`` without its
    ``q`` gets an axes of its own. x: ``history.epoch`` (0-based, as fit
    records it; 0, 1, ... for a plain dict). The loss comes first, then the
    other names in the order they were recorded.
    """
    caller = "learning_curves"
    path = _check_target(caller, path)
    epochs, series = _history_dict(caller, history)
    names = []
    for key in series:
        base = key[4:] if key.startswith("val_") else key
        if base not in names:
            names.append(base)
    if "loss" in names:
        names.remove("loss")
        names.insert(0, "loss")
    rows, cols = _grid(len(names))
    fig = _figure(caller, figsize=(4.0 * cols, 3.0 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        if name in series:
            ax.plot(epochs, series[name], "-", marker=".", label="train")
        if "val_" + name in series:
            ax.plot(epochs, series["val_" + name], "--", marker=".", label="validation")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.legend()
    for ax in axes[len(names):]:
        ax.set_visible(False)
    return _finish(fig, path)


# ---------------------------------------------------------- gradient health


def _health_records(caller, history):
    records = history if isinstance(history, list) else getattr(history, "health", None)
    if records is None:
        raise ValueError(f"fd.plot.{caller}: history has no 'health' records; add "
                         f"fd.callbacks.GradientHealth() to fit's callbacks to record them, "
                         f"got {type(history).__name__}")
    if not isinstance(records, list) or not records:
        raise ValueError(f"fd.plot.{caller}: history.health holds no records (GradientHealth "
                         f"records every `every` steps: train for longer or lower `every`)")
    return records


def _health_matrix(records, metric):
    """(layer names, steps, array layers x records) of `metric` from
    GradientHealth records, NaN where a value is None."""
    caller = "gradient_health"
    names = None
    steps, columns = [], []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or "layers" not in rec or "step" not in rec:
            raise ValueError(f"fd.plot.{caller}: history.health[{i}] must be a dict with "
                             f"'step' and 'layers', got {rec!r}")
        layers = rec["layers"]
        if not isinstance(layers, list) or not layers or \
                not all(isinstance(la, dict) for la in layers):
            raise ValueError(f"fd.plot.{caller}: history.health[{i}]['layers'] must be a "
                             f"non-empty list of dicts, got {layers!r}")
        these = [la.get("name") for la in layers]
        if names is None:
            names = these
        elif these != names:
            raise ValueError(f"fd.plot.{caller}: history.health[{i}] has the layers {these}, "
                             f"the first record {names}")
        col = []
        for la in layers:
            v = la.get(metric)
            col.append(np.nan if v is None else float(v))
        steps.append(rec["step"])
        columns.append(col)
    data = np.asarray(columns, dtype=np.float64).T.reshape(len(names), len(records))
    return names, steps, data


def gradient_health(history, metric="grad_std", path=None):
    """A heat map of one GradientHealth field per layer (rows, bottom layer
    at the bottom) over the recorded steps (columns, labelled with the
    optimizer step).

    `history`: a History whose ``health`` list ``fd.callbacks.GradientHealth``
    filled (``model.history`` after fit), or that list. `metric`: one of
    "act_std", "grad_std", "saturated", "dead", "update_ratio". The std and
    update-ratio fields span decades and are coloured on a log scale (values
    <= 0 shown as missing); the fractions "saturated" and "dead" on [0, 1].
    Missing values (None: "saturated" outside sigmoid/tanh layers, "dead"
    outside ReLU layers) are grey.
    """
    caller = "gradient_health"
    path = _check_target(caller, path)
    if not isinstance(metric, str):
        raise TypeError(f"fd.plot.{caller}: metric must be a str, got "
                        f"{type(metric).__name__} {metric!r}")
    if metric not in HEALTH_METRICS:
        raise ValueError(f"fd.plot.{caller}: metric must be one of {list(HEALTH_METRICS)}, "
                         f"got {metric!r}")
    names, steps, data = _health_matrix(_health_records(caller, history), metric)
    import matplotlib
    from matplotlib import colors

    fig = _figure(caller, figsize=(7.0, 1.0 + 0.35 * max(len(names), 4)))
    ax = fig.subplots()
    if metric in _LOG_METRICS:
        shown = np.ma.masked_where(~(np.isfinite(data) & (data > 0)), data)
        norm = colors.LogNorm(shown.min(), shown.max()) if shown.count() else \
            colors.Normalize(0.0, 1.0)
        cmap = "viridis"
    else:
        shown = np.ma.masked_invalid(data)
        norm, cmap = colors.Normalize(0.0, 1.0), "magma"
    cmap = matplotlib.colormaps[cmap].with_extremes(bad="0.85")
    image = ax.imshow(shown, aspect="auto", origin="lower", interpolation="nearest",
                      cmap=cmap, norm=norm)
    ax.set_yticks(range(len(names)), names)
    ticks = np.unique(np.linspace(0, len(steps) - 1, min(len(steps), 8)).round().astype(int))
    ax.set_xticks(ticks, [str(steps[t]) for t in ticks])
    ax.set_xlabel("step")
    ax.set_title(f"{metric} per layer")
    fig.colorbar(image, ax=ax, label=metric)
    return _finish(fig, path)


# ------------------------------------------------------------- lr finder


def suggested_learning_rate(lrs, losses) -> float:
    """The rate ten times below the one of the lowest finite loss:
    ``lrs[argmin(losses)] / 10`` (fd.tools.find_learning_rate's rule: the
    loss is still falling fast there, well before it turns up)."""
    caller = "lr_finder"
    lrs = _series(caller, "lrs", lrs)
    losses = _series(caller, "losses", losses)
    _check_sweep(caller, lrs, losses)
    finite = np.where(np.isfinite(losses), losses, np.inf)
    return float(lrs[int(np.argmin(finite))] / 10.0)


def _check_sweep(caller, lrs, losses):
    if lrs.size != losses.size:
        raise ValueError(f"fd.plot.{caller}: lrs and losses must have the same length, got "
                         f"{lrs.size} and {losses.size}")
    if lrs.size < 2:
        raise ValueError(f"fd.plot.{caller}: lrs needs at least 2 rates, got {lrs.size}")
    if not np.all(np.isfinite(lrs) & (lrs > 0)):
        raise ValueError(f"fd.plot.{caller}: lrs must be finite and > 0 (a log axis), got "
                         f"{lrs[~(np.isfinite(lrs) & (lrs > 0))][:3].tolist()}")
    if not np.any(np.isfinite(losses)):
        raise ValueError(f"fd.plot.{caller}: losses has no finite value")


def lr_finder(lrs, losses, path=None):
    """The learning-rate range test: the loss against the rate (log x), with
    the suggested rate marked.

    ``lrs, losses`` as ``fd.tools.find_learning_rate`` returns them (the
    losses smoothed there), so ``fd.plot.lr_finder(*find_learning_rate(...))``
    works. The suggestion is ``lrs[argmin(losses)] / 10``
    (``suggested_learning_rate``), marked with a dot on the curve (the loss
    at that rate, interpolated in log rate) and a dotted vertical line, and
    given in the legend. Non-finite losses (a diverged end) are not drawn.
    """
    caller = "lr_finder"
    path = _check_target(caller, path)
    lrs = _series(caller, "lrs", lrs)
    losses = _series(caller, "losses", losses)
    _check_sweep(caller, lrs, losses)
    best = suggested_learning_rate(lrs, losses)
    ok = np.isfinite(losses)
    order = np.argsort(lrs[ok])
    at = float(np.interp(math.log(best), np.log(lrs[ok][order]), losses[ok][order]))
    fig = _figure(caller, figsize=(6.0, 4.0))
    ax = fig.subplots()
    ax.plot(lrs, losses, "-", label="loss")
    ax.axvline(best, color="C3", linestyle=":", linewidth=1)
    ax.plot([best], [at], "o", color="C3", label=f"suggested {best:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    # a diverged tail would flatten the descent: cut the y axis at twice
    # the drop above the first loss
    first, low, high = (float(v) for v in (losses[ok][0], losses[ok].min(), losses[ok].max()))
    top = min(high, first + 2.0 * (first - low)) if first > low else high
    if top > low:
        ax.set_ylim(low - 0.05 * (top - low), top + 0.05 * (top - low))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return _finish(fig, path)


# ------------------------------------------------------ activation histograms


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _layer_outputs(model, x):
    """[(layer, output as a NumPy array)] of each layer of the built
    Sequential `model` for x, in inference mode, layer by layer (a Dense
    whose softmax the loss applies gives its probabilities)."""
    caller = "fd.plot.activation_histograms"
    if not isinstance(model, Sequential):
        raise TypeError(f"{caller}: model must be a fd.Sequential, got {type(model).__name__}")
    if not model.built or not model.layers:
        raise ValueError(f"{caller}: model must be built (fit it, or call model.build(...) or "
                         f"model(x) first)")
    x, _, _ = model._input(caller, "x", x)
    x, _ = model._check_xy(caller, x, None)
    if x.shape[0] == 0:
        raise ValueError(f"{caller}: x has no samples")
    out, h = [], x
    for layer in model.layers:
        h = layer.forward(h, training=False)
        y = to_host(h)
        if getattr(layer, "output_activation", None) == "softmax":
            y = _softmax(y.astype(np.float64)).astype(y.dtype)
        out.append((layer, y))
    return out


def _kind(layer) -> str:
    """The layer's class and, where it has one, its activation's name."""
    act = getattr(layer, "output_activation", None) or \
        getattr(getattr(layer, "activation", None), "name", None)
    return type(layer).__name__ + (f" {act}" if act and act != "linear" else "")


def activation_histograms(model, x, bins=40, path=None):
    """Histograms of each layer's outputs for x: one axes per layer, bottom
    layer first, over every output value (samples x units) of that layer.

    `model`: a built fd.Sequential, run layer by layer in inference mode
    (dropout off, batch norm with its moving statistics), as ``predict``
    runs it; the last Dense's softmax is applied. `bins`: an int >= 1.
    Non-finite outputs are left out (counted in the axes' title). Each
    title gives the layer's name, class and the outputs' standard deviation
    (He/Glorot initialisation aims at about 1 through the stack).
    """
    caller = "activation_histograms"
    path = _check_target(caller, path)
    bins = check_int(f"fd.plot.{caller}", "bins", bins, 1)
    outputs = _layer_outputs(model, x)
    rows, cols = _grid(len(outputs))
    fig = _figure(caller, figsize=(3.6 * cols, 2.6 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (layer, y) in zip(axes, outputs):
        values = y.ravel().astype(np.float64)
        finite = values[np.isfinite(values)]
        ax.hist(finite, bins=bins, color="C0")
        title = f"{layer.name} ({_kind(layer)})"
        if finite.size:
            title += f"\nstd {np.std(finite):.3g}"
        if finite.size < values.size:
            title += f", {values.size - finite.size} non-finite"
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
    for ax in axes[len(outputs):]:
        ax.set_visible(False)
    return _finish(fig, path)


# --------------------------------------------------------------- schedules


def schedule(schedule, steps, path=None):
    """The learning rate of `schedule` at steps 0 .. steps - 1 (an int
    `steps` >= 1) or at the given steps (a sequence of ints >= 0).

    `schedule`: a ``fd.schedules`` schedule or any callable ``step -> rate``
    (what an optimizer takes as ``learning_rate``). A schedule with a
    ``momentum(step)`` method that returns numbers (``OneCycle`` with
    ``cycle_momentum``) gets its momentum on a second y axis (dashed).
    """
    caller = "schedule"
    path = _check_target(caller, path)
    if not callable(schedule):
        raise TypeError(f"fd.plot.{caller}: schedule must be a fd.schedules schedule or a "
                        f"callable step -> rate, got {type(schedule).__name__} {schedule!r}")
    if isinstance(steps, numbers.Integral) and not isinstance(steps, (bool, np.bool_)):
        xs = np.arange(check_int(f"fd.plot.{caller}", "steps", steps, 1))
    elif isinstance(steps, (bool, np.bool_, str, bytes, float)):
        raise TypeError(f"fd.plot.{caller}: steps must be an int >= 1 or a sequence of steps, "
                        f"got {type(steps).__name__} {steps!r}")
    else:
        xs = _series(caller, "steps", steps)
        if xs.size == 0 or not np.all((xs >= 0) & (xs == np.round(xs))):
            raise ValueError(f"fd.plot.{caller}: steps must be a non-empty sequence of ints "
                             f">= 0, got {steps!r}")
        xs = xs.astype(np.int64)
    lrs = np.array([float(schedule(int(s))) for s in xs])
    fig = _figure(caller, figsize=(6.0, 3.5))
    ax = fig.subplots()
    ax.plot(xs, lrs, "-", color="C0", label="learning rate")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.set_title(getattr(schedule, "name", None) or type(schedule).__name__)
    ax.grid(True, alpha=0.3)
    momentum = getattr(schedule, "momentum", None)
    if callable(momentum) and momentum(int(xs[0])) is not None:
        ms = np.array([float(momentum(int(s))) for s in xs])
        ax2 = ax.twinx()
        ax2.plot(xs, ms, "--", color="C1", label="momentum")
        ax2.set_ylabel("momentum")
        lines = ax.get_lines() + ax2.get_lines()
        ax.legend(lines, [ln.get_label() for ln in lines])
    return _finish(fig, path)
