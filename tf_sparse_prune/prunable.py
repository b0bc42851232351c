"""Which layers and which of their weights can be pruned.

Built in: ``keras.layers.Conv2D``, ``keras.layers.Dense`` and
``keras.layers.DepthwiseConv2D``, and their subclasses, and the pointwise kernel of
``keras.layers.SeparableConv2D``: their rules in
:mod:`tf_sparse_prune.layer_rules` (found with ``isinstance``) are ``prunable``. A layer
type of your own becomes prunable by registering a rule for it
(``tf_sparse_prune.layer_rules.register_rule``, which also teaches the dependency graph,
FLOP counting and surgery about it), or, for masking only, through a small protocol:
define ``get_prunable_weights()`` returning the kernels to prune. Each kernel's
last axis must be its output axis and the second last its input axis (as for
``Dense`` and ``Conv2D``); set ``prunable_depthwise = True`` on the layer if, like
``DepthwiseConv2D``, its last two axes are ``(channels, multiplier)``. A prunable rule
wins over the protocol.

Example:
    >>> import keras, tf_sparse_prune as tsp
    >>> class MyDense(keras.layers.Layer):
    ...     def build(self, input_shape):
    ...         self.kernel = self.add_weight(shape=(input_shape[-1], 32))
    ...     def call(self, x):
    ...         return x @ self.kernel
    ...     def get_prunable_weights(self):
    ...         return [self.kernel]
    >>> layer = MyDense(); layer.build((None, 64))
    >>> [tuple(v.shape) for v, _ in tsp.prunable.prunable_weights(layer)]
    [(64, 32)]
"""

from __future__ import annotations

import keras

from tf_sparse_prune.layer_rules import rule_for

__all__ = ["UnsupportedLayerError", "prunable_weights", "why_not_prunable"]


class UnsupportedLayerError(TypeError):
    """A layer has no prunable weights that tf_sparse_prune knows how to mask."""


def _rule_prunes(layer: keras.layers.Layer):
    """The layer's rule if it offers kernels for masking, else ``None``."""
    rule = rule_for(layer)
    if rule is not None and rule.why_not_prunable(layer) is None:
        return rule
    return None


def why_not_prunable(layer: keras.layers.Layer) -> str | None:
    """``None`` if ``layer`` is prunable, else a one-line reason."""
    if isinstance(layer, keras.Model):
        return "a nested model (its layers are considered one by one)"
    if _rule_prunes(layer) is not None or callable(getattr(layer, "get_prunable_weights", None)):
        return None
    return (
        f"{type(layer).__name__} is not supported (supported: Conv2D, Dense, DepthwiseConv2D, "
        f"SeparableConv2D and subclasses, a layer whose rule is registered with "
        f"tf_sparse_prune.layer_rules.register_rule, or a layer defining get_prunable_weights())"
    )


def prunable_weights(layer: keras.layers.Layer) -> list[tuple[keras.Variable, bool]]:
    """The kernels to prune in a built layer, each with its ``depthwise`` flag.

    Raises:
        UnsupportedLayerError: if the layer is not prunable (the message says why).
    """
    reason = why_not_prunable(layer)
    if reason is not None:
        raise UnsupportedLayerError(f"layer {layer.name!r}: {reason}")
    rule = _rule_prunes(layer)
    if rule is not None:
        weights = list(rule.prunable_weights(layer))
        if not weights:
            raise UnsupportedLayerError(
                f"layer {layer.name!r}: the prunable rule {type(rule).__name__} returned no "
                "weights from prunable_weights(); it must return [(kernel, depthwise), ...]"
            )
        return weights
    weights = list(layer.get_prunable_weights())
    if not weights:
        raise UnsupportedLayerError(
            f"layer {layer.name!r}: get_prunable_weights() returned nothing"
        )
    depthwise = bool(getattr(layer, "prunable_depthwise", False))
    return [(w, depthwise) for w in weights]
