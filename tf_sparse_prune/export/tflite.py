"""TFLite (LiteRT) export, and a check that the zeros survived conversion.

Example:
    >>> import keras, tf_sparse_prune as tsp
    >>> m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, name="fc")])
    >>> flat = tsp.export_tflite(m)
    >>> flat[4:8]
    b'TFL3'
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import keras
import numpy as np

from tf_sparse_prune.modeltools import is_graph_model, iter_layers
from tf_sparse_prune.prunable import prunable_weights, why_not_prunable
from tf_sparse_prune.wrappers import collect_wrappers

__all__ = ["TFLiteSparsityCheck", "check_tflite_sparsity", "export_tflite", "tflite_layout"]


def export_tflite(model: keras.Model, path: str | os.PathLike | None = None) -> bytes:
    """Converts a Keras 3 model to a float32 TFLite flatbuffer.

    A model that still holds pruning wrappers is stripped first, and a model with
    mixed-precision (or other non-float32) layers is exported with every layer in
    float32, so the flatbuffer's weights, inputs and outputs are float32. The
    argument is left as it was: a Sequential or functional model is copied; a
    subclassed model (which may hold :class:`~tf_sparse_prune.PruneWrapper` layers)
    is stripped and set to float32 in place while it is converted, then restored.
    No quantization or other optimization is applied, so zero weights stay exact
    zeros (check with :func:`check_tflite_sparsity`).

    Args:
        model: A built Keras 3 model (Sequential, functional or subclassed).
        path: If given, the flatbuffer is also written there.

    Returns:
        The flatbuffer bytes.
    """
    import tensorflow as tf

    from tf_sparse_prune.export.strip import deployable

    with deployable(model) as final, tempfile.TemporaryDirectory() as tmp:
        saved = os.path.join(tmp, "saved_model")
        final.export(saved, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        flat = converter.convert()
    if path is not None:
        with open(path, "wb") as f:
            f.write(flat)
    return flat


def tflite_layout(kernel: np.ndarray, layer: keras.layers.Layer) -> np.ndarray:
    """A Keras kernel in TFLite's layout: CONV_2D OHWI, FC (O, I), depthwise 1HW(C*M)."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw, c, m = kernel.shape
        return kernel.reshape(1, kh, kw, c * m)
    if kernel.ndim == 4:
        return np.transpose(kernel, (3, 0, 1, 2))
    if kernel.ndim == 2:
        return kernel.T
    return kernel


@dataclass(frozen=True)
class TFLiteSparsityCheck:
    """Whether one layer's zero pattern is found, bit for bit, in the flatbuffer.

    Attributes:
        layer: The Keras layer name.
        zeros: Zero weights in the Keras kernel.
        tflite_tensor: Name of the TFLite constant whose zero pattern equals it, or ``""``.
        tflite_zeros: Zero weights in that tensor (or in the closest same-shape one).
        preserved: Whether a tensor with exactly the same zero positions exists.
    """

    layer: str
    zeros: int
    tflite_tensor: str
    tflite_zeros: int
    preserved: bool


def check_tflite_sparsity(model: keras.Model, flatbuffer: bytes) -> list[TFLiteSparsityCheck]:
    """Checks that every sparse kernel of ``model`` kept its exact zero pattern in TFLite.

    Each Keras kernel with zeros is put in TFLite's layout and compared with the
    flatbuffer's float32 constants of that shape. Values may differ (the converter
    folds BatchNorm scales into conv filters), zero positions may not.

    Args:
        model: The stripped Keras model that was converted (the result of
            :func:`~tf_sparse_prune.strip_pruning`).
        flatbuffer: The bytes from :func:`export_tflite`.

    Returns:
        One :class:`TFLiteSparsityCheck` per kernel holding zeros (never empty).

    Raises:
        ValueError: if ``model`` still holds ``PruneWrapper`` layers (its kernels are
            not yet masked: strip it first), or if no prunable kernel of ``model``
            holds a single zero (nothing was pruned, so there is nothing to check).

    Example:
        >>> import keras, numpy as np, tf_sparse_prune as tsp
        >>> m = keras.Sequential([keras.Input((16,)), keras.layers.Dense(16, name="fc")])
        >>> k = m.get_layer("fc").kernel
        >>> _ = k.assign(np.where(np.arange(16)[:, None] % 2 == 0, k.numpy(), 0.0))
        >>> [(c.layer, c.zeros, c.preserved) for c in tsp.check_tflite_sparsity(
        ...     m, tsp.export_tflite(m))]
        [('fc', 128, True)]
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    wrappers = collect_wrappers(model)
    if wrappers:
        raise ValueError(
            f"check_tflite_sparsity: model {model.name!r} still holds PruneWrapper layers "
            f"({', '.join(w.name for w in wrappers[:4])}{', ...' if len(wrappers) > 4 else ''}); "
            "its kernels are not masked yet. Pass the stripped model that was converted: "
            "final = tsp.strip_pruning(model); flat = tsp.export_tflite(final); "
            "tsp.check_tflite_sparsity(final, flat)"
        )
    layers = _kernel_layers(model)
    kernels = [
        (layer, tuple(var.shape), tflite_layout(var.numpy(), layer))
        for layer in layers
        for var, _ in prunable_weights(layer)
    ]
    if not any((kernel == 0).any() for _, _, kernel in kernels):
        checked = ", ".join(f"{layer.name} {shape}" for layer, shape, _ in kernels)
        raise ValueError(
            f"check_tflite_sparsity: no prunable kernel of model {model.name!r} holds a zero "
            f"weight, so nothing was pruned and there is nothing to check (checked the "
            f"prunable kernels: "
            f"{checked or 'none found'}). Train the pruned model with "
            "callbacks=pruner.callbacks() so its masks update, then strip and export it"
        )
    interp = Interpreter(
        model_content=flatbuffer,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interp.allocate_tensors()
    constants: dict[tuple[int, ...], list[tuple[str, np.ndarray]]] = {}
    for detail in interp.get_tensor_details():
        if detail["dtype"] != np.float32:
            continue
        try:
            value = interp.get_tensor(detail["index"])
        except ValueError:  # not a constant
            continue
        constants.setdefault(tuple(value.shape), []).append((detail["name"], value))
    checks = []
    for layer, _, kernel in kernels:
        zeros = kernel == 0
        if not zeros.any():
            continue
        best_name, best_zeros, preserved = "", 0, False
        for name, value in constants.get(tuple(kernel.shape), []):
            if np.array_equal(value == 0, zeros):
                best_name, best_zeros, preserved = name, int(zeros.sum()), True
                break
            best_zeros = max(best_zeros, int((value == 0).sum()))
        checks.append(
            TFLiteSparsityCheck(layer.name, int(zeros.sum()), best_name, best_zeros, preserved)
        )
    return checks


def _kernel_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every prunable layer of ``model``: nested models and a subclassed model's layers too."""
    if is_graph_model(model):
        return [layer for layer in iter_layers(model) if why_not_prunable(layer) is None]
    seen: set[int] = set()
    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if id(layer) not in seen and why_not_prunable(layer) is None:
            seen.add(id(layer))
            found.append(layer)
    return found
