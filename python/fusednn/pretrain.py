"""Unsupervised pretraining: greedy layer-wise autoencoders.

    layers = [fd.layers.Dense(128, activation="elu"),
              fd.layers.Dense(64, activation="elu")]
    layers = fd.pretrain.greedy_autoencoder(layers, x_unlabeled, epochs=10)
    model = fd.Sequential(layers + [fd.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="nadam", loss="sparse_categorical_crossentropy")
    model.fit(x_labeled, y_labeled)
"""

from __future__ import annotations

import numbers

import numpy as np

from . import activations as _act
from . import initializers as _init
from . import optimizers as _optimizers
from .layers import Dense
from ._arrays import array_module
from .layers.base import Layer
from .models.sequential import Sequential, _built_dtype
from ._validate import check_int

__all__ = ["greedy_autoencoder", "PretrainedLayers"]

_RECONSTRUCTION_LOSSES = ("mse", "mean_squared_error", "binary_crossentropy")


class PretrainedLayers(list):
    """The layers greedy_autoencoder returns (a plain list of the same layer
    objects, so ``layers + [head]`` works), with what each stage recorded.

    Per stage (one per Dense, in order; None for a frozen stage):
      histories: the autoencoder's fd History (``history["loss"]``: the
        training reconstruction loss of each epoch, as fit reports it).
      initial_losses, final_losses: the reconstruction loss over all of x in
        inference mode (``evaluate``) before and after the stage's training.
      decoders: the trained decoder Dense of the stage.
    """

    def __init__(self, layers, histories, initial_losses, final_losses, decoders):
        super().__init__(layers)
        self.histories = histories
        self.initial_losses = initial_losses
        self.final_losses = final_losses
        self.decoders = decoders


def _stages(caller, layers):
    """Split the layers into stages: a Dense and the layers after it up to
    the next Dense."""
    if not isinstance(layers, (list, tuple)):
        raise TypeError(f"{caller}: layers must be a list of fd layers, got "
                        f"{type(layers).__name__}")
    if not layers:
        raise ValueError(f"{caller}: layers is empty")
    seen = set()
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(f"{caller}: layers[{i}] must be a fd layer, got "
                            f"{type(layer).__name__}")
        if id(layer) in seen:
            raise ValueError(f"{caller}: layers[{i}] ({layer.name}) appears twice")
        seen.add(id(layer))
        if isinstance(layer, Dense) and layer.output_activation is not None:
            raise ValueError(f"{caller}: layers[{i}] ({layer.name}) has the output activation "
                             f"{layer.output_activation!r}; pretrained layers are hidden layers "
                             f"(add the output layer after pretraining)")
    if not isinstance(layers[0], Dense):
        raise ValueError(f"{caller}: layers[0] must be a Dense (each stage starts with one), got "
                         f"{type(layers[0]).__name__} {layers[0].name}")
    stages = []
    for layer in layers:
        if isinstance(layer, Dense):
            stages.append([layer])
        else:
            stages[-1].append(layer)
    return stages


def _optimizer_factory(caller, optimizer):
    """A function returning a fresh optimizer for each stage (an optimizer's
    slots belong to one parameter list)."""
    if isinstance(optimizer, str):
        _optimizers.get(optimizer)  # raises for an unknown name
        return lambda: _optimizers.get(optimizer)
    if isinstance(optimizer, _optimizers.Optimizer):
        return lambda: type(optimizer).from_config(optimizer.get_config())
    if callable(optimizer):
        def make():
            opt = optimizer()
            if not isinstance(opt, _optimizers.Optimizer):
                raise TypeError(f"{caller}: optimizer() must return a fd.optimizers optimizer, "
                                f"got {type(opt).__name__}")
            return opt
        return make
    raise TypeError(f"{caller}: optimizer must be a name, a fd.optimizers optimizer or a "
                    f"function returning one, got {type(optimizer).__name__}")


def _decoder_activations(caller, decoder_activation, n):
    values = (list(decoder_activation) if isinstance(decoder_activation, (list, tuple))
              else [decoder_activation] * n)
    if len(values) != n:
        raise ValueError(f"{caller}: decoder_activation has {len(values)} entries for {n} "
                         f"stages")
    for v in values:
        if isinstance(v, str) and v.lower() == "softmax":
            raise ValueError(f"{caller}: decoder_activation 'softmax' does not fit a "
                             f"reconstruction; use None (linear), 'sigmoid', ...")
        _act.get(v, caller)  # raises for an unknown name
    return values


