"""OCSPruner benchmark: one-cycle channel pruning vs dense and vs L2 pruning + fine-tuning.

For each model (``fashion_cnn``, ``resnet20`` on 28x28x1 input) and FLOPs reduction
(default 0.3, 0.5, 0.7), on the Fashion-MNIST recipe of ``benchmarks/recipe.py`` (SGD,
momentum 0.9, Nesterov, cosine decay over the run, batch 128, no XLA):

* ``dense``: ``--epochs`` epochs of the unpruned model.
* ``ocs``: ``OCSPruner.fit`` for ``--epochs`` epochs in all (search, removal at ``t*``,
  training of the smaller model to the end).
* ``l2ft``: the dense recipe, then one-shot removal of the channels with the smallest
  conventional L2 filter saliency (``||filter||_2 / sqrt(|filter|)`` of the producers only,
  same global FLOPs partition and ``max_layer_prune``), then ``--finetune-epochs`` epochs of
  fine-tuning at a tenth of the learning rate, cosine decay.

Rows ``{model, variant, flops_reduction, val_acc, flops, params, train_seconds,
wall_clock_vs_dense, t_sl_start, t_star, jaccard, ...}`` go to ``benchmarks/results/ocs.json``
(rows with the same key replaced), and the ``J_avg`` curves of the ``ocs`` runs to
``benchmarks/results/ocs_jaccard.png`` (needs matplotlib). ``val_acc`` is on the full
10,000-image test set.

The OCS settings default to a short-schedule version of the paper's (lag 1, window 2,
``t_sl-start`` epoch 1, ``epsilon`` 1e-3, last search epoch ``epochs // 2``, ``lambda_0`` =
``delta`` = 0.05): the paper's values (lag 2, window 3, auto start, 1e-4) are tuned for
300 epochs and would not start sparsity learning within 8. Every one is a flag.

Examples::

    python benchmarks/ocs.py                                           # the full table
    python benchmarks/ocs.py --models fashion_cnn --reductions 0.5 --epochs 2 \\
        --train-size 1024 --finetune-epochs 1 --out ocs_tiny.json --png ocs_tiny.png
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

RESULTS = HERE / "results"
MODELS = ("fashion_cnn", "resnet20")
VARIANTS = ("dense", "ocs", "l2ft")
# the paper's Table 6 ablation: OCSPruner with one part of the regulariser switched off
ABLATIONS = {"ocs_loss_only": {"shrink": False}, "ocs_shrink_only": {"loss_term": False}}
TMP = RESULTS / "tmp"


def _model(name: str):
    from tf_sparse_prune import models

    if name == "resnet20":
        return models.resnet20(input_shape=(28, 28, 1))
    return models.fashion_cnn()


def _compile(model, lr0: float, decay_steps: int):
    import keras

    lr = keras.optimizers.schedules.CosineDecay(lr0, decay_steps=max(1, decay_steps))
    model.compile(
        optimizer=keras.optimizers.SGD(lr, momentum=recipe.MOMENTUM, nesterov=recipe.NESTEROV),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,
    )
    return model


def _dataset(x, y, seed):
    import tensorflow as tf

    return (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        .batch(recipe.BATCH_SIZE, drop_remainder=True)
        .prefetch(2)
    )


def l2_filter_saliency(model, graph) -> dict[int, np.ndarray]:
    """Conventional saliency: mean over a group's producers of ||filter||_2 / sqrt(|filter|)."""
    from tf_sparse_prune.algorithms.ocspruner import _Slice

    out = {}
    for g in graph.prunable_groups:
        total, count = np.zeros(g.size), np.zeros(g.size)
        for s in g.slices:
            if s.role != "output" or s.weight not in ("kernel", "pointwise_kernel"):
                continue
            sl = _Slice(model, g, s)
            held = sl.counts > 0
            total[held] += np.sqrt(sl.channel_sumsq(sl.var.numpy()))[held] / np.sqrt(
                sl.counts[held]
            )
            count += held
        out[g.id] = total / np.maximum(count, 1)
    return out


