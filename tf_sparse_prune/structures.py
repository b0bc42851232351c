"""What one prunable unit is.

A structure answers one question: which weights of a kernel form one prunable
unit (a *block*). It maps a kernel to a grid of blocks (``to_blocks``) or of
block scores (``reduce``), a grid mask back to the kernel's shape (``expand``),
and chooses the kept blocks of one layer for a target sparsity (``select``).
How important a block is comes from :mod:`tf_sparse_prune.scoring`; when and
how much to prune from :mod:`tf_sparse_prune.schedules`.

Every kernel is first seen in a canonical ``(taps, C_in, C_out)`` view, a pure
reshape (no transpose) of the Keras layouts (SPEC §1):

* ``Conv2D`` ``(kh, kw, C_in, C_out)`` -> ``(kh*kw, C_in, C_out)``
* ``Dense`` ``(C_in, C_out)`` -> ``(1, C_in, C_out)``
* ``DepthwiseConv2D`` ``(kh, kw, C, mult)`` -> ``(kh*kw, 1, C*mult)``: each output
  channel sees one input channel.

Example:
    >>> import numpy as np, tf_sparse_prune as tsp
    >>> s = tsp.OneByN(4)
    >>> w = np.random.rand(3, 3, 8, 16).astype("float32")
    >>> s.grid_shape(w.shape)          # 4 rows of 4 output channels x 8 input channels
    (4, 8)
    >>> s.expand(np.ones((4, 8)), w.shape).shape
    (3, 3, 8, 16)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from tf_sparse_prune.configurable import Configurable

__all__ = [
    "NM",
    "Block",
    "OneByN",
    "OutputChannel",
    "Structure",
    "StructureError",
    "Unstructured",
    "canonical_shape",
    "select_by_weight_budget",
]

_PACKAGE = "tf_sparse_prune"


class StructureError(ValueError):
    """A structure cannot be applied to a kernel (the message says why)."""


def canonical_shape(kernel_shape: Sequence[int], depthwise: bool = False) -> tuple[int, int, int]:
    """The ``(taps, C_in, C_out)`` view of a kernel shape.

    Args:
        kernel_shape: The Keras kernel shape, with input channels on the second
            last axis and output channels (or the depth multiplier) on the last.
        depthwise: ``True`` for a ``DepthwiseConv2D`` kernel ``(kh, kw, C, mult)``.

    Returns:
        ``(taps, C_in, C_out)``.
    """
    shape = tuple(int(d) for d in kernel_shape)
    if len(shape) < 2:
        raise StructureError(f"a prunable kernel needs at least 2 dimensions, got shape {shape}")
    taps = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    if depthwise:
        return taps, 1, shape[-2] * shape[-1]
    return taps, shape[-2], shape[-1]


def _check_positive_int(owner: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{owner}: {name}={value!r} is invalid; it must be a positive integer")
    return int(value)


class Structure(Configurable):
    """Base class of the pruning structures (strategy objects).

    Subclasses define the block grid of a canonical ``(T, I, O)`` kernel. The
    kernel-shape arguments below are Keras shapes; ``depthwise`` selects the
    ``DepthwiseConv2D`` reading of the last two axes.
    """

    #: whether blocks of this structure can be ranked across layers (scope="global")
    supports_global = True

    #: whether ``prune_model(layers=None)`` prunes ``DepthwiseConv2D`` with this structure
    #: (a 1xN or block unit of a depthwise kernel holds one input channel, which no sparse
    #: kernel skips; element-wise units still shrink the model)
    prunes_depthwise_by_default = True

    # -- description --------------------------------------------------------------
    def name(self) -> str:
        """A short human-readable name, e.g. ``'1x16'``."""
        raise NotImplementedError

    def fixed_sparsity(self) -> float | None:
        """The sparsity this structure imposes by itself (N:M), else ``None``."""
        return None

    def check(self, kernel_shape: Sequence[int], depthwise: bool = False) -> None:
        """Raises :class:`StructureError` if this structure cannot apply to the kernel."""
        self._padded(canonical_shape(kernel_shape, depthwise))

    def applies_to(self, kernel_shape: Sequence[int], depthwise: bool = False) -> str | None:
        """``None`` if this structure applies to the kernel, else the reason it does not."""
        try:
            self.check(kernel_shape, depthwise)
        except StructureError as e:
            return str(e)
        return None

    # -- geometry ----------------------------------------------------------------
    def _padded(self, canon: tuple[int, int, int]) -> tuple[int, int, int]:
        """The canonical shape after padding (identity unless the structure pads)."""
        return canon

    def grid_shape(self, kernel_shape: Sequence[int], depthwise: bool = False) -> tuple[int, ...]:
        """Shape of the block grid (the shape of the mask this structure stores)."""
        raise NotImplementedError

    def to_blocks(self, kernel, depthwise: bool = False):
        """Kernel -> ``grid_shape + (block_size,)`` tensor of block members."""
        raise NotImplementedError

    def expand(self, block_mask, kernel_shape: Sequence[int], depthwise: bool = False):
        """Grid-shaped mask -> kernel-shaped mask (works on numpy and tensors)."""
        raise NotImplementedError

    def apply(self, kernel, block_mask, depthwise: bool = False):
        """``kernel * expand(block_mask)`` (numpy or tensors, value and gradient).

        The forward pass of every pruned layer runs this each step. Structures whose
        blocks are a reshape of the kernel multiply by the grid through broadcasting,
        which never writes the kernel-sized mask.
        """
        return kernel * _like(self.expand(block_mask, tuple(kernel.shape), depthwise), kernel)

    def reduce(self, kernel, depthwise: bool = False, scorer=None) -> np.ndarray:
        """Kernel -> grid-shaped block scores (``scorer`` defaults to the L2 norm)."""
        from tf_sparse_prune.scoring import L2Norm

        scorer = L2Norm() if scorer is None else scorer
        return scorer(np.asarray(self.to_blocks(np.asarray(kernel), depthwise)))

    def block_sizes(self, kernel_shape: Sequence[int], depthwise: bool = False) -> np.ndarray:
        """Number of real (unpadded) weights in each block, grid-shaped."""
        ones = np.ones(tuple(int(d) for d in kernel_shape), np.float32)
        return np.asarray(self.to_blocks(ones, depthwise)).sum(-1)

    def row_ids(self, kernel_shape: Sequence[int], depthwise: bool = False) -> np.ndarray | None:
        """Grid-shaped int32 index of the *row* each block belongs to, or ``None``.

        A row is the set of blocks that feed one group of output channels; a
        :class:`~tf_sparse_prune.floors.Floor` keeps at least one block of each.
        ``None`` means the structure keeps every row alive by itself (N:M).
        """
        raise NotImplementedError

    def row_length(self, kernel_shape: Sequence[int], depthwise: bool = False) -> int | None:
        """Blocks in the shortest row (``None`` when :meth:`row_ids` is ``None``)."""
        ids = self.row_ids(kernel_shape, depthwise)
        if ids is None:
            return None
        return int(np.bincount(ids.reshape(-1)).min())

    # -- selection ---------------------------------------------------------------
    def select(
        self,
        scores: np.ndarray,
        sparsity: float,
        sizes: np.ndarray | None = None,
        protected: np.ndarray | None = None,
    ) -> np.ndarray:
        """Chooses the kept blocks of one layer.

        Args:
            scores: Grid-shaped block scores (higher is more important).
            sparsity: Target fraction of *weights* to prune.
            sizes: Grid-shaped block sizes in weights (default: all equal).
            protected: Grid-shaped booleans: blocks never pruned (a
                :class:`~tf_sparse_prune.floors.Floor`'s), even if the target is missed.

        Returns:
            A float32 grid mask of 0/1. Blocks are dropped lowest score first,
            ties broken by position, until the pruned weights reach
            ``round(sparsity * total)`` without exceeding it by more than a block.
        """
        return select_by_weight_budget(scores, sparsity, sizes, protected)


def select_by_weight_budget(scores, sparsity: float, sizes=None, protected=None) -> np.ndarray:
    """Drops the lowest-scoring blocks (never a ``protected`` one) until the pruned
    weights are closest to ``round(sparsity * total)``; see :meth:`Structure.select`.

    Tensor ``scores`` (``sparsity`` a number or tensor) give the same mask as a tensor,
    computed with TensorFlow ops, so a compiled mask update can call it.

    Example:
        >>> import numpy as np
        >>> from tf_sparse_prune.structures import select_by_weight_budget
        >>> select_by_weight_budget(np.array([4.0, 1.0, 3.0, 2.0]), 0.5)
        array([1., 0., 1., 0.], dtype=float32)
        >>> select_by_weight_budget(np.array([4.0, 1.0, 3.0, 2.0]), 0.5,
        ...                         protected=np.array([False, True, False, False]))
        array([1., 1., 0., 0.], dtype=float32)
    """
    if tf.is_tensor(scores):
        return _select_by_weight_budget_tensor(scores, sparsity, sizes, protected)
    scores = np.asarray(scores, np.float64)
    flat = scores.reshape(-1)
    w = np.ones_like(flat) if sizes is None else np.asarray(sizes, np.float64).reshape(-1)
    total = w.sum()
    budget = round(sparsity * total)
    mask = np.ones(flat.shape, np.float32)
    if budget <= 0:
        return mask.reshape(scores.shape)
    free = np.ones(flat.shape, bool) if protected is None else ~np.asarray(protected, bool)
    free = free.reshape(-1)
    # protected blocks go last and are never reached: the budget is capped by the free ones
    order = np.lexsort((np.arange(flat.size), flat, ~free))  # free first, lowest, position
    order = order[: int(free.sum())]
    if order.size == 0:
        return mask.reshape(scores.shape)
    cum = np.cumsum(w[order])
    # number of blocks whose cumulative size is closest to the budget
    n_prune = int(np.searchsorted(cum, budget, side="left"))
    if n_prune < len(cum) and (
        n_prune == 0 or abs(cum[n_prune] - budget) < abs(cum[n_prune - 1] - budget)
    ):
        n_prune += 1
    mask[order[:n_prune]] = 0.0
    return mask.reshape(scores.shape)


def _select_by_weight_budget_tensor(scores, sparsity, sizes=None, protected=None):
    """:func:`select_by_weight_budget` in TensorFlow ops (same order, ties, budget)."""
    flat = tf.reshape(tf.cast(scores, tf.float64), [-1])
    n = tf.size(flat)
    w = tf.ones_like(flat) if sizes is None else tf.reshape(tf.cast(sizes, tf.float64), [-1])
    budget = tf.round(tf.cast(sparsity, tf.float64) * tf.reduce_sum(w))  # half to even
    free = tf.ones_like(flat, tf.bool)
    if protected is not None:
        free = tf.logical_not(tf.reshape(tf.cast(protected, tf.bool), [-1]))
    # free blocks lowest first, ties by position; protected ones last, never reached
    order = tf.argsort(tf.where(free, flat, tf.constant(np.inf, tf.float64)), stable=True)
    n_free = tf.reduce_sum(tf.cast(free, tf.int32))
    cum = tf.cumsum(tf.gather(w, order))
    first_free = tf.range(n) < n_free
    k = tf.reduce_sum(tf.cast(tf.logical_and(cum < budget, first_free), tf.int32))
    here = tf.gather(cum, tf.minimum(k, n - 1))
    before = tf.gather(cum, tf.maximum(k - 1, 0))
    closer = tf.abs(here - budget) < tf.abs(before - budget)
    k += tf.cast(tf.logical_and(k < n_free, tf.logical_or(k == 0, closer)), tf.int32)
    k = tf.where(budget <= 0, 0, k)
    rank = tf.argsort(order, stable=True)
    return tf.reshape(tf.cast(rank >= k, tf.float32), tf.shape(scores))


def _xp(x):
    """numpy for numpy inputs, keras.ops otherwise."""
    return np if isinstance(x, np.ndarray) else keras.ops


def _canon_pad(kernel, canon, padded):
    xp = _xp(kernel)
    k = xp.reshape(kernel, canon)
    if padded != canon:
        pads = [(0, p - c) for p, c in zip(padded, canon, strict=True)]
        k = np.pad(k, pads) if xp is np else keras.ops.pad(k, pads)
    return k


def _like(mask, kernel):
    """``mask`` in ``kernel``'s dtype where both are tensors (numpy promotes by itself)."""
    if isinstance(kernel, np.ndarray) or isinstance(mask, np.ndarray):
        return mask
    return keras.ops.cast(mask, kernel.dtype)


def _uncanon(mask, canon, padded, kernel_shape):
    if padded != canon:
        mask = mask[: canon[0], : canon[1], : canon[2]]
    return _xp(mask).reshape(mask, tuple(int(d) for d in kernel_shape))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Unstructured(Structure):
    """One weight is one unit (the unstructured baseline).

    Example:
        >>> import tf_sparse_prune as tsp
        >>> tsp.Unstructured().grid_shape((3, 3, 4, 8))
        (3, 3, 4, 8)
    """

    def name(self) -> str:
        return "unstructured"

    def grid_shape(self, kernel_shape, depthwise=False):
        return tuple(int(d) for d in kernel_shape)

    def to_blocks(self, kernel, depthwise=False):
        return _xp(kernel).expand_dims(kernel, -1)

    def expand(self, block_mask, kernel_shape, depthwise=False):
        return block_mask

    def block_sizes(self, kernel_shape, depthwise=False):
        return np.ones(tuple(int(d) for d in kernel_shape), np.float32)

    def row_ids(self, kernel_shape, depthwise=False):
        shape = tuple(int(d) for d in kernel_shape)
        outputs = 2 if depthwise else 1  # a depthwise output channel is (channel, multiplier)
        ids = np.arange(int(np.prod(shape[-outputs:])), dtype=np.int32)
        return np.broadcast_to(ids.reshape(shape[-outputs:]), shape).copy()


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Block(Structure):
    """``n_out`` output x ``n_in`` input channels x the whole kernel window.

    A *row* is one group of ``n_out`` output channels. ``Block(n, 1)`` is
    :class:`OneByN`. With ``pad=True`` a channel count that ``n_out`` (or
    ``n_in``) does not divide is allowed: the last row (column) holds the
    remainder channels and its blocks are smaller (their sizes count in weights).

    Args:
        n_out: Output channels per block (positive).
        n_in: Input channels per block (positive).
        pad: Allow channel counts not divisible by the block size.

    Example:
        >>> import tf_sparse_prune as tsp
        >>> tsp.Block(16, 8).grid_shape((3, 3, 64, 128))
        (8, 8)
    """

    def __init__(self, n_out: int, n_in: int, pad: bool = False):
        self.n_out = _check_positive_int(type(self).__name__, "n_out", n_out)
        self.n_in = _check_positive_int(type(self).__name__, "n_in", n_in)
        self.pad = bool(pad)

    prunes_depthwise_by_default = False

    def name(self) -> str:
        return f"block{self.n_out}x{self.n_in}"

    def row_ids(self, kernel_shape, depthwise=False):
        rows, cols = self.grid_shape(kernel_shape, depthwise)
        return np.repeat(np.arange(rows, dtype=np.int32)[:, None], cols, axis=1)

    def get_config(self):
        return {"n_out": self.n_out, "n_in": self.n_in, "pad": self.pad}

    def _padded(self, canon):
        t, i, o = canon
        for dim, size, what in ((o, self.n_out, "C_out"), (i, self.n_in, "C_in")):
            if dim % size and not self.pad:
                raise StructureError(
                    f"{self.name()} needs {what} to be a multiple of {size}, got {dim}; pass "
                    f"pad=True to prune the remainder as smaller blocks, or use a block size "
                    f"that divides {dim}"
                )
        return t, math.ceil(i / self.n_in) * self.n_in, math.ceil(o / self.n_out) * self.n_out

    def grid_shape(self, kernel_shape, depthwise=False):
        _, i, o = self._padded(canonical_shape(kernel_shape, depthwise))
        return (o // self.n_out, i // self.n_in)

    def to_blocks(self, kernel, depthwise=False):
        xp = _xp(kernel)
        canon = canonical_shape(kernel.shape, depthwise)
        t, i, o = padded = self._padded(canon)
        k = _canon_pad(kernel, canon, padded)
        k = xp.reshape(k, (t, i // self.n_in, self.n_in, o // self.n_out, self.n_out))
        k = xp.transpose(k, (3, 1, 0, 2, 4))  # rows, cols, taps, n_in, n_out
        return xp.reshape(k, (o // self.n_out, i // self.n_in, t * self.n_in * self.n_out))

    def expand(self, block_mask, kernel_shape, depthwise=False):
        xp = _xp(block_mask)
        canon = canonical_shape(kernel_shape, depthwise)
        t, i, o = padded = self._padded(canon)
        m = xp.transpose(block_mask, (1, 0))  # cols, rows
        m = xp.reshape(m, (1, i // self.n_in, 1, o // self.n_out, 1))
        m = xp.broadcast_to(m, (t, i // self.n_in, self.n_in, o // self.n_out, self.n_out))
        m = xp.reshape(m, padded)
        return _uncanon(m, canon, padded, kernel_shape)

    def apply(self, kernel, block_mask, depthwise=False):
        canon = canonical_shape(kernel.shape, depthwise)
        t, i, o = self._padded(canon)
        if (t, i, o) != canon:  # the last row or column is partial: no plain reshape
            return super().apply(kernel, block_mask, depthwise)
        xp = _xp(kernel)
        m = xp.transpose(_like(block_mask, kernel), (1, 0))
        m = xp.reshape(m, (1, i // self.n_in, 1, o // self.n_out, 1))
        k = xp.reshape(kernel, (t, i // self.n_in, self.n_in, o // self.n_out, self.n_out))
        return xp.reshape(k * m, tuple(kernel.shape))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class OneByN(Block):
    """N consecutive output channels x 1 input channel x the whole kernel (SUBP's 1xN).

    A *row* is one group of ``n`` output channels and holds ``C_in`` blocks.
    A zero ``OneByN`` block is what the sparse TFLite delegate skips.

    Args:
        n: Output channels per block (positive).
        pad: Allow ``C_out`` not divisible by ``n`` (the last row is narrower).

    Example:
        >>> import tf_sparse_prune as tsp
        >>> tsp.OneByN(16).grid_shape((3, 3, 32, 64))
        (4, 32)
    """

    def __init__(self, n: int, pad: bool = False):
        super().__init__(n_out=_check_positive_int("OneByN", "n", n), n_in=1, pad=pad)

    @property
    def n(self) -> int:
        return self.n_out

    def name(self) -> str:
        return f"1x{self.n}"

    def get_config(self):
        return {"n": self.n, "pad": self.pad}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class OutputChannel(Structure):
    """One output channel (a whole filter) is one unit; the masking form of channel pruning.

    Example:
        >>> import tf_sparse_prune as tsp
        >>> tsp.OutputChannel().grid_shape((3, 3, 16, 32))
        (32,)
    """

    def name(self) -> str:
        return "channel"

    def grid_shape(self, kernel_shape, depthwise=False):
        return (canonical_shape(kernel_shape, depthwise)[2],)

    def row_ids(self, kernel_shape, depthwise=False):
        return np.zeros(self.grid_shape(kernel_shape, depthwise), np.int32)  # one row: the layer

    def to_blocks(self, kernel, depthwise=False):
        xp = _xp(kernel)
        t, i, o = canonical_shape(kernel.shape, depthwise)
        return xp.transpose(xp.reshape(kernel, (t * i, o)), (1, 0))

    def expand(self, block_mask, kernel_shape, depthwise=False):
        xp = _xp(block_mask)
        _t, _i, o = canon = canonical_shape(kernel_shape, depthwise)
        m = xp.broadcast_to(xp.reshape(block_mask, (1, 1, o)), canon)
        return xp.reshape(m, tuple(int(d) for d in kernel_shape))

    def apply(self, kernel, block_mask, depthwise=False):
        xp = _xp(kernel)
        canon = canonical_shape(kernel.shape, depthwise)
        k = xp.reshape(kernel, canon) * xp.reshape(_like(block_mask, kernel), (1, 1, canon[2]))
        return xp.reshape(k, tuple(kernel.shape))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class NM(Structure):
    """N:M sparsity: keep ``n`` of every ``m`` consecutive weights along ``C_in``.

    The unit is one weight; the constraint is per group of ``m`` input channels
    (for each tap and output channel), the layout sparse tensor cores and N:M
    kernels expect. The final sparsity is fixed at ``1 - n/m``; a ramp
    (a schedule's intermediate sparsity ``s``) keeps ``m - round(s*m)`` per group,
    never fewer than ``n``.

    Args:
        n: Weights kept per group (``0 < n < m``).
        m: Group size along input channels.

    Example:
        >>> import tf_sparse_prune as tsp
        >>> tsp.NM(2, 4).fixed_sparsity()
        0.5
    """

    supports_global = False

    def __init__(self, n: int, m: int):
        self.n = _check_positive_int("NM", "n", n)
        self.m = _check_positive_int("NM", "m", m)
        if self.n >= self.m:
            raise ValueError(f"NM: n={n} must be smaller than m={m} (keep n of every m weights)")

    def name(self) -> str:
        return f"{self.n}:{self.m}"

    def get_config(self):
        return {"n": self.n, "m": self.m}

    def fixed_sparsity(self) -> float:
        return 1.0 - self.n / self.m

    def _padded(self, canon):
        _t, i, _o = canon
        if i % self.m or i < self.m:
            raise StructureError(
                f"{self.name()} groups {self.m} consecutive input channels, so C_in must be a "
                f"multiple of {self.m}, got {i}"
            )
        return canon

    def grid_shape(self, kernel_shape, depthwise=False):
        t, i, o = self._padded(canonical_shape(kernel_shape, depthwise))
        return (t, i // self.m, o, self.m)

    def to_blocks(self, kernel, depthwise=False):
        xp = _xp(kernel)
        t, i, o = self._padded(canonical_shape(kernel.shape, depthwise))
        k = xp.reshape(kernel, (t, i // self.m, self.m, o))
        return xp.expand_dims(xp.transpose(k, (0, 1, 3, 2)), -1)

    def expand(self, block_mask, kernel_shape, depthwise=False):
        xp = _xp(block_mask)
        _t, _i, _o = self._padded(canonical_shape(kernel_shape, depthwise))
        m = xp.transpose(block_mask, (0, 1, 3, 2))  # t, groups, m, o
        return xp.reshape(m, tuple(int(d) for d in kernel_shape))

    def block_sizes(self, kernel_shape, depthwise=False):
        return np.ones(self.grid_shape(kernel_shape, depthwise), np.float32)

    def row_ids(self, kernel_shape, depthwise=False):
        return None  # every group keeps n >= 1 weights by construction

    def select(self, scores, sparsity, sizes=None, protected=None):
        if tf.is_tensor(scores):
            drop = tf.cast(tf.round(tf.cast(sparsity, tf.float64) * self.m), tf.int32)
            drop = tf.minimum(self.m - self.n, drop)
            rank = tf.argsort(tf.argsort(scores, axis=-1, stable=True), axis=-1, stable=True)
            return tf.cast(rank >= drop, tf.float32)
        scores = np.asarray(scores, np.float64)
        drop = min(self.m - self.n, round(sparsity * self.m))
        mask = np.ones(scores.shape, np.float32)
        if drop <= 0:
            return mask
        order = np.argsort(scores, axis=-1, kind="stable")
        np.put_along_axis(mask, order[..., :drop], 0.0, axis=-1)
        return mask
