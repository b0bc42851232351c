"""OCSPruner: one-cycle structured channel pruning with a stability-driven search (SPEC §6).

Ghimire et al., "One-cycle Structured Pruning with Stability Driven Structure Search". One
``fit`` trains the dense model, searches the sub-network, removes the prune set physically
and trains the smaller model to the end. The pieces, each a small function of this module:

* :func:`group_saliency` (Eq. 2). The saliency unit is **one channel of a channel group** of
  the :class:`~tf_sparse_prune.graph.DependencyGraph`. For channel ``k`` of group ``g``, the
  parameter sets ``w`` are, for every *trainable* weight slice of the group (a producer's
  filter and bias, BatchNorm ``gamma`` and ``beta``, a depthwise kernel's channel, every
  consumer's input rows), the entries of that weight at channel ``k``'s positions on the
  slice's axis (all other axes whole). ``S = (1/|g|) sum_w ||w||_2 / sqrt(|w|)`` with
  ``|g|`` the number of those sets that hold channel ``k``. BatchNorm moving statistics are
  buffers, not parameters, and are left out.
* :func:`partition`: all prunable channels ranked globally by saliency (ties: group id,
  then channel); a binary search over the length of the ranked prefix finds the shortest
  prefix whose removal brings ``graph.flops_after`` to ``(1 - alpha)`` of the model's FLOPs.
  No group loses more than ``floor(max_layer_prune * size)`` channels (its lowest-saliency
  ones) nor all of them, and neither does any layer's share of a group (a ``Concatenate``
  source whose channels meet an ``Add`` holds only part of its group).
* :func:`jaccard` (Eq. 3), :func:`stability` (Eq. 4), :func:`auto_start` (Eq. 5).
  A sub-network ``M`` is ``{group id: kept channels}`` over the prunable groups.
* :func:`penalty` (Eq. 7), and the regulariser of Eq. 8-9 applied by :class:`OCSCallback`.

Epochs (Algorithm 1, counted as Keras counts them, from 0). ``M_t`` is the partition of the
weights at the **end** of epoch ``t``. ``t_sl`` (``t_sl-start``) is the epoch at whose end
the sparsity-learning stage is entered: the first ``t`` of Eq. 5, or ``start_epoch``. The
epochs ``t > t_sl`` train with the growing regulariser ``lambda_t`` on the prune set of
``M_{t-1}``. ``t*`` is the first ``t > t_sl`` with ``J_avg^t >= 1 - epsilon`` (or
``last_search_epoch``); ``M_{t*}`` is removed and training continues on the smaller model
from epoch ``t* + 1``.

How the regulariser is applied (our choice; the model is the user's plain Keras model, so no
term can be added to its compiled loss). After every optimizer step of an epoch ``t > t_sl``,
with ``eta`` the optimizer's learning rate (read after the step), each trainable weight ``V``
that holds a slice of the prune set is updated in place:

* Eq. 8, the loss term ``lambda_t sum_{g in prune} sum_{w in g} ||w||_2``: its gradient
  ``lambda_t w / ||w||_2`` is applied as a decoupled step ``w <- w - eta lambda_t w / ||w||_2``
  (summed where an entry lies in two sets, e.g. a filter of a pruned channel that also reads
  a pruned input channel), clipped so that no entry changes sign (for non-overlapping sets,
  this is the exact proximal step of the group lasso ``w <- w max(0, 1 - eta lambda_t/||w||)``).
  With plain SGD this is the same update as adding the term to the loss, up to evaluating
  its gradient after the data step instead of before; with momentum or Adam it is
  *decoupled* from the optimizer's momentum and scaling (as AdamW decouples weight decay).
  The logged loss does not include the term; ``ocs_group_norm`` logs its sum of norms.
* Eq. 9, the multiplicative shrink: every entry of the prune set's slices is multiplied by
  ``(1 - lambda_t eta)``, once per step (once per entry, also where two sets overlap).

Search state (the sub-networks, ``J_avg``, ``t_sl``, ``t*``) lives in the callback and is
returned by :meth:`OCSPruner.fit`; the model stays a plain Keras model.

Example:
    >>> from tf_sparse_prune.algorithms.ocspruner import jaccard, penalty
    >>> a = {0: {0, 1, 2}, 1: {0, 1}}
    >>> b = {0: {0, 1, 3}, 1: {0, 1}}
    >>> jaccard(a, b)   # (2/4 + 2/2) / 2
    0.75
    >>> [round(penalty(t, 3, 1e-4, 1e-4, 1), 6) for t in range(2, 7)]
    [0.0, 0.0001, 0.0002, 0.0004, 0.0007]
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import keras
import numpy as np

from tf_sparse_prune.graph import DependencyGraph, count_flops, count_params, remove_channels
from tf_sparse_prune.graph._walk import check_graph_model

__all__ = [
    "OCSCallback",
    "OCSPruner",
    "auto_start",
    "group_norm",
    "group_saliency",
    "jaccard",
    "kept_channels",
    "max_removal",
    "partition",
    "penalty",
    "stability",
]

SubNetwork = Mapping[int, "set[int] | frozenset[int]"]
Removal = dict[int, list[int]]


# ------------------------------------------------------------------------------ weights


def _variable(model: keras.Model, path: str, weight: str):
    """The variable ``weight`` of the layer at ``path`` (``"nested/layer"`` for nested models)."""
    layer = model
    for part in path.split("/"):
        layer = layer.get_layer(part)
    for var in layer.weights:
        if var.name == weight:
            return var
    raise KeyError(f"layer {path!r} has no weight {weight!r}")  # pragma: no cover


class _Slice:
    """One trainable weight slice of a group, with index arrays for vectorized reductions."""

    def __init__(self, model: keras.Model, group, s) -> None:
        self.group = group.id
        self.var = _variable(model, s.layer, s.weight)
        self.axis = s.axis
        shape = tuple(int(d) for d in self.var.shape)
        self.length = shape[s.axis]
        self.per_position = math.prod(shape) // max(self.length, 1)
        # position -> channel of the group (-1: another group's position)
        self.channel_of = np.full(self.length, -1, np.int64)
        for k, positions in enumerate(s.positions):
            self.channel_of[list(positions)] = k
        self.counts = np.bincount(
            self.channel_of[self.channel_of >= 0], minlength=group.size
        ) * int(self.per_position)
        self.broadcast = [1] * len(shape)
        self.broadcast[s.axis] = self.length

    def channel_sumsq(self, value: np.ndarray) -> np.ndarray:
        """Sum of squares of each group channel's entries in this slice."""
        other = tuple(a for a in range(value.ndim) if a != self.axis)
        sq = np.sum(np.square(value, dtype=np.float64), axis=other)
        valid = self.channel_of >= 0
        return np.bincount(self.channel_of[valid], weights=sq[valid], minlength=len(self.counts))


