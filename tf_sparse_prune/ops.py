"""Differentiable operators: ``soft_topk``, the differentiable top-k of SMART (SPEC §3).

For scores ``x`` (last axis, ``n`` entries), a target ``k`` and a temperature
``tau > 0``::

    f_tau(x)_i = sigmoid((x_i + t) / tau),   t the root of  sum_i s_i f_i = k

with block sizes ``s`` (all 1 unless ``sizes`` is given; then ``k`` counts
*weights*: the size-weighted form, our choice for blocks of unequal sizes).

Forward: ``t`` is found in float64 by a safeguarded Newton iteration on the
bracket ``[-max(x) - 20 tau, -min(x) + 20 tau]`` (the sum is increasing in ``t``
with slope ``sum s f (1 - f) / tau``; a Newton step that leaves the shrinking
bracket, or shrinks it less than half as fast as bisection would, is replaced by
a bisection step), each row stopping once its weighted sum is within
``tolerance * k`` of ``k`` (``1e-4``), at most 60 steps. Newton needs a handful
of steps where bisection needs 20-30 (N:M masks solve one row per group of every
step). The loop has a
fixed trip bound (a ``tf.while_loop`` with ``maximum_iterations``), so the op
runs eagerly, in graph mode and under ``jit_compile=True`` (XLA); it is tested in
all three.

Backward (Prop. 2.2, closed form, O(n) memory): with ``v_i = f_i (1 - f_i) / tau``
and ``g = dL/df``::

    dL/dx_j = v_j (g_j - s_j * sum_i g_i v_i / sum_i s_i v_i)

When every entry is saturated (``sum s v = 0``) the gradient is exactly zero.
``k <= 0`` gives exact zeros and ``k >= sum(s)`` exact ones (zero gradient);
``f`` is never NaN or inf, for ties, equal scores, tiny temperatures and huge or
tiny scores. ``k`` and ``temperature`` get no gradient. Limit of the fixed step
budget: the sum meets ``k`` to the tolerance whenever the score spread
``max - min`` is below about ``1e15 * tau`` (60 halvings of the bracket, the
worst case of the safeguard); wider
spreads (e.g. scores of 1e300) still give finite values in [0, 1], with a sum
that may miss ``k``. SMART's scores live in ``[-10, 10]`` and ``tau >= 1e-6``.

Leading axes are independent rows (N:M groups): ``k`` is a scalar or one value per row.

Example:
    >>> import numpy as np
    >>> from tf_sparse_prune.ops import soft_topk
    >>> f = soft_topk(np.array([3.0, 1.0, 2.0, 0.0]), k=2, temperature=0.01)
    >>> np.round(f.numpy(), 3)
    array([1., 0., 1., 0.])
    >>> round(float(np.sum(soft_topk(np.array([3.0, 1.0, 2.0, 0.0]), 2, 10.0))), 3)
    2.0
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

__all__ = ["MAX_STEPS", "TOLERANCE", "soft_topk", "soft_topk_threshold"]

#: solver steps at most
MAX_STEPS = 60
#: a row stops once ``|sum s f - k| <= TOLERANCE * k``
TOLERANCE = 1e-4
#: half-width margin of the bracket, in temperatures
_MARGIN = 20.0


def _check_temperature(temperature: Any) -> None:
    if isinstance(temperature, (int, float, np.floating, np.integer)) and not temperature > 0:
        raise ValueError(f"soft_topk: temperature={temperature!r} is invalid; it must be > 0")


def _prepare(x, k, temperature, sizes):
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        x = tf.cast(x, tf.float32)
    if x.shape.rank is not None and x.shape.rank == 0:
        raise ValueError("soft_topk: x must have at least one axis (the scores), got a scalar")
    _check_temperature(temperature)
    x64 = tf.cast(x, tf.float64)
    k64 = tf.cast(tf.convert_to_tensor(k), tf.float64)
    tau = tf.cast(tf.convert_to_tensor(temperature), tf.float64)
    if sizes is None:
        s64 = tf.ones_like(x64)
    else:
        s64 = tf.broadcast_to(tf.cast(tf.convert_to_tensor(sizes), tf.float64), tf.shape(x64))
    k64 = tf.broadcast_to(k64, tf.shape(x64)[:-1])
    return x, x64, k64, tau, s64


#: rows of at most this many unit-size entries start from the sorted-scores guess
_SORT_START = 32


def _solve_threshold(
    x64, k64, tau, s64, tolerance: float, max_steps: int, unit_sizes: bool = False
):
    """Per-row threshold ``t`` (float64, shape ``x.shape[:-1]``): safeguarded Newton.

    Short rows of unit-size entries (N:M groups) start halfway between the k-th and the
    (k+1)-th largest score, where the hard top-k threshold lies (one step when the two
    are many temperatures apart); other rows start at the bracket's middle.
    """
    lo = -tf.reduce_max(x64, axis=-1) - _MARGIN * tau
    hi = -tf.reduce_min(x64, axis=-1) + _MARGIN * tau
    tol = tolerance * tf.abs(k64)
    n = x64.shape[-1]
    t0 = 0.5 * lo + 0.5 * hi
    if unit_sizes and n is not None and 1 < n <= _SORT_START:
        xs = tf.sort(x64, axis=-1, direction="DESCENDING")
        i = tf.clip_by_value(tf.cast(tf.math.ceil(k64), tf.int32) - 1, 0, n - 1)
        a = tf.experimental.numpy.take_along_axis(xs, i[..., None], axis=-1)[..., 0]
        b = tf.experimental.numpy.take_along_axis(xs, tf.minimum(i + 1, n - 1)[..., None], axis=-1)[
            ..., 0
        ]
        t0 = tf.clip_by_value(-(0.5 * a + 0.5 * b), lo, hi)

    def body(i, lo, hi, t, width, done):
        f = tf.sigmoid((x64 + t[..., None]) / tau)
        total = tf.reduce_sum(s64 * f, axis=-1)
        slope = tf.reduce_sum(s64 * f * (1.0 - f), axis=-1) / tau
        ok = done | (tf.abs(total - k64) <= tol)
        below = total < k64  # the root is above t
        lo = tf.where(ok | ~below, lo, t)
        hi = tf.where(ok | below, hi, t)
        mid = 0.5 * lo + 0.5 * hi  # no overflow for huge brackets
        newton = t - tf.math.divide_no_nan(total - k64, slope)
        # Newton only strictly inside the bracket and shrinking it at least as fast as
        # bisection would over two steps (the previous bracket width halves)
        use = (slope > 0) & (newton > lo) & (newton < hi) & (tf.abs(newton - t) < 0.5 * width)
        step = tf.where(use, newton, mid)
        new_width = tf.where(use, tf.abs(newton - t), 0.5 * (hi - lo))
        return (
            i + 1,
            lo,
            hi,
            tf.where(ok, t, step),
            tf.where(ok, width, new_width),
            ok,
        )

    def cond(i, lo, hi, t, width, done):
        return tf.logical_not(tf.reduce_all(done))

    done0 = tf.zeros_like(k64, dtype=tf.bool)
    _, _, _, t, _, _ = tf.while_loop(
        cond,
        body,
        (tf.constant(0), lo, hi, t0, hi - lo, done0),
        maximum_iterations=max_steps,
    )
    return t


def soft_topk_threshold(
    x: Any,
    k: Any,
    temperature: Any,
    sizes: Any | None = None,
    tolerance: float = TOLERANCE,
    max_steps: int = MAX_STEPS,
) -> tf.Tensor:
    """The float64 threshold ``t`` of :func:`soft_topk` (one per row).

    Example:
        >>> from tf_sparse_prune.ops import soft_topk_threshold
        >>> round(float(soft_topk_threshold([1.0, 1.0], 1, 0.5)), 6)   # sigmoid(0) = 1/2
        -1.0
    """
    _, x64, k64, tau, s64 = _prepare(x, k, temperature, sizes)
    return _solve_threshold(x64, k64, tau, s64, tolerance, max_steps, unit_sizes=sizes is None)


def soft_topk(
    x: Any,
    k: Any,
    temperature: Any,
    sizes: Any | None = None,
    tolerance: float = TOLERANCE,
    max_steps: int = MAX_STEPS,
) -> tf.Tensor:
    """Differentiable top-k: ``sigmoid((x + t) / temperature)`` with ``sum(sizes * f) = k``.

    Args:
        x: Scores, ``(..., n)`` (a tensor or numpy array); leading axes are rows.
        k: What to keep per row: a count of entries, or of weights when ``sizes`` is
            given. A scalar or an array of shape ``x.shape[:-1]``.
        temperature: ``tau > 0`` (a number or scalar tensor); smaller is harder.
        sizes: Optional positive weight of each entry (block sizes), broadcastable to ``x``.
        tolerance: The solver stops once ``|sum s f - k| <= tolerance * k``.
        max_steps: Solver steps at most.

    Returns:
        ``f`` with the shape and (floating) dtype of ``x``, values in [0, 1].

    Raises:
        ValueError: for a Python ``temperature <= 0`` or a scalar ``x``.

    Example:
        >>> import numpy as np, tensorflow as tf
        >>> from tf_sparse_prune.ops import soft_topk
        >>> x = tf.constant([[0.5, 0.1, 0.9, 0.3]])             # one N:M group, keep 2
        >>> with tf.GradientTape() as tape:
        ...     tape.watch(x)
        ...     f = soft_topk(x, 2, 0.1)
        ...     loss = tf.reduce_sum(f * [1.0, 0.0, 0.0, 0.0])
        >>> g = tape.gradient(loss, x)
        >>> abs(round(float(tf.reduce_sum(g)), 6))              # shifting x changes nothing
        0.0
    """
    x, _, k64, tau, s64 = _prepare(x, k, temperature, sizes)
    out_dtype = x.dtype
    total = tf.reduce_sum(s64, axis=-1)

    @tf.custom_gradient
    def op(x_in):
        xd = tf.cast(x_in, tf.float64)
        t = _solve_threshold(xd, k64, tau, s64, tolerance, max_steps, unit_sizes=sizes is None)
        f = tf.sigmoid((xd + t[..., None]) / tau)
        empty = (k64 <= 0)[..., None]
        full = (k64 >= total)[..., None]
        f = tf.where(empty, tf.zeros_like(f), tf.where(full, tf.ones_like(f), f))

        def grad(upstream):
            g = tf.cast(upstream, tf.float64)
            v = f * (1.0 - f) / tau
            gv = tf.reduce_sum(g * v, axis=-1, keepdims=True)
            sv = tf.reduce_sum(s64 * v, axis=-1, keepdims=True)
            ratio = tf.math.divide_no_nan(gv, sv)  # sum s v = 0: all saturated -> 0
            dx = v * (g - s64 * ratio)
            return tf.cast(dx, x_in.dtype)

        return tf.cast(f, out_dtype), grad

    return op(x)
