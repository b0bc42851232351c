"""Accuracy of pruned models after int8 quantization, against the same models in float32.

For each model (``fashion_cnn``; ``resnet20`` on 28x28x1 input), 1x16 Magnitude sparsity
and seed, the Fashion-MNIST recipe (benchmarks/recipe.py) trains the pruned model; the
stripped model is then exported three ways and each flatbuffer is scored on the full
10,000-image test set with the stock interpreter:

* ``fp32``: ``export_tflite(final)``;
* ``int8``: ``export_tflite(final, quantize="int8", representative_data=...)``, calibrated
  on the first 256 training images (full-integer: int8 activations, per-channel int8
  weights; float32 input and output);
* ``dynamic``: ``export_tflite(final, quantize="dynamic")`` (int8 weights only).

Each row also says whether every pruned zero survived (``check_tflite_sparsity``) and the
int8 accuracy's change from fp32 in points (the target: within 0.5). Every finished run is
merged into ``benchmarks/results/quantized_accuracy.json`` at once.

Example::

    python benchmarks/quantized_accuracy.py --models fashion_cnn --sparsities 0.75 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import recipe  # noqa: E402

OUT = HERE / "results" / "quantized_accuracy.json"
MODELS = ("fashion_cnn", "resnet20")
CALIBRATION = 256


def build(name: str):
    import tf_sparse_prune as tsp

    if name == "resnet20":
        return lambda: tsp.models.resnet20(input_shape=(28, 28, 1))
    return tsp.models.fashion_cnn


def tflite_accuracy(flat: bytes, x: np.ndarray, y: np.ndarray, batch: int = 500) -> float:
    """Top-1 accuracy of a flatbuffer with float32 input and output, stock interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=flat, num_threads=2)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.resize_tensor_input(inp["index"], (batch, *x.shape[1:]))
    interp.allocate_tensors()
    correct = 0
    for i in range(0, len(x), batch):
        chunk = x[i : i + batch]
        if len(chunk) < batch:  # the last, shorter batch
            interp.resize_tensor_input(inp["index"], chunk.shape)
            interp.allocate_tensors()
        interp.set_tensor(inp["index"], chunk)
        interp.invoke()
        correct += int((interp.get_tensor(out["index"]).argmax(-1) == y[i : i + batch]).sum())
    return correct / len(x)


def run(model_name: str, sparsity: float, seed: int, data, epochs: int, verbose: int) -> dict:
    import accuracy
    from latency import machine_info

    import tf_sparse_prune as tsp

    variant = f"magnitude_1x16_{sparsity}"
    _, factory = accuracy._variants()[variant]
    final, row = accuracy.train_variant(
        variant, factory, data, epochs, recipe.TRAIN_SIZE, seed, verbose, build=build(model_name)
    )
    (x, _), (xt, yt) = data
    row = {"model": model_name, **row}
    for mode, kwargs in (
        ("fp32", {}),
        ("int8", {"quantize": "int8", "representative_data": x[:CALIBRATION]}),
        ("dynamic", {"quantize": "dynamic"}),
    ):
        start = time.perf_counter()
        flat = tsp.export_tflite(final, **kwargs)
        checks = tsp.check_tflite_sparsity(final, flat)
        row[f"{mode}_tflite_acc"] = tflite_accuracy(flat, xt, yt)
        row[f"{mode}_zeros_preserved"] = all(c.preserved for c in checks)
        row[f"{mode}_bytes"] = len(flat)
        row[f"{mode}_export_seconds"] = round(time.perf_counter() - start, 1)
    row["int8_minus_fp32_points"] = 100 * (row["int8_tflite_acc"] - row["fp32_tflite_acc"])
    row["calibration_samples"] = CALIBRATION
    row.update(machine_info())
    return row


def merge(row: dict) -> None:
    def key(r):
        return (r["model"], r["variant"], r["seed"], r["epochs"])

    rows = json.loads(OUT.read_text()) if OUT.exists() else []
    rows = [r for r in rows if key(r) != key(row)] + [row]
    rows.sort(key=key)
    OUT.write_text(json.dumps(rows, indent=1) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.75, 0.9])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=recipe.EPOCHS)
    parser.add_argument("--verbose", type=int, default=0)
    args = parser.parse_args(argv)

    import tf_sparse_prune as tsp

    data = tsp.load_fashion_mnist()
    for model_name in args.models:
        for sparsity in args.sparsities:
            for seed in args.seeds:
                row = run(model_name, sparsity, seed, data, args.epochs, args.verbose)
                merge(row)
                print(
                    f"{model_name} 1x16@{sparsity} seed {seed}: fp32 {row['fp32_tflite_acc']:.4f} "
                    f"int8 {row['int8_tflite_acc']:.4f} "
                    f"({row['int8_minus_fp32_points']:+.2f} points), "
                    f"dynamic {row['dynamic_tflite_acc']:.4f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
