"""Sequential models: a stack of fd.layers trained with fit, as in Keras 3.

    model = fd.Sequential([fd.layers.Dense(100, activation="elu",
                                           kernel_initializer="he_normal"),
                           fd.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="nadam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x, y, epochs=10, batch_size=32, validation_split=0.1)

Outputs and losses (a softmax or sigmoid head computes logits for the fused
cross-entropy, and predict applies it): see fusednn.models.loss; which layers
run as one op: fusednn.models.plan.

Data are NumPy arrays (CPU) or CuPy arrays (GPU: batches are gathered on the
device, nothing goes through the host but the loss values read for the
progress bar and the history); torch/JAX tensors through DLPack and pandas
DataFrames become NumPy views or arrays once per call; arrays on disk,
generators and fd.utils.Sequence are read a batch at a time
(fusednn.models.batches), by threads that load ahead of the step.

Saving and resuming: ``model.save(path)`` writes one safetensors file
(fusednn.saving: config, weights, optimizer state and every random state);
``fd.models.load(path)`` gives back a model whose ``fit(...,
initial_epoch=...)`` continues exactly where the saved one stopped.
``fd.models.clone_model`` makes a fresh copy of the architecture.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import time
import warnings

import numpy as np

from .. import distributed as _distributed
from .. import optimizers as _optimizers
from .._arrays import array_module, is_array
from .._foreign import accept, give_back
from .._frames import frame_values
from .._validate import c_array, check_bool, check_float_dtype, check_path
from .. import health as _health
from .. import ops
from ..layers import BatchNormalization, Dense, Dropout, Input
from ..layers._util import check_seed, rng_state, set_rng_state
from ..layers.base import Layer
from ..saving import model as saving_model
from ..utils.data import is_disk_array, is_sequence, is_stream, read_rows
from .batches import ArrayBatches, DiskBatches, SequenceBatches, StreamBatches
from .engine import CompiledForward, CompiledStep, unsupported, unsupported_layers
from .history import History, _Progress
from .loss import LOSSES, Loss
from .plan import DenseBatchNormStep, plan

__all__ = ["Sequential", "clone_model", "load", "load_model"]

def _check_real(caller, name, a, dtype):
    """`a` holds real numbers (bool, integer or float), which the model casts
    to `dtype`; TypeError otherwise."""
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{caller}: {name} has dtype {a.dtype.name}; expected real numbers "
                        f"(bool, integer or float), which are cast to the model's dtype "
                        f"{dtype.name}")


_DISK_CHUNK = 65536  # rows predict reads from a disk array at a time


def _short(value) -> str:
    """A repr for messages, cut to 40 characters."""
    r = repr(value)
    return r if len(r) <= 40 else r[:37] + "..."


def _loaded(x) -> bool:
    """x is read a batch at a time (fusednn.models.batches): an array on
    disk, a generator or iterable of batches, a Sequence."""
    return is_disk_array(x) or is_stream(x) or is_sequence(x)


def _input_width(shape) -> int:
    """build's input_dim: an int >= 1, or a shape ``(None, n)`` / ``(n,)``."""
    if isinstance(shape, (tuple, list)):
        dims = list(shape)
        if len(dims) == 2 and dims[0] is None:
            dims = dims[1:]
        if len(dims) == 1:
            shape = dims[0]
        else:
            raise ValueError(f"Sequential.build: input shape {tuple(shape)!r}; a dense model "
                             f"takes (None, features) or (features,)")
    if isinstance(shape, bool) or not isinstance(shape, (int, np.integer)) or shape < 1:
        raise ValueError(f"Sequential.build: input_dim must be an int >= 1 or (None, features), "
                         f"got {shape!r}")
    return int(shape)


def _built_dtype(layers):
    """The dtype of the first built layer with weights in `layers`, or None."""
    for layer in layers:
        if layer.built and layer.weights:
            return np.dtype(layer.weights[0].dtype)
    return None


def _layer_classes() -> dict:
    """The registry of layer classes a config may name: fd.layers' own, by
    class name (nothing else is ever imported or evaluated)."""
    from .. import layers

    return {name: getattr(layers, name) for name in layers.__all__
            if name not in ("Layer", "Input")}


def _layers_from_config(caller, entries, keep_names=True) -> list:
    """New layers from ``[{"class_name", "config"}, ...]`` (a get_config)."""
    classes = _layer_classes()
    if not isinstance(entries, list):
        raise ValueError(f"{caller}: 'layers' must be a list of {{'class_name', 'config'}} "
                         f"dicts, got {entries!r}")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str) or \
                not isinstance(entry.get("config"), dict):
            raise ValueError(f"{caller}: layers[{i}] must be {{'class_name': str, 'config': "
                             f"dict}}, got {entry!r}")
        cls = classes.get(entry["class_name"])
        if cls is None:
            raise ValueError(f"{caller}: layers[{i}] has the unknown layer class "
                             f"{entry['class_name']!r}; expected one of {sorted(classes)}")
        config = dict(entry["config"])
        if not keep_names:
            config.pop("name", None)
        try:
            out.append(cls.from_config(config))
        except (TypeError, ValueError, KeyError) as e:
            # KeyError: a nested config entry without its keys
            kind = ValueError if isinstance(e, KeyError) else type(e)
            raise kind(f"{caller}: layers[{i}] ({entry['class_name']}): {e!s}") from None
    return out


def _mean_logs(loss_sum, metric_sums, seen) -> dict:
    """fit's logs from its sums over `seen` samples (none yet: the sums)."""
    n = max(seen, 1)
    return {"loss": loss_sum / n, **{k: v / n for k, v in metric_sums.items()}}


def _warn_loss(caller, loss, where, stacklevel):
    """fit's one warning of a non-finite loss (`where`: when it was seen)."""
    warnings.warn(f"{caller}: the loss is {loss} {where}; training goes on (add "
                  f"fd.callbacks.TerminateOnNaN() to stop). Check x and y for NaN or inf, or "
                  f"lower the learning rate", RuntimeWarning, stacklevel=stacklevel)


def _reads_batch_end(cb) -> bool:
    """Whether `cb` has an on_train_batch_end of its own, not the base
    Callback's no-op (it reads the batch's loss: fit then reads a deferred
    step's loss at every batch)."""
    hook = getattr(type(cb), "on_train_batch_end", None)
    return "on_train_batch_end" in vars(cb) or not getattr(hook, "reads_nothing", False)


