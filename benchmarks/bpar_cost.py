"""Cost of SUBP's BPAR score and of one SUBP mask update, for C_in up to 2048.

BPAR needs a ``C_in x C_in`` |cosine| matrix per row of a layer (one batched
matrix product, a few rows at a time). This times, on this CPU, one BPAR call and
one full ``uniform_prune_regrow`` for square 3x3 and 1x1 convolutions
(``C_out = C_in``, 1x16 blocks), and one ``SUBP.update_masks`` of the benchmark
CNN (what each epoch of the pruning-regrowing stage adds). Writes
``benchmarks/results/bpar_cost.json``.

Example::

    python benchmarks/bpar_cost.py                 # C_in = 64 ... 2048
    python benchmarks/bpar_cost.py --channels 64 256 --repeats 3
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


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048])
    parser.add_argument("--kernels", type=int, nargs="+", default=[3, 1])
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "bpar_cost.json")
    args = parser.parse_args(argv)

    import keras

    import tf_sparse_prune as tsp
    from tf_sparse_prune.algorithms.subp import SUBP, uniform_prune_regrow
    from tf_sparse_prune.scoring import BPAR
    from tf_sparse_prune.wrappers import collect_wrappers

    rng = np.random.default_rng(0)
    structure = tsp.OneByN(args.n)
    rows = []
    for k in args.kernels:
        for c in args.channels:
            kernel = rng.standard_normal((k, k, c, c)).astype(np.float32)
            blocks = np.asarray(structure.to_blocks(kernel))
            scorer = BPAR()
            repeats = args.repeats if c <= 1024 else max(1, args.repeats // 2)
            bpar_s = _median_seconds(lambda b=blocks, s=scorer: s(b), repeats)
            scores = scorer(blocks)

            def update(scores=scores, c=c):
                regrow = round(0.5 * c)
                uniform_prune_regrow(scores, 0.75, regrow, np.random.default_rng(1))

            select_s = _median_seconds(update, repeats)
            row = {
                "kernel": f"{k}x{k}",
                "c_in": c,
                "c_out": c,
                "n": args.n,
                "rows": blocks.shape[0],
                "block_size": blocks.shape[2],
                "bpar_seconds": bpar_s,
                "prune_regrow_seconds": select_s,
                "bpar_gflop": 2.0 * blocks.shape[0] * c * c * blocks.shape[2] / 1e9,
                "cosine_entries_per_row": c * c,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)

    # one SUBP mask update of the benchmark CNN (per epoch of the pruning-regrowing stage)
    keras.utils.set_random_seed(recipe.SEED)
    pruner = SUBP(0.75, n=16, regrow_start_epoch=0, regrow_end_epoch=5)
    model = tsp.prune_model(
        tsp.models.fashion_cnn(), pruner, layers=lambda layer: layer.name not in recipe.DENSE_LAYERS
    )
    wrappers = collect_wrappers(model)
    pruner._end = 5
    update_s = _median_seconds(lambda: pruner.update_masks(wrappers, 1), args.repeats)
    model_row = {"model": "fashion_cnn", "variant": "subp_1x16_0.75", "update_seconds": update_s}
    print(json.dumps(model_row), flush=True)

    out = {
        "layers": rows,
        "model_update": model_row,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "note": "median wall seconds on this machine; BPAR in float32 matmuls, float64 sums",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
