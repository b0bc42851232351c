"""The main job, end to end on real data (``make demo``).

Trains the Fashion-MNIST CNN dense, then the same CNN pruned during ``fit`` with
1x16 block magnitude pruning at 75% (stem and classifier left dense), strips the
wrappers, exports both to TFLite, checks the TFLite accuracy and that every zero
survived conversion, runs the pruned model through the 1xN sparse delegate
(same outputs, latency vs stock TFLite), and prints a short table. About 2
minutes on 2 cores.

Run ``python examples/demo.py --help`` for the knobs.
"""

from __future__ import annotations

import argparse
import gzip
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

import tf_sparse_prune as tsp

DENSE = ("stem", "classifier")


def tflite_accuracy(flat: bytes, x: np.ndarray, y: np.ndarray, batch: int = 500) -> float:
    interp = Interpreter(model_content=flat, num_threads=2)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.resize_tensor_input(inp["index"], (batch, *x.shape[1:]))
    interp.allocate_tensors()
    correct = 0
    for i in range(0, len(x) - len(x) % batch, batch):
        interp.set_tensor(inp["index"], x[i : i + batch])
        interp.invoke()
        correct += int((interp.get_tensor(out["index"]).argmax(-1) == y[i : i + batch]).sum())
    return correct / (len(x) - len(x) % batch)


def median_latency_ms(interp, x: np.ndarray, runs: int = 200) -> float:
    inp = interp.get_input_details()[0]["index"]
    interp.set_tensor(inp, x)
    for _ in range(10):
        interp.invoke()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def delegate_check(flat: bytes, x: np.ndarray) -> dict:
    """Stock TFLite vs the sparse delegate on one image, interleaved, 1 thread."""
    stock = Interpreter(model_content=flat, num_threads=1)
    stock.allocate_tensors()
    sparse = tsp.SparseInterpreter(model_content=flat, num_threads=1)
    outs = []
    for interp in (stock, sparse):
        interp.set_tensor(interp.get_input_details()[0]["index"], x)
        interp.invoke()
        outs.append(interp.get_tensor(interp.get_output_details()[0]["index"]).copy())
    stock_ms, sparse_ms = [], []
    for _ in range(3):  # A/B interleaved rounds
        stock_ms.append(median_latency_ms(stock, x))
        sparse_ms.append(median_latency_ms(sparse, x))
    report = tsp.delegated_nodes(sparse)
    return {
        "max_abs_diff": float(np.abs(outs[0] - outs[1]).max()),
        "stock_ms": float(np.median(stock_ms)),
        "sparse_ms": float(np.median(sparse_ms)),
        "claimed": [(n.filter, n.n, n.block_sparsity) for n in report.claimed],
        "declined": [(n.filter, n.reason) for n in report.declined],
    }


def train(model, ds, epochs, steps, callbacks=()):
    lr = keras.optimizers.schedules.CosineDecay(0.05, decay_steps=epochs * steps)
    model.compile(
        optimizer=keras.optimizers.SGD(lr, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    t0 = time.perf_counter()
    model.fit(ds, epochs=epochs, verbose=2, shuffle=False, callbacks=list(callbacks))
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-size", type=int, default=30000)
    parser.add_argument("--sparsity", type=float, default=0.75)
    parser.add_argument("--n", type=int, default=16, help="block size of the 1xN structure")
    args = parser.parse_args()

    (x, y), (xt, yt) = tsp.load_fashion_mnist()
    x, y = x[: args.train_size], y[: args.train_size]
    steps = len(x) // 128
    ds = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=0)
        .batch(128, drop_remainder=True)
        .prefetch(2)
    )

    print(f"== dense: {args.epochs} epochs on {len(x)} images")
    keras.utils.set_random_seed(0)
    dense = tsp.models.fashion_cnn()
    dense_seconds = train(dense, ds, args.epochs, steps)

    print(
        f"== pruned during fit: Magnitude(1x{args.n}) to {args.sparsity:.0%}, "
        f"stem and classifier dense"
    )
    keras.utils.set_random_seed(0)
    ramp = (
        steps // 2,
        steps * max(1, args.epochs - 1),
    )  # from mid-epoch 0 to one epoch before the end
    pruner = tsp.Magnitude(
        args.sparsity,
        tsp.OneByN(args.n),
        schedule=tsp.PolynomialDecay(
            0.0, args.sparsity, ramp[0], ramp[1], frequency=max(1, (ramp[1] - ramp[0]) // 10)
        ),
    )
    pruned = tsp.prune_model(
        tsp.models.fashion_cnn(), pruner, layers=lambda layer: layer.name not in DENSE
    )
    pruned_seconds = train(pruned, ds, args.epochs, steps, pruner.callbacks())
    final = tsp.strip_pruning(pruned)

    print("\n== per-layer sparsity of the stripped model")
    print(tsp.sparsity_report(final))

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in (("dense", dense), ("pruned", final)):
            model.compile(
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
            )
            keras_acc = model.evaluate(xt, yt, batch_size=500, verbose=0)[1]
            path = Path(tmp) / f"{name}.keras"
            model.save(path)
            flat = tsp.export_tflite(model)
            results[name] = {
                "keras_acc": keras_acc,
                "tflite_acc": tflite_accuracy(flat, xt, yt),
                "keras_kb": path.stat().st_size / 1024,
                "tflite_kb": len(flat) / 1024,
                "tflite_gzip_kb": len(gzip.compress(flat, 9)) / 1024,
            }
        checks = tsp.check_tflite_sparsity(final, tsp.export_tflite(final))

        sparse = delegate_check(tsp.export_tflite(final), xt[:1])

    print("\n== zeros after TFLite conversion")
    for c in checks:
        print(
            f"  {c.layer:8s} keras zeros {c.zeros:7d}  tflite zeros {c.tflite_zeros:7d}  "
            f"{'kept bit-exactly' if c.preserved else 'LOST'}"
        )
    print("\n== dense vs pruned")
    print(
        f"{'model':8s} {'keras acc':>9s} {'tflite acc':>10s} {'train s':>8s} "
        f"{'.keras KB':>9s} {'.tflite KB':>10s} {'gzip KB':>8s}"
    )
    for name, secs in (("dense", dense_seconds), ("pruned", pruned_seconds)):
        r = results[name]
        print(
            f"{name:8s} {r['keras_acc']:9.4f} {r['tflite_acc']:10.4f} {secs:8.1f} "
            f"{r['keras_kb']:9.1f} {r['tflite_kb']:10.1f} {r['tflite_gzip_kb']:8.1f}"
        )
    print("\n== the pruned model on the 1xN sparse delegate (1 thread, one image)")
    for name, n, block_sparsity in sparse["claimed"]:
        print(f"  claimed  {name}: 1x{n}, block sparsity {block_sparsity:.2f}")
    for name, reason in sparse["declined"]:
        print(f"  declined {name}: {reason}")
    print(
        f"  stock TFLite {sparse['stock_ms']:.3f} ms, delegate {sparse['sparse_ms']:.3f} ms: "
        f"{sparse['stock_ms'] / sparse['sparse_ms']:.2f}x; "
        f"max |difference| {sparse['max_abs_diff']:.2e}"
    )
    ok = all(c.preserved for c in checks) and results["pruned"]["tflite_acc"] > 0.8
    ok = ok and len(sparse["claimed"]) == 4 and sparse["max_abs_diff"] < 1e-4
    ok = ok and abs(results["pruned"]["tflite_acc"] - results["pruned"]["keras_acc"]) < 0.005
    print("\ndemo", "OK" if ok else "FAILED: see above")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
