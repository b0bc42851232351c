"""Property test: random 1xN-sparse Conv2D configurations, delegate vs stock interpreter."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tf_sparse_prune.export.delegate import SparseInterpreter, delegated_nodes


@st.composite
def conv_configs(draw):
    n = draw(st.sampled_from([4, 8, 16, 32]))
    k = draw(st.sampled_from([1, 3, 5, 7]))
    kw = draw(st.sampled_from([k, 1, 3]))
    dilation = draw(st.sampled_from([1, 1, 2]))
    stride = 1 if dilation > 1 else draw(st.sampled_from([1, 2]))
    padding = draw(st.sampled_from(["same", "valid"]))
    eff_h, eff_w = (k - 1) * dilation + 1, (kw - 1) * dilation + 1
    h = draw(st.integers(eff_h, max(eff_h, 12)))
    w = draw(st.integers(eff_w, max(eff_w, 12)))
    return {
        "n": n,
        "kernel": (k, kw),
        "dilation": dilation,
        "stride": stride,
        "padding": padding,
        "h": h,
        "w": w,
        "cin": draw(st.integers(1, 24)),
        "cout": n * draw(st.integers(1, 3)),
        "batch": draw(st.integers(1, 3)),
        "activation": draw(st.sampled_from([None, "relu", "relu6"])),
        "use_bias": draw(st.booleans()),
        "sparsity": draw(st.sampled_from([0.0, 0.3, 0.5, 0.7, 0.9])),
        "seed": draw(st.integers(0, 2**16)),
    }


def _prune_1xn(kernel, n, sparsity, rng):
    cin, cout = kernel.shape[-2], kernel.shape[-1]
    blocks = cin * (cout // n)
    zero = np.zeros(blocks, dtype=bool)
    zero[rng.permutation(blocks)[: round(sparsity * blocks)]] = True
    return (kernel * ~np.repeat(zero.reshape(cin, cout // n), n, axis=1)).astype(np.float32)


def _expected_n(kernel, tolerance=0.02):
    """The delegate's documented rule: the largest N in {32, 16, 8, 4} dividing
    C_out whose block sparsity is within `tolerance` of the 1x4 one."""
    cout = kernel.shape[-1]
    zero_in_cout = np.all(kernel == 0, axis=tuple(range(kernel.ndim - 2)))  # (cin, cout)
    sparsity = {}
    for n in (4, 8, 16, 32):
        if cout % n == 0:
            sparsity[n] = float(np.mean(zero_in_cout.reshape(-1, cout // n, n).all(axis=2)))
    return max(n for n, s in sparsity.items() if s >= sparsity[4] - tolerance)


def _invoke(interp, x):
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], list(x.shape))
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"]).copy()


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(cfg=conv_configs())
def test_random_conv_matches_stock_interpreter(cfg):
    rng = np.random.default_rng(cfg["seed"])
    keras.utils.set_random_seed(cfg["seed"])
    layer = keras.layers.Conv2D(
        cfg["cout"],
        cfg["kernel"],
        strides=cfg["stride"],
        padding=cfg["padding"],
        dilation_rate=cfg["dilation"],
        activation=cfg["activation"],
        use_bias=cfg["use_bias"],
        name="conv",
    )
    model = keras.Sequential([keras.Input((cfg["h"], cfg["w"], cfg["cin"])), layer])
    weights = layer.get_weights()
    weights[0] = _prune_1xn(weights[0], cfg["n"], cfg["sparsity"], rng)
    if cfg["use_bias"]:
        weights[1] = rng.standard_normal(weights[1].shape).astype(np.float32)
    layer.set_weights(weights)
    flat = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    x = rng.standard_normal((cfg["batch"], cfg["h"], cfg["w"], cfg["cin"])).astype(np.float32)

    stock = Interpreter(model_content=flat)
    ref = _invoke(stock, x)
    interp = SparseInterpreter(
        model_content=flat, num_threads=2, min_sparsity=0.0, width_aware=False, cost_model=False
    )
    report = delegated_nodes(interp)
    assert [node.n for node in report.claimed] == [_expected_n(weights[0])], report
    if cfg["sparsity"] > 0.0 and cfg["cin"] * cfg["cout"] // cfg["n"] >= 8:
        assert report.claimed[0].n == cfg["n"]
    out = _invoke(interp, x)
    assert out.shape == ref.shape
    scale = max(float(np.abs(ref).max()), 1e-30)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * scale)
