"""One rule per layer type, in a registry you extend for your own layers.

A :class:`LayerRule` holds everything tf_sparse_prune knows about a layer type:

* ``prunable`` / ``prunable_weights(layer)``: the kernels ``prune_model`` may mask, with
  their layout (used by :mod:`tf_sparse_prune.prunable`);
* ``channel_map(layer, ctx)``: how the channels of the call's inputs become those of its
  outputs, which weight axes hold them and which config keys count them (used by
  ``DependencyGraph`` and ``remove_channels``);
* ``flops(layer, inputs, outputs)``: FLOPs of one call (``count_flops`` and
  ``DependencyGraph.flops_after``);
* ``shrink_config(layer, config, kept)``: the config of the smaller layer after channel
  removal (surgery slices the recorded weight axes itself).

Rules are found by ``isinstance``: :func:`rule_for` walks the layer class's MRO, so a
subclass of ``Dense`` gets the ``Dense`` rule and a rule registered for the subclass wins.
A layer without a rule is never guessed at: it is left dense by ``prune_model`` (unless it
defines ``get_prunable_weights()``), listed in ``DependencyGraph.unsupported_layers`` with
the reason, its channel groups are unprunable, and it costs 0 FLOPs.

Built-in rules (all channels-last; a ``channels_first`` layer is refused by the graph):

==========================================================  ====================================
layers                                                      rule
==========================================================  ====================================
``Conv1D/2D/3D`` (grouped too; only ``Conv2D`` masked)      :class:`ConvRule`
``Dense`` (masked)                                          :class:`DenseRule`
``DepthwiseConv1D/2D`` (only the 2-D one masked)            :class:`DepthwiseConvRule`
``SeparableConv1D/2D``                                      :class:`SeparableConvRule`
``BatchNormalization``                                      :class:`BatchNormRule`
``LayerNormalization`` (needs ``allow_layernorm=True``)     :class:`LayerNormRule`
``PReLU``                                                   :class:`PReLURule`
``Normalization``, ``Rescaling``                            :class:`NormalizationRule`,
                                                            :class:`RescalingRule`
``Activation`` (not softmax over channels), ``ReLU``,       :class:`ActivationRule`,
``LeakyReLU``, ``ELU``, dropouts and noise, pooling,        :class:`PassThroughRule`
global pooling, ``UpSampling``, ``ZeroPadding``,
``Cropping``, ``Identity``, ``ActivityRegularization``
``Add``, ``Subtract``, ``Multiply``, ``Average``,           :class:`MergeRule`
``Maximum``, ``Minimum``
``Concatenate``                                             :class:`ConcatenateRule`
``Flatten``, ``Reshape`` (flattening or channels kept)      :class:`ReshapeRule`
element-wise ``keras.ops`` calls (``x + y``, ``x * 2.0``,   :class:`ElementwiseOpRule`
``keras.ops.relu6(x)``, ...)
ConvNeXt's ``LayerScale`` and ``StochasticDepth``           :class:`PerChannelWeightsRule`,
                                                            :class:`PassThroughRule`
InceptionResNetV2's ``CustomScaleLayer``                    :class:`MergeRule`
==========================================================  ====================================

With these, every ``keras.applications`` model is understood by the dependency graph
(ConvNeXt with ``allow_layernorm=True``) except the softmax of a classifier top.

Left without a rule, so dense and reported: ``Softmax``, ``GroupNormalization`` and
``UnitNormalization`` (they mix channels), transposed convolutions, ``Permute``,
``Masking``, ``Lambda``, attention and recurrent layers, wrappers, custom layers, any
other ``keras.ops`` call.

Example: a custom per-channel scale (like ConvNeXt's layer scale) and a custom projection
(a kernel on the channel axis, masked by ``prune_model`` and shrunk by surgery).

    >>> import keras, numpy as np, tf_sparse_prune as tsp
    >>> from tf_sparse_prune import layer_rules
    >>> class ChannelScale(keras.layers.Layer):
    ...     def build(self, shape):
    ...         self.gamma = self.add_weight(shape=(shape[-1],), initializer="ones")
    ...     def call(self, x):
    ...         return x * self.gamma
    >>> class Projection(keras.layers.Layer):
    ...     def __init__(self, units, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.units = units
    ...     def build(self, shape):
    ...         self.kernel = self.add_weight(shape=(shape[-1], self.units))
    ...     def call(self, x):
    ...         return x @ self.kernel
    ...     def get_config(self):
    ...         return {**super().get_config(), "units": self.units}
    >>> class ChannelScaleRule(layer_rules.LayerRule):
    ...     def channel_map(self, layer, ctx):
    ...         x = ctx.single_input()
    ...         ctx.weight_axis(layer.gamma, 0, "channel", x)
    ...         return [x]
    >>> class ProjectionRule(layer_rules.LayerRule):
    ...     prunable = True
    ...     def prunable_weights(self, layer):
    ...         return [(layer.kernel, False)]
    ...     def channel_map(self, layer, ctx):
    ...         x = ctx.single_input()
    ...         out = ctx.new_channels(layer.units)
    ...         ctx.weight_axis(layer.kernel, 0, "input", x)
    ...         ctx.weight_axis(layer.kernel, 1, "output", out)
    ...         ctx.config_key("units", out)
    ...         return [out]
    ...     def flops(self, layer, inputs, outputs):
    ...         return 2 * int(np.prod(outputs[0])) * inputs[0][-1]
    >>> layer_rules.register_rule(ChannelScale, ChannelScaleRule())
    >>> layer_rules.register_rule(Projection, ProjectionRule())
    >>> inputs = keras.Input((4, 4, 3))
    >>> x = ChannelScale(name="scale")(keras.layers.Conv2D(8, 1, name="conv")(inputs))
    >>> x = Projection(16, name="proj")(x)
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="fc")(x))
    >>> graph = tsp.DependencyGraph(model)
    >>> [(g.producers, g.size) for g in graph.prunable_groups]
    [(('conv',), 8), (('proj',), 16)]
    >>> small = tsp.remove_channels(model, {graph.group_of("conv").id: [0, 1, 2]}, graph=graph)
    >>> tuple(small.get_layer("scale").gamma.shape), tuple(small.get_layer("proj").kernel.shape)
    ((5,), (5, 16))
    >>> tsp.count_flops(model, by_layer=True)["proj"]  # 2 * (4 * 4 * 16) * 8
    4096
    >>> tsp.prunable.why_not_prunable(model.get_layer("proj")) is None
    True
"""

