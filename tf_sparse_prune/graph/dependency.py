"""The channel dependency graph: which channels of a Keras model must be removed together.

How groups are found. Every tensor's last (channel) axis is described by an array of
*channel elements*. A layer that makes new channels (``Conv*``, ``Dense``,
``SeparableConv*``, a model input, or a layer the graph does not know) creates fresh
elements; a channel-wise layer (``BatchNormalization``, ``DepthwiseConv*``, activations,
pooling, ``Dropout``, ...) passes its input's elements through; ``Concatenate`` on the
channel axis concatenates the arrays (so its consumers' input rows sit at offsets);
``Flatten`` and 1-D ``Reshape`` tile the array over the flattened positions (a channel maps to
its strided units of the next ``Dense``); ``DepthwiseConv*`` with ``depth_multiplier`` m
repeats each element m times. ``Add``, ``Subtract``, ``Multiply``, ``Average``,
``Maximum`` and ``Minimum`` unite their inputs' elements position by position (union-find),
and so does a second call of a shared layer with weights (its weight rows serve both calls).
A grouped convolution unites the same position of every group, so the layer stays grouped.
A *channel* of a group is a united set of elements; a *group* is the set of channels made
by producers that got united, e.g. all the convolutions whose outputs meet at the residual
additions of one ResNet stage. Removing a group's channel removes the producers' output
filters, every per-channel weight (BN, depthwise, LayerNorm, PReLU, biases) and every
consumer's input rows (kernels of Conv/Dense/SeparableConv pointwise, strided rows after a
Flatten) that hold it.

What a layer type does to channels is its rule in :mod:`tf_sparse_prune.layer_rules`, found
with ``isinstance`` (a subclass of ``Dense`` is understood as a ``Dense``); register a rule
there to teach the graph, FLOP counting and surgery a layer of your own.

A group is unprunable, with the reason naming the layer, when it reaches a model input or
output, a layer the graph cannot reason about (a layer type without a rule, a subclassed
model, a channels-first layer, a softmax over channels, a wrapped layer, a ``keras.ops``
call other than an element-wise one, ...), a shape mismatch or broadcast in a merge, or,
by default, a ``LayerNormalization`` over the channel axis (removing channels changes the
statistics of the kept ones, so the smaller model would not compute the masked model;
``allow_layernorm=True`` prunes through it anyway, as structured pruners usually do).

``DependencyGraph.flops_after`` and ``params_after`` count the smaller model of a removal
without building it (for searches over removal sets); they equal ``count_flops`` and
``count_params`` of ``remove_channels(model, removal)``.

Example:
    >>> import keras
    >>> inputs = keras.Input((8, 8, 3), name="image")
    >>> x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    >>> x = keras.layers.BatchNormalization(name="bn")(x)
    >>> outputs = keras.layers.Dense(2, name="fc")(keras.layers.Flatten(name="flat")(x))
    >>> graph = DependencyGraph(keras.Model(inputs, outputs))
    >>> [(g.id, g.producers, g.size, g.prunable) for g in graph.groups]
    [(0, ('image',), 3, False), (1, ('conv',), 4, True), (2, ('fc',), 2, False)]
    >>> [(s.layer, s.weight, s.role) for s in graph.groups[1].slices]
    [('conv', 'kernel', 'output'), ('conv', 'bias', 'output'), ('bn', 'gamma', 'channel'), \
('bn', 'beta', 'channel'), ('bn', 'moving_mean', 'channel'), \
('bn', 'moving_variance', 'channel'), ('fc', 'kernel', 'input')]
    >>> graph.groups[1].slices[-1].indices([1])[:4]  # channel 1 feeds every 4th unit of fc
    [1, 5, 9, 13]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np
from keras import layers

from tf_sparse_prune.graph._walk import (
    check_graph_model,
    functional_of,
    is_graph_model,
    ordered_nodes,
)
from tf_sparse_prune.graph.flops import _layer_flops
from tf_sparse_prune.layer_rules import ChannelContext, LayerNotSupported, rule_for

__all__ = ["ChannelGroup", "ChannelSlice", "DependencyGraph"]

L = layers


@dataclass(frozen=True)
class ChannelSlice:
    """The positions along one axis of one weight that hold a group's channels.

    Attributes:
        layer: Layer path; layers of nested models are ``"<model name>/<layer name>"``.
        weight: The variable's name (``"kernel"``, ``"bias"``, ``"gamma"``,
            ``"depthwise_kernel"``, ...).
        axis: The weight axis (non-negative).
        role: ``"output"`` (a producer's filters/units and their bias), ``"channel"``
            (a per-channel weight: BatchNorm, LayerNorm, PReLU, a depthwise kernel and bias)
            or ``"input"`` (a consumer's input rows: the contraction axis of a
            Conv/Dense kernel or of a separable convolution's pointwise kernel).
        positions: ``positions[k]`` are the positions of the group's channel ``k`` on that
            axis (several after a ``Flatten`` or a depthwise multiplier, none if the
            channel does not reach this weight).
    """

    layer: str
    weight: str
    axis: int
    role: str
    positions: tuple[tuple[int, ...], ...]

    def indices(self, channels: Iterable[int] | None = None) -> list[int]:
        """Sorted positions of the given group channels (all channels if ``None``)."""
        chosen = range(len(self.positions)) if channels is None else channels
        return sorted(p for k in set(chosen) for p in self.positions[k])


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that can only be removed together, one index space for all of them.

    Attributes:
        id: Index of the group in ``DependencyGraph.groups`` (inputs first, in graph order).
        size: Number of channels; removal indices are ``0 .. size - 1``.
        producers: The layers (or model inputs) whose outputs make these channels.
        slices: Every weight slice holding the channels (see :class:`ChannelSlice`).
        prunable: Whether channels of the group may be removed.
        reason: Why not, naming the layer(s), when ``prunable`` is False.
    """

    id: int
    size: int
    producers: tuple[str, ...]
    slices: tuple[ChannelSlice, ...]
    prunable: bool
    reason: str | None = None


@dataclass
class _Record:
    """What one layer's weights and config depend on (filled at its first call)."""

    layer: keras.layers.Layer
    path: str
    # (weight index, axis, role, element array)
    axes: list[tuple[int, int, str, np.ndarray]] = field(default_factory=list)
    # config key -> the element array it depends on ("filters", "units", "target_shape", ...)
    config: dict[str, np.ndarray] = field(default_factory=dict)


class DependencyGraph:
    """Channel groups of a Sequential or functional Keras 3 model.

    See the module docstring for how groups are found and which layers are understood.

    Args:
        model: A built Sequential or functional model; nested models and shared layers are
            followed.
        allow_layernorm: Prune through ``LayerNormalization`` over the channel axis (slicing
            its gamma and beta). Off by default: the smaller model then normalizes over the
            kept channels only, so it no longer equals the model with those channels masked.

    Raises:
        TypeError: for a subclassed model (masking only: its channel flow cannot be read)
            or anything that is not a Keras 3 model.

    Example:
        >>> from tf_sparse_prune.models import resnet20
        >>> graph = DependencyGraph(resnet20())
        >>> len(graph.prunable_groups)  # stem+stage-1 adds, stage 2 adds, stage 3 adds, 9 conv1s
        12
        >>> graph.group_of("s2b1_proj").producers
        ('s2b1_proj', 's2b1_conv2', 's2b2_conv2', 's2b3_conv2')
    """

    def __init__(self, model: keras.Model, *, allow_layernorm: bool = False) -> None:
        check_graph_model(model, "DependencyGraph")
        self.model = model
        self.allow_layernorm = allow_layernorm
        self._parent: list[int] = []  # union-find over channel elements
        self._space_of: list[int] = []  # element -> space
        self._space_names: list[str] = []
        self._space_first: list[int] = []  # space -> its first element id
        self._flags: dict[int, list[str]] = {}  # element -> reasons
        self._layer_space: dict[int, np.ndarray] = {}  # id(layer) -> produced elements
        self._records: dict[int, _Record] = {}
        self._unsupported: dict[str, str] = {}
        self._model_inputs: dict[int, tuple[keras.Model, list[np.ndarray]]] = {}
        self._calls: list[tuple[str, object, object, list, list]] = []  # leaf calls, in order

        top = _inputs_of(model)
        arrays = []
        for tensor in top:
            name = tensor._keras_history[0].name
            arr = self._new_space(name, _channels(tensor.shape))
            self._flag(arr, f"channels of model input {name!r} cannot be removed")
            arrays.append(arr)
        outputs = self._walk(model, "", arrays)
        for tensor, arr in zip(_outputs_of(model), outputs, strict=True):
            name = tensor._keras_history[0].name
            self._flag(arr, f"channels of model output {name!r} are kept")
        self.groups: list[ChannelGroup] = self._build_groups()

    # ------------------------------------------------------------------ public helpers

    @property
    def prunable_groups(self) -> list[ChannelGroup]:
        """The groups whose channels may be removed."""
        return [g for g in self.groups if g.prunable]

    @property
    def unsupported_layers(self) -> dict[str, str]:
        """Layer path -> why the graph could not reason about it (its groups are unprunable)."""
        return dict(self._unsupported)

    def group_of(self, layer_name: str) -> ChannelGroup:
        """The group holding the output channels that ``layer_name`` produces.

        Raises:
            KeyError: if no group has ``layer_name`` among its producers.
        """
        for group in self.groups:
            if layer_name in group.producers:
                return group
        producers = sorted({p for g in self.groups for p in g.producers})
        raise KeyError(f"no channel group is produced by {layer_name!r}; producers: {producers}")

    def describe(self) -> str:
        """One line per group: id, size, producers, and why it is unprunable."""
        lines = []
        for g in self.groups:
            state = "prunable" if g.prunable else f"unprunable: {g.reason}"
            lines.append(f"group {g.id}: {g.size} channels from {', '.join(g.producers)} ({state})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"DependencyGraph({self.model.name!r}, {len(self.groups)} groups, "
            f"{len(self.prunable_groups)} prunable)"
        )

    def flops_after(
        self, removal: Mapping[int, Sequence[int]], *, by_layer: bool = False
    ) -> int | dict[str, int]:
        """FLOPs of ``remove_channels(model, removal)``, computed without building it.

        Equal to ``count_flops`` of the smaller model (same convention, see
        :mod:`tf_sparse_prune.graph.flops`), but fast enough for a search over removal sets;
        ``flops_after({})`` is ``count_flops(model)``.

        Args:
            removal: ``{group id: channel indices}``, validated as by ``remove_channels``.
            by_layer: Return ``{layer path: FLOPs}`` instead of the total.

        Example:
            >>> from tf_sparse_prune.models import resnet20
            >>> graph = DependencyGraph(resnet20())
            >>> stage3 = graph.group_of("s3b1_proj").id
            >>> graph.flops_after({}), graph.flops_after({stage3: range(32)})
            (82113802, 70163082)
        """
        self._plan(removal)  # validates, including layers that would be left empty
        removed = self._removed_elements(removal)

        def kept(arr: np.ndarray) -> int:
            return sum(self._find(int(e)) not in removed for e in arr.tolist())

        def resized(shapes: list, arrays: list) -> list[tuple]:
            """Per-example shapes with each channel axis cut to its kept channels."""
            out = []
            for shape, arr in zip(shapes, arrays, strict=True):
                shape = tuple(shape[1:])
                if len(shape) >= 1 and shape[-1] == len(arr):
                    shape = (*shape[:-1], kept(arr))
                out.append(shape)
            return out

        totals: dict[str, int] = {}
        for path, op, node, ins, outs in self._calls:
            flops = _layer_flops(op, node)  # also checks for unknown dimensions
            if flops and path not in self._unsupported:
                in_shapes = [t.shape for t in node.arguments.keras_tensors]
                out_shapes = [t.shape for t in node.outputs]
                flops = rule_for(op).flops(op, resized(in_shapes, ins), resized(out_shapes, outs))
            if flops:
                totals[path] = totals.get(path, 0) + flops
        return totals if by_layer else sum(totals.values())

    def params_after(
        self, removal: Mapping[int, Sequence[int]], *, trainable_only: bool = False
    ) -> int:
        """``count_params`` of ``remove_channels(model, removal)``, without building it.

        Example:
            >>> from tf_sparse_prune.models import resnet20
            >>> graph = DependencyGraph(resnet20())
            >>> graph.params_after({graph.group_of("s1b1_conv1").id: range(8)})
            271706
        """
        from tf_sparse_prune.graph.flops import count_params

        total = count_params(self.model, trainable_only=trainable_only)
        plan, _ = self._plan(removal)
        for key, (_, cuts) in plan.items():
            variables = self._records[key].layer.weights
            for wi, axes in cuts.items():
                if trainable_only and not variables[wi].trainable:
                    continue
                shape = list(variables[wi].shape)
                before = math.prod(shape)
                for axis, keep in axes:
                    shape[axis] = len(keep)
                total -= before - math.prod(shape)
        return total

    # ------------------------------------------------------------------ removal plan

    def _removed_elements(self, removal: Mapping) -> set[int]:
        """Validates ``removal`` and returns the union-find roots of the removed channels."""
        if not isinstance(removal, Mapping):
            raise TypeError(
                "removal must be a mapping {group id: channel indices to remove}, got "
                f"{type(removal).__name__}"
            )
        roots: set[int] = set()
        valid = [g.id for g in self.prunable_groups]
        for key, channels in removal.items():
            gid = key.id if isinstance(key, ChannelGroup) else key
            if isinstance(gid, bool) or not isinstance(gid, (int, np.integer)):
                raise TypeError(f"group ids are ints, got {key!r}; prunable groups: {valid}")
            if not 0 <= gid < len(self.groups):
                raise ValueError(
                    f"unknown channel group {gid}: this model has groups 0..{len(self.groups) - 1}"
                    f"; prunable groups: {valid}"
                )
            group = self.groups[gid]
            label = f"group {gid} (produced by {', '.join(group.producers)})"
            if not group.prunable:
                raise ValueError(f"{label} is not prunable: {group.reason}")
            idx = np.asarray(list(channels) if not np.isscalar(channels) else [channels])
            if idx.size and not np.issubdtype(idx.dtype, np.integer):
                raise TypeError(f"{label}: channel indices must be ints, got {idx.dtype}")
            bad = sorted({int(i) for i in idx if not 0 <= i < group.size})
            if bad:
                raise ValueError(
                    f"{label} has {group.size} channels (valid indices 0..{group.size - 1}); "
                    f"got out-of-range indices {bad}"
                )
            chosen = {int(i) for i in idx}
            if len(chosen) == group.size:
                raise ValueError(
                    f"{label}: removing all {group.size} channels would leave its layers empty; "
                    "keep at least one"
                )
            roots.update(self._group_channels[gid][k] for k in chosen)
        return roots

    def _plan(self, removal: Mapping) -> tuple[dict[int, tuple[dict, dict]], dict[int, list]]:
        """The removal as layer edits and new nested-model input widths.

        Returns:
            ``{id(layer): ({config key: kept positions}, {weight index: [(axis, kept
            positions)]})}`` and
            ``{id(nested model): [kept channels of each input]}``.
        """
        removed = self._removed_elements(removal)
        plan: dict[int, tuple[dict, dict[int, list]]] = {}
        for key, rec in self._records.items():
            cuts: dict[int, list] = {}
            for wi, axis, _role, arr in rec.axes:
                keep = [p for p, e in enumerate(arr) if self._find(int(e)) not in removed]
                if not keep:
                    raise ValueError(
                        f"this removal leaves layer {rec.path!r} no channels on axis {axis} of "
                        f"{rec.layer.weights[wi].name!r} (its channels come from group(s) "
                        f"{self._groups_of(arr)}); keep at least one of them"
                    )
                if len(keep) < len(arr):
                    cuts.setdefault(wi, []).append((axis, keep))
            updates = {}
            for name, arr in rec.config.items():
                kept = [p for p, e in enumerate(arr.tolist()) if self._find(e) not in removed]
                if len(kept) < len(arr):
                    updates[name] = kept
            if cuts or updates:
                plan[key] = (updates, cuts)
        widths = {
            key: [sum(self._find(int(e)) not in removed for e in arr) for arr in arrays]
            for key, (_, arrays) in self._model_inputs.items()
        }
        return plan, widths

    def _groups_of(self, arr: np.ndarray) -> list[int]:
        """Ids of the groups holding the elements of ``arr``."""
        return sorted({self._channel_of[self._find(int(e))][0] for e in arr})

    # ------------------------------------------------------------------ union-find

    def _new_space(self, name: str, size: int) -> np.ndarray:
        start = len(self._parent)
        space = len(self._space_names)
        self._space_names.append(name)
        self._space_first.append(start)
        self._parent.extend(range(start, start + size))
        self._space_of.extend([space] * size)
        return np.arange(start, start + size, dtype=np.int64)

    def _find(self, e: int) -> int:
        parent = self._parent
        root = e
        while parent[root] != root:
            root = parent[root]
        while parent[e] != root:
            parent[e], e = root, parent[e]
        return root

    def _union(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            rx, ry = self._find(x), self._find(y)
            if rx != ry:
                self._parent[max(rx, ry)] = min(rx, ry)

    def _flag(self, arr: np.ndarray, reason: str) -> None:
        for e in arr.tolist():
            reasons = self._flags.setdefault(e, [])
            if reason not in reasons:
                reasons.append(reason)

    # ------------------------------------------------------------------ graph walk

    def _walk(self, model: keras.Model, prefix: str, arrays: list[np.ndarray]) -> list:
        tensors = {id(t): a for t, a in zip(_inputs_of(model), arrays, strict=True)}
        for node in ordered_nodes(model):
            op = node.operation
            if isinstance(op, L.InputLayer):
                continue
            ins = [tensors[id(t)] for t in node.arguments.keras_tensors]
            path = prefix + op.name
            if isinstance(op, keras.Model) and is_graph_model(op):
                # A nested model called again must take the same channels (its inputs are
                # rebuilt with one shape).
                if id(op) in self._model_inputs:
                    for old, new in zip(self._model_inputs[id(op)][1], ins, strict=True):
                        self._union(old, new)
                else:
                    self._model_inputs[id(op)] = (op, ins)
                outs = self._walk(op, path + "/", ins)
            else:
                outs = self._visit(op, path, node, ins)
                self._calls.append((path, op, node, ins, outs))
            for tensor, arr in zip(node.outputs, outs, strict=True):
                tensors[id(tensor)] = arr
        return [tensors[id(t)] for t in _outputs_of(model)]

    def _unknown(self, op, path: str, node, ins: list, why: str) -> list[np.ndarray]:
        what = "layer" if isinstance(op, keras.layers.Layer) else "operation"
        reason = f"{what} {path!r} ({type(op).__name__}) {why}"
        self._unsupported.setdefault(path, reason)
        for arr in ins:
            self._flag(arr, reason)
        outs = []
        for i, tensor in enumerate(node.outputs):
            arr = self._new_space(path if i == 0 else f"{path}:{i}", _channels(tensor.shape))
            self._flag(arr, reason)
            outs.append(arr)
        return outs

    def _record(self, layer, path: str, axes: list, config: dict | None = None) -> None:
        """Notes a layer's weight axes; a later call unites its arrays with the first call's."""
        rec = self._records.get(id(layer))
        if rec is None:
            self._records[id(layer)] = _Record(layer, path, axes, dict(config or {}))
            return
        for (_, _, _, old), (_, _, _, new) in zip(rec.axes, axes, strict=True):
            self._union(old, new)
        for name, arr in (config or {}).items():
            self._union(rec.config[name], arr)

    def _produce(self, layer, path: str, size: int) -> np.ndarray:
        if id(layer) not in self._layer_space:
            self._layer_space[id(layer)] = self._new_space(path, size)
        return self._layer_space[id(layer)]

    def _visit(self, op, path: str, node, ins: list[np.ndarray]) -> list[np.ndarray]:
        rule = rule_for(op)
        if not isinstance(op, keras.layers.Layer) and rule is None:
            return self._unknown(op, path, node, ins, "is a keras.ops call, not a layer")
        if isinstance(op, keras.Model):
            return self._unknown(op, path, node, ins, "is a subclassed model")
        if getattr(op, "data_format", "channels_last") != "channels_last":
            return self._unknown(op, path, node, ins, "uses data_format='channels_first'")
        if rule is None:
            return self._unknown(
                op,
                path,
                node,
                ins,
                "is not supported by the dependency graph (no layer rule: "
                "tf_sparse_prune.layer_rules.register_rule adds one)",
            )
        ctx = ChannelContext(self, op, path, node, ins)
        mark = (len(self._parent), len(self._space_names), id(op) in self._layer_space)
        try:
            outs = rule.channel_map(op, ctx)
        except LayerNotSupported as e:
            self._rollback(op, *mark)
            return self._unknown(op, path, node, ins, str(e))
        outs = [np.asarray(arr, dtype=np.int64) for arr in outs]
        expected = [_channels(t.shape) for t in node.outputs]
        if [len(arr) for arr in outs] != expected:
            raise ValueError(
                f"layer {path!r} ({type(op).__name__}): {type(rule).__name__}.channel_map returned "
                f"channel arrays of lengths {[len(a) for a in outs]}; the call's outputs have "
                f"{expected} channels (one array per output, one element per channel)"
            )
        for a, b in ctx.unions:
            self._union(a, b)
        index = {id(w): i for i, w in enumerate(getattr(op, "weights", ()))}
        axes = []
        for variable, axis, role, arr in ctx.axes:
            if id(variable) not in index:
                raise ValueError(
                    f"layer {path!r}: {type(rule).__name__} recorded {variable.name!r}, which is "
                    f"not one of the layer's weights {[w.name for w in getattr(op, 'weights', ())]}"
                )
            axes.append((index[id(variable)], axis, role, arr))
        if axes or ctx.config or id(op) in self._records:
            self._record(op, path, axes, ctx.config)
        return outs

    def _rollback(self, op, n_elements: int, n_spaces: int, had_space: bool) -> None:
        """Forgets the channels a rule made before it gave up on the call."""
        del self._parent[n_elements:], self._space_of[n_elements:]
        del self._space_names[n_spaces:], self._space_first[n_spaces:]
        if not had_space:
            self._layer_space.pop(id(op), None)

    # ------------------------------------------------------------------ groups

    def _build_groups(self) -> list[ChannelGroup]:
        n = len(self._parent)
        # Unite spaces whose elements got united; a space component is a group.
        space_parent = list(range(len(self._space_names)))

        def find_space(s):
            while space_parent[s] != s:
                space_parent[s] = space_parent[space_parent[s]]
                s = space_parent[s]
            return s

        for e in range(n):
            a, b = find_space(self._space_of[e]), find_space(self._space_of[self._find(e)])
            if a != b:
                space_parent[max(a, b)] = min(a, b)
        by_group: dict[int, list[int]] = {}  # space root -> channel roots, in order
        seen_roots: set[int] = set()
        for e in range(n):  # element ids follow graph order, so channels come in order
            root = self._find(e)
            if root not in seen_roots:
                seen_roots.add(root)
                by_group.setdefault(find_space(self._space_of[e]), []).append(root)
        group_roots = sorted(by_group)
        gid_of_space = {s: i for i, s in enumerate(group_roots)}
        channel_of: dict[int, tuple[int, int]] = {}
        for s, roots in by_group.items():
            for k, root in enumerate(roots):
                channel_of[root] = (gid_of_space[s], k)
        self._group_channels = [by_group[s] for s in group_roots]
        self._channel_of = channel_of

        slices: list[list[ChannelSlice]] = [[] for _ in group_roots]
        for rec in self._records.values():
            for wi, axis, role, arr in rec.axes:
                per_group: dict[int, dict[int, list[int]]] = {}
                for p, e in enumerate(arr.tolist()):
                    gid, k = channel_of[self._find(e)]
                    per_group.setdefault(gid, {}).setdefault(k, []).append(p)
                for gid, chans in per_group.items():
                    size = len(self._group_channels[gid])
                    positions = tuple(tuple(chans.get(k, ())) for k in range(size))
                    weight = rec.layer.weights[wi].name
                    slices[gid].append(ChannelSlice(rec.path, weight, axis, role, positions))

        groups = []
        for gid, s in enumerate(group_roots):
            spaces = sorted({i for i in range(len(self._space_names)) if find_space(i) == s})
            reasons: list[str] = []
            for space in spaces:
                stop = self._space_first[space + 1] if space + 1 < len(self._space_first) else n
                for e in range(self._space_first[space], stop):
                    for r in self._flags.get(e, ()):
                        if r not in reasons:
                            reasons.append(r)
            groups.append(
                ChannelGroup(
                    id=gid,
                    size=len(self._group_channels[gid]),
                    producers=tuple(self._space_names[i] for i in spaces),
                    slices=tuple(slices[gid]),
                    prunable=not reasons,
                    reason="; ".join(reasons) or None,
                )
            )
        return groups


def _inputs_of(model: keras.Model) -> list:
    return list(functional_of(model).inputs)


def _outputs_of(model: keras.Model) -> list:
    return list(functional_of(model).outputs)


def _channels(shape: Sequence) -> int:
    """Length of the channel (last) axis of a tensor shape; 1 for a per-example scalar."""
    if len(shape) < 2:
        return 1
    return int(shape[-1]) if shape[-1] is not None else 0
