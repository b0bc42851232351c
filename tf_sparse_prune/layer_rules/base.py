"""The rule interface, the registry and what a rule sees of a layer call (``ChannelContext``).

A rule never sees the dependency graph itself: ``DependencyGraph`` hands it a
:class:`ChannelContext` per layer call and commits what the rule recorded only if the rule
returns (a rule that calls ``ctx.unsupported`` leaves no trace but the reason).

Example:
    >>> import keras
    >>> rule_for(keras.layers.Conv2D(4, 3)) is rule_for(keras.layers.Conv2D)
    True
    >>> class MyDense(keras.layers.Dense):
    ...     pass
    >>> rule_for(MyDense) is rule_for(keras.layers.Dense)  # found through the class hierarchy
    True
    >>> rule_for(keras.layers.Softmax) is None  # no rule: left dense and reported
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import keras
import numpy as np

__all__ = [
    "ChannelContext",
    "LayerNotSupported",
    "LayerRule",
    "known_dims",
    "register_rule",
    "registered_rules",
    "rule_for",
    "unregister_rule",
]

Shape = tuple[Any, ...]


class LayerNotSupported(Exception):
    """Raised by ``ChannelContext.unsupported``: the rule cannot reason about this call."""


class LayerRule:
    """What tf_sparse_prune knows about one layer type: override what applies.

    The defaults describe a layer that has no prunable kernel, is not understood by the
    dependency graph (its groups become unprunable, with the reason), costs no FLOPs and
    takes config updates as plain channel counts.

    Attributes:
        prunable: Whether ``prunable_weights`` returns kernels that ``prune_model`` may mask.
    """

    prunable: bool = False

    def why_not_prunable(self, layer: keras.layers.Layer) -> str | None:
        """``None`` if the layer's kernels may be masked, else a one-line reason.

        Works on an unbuilt layer (``PruneWrapper`` asks before building).
        """
        if self.prunable:
            return None
        return f"{type(layer).__name__} has no kernel that tf_sparse_prune masks"

    def prunable_weights(self, layer: keras.layers.Layer) -> list[tuple[keras.Variable, bool]]:
        """The kernels to mask in a built layer, each with its ``depthwise`` flag.

        A kernel's last axis is its output axis and the second last its input axis, or,
        with ``depthwise=True``, ``(channels, multiplier)``.
        """
        return []

    def channel_map(self, layer: keras.layers.Layer, ctx: ChannelContext) -> list[np.ndarray]:
        """The channel arrays of the call's outputs, from its inputs' (``ctx.inputs``).

        Also records, through ``ctx``, every weight axis that holds channels and every config
        key whose value is a channel count. Call ``ctx.unsupported(why)`` for a call this rule
        cannot describe exactly.
        """
        ctx.unsupported("is not supported by the dependency graph (its rule has no channel_map)")

    def flops(
        self, layer: keras.layers.Layer, inputs: Sequence[Shape], outputs: Sequence[Shape]
    ) -> int:
        """FLOPs of one call for one example (convention of :mod:`tf_sparse_prune.graph.flops`).

        Args:
            layer: The layer.
            inputs: The per-example shapes (no batch axis) of the call's input tensors.
            outputs: The per-example shapes of its outputs.

        The dependency graph calls this with the channel axes shrunk to count a removal, so
        read channel counts from the shapes, not from the layer's weights.
        """
        return 0

    def shrink_config(
        self, layer: keras.layers.Layer, config: dict, kept: Mapping[str, list[int]]
    ) -> dict:
        """The config of the smaller layer.

        Args:
            layer: The original layer.
            config: A copy of ``layer.get_config()``, free to modify.
            kept: For each key recorded with ``ctx.config_key`` that lost channels, the kept
                channel positions (sorted).
        """
        for key, positions in kept.items():
            config[key] = len(positions)
        return config


class ChannelContext:
    """One layer call as a rule sees it while a ``DependencyGraph`` is built.

    Channels are numpy int arrays of *channel elements*, one element per position of a
    tensor's last axis; rules move them with numpy (``np.repeat``, ``np.tile``,
    ``np.concatenate``, slicing) and never read their values.

    Attributes:
        layer: The layer called.
        path: Its path in the model (``"<nested model>/<layer>"`` inside nested models).
        inputs: The channel array of each input tensor, in call order.
        input_shapes: Each input tensor's shape, batch axis included.
        constants: The call's arguments that are not tensors (e.g. the ``3.0`` of ``x + 3.0``).
        output_shapes: Each output tensor's shape, batch axis included.
        allow_layernorm: The graph's ``allow_layernorm`` option.
    """

    def __init__(self, graph: Any, layer: keras.layers.Layer, path: str, node: Any, inputs: list):
        self._graph = graph
        self.layer = layer
        self.path = path
        self.inputs = list(inputs)
        self.input_shapes = [tuple(t.shape) for t in node.arguments.keras_tensors]
        self.output_shapes = [tuple(t.shape) for t in node.outputs]
        arguments = keras.tree.flatten((node.arguments.args, node.arguments.kwargs))
        self.constants = [v for v in arguments if not isinstance(v, keras.KerasTensor)]
        self.allow_layernorm = bool(getattr(graph, "allow_layernorm", False))
        self.axes: list[tuple[keras.Variable, int, str, np.ndarray]] = []
        self.config: dict[str, np.ndarray] = {}
        self.unions: list[tuple[np.ndarray, np.ndarray]] = []

    def unsupported(self, why: str) -> NoReturn:
        """Stops the rule: the layer is reported as ``layer '<path>' (<Type>) <why>``."""
        raise LayerNotSupported(why)

    def single_input(self) -> np.ndarray:
        """The only input's channels (``unsupported`` if the call takes several)."""
        if len(self.inputs) != 1:
            self.unsupported("takes several inputs")
        return self.inputs[0]

    def new_channels(self, size: int) -> np.ndarray:
        """Fresh channels made by this layer (the same array at every call of a shared layer)."""
        return self._graph._produce(self.layer, self.path, int(size))

    def weight_axis(self, variable: keras.Variable, axis: int, role: str, channels: np.ndarray):
        """Records that ``variable``'s axis ``axis`` holds ``channels`` (position by position).

        Args:
            variable: One of ``layer.weights``.
            axis: The axis (negative counts from the end).
            role: ``"output"`` (filters/units made here and their bias), ``"channel"`` (a
                per-channel weight of a channel passing through) or ``"input"`` (the rows a
                contraction reads; surgery must equal the model with these rows zeroed).
            channels: The channel array, one element per position of that axis.
        """
        if role not in ("output", "channel", "input"):
            raise ValueError(
                f"layer {self.path!r}: role={role!r} is not one of 'output', 'channel', 'input'"
            )
        ndim = len(variable.shape)
        if not -ndim <= axis < ndim or variable.shape[axis] != len(channels):
            raise ValueError(
                f"layer {self.path!r}: weight {variable.name!r} of shape {tuple(variable.shape)} "
                f"has no axis {axis} of length {len(channels)} (the channels given)"
            )
        self.axes.append((variable, axis % ndim, role, np.asarray(channels)))

    def config_key(self, key: str, channels: np.ndarray) -> None:
        """Records that config ``key`` depends on ``channels`` (see ``LayerRule.shrink_config``)."""
        self.config[key] = np.asarray(channels)

    def unite(self, a: np.ndarray, b: np.ndarray) -> None:
        """Couples ``a[i]`` with ``b[i]`` for every ``i``: they can only be removed together."""
        if len(a) != len(b):
            raise ValueError(f"layer {self.path!r}: cannot unite {len(a)} with {len(b)} channels")
        self.unions.append((np.asarray(a), np.asarray(b)))

    def united_inputs(self) -> np.ndarray:
        """Couples all inputs channel by channel (an element-wise merge) and returns the
        first; inputs of different widths (a broadcast) are unsupported."""
        ins = self.inputs
        if len({len(a) for a in ins}) != 1:
            self.unsupported(f"broadcasts channels of {self.input_shapes}")
        for other in ins[1:]:
            self.unite(ins[0], other)
        return ins[0]


