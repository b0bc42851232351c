"""Physical channel removal: a new, smaller Keras model with the surviving weights copied.

What the smaller model computes. Removing channels of a group is exact: the smaller model's
output equals the *masked* original, the original model with every consumer input row of
the removed channels set to zero (the kernel rows of the Conv/Dense/SeparableConv layers that
read them, including the strided rows after a ``Flatten``). That is the model in which the
removed channels still exist but contribute nothing downstream. Zeroing the producer's
filters instead would not do: a BatchNorm after it still emits ``beta`` (and a bias its
value) on those channels, and that reaches the next layer. The two coincide only when the
removed channels are exactly zero where they leave the group.

Example:
    >>> import keras, numpy as np
    >>> inputs = keras.Input((6, 6, 3))
    >>> x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    >>> x = keras.layers.BatchNormalization(name="bn")(x)
    >>> outputs = keras.layers.Dense(2, name="fc")(keras.layers.GlobalAveragePooling2D()(x))
    >>> model = keras.Model(inputs, outputs)
    >>> from tf_sparse_prune.graph import DependencyGraph
    >>> group = DependencyGraph(model).group_of("conv")
    >>> small = remove_channels(model, {group.id: [0, 5, 7]})
    >>> small.get_layer("conv").filters, tuple(small.get_layer("fc").kernel.shape)
    (5, (5, 2))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import numpy as np

from tf_sparse_prune.graph._walk import check_graph_model, functional_of, is_graph_model
from tf_sparse_prune.graph.dependency import DependencyGraph
from tf_sparse_prune.layer_rules import rule_for

__all__ = ["remove_channels"]


def remove_channels(
    model: keras.Model,
    removal: Mapping[int, Sequence[int]],
    *,
    graph: DependencyGraph | None = None,
) -> keras.Model:
    """Builds a new model without the given channels, copying every surviving weight.

    Every layer touched by a removed channel is rebuilt from its config as its layer rule's
    ``shrink_config`` says (new ``filters`` / ``units``, a ``Reshape``'s ``target_shape``, a
    per-channel ``Rescaling`` scale, ...; see :mod:`tf_sparse_prune.layer_rules`), and its
    weights are the kept
    slices of the original's: kernels on their output and input axes, biases, BatchNorm
    gamma/beta/moving statistics, depthwise channels, LayerNorm and PReLU parameters, the
    strided input rows of a ``Dense`` after a ``Flatten``. Untouched layers are plain copies.
    Layer names, nesting and sharing are kept; the original model is not modified.

    Args:
        model: A built Sequential or functional model.
        removal: ``{group id: channel indices to remove}``; ids and indices as in
            ``DependencyGraph(model).groups`` (an empty mapping gives a plain copy).
        graph: The model's :class:`DependencyGraph` if already built (e.g. with
            ``allow_layernorm=True``); built here otherwise.

    Returns:
        The smaller model. Its output equals the original's with the removed channels
        masked (see the module docstring).

    Raises:
        TypeError: for a subclassed model (channels can be masked there, not removed),
            or a removal that is not a ``{int: indices}`` mapping.
        ValueError: for an unknown or unprunable group, an index out of range, a removal of
            every channel of a group or of one of its producers (possible when a
            ``Concatenate`` feeds an ``Add``), or a graph built for another model; the message
            names the group or layer and what is valid.

    Example:
        >>> import keras
        >>> from tf_sparse_prune.models import resnet20
        >>> model = resnet20()
        >>> graph = DependencyGraph(model)
        >>> stage3 = graph.group_of("s3b1_proj").id
        >>> small = remove_channels(model, {stage3: range(32)}, graph=graph)
        >>> small.get_layer("s3b3_add").output.shape
        (None, 8, 8, 32)
        >>> tuple(small.get_layer("classifier").kernel.shape)
        (32, 10)
    """
    check_graph_model(model, "remove_channels")
    if graph is None:
        graph = DependencyGraph(model)
    elif graph.model is not model:
        raise ValueError(
            f"graph was built for another model ({graph.model.name!r}), not for this "
            f"{model.name!r}; pass the DependencyGraph of this model object (or none)"
        )
    plan, widths = graph._plan(removal)
    clones: dict[int, tuple[keras.layers.Layer, keras.layers.Layer]] = {}
    new_model = _rebuild(model, plan, widths, clones, top=True)
    for original, new in clones.values():
        if isinstance(original, keras.Model) or not isinstance(original, keras.layers.Layer):
            continue  # nested models are filled layer by layer; keras.ops calls hold no weights
        weights = original.get_weights()
        for wi, axes in plan.get(id(original), ({}, {}))[1].items():
            for axis, keep in axes:
                weights[wi] = np.take(weights[wi], keep, axis=axis)
        new.set_weights(weights)
        if callable(getattr(new, "finalize_state", None)):  # e.g. Normalization caches its
            new.finalize_state()  # statistics as tensors, as after loading a saved model
    return new_model


def _rebuild(
    model: keras.Model,
    plan: dict[int, tuple[dict, dict]],
    widths: dict[int, list[int]],
    clones: dict[int, tuple[keras.layers.Layer, keras.layers.Layer]],
    top: bool = False,
) -> keras.Model:
    """Clones ``model`` with the planned configs; nested models get inputs of their new width."""

    def clone_function(layer: keras.layers.Layer) -> keras.layers.Layer:
        if id(layer) in clones:  # a shared layer or nested model stays shared
            return clones[id(layer)][1]
        if isinstance(layer, keras.Model) and is_graph_model(layer):
            new = _rebuild(layer, plan, widths, clones)
        else:
            config = layer.get_config()
            kept = plan.get(id(layer), ({}, {}))[0]
            if kept:  # only layers with a rule record config keys
                config = rule_for(layer).shrink_config(layer, config, kept)
            new = layer.__class__.from_config(config)
        clones[id(layer)] = (layer, new)
        return new

    input_tensors = None
    if not top and id(model) in widths:
        input_tensors = [
            keras.Input(batch_shape=(*t.shape[:-1], width), dtype=t.dtype, name=t.name)
            for t, width in zip(functional_of(model).inputs, widths[id(model)], strict=True)
        ]
        if isinstance(model, keras.Sequential):
            input_tensors = input_tensors[0]
        else:  # the structure of model.input (a tensor, list or dict)
            input_tensors = keras.tree.pack_sequence_as(model._inputs_struct, input_tensors)
    return keras.models.clone_model(
        model, input_tensors=input_tensors, clone_function=clone_function
    )
