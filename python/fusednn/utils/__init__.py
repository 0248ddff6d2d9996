"""Utilities around training: ``Sequence``, the batch source protocol that
fit, evaluate and predict take besides arrays (Keras' ``PyDataset``)."""

from .data import Sequence

__all__ = ["Sequence"]
