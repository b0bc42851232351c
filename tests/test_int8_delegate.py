"""The delegate on int8 models: bit-exact with TFLite's reference int8 kernels."""

from __future__ import annotations

import ctypes

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tf_sparse_prune as tsp
from tests.test_delegate_property import _expected_n, _prune_1xn, conv_configs
from tf_sparse_prune.export.delegate import (
    DEFAULT_MIN_SPARSITY_INT8,
    SparseInterpreter,
    delegate_library_path,
    delegated_nodes,
)


def _reference(flat: bytes, x: np.ndarray) -> np.ndarray:
    """TFLite's reference kernels, no XNNPACK (whose int8 rounding differs by one)."""
    interp = Interpreter(
        model_content=flat, experimental_op_resolver_type=OpResolverType.BUILTIN_REF
    )
    return _invoke(interp, x)


def _invoke(interp, x: np.ndarray) -> np.ndarray:
    inp = interp.get_input_details()[0]
    if list(inp["shape"]) != list(x.shape):
        interp.resize_tensor_input(inp["index"], list(x.shape))
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], x.astype(inp["dtype"]))
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"]).copy()


def _quantized_input(flat: bytes, x: np.ndarray) -> np.ndarray:
    det = Interpreter(model_content=flat).get_input_details()[0]
    if det["dtype"] != np.int8:
        return x
    scale, zero = det["quantization"]
    return np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)


def _residual_net(seed: int = 0) -> keras.Model:
    """Every int8 case the delegate claims: 3x3 with RELU, strided VALID with RELU6,
    dilated, 1x1 into a residual ADD with RELU (fused into the 1x1's epilogue with
    fuse_residual_int8), 5x5; and two Dense layers (FULLY_CONNECTED: the reference
    rounds them once, the convolutions twice). Every kernel 1x16-sparse at ~0.7 with
    random per-channel magnitudes."""
    rng = np.random.default_rng(seed)
    inp = keras.Input((17, 15, 8))
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="c1")(inp)
    x = keras.layers.Conv2D(48, 3, strides=2, activation="relu6", name="c2")(x)
    x = keras.layers.Conv2D(64, 3, dilation_rate=2, padding="same", name="c3")(x)
    y = keras.layers.Conv2D(64, 1, name="c4")(x)
    x = keras.layers.ReLU()(keras.layers.Add()([x, y]))
    x = keras.layers.Conv2D(32, 5, padding="same", activation="relu", name="c5")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(64, activation="relu", name="fc1")(x)
    model = keras.Model(inp, keras.layers.Dense(16, name="fc2")(x))
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense):
            kernel, bias = layer.get_weights()
            scale = rng.uniform(0.05, 0.5, kernel.shape[-1]).astype(np.float32)
            kernel = rng.standard_normal(kernel.shape).astype(np.float32) * scale
            kernel = _prune_1xn(kernel, 16, 0.7, rng)
            layer.set_weights([kernel, 0.1 * rng.standard_normal(bias.shape).astype(np.float32)])
    return model


@pytest.fixture(scope="module")
def residual_int8():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 17, 15, 8)).astype(np.float32)
    return tsp.export_tflite(_residual_net(), quantize="int8", representative_data=x), x


def _isas() -> list[str]:
    lib = ctypes.CDLL(str(delegate_library_path()))
    lib.tsp_delegate_isa_available.argtypes = [ctypes.c_char_p]
    return [
        i
        for i in ("scalar", "avx2", "avx512", "neon")
        if lib.tsp_delegate_isa_available(i.encode())
    ]


