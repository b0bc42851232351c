"""A/B of delegate builds (or options) in one process: the way to judge kernel changes.

On a shared VM whose speed drifts 10-30% from minute to minute, two builds timed in
separate processes compare two machine states, not two builds. This loads every
given delegate library (each path is a separate ``dlopen``; the libraries' internal
symbols are hidden, so the builds do not mix) next to the stock interpreter, runs
them interleaved (who goes first rotates; each invocation is followed by an untimed
pause so a pool's spinning workers never overlap the next timed run) and prints the
medians and their ratio to stock.

Copy each build's ``libtsp_delegate.so`` to a file of its own first, e.g.
``old.so`` and ``new.so`` (one path given twice loads one library: that compares
option sets, not builds).

Example:
    .venv/bin/python benchmarks/ab_delegates.py model.tflite old.so new.so --threads 2
    .venv/bin/python benchmarks/ab_delegates.py model.tflite new.so new.so \\
        --options '{"cost_model": 0}' '{"cost_model": 1}'
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a .tflite model")
    p.add_argument("libraries", nargs="+", help="delegate .so files (copies, one per build)")
    p.add_argument(
        "--options",
        nargs="+",
        default=None,
        help="one JSON object of delegate options per library (default: none)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--gap-ms", type=float, default=1.0, help="untimed pause after each invoke")
    args = p.parse_args(argv)
    if args.options is not None and len(args.options) != len(args.libraries):
        p.error("give one --options object per library")
    from ai_edge_litert.interpreter import Interpreter, load_delegate

    from tf_sparse_prune.export.bench_cli import interleaved_times

    with open(args.model, "rb") as f:
        flat = f.read()
    interps = {"stock": Interpreter(model_content=flat, num_threads=args.threads)}
    delegates = []  # must outlive their interpreters
    for i, lib in enumerate(args.libraries):
        opts = {"num_threads": str(args.threads)}
        if args.options is not None:
            opts.update({k: str(v) for k, v in json.loads(args.options[i]).items()})
        delegates.append(load_delegate(lib, opts))
        interps[f"{i}:{os.path.basename(lib)}"] = Interpreter(
            model_content=flat, num_threads=args.threads, experimental_delegates=[delegates[-1]]
        )
    rng = np.random.default_rng(0)
    det = interps["stock"].get_input_details()[0]
    x = rng.standard_normal([max(int(d), 1) for d in det["shape"]]).astype(det["dtype"])
    outs = {}
    for name, it in interps.items():
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        outs[name] = it.get_tensor(it.get_output_details()[0]["index"]).copy()
    times = interleaved_times(interps, args.runs, args.warmup, gap_ms=args.gap_ms)
    stock = float(np.median(times["stock"]))
    scale = max(float(np.abs(outs["stock"]).max()), 1e-30)
    print(f"{os.path.basename(args.model)}, {args.threads} thread(s), {args.runs} runs")
    for name, t in times.items():
        med = float(np.median(t))
        diff = float(np.abs(outs[name] - outs["stock"]).max()) / scale
        print(f"  {name:<32} {med:8.3f} ms  {stock / med:5.2f}x vs stock  max rel diff {diff:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
