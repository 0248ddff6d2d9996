"""Training tools: the learning-rate range test and magnitude pruning.

    lrs, losses = fd.tools.find_learning_rate(model, x, y, min_lr=1e-6, max_lr=10.0)
    report = fd.tools.prune(model, threshold=1e-3)
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field

import numpy as np

from .callbacks import Callback
from .health import diagnose
from .layers import Dense
from ._arrays import array_module
from .layers.base import Layer
from .models import Sequential
from ._validate import check_bool, check_float, check_int

__all__ = ["diagnose", "find_learning_rate", "prune", "PruneReport"]


# ------------------------------------------------------ learning-rate range test


class _RangeTest(Callback):
    """Sets the rate of each batch, records its loss, stops the fit when done
    or when the (smoothed) loss exceeds ``stop_factor`` times the best."""

    def __init__(self, lrs, stop_factor, smoothing):
        super().__init__()
        self.lrs, self.stop_factor, self.smoothing = lrs, stop_factor, smoothing
        self.losses: list = []
        self.best = math.inf
        self._avg = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate = float(self.lrs[len(self.losses)])

    def on_train_batch_end(self, batch, logs=None):
        loss = float(logs["loss"])
        i = len(self.losses)
        if self.smoothing:
            # bias-corrected exponential average, so the first values are not pulled to 0
            self._avg = self.smoothing * self._avg + (1.0 - self.smoothing) * loss
            loss = self._avg / (1.0 - self.smoothing ** (i + 1))
        self.losses.append(loss)
        blown = not math.isfinite(loss) or (self.stop_factor is not None
                                            and loss > self.stop_factor * self.best)
        self.best = min(self.best, loss)
        if blown or len(self.losses) == len(self.lrs):
            self.model.stop_training = True


def _check_xy(caller, x, y):
    for name, a in (("x", x), ("y", y)):
        if not (hasattr(a, "shape") and hasattr(a, "ndim") and hasattr(a, "dtype")):
            raise TypeError(f"{caller}: {name} must be a NumPy or CuPy array, got "
                            f"{type(a).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{caller}: x has {x.ndim} dims, expected 2 (samples, features)")
    if x.shape[0] == 0:
        raise ValueError(f"{caller}: x has no samples")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{caller}: x has {x.shape[0]} samples but y has {y.shape[0]}")


def find_learning_rate(model, x, y, min_lr=1e-6, max_lr=10.0, steps=None, epochs=1,
                       batch_size=32, stop_factor=4.0, smoothing=0.9, seed=None, plot=False):
    """The learning-rate range test (Smith 2017, "Cyclical learning rates";
    the exponential-growth callback of Géron's "Hands-On ML", ch. 11).

    Trains the compiled `model` on mini-batches of (x, y) (``model.fit``,
    shuffled with `seed`) while the learning rate grows geometrically from
    `min_lr` to `max_lr` over `steps` batches (default: `epochs` epochs,
    ``epochs * ceil(len(x) / batch_size)`` batches): batch i uses
    ``lrs[i] = min_lr * (max_lr / min_lr) ** (i / (steps - 1))``
    (``np.geomspace``). The recorded loss of batch i is the smoothed one
    (by default): the bias-corrected exponential average of the batch
    losses as ``fit`` reports them (training loss plus weight penalties,
    before the step), ``avg_i = beta avg_{i-1} + (1 - beta) loss_i``,
    recorded as ``avg_i / (1 - beta^(i+1))`` with ``beta = smoothing``
    (default 0.9, about the last ten batches; fastai uses 0.98;
    ``smoothing=0`` records the raw batch losses, Géron's callback). The
    sweep stops early at the first recorded loss above ``stop_factor`` times
    the lowest one so far, or not finite (without fit's warning for a NaN
    loss: the sweep is meant to diverge); ``stop_factor=None`` never stops
    early. (On raw losses the batch-to-batch noise alone can trip a 4x
    test, hence the smoothing.)

    Afterwards the model is restored exactly: its weights (moving statistics
    included, bit for bit), its optimizer's state (``get_state``: step count
    and slots) and learning rate (a float or a schedule object, as it was),
    ``model.history``, ``model.stop_training`` and the dropout layers' step
    counters. (An RReLU layer's random stream is not rewound.) An unbuilt
    model is built first, as ``fit`` would build it, and stays built.

    A good rate is usually some ten times below the one where the loss turns
    up, e.g. ``lrs[np.argmin(losses)] / 10``.

    plot=True draws the losses against the rates on a log x axis
    (matplotlib, optional: ``pip install 'fusednn[plot]'``).

    Returns (lrs, losses) as float64 NumPy arrays of the batches run (shorter
    than `steps` when the sweep stopped early).
    """
    caller = "find_learning_rate"
    if not isinstance(model, Sequential):
        raise TypeError(f"{caller}: model must be a fd.Sequential, got {type(model).__name__}")
    if model.optimizer is None or model.loss is None:
        raise ValueError(f"{caller}: the model is not compiled; call model.compile(optimizer=..., "
                         f"loss=...) first")
    _check_xy(caller, x, y)
    min_lr = check_float(caller, "min_lr", min_lr, low=0.0, low_open=True)
    max_lr = check_float(caller, "max_lr", max_lr, low=0.0, low_open=True)
    if max_lr <= min_lr:
        raise ValueError(f"{caller}: max_lr must be > min_lr, got min_lr={min_lr}, "
                         f"max_lr={max_lr}")
    batch_size = check_int(caller, "batch_size", batch_size, 1)
    epochs = check_int(caller, "epochs", epochs, 1)
    per_epoch = -(-x.shape[0] // batch_size)
    if steps is None:
        steps = epochs * per_epoch
        if steps < 2:
            raise ValueError(f"{caller}: {epochs} epoch(s) of batch_size={batch_size} over "
                             f"{x.shape[0]} samples is {steps} batch; the sweep needs at least 2 "
                             f"(pass steps= or a smaller batch_size)")
    else:
        steps = check_int(caller, "steps", steps, 2)
    if stop_factor is not None:
        stop_factor = check_float(caller, "stop_factor", stop_factor, low=1.0, low_open=True)
    smoothing = check_float(caller, "smoothing", smoothing, low=0.0, high=1.0, high_open=True)
    plot = check_bool(caller, "plot", plot)
    if plot:
        plt = _pyplot(caller)
    if seed is not None and (isinstance(seed, (bool, np.bool_))
                             or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f"{caller}: seed must be an int >= 0 or None, got {seed!r}")

    if not model.built:
        model.build(int(x.shape[1]), array_module(x))
    lrs = np.geomspace(min_lr, max_lr, steps)
    opt = model.optimizer
    saved_weights = model.get_weights()
    saved_state = opt.get_state()
    saved_lr = opt.learning_rate
    saved_history, saved_stop = model.history, model.stop_training
    saved_steps = model._dropout_state()
    sweep = _RangeTest(lrs, stop_factor, smoothing)
    try:
        with warnings.catch_warnings():
            # the sweep is meant to reach the rates where the loss diverges
            warnings.filterwarnings("ignore", "Sequential.fit: the loss is", RuntimeWarning)
            model.fit(x, y, batch_size=batch_size, epochs=-(-steps // per_epoch), verbose=0,
                      callbacks=[sweep], shuffle=True, seed=seed)
    finally:
        model.set_weights(saved_weights)
        opt.set_state(saved_state)
        opt.learning_rate = saved_lr
        model.history, model.stop_training = saved_history, saved_stop
        for layer, attr, value in saved_steps:
            setattr(layer, attr, value)
    losses = np.asarray(sweep.losses, dtype=np.float64)
    lrs = lrs[:losses.size].copy()
    if plot:
        _, ax = plt.subplots()
        ax.plot(lrs, losses)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("smoothed loss" if smoothing else "loss")
        ax.grid(True)
    return lrs, losses


def _pyplot(caller):
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError(f"{caller}(plot=True) needs matplotlib: pip install 'fusednn[plot]' "
                          f"(or pip install matplotlib)") from e
    return plt


# ----------------------------------------------------------------- pruning


@dataclass
class PruneReport:
    """What prune did: per Dense layer (by name) the zeros and the size of
    its kernel after pruning, how many weights it set to zero, and totals."""

    threshold: float
    layers: dict = field(default_factory=dict)  # name -> (zeros, size, pruned)

    @property
    def zeros(self) -> int:
        return sum(z for z, _, _ in self.layers.values())

    @property
    def size(self) -> int:
        return sum(s for _, s, _ in self.layers.values())

    @property
    def pruned(self) -> int:
        return sum(p for _, _, p in self.layers.values())

    @property
    def fraction(self) -> float:
        """Overall fraction of zero kernel weights."""
        return self.zeros / self.size if self.size else 0.0

    sparsity = fraction

    @property
    def fractions(self) -> dict:
        """Per layer name: the fraction of zero kernel weights."""
        return {name: (z / s if s else 0.0) for name, (z, s, _) in self.layers.items()}

    def __repr__(self):
        width = max([len(n) for n in self.layers] + [5])
        lines = [f"PruneReport(threshold={self.threshold:g})",
                 f"  {'layer'.ljust(width)}  {'zeros':>9}  {'size':>9}  {'sparsity':>8}"]
        for name, (z, s, _) in self.layers.items():
            lines.append(f"  {name.ljust(width)}  {z:>9}  {s:>9}  "
                         f"{(z / s if s else 0.0):>8.2%}")
        lines.append(f"  {'total'.ljust(width)}  {self.zeros:>9}  {self.size:>9}  "
                     f"{self.fraction:>8.2%}")
        return "\n".join(lines)


def prune(model, threshold):
    """Magnitude pruning: set every Dense kernel weight with ``|w| < threshold``
    to 0, in place (NumPy or CuPy arrays alike).

    model: a fd.Sequential or a list of fd layers, built. Only Dense kernels
    are pruned: biases, BatchNormalization's gamma/beta/moving statistics and
    PReLU slopes are left as they are (they are few, and zeroing a BN scale
    or a bias changes a unit's whole output rather than one connection).
    ``threshold=0`` prunes nothing. No mask is kept: further training lets
    the pruned weights grow again (train with ``kernel_regularizer=
    fd.regularizers.L1(...)`` first so that most of them are already near 0;
    Géron's "sparse models").

    Returns a PruneReport: per layer and overall, the zeros and the size of
    the kernels after pruning (``report.fractions``, ``report.fraction``)
    and the number of weights this call set to zero (``report.pruned``).
    """
    caller = "prune"
    if isinstance(model, Sequential):
        layers = model.layers
    elif isinstance(model, (list, tuple)) and all(isinstance(la, Layer) for la in model):
        layers = list(model)
    else:
        raise TypeError(f"{caller}: model must be a fd.Sequential or a list of fd layers, got "
                        f"{type(model).__name__}")
    threshold = check_float(caller, "threshold", threshold, low=0.0)
    dense = [la for la in layers if isinstance(la, Dense)]
    for layer in dense:
        if not layer.built:
            raise ValueError(f"{caller}: layer {layer.name} is not built; build or fit the model "
                             f"first")
    report = PruneReport(threshold)
    for layer in dense:
        k = layer.kernel
        xp = array_module(k)
        before = int(xp.count_nonzero(k == 0))
        k[xp.abs(k) < threshold] = 0
        zeros = int(xp.count_nonzero(k == 0))
        report.layers[layer.name] = (zeros, int(k.size), zeros - before)
    return report
