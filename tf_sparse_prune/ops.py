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
a bisection step). A row stops once its weighted sum is within ``tolerance * k`` of
``k`` (``1e-4``) **and** ``t`` is pinned to ``T_TOLERANCE * tau`` (``1e-6``): a
last Newton step of at most ``1e-4 tau`` (taken), or a bracket that narrow; at most 60
steps. The sum alone does not pin ``t``: where the k-th and the (k+1)-th scores are
many temperatures apart it is flat, meets the tolerance over several temperatures of
``t``, and the gradient (which depends on the tails' balance) came out up to 10% off.
The sum is evaluated as the size above ``t`` minus ``k`` plus the sigmoid tails, so
it keeps full relative precision where the tails are far below ``1e-16 * k``.
Newton needs a handful of steps where bisection needs 20-30 (N:M masks solve one row
per group of every step); a staircase sum (many scores per temperature, e.g. 1e5 scores
at ``tau = 1e-6``) takes about 25. The loop has a fixed trip bound (a
``tf.while_loop`` with ``maximum_iterations``), so the op runs eagerly, in graph mode
and under ``jit_compile=True`` (XLA); it is tested in all three.

Backward (Prop. 2.2, closed form, O(n) memory): with ``v_i = f_i (1 - f_i) / tau``
(from ``sigmoid(-|z|)``, the small side, so it keeps its precision where ``f`` is near
1) and ``g = dL/df``::

    dL/dx_j = v_j (g_j - s_j * sum_i g_i v_i / sum_i s_i v_i)

When every entry is saturated (``sum s v = 0``) the gradient is exactly zero.
``0 <= k <= n`` (``n`` the entries per row, or their total size with ``sizes``) is
checked wherever ``k`` is known when the op is built (numbers, arrays, eager
tensors); ``k = 0`` gives exact zeros and ``k = n`` exact ones (zero gradient), as
does a traced ``k`` beyond them. ``f`` is never NaN or inf, for ties, equal scores,
tiny temperatures and huge or tiny scores. ``k`` and ``temperature`` get no gradient.
Limit of the fixed step budget: the sum meets ``k`` to the tolerance whenever the
score spread ``max - min`` is below about ``1e15 * tau`` (60 halvings of the bracket,
the worst case of the safeguard); wider spreads (e.g. scores of 1e300) still give
finite values in [0, 1], with a sum that may miss ``k``. SMART's scores live in
``[-10, 10]`` and ``tau >= 1e-6``.

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

__all__ = ["MAX_STEPS", "TOLERANCE", "T_TOLERANCE", "soft_topk", "soft_topk_threshold"]

#: solver steps at most
MAX_STEPS = 60
#: a row stops once ``|sum s f - k| <= TOLERANCE * k``
TOLERANCE = 1e-4
#: ... and once ``t`` is pinned: within ``T_TOLERANCE * tau`` of the root
T_TOLERANCE = 1e-6
#: a Newton step of at most this many temperatures, once taken, leaves ``t`` within
#: ``step**2 / (2 tau)`` of the root (``|d2 sum / dt2| <= (d sum / dt) / tau`` for sums of
#: sigmoids): 5e-9 tau, well inside ``T_TOLERANCE``
_TAKEN_STEP = 1e-4
#: relative float64 resolution of ``t`` (a few ulps): no step can pin ``t`` more finely
_RESOLUTION = 4.0 * float(np.finfo(np.float64).eps)
#: half-width margin of the bracket, in temperatures
_MARGIN = 20.0


def _check_temperature(temperature: Any) -> None:
    if isinstance(temperature, (int, float, np.floating, np.integer)) and not temperature > 0:
        raise ValueError(f"soft_topk: temperature={temperature!r} is invalid; it must be > 0")


def _static(value: Any) -> np.ndarray | None:
    """``value`` as a float64 array where it is known before running (else ``None``)."""
    if tf.is_tensor(value):
        value = tf.get_static_value(value)
        if value is None:
            return None
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None


def _check_k(k: Any, x: tf.Tensor, sizes: Any | None) -> None:
    """``0 <= k <= n`` per row (``n`` the entries, or their total size), where ``k`` is known.

    A symbolic ``k`` (a placeholder inside ``tf.function``) is not checked: there rows
    with ``k <= 0`` give zeros and ``k >= n`` ones.
    """
    kv = _static(k)
    if kv is None or x.shape.rank is None:
        return
    if sizes is None:
        if x.shape[-1] is None:
            return
        limit = np.float64(x.shape[-1])
        what = "the number of scores per row"
    else:
        sv = _static(sizes)
        if sv is None or not x.shape.is_fully_defined():
            return
        try:
            limit = np.broadcast_to(sv, x.shape).sum(axis=-1)
        except ValueError:
            return  # the shapes disagree: tf.broadcast_to names them
        what = "the total size of the row (the sum of its sizes)"
    try:
        kv, limit = np.broadcast_arrays(kv, limit)
    except ValueError:
        return  # a k of the wrong shape: tf.broadcast_to names the shapes
    bad = ~((kv >= 0.0) & (kv <= limit))  # NaN is refused too
    if np.any(bad):
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        name = f"k[{', '.join(map(str, idx))}]" if idx else "k"
        n = float(limit[idx])
        raise ValueError(
            f"soft_topk: {name}={float(kv[idx])!r} is invalid; it must be in [0, n] with "
            f"n = {int(n) if sizes is None else n!r}, {what}; k = 0 keeps nothing and "
            "k = n everything"
        )


def _prepare(x, k, temperature, sizes):
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        x = tf.cast(x, tf.float32)
    if x.shape.rank is not None and x.shape.rank == 0:
        raise ValueError("soft_topk: x must have at least one axis (the scores), got a scalar")
    _check_temperature(temperature)
    _check_k(k, x, sizes)
    x64 = tf.cast(x, tf.float64)
    k64 = tf.cast(tf.convert_to_tensor(k, dtype_hint=tf.float64), tf.float64)
    tau = tf.cast(tf.convert_to_tensor(temperature, dtype_hint=tf.float64), tf.float64)
    if sizes is None:
        s64 = tf.ones_like(x64)
    else:
        s64 = tf.broadcast_to(
            tf.cast(tf.convert_to_tensor(sizes, dtype_hint=tf.float64), tf.float64), tf.shape(x64)
        )
    k64 = tf.broadcast_to(k64, tf.shape(x64)[:-1])
    return x, x64, k64, tau, s64


#: rows of at most this many unit-size entries start from the sorted-scores guess
_SORT_START = 32


def _residual_and_slope(xs, t, k64, tau, s64, total):
    """``sum s f - k`` and its slope in ``t``, both to full relative precision.

    ``xs = x / tau``; ``s64 = None`` for unit sizes. With ``z = xs + t / tau``,
    ``f = 1 - e`` above the threshold and ``e`` below it, ``e = sigmoid(-|z|)`` the small
    side, so ``sum s f - k = (sum of s above t - k) + (tails below - tails above)``: the
    first term (``(total + sum s sign(z)) / 2``, an entry at ``z = 0`` counting half) is
    exact for integer sizes and ``k``, and the tails keep their own precision. Summing
    ``f`` directly would round the tails to ``1e-16 * k``: where the k-th and the
    (k+1)-th scores are many temperatures apart the tails are that small, the sum looks
    flat and ``t`` could not be placed.
    """
    z = xs + (t / tau)[..., None]
    signed = tf.sign(z)
    e = tf.sigmoid(-tf.abs(z))
    if s64 is not None:
        signed = s64 * signed
    count = 0.5 * (total + tf.reduce_sum(signed, axis=-1))
    tails = tf.reduce_sum(signed * e, axis=-1)
    se = e if s64 is None else s64 * e
    slope = tf.reduce_sum(se - se * e, axis=-1)
    return (count - k64) - tails, slope / tau


def _solve_threshold(
    x64, k64, tau, s64, tolerance: float, max_steps: int, unit_sizes: bool = False, start=None
):
    """Per-row threshold ``t`` (float64, shape ``x.shape[:-1]``): safeguarded Newton.

    A row stops once its sum is within ``tolerance * k`` of ``k`` **and** ``t`` is pinned:
    the Newton step, or the bracket, is below ``T_TOLERANCE * tau`` (or below float64
    resolution of ``t``). The sum alone is not enough: where it is flat in ``t`` (the
    k-th and the (k+1)-th scores many temperatures apart) it meets the tolerance over
    several temperatures of ``t``, and the gradient depends on where ``t`` lies in there.

    Short rows of unit-size entries (N:M groups) start halfway between the k-th and the
    (k+1)-th largest score, where the hard top-k threshold lies; other rows start at the
    bracket's middle, or at ``start`` (clipped to the bracket) when given: a warm start
    from the previous solve, which a slowly changing problem (SMART's per-batch solve)
    leaves a few Newton steps from the root. Rows with ``k <= 0`` (``k >= sum s``) have
    no finite root: they return the bracket's lower (upper) end without iterating.
    """
    lo = -tf.reduce_max(x64, axis=-1) - _MARGIN * tau
    hi = -tf.reduce_min(x64, axis=-1) + _MARGIN * tau
    tol = tolerance * tf.abs(k64)
    n = x64.shape[-1]
    t0 = 0.5 * lo + 0.5 * hi
    if unit_sizes and n is not None and 1 < n <= _SORT_START:
        ordered = tf.sort(x64, axis=-1, direction="DESCENDING")
        i = tf.clip_by_value(tf.cast(tf.math.ceil(k64), tf.int32) - 1, 0, n - 1)
        a = tf.experimental.numpy.take_along_axis(ordered, i[..., None], axis=-1)[..., 0]
        b = tf.experimental.numpy.take_along_axis(
            ordered, tf.minimum(i + 1, n - 1)[..., None], axis=-1
        )[..., 0]
        t0 = tf.clip_by_value(-(0.5 * a + 0.5 * b), lo, hi)
    if start is not None:
        t0 = tf.clip_by_value(tf.broadcast_to(tf.cast(start, tf.float64), tf.shape(lo)), lo, hi)
    total = tf.reduce_sum(s64, axis=-1)
    empty = k64 <= 0.0
    full = k64 >= total
    xs = x64 / tau
    sizes = None if unit_sizes else s64
    t0 = tf.where(empty, lo, tf.where(full, hi, t0))

    def body(i, lo, hi, t, width, done):
        res, slope = _residual_and_slope(xs, t, k64, tau, sizes, total)
        below = res < 0.0  # the root is above t
        lo = tf.where(done | ~below, lo, t)
        hi = tf.where(done | below, hi, t)
        newton = t - tf.math.divide_no_nan(res, slope)
        # Newton only strictly inside the bracket and shrinking it at least as fast as
        # bisection would over two steps (the previous bracket width halves)
        use = (slope > 0) & (newton > lo) & (newton < hi) & (tf.abs(newton - t) < 0.5 * width)
        # t is pinned once the bracket is narrower than T_TOLERANCE * tau, or once a
        # Newton step of at most _TAKEN_STEP * tau is taken (below); an exactly flat sum
        # that meets k (every entry saturated) pins t anywhere: f and the (zero)
        # gradient do not depend on t there
        resolution = _RESOLUTION * tf.abs(t)
        move = tf.abs(newton - t)
        pinned = (
            (use & (move <= _TAKEN_STEP * tau + resolution))
            | ((slope > 0.0) & (move <= T_TOLERANCE * tau + resolution))
            | ((slope <= 0.0) & tf.equal(res, 0.0))
            | (hi - lo <= T_TOLERANCE * tau + resolution)
        )
        ok = done | ((tf.abs(res) <= tol) & pinned)
        mid = 0.5 * lo + 0.5 * hi  # no overflow for huge brackets
        # a row that stops still takes its last (safe) Newton step
        step = tf.where(use, newton, tf.where(ok, t, mid))
        new_width = tf.where(use, move, 0.5 * (hi - lo))
        return (
            i + 1,
            lo,
            hi,
            tf.where(done, t, step),
            tf.where(ok, width, new_width),
            ok,
        )

    def cond(i, lo, hi, t, width, done):
        return tf.logical_not(tf.reduce_all(done))

    _, _, _, t, _, _ = tf.while_loop(
        cond,
        body,
        (tf.constant(0), lo, hi, t0, hi - lo, empty | full),
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
    start: Any | None = None,
) -> tf.Tensor:
    """The float64 threshold ``t`` of :func:`soft_topk` (one per row).

    ``t`` lies within ``T_TOLERANCE * temperature`` of the root (arguments and checks as
    :func:`soft_topk`). ``k = 0`` and ``k = n`` have no finite root: ``t`` is then the
    bracket's end, ``-max(x) - 20 tau`` or ``-min(x) + 20 tau``. ``start`` is an optional
    first guess of ``t`` (e.g. the previous solve's): the same root, in fewer steps when
    the guess is close.

    Example:
        >>> from tf_sparse_prune.ops import soft_topk_threshold
        >>> round(float(soft_topk_threshold([1.0, 1.0], 1, 0.5)), 6)   # sigmoid(0) = 1/2
        -1.0
    """
    _, x64, k64, tau, s64 = _prepare(x, k, temperature, sizes)
    return _solve_threshold(
        x64, k64, tau, s64, tolerance, max_steps, unit_sizes=sizes is None, start=start
    )


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
            given; ``0 <= k <= n`` (``n`` the entries per row, or their total size).
            A scalar or an array of shape ``x.shape[:-1]``.
        temperature: ``tau > 0`` (a number or scalar tensor); smaller is harder.
        sizes: Optional positive weight of each entry (block sizes), broadcastable to ``x``.
        tolerance: The solver stops once ``|sum s f - k| <= tolerance * k`` and ``t``
            is pinned to ``T_TOLERANCE * temperature``.
        max_steps: Solver steps at most.

    Returns:
        ``f`` with the shape and (floating) dtype of ``x``, values in [0, 1].

    Raises:
        ValueError: for a Python ``temperature <= 0``, a scalar ``x``, or a known ``k``
            (number, array or eager tensor) outside ``[0, n]``.

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
        z = (xd + t[..., None]) / tau
        f = tf.sigmoid(z)
        fixed = ((k64 <= 0) | (k64 >= total))[..., None]
        f = tf.where((k64 <= 0)[..., None], tf.zeros_like(f), tf.where(fixed, tf.ones_like(f), f))

        def grad(upstream):
            g = tf.cast(upstream, tf.float64)
            # f (1 - f) from the small side sigmoid(-|z|): 1 - f would keep only the
            # absolute precision of f (1e-16) where f is near 1
            e = tf.sigmoid(-tf.abs(z))
            v = tf.where(fixed, tf.zeros_like(e), e * (1.0 - e) / tau)
            gv = tf.reduce_sum(g * v, axis=-1, keepdims=True)
            sv = tf.reduce_sum(s64 * v, axis=-1, keepdims=True)
            ratio = tf.math.divide_no_nan(gv, sv)  # sum s v = 0: all saturated -> 0
            dx = v * (g - s64 * ratio)
            return tf.cast(dx, x_in.dtype)

        return tf.cast(f, out_dtype), grad

    return op(x)
