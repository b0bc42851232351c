"""tfmot side-by-side baseline: magnitude pruning of the Fashion-MNIST CNN with tfmot 0.8.1.

Runs in its own process and its own virtual environment (``.venv-tfmot``, made by
``benchmarks/setup_tfmot_venv.sh``) because tfmot needs Keras 2 (``tf_keras``, selected by
``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported); the library never imports tfmot
or tf_keras. The recipe (data size, batch size, epochs, optimizer, pruning schedule, layers
left dense) comes from ``benchmarks/recipe.py``, shared with our own benchmarks.

Variants:

* ``dense``: the CNN trained without pruning.
* ``unstructured``: ``prune_low_magnitude`` with ``PolynomialDecay(0 -> sparsity, power 3,
  begin, end, frequency)`` from ``recipe.prune_steps(train_size, epochs=epochs)`` (the
  ramp scales with the number of epochs) on conv2..conv5.
* ``2:4``: ``prune_low_magnitude(..., sparsity_m_by_n=(2, 4))`` on conv2..conv5. tfmot
  ignores the schedule for m-by-n pruning: it computes the 2:4 mask once, at pruning step
  1 (the first training batch, i.e. from the initial weights), and keeps it fixed for the
  rest of training. The schedule object is still required and is passed (the same
  PolynomialDecay, final sparsity 0.5) only for the record. The groups of 4 run along the
  input channels of each (kh, kw, out-channel) position (TFLite's [C_OUT, H, W, C_IN]).

tfmot's mask semantics (0.8.1, read from its source and checked on a quick run):

* Each wrapper has its own ``pruning_step`` variable (-1 at build, set to 0 by
  ``UpdatePruningStep.on_train_begin``); every forward call with ``training=True``
  increments it before anything else, so the first training batch runs at step 1 and
  batch ``i`` (0-based) at step ``i + 1``.
* Unstructured masks are recomputed (from scratch, per layer, by top-k of the current
  magnitudes) in the forward pass of the batches whose step satisfies
  ``begin <= step <= end and (step - begin) % frequency == 0``, at the schedule's
  sparsity for that step. With the recipe's (156, 780, 52) the updates run in batches
  156, 208, ..., 780 (1-based), i.e. in the last batch of epochs 0..4; the one at step
  156 has sparsity 0 and prunes nothing. A pruned weight could come back at a later
  update if its magnitude then beat the new threshold; none did in our checks.
* Every forward call (training or not) then assigns ``kernel <- kernel * mask`` in place,
  so the kernels really hold zeros. Gradients still reach the masked entries (the
  optimizer moves them, momentum included) and they are zeroed again at the next forward
  call; ``UpdatePruningStep.on_epoch_end`` re-applies the masks after each epoch's last
  optimizer step, so the stripped model is exactly sparse.

Measured per (variant, seed): validation accuracy on the full test set after
``strip_pruning``, the achieved sparsity of each pruned layer, ``train_seconds`` (wall
clock of ``fit``), the median step time over the epochs after the first (all steps but
the first 10 when only one epoch runs) and its ratio to the dense variant of the same
seed; plus, per seed, the pure wrapper overhead: blocks of train steps of the plain dense
model and of the wrapped model on the same batches, interleaved A/B (ABBA order), medians
over rounds. Everything runs with ``jit_compile=False``.

Usage (full run, as scheduled by the lead)::

    bash benchmarks/setup_tfmot_venv.sh
    .venv-tfmot/bin/python benchmarks/tfmot_baseline.py

Quick check::

    .venv-tfmot/bin/python benchmarks/tfmot_baseline.py --epochs 1 --train-size 2048 \\
        --out tfmot_quick.json
"""

from __future__ import annotations

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before TensorFlow is imported: tfmot needs tf_keras
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, for recipe.py
import recipe

try:
    import numpy as np
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras
except ImportError as err:  # pragma: no cover - environment guard
    sys.exit(
        f"tfmot_baseline: {err}. Run it with the tfmot venv: `bash benchmarks/setup_tfmot_venv.sh`"
        " then `.venv-tfmot/bin/python benchmarks/tfmot_baseline.py`"
    )

