"""Rules of the layers that combine tensors or move the channel axis: merges, Concatenate,
Flatten and Reshape.

``Add``, ``Subtract``, ``Multiply``, ``Average``, ``Maximum`` and ``Minimum`` couple their
inputs' channels position by position (spatial broadcasting is fine, channel broadcasting
is not). ``Concatenate`` on the channel axis places its inputs' channels one after the
other (its consumers' rows sit at offsets); on another axis it couples them like a merge.
``Flatten``, and a ``Reshape`` to one axis, make channel ``c`` feed every ``C``-th unit
(``c, c + C, c + 2C, ...``); a ``Reshape`` that keeps the channel axis last (e.g. to
``(1, 1, C)`` in a squeeze-and-excitation block) passes channels through. Any other
reshape mixes the channel axis with others and is refused.

Example:
    >>> import keras
    >>> from tf_sparse_prune.graph import DependencyGraph
    >>> inputs = keras.Input((4, 4, 3))
    >>> a = keras.layers.Conv2D(2, 1, name="a")(inputs)
    >>> b = keras.layers.Conv2D(2, 1, name="b")(inputs)
    >>> x = keras.layers.Multiply(name="gate")([a, b])
    >>> outputs = keras.layers.Dense(2, name="fc")(keras.layers.Flatten()(x))
    >>> DependencyGraph(keras.Model(inputs, outputs)).group_of("a").producers
    ('a', 'b')
"""

from __future__ import annotations

import math

import keras
import numpy as np

from tf_sparse_prune.layer_rules.base import LayerRule, known_dims

__all__ = ["ConcatenateRule", "MergeRule", "ReshapeRule"]


class MergeRule(LayerRule):
    """Element-wise merges of equally many channels.

    Args:
        extra_per_element: FLOPs per output element besides the ``n - 1`` pairwise
            operations (1 for ``Average``'s division).
    """

    def __init__(self, extra_per_element: int = 0):
        self.extra_per_element = extra_per_element

    def channel_map(self, layer, ctx):
        return [ctx.united_inputs()]

    def flops(self, layer, inputs, outputs):
        out = known_dims(outputs[0], layer)
        return (len(inputs) - 1) * out + self.extra_per_element * out


class ConcatenateRule(LayerRule):
    """``Concatenate``: offsets on the channel axis, a merge on any other."""

    def channel_map(self, layer, ctx):
        ins = ctx.inputs
        rank = len(ctx.input_shapes[0])
        if layer.axis % rank == rank - 1:
            return [np.concatenate(ins)]
        if len({len(a) for a in ins}) != 1:
            ctx.unsupported("concatenates mismatched channels")
        for other in ins[1:]:
            ctx.unite(ins[0], other)
        return [ins[0]]


class ReshapeRule(LayerRule):
    """``Flatten`` and ``Reshape``: flattening, or a reshape that keeps the channel axis."""

    def channel_map(self, layer, ctx):
        x = ctx.single_input()
        in_shape, out_shape = ctx.input_shapes[0], ctx.output_shapes[0]
        if any(d is None for d in in_shape[1:] + out_shape[1:]):
            ctx.unsupported("has unknown dimensions")
        reshape = isinstance(layer, keras.layers.Reshape)
        if len(out_shape) == 2:  # flattening: channel c feeds units c, c + C, c + 2C, ...
            out = np.tile(x, math.prod(in_shape[1:-1]))
            if reshape:
                ctx.config_key("target_shape", out)
            return [out]
        if reshape and out_shape[-1] == in_shape[-1]:
            ctx.config_key("target_shape", x)
            return [x]
        ctx.unsupported(f"reshapes {in_shape} to {out_shape}")

    def shrink_config(self, layer, config, kept):
        if "target_shape" in kept:
            target = tuple(config["target_shape"])
            config["target_shape"] = (*target[:-1], len(kept["target_shape"]))
        return config
