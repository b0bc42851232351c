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
import tensorflow as tf

from tf_sparse_prune.configurable import Configurable

__all__ = ["BPAR", "L1Norm", "L2Norm", "Scorer", "get_scorer"]


class Scorer(Configurable):
    """Base class of block scorers (strategy objects).

    A scorer with ``supports_tensors = True`` also takes and returns TensorFlow tensors
    (float64), so mask updates that use it run compiled, in the graph.
    """

    supports_tensors = False

    def __call__(self, blocks: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def comparable(self, scores: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """Scores rescaled to be comparable across block sizes (per-weight scale)."""
        raise NotImplementedError


@keras.saving.register_keras_serializable(package="tf_sparse_prune")
class L2Norm(Scorer):
    """The L2 norm of each block (GMP's criterion; ``sqrt(size)``-normalised across sizes)."""

    supports_tensors = True

    def __call__(self, blocks):
        if tf.is_tensor(blocks):
            b = tf.cast(blocks, tf.float64)
            return tf.sqrt(tf.reduce_sum(b * b, axis=-1))
        b = np.asarray(blocks, np.float64)
        return np.sqrt(np.sum(b * b, axis=-1))

    def comparable(self, scores, sizes):
        if tf.is_tensor(scores):
            return scores / tf.sqrt(tf.maximum(tf.constant(sizes, tf.float64), 1.0))
        return np.asarray(scores, np.float64) / np.sqrt(np.maximum(sizes, 1))


@keras.saving.register_keras_serializable(package="tf_sparse_prune")
class L1Norm(Scorer):
    """The L1 norm of each block (mean absolute weight across sizes)."""

    supports_tensors = True

    def __call__(self, blocks):
        if tf.is_tensor(blocks):
            return tf.reduce_sum(tf.abs(tf.cast(blocks, tf.float64)), axis=-1)
        return np.sum(np.abs(np.asarray(blocks, np.float64)), axis=-1)

    def comparable(self, scores, sizes):
        if tf.is_tensor(scores):
            return scores / tf.maximum(tf.constant(sizes, tf.float64), 1.0)
        return np.asarray(scores, np.float64) / np.maximum(sizes, 1)


@keras.saving.register_keras_serializable(package="tf_sparse_prune")
class BPAR(Scorer):
    """SUBP's block pruning-aware relevance (Eq. 4; SPEC §5): magnitude minus redundancy.

    BPAR scores the blocks of a *row* against each other, so it takes a
    ``(*rows, C, block_size)`` tensor (for ``OneByN`` the ``(C_out/n, C_in, T*n)``
    tensor of ``to_blocks``) and returns ``(*rows, C)`` scores. In each row ``g``:

    * ``a_gj = |B_gj|_1 / sum_j |B_gj|_1`` (0 for an all-zero row),
    * ``c_gj = sum_k |cos(B_gj, B_gk)|`` over the row's blocks, itself included
      (a zero block has cosine 0 with everything),
    * ``c_hat_gj = c_gj / sum_j c_gj``, and ``c_hat_gj = 1`` where ``c_gj = 0``,
    * ``S_gj = a_gj - balance * c_hat_gj``.

    The cosines are one batched matrix product of the L2-normalised blocks, a
    ``C x C`` matrix per row, computed a few rows at a time so memory stays below
    ``max_elements`` float32 entries (the cost for ``C`` up to 2048 is measured by
    ``benchmarks/bpar_cost.py``).

    Args:
        balance: ``lambda`` of the paper, the weight of the redundancy term (>= 0).

    Example:
        >>> import numpy as np, tf_sparse_prune as tsp
        >>> blocks = np.array([[[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]]])  # 1 row, 3 blocks
        >>> np.round(tsp.scoring.BPAR(balance=1.0)(blocks), 3)
        array([[-0.15,  0.1 ,  0.05]])
    """

    #: most float32 entries of the per-row cosine matrices held at once
    max_elements = 1 << 24

    def __init__(self, balance: float = 1.0):
        if (
            isinstance(balance, bool)
            or not isinstance(balance, (int, float, np.integer, np.floating))
            or not np.isfinite(balance)
            or balance < 0
        ):
            raise ValueError(f"BPAR: balance={balance!r} is invalid; it must be a number >= 0")
        self.balance = float(balance)

    def __call__(self, blocks):
        b = np.asarray(blocks)
        if b.ndim < 3:
            raise ValueError(
                f"BPAR scores the blocks of a row against each other and needs a "
                f"(rows, blocks, block_size) tensor, got shape {b.shape}; use it with "
                f"tsp.OneByN(n) or tsp.Block(n_out, n_in)"
            )
        lead, (c, size) = b.shape[:-2], b.shape[-2:]
        b = b.reshape(-1, c, size)
        l1 = np.sum(np.abs(b), axis=-1, dtype=np.float64)  # (rows, C)
        row_l1 = l1.sum(-1, keepdims=True)
        a = np.divide(l1, row_l1, out=np.zeros_like(l1), where=row_l1 > 0)
        unit = b.astype(np.float32)
        norm = np.sqrt(np.einsum("rcs,rcs->rc", unit, unit, dtype=np.float64))
        unit = unit / np.where(norm > 0, norm, 1.0)[..., None].astype(np.float32)
        cos_sum = np.empty(l1.shape, np.float64)
        chunk = max(1, self.max_elements // max(c * c, 1))
        for start in range(0, b.shape[0], chunk):
            u = unit[start : start + chunk]
            cos = np.matmul(u, np.ascontiguousarray(np.swapaxes(u, -1, -2)))  # (chunk, C, C)
            cos_sum[start : start + chunk] = np.abs(cos, out=cos).sum(-1)
        cos_sum[norm == 0] = 0.0  # a zero block: cosine 0 (also with itself)
        total = cos_sum.sum(-1, keepdims=True)
        c_hat = np.divide(cos_sum, total, out=np.ones_like(cos_sum), where=total > 0)
        c_hat[cos_sum == 0] = 1.0
        return (a - self.balance * c_hat).reshape(*lead, c)

    def comparable(self, scores, sizes):
        raise NotImplementedError(
            "BPAR scores are relative to their row (shares of the row's L1 mass and "
            "redundancy) and cannot be ranked across layers; use it per layer (SUBP, or "
            "scope='layer')"
        )

    def get_config(self) -> dict:
        return {"balance": self.balance}


_BY_NAME = {"l2": L2Norm, "l1": L1Norm, "bpar": BPAR}


def get_scorer(criterion: str | Scorer | None, owner: str = "pruner") -> Scorer:
    """A scorer from a name (``"l2"``, ``"l1"``, ``"bpar"``) or an instance; ``None`` gives L2."""
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
