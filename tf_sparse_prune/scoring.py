"""How important a block is: block members in, one score per block out.

A scorer takes the ``(*grid, block_size)`` tensor that a structure's
``to_blocks`` returns and reduces the last axis to one score per block (higher
means more important). ``comparable`` rescales scores so blocks of different
sizes (e.g. 1x1 and 3x3 kernels) can be ranked together (``scope="global"``).

Example:
    >>> import numpy as np, tf_sparse_prune as tsp
    >>> blocks = np.array([[3.0, 4.0], [1.0, 0.0]])
    >>> tsp.scoring.L2Norm()(blocks)
    array([5., 1.])
"""

from __future__ import annotations

import keras
import numpy as np

__all__ = ["L1Norm", "L2Norm", "Scorer", "get_scorer"]


class Scorer:
    """Base class of block scorers (strategy objects)."""

    def __call__(self, blocks: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def comparable(self, scores: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """Scores rescaled to be comparable across block sizes (per-weight scale)."""
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict) -> Scorer:
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash(type(self).__name__)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@keras.saving.register_keras_serializable(package="tf_sparse_prune")
class L2Norm(Scorer):
    """The L2 norm of each block (GMP's criterion; ``sqrt(size)``-normalised across sizes)."""

    def __call__(self, blocks):
        b = np.asarray(blocks, np.float64)
        return np.sqrt(np.sum(b * b, axis=-1))

    def comparable(self, scores, sizes):
        return np.asarray(scores, np.float64) / np.sqrt(np.maximum(sizes, 1))


@keras.saving.register_keras_serializable(package="tf_sparse_prune")
class L1Norm(Scorer):
    """The L1 norm of each block (mean absolute weight across sizes)."""

    def __call__(self, blocks):
        return np.sum(np.abs(np.asarray(blocks, np.float64)), axis=-1)

    def comparable(self, scores, sizes):
        return np.asarray(scores, np.float64) / np.maximum(sizes, 1)


_BY_NAME = {"l2": L2Norm, "l1": L1Norm}


def get_scorer(criterion: str | Scorer | None, owner: str = "pruner") -> Scorer:
    """A scorer from a name (``"l2"``, ``"l1"``) or an instance; ``None`` gives L2."""
    if criterion is None:
        return L2Norm()
    if isinstance(criterion, Scorer):
        return criterion
    if isinstance(criterion, str) and criterion.lower() in _BY_NAME:
        return _BY_NAME[criterion.lower()]()
    raise ValueError(
        f"{owner}: criterion={criterion!r} is unknown; valid: {sorted(_BY_NAME)} or a "
        f"tf_sparse_prune.scoring.Scorer instance"
    )
