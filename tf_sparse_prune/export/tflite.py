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
from typing import Any

import keras
import numpy as np

from tf_sparse_prune.modeltools import is_graph_model, iter_layers
from tf_sparse_prune.prunable import prunable_weights, why_not_prunable
from tf_sparse_prune.wrappers import collect_wrappers

__all__ = ["TFLiteSparsityCheck", "check_tflite_sparsity", "export_tflite", "tflite_layout"]


#: ``export_tflite``'s ``quantize`` values and what each gives
QUANTIZE_MODES = {
    None: "float32 weights and activations",
    "dynamic": "int8 weights, float32 activations (dynamic-range quantization)",
    "int8": "int8 activations, per-channel symmetric int8 weights, int32 biases "
    "(full-integer quantization; needs representative_data)",
}

#: the input and output types ``quantize="int8"`` can give the flatbuffer
IO_DTYPES = ("float32", "int8")


def export_tflite(
    model: keras.Model,
    path: str | os.PathLike | None = None,
    *,
    quantize: str | None = None,
    representative_data: Any = None,
    calibration_samples: int = 256,
    io_dtype: str = "float32",
) -> bytes:
    """Converts a Keras 3 model to a TFLite flatbuffer, float32 or quantized.

    A model that still holds pruning wrappers is stripped first, and a model with
    mixed-precision (or other non-float32) layers is exported with every layer in
    float32, so the flatbuffer's float weights, inputs and outputs are float32. The
    argument is left as it was: a Sequential or functional model is copied; a
    subclassed model (which may hold :class:`~tf_sparse_prune.PruneWrapper` layers)
    is stripped and set to float32 in place while it is converted, then restored.

    Zero weights stay exact zeros in every mode (check with
    :func:`check_tflite_sparsity`): float32 applies no optimization, and int8 weights
    are symmetric (zero point 0), so a zero weight quantizes to 0.

    Args:
        model: A built Keras 3 model (Sequential, functional or subclassed).
        path: If given, the flatbuffer is also written there.
        quantize: ``None`` (float32), ``"dynamic"`` (int8 weights, float activations)
            or ``"int8"`` (full-integer: every op runs in int8; an op TFLite cannot
            quantize is an error, not a silent float fallback).
        representative_data: For ``quantize="int8"``: inputs to calibrate the
            activation ranges on, a numpy array (or a list / dict of arrays for a
            model with several inputs) of samples, an ``(x, y)`` tuple of arrays, a
            ``tf.data.Dataset`` or any other iterable of batches (``(x, y[, w])``
            elements are read as ``x``), or a callable returning such an iterable.
        calibration_samples: How many samples of ``representative_data`` calibrate.
        io_dtype: With ``quantize="int8"``: ``"float32"`` keeps float inputs and outputs
            (quantized at the edges of the graph), ``"int8"`` makes them int8 (quantize
            them with the scale and zero point in the interpreter's input details).

    Returns:
        The flatbuffer bytes.

    Raises:
        ValueError: for a ``quantize`` or ``io_dtype`` outside the values above, int8
            without ``representative_data`` (or with data that yields no sample), or
            ``representative_data`` / ``io_dtype`` given where they have no effect.

    Example:
        >>> import keras, numpy as np, tf_sparse_prune as tsp
        >>> m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, name="fc")])
        >>> data = np.random.default_rng(0).standard_normal((32, 8)).astype("float32")
        >>> k = m.get_layer("fc").kernel
        >>> _ = k.assign(np.where(np.arange(8)[:, None] % 2 == 0, k.numpy(), 0.0))
        >>> flat = tsp.export_tflite(m, quantize="int8", representative_data=data)
        >>> [(c.layer, c.dtype, c.preserved) for c in tsp.check_tflite_sparsity(m, flat)]
        [('fc', 'int8', True)]
    """
    import tensorflow as tf

    from tf_sparse_prune.export.strip import deployable

    _check_quantize_args(quantize, representative_data, calibration_samples, io_dtype)
    with deployable(model) as final, tempfile.TemporaryDirectory() as tmp:
        saved = os.path.join(tmp, "saved_model")
        final.export(saved, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        if quantize is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "int8":
            samples = _calibration_batches(representative_data, calibration_samples)
            converter.representative_dataset = lambda: iter(samples)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if io_dtype == "int8":
                converter.inference_input_type = tf.int8
                converter.inference_output_type = tf.int8
        flat = converter.convert()
    if path is not None:
        with open(path, "wb") as f:
            f.write(flat)
    return flat


def _check_quantize_args(quantize, data, samples, io_dtype) -> None:
    if quantize not in QUANTIZE_MODES:
        valid = "; ".join(f"{k!r}: {v}" for k, v in QUANTIZE_MODES.items())
        raise ValueError(f"export_tflite: quantize={quantize!r} is not one of {valid}")
    if io_dtype not in IO_DTYPES:
        raise ValueError(f"export_tflite: io_dtype={io_dtype!r} is not one of {IO_DTYPES}")
    if quantize == "int8":
        if data is None:
            raise ValueError(
                "export_tflite: quantize='int8' needs representative_data, inputs to "
                "calibrate the activation ranges on (e.g. a few hundred training images: "
                "an array of samples or a tf.data.Dataset); quantize='dynamic' needs none"
            )
        if isinstance(samples, bool) or not isinstance(samples, int) or samples <= 0:
            raise ValueError(
                f"export_tflite: calibration_samples={samples!r} must be a positive integer"
            )
        return
    if data is not None:
        raise ValueError(
            f"export_tflite: representative_data is only read with quantize='int8' "
            f"(got quantize={quantize!r}); drop it, or pass quantize='int8'"
        )
    if io_dtype != "float32":
        raise ValueError(
            f"export_tflite: io_dtype={io_dtype!r} needs quantize='int8' (got "
            f"quantize={quantize!r}): only a full-integer model has int8 inputs and outputs"
        )


def _calibration_batches(data: Any, limit: int) -> list:
    """Up to ``limit`` samples of ``data`` as the converter's list of input batches."""
    import tensorflow as tf

    if callable(data) and not isinstance(data, tf.data.Dataset):
        data = data()
    if isinstance(data, tuple) and data and isinstance(data[0], (np.ndarray, dict)):
        data = data[0]  # (x, y) arrays
    if isinstance(data, (np.ndarray, dict)):
        data = [data]  # one batch of samples
    batches, seen = [], 0
    for element in data:
        x = element[0] if isinstance(element, tuple) else element  # (x, y[, w]) -> x
        x = tf.nest.map_structure(lambda a: np.asarray(a, np.float32), x)
        size = len(tf.nest.flatten(x)[0])
        take = min(size, limit - seen)
        x = tf.nest.map_structure(lambda a, take=take: a[:take], x)
        batches.append(
            x if isinstance(x, dict) else list(x) if isinstance(x, (list, tuple)) else [x]
        )
        seen += take
        if seen >= limit:
            break
    if not seen:
        raise ValueError("export_tflite: representative_data yielded no sample to calibrate on")
    # one sample per step: the converter's calibration runs whatever batch it is given
    return [
        tf.nest.map_structure(lambda a, i=i: a[i : i + 1], batch)
        for batch in batches
        for i in range(len(tf.nest.flatten(batch)[0]))
    ]


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
        preserved: Whether the flatbuffer holds the kernel with every zero in place:
            a float32 tensor with exactly the same zero positions, or a quantized
            (int8) one that is zero wherever the kernel is (rounding may add zeros).
        dtype: The matched tensor's type, ``"float32"`` or ``"int8"`` (``""`` if none).
    """

    layer: str
    zeros: int
    tflite_tensor: str
    tflite_zeros: int
    preserved: bool
    dtype: str = ""


def check_tflite_sparsity(model: keras.Model, flatbuffer: bytes) -> list[TFLiteSparsityCheck]:
    """Checks that every sparse kernel of ``model`` kept its exact zero pattern in TFLite.

    Each Keras kernel with zeros is put in TFLite's layout and compared with the
    flatbuffer's float32 and int8 constants of that shape. Values may differ (the
    converter folds BatchNorm scales into conv filters, and quantizes), zero positions
    may not: a float32 tensor must have exactly the kernel's zeros; an int8 one
    (``export_tflite(quantize=...)``) must be zero wherever the kernel is, and may hold
    more zeros (weights that round to 0; ``tflite_zeros`` counts them).

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
        if detail["dtype"] not in (np.float32, np.int8):
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
        candidates = constants.get(tuple(kernel.shape), [])
        exact = [(n, v) for n, v in candidates if np.array_equal(v == 0, zeros)]
        # an int8 kernel may hold more zeros than the float one: the fewest extra first
        covering = sorted(
            ((n, v) for n, v in candidates if v.dtype == np.int8 and not np.any(v[zeros])),
            key=lambda nv: int((nv[1] == 0).sum()),
        )
        if exact or covering:
            name, value = (exact or covering)[0]
            check = TFLiteSparsityCheck(
                layer.name,
                int(zeros.sum()),
                name,
                int((value == 0).sum()),
                True,
                np.dtype(value.dtype).name,
            )
        else:
            best = max((int((v == 0).sum()) for _, v in candidates), default=0)
            check = TFLiteSparsityCheck(layer.name, int(zeros.sum()), "", best, False)
        checks.append(check)
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
