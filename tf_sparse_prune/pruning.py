"""Turning a model into a prunable one: ``prune_model`` and ``get_pruner``.

Example:
    >>> import keras, tf_sparse_prune as tsp
    >>> model = keras.Sequential([keras.Input((28, 28, 1)),
    ...     keras.layers.Conv2D(24, 3, name="c1"), keras.layers.Conv2D(32, 3, name="c2"),
    ...     keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10, name="fc")])
    >>> pruned = tsp.prune_model(model, tsp.Magnitude(0.5, tsp.OneByN(16)))
    >>> [(r.layer, r.pruned) for r in tsp.sparsity_report(pruned)]
    [('c1', False), ('c2', True), ('fc', False)]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras

from tf_sparse_prune.algorithms.base import PruningAlgorithm
from tf_sparse_prune.callbacks import attach
from tf_sparse_prune.modeltools import check_keras3_model, clone_layers, iter_layers
from tf_sparse_prune.prunable import prunable_weights, why_not_prunable
from tf_sparse_prune.structures import StructureError
from tf_sparse_prune.wrappers import PruneWrapper, collect_wrappers

__all__ = ["get_pruner", "plan_pruning", "prunability", "prune_model"]

LayerSelection = None | Sequence[str] | Callable[[keras.layers.Layer], bool]


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
    if layers is None:

        def selected(layer):
            return True
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
            f"layers={layers!r} is invalid; pass None (every supported layer), a list of layer "
            f"names, or a predicate taking a layer and returning a bool"
        )
    decisions = {}
    for layer in all_layers:
        reason = prunability(layer, algorithm)
        if layer.name in named and reason is not None:
            raise ValueError(
                f"layer {layer.name!r} was named in layers= but cannot be pruned: {reason}"
            )
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
        layers: ``None`` for every supported layer, a list of layer names (each must
            be prunable, else ``ValueError``), or a predicate ``layer -> bool``.

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
        return PruneWrapper(layer.__class__.from_config(layer.get_config()), pruner)

    def copy_weights(original, wrapper):
        wrapper.layer.set_weights(original.get_weights())

    pruned = clone_layers(model, replace, copy_weights)
    wrapped = collect_wrappers(pruned)
    if not wrapped:
        skipped = "; ".join(f"{d.layer}: {d.reason}" for d in decisions.values())
        raise ValueError(
            f"no layer of model {model.name!r} can be pruned by {pruner!r} ({skipped})"
        )
    return pruned


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
