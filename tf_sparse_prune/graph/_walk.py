"""Walking the layer graph of Keras 3 Sequential and functional models (private helpers)."""

from __future__ import annotations

import keras

__all__ = ["check_graph_model", "functional_of", "is_graph_model", "ordered_nodes"]


def is_graph_model(model: object) -> bool:
    """Whether ``model`` is a Sequential or functional Keras 3 model (it has a layer graph)."""
    if isinstance(model, keras.Sequential):
        return True
    try:
        from keras.src.models.functional import Functional
    except ImportError:  # pragma: no cover - private path moved
        return isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth")
    return isinstance(model, Functional)


def check_graph_model(model: object, what: str) -> None:
    """Raises a clear error unless ``model`` is a built Sequential or functional model."""
    if isinstance(model, keras.Model) and not is_graph_model(model):
        raise TypeError(
            f"{what} needs a Sequential or functional model; {model.name!r} is a subclassed "
            f"keras.Model ({type(model).__name__}). Its call() is Python code, so which channels "
            "feed which layers cannot be read from it and channels cannot be removed physically: "
            "prune it by masking only (tsp.PruneWrapper around its layers), or rebuild it with "
            "the functional API"
        )
    from tf_sparse_prune.modeltools import check_keras3_model

    check_keras3_model(model, what)


def functional_of(model: keras.Model) -> keras.Model:
    """The functional graph behind ``model`` (a Sequential holds one in ``_functional``)."""
    if isinstance(model, keras.Sequential):
        if model._functional is None:
            raise ValueError(
                f"Sequential model {model.name!r} is not built: give it a keras.Input or call "
                "build() with an input shape first"
            )
        return model._functional
    return model


def ordered_nodes(model: keras.Model) -> list:
    """The call nodes of ``model``'s own graph, inputs first (topological order)."""
    by_depth = functional_of(model)._nodes_by_depth
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]
