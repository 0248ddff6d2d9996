"""Callbacks (Keras 3 API): objects whose hooks Sequential.fit calls.

A callback sees the model through ``self.model`` (set by fit):
``model.stop_training`` (set True to stop after the current epoch),
``model.optimizer`` (its ``learning_rate`` may be reassigned between steps),
``model.get_weights()`` / ``model.set_weights()`` and ``model.history``.
``logs`` hold the epoch's ``loss``, metrics and ``val_*`` values.
"""

from __future__ import annotations

__all__ = ["Callback"]


class Callback:
    """Base class: every hook does nothing."""

    def __init__(self):
        self.model = None

    def set_model(self, model) -> None:
        self.model = model

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_batch_begin(self, batch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        pass
