"""End-to-end tests of the 1xN block-sparse TFLite delegate through ai-edge-litert.

Keras models with 1xN zero blocks are converted to TFLite; the delegate's outputs
must equal the stock interpreter's to 1e-5 relative, and the claimed nodes must be
those the weights imply.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import json
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter, load_delegate

from tf_sparse_prune.export import delegate as dmod
from tf_sparse_prune.export.delegate import (
    DEFAULT_MIN_SPARSITY,
    DelegateUnavailableError,
    SparseInterpreter,
    available_isas,
    delegate_library_path,
    delegated_nodes,
    lane_fraction,
)

# ---- private helpers (candidates for tests/helpers.py: _prune_1xn, _convert, _run) ----


def _prune_1xn(kernel: np.ndarray, n: int, sparsity: float, rng: np.random.Generator):
    """Zeros 1xN blocks of a Keras kernel (..., C_in, C_out): n consecutive output
    channels of one input channel across all taps, exactly round(sparsity * blocks)."""
    cin, cout = kernel.shape[-2], kernel.shape[-1]
    blocks = cin * (cout // n)
    zero = np.zeros(blocks, dtype=bool)
    zero[rng.permutation(blocks)[: round(sparsity * blocks)]] = True
    mask = ~np.repeat(zero.reshape(cin, cout // n), n, axis=1)
    return (kernel * mask).astype(np.float32)


def _convert(model: keras.Model) -> bytes:
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def _run(interp, x: np.ndarray) -> np.ndarray:
    inp = interp.get_input_details()[0]
    if list(inp["shape"]) != list(x.shape):
        interp.resize_tensor_input(inp["index"], list(x.shape))
        interp.allocate_tensors()
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"]).copy()


def _stock(flat: bytes, x: np.ndarray) -> np.ndarray:
    interp = Interpreter(model_content=flat)
    interp.allocate_tensors()
    return _run(interp, x)


def _assert_close(out: np.ndarray, ref: np.ndarray) -> None:
    assert out.shape == ref.shape
    scale = max(float(np.abs(ref).max()), 1e-30)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * scale)


def _layer_of(node, names):
    hits = [name for name in names if f"/{name}_1/" in node.filter or f"/{name}/" in node.filter]
    assert len(hits) == 1, (node.filter, hits)
    return hits[0]


# Layer name -> (block N used for pruning, sparsity); None = left dense.
ZOO_PRUNING = {
    "blk4": (4, 0.6),
    "blk8r6": (8, 0.5),
    "blk32": (32, 0.7),
    "dil16": (16, 0.8),
    "dense_conv": None,
    "lowsp": (16, 0.1),
    "odd20": (4, 0.5),
    "k7s2": (16, 0.5),
    "fc16": (16, 0.7),
    "fc_dense": None,
}
ZOO_CLAIMED = {"blk4": 4, "blk8r6": 8, "blk32": 32, "dil16": 16, "odd20": 4, "k7s2": 16, "fc16": 16}
ZOO_DECLINED = {"dense_conv", "lowsp", "fc_dense"}


@pytest.fixture(scope="module")
def zoo_flat() -> bytes:
    """A CNN covering kernel sizes, strides, dilation, padding, activations and N."""
    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(7)
    L = keras.layers
    inp = keras.Input((13, 12, 8))
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="blk4")(inp)
    x = L.Conv2D(32, 1, activation="relu6", name="blk8r6")(x)
    x = L.Conv2D(64, 3, strides=2, padding="valid", name="blk32")(x)
    x = L.Conv2D(32, 3, dilation_rate=2, padding="same", activation="relu", name="dil16")(x)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.Conv2D(32, 1, name="dense_conv")(x)
    x = L.Conv2D(32, 1, activation="relu", name="lowsp")(x)
    x = L.Conv2D(20, 3, padding="same", name="odd20")(x)
    x = L.Conv2D(16, 7, strides=2, padding="same", activation="relu", name="k7s2")(x)
    x = L.Flatten()(x)
    x = L.Dense(64, activation="relu", name="fc16")(x)
    out = L.Dense(10, name="fc_dense")(x)
    model = keras.Model(inp, out)
    for name, spec in ZOO_PRUNING.items():
        layer = model.get_layer(name)
        kernel, bias = layer.get_weights()
        bias = rng.standard_normal(bias.shape).astype(np.float32) * 0.1
        if spec is not None:
            kernel = _prune_1xn(kernel, spec[0], spec[1], rng)
        layer.set_weights([kernel, bias])
    return _convert(model)


@pytest.fixture(scope="module")
def zoo_input() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((1, 13, 12, 8)).astype(np.float32)


def test_library_is_found_and_reports_paths():
    path = delegate_library_path()
    assert path.is_file()
    isas = available_isas()
    assert "scalar" in isas
    lib = ctypes.CDLL(str(path))
    lib.tsp_delegate_default_min_sparsity.restype = ctypes.c_double
    assert lib.tsp_delegate_default_min_sparsity() == DEFAULT_MIN_SPARSITY
    lib.tsp_delegate_auto_isa.restype = ctypes.c_char_p
    assert lib.tsp_delegate_auto_isa().decode() in isas


def test_zoo_claims_what_the_weights_imply(zoo_flat):
    interp = SparseInterpreter(model_content=zoo_flat, width_aware=False)
    report = delegated_nodes(interp)
    names = [*ZOO_PRUNING, "dw"]
    claimed = {_layer_of(n, names): n for n in report.claimed}
    declined = {_layer_of(n, names): n for n in report.declined}
    assert {k: v.n for k, v in claimed.items()} == ZOO_CLAIMED
    assert set(declined) == ZOO_DECLINED | {"dw"}
    assert declined["dw"].op == "DEPTHWISE_CONV_2D"
    assert "min_sparsity" in declined["dense_conv"].reason
    assert "min_sparsity" in declined["lowsp"].reason
    assert claimed["fc16"].op == "FULLY_CONNECTED"
    assert claimed["blk32"].block_sparsity == pytest.approx(0.7, abs=0.01)
    assert report.min_sparsity == pytest.approx(DEFAULT_MIN_SPARSITY)
    assert report.isa in available_isas()


def test_zoo_outputs_match_stock_every_path_and_thread_count(zoo_flat, zoo_input):
    ref = _stock(zoo_flat, zoo_input)
    for isa in available_isas():
        for threads in (1, 2):
            interp = SparseInterpreter(
                model_content=zoo_flat, num_threads=threads, isa=isa, width_aware=False
            )
            assert delegated_nodes(interp).isa == isa
            assert len(delegated_nodes(interp).claimed) == len(ZOO_CLAIMED)
            _assert_close(_run(interp, zoo_input), ref)


def test_width_aware_thresholds_follow_the_kernel_width(zoo_flat):
    """Narrow N needs more sparsity: 1 - (1 - min_sparsity) * lane_fraction."""
    names = [*ZOO_PRUNING, "dw"]
    for isa in available_isas():
        report = delegated_nodes(SparseInterpreter(model_content=zoo_flat, isa=isa))
        expected = {
            name
            for name, n in ZOO_CLAIMED.items()
            if ZOO_PRUNING[name][1] >= 1 - (1 - DEFAULT_MIN_SPARSITY) * lane_fraction(isa, n) - 1e-9
        }
        assert {_layer_of(node, names) for node in report.claimed} == expected, isa
        for node in report.declined:
            if _layer_of(node, names) in ZOO_CLAIMED:
                assert f"1x{_node_n(node, names)}" in node.reason
    assert lane_fraction("scalar", 4) == 1.0
    assert lane_fraction("auto", 16) == 1.0


def _node_n(node, names):
    return ZOO_CLAIMED[_layer_of(node, names)]


def test_batch_three_after_resize(zoo_flat):
    x = np.random.default_rng(5).standard_normal((3, 13, 12, 8)).astype(np.float32)
    ref = _stock(zoo_flat, x)
    interp = SparseInterpreter(model_content=zoo_flat, num_threads=2, width_aware=False)
    _assert_close(_run(interp, x), ref)
    # Back to batch 1: shapes are re-derived at the delegate kernel's prepare.
    x1 = x[1:2].copy()
    _assert_close(_run(interp, x1), _stock(zoo_flat, x1))


def test_repeated_invokes_are_stable(zoo_flat, zoo_input):
    interp = SparseInterpreter(model_content=zoo_flat, num_threads=2)
    first = _run(interp, zoo_input)
    for _ in range(3):
        np.testing.assert_array_equal(_run(interp, zoo_input), first)


def test_min_sparsity_option_changes_claims(zoo_flat, zoo_input):
    strict = delegated_nodes(SparseInterpreter(model_content=zoo_flat, min_sparsity=0.75))
    names = [*ZOO_PRUNING, "dw"]
    assert {_layer_of(n, names) for n in strict.claimed} == {"dil16"}
    loose = SparseInterpreter(
        model_content=zoo_flat, min_sparsity=0.05, width_aware=False, cost_model=False
    )
    assert {_layer_of(n, names) for n in delegated_nodes(loose).claimed} == set(ZOO_CLAIMED) | {
        "lowsp"
    }
    _assert_close(_run(loose, zoo_input), _stock(zoo_flat, zoo_input))


def test_cost_model_declines_short_rows_and_says_why(zoo_flat, zoo_input):
    # lowsp: 1x1 32->32 at 0.1 block sparsity, ~29 kept entries of 32 per row in 2
    # rows: estimated ~1.7x XNNPACK's time, so it stays with XNNPACK.
    names = [*ZOO_PRUNING, "dw"]
    interp = SparseInterpreter(model_content=zoo_flat, min_sparsity=0.05, width_aware=False)
    report = delegated_nodes(interp)
    declined = {_layer_of(n, names): n for n in report.declined}
    assert "lowsp" in declined and "lowsp" not in {_layer_of(n, names) for n in report.claimed}
    reason = declined["lowsp"].reason
    assert "rows too short" in reason and "cost_model=0" in reason, reason
    assert float(reason.split("estimates ")[1].split("x")[0]) > 1.4
    # long rows are unaffected: every other 1x16 layer is still claimed
    assert {_layer_of(n, names) for n in report.claimed} == set(ZOO_CLAIMED)
    _assert_close(_run(interp, zoo_input), _stock(zoo_flat, zoo_input))


def test_model_with_nothing_to_claim_runs_unchanged():
    keras.utils.set_random_seed(11)
    model = keras.Sequential(
        [
            keras.Input((9, 9, 3)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(5),
        ]
    )
    flat = _convert(model)
    x = np.random.default_rng(0).standard_normal((1, 9, 9, 3)).astype(np.float32)
    interp = SparseInterpreter(model_content=flat, num_threads=2)
    report = delegated_nodes(interp)
    assert report.claimed == []
    assert {n.op for n in report.declined} == {"CONV_2D", "FULLY_CONNECTED"}
    np.testing.assert_array_equal(_run(interp, x), _stock(flat, x))


def test_model_path_and_argument_errors(zoo_flat, zoo_input, tmp_path):
    path = tmp_path / "zoo.tflite"
    path.write_bytes(zoo_flat)
    interp = SparseInterpreter(model_path=path)
    _assert_close(_run(interp, zoo_input), _stock(zoo_flat, zoo_input))
    with pytest.raises(ValueError, match="exactly one of model_path and model_content"):
        SparseInterpreter()
    with pytest.raises(ValueError, match="exactly one"):
        SparseInterpreter(model_path=path, model_content=zoo_flat)
    with pytest.raises(ValueError, match="num_threads"):
        SparseInterpreter(model_content=zoo_flat, num_threads=0)
    with pytest.raises(ValueError, match="min_sparsity"):
        SparseInterpreter(model_content=zoo_flat, min_sparsity=1.5)
    with pytest.raises(ValueError, match="isa must be one of"):
        SparseInterpreter(model_content=zoo_flat, isa="sse9")
    with pytest.raises(ValueError, match="not built by"):
        delegated_nodes(Interpreter(model_content=zoo_flat))


def test_native_option_validation():
    lib = str(delegate_library_path())
    with pytest.raises(ValueError, match="unknown option 'bogus'"):
        load_delegate(lib, {"bogus": "1"})
    with pytest.raises(ValueError, match="num_threads must be an integer"):
        load_delegate(lib, {"num_threads": "two"})
    with pytest.raises(ValueError, match=r"min_sparsity must be a number in \[0, 1\]"):
        load_delegate(lib, {"min_sparsity": "-0.5"})
    with pytest.raises(ValueError, match="isa 'mmx'"):
        load_delegate(lib, {"isa": "mmx"})
    with pytest.raises(ValueError, match="width_aware must be 0 or 1"):
        load_delegate(lib, {"width_aware": "yes"})
    with pytest.raises(ValueError, match="cost_model must be 0 or 1"):
        load_delegate(lib, {"cost_model": "2"})
    with pytest.raises(ValueError, match="winograd must be 0 or 1"):
        load_delegate(lib, {"winograd": "on"})


def test_report_path_option_writes_json(zoo_flat, tmp_path):
    report = tmp_path / "r.json"
    d = load_delegate(
        str(delegate_library_path()), {"report_path": str(report), "width_aware": "0"}
    )
    Interpreter(model_content=zoo_flat, experimental_delegates=[d])
    data = json.loads(report.read_text())
    assert sum(1 for n in data["nodes"] if n["claimed"]) == len(ZOO_CLAIMED)


def test_missing_library_error_and_fallback(zoo_flat, zoo_input, monkeypatch, tmp_path):
    monkeypatch.setenv("TSP_DELEGATE_LIBRARY", str(tmp_path / "nope.so"))
    with pytest.raises(DelegateUnavailableError, match="TSP_DELEGATE_LIBRARY"):
        SparseInterpreter(model_content=zoo_flat)
    with pytest.warns(RuntimeWarning, match="dense TFLite interpreter"):
        interp = SparseInterpreter(model_content=zoo_flat, fallback=True)
    report = delegated_nodes(interp)
    assert report.claimed == [] and report.fallback_reason
    np.testing.assert_array_equal(_run(interp, zoo_input), _stock(zoo_flat, zoo_input))


def test_unloadable_library_is_a_clear_error(zoo_flat, tmp_path):
    bad = tmp_path / "libbad.so"
    bad.write_bytes(b"not an ELF file")
    with pytest.raises(DelegateUnavailableError, match="could not load the sparse delegate"):
        SparseInterpreter(model_content=zoo_flat, library=bad)


def test_litert_version_pin(zoo_flat, monkeypatch):
    real = importlib.metadata.version

    def fake(name):
        return "2.4.0" if name == "ai-edge-litert" else real(name)

    monkeypatch.setattr(dmod.importlib.metadata, "version", fake)
    monkeypatch.delenv("TSP_ALLOW_UNTESTED_LITERT", raising=False)
    with pytest.raises(DelegateUnavailableError, match=r"tested against ai-edge-litert 2\.3\.0"):
        SparseInterpreter(model_content=zoo_flat)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        interp = SparseInterpreter(
            model_content=zoo_flat, allow_untested_litert=True, width_aware=False
        )
    assert len(delegated_nodes(interp).claimed) == len(ZOO_CLAIMED)


def test_dense_layers_batch_and_keep_num_dims():
    """FULLY_CONNECTED on a rank-3 input (Dense over the last axis) and batch 3."""
    keras.utils.set_random_seed(2)
    rng = np.random.default_rng(2)
    inp = keras.Input((5, 24))
    x = keras.layers.Dense(32, activation="relu", name="fc_a")(inp)
    out = keras.layers.Dense(8, name="fc_b")(x)
    model = keras.Model(inp, out)
    for name, n in (("fc_a", 32), ("fc_b", 8)):
        layer = model.get_layer(name)
        k, b = layer.get_weights()
        layer.set_weights([_prune_1xn(k, n, 0.5, rng), rng.standard_normal(b.shape).astype("f4")])
    flat = _convert(model)
    interp = SparseInterpreter(model_content=flat, num_threads=2, width_aware=False)
    report = delegated_nodes(interp)
    assert sorted(n.n for n in report.claimed) == [8, 32]
    for batch in (1, 3):
        x = rng.standard_normal((batch, 5, 24)).astype(np.float32)
        _assert_close(_run(interp, x), _stock(flat, x))


def test_tsp_bench_cli_reports_both_interpreters(zoo_flat, tmp_path, capsys):
    from tf_sparse_prune.export.bench_cli import main

    path = tmp_path / "zoo.tflite"
    path.write_bytes(zoo_flat)
    out_json = tmp_path / "bench.json"
    rc = main(
        [str(path), "--threads", "1", "2", "--runs", "3", "--warmup", "1", "--json", str(out_json)]
    )
    assert rc == 0
    text = capsys.readouterr().out
    expected = len(delegated_nodes(SparseInterpreter(model_content=zoo_flat)).claimed)
    assert f"claimed nodes: {expected}" in text
    rows = json.loads(out_json.read_text())
    assert [r["threads"] for r in rows] == [1, 2]
    for r in rows:
        assert len(r["dense_all_ms"]) == len(r["sparse_all_ms"]) == 3
        assert r["max_rel_diff"] < 1e-5
        assert r["speedup"] == pytest.approx(r["dense_ms"] / r["sparse_ms"])
    assert main([str(path), "--runs", "0"]) == 2
    assert main([str(tmp_path / "missing.tflite")]) == 2
    assert "not found" in capsys.readouterr().err


def test_profile_times_every_claimed_node_of_the_zoo(zoo_flat):
    from tf_sparse_prune.export.bench_cli import profile_delegate

    report = delegated_nodes(SparseInterpreter(model_content=zoo_flat))
    whole = profile_delegate(zoo_flat, threads=1, runs=4)
    prof = whole.nodes
    assert [p.node for p in prof] == sorted(n.node for n in report.claimed)
    # node time lies inside partition time, which lies inside invoke time
    assert whole.partitions and all(p.calls == 4 for p in whole.partitions)
    assert sum(p.nodes for p in whole.partitions) == len(report.claimed)
    assert sum(p.ms for p in prof) <= whole.delegate_ms + 1e-3
    assert whole.delegate_ms <= whole.invoke_ms + 1e-3
    assert whole.rest_ms == pytest.approx(whole.invoke_ms - whole.delegate_ms)
    by_node = {n.node: n for n in report.claimed}
    for p in prof:
        node = by_node[p.node]
        assert p.op == node.op and p.n == node.n
        assert p.sparsity == pytest.approx(node.block_sparsity, abs=1e-5)
        assert p.calls == 4  # the first (cold) invocation is not counted
        assert p.ms > 0 and p.kept_gflops > 0 and p.pixels >= 1
        assert p.fused_add is None
    names = {_layer_of(n, list(ZOO_CLAIMED)): n.node for n in report.claimed}
    dil16 = {p.node: p for p in prof}[names["dil16"]]
    assert dil16.kernel == (3, 3) and (dil16.cin, dil16.cout) == (64, 32)
    k7s2 = {p.node: p for p in prof}[names["k7s2"]]
    assert k7s2.kernel == (7, 7) and (k7s2.cin, k7s2.cout) == (20, 16)
    with pytest.raises(ValueError, match="runs must be >= 1"):
        profile_delegate(zoo_flat, runs=0)


def test_tsp_bench_profile_lists_nodes_and_writes_them_to_json(zoo_flat, tmp_path, capsys):
    from tf_sparse_prune.export.bench_cli import main

    path = tmp_path / "zoo.tflite"
    path.write_bytes(zoo_flat)
    out_json = tmp_path / "bench.json"
    argv = [str(path), "--runs", "2", "--warmup", "1", "--profile", "--json", str(out_json)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    claimed = len(delegated_nodes(SparseInterpreter(model_content=zoo_flat)).claimed)
    assert "delegate profile, 1 thread(s): invoke" in text and f"in {claimed} nodes" in text
    (row,) = json.loads(out_json.read_text())
    assert len(row["profile"]["nodes"]) == claimed
    assert all(p["calls"] == 2 for p in row["profile"]["nodes"])
    assert row["profile"]["rest_ms"] == pytest.approx(
        row["profile"]["invoke_ms"] - row["profile"]["delegate_ms"]
    )


# ---- residual ADD fused into the convolution's epilogue ----------------------------------


@pytest.fixture(scope="module")
def residual_flat() -> bytes:
    """ResNet-style blocks: conv -> (folded BN) -> Add(shortcut) -> ReLU, 1x16-pruned.

    ``res_a``: the conv output feeds only the ADD (fusable, identity shortcut).
    ``res_b``: projection shortcut ``proj_b``, itself a claimed conv (one of the two fuses).
    ``res_c``: the conv output is also a model output (the ADD is claimed but runs alone).
    ``res_d``: an ADD with a broadcast (1x1xC) operand (left to TFLite).
    """
    keras.utils.set_random_seed(11)
    rng = np.random.default_rng(11)
    L = keras.layers
    inp = keras.Input((10, 9, 32))
    x = L.Conv2D(32, 1, activation="relu", name="stem")(inp)
    y = L.Conv2D(32, 3, padding="same", name="res_a")(x)
    y = L.BatchNormalization(name="bn_a")(y)
    x = L.ReLU()(L.Add()([x, y]))
    y = L.Conv2D(64, 3, padding="same", name="res_b")(x)
    s = L.Conv2D(64, 1, name="proj_b")(x)
    x = L.Activation("relu")(L.Add()([y, s]))
    res_c = L.Conv2D(64, 1, name="res_c")(x)
    x = L.Add()([x, res_c])
    y = L.Conv2D(64, 1, name="res_d")(x)
    gate = L.GlobalAveragePooling2D(keepdims=True)(x)
    x = L.Add()([y, gate])
    model = keras.Model(inp, [L.Conv2D(16, 1, name="head")(x), res_c])
    for layer in model.layers:
        if isinstance(layer, L.Conv2D):
            kernel, bias = layer.get_weights()
            bias = rng.standard_normal(bias.shape).astype(np.float32) * 0.1
            layer.set_weights([_prune_1xn(kernel, 16, 0.6, rng), bias])
        elif isinstance(layer, L.BatchNormalization):
            layer.set_weights(
                [rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in layer.get_weights()]
            )
    return _convert(model)


RESIDUAL_CONVS = ["stem", "res_a", "res_b", "proj_b", "res_c", "res_d", "head"]


def _claimed_adds(report):
    return [n for n in report.claimed if n.op == "ADD"]


def _run_all(interp, x: np.ndarray) -> list[np.ndarray]:
    _run(interp, x)
    outs = sorted(interp.get_output_details(), key=lambda d: d["name"])
    return [interp.get_tensor(d["index"]).copy() for d in outs]


def _stock_all(flat: bytes, x: np.ndarray) -> list[np.ndarray]:
    interp = Interpreter(model_content=flat)
    interp.allocate_tensors()
    return _run_all(interp, x)


def test_residual_adds_are_claimed_with_the_conv_that_feeds_them_alone(residual_flat):
    report = delegated_nodes(SparseInterpreter(model_content=residual_flat))
    convs = {n.node: _layer_of(n, RESIDUAL_CONVS) for n in report.claimed if n.op == "CONV_2D"}
    assert sorted(convs.values()) == sorted(RESIDUAL_CONVS)
    fused_with = sorted(convs[a.conv_node] for a in _claimed_adds(report))
    # res_b's ADD takes one of its two conv inputs; res_d's broadcast ADD stays with TFLite
    assert fused_with in (["res_a", "res_b", "res_c"], ["proj_b", "res_a", "res_c"])
    assert all(a.reason == "" and a.n == 0 for a in _claimed_adds(report))


@pytest.mark.parametrize("threads", [1, 2])
def test_fused_residual_outputs_match_stock(residual_flat, threads):
    x = np.random.default_rng(4).standard_normal((1, 10, 9, 32)).astype(np.float32)
    batch3 = np.concatenate([x, -x, 2 * x])
    for isa in available_isas():
        interp = SparseInterpreter(model_content=residual_flat, num_threads=threads, isa=isa)
        for inputs in (x, batch3):
            for out, ref in zip(
                _run_all(interp, inputs), _stock_all(residual_flat, inputs), strict=True
            ):
                _assert_close(out, ref)


def test_fuse_residual_off_claims_no_add(residual_flat):
    x = np.random.default_rng(5).standard_normal((1, 10, 9, 32)).astype(np.float32)
    interp = SparseInterpreter(model_content=residual_flat, fuse_residual=False)
    assert _claimed_adds(delegated_nodes(interp)) == []
    for out, ref in zip(_run_all(interp, x), _stock_all(residual_flat, x), strict=True):
        _assert_close(out, ref)


def test_add_runs_alone_when_the_conv_output_is_also_a_model_output(residual_flat, capfd):
    x = np.random.default_rng(6).standard_normal((1, 10, 9, 32)).astype(np.float32)
    delegate = load_delegate(str(delegate_library_path()), {"log": "2"})
    interp = Interpreter(model_content=residual_flat, experimental_delegates=[delegate])
    interp.allocate_tensors()
    for out, ref in zip(_run_all(interp, x), _stock_all(residual_flat, x), strict=True):
        _assert_close(out, ref)
    del interp  # the delegate kernels log how each ADD ran when they are freed
    import gc

    gc.collect()
    err = capfd.readouterr().err
    assert err.count("ADD fused into its convolution") == 2, err
    assert err.count("ADD run alone") == 1, err


def test_profile_names_the_add_each_conv_runs_in_its_epilogue(residual_flat):
    from tf_sparse_prune.export.bench_cli import profile_delegate

    report = delegated_nodes(SparseInterpreter(model_content=residual_flat))
    adds = {a.node: a.conv_node for a in _claimed_adds(report)}
    prof = {p.node: p for p in profile_delegate(residual_flat, runs=2).nodes}
    fused = {p.fused_add: node for node, p in prof.items() if p.fused_add is not None}
    # two of the three claimed ADDs run fused (res_c's output is also a model output)
    assert len(fused) == 2 and set(fused) < set(adds)
    assert all(adds[add] == conv for add, conv in fused.items())


def test_partition_tensors_reuse_memory_and_adds_write_over_their_residual(residual_flat):
    from tf_sparse_prune.export.bench_cli import profile_delegate

    prof = profile_delegate(residual_flat, runs=2)
    assert prof.partitions
    arena = sum(p.arena_bytes for p in prof.partitions)
    tensors = sum(p.tensor_bytes for p in prof.partitions)
    # 10x9 pixels, 32 then 64 channels: the chain of block outputs needs a few
    # buffers at a time, not one per tensor
    assert 0 < arena < tensors
    # res_a's ADD: its residual (the stem's output) is read by nothing later
    assert sum(p.in_place_adds for p in prof.partitions) >= 1


def test_interleaved_times_rotate_who_goes_first():
    from tf_sparse_prune.export.bench_cli import interleaved_times

    calls = []

    class Fake:
        def __init__(self, name):
            self.name = name

        def invoke(self):
            calls.append(self.name)

    times = interleaved_times({k: Fake(k) for k in "abc"}, runs=3, warmup=1)
    assert calls == list("abc" + "abc" + "bca" + "cab")
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(t >= 0 for v in times.values() for t in v)


def test_interleaved_times_pause_between_invocations_untimed():
    import time

    from tf_sparse_prune.export.bench_cli import interleaved_times

    class Fake:
        def invoke(self):
            pass

    t0 = time.perf_counter()
    times = interleaved_times({"a": Fake(), "b": Fake()}, runs=2, gap_ms=20)
    assert time.perf_counter() - t0 >= 4 * 0.020  # slept after each of the 4 invocations
    assert all(t < 20 for v in times.values() for t in v)  # the pauses are not timed


# Layer -> whether the delegate runs it as Winograd F(2x2, 3x3) (rows keep
# >= 20 input channels, >= 32 output tiles of 2x2).
WINOGRAD_LAYERS = {"w_same": True, "w_valid": True, "w_res": True, "direct_short": False}


@pytest.fixture(scope="module")
def winograd_flat() -> bytes:
    """3x3 stride-1 layers: SAME on a 17x17 image (odd: the last tiles hang over
    the edge) with ReLU6; VALID 17 -> 15; SAME with a fused residual ADD; and a
    3x3 layer whose rows keep 13 channels (stays on the direct kernel)."""
    keras.utils.set_random_seed(5)
    rng = np.random.default_rng(5)
    L = keras.layers
    inp = keras.Input((17, 17, 96))
    x = L.Conv2D(96, 3, padding="same", name="w_same")(inp)
    x = L.ReLU(max_value=6.0)(x)
    y = L.Conv2D(128, 3, padding="valid", activation="relu", name="w_valid")(x)
    z = L.Conv2D(128, 3, padding="same", name="w_res")(y)
    y = L.ReLU()(L.Add()([y, z]))
    out = L.Conv2D(32, 3, padding="same", name="direct_short")(y)
    model = keras.Model(inp, out)
    sparsity = {"w_same": 0.5, "w_valid": 0.5, "w_res": 0.5, "direct_short": 0.9}
    for name, sp in sparsity.items():
        layer = model.get_layer(name)
        kernel, bias = layer.get_weights()
        bias = rng.standard_normal(bias.shape).astype(np.float32) * 0.1
        layer.set_weights([_prune_1xn(kernel, 16, sp, rng), bias])
    return _convert(model)


def _winograd_nodes(flat: bytes, winograd: bool) -> dict[str, bool]:
    from tf_sparse_prune.export.bench_cli import profile_delegate

    report = delegated_nodes(SparseInterpreter(model_content=flat))
    convs = [n for n in report.claimed if n.op == "CONV_2D"]
    names = {n.node: _layer_of(n, list(WINOGRAD_LAYERS)) for n in convs}
    prof = profile_delegate(flat, threads=1, runs=2, winograd=winograd)
    return {names[p.node]: p.winograd for p in prof.nodes}


def test_winograd_takes_3x3_layers_with_long_rows_only(winograd_flat):
    assert _winograd_nodes(winograd_flat, winograd=True) == WINOGRAD_LAYERS
    assert not any(_winograd_nodes(winograd_flat, winograd=False).values())


@pytest.mark.parametrize("threads", [1, 2])
def test_winograd_outputs_match_stock_and_the_direct_kernel(winograd_flat, threads):
    x = np.random.default_rng(6).standard_normal((1, 17, 17, 96)).astype(np.float32)
    batch2 = np.concatenate([x, 0.5 * x[:, ::-1]])
    for isa in available_isas():
        wino = SparseInterpreter(model_content=winograd_flat, num_threads=threads, isa=isa)
        direct = SparseInterpreter(
            model_content=winograd_flat, num_threads=threads, isa=isa, winograd=False
        )
        for inputs in (x, batch2):
            ref = _stock(winograd_flat, inputs)
            out = _run(wino, inputs)
            _assert_close(out, ref)
            _assert_close(out, _run(direct, inputs))
            assert not np.array_equal(out, _run(direct, inputs))  # a different algorithm
