"""``strip_pruning``: a plain float32 Keras model whose kernels hold exact zeros.

Example:
    >>> import keras, warnings, tf_sparse_prune as tsp
    >>> m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16)])
    >>> with warnings.catch_warnings(record=True):
    ...     tsp.strip_pruning(m) is m      # not pruned: returned unchanged, with a warning
    True
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import keras

from tf_sparse_prune.modeltools import (
    check_keras3_model,
    clone_layers,
    is_graph_model,
    replace_sublayers,
)
from tf_sparse_prune.wrappers import PruneWrapper, collect_wrappers

__all__ = ["strip_pruning"]

# Exported and stripped models compute in float32 whatever policy they trained under:
# TFLite's float kernels (and the sparse delegate) take float32 weights and tensors.
_EXPORT_DTYPE = "float32"


def strip_pruning(model: keras.Model) -> keras.Model:
    """Removes the pruning wrappers, baking each final mask into its kernel.

    The result has no tf_sparse_prune layers (it saves and loads without this
    package), the original layer names, ``+0.0`` where weights are pruned, and the
    float32 dtype policy on every layer, also when the model trained under a
    mixed-precision policy such as ``"mixed_bfloat16"`` (its weights are float32
    already; only the compute dtype changes).

    * A Sequential or functional model (nested models allowed) is **copied**: the
      argument is untouched and shares no variables with the result.
    * A subclassed model holding :class:`~tf_sparse_prune.PruneWrapper` layers
      is **stripped in place** and returned: each wrapper is replaced, wherever the
      model refers to it (attribute, list, dict), by the layer it wraps, whose kernel
      now holds the final masked values. The model can no longer be pruned or
      trained on with its pruner; save it first if you need the wrapped version.

    A model without wrappers is returned unchanged, with a warning.

    Args:
        model: A model returned by :func:`~tf_sparse_prune.prune_model` (trained or
            not), or a built subclassed model holding ``PruneWrapper`` layers.

    Returns:
        The stripped model (uncompiled when copied).

    Raises:
        ValueError: for a subclassed model that was never called (its wrappers are
            not built, so they have no masks yet).
    """
    if isinstance(model, keras.Model) and not collect_wrappers(model):
        warnings.warn(
            f"strip_pruning: model {model.name!r} has no PruneWrapper layers; "
            "returning it unchanged",
            UserWarning,
            stacklevel=2,
        )
        return model
    if isinstance(model, keras.Model) and not is_graph_model(model):
        _strip_in_place(model)
        return model
    check_keras3_model(model)

    def replace(layer):
        if not isinstance(layer, PruneWrapper):
            return None
        config = layer.layer.get_config()
        if "dtype" in config:
            config["dtype"] = _EXPORT_DTYPE
        return layer.layer.__class__.from_config(config)

    def copy_weights(wrapper, new):
        finals = {
            id(var): wrapper.algorithm.final_kernel(wrapper, i)
            for i, (var, _) in enumerate(wrapper.targets)
        }
        new.set_weights(
            [finals.get(id(v)) if id(v) in finals else v.numpy() for v in wrapper.layer.weights]
        )

    return clone_layers(model, replace, copy_weights, dtype=_EXPORT_DTYPE)


def _strip_in_place(model: keras.Model) -> Callable[[], None]:
    """Strips a subclassed model in place; returns a function that undoes it exactly."""
    wrappers = collect_wrappers(model)
    unbuilt = [w.name for w in wrappers if not w.built]
    if unbuilt:
        raise ValueError(
            f"strip_pruning: the PruneWrapper layers {unbuilt} of model {model.name!r} are "
            "not built (no masks yet); call the model on a batch (or train it) first"
        )
    saved = []
    for wrapper in wrappers:
        for i, (var, _) in enumerate(wrapper.targets):
            final = wrapper.algorithm.final_kernel(wrapper, i)
            saved.append((var, var.numpy()))
            var.assign(final)
    replace_sublayers(model, {id(w): w.layer for w in wrappers})
    undo_policies = _set_float32_in_place(model)

    def undo():
        undo_policies()
        replace_sublayers(model, {id(w.layer): w for w in wrappers})
        for var, value in saved:
            var.assign(value)

    return undo


def _set_float32_in_place(model: keras.Model) -> Callable[[], None]:
    """Gives every layer of ``model`` the float32 policy; returns the undo."""
    changed = []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if layer.dtype_policy.name != _EXPORT_DTYPE:
            changed.append((layer, layer.dtype_policy))
            layer.dtype_policy = _EXPORT_DTYPE

    def undo():
        for layer, policy in changed:
            layer.dtype_policy = policy

    return undo


def _is_float32(model: keras.Model) -> bool:
    return all(
        layer.dtype_policy.name == _EXPORT_DTYPE
        for layer in model._flatten_layers(include_self=False, recursive=True)
    )


@contextlib.contextmanager
def deployable(model: keras.Model) -> Iterator[keras.Model]:
    """Yields ``model`` stripped and float32, leaving the argument as it was on exit.

    A Sequential or functional model is copied when it holds wrappers or a layer with
    another dtype policy; a subclassed one is stripped and set to float32 in place
    for the duration of the ``with`` block, then restored (wrappers, kernels,
    policies).

    Example:
        >>> import keras
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, dtype="bfloat16")])
        >>> with deployable(m) as flat_model:
        ...     flat_model.layers[0].dtype_policy.name
        'float32'
        >>> m.layers[0].dtype_policy.name
        'bfloat16'
    """
    if is_graph_model(model):
        if collect_wrappers(model):
            yield strip_pruning(model)
        elif not _is_float32(model):
            yield clone_layers(model, lambda layer: None, None, dtype=_EXPORT_DTYPE)
        else:
            yield model
        return
    undo = _strip_in_place(model) if collect_wrappers(model) else _set_float32_in_place(model)
    try:
        yield model
    finally:
        undo()
