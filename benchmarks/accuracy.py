"""Accuracy benchmark on the fixed Fashion-MNIST recipe (benchmarks/recipe.py).

Trains the dense CNN and pruned variants, one after the other in this process,
and writes JSON rows ``{method, structure, sparsity, val_acc, train_seconds,
step_time_ratio_vs_dense, ...}`` to ``benchmarks/results/accuracy.json`` (rows
with the same key are replaced, others kept). ``val_acc`` is the accuracy of the
*stripped* model on the full 10,000-image test set. ``step_time_ratio_vs_dense``
divides the variant's median training-step time by the dense run's of the same
invocation and seed (medians over all steps after the first epoch).

Examples::

    python benchmarks/accuracy.py                                   # the foundation rows
    python benchmarks/accuracy.py --variants dense magnitude_1x16_0.75 --epochs 2
    python benchmarks/accuracy.py --list

XLA is off (``jit_compile=False``): on this CPU it made training 2x slower (SPEC §8).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import recipe  # noqa: E402

RESULTS = HERE / "results"


def _variants() -> dict[str, tuple[str, Callable | None]]:
    """name -> (method label, factory ``(schedule steps, epochs) -> pruner``)."""
    import tf_sparse_prune as tsp

    def magnitude(structure, sparsity, scope="layer"):
        def make(schedule, epochs=None):
            s = structure() if callable(structure) else structure
            target = s.fixed_sparsity() if s.fixed_sparsity() is not None else sparsity
            sched = tsp.PolynomialDecay(0.0, target, *schedule)
            return tsp.Magnitude(sparsity=target, structure=s, schedule=sched, scope=scope)

        return make

    table: dict[str, tuple[str, Callable | None]] = {"dense": ("dense", None)}
    for s in (0.5, 0.75, 0.9):
        table[f"magnitude_1x16_{s}"] = ("magnitude", magnitude(lambda: tsp.OneByN(16), s))
    table["magnitude_1x32_0.75"] = ("magnitude", magnitude(lambda: tsp.OneByN(32), 0.75))
    table["magnitude_unstructured_0.8"] = ("magnitude", magnitude(tsp.Unstructured, 0.8))
    table["magnitude_2:4"] = ("magnitude", magnitude(lambda: tsp.NM(2, 4), None))

    def nm_oneshot(schedule, epochs=None):
        # tfmot's 2:4 semantics: the mask is fixed once, at the first step, from the
        # initial weights, whatever the schedule says (tfmot 0.8.1, checked).
        return tsp.Magnitude(
            structure=tsp.NM(2, 4), schedule=tsp.ConstantSparsity(0.5, begin_step=0, end_step=0)
        )

    table["magnitude_2:4_oneshot"] = ("magnitude", nm_oneshot)

    # SUBP: masks rebuilt at the start of epochs 1..5 (recipe.regrow_epochs), the final
    # hard mask from epoch 5 on, as the magnitude ramp; defaults otherwise (BPAR, lambda=1,
    # tau=1, delta_0 = sparsity, cubic decay, importance-sampled regrowth, seed 0).
    def subp(n, sparsity, **options):
        def make(schedule, epochs=recipe.EPOCHS):
            from tf_sparse_prune.algorithms.subp import SUBP

            start, end = recipe.regrow_epochs(epochs)
            return SUBP(sparsity, n=n, regrow_start_epoch=start, regrow_end_epoch=end, **options)

        return make

    for s in (0.5, 0.75, 0.9):
        table[f"subp_1x16_{s}"] = ("subp", subp(16, s))
    table["subp_1x32_0.75"] = ("subp", subp(32, 0.75))
    # the supplementary Table 4 ablation, on 1x16 at 0.75 (the base above is importance
    # regrowth, delta_0 = full, cubic decay)
    for mode in ("random", "none"):
        table[f"subp_1x16_0.75_regrow_{mode}"] = ("subp", subp(16, 0.75, regrow=mode))
    for d0 in (0.1, 0.2, 0.3, 0.4):
        table[f"subp_1x16_0.75_delta0_{d0}"] = ("subp", subp(16, 0.75, initial_regrow=d0))
    for decay in ("linear", "cosine", "constant"):
        table[f"subp_1x16_0.75_decay_{decay}"] = ("subp", subp(16, 0.75, regrow_decay=decay))
    for criterion in ("l1", "l2"):
        table[f"subp_1x16_0.75_criterion_{criterion}"] = (
            "subp",
            subp(16, 0.75, criterion=criterion),
        )
    # Algorithm 1 line 9 (score the trained W, mask reset to 1) instead of SPEC's W * M,
    # with importance and with random regrowth
    table["subp_1x16_0.75_score_weights"] = ("subp", subp(16, 0.75, score_on="weights"))
    table["subp_1x16_0.75_score_weights_regrow_random"] = (
        "subp",
        subp(16, 0.75, score_on="weights", regrow="random"),
    )

    # SMART: dense until the magnitude ramp begins (epoch 1 of 8), soft-mask search with
    # the temperature decayed every batch until it ends (epochs 1-4), the hard global
    # top-k from epoch 5 on; paper temperatures (10 -> 1e-4), the model's optimizer.
    def smart(structure, sparsity, **options):
        def make(schedule, epochs=recipe.EPOCHS):
            from tf_sparse_prune.algorithms.smart import SMART

            scale = epochs / recipe.EPOCHS
            pretrain = min(round(recipe.PRUNE_BEGIN_EPOCH * scale), epochs - 1)
            end = max(pretrain + 1, round(recipe.PRUNE_END_EPOCH * scale))
            search = min(end, epochs) - pretrain
            return SMART(
                sparsity, structure(), pretrain_epochs=pretrain, search_epochs=search, **options
            )

        return make

    def pdp(structure, sparsity):
        def make(schedule, epochs=recipe.EPOCHS):
            # PDP's ramp (epsilon = 0.015 per epoch) needs 67 epochs; on this recipe the
            # ramp is scaled to reach the target after the magnitude ramp's 5 epochs.
            ramp = 1.0 / max(1, round(recipe.PRUNE_END_EPOCH * epochs / recipe.EPOCHS))
            return tsp.PDP(sparsity, structure(), ramp=ramp)

        return make

    for s in (0.7, 0.9):
        table[f"smart_block16x8_{s}"] = ("smart", smart(lambda: tsp.Block(16, 8), s))
        table[f"pdp_1x16_{s}"] = ("pdp", pdp(lambda: tsp.OneByN(16), s))
        table[f"pdp_block16x8_{s}"] = ("pdp", pdp(lambda: tsp.Block(16, 8), s))
        table[f"magnitude_block16x8_{s}"] = ("magnitude", magnitude(lambda: tsp.Block(16, 8), s))
    table["magnitude_1x16_0.7"] = ("magnitude", magnitude(lambda: tsp.OneByN(16), 0.7))
    for s in (0.75, 0.9):  # learned per-layer sparsity: SMART vs global magnitude ranking
        table[f"magnitude_global_1x16_{s}"] = (
            "magnitude",
            magnitude(lambda: tsp.OneByN(16), s, scope="global"),
        )
    table["smart_channel_0.5"] = ("smart", smart(tsp.OutputChannel, 0.5))
    table["pdp_channel_0.5"] = ("pdp", pdp(tsp.OutputChannel, 0.5))
    table["magnitude_channel_0.5"] = ("magnitude", magnitude(tsp.OutputChannel, 0.5))
    table["pdp_2:4"] = ("pdp", pdp(lambda: tsp.NM(2, 4), None))
    # Theorem 2.5 ablation: a fixed temperature (1e-2) instead of the decay 10 -> 1e-4
    table["smart_1x16_0.9_fixed_temperature"] = (
        "smart",
        smart(lambda: tsp.OneByN(16), 0.9, initial_temperature=1e-2, final_temperature=1e-2),
    )

    for s in (0.5, 0.7, 0.75, 0.9):
        table[f"smart_1x16_{s}"] = ("smart", smart(lambda: tsp.OneByN(16), s))
    table["smart_block16x8_0.75"] = ("smart", smart(lambda: tsp.Block(16, 8), 0.75))
    table["smart_2:4"] = ("smart", smart(lambda: tsp.NM(2, 4), None))
    return table


DEFAULT_VARIANTS = [
    "dense",
    "magnitude_1x16_0.5",
    "magnitude_1x16_0.75",
    "magnitude_1x16_0.9",
    "magnitude_unstructured_0.8",
    "magnitude_2:4",
    "magnitude_2:4_oneshot",
]


class StepTimer:
    """Per-step wall times (batch begin to batch end), as a Keras callback."""

    def __init__(self):
        import keras

        class _CB(keras.callbacks.Callback):
            def __init__(cb):
                super().__init__()
                cb.times, cb.epoch = [], 0

            def on_epoch_begin(cb, epoch, logs=None):
                cb.epoch = epoch

            def on_train_batch_begin(cb, batch, logs=None):
                cb.t0 = time.perf_counter()

            def on_train_batch_end(cb, batch, logs=None):
                cb.times.append((cb.epoch, time.perf_counter() - cb.t0))

        self.callback = _CB()

    def median_step(self, skip_epochs: int = 1) -> float:
        times = [t for e, t in self.callback.times if e >= skip_epochs] or [
            t for _, t in self.callback.times
        ]
        return float(np.median(times))


def run_variant(name, factory, data, epochs, train_size, seed, verbose):
    """Trains one variant and returns its row (see :func:`train_variant`)."""
    return train_variant(name, factory, data, epochs, train_size, seed, verbose)[1]


def train_variant(name, factory, data, epochs, train_size, seed, verbose, build=None):
    """Trains one variant with the recipe; returns ``(stripped model, row)``.

    ``build`` makes the dense model (default: ``tsp.models.fashion_cnn``); its stem and
    classifier stay dense, as the recipe's.
    """
    import keras
    import tensorflow as tf

    import tf_sparse_prune as tsp

    (x, y), (xt, yt) = data
    x, y = x[:train_size], y[:train_size]
    keras.utils.set_random_seed(seed)
    spe = recipe.steps_per_epoch(train_size)
    model = (build or tsp.models.fashion_cnn)()
    pruner, callbacks = None, []
    if factory is not None:
        pruner = factory(recipe.prune_steps(train_size, epochs=epochs), epochs)
        model = tsp.prune_model(
            model, pruner, layers=lambda layer: layer.name not in recipe.DENSE_LAYERS
        )
        callbacks = pruner.callbacks()
    lr = keras.optimizers.schedules.CosineDecay(recipe.LEARNING_RATE, decay_steps=epochs * spe)
    model.compile(
        optimizer=keras.optimizers.SGD(lr, momentum=recipe.MOMENTUM, nesterov=recipe.NESTEROV),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,
    )
    ds = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(train_size, seed=seed, reshuffle_each_iteration=True)
        .batch(recipe.BATCH_SIZE, drop_remainder=True)
        .prefetch(2)
    )
    timer = StepTimer()
    t0 = time.perf_counter()
    model.fit(
        ds, epochs=epochs, verbose=verbose, shuffle=False, callbacks=[*callbacks, timer.callback]
    )
    train_seconds = time.perf_counter() - t0
    final = tsp.strip_pruning(model) if pruner is not None else model
    final.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,
    )
    _, val_acc = final.evaluate(xt, yt, batch_size=512, verbose=0)
    report = tsp.sparsity_report(final)
    pruned_layers = [r for r in report if r.layer not in recipe.DENSE_LAYERS]
    weights = sum(r.weights for r in pruned_layers)
    achieved = sum(r.sparsity * r.weights for r in pruned_layers) / max(weights, 1)
    row = {
        "method": "dense" if pruner is None else type(pruner).__name__.lower(),
        "variant": name,
        "framework": "tf_sparse_prune",
        "structure": "dense" if pruner is None else pruner.structure.name(),
        "sparsity": 0.0 if pruner is None else pruner.sparsity,
        "achieved_sparsity": achieved,
        "val_acc": float(val_acc),
        "train_seconds": train_seconds,
        "median_step_seconds": timer.median_step(),
        "seed": seed,
        "epochs": epochs,
        "train_size": train_size,
        "layer_sparsity": {r.layer: round(r.sparsity, 4) for r in report},
        "jit_compile": False,
    }
    return final, row


def merge_rows(path: Path, rows: list[dict]) -> None:
    def key(r):
        return (
            r.get("framework"),
            r.get("variant", r.get("method")),
            r.get("seed"),
            r.get("epochs"),
            r.get("train_size"),
        )

    old = json.loads(path.read_text()) if path.exists() else []
    new_keys = {key(r) for r in rows}
    merged = [r for r in old if key(r) not in new_keys] + rows
    path.write_text(json.dumps(merged, indent=1) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS)
    parser.add_argument("--epochs", type=int, default=recipe.EPOCHS)
    parser.add_argument("--train-size", type=int, default=recipe.TRAIN_SIZE)
    parser.add_argument("--seeds", type=int, nargs="+", default=[recipe.SEED])
    parser.add_argument("--out", type=Path, default=RESULTS / "accuracy.json")
    parser.add_argument("--list", action="store_true", help="list the variants and exit")
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)
    table = _variants()
    if args.list:
        print("\n".join(table))
        return 0
    unknown = [v for v in args.variants if v not in table]
    if unknown:
        parser.error(f"unknown variants {unknown}; valid: {list(table)}")
    import tf_sparse_prune as tsp

    data = tsp.load_fashion_mnist()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        rows, dense_step = [], None
        for name in args.variants:
            _method, factory = table[name]
            print(
                f"== {name} seed={seed} epochs={args.epochs} train_size={args.train_size}",
                flush=True,
            )
            row = run_variant(name, factory, data, args.epochs, args.train_size, seed, args.verbose)
            if name == "dense":
                dense_step = row["median_step_seconds"]
            row["step_time_ratio_vs_dense"] = (
                None if dense_step is None else row["median_step_seconds"] / dense_step
            )
            print(json.dumps({k: v for k, v in row.items() if k != "layer_sparsity"}), flush=True)
            rows.append(row)
            merge_rows(args.out, [row])
    return 0


if __name__ == "__main__":
    sys.exit(main())
