"""SMART's per-step math over all pruned kernels at once, compiled with XLA.

In every search step SMART computes, for each of the model's pruned kernels, the
floor's blocks, the size-weighted global threshold ``t`` (float64, warm-started
safeguarded Newton) and the soft grid ``f = sigmoid((m + t) / tau)`` with the
implicit-function gradient of ``t(m)``. Each is a handful of elementwise passes over
small tensors, one per kernel: as TensorFlow ops they cost more in dispatch than in
arithmetic (ResNet50 has 52 kernels and 836 k scores). :class:`SearchCore` runs each
of the three as one XLA-compiled function over all kernels, so the passes fuse.

The gradient of the grids is written out rather than traced (``v = f (1 - f) / tau``
on the free blocks, 0 on the floor's, ``s`` the block sizes, ``g`` the upstream)::

    dL/dm_j = v_j g_j - s_j v_j (sum_i v_i g_i) / (sum_i s_i v_i)

which is Prop. 2.2's closed form over the concatenated scores: the direct term of
``f_j`` and the implicit term of ``t``.

Example:
    >>> import numpy as np, tensorflow as tf, tf_sparse_prune as tsp
    >>> from tf_sparse_prune.algorithms.smart_core import SearchCore
    >>> core = SearchCore(tsp.Floor(min_fraction=0.0, keep_rows=False),
    ...                   [np.ones((2, 2))], [None], budget=2.0)
    >>> scores = [tf.constant([[3.0, 1.0], [2.0, 0.0]])]
    >>> kept = core.kept(scores)
    >>> t = core.threshold(scores, kept, tf.constant(0.1, tf.float64), tf.constant(0.0, tf.float64))
    >>> round(float(t), 3)                                  # halfway between 2 and 1
    -1.5
    >>> np.round(core.grids(scores, kept, t, tf.constant(0.1, tf.float64))[0].numpy(), 3)
    array([[1.   , 0.007],
           [0.993, 0.   ]], dtype=float32)
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tf_sparse_prune.ops import soft_topk_threshold

__all__ = ["SearchCore"]


class SearchCore:
    """The floors, the threshold solve and the coupled soft grids of one global search.

    Built for a fixed list of kernels (their block sizes and row ids, grid-shaped);
    every method takes and returns one tensor per kernel, in that order.

    Args:
        floor: The :class:`~tf_sparse_prune.Floor` whose blocks hold a mask of 1.
        sizes: Each kernel's block sizes in weights (grid-shaped).
        rows: Each kernel's row ids (grid-shaped int32, or ``None``).
        budget: Weights kept over all kernels, ``K = (1 - sparsity) * total``.
        jit_compile: Compile each method with XLA (``False``: plain TensorFlow graphs,
            the same values up to float rounding).
    """

    def __init__(self, floor, sizes, rows, budget: float, jit_compile: bool = True):
        self._floor = floor
        self._sizes = [np.asarray(s, np.float64) for s in sizes]
        self._rows = list(rows)
        self._total = float(sum(float(s.sum()) for s in self._sizes))
        self._budget = float(budget)
        self.kept = tf.function(self._kept, jit_compile=jit_compile)
        self.threshold = tf.function(self._threshold, jit_compile=jit_compile)
        self._forward = tf.function(self._grids_forward, jit_compile=jit_compile)
        self._backward = tf.function(self._grids_backward, jit_compile=jit_compile)

    def _kept(self, scores):
        """The floor's blocks of each kernel (boolean grids) for ``scores``."""
        return [
            self._floor.protected(m, s, r)
            for m, s, r in zip(scores, self._sizes, self._rows, strict=True)
        ]

    def _threshold(self, scores, kept, tau, start):
        """``t`` (float64) with ``sum_free s f = K - sum_kept s``, from ``start``."""
        xs, free_sizes = [], []
        for m, keep, s in zip(scores, kept, self._sizes, strict=True):
            sizes = tf.constant(s.reshape(-1))
            free_sizes.append(tf.where(tf.reshape(keep, [-1]), tf.zeros_like(sizes), sizes))
            xs.append(tf.cast(tf.reshape(m, [-1]), tf.float64))
        sizes = tf.concat(free_sizes, 0)
        free = tf.reduce_sum(sizes)
        # the floor's weights leave the budget; at least half a weight stays to find
        k = tf.minimum(tf.maximum(self._budget - (self._total - free), 0.5), free)
        return tf.cond(
            free > 0.5,
            lambda: soft_topk_threshold(tf.concat(xs, 0), k, tau, sizes, start=start),
            lambda: tf.constant(0.0, tf.float64),
        )

    def _grids_forward(self, scores, kept, t, tau):
        """``(grids, slopes)``: float32 ``f`` (1 on the floor's blocks) and the float64
        slope ``f (1 - f) / tau`` on the free blocks (0 on the floor's)."""
        grids, slopes = [], []
        for m, keep in zip(scores, kept, strict=True):
            f = tf.sigmoid((tf.cast(m, tf.float64) + t) / tau)
            slopes.append(tf.where(keep, tf.zeros_like(f), f * (1.0 - f) / tau))
            grids.append(tf.cast(tf.where(keep, tf.ones_like(f), f), tf.float32))
        return grids, slopes

    def _grids_backward(self, upstream, slopes):
        """The score gradients for the grids' ``upstream`` gradients (module doc)."""
        direct = [tf.cast(g, tf.float64) * v for g, v in zip(upstream, slopes, strict=True)]
        weighted = [tf.constant(s) * v for s, v in zip(self._sizes, slopes, strict=True)]
        through_t = tf.math.divide_no_nan(
            tf.add_n([tf.reduce_sum(d) for d in direct]),
            tf.add_n([tf.reduce_sum(w) for w in weighted]),
        )
        return [
            tf.cast(d - through_t * w, tf.float32) for d, w in zip(direct, weighted, strict=True)
        ]

    def grids(self, scores, kept, t, tau):
        """The soft grids of all kernels (float32), differentiable in ``scores``.

        ``kept``, ``t`` and ``tau`` carry no gradient (``t``'s dependence on the scores is
        in the written-out gradient).
        """

        @tf.custom_gradient
        def run(*ms):
            grids, slopes = self._forward(list(ms), kept, t, tau)

            def grad(*upstream):
                upstream = [
                    tf.zeros_like(g) if u is None else u
                    for u, g in zip(upstream, grids, strict=True)
                ]
                return self._backward(upstream, slopes)

            return grids, grad

        return run(*scores)