def run(model_name, variant, reduction, data, args, seed):
    import keras

    import tf_sparse_prune as tsp
    from tf_sparse_prune.algorithms.ocspruner import OCSPruner, partition

    (x, y), (xt, yt) = data
    x, y = x[: args.train_size], y[: args.train_size]
    keras.utils.set_random_seed(seed)
    spe = recipe.steps_per_epoch(len(x))
    ds = _dataset(x, y, seed)
    model = _compile(_model(model_name), recipe.LEARNING_RATE, args.epochs * spe)
    flops_before, params_before = tsp.count_flops(model), tsp.count_params(model)
    row = {"model": model_name, "variant": variant, "flops_reduction": reduction, "seed": seed}
    t0, c0 = time.perf_counter(), time.process_time()
    final, extra = model, {}
    if variant == "dense":
        model.fit(ds, epochs=args.epochs, verbose=args.verbose)
    elif variant == "ocs" or variant in ABLATIONS:
        last = args.last_search_epoch if args.last_search_epoch >= 0 else args.epochs // 2
        start = args.start_epoch if args.start_epoch == "auto" else int(args.start_epoch)
        pruner = OCSPruner(
            reduction,
            stability_lag=args.lag,
            stability_window=args.window,
            start_epoch=start,
            stability_epsilon=args.epsilon,
            last_search_epoch=last,
            penalty_initial=args.penalty_initial,
            penalty_step=args.penalty_step,
            penalty_interval=args.penalty_interval,
            max_layer_prune=args.max_layer_prune,
            **ABLATIONS.get(variant, {}),
        )
        final, history = pruner.fit(model, ds, epochs=args.epochs, verbose=args.verbose)
        extra = {
            k: history[k]
            for k in ("t_sl_start", "t_star", "stop_reason", "jaccard", "jaccard_raw", "penalty")
        }
        extra["prune_channels"] = [sum(d.values()) for d in history["prune_set_sizes"]]
    else:  # l2ft
        model.fit(ds, epochs=args.epochs, verbose=args.verbose)
        graph = tsp.DependencyGraph(model)
        removal = partition(
            l2_filter_saliency(model, graph), graph, reduction, args.max_layer_prune
        )
        final = tsp.remove_channels(model, removal, graph=graph)
        ft = args.finetune_epochs
        _compile(final, recipe.LEARNING_RATE / 10, ft * spe)
        if ft:
            final.fit(ds, epochs=ft, verbose=args.verbose)
        extra = {"finetune_epochs": ft}
    row["train_seconds"] = time.perf_counter() - t0
    # CPU seconds of the whole process (all threads): unaffected by other jobs on the machine
    # or by the run being paused, so the ratio to dense is the cost of the cycle itself
    row["train_cpu_seconds"] = time.process_time() - c0
    TMP.mkdir(parents=True, exist_ok=True)
    saved = TMP / f"ocs_{model_name}_{variant}_{reduction}.keras"
    final.save(saved)
    row["saved_model"] = saved.relative_to(RESULTS).as_posix()  # under benchmarks/results
    final.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,
    )
    row["val_acc"] = float(final.evaluate(xt, yt, batch_size=512, verbose=0)[1])
    flops, params = tsp.count_flops(final), tsp.count_params(final)
    row.update(
        {
            "flops": flops,
            "params": params,
            "flops_before": flops_before,
            "params_before": params_before,
            "achieved_flops_reduction": 1 - flops / flops_before,
            "epochs": args.epochs,
            "train_size": len(x),
            "jit_compile": False,
            **extra,
        }
    )
    return row


def merge_rows(path: Path, rows: list[dict]) -> None:
    def key(r):
        return (r["model"], r["variant"], r["flops_reduction"], r["seed"], r["epochs"])

    old = json.loads(path.read_text()) if path.exists() else []
    new = {key(r) for r in rows}
    path.write_text(json.dumps([r for r in old if key(r) not in new] + rows, indent=1) + "\n")


