"""The compiled step: fit's training step on a batch as one native call.

``CompiledStep(model)`` turns the model's planned Steps (fusednn.models.plan)
into a ``fusednn._C.StepPlan`` (csrc/engine/step_plan.h): one call per batch
runs the forward of every block, the loss and its gradient, the backward,
the optimizer's update of all trained tensors (penalties, clipping, weight
decay, max-norm and frozen layers as ``Optimizer.apply``), the batch
normalisation's moving statistics and the accuracy count, with the GIL
released and buffers allocated once for the largest batch. It makes the
kernel calls the layer-by-layer path makes, with the same arguments and in
the same order, so both paths give the same weights bit for bit.
``CompiledForward(model)`` does the same for inference (predict, evaluate,
MC dropout with a batch's passes in one call): the same outputs as the
Steps' forward in inference mode.

On a GPU (CuPy weights, ``fusednn._C_cuda``) the training plan captures each
batch shape's step once as a CUDA graph and replays it, with the learning
rate, the optimizer's step coefficients and the dropout counters read from
device memory (a schedule does not re-capture). Its loss and accuracy count
stay on the device: the step is ``deferred`` and fit reads the sums with
``tally()`` once per epoch, per progress-bar redraw, or per batch where a
callback reads the batch's loss or a layer's penalty is added to it.

What it runs: Dense, BatchNormalization, the activation layers Activation,
ELU and LeakyReLU, Dropout and AlphaDropout, under the four losses of
fusednn.models.loss, with a fusednn optimizer: fit on NumPy or CuPy weights,
predict and evaluate on NumPy weights.
``unsupported(model)`` names what keeps a model's fit on the layer-by-layer
path (an RReLU or PReLU layer, a layer subclass, ``cache_frozen``, ...).

The plan points into the model's arrays. It is rebuilt when a weight array,
an optimizer slot, a trainable flag, a dropout's seed or rate, the Steps or
the optimizer is replaced; the other hyperparameters (BN momentum and
epsilon, activation parameters) are read when it is built (the layers
set them at construction).
"""

from __future__ import annotations

import contextlib
import operator

import numpy as np

from .. import _C
from .._arrays import is_cupy
from .._backend import backend_for
from .._C import BlockKind, BnConvention, LossKind
from ..layers import (ELU, Activation, AlphaDropout, BatchNormalization, Dense, Dropout,
                      LeakyReLU)
from ..optimizers import Optimizer
from .plan import DenseBatchNormStep, DenseStep, LayerStep

__all__ = ["CompiledStep", "CompiledForward", "unsupported", "unsupported_layers"]

_LOSSES = {"sparse_categorical_crossentropy": LossKind.SparseSoftmax,
           "categorical_crossentropy": LossKind.Softmax,
           "binary_crossentropy": LossKind.SigmoidBce,
           "mse": LossKind.Mse}
_CONVENTIONS = {"keras": BnConvention.Keras, "torch": BnConvention.Torch}
_ACTIVATION_LAYERS = (Activation, ELU, LeakyReLU)
_LAYERS = (Dense, BatchNormalization, *_ACTIVATION_LAYERS, Dropout, AlphaDropout)


def unsupported_layers(model, gpu: bool = False) -> str | None:
    """None when the model's layers and weights allow a plan (predict's;
    with `gpu`, fit's, which also runs on CuPy weights), else the first
    layer class that does not, or ``"GPU"``."""
    for layer in model.layers:
        if type(layer) not in _LAYERS:
            return type(layer).__name__
    weights = model.weights
    if gpu and weights and all(is_cupy(w) for w in weights):
        dev = backend_for("Sequential.fit", w=weights[0])
        return None if hasattr(dev._C, "StepPlan") else "GPU"
    for w in weights:
        if type(w) is not np.ndarray:
            return "GPU"
    return None


