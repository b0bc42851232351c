"""Step-time overhead of pruning during training, interleaved A/B in one process.

A is the plain Fashion-MNIST CNN, B the same CNN wrapped for pruning (its
callbacks included, masks already at the target sparsity). SMART is timed in its
search phase (soft top-k masks, the temperature decayed and the threshold
re-solved after every batch): each of its rounds is one epoch of search, its
state reset before the round. Both train on the
same 20 batches per round; rounds alternate AB and BA. A step is timed from one
batch end to the next, so it includes every callback hook. The figure is the
median over rounds of (B's median step / A's median step); the ratio of the
fastest 10% of steps is reported too (steadier on a loaded machine).
Writes ``benchmarks/results/overhead.json``.

``--model resnet50`` times keras.applications ResNet50 (96x96, batch 8, random data,
``weights=None``) instead, with the default layer selection, and adds to each row the
mean step ratio (the target is on the mean over all steps) and, for Magnitude, the time
of one mask update (``update_masks``) compiled and in numpy, each as a fraction of a
plain step; one more row times ``prune_model`` against ``keras.models.clone_model``.
Writes ``benchmarks/results/overhead_resnet50.json``.

Example::

    python benchmarks/overhead.py --rounds 11
    python benchmarks/overhead.py --model resnet50 --rounds 5 --steps 10
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


def pruners():
    import tf_sparse_prune as tsp

    return {
        "magnitude_1x16_0.75": lambda: tsp.Magnitude(
            0.75, tsp.OneByN(16), schedule=tsp.ConstantSparsity(0.75, 0, frequency=100)
        ),
        "magnitude_unstructured_0.8": lambda: tsp.Magnitude(
            0.8, tsp.Unstructured(), schedule=tsp.ConstantSparsity(0.8, 0, frequency=100)
        ),
        # SUBP's soft phase (straight-through kernel and the masked-weight decay loss); its
        # training graph is the same in the hard phase. t_s far away: no per-epoch mask
        # update inside the timed rounds (benchmarks/bpar_cost.py times that separately).
        "subp_1x16_0.75": lambda: _subp(
            0.75, n=16, regrow_start_epoch=10**6, regrow_end_epoch=10**6 + 1
        ),
        "smart_1x16_0.7": lambda: tsp.SMART(0.7, tsp.OneByN(16), search_epochs=1),
        "smart_block16x8_0.7": lambda: tsp.SMART(0.7, tsp.Block(16, 8), search_epochs=1),
        "smart_channel_0.5": lambda: tsp.SMART(0.5, tsp.OutputChannel(), search_epochs=1),
        "smart_2:4": lambda: tsp.SMART(None, tsp.NM(2, 4), search_epochs=1),
        "pdp_1x16_0.7": lambda: tsp.PDP(0.7, tsp.OneByN(16), ramp=1.0),
    }


def restart_search(model) -> None:
    """Puts SMART's wrappers back before the search, so the next epoch is a search epoch."""
    from tf_sparse_prune.wrappers import collect_wrappers

    for wrapper in collect_wrappers(model):
        if hasattr(wrapper, "smart_phase"):
            wrapper.smart_epoch.assign(0)
            wrapper.smart_phase.assign(0.0)


def clone_row(model, prune, factories, rounds: int = 15) -> dict:
    """``prune_model`` against a plain ``keras.models.clone_model``, interleaved.

    Each round times one clone and one ``prune_model`` per method, in a shuffled order,
    each after a garbage collection (a model freed mid-call would bill its collection to
    whichever call ran then). The figure is the median over rounds of the per-round
    ratio; the ratio of the fastest calls is given too.
    """
    import gc
    import random

    import keras

    names = ("magnitude_1x16_0.75", "subp_1x16_0.75", "smart_1x16_0.7")
    calls = {"clone": lambda: keras.models.clone_model(model)}
    for name in names:
        calls[name] = lambda name=name: prune(model, factories[name]())
    times: dict[str, list[float]] = {key: [] for key in calls}
    order = random.Random(recipe.SEED)
    for _ in range(rounds):
        keys = list(calls)
        order.shuffle(keys)
        for key in keys:
            gc.collect()
            start = time.perf_counter()
            out = calls[key]()
            times[key].append(time.perf_counter() - start)
            del out
    clone = np.array(times["clone"])
    row = {"variant": "prune_model_vs_clone", "clone_seconds": float(np.median(clone))}
    for name in names:
        mine = np.array(times[name])
        row[f"{name}_ratio"] = float(np.median(mine / clone))
        row[f"{name}_ratio_of_minima"] = float(mine.min() / clone.min())
    row["rounds"] = rounds
    row["load_average"] = os.getloadavg()[0]
    return row


