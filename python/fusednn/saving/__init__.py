"""Persistence, in four files from the format up:

- ``safetensors``: the safetensors format alone (``save_file``/``load_file``,
  the names of ``safetensors.numpy``) and atomic writes;
- ``model``: a fd.Sequential in one safetensors file (``Sequential.save``,
  ``fd.models.load``), through the model's public state only;
- ``weights``: weights only, the .npz files of ``ModelCheckpoint``;
- ``interop``: weights trained by PyTorch or Keras (also ``fd.io``).

Nothing is ever unpickled.
"""

from __future__ import annotations

from . import interop, model, safetensors, weights
from .interop import load_keras_weights, load_torch_state_dict
from .model import load_model, save_model
from .safetensors import load_file, save_file

__all__ = ["interop", "model", "safetensors", "weights", "load_file", "save_file",
           "load_model", "save_model", "load_torch_state_dict", "load_keras_weights"]