from __future__ import annotations

import keras

from tf_sparse_prune.layer_rules.base import (
    ChannelContext,
    LayerNotSupported,
    LayerRule,
    known_dims,
    register_rule,
    registered_rules,
    rule_for,
    unregister_rule,
)
from tf_sparse_prune.layer_rules.channelwise import (
    ActivationRule,
    BatchNormRule,
    LayerNormRule,
    NormalizationRule,
    PassThroughRule,
    PReLURule,
    RescalingRule,
)
from tf_sparse_prune.layer_rules.elementwise import (
    ElementwiseOpRule,
    PerChannelWeightsRule,
    applications_layer_classes,
    elementwise_op_classes,
)
from tf_sparse_prune.layer_rules.kernels import (
    ConvRule,
    DenseRule,
    DepthwiseConvRule,
    SeparableConvRule,
)
from tf_sparse_prune.layer_rules.shapes import ConcatenateRule, MergeRule, ReshapeRule

__all__ = [
    "ActivationRule",
    "BatchNormRule",
    "ChannelContext",
    "ConcatenateRule",
    "ConvRule",
    "DenseRule",
    "DepthwiseConvRule",
    "ElementwiseOpRule",
    "LayerNormRule",
    "LayerNotSupported",
    "LayerRule",
    "MergeRule",
    "NormalizationRule",
    "PReLURule",
    "PassThroughRule",
    "PerChannelWeightsRule",
    "RescalingRule",
    "ReshapeRule",
    "SeparableConvRule",
    "known_dims",
    "register_rule",
    "registered_rules",
    "rule_for",
    "unregister_rule",
]

L = keras.layers

_PASS_THROUGH = (
    L.ReLU,
    L.LeakyReLU,
    L.ELU,
    L.Dropout,
    L.SpatialDropout1D,
    L.SpatialDropout2D,
    L.SpatialDropout3D,
    L.GaussianDropout,
    L.GaussianNoise,
    L.AlphaDropout,
    L.ActivityRegularization,
    L.Identity,
    L.MaxPooling1D,
    L.MaxPooling2D,
    L.MaxPooling3D,
    L.AveragePooling1D,
    L.AveragePooling2D,
    L.AveragePooling3D,
    L.GlobalAveragePooling1D,
    L.GlobalAveragePooling2D,
    L.GlobalAveragePooling3D,
    L.GlobalMaxPooling1D,
    L.GlobalMaxPooling2D,
    L.GlobalMaxPooling3D,
    L.UpSampling1D,
    L.UpSampling2D,
    L.UpSampling3D,
    L.ZeroPadding1D,
    L.ZeroPadding2D,
    L.ZeroPadding3D,
    L.Cropping1D,
    L.Cropping2D,
    L.Cropping3D,
)


def _register_builtin_rules() -> None:
    # Masking stays with the 2-D layouts the structures and the sparse kernels are written for.
    register_rule(L.Conv2D, ConvRule(prunable=True))
    for cls in (L.Conv1D, L.Conv3D):
        register_rule(cls, ConvRule())
    register_rule(L.DepthwiseConv2D, DepthwiseConvRule(prunable=True))
    register_rule(L.DepthwiseConv1D, DepthwiseConvRule())
    register_rule(L.Dense, DenseRule())
    register_rule(L.SeparableConv1D, SeparableConvRule())
    register_rule(L.SeparableConv2D, SeparableConvRule(prunable=True))
    register_rule(L.BatchNormalization, BatchNormRule())
    register_rule(L.LayerNormalization, LayerNormRule())
    register_rule(L.PReLU, PReLURule())
    register_rule(L.Normalization, NormalizationRule())
    register_rule(L.Rescaling, RescalingRule())
    register_rule(L.Activation, ActivationRule())
    passthrough = PassThroughRule()
    for cls in _PASS_THROUGH:
        register_rule(cls, passthrough)
    for cls in (L.Add, L.Subtract, L.Multiply, L.Maximum, L.Minimum):
        register_rule(cls, MergeRule())
    register_rule(L.Average, MergeRule(extra_per_element=1))
    register_rule(L.Concatenate, ConcatenateRule())
    reshape = ReshapeRule()
    for cls in (L.Flatten, L.Reshape):
        register_rule(cls, reshape)
    elementwise = ElementwiseOpRule()
    for cls in elementwise_op_classes():
        register_rule(cls, elementwise)
    applications = applications_layer_classes()
    if "LayerScale" in applications:
        register_rule(applications["LayerScale"], PerChannelWeightsRule(["projection_dim"]))
    if "StochasticDepth" in applications:
        register_rule(applications["StochasticDepth"], passthrough)
    if "CustomScaleLayer" in applications:  # a scaled residual add: one add, one multiply
        register_rule(applications["CustomScaleLayer"], MergeRule(extra_per_element=1))


_register_builtin_rules()
