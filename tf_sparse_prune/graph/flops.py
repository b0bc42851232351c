"""FLOPs and parameter counts of a Keras model, per layer, from its shapes.

FLOP convention: **one multiply-accumulate is two FLOPs** (a multiply and an add), and one
elementwise operation is one FLOP. Per call, with ``out`` the number of output elements of
one example:

================================  ==========================================================
layer                             FLOPs
================================  ==========================================================
``Conv1D/2D/3D`` (also grouped)   ``2 * out * kh * kw * C_in / groups`` (+ ``out`` for bias)
``DepthwiseConv1D/2D``            ``2 * out * kh * kw`` (+ ``out`` for the bias)
``SeparableConv1D/2D``            depthwise ``2 * mid * kh * kw`` with ``mid`` its output
                                  elements, then pointwise ``2 * out * C_in * m``
                                  (+ ``out`` for the bias)
``Dense``                         ``2 * out * in_features`` (+ ``out`` for the bias)
``BatchNormalization``            ``2 * out`` (inference: a scale and a shift per element)
``Add``, ``Subtract``,            ``(n_inputs - 1) * out`` (``Average`` adds ``out`` for
``Multiply``, ``Maximum``,        the division)
``Minimum``, ``Average``
anything else                     0 (activations, pooling, LayerNorm, reshapes, ...)
================================  ==========================================================

Each count is the ``flops`` method of the layer's rule in :mod:`tf_sparse_prune.layer_rules`
(a layer type without a rule counts 0; register a rule to count your own layers).

The pruning literature's "FLOPs" (e.g. "ResNet-20: 41M FLOPs") usually counts
multiply-accumulates of the convolutions and dense layers only; that number is
``tf_sparse_prune.models.count_macs``, about half of :func:`count_flops`.

Example:
    >>> import keras
    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(inputs)
    >>> x = keras.layers.BatchNormalization(name="bn")(x)
    >>> model = keras.Model(inputs, x)
    >>> count_flops(model, by_layer=True)  # conv: 2 * 8*8*4 * 3*3*3, bn: 2 * 8*8*4
    {'conv': 13824, 'bn': 512}
    >>> count_params(model)  # kernel 108 + gamma, beta, moving mean, moving variance 4 * 4
    124
"""

from __future__ import annotations

import math

import keras
from keras import layers

from tf_sparse_prune.graph._walk import check_graph_model, is_graph_model, ordered_nodes
from tf_sparse_prune.layer_rules import rule_for

__all__ = ["count_flops", "count_params"]


def _layer_flops(layer: keras.layers.Layer, node) -> int:
    """FLOPs of one call, from the layer's rule (0 for a layer type without one)."""
    while isinstance(layer, layers.Wrapper):  # e.g. a pruning wrapper: count the inner layer
        layer = layer.layer
    rule = rule_for(layer) if isinstance(layer, keras.layers.Layer) else None
    if rule is None or not node.outputs:
        return 0
    inputs = [tuple(t.shape[1:]) for t in node.arguments.keras_tensors]
    outputs = [tuple(t.shape[1:]) for t in node.outputs]
    return int(rule.flops(layer, inputs, outputs))


def _walk(model: keras.Model, prefix: str, totals: dict[str, int]) -> None:
    for node in ordered_nodes(model):
        layer = node.operation
        if isinstance(layer, layers.InputLayer):
            continue
        path = prefix + layer.name
        if isinstance(layer, keras.Model) and is_graph_model(layer):
            _walk(layer, path + "/", totals)
            continue
        flops = _layer_flops(layer, node)
        if flops:
            totals[path] = totals.get(path, 0) + flops


def count_flops(model: keras.Model, *, by_layer: bool = False) -> int | dict[str, int]:
    """FLOPs for one example through ``model`` (convention in the module docstring).

    A layer called more than once counts once per call; nested models are expanded (their
    layers appear as ``"<model>/<layer>"``); a layer inside a ``keras.layers.Wrapper``
    counts as the wrapped layer, densely (zero weights are not skipped).

    Args:
        model: A built Sequential or functional model with fixed spatial dimensions.
        by_layer: Return ``{layer path: FLOPs}`` for the layers that have any, in graph
            order, instead of the total.

    Returns:
        The total FLOPs (``int``) or the per-layer dictionary.

    Raises:
        TypeError: for a subclassed model (it has no layer graph to count from).
        ValueError: if a counted layer's output shape has unknown dimensions.

    Example:
        >>> from tf_sparse_prune.models import resnet20
        >>> count_flops(resnet20())
        82113802
    """
    check_graph_model(model, "count_flops")
    totals: dict[str, int] = {}
    _walk(model, "", totals)
    return totals if by_layer else sum(totals.values())


def count_params(model: keras.Model, *, trainable_only: bool = False) -> int:
    """Number of scalar weights of ``model``, each shared variable counted once.

    Args:
        model: A built Keras model (any kind).
        trainable_only: Count only trainable weights (leaving out e.g. BatchNorm's moving
            mean and variance).

    Returns:
        The count, as an ``int``.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> count_params(model)
        15
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"count_params needs a keras.Model, got {type(model).__name__}")
    variables = model.trainable_weights if trainable_only else model.weights
    unique = {id(v): v for v in variables}
    return sum(math.prod(v.shape) for v in unique.values())