def greedy_autoencoder(layers, x, epochs=10, batch_size=32, optimizer="adam", loss="mse",
                       decoder_activation=None, verbose=0, seed=None, shuffle=True):
    """Greedy layer-wise unsupervised pretraining (Bengio et al. 2007,
    "Greedy layer-wise training of deep networks"; Géron, "Hands-On ML",
    ch. 11 and 17).

    `layers` is split into stages, one per Dense: the Dense and the layers
    after it up to the next Dense (BatchNormalization, Activation, Dropout,
    ...: they are part of that Dense's encoder, so the code a stage learns is
    the one the stacked model will see). layers[0] must be a Dense. For each
    stage in turn, with h_0 = x:

    - the stage's layers plus a fresh decoder ``Dense(width of h_{k-1},
      activation=decoder_activation)`` form an autoencoder (a
      fd.Sequential), compiled with `optimizer` and `loss` and trained by
      ``fit(h_{k-1}, h_{k-1}, epochs, batch_size)`` to reconstruct its input;
    - h_k = the stage's output for h_{k-1} in inference mode (dropout off,
      BatchNormalization with its moving statistics) feeds the next stage.

    The layers are trained in place and built (the array module of x, and
    the dtype of those already built, else float32 as fd.Sequential's
    default: x is cast to it) and returned, ready for ``fd.Sequential(layers + [Dense(10,
    activation="softmax")])`` and fine-tuning. A stage whose Dense has
    ``trainable=False`` is not trained (its codes are still computed).

    Arguments: x, a (samples, features) float32/float64 NumPy or CuPy array
    (unlabeled data; scaled, e.g. to [0, 1]). epochs, batch_size, verbose,
    shuffle: as in fit, for every stage. optimizer: a name (a fresh one per
    stage), an optimizer (cloned per stage from its config) or a function
    returning one. loss: "mse" (default) or "binary_crossentropy" (inputs in
    [0, 1], e.g. with ``decoder_activation="sigmoid"`` for the first stage).
    decoder_activation: one activation for every decoder, or a list with one
    per stage; default None (linear: the codes of hidden layers are not
    bounded). seed: an int seeds each decoder's Glorot-uniform kernel
    (seed + stage) and each stage's shuffling; None draws fresh ones.

    Returns a PretrainedLayers: the list of the same layer objects, with
    ``histories``, ``initial_losses``, ``final_losses`` and ``decoders``
    per stage.
    """
    caller = "greedy_autoencoder"
    stages = _stages(caller, layers)
    if not (hasattr(x, "ndim") and hasattr(x, "dtype") and hasattr(x, "shape")):
        raise TypeError(f"{caller}: x must be a NumPy or CuPy array, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{caller}: x has {x.ndim} dims, expected 2 (samples, features)")
    if x.dtype.char not in ("f", "d"):
        raise TypeError(f"{caller}: x has dtype {x.dtype.name}, expected float32 or float64")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{caller}: x has shape {tuple(x.shape)}; needs samples and features")
    first = stages[0][0]
    if first.built and first.input_dim != x.shape[1]:
        raise ValueError(f"{caller}: layers[0] ({first.name}) was built for {first.input_dim} "
                         f"input features, x has {x.shape[1]}")
    epochs = check_int(caller, "epochs", epochs, 1)
    batch_size = check_int(caller, "batch_size", batch_size, 1)
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise ValueError(f"{caller}: verbose must be 0, 1 or 2, got {verbose!r}")
    if not isinstance(shuffle, (bool, np.bool_)):
        raise TypeError(f"{caller}: shuffle must be a bool, got {shuffle!r}")
    if not isinstance(loss, str) or loss.lower() not in _RECONSTRUCTION_LOSSES:
        raise ValueError(f"{caller}: loss must be one of {list(_RECONSTRUCTION_LOSSES)}, got "
                         f"{loss!r}")
    if seed is not None and (isinstance(seed, (bool, np.bool_))
                             or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f"{caller}: seed must be an int >= 0 or None, got {seed!r}")
    make_optimizer = _optimizer_factory(caller, optimizer)
    activations = _decoder_activations(caller, decoder_activation, len(stages))

    # one dtype for every stage, so that the layers stack into one model
    dtype = _built_dtype(layers) or np.dtype(np.float32)
    histories, initial, final, decoders = [], [], [], []
    h = x
    for k, stage in enumerate(stages):
        encoder = stage[0]
        width = int(h.shape[1])
        if not encoder.trainable:
            for out in (histories, initial, final, decoders):
                out.append(None)
        else:
            init = _init.GlorotUniform(seed=None if seed is None else seed + k)
            decoder = Dense(width, activation=activations[k], kernel_initializer=init,
                            name=f"{encoder.name}_decoder")
            ae = Sequential(stage + [decoder], name=f"{encoder.name}_autoencoder",
                            dtype=dtype)
            ae.compile(optimizer=make_optimizer(), loss=loss)
            if verbose:
                print(f"Stage {k + 1}/{len(stages)}: {encoder.name} ({width} -> "
                      f"{encoder.units} -> {width})")
            initial.append(ae.evaluate(h, h, batch_size=max(batch_size, 256)))
            histories.append(ae.fit(h, h, batch_size=batch_size, epochs=epochs,
                                    verbose=verbose, shuffle=shuffle,
                                    seed=None if seed is None else seed + k))
            final.append(ae.evaluate(h, h, batch_size=max(batch_size, 256)))
            decoders.append(decoder)
        if k + 1 < len(stages):
            h = Sequential(stage, dtype=dtype).predict(h, batch_size=max(batch_size, 256))
        elif not all(layer.built for layer in stage):  # a frozen last stage
            Sequential(stage, dtype=dtype).build(width, array_module(h))
    return PretrainedLayers(list(layers), histories, initial, final, decoders)
