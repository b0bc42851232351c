"""strip_pruning and TFLite export: exact zeros, same outputs, zeros survive conversion."""

import warnings

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

import tf_sparse_prune as tsp
from tests.helpers import compile_for_classification, export_cnn, random_data, small_cnn
from tf_sparse_prune.report import detect_structure
from tf_sparse_prune.wrappers import PruneWrapper, collect_wrappers


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(7)
    model = export_cnn()
    # a 1x16 depthwise row holds one block, which the default floor keeps: lift its row
    # guarantee so the depthwise zeros are exported too
    pruner = tsp.Magnitude(
        0.5,
        tsp.OneByN(16),
        schedule=tsp.ConstantSparsity(0.5, 0, frequency=3),
        floor=tsp.Floor(keep_rows=False),
    )
    # every kernel type named, so none is left to the default selection's judgement
    pruned = tsp.prune_model(model, pruner, layers=["c0", "dw", "pw", "fc"])
    x, y = random_data(48, (10, 10, 3), classes=16)
    compile_for_classification(pruned, lr=0.01)
    pruned.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=pruner.callbacks())
    return pruned, x


def test_strip_gives_a_plain_model_with_positive_zeros_and_the_same_outputs(trained):
    pruned, x = trained
    final = tsp.strip_pruning(pruned)
    assert not collect_wrappers(final)
    assert not any(isinstance(layer, PruneWrapper) for layer in final.layers)
    assert [layer.name for layer in final.layers] == [
        w.layer.name if isinstance(w, PruneWrapper) else w.name for w in pruned.layers
    ]
    for name in ("c0", "pw", "fc", "dw"):
        kernel = final.get_layer(name).kernel.numpy()
        zeros = kernel[kernel == 0]
        assert zeros.size > 0
        assert not np.signbit(zeros).any(), "pruned weights must be +0.0"
    np.testing.assert_allclose(
        final.predict(x, verbose=0), pruned.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )


def test_stripped_model_saves_and_loads_without_custom_objects(trained, tmp_path):
    final = tsp.strip_pruning(trained[0])
    final.save(tmp_path / "final.keras")
    with keras.saving.custom_object_scope({}):
        loaded = keras.models.load_model(tmp_path / "final.keras")
    np.testing.assert_array_equal(
        loaded.get_layer("pw").kernel.numpy(), final.get_layer("pw").kernel.numpy()
    )


def test_tflite_export_keeps_every_zero_pattern_bit_exactly(trained, tmp_path):
    pruned, x = trained
    final = tsp.strip_pruning(pruned)
    flat = tsp.export_tflite(final, path=tmp_path / "m.tflite")
    assert (tmp_path / "m.tflite").read_bytes() == flat
    checks = tsp.check_tflite_sparsity(final, flat)
    assert sorted(c.layer for c in checks) == ["c0", "dw", "fc", "pw"]
    for c in checks:
        assert c.preserved, c
        assert c.tflite_zeros == c.zeros
    interp = Interpreter(model_content=flat)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.resize_tensor_input(inp["index"], x[:4].shape)
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], x[:4])
    interp.invoke()
    np.testing.assert_allclose(
        interp.get_tensor(out["index"]), final.predict(x[:4], verbose=0), rtol=1e-4, atol=1e-5
    )


def test_export_of_a_still_wrapped_model_strips_a_copy(trained):
    pruned, _ = trained
    flat = tsp.export_tflite(pruned)
    assert collect_wrappers(pruned), "the argument must stay wrapped"
    assert all(c.preserved for c in tsp.check_tflite_sparsity(tsp.strip_pruning(pruned), flat))


def test_sparsity_check_detects_a_lost_zero_pattern(trained):
    pruned, _ = trained
    final = tsp.strip_pruning(pruned)
    flat = tsp.export_tflite(final)
    # A kernel whose zero positions differ from every constant in the flatbuffer
    # (as if the converter had lost or moved zeros) must be flagged.
    kernel = final.get_layer("pw").kernel.numpy()
    kernel[kernel == 0] = 1e-3
    kernel[0, 0, 0, 0] = 0.0
    final.get_layer("pw").kernel.assign(kernel)
    checks = {c.layer: c for c in tsp.check_tflite_sparsity(final, flat)}
    assert not checks["pw"].preserved
    assert checks["pw"].tflite_tensor == ""
    assert checks["c0"].preserved


