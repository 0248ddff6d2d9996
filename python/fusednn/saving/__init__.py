"""Persistence, in four files from the format up:

- ``safetensors``: the safetensors format alone (``save_file``/``load_file``,
  the names of ``safetensors.numpy``) and atomic writes;
- ``model``: a fd.Sequential in one safetensors file (``Sequential.save``,
  ``fd.models.load``), through the model's public state only;
- ``weights``: weights only, the .npz files of ``ModelCheckpoint``;
- ``interop``: weights trained by PyTorch or Keras (also ``fd.io``).

Reading a file (``load_file``, ``fd.models.load``, ``fd.callbacks.load_weights``)
never trusts it: every size it claims is checked against the file's own size
before anything is read or allocated, so a file of S bytes costs at most a
few times S of memory besides the model it holds (a deflated .npz member: up
to the 1032:1 that deflate allows); nothing is ever unpickled. A file that is not what it
should be (truncated, corrupted, a header or config of the wrong types, a
name given twice, tensors that do not fit the model) raises ValueError (a
plain one: a bad file is a bad value) whose message names the file, the
tensor, member or field, and the problem, e.g. ``bad header length
9223372036854775807: 8 + header length exceeds the file size 4120``.
"""

from __future__ import annotations

from . import interop, model, safetensors, weights
from .interop import load_keras_weights, load_torch_state_dict
from .model import load_model, save_model
from .safetensors import load_file, save_file

__all__ = ["interop", "model", "safetensors", "weights", "load_file", "save_file",
           "load_model", "save_model", "load_torch_state_dict", "load_keras_weights"]
