"""``strip_pruning``: a plain Keras model whose kernels hold exact zeros.

Example:
    >>> import keras, warnings, tf_sparse_prune as tsp
    >>> m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16)])
    >>> with warnings.catch_warnings(record=True):
    ...     tsp.strip_pruning(m) is m      # not pruned: returned unchanged, with a warning
    True
"""

from __future__ import annotations

import warnings

import keras

from tf_sparse_prune.modeltools import check_keras3_model, clone_layers
from tf_sparse_prune.wrappers import PruneWrapper, collect_wrappers

__all__ = ["strip_pruning"]


def strip_pruning(model: keras.Model) -> keras.Model:
    """Removes the pruning wrappers, baking each final mask into its kernel.

    The result is a new plain Keras model (no tf_sparse_prune layers; it saves and
    loads without this package) with the original layer names and ``+0.0`` where
    weights are pruned. A model without wrappers is returned unchanged, with a
    warning.

    Args:
        model: A model returned by :func:`~tf_sparse_prune.prune_model` (trained or not).

    Returns:
        The stripped model (uncompiled).
    """
    if isinstance(model, keras.Model) and not collect_wrappers(model):
        warnings.warn(
            f"strip_pruning: model {model.name!r} has no PruneWrapper layers; "
            "returning it unchanged",
            UserWarning,
            stacklevel=2,
        )
        return model
    check_keras3_model(model)

    def replace(layer):
        if not isinstance(layer, PruneWrapper):
            return None
        inner = layer.layer
        return inner.__class__.from_config(inner.get_config())

    def copy_weights(wrapper, new):
        finals = {
            id(var): wrapper.algorithm.final_kernel(wrapper, i)
            for i, (var, _) in enumerate(wrapper.targets)
        }
        new.set_weights(
            [finals.get(id(v)) if id(v) in finals else v.numpy() for v in wrapper.layer.weights]
        )

    return clone_layers(model, replace, copy_weights)
