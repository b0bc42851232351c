"""How close the delegate runs to its own micro-kernel's ceiling, layer by layer.

The ceiling of a claimed convolution is the time the bare 1xN micro-kernel
(``bench_kernels ukernel``: one block row, L1-resident data, no memory traffic,
no padding, no tails) would take for the layer's kept multiply-adds at the
layer's row length k (kept input channels x taps per block row):

    ceiling_ms = kept FLOPs / GFLOP/s_ukernel(k)

with GFLOP/s_ukernel interpolated in log k between the measured row lengths
(the better of the pointer and the strided kernel; clamped at the ends). Summed
over the claimed nodes and added to the time of the nodes left to XNNPACK
(``rest_ms`` of the delegate's profile), it bounds the end-to-end speed-up this
kernel design can reach on this CPU: ``stock_ms / (ceiling + rest_ms)``. A
speed-up target above that bound needs a faster micro-kernel, not a better
driver. The JSON also gives, per layer shape, the measured time, the ceiling and
the gap between them (where the driver and the memory system lose time).

It measures the direct kernel only: the delegate runs with ``winograd=False``
here. By default the delegate runs some 3x3 layers as Winograd F(2x2, 3x3),
which does fewer multiply-adds than these layers' kept MACs, so its end-to-end
speed-ups (``latency.py``) can exceed this bound.

Example:
    .venv/bin/python benchmarks/ceiling.py --sparsities 0.5 0.8 0.9 --runs 30

It needs ``bench_kernels`` (built by ``make test-native`` in
``build/native-tests/host``; built here with CMake if missing) and the cached
models of ``latency.py`` (``benchmarks/results/tmp/resnet50_1x16_<s>.tflite``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
BENCH_KERNELS = ROOT / "build" / "native-tests" / "host" / "bench_kernels"
# The end-to-end targets (ResNet-50 1x16, 1 thread, vs stock XNNPACK).
TARGETS = {0.5: 1.6, 0.8: 3.5, 0.9: 5.0}

_PLANAR = re.compile(
    r"k=\s*(\d+) kept channels:\s*NHWC\s*[\d.]+ GFLOP/s\s*planar\s*([\d.]+) GFLOP/s"
)
_ROW = re.compile(
    r"k=\s*(\d+) kept channels:\s*([\d.]+) GFLOP/s.*?(?:strided \d+ pixels:\s*([\d.]+) GFLOP/s)?$"
)


def parse_ukernel_table(text: str) -> list[tuple[int, float]]:
    """``(k, GFLOP/s)`` rows of ``bench_kernels ukernel`` output, best kernel per k."""
    rows = []
    for line in text.splitlines():
        m = _ROW.search(line.strip())
        if m:
            best = max(float(m.group(2)), float(m.group(3) or 0.0))
            rows.append((int(m.group(1)), best))
    if not rows:
        raise ValueError("no 'k= ... GFLOP/s' rows in the bench_kernels output")
    return sorted(rows)


def parse_planar_table(text: str) -> list[tuple[int, float]]:
    """``(k, GFLOP/s)`` of the planar row of ``bench_kernels layouts`` (a design study:
    the same 1x16 rows vectorised over pixels of a channel-major tile)."""
    rows = [(int(m.group(1)), float(m.group(2))) for m in _PLANAR.finditer(text)]
    if not rows:
        raise ValueError("no 'k= ... planar ... GFLOP/s' rows in the bench_kernels output")
    return sorted(rows)


def ukernel_gflops(table: list[tuple[int, float]], k: float) -> float:
    """The micro-kernel's GFLOP/s at row length k (log-linear, clamped at the ends)."""
    if k <= table[0][0]:
        return table[0][1]
    if k >= table[-1][0]:
        return table[-1][1]
    for (k0, g0), (k1, g1) in itertools.pairwise(table):
        if k0 <= k <= k1:
            a = (math.log(k) - math.log(k0)) / (math.log(k1) - math.log(k0))
            return g0 + a * (g1 - g0)
    raise AssertionError("unreachable")


def ceiling(
    profile: dict[str, Any],
    table: list[tuple[int, float]],
    stock_ms: float,
    sparse_ms: float,
    planar: list[tuple[int, float]] | None = None,
) -> dict:
    """Ceiling of one profiled model.

    Args:
        profile: A ``DelegateProfile`` as a dict (per-node ms, ``rest_ms``).
        table: ``parse_ukernel_table`` rows.
        stock_ms: Stock XNNPACK latency.
        sparse_ms: Delegate latency measured interleaved with ``stock_ms``.
        planar: Optional ``parse_planar_table`` rows: the same ceiling for a
            pixel-vectorised kernel over channel-major tiles (not built yet).

    Returns:
        Speed-up, ceiling speed-up, the fraction of their ceiling the claimed
        layers reach, and per layer shape the time, ceiling and gap.
    """
    groups: dict[str, dict[str, float]] = defaultdict(lambda: {"n": 0, "ms": 0.0, "ceiling": 0.0})
    total = 0.0
    total_planar = 0.0
    for node in profile["nodes"]:
        if node.get("n", 16) != 16:
            raise ValueError(
                f"node {node.get('node')}: 1x{node['n']} blocks, but the micro-kernel table "
                "is for 1x16 (profile a 1x16 model)"
            )
        kh, kw = node["kernel"]
        kept = 1.0 - node["sparsity"]
        flops = 2.0 * node["pixels"] * node["cin"] * node["cout"] * kh * kw * kept
        k = max(1.0, kept * node["cin"] * kh * kw)
        ms = flops / ukernel_gflops(table, k) / 1e6
        total += ms
        if planar:
            total_planar += flops / ukernel_gflops(planar, k) / 1e6
        name = f"{kh}x{kw} {node['cin']}->{node['cout']} @{node['pixels']}px"
        if node.get("fused_add") is not None:
            name += " +ADD"
        g = groups[name]
        g["n"] += 1
        g["ms"] += node["ms"]
        g["ceiling"] += ms
    rest = profile["rest_ms"]
    rows = [
        {
            "layers": name,
            "count": int(g["n"]),
            "ms": round(g["ms"], 4),
            "ceiling_ms": round(g["ceiling"], 4),
            "gap_ms": round(g["ms"] - g["ceiling"], 4),
        }
        for name, g in sorted(groups.items(), key=lambda kv: kv[1]["ceiling"] - kv[1]["ms"])
    ]
    out = {
        "stock_ms": round(stock_ms, 4),
        "sparse_ms": round(sparse_ms, 4),
        "invoke_ms": round(profile["invoke_ms"], 4),
        "delegate_ms": round(profile["delegate_ms"], 4),
        "rest_ms": round(rest, 4),
        "ceiling_delegate_ms": round(total, 4),
        "speedup": round(stock_ms / sparse_ms, 3),
        "ceiling_speedup": round(stock_ms / (total + rest), 3),
        "fraction_of_ceiling": round(total / profile["delegate_ms"], 3),
        "layers": rows,
    }
    if planar:
        out["planar_ceiling_delegate_ms"] = round(total_planar, 4)
        out["planar_ceiling_speedup"] = round(stock_ms / (total_planar + rest), 3)
    return out