@pytest.mark.parametrize("threads", [1, 2])
def test_int8_convolutions_and_dense_layers_are_bit_exact_with_the_reference(
    residual_int8, threads
):
    flat, x = residual_int8
    for isa in _isas():
        interp = SparseInterpreter(
            model_content=flat,
            num_threads=threads,
            isa=isa,
            reference_kernels=True,
            fuse_residual_int8=True,
        )
        report = delegated_nodes(interp)
        convs = [n for n in report.claimed if n.op != "ADD"]
        claimed = {n.filter.split("/")[1][:3].rstrip("_"): n for n in convs}
        assert sorted(claimed) == ["c1", "c2", "c3", "c4", "c5", "fc1", "fc2"], report
        assert [claimed[k].op for k in ("fc1", "fc2")] == ["FULLY_CONNECTED"] * 2
        assert not [n for n in report.declined if n.op in ("CONV_2D", "FULLY_CONNECTED", "ADD")]
        assert {n.dtype for n in report.claimed} == {"int8"} and {n.n for n in convs} == {16}
        # the residual ADD (with its RELU) runs in the 1x1's epilogue
        (add,) = [n for n in report.claimed if n.op == "ADD"]
        assert add.conv_node == claimed["c4"].node, report
        for i in range(3):
            want = _reference(flat, x[i : i + 1])
            np.testing.assert_array_equal(_invoke(interp, x[i : i + 1]), want, err_msg=isa)
        # a batch of 3 at once too
        np.testing.assert_array_equal(_invoke(interp, x[:3]), _reference(flat, x[:3]))
    want = _reference(flat, x[:3])
    assert len(np.unique(want)) > 30  # outputs spread over many levels, not saturated
    # the comparison tells int8 implementations apart: XNNPACK's (float requantization)
    # differs from the reference somewhere
    assert not np.array_equal(_invoke(Interpreter(model_content=flat), x[:3]), want)


@pytest.mark.parametrize("threads", [1, 2])
def test_int8_residual_add_fusion_is_off_by_default_and_says_so(residual_int8, threads):
    flat, x = residual_int8
    interp = SparseInterpreter(model_content=flat, num_threads=threads, reference_kernels=True)
    report = delegated_nodes(interp)
    assert not [n for n in report.claimed if n.op == "ADD"]
    (add,) = [n for n in report.declined if n.op == "ADD"]
    assert "fuse_residual_int8=0" in add.reason
    np.testing.assert_array_equal(_invoke(interp, x[:3]), _reference(flat, x[:3]))


def test_int8_nodes_below_their_threshold_stay_with_tflite_and_say_why(residual_int8):
    flat, _ = residual_int8
    interp = SparseInterpreter(model_content=flat, min_sparsity_int8=0.9)
    report = delegated_nodes(interp)
    assert not report.claimed
    reasons = {n.reason for n in report.declined if n.op == "CONV_2D"}
    assert all("below the threshold 0.900 (min_sparsity_int8)" in r for r in reasons), reasons


def test_the_library_and_python_agree_on_the_int8_threshold_and_bad_values_are_refused():
    lib = ctypes.CDLL(str(delegate_library_path()))
    lib.tsp_delegate_default_min_sparsity_int8.restype = ctypes.c_double
    assert lib.tsp_delegate_default_min_sparsity_int8() == DEFAULT_MIN_SPARSITY_INT8
    flat = tsp.export_tflite(
        keras.Sequential([keras.Input((4, 4, 16)), keras.layers.Conv2D(16, 1)])
    )
    with pytest.raises(ValueError, match=r"min_sparsity_int8 must be in \[0, 1\], got 1.5"):
        SparseInterpreter(model_content=flat, min_sparsity_int8=1.5)


