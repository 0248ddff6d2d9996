"""Dropout and AlphaDropout layers, the fused fd.ops.dropout op."""

from __future__ import annotations

from .. import ops
from .._validate import check_bool, check_rate
from ._util import check_seed, draw_seed, require_forward
from .base import Layer, check_counter, check_state

__all__ = ["Dropout", "AlphaDropout"]


class Dropout(Layer):
    """Inverted dropout (Srivastava et al. 2014), Keras' ``Dropout(rate)``:
    in training each element is zeroed with probability ``rate`` and the
    kept ones scaled by 1 / (1 - rate); in inference the layer is the
    identity (y is x itself).

    Masks: Philox keyed by ``seed`` and the layer's ``step`` counter
    (fd.ops.dropout_forward), which is incremented at each forward that
    drops, so every step draws a new mask and the same seed replays the same
    sequence on CPU and GPU. ``seed=None`` draws a seed at construction from
    NumPy's global RNG (``np.random.seed`` makes it reproducible), so two
    layers get different masks; ``get_config`` records the seed in use.

    MC dropout (Gal & Ghahramani 2016): ``mc=True`` keeps dropout active with
    ``training=False`` too, so averaging several predictions of the same
    input estimates the model's predictive mean and uncertainty (Keras'
    idiom is a ``Dropout`` subclass whose ``call`` forces ``training=True``).
    A model can also call ``forward(x, training=True)`` on a single layer.
    ``rate`` in [0, 1); ``noise_shape`` is not offered.
    """

    _alpha = False

    def __init__(self, rate, seed=None, mc=False, **kwargs):
        super().__init__(**kwargs)
        c = type(self).__name__
        self.rate = check_rate(c, "rate", rate)
        seed = check_seed(c, seed)
        self.seed = draw_seed() if seed is None else seed
        self.mc = check_bool(c, "mc", mc)
        self.step = 0
        self._ctx = None

    def forward(self, x, training=False):
        training = check_bool(type(self).__name__, "training", training)
        active = training or self.mc
        y, self._ctx = ops.dropout_forward(x, self.rate, seed=self.seed, step=self.step,
                                           alpha=self._alpha, training=active)
        if active and self.rate > 0.0:
            self.step += 1
        return y

    def backward(self, dy, need_dx=True):
        require_forward(self, self._ctx)
        self.grads = []
        return ops.dropout_backward(dy, self._ctx) if need_dx else None

    def get_state(self):
        """``{"step": n}``: the mask counter, so a resumed run draws the masks
        an uninterrupted one would."""
        return {"step": self.step}

    def set_state(self, state):
        self.step = check_counter(self, check_state(self, state, ("step",)), "step")

    def get_config(self):
        cfg = super().get_config()
        cfg.update(rate=self.rate, seed=self.seed, mc=self.mc)
        return cfg


class AlphaDropout(Dropout):
    """Alpha dropout (Klambauer et al. 2017), Keras' ``AlphaDropout(rate)``:
    for SELU networks, dropped units take SELU's saturation value and an
    affine map keeps zero mean and unit variance (see fd.ops.dropout). Same
    seeding, step counter and ``mc`` option as Dropout."""

    _alpha = True
