"""Model plumbing shared by pruning, stripping and reporting: checks, layer walks, cloning.

Example:
    >>> import keras, tf_sparse_prune as tsp
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")])
    >>> [l.name for l in tsp.modeltools.iter_layers(m)]
    ['d']
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import keras

__all__ = ["check_keras3_model", "clone_layers", "iter_layers"]


def check_keras3_model(model: object, what: str = "model") -> None:
    """Raises a clear ``TypeError`` unless ``model`` is a Keras 3 Sequential/functional model."""
    if isinstance(model, keras.Model):
        if not (isinstance(model, keras.Sequential) or _is_functional(model)):
            raise TypeError(
                f"{what} {model.name!r} is a subclassed keras.Model ({type(model).__name__}); "
                "tf_sparse_prune rebuilds Sequential and functional models only. For a subclassed "
                "model, wrap its layers yourself in __init__ with tsp.PruneWrapper(layer, pruner)"
            )
        if not model.built:
            raise ValueError(
                f"{what} {model.name!r} is not built; give it an Input or call "
                "model.build(input_shape) first"
            )
        return
    module = type(model).__module__
    if module.startswith(("tf_keras", "keras.src.engine", "tensorflow.python.keras")) or (
        module.startswith("keras") and hasattr(model, "_is_graph_network")
    ):
        raise TypeError(
            f"{what} is a tf_keras (Keras 2) model ({module}.{type(model).__name__}); "
            "tf_sparse_prune needs Keras 3: build the model with `import keras` (keras>=3), "
            "not tf.keras with TF_USE_LEGACY_KERAS=1 or tf_keras"
        )
    raise TypeError(f"{what} must be a Keras 3 keras.Model, got {type(model).__name__}")


def _is_functional(model: keras.Model) -> bool:
    try:
        from keras.src.models.functional import Functional
    except ImportError:  # pragma: no cover - private path moved
        return hasattr(model, "_run_through_graph")
    return isinstance(model, Functional)


def iter_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Every leaf layer of ``model`` (nested models expanded; input layers skipped).

    A wrapped layer appears once, as its wrapper. Shared layers appear once.
    """
    seen: set[int] = set()

    def walk(m):
        for layer in m.layers:
            if id(layer) in seen or isinstance(layer, keras.layers.InputLayer):
                continue
            seen.add(id(layer))
            if isinstance(layer, keras.Model):
                yield from walk(layer)
            else:
                yield layer

    yield from walk(model)


def clone_layers(
    model: keras.Model,
    replace: Callable[[keras.layers.Layer], keras.layers.Layer | None],
    copy_weights: Callable[[keras.layers.Layer, keras.layers.Layer], None],
) -> keras.Model:
    """Clones ``model`` layer by layer, replacing some layers, and copies all weights.

    Args:
        model: A built Sequential or functional model (nested models are cloned too).
        replace: Called with each original leaf layer; returns its new layer (which
            ``copy_weights`` fills later) or ``None`` for a plain copy.
        copy_weights: Called with ``(original, new)`` for each replaced layer once
            the clone is built.

    Returns:
        The new model; the original is untouched and shares no variables with it.
    """
    clones: dict[int, tuple[keras.layers.Layer, keras.layers.Layer, bool]] = {}

    def clone_function(layer):
        if id(layer) in clones:  # a shared layer stays shared
            return clones[id(layer)][1]
        new = replace(layer)
        replaced = new is not None
        if new is None:
            new = layer.__class__.from_config(layer.get_config())
        clones[id(layer)] = (layer, new, replaced)
        return new

    new_model = keras.models.clone_model(model, clone_function=clone_function, recursive=True)
    for original, new, replaced in clones.values():
        if isinstance(original, keras.Model):
            continue
        if replaced:
            copy_weights(original, new)
        else:
            new.set_weights(original.get_weights())
    return new_model