def test_strip_pruning_an_unpruned_model_warns_and_returns_it():
    model = small_cnn()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert tsp.strip_pruning(model) is model
    assert any("no PruneWrapper" in str(w.message) for w in caught)


def test_report_of_a_stripped_model_names_the_pattern_its_zeros_form(trained):
    rows = {r.layer: r for r in tsp.sparsity_report(tsp.strip_pruning(trained[0]))}
    assert rows["pw"].pruned and rows["pw"].structure == "1x16"
    assert rows["pw"].sparsity == pytest.approx(0.5)
    kernel = np.ones((3, 3, 4, 32), np.float32)
    kernel[0, 0, 0, 0] = 0
    assert detect_structure(kernel) == "unstructured"
    blocks = np.ones((3, 3, 4, 32), np.float32)
    blocks[:, :, 2, 8:16] = 0  # one 1x8 block (not part of any all-zero 1x16 block)
    assert detect_structure(blocks) == "1x8"
    blocks[:, :, 2, 0:8] = 0  # now it is a whole 1x16 block
    assert detect_structure(blocks) == "1x16"


def test_check_tflite_sparsity_of_a_still_wrapped_model_says_to_strip_it(trained):
    pruned, _ = trained
    with pytest.raises(ValueError, match=r"still holds PruneWrapper layers.*tsp\.strip_pruning"):
        tsp.check_tflite_sparsity(pruned, tsp.export_tflite(pruned))


def test_check_tflite_sparsity_of_an_unpruned_model_says_what_it_checked():
    # pruned but never trained: every mask is still full, the stripped kernels dense
    final = tsp.strip_pruning(tsp.prune_model(small_cnn(), tsp.Magnitude(0.5, tsp.OneByN(16))))
    with pytest.raises(
        ValueError, match=r"no prunable kernel.*conv0 \(3, 3, 3, 32\).*fc \(32, 10\).*callbacks="
    ):
        tsp.check_tflite_sparsity(final, b"")


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_strip_and_export_of_a_mixed_precision_model_are_float32(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(5)
        model = small_cnn(channels=(16, 16), dense_units=16, input_shape=(6, 6, 3))
        pruner = tsp.Magnitude(
            0.5, tsp.OneByN(16), schedule=tsp.ConstantSparsity(0.5, 0, frequency=1)
        )
        pruned = tsp.prune_model(model, pruner)
        x, y = random_data(8, (6, 6, 3), classes=16)
        compile_for_classification(pruned, lr=0.01)
        pruned.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=pruner.callbacks())
        assert pruned.get_layer("bn1").compute_dtype != "float32"
        flat = tsp.export_tflite(pruned)  # still wrapped, global policy still mixed
        final = tsp.strip_pruning(pruned)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert {layer.dtype_policy.name for layer in final._flatten_layers()} == {"float32"}
    assert final.predict(x, verbose=0).dtype == np.float32
    interp = Interpreter(model_content=flat)
    interp.allocate_tensors()
    floats = {np.dtype(d["dtype"]) for d in interp.get_tensor_details()} - {np.dtype(np.int32)}
    assert floats == {np.dtype(np.float32)}
    assert interp.get_input_details()[0]["dtype"] == np.float32
    assert interp.get_output_details()[0]["dtype"] == np.float32
    checks = tsp.check_tflite_sparsity(final, flat)
    assert sorted(c.layer for c in checks) == sorted(w.layer.name for w in collect_wrappers(pruned))
    assert all(c.preserved for c in checks), checks
    interp.set_tensor(interp.get_input_details()[0]["index"], x[:1])
    interp.invoke()
    np.testing.assert_allclose(
        interp.get_tensor(interp.get_output_details()[0]["index"]),
        final.predict(x[:1], verbose=0),
        rtol=1e-4,
        atol=1e-5,
    )