class Sequential:
    """A linear stack of layers (Keras' ``Sequential``).

    ``layers`` may hold layers that are already built, e.g. those of another
    model (transfer learning, Keras' idiom)::

        new = fd.Sequential(model.layers[:-1] + [fd.layers.Dense(3, activation="softmax")])

    The two models then share those layers and their weights; freeze them
    with ``layer.trainable = False`` to train the new head only, or start
    from ``fd.models.clone_model(model, copy_weights=True)`` to keep the
    original intact.

    ``layers`` may start with ``fd.Input((features,))``, or its first layer
    may take ``input_shape=(features,)`` / ``input_dim=features`` (Keras'
    habits): the model is then built at once, with NumPy arrays, so
    ``summary()`` and ``count_params()`` work before any data is seen.
    Otherwise it is built by the first fit/predict/evaluate/model(x) (for
    the width and the array module of x) or by ``build``.

    dtype: the model's float type, ``"float32"`` or ``"float64"``, as Keras'
    layer ``dtype`` (whose default, ``floatx``, is float32 too). None: the
    dtype of the layers given that are already built (a model made of
    another one's layers), else float32. The data never choose it: fit,
    predict, evaluate and ``model(x)`` cast integer, bool and other float
    inputs to the model's dtype, once per call (a copy of x, and of y for
    losses that take float targets; sparse class indices stay integers). A
    float64 model given float32 data computes in float64.
    """

    def __init__(self, layers=None, name: str = "sequential", dtype=None):
        if not isinstance(name, str):
            raise TypeError(f"Sequential: name must be a str, got {name!r}")
        self.name = name
        self._dtype = check_float_dtype("Sequential", "dtype", dtype)
        self._input_dim = None  # declared by fd.Input or the first layer's input_shape
        self.layers: list = []
        self.built = False
        self.optimizer = None
        self.loss = None
        self.metrics: list = []
        self.stop_training = False
        self.history = None
        self._params: list = []
        self._input_spec = None   # (input_dim, xp, dtype) of the last build
        self._shuffle_rng = None  # fit's Generator: created by seed=, saved, continued
        self._resume_at = None    # (epoch, batch) where fit goes on: see _epochs
        self._steps: list = []    # the Steps that run the layers (models/plan.py)
        self._loss = None         # the compiled loss with the output head (models/loss.py)
        self._planned = None      # what the Steps were planned for (see _plan)
        self._step_mode = None
        self.jit_compile = "auto"  # fit's step: compiled where supported (see compile)
        self._engine = None       # the CompiledStep fit uses (models/engine.py)
        self._forward_plan = None  # the CompiledForward of predict and evaluate
        self._dist = None         # the fd.distributed FitSession of a distributed fit
        self.feature_names_in_ = None  # the column names of the first fit's DataFrame
        self._fitted_without_names = False
        for layer in layers or []:
            self.add(layer)

    # ------------------------------------------------------------ building
    def add(self, layer) -> None:
        """Append a layer (Keras' ``add``). ``fd.Input(shape)`` may come first
        only; once the input width is known (from it, or from the first
        layer's ``input_shape`` / ``input_dim``) each add builds the model."""
        if isinstance(layer, Input):
            if self.layers or self._input_dim is not None:
                raise ValueError(f"Sequential.add: {layer!r} must be the model's first entry")
            self._input_dim = layer.shape[0]
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: expected a fd.layers layer or fd.Input, got "
                            f"{type(layer).__name__}")
        if not self.layers and self._input_dim is None:
            self._input_dim = getattr(layer, "declared_input_dim", None)
        self.layers.append(layer)
        self.built = False
        if self._input_dim is not None:
            self.build(self._input_dim, self._input_spec[1] if self._input_spec else np)

    @property
    def dtype(self) -> str:
        """The model's float dtype, ``"float32"`` or ``"float64"`` (see the
        class docstring)."""
        return self._model_dtype().name

    def _model_dtype(self) -> np.dtype:
        return self._dtype or _built_dtype(self.layers) or np.dtype(np.float32)

    def build(self, input_dim, xp=np, dtype=None) -> None:
        """Build every layer for inputs of `input_dim` features (an int, or
        Keras' input shape ``(None, features)`` / ``(features,)``), with the
        array module `xp` (numpy or cupy) and `dtype` (float32 or float64;
        None: the model's dtype; another dtype than the one the model was
        made with is a ValueError). Layers that are already built (shared
        with another model) are kept as they are; they must have been built
        for the width they now receive, with `xp` and `dtype`."""
        if not self.layers:
            raise ValueError("Sequential.build: the model has no layers")
        input_dim = _input_width(input_dim)
        if dtype is None:
            dtype = self._model_dtype()
        else:
            dtype = check_float_dtype("Sequential.build", "dtype", dtype)
            if self._dtype is not None and dtype != self._dtype:
                raise ValueError(f"Sequential.build: dtype={dtype.name}, but the model's dtype "
                                 f"is {self._dtype.name}")
        dim = input_dim
        for layer in self.layers:
            if not layer.built:
                layer.build(dim, xp, dtype)
            elif layer.input_dim != dim:
                raise ValueError(f"Sequential.build: layer {layer.name} was built for "
                                 f"{layer.input_dim} input features, gets {dim}")
            else:
                for w in layer.weights:
                    if w.dtype != dtype or type(w).__module__.split(".")[0] != xp.__name__:
                        raise ValueError(f"Sequential.build: layer {layer.name} holds "
                                         f"{type(w).__module__.split('.')[0]} {w.dtype} "
                                         f"weights, the model is built for {xp.__name__} "
                                         f"{dtype}")
            dim = layer.output_dim(dim)
        self._params = [w for layer in self.layers for w in layer._trainable_weights]
        self._input_spec = (self.layers[0].input_dim, xp, dtype)
        self._dtype = dtype
        self._plan()
        self.built = True

    def _plan(self) -> None:
        """The Steps that run the layers (fusednn.models.plan) and the Loss
        with the output head for the compiled loss (fusednn.models.loss)."""
        # what the plan depends on: the layers, each Dense's activations, the loss
        key = (tuple((id(la), getattr(la, "activation", None),
                      getattr(la, "output_activation", None)) for la in self.layers), self.loss)
        if key == self._planned:
            return
        self._loss = Loss(self.loss, self.layers[-1] if self.layers else None)
        self._steps = plan(self.layers, logits_head=self._loss.sigmoid_logits)
        self._planned = key

    def _ensure_built(self, x):
        if not self.built:
            self.build(int(x.shape[1]), array_module(x))
        else:
            self._plan()  # again where layers were added or the loss changed

    @property
    def trainable_weights(self) -> list:
        return [w for layer in self.layers for w in layer.trainable_weights]

    @property
    def weights(self) -> list:
        return [w for layer in self.layers for w in layer.weights]

    def get_weights(self) -> list:
        return [w for layer in self.layers for w in layer.get_weights()]

    def count_params(self) -> int:
        """The number of scalars in the weights, trainable or not (Keras'
        ``count_params``); ValueError for a model that is not built."""
        if not self.built:
            raise ValueError(f"Sequential.count_params: the model {self.name!r} is not built; "
                             f"start it with fd.Input(shape) or give its first layer "
                             f"input_shape=, call build(input_dim), or fit/predict first")
        return sum(layer.count_params() for layer in self.layers)

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

    # ------------------------------------------------------- config & files
    def get_config(self) -> dict:
        """``{"name": ..., "dtype": ..., "layers": [{"class_name": ...,
        "config": ...}]}``, Keras' form; ``from_config`` rebuilds the
        (unbuilt) model. Every layer must be a fd.layers class (ValueError
        otherwise): configs name their classes and only those are looked
        up."""
        classes = _layer_classes()
        entries = []
        for layer in self.layers:
            name = type(layer).__name__
            if classes.get(name) is not type(layer):
                raise ValueError(f"Sequential.get_config: layer {layer.name} is a "
                                 f"{type(layer).__module__}.{name}, not a fd.layers class; "
                                 f"only fd.layers classes can be rebuilt from a config")
            entries.append({"class_name": name, "config": layer.get_config()})
        return {"name": self.name, "dtype": self.dtype, "layers": entries}

    @classmethod
    def from_config(cls, config: dict) -> "Sequential":
        """A new, unbuilt model from ``get_config()`` (also where the first
        layer declares ``input_shape``); layers keep the names in the
        config. Unknown layer classes raise ValueError."""
        caller = "Sequential.from_config"
        if not isinstance(config, dict) or "layers" not in config:
            raise ValueError(f"{caller}: expected a dict with 'layers' (from get_config), got "
                             f"{config!r}")
        name = config.get("name", "sequential")
        if not isinstance(name, str):
            raise ValueError(f"{caller}: name must be a str, got {name!r}")
        # configs written before models had a dtype have none: the build decides
        dtype = config.get("dtype")
        if dtype not in (None, "float32", "float64"):
            raise ValueError(f"{caller}: dtype must be 'float32' or 'float64', got {dtype!r}")
        return cls._unbuilt(_layers_from_config(caller, config["layers"]), name, dtype)

    @classmethod
    def _unbuilt(cls, layers, name, dtype):
        """A model of `layers` left unbuilt even where its first layer
        declares input_shape: fd.models.load and clone_model build it on
        their device (an eager build would put it on NumPy)."""
        model = cls(name=name, dtype=dtype)
        model.layers = list(layers)
        return model

    def get_build_config(self):
        """``{"input_dim", "dtype"}`` of the build (None when not built), as
        Keras' ``get_build_config``."""
        if not self.built:
            return None
        input_dim, _, dtype = self._input_spec
        return {"input_dim": int(input_dim), "dtype": np.dtype(dtype).name}

    def get_state(self) -> dict:
        """The random and counter state beyond the weights, as plain Python
        values: ``{"layers": [each layer's get_state()], "shuffle_rng": the
        state of fit's shuffle generator, or None before a seeded fit}``."""
        return {"layers": [layer.get_state() for layer in self.layers],
                "shuffle_rng": None if self._shuffle_rng is None else rng_state(self._shuffle_rng)}

    def set_state(self, state: dict) -> None:
        """Restore a ``get_state`` result (ValueError for one of another model)."""
        if not isinstance(state, dict) or set(state) != {"layers", "shuffle_rng"} or \
                not isinstance(state["layers"], list) or len(state["layers"]) != len(self.layers):
            raise ValueError(f"Sequential.set_state: the state must hold one state per layer "
                             f"({len(self.layers)}) and shuffle_rng, got {state!r}"[:300])
        for layer, st in zip(self.layers, state["layers"]):
            layer.set_state(st)
        # Files written before the fused dropout's mask counter moved to its
        # Dropout layer hold it in the BatchNormalization's state.
        legacy = {id(la): st.get("dropout_step", 0) for la, st in zip(self.layers, state["layers"])
                  if isinstance(la, BatchNormalization) and isinstance(st, dict)}
        for step in plan(self.layers):
            if isinstance(step, DenseBatchNormStep) and step.dropout is not None and \
                    legacy.get(id(step.bn)):
                step.dropout.step = legacy[id(step.bn)]
        if state["shuffle_rng"] is not None:
            rng = np.random.default_rng()
            set_rng_state("shuffle_rng", rng, state["shuffle_rng"])
            self._shuffle_rng = rng

    @property
    def optimizer_weights(self) -> list:
        """The weights the optimizer keeps slots for, in slot order: every
        layer's trainable weights, frozen layers' included (their updates are
        masked), so that unfreezing a layer keeps the slots in place."""
        return list(self._params) if self.built else []

    def save(self, path) -> None:
        """Write the model to one safetensors file at `path` (str or
        os.PathLike; any extension, ``.safetensors`` is customary).

        The file holds everything an exact resume needs: the config of the
        model and of each layer, the weights (copied to the host for CuPy
        models), the compile configuration (optimizer with its
        learning-rate schedule, loss, metrics), the optimizer state
        (iterations, slots, extra state such as Nadam's momentum product),
        each layer's ``get_state()`` (dropout step counters, RReLU's
        generator), the generator fit shuffles with, and a CRC32 of each
        tensor's bytes, which ``fd.models.load`` checks. Read it back with
        ``fd.models.load``. Missing directories in `path` are created, as
        ModelCheckpoint does. The file is written to a temporary name in the
        same directory and renamed over `path`, so an error never leaves a
        partial file. Keras writes a zipped ``.keras`` archive instead; the
        layout is in fusednn.saving.model. Not saved (as Keras): callbacks' own
        state (EarlyStopping's counters) and the History.
        """
        saving_model.save_model(self, path)

    # ------------------------------------------------------------- compile
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, jit_compile="auto") -> None:
        """Choose the optimizer (an instance or a name), the loss (a name)
        and the metrics (``["accuracy"]`` or none).

        jit_compile (Keras' argument): how fit runs a training step. "auto"
        (the default): as one native call per batch (fusednn.models.engine)
        where the model allows it, else layer by layer; False: layer by
        layer; True: compiled, and fit raises ValueError naming what does
        not allow it. Both paths give the same weights. ``step_mode`` says
        which one the last fit ran."""
        if jit_compile not in (True, False, "auto"):
            raise ValueError(f"Sequential.compile: jit_compile must be True, False or 'auto', "
                             f"got {jit_compile!r}")
        self.optimizer = _optimizers.get(optimizer) if isinstance(optimizer, str) else optimizer
        if not isinstance(self.optimizer, _optimizers.Optimizer):
            raise TypeError(f"Sequential.compile: optimizer must be a fd.optimizers optimizer or "
                            f"its name, got {optimizer!r}")
        if not isinstance(loss, str) or loss.lower() not in LOSSES:
            raise ValueError(f"Sequential.compile: loss must be one of {sorted(LOSSES)}, "
                             f"got {loss!r}")
        self.loss = LOSSES[loss.lower()]
        metrics = list(metrics or [])
        for m in metrics:
            if m not in ("accuracy", "acc"):
                raise ValueError(f"Sequential.compile: unknown metric {m!r}; supported: accuracy")
        self.metrics = ["accuracy" for _ in metrics]
        self.jit_compile = jit_compile
        self._engine = None
        if self.built:
            self._plan()  # the head depends on the loss

    # ---------------------------------------------------------- the passes
    def _forward(self, x, training, start=0, stop=None, outputs=None):
        """The output of ``_steps[start:stop]`` for their input x; each
        step's output is appended to the list `outputs` where one is given."""
        h = x
        for step in self._steps[start:stop]:
            h = step.forward(h, training)
            if outputs is not None:
                outputs.append(h)
        return h

    def _cacheable_steps(self) -> int:
        """How many of the lowest ``_steps`` fit(cache_frozen=True) may run
        once: the longest prefix whose layers are fd.layers classes, frozen
        (``trainable=False``) or without any weight, and not random in
        training (Dropout, AlphaDropout, RReLU, a BatchNormalization with a
        fused dropout end it)."""
        known = set(_layer_classes().values())
        k = 0
        for step in self._steps:
            if step.random or any(type(layer) not in known or (layer.trainable and layer.weights)
                                  for layer in step.layers):
                return k
            k += 1
        return k

    def _run_steps(self, x, stop, batch_size):
        """The output of ``_steps[:stop]`` in inference mode for all of x, in
        chunks (the layers keep their last chunk's context only)."""
        xp = array_module(x)
        chunk = max(batch_size, 1024)
        outs = []
        for begin in range(0, x.shape[0], chunk):
            outs.append(self._forward(x[begin:begin + chunk], False, 0, stop))
        return xp.concatenate(outs) if outs else x

    def _lowest_trainable(self) -> int:
        """Index in ``_steps`` of the lowest layer with trainable weights
        (backward stops there: nothing below needs a gradient)."""
        for i, step in enumerate(self._steps):
            if any(lay.trainable and lay._trainable_weights for lay in step.layers):
                return i
        return len(self._steps)

    def _train_step(self, xb, yb, start=0, weight=None, outputs=None):
        """One step on a batch (per-sample loss factors `weight`, or None);
        with start > 0, xb is the output of the cached ``_steps[:start]``,
        which get no backward; `outputs`: see _forward."""
        out = self._forward(xb, True, start, None, outputs)
        loss, grad = self._loss(out, yb, weight)
        stop = max(self._lowest_trainable(), start)
        done = set()
        for i in range(len(self._steps) - 1, stop - 1, -1):
            step = self._steps[i]
            grad = step.backward(grad, need_dx=i > stop)
            done.update(id(lay) for lay in step.layers)
        params, grads, flags, pens, cons = [], [], [], [], []
        for layer in self.layers:
            ws = layer._trainable_weights
            live = id(layer) in done and layer.trainable and bool(ws)
            gs = layer.grads if live else ws  # a frozen weight's "gradient" is never read
            params += ws
            grads += list(gs)
            flags += [live] * len(ws)
            pens += layer.weight_penalties()
            cons += layer.weight_constraints()
        if self._dist is not None:
            self._dist.average_gradients(grads, flags)
        if params:
            self.optimizer.apply(grads, params, trainable=flags, penalties=pens,
                                 constraints=cons)
        return out, loss

    def _metric_values(self, out, y) -> dict:
        return {"accuracy": self._loss.accuracy(out, y)} if "accuracy" in self.metrics else {}

    def _compiled_step(self, caller, start):
        """The CompiledStep fit runs, or None (layer by layer); sets
        ``step_mode``."""
        reason = unsupported(self, start) if self.jit_compile else "jit_compile=False"
        if self._dist is not None and reason is None:
            # the native step fuses backward and update: no point to average gradients
            reason = "distributed=True"
        self.step_mode = "compiled" if reason is None else f"layer by layer ({reason})"
        if reason is not None:
            if self.jit_compile is True:
                raise ValueError(f"{caller}: jit_compile=True, but the step cannot be "
                                 f"compiled: {reason}")
            return None
        if self._engine is None:
            self._engine = CompiledStep(self)
        return self._engine

    @property
    def step_mode(self) -> str:
        """How fit runs a training step: ``"compiled"`` (one native call
        per batch) or ``"layer by layer (<why>)"``; what compile's
        ``jit_compile`` and the layers allow, as the last fit found it."""
        if self._step_mode is None and self.optimizer is not None and self.built:
            reason = unsupported(self) if self.jit_compile else "jit_compile=False"
            return "compiled" if reason is None else f"layer by layer ({reason})"
        return self._step_mode

    @step_mode.setter
    def step_mode(self, value):
        self._step_mode = value

    # ---------------------------------------------------------- fit & co.
    def _check_xy(self, caller, x, y, what="x"):
        """(x, y) checked and cast to the model's dtype: x a 2-D array of real
        numbers with the model's width, y (or None) one label row per sample
        on the same device. x is cast, and y too unless the loss takes sparse
        class indices: a copy where the dtype differs, made here once per
        call. ``what`` names x in messages."""
        wy = "y" if what == "x" else what.replace("x", "y")
        dtype = self._model_dtype()
        if not is_array(x):
            raise TypeError(f"{caller}: {what} must be an array (NumPy, CuPy, a DLPack tensor "
                            f"or a pandas DataFrame), got {type(x).__name__}")
        if x.ndim != 2:
            raise ValueError(f"{caller}: {what} has {x.ndim} dims, expected 2 (samples, "
                             f"features)")
        _check_real(caller, what, x, dtype)
        if x.shape[1] == 0:
            raise ValueError(f"{caller}: {what} has 0 features; a dense model needs at least one")
        first = self.layers[0] if self.layers else None
        width = self._input_spec[0] if self.built else \
            first.input_dim if first is not None and first.built else None
        if width is not None and x.shape[1] != width:
            raise ValueError(f"{caller}: {what} has {x.shape[1]} features, the model expects "
                             f"{width}")
        if self.built and array_module(x) is not self._input_spec[1]:
            kind = {"numpy": "NumPy", "cupy": "CuPy"}
            raise TypeError(f"{caller}: {what} is a {kind[array_module(x).__name__]} array, "
                            f"the model's weights are {kind[self._input_spec[1].__name__]} "
                            f"arrays; pass {what} as the same kind")
        # the compiled step and forward read rows: C order (a DataFrame's values are F order),
        # aligned and in native byte order (the kernels read raw memory)
        x = c_array(x, array_module(x), dtype)
        if y is not None:
            if not is_array(y):
                raise TypeError(f"{caller}: {wy} must be an array (NumPy, CuPy, a DLPack tensor "
                                f"or a pandas Series/DataFrame), got {type(y).__name__}")
            if y.shape[0] != x.shape[0]:
                raise ValueError(f"{caller}: {what} has {x.shape[0]} samples but {wy} has "
                                 f"{y.shape[0]}")
            if array_module(y) is not array_module(x):
                raise TypeError(f"{caller}: {what} and {wy} must both be NumPy or both be CuPy "
                                f"arrays")
            _check_real(caller, wy, y, dtype)
            if self.loss != "sparse_categorical_crossentropy":
                y = c_array(y, array_module(y), dtype)
        return x, y

    def _output_dim(self) -> int:
        dim = self._input_spec[0]
        for layer in self.layers:
            dim = layer.output_dim(dim)
        return dim

    def _check_labels(self, caller, y, what="y"):
        """y fits the compiled loss and the built model's output width, checked
        once per call (not per batch, so a bad label stops training before
        any step): class indices in [0, classes) for
        sparse_categorical_crossentropy, (samples, classes) rows for
        categorical_crossentropy, one target per output otherwise."""
        n, out = y.shape[0], self._output_dim()
        if self.loss == "sparse_categorical_crossentropy":
            if y.ndim > 2 or (y.ndim == 2 and y.shape[1] != 1):
                raise ValueError(f"{caller}: {what} has shape {tuple(y.shape)}; "
                                 f"sparse_categorical_crossentropy takes class indices of shape "
                                 f"({n},)")
            if y.dtype.kind not in "iu":
                raise TypeError(f"{caller}: {what} holds {y.dtype.name}; "
                                f"sparse_categorical_crossentropy takes integer class indices "
                                f"(use categorical_crossentropy for one-hot rows)")
            if n:
                low, high = int(y.min()), int(y.max())
                if low < 0 or high >= out:
                    raise ValueError(f"{caller}: {what} has labels in [{low}, {high}], the model "
                                     f"has {out} classes: labels must be in [0, {out})")
        elif self.loss == "categorical_crossentropy":
            if y.ndim != 2 or y.shape[1] != out:
                raise ValueError(f"{caller}: {what} has shape {tuple(y.shape)}; "
                                 f"categorical_crossentropy takes label rows of shape ({n}, "
                                 f"{out})")
        elif y.size != n * out:
            raise ValueError(f"{caller}: {what} has shape {tuple(y.shape)}; the model has {out} "
                             f"output(s) per sample, so {self.loss} needs ({n}, {out}) targets")

    @staticmethod
    def _check_int(caller, name, v, low):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ValueError(f"{caller}: {name} must be an int >= {low}, got {v!r}")
        return int(v)

    # ------------------------------------------------------------ the data
    def _input(self, caller, name, obj):
        """obj as a NumPy or CuPy array: arrays as they are, a pandas
        DataFrame or Series through fusednn._frames (its column names
        kept), an object with ``__dlpack__`` (torch, JAX) through
        fusednn._foreign (a view where the device and layout allow).
        Returns (array, kind to give results back in or None, column names
        or None); anything else comes back as it is, for the caller's
        TypeError."""
        if is_array(obj):
            return obj, None, None
        values, names = frame_values(caller, name, obj)
        if values is not obj:
            return values, None, names
        if hasattr(obj, "__dlpack__"):
            values, kind = accept(caller, name, obj)
            return values, kind, None
        return obj, None, None

    def _xy_in(self, caller, x, y, needs):
        """x and y in memory (arrays, DataFrames, DLPack tensors) through
        _input and _check_xy, y required: (x, y, x's column names)."""
        x, _, names = self._input(caller, "x", x)
        y, _, _ = self._input(caller, "y", y)
        x, y = self._check_xy(caller, x, y)
        if y is None:
            raise ValueError(f"{caller}: y is None; {needs} needs targets for x")
        return x, y, names

    def _check_names(self, caller, names, fitting):
        """scikit-learn's rule for column names: the first fit on a DataFrame
        keeps them as ``feature_names_in_``; later a DataFrame with other
        names is a ValueError, data without names where the model has them
        (or the other way round) a UserWarning."""
        have = self.feature_names_in_
        if have is None and fitting and names is not None and not self._fitted_without_names:
            self.feature_names_in_ = names
            return
        if fitting and have is None and names is None:
            self._fitted_without_names = True
            return
        if have is not None and names is not None:
            if len(have) != len(names) or any(a != b for a, b in zip(have, names)):
                raise ValueError(f"{caller}: the feature names should match those seen in fit; "
                                 f"fit saw {list(have)}, got {list(names)}")
        elif have is not None:
            warnings.warn(f"{caller}: x has no feature names, but the model was fitted with "
                          f"feature names", UserWarning, stacklevel=3)
        elif names is not None and self._fitted_without_names:
            warnings.warn(f"{caller}: x has feature names, but the model was fitted without "
                          f"feature names", UserWarning, stacklevel=3)

    def _fit_labels(self, y):
        """y as the step takes it: sparse class indices as a 1-D int32 or
        int64 array (the kernels' types), other targets unchanged."""
        if self.loss != "sparse_categorical_crossentropy":
            return y
        y = y.reshape(-1)
        native = y.dtype.newbyteorder("=")
        return c_array(y, array_module(y), native if native in (np.int32, np.int64) else np.int64)

    def _class_table(self, caller, class_weight, xp):
        """class_weight (a dict: class index -> weight) as an array over the
        classes (classes it does not name weigh 1, as in scikit-learn), or
        None."""
        if class_weight is None:
            return None
        if not isinstance(class_weight, dict):
            raise TypeError(f"{caller}: class_weight must be a dict mapping class indices to "
                            f"weights, got {type(class_weight).__name__}")
        if self.loss == "mse" or (self.loss == "binary_crossentropy"
                                  and self._output_dim() != 1):
            raise ValueError(f"{caller}: class_weight needs a classification loss with one class "
                             f"per sample, the model's loss is {self.loss} with "
                             f"{self._output_dim()} output(s)")
        classes = 2 if self.loss == "binary_crossentropy" else self._output_dim()
        table = np.ones(classes)
        for k, v in class_weight.items():
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or \
                    not 0 <= k < classes:
                raise ValueError(f"{caller}: class_weight has key {k!r}; keys are class indices "
                                 f"in [0, {classes})")
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                    or not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{caller}: class_weight[{k!r}] = {v!r}; weights must be "
                                 f"finite numbers >= 0")
            table[int(k)] = float(v)
        return xp.asarray(table.astype(self._model_dtype()))

    def _weights(self, caller, name, w, table, y, n):
        """The per-sample loss factors: sample_weight `w` (one finite weight
        >= 0 per sample) times the class_weight `table` entry of each
        sample's class; None when neither is given."""
        if w is None and table is None:
            return None
        dtype = self._model_dtype()
        xp = array_module(y)
        out = None
        if w is not None:
            w, _, _ = self._input(caller, name, w)
            if not is_array(w):
                raise TypeError(f"{caller}: {name} must be an array, got {type(w).__name__}")
            if w.ndim == 2 and w.shape[1] == 1:
                w = w.reshape(-1)
            if w.ndim != 1 or w.shape[0] != n:
                raise ValueError(f"{caller}: {name} has shape {tuple(w.shape)}, expected ({n},): "
                                 f"one weight per sample")
            _check_real(caller, name, w, dtype)
            out = xp.asarray(w).astype(dtype)
            bad = ~(out >= 0) | ~xp.isfinite(out)
            if bool(bad.any()):
                i = int(xp.argmax(bad))
                raise ValueError(f"{caller}: {name}[{i}] = {w[i]!r}; sample weights must be "
                                 f"finite and >= 0")
        if table is not None:
            cw = table[self._loss.classes(y, xp)]
            out = cw if out is None else out * cw
        return xp.ascontiguousarray(out)

    def _prepare_batch(self, caller, item, index, table, source="x"):
        """A raw batch of a generator, Sequence or disk array, checked and
        cast as fit checks arrays: (x, y, weights)."""
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            size = f" of {len(item)}" if isinstance(item, (tuple, list)) else ""
            raise ValueError(f"{caller}: batch {index} of {source} is a {type(item).__name__}"
                             f"{size}; expected (x, y) or (x, y, sample_weight)")
        what = f"x of batch {index}"
        xb, _, names = self._input(caller, what, item[0])
        yb, _, _ = self._input(caller, f"y of batch {index}", item[1])
        if yb is None:
            raise ValueError(f"{caller}: batch {index} of {source} has y=None; fit needs targets")
        xb, yb = self._check_xy(caller, xb, yb, what)
        if xb.shape[0] == 0:
            raise ValueError(f"{caller}: batch {index} of {source} has no samples")
        self._check_labels(caller, yb, f"y of batch {index}")
        wb = self._weights(caller, f"sample_weight of batch {index}",
                           item[2] if len(item) == 3 else None, table, yb, xb.shape[0])
        return xb, self._fit_labels(yb), wb

    def _stream_first(self, caller, x, name):
        """(iterator, first item) of generator/iterable x; ValueError when it
        is empty."""
        it = iter(x)
        try:
            first = next(it)
        except StopIteration:
            raise ValueError(f"{caller}: {name} (a {type(x).__name__}) yielded no batch") \
                from None
        return it, first

    def _source(self, caller, x, y, sample_weight, table, batch_size, steps, workers, queue_size,
                name="x", lo=None, hi=None):
        """The batch source of data (x, y, sample_weight) (see
        fusednn.models.batches), the model built for it."""
        prepare = functools.partial(self._prepare_batch_for, caller, table, name)
        if is_sequence(x):
            if len(x) == 0:
                raise ValueError(f"{caller}: {name} (a {type(x).__name__}) has no batch")
            self._build_from(caller, x[0], name)
            w = getattr(x, "workers", 1) if workers is None else workers
            q = getattr(x, "max_queue_size", 10) if queue_size is None else queue_size
            return SequenceBatches(x, prepare, steps, w, q)
        if is_stream(x):
            it, first = self._stream_first(caller, x, name)
            self._build_from(caller, first, name)
            return StreamBatches(x, it, first, prepare, steps, 1 if workers is None else workers,
                                 10 if queue_size is None else queue_size)
        # a disk array: rows [lo, hi)
        lo = 0 if lo is None else lo
        hi = x.shape[0] if hi is None else hi
        if y is None:
            raise ValueError(f"{caller}: y is None; {name} (a {type(x).__name__} on disk) needs "
                             f"its targets")
        if not hasattr(y, "shape") or y.shape[0] != x.shape[0]:
            raise ValueError(f"{caller}: {name} has {x.shape[0]} samples but y has "
                             f"{getattr(y, 'shape', (None,))[0]}")
        if hi <= lo:
            raise ValueError(f"{caller}: no samples in {name}")
        self._build_from(caller, (read_rows(x, lo, lo + 1), None), name)
        return DiskBatches(x, y, sample_weight, lo, hi, batch_size, prepare,
                           1 if workers is None else workers, 10 if queue_size is None else
                           queue_size)

    def _prepare_batch_for(self, caller, table, source, item, index):
        # table: [] until fit has made the class_weight table, then [table or None]
        return self._prepare_batch(caller, item, index, table[0] if table else None, source)

    def _build_from(self, caller, item, name):
        """Build the model (if it is not) for the x of a first batch."""
        xb = item[0] if isinstance(item, (tuple, list)) and item else item
        xb, _, _ = self._input(caller, f"x of batch 0 of {name}", xb)
        if not is_array(xb) or xb.ndim != 2:
            raise ValueError(f"{caller}: batch 0 of {name} must be (x, y) or (x, y, "
                             f"sample_weight) with x a 2-D array, got "
                             f"{type(item).__name__}")
        self._ensure_built(xb)

    @staticmethod
    def _check_opt_int(caller, name, v, low):
        return None if v is None else Sequential._check_int(caller, name, v, low)

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, seed=None,
            initial_epoch=0, cache_frozen=False, sample_weight=None, class_weight=None,
            steps_per_epoch=None, validation_steps=None, workers=None, max_queue_size=None,
            distributed=False):
        """Train on mini-batches from epoch `initial_epoch` up to `epochs`;
        returns a History.

        The data, x:
        - arrays in memory (NumPy, CuPy; torch/JAX tensors through DLPack, a
          view where possible; pandas DataFrames, whose column names are
          kept as ``feature_names_in_``) with y, cast to the model's dtype
          once (see the class docstring); batches of `batch_size` (default
          32) rows of a permutation of all samples each epoch;
        - arrays on disk (``np.memmap``, h5py datasets) with y: read
          `batch_size` contiguous rows at a time, never whole; an epoch
          shuffles the order of the batches (fusednn.models.batches);
        - a generator or other iterable of ``(x, y)`` or ``(x, y,
          sample_weight)`` batches: ``steps_per_epoch`` batches an epoch (an
          iterator is read on across epochs; without steps_per_epoch an
          epoch ends where it ends, and an iterator that has nothing left
          ends training with a warning, as in Keras);
        - a ``fd.utils.Sequence`` (Keras' PyDataset): its ``len(x)`` batches
          an epoch (shuffle=True permutes their order), then
          ``x.on_epoch_end()``.
        With a generator or Sequence, y and sample_weight come from the
        batches and batch_size is not given. Loading and checking the next
        batches overlaps the step: ``workers`` threads (default 1, 0: in
        this thread; a Sequence's own ``workers`` by default) hold up to
        ``max_queue_size`` batches (default 10).

        sample_weight (one finite weight >= 0 per sample) and class_weight
        (a dict: class index -> weight; classes it leaves out weigh 1)
        multiply each sample's loss, and the batch's loss is ``sum_i w_i
        l_i / batch_size`` (Keras' ``sum_over_batch_size``); the accuracy is
        not weighted (Keras' ``metrics``, not ``weighted_metrics``).

        validation_split takes the LAST fraction of x/y (before shuffling),
        as Keras does (arrays only); validation_data is (x_val, y_val),
        (x_val, y_val, sample_weight_val), or a generator/Sequence
        (``validation_steps`` batches each epoch; needed for an iterator).
        verbose: 0 silent; 1 (or "auto") a progress bar per epoch on a
        terminal (loss, metrics and samples/s; it fits the terminal's
        width), replaced at the epoch's end by one line with every metric,
        val_* included; 2, and 1 where stdout is not a terminal (a log file),
        that line alone, one per epoch.

        A loss that turns NaN or infinite warns once per call
        (RuntimeWarning); training goes on, as in Keras: add
        ``fd.callbacks.TerminateOnNaN()`` to stop there.

        Epochs, as Keras: `epochs` is the index of the final epoch, so
        ``fit(epochs=4, initial_epoch=2)`` runs epochs 2 and 3 (callbacks,
        the History and LearningRateScheduler see those numbers). Unlike
        Keras, ``initial_epoch >= epochs`` (> 0) raises ValueError instead of
        training nothing. A callback that restores a backup in
        ``on_train_begin`` (``fd.callbacks.BackupAndRestore``) moves the
        start to the backup's epoch and batch, whatever initial_epoch says.

        Shuffling: each epoch draws a permutation from the model's own
        ``numpy.random.Generator``; ``seed`` (an int) creates it anew
        (``default_rng(seed)``), without ``seed`` the model's generator
        continues (created from fresh entropy at the first fit). It is saved
        with the model, so fit(epochs=4, seed=0) equals fit(epochs=2, seed=0)
        followed by fit(epochs=4, initial_epoch=2) on the same model or on
        ``fd.models.load`` of it saved in between, bit for bit.

        cache_frozen=True (arrays in memory): when the lowest layers are
        frozen (``trainable=False``; weight-free layers count as frozen) and
        none of them is random in training (Dropout, AlphaDropout, RReLU, a
        BatchNormalization with a fused dropout end the run), they are run
        once over x and the validation x in inference mode (a frozen
        BatchNormalization uses its moving statistics anyway, as in Keras),
        and the epochs train the layers above on their cached outputs, with
        the same shuffling and batches, so the result equals that of
        cache_frozen=False. With no such layer it trains as usual. Layers
        unfrozen by a callback during this fit stay cached until it ends.
        The cache holds the prefix's output for every sample (memory).

        distributed=True: data-parallel training over the ranks of an MPI
        job (fusednn.distributed; call ``fd.distributed.init()`` first and
        launch with ``mpirun -n N python train.py``). Every rank passes the
        same arrays in memory and the same arguments; ``batch_size`` is per
        rank, so a step trains on a global batch of ``batch_size * size()``
        samples: each epoch's permutation (the same on every rank) is cut
        into global batches, and rank r takes the r-th of ``size()`` equal
        slices of each. The number of training samples must therefore be a
        multiple of ``size()`` (ValueError otherwise, and when the ranks'
        data lengths differ; both are checked on every rank before
        training). At the start rank 0's weights, optimizer state, layer
        counters and shuffle generator are broadcast (a resumed model or a
        restored backup only has to be loaded on rank 0); each step
        averages the gradients over the ranks in one allreduce before the
        update, so the weights stay identical; the steps run layer by layer
        (the compiled step fuses backward and update). At each epoch's end
        the BatchNormalization moving statistics are averaged, and the loss
        and metrics are the means over all ranks' samples; validation runs
        on every rank with rank 0's logs handed to the callbacks, and a
        stop requested by a callback on any rank stops every rank.
        ModelCheckpoint, BackupAndRestore, CSVLogger, TensorBoard and the
        progress bar run on rank 0 only. Dropout seeds are mixed with the
        rank, so ranks draw different masks (rank 0 keeps the layer's seed).
        ``BatchNormalization(synchronized=True)`` normalises with the
        statistics of the global batch. Arrays in memory only (not
        generators, Sequences or disk arrays).
        """
        caller = "Sequential.fit"
        if self.optimizer is None:
            raise RuntimeError(f"{caller}: call compile() first")
        dist = None
        if check_bool(caller, "distributed", distributed):
            dist = _distributed.fit_session(caller, self)
            if _loaded(x) or x is None:
                raise ValueError(f"{caller}: distributed=True takes arrays in memory, got x of "
                                 f"type {type(x).__name__}")
        epochs = self._check_int(caller, "epochs", epochs, 0)
        initial_epoch = self._check_int(caller, "initial_epoch", initial_epoch, 0)
        if initial_epoch and initial_epoch >= epochs:
            raise ValueError(f"{caller}: initial_epoch must be < epochs, got "
                             f"initial_epoch={initial_epoch}, epochs={epochs}; epochs is the "
                             f"index of the final epoch (Keras): for {epochs} more epochs pass "
                             f"epochs={initial_epoch + epochs}")
        verbose = 1 if verbose == "auto" else verbose
        if verbose not in (0, 1, 2):
            raise ValueError(f"{caller}: verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
        shuffle = check_bool(caller, "shuffle", shuffle)
        cache_frozen = check_bool(caller, "cache_frozen", cache_frozen)
        if seed is not None:
            seed = self._check_int(caller, "seed", seed, 0)
        steps_per_epoch = self._check_opt_int(caller, "steps_per_epoch", steps_per_epoch, 1)
        validation_steps = self._check_opt_int(caller, "validation_steps", validation_steps, 1)
        workers = self._check_opt_int(caller, "workers", workers, 0)
        max_queue_size = self._check_opt_int(caller, "max_queue_size", max_queue_size, 1)
        if isinstance(validation_split, bool) or \
                not isinstance(validation_split, (int, float, np.integer, np.floating)):
            raise TypeError(f"{caller}: validation_split must be a number in [0, 1), got "
                            f"{validation_split!r}")
        if not (0.0 <= float(validation_split) < 1.0):
            raise ValueError(f"{caller}: validation_split must be in [0, 1), got "
                             f"{validation_split!r}")
        if validation_data is not None and validation_split:
            raise ValueError(f"{caller}: give validation_data or validation_split, not both")
        if x is None:
            raise ValueError(f"{caller}: x is None; give arrays, a generator or a Sequence")
        loaded = _loaded(x)
        if loaded and not is_disk_array(x):
            for arg, value in (("y", y), ("sample_weight", sample_weight),
                               ("batch_size", batch_size)):
                if value is not None:
                    raise ValueError(f"{caller}: {arg}={_short(value)} with x a "
                                     f"{type(x).__name__}; the batches bring y and "
                                     f"sample_weight, and their size")
            if validation_split:
                raise ValueError(f"{caller}: validation_split needs arrays; with x a "
                                 f"{type(x).__name__} give validation_data")
        elif steps_per_epoch is not None:
            raise ValueError(f"{caller}: steps_per_epoch={steps_per_epoch} is for generators and "
                             f"Sequences; with arrays an epoch is every sample")
        batch_size = self._check_int(caller, "batch_size", 32 if batch_size is None else
                                     batch_size, 1)
        if loaded and cache_frozen:
            raise ValueError(f"{caller}: cache_frozen=True needs x in memory, got a "
                             f"{type(x).__name__}")
        if seed is not None or self._shuffle_rng is None:
            self._shuffle_rng = np.random.default_rng(seed)
        rng = self._shuffle_rng
        start = 0
        val_source = None
        if loaded:
            # the sources build the model from a first batch; class_weight's table
            # needs the built model, and the batches are read only from the first epoch on
            table = []
            hi = None
            if validation_split and is_disk_array(x):
                hi = x.shape[0] - int(math.ceil(x.shape[0] * validation_split))
                val_source = self._source(caller, x, y, sample_weight, [], batch_size,
                                          None, workers, max_queue_size, "x", hi, None)
            source = self._source(caller, x, y, sample_weight, table, batch_size,
                                  steps_per_epoch, workers, max_queue_size, "x", None, hi)
            table.append(self._class_table(caller, class_weight, np))
        else:
            x, y, names = self._xy_in(caller, x, y, "fit")
            w = sample_weight
            n_val = 0
            if validation_split:
                n_val = int(math.ceil(x.shape[0] * validation_split))
                x, y, x_val, y_val = x[:-n_val], y[:-n_val], x[-n_val:], y[-n_val:]
                if w is not None:
                    w, _, _ = self._input(caller, "sample_weight", w)
                    if is_array(w) and w.shape[:1] == (n_val + x.shape[0],):
                        w, w_val = w[:-n_val], w[-n_val:]
                        val_source = (x_val, y_val, w_val)
                if val_source is None:
                    val_source = (x_val, y_val, None)
            if x.shape[0] == 0:
                split = f" once validation_split={validation_split!r} takes {n_val}" \
                    if validation_split else ""
                raise ValueError(f"{caller}: no training samples: x has {x.shape[0] + n_val} "
                                 f"sample(s){split}")
            self._ensure_built(x)
            self._check_names(caller, names, fitting=True)
            self._check_labels(caller, y)
            table = self._class_table(caller, class_weight, array_module(x))
            w = self._weights(caller, "sample_weight", w, table, y, x.shape[0])
            y = self._fit_labels(y)
            start = self._cacheable_steps() if cache_frozen else 0
            source = ArrayBatches(x, y, w, batch_size) if dist is None else \
                dist.shard(x, y, w, batch_size, epochs=epochs, initial_epoch=initial_epoch,
                           shuffle=shuffle)
        if validation_data is not None:
            val_source = self._validation(caller, validation_data, validation_steps, batch_size,
                                          workers, max_queue_size)
        if isinstance(val_source, tuple):
            x_val, y_val, w_val = val_source
            x_val, y_val = self._check_xy(caller, x_val, y_val, "x_val")
            if x_val.shape[0] == 0:
                raise ValueError(f"{caller}: validation_data has no samples")
            self._check_labels(caller, y_val, "y_val")
            w_val = self._weights(caller, "sample_weight_val", w_val, None, y_val,
                                  x_val.shape[0])
            val_source = (x_val, y_val, w_val)
        if start:
            source.x = self._run_steps(source.x, start, batch_size)
            if isinstance(val_source, tuple):
                val_source = (self._run_steps(val_source[0], start, batch_size),) + \
                    val_source[1:]
        self._dist = dist
        try:
            return self._epochs(caller, source, val_source, rng, shuffle, start, epochs,
                                initial_epoch, verbose, callbacks, batch_size)
        finally:
            if dist is not None:
                self._dist = None
                dist.close()
            source.close()
            if val_source is not None and not isinstance(val_source, tuple):
                val_source.close()

    def _validation(self, caller, data, steps, batch_size, workers, queue_size):
        """fit's validation_data as (x, y, w) arrays or a batch source."""
        if isinstance(data, (tuple, list)):
            if len(data) not in (2, 3):
                raise ValueError(f"{caller}: validation_data must be (x_val, y_val) or (x_val, "
                                 f"y_val, sample_weight_val), got a {type(data).__name__} of "
                                 f"{len(data)}")
            x_val, y_val = data[0], data[1]
            w_val = data[2] if len(data) == 3 else None
            if is_disk_array(x_val):
                return self._source(caller, x_val, y_val, w_val, [], batch_size, None,
                                    workers, queue_size, "validation_data")
            x_val, _, names = self._input(caller, "x_val", x_val)
            y_val, _, _ = self._input(caller, "y_val", y_val)
            self._check_names(caller, names, fitting=False)
            return x_val, y_val, w_val
        if is_stream(data) or is_sequence(data):
            if steps is None and iter(data) is data:
                raise ValueError(f"{caller}: validation_data is a {type(data).__name__}, an "
                                 f"iterator read on across epochs: give validation_steps")
            return self._source(caller, data, None, None, [], batch_size, steps, workers,
                                queue_size, "validation_data")
        raise ValueError(f"{caller}: validation_data must be (x_val, y_val), (x_val, y_val, "
                         f"sample_weight_val), a generator or a Sequence, got "
                         f"{type(data).__name__}")

    def _epochs(self, caller, source, val_source, rng, shuffle, start, epochs, initial_epoch,
                verbose, callbacks, batch_size):
        """fit's loop over the epochs and the batches of `source`."""
        engine = self._compiled_step(caller, start)
        dist = self._dist
        if dist is not None:
            verbose = dist.verbose(verbose)
        history = History()
        history.model = self
        history.params = {"epochs": epochs, "steps": source.steps, "verbose": verbose}
        self.history = history
        cbs = list(callbacks or [])
        if dist is not None:
            cbs = dist.callbacks(cbs)
        for cb in cbs:
            cb.set_model(self)
        # callbacks that read a step's health (fusednn.health.GradientHealth)
        health = [cb for cb in cbs if callable(getattr(cb, "health_due", None))]
        # A deferred step (the GPU's graph) keeps its loss on the device: it is read
        # at the end of the epoch and at each progress-bar redraw, and at every batch
        # only where a callback reads the batch's loss or a penalty is added to it.
        deferred = engine is not None and engine.deferred and not any(
            _reads_batch_end(cb) for cb in cbs)
        opt = self.optimizer
        self.stop_training = False
        nan_warned = False
        self._resume_at = None
        for cb in cbs:
            cb.on_train_begin({})
        # a callback that restored a backup there (fd.callbacks.BackupAndRestore) set the
        # epoch and the batches of it done, and the shuffle generator may be a new one
        (initial_epoch, skip), self._resume_at = self._resume_at or (initial_epoch, 0), None
        if dist is not None:
            initial_epoch, skip = dist.start(initial_epoch, skip)
        rng = self._shuffle_rng
        if engine is not None and engine.deferred:
            engine.tally()  # what an earlier fit left (nothing, after a normal end)
        for epoch in range(initial_epoch, epochs):
            for cb in cbs:
                cb.on_epoch_begin(epoch, {})
            bar = _Progress(epoch, epochs, source.steps, verbose)
            t0 = time.perf_counter()
            loss_sum, metric_sums, seen = 0.0, {}, 0

            def read_tally():
                """The deferred steps' sums into this epoch's, and the NaN warning."""
                nonlocal loss_sum, nan_warned
                part, correct, _, done, _ = engine.tally()
                loss_sum += part
                for k, v in engine.metric_sums(correct).items():
                    metric_sums[k] = metric_sums.get(k, 0.0) + v
                if done and not (nan_warned or math.isfinite(part)):
                    nan_warned = True
                    _warn_loss(caller, part, f"by epoch {epoch + 1}, batch {step + 1}", 5)

            batches = source.epoch(rng, shuffle)
            step = skip
            try:
                for step, (xb, yb, wb) in enumerate(itertools.islice(batches, skip, None), skip):
                    for cb in cbs:
                        cb.on_train_batch_begin(step, {})
                    probes = [cb for cb in health if cb.health_due(opt.iterations + 1)]
                    if probes:  # layer by layer: its ops keep their outputs and gradients
                        before, outputs = _health.snapshot(self, start), []
                        out, loss = self._train_step(xb, yb, start, wb, outputs)
                        records = _health.layer_stats(self, start, outputs, before)
                        for cb in probes:
                            cb.health_record(opt.iterations, records)
                    elif engine is None:
                        out, loss = self._train_step(xb, yb, start, wb)
                    else:
                        result = engine(xb, yb, caller, wb)
                    if deferred and not probes and not engine.penalized:
                        seen += xb.shape[0]
                        rate = seen / (time.perf_counter() - t0)
                        if bar.due(step + 1):
                            read_tally()
                            bar.update(step + 1, rate, _mean_logs(loss_sum, metric_sums, seen))
                        else:
                            bar.step = step + 1
                        for cb in cbs:
                            cb.on_train_batch_end(step, {})
                        if self.stop_training:
                            break
                        continue
                    if engine is not None and not probes:
                        if engine.deferred:  # the batch's loss read now (a callback, a penalty)
                            _, correct, _, _, loss = engine.tally()
                        else:
                            loss, correct = result
                    m = xb.shape[0]
                    layer_by_layer = engine is None or bool(probes)
                    batch_loss = float(loss) + self._penalty_loss(
                        None if layer_by_layer else engine.penalized)
                    if not (nan_warned or math.isfinite(batch_loss)):
                        nan_warned = True
                        _warn_loss(caller, batch_loss, f"at epoch {epoch + 1}, batch {step + 1}",
                                   4)
                    loss_sum += batch_loss * m
                    values = self._metric_values(out, yb) if layer_by_layer else \
                        engine.metric_values(correct, yb)
                    for k, v in values.items():
                        metric_sums[k] = metric_sums.get(k, 0.0) + v * m
                    seen += m
                    bar.update(step + 1, seen / (time.perf_counter() - t0),
                               _mean_logs(loss_sum, metric_sums, seen))
                    for cb in cbs:
                        cb.on_train_batch_end(step, {"loss": batch_loss})
                    if dist is not None:
                        self.stop_training = dist.any(self.stop_training)
                    if self.stop_training:
                        break
            finally:
                batches.close()
            if deferred:
                read_tally()
            skip = 0
            if source.ran_out:
                warnings.warn(f"{caller}: the input ran out of data at epoch {epoch + 1} "
                              f"({seen} samples in it); training stops. A generator must "
                              f"yield steps_per_epoch * epochs batches", UserWarning,
                              stacklevel=3)
                self.stop_training = True
                if not seen:
                    break
            source.end_epoch()
            if dist is not None:
                loss_sum, metric_sums, seen = dist.epoch_end(loss_sum, metric_sums, seen)
            logs = _mean_logs(loss_sum, metric_sums, seen)
            if val_source is not None:
                if isinstance(val_source, tuple):
                    val = self._evaluate(*val_source[:2], batch_size, start, val_source[2])
                else:
                    val = self._evaluate_batches(val_source.epoch(rng, False))
                    val_source.end_epoch()
                logs.update({f"val_{k}": v for k, v in val.items()})
            if dist is not None:
                logs = dist.same_logs(logs)
            bar.close(logs)
            for cb in cbs:
                cb.on_epoch_end(epoch, logs)
            if dist is not None:
                self.stop_training = dist.any(self.stop_training)
            history._append(epoch, logs)  # last, as Keras: keys callbacks add are kept
            if self.stop_training:
                break
        for cb in cbs:
            cb.on_train_end({})
        return history

    def _penalty_loss(self, layers=None) -> float:
        """The layers' regularisation terms (of `layers`, default all: the
        compiled step passes those with a regularizer; a layer without one
        adds 0.0, which changes no sum)."""
        return sum(layer.penalty_loss() for layer in (self.layers if layers is None else layers))

    def evaluate(self, x, y=None, batch_size=None, verbose=0, return_dict=False,
                 sample_weight=None, steps=None, workers=None, max_queue_size=None):
        """The loss (+ penalties) and metrics over x, y in inference mode:
        a float without metrics, else [loss, *metrics] (or a dict). x, y,
        sample_weight: as fit takes them (arrays, disk arrays, a generator
        or Sequence with `steps` batches); the loss is ``sum_i w_i l_i / n``
        with sample_weight, the metrics are not weighted."""
        caller = "Sequential.evaluate"
        if self.loss is None:
            raise RuntimeError(f"{caller}: call compile() first")
        steps = self._check_opt_int(caller, "steps", steps, 1)
        workers = self._check_opt_int(caller, "workers", workers, 0)
        max_queue_size = self._check_opt_int(caller, "max_queue_size", max_queue_size, 1)
        if x is None:
            raise ValueError(f"{caller}: x is None; give arrays, a generator or a Sequence")
        if _loaded(x):
            if not is_disk_array(x) and (y is not None or sample_weight is not None):
                raise ValueError(f"{caller}: y and sample_weight come from the batches when x "
                                 f"is a {type(x).__name__}; pass y=None")
            bs = self._check_int(caller, "batch_size", 32 if batch_size is None else
                                 batch_size, 1)
            source = self._source(caller, x, y, sample_weight, [], bs, steps, workers,
                                  max_queue_size)
            try:
                result = self._evaluate_batches(source.epoch(None, False))
            finally:
                source.close()
        else:
            x, y, names = self._xy_in(caller, x, y, "evaluate")
            batch_size = self._check_int(caller, "batch_size", 32 if batch_size is None else
                                         batch_size, 1)
            if x.shape[0] == 0:
                raise ValueError(f"{caller}: no samples to evaluate")
            self._ensure_built(x)
            self._check_names(caller, names, fitting=False)
            self._check_labels(caller, y)
            w = self._weights(caller, "sample_weight", sample_weight, None, y, x.shape[0])
            result = self._evaluate(x, y, batch_size, 0, w)
        if return_dict:
            return result
        return result["loss"] if len(result) == 1 else list(result.values())

    def _evaluate(self, x, y, batch_size, start=0, w=None) -> dict:
        """evaluate's dict over arrays in batches; with start > 0, x is the
        output of ``_steps[:start]``."""
        return self._evaluate_batches(
            ((x[b:b + batch_size], y[b:b + batch_size], None if w is None else w[b:b + batch_size])
             for b in range(0, x.shape[0], batch_size)), start)

    def _evaluate_batches(self, batches, start=0) -> dict:
        """evaluate's dict over (x, y, weights) batches: the loss and metrics
        averaged over the samples (weighted losses summed, divided by the
        number of samples), plus the penalties."""
        loss_sum, metric_sums, n = 0.0, {}, 0
        compiled = None if start else self._compiled_forward()
        for xb, yb, wb in batches:
            if compiled is None:
                out = self._forward(xb, False, start)
            else:
                out = np.empty((xb.shape[0], self._output_dim()), dtype=xb.dtype)
                compiled.forward(xb, out)
            loss, _ = self._loss(out, yb, wb)
            m = xb.shape[0]
            loss_sum += float(loss) * m
            for k, v in self._metric_values(out, yb).items():
                metric_sums[k] = metric_sums.get(k, 0.0) + v * m
            n += m
        return {"loss": loss_sum / max(n, 1) + self._penalty_loss(),
                **{k: v / max(n, 1) for k, v in metric_sums.items()}}

    def predict(self, x, batch_size=32, verbose=0, mc_samples=None, training=False, seed=None):
        """Outputs for x (probabilities after a softmax/sigmoid last layer),
        in batches of `batch_size`. x is cast to the model's dtype (a copy
        when its dtype differs).

        mc_samples=N: MC dropout (Gal & Ghahramani 2016): N passes with the
        dropout layers active (everything else in inference mode); returns
        (mean, std) over the passes. A model without Dropout or AlphaDropout
        layers warns (UserWarning): its passes are all the same.

        seed (an int, with mc_samples only): the masks come from it, so the
        same seed, x and batch_size give the same (mean, std); each dropout
        layer keys them by a seed drawn from (`seed`, its index) and a counter
        from 0 over the batches and passes, and the layers' own seeds and
        counters are left as they were. Without it the layers draw with
        their own seeds and counters, which advance: each call differs.

        x may also be a torch or JAX tensor (through DLPack; the result is
        then a tensor of the same framework, sharing the result's memory),
        a pandas DataFrame (its column names checked against those fit saw,
        as scikit-learn does), or an array on disk (np.memmap, h5py), read
        in chunks of rows (whole for mc_samples).
        """
        caller = "Sequential.predict"
        batch_size = self._check_int(caller, "batch_size", batch_size, 1)
        seed = check_seed(caller, seed)
        if is_disk_array(x):
            if mc_samples is not None or x.shape[0] <= _DISK_CHUNK:
                return self.predict(read_rows(x, 0, x.shape[0]), batch_size, verbose,
                                    mc_samples, training, seed)
            chunk = max(_DISK_CHUNK // batch_size, 1) * batch_size
            parts = [self.predict(read_rows(x, b, min(b + chunk, x.shape[0])), batch_size,
                                  verbose, None, training)
                     for b in range(0, x.shape[0], chunk)]
            return np.concatenate(parts)
        x, kind, names = self._input(caller, "x", x)
        x, _ = self._check_xy(caller, x, None)
        self._ensure_built(x)
        self._check_names(caller, names, fitting=False)
        return give_back(self._predict(caller, x, batch_size, mc_samples, training, seed), kind)

    def _predict(self, caller, x, batch_size, mc_samples, training, seed):
        """predict for a checked array x."""
        if mc_samples is None:
            if seed is not None:
                raise ValueError(f"{caller}: seed={seed} seeds MC dropout; pass mc_samples too")
            return self._predict_once(x, batch_size, mc=False, training=training)
        mc_samples = self._check_int(caller, "mc_samples", mc_samples, 1)
        if not any(isinstance(layer, Dropout) for layer in self.layers):  # AlphaDropout too
            warnings.warn(f"{caller}: mc_samples={mc_samples}, but the model has no Dropout or "
                          f"AlphaDropout layer, so every pass gives the same output and std "
                          f"is 0", UserWarning, stacklevel=2)
        with self._seeded_dropout(seed):
            compiled = self._compiled_forward()
            if compiled is not None:  # every pass of a batch in one call
                runs = np.empty((mc_samples, x.shape[0], self._output_dim()), dtype=x.dtype)
                compiled.predict_samples(x, runs, batch_size)
                runs = np.stack([self._loss.predictions(r) for r in runs])
            else:
                runs = array_module(x).stack([self._predict_once(x, batch_size, mc=True)
                                               for _ in range(mc_samples)])
        return runs.mean(axis=0), runs.std(axis=0)

    @contextlib.contextmanager
    def _seeded_dropout(self, seed):
        """Inside the block, dropout layer i keys its masks by a seed drawn
        from (`seed`, i) and a counter from 0 (see predict); the layers' own
        seeds and counters are put back after. seed=None: the layers' own."""
        if seed is None:
            yield
            return
        saved = self._dropout_state()
        try:
            for i, layer in enumerate(self.layers):
                if isinstance(layer, Dropout):
                    layer.seed = int(np.random.default_rng([seed, i]).integers(2**63))
                    layer.step = 0
            yield
        finally:
            for layer, attr, value in saved:
                setattr(layer, attr, value)

    def __call__(self, x, training=False):
        """The output for x in one pass, Keras' ``model(x)``: an array, as
        ``predict(x, batch_size=len(x))`` (probabilities after a softmax or
        sigmoid last layer; x cast to the model's dtype).
        ``training=True`` runs the layers in training mode, as Keras does:
        dropout active, BatchNormalization on the batch's statistics
        (updating its moving ones)."""
        caller = "Sequential.__call__"
        training = check_bool(caller, "training", training)
        x, kind, names = self._input(caller, "x", x)
        x, _ = self._check_xy(caller, x, None)
        self._ensure_built(x)
        self._check_names(caller, names, fitting=False)
        return give_back(self._predict_once(x, max(int(x.shape[0]), 1), mc=False,
                                            training=training), kind)

    def _dropout_state(self) -> list:
        """(layer, attribute, value) of every dropout layer's seed and mask
        counter (fused or not): what a temporary run puts back."""
        out = []
        for layer in self.layers:
            if isinstance(layer, Dropout):  # AlphaDropout too
                out += [(layer, "seed", layer.seed), (layer, "step", layer.step)]
        return out

    def _compiled_forward(self):
        """The CompiledForward predict and evaluate run, or None (layer by
        layer: a layer it does not run, CuPy weights, jit_compile=False)."""
        if self.jit_compile is False or unsupported_layers(self) is not None:
            return None
        if self._forward_plan is None:
            self._forward_plan = CompiledForward(self)
        return self._forward_plan

    def _predict_once(self, x, batch_size, mc, training=False):
        """The output for x in batches (probabilities after a softmax or
        sigmoid head); `mc`: the dropout layers active (MC dropout)."""
        xp = array_module(x)
        compiled = None if training else self._compiled_forward()
        if compiled is not None:
            out = np.empty((x.shape[0], self._output_dim()), dtype=x.dtype)
            for start in range(0, x.shape[0], batch_size):
                stop = start + batch_size
                compiled.forward(x[start:stop], out[start:stop], mc)
            return self._loss.predictions(out)
        outs = []
        for start in range(0, x.shape[0], batch_size):
            h = x[start:start + batch_size]
            for step in self._steps:
                h = step.forward(h, training, mc)
            outs.append(h)
        out = xp.concatenate(outs) if outs else xp.empty((0, self._output_dim()), dtype=x.dtype)
        return self._loss.predictions(out)

    def fold_batchnorm(self) -> "Sequential":
        """This model for inference with each BatchNormalization after a
        linear Dense folded into it (fd.models.fold_batchnorm)."""
        return fold_batchnorm(self)

    # ------------------------------------------------------------- summary
    def summary(self, print_fn=print) -> None:
        """A table of the layers, output widths and parameter counts."""
        rows = [("Layer (type)", "Output Shape", "Param #")]
        total = trainable = 0
        dim = self.layers[0].input_dim if self.layers and self.layers[0].built else None
        for layer in self.layers:
            dim = layer.output_dim(dim) if dim is not None else None
            count = layer.count_params() if layer.built else 0
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
        if self.optimizer is not None and self.built:
            print_fn(f"Training step: {self.step_mode}")


def load(path, compile=True, device="cpu") -> Sequential:
    """Read a model written by ``Sequential.save`` (Keras' ``load_model``).

    Layers are rebuilt from their configs through a registry of fd.layers
    classes by name (nothing else is imported or evaluated, nothing is
    unpickled), built with the saved input width and dtype, and given the
    saved weights and ``set_state`` states; the model's shuffle generator
    is restored. ``compile=True`` (the default, as Keras) also restores the
    optimizer (config, learning-rate schedule, iterations, slots) and
    compiles with the saved loss and metrics, so ``fit(...,
    initial_epoch=...)`` continues exactly; ``compile=False`` returns an
    uncompiled model.

    device: ``"cpu"`` (NumPy arrays) or ``"cuda"`` (CuPy arrays: the model is
    built on the current GPU and the weights copied there; the optimizer
    slots follow at its first step). Data given to fit/predict must then be
    of the same kind.

    Errors: TypeError for a path that is not a str/os.PathLike,
    FileNotFoundError for a missing file, ValueError naming the path and
    the problem for a directory, a malformed safetensors file (see
    fusednn.saving.load_file), a file that Sequential.save did not write,
    an unknown layer or optimizer class, missing, unexpected or misshapen
    tensors, a tensor whose bytes do not match the CRC32 recorded at save
    (a corrupted file; files saved before checksums were recorded load
    unchecked).
    """
    caller = "fd.models.load"
    path = check_path(caller, "path", path)
    compile = check_bool(caller, "compile", compile)
    if not isinstance(device, str) or device not in ("cpu", "cuda"):
        raise ValueError(f"{caller}: device must be 'cpu' or 'cuda', got {device!r}")
    return saving_model.load_model(path, compile, device, Sequential.from_config)


load_model = load


def clone_model(model, copy_weights=False) -> Sequential:
    """A new model with the architecture of `model` (Keras' ``clone_model``).

    Each layer is rebuilt from its ``get_config()``: new layer objects with
    new unique names, the model's name kept. When `model` is built the clone
    is built too (same input width, array module and dtype) with freshly
    initialised weights; ``copy_weights=True`` then copies `model`'s weights
    into them (the model must be built). The clone shares no array with
    `model`: training one leaves the other unchanged. Compile state
    (optimizer, loss, metrics) is not cloned, as in Keras: compile the clone.

    Seeds live in the configs: a layer whose initializer has a seed
    (``HeNormal(seed=1)``) is initialised in the clone with the values the
    original started from (not its trained ones), and a Dropout/AlphaDropout
    or an RReLU with a seed replays the original's masks/slopes from the
    first step (step counters and generator states are not copied; an RReLU
    with ``seed=None`` draws fresh slopes). Unseeded initializers give new
    values.
    """
    caller = "fd.models.clone_model"
    if not isinstance(model, Sequential):
        raise TypeError(f"{caller}: model must be a fd.Sequential, got {type(model).__name__}")
    copy_weights = check_bool(caller, "copy_weights", copy_weights)
    if copy_weights and not model.built:
        raise ValueError(f"{caller}: copy_weights=True needs a built model; {model.name} is not "
                         f"built (fit it, or call build(input_dim))")
    config = model.get_config()
    clone = Sequential._unbuilt(_layers_from_config(caller, config["layers"], keep_names=False),
                                model.name, config["dtype"])
    if model.built:
        clone.build(*model._input_spec)
        if copy_weights:
            clone.set_weights(model.get_weights())
    return clone


def fold_batchnorm(model) -> Sequential:
    """A model that gives `model`'s inference outputs with every
    BatchNormalization that follows a Dense with a linear activation folded
    into that Dense, by fd.ops.fold_batchnorm: with
    s = gamma / sqrt(moving_variance + epsilon),

        kernel' = kernel * s,   bias' = (bias - moving_mean) * s + beta

    (bias 0 without one; gamma 1 without ``scale``, beta 0 without
    ``center``), computed in float64 and stored in the model's dtype. The
    folded model is for predict, evaluate and export: it has one layer less
    per fold and no batch statistics, so training it would not train a
    batch-normalised network. Other layers are cloned with their weights (as
    ``clone_model(model, copy_weights=True)``); the loss and metrics are kept
    (for predict's output head and evaluate), the optimizer is not."""
    caller = "fd.models.fold_batchnorm"
    if not isinstance(model, Sequential):
        raise TypeError(f"{caller}: model must be a fd.Sequential, got {type(model).__name__}")
    if not model.built:
        raise ValueError(f"{caller}: {model.name} is not built (fit it, or call build(input_dim))")
    entries = model.get_config()["layers"]
    layers, keep, weights = model.layers, [], []
    i = 0
    while i < len(layers):
        layer, nxt = layers[i], layers[i + 1] if i + 1 < len(layers) else None
        if (isinstance(layer, Dense) and isinstance(nxt, BatchNormalization)
                and layer.activation.is_linear and layer.output_activation is None):
            entry = dict(entries[i], config=dict(entries[i]["config"], use_bias=True))
            weights += ops.fold_batchnorm(layer.kernel, layer.bias, nxt.gamma, nxt.beta,
                                          nxt.moving_mean, nxt.moving_variance, nxt.epsilon)
            keep.append(entry)
            i += 2
        else:
            keep.append(entries[i])
            weights += layer.get_weights()
            i += 1
    folded = Sequential._unbuilt(_layers_from_config(caller, keep, keep_names=False), model.name,
                                 model.get_config()["dtype"])
    folded.build(*model._input_spec)
    folded.set_weights(weights)
    folded.loss, folded.metrics = model.loss, list(model.metrics)
    return folded

