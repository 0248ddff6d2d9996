"""Keras' config protocol for small objects whose constructor arguments are
their whole state: ``get_config()`` gives the arguments, ``from_config``
calls the constructor with them, and the repr shows them."""

from __future__ import annotations


class Serializable:
    """Subclasses define ``get_config()`` (constructor keyword -> value)."""

    def get_config(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