def unsupported(model, start: int = 0) -> str | None:
    """None when fit can train `model` with a CompiledStep, else what keeps
    it layer by layer, in a few words (e.g. ``"RReLU"``)."""
    reason = unsupported_layers(model, gpu=True)
    if reason is not None:
        return reason
    if start:
        return "cache_frozen"
    if model.loss not in _LOSSES:
        return f"loss {model.loss!r}"
    opt = model.optimizer
    if not isinstance(opt, Optimizer) or opt._rule is None or \
            type(opt)._step is not Optimizer._step:
        return f"optimizer {type(opt).__name__}"
    return None


def _blocks(model):
    """(block dicts, [(name, layer, attribute)] of every array they point
    to, the dropout layers with a counter, {id(array): (block, name)})."""
    blocks, refs, drops, owner = [], [], [], {}
    width = model.layers[0].input_dim
    for i, step in enumerate(model._steps):
        d, block_refs, drop = _block(step, width)
        blocks.append(d)
        width = d["out"]
        refs += block_refs
        for name, layer, attr in block_refs:
            a = getattr(layer, attr)
            if a is not None:
                owner[id(a)] = (i, name)
        if drop is not None:
            drops.append(drop)
    return blocks, refs, drops, owner


def _block(step, width):
    """(dict for fusednn._C.StepPlan, [(name, layer, attribute)] of its
    weights, the dropout layer with a counter or None) of one Step whose
    input has `width` features."""
    if isinstance(step, DenseStep) or (isinstance(step, LayerStep)
                                       and isinstance(step.layer, Dense)):
        dense = step.dense if isinstance(step, DenseStep) else step.layer
        spec = step.activation if isinstance(step, DenseStep) else dense.activation
        d = {"kind": BlockKind.Dense, "in": width, "out": dense.units, "w": dense.kernel,
             "b": dense.bias, "act": spec.kind, "alpha": spec.alpha}
        return d, [("w", dense, "kernel"), ("b", dense, "bias")], None
    if isinstance(step, DenseBatchNormStep):
        dense, bn, act, drop = step.dense, step.bn, step.activation, step.dropout
        spec = act.activation if act is not None else None
        d = {"kind": BlockKind.BatchNorm, "in": width,
             "out": dense.units if dense is not None else width,
             "w": None if dense is None else dense.kernel,
             "b": None if dense is None else dense.bias,
             "gamma": bn.gamma, "beta": bn.beta, "moving_mean": bn.moving_mean,
             "moving_var": bn.moving_variance, "batch_stats": bool(bn.trainable),
             "momentum": float(bn.momentum), "epsilon": float(bn.epsilon),
             "convention": _CONVENTIONS[bn.convention],
             "act": spec.kind if spec else _C.Act.Linear, "alpha": spec.alpha if spec else 0.0,
             "rate": float(drop.rate) if drop else 0.0,
             "alpha_dropout": isinstance(drop, AlphaDropout), "seed": int(drop.seed) if drop else 0}
        refs = [("gamma", bn, "gamma"), ("beta", bn, "beta"), ("moving_mean", bn, "moving_mean"),
                ("moving_var", bn, "moving_variance")]
        if dense is not None:
            refs = [("w", dense, "kernel"), ("b", dense, "bias")] + refs
        return d, refs, drop if drop is not None and drop.rate > 0.0 else None
    layer = step.layer
    if isinstance(layer, Dropout):  # AlphaDropout too
        d = {"kind": BlockKind.Dropout, "in": width, "out": width, "rate": float(layer.rate),
             "alpha_dropout": isinstance(layer, AlphaDropout), "seed": int(layer.seed)}
        return d, [], layer if layer.rate > 0.0 else None
    spec = layer.activation
    d = {"kind": BlockKind.Activation, "in": width, "out": width, "act": spec.kind,
         "alpha": spec.alpha}
    return d, [], None


_NO_DEVICE = contextlib.nullcontext()
_TRAINABLE = operator.attrgetter("trainable")


