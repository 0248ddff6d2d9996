"""Sequential models: a stack of fd.layers trained with fit, as in Keras 3.

- ``sequential``: ``Sequential``, ``load``, ``clone_model``, ``fold_batchnorm``;
- ``plan``: the layers turned into fused Steps (pure: nothing is written
  onto the layers);
- ``loss``: the compiled loss with the output head (softmax / sigmoid
  logits, accuracy threshold);
- ``history``: the History fit returns, and its progress line.
"""

from __future__ import annotations

from .history import History
from .sequential import Sequential, clone_model, fold_batchnorm, load, load_model

__all__ = ["Sequential", "History", "clone_model", "fold_batchnorm", "load", "load_model"]
