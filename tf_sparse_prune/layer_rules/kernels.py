"""Rules of the layers with kernels: convolutions (plain, grouped, depthwise, separable), Dense.

Masking (``prunable``) is offered for ``Conv2D``, ``Dense`` and ``DepthwiseConv2D`` and their
subclasses; ``Conv1D``/``Conv3D``, ``DepthwiseConv1D`` and the separable convolutions are
understood by the dependency graph and FLOP counting only, and are left dense by
``prune_model`` (the structures and the sparse TFLite kernels are written for the 2-D
layouts).

Grouped convolutions (``groups > 1``). Each group's filters read only its own
``C_in / groups`` input channels through the same kernel rows, so removing channels keeps
the layer grouped only if every group loses the same positions. The rule therefore couples
input position ``r`` of every group into one channel, and likewise output position ``j``
of every group's filters. When ``groups == C_in`` the convolution is a depthwise one and
its channels pass through (filter ``j`` follows input ``j // (filters / groups)``), so
``groups`` shrinks with the channels.

Example:
    >>> import keras
    >>> from tf_sparse_prune.graph import DependencyGraph
    >>> inputs = keras.Input((6, 6, 3))
    >>> x = keras.layers.Conv2D(8, 1, name="expand")(inputs)
    >>> x = keras.layers.Conv2D(8, 3, groups=4, name="gconv")(x)  # 4 groups of 2 channels
    >>> outputs = keras.layers.Dense(2, name="fc")(keras.layers.GlobalAveragePooling2D()(x))
    >>> graph = DependencyGraph(keras.Model(inputs, outputs))
    >>> [(g.producers, g.size) for g in graph.prunable_groups]  # 2 positions per group
    [(('expand',), 2), (('gconv',), 2)]
"""

from __future__ import annotations

import math

import keras
import numpy as np

from tf_sparse_prune.layer_rules.base import ChannelContext, LayerRule, known_dims

__all__ = ["ConvRule", "DenseRule", "DepthwiseConvRule", "SeparableConvRule"]

L = keras.layers


def _bias_axis(layer, ctx: ChannelContext, role: str, channels: np.ndarray) -> None:
    if getattr(layer, "use_bias", False) and getattr(layer, "bias", None) is not None:
        ctx.weight_axis(layer.bias, 0, role, channels)


def _bias_flops(layer, out: int) -> int:
    return out if getattr(layer, "use_bias", False) else 0