def _slices(model: keras.Model, graph: DependencyGraph) -> list[_Slice]:
    return [
        _Slice(model, g, s)
        for g in graph.prunable_groups
        for s in g.slices
        if _variable(model, s.layer, s.weight).trainable
    ]


def group_saliency(model: keras.Model, graph: DependencyGraph) -> dict[int, np.ndarray]:
    """Eq. 2 for every channel of every prunable group (see the module docstring for ``w``).

    Args:
        model: The model whose weights to score (the one ``graph`` was built for).
        graph: Its :class:`~tf_sparse_prune.graph.DependencyGraph`.

    Returns:
        ``{group id: float64 array of one saliency per channel}``.

    Example:
        >>> import keras, numpy as np
        >>> from tf_sparse_prune.graph import DependencyGraph
        >>> inputs = keras.Input((4,))
        >>> hidden = keras.layers.Dense(2, use_bias=False, name="a")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(1, use_bias=False, name="b")(hidden))
        >>> model.get_layer("a").set_weights([np.array([[1.0, 0], [1, 0], [1, 0], [1, 2]])])
        >>> model.get_layer("b").set_weights([np.array([[3.0], [1.0]])])
        >>> graph = DependencyGraph(model)
        >>> group_saliency(model, graph)[graph.group_of("a").id]  # ((2/2 + 3/1) / 2, (2/2 + 1) / 2)
        array([2., 1.])
    """
    return _saliency(_slices(model, graph), graph)


def _saliency(slices: Sequence[_Slice], graph: DependencyGraph) -> dict[int, np.ndarray]:
    total = {g.id: np.zeros(g.size) for g in graph.prunable_groups}
    sets = {g.id: np.zeros(g.size) for g in graph.prunable_groups}
    for s in slices:
        norms = np.sqrt(s.channel_sumsq(s.var.numpy()))
        held = s.counts > 0
        total[s.group][held] += norms[held] / np.sqrt(s.counts[held])
        sets[s.group] += held
    return {gid: total[gid] / np.maximum(sets[gid], 1) for gid in total}


# ------------------------------------------------------------------------------ partition


def _cap(size: int, max_layer_prune: float) -> int:
    return max(0, min(size - 1, math.floor(max_layer_prune * size + 1e-9)))


class _Caps:
    """The most channels each layer may lose, checked while a removal grows channel by channel.

    Per prunable group, one cap per *channel set*: the whole group, and the channels that each
    of its weight slices holds. Most slices hold every channel of their group, but where a
    ``Concatenate`` feeds an ``Add`` the group spans several source layers, each holding only
    its own channels; capping the group alone could empty one of them (``remove_channels``
    then refuses). A set of ``n`` channels loses at most ``min(n - 1, floor(cap * n))``.
    """

    def __init__(self, graph: DependencyGraph, max_layer_prune: float) -> None:
        self.caps: dict[int, list[int]] = {}
        self.sets_of: dict[int, list[list[int]]] = {}  # group -> channel -> its set indices
        for g in graph.prunable_groups:
            sets = {tuple(range(g.size)): None}  # dict: ordered, without duplicates
            for s in g.slices:
                held = tuple(k for k, positions in enumerate(s.positions) if positions)
                sets.setdefault(held, None)
            sets.pop((), None)
            self.caps[g.id] = [_cap(len(held), max_layer_prune) for held in sets]
            members: list[list[int]] = [[] for _ in range(g.size)]
            for i, held in enumerate(sets):
                for k in held:
                    members[k].append(i)
            self.sets_of[g.id] = members

    def removal(self, order: Iterable[tuple[int, int]]) -> Removal:
        """Takes each ``(group id, channel)`` of ``order`` that no cap forbids yet."""
        lost = {gid: [0] * len(caps) for gid, caps in self.caps.items()}
        out: Removal = {}
        for gid, k in order:
            sets, count, caps = self.sets_of[gid][k], lost[gid], self.caps[gid]
            if all(count[i] < caps[i] for i in sets):
                for i in sets:
                    count[i] += 1
                out.setdefault(gid, []).append(k)
        return {gid: sorted(ks) for gid, ks in out.items()}


