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

from tf_sparse_prune.modeltools import iter_layers
from tf_sparse_prune.prunable import prunable_weights, why_not_prunable
from tf_sparse_prune.wrappers import collect_wrappers

__all__ = ["TFLiteSparsityCheck", "check_tflite_sparsity", "export_tflite", "tflite_layout"]


def export_tflite(model: keras.Model, path: str | os.PathLike | None = None) -> bytes:
    """Converts a Keras 3 model to a float32 TFLite flatbuffer.

    A model that still holds pruning wrappers is stripped first (a copy; the
    argument is untouched). No quantization or other optimization is applied, so
    zero weights stay exact zeros (check with :func:`check_tflite_sparsity`).

    Args:
        model: A Keras 3 model.
        path: If given, the flatbuffer is also written there.

    Returns:
        The flatbuffer bytes.
    """
    import tensorflow as tf

    from tf_sparse_prune.export.strip import strip_pruning

    if collect_wrappers(model):
        model = strip_pruning(model)
    with tempfile.TemporaryDirectory() as tmp:
        saved = os.path.join(tmp, "saved_model")
        model.export(saved, format="tf_saved_model", verbose=False)
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
        model: The (stripped) Keras model that was converted.
        flatbuffer: The bytes from :func:`export_tflite`.

    Returns:
        One :class:`TFLiteSparsityCheck` per kernel holding zeros.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

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
    for layer in iter_layers(model):
        if why_not_prunable(layer) is not None:
            continue
        for var, _ in prunable_weights(layer):
            kernel = tflite_layout(var.numpy(), layer)
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