class ConvRule(LayerRule):
    """``Conv1D/2D/3D`` (also grouped): kernel ``(*window, C_in / groups, filters)``.

    Args:
        prunable: Offer the kernel for masking.
    """

    def __init__(self, prunable: bool = False):
        self.prunable = prunable

    def prunable_weights(self, layer):
        return [(layer.kernel, False)] if self.prunable else []

    def channel_map(self, layer, ctx):
        x = ctx.single_input()
        kernel, groups = layer.kernel, layer.groups
        if len(x) % groups or kernel.shape[-2] != len(x) // groups:
            ctx.unsupported("has an unexpected kernel shape")
        if groups == 1:
            out = ctx.new_channels(layer.filters)
            ctx.weight_axis(kernel, -2, "input", x)
        elif groups == len(x):  # depthwise: each filter follows its one input channel
            out = np.repeat(x, layer.filters // groups)
            ctx.config_key("groups", x)
            ctx.weight_axis(kernel, -1, "channel", out)
            ctx.config_key("filters", out)
            _bias_axis(layer, ctx, "channel", out)
            return [out]
        else:
            per_group = x.reshape(groups, -1)
            for row in per_group[1:]:
                ctx.unite(per_group[0], row)
            out = ctx.new_channels(layer.filters)
            filters = out.reshape(groups, -1)
            for row in filters[1:]:
                ctx.unite(filters[0], row)
            ctx.weight_axis(kernel, -2, "input", per_group[0])
        ctx.weight_axis(kernel, -1, "output", out)
        _bias_axis(layer, ctx, "output", out)
        ctx.config_key("filters", out)
        return [out]

    def flops(self, layer, inputs, outputs):
        out = known_dims(outputs[0], layer)
        # One input channel per group stays one when channels are removed (groups shrinks).
        per_group = inputs[0][-1] // layer.groups if layer.kernel.shape[-2] > 1 else 1
        per_output = math.prod(layer.kernel_size) * per_group
        return 2 * out * per_output + _bias_flops(layer, out)


class DenseRule(LayerRule):
    """``Dense``: kernel ``(C_in, units)`` on the last axis of inputs of any rank."""

    prunable = True

    def prunable_weights(self, layer):
        return [(layer.kernel, False)]

    def channel_map(self, layer, ctx):
        x = ctx.single_input()
        if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
            ctx.unsupported("is quantized or has LoRA weights")
        if layer.kernel.shape[0] != len(x):
            ctx.unsupported("has an unexpected kernel shape")
        out = ctx.new_channels(layer.units)
        ctx.weight_axis(layer.kernel, 0, "input", x)
        ctx.weight_axis(layer.kernel, 1, "output", out)
        _bias_axis(layer, ctx, "output", out)
        ctx.config_key("units", out)
        return [out]

    def flops(self, layer, inputs, outputs):
        out = known_dims(outputs[0], layer)
        return 2 * out * inputs[0][-1] + _bias_flops(layer, out)


class DepthwiseConvRule(LayerRule):
    """``DepthwiseConv1D/2D``: kernel ``(*window, C_in, multiplier)``; channels pass through.

    Output channel ``c * multiplier + k`` follows input channel ``c``.

    Args:
        prunable: Offer the kernel for masking (with ``depthwise=True``).
    """

    def __init__(self, prunable: bool = False):
        self.prunable = prunable

    def prunable_weights(self, layer):
        return [(layer.kernel, True)] if self.prunable else []

    def channel_map(self, layer, ctx):
        x = ctx.single_input()
        if layer.kernel.shape[-2] != len(x):
            ctx.unsupported("has an unexpected kernel shape")
        out = np.repeat(x, layer.depth_multiplier)
        ctx.weight_axis(layer.kernel, -2, "channel", x)
        _bias_axis(layer, ctx, "channel", out)
        return [out]

    def flops(self, layer, inputs, outputs):
        out = known_dims(outputs[0], layer)
        return 2 * out * math.prod(layer.kernel_size) + _bias_flops(layer, out)


class SeparableConvRule(LayerRule):
    """``SeparableConv1D/2D``: a depthwise kernel, then a pointwise ``(1, 1, C_in * m, filters)``.

    With ``prunable=True`` (``SeparableConv2D``) the pointwise kernel is masked: it is a 1x1
    convolution (TFLite runs it as its own CONV_2D, which the sparse delegate can claim),
    while the depthwise kernel stays dense. Channel pruning removes the depthwise and
    pointwise slices of a channel together.

    Args:
        prunable: Offer the pointwise kernel for masking.
    """

    def __init__(self, prunable: bool = False):
        self.prunable = prunable

    def prunable_weights(self, layer):
        return [(layer.pointwise_kernel, False)] if self.prunable else []

    def channel_map(self, layer, ctx):
        x = ctx.single_input()
        dw, pw = layer.depthwise_kernel, layer.pointwise_kernel
        if dw.shape[-2] != len(x):
            ctx.unsupported("has an unexpected kernel shape")
        out = ctx.new_channels(layer.filters)
        ctx.weight_axis(dw, -2, "channel", x)
        ctx.weight_axis(pw, -2, "input", np.repeat(x, layer.depth_multiplier))
        ctx.weight_axis(pw, -1, "output", out)
        _bias_axis(layer, ctx, "output", out)
        ctx.config_key("filters", out)
        return [out]

    def flops(self, layer, inputs, outputs):
        out = known_dims(outputs[0], layer)
        c_mid = inputs[0][-1] * layer.depth_multiplier
        mid = math.prod(outputs[0][:-1]) * c_mid
        return 2 * mid * math.prod(layer.kernel_size) + 2 * out * c_mid + _bias_flops(layer, out)
