"""What a pruner always keeps: the per-layer floor.

No pruner empties a layer or a block row unless asked. A :class:`Floor` names the
blocks of one kernel that are *protected* (never pruned) for its current scores:

* ``keep_rows``: in every row of the structure (a group of ``n`` output channels for
  ``OneByN``/``Block``, one output channel for ``Unstructured``, the whole layer for
  ``OutputChannel``) the best-scoring block. A 1xN row with no block left is an output
  group that no longer depends on the input.
* ``min_fraction``: the best-scoring blocks of the layer until they hold this fraction
  of its weights.

The rule is one function of the scores (ties broken by position), computed with
TensorFlow ops so that the same code runs eagerly on numpy scores (mask updates) and
inside a compiled train step (SMART's and PDP's soft masks): both see the same set.
``Floor(min_fraction=0.0, keep_rows=False)`` lifts the floor, for users who ask for
empty layers explicitly.

Example:
    >>> import numpy as np, tf_sparse_prune as tsp
    >>> rows = tsp.OneByN(4).row_ids((1, 1, 2, 8))     # a 1x1 conv, 2 -> 8 channels
    >>> rows                                           # 2 rows of 2 blocks
    array([[0, 0],
           [1, 1]], dtype=int32)
    >>> scores = np.array([[3.0, 1.0], [0.5, 0.2]])
    >>> tsp.Floor(min_fraction=0.0).protected(scores, np.ones((2, 2)), rows)
    array([[ True, False],
           [ True, False]])
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tf_sparse_prune.configurable import Configurable

__all__ = ["Floor", "FloorError"]


class FloorError(ValueError):
    """A target sparsity the floor cannot allow (the message says which to change)."""


@keras.saving.register_keras_serializable(package="tf_sparse_prune")
class Floor(Configurable):
    """The blocks a pruner keeps in every layer whatever their scores.

    Args:
        min_fraction: Fraction of each pruned kernel's weights always kept, in [0, 1)
            (default 0.01). A target sparsity above ``1 - min_fraction`` is refused.
        keep_rows: Keep the best block of every row (default ``True``): no group of
            output channels is cut off from the layer's input.

    Example:
        >>> import tf_sparse_prune as tsp
        >>> tsp.Floor().max_sparsity(row_blocks=4)     # 1 of 4 blocks per row kept
        0.75
        >>> tsp.Floor(keep_rows=False).max_sparsity(row_blocks=4)
        0.99
    """

    def __init__(self, min_fraction: float = 0.01, keep_rows: bool = True):
        if (
            isinstance(min_fraction, bool)
            or not isinstance(min_fraction, (int, float, np.floating))
            or not 0.0 <= float(min_fraction) < 1.0
        ):
            raise ValueError(
                f"Floor: min_fraction={min_fraction!r} is outside [0, 1); pass the fraction of "
                f"each layer's weights always kept, e.g. 0.01 (0 lifts this floor)"
            )
        if not isinstance(keep_rows, (bool, np.bool_)):
            raise ValueError(f"Floor: keep_rows={keep_rows!r} must be True or False")
        self.min_fraction = float(min_fraction)
        self.keep_rows = bool(keep_rows)

    def get_config(self) -> dict:
        return {"min_fraction": self.min_fraction, "keep_rows": self.keep_rows}

    def max_sparsity(self, row_blocks: int | None = None) -> float:
        """The highest sparsity the floor allows in a layer whose rows hold
        ``row_blocks`` equal blocks (``None``: rows are not limiting)."""
        best = 1.0 - self.min_fraction
        if self.keep_rows and row_blocks:
            best = min(best, 1.0 - 1.0 / row_blocks)
        return round(best, 12)

    def check_sparsity(self, owner: str, sparsity: float) -> None:
        """Raises :class:`FloorError` if ``sparsity`` exceeds ``1 - min_fraction``."""
        if sparsity > 1.0 - self.min_fraction + 1e-12:
            raise FloorError(
                f"{owner}: sparsity={sparsity} would leave less than the floor's "
                f"min_fraction={self.min_fraction} of some layer's weights; lower the sparsity "
                f"to <= {1.0 - self.min_fraction:g}, or pass "
                f"floor=tsp.Floor(min_fraction={max(0.0, round(1.0 - sparsity, 6) / 2):g})"
            )

    def protected(self, scores, sizes, row_ids):
        """Which blocks of one kernel are never pruned, for the given scores.

        Args:
            scores: Grid-shaped block scores (higher is more important); numpy or tensor.
            sizes: Grid-shaped block sizes in weights.
            row_ids: Grid-shaped integer row index of each block
                (:meth:`~tf_sparse_prune.structures.Structure.row_ids`), or ``None``
                when the structure has no rows to protect (N:M keeps its own).

        Returns:
            A boolean grid: numpy for numpy ``scores``, else a tensor.
        """
        as_numpy = isinstance(scores, np.ndarray)
        s = tf.cast(tf.convert_to_tensor(scores), tf.float32)
        flat = tf.reshape(s, [-1])
        n = tf.size(flat)
        index = tf.range(n)
        keep = tf.zeros_like(flat, dtype=tf.bool)
        if self.keep_rows and row_ids is not None:
            ids = np.asarray(row_ids, np.int32).reshape(-1)
            layout = _row_layout(ids)
            if layout is not None:
                keep = tf.logical_or(keep, _first_best_of_equal_rows(flat, *layout))
            else:
                n_rows = int(ids.max()) + 1 if ids.size else 0
                row_max = tf.math.unsorted_segment_max(flat, ids, n_rows)
                best = tf.equal(flat, tf.gather(row_max, ids))
                # one block per row: the first best (ties by position, as select breaks them)
                first = tf.math.unsorted_segment_min(tf.where(best, index, n), ids, n_rows)
                keep = tf.logical_or(keep, tf.equal(index, tf.gather(first, ids)))
        if self.min_fraction > 0:
            w = tf.cast(tf.reshape(tf.convert_to_tensor(sizes), [-1]), tf.float32)
            need = self.min_fraction * tf.reduce_sum(w)
            # Only the best `bound` blocks can be needed (each holds at least the smallest
            # size): a top_k of them, not a sort of the layer (SMART computes this in
            # every step). top_k breaks ties by position, as a stable sort would.
            bound = _top_bound(sizes, self.min_fraction)
            if bound is None:
                order = tf.argsort(-flat, stable=True)  # best first, ties by position
            else:
                size = flat.shape[0]  # static where known: XLA needs a constant k
                k = min(bound, size) if size is not None else tf.minimum(bound, n)
                order = tf.math.top_k(flat, k=k, sorted=True).indices
            cum = tf.cumsum(tf.gather(w, order))
            # the blocks up to the one at which the kept weights first reach `need`; a
            # mask over the ranks, not a slice, so every shape stays static (XLA)
            last = tf.minimum(tf.reduce_sum(tf.cast(cum < need, tf.int32)), tf.size(order) - 1)
            chosen = tf.cast(tf.range(tf.size(order)) <= last, tf.int32)
            hits = tf.scatter_nd(order[:, None], chosen, tf.reshape(n, [1]))
            keep = tf.logical_or(keep, hits > 0)
        keep = tf.reshape(keep, tf.shape(s))
        return np.asarray(keep) if as_numpy else keep


def _top_bound(sizes, min_fraction: float) -> int | None:
    """How many of the best blocks can reach ``min_fraction`` of the weights at most (one
    spare for rounding), from static ``sizes``; ``None`` when unknown (a tensor)."""
    if tf.is_tensor(sizes):
        return None
    w = np.asarray(sizes, np.float64).reshape(-1)
    if not w.size or w.min() <= 0:
        return None
    return int(np.ceil(min_fraction * w.sum() / w.min())) + 1


def _row_layout(ids: np.ndarray) -> tuple[np.ndarray | None, int, int] | None:
    """``(order, rows, length)`` when every row holds the same number of blocks: ``order``
    lists the blocks row by row, each row in position order (``None`` when that is the
    flat order already, as for a 1xN grid); else ``None``."""
    if not ids.size:
        return None
    counts = np.bincount(ids)
    if counts.min() != counts.max():
        return None
    order = np.argsort(ids, kind="stable")
    if np.array_equal(order, np.arange(ids.size)):
        order = None
    return order, counts.size, int(counts[0])


def _first_best_of_equal_rows(flat, order, rows: int, length: int):
    """The first best block of each row (flat boolean), with dense reductions over a
    ``(rows, length)`` view: the rule of the segment ops, several times cheaper (SMART
    computes it in every step)."""
    grid = tf.reshape(flat if order is None else tf.gather(flat, order), [rows, length])
    best = tf.equal(grid, tf.reduce_max(grid, axis=1, keepdims=True))
    position = tf.range(length)[None, :]
    first = tf.reduce_min(tf.where(best, position, length), axis=1, keepdims=True)
    keep = tf.reshape(tf.equal(position, first), [-1])
    if order is None:
        return keep
    return tf.gather(keep, np.argsort(order).astype(np.int32))
