"""Layers (Keras 3 names): each maps (batch, features) to (batch, units) with
forward(x, training) and backward(dy, need_dx); see base.Layer."""

from .activation import ELU, Activation, LeakyReLU, PReLU, RReLU
from .base import Layer
from .dense import Dense
from .dropout import AlphaDropout, Dropout
from .input import Input
from .normalization import BatchNormalization

__all__ = ["Layer", "Input", "Dense", "Activation", "LeakyReLU", "ELU", "PReLU", "RReLU",
           "BatchNormalization", "Dropout", "AlphaDropout"]
