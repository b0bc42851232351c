"""Turning a model into a prunable one: ``prune_model`` and ``get_pruner``.

The default selection (``layers=None``) prunes what a 1xN user wants pruned and
leaves the rest dense, each with its reason in :func:`~tf_sparse_prune.sparsity_report`:

* layers the algorithm cannot prune (type, or a structure that does not fit the shape);
* the stem: a convolution with at most :data:`STEM_CHANNELS` input channels (little to
  save, much accuracy to lose);
* ``DepthwiseConv2D`` under a structure whose unit holds one input channel there
  (``OneByN``, ``Block``: nothing runs it sparse); ``Unstructured`` and ``OutputChannel``
  still prune it (N:M needs ``C_in`` in groups of ``m`` and never fits it);
* layers whose rows are too short for the target under the algorithm's
  :class:`~tf_sparse_prune.Floor` (a 32-channel 1x16 layer at 0.8: two blocks per row;
  under a global budget, as SMART's, only rows of a single block);
* the classifier: the layer whose output is the model's output.

``layers="all"`` prunes every layer the algorithm can, and a list of names prunes exactly
those (up to the floor).

Example:
    >>> import keras, tf_sparse_prune as tsp
    >>> model = keras.Sequential([keras.Input((28, 28, 1)),
    ...     keras.layers.Conv2D(32, 3, name="c1"), keras.layers.Conv2D(32, 3, name="c2"),
    ...     keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(16, name="fc")])
    >>> pruned = tsp.prune_model(model, tsp.Magnitude(0.5, tsp.OneByN(16)))
    >>> for r in tsp.sparsity_report(pruned):
    ...     print(f"{r.layer}: {r.reason or 'pruned'}")
    c1: stem: 1 input channel (<= 4); name it in layers= to prune it
    c2: pruned
    fc: the classifier (its output is the model's output); name it in layers= to prune it
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras

from tf_sparse_prune.algorithms.base import PruningAlgorithm
from tf_sparse_prune.callbacks import attach
from tf_sparse_prune.modeltools import (
    check_keras3_model,
    clone_layers,
    copy_variables,
    iter_layers,
    seed_weights,
)
from tf_sparse_prune.prunable import prunable_weights, why_not_prunable
from tf_sparse_prune.structures import StructureError, canonical_shape
from tf_sparse_prune.wrappers import PruneWrapper, collect_wrappers

__all__ = [
    "STEM_CHANNELS",
    "default_exclusion",
    "get_pruner",
    "plan_pruning",
    "prunability",
    "prune_model",
]

LayerSelection = None | str | Sequence[str] | Callable[[keras.layers.Layer], bool]

#: a convolution with at most this many input channels is the stem (left dense by default)
STEM_CHANNELS = 4


def prunability(layer: keras.layers.Layer, algorithm: PruningAlgorithm) -> str | None:
    """``None`` if ``algorithm`` can prune ``layer``, else why not (one line)."""
    reason = why_not_prunable(layer)
    if reason is not None:
        return reason
    algorithm.structure_for(layer)
    for var, depthwise in prunable_weights(layer):
        shape = tuple(int(d) for d in var.shape)
        try:
            algorithm.check_layer(layer, shape, depthwise)
        except StructureError as e:
            return f"kernel {shape}: {e}"
    return None


def default_exclusion(
    layer: keras.layers.Layer, algorithm: PruningAlgorithm, classifiers: frozenset[str]
) -> str | None:
    """Why ``layers=None`` leaves a prunable ``layer`` dense, or ``None`` to prune it."""
    hint = "; name it in layers= to prune it"
    if layer.name in classifiers:
        return f"the classifier (its output is the model's output){hint}"
    structure = algorithm.structure_for(layer)
    target = getattr(algorithm, "sparsity", None)
    groups = int(getattr(layer, "groups", 1) or 1)
    for var, depthwise in prunable_weights(layer):
        shape = tuple(int(d) for d in var.shape)
        _taps, c_in, _c_out = canonical_shape(shape, depthwise)
        # a grouped conv with one input channel per group is a depthwise conv (ConvNeXt's)
        per_channel = depthwise or (groups > 1 and c_in == 1)
        if per_channel and not structure.prunes_depthwise_by_default:
            kind = "DepthwiseConv2D" if depthwise else f"a depthwise conv (groups={groups})"
            return (
                f"{kind} under {structure.name()}: each unit holds one input "
                f"channel, so no sparse kernel skips it{hint}"
            )
        c_in *= groups  # the layer's input channels, for the stem test
        if not depthwise and len(shape) > 2 and c_in <= STEM_CHANNELS:
            plural = "s" if c_in > 1 else ""
            return f"stem: {c_in} input channel{plural} (<= {STEM_CHANNELS}){hint}"
        if target is not None:
            reachable = algorithm.max_sparsity(layer, shape, depthwise)
            # a global budget only needs the layer to be prunable at all
            if reachable + 1e-9 < (1e-9 if algorithm.global_budget else target):
                return (
                    f"rows of {structure.row_length(shape, depthwise)} {structure.name()} "
                    f"blocks: the floor ({algorithm.floor!r}) allows at most sparsity "
                    f"{reachable:.3g} < {target:g}{hint} (up to the floor)"
                )
    return None


def _classifiers(model: keras.Model) -> frozenset[str]:
    """Names of the layers with weights whose output reaches a model output through
    weightless layers only (activations, reshapes, dropout)."""
    found = set()
    outputs = list(getattr(model, "outputs", None) or [])
    seen = set()
    while outputs:
        tensor = outputs.pop()
        history = getattr(tensor, "_keras_history", None)
        if history is None or id(tensor) in seen:
            continue
        seen.add(id(tensor))
        op = history[0]
        if isinstance(op, keras.Model):
            outputs.extend(getattr(op, "outputs", None) or [])
        elif isinstance(op, keras.layers.InputLayer):
            continue
        elif op.weights:
            found.add(op.name)
        else:
            node = op._inbound_nodes[history[1]]
            inputs = keras.tree.flatten(node.arguments.keras_tensors)
            if len(inputs) == 1:  # a merge of several tensors is not a classifier's tail
                outputs.extend(inputs)
    return frozenset(found)


@dataclass(frozen=True)
class Decision:
    """Whether one layer is pruned, and why not."""

    layer: str
    pruned: bool
    reason: str = ""


def plan_pruning(
    model: keras.Model, algorithm: PruningAlgorithm, layers: LayerSelection = None
) -> dict[str, Decision]:
    """Which layers ``prune_model`` would wrap, by layer name, with the reasons.

    Raises:
        ValueError: for a name in ``layers`` that is not a layer of the model, or a
            named layer the algorithm cannot prune (the message says why).
        TypeError: for a ``layers`` argument of the wrong type.
    """
    all_layers = [layer for layer in iter_layers(model) if layer.weights]
    by_name = {layer.name: layer for layer in all_layers}
    named: set[str] = set()
    default = layers is None
    if default or layers == "all":

        def selected(layer):
            return True
    elif isinstance(layers, str):
        raise ValueError(
            f"layers={layers!r} is invalid; pass None (the default selection), 'all' (every "
            f"layer the pruner can prune), a list of layer names, or a predicate"
        )
    elif callable(layers):
        selected = layers
    elif isinstance(layers, (list, tuple, set, frozenset)) and all(
        isinstance(n, str) for n in layers
    ):
        named = set(layers)
        missing = sorted(named - set(by_name))
        if missing:
            raise ValueError(
                f"layers={sorted(named)!r}: no layer named {missing} in model {model.name!r}; "
                f"layers with weights: {sorted(by_name)}"
            )

        def selected(layer):
            return layer.name in named
    else:
        raise TypeError(
            f"layers={layers!r} is invalid; pass None (the default selection), 'all' (every "
            f"layer the pruner can prune), a list of layer names, or a predicate taking a "
            f"layer and returning a bool"
        )
    classifiers = _classifiers(model) if default else frozenset()
    decisions = {}
    for layer in all_layers:
        reason = prunability(layer, algorithm)
        if layer.name in named and reason is not None:
            raise ValueError(
                f"layer {layer.name!r} was named in layers= but cannot be pruned: {reason}"
            )
        if reason is None and default:
            reason = default_exclusion(layer, algorithm, classifiers)
        if reason is None and not selected(layer):
            reason = "not selected by layers="
        decisions[layer.name] = Decision(layer.name, reason is None, reason or "")
    return decisions


def prune_model(
    model: keras.Model, pruner: PruningAlgorithm, layers: LayerSelection = None
) -> keras.Model:
    """Returns a copy of ``model`` whose selected layers are wrapped for pruning.

    The original model is left untouched; the copy starts from its weights.
    Layers that cannot be pruned (unsupported type, or a structure that does not
    fit their shape) stay dense and appear in :func:`~tf_sparse_prune.sparsity_report`
    with the reason.

    Args:
        model: A built Keras 3 Sequential or functional model (nested models allowed).
        pruner: The pruning algorithm, e.g. ``tsp.Magnitude(0.75, tsp.OneByN(16))``.
        layers: ``None`` for the default selection (the module doc: stem, classifier,
            1xN depthwise and layers too small for the floor stay dense), ``"all"`` for
            every layer the pruner can prune, a list of layer names (each must be
            prunable, else ``ValueError``), or a predicate ``layer -> bool`` (over the
            layers the pruner can prune).

    Returns:
        The pruned model (uncompiled). Train it with ``callbacks=pruner.callbacks()``.
    """
    check_keras3_model(model)
    if not isinstance(pruner, PruningAlgorithm):
        raise TypeError(
            f"pruner={pruner!r} is not a pruning algorithm; pass e.g. tsp.Magnitude(sparsity=0.75)"
        )
    if collect_wrappers(model):
        raise ValueError(
            f"model {model.name!r} is already pruned (it has PruneWrapper layers); continue "
            "training it, or call tsp.strip_pruning(model) first"
        )
    decisions = plan_pruning(model, pruner, layers)

    def replace(layer):
        decision = decisions.get(layer.name)
        if decision is None or not decision.pruned:
            return None
        inner = layer.__class__.from_config(layer.get_config())
        seed_weights(inner, layer.weights)
        return PruneWrapper(inner, pruner)

    def copy_weights(original, wrapper):
        copy_variables(original.weights, wrapper.layer.weights)

    pruned = clone_layers(model, replace, copy_weights)
    # the report's reasons for this selection (a loaded model recomputes the default ones)
    pruned._tsp_left_dense = {d.layer: d.reason for d in decisions.values() if not d.pruned}
    wrapped = collect_wrappers(pruned)
    if not wrapped:
        candidates = {layer.name for layer in all_kernels(model)}
        skipped = "; ".join(
            f"{d.layer}: {d.reason}" for d in decisions.values() if d.layer in candidates
        )
        raise ValueError(
            f"no layer of model {model.name!r} can be pruned by {type(pruner).__name__} "
            f"with {pruner.structure.name()} ({skipped})"
        )
    return pruned


def all_kernels(model: keras.Model) -> list[keras.layers.Layer]:
    """The leaf layers that hold a kernel (a weight of two or more dimensions)."""
    return [layer for layer in iter_layers(model) if any(len(w.shape) >= 2 for w in layer.weights)]


def get_pruner(model: keras.Model) -> PruningAlgorithm:
    """The pruning algorithm of a pruned (e.g. freshly loaded) model, shared by its wrappers.

    Example:
        >>> # pruner = tsp.get_pruner(keras.models.load_model("pruned.keras"))
        >>> # model.fit(..., callbacks=pruner.callbacks())
    """
    wrappers = collect_wrappers(model)
    if not wrappers:
        raise ValueError(f"model {model.name!r} has no PruneWrapper layers; it is not pruned")
    algorithm = wrappers[0].algorithm
    attach(algorithm, model)
    return algorithm