def _bench_kernels_output(path: Path, *args: str) -> str:
    """Output of ``bench_kernels args...``, the binary re-built first (CMake, incremental)."""
    build = path.parent
    if not (build / "CMakeCache.txt").exists():
        subprocess.run(
            ["cmake", "-S", str(ROOT / "tflite_kernels"), "-B", str(build),
             "-DCMAKE_BUILD_TYPE=Release", "-DTSP_BUILD_TESTS=ON"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    subprocess.run(
        ["cmake", "--build", str(build), "--target", "bench_kernels"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return subprocess.run([str(path), *args], check=True, capture_output=True, text=True).stdout


def _profile(model: Path, runs: int, sparse_ms: float, attempts: int) -> dict[str, Any]:
    """The delegate's profile, re-taken (up to ``attempts``) while its invocation time
    is more than 5% off the interleaved ``sparse_ms`` (the VM changed speed)."""
    from dataclasses import asdict

    from tf_sparse_prune.export.bench_cli import profile_delegate

    best: dict[str, Any] | None = None
    for _ in range(max(1, attempts)):
        prof = asdict(profile_delegate(str(model), threads=1, runs=runs, winograd=False))
        off = abs(prof["invoke_ms"] / sparse_ms - 1.0)
        if best is None or off < abs(best["invoke_ms"] / sparse_ms - 1.0):
            best = prof
        if off <= 0.05:
            break
    assert best is not None
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.8, 0.9])
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--bench-kernels", type=Path, default=BENCH_KERNELS)
    p.add_argument("--isa", default="auto")
    p.add_argument("--profile-attempts", type=int, default=3)
    p.add_argument(
        "--no-planar",
        dest="planar",
        action="store_false",
        help="skip the planar-kernel design study (`bench_kernels layouts`, AVX-512 only)",
    )
    p.add_argument("--out", type=Path, default=RESULTS / "ceiling_resnet50_1x16.json")
    args = p.parse_args(argv)

    from tf_sparse_prune.export.bench_cli import compare_latency

    text = _bench_kernels_output(args.bench_kernels, "ukernel", args.isa, "16")
    table = parse_ukernel_table(text)
    print(text.strip())
    planar = None
    if args.planar:
        layouts = _bench_kernels_output(args.bench_kernels, "layouts")
        planar = parse_planar_table(layouts)
        print(layouts.strip())
    rows = []
    for s in args.sparsities:
        model = RESULTS / "tmp" / f"resnet50_1x16_{s:.2f}.tflite"
        if not model.exists():
            print(f"{model} missing: run benchmarks/latency.py --sections fusion first")
            return 1
        lat = compare_latency(str(model), threads=1, runs=args.runs, winograd=False)
        prof = _profile(model, args.runs, lat.sparse_ms, args.profile_attempts)
        row = {"model": "resnet50_1x16", "sparsity": s, "threads": 1, "target": TARGETS.get(s)}
        row.update(ceiling(prof, table, lat.dense_ms, lat.sparse_ms, planar))
        if row["target"]:
            # Fraction of the ceiling the claimed layers must reach for the target.
            budget = lat.dense_ms / row["target"] - row["rest_ms"]
            row["fraction_needed"] = round(row["ceiling_delegate_ms"] / budget, 3)
        rows.append(row)
        print(
            f"s={s}: stock {lat.dense_ms:.2f} ms, delegate {lat.sparse_ms:.2f} ms "
            f"({row['speedup']:.2f}x), ceiling {row['ceiling_speedup']:.2f}x; claimed layers "
            f"at {row['fraction_of_ceiling']:.0%} of their ceiling"
            + (
                f", the {row['target']}x target needs {row['fraction_needed']:.0%}"
                if row["target"]
                else ""
            )
            + (
                f"; a planar kernel's ceiling: {row['planar_ceiling_speedup']:.2f}x"
                if planar
                else ""
            )
        )
    payload = {
        "ukernel": [{"k": k, "gflops": g} for k, g in table],
        "planar": [{"k": k, "gflops": g} for k, g in planar] if planar else None,
        "rows": rows,
    }
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
