"""Rules of element-wise ``keras.ops`` calls and of per-channel scale layers.

A functional model records a ``keras.ops`` call on a symbolic tensor (``x + 3.0``,
``keras.ops.relu6(x)``, ``inputs + x``) as an operation node, e.g. in the hard-swish and
residuals of MobileNetV3 and ConvNeXt. The element-wise ones keep channels apart: with one
tensor argument (and scalar constants) channels pass through; with several, they are
coupled position by position like an ``Add`` layer. A constant holding one value per
channel, or channels that broadcast, are refused. These calls count 0 FLOPs, as every
``keras.ops`` call does in :func:`tf_sparse_prune.graph.count_flops`.

The operation classes live in Keras's private ``keras.src.ops`` modules; a name missing
from them (another Keras version) is skipped, and its calls are reported unsupported.

Example:
    >>> import keras
    >>> from tf_sparse_prune.graph import DependencyGraph
    >>> inputs = keras.Input((4, 4, 3))
    >>> x = keras.layers.Conv2D(8, 1, name="conv")(inputs)
    >>> x = x * keras.ops.relu6(x + 3.0) / 6.0  # hard swish
    >>> y = keras.layers.Conv2D(8, 1, name="conv2")(x)
    >>> outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x + y))
    >>> graph = DependencyGraph(keras.Model(inputs, outputs))
    >>> graph.group_of("conv").producers, graph.unsupported_layers
    (('conv', 'conv2'), {})
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tf_sparse_prune.layer_rules.base import LayerRule

__all__ = [
    "ElementwiseOpRule",
    "PerChannelWeightsRule",
    "applications_layer_classes",
    "elementwise_op_classes",
]

_BINARY = ("Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum")
_UNARY_NUMPY = ("Abs", "Negative", "Square", "Sqrt", "Exp", "Tanh")
_UNARY_NN = (
    "Relu",
    "Relu6",
    "Sigmoid",
    "HardSigmoid",
    "Silu",
    "HardSilu",
    "Gelu",
    "Elu",
    "Selu",
    "LeakyRelu",
    "Softplus",
)


def elementwise_op_classes() -> list[type]:
    """The element-wise ``keras.ops`` operation classes this Keras version has."""
    try:
        from keras.src.ops import nn as ops_nn
        from keras.src.ops import numpy as ops_numpy
    except ImportError:  # pragma: no cover - private layout changed
        return []
    found = [getattr(ops_numpy, n, None) for n in (*_BINARY, *_UNARY_NUMPY)]
    found += [getattr(ops_nn, n, None) for n in _UNARY_NN]
    return [cls for cls in found if isinstance(cls, type)]


class ElementwiseOpRule(LayerRule):
    """An element-wise ``keras.ops`` call: pass-through, or a merge of several tensors."""

    def channel_map(self, layer, ctx):
        for value in ctx.constants:
            if np.size(value) > 1:
                ctx.unsupported(
                    f"combines channels with a constant of shape {np.shape(value)} (only "
                    "scalars pass through)"
                )
        return [ctx.united_inputs()]


class PerChannelWeightsRule(LayerRule):
    """A layer acting on each channel with weights of one value per channel (a layer scale).

    Every weight is sliced on its last axis; the config keys named hold the channel count.

    Args:
        config_keys: Config keys equal to the number of channels (e.g. ``"projection_dim"``).
    """

    def __init__(self, config_keys: Sequence[str] = ()):
        self.config_keys = tuple(config_keys)

    def channel_map(self, layer, ctx):
        x = ctx.single_input()
        for weight in layer.weights:
            if not len(weight.shape) or weight.shape[-1] != len(x):
                ctx.unsupported(f"has a weight {weight.name!r} that is not one value per channel")
            ctx.weight_axis(weight, -1, "channel", x)
        for key in self.config_keys:
            ctx.config_key(key, x)
        return [x]


def applications_layer_classes() -> dict[str, type]:
    """The layer classes ``keras.applications`` defines for itself (private Keras classes).

    ConvNeXt's ``LayerScale`` and ``StochasticDepth``, InceptionResNetV2's
    ``CustomScaleLayer`` (``inputs[0] + inputs[1] * scale``).
    """
    found = {}
    try:
        from keras.src.applications import convnext, inception_resnet_v2
    except ImportError:  # pragma: no cover - private layout changed
        return found
    for module, name in (
        (convnext, "LayerScale"),
        (convnext, "StochasticDepth"),
        (inception_resnet_v2, "CustomScaleLayer"),
    ):
        if isinstance(getattr(module, name, None), type):
            found[name] = getattr(module, name)
    return found
