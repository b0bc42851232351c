"""The README chain of benchmarks/zoo.py passes on a small member of every architecture family.

Each case is one run of the zoo (prune, fit, report, strip, .keras round trip, TFLite export,
sparsity check, delegate vs stock) on tiny inputs with one step per epoch; the methods are
spread over the families. The whole matrix lives in the benchmark.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "zoo.py"
_spec = importlib.util.spec_from_file_location("tsp_bench_zoo", _PATH)
zoo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(zoo)

# (architecture, method): every method once or more, and every family of zoo.FAMILIES once
# (the suite's time budget; ResNet50V2 shares ResNet50's family); the small members come
# from zoo.tiny_model (MobileNet, EfficientNetB0, InceptionV3, NASNet and Xception: their
# first blocks or cells under a new classifier; tracing time grows with the layer count).
# The whole matrix runs in the benchmark (benchmarks/results/zoo/).
CASES = [
    ("ResNet50", "magnitude_1x16"),
    ("MobileNet", "magnitude_unstructured"),
    ("EfficientNetB0", "pdp_2:4"),
    ("DenseNet121", "smart_1x16"),
    ("ConvNeXtTiny", "pdp_1x16"),
    ("Xception", "subp_1x32"),
    ("InceptionV3", "subp_1x16"),
    ("NASNetMobile", "magnitude_1x16"),
    ("subclassed", "smart_block16x8"),
    ("operators", "ocs_0.5"),
]


def _model_fn(arch: str, size: int):
    if arch in ("subclassed", "operators"):
        return lambda pruner: zoo.build_model(arch, size, pruner)
    return lambda pruner: zoo.tiny_model(arch, size)


def test_cases_cover_every_family_and_every_method():
    assert {zoo.FAMILIES[a] for a, _ in CASES} == set(zoo.FAMILIES.values())
    assert {m for _, m in CASES} == set(zoo.METHODS)


@pytest.mark.parametrize("arch, method", CASES, ids=[f"{a}-{m}" for a, m in CASES])
def test_readme_chain_passes_on_a_small_member_of_the_family(arch, method):
    size = {"Xception": 71, "InceptionV3": 75}.get(arch, 32)
    record = zoo.run(arch, method, size=size, batch=2, steps=1, model_fn=_model_fn(arch, size))
    assert record["status"] == "ok", record.get("traceback") or record["failures"]
    assert record["warnings"] == []  # no all-zero kernel, no layer cut off from the input
    assert record["input_dependence"] > zoo.INPUT_DEPENDENCE
    assert record["max_abs_delegate_vs_stock"] <= 1e-4 * max(1.0, record["max_abs_stock"])
    assert record["keras_round_trip_max_diff"] <= 1e-5
    if method.startswith("ocs"):
        assert record["flops_after"] <= 0.5 * record["flops_before"] * 1.01
    else:
        assert record["layers_pruned"] > 0
        assert record["tflite_sparsity"]["kernels"] > 0
        assert record["tflite_sparsity"]["not_preserved"] == []


def test_summary_is_rebuilt_from_the_run_files(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "RUNS_DIR", tmp_path / "zoo")
    monkeypatch.setattr(zoo, "SUMMARY", tmp_path / "zoo.json")
    record = {"arch": "operators", "method": "pdp_2:4", "status": "ok", "traceback": "..."}
    zoo._write(zoo.run_file("operators", "pdp_2:4"), record)
    summary = zoo.rebuild_summary({"cpu": "AMD EPYC"})
    assert zoo.run_file("operators", "pdp_2:4").name == "operators__pdp_2-4.json"
    assert summary["runs"] == [{"arch": "operators", "method": "pdp_2:4", "status": "ok"}]
    assert json.loads((tmp_path / "zoo.json").read_text())["machine"] == {"cpu": "AMD EPYC"}


def test_unknown_architecture_and_method_name_the_valid_ones():
    with pytest.raises(ValueError, match="unknown architecture 'VGG16'; valid: ResNet50"):
        zoo.build_model("VGG16")
    with pytest.raises(ValueError, match="unknown method 'l1'; valid: magnitude_1x16"):
        zoo.make_method("l1")