sparsity_api = tfmot.sparsity.keras
BENCH_DIR = Path(__file__).resolve().parent

VARIANTS = ("dense", "unstructured", "2:4")
# (name, channels, stride) of the 3x3 Conv2D-BN-ReLU blocks; a 2x2 max pool follows conv2.
CONV_PLAN = (
    ("stem", 32, 2),
    ("conv2", 32, 1),
    ("conv3", 64, 1),
    ("conv4", 64, 1),
    ("conv5", 128, 1),
)
PRUNED_LAYERS = tuple(name for name, _, _ in CONV_PLAN if name not in recipe.DENSE_LAYERS)
DEFAULT_OUT = BENCH_DIR / "results" / "tfmot_baseline.json"
NUM_CLASSES = 10


# --- data and model -------------------------------------------------------------------------


def load_fashion_mnist(train_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The first ``train_size`` training images and the full test set, float32 in [0, 1]."""
    (x_train, y_train), (x_test, y_test) = tf_keras.datasets.fashion_mnist.load_data()
    if train_size > len(x_train):
        raise ValueError(f"--train-size {train_size} > {len(x_train)} training images")

    def prep(x: np.ndarray) -> np.ndarray:
        return (x.astype(np.float32) / 255.0)[..., None]

    return (
        prep(x_train[:train_size]),
        y_train[:train_size].astype(np.int64),
        prep(x_test),
        y_test.astype(np.int64),
    )


def train_dataset(x: np.ndarray, y: np.ndarray, seed: int) -> tf.data.Dataset:
    """Reshuffled (with ``seed``) every epoch; the last partial batch is dropped."""
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(recipe.BATCH_SIZE, drop_remainder=True).prefetch(2)


def fashion_cnn_tf_keras(input_shape=(28, 28, 1), num_classes: int = NUM_CLASSES):
    """``tf_sparse_prune.models.fashion_cnn`` written in tf_keras, with the same layer names."""
    layers = tf_keras.layers
    inputs = tf_keras.Input(shape=input_shape, name="input")
    x = inputs
    for name, channels, strides in CONV_PLAN:
        x = layers.Conv2D(
            channels,
            3,
            strides=strides,
            padding="same",
            use_bias=False,
            kernel_initializer="he_normal",
            name=name,
        )(x)
        x = layers.BatchNormalization(momentum=recipe.BN_MOMENTUM, name=f"{name}_bn")(x)
        x = layers.ReLU(name=f"{name}_relu")(x)
        if name == "conv2":
            x = layers.MaxPooling2D(pool_size=2, name="pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="classifier")(x)
    return tf_keras.Model(inputs, outputs, name="fashion_cnn")


def schedule_for(target: float, train_size: int, epochs: int):
    """tfmot's PolynomialDecay(0 -> target, power 3) over the recipe's pruning steps."""
    begin, end, frequency = recipe.prune_steps(train_size, recipe.BATCH_SIZE, epochs=epochs)
    return sparsity_api.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=target,
        begin_step=begin,
        end_step=end,
        power=3,
        frequency=frequency,
    )


def wrap_for_pruning(base, structure: str, schedule):
    """Clones ``base`` with ``prune_low_magnitude`` around conv2..conv5 only.

    The clone function returns the original layers (wrapped or not), so the pruned model
    starts from exactly the weights of ``base``.
    """
    kwargs = {"pruning_schedule": schedule}
    if structure == "2:4":
        kwargs["sparsity_m_by_n"] = (2, 4)

    def clone_function(layer):
        if layer.name in PRUNED_LAYERS:
            return sparsity_api.prune_low_magnitude(layer, **kwargs)
        return layer

    return tf_keras.models.clone_model(base, clone_function=clone_function)


def compile_model(model, epochs: int, steps_per_epoch: int) -> None:
    lr = tf_keras.optimizers.schedules.CosineDecay(
        recipe.LEARNING_RATE, decay_steps=epochs * steps_per_epoch, alpha=0.0
    )
    model.compile(
        optimizer=tf_keras.optimizers.SGD(
            learning_rate=lr, momentum=recipe.MOMENTUM, nesterov=recipe.NESTEROV
        ),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,
    )


# --- measurements ---------------------------------------------------------------------------


class StepTimer(tf_keras.callbacks.Callback):
    """Wall-clock time of every train step, by epoch; prints one line per epoch.

    Not ``_supports_tf_logs``: Keras converts the logs to numpy for it, which waits for
    the step to finish, so the times are of the computation and not of its dispatch.
    """

    def __init__(self, label: str):
        super().__init__()
        self.label = label
        self.times: list[list[float]] = []
        self._t0 = 0.0
        self._epoch_t0 = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.times.append([])
        self._epoch_t0 = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times[-1].append(time.perf_counter() - self._t0)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        masks = mask_sparsity(self.model)
        mean_sparsity = f" mask sparsity {statistics.fmean(masks.values()):.3f}" if masks else ""
        steps = self.times[-1]
        loss, acc = logs.get("loss", float("nan")), logs.get("accuracy", float("nan"))
        print(
            f"  [{self.label}] epoch {epoch + 1}/{self.params.get('epochs')}: "
            f"loss {loss:.4f} acc {acc:.4f}"
            f" {time.perf_counter() - self._epoch_t0:.1f}s"
            f" median step {1e3 * statistics.median(steps):.1f} ms{mean_sparsity}",
            flush=True,
        )

    def median_step(self) -> float:
        """Median over the steps of the epochs after the first (warm-up and tracing)."""
        later = [t for epoch in self.times[1:] for t in epoch]
        if not later:  # a single epoch: drop its first 10 steps instead
            later = self.times[0][10:] or self.times[0]
        return statistics.median(later)


def mask_sparsity(model) -> dict[str, float]:
    """1 - mean(mask) of each tfmot wrapper in ``model``, by wrapped layer name."""
    out = {}
    for layer in model.layers:
        # tfmot's PruneLowMagnitude wrapper is not in its public API: recognize it by its
        # (weight, mask, threshold) triples.
        if getattr(layer, "pruning_vars", None):
            masks = [mask.numpy() for _, mask, _ in layer.pruning_vars]
            out[layer.layer.name] = float(1.0 - np.mean(np.concatenate([m.ravel() for m in masks])))
    return out


def kernel_sparsity(model, names) -> dict[str, float]:
    """Fraction of exact zeros in each named layer's kernel."""
    return {name: float(np.mean(model.get_layer(name).kernel.numpy() == 0.0)) for name in names}


def is_2_of_4(kernel: np.ndarray) -> bool:
    """At least 2 zeros in every 4 consecutive input channels of each (kh, kw, out) row."""
    rows = np.transpose(kernel, (3, 0, 1, 2)).reshape(-1, kernel.shape[2])
    if rows.shape[1] % 4:
        return False
    groups = rows.reshape(rows.shape[0], -1, 4)
    return bool(np.all(np.sum(groups == 0.0, axis=-1) >= 2))


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    logits = model.predict(x, batch_size=1000, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def train_variant(variant: str, seed: int, data, args) -> dict:
    x_train, y_train, x_test, y_test = data
    steps_per_epoch = recipe.steps_per_epoch(len(x_train), recipe.BATCH_SIZE)
    tf_keras.utils.set_random_seed(seed)
    model = fashion_cnn_tf_keras()
    callbacks = []
    target = {"dense": 0.0, "unstructured": args.sparsity, "2:4": 0.5}[variant]
    if variant != "dense":
        model = wrap_for_pruning(model, variant, schedule_for(target, len(x_train), args.epochs))
        callbacks.append(sparsity_api.UpdatePruningStep())
    compile_model(model, args.epochs, steps_per_epoch)
    timer = StepTimer(f"{variant} seed {seed}")
    callbacks.append(timer)

    start = time.perf_counter()
    model.fit(
        train_dataset(x_train, y_train, seed),
        epochs=args.epochs,
        callbacks=callbacks,
        verbose=0,
    )
    train_seconds = time.perf_counter() - start

    final = sparsity_api.strip_pruning(model) if variant != "dense" else model
    row = {
        "method": "dense" if variant == "dense" else "tfmot_magnitude",
        "framework": "tfmot",
        "structure": variant,
        "sparsity": target,
        "val_acc": accuracy(final, x_test, y_test),
        "train_seconds": train_seconds,
        "step_time_ratio_vs_dense": None,  # filled in once the dense run of the seed is known
        "seed": seed,
        "epochs": args.epochs,
        "train_size": len(x_train),
        "layer_sparsity": kernel_sparsity(final, PRUNED_LAYERS) if variant != "dense" else {},
        "median_step_seconds": timer.median_step(),
        "steps_per_epoch": steps_per_epoch,
        "jit_compile": False,
    }
    if variant != "dense":
        row["prune_steps"] = dict(
            zip(
                ("begin", "end", "frequency"),
                recipe.prune_steps(len(x_train), epochs=args.epochs),
                strict=True,
            )
        )
        row["dense_layers"] = list(recipe.DENSE_LAYERS)
    if variant == "2:4":
        row["pattern_2_of_4_ok"] = all(
            is_2_of_4(final.get_layer(name).kernel.numpy()) for name in PRUNED_LAYERS
        )
    print(
        f"  [{variant} seed {seed}] val_acc {row['val_acc']:.4f} train {train_seconds:.1f}s "
        f"layer sparsity {json.dumps({k: round(v, 4) for k, v in row['layer_sparsity'].items()})}",
        flush=True,
    )
    return row


def wrapper_overhead(seed: int, data, args) -> dict:
    """Interleaved A/B timing of train steps: plain dense model (A) vs tfmot-wrapped (B).

    Both models start from the same weights and run fit()'s compiled train step on the
    same fixed batches (at most 8, cycled), without fit()'s callbacks. The wrapped
    model's schedule prunes to the target once, at step 1 (inside the warm-up), and never
    again, so the measured steps carry the steady per-step cost of the wrappers (step
    increment, schedule check, ``kernel <- kernel * mask``), not the occasional top-k mask
    updates. The order alternates ABBA to cancel drift.
    """
    x_train, y_train, _, _ = data
    n = min(8, len(x_train) // recipe.BATCH_SIZE) * recipe.BATCH_SIZE
    tf_keras.utils.set_random_seed(seed)
    plain = fashion_cnn_tf_keras()
    tf_keras.utils.set_random_seed(seed)
    base = fashion_cnn_tf_keras()
    schedule = sparsity_api.ConstantSparsity(args.sparsity, begin_step=1, frequency=10**9)
    wrapped = wrap_for_pruning(base, "unstructured", schedule)
    steps = args.epochs * recipe.steps_per_epoch(len(x_train))
    runners = {}
    for name, model in (("plain", plain), ("wrapped", wrapped)):
        compile_model(model, args.epochs, steps)
        # fit()'s own compiled train step, fed by an iterator over the same fixed batches,
        # without fit()'s per-epoch and callback machinery around it.
        batches = tf.data.Dataset.from_tensor_slices((x_train[:n], y_train[:n]))
        iterator = iter(batches.batch(recipe.BATCH_SIZE).repeat().prefetch(2))
        runners[name] = (model.make_train_function(), iterator)
    step_cb = sparsity_api.UpdatePruningStep()
    step_cb.set_model(wrapped)
    step_cb.on_train_begin()  # pruning_step -1 -> 0, as fit() does

    def block(name: str) -> float:
        train_function, iterator = runners[name]
        start = time.perf_counter()
        for _ in range(args.overhead_block):
            float(train_function(iterator)["loss"])  # waits for the step, as fit() does
        return (time.perf_counter() - start) / args.overhead_block

    for name in runners:  # warm-up: tracing and the one mask computation
        block(name)
    times = {"plain": [], "wrapped": []}
    for r in range(args.overhead_rounds):
        for name in ("plain", "wrapped") if r % 2 == 0 else ("wrapped", "plain"):
            times[name].append(block(name))
    plain_median = statistics.median(times["plain"])
    wrapped_median = statistics.median(times["wrapped"])
    row = {
        "method": "tfmot_wrapper_overhead",
        "framework": "tfmot",
        "structure": "unstructured",
        "sparsity": args.sparsity,
        "wrapper_overhead_ratio": wrapped_median / plain_median,
        "wrapper_overhead_ratio_of_minima": min(times["wrapped"]) / min(times["plain"]),
        "dense_step_seconds": plain_median,
        "wrapped_step_seconds": wrapped_median,
        "dense_block_step_seconds": times["plain"],
        "wrapped_block_step_seconds": times["wrapped"],
        "rounds": args.overhead_rounds,
        "block_steps": args.overhead_block,
        "achieved_mask_sparsity": mask_sparsity(wrapped),
        "seed": seed,
        "train_size": len(x_train),
        "jit_compile": False,
    }
    print(
        f"  [wrapper overhead seed {seed}] dense {1e3 * plain_median:.1f} ms/step, wrapped "
        f"{1e3 * wrapped_median:.1f} ms/step, ratio {row['wrapper_overhead_ratio']:.3f}",
        flush=True,
    )
    return row


# --- driver ---------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--epochs", type=int, default=recipe.EPOCHS, help="default: %(default)s (recipe)"
    )
    p.add_argument(
        "--train-size",
        type=int,
        default=recipe.TRAIN_SIZE,
        help="first N training images; default: %(default)s (recipe)",
    )
    p.add_argument(
        "--seeds", type=int, nargs="+", default=[recipe.SEED], help="default: %(default)s"
    )
    p.add_argument(
        "--variants",
        nargs="*",
        choices=VARIANTS,
        default=list(VARIANTS),
        help="default: all; step_time_ratio_vs_dense needs dense among them; none (a bare "
        "--variants): only the wrapper-overhead measurement",
    )
    p.add_argument(
        "--sparsity", type=float, default=0.8, help="unstructured target; default: %(default)s"
    )
    p.add_argument(
        "--overhead-rounds",
        type=int,
        default=11,
        help="A/B rounds of the wrapper-overhead measurement (0: skip); default: %(default)s",
    )
    p.add_argument(
        "--overhead-block", type=int, default=20, help="train steps per block; default: %(default)s"
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="default: %(default)s")
    args = p.parse_args(argv)
    if args.train_size < recipe.BATCH_SIZE:
        p.error(f"--train-size must be at least the batch size {recipe.BATCH_SIZE}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    begin, end, frequency = recipe.prune_steps(args.train_size, recipe.BATCH_SIZE, args.epochs)
    spe = recipe.steps_per_epoch(args.train_size, recipe.BATCH_SIZE)
    print(
        f"tfmot baseline: tensorflow {tf.__version__}, tf_keras {tf_keras.__version__}, "
        f"tfmot {tfmot.__version__}, python {platform.python_version()}; jit_compile=False\n"
        f"  train_size {args.train_size} ({spe} steps/epoch), epochs {args.epochs}, "
        f"seeds {args.seeds}, variants {args.variants}\n"
        f"  PolynomialDecay begin {begin} end {end} frequency {frequency} power 3; "
        f"pruned layers {list(PRUNED_LAYERS)}",
        flush=True,
    )
    if "unstructured" in args.variants and end > args.epochs * spe:
        print(
            f"  note: the schedule ends at step {end} > {args.epochs * spe} steps of training: "
            "the unstructured target sparsity will not be reached",
            flush=True,
        )
    data = load_fashion_mnist(args.train_size)
    rows = []
    for seed in args.seeds:
        seed_rows = {}
        for variant in args.variants:
            print(f"training {variant} (seed {seed})", flush=True)
            seed_rows[variant] = train_variant(variant, seed, data, args)
        dense = seed_rows.get("dense")
        for row in seed_rows.values():
            if dense is not None:
                row["step_time_ratio_vs_dense"] = (
                    row["median_step_seconds"] / dense["median_step_seconds"]
                )
        rows.extend(seed_rows.values())
        if args.overhead_rounds > 0:
            print(f"measuring wrapper overhead (seed {seed})", flush=True)
            rows.append(wrapper_overhead(seed, data, args))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n")  # after each seed
    print(f"wrote {len(rows)} rows to {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
