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

Example::

    python benchmarks/overhead.py --rounds 11
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


def _subp(*args, **kwargs):
    from tf_sparse_prune.algorithms.subp import SUBP

    return SUBP(*args, **kwargs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--steps", type=int, default=20, help="training steps per round")
    parser.add_argument("--variants", nargs="+", default=list(pruners()))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "overhead.json")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    import tf_sparse_prune as tsp

    (x, y), _ = tsp.load_fashion_mnist()
    n = args.steps * recipe.BATCH_SIZE
    ds = tf.data.Dataset.from_tensor_slices((x[:n], y[:n])).batch(recipe.BATCH_SIZE).cache()

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

    rows = []
    for name in args.variants:
        keras.utils.set_random_seed(recipe.SEED)
        dense = compiled(tsp.models.fashion_cnn())
        pruner = pruners()[name]()
        pruned = compiled(
            tsp.prune_model(
                tsp.models.fashion_cnn(),
                pruner,
                layers=lambda layer: layer.name not in recipe.DENSE_LAYERS,
            )
        )
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
        print(json.dumps(row), flush=True)
        rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
