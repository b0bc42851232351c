"""Renders benchmarks/results/*.json as the README's results tables.

``python benchmarks/make_table.py`` prints the markdown; ``--update-readme``
rewrites the part of README.md between ``<!-- results:begin -->`` and
``<!-- results:end -->`` so the README always shows what the JSON files hold.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE.parent / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _load(pattern: str) -> list[dict]:
    rows = []
    for path in sorted(RESULTS.glob(pattern)):
        rows.extend(json.loads(path.read_text()))
    return rows


def _fmt(values: list[float], digits: int = 4) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def accuracy_table() -> str:
    rows = [r for r in _load("accuracy*.json") + _load("tfmot_baseline*.json") if "val_acc" in r]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        label = r.get("variant") or f"{r['method']}_{r['structure']}"
        groups[
            (r["framework"], label, r["structure"], r["sparsity"], r["epochs"], r["train_size"])
        ].append(r)
    lines = [
        "| framework | variant | structure | sparsity | val acc | seeds | train s "
        "| step time vs dense |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = sorted(
        groups, key=lambda k: (k[4], k[5], k[0] != "tf_sparse_prune", k[2] != "dense", k[1])
    )
    for key in order:
        framework, label, structure, sparsity, _epochs, _size = key
        g = groups[key]
        ratios = [r["step_time_ratio_vs_dense"] for r in g if r.get("step_time_ratio_vs_dense")]
        lines.append(
            f"| {framework} | {label} | {structure} | {sparsity:g} | "
            f"{_fmt([r['val_acc'] for r in g])} | {len(g)} | "
            f"{_fmt([r['train_seconds'] for r in g], 0)} | {_fmt(ratios, 2)} |"
        )
    if not groups:
        return "(no accuracy results yet)"
    epochs = sorted({k[4] for k in groups})
    sizes = sorted({k[5] for k in groups})
    head = (
        f"Fashion-MNIST CNN, recipe of `benchmarks/recipe.py` (epochs {epochs}, "
        f"train size {sizes}, full 10k test set, accuracy of the stripped model; ± is the "
        f"standard deviation over seeds). `train s` and `step time vs dense` compare each run "
        f"with the dense run of the same invocation; most runs shared the 2 cores with other "
        f"jobs, so read those two columns as noise: the overhead table below is the controlled "
        f"measurement."
    )
    return head + "\n\n" + "\n".join(lines)


def _min_ratio(row: dict) -> float:
    return row.get("wrapper_overhead_ratio_of_minima", 0.0)


def overhead_table() -> str:
    rows = _load("overhead.json") + [
        r for r in _load("tfmot_*.json") if "wrapper_overhead_ratio" in r
    ]
    if not rows:
        return "(no overhead results yet)"
    lines = [
        "| framework | variant | step time, pruned / plain (median of rounds) "
        "| ratio of the fastest 10% of steps | rounds |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.get('framework', '?')} | {r.get('variant', r.get('method'))} | "
            f"{r['wrapper_overhead_ratio']:.3f} | "
            f"{_min_ratio(r):.3f} | {r.get('rounds', '-')} |"
        )
    return (
        "Training-step overhead of the pruning wrapper and its callbacks, A/B interleaved "
        "in one process (`benchmarks/overhead.py`; tfmot's own in `tfmot_baseline.py`).\n\n"
        + "\n".join(lines)
    )


def latency_table() -> str:
    path = RESULTS / "latency_models.json"
    if not path.exists():
        return "(no delegate latency results yet)"
    data = json.loads(path.read_text())
    lines = [
        "| model | pattern | sparsity | threads | XNNPACK ms | delegate ms | speed-up "
        "| MAC limit | claimed nodes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['model']} | {r['pattern']} | {r['sparsity']:g} | {r['threads']} | "
            f"{r['xnnpack_ms']:.1f} | {r['delegate_ms']:.1f} | {r['ratio']:.2f}x | "
            f"{r['flop_limit_ratio']:.2f}x | {r['claimed_nodes']} |"
        )
    m = data.get("machine", {})
    return (
        f"The 1xN sparse delegate vs stock TFLite (XNNPACK), batch 1, 224x224, medians of "
        f"{data.get('settings', {}).get('runs', '?')} A/B-interleaved runs "
        f"(`benchmarks/latency.py`, {m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
        f"kernel path {', '.join(sorted({r['isa'] for r in data['rows']}))}).\n\n"
        + "\n".join(lines)
    )


def render() -> str:
    return "\n\n".join([accuracy_table(), overhead_table(), latency_table()])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args(argv)
    text = render()
    if not args.update_readme:
        print(text)
        return 0
    readme = README.read_text()
    if BEGIN not in readme or END not in readme:
        print(f"README.md has no {BEGIN} ... {END} section", file=sys.stderr)
        return 1
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    README.write_text(readme[:start] + "\n" + text + "\n" + readme[end:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