class _Compiled:
    """A StepPlan of `model`, built on first use and again whenever
    ``_current_key()`` (what the plan read from the model) changes."""

    def __init__(self, model):
        self.model = model
        self._plan = None
        self._key = None
        self._set_refs((), ())

    def _ensure(self, *build_args):
        if self._plan is None or self._current_key() != self._key:
            self._build(*build_args)
            self._key = self._current_key()

    def _set_refs(self, refs, drops):
        """Keeps what _arrays_key reads: the layer and attribute of each array
        the plan points to (`refs`: (name, layer, attribute)), as two lists
        for map(), and the plan's dropout layers."""
        self._drops = drops
        self._ref_layers = [r[1] for r in refs]
        self._ref_attrs = [r[2] for r in refs]

    def _arrays_key(self):
        """The arrays the plan points to and each dropout's seed and rate
        (predict's seeded MC dropout sets the seeds for one call). Read at
        every step, through map(), which walks the weights without a Python
        frame per weight."""
        return (tuple(map(id, map(getattr, self._ref_layers, self._ref_attrs))),
                tuple((d.seed, d.rate) for d in self._drops))


class CompiledStep(_Compiled):
    """The training step of `model` (compiled, built, supported: see
    ``unsupported``) as one call: ``step(xb, yb)`` -> (mean loss of the
    batch, accuracy count), the weights, slots, moving statistics and the
    dropout layers' counters updated as ``Sequential._train_step`` does.

    ``deferred`` (True on a GPU): the call returns None and the batches'
    losses and counts are summed where the step runs, read by ``tally()``.
    The CPU plan sums them too, so a CPU step may be made deferred (fit then
    reads the loss as it does on a GPU)."""

    def __init__(self, model):
        super().__init__(model)
        self.penalized = []
        self._dev = None
        self.deferred = False

    def _current_key(self):
        m = self.model
        opt = m.optimizer
        return (id(m._steps), id(opt), id(opt._slots),
                tuple(map(_TRAINABLE, m.layers)), self._arrays_key())

    def _build(self, caller):
        m = self.model
        blocks, refs, drops, owner = _blocks(m)
        # The optimizer's tensors in Sequential._train_step's order.
        stop = m._lowest_trainable()
        live_layers = {id(la) for step in m._steps[stop:] for la in step.layers}
        params, flags, pens, cons = [], [], [], []
        for layer in m.layers:
            ws = layer._trainable_weights
            live = id(layer) in live_layers and layer.trainable and bool(ws)
            params += ws
            flags += [live] * len(ws)
            pens += layer.weight_penalties()
            cons += layer.weight_constraints()
        opt = m.optimizer
        _, pens, cons = opt._prepare(caller, params, flags, pens, cons)
        tensors = []
        for i, p in enumerate(params):
            if not (flags[i] and p.size > 0):
                continue
            block, name = owner[id(p)]
            c = cons[i]
            tensors.append((block, name, opt._slots[i], pens[i][0], pens[i][1],
                            0.0 if c is None else float(c.max_value), opt._view(p.shape, c)))
        loss = m._loss
        # the layers whose penalty_loss can be nonzero, for fit's batch loss
        self.penalized = [layer for layer in m.layers
                          if any(p is not None for p in layer.weight_penalties())]
        self._set_refs(refs, drops)
        self._outputs = blocks[-1]["out"]
        weights = m.weights
        self._dev = dev = backend_for(caller, w=weights[0] if weights else None)
        self.deferred = self.deferred or dev.name == "cuda"
        self._plan = None  # the old plan's buffers go before the new one's are taken
        with self._device():
            self._plan = dev._C.StepPlan(blocks, m._model_dtype() == np.float64, _LOSSES[m.loss],
                                         "accuracy" in m.metrics, float(loss.threshold),
                                         min(stop, len(blocks)), opt._rule, tensors)
        self._route_grads(owner, stop)

    def _device(self):
        """The weights' device made current (a GPU plan), else nothing."""
        if self._dev.name != "cuda":
            return _NO_DEVICE  # (model.weights walks every layer: not once a CPU step)
        return self.model.weights[0].device

    def _route_grads(self, owner, stop):
        """Each layer's ``grads`` becomes the plan's gradient buffers of its
        weights (refilled by every step), as the Steps' backward leaves them:
        the layers of the steps from `stop` up, weight-free ones with [].
        owner: id(weight) -> (block, name), as _blocks gives it."""
        buffers = {(block, name): g for block, name, g in self._plan.grads()}
        for step in self.model._steps[stop:]:
            for layer in step.layers:
                layer.grads = [buffers[owner[id(w)]] for w in layer._trainable_weights]

    def __call__(self, xb, yb, caller="Sequential.fit", weight=None):
        """One step on (xb, yb) with per-sample loss factors `weight` (or
        None); returns (loss, correct)."""
        self._ensure(caller)
        opt = self.model.optimizer
        t = opt.iterations + 1
        record, clip_mode, clip = opt._record(t)
        with self._device():
            result = self._plan.run(xb, yb, [d.step for d in self._drops], record, clip_mode,
                                    clip, weight, self._dev.stream)
        opt._advance(t)
        opt.iterations = t
        for d in self._drops:
            d.step += 1  # each active dropout drew one mask, as Dropout.forward counts
        return None if self.deferred else result

    def tally(self):
        """(sum of batch loss * rows, accuracy count, rows, batches, last
        batch loss) of the steps since the last call (waits for them on a
        GPU); zeros before the first step."""
        if self._plan is None:
            return 0.0, 0, 0, 0, 0.0
        with self._device():
            return self._plan.tally()

    def metric_values(self, correct, yb) -> dict:
        """The batch's metrics from the accuracy count, as
        Sequential._metric_values computes them (a fraction of yb.size for
        the binary loss, of the samples otherwise)."""
        m = self.model
        if "accuracy" not in m.metrics:
            return {}
        total = yb.size if m.loss == "binary_crossentropy" else yb.shape[0]
        return {"accuracy": correct / total}

    def metric_sums(self, correct) -> dict:
        """What fit adds to its metric sums for a tally's accuracy count:
        the count (per output for the binary loss), as metric_values times
        the rows."""
        m = self.model
        if "accuracy" not in m.metrics:
            return {}
        return {"accuracy": correct / self._outputs if m.loss == "binary_crossentropy"
                else float(correct)}


