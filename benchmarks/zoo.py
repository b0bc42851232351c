"""The model zoo: every pruning method through the README's whole chain on real architectures.

One run is one (architecture, method) pair, done as a new user following the README would:
``prune_model`` -> ``fit`` with ``pruner.callbacks()`` -> ``sparsity_report`` ->
``strip_pruning`` -> ``.keras`` round trip -> ``export_tflite`` ->
``check_tflite_sparsity`` -> ``SparseInterpreter`` vs the stock interpreter (OCSPruner
runs its own ``pruner.fit`` instead of the first two steps). Models come from
``keras.applications`` (``weights=None``, ``classes=10``, the smallest input each accepts
from 64 up) plus a subclassed model whose convolutions the user wraps in
``tsp.PruneWrapper`` and a functional residual net built from operators on Keras tensors.
Data is random, training is a few steps: the zoo checks that the chain works, not accuracy.

A run passes when every step runs and:

* no layer is emptied (``sparsity_report(...).warnings`` is empty: no all-zero kernel and
  no layer cut off from the input), else ``"dead layer"``;
* the stripped model's output depends on its input (two random inputs give outputs that
  differ by more than 1e-6), else ``"output independent of input"``;
* every zero pattern is in the flatbuffer bit for bit (``check_tflite_sparsity``);
* the delegate's output equals the stock interpreter's on the same input, within 1e-4
  relative to the output's magnitude (``max |delegate - stock| <= 1e-4 * max(1, |stock|)``).

Before the checks the stripped model's ``BatchNormalization`` layers take the statistics of
16 random inputs (:func:`recalibrate_batchnorm`): after a few steps of ``fit`` their moving
statistics are still the initial ones, and an untrained deep network's signal then vanishes
whatever the pruning did (a dense MobileNetV2 gives the same logits for every input).

``python benchmarks/zoo.py [--arch A ...] [--method M ...] [--force] [--timeout S]`` runs
the matrix, each run in its own subprocess (``--run ARCH METHOD --out FILE``) so a crash,
an out-of-memory kill or a timeout is recorded rather than fatal. A run whose JSON already
exists in ``benchmarks/results/zoo/`` is skipped (``--force`` reruns it); after every run
its file is written and ``benchmarks/results/zoo.json`` is rebuilt from all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RUNS_DIR = RESULTS / "zoo"
SUMMARY = RESULTS / "zoo.json"

#: the smallest input side each architecture accepts from 64 up (keras.applications' minima:
#: 75 for InceptionV3, 71 for Xception; 32 for the rest)
ARCH_SIZES = {
    "ResNet50": 64,
    "ResNet50V2": 64,
    "MobileNet": 64,
    "MobileNetV2": 64,
    "MobileNetV3Small": 64,
    "EfficientNetB0": 64,
    "EfficientNetV2B0": 64,
    "DenseNet121": 64,
    "ConvNeXtTiny": 64,
    "Xception": 71,
    "InceptionV3": 75,
    "NASNetMobile": 64,
    "subclassed": 64,
    "operators": 64,
}
ARCHS = list(ARCH_SIZES)

#: the family each architecture belongs to (the test covers every family once)
FAMILIES = {
    "ResNet50": "ResNet",
    "ResNet50V2": "ResNet",
    "MobileNet": "MobileNet",
    "MobileNetV2": "MobileNet",
    "MobileNetV3Small": "MobileNet",
    "EfficientNetB0": "EfficientNet",
    "EfficientNetV2B0": "EfficientNet",
    "DenseNet121": "DenseNet",
    "ConvNeXtTiny": "ConvNeXt",
    "Xception": "Xception",
    "InceptionV3": "Inception",
    "NASNetMobile": "NASNet",
    "subclassed": "subclassed",
    "operators": "operators",
}

#: the methods in the order the matrix runs them (the 1x16 ones first)
METHODS = [
    "magnitude_1x16",
    "subp_1x16",
    "smart_1x16",
    "pdp_1x16",
    "ocs_0.5",
    "magnitude_unstructured",
    "smart_block16x8",
    "subp_1x32",
    "pdp_2:4",
]

SPARSITY = 0.8
#: |delegate - stock| / max(1, |stock|) above this fails the run
DELEGATE_TOLERANCE = 1e-4
#: outputs of two different inputs closer than this count as "independent of the input"
INPUT_DEPENDENCE = 1e-6
#: inputs whose statistics the BatchNormalization layers take before the checks
CALIBRATION_SAMPLES = 16
#: characters of an exception message kept in the status
MESSAGE_CHARS = 300


def _keras():
    import keras

    return keras


# ------------------------------------------------------------------------------ models


def _subclassed_class() -> type:
    keras = _keras()
    import tf_sparse_prune as tsp

    name = "ZooSubclassedNet"
    registered = keras.saving.get_registered_object(f"tf_sparse_prune>{name}")
    if registered is not None:
        return registered
    layers = keras.layers

    @keras.saving.register_keras_serializable(package="tf_sparse_prune", name=name)
    class ZooSubclassedNet(keras.Model):
        """A small subclassed CNN whose convolutions are wrapped in ``tsp.PruneWrapper`` in
        ``__init__``, as the README advises for subclassed models (``pruner=None``: plain)."""

        def __init__(self, pruner=None, width: int = 32, classes: int = 10, **kwargs):
            super().__init__(**kwargs)
            if isinstance(pruner, dict):
                pruner = keras.saving.deserialize_keras_object(pruner)
            self.pruner, self.width, self.classes = pruner, width, classes

            def wrap(layer):
                return tsp.PruneWrapper(layer, pruner) if pruner is not None else layer

            w = width
            self.stem = layers.Conv2D(w, 3, strides=2, padding="same", name="stem")
            self.bn0 = layers.BatchNormalization(name="bn0")
            self.c1 = wrap(layers.Conv2D(2 * w, 3, padding="same", name="c1"))
            self.bn1 = layers.BatchNormalization(name="bn1")
            self.c2 = wrap(layers.Conv2D(2 * w, 3, padding="same", name="c2"))
            self.bn2 = layers.BatchNormalization(name="bn2")
            self.c3 = wrap(layers.Conv2D(4 * w, 3, strides=2, padding="same", name="c3"))
            self.bn3 = layers.BatchNormalization(name="bn3")
            self.fc = wrap(layers.Dense(4 * w, name="fc"))
            self.head = layers.Dense(classes, name="head")

        def call(self, x, training=False):
            ops = keras.ops
            h = ops.relu(self.bn0(self.stem(x), training=training))
            h = ops.relu(self.bn1(self.c1(h), training=training))
            h = h + ops.relu(self.bn2(self.c2(h), training=training))
            h = ops.relu(self.bn3(self.c3(h), training=training))
            h = ops.relu(self.fc(ops.mean(h, axis=(1, 2))))
            return self.head(h)

        def get_config(self):
            from tf_sparse_prune.wrappers import PruneWrapper

            # once stripped in place the layers are plain: rebuild it without wrappers
            wrapped = isinstance(self.c1, PruneWrapper)
            pruner = keras.saving.serialize_keras_object(self.pruner) if wrapped else None
            return {"pruner": pruner, "width": self.width, "classes": self.classes}

    return ZooSubclassedNet


def operators_net(size: int, width: int = 32, classes: int = 10):
    """A functional residual net built from operators on Keras tensors: ``h = a + b`` and
    ``keras.ops`` calls between the layers."""
    keras = _keras()
    layers, ops = keras.layers, keras.ops
    inputs = keras.Input((size, size, 3), name="image")
    x = layers.Conv2D(width, 3, strides=2, padding="same", name="stem")(inputs)
    x = ops.relu(x)
    x = layers.Conv2D(2 * width, 1, name="expand")(x)
    for i in range(2):
        h = ops.relu(layers.Conv2D(2 * width, 3, padding="same", name=f"b{i}_a")(x))
        h = layers.Conv2D(2 * width, 3, padding="same", name=f"b{i}_b")(h)
        x = ops.relu(x + h)
    x = layers.Conv2D(4 * width, 3, strides=2, padding="same", name="down")(x)
    x = ops.relu(x) * 0.5 + ops.sigmoid(x) * 0.5
    x = ops.mean(x, axis=(1, 2))
    x = layers.Dense(4 * width, name="fc")(x)
    outputs = layers.Dense(classes, name="head")(ops.relu(x))
    return keras.Model(inputs, outputs, name="operators")


def build_model(arch: str, size: int | None = None, pruner: Any = None):
    """The architecture's model at ``size`` x ``size`` x 3 with 10 classes (``weights=None``).

    ``pruner`` is used only by ``"subclassed"``, whose layers are wrapped at construction.

    Raises:
        ValueError: for an unknown architecture.
    """
    keras = _keras()
    if arch not in ARCH_SIZES:
        raise ValueError(f"zoo: unknown architecture {arch!r}; valid: {', '.join(ARCHS)}")
    size = size or ARCH_SIZES[arch]
    if arch == "subclassed":
        model = _subclassed_class()(pruner=pruner)
        model(np.zeros((1, size, size, 3), "float32"))  # builds the wrappers' masks
        return model
    if arch == "operators":
        return operators_net(size)
    constructor = getattr(keras.applications, arch)
    # logits, so the delegate-vs-stock and input-dependence checks are not flattened by softmax
    return constructor(
        weights=None, input_shape=(size, size, 3), classes=10, classifier_activation=None
    )


def tiny_model(arch: str, size: int = 32):
    """A small member of the architecture's family, for tests: the family's own constructor
    (``keras.src.applications``, which the public ``ResNet50``-style functions call) with
    fewer blocks, or the public constructor with a small ``alpha``. InceptionV3 has no such
    constructor: its first Inception block (through ``mixed0``, with its four-branch
    concatenation) under a new classifier; NASNet, even with one block per stage, holds
    363 layers: its stem and first reduction cell under a new classifier; Xception: its
    entry flow through its second residual Add (input 71); MobileNet and EfficientNetB0:
    their first blocks. Graph tracing costs about a millisecond per op, so the test suite's
    members stop after the first blocks that hold each family's layer types.

    Raises:
        ValueError: for an unknown architecture.
    """
    keras = _keras()
    from keras.src.applications import (
        convnext,
        densenet,
        efficientnet,
        efficientnet_v2,
        nasnet,
        resnet,
    )

    common = {"weights": None, "classes": 10, "classifier_activation": None}
    shape = (size, size, 3)

    def resnet_stack(v2: bool):
        stack = resnet.stack_residual_blocks_v2 if v2 else resnet.stack_residual_blocks_v1

        def stack_fn(x):
            # v2 names its first and last block alike: two blocks is its smallest stack
            x = stack(x, 16, 2, stride1=1, name="conv2")
            return stack(x, 32, 2, name="conv3")

        return stack_fn

    builders: dict[str, Callable[[], Any]] = {
        "ResNet50": lambda: resnet.ResNet(
            resnet_stack(False), False, True, input_shape=shape, name="resnet_tiny", **common
        ),
        "ResNet50V2": lambda: resnet.ResNet(
            resnet_stack(True), True, True, input_shape=shape, name="resnetv2_tiny", **common
        ),
        # through its fourth depthwise-separable block (two of them strided, with padding)
        "MobileNet": lambda: _truncated(
            keras.applications.MobileNet(input_shape=shape, alpha=0.5, **common), "conv_pw_4_relu"
        ),
        "MobileNetV2": lambda: keras.applications.MobileNetV2(
            input_shape=shape, alpha=0.35, **common
        ),
        "MobileNetV3Small": lambda: keras.applications.MobileNetV3Small(
            input_shape=shape, alpha=0.75, **common
        ),
        # through its third MBConv block (expansion, depthwise, squeeze-and-excitation)
        "EfficientNetB0": lambda: _truncated(
            efficientnet.EfficientNet(
                1.0, 0.1, size, input_shape=shape, name="efficientnet_tiny", **common
            ),
            "block3a_project_bn",
        ),
        "EfficientNetV2B0": lambda: efficientnet_v2.EfficientNetV2(
            1.0, 0.1, size, input_shape=shape, name="efficientnetv2_tiny", **common
        ),
        "DenseNet121": lambda: densenet.DenseNet(
            [1, 1, 1, 1], input_shape=shape, name="densenet_tiny", **common
        ),
        "ConvNeXtTiny": lambda: convnext.ConvNeXt(
            [1, 1, 1, 1],
            [32, 64, 128, 256],
            default_size=size,
            input_shape=shape,
            name="convnext_tiny",
            **common,
        ),
        # its stem and first reduction cell (separable convs, pooling branches, the
        # concatenation), 16 channels wide at penultimate_filters=1536
        "NASNetMobile": lambda: _truncated(
            nasnet.NASNet(
                shape,
                penultimate_filters=1536,
                num_blocks=1,
                stem_block_filters=16,
                default_size=size,
                name="nasnet_tiny",
                **common,
            ),
            "reduction_concat_stem_1",
        ),
    }
    if arch == "InceptionV3":
        return _truncated(build_model(arch, max(size, ARCH_SIZES[arch])), "mixed0")
    if arch == "Xception":  # its first three residual blocks of separable convolutions
        model = build_model(arch, max(size, ARCH_SIZES[arch]))
        # the second Add (automatic layer names depend on what the process built before)
        adds = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Add)]
        return _truncated(model, adds[1])

    if arch in builders:
        return builders[arch]()
    return build_model(
        arch, max(size, ARCH_SIZES[arch]) if arch in ("Xception", "InceptionV3") else size
    )


def _truncated(model, last: str):
    """``model`` up to layer ``last``, with a pooled ``Dense`` classifier of 10 classes."""
    keras = _keras()
    x = keras.layers.GlobalAveragePooling2D(name="tiny_pool")(model.get_layer(last).output)
    out = keras.layers.Dense(10, name="tiny_predictions")(x)
    return keras.Model(model.input, out, name=f"{model.name}_to_{last}")


# ------------------------------------------------------------------------------ methods


def make_method(method: str) -> tuple[Any, int]:
    """The pruner of a method name and the epochs its short run needs.

    Raises:
        ValueError: for an unknown method.
    """
    import tf_sparse_prune as tsp
    from tf_sparse_prune.algorithms.ocspruner import OCSPruner

    s = SPARSITY
    factories: dict[str, Callable[[], tuple[Any, int]]] = {
        "magnitude_1x16": lambda: (tsp.Magnitude(s, tsp.OneByN(16)), 3),
        "magnitude_unstructured": lambda: (tsp.Magnitude(s), 3),
        "subp_1x16": lambda: (tsp.SUBP(s, n=16, regrow_start_epoch=0, regrow_end_epoch=2), 3),
        "subp_1x32": lambda: (tsp.SUBP(s, n=32, regrow_start_epoch=0, regrow_end_epoch=2), 3),
        "smart_1x16": lambda: (tsp.SMART(s, tsp.OneByN(16), search_epochs=2), 3),
        "smart_block16x8": lambda: (tsp.SMART(s, tsp.Block(16, 8), search_epochs=2), 3),
        "pdp_1x16": lambda: (tsp.PDP(s, tsp.OneByN(16), ramp=0.5), 3),
        "pdp_2:4": lambda: (tsp.PDP(structure=tsp.NM(2, 4), ramp=0.5), 3),
        "ocs_0.5": lambda: (
            OCSPruner(0.5, stability_lag=1, stability_window=1, start_epoch=0, last_search_epoch=1),
            3,
        ),
    }
    if method not in factories:
        raise ValueError(f"zoo: unknown method {method!r}; valid: {', '.join(METHODS)}")
    return factories[method]()


# ------------------------------------------------------------------------------ one run


class _Failed(Exception):
    """A check of the chain failed (the run goes on to record the remaining steps)."""


def _truncate(text: str, n: int = MESSAGE_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _invoke(interp: Any, x: np.ndarray) -> np.ndarray:
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"]).copy()


def run(
    arch: str,
    method: str,
    *,
    size: int | None = None,
    batch: int = 4,
    steps: int = 2,
    epochs: int | None = None,
    seed: int = 0,
    model_fn: Callable[[Any], Any] | None = None,
    progress: Callable[[dict], None] | None = None,
) -> dict[str, Any]:
    """Runs one architecture x method through the README's chain and records what happened.

    Args:
        arch: An architecture of :data:`ARCHS`.
        method: A method of :data:`METHODS`.
        size: Input side (``None``: the architecture's zoo size, :data:`ARCH_SIZES`).
        batch: Batch size of ``fit``.
        steps: Steps per epoch.
        epochs: Epochs of ``fit`` (``None``: what the method's short run needs).
        seed: ``keras.utils.set_random_seed`` and the random data's seed.
        model_fn: Builds the model instead of :func:`build_model` (called with the pruner,
            used by the subclassed model only); for smaller variants in tests.
        progress: Called with the record after every step (the subprocess writes it).

    Returns:
        The record: ``status`` (``"ok"``, or the first failing step, exception type and
        message), ``failures`` (every failed check), ``timings_s`` per step, the layers
        pruned and left with reason counts, report warnings, ``input_dependence``,
        ``keras_round_trip_max_diff``, ``tflite_sparsity``, delegate nodes claimed and
        declined, ``max_abs_delegate_vs_stock`` and ``max_abs_tflite_vs_keras``.

    Example:
        >>> import sys; sys.path.insert(0, "benchmarks")
        >>> import zoo
        >>> record = zoo.run("operators", "magnitude_1x16", size=32)  # doctest: +SKIP
        >>> record["status"]  # doctest: +SKIP
        'ok'
    """
    keras = _keras()
    import tf_sparse_prune as tsp

    record: dict[str, Any] = {
        "arch": arch,
        "family": FAMILIES.get(arch, arch),
        "library_commit": _latency().library_commit(),
        "method": method,
        "size": size or ARCH_SIZES.get(arch),
        "batch": batch,
        "steps_per_epoch": steps,
        "seed": seed,
        "status": "running",
        "failures": [],
        "timings_s": {},
    }
    step = "setup"

    def note(current: str) -> None:
        nonlocal step
        step = current
        record["step"] = current
        if progress is not None:
            progress(record)

    def fail(check: str, detail: str) -> None:
        record["failures"].append(f"{check}: {_truncate(detail)}")

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        note(name)
        start = time.perf_counter()
        try:
            return fn()
        finally:
            record["timings_s"][name] = round(time.perf_counter() - start, 3)

    try:
        keras.utils.set_random_seed(seed)
        pruner, default_epochs = make_method(method)
        epochs = epochs or default_epochs
        record["epochs"] = epochs
        ocs = method.startswith("ocs")
        size = record["size"] = size or ARCH_SIZES[arch]
        builder = model_fn or (lambda p: build_model(arch, size, p))
        model = timed("build", lambda: builder(None if ocs else pruner))
        record["params"] = int(model.count_params())
        rng = np.random.default_rng(seed)
        n = batch * steps
        x = rng.standard_normal((n, size, size, 3)).astype("float32")
        y = rng.integers(0, 10, n)
        subclassed = arch == "subclassed"
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        if ocs:
            model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
            # the user's path first: OCSPruner's own error, not a helper's, is the result
            final, history = timed(
                "ocspruner_fit",
                lambda: pruner.fit(model, x, y, epochs=epochs, batch_size=batch, verbose=0),
            )
            record["flops_before"] = int(history.get("flops_before", tsp.count_flops(model)))
            record["flops_after"] = int(history.get("flops_after", tsp.count_flops(final)))
            record["t_star"] = history.get("t_star")
            pruned = final
        else:
            pruned = (
                model
                if subclassed
                else timed("prune_model", lambda: tsp.prune_model(model, pruner))
            )
            pruned.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
            timed(
                "fit",
                lambda: pruned.fit(
                    x, y, batch_size=batch, epochs=epochs, verbose=0, callbacks=pruner.callbacks()
                ),
            )

        report = timed("sparsity_report", lambda: tsp.sparsity_report(pruned))
        rows = list(report)
        record["layers_pruned"] = sum(r.pruned for r in rows)
        record["layers_left"] = sum(not r.pruned for r in rows)
        record["left_reasons"] = dict(
            Counter(_reason_kind(r.reason) for r in rows if not r.pruned).most_common()
        )
        record["total_sparsity"] = round(float(report.total_sparsity), 4)
        record["warnings"] = [_truncate(w, 200) for w in report.warnings]
        if report.warnings:
            fail("dead layer", "; ".join(report.warnings))
        if not ocs and record["layers_pruned"] == 0:
            fail("nothing pruned", "the default selection left every layer dense")

        def strip():
            with warnings.catch_warnings():
                # OCSPruner's result holds no wrappers: strip_pruning warns and returns it
                warnings.simplefilter("ignore", UserWarning)
                return tsp.strip_pruning(pruned)

        final = timed("strip_pruning", strip)
        probe = rng.standard_normal((2, size, size, 3)).astype("float32")
        raw = np.asarray(final.predict(probe, verbose=0))
        record["input_dependence_as_trained"] = float(np.max(np.abs(raw[0] - raw[1])))
        calibration = rng.standard_normal((CALIBRATION_SAMPLES, size, size, 3)).astype("float32")
        timed("recalibrate_batchnorm", lambda: recalibrate_batchnorm(final, calibration))
        keras_out = np.asarray(final.predict(probe, verbose=0))
        dependence = float(np.max(np.abs(keras_out[0] - keras_out[1])))
        record["input_dependence"] = dependence
        if not dependence > INPUT_DEPENDENCE:
            fail("output independent of input", f"two inputs differ by {dependence:.3g}")

        def round_trip():
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "final.keras")
                final.save(path)
                loaded = keras.models.load_model(path)
            return float(np.max(np.abs(np.asarray(loaded.predict(probe, verbose=0)) - keras_out)))

        record["keras_round_trip_max_diff"] = timed("keras_round_trip", round_trip)
        if record["keras_round_trip_max_diff"] > 1e-5:
            fail("keras round trip", f"outputs differ by {record['keras_round_trip_max_diff']:.3g}")
        flat = timed("export_tflite", lambda: tsp.export_tflite(final))
        record["tflite_bytes"] = len(flat)

        if ocs:
            record["tflite_sparsity"] = "n/a (channels removed, no zeros)"
        else:
            checks = timed("check_tflite_sparsity", lambda: tsp.check_tflite_sparsity(final, flat))
            lost = [c.layer for c in checks if not c.preserved]
            record["tflite_sparsity"] = {"kernels": len(checks), "not_preserved": lost}
            if lost:
                fail("tflite sparsity", f"zeros not preserved in {lost}")

        def compare():
            from ai_edge_litert.interpreter import Interpreter

            stock = Interpreter(model_content=flat, num_threads=1)
            stock.allocate_tensors()
            sparse = tsp.SparseInterpreter(model_content=flat, num_threads=1)
            sample = probe[:1]
            want, got = _invoke(stock, sample), _invoke(sparse, sample)
            return want, got, tsp.delegated_nodes(sparse)

        want, got, delegation = timed("delegate_vs_stock", compare)
        record["delegate_isa"] = delegation.isa
        record["claimed"] = dict(Counter(node.op for node in delegation.claimed))
        record["claimed_nodes"] = len(delegation.claimed)
        record["declined_reasons"] = dict(
            Counter(_reason_kind(node.reason) for node in delegation.declined).most_common()
        )
        diff = float(np.max(np.abs(got - want)))
        scale = max(1.0, float(np.max(np.abs(want))))
        record["max_abs_delegate_vs_stock"] = diff
        record["max_abs_stock"] = float(np.max(np.abs(want)))
        record["max_abs_tflite_vs_keras"] = float(np.max(np.abs(want - keras_out[:1])))
        if not diff <= DELEGATE_TOLERANCE * scale:
            fail(
                "delegate != stock", f"max |delegate - stock| = {diff:.3g} (|stock| <= {scale:.3g})"
            )
        record.pop("step", None)
        record["status"] = record["failures"][0] if record["failures"] else "ok"
    except Exception as e:
        record["status"] = f"{step}: {type(e).__name__}: {_truncate(e)}"
        # paths relative to the checkout, so a record names no machine's directories
        record["traceback"] = traceback.format_exc().replace(f"{HERE.parent}/", "")[-4000:]
    if progress is not None:
        progress(record)
    return record


def recalibrate_batchnorm(model: Any, x: np.ndarray) -> int:
    """Sets every ``BatchNormalization``'s moving statistics to the statistics of ``x``.

    A few steps of ``fit`` leave the moving statistics near their initial (0, 1) (momentum
    0.99-0.999), and in inference mode an untrained deep network's signal then vanishes:
    a dense MobileNetV2 trained so gives the same logits, to 1e-9, for any input. With the
    statistics of real activations, a layer emptied by pruning still gives a constant
    output (its BatchNormalization normalises zeros to its offset), so the input-dependence
    check tells pruning damage from untrained statistics.

    Returns:
        How many BatchNormalization layers were recalibrated.
    """
    keras = _keras()
    from tf_sparse_prune.modeltools import iter_layers

    layers = [
        layer for layer in iter_layers(model) if isinstance(layer, keras.layers.BatchNormalization)
    ]
    momenta = [layer.momentum for layer in layers]
    try:
        for layer in layers:
            layer.momentum = 0.0  # one training-mode pass copies the batch statistics
        model(x, training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
    return len(layers)


def _reason_kind(reason: str) -> str:
    """A reason reduced to its kind, so reasons count across layers (``"stem"``,
    ``"the classifier"``, ``"DepthwiseConv2D under 1x16"``, ``"floor"``, ...)."""
    if not reason:
        return "?"
    if "floor" in reason:
        return "floor"
    if "below the threshold" in reason:
        return "block sparsity below the claiming threshold"
    if reason.startswith("kernel ("):
        return "structure does not fit"
    head = reason.split(":")[0].split(";")[0].split("(")[0].strip()
    return head[:60]


# ------------------------------------------------------------------------------ driver


def run_file(arch: str, method: str) -> Path:
    """Where the record of one run is kept (``benchmarks/results/zoo/<arch>__<method>.json``)."""
    return RUNS_DIR / f"{arch}__{method.replace(':', '-')}.json"


def _write(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


def _latency():
    """``benchmarks/latency.py`` (machine_info, library_commit), however zoo was imported."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import latency

    return latency


def _machine() -> dict[str, Any]:
    return _latency().machine_info()


def rebuild_summary(machine: dict[str, Any] | None = None) -> dict[str, Any]:
    """Rebuilds ``zoo.json`` from every per-run file (records without their tracebacks)."""
    runs = []
    for path in sorted(RUNS_DIR.glob("*.json")):
        record = json.loads(path.read_text())
        record.pop("traceback", None)
        runs.append(record)
    order = {name: i for i, name in enumerate(ARCHS + METHODS)}
    runs.sort(key=lambda r: (order.get(r.get("arch"), 99), order.get(r.get("method"), 99)))
    if machine is None and SUMMARY.exists():
        machine = json.loads(SUMMARY.read_text()).get("machine")
    summary = {"machine": machine or {}, "runs": runs}
    _write(SUMMARY, summary)
    return summary


def drive(archs: list[str], methods: list[str], force: bool, timeout: float) -> int:
    """Runs each missing (or, with ``force``, every) pair in its own subprocess."""
    machine = _machine()
    failed = 0
    for method in methods:
        for arch in archs:
            out = run_file(arch, method)
            if out.exists() and not force:
                continue
            start = time.time()
            print(f"[zoo] {arch} x {method} ...", flush=True)
            cmd = [sys.executable, str(Path(__file__).resolve()), "--run", arch, method]
            try:
                proc = subprocess.run(
                    [*cmd, "--out", str(out)], capture_output=True, text=True, timeout=timeout
                )
                rc, tail = proc.returncode, (proc.stderr or "")[-1500:]
            except subprocess.TimeoutExpired as e:
                rc, tail = None, (e.stderr or b"")[-1500:]
                tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
            record = json.loads(out.read_text()) if out.exists() else {}
            if rc is None or record.get("status", "running") == "running":
                step = record.get("step", "setup")
                reason = f"timeout after {timeout:g} s" if rc is None else f"crash (exit {rc})"
                record = {
                    **record,
                    "arch": arch,
                    "family": FAMILIES.get(arch, arch),
                    "method": method,
                    "status": f"{step}: {reason}",
                    "stderr_tail": _truncate(tail, 1500),
                }
            record["wall_s"] = round(time.time() - start, 1)
            _write(out, record)
            rebuild_summary(machine)
            failed += record["status"] != "ok"
            print(f"[zoo] {arch} x {method}: {record['status']} ({record['wall_s']} s)", flush=True)
    rebuild_summary(machine)
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=ARCHS, choices=ARCHS)
    parser.add_argument("--method", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--force", action="store_true", help="rerun runs that have a result")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per run")
    parser.add_argument("--run", nargs=2, metavar=("ARCH", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        arch, method = args.run
        out = args.out or run_file(arch, method)
        record = run(arch, method, progress=lambda r: _write(out, r))
        print(record["status"])
        return 0
    failed = drive(args.arch, args.method, args.force, args.timeout)
    print(f"[zoo] done; {failed} run(s) not ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
