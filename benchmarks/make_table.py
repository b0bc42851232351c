"""Renders benchmarks/results/*.json as the README's results tables.

``python benchmarks/make_table.py`` prints the markdown; ``--update-readme``
rewrites the part of README.md between ``<!-- results:begin -->`` and
``<!-- results:end -->`` so the README always shows what the JSON files hold, and
writes the per-layer sparsity table to ``benchmarks/results/layer_sparsity.md``.
"""

from __future__ import annotations

import argparse
import json
import math
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


def machine_label(data: dict) -> str:
    """The machine a latency file was measured on, as the tables name it: the CPU and
    the widest kernel path the delegate had there (this project ran on AMD EPYC VMs
    with AVX-512 (Zen 5) and without (Zen 3); both report the model name "AMD EPYC")."""
    m = data.get("machine", {})
    isas = m.get("delegate_isas") or sorted({r.get("isa", "?") for r in data.get("rows", [])})
    widest = next((i for i in ("avx512", "avx2", "neon") if i in isas), "scalar")
    label = f"{m.get('cpu', '?')}, {ISA_NAMES.get(widest, widest)}"
    if m.get("cpu_family") is not None:
        label += f" (family {m['cpu_family']}, model {m.get('cpu_model', '?')})"
    return label


ISA_NAMES = {"avx512": "AVX-512", "avx2": "AVX2", "neon": "NEON", "scalar": "scalar"}


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
        "| framework | variant | structure | sparsity | epochs | val acc | seeds | train s "
        "| step time vs dense |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    order = sorted(
        groups, key=lambda k: (k[4], k[5], k[0] != "tf_sparse_prune", k[2] != "dense", k[1])
    )
    for key in order:
        framework, label, structure, sparsity, epochs_, _size = key
        g = groups[key]
        ratios = [r["step_time_ratio_vs_dense"] for r in g if r.get("step_time_ratio_vs_dense")]
        lines.append(
            f"| {framework} | {label} | {structure} | {sparsity:g} | {epochs_} | "
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


#: the targets on ResNet50 (96x96, batch 8): the mean step, pruned / plain, with one mask
#: update per 100 steps for Magnitude; prune_model against keras.models.clone_model
STEP_TARGETS = {"magnitude": 1.05, "subp": 1.15, "smart": 1.15}
CLONE_TARGET = 1.2


def _met(value: float, target: float) -> str:
    return "yes" if value <= target else "**no**"


def resnet_overhead_table() -> str:
    """``overhead_resnet50*.json``: each run (labelled, e.g. before / after a change, with
    the commit timed) as step-time and ``prune_model`` rows against their targets."""
    rows = _load("overhead_resnet50*.json")
    if not rows:
        return ""
    steps = [
        "| code | commit | variant | mean step ratio | median of rounds | fastest 10% "
        "| target | met | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    clones = [
        "| code | commit | method | prune_model / clone (median of rounds) | ratio of minima "
        "| target | met | clone s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    machines = set()
    for r in rows:
        machines.add(
            f"{r.get('cpu', '?')} (family {r.get('cpu_family', '?')}, model "
            f"{r.get('cpu_model', '?')}), {r.get('cores', '?')} cores"
        )
        code, commit = r.get("label", "-"), r.get("library_commit") or "-"
        if r.get("variant") == "prune_model_vs_clone":
            for key, value in r.items():
                if key.endswith("_ratio"):
                    method = key[: -len("_ratio")]
                    minima = r.get(f"{method}_ratio_of_minima")
                    clones.append(
                        f"| {code} | {commit} | {method} | {value:.2f} | "
                        f"{'-' if minima is None else f'{minima:.2f}'} | {CLONE_TARGET} | "
                        f"{_met(value, CLONE_TARGET)} | {r.get('clone_seconds', 0):.2f} |"
                    )
            continue
        method = r.get("method", "?")
        mean = r.get("mean_step_ratio_with_updates", r.get("mean_step_ratio"))
        target = STEP_TARGETS.get(method)
        steps.append(
            f"| {code} | {commit} | {r.get('variant')} | {mean:.3f} | "
            f"{r['wrapper_overhead_ratio']:.3f} | {_min_ratio(r):.3f} | "
            f"{'-' if target is None else target} | "
            f"{'-' if target is None else _met(mean, target)} | "
            f"{r.get('load_average', 0):.1f} |"
        )
    return (
        "ResNet50 (96x96, batch 8, default layer selection), A/B interleaved in one process "
        f"(`benchmarks/overhead.py --model resnet50`) on {'; '.join(sorted(machines))}. "
        "`mean step ratio` is pruned / plain over all timed steps (Magnitude's adds one "
        "compiled mask update per 100 steps, its schedule's frequency); `code` labels runs "
        "of the same script on older code (`before`) and on this code (`after`).\n\n"
        + "\n".join(steps)
        + "\n\n"
        + "\n".join(clones)
    )


def latency_table() -> str:
    tables = []
    for path in sorted(RESULTS.glob("latency_models*.json")):
        tables.append(_latency_models_table(json.loads(path.read_text())))
    return "\n\n".join(tables) if tables else "(no delegate latency results yet)"


def _dtype_label(data: dict) -> str:
    """A lead-in for int8 results (``latency.py --quantize int8``), else nothing."""
    if data.get("settings", {}).get("quantize") == "int8":
        return (
            '**int8** (full-integer models from `export_tflite(quantize="int8")`: XNNPACK\'s '
            "dense int8 kernels against the delegate's int8 kernels, outputs bit-exact with "
            "TFLite's reference). "
        )
    return ""


def _latency_models_table(data: dict) -> str:
    lines = [
        "| model | pattern | sparsity | threads | XNNPACK ms | delegate ms | speed-up "
        "| MAC limit | claimed nodes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    # Stock XNNPACK's own 1-thread time per (model, pattern, sparsity): a row at more
    # threads where it did not get faster ran while the VM had lost a core.
    single = {
        (r["model"], r["pattern"], r["sparsity"]): r["xnnpack_ms"]
        for r in data["rows"]
        if r["threads"] == 1
    }
    flagged = False
    for r in data["rows"]:
        base = single.get((r["model"], r["pattern"], r["sparsity"]))
        lost = r["threads"] > 1 and base is not None and base / r["xnnpack_ms"] < 1.3
        flagged |= lost
        lines.append(
            f"| {r['model']} | {r['pattern']} | {r['sparsity']:g} | {r['threads']} | "
            f"{r['xnnpack_ms']:.1f}{' (a)' if lost else ''} | {r['delegate_ms']:.1f} | "
            f"{r['ratio']:.2f}x | {r['flop_limit_ratio']:.2f}x | {r['claimed_nodes']} |"
        )
    if flagged:
        lines.append(
            "\n(a) Stock XNNPACK ran no faster than at 1 thread (under 1.3x): the VM lost a "
            "core during this row, so its ratio is not a 2-thread figure."
        )
    m = data.get("machine", {})
    return (
        f"{_dtype_label(data)}The 1xN sparse delegate vs stock TFLite (XNNPACK) on "
        f"**{machine_label(data)}**, "
        f"batch 1, 224x224, medians of "
        f"{data.get('settings', {}).get('runs', '?')} A/B-interleaved runs "
        f"(`benchmarks/latency.py`, {m.get('cores', '?')} cores, measured "
        f"{m.get('date_utc', '?')[:10]}, kernel path "
        f"{', '.join(sorted({r['isa'] for r in data['rows']}))}).\n\n" + "\n".join(lines)
    )


#: (label, variant) pairs of the learned-vs-ranked per-layer sparsity table
LAYER_VARIANTS = [
    ("SMART 1x16 0.75", "smart_1x16_0.75"),
    ("Magnitude-global 1x16 0.75", "magnitude_global_1x16_0.75"),
    ("SMART 1x16 0.9", "smart_1x16_0.9"),
    ("Magnitude-global 1x16 0.9", "magnitude_global_1x16_0.9"),
    ("Magnitude (per layer) 1x16 0.9", "magnitude_1x16_0.9"),
]


def layer_sparsity_table() -> str:
    rows = [r for r in _load("accuracy*.json") if r.get("epochs") == 8 and r.get("layer_sparsity")]
    found = []
    layers: list[str] = []
    for label, variant in LAYER_VARIANTS:
        g = [r for r in rows if r["variant"] == variant]
        if not g:
            continue
        names = [k for k in g[0]["layer_sparsity"] if k not in ("stem", "classifier")]
        layers = layers or names
        per_layer = [statistics.mean(r["layer_sparsity"][n] for r in g) for n in layers]
        acc = _fmt([r["val_acc"] for r in g])
        found.append((label, len(g), per_layer, acc))
    if not found:
        return "(no per-layer sparsity results yet)"
    lines = [
        "| pruner | seeds | " + " | ".join(layers) + " | val acc |",
        "|---|---|" + "---|" * len(layers) + "---|",
    ]
    for label, n, per_layer, acc in found:
        cells = " | ".join(f"{v:.3f}" for v in per_layer)
        lines.append(f"| {label} | {n} | {cells} | {acc} |")
    return (
        "Per-layer 1x16 sparsity SMART learns with its global soft top-k vs a global magnitude "
        'ranking (Magnitude `scope="global"`) and the uniform per-layer target '
        "(Fashion-MNIST CNN, mean over seeds; `stem` and `classifier` stay dense).\n\n"
        + "\n".join(lines)
    )


def fusion_table() -> str:
    rows, runs = [], set()
    for path in sorted(RESULTS.glob("latency_fusion*.json")):
        data = json.loads(path.read_text())
        label = machine_label(data)
        rows.extend({**r, "machine": label} for r in data["rows"])
        runs.add(data["settings"]["runs"])
    if not rows:
        return ""
    lines = [
        "| machine | model | sparsity | threads | XNNPACK ms | delegate, ADDs left to XNNPACK | "
        "delegate (default: ADDs fused, Winograd) | same, Winograd off | Winograd layers | "
        "claimed ADDs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["machine"], r["threads"], r["sparsity"])):
        direct = f"{r['direct_ms']:.1f} ms ({r['ratio_direct']:.2f}x)" if "direct_ms" in r else "-"
        lines.append(
            f"| {r['machine']} | {r['model']} | {r['sparsity']:g} | {r['threads']} | "
            f"{r['xnnpack_ms']:.1f} | {r['unfused_ms']:.1f} ms ({r['ratio_unfused']:.2f}x) | "
            f"{r['fused_ms']:.1f} ms ({r['ratio_fused']:.2f}x) | {direct} | "
            f"{r.get('winograd_nodes', '-')} | {r['claimed_adds']} |"
        )
    return (
        "Residual ADDs run in the epilogue of the convolution that feeds them "
        "(`fuse_residual`, default on) vs left to XNNPACK, and the default delegate vs the "
        "same with Winograd off (every 3x3 layer on the direct kernel; Winograd F(2x2, 3x3) "
        "does 16 instead of 36 multiply-adds per kept pair and 2x2 tile, so part of the "
        "default's speed-up is arithmetic a dense Winograd would save too): the four "
        "interpreters interleaved in one loop (`benchmarks/latency.py --sections fusion`), "
        f"medians of {'/'.join(str(r) for r in sorted(runs))} runs; 1 and 2 threads are "
        "separate invocations (their scaling is in the next table).\n\n" + "\n".join(lines)
    )


def scaling_table() -> str:
    """Every ``latency_scaling*.json``: the main loop, repeats (``--tag repeat``) and
    the delegate with Winograd off (``--no-winograd --tag nowinograd``), each row
    labelled with its loop."""
    runs = []
    for path in sorted(RESULTS.glob("latency_scaling*.json")):
        data = json.loads(path.read_text())
        if data["rows"]:
            tag = path.stem.removeprefix("latency_scaling").lstrip("_") or "main"
            if not data["settings"].get("winograd", True):
                tag += " (Winograd off)"
            runs.append((machine_label(data), tag, data))
    if not runs:
        return ""
    threads = [str(t) for t in runs[0][2]["rows"][0]["threads"]]
    head = (
        "| loop | model | sparsity | "
        + " | ".join(f"XNNPACK {t}t | delegate {t}t" for t in threads)
        + " |"
    )
    lines = [head, "|---|---|---|" + "---|---|" * len(threads)]
    for machine, tag, data in sorted(runs, key=lambda r: (r[0], r[1] != "main")):
        for r in sorted(data["rows"], key=lambda r: r["sparsity"]):
            cells = []
            for t in threads:
                cells.append(f"{r['xnnpack_ms'][t]:.1f} ms (x{r['xnnpack_scaling'][t]:.2f})")
                cells.append(
                    f"{r['delegate_ms'][t]:.1f} ms (x{r['delegate_scaling'][t]:.2f}; "
                    f"{r['ratio'][t]:.2f}x faster)"
                )
            lines.append(
                f"| {machine}: {tag} | {r['model']} | {r['sparsity']:g} | "
                + " | ".join(cells)
                + " |"
            )
    settings = sorted({d["settings"]["runs"] for _, _, d in runs})
    return (
        "Thread scaling: stock and delegate at every thread count interleaved in one loop "
        "(`benchmarks/latency.py --sections scaling`, medians of "
        f"{'/'.join(map(str, settings))} runs); (xK) is the speed-up over the same "
        f"interpreter at {threads[0]} thread. Every loop run for these results is listed: "
        "the VM's speed changes between loops.\n\n" + "\n".join(lines)
    )


def layers_table() -> str:
    """Single ResNet-50 layers (``latency_layers*.json`` except the threshold runs), one
    table per file: speed-up over XNNPACK and kept-MAC GFLOP/s over XNNPACK's dense
    GFLOP/s at 1 thread, speed-up at 2 threads."""
    tables = []
    for path in sorted(RESULTS.glob("latency_layers*.json")):
        if "threshold" in path.stem:
            continue
        data = json.loads(path.read_text())
        rows = data["rows"]
        sparsities = sorted({r["sparsity"] for r in rows})
        cell = {(r["layer"], r["sparsity"], r["threads"]): r for r in rows}
        layers = list(dict.fromkeys(r["layer"] for r in rows))
        lines = [
            "| layer | input | kernel | " + " | ".join(f"{s:g}" for s in sparsities) + " |",
            "|---|---|---|" + "---|" * len(sparsities),
        ]
        for name in layers:
            first = next(r for r in rows if r["layer"] == name)
            cells = []
            for s in sparsities:
                one, two = cell.get((name, s, 1)), cell.get((name, s, 2))
                text = (
                    f"{one['ratio']:.2f}x · {one['kept_gflops_over_xnnpack']:.2f}" if one else "-"
                )
                cells.append(text + (f" · {two['ratio']:.2f}x" if two else ""))
            lines.append(
                f"| {name} | {'x'.join(map(str, first['input'][1:]))} | "
                f"{'x'.join(map(str, first['kernel']))} | " + " | ".join(cells) + " |"
            )
        tag = path.stem.removeprefix("latency_layers").lstrip("_") or "main"
        tables.append(
            f"{_dtype_label(data)}Single ResNet-50 layers, 1x16 by magnitude, batch 1, on "
            f"**{machine_label(data)}** "
            f"(`latency.py --sections layers`, loop `{tag}`, medians of "
            f"{data['settings']['runs']} interleaved runs): per sparsity, the speed-up over "
            "XNNPACK at 1 thread · the delegate's GFLOP/s on kept multiply-adds over XNNPACK's "
            "dense GFLOP/s on the same layer at 1 thread (the issue's per-layer target is "
            ">= 0.75; a 3x3 layer run as Winograd can exceed 1) · the speed-up at 2 threads.\n\n"
            + "\n".join(lines)
        )
    return "\n\n".join(tables)


def subp_table() -> str:
    """The SUBP supplement's Figure 5 set-up (``latency_subp*.json``): uniform vs
    non-uniform 1xN over ResNet-18's four 3x3 layer shapes at batch 4, summed as one
    stack, one table per file."""
    tables = []
    for path in sorted(RESULTS.glob("latency_subp*.json")):
        data = json.loads(path.read_text())
        rows = data["rows"]
        sums: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for r in rows:
            key = (r["pattern"], r["n"], r["sparsity"], r["threads"])
            sums[key][0] += r["xnnpack_ms"]
            sums[key][1] += r["delegate_ms"]

        def ratio(pattern: str, n: int, s: float, t: int, sums: dict = sums) -> str:
            v = sums.get((pattern, n, s, t))
            return f"{v[0] / v[1]:.2f}x" if v else "-"

        threads = sorted({r["threads"] for r in rows})
        lines = [
            "| N | sparsity | MAC limit | "
            + " | ".join(f"uniform {t}t | non-uniform {t}t" for t in threads)
            + " |",
            "|---|---|---|" + "---|---|" * len(threads),
        ]
        lines.append(
            "| dense | 0 | 1.00x | "
            + " | ".join(f"{ratio('dense', 0, 0.0, t)} | -" for t in threads)
            + " |"
        )
        for n in sorted({r["n"] for r in rows if r["n"]}):
            for s in sorted({r["sparsity"] for r in rows if r["n"] == n}):
                limit = _subp_limit(rows, n, s) or "-"
                lines.append(
                    f"| {n} | {s:g} | {limit} | "
                    + " | ".join(
                        f"{ratio('uniform', n, s, t)} | {ratio('non-uniform', n, s, t)}"
                        for t in threads
                    )
                    + " |"
                )
        tables.append(
            "SUBP supplement, Figure 5 set-up on **"
            + machine_label(data)
            + "**: ResNet-18's four 3x3 layer shapes at 224x224, batch 4, pruned 1xN with "
            "every block row keeping the same count (uniform, as SUBP prunes) or by a "
            "layer-wide ranking (non-uniform, as magnitude pruning does); speed-up of the "
            "delegate over XNNPACK on the four layers' summed medians "
            f"(`latency.py --sections subp`, {data['settings']['runs']} interleaved runs; "
            "the dense row is the delegate claiming the unpruned layers, Winograd included).\n\n"
            + "\n".join(lines)
        )
    return "\n\n".join(tables)


def _subp_limit(rows: list[dict], n: int, s: float) -> str:
    """Dense over kept multiply-adds of the four uniform layers together."""
    dense = kept = 0.0
    for r in rows:
        if r["pattern"] == "uniform" and r["n"] == n and r["sparsity"] == s and r["threads"] == 1:
            macs = math.prod(r["input"][:3]) * math.prod(r["kernel"])
            dense += macs
            kept += macs / r["flop_limit_ratio"]
    return f"{dense / kept:.2f}x" if kept else ""


def ceiling_table() -> str:
    path = RESULTS / "ceiling_resnet50_1x16.json"
    if not path.exists():
        return ""
    data = json.loads(path.read_text())
    lines = [
        "| model | sparsity | XNNPACK ms | delegate ms | speed-up | ceiling speed-up | "
        "claimed layers at % of their ceiling | target | % the target needs | "
        "planar kernel's ceiling |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        need = f"{r['fraction_needed']:.0%}" if r.get("fraction_needed") else "-"
        planar = r.get("planar_ceiling_speedup")
        target = f"{r['target']:g}x" if r.get("target") else "-"
        lines.append(
            f"| {r['model']} | {r['sparsity']:g} | {r['stock_ms']:.1f} | {r['sparse_ms']:.2f} | "
            f"{r['speedup']:.2f}x | {r['ceiling_speedup']:.2f}x | "
            f"{r['fraction_of_ceiling']:.0%} | {target} | {need} | "
            + (f"{planar:.2f}x |" if planar else "- |")
        )
    return (
        "The direct micro-kernel's ceiling (`benchmarks/ceiling.py`, 1 thread, Winograd "
        "off: the delegate and its speed-up here run every layer on the direct kernel): each "
        "claimed layer timed at the bare 1x16 micro-kernel's speed on L1-resident data for its "
        "row length (`bench_kernels ukernel`), plus the nodes left to XNNPACK as profiled. A "
        "target above the ceiling speed-up needs a faster micro-kernel or fewer multiply-adds "
        "(Winograd, on by default, does fewer for some 3x3 layers). The last column "
        "is a design study (`bench_kernels layouts`): the same rows vectorised over the pixels "
        "of a channel-major tile, 8 output channels x 32 pixels per pass, a layout the "
        "delegate does not use yet.\n\n" + "\n".join(lines)
    )


def ocs_table() -> str:
    path = RESULTS / "ocs.json"
    if not path.exists():
        return "(no OCSPruner results yet)"
    rows = json.loads(path.read_text())
    lat_path = RESULTS / "ocs_latency.json"
    lat = {}
    if lat_path.exists():
        for r in json.loads(lat_path.read_text())["rows"]:
            lat[(r["model"], r["variant"], r["flops_reduction"])] = r
    lines = [
        "| model | variant | FLOPs target | FLOPs removed | params removed | val acc | t_sl | t* "
        "| CPU time vs dense | TFLite speed-up (1 thread) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["model"], r["flops_reduction"], r["variant"])):
        key = (r["model"], r["variant"], r["flops_reduction"])
        speed = (
            f"{lat[key]['speedup']:.2f}x (FLOPs {lat[key]['flops_ratio']:.2f}x)"
            if key in lat
            else "-"
        )
        cpu = r.get("cpu_time_vs_dense")
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['flops_reduction']:g} | "
            f"{r['achieved_flops_reduction']:.3f} | {1 - r['params'] / r['params_before']:.3f} | "
            f"{r['val_acc']:.4f} | {r.get('t_sl_start', '-')} | {r.get('t_star', '-')} | "
            f"{'-' if cpu is None else f'{cpu:.2f}'} | {speed} |"
        )
    return (
        "OCSPruner (one cycle: train, search, remove channels at t*, train the smaller model) "
        "vs the dense model and vs L2-norm channel pruning of the trained dense model plus "
        "fine-tuning (`l2ft`); `ocs_loss_only` / `ocs_shrink_only` are the Table 6 ablation "
        "(`benchmarks/ocs.py`; Fashion-MNIST, recipe of `benchmarks/recipe.py`, seed 0). CPU "
        "time counts all threads of the process, so it is not skewed by other jobs sharing "
        "the machine; the TFLite speed-up is the stock interpreter, batch 1, medians of "
        "A/B-interleaved runs.\n\n" + "\n".join(lines)
    )


def quantized_table() -> str:
    """``quantized_accuracy.json``: pruned fp32 vs int8 (and dynamic-range) TFLite accuracy,
    one line per model and sparsity with the mean over seeds and each seed's int8 change."""
    path = RESULTS / "quantized_accuracy.json"
    if not path.exists():
        return ""
    rows = json.loads(path.read_text())
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["sparsity"], r["epochs"])].append(r)
    lines = [
        "| model | 1x16 sparsity | seeds | fp32 acc | int8 acc | dynamic acc | int8 - fp32 "
        "(points, each seed) | worst | within 0.5 | zeros kept (int8) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (model, sparsity, _epochs), group in sorted(groups.items()):
        group.sort(key=lambda r: r["seed"])
        deltas = [r["int8_minus_fp32_points"] for r in group]
        worst = min(deltas)
        lines.append(
            f"| {model} | {sparsity:g} | {len(group)} | "
            f"{statistics.mean(r['fp32_tflite_acc'] for r in group):.4f} | "
            f"{statistics.mean(r['int8_tflite_acc'] for r in group):.4f} | "
            f"{statistics.mean(r['dynamic_tflite_acc'] for r in group):.4f} | "
            f"{', '.join(f'{d:+.2f}' for d in deltas)} | {worst:+.2f} | "
            f"{_met(-worst, 0.5)} | {all(r['int8_zeros_preserved'] for r in group)} |"
        )
    machine = rows[0]
    return (
        "Pruned and quantized (`benchmarks/quantized_accuracy.py`, on "
        f"{machine.get('cpu', '?')}): the recipe trains each model with 1x16 Magnitude; "
        "the stripped model is exported as float32, full-integer int8 (calibrated on 256 "
        "training images) and dynamic-range int8, and each flatbuffer is scored on the "
        "10,000 test images with the stock interpreter. The target: int8 within 0.5 points "
        "of fp32 on every seed.\n\n" + "\n".join(lines)
    )


def _zoo_short(status: str) -> str:
    """A run's status cut to its first clause, for the matrix cells."""
    if status == "ok":
        return "ok"
    return status.split(":")[0].replace("|", "/")


def zoo_table() -> str:
    path = RESULTS / "zoo.json"
    if not path.exists():
        return ""
    data = json.loads(path.read_text())
    # a run still in progress has no result yet
    runs = [r for r in data.get("runs", []) if r.get("status") != "running"]
    if not runs:
        return ""
    archs = list(dict.fromkeys(r["arch"] for r in runs))
    methods = list(dict.fromkeys(r["method"] for r in runs))
    by_key = {(r["arch"], r["method"]): r for r in runs}
    matrix = [
        "| architecture | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for arch in archs:
        cells = [
            _zoo_short(by_key[(arch, m)]["status"]) if (arch, m) in by_key else "-" for m in methods
        ]
        matrix.append(f"| {arch} | " + " | ".join(cells) + " |")
    lines = [
        "| architecture | method | input | status | layers pruned / left | left dense because "
        "| delegate nodes claimed | max abs delegate - stock | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        left = ", ".join(f"{k} {v}" for k, v in r.get("left_reasons", {}).items()) or "-"
        pruned = f"{r['layers_pruned']} / {r['layers_left']}" if "layers_pruned" in r else "-"
        claimed = r.get("claimed")
        claimed_text = (
            f"{r['claimed_nodes']} ("
            + ", ".join(f"{op} {n}" for op, n in sorted(claimed.items()))
            + ")"
            if claimed
            else ("0" if claimed is not None else "-")
        )
        diff = r.get("max_abs_delegate_vs_stock")
        wall = r.get("wall_s")
        status = r["status"].replace("|", "/")
        lines.append(
            f"| {r['arch']} | {r['method']} | {r.get('size', '-')} | {status} | {pruned} | "
            f"{left} | {claimed_text} | {'-' if diff is None else f'{diff:.1e}'} | "
            f"{'-' if wall is None else f'{wall:.0f}'} |"
        )
    return (
        "Model zoo (`benchmarks/zoo.py`, on "
        f"**{machine_label(data)}**): each architecture (`keras.applications`, "
        "`weights=None`, 10 classes, the smallest input from 64 up) x method (sparsity 0.8; "
        "OCSPruner at 0.5 of the FLOPs) through the README chain on random data, 3 epochs of "
        "2 steps of batch 4: `prune_model` -> `fit` -> `sparsity_report` -> `strip_pruning` -> "
        "`.keras` round trip -> `export_tflite` -> `check_tflite_sparsity` -> "
        "`SparseInterpreter` vs the stock interpreter (the stripped model's BatchNormalization "
        "layers first take the statistics of 16 random inputs, see its module doc). `ok` "
        "means every step ran, no layer was emptied, the output depends on the input, the "
        "zeros reached the flatbuffer and the delegate agrees with the stock interpreter; "
        "otherwise the cell names the first failing step or check (the table below has the "
        "message).\n\n" + "\n".join(matrix) + "\n\n" + "\n".join(lines)
    )


def render() -> str:
    parts = [
        accuracy_table(),
        layer_sparsity_table(),
        overhead_table(),
        resnet_overhead_table(),
        latency_table(),
        fusion_table(),
        scaling_table(),
        layers_table(),
        subp_table(),
        ceiling_table(),
        ocs_table(),
        quantized_table(),
        zoo_table(),
    ]
    return "\n\n".join(p for p in parts if p)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args(argv)
    text = render()
    if not args.update_readme:
        print(text)
        return 0
    # the learned-vs-ranked per-layer sparsity also as a file of its own
    (RESULTS / "layer_sparsity.md").write_text(layer_sparsity_table() + "\n")
    readme = README.read_text()
    if BEGIN not in readme or END not in readme:
        print(f"README.md has no {BEGIN} ... {END} section", file=sys.stderr)
        return 1
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    README.write_text(readme[:start] + "\n" + text + "\n" + readme[end:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
