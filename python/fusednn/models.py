"""Sequential models: a stack of fd.layers trained with fit, as in Keras 3.

    model = fd.Sequential([fd.layers.Dense(100, activation="elu",
                                           kernel_initializer="he_normal"),
                           fd.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="nadam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x, y, epochs=10, batch_size=32, validation_split=0.1)

Outputs and losses. A last Dense with ``activation="softmax"`` (or
``"sigmoid"`` with ``binary_crossentropy``) produces probabilities in
``predict``, while training feeds its logits to the fused loss
(fd.ops.softmax_cross_entropy / sigmoid_binary_cross_entropy), which is the
numerically stable form (Keras does the same internally). With a linear last
layer, the cross-entropy losses read the output as logits (Keras'
``from_logits=True``). Losses by name: ``sparse_categorical_crossentropy``,
``categorical_crossentropy``, ``binary_crossentropy``, ``mse``
(``mean_squared_error``); the loss is averaged over the batch, plus the
layers' weight penalties.

Data are NumPy arrays (CPU) or CuPy arrays (GPU: batches are gathered on the
device, nothing goes through the host but the loss values read for the
progress bar and the history).
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np

from . import activations as _act
from . import ops
from . import optimizers as _optimizers
from .layers.base import Layer, _array_module
from .layers.dense import Dense

__all__ = ["Sequential", "History"]

_LOSSES = {
    "sparse_categorical_crossentropy": "sparse_categorical_crossentropy",
    "categorical_crossentropy": "categorical_crossentropy",
    "binary_crossentropy": "binary_crossentropy",
    "mse": "mse",
    "mean_squared_error": "mse",
}


class History:
    """What fit returns: ``history[name]`` is the list of per-epoch values
    (loss, metrics, and val_* with validation data); ``epoch`` the epochs."""

    def __init__(self):
        self.history: dict = {}
        self.epoch: list = []
        self.params: dict = {}
        self.model = None

    def _append(self, epoch, logs):
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)

    def plot(self, ax=None, metrics=None):
        """Learning curves (matplotlib, optional: pip install 'fusednn[plot]').

        One line per recorded metric (or the names in ``metrics``) against the
        epoch, validation curves dashed. Returns the matplotlib Axes.
        """
        try:
            import matplotlib.pyplot as plt
        except ImportError as e:
            raise ImportError("History.plot needs matplotlib: pip install 'fusednn[plot]'") from e
        if ax is None:
            _, ax = plt.subplots()
        names = metrics or list(self.history)
        for name in names:
            if name not in self.history:
                raise ValueError(f"History.plot: no metric {name!r}; recorded: "
                                 f"{sorted(self.history)}")
            ax.plot(self.epoch, self.history[name], "--" if name.startswith("val_") else "-",
                    label=name)
        ax.set_xlabel("epoch")
        ax.grid(True)
        ax.legend()
        return ax


def _is_array(a):
    return isinstance(a, np.ndarray) or (type(a).__module__.startswith("cupy")
                                         and hasattr(a, "__cuda_array_interface__"))


class Sequential:
    """A linear stack of layers (Keras' ``Sequential``)."""

    def __init__(self, layers=None, name: str = "sequential"):
        self.name = name
        self.layers: list = []
        self.built = False
        self.optimizer = None
        self.loss = None
        self.metrics: list = []
        self.stop_training = False
        self.history = None
        self._params: list = []
        for layer in layers or []:
            self.add(layer)

    # ------------------------------------------------------------ building
    def add(self, layer) -> None:
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: expected a fd.layers layer, got "
                            f"{type(layer).__name__}")
        self.layers.append(layer)
        self.built = False

    def build(self, input_dim: int, xp=np, dtype=np.float32) -> None:
        """Build every layer for inputs of `input_dim` features."""
        if not self.layers:
            raise ValueError("Sequential.build: the model has no layers")
        dim = input_dim
        for layer in self.layers:
            if not layer.built:
                layer.build(dim, xp, dtype)
            elif layer.input_dim != dim:
                raise ValueError(f"Sequential.build: layer {layer.name} was built for "
                                 f"{layer.input_dim} input features, gets {dim}")
            dim = layer.output_dim(dim)
        self._params = [w for layer in self.layers for w in layer._trainable_weights]
        self._plan()
        self.built = True

    def _plan(self) -> None:
        """Fuse BatchNormalization -> activation layer (-> Dropout/AlphaDropout)
        into the BN layer's one kernel call (fd.ops.batchnorm_forward with
        activation= and dropout=); the absorbed layers are skipped. ``_steps``
        lists (layer, absorbed layers) in order."""
        from .layers import ELU, Activation, AlphaDropout, BatchNormalization, Dropout, LeakyReLU

        steps, i = [], 0
        while i < len(self.layers):
            layer, absorbed = self.layers[i], []
            if isinstance(layer, BatchNormalization):
                layer.fused_activation = layer.fused_dropout = None
                layer.fused_dropout_mc = False
                nxt = self.layers[i + 1] if i + 1 < len(self.layers) else None
                if isinstance(nxt, (Activation, ELU, LeakyReLU)):
                    layer.fused_activation = nxt.activation
                    absorbed.append(nxt)
                    drop = self.layers[i + 2] if i + 2 < len(self.layers) else None
                    if isinstance(drop, (Dropout, AlphaDropout)):
                        layer.fused_dropout = (drop.rate, isinstance(drop, AlphaDropout),
                                               drop.seed)
                        layer.fused_dropout_mc = drop.mc
                        absorbed.append(drop)
            steps.append((layer, absorbed))
            i += 1 + len(absorbed)
        self._steps = steps

    def _ensure_built(self, x):
        if not self.built:
            self.build(int(x.shape[1]), _array_module(x), x.dtype)

    @property
    def trainable_weights(self) -> list:
        return [w for layer in self.layers for w in layer.trainable_weights]

    @property
    def weights(self) -> list:
        return [w for layer in self.layers for w in layer.weights]

    def get_weights(self) -> list:
        return [w for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, weights) -> None:
        weights = list(weights)
        need = sum(len(layer.weights) for layer in self.layers)
        if len(weights) != need:
            raise ValueError(f"Sequential.set_weights: got {len(weights)} arrays, the model has "
                             f"{need} weights")
        i = 0
        for layer in self.layers:
            n = len(layer.weights)
            layer.set_weights(weights[i:i + n])
            i += n

    # ------------------------------------------------------------- compile
    def compile(self, optimizer="rmsprop", loss=None, metrics=None) -> None:
        """Choose the optimizer (an instance or a name), the loss (a name)
        and the metrics (``["accuracy"]`` or none)."""
        self.optimizer = _optimizers.get(optimizer) if isinstance(optimizer, str) else optimizer
        if not isinstance(self.optimizer, _optimizers.Optimizer):
            raise TypeError(f"Sequential.compile: optimizer must be a fd.optimizers optimizer or "
                            f"its name, got {optimizer!r}")
        if not isinstance(loss, str) or loss.lower() not in _LOSSES:
            raise ValueError(f"Sequential.compile: loss must be one of {sorted(_LOSSES)}, "
                             f"got {loss!r}")
        self.loss = _LOSSES[loss.lower()]
        metrics = list(metrics or [])
        for m in metrics:
            if m not in ("accuracy", "acc"):
                raise ValueError(f"Sequential.compile: unknown metric {m!r}; supported: accuracy")
        self.metrics = ["accuracy" for _ in metrics]
        last = self.layers[-1] if self.layers else None
        if isinstance(last, Dense):
            if self.loss == "binary_crossentropy" and last.activation.name == "sigmoid":
                # the fused sigmoid cross-entropy reads logits (stable for large ones)
                last.output_activation = "sigmoid"
                last.activation = _act.get("linear")
            elif self.loss != "binary_crossentropy" and last.output_activation == "sigmoid":
                last.output_activation = None
                last.activation = _act.get("sigmoid")

    def _output_activation(self):
        """'softmax' / 'sigmoid' when the last layer's activation is applied
        outside the kernels (probabilities in predict, logits in the loss)."""
        last = self.layers[-1]
        if isinstance(last, Dense):
            return last.output_activation
        return None

    # ---------------------------------------------------------- the passes
    def _forward(self, x, training):
        h = x
        for layer, _ in self._steps:
            h = layer.forward(h, training)
        return h

    def _loss_and_grad(self, out, y):
        """(loss as a 0-d array, dL/dout) of the compiled loss."""
        if self.loss == "sparse_categorical_crossentropy":
            return ops.softmax_cross_entropy(out, y.reshape(-1))
        if self.loss == "categorical_crossentropy":
            return ops.softmax_cross_entropy(out, y.astype(out.dtype, copy=False))
        if self.loss == "binary_crossentropy":
            return ops.sigmoid_binary_cross_entropy(out, y.reshape(out.shape).astype(out.dtype,
                                                                                   copy=False))
        return ops.mean_squared_error(out, y.reshape(out.shape).astype(out.dtype, copy=False))

    def _lowest_trainable(self) -> int:
        """Index in ``_steps`` of the lowest layer with trainable weights
        (backward stops there: nothing below needs a gradient)."""
        for i, (layer, _) in enumerate(self._steps):
            if layer.trainable and layer._trainable_weights:
                return i
        return len(self._steps)

    def _train_step(self, xb, yb):
        out = self._forward(xb, True)
        loss, grad = self._loss_and_grad(out, yb)
        stop = self._lowest_trainable()
        done = set()
        for i in range(len(self._steps) - 1, stop - 1, -1):
            layer = self._steps[i][0]
            grad = layer.backward(grad, need_dx=i > stop)
            done.add(id(layer))
        params, grads, flags, pens, cons = [], [], [], [], []
        for layer in self.layers:
            ws = layer._trainable_weights
            live = id(layer) in done and layer.trainable
            gs = layer.grads if live else ws  # a frozen weight's "gradient" is never read
            params += ws
            grads += list(gs)
            flags += [live] * len(ws)
            pens += layer.weight_penalties()
            cons += layer.weight_constraints()
        if params:
            self.optimizer.apply(grads, params, trainable=flags, penalties=pens,
                                 constraints=cons)
        return out, loss

    def _metric_values(self, out, y) -> dict:
        values = {}
        if "accuracy" in self.metrics:
            xp = _array_module(out)
            if self.loss == "binary_crossentropy":
                threshold = 0.0 if self._output_activation() == "sigmoid" else 0.5
                pred = (out.reshape(y.shape) > threshold) if out.size == y.size else None
                values["accuracy"] = float(xp.mean(pred == (y > 0.5)))
            elif self.loss == "sparse_categorical_crossentropy":
                values["accuracy"] = float(xp.mean(xp.argmax(out, axis=1) == y.reshape(-1)))
            else:
                values["accuracy"] = float(xp.mean(xp.argmax(out, axis=1)
                                                   == xp.argmax(y, axis=1)))
        return values

    # ---------------------------------------------------------- fit & co.
    def _check_xy(self, caller, x, y):
        if not _is_array(x):
            raise TypeError(f"{caller}: x must be a NumPy or CuPy array, got {type(x).__name__}")
        if x.ndim != 2:
            raise ValueError(f"{caller}: x has {x.ndim} dims, expected 2 (samples, features)")
        if y is not None:
            if not _is_array(y):
                raise TypeError(f"{caller}: y must be a NumPy or CuPy array, got "
                                f"{type(y).__name__}")
            if y.shape[0] != x.shape[0]:
                raise ValueError(f"{caller}: x has {x.shape[0]} samples but y has {y.shape[0]}")
            if _array_module(y) is not _array_module(x):
                raise TypeError(f"{caller}: x and y must both be NumPy or both be CuPy arrays")

    @staticmethod
    def _check_int(caller, name, v, low):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ValueError(f"{caller}: {name} must be an int >= {low}, got {v!r}")
        return int(v)

    def fit(self, x, y, batch_size=32, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, seed=None):
        """Train for `epochs` epochs of mini-batches; returns a History.

        validation_split takes the LAST fraction of x/y (before shuffling), as
        Keras does; validation_data is an (x_val, y_val) pair. verbose: 0
        silent, 1 (or "auto") a progress bar per epoch with loss, metrics and
        samples/s, 2 one line per epoch.
        """
        caller = "Sequential.fit"
        if self.optimizer is None:
            raise RuntimeError(f"{caller}: call compile() first")
        self._check_xy(caller, x, y)
        batch_size = self._check_int(caller, "batch_size", batch_size, 1)
        epochs = self._check_int(caller, "epochs", epochs, 0)
        verbose = 1 if verbose == "auto" else verbose
        if verbose not in (0, 1, 2):
            raise ValueError(f"{caller}: verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
        if not (0.0 <= float(validation_split) < 1.0):
            raise ValueError(f"{caller}: validation_split must be in [0, 1), got "
                             f"{validation_split!r}")
        if validation_data is not None and validation_split:
            raise ValueError(f"{caller}: give validation_data or validation_split, not both")
        if validation_split:
            n_val = int(math.ceil(x.shape[0] * validation_split))
            x, y, x_val, y_val = x[:-n_val], y[:-n_val], x[-n_val:], y[-n_val:]
        elif validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError(f"{caller}: validation_data must be a pair (x_val, y_val)")
            x_val, y_val = validation_data
            self._check_xy(caller, x_val, y_val)
        else:
            x_val = y_val = None
        if x.shape[0] == 0:
            raise ValueError(f"{caller}: no training samples")
        self._ensure_built(x)
        xp = _array_module(x)
        rng = np.random.default_rng(seed)
        n = x.shape[0]
        steps = -(-n // batch_size)
        history = History()
        history.model = self
        history.params = {"epochs": epochs, "steps": steps, "verbose": verbose}
        self.history = history
        cbs = list(callbacks or [])
        for cb in cbs:
            cb.set_model(self)
        self.stop_training = False
        for cb in cbs:
            cb.on_train_begin({})
        for epoch in range(epochs):
            for cb in cbs:
                cb.on_epoch_begin(epoch, {})
            order = rng.permutation(n) if shuffle else np.arange(n)
            order = xp.asarray(order)
            bar = _Progress(epoch, epochs, steps, verbose)
            t0 = time.perf_counter()
            loss_sum, metric_sums, seen = 0.0, {}, 0
            for step in range(steps):
                idx = order[step * batch_size:(step + 1) * batch_size]
                xb, yb = x[idx], y[idx]
                for cb in cbs:
                    cb.on_train_batch_begin(step, {})
                out, loss = self._train_step(xb, yb)
                m = xb.shape[0]
                batch_loss = float(loss) + self._penalty_loss()
                loss_sum += batch_loss * m
                for k, v in self._metric_values(out, yb).items():
                    metric_sums[k] = metric_sums.get(k, 0.0) + v * m
                seen += m
                logs = {"loss": loss_sum / seen, **{k: v / seen for k, v in metric_sums.items()}}
                bar.update(step + 1, seen / (time.perf_counter() - t0), logs)
                for cb in cbs:
                    cb.on_train_batch_end(step, {"loss": batch_loss})
                if self.stop_training:
                    break
            logs = {"loss": loss_sum / max(seen, 1),
                    **{k: v / max(seen, 1) for k, v in metric_sums.items()}}
            if x_val is not None:
                val = self.evaluate(x_val, y_val, batch_size=batch_size, return_dict=True)
                logs.update({f"val_{k}": v for k, v in val.items()})
            bar.close(logs)
            for cb in cbs:
                cb.on_epoch_end(epoch, logs)
            history._append(epoch, logs)  # last, as Keras: keys callbacks add are kept
            if self.stop_training:
                break
        for cb in cbs:
            cb.on_train_end({})
        return history

    def _penalty_loss(self) -> float:
        return sum(layer.penalty_loss() for layer in self.layers)

    def evaluate(self, x, y, batch_size=32, verbose=0, return_dict=False):
        """The loss (+ penalties) and metrics over x, y in inference mode:
        a float without metrics, else [loss, *metrics] (or a dict)."""
        caller = "Sequential.evaluate"
        if self.loss is None:
            raise RuntimeError(f"{caller}: call compile() first")
        self._check_xy(caller, x, y)
        batch_size = self._check_int(caller, "batch_size", batch_size, 1)
        self._ensure_built(x)
        n = x.shape[0]
        loss_sum, metric_sums = 0.0, {}
        for start in range(0, n, batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            out = self._forward(xb, False)
            loss, _ = self._loss_and_grad(out, yb)
            loss_sum += float(loss) * xb.shape[0]
            for k, v in self._metric_values(out, yb).items():
                metric_sums[k] = metric_sums.get(k, 0.0) + v * xb.shape[0]
        result = {"loss": loss_sum / max(n, 1) + self._penalty_loss(),
                  **{k: v / max(n, 1) for k, v in metric_sums.items()}}
        if return_dict:
            return result
        return result["loss"] if len(result) == 1 else list(result.values())

    def predict(self, x, batch_size=32, verbose=0, mc_samples=None, training=False):
        """Outputs for x (probabilities after a softmax/sigmoid last layer).

        mc_samples=N: MC dropout (Gal & Ghahramani 2016): N passes with the
        dropout layers active (everything else in inference mode); returns
        (mean, std) over the passes.
        """
        caller = "Sequential.predict"
        self._check_xy(caller, x, None)
        batch_size = self._check_int(caller, "batch_size", batch_size, 1)
        self._ensure_built(x)
        if mc_samples is not None:
            mc_samples = self._check_int(caller, "mc_samples", mc_samples, 1)
            xp = _array_module(x)
            runs = xp.stack([self._predict_once(x, batch_size, mc=True)
                             for _ in range(mc_samples)])
            return runs.mean(axis=0), runs.std(axis=0)
        return self._predict_once(x, batch_size, mc=False, training=training)

    def _predict_once(self, x, batch_size, mc, training=False):
        from .layers import AlphaDropout, BatchNormalization, Dropout

        xp = _array_module(x)
        outs = []
        for start in range(0, x.shape[0], batch_size):
            h = x[start:start + batch_size]
            for layer, _ in self._steps:
                if mc and isinstance(layer, (Dropout, AlphaDropout)):
                    h = layer.forward(h, True)
                elif mc and isinstance(layer, BatchNormalization) and layer.fused_dropout:
                    keep = layer.fused_dropout_mc
                    layer.fused_dropout_mc = True
                    try:
                        h = layer.forward(h, training)
                    finally:
                        layer.fused_dropout_mc = keep
                else:
                    h = layer.forward(h, training)
            outs.append(h)
        out = xp.concatenate(outs) if outs else xp.empty((0, 0), dtype=x.dtype)
        act = self._output_activation()
        if act == "softmax":
            z = out - out.max(axis=1, keepdims=True)
            e = xp.exp(z)
            out = e / e.sum(axis=1, keepdims=True)
        elif act == "sigmoid":
            out = 1.0 / (1.0 + xp.exp(-out))
        return out

    # ------------------------------------------------------------- summary
    def summary(self, print_fn=print) -> None:
        """A table of the layers, output widths and parameter counts."""
        rows = [("Layer (type)", "Output Shape", "Param #")]
        total = trainable = 0
        dim = self.layers[0].input_dim if self.layers and self.layers[0].built else None
        for layer in self.layers:
            dim = layer.output_dim(dim) if dim is not None else None
            count = sum(int(np.prod(w.shape)) for w in layer.weights)
            total += count
            trainable += sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
            rows.append((f"{layer.name} ({type(layer).__name__})",
                         f"(None, {dim})" if dim is not None else "?", str(count)))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        line = "-" * (sum(widths) + 4)
        print_fn(f'Model: "{self.name}"')
        print_fn(line)
        for i, r in enumerate(rows):
            print_fn("  ".join(c.ljust(w) for c, w in zip(r, widths)))
            if i == 0:
                print_fn("=" * len(line))
        print_fn(line)
        print_fn(f"Total params: {total}")
        print_fn(f"Trainable params: {trainable}")
        print_fn(f"Non-trainable params: {total - trainable}")


class _Progress:
    """A per-epoch progress bar (tqdm) with loss, metrics and samples/s."""

    def __init__(self, epoch, epochs, steps, verbose):
        self.verbose = verbose
        self.bar = None
        self.t0 = time.perf_counter()
        self.epoch, self.epochs = epoch, epochs
        if verbose == 1:
            from tqdm import tqdm

            self.bar = tqdm(total=steps, desc=f"Epoch {epoch + 1}/{epochs}", unit="batch",
                            leave=True, file=sys.stdout, dynamic_ncols=True)

    def update(self, step, rate, logs):
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix({**{k: f"{v:.4f}" for k, v in logs.items()},
                                  "samples/s": f"{rate:.0f}"}, refresh=False)

    def close(self, logs):
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()}, refresh=True)
            self.bar.close()
        elif self.verbose == 2:
            items = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
            print(f"Epoch {self.epoch + 1}/{self.epochs} - "
                  f"{time.perf_counter() - self.t0:.1f}s - {items}")