def plot_jaccard(rows: list[dict], path: Path) -> bool:
    """J_avg by epoch of every ocs row, one panel per model; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no Jaccard plot", flush=True)
        return False
    ocs = [r for r in rows if r["variant"] == "ocs"]  # the full method only
    models = sorted({r["model"] for r in ocs})
    if not models:
        return False
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.6), squeeze=False)
    for ax, name in zip(axes[0], models, strict=True):
        for r in (r for r in ocs if r["model"] == name):
            j = [np.nan if v is None else v for v in r["jaccard"]]
            line = ax.plot(range(len(j)), j, marker="o", label=f"alpha={r['flops_reduction']}")
            color = line[0].get_color()
            raw = [np.nan if v is None else v for v in r["jaccard_raw"]]
            ax.plot(range(len(raw)), raw, linestyle=":", color=color, alpha=0.5)
            if r.get("t_sl_start") is not None:
                ax.axvline(r["t_sl_start"], color=color, linestyle=":", alpha=0.7)
            if r.get("t_star") is not None:
                ax.axvline(r["t_star"], color=color, linestyle="--", alpha=0.7)
        ax.set_title(f"{name}: J_avg (faint: raw J; vertical: t_sl-start, t*)", fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("epoch")
        ax.set_ylabel("J_avg")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def time_interleaved(flats: dict[str, bytes], runs: int, warmup: int) -> dict[str, float]:
    """Median single-image latency (ms, 1 thread, stock LiteRT) of each model, A/B interleaved."""
    from ai_edge_litert.interpreter import Interpreter

    from tf_sparse_prune.export.bench_cli import interleaved_times

    interps = {}
    for key, flat in flats.items():
        it = Interpreter(model_content=flat, num_threads=1)
        it.allocate_tensors()
        inp = it.get_input_details()[0]
        x = np.random.default_rng(0).standard_normal(inp["shape"]).astype("float32")
        it.set_tensor(inp["index"], x)
        interps[key] = it
    times = interleaved_times(interps, runs, warmup)
    return {k: float(np.median(v)) for k, v in times.items()}


def bench_latency(args) -> int:
    """Stock-TFLite latency of every saved small model vs its dense model (``ocs_latency.json``)."""
    import keras

    import tf_sparse_prune as tsp

    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    out = []
    for name in args.models:
        mine = [r for r in rows if r["model"] == name and r.get("saved_model")]
        dense = [r for r in mine if r["variant"] == "dense"]
        if not dense:
            print(f"{name}: no saved dense model in {args.out}; run the training first")
            continue
        flats = {}
        for r in mine:
            path = RESULTS / r["saved_model"]
            if path.exists():
                flats[(r["variant"], r["flops_reduction"])] = tsp.export_tflite(
                    keras.saving.load_model(path, compile=False)
                )
        ms = time_interleaved(flats, args.runs, args.warmup)
        base = ms[("dense", 0.0)]
        for r in mine:
            key = (r["variant"], r["flops_reduction"])
            if key not in ms:
                continue
            out.append(
                {
                    "model": name,
                    "variant": r["variant"],
                    "flops_reduction": r["flops_reduction"],
                    "latency_ms": round(ms[key], 4),
                    "dense_latency_ms": round(base, 4),
                    "speedup": round(base / ms[key], 3),
                    "flops_ratio": round(r["flops_before"] / r["flops"], 3),
                    "threads": 1,
                    "runs": args.runs,
                }
            )
            print(json.dumps(out[-1]), flush=True)
    path = args.out.with_name("ocs_latency.json")
    path.write_text(json.dumps({"loadavg_1min": os.getloadavg()[0], "rows": out}, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument(
        "--variants", nargs="+", default=[*VARIANTS, *ABLATIONS], choices=[*VARIANTS, *ABLATIONS]
    )
    parser.add_argument("--reductions", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument(
        "--ablation-reductions",
        type=float,
        nargs="+",
        default=[0.5],
        help="the reductions at which the ablation variants run",
    )
    parser.add_argument("--epochs", type=int, default=recipe.EPOCHS)
    parser.add_argument("--finetune-epochs", type=int, default=recipe.EPOCHS // 2)
    parser.add_argument("--train-size", type=int, default=recipe.TRAIN_SIZE)
    parser.add_argument("--seed", type=int, default=recipe.SEED)
    parser.add_argument("--lag", type=int, default=1)
    parser.add_argument("--window", type=int, default=2)
    parser.add_argument("--start-epoch", default="1", help="'auto' or an epoch")
    parser.add_argument("--epsilon", type=float, default=1e-3)
    parser.add_argument("--last-search-epoch", type=int, default=-1, help="-1: epochs // 2")
    parser.add_argument("--penalty-initial", type=float, default=0.05)
    parser.add_argument("--penalty-step", type=float, default=0.05)
    parser.add_argument("--penalty-interval", type=int, default=1)
    parser.add_argument("--max-layer-prune", type=float, default=0.75)
    parser.add_argument("--out", type=Path, default=RESULTS / "ocs.json")
    parser.add_argument("--png", type=Path, default=RESULTS / "ocs_jaccard.png")
    parser.add_argument("--verbose", type=int, default=2)
    parser.add_argument(
        "--latency",
        action="store_true",
        help="no training: time the saved models of --out in stock TFLite (1 thread)",
    )
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    args = parser.parse_args(argv)
    if args.latency:
        return bench_latency(args)

    import tf_sparse_prune as tsp

    data = tsp.load_fashion_mnist()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models:
        dense_seconds = dense_cpu = None
        plan = [("dense", 0.0)] if "dense" in args.variants else []
        plan += [(v, a) for a in args.reductions for v in VARIANTS[1:] if v in args.variants]
        plan += [(v, a) for a in args.ablation_reductions for v in ABLATIONS if v in args.variants]
        for variant, reduction in plan:
            print(f"== {name} {variant} alpha={reduction} epochs={args.epochs}", flush=True)
            row = run(name, variant, reduction, data, args, args.seed)
            if variant == "dense":
                dense_seconds, dense_cpu = row["train_seconds"], row["train_cpu_seconds"]
            row["wall_clock_vs_dense"] = (
                None if dense_seconds is None else row["train_seconds"] / dense_seconds
            )
            row["cpu_time_vs_dense"] = (
                None if dense_cpu is None else row["train_cpu_seconds"] / dense_cpu
            )
            print(json.dumps({k: v for k, v in row.items() if "jaccard" not in k}), flush=True)
            rows.append(row)
            merge_rows(args.out, [row])
    if plot_jaccard(rows, args.png):
        print(f"wrote {args.png}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
