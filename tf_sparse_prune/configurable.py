"""A base for the small configuration objects (structures, scorers, schedules).

Equality, hashing and ``repr`` all follow ``get_config()``, and ``from_config``
calls the constructor with it, so every subclass round-trips exactly.

Example:
    >>> import tf_sparse_prune as tsp
    >>> tsp.OneByN(16) == tsp.OneByN.from_config(tsp.OneByN(16).get_config())
    True
"""

from __future__ import annotations

__all__ = ["Configurable"]


class Configurable:
    """Equality, hash and repr from ``get_config()``; ``from_config`` = ``cls(**config)``."""

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(sorted(self.get_config().items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
