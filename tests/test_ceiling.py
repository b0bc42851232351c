"""The micro-kernel ceiling of benchmarks/ceiling.py: parsing and arithmetic."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "ceiling.py"
_spec = importlib.util.spec_from_file_location("tsp_bench_ceiling", _PATH)
ceiling_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ceiling_mod)

BENCH_OUTPUT = """isa avx512 1x16 micro-kernel, 8 pixels per call
k=   8 kept channels:  121.5 GFLOP/s,   16.9 ns/call   strided 16 pixels:  118.5 GFLOP/s
k=  64 kept channels:  186.4 GFLOP/s,   87.9 ns/call   strided 16 pixels:  193.8 GFLOP/s
k= 256 kept channels:  199.4 GFLOP/s,  328.6 ns/call
"""


def test_ukernel_table_keeps_the_better_kernel_per_row_length():
    table = ceiling_mod.parse_ukernel_table(BENCH_OUTPUT)
    assert table == [(8, 121.5), (64, 193.8), (256, 199.4)]


LAYOUTS_OUTPUT = """1x16 rows on L1 data, GFLOP/s on kept MACs: NHWC strided vs planar
k=   8 kept channels:  NHWC   98.2 GFLOP/s   planar  233.1 GFLOP/s
k= 256 kept channels:  NHWC  206.2 GFLOP/s   planar  240.7 GFLOP/s
"""


def test_planar_table_reads_the_planar_column_only():
    assert ceiling_mod.parse_planar_table(LAYOUTS_OUTPUT) == [(8, 233.1), (256, 240.7)]
    with pytest.raises(ValueError, match="planar"):
        ceiling_mod.parse_planar_table(BENCH_OUTPUT)


def test_ukernel_table_without_rows_is_an_error():
    with pytest.raises(ValueError, match="no 'k="):
        ceiling_mod.parse_ukernel_table("isa scalar unavailable\n")


def test_ukernel_gflops_interpolates_in_log_k_and_clamps():
    table = [(8, 100.0), (64, 160.0)]
    assert ceiling_mod.ukernel_gflops(table, 2) == 100.0
    assert ceiling_mod.ukernel_gflops(table, 1000) == 160.0
    # 8 * sqrt(8) lies halfway between 8 and 64 in log k.
    assert math.isclose(ceiling_mod.ukernel_gflops(table, 8 * math.sqrt(8)), 130.0)


def _node(kernel, cin, cout, pixels, sparsity, ms, fused_add=None):
    return {
        "kernel": kernel,
        "cin": cin,
        "cout": cout,
        "pixels": pixels,
        "sparsity": sparsity,
        "ms": ms,
        "fused_add": fused_add,
    }


def test_ceiling_sums_kept_flops_over_the_kernel_speed_and_adds_the_rest():
    table = [(8, 100.0), (64, 200.0)]
    # 1x1 256->64 at 0.75: k = 64 -> 200 GFLOP/s; 3x3 64->64 at 0.875: k = 72 -> 200.
    a = _node((1, 1), 256, 64, 1000, 0.75, ms=0.05)
    b = _node((3, 3), 64, 64, 1000, 0.875, ms=0.08, fused_add=7)
    profile = {"nodes": [a, b], "rest_ms": 1.0, "invoke_ms": 1.2, "delegate_ms": 0.13}
    out = ceiling_mod.ceiling(profile, table, stock_ms=6.0, sparse_ms=1.2)
    flops_a = 2 * 1000 * 256 * 64 * 0.25
    flops_b = 2 * 1000 * 64 * 64 * 9 * 0.125
    expect = (flops_a + flops_b) / 200.0 / 1e6
    assert math.isclose(out["ceiling_delegate_ms"], round(expect, 4))
    assert math.isclose(out["ceiling_speedup"], round(6.0 / (expect + 1.0), 3))
    assert out["speedup"] == 5.0
    assert math.isclose(out["fraction_of_ceiling"], round(expect / 0.13, 3))
    assert "planar_ceiling_speedup" not in out
    planar = ceiling_mod.ceiling(profile, table, 6.0, 1.2, planar=[(8, 400.0), (64, 400.0)])
    assert math.isclose(planar["planar_ceiling_delegate_ms"], round(expect / 2, 4))
    assert math.isclose(planar["planar_ceiling_speedup"], round(6.0 / (expect / 2 + 1.0), 3))
    names = {row["layers"]: row for row in out["layers"]}
    assert set(names) == {"1x1 256->64 @1000px", "3x3 64->64 @1000px +ADD"}
    assert math.isclose(names["1x1 256->64 @1000px"]["gap_ms"], round(0.05 - flops_a / 2e8, 4))


def test_ceiling_refuses_nodes_of_another_block_width():
    node = _node((1, 1), 64, 64, 100, 0.5, ms=0.01)
    node.update(node=12, n=32)
    profile = {"nodes": [node], "rest_ms": 1.0, "invoke_ms": 1.1, "delegate_ms": 0.1}
    with pytest.raises(ValueError, match="node 12: 1x32 blocks"):
        ceiling_mod.ceiling(profile, [(8, 100.0)], stock_ms=2.0, sparse_ms=1.1)
