"""Layers (Keras 3 names): each maps (batch, features) to (batch, units) with
forward(x, training) and backward(dy, need_dx); see base.Layer."""

from .base import Layer
from .dense import Dense

__all__ = ["Layer", "Dense"]
