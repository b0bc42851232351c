"""Quantized TFLite export: int8 and dynamic-range flatbuffers keep every pruned zero."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

import tf_sparse_prune as tsp
from tests.helpers import compile_for_classification, export_cnn, random_data


@pytest.fixture(scope="module")
def final():
    """A stripped 1x16 model with a conv, a BatchNorm to fold, a depthwise conv and a dense."""
    keras.utils.set_random_seed(3)
    model = export_cnn()
    pruner = tsp.Magnitude(0.75, tsp.OneByN(16), schedule=tsp.ConstantSparsity(0.75, 0, 2))
    pruned = tsp.prune_model(model, pruner, layers=["c0", "pw", "fc"])
    x, y = random_data(64, (10, 10, 3), classes=16)
    compile_for_classification(pruned, lr=0.01)
    pruned.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=pruner.callbacks())
    return tsp.strip_pruning(pruned), x


def _run(flat, x):
    interp = Interpreter(model_content=flat)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.resize_tensor_input(inp["index"], x.shape)
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    return interp.get_tensor(out["index"])


def _weight_types(flat) -> set[str]:
    """dtypes of the constant inputs of the flatbuffer's CONV_2D and FULLY_CONNECTED ops."""
    interp = Interpreter(model_content=flat)
    interp.allocate_tensors()
    details = {d["index"]: d for d in interp.get_tensor_details()}
    types = set()
    for op in interp._get_ops_details():
        if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED"):
            types.add(np.dtype(details[op["inputs"][1]]["dtype"]).name)
    return types


def test_int8_export_keeps_every_pruned_zero_in_int8_weights(final):
    model, x = final
    flat = tsp.export_tflite(model, quantize="int8", representative_data=x)
    checks = tsp.check_tflite_sparsity(model, flat)
    assert sorted(c.layer for c in checks) == ["c0", "fc", "pw"]
    for c in checks:
        assert c.preserved and c.dtype == "int8", c
        assert c.tflite_zeros >= c.zeros
    assert _weight_types(flat) == {"int8"}
    interp = Interpreter(model_content=flat)
    assert interp.get_input_details()[0]["dtype"] == np.float32  # quantized at the edges
    got, want = _run(flat, x[:8]), model.predict(x[:8], verbose=0)
    # int8 activations: close to the float model, not equal to it
    assert np.max(np.abs(got - want)) < 0.1 * np.max(np.abs(want))
    assert not np.array_equal(got, want)


def test_int8_io_gives_int8_inputs_and_outputs(final):
    model, x = final
    flat = tsp.export_tflite(model, quantize="int8", representative_data=x, io_dtype="int8")
    interp = Interpreter(model_content=flat)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    scale, zero = inp["quantization"]
    q = np.clip(np.round(x[:4] / scale) + zero, -128, 127).astype(np.int8)
    out_scale, out_zero = out["quantization"]
    got = (_run(flat, q).astype(np.float32) - out_zero) * out_scale
    want = model.predict(x[:4], verbose=0)
    assert np.max(np.abs(got - want)) < 0.1 * np.max(np.abs(want))


def test_dynamic_range_export_has_int8_weights_and_float_activations(final):
    model, x = final
    flat = tsp.export_tflite(model, quantize="dynamic")
    assert all(c.preserved for c in tsp.check_tflite_sparsity(model, flat))
    assert "int8" in _weight_types(flat)
    assert Interpreter(model_content=flat).get_input_details()[0]["dtype"] == np.float32
    got, want = _run(flat, x[:8]), model.predict(x[:8], verbose=0)
    assert np.max(np.abs(got - want)) < 0.1 * np.max(np.abs(want))


def test_the_sparse_interpreter_runs_the_pruned_int8_layers_as_the_reference_does(final):
    """The pruned convs and the pruned dense layer are claimed as int8 nodes (the dense
    one with TFLite's single-rounding FULLY_CONNECTED output stage); every other node runs
    on TFLite's reference kernels, so the whole output is bit-exact with the reference
    interpreter (tests/test_int8_delegate.py covers the kernels in depth)."""
    from ai_edge_litert.interpreter import OpResolverType

    model, x = final
    flat = tsp.export_tflite(model, quantize="int8", representative_data=x)
    sparse = tsp.SparseInterpreter(model_content=flat, num_threads=1, reference_kernels=True)
    claimed = tsp.delegated_nodes(sparse).claimed
    assert sorted(n.filter.split("/")[1][:2] for n in claimed) == ["c0", "fc", "pw"]
    assert {n.dtype for n in claimed} == {"int8"}
    reference = Interpreter(
        model_content=flat, experimental_op_resolver_type=OpResolverType.BUILTIN_REF
    )
    for interp in (sparse, reference):
        interp.resize_tensor_input(interp.get_input_details()[0]["index"], x[:4].shape)
        interp.allocate_tensors()
        interp.set_tensor(interp.get_input_details()[0]["index"], x[:4])
        interp.invoke()
    out = sparse.get_output_details()[0]["index"]
    np.testing.assert_array_equal(sparse.get_tensor(out), reference.get_tensor(out))


@pytest.mark.parametrize("form", ["dataset", "xy_tuple", "callable", "list_of_batches"])
def test_representative_data_takes_arrays_datasets_and_generators(final, form):
    model, x = final
    y = np.zeros(len(x), np.int64)
    consumed = []

    def batches():
        for i in range(0, len(x), 8):
            consumed.append(i)
            yield x[i : i + 8]

    data = {
        "dataset": tf.data.Dataset.from_tensor_slices((x, y)).batch(8),
        "xy_tuple": (x, y),
        "callable": batches,
        "list_of_batches": [x[:8], x[8:16], x[16:24]],
    }[form]
    flat = tsp.export_tflite(
        model, quantize="int8", representative_data=data, calibration_samples=20
    )
    assert all(c.preserved for c in tsp.check_tflite_sparsity(model, flat))
    if form == "callable":  # 20 samples: three batches of 8 read, no more
        assert consumed == [0, 8, 16]


def test_int8_sparsity_check_flags_a_kernel_zero_the_flatbuffer_lacks(final):
    model, x = final
    flat = tsp.export_tflite(model, quantize="int8", representative_data=x)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    kernel = copy.get_layer("pw").kernel.numpy()
    kernel[np.unravel_index(np.argmax(np.abs(kernel)), kernel.shape)] = 0.0  # a zero TFLite lacks
    copy.get_layer("pw").kernel.assign(kernel)
    checks = {c.layer: c for c in tsp.check_tflite_sparsity(copy, flat)}
    assert not checks["pw"].preserved and checks["pw"].tflite_tensor == ""
    assert checks["c0"].preserved


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"quantize": "fp16"}, r"quantize='fp16' is not one of None.*'dynamic'.*'int8'"),
        ({"quantize": "int8"}, r"quantize='int8' needs representative_data"),
        ({"representative_data": np.zeros((1, 10, 10, 3))}, r"only read with quantize='int8'"),
        ({"quantize": "dynamic", "io_dtype": "int8"}, r"io_dtype='int8' needs quantize='int8'"),
        ({"quantize": "int8", "io_dtype": "uint8", "representative_data": [1]}, r"io_dtype"),
        (
            {"quantize": "int8", "representative_data": [], "calibration_samples": 4},
            r"yielded no sample",
        ),
        (
            {"quantize": "int8", "representative_data": [1], "calibration_samples": 0},
            r"calibration_samples=0 must be a positive integer",
        ),
    ],
)
def test_quantize_arguments_are_checked_with_what_is_valid(final, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tsp.export_tflite(final[0], **kwargs)