def known_dims(shape: Shape, layer: keras.layers.Layer) -> int:
    """Number of elements of a per-example shape, refusing unknown dimensions.

    Raises:
        ValueError: naming the layer, if a dimension is ``None``.
    """
    if any(d is None for d in shape):
        raise ValueError(
            f"layer {layer.name!r} has an output shape {(None, *shape)} with unknown "
            "dimensions; build the model with a fixed input shape"
        )
    return math.prod(shape)


_RULES: dict[type, LayerRule | None] = {}


def register_rule(layer_cls: type, rule: LayerRule | None) -> LayerRule | None:
    """Makes ``rule`` the rule of ``layer_cls`` and of its subclasses without their own.

    A rule registered for a subclass wins over its parents' (lookup walks the class's MRO),
    so registering a rule for your subclass of ``Dense`` overrides the built-in one for it
    only. ``rule=None`` marks the class as unknown: it and its subclasses are left dense
    and reported, which is right for a subclass whose ``call`` no longer does what its
    parent's rule describes.

    Args:
        layer_cls: A subclass of ``keras.layers.Layer``, or of ``keras.Operation`` for the
            calls of a ``keras.ops`` function recorded in functional models.
        rule: A :class:`LayerRule` instance, or ``None``.

    Returns:
        The rule registered for exactly ``layer_cls`` before (``None`` if none).

    Raises:
        TypeError: for a class that is not a Keras layer or a rule that is not a LayerRule.

    Example:
        >>> import keras
        >>> class Fancy(keras.layers.Conv2D):
        ...     pass  # imagine a call() that is no longer a plain convolution
        >>> register_rule(Fancy, None)
        >>> rule_for(Fancy) is None
        True
        >>> _ = unregister_rule(Fancy)
    """
    if not (isinstance(layer_cls, type) and issubclass(layer_cls, keras.Operation)):
        raise TypeError(
            f"register_rule: layer_cls={layer_cls!r} is not a keras.layers.Layer subclass (or "
            "a keras.Operation subclass, for keras.ops calls)"
        )
    if rule is not None and not isinstance(rule, LayerRule):
        raise TypeError(
            f"register_rule({layer_cls.__name__}): rule={rule!r} is not a LayerRule instance "
            "(subclass tf_sparse_prune.layer_rules.LayerRule) or None"
        )
    previous = _RULES.get(layer_cls)
    _RULES[layer_cls] = rule
    return previous


def unregister_rule(layer_cls: type) -> LayerRule | None:
    """Removes the rule registered for exactly ``layer_cls``; returns it (``None`` if none)."""
    return _RULES.pop(layer_cls, None)


def rule_for(layer: keras.layers.Layer | type) -> LayerRule | None:
    """The rule of a layer (or layer class): the first class of its MRO with a registry entry."""
    cls = layer if isinstance(layer, type) else type(layer)
    for klass in cls.__mro__:
        if klass in _RULES:
            return _RULES[klass]
    return None


def registered_rules() -> dict[type, LayerRule | None]:
    """A copy of the registry: layer class -> rule (``None`` marks a class as unknown)."""
    return dict(_RULES)