class CompiledForward(_Compiled):
    """Inference of `model` (layers supported: see ``unsupported_layers``)
    in one call per batch: ``forward(x, out, mc)`` writes the steps' output
    for x (no output activation) into `out`, as ``Step.forward(training=
    False, mc)`` would, bit for bit: batch norms on their moving statistics,
    a dropout on where its layer has ``mc=True`` or `mc` is set (its counter
    advancing as the layer's own forward advances it)."""

    def _current_key(self):
        m = self.model
        return id(m._steps), self._arrays_key()

    def _build(self):
        m = self.model
        blocks, refs, drops, _ = _blocks(m)
        self._set_refs(refs, drops)
        # A forward-only plan: no trained tensor, the loss and rule unused.
        self._plan = _C.StepPlan(blocks, m._model_dtype() == np.float64, LossKind.Mse, False,
                                 0.5, len(blocks), _C.Opt.SGD, [])

    def forward(self, x, out, mc=False):
        self._ensure()
        drops = self._drops
        active = [bool(mc or d.mc) for d in drops]
        self._plan.predict(x, out, [d.step for d in drops], active)
        for d, on in zip(drops, active):
            if on:
                d.step += 1

    def predict_samples(self, x, runs, batch_size):
        """MC dropout: ``runs[s]`` is the output of pass s over x (every
        dropout on) in batches of `batch_size`, all passes of a batch in one
        call, with the masks (counters) that N consecutive passes over the
        batches would draw."""
        self._ensure()
        n, drops = x.shape[0], self._drops
        batches = -(-n // batch_size)
        base = [d.step for d in drops]
        active = [True] * len(drops)
        for j, start in enumerate(range(0, n, batch_size)):
            self._plan.predict(x[start:start + batch_size], runs, [b + j for b in base], active,
                               start, batches)
        for d, b in zip(drops, base):
            d.step = b + runs.shape[0] * batches
