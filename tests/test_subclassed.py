"""A subclassed model whose layers are PruneWrappers trains, strips and reaches TFLite."""

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

import tf_sparse_prune as tsp
from tests.helpers import compile_for_classification, random_data
from tf_sparse_prune.export.delegate import SparseInterpreter, delegated_nodes
from tf_sparse_prune.wrappers import PruneWrapper, collect_wrappers

L = keras.layers


class TinyNet(keras.Model):
    """Wrappers as attributes and inside a list, around a dense stem, with a residual add."""

    def __init__(self, pruner, **kwargs):
        super().__init__(**kwargs)
        self.stem = L.Conv2D(32, 3, padding="same", activation="relu", name="stem")
        self.blocks = [tsp.PruneWrapper(L.Conv2D(32, 1, name="pw"), pruner)]
        self.pool = L.GlobalAveragePooling2D(name="gap")
        self.head = tsp.PruneWrapper(L.Dense(16, name="fc"), pruner)

    def call(self, x):
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(self.pool(h))


def _pruner():
    return tsp.Magnitude(0.75, tsp.OneByN(16), schedule=tsp.ConstantSparsity(0.75, 0, frequency=1))


@pytest.fixture()
def trained():
    keras.utils.set_random_seed(0)
    pruner = _pruner()
    net = TinyNet(pruner)
    x, y = random_data(8, (6, 6, 8), classes=16)
    net(x[:1])  # builds the wrappers (their masks) before the callbacks look for them
    compile_for_classification(net, lr=0.01)
    net.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=pruner.callbacks())
    return net, x


def _run(interp, x):
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"]).copy()


def test_export_tflite_of_a_subclassed_model_runs_on_the_delegate_and_leaves_it_wrapped(trained):
    net, x = trained
    before = net.predict(x, verbose=0)
    kernel = net.blocks[0].layer.kernel.numpy()
    paths = [v.path for v in net.weights]
    flat = tsp.export_tflite(net)
    assert [v.path for v in net.weights] == paths  # same variables, same order (saving)
    # the argument is restored: same wrappers, same raw kernel, same outputs
    assert [type(b) for b in net.blocks] == [PruneWrapper]
    assert isinstance(net.head, PruneWrapper) and len(collect_wrappers(net)) == 2
    np.testing.assert_array_equal(net.blocks[0].layer.kernel.numpy(), kernel)
    np.testing.assert_array_equal(net.predict(x, verbose=0), before)

    stock = _run(Interpreter(model_content=flat), x[:1])
    sparse = SparseInterpreter(model_content=flat, num_threads=1)
    out = _run(sparse, x[:1])
    np.testing.assert_allclose(out, stock, rtol=1e-5, atol=1e-5 * float(np.abs(stock).max()))
    np.testing.assert_allclose(stock, before[:1], rtol=1e-4, atol=1e-5)
    claimed = {(n.op, n.filter.split("/")[1]) for n in delegated_nodes(sparse).claimed if n.filter}
    assert ("CONV_2D", "pw_1") in claimed, claimed
    assert ("FULLY_CONNECTED", "fc_1") in claimed, claimed
    assert not any(name.startswith("stem") for _, name in claimed)


def test_strip_pruning_strips_a_subclassed_model_in_place(trained):
    net, x = trained
    before = net.predict(x, verbose=0)
    inner = net.blocks[0].layer
    assert tsp.strip_pruning(net) is net
    assert not collect_wrappers(net)
    assert net.blocks[0] is inner and net.head.name == "fc"
    assert [layer.name for layer in net.layers] == ["stem", "pw", "gap", "fc"]
    assert (inner.kernel.numpy() == 0).mean() == pytest.approx(0.75)
    np.testing.assert_allclose(net.predict(x, verbose=0), before, rtol=1e-6, atol=1e-6)
    checks = tsp.check_tflite_sparsity(net, tsp.export_tflite(net))
    assert sorted(c.layer for c in checks) == ["fc", "pw"]
    assert all(c.preserved for c in checks), checks


def test_check_tflite_sparsity_of_a_wrapped_subclassed_model_says_to_strip_it():
    net = TinyNet(_pruner())
    with pytest.raises(ValueError, match=r"still holds PruneWrapper.*strip_pruning"):
        tsp.check_tflite_sparsity(net, b"")


def test_strip_pruning_of_an_uncalled_subclassed_model_says_to_call_it():
    net = TinyNet(_pruner())
    with pytest.raises(ValueError, match=r"\['pruned_pw', 'pruned_fc'\].*call the model"):
        tsp.strip_pruning(net)


def test_export_tflite_of_a_mixed_bfloat16_subclassed_model_is_float32_and_restores_it():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(1)
        net = TinyNet(_pruner())
        x, _ = random_data(2, (6, 6, 8), classes=16)
        before = keras.ops.convert_to_numpy(net(x))
        flat = tsp.export_tflite(net)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert {layer.dtype_policy.name for layer in net._flatten_layers()} == {"mixed_bfloat16"}
    interp = Interpreter(model_content=flat)
    floats = {np.dtype(d["dtype"]) for d in interp.get_tensor_details()} - {np.dtype(np.int32)}
    assert floats == {np.dtype(np.float32)}
    np.testing.assert_allclose(_run(interp, x[:1]), before[:1].astype(np.float32), atol=0.05)


class Block(L.Layer):
    """A custom layer holding its wrappers in a dict and a tuple, one level down."""

    def __init__(self, pruner, **kwargs):
        super().__init__(**kwargs)
        self.convs = {"a": tsp.PruneWrapper(L.Conv2D(16, 1, name="a"), pruner)}
        self.pair = (tsp.PruneWrapper(L.Conv2D(16, 1, name="b"), pruner), L.ReLU(name="act"))

    def call(self, x):
        return self.pair[1](self.pair[0](self.convs["a"](x)))


class BlockNet(keras.Model):
    def __init__(self, pruner, **kwargs):
        super().__init__(**kwargs)
        self.block = Block(pruner, name="block")

    def call(self, x):
        return self.block(x)


def test_strip_pruning_reaches_wrappers_in_dicts_and_tuples_of_a_custom_sublayer():
    net = BlockNet(_pruner())
    x, _ = random_data(2, (4, 4, 16))
    before = keras.ops.convert_to_numpy(net(x))
    tsp.strip_pruning(net)
    assert not collect_wrappers(net)
    assert [type(layer).__name__ for layer in net.block._layers] == ["Conv2D", "Conv2D", "ReLU"]
    assert net.block.convs["a"].name == "a" and net.block.pair[0].name == "b"
    assert not any("mask" in v.name or "pruning_step" in v.name for v in net.weights)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(net(x)), before, rtol=1e-6)
