"""Rules of the layers that act on each channel separately: channels pass through them.

Their per-channel weights (BatchNorm's four vectors, LayerNorm's gamma and beta, PReLU's
alpha, an adapted ``Normalization``'s mean and variance) are sliced with the channels, and
so are per-channel values held in the config (``Rescaling``'s scale and offset, a
``Normalization`` built from given mean and variance).

``LayerNormalization`` over the channel axis is refused unless the graph is built with
``allow_layernorm=True``: the smaller model would normalize over the kept channels only,
so it would not compute the model with those channels masked. A softmax over channels
(``Activation("softmax")``) mixes them, so it has no pass-through rule either.

Example:
    >>> import keras
    >>> from tf_sparse_prune.graph import DependencyGraph, remove_channels
    >>> inputs = keras.Input((6, 6, 3))
    >>> x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    >>> x = keras.layers.Rescaling([1.0, 2.0, 3.0, 4.0], name="scale")(x)
    >>> x = keras.layers.Cropping2D(1, name="crop")(keras.layers.ZeroPadding2D(1)(x))
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    >>> graph = DependencyGraph(model)
    >>> small = remove_channels(model, {graph.group_of("conv").id: [1]}, graph=graph)
    >>> small.get_layer("scale").scale
    [1.0, 3.0, 4.0]
"""

from __future__ import annotations

import numpy as np

from tf_sparse_prune.layer_rules.base import LayerRule, known_dims

__all__ = [
    "ActivationRule",
    "BatchNormRule",
    "LayerNormRule",
    "NormalizationRule",
    "PReLURule",
    "PassThroughRule",
    "RescalingRule",
]

_CHANNEL_MIXING_ACTIVATIONS = ("softmax", "log_softmax")


def _is_channel_axis(axis, rank: int) -> bool:
    axes = sorted({int(a) % rank for a in np.atleast_1d(axis)})
    return axes == [rank - 1]


def _slice_last(value, positions: list[int]):
    """A config value with its last axis reduced to ``positions``, as nested lists."""
    return np.take(np.asarray(value), positions, axis=-1).tolist()


class PassThroughRule(LayerRule):
    """A weightless layer that keeps the channel axis last and never mixes channels.

    Activations, dropout and noise, pooling (also global), up-sampling, zero-padding,
    cropping, ``Identity``.
    """

    def channel_map(self, layer, ctx):
        x = ctx.single_input()
        if layer.weights:
            ctx.unsupported("has unexpected weights")
        return [x]


class ActivationRule(PassThroughRule):
    """``Activation``: channel-wise except a softmax over channels."""

    def channel_map(self, layer, ctx):
        name = getattr(layer.activation, "__name__", "")
        if name in _CHANNEL_MIXING_ACTIVATIONS:
            ctx.unsupported(f"applies {name} across channels")
        return super().channel_map(layer, ctx)


class BatchNormRule(LayerRule):
    """``BatchNormalization`` on the channel axis: its vectors are sliced."""

    def channel_map(self, layer, ctx):
        x = ctx.single_input()
        if not _is_channel_axis(layer.axis, len(ctx.input_shapes[0])):
            ctx.unsupported(f"normalizes axis {layer.axis}, not channels")
        for weight in layer.weights:
            ctx.weight_axis(weight, 0, "channel", x)
        return [x]

    def flops(self, layer, inputs, outputs):
        return 2 * known_dims(outputs[0], layer)  # inference: a scale and a shift per element


class LayerNormRule(LayerRule):
    """``LayerNormalization`` over the channel axis, only with ``allow_layernorm=True``."""

    def channel_map(self, layer, ctx):
        x = ctx.single_input()
        if not _is_channel_axis(layer.axis, len(ctx.input_shapes[0])):
            ctx.unsupported(f"normalizes axes {layer.axis}")
        if not ctx.allow_layernorm:
            ctx.unsupported(
                "normalizes over the channel axis: removing channels would change the kept "
                "ones (DependencyGraph(..., allow_layernorm=True) prunes anyway)"
            )
        for weight in layer.weights:
            ctx.weight_axis(weight, 0, "channel", x)
        return [x]


class PReLURule(LayerRule):
    """``PReLU``: alpha sliced on its last axis unless shared across channels."""

    def channel_map(self, layer, ctx):
        x = ctx.single_input()
        alpha = layer.alpha
        if alpha.shape[-1] != 1:
            if alpha.shape[-1] != len(x):
                ctx.unsupported("has an unexpected alpha shape")
            ctx.weight_axis(alpha, -1, "channel", x)
        return [x]


class _SlicedConfigRule(LayerRule):
    """A rule whose per-channel config values (recorded with ``ctx.config_key``) are
    sliced to the kept channels."""

    def shrink_config(self, layer, config, kept):
        for key, positions in kept.items():
            config[key] = _slice_last(config[key], positions)
        return config


class NormalizationRule(_SlicedConfigRule):
    """``Normalization`` over the channel axis (or none): mean and variance are sliced.

    Adapted statistics are weights; statistics given as arguments live in the config.
    """

    def channel_map(self, layer, ctx):
        x = ctx.single_input()
        rank = len(ctx.input_shapes[0])
        if layer.axis and not _is_channel_axis(layer.axis, rank):
            ctx.unsupported(f"normalizes per position of axes {layer.axis}, not per channel")
        for weight in layer.weights:
            if len(weight.shape) and weight.shape[-1] == len(x) and len(x) > 1:
                ctx.weight_axis(weight, -1, "channel", x)
        config = layer.get_config()
        for key in ("mean", "variance"):
            value = config.get(key)
            if value is not None and np.size(value) > 1:
                if np.shape(value)[-1] != len(x):
                    ctx.unsupported(f"has a {key} of shape {np.shape(value)}")
                ctx.config_key(key, x)
        return [x]


class RescalingRule(_SlicedConfigRule):
    """``Rescaling``: a scalar scale/offset passes through, a per-channel one is sliced."""

    def channel_map(self, layer, ctx):
        x = ctx.single_input()
        config = layer.get_config()
        for key in ("scale", "offset"):
            shape = np.shape(config[key])
            if np.size(config[key]) > 1:
                if shape[-1] != len(x) or np.size(config[key]) != len(x):
                    ctx.unsupported(f"has a {key} of shape {shape}, not one value per channel")
                ctx.config_key(key, x)
        return [x]