@settings(
    max_examples=10, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(cfg=conv_configs(), int8_io=st.booleans())
def test_random_int8_conv_is_bit_exact_with_the_reference(cfg, int8_io):
    rng = np.random.default_rng(cfg["seed"])
    layer = keras.layers.Conv2D(
        cfg["cout"],
        cfg["kernel"],
        strides=cfg["stride"],
        padding=cfg["padding"],
        dilation_rate=cfg["dilation"],
        activation=cfg["activation"],
        use_bias=cfg["use_bias"],
    )
    model = keras.Sequential([keras.Input((cfg["h"], cfg["w"], cfg["cin"])), layer])
    weights = layer.get_weights()
    scale = rng.uniform(0.02, 1.0, cfg["cout"]).astype(np.float32)
    weights[0] = _prune_1xn(weights[0] * scale, cfg["n"], cfg["sparsity"], rng)
    if cfg["use_bias"]:
        weights[1] = rng.standard_normal(weights[1].shape).astype(np.float32)
    layer.set_weights(weights)
    shape = (cfg["batch"], cfg["h"], cfg["w"], cfg["cin"])
    x = rng.standard_normal((16, *shape[1:])).astype(np.float32) * rng.uniform(0.5, 3)
    flat = tsp.export_tflite(
        model, quantize="int8", representative_data=x, io_dtype="int8" if int8_io else "float32"
    )
    interp = SparseInterpreter(
        model_content=flat, num_threads=2, min_sparsity_int8=0.0, reference_kernels=True
    )
    report = delegated_nodes(interp)
    if np.any(weights[0]):  # an all-zero filter is folded away by the converter
        assert [(n.n, n.dtype) for n in report.claimed] == [(_expected_n(weights[0]), "int8")]
    xq = _quantized_input(flat, x[: cfg["batch"]])
    np.testing.assert_array_equal(_invoke(interp, xq), _reference(flat, xq))


@st.composite
def dense_configs(draw):
    n = draw(st.sampled_from([4, 8, 16, 32]))
    return {
        "n": n,
        "cin": draw(st.integers(1, 96)),
        "cout": n * draw(st.integers(1, 4)),
        "sparsity": draw(st.floats(0.0, 0.9)),
        "batch": draw(st.integers(1, 5)),
        "activation": draw(st.sampled_from(["relu", None])),
        "use_bias": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


@settings(
    max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(cfg=dense_configs(), int8_io=st.booleans())
def test_random_int8_dense_is_bit_exact_with_the_reference(cfg, int8_io):
    """int8 FULLY_CONNECTED, whose reference rounds once: claimed and bit-exact."""
    rng = np.random.default_rng(cfg["seed"])
    layer = keras.layers.Dense(cfg["cout"], activation=cfg["activation"], use_bias=cfg["use_bias"])
    model = keras.Sequential([keras.Input((cfg["cin"],)), layer])
    weights = layer.get_weights()
    scale = rng.uniform(0.02, 1.0, cfg["cout"]).astype(np.float32)
    weights[0] = _prune_1xn(weights[0] * scale, cfg["n"], cfg["sparsity"], rng)
    if cfg["use_bias"]:
        weights[1] = rng.standard_normal(weights[1].shape).astype(np.float32)
    layer.set_weights(weights)
    x = rng.standard_normal((64, cfg["cin"])).astype(np.float32) * rng.uniform(0.5, 3)
    flat = tsp.export_tflite(
        model, quantize="int8", representative_data=x, io_dtype="int8" if int8_io else "float32"
    )
    interp = SparseInterpreter(
        model_content=flat, num_threads=2, min_sparsity_int8=0.0, reference_kernels=True
    )
    report = delegated_nodes(interp)
    if np.any(weights[0]):  # an all-zero filter is folded away by the converter
        assert [(n.op, n.n, n.dtype) for n in report.claimed] == [
            ("FULLY_CONNECTED", _expected_n(weights[0]), "int8")
        ], report
    # the drawn batch, then 64 rows: enough outputs that double rounding (off by one
    # on a few in a thousand) would show
    for rows in (cfg["batch"], 64):
        xq = _quantized_input(flat, x[:rows])
        np.testing.assert_array_equal(_invoke(interp, xq), _reference(flat, xq))


# ---- the rounding facts the claiming rules rest on -------------------------------------
def _quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: real = m * 2^(shift - 31), m in [2^30, 2^31)."""
    import math

    fraction, shift = math.frexp(real)
    m = math.floor(fraction * 2**31 + 0.5)  # round half away from zero (positive here)
    if m == 2**31:
        m, shift = m // 2, shift + 1
    return m, shift


def _double_rounding(acc: np.ndarray, m: int, shift: int) -> np.ndarray:
    """SaturatingRoundingDoublingHighMul then RoundingDivideByPOT (shift <= 0 here)."""
    ab = acc.astype(object) * m
    high = np.array([(v + (1 << 30)) // (1 << 31) for v in ab], dtype=np.int64)  # ties up
    e = -shift
    mask = (1 << e) - 1
    threshold = (mask >> 1) + (high < 0)
    return (high >> e) + ((high & mask) > threshold)


def _single_rounding(acc: np.ndarray, m: int, shift: int) -> np.ndarray:
    total = 31 - shift
    return np.array([(int(v) * m + (1 << (total - 1))) >> total for v in acc], dtype=np.int64)


def _layer_outputs(model: keras.Model, x: np.ndarray):
    """The int8 flatbuffer's only CONV_2D / FULLY_CONNECTED run on the reference kernels:
    its int8 input, weights, bias, output and quantization parameters."""
    flat = tsp.export_tflite(model, quantize="int8", representative_data=x)
    interp = Interpreter(
        model_content=flat,
        experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
        experimental_preserve_all_tensors=True,
    )
    _invoke(interp, x)
    (op,) = [o for o in interp._get_ops_details() if o["op_name"] in ("CONV_2D", "FULLY_CONNECTED")]
    details = {d["index"]: d for d in interp.get_tensor_details()}
    (i, w, b), (o,) = op["inputs"], op["outputs"]
    tensors = [
        (interp.get_tensor(t).astype(np.int64), details[t]["quantization_parameters"])
        for t in (i, w, o)
    ]
    bias = interp.get_tensor(b).astype(np.int64) if b >= 0 else np.zeros(1, np.int64)
    return [*tensors[:2], (bias, None), tensors[2]]


@pytest.mark.parametrize(("kind", "rounding"), [("conv", "double"), ("dense", "single")])
def test_the_reference_int8_conv_rounds_twice_and_its_fully_connected_once(kind, rounding):
    """ai-edge-litert's reference kernels (the delegate's bit-exactness target):
    CONV_2D requantizes with TFLite's double rounding, FULLY_CONNECTED with single
    rounding. If this fails after a LiteRT upgrade, the claiming rule for int8
    FULLY_CONNECTED (declined) and the kernels' rounding must be revisited."""
    rng = np.random.default_rng(0)
    layer = keras.layers.Conv2D(32, 1) if kind == "conv" else keras.layers.Dense(32)
    shape = (8, 8, 32) if kind == "conv" else (32,)
    model = keras.Sequential([keras.Input(shape), layer])
    x = rng.standard_normal((64, *shape)).astype(np.float32)
    (xi, qi), (w, qw), (b, _), (y, qo) = _layer_outputs(model, x)
    xi, y, w = xi.reshape(-1, 32), y.reshape(-1, 32), w.reshape(32, 32)
    acc = (xi - qi["zero_points"][0]) @ w.T + b  # (pixels, cout), exact in int64
    agree = {"double": 0, "single": 0}
    for c in range(32):
        real = float(
            np.float64(qi["scales"][0]) * np.float64(qw["scales"][c]) / np.float64(qo["scales"][0])
        )
        m, shift = _quantize_multiplier(real)
        for name, f in (("double", _double_rounding), ("single", _single_rounding)):
            got = np.clip(f(acc[:, c], m, shift) + qo["zero_points"][0], -128, 127)
            agree[name] += int(np.sum(got == y[:, c]))
    other = "single" if rounding == "double" else "double"
    assert agree[rounding] == y.size, agree
    assert agree[other] < y.size, agree  # the data holds cases where the two differ


# ---- the int8 ADD (core: int8_add.h; the delegate does not claim it yet) ---------------------
def _add_params(s1: float, s2: float, s_out: float) -> list[tuple[int, int]]:
    """TFLite's int8 ADD (tensorflow/lite/kernels/add.cc, Prepare): left_shift = 20,
    twice_max = 2 max(s1, s2); the multipliers s1 / twice_max, s2 / twice_max and
    twice_max / (2^20 s_out), each QuantizeMultiplier'd (all below one: shift <= 0)."""
    twice_max = 2.0 * max(float(np.float64(s1)), float(np.float64(s2)))
    reals = (
        float(np.float64(s1)) / twice_max,
        float(np.float64(s2)) / twice_max,
        twice_max / ((1 << 20) * float(np.float64(s_out))),
    )
    return [_quantize_multiplier(r) for r in reals]


def _int8_add(a, b, qa, qb, qo, rounding: str, act=(-128, 127)) -> np.ndarray:
    """The reference int8 ADD's formula, in either rounding: per element
    v_i = (x_i - zp_i) << 20, scaled_i = requant(v_i, m_i, shift_i),
    out = clamp(requant(scaled_1 + scaled_2, m_out, shift_out) + zp_out)."""
    f = _double_rounding if rounding == "double" else _single_rounding
    (m1, s1), (m2, s2), (mo, so) = _add_params(qa["scales"][0], qb["scales"][0], qo["scales"][0])
    x1 = (a.astype(np.int64).ravel() - int(qa["zero_points"][0])) << 20
    x2 = (b.astype(np.int64).ravel() - int(qb["zero_points"][0])) << 20
    raw = f(f(x1, m1, s1) + f(x2, m2, s2), mo, so) + int(qo["zero_points"][0])
    return np.clip(raw, *act).reshape(a.shape)


def test_the_reference_int8_add_rounds_twice():
    """ai-edge-litert's reference int8 ADD (the fused epilogue's target): the formula
    of add.cc with double rounding (SaturatingRoundingDoublingHighMul then
    RoundingDivideByPOT) at each of its three requantizations reproduces every element;
    single rounding ((x m + 2^(t-1)) >> t) does not. Random scales almost never make
    the two differ (no ties), so the ranges are dyadic: s_a = 1/64, s_b = 1/32 and
    s_out = 1/32 (a + b calibrated over [-4, 3.96875]), where half of the outputs are
    ties, and the inputs are every (a, b) pair of int8 values."""
    ia, ib = keras.Input((256, 256, 1), name="a"), keras.Input((256, 256, 1), name="b")
    model = keras.Model([ia, ib], keras.layers.Add()([ia, ib]))
    ca = np.zeros((4, 256, 256, 1), np.float32)
    cb = np.zeros((4, 256, 256, 1), np.float32)
    # a spans [-2, 127/64], b [-4, 127/32], a + b exactly [-4, 127/32]
    ca[0, 0, 0], cb[0, 0, 0] = -2.0, -2.0
    ca[1, 0, 0], cb[1, 0, 0] = 127 / 64, 127 / 64
    cb[2, 0, 0], cb[3, 0, 0] = -4.0, 127 / 32
    cb[2, 0, 1], ca[2, 0, 1] = 0.0, 0.0
    flat = tsp.export_tflite(
        model, quantize="int8", representative_data={"a": ca, "b": cb}, io_dtype="int8"
    )
    interp = Interpreter(
        model_content=flat,
        experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
        experimental_preserve_all_tensors=True,
    )
    interp.allocate_tensors()
    v = np.arange(-128, 128, dtype=np.int8)
    grid = np.stack(np.meshgrid(v, v, indexing="ij"))  # every (a, b) pair
    details = {d["index"]: d for d in interp.get_tensor_details()}
    (op,) = [o for o in interp._get_ops_details() if o["op_name"] == "ADD"]
    (ta, tb), (to,) = op["inputs"], op["outputs"]
    for k, det in enumerate(interp.get_input_details()):
        interp.set_tensor(det["index"], grid[k].reshape(1, 256, 256, 1))
    interp.invoke()
    q = [details[t]["quantization_parameters"] for t in (ta, tb, to)]
    assert sorted(float(qq["scales"][0]) for qq in q) == [1 / 64, 1 / 32, 1 / 32], q
    va, vb, want = (interp.get_tensor(t) for t in (ta, tb, to))
    assert want.dtype == np.int8 and len(np.unique(want)) > 200
    agree = {r: int(np.sum(_int8_add(va, vb, *q, r) == want)) for r in ("double", "single")}
    assert agree["double"] == want.size, agree
    assert agree["single"] < want.size, agree  # the negative ties: away from zero vs up