def update_cost(pruner, model, plain_step: float) -> dict:
    """One Magnitude mask update, compiled (tensor scorer) and in numpy, over a plain step."""
    import tf_sparse_prune as tsp
    from tf_sparse_prune.wrappers import collect_wrappers

    class NumpyScorer(tsp.scoring.Scorer):
        def __init__(self, inner):
            self.inner = inner

        def __call__(self, blocks):
            return self.inner(np.asarray(blocks))

        def comparable(self, scores, sizes):
            return self.inner.comparable(np.asarray(scores), sizes)

    wrappers = collect_wrappers(model)
    compiled_scorer = pruner.scorer
    out = {}
    for label, scorer in (("compiled", compiled_scorer), ("numpy", NumpyScorer(compiled_scorer))):
        pruner.scorer = scorer
        pruner.update_masks(wrappers, pruner.sparsity)  # trace / warm up
        times = []
        for _ in range(5):
            start = time.perf_counter()
            pruner.update_masks(wrappers, pruner.sparsity)
            times.append(time.perf_counter() - start)
        out[f"update_{label}_over_step"] = float(np.median(times) / plain_step)
    pruner.scorer = compiled_scorer
    return out


def _subp(*args, **kwargs):
    from tf_sparse_prune.algorithms.subp import SUBP

    return SUBP(*args, **kwargs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--steps", type=int, default=20, help="training steps per round")
    parser.add_argument("--variants", nargs="+", default=list(pruners()))
    parser.add_argument("--model", choices=("fashion_cnn", "resnet50"), default="fashion_cnn")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--label", default=None, help="tag every row (e.g. 'before' for a run of older code)"
    )
    args = parser.parse_args(argv)
    resnet = args.model == "resnet50"
    if args.out is None:
        args.out = HERE / "results" / ("overhead_resnet50.json" if resnet else "overhead.json")

    import keras
    import tensorflow as tf

    import tf_sparse_prune as tsp

    if resnet:
        batch = 8
        rng = np.random.default_rng(recipe.SEED)
        x = rng.standard_normal((args.steps * batch, 96, 96, 3)).astype("float32")
        y = rng.integers(0, 10, len(x))

        def build():
            return keras.applications.ResNet50(
                input_shape=(96, 96, 3), weights=None, classes=10, classifier_activation=None
            )

        def prune(model, pruner):
            return tsp.prune_model(model, pruner)
    else:
        batch = recipe.BATCH_SIZE
        (x, y), _ = tsp.load_fashion_mnist()
        build = tsp.models.fashion_cnn

        def prune(model, pruner):
            return tsp.prune_model(
                model, pruner, layers=lambda layer: layer.name not in recipe.DENSE_LAYERS
            )

    n = args.steps * batch
    ds = tf.data.Dataset.from_tensor_slices((x[:n], y[:n])).batch(batch).cache()

    def compiled(model):
        model.compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=False,
        )
        return model

    class StepClock(keras.callbacks.Callback):
        """Times from one batch end to the next: the step plus every callback hook."""

        def on_train_begin(self, logs=None):
            self.last, self.steps = None, []

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            if self.last is not None:
                self.steps.append(now - self.last)
            self.last = now

    def timed(model, callbacks):
        restart_search(model)
        clock = StepClock()
        model.fit(ds, epochs=1, verbose=0, callbacks=[*callbacks, clock])
        return clock.steps  # the first step of a round (iterator start) is not counted

    from latency import machine_info

    machine = machine_info()
    if args.label:
        machine["label"] = args.label
    rows = []

    def save(row):  # every finished row is on disk at once: a long run fills across sessions
        row.update(machine)
        print(json.dumps(row), flush=True)
        rows.append(row)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1) + "\n")

    if resnet:
        save(clone_row(build(), prune, pruners()))
    for name in args.variants:
        keras.utils.set_random_seed(recipe.SEED)
        dense = compiled(build())
        pruner = pruners()[name]()
        pruned = compiled(prune(build(), pruner))
        cbs = pruner.callbacks()
        for _ in range(2):  # warm up: trace both train functions, compute the masks
            timed(dense, [])
            timed(pruned, cbs)
        a_rounds, b_rounds = [], []
        for r in range(args.rounds):
            order = [(dense, [], a_rounds), (pruned, cbs, b_rounds)]
            for model, callbacks, sink in order if r % 2 == 0 else order[::-1]:
                sink.append(timed(model, callbacks))
        a_med = np.array([np.median(t) for t in a_rounds])
        b_med = np.array([np.median(t) for t in b_rounds])
        a_all, b_all = np.concatenate(a_rounds), np.concatenate(b_rounds)
        row = {
            "method": type(pruner).__name__.lower(),
            "variant": name,
            "framework": "tf_sparse_prune",
            "plain_step_seconds": float(np.median(a_all)),
            "pruned_step_seconds": float(np.median(b_all)),
            # per round: median step of B over median step of A (adjacent in time)
            "wrapper_overhead_ratio": float(np.median(b_med / a_med)),
            # the fastest 10% of steps of each: the least disturbed by other load
            "wrapper_overhead_ratio_of_minima": float(
                np.percentile(b_all, 10) / np.percentile(a_all, 10)
            ),
            "rounds": args.rounds,
            "steps_per_round": args.steps,
            "jit_compile": False,
            "load_average": os.getloadavg()[0],
        }
        if resnet:
            row["model"] = "resnet50_96x96_batch8"
            row["mean_step_ratio"] = float(np.mean(b_all) / np.mean(a_all))
            if isinstance(pruner, tsp.Magnitude):
                row.update(update_cost(pruner, pruned, float(np.median(a_all))))
                # the target's figure: the mean step with one compiled update per 100 steps
                row["mean_step_ratio_with_updates"] = (
                    row["mean_step_ratio"] + row["update_compiled_over_step"] / 100
                )
        save(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