def max_removal(graph: DependencyGraph, max_layer_prune: float) -> Removal:
    """The largest removal the caps allow: channels taken in index order while every cap holds.

    Where every slice of a group holds all its channels, this is each group at its cap; where
    a group spans the source layers of a ``Concatenate``, each source loses at most its own
    cap (and keeps at least one channel). While the layers' channel sets nest (disjoint
    sources inside their group) every maximal removal loses the same number of channels from
    each source, so this one is the largest; where two concatenations cut a group at
    different offsets, the sets cross and a greedy order may fall short of the largest.

    Example:
        >>> from tf_sparse_prune.graph import DependencyGraph
        >>> from tf_sparse_prune.models import fashion_cnn
        >>> graph = DependencyGraph(fashion_cnn())
        >>> removal = max_removal(graph, 0.75)
        >>> all(len(removal[g.id]) == 3 * g.size // 4 for g in graph.prunable_groups)
        True
    """
    order = [(g.id, k) for g in graph.prunable_groups for k in range(g.size)]
    return _Caps(graph, max_layer_prune).removal(order)


def _check_unit(owner: str, name: str, value: object, closed: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and float(value) > 0.0 and (float(value) <= 1.0 if closed else float(value) < 1.0)
    if not ok:
        interval = "(0, 1]" if closed else "(0, 1)"
        raise ValueError(f"{owner}: {name}={value!r} is outside {interval}")
    return float(value)


def partition(
    saliency: Mapping[int, np.ndarray],
    graph: DependencyGraph,
    target: float,
    max_layer_prune: float = 0.75,
) -> Removal:
    """The prune set that reaches a FLOPs reduction of ``target`` (global ranking, SPEC §6).

    Channels of all prunable groups are ranked by saliency, lowest first (ties: group id,
    then channel). The removal of a ranked prefix takes the prefix's channels in rank order,
    skipping any that would exceed a cap: a group loses at most
    ``min(size - 1, floor(max_layer_prune * size))`` channels, and so does the part of the
    group that any one weight slice holds (with ``size`` the channels it holds: the source
    layers of a ``Concatenate`` that meets an ``Add``, say). A binary search finds the
    shortest prefix with
    ``graph.flops_after(removal) <= (1 - target) * graph.flops_after({})`` (FLOPs only fall
    as the prefix grows, so the threshold found is the lowest that meets the target).

    Args:
        saliency: ``{group id: per-channel saliency}`` (:func:`group_saliency`).
        graph: The model's dependency graph.
        target: ``alpha``, the FLOPs reduction to reach, in (0, 1).
        max_layer_prune: The largest fraction of the channels of any one group, and of any
            one layer's share of a group, to remove.

    Returns:
        ``{group id: sorted channel indices to remove}`` (groups losing nothing are absent).

    Raises:
        ValueError: if ``target`` cannot be reached under ``max_layer_prune``; the message
            gives the largest reachable reduction.

    Example:
        >>> import numpy as np
        >>> from tf_sparse_prune.graph import DependencyGraph
        >>> from tf_sparse_prune.models import fashion_cnn
        >>> graph = DependencyGraph(fashion_cnn())
        >>> rng = np.random.default_rng(0)
        >>> saliency = {g.id: rng.random(g.size) for g in graph.prunable_groups}
        >>> removal = partition(saliency, graph, 0.5)
        >>> graph.flops_after(removal) <= 0.5 * graph.flops_after({})
        True
    """
    target = _check_unit("partition", "target", target)
    max_layer_prune = _check_unit("partition", "max_layer_prune", max_layer_prune, closed=True)
    full = graph.flops_after({})
    goal = (1.0 - target) * full
    caps = _Caps(graph, max_layer_prune)
    entries = sorted(
        (float(score), gid, k)
        for gid, scores in saliency.items()
        for k, score in enumerate(np.asarray(scores).tolist())
    )

    def removal_of(n: int) -> Removal:
        return caps.removal((gid, k) for _, gid, k in entries[:n])

    if graph.flops_after(removal_of(len(entries))) > goal:
        best = 1.0 - graph.flops_after(max_removal(graph, max_layer_prune)) / full
        raise ValueError(
            f"OCSPruner: a FLOPs reduction of {target:.4g} cannot be reached with "
            f"max_layer_prune={max_layer_prune} (no group or layer loses more than that "
            f"fraction of its channels, and unprunable groups keep theirs); the largest "
            f"reachable reduction is {best:.4f}. Lower flops_reduction or raise max_layer_prune"
        )
    lo, hi = 0, len(entries)  # flops(removal_of(hi)) <= goal
    while lo < hi:
        mid = (lo + hi) // 2
        if graph.flops_after(removal_of(mid)) <= goal:
            hi = mid
        else:
            lo = mid + 1
    return removal_of(hi)


def kept_channels(removal: Mapping[int, Sequence[int]], graph: DependencyGraph) -> dict:
    """The sub-network ``{group id: frozenset of kept channels}`` over all prunable groups."""
    return {
        g.id: frozenset(range(g.size)) - frozenset(removal.get(g.id, ()))
        for g in graph.prunable_groups
    }


# ------------------------------------------------------------------------------ stability


def jaccard(a: SubNetwork, b: SubNetwork) -> float:
    """Eq. 3: ``(1/L) sum_l |F_a^l & F_b^l| / |F_a^l | F_b^l|`` over the groups ``l``.

    Args:
        a, b: Sub-networks ``{group id: kept channels}`` over the same groups.

    Example:
        >>> jaccard({0: {0, 1}, 1: {2}}, {0: {1, 2}, 1: {2}})   # (1/3 + 1) / 2
        0.6666666666666666
    """
    if set(a) != set(b):
        raise ValueError(
            f"jaccard: the sub-networks cover different groups: {sorted(a)} vs {sorted(b)}"
        )
    if not a:
        return 1.0
    total = 0.0
    for key in a:
        fa, fb = set(a[key]), set(b[key])
        union = len(fa | fb)
        total += len(fa & fb) / union if union else 1.0
    return total / len(a)


def stability(history: Sequence[SubNetwork], lag: int = 2, window: int = 3) -> float | None:
    """Eq. 4 at the last epoch ``t``: ``J_avg^t = (1/r) sum_{k<r} J(M_{t-k-i}, M_{t-k})``.

    Args:
        history: ``M_0 .. M_t``, one sub-network per epoch.
        lag: ``i``, the distance of the compared epochs.
        window: ``r``, how many comparisons are averaged.

    Returns:
        ``J_avg^t``, or ``None`` while ``t < lag + window - 1`` (not enough epochs).

    Example:
        >>> ms = [{0: {0}}, {0: {1}}, {0: {1}}, {0: {1}}]
        >>> stability(ms, lag=1, window=2)   # (J(M2, M3) + J(M1, M2)) / 2
        1.0
        >>> stability(ms, lag=2, window=2)   # (J(M1, M3) + J(M0, M2)) / 2
        0.5
        >>> stability(ms[:2], lag=2, window=1) is None
        True
    """
    t = len(history) - 1
    if t < lag + window - 1:
        return None
    return sum(jaccard(history[t - k - lag], history[t - k]) for k in range(window)) / window


def auto_start(
    j_avg_history: Sequence[float | None], window: int = 3, tau: float = 1e-4
) -> int | None:
    """Eq. 5: ``t_sl-start = min{t : J_avg^t - J_avg^{t-r} <= tau}``.

    Args:
        j_avg_history: ``J_avg^t`` by epoch ``t`` (``None`` where not yet defined).
        window: ``r``.
        tau: The threshold ``tau``.

    Returns:
        The first such ``t`` (both values defined), or ``None``.

    Example:
        >>> auto_start([None, 0.5, 0.8, 0.9, 0.9, 0.9], window=2, tau=0.01)   # 0.9 - 0.9 <= tau
        5
    """
    for t in range(window, len(j_avg_history)):
        now, before = j_avg_history[t], j_avg_history[t - window]
        if now is not None and before is not None and now - before <= tau:
            return t
    return None


def penalty(t: int, t_sl: int | None, initial: float, step: float, interval: int) -> float:
    """Eq. 7: the penalty ``lambda_t`` of epoch ``t``, 0 before sparsity learning.

    The recurrence, exactly as written in the paper and SPEC:
    ``lambda_{t_sl} = initial`` and, for ``t > t_sl``,
    ``lambda_t = lambda_{t-1} + step * floor((t - t_sl) / interval)``, i.e.
    ``lambda_t = initial + step * sum_{u=1}^{t - t_sl} floor(u / interval)`` (the increment
    itself grows, so ``lambda`` grows quadratically; the paper's prose says "increases by
    delta every interval", which the formula does not do; we follow the formula).

    Example:
        >>> [round(penalty(t, 2, 1e-4, 1e-4, 2), 6) for t in range(1, 8)]
        [0.0, 0.0001, 0.0001, 0.0002, 0.0003, 0.0005, 0.0007]
    """
    if t_sl is None or t < t_sl:
        return 0.0
    value = float(initial)
    for u in range(1, t - t_sl + 1):
        value += step * (u // interval)
    return value


# ------------------------------------------------------------------------------ regulariser


class _Regularizer:
    """The Eq. 8-9 update of the prune set after an optimizer step (see the module docstring).

    Built once per model: every trainable slice of a prunable group maps its positions to
    channels with an index vector (a segment sum gives the channel norms, a gather spreads
    them back), so the traced update holds O(positions) constants, not a
    ``(positions, channels)`` matrix per slice (ResNet50's: 0.55 GB, 19 GB while traced);
    slices whose positions are their group's channels in order skip both. The prune set is
    passed as one 0/1 vector per group, so under the TensorFlow backend the whole update is a
    single ``tf.function`` traced once.
    """

    def __init__(
        self,
        slices: Sequence[_Slice],
        removal: Mapping[int, Sequence[int]] | None = None,
        *,
        loss_term: bool = True,
        shrink: bool = True,
    ) -> None:
        self.slices = list(slices)
        # the Table 6 ablation: each part of the update can be switched off
        self._loss_weight = np.float32(1.0 if loss_term else 0.0)
        self._shrink_weight = np.float32(1.0 if shrink else 0.0)
        self.groups = sorted({s.group for s in slices})
        self.sizes = {s.group: len(s.counts) for s in slices}
        by_var: dict[int, tuple[Any, list]] = {}
        for s in self.slices:
            size = len(s.counts)
            if s.length == size and np.array_equal(s.channel_of, np.arange(size)):
                ids = None  # position k is channel k
            else:  # positions of other groups go to an extra segment, dropped after the sum
                ids = np.where(s.channel_of >= 0, s.channel_of, size).astype("int32")
            by_var.setdefault(id(s.var), (s.var, []))[1].append((s, ids))
        self.items = list(by_var.values())
        self._pruned = [np.zeros(self.sizes[g], "float32") for g in self.groups]
        self._update = self._step
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            self._update = tf.function(self._step, autograph=False)
        if removal is not None:
            self.set_removal(removal)

    def set_removal(self, removal: Mapping[int, Sequence[int]]) -> None:
        """The prune set the next steps regularise."""
        self._removal = {gid: list(ks) for gid, ks in removal.items()}
        self._pruned = []
        for g in self.groups:
            mask = np.zeros(self.sizes[g], "float32")
            mask[self._removal.get(g, [])] = 1.0
            self._pruned.append(mask)

    def _step(self, eta, pruned):
        ops = keras.ops
        by_group = dict(zip(self.groups, pruned, strict=True))
        for var, parts in self.items:
            value = var.value
            scale = ops.zeros_like(value)
            covered = ops.zeros_like(value)
            for s, ids in parts:
                mask = by_group[s.group]
                other = [a for a in range(len(var.shape)) if a != s.axis]
                sq = ops.sum(ops.square(value), axis=other)
                size = len(s.counts)
                if ids is not None:
                    sq = ops.segment_sum(sq, ids, num_segments=size + 1)[:size]
                norms = ops.sqrt(sq)
                inv = ops.where(norms > 0, 1.0 / ops.maximum(norms, 1e-30), 0.0) * mask
                on = mask
                if ids is not None:  # back to positions; the extra segment gets 0
                    zero = ops.zeros((1,), inv.dtype)
                    inv = ops.take(ops.concatenate([inv, zero]), ids)
                    on = ops.take(ops.concatenate([mask, zero]), ids)
                scale = scale + ops.reshape(inv, s.broadcast)
                covered = ops.maximum(covered, ops.reshape(on, s.broadcast))
            factor = ops.maximum(0.0, 1.0 - eta * self._loss_weight * scale) * (
                1.0 - eta * self._shrink_weight * covered
            )
            var.assign(value * factor)

    def apply(self, lam: float, lr: float) -> None:
        """One update with penalty ``lam`` and learning rate ``lr``."""
        self._update(np.float32(lam * lr), self._pruned)

    def group_norm(self) -> float:
        """The Eq. 8 term without ``lambda`` for the current prune set."""
        return group_norm(self.slices, self._removal)


def group_norm(slices: Sequence[_Slice], removal: Mapping[int, Sequence[int]]) -> float:
    """``sum_{g in prune} sum_{w in g} ||w||_2`` over the trainable slices of the prune set."""
    total = 0.0
    for s in slices:
        chans = list(removal.get(s.group, []))
        if chans:
            norms = np.sqrt(s.channel_sumsq(s.var.numpy())[chans])
            total += float(np.sum(norms[s.counts[chans] > 0]))
    return total


# ------------------------------------------------------------------------------ callback


class OCSCallback(keras.callbacks.Callback):
    """Drives the OCSPruner search during the user's own ``fit`` (stops at ``t*``).

    At every epoch end: saliency, partition, ``J_avg``, ``t_sl`` and ``t*`` (then
    ``model.stop_training = True``); during epochs ``t > t_sl``, the Eq. 8-9 update after every
    batch. Logs ``ocs_jaccard`` (``J_avg``, -1 while undefined), ``ocs_penalty``
    (``lambda_t``), ``ocs_prune_channels`` and ``ocs_group_norm`` (the Eq. 8 sum of norms of
    the new prune set ``M_t``, without ``lambda``). After ``fit``,
    ``OCSPruner.prune(model)`` removes ``M_{t*}``.

    Args:
        pruner: The :class:`OCSPruner` whose settings to use; it keeps this callback's
            results (``pruner.state``).
    """

    def __init__(self, pruner: OCSPruner) -> None:
        super().__init__()
        self.pruner = pruner
        self.graph: DependencyGraph | None = None
        self.state: dict[str, Any] = {}
        self._slices: list[_Slice] = []
        self._regularizer: _Regularizer | None = None
        self._built_regularizer: _Regularizer | None = None
        self._lambda = 0.0

    def on_train_begin(self, logs=None):
        p = self.pruner
        check_graph_model(self.model, "OCSPruner")
        self.graph = DependencyGraph(self.model)
        self._slices = _slices(self.model, self.graph)
        self._built_regularizer = _Regularizer(self._slices, loss_term=p.loss_term, shrink=p.shrink)
        full = self.graph.flops_after({})
        biggest = 1.0 - self.graph.flops_after(max_removal(self.graph, p.max_layer_prune)) / full
        if biggest + 1e-12 < p.flops_reduction:
            raise ValueError(
                f"OCSPruner: flops_reduction={p.flops_reduction} cannot be reached with "
                f"max_layer_prune={p.max_layer_prune} on model {self.model.name!r}; the largest "
                f"reachable reduction is {biggest:.4f}. Lower flops_reduction or raise "
                "max_layer_prune"
            )
        self.state = {
            "epochs": [],
            "subnetworks": [],
            "removals": [],
            "jaccard": [],
            "jaccard_raw": [],
            "penalty": [],
            "prune_set_sizes": [],
            "t_sl_start": p.start_epoch if isinstance(p.start_epoch, int) else None,
            "t_star": None,
            "stop_reason": None,
            "flops_before": full,
            "params_before": count_params(self.model),
        }
        p.state = self.state
        p._graph = self.graph

    def on_epoch_begin(self, epoch, logs=None):
        st = self.state
        active = st["t_star"] is None and st["t_sl_start"] is not None
        active = active and epoch > st["t_sl_start"] and bool(st["removals"])
        if active:
            p = self.pruner
            self._lambda = penalty(
                epoch, st["t_sl_start"], p.penalty_initial, p.penalty_step, p.penalty_interval
            )
            self._regularizer = self._built_regularizer
            self._regularizer.set_removal(st["removals"][-1])
        else:
            self._lambda, self._regularizer = 0.0, None

    def on_train_batch_end(self, batch, logs=None):
        if self._regularizer is None or self._lambda == 0.0:
            return
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self._regularizer.apply(self._lambda, lr)

    def on_epoch_end(self, epoch, logs=None):
        p, st, graph = self.pruner, self.state, self.graph
        logs = logs if logs is not None else {}
        removal = partition(
            _saliency(self._slices, graph), graph, p.flops_reduction, p.max_layer_prune
        )
        st["epochs"].append(epoch)
        st["removals"].append(removal)
        st["subnetworks"].append(kept_channels(removal, graph))
        j_avg = stability(st["subnetworks"], p.stability_lag, p.stability_window)
        hist = st["subnetworks"]
        raw = jaccard(hist[-1 - p.stability_lag], hist[-1]) if len(hist) > p.stability_lag else None
        st["jaccard"].append(j_avg)
        st["jaccard_raw"].append(raw)
        st["penalty"].append(self._lambda)
        st["prune_set_sizes"].append({gid: len(ks) for gid, ks in removal.items()})
        logs["ocs_group_norm"] = group_norm(self._slices, removal)
        if st["t_sl_start"] is None:  # auto: Eq. 5 on J_avg by epoch
            t = auto_start(st["jaccard"], p.stability_window, p.start_threshold)
            if t is not None:
                st["t_sl_start"] = st["epochs"][t]
        elif (
            st["t_star"] is None
            and epoch > st["t_sl_start"]
            and j_avg is not None
            and j_avg >= 1.0 - p.stability_epsilon
        ):
            st["t_star"], st["stop_reason"] = epoch, "stable"
        last = p.last_search_epoch
        if st["t_star"] is None and last is not None and epoch >= last:
            st["t_star"], st["stop_reason"] = epoch, "last_search_epoch"
        logs["ocs_jaccard"] = -1.0 if j_avg is None else j_avg
        logs["ocs_penalty"] = self._lambda
        logs["ocs_prune_channels"] = sum(len(ks) for ks in removal.values())
        if st["t_star"] is not None:
            self.model.stop_training = True


# ------------------------------------------------------------------------------ the pruner


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"OCSPruner: {name}={value!r} is invalid; it must be an integer >= {low}")
    return int(value)


def _check_float(name: str, value: object, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value < high:
        raise ValueError(f"OCSPruner: {name}={value!r} must be a number in [{low}, {high})")
    return float(value)


@keras.saving.register_keras_serializable(package="tf_sparse_prune")
class OCSPruner:
    """One-cycle structured channel pruning to a FLOPs target (SPEC §6; see the module doc).

    Works on the plain Sequential/functional model and its
    :class:`~tf_sparse_prune.graph.DependencyGraph` (no ``PruneWrapper``): channels are
    removed physically, so a subclassed model is refused.

    Args:
        flops_reduction: ``alpha``, the fraction of the model's FLOPs to remove, in (0, 1).
        stability_lag: ``i`` of Eq. 4 (>= 1).
        stability_window: ``r`` of Eq. 4-5 (>= 1).
        start_epoch: ``t_sl-start``: ``"auto"`` (Eq. 5 with ``start_threshold``) or an epoch.
            The epochs after it train with the regulariser.
        stability_epsilon: ``epsilon``: ``t*`` is the first epoch after ``t_sl`` with
            ``J_avg >= 1 - epsilon``.
        last_search_epoch: Prune at this epoch at the latest (``None``: no limit; if the
            search has not stopped when ``fit`` ends, the last partition is removed).
        penalty_initial: ``lambda_0`` (Eq. 7).
        penalty_step: ``delta`` (Eq. 7).
        penalty_interval: ``Delta t`` (Eq. 7, >= 1).
        max_layer_prune: No group, and no layer's share of a group (a ``Concatenate``
            source meeting an ``Add``), loses more than this fraction of its channels, nor
            all of them; in (0, 1].
        start_threshold: ``tau`` of Eq. 5 (>= 0).
        loss_term: Apply the Eq. 8 group-lasso term (the paper's Table 6 ablation switches
            it off).
        shrink: Apply the Eq. 9 multiplicative shrink (likewise). At least one of the two
            must be on.

    Raises:
        ValueError: for an argument outside its valid values (the message names it).

    Example:
        >>> import tf_sparse_prune as tsp
        >>> from tf_sparse_prune.algorithms.ocspruner import OCSPruner
        >>> pruner = OCSPruner(flops_reduction=0.5, start_epoch=2)
        >>> [round(pruner.penalty(t), 6) for t in range(2, 6)]
        [0.0001, 0.0002, 0.0004, 0.0007]
        >>> OCSPruner.from_config(pruner.get_config()).get_config() == pruner.get_config()
        True
    """

    def __init__(
        self,
        flops_reduction: float = 0.5,
        stability_lag: int = 2,
        stability_window: int = 3,
        start_epoch: str | int = "auto",
        stability_epsilon: float = 1e-3,
        last_search_epoch: int | None = None,
        penalty_initial: float = 1e-4,
        penalty_step: float = 1e-4,
        penalty_interval: int = 1,
        max_layer_prune: float = 0.75,
        start_threshold: float = 1e-4,
        loss_term: bool = True,
        shrink: bool = True,
    ) -> None:
        ok = isinstance(flops_reduction, (int, float)) and not isinstance(flops_reduction, bool)
        if not ok or not 0.0 < float(flops_reduction) < 1.0:
            raise ValueError(
                f"OCSPruner: flops_reduction={flops_reduction!r} is outside (0, 1); pass the "
                "fraction of FLOPs to remove, e.g. 0.5"
            )
        self.flops_reduction = float(flops_reduction)
        self.stability_lag = _check_int("stability_lag", stability_lag, 1)
        self.stability_window = _check_int("stability_window", stability_window, 1)
        if start_epoch != "auto":
            start_epoch = _check_int("start_epoch", start_epoch, 0)
        self.start_epoch = start_epoch
        self.stability_epsilon = _check_float("stability_epsilon", stability_epsilon, 0.0, 1.0)
        if last_search_epoch is not None:
            last_search_epoch = _check_int("last_search_epoch", last_search_epoch, 0)
        self.last_search_epoch = last_search_epoch
        self.penalty_initial = _check_float("penalty_initial", penalty_initial, 0.0)
        self.penalty_step = _check_float("penalty_step", penalty_step, 0.0)
        self.penalty_interval = _check_int("penalty_interval", penalty_interval, 1)
        ok = isinstance(max_layer_prune, (int, float)) and not isinstance(max_layer_prune, bool)
        if not ok or not 0.0 < float(max_layer_prune) <= 1.0:
            raise ValueError(f"OCSPruner: max_layer_prune={max_layer_prune!r} is outside (0, 1]")
        self.max_layer_prune = float(max_layer_prune)
        self.start_threshold = _check_float("start_threshold", start_threshold, 0.0)
        for name, flag in (("loss_term", loss_term), ("shrink", shrink)):
            if not isinstance(flag, (bool, np.bool_)):
                raise ValueError(f"OCSPruner: {name}={flag!r} must be True or False")
        if not (loss_term or shrink):
            raise ValueError(
                "OCSPruner: loss_term=False and shrink=False leave no regulariser; keep at "
                "least one of them True (both: the paper's method)"
            )
        self.loss_term, self.shrink = bool(loss_term), bool(shrink)
        self.state: dict[str, Any] = {}
        self._graph: DependencyGraph | None = None

    def penalty(self, epoch: int, t_sl: int | None = None) -> float:
        """``lambda`` of ``epoch`` (Eq. 7) for ``t_sl`` (default: the fixed ``start_epoch``)."""
        if t_sl is None:
            t_sl = self.start_epoch if isinstance(self.start_epoch, int) else None
        return penalty(epoch, t_sl, self.penalty_initial, self.penalty_step, self.penalty_interval)

    def callbacks(self) -> list[keras.callbacks.Callback]:
        """The callback for a ``fit`` the user drives (then call :meth:`prune`)."""
        return [OCSCallback(self)]

    def prune(self, model: keras.Model) -> keras.Model:
        """Removes the final prune set (``M_{t*}``, or the last partition) from ``model``.

        Call it after a ``fit`` with :meth:`callbacks`; the smaller model is uncompiled.

        Raises:
            TypeError: for a subclassed model (masking only, see the message).
            RuntimeError: before any epoch of the search has run.
        """
        check_graph_model(model, "OCSPruner.prune")
        graph = self._graph
        if not self.state.get("removals") or graph is None:
            raise RuntimeError(
                "OCSPruner.prune: no search has run yet; train with "
                "model.fit(..., callbacks=pruner.callbacks()) first, or use pruner.fit(...)"
            )
        if graph.model is not model:
            raise ValueError(
                f"OCSPruner.prune: the search ran on model {graph.model.name!r}, not on this "
                f"{model.name!r}"
            )
        st = self.state
        if st["t_star"] is None:
            st["t_star"], st["stop_reason"] = st["epochs"][-1], "end_of_training"
            warnings.warn(
                "OCSPruner: the sub-network did not become stable (J_avg >= 1 - epsilon) before "
                f"training ended; removing the partition of the last epoch {st['t_star']}",
                stacklevel=2,
            )
        removal = st["removals"][st["epochs"].index(st["t_star"])]
        small = remove_channels(model, removal, graph=graph)
        st["removal"] = removal
        st["flops_after"] = count_flops(small)
        st["params_after"] = count_params(small)
        return small

    def fit(
        self, model: keras.Model, x: Any = None, y: Any = None, *, epochs: int, **fit_kwargs
    ) -> tuple[keras.Model, dict[str, Any]]:
        """The whole cycle: train, search, remove at ``t*``, train the smaller model to ``epochs``.

        Carried to the smaller model: the compile configuration (loss, metrics, jit, ...) and
        a new optimizer of the same class and config whose ``iterations`` continue the
        original's, so a learning-rate schedule goes on where it was (a learning rate changed
        by a callback is carried as its current value). Not carried: the optimizer's slot
        variables (momentum, Adam moments), which start from zero (their shapes changed).
        User ``callbacks`` are passed to both ``fit`` calls; the second starts at
        ``initial_epoch = t* + 1``.

        Args:
            model: A compiled Sequential or functional model.
            x, y: As for ``Model.fit`` (a dataset in ``x`` and ``y=None`` works).
            epochs: Total epochs of the cycle.
            **fit_kwargs: Passed to both ``fit`` calls (``batch_size``, ``validation_data``,
                ``callbacks``, ``verbose``, ...).

        Returns:
            ``(small_model, history)``; ``history`` holds ``jaccard`` (``J_avg`` by epoch,
            ``None`` where undefined), ``jaccard_raw``, ``epochs``, ``t_sl_start``,
            ``t_star``, ``stop_reason``, ``penalty``, ``prune_set_sizes``, ``removal``,
            ``flops_before/after``, ``params_before/after`` and the Keras histories
            ``search`` and ``finetune`` (dicts of lists).

        Raises:
            TypeError: for a subclassed model (channels can only be masked there).
            ValueError: for an uncompiled model, or an unreachable FLOPs target.
        """
        check_graph_model(model, "OCSPruner")
        if getattr(model, "optimizer", None) is None or not getattr(model, "compiled", False):
            raise ValueError(
                f"OCSPruner.fit: model {model.name!r} is not compiled; call model.compile(...) "
                "first (the smaller model is compiled the same way)"
            )
        user_callbacks = list(fit_kwargs.pop("callbacks", None) or [])
        first = model.fit(
            x, y, epochs=epochs, callbacks=[*user_callbacks, OCSCallback(self)], **fit_kwargs
        )
        small = self.prune(model)
        small.compile_from_config(model.get_compile_config())
        small.optimizer.iterations.assign(model.optimizer.iterations)
        second: dict[str, list] = {}
        start = self.state["t_star"] + 1
        if start < epochs:
            fit_kwargs.pop("initial_epoch", None)
            second = small.fit(
                x, y, epochs=epochs, initial_epoch=start, callbacks=user_callbacks, **fit_kwargs
            ).history
        history = {k: v for k, v in self.state.items() if k not in ("subnetworks", "removals")}
        history["search"] = dict(first.history)
        history["finetune"] = dict(second)
        return small, history

    # ---- serialization ------------------------------------------------------------------
    def get_config(self) -> dict:
        return {
            "flops_reduction": self.flops_reduction,
            "stability_lag": self.stability_lag,
            "stability_window": self.stability_window,
            "start_epoch": self.start_epoch,
            "stability_epsilon": self.stability_epsilon,
            "last_search_epoch": self.last_search_epoch,
            "penalty_initial": self.penalty_initial,
            "penalty_step": self.penalty_step,
            "penalty_interval": self.penalty_interval,
            "max_layer_prune": self.max_layer_prune,
            "start_threshold": self.start_threshold,
            "loss_term": self.loss_term,
            "shrink": self.shrink,
        }

    @classmethod
    def from_config(cls, config: dict) -> OCSPruner:
        return cls(**config)

    def same_config(self, other: object) -> bool:
        """Whether ``other`` is an OCSPruner with the same configuration."""
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"OCSPruner({args})"
