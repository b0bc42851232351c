"""PruneWrapper: forward masking, zero gradients, model kinds, custom layers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sparse_prune as tsp
from tests.helpers import KERNEL_CASES, random_data, small_cnn
from tf_sparse_prune.prunable import UnsupportedLayerError
from tf_sparse_prune.wrappers import collect_wrappers


def _random_block_mask(wrapper, seed=0):
    rng = np.random.default_rng(seed)
    grid = (rng.random(tuple(wrapper.masks[0].shape)) > 0.5).astype(np.float32)
    wrapper.set_mask(0, grid)
    return wrapper.expanded_mask_numpy(0)


@pytest.mark.parametrize("case", list(KERNEL_CASES))
def test_masked_weights_get_exactly_zero_gradient(case):
    make, shape, _ = KERNEL_CASES[case]
    structure = tsp.OneByN(4)
    wrapper = tsp.PruneWrapper(make(), tsp.Magnitude(0.5, structure))
    x = tf.random.normal((2, *shape))
    wrapper(x)
    mask = _random_block_mask(wrapper)
    with tf.GradientTape() as tape:
        y = wrapper(x, training=True)
        loss = tf.reduce_sum(y * y)
    grad = tape.gradient(loss, wrapper.layer.kernel.value)
    grad = grad.numpy()
    assert np.all(grad[mask == 0] == 0)
    assert np.count_nonzero(grad[mask == 1]) > 0.9 * (mask == 1).sum()


@pytest.mark.parametrize("case", list(KERNEL_CASES))
def test_forward_equals_the_layer_with_a_masked_kernel(case):
    make, shape, _ = KERNEL_CASES[case]
    wrapper = tsp.PruneWrapper(make(), tsp.Magnitude(0.5, tsp.OneByN(4)))
    x = tf.random.normal((3, *shape))
    wrapper(x)
    mask = _random_block_mask(wrapper, seed=3)
    reference = make()
    reference(x)
    weights = wrapper.layer.get_weights()
    weights[0] = weights[0] * mask
    reference.set_weights(weights)
    np.testing.assert_allclose(wrapper(x).numpy(), reference(x).numpy(), rtol=1e-5, atol=1e-6)


def test_wrapper_state_is_a_block_grid_mask_and_a_step():
    wrapper = tsp.PruneWrapper(keras.layers.Conv2D(32, 3), tsp.Magnitude(0.5, tsp.OneByN(16)))
    wrapper.build((None, 8, 8, 6))
    assert tuple(wrapper.masks[0].shape) == (2, 6)
    assert int(wrapper.pruning_step.numpy()) == -1
    assert not wrapper.masks[0].trainable
    assert wrapper.trainable_weights == wrapper.layer.trainable_weights


def test_state_slots_pack_into_one_vector_and_read_and_write_like_variables():
    wrapper = tsp.PruneWrapper(keras.layers.Dense(32), tsp.SMART(0.5, tsp.OneByN(16)))
    wrapper.build((None, 8))
    names = [v.name for v in wrapper.non_trainable_weights]
    assert names == ["mask_0", "pruning_state"]  # one vector for every scalar
    assert wrapper.pruning_state.dtype == "float64"
    slots = wrapper._slots
    assert [s.name for s in slots][:2] == ["pruning_step", "smart_phase"]
    assert tuple(wrapper.pruning_state.shape) == (len(slots),)
    # each slot holds its own dtype: a float32 slot rounds, an int64 slot is exact
    wrapper.smart_phase.assign(0.1)
    assert wrapper.smart_phase.numpy() == np.float32(0.1)
    wrapper.smart_temperature.assign(0.1)
    assert wrapper.smart_temperature.numpy() == 0.1
    wrapper.pruning_step.assign(2**40 + 1)
    assert int(wrapper.pruning_step.numpy()) == 2**40 + 1

    @tf.function
    def bump():  # inside a compiled step: read, write, convert
        wrapper.pruning_step.assign(wrapper.pruning_step.value + 1)
        return tf.convert_to_tensor(wrapper.smart_temperature) * 2.0

    assert float(bump()) == 0.2
    assert int(wrapper.pruning_step.numpy()) == 2**40 + 2
    assert float(wrapper.smart_phase.numpy()) == np.float32(0.1)  # the others untouched
    # several slots in one update, and every slot from one read
    wrapper.assign_states({"smart_epoch": 7, "smart_threshold": -0.25, "smart_phase": 2.0})
    states = wrapper.read_states()
    assert states["smart_epoch"] == 7 and states["smart_epoch"].dtype == np.int64
    assert states["smart_threshold"] == -0.25 and states["smart_phase"] == 2.0
    assert states["pruning_step"] == 2**40 + 2 and states["smart_temperature"] == 0.1
    with pytest.raises(RuntimeError, match=r"add_state.*PruningAlgorithm\.build"):
        wrapper.add_state("late", 0.0)


def test_prune_model_wraps_layers_in_sequential_functional_and_nested_models():
    inner = keras.Sequential(
        [
            keras.Input((8, 8, 16)),
            keras.layers.Conv2D(16, 3, name="inner_conv"),
            keras.layers.ReLU(name="inner_relu"),
        ],
        name="inner",
    )
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 1, name="outer_conv")(inp)
    x = inner(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(16, name="head")(x)
    model = keras.Model(inp, out)
    pruned = tsp.prune_model(model, tsp.Magnitude(0.5, tsp.OneByN(16)), layers="all")
    names = sorted(w.layer.name for w in collect_wrappers(pruned))
    assert names == ["head", "inner_conv", "outer_conv"]
    x = np.random.rand(2, 8, 8, 3).astype("float32")
    np.testing.assert_allclose(
        pruned.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    # The original model is untouched and shares no variables with the pruned one.
    assert not collect_wrappers(model)
    ids = {id(v) for v in model.weights}
    assert not any(id(v) in ids for v in pruned.weights)

    seq = keras.Sequential(
        [keras.Input((10,)), keras.layers.Dense(16, name="a"), keras.layers.Dense(32, name="b")]
    )
    assert len(collect_wrappers(tsp.prune_model(seq, tsp.Magnitude(0.5), layers="all"))) == 2


def test_unsupported_layers_stay_dense_and_the_report_says_why():
    inp = keras.Input((8, 8, 4))
    x = keras.layers.Conv2DTranspose(16, 3, name="up")(inp)
    x = keras.layers.Conv2D(24, 3, name="odd")(x)
    x = keras.layers.Conv2D(32, 3, name="ok")(x)
    model = keras.Model(inp, x)
    pruned = tsp.prune_model(model, tsp.Magnitude(0.5, tsp.OneByN(16)), layers="all")
    rows = {r.layer: r for r in tsp.sparsity_report(pruned)}
    assert rows["ok"].pruned
    assert not rows["up"].pruned and "Conv2DTranspose is not supported" in rows["up"].reason
    assert not rows["odd"].pruned and "multiple of 16, got 24" in rows["odd"].reason
    assert "odd" in str(tsp.sparsity_report(pruned))


def test_a_named_layer_the_structure_cannot_apply_to_is_an_error():
    model = small_cnn(channels=(24, 32))
    with pytest.raises(ValueError, match=r"'conv0'.*multiple of 16, got 24"):
        tsp.prune_model(model, tsp.Magnitude(0.5, tsp.OneByN(16)), layers=["conv0"])


def test_layers_selection_by_names_and_predicate():
    model = small_cnn()
    by_name = tsp.prune_model(model, tsp.Magnitude(0.5), layers=["conv1"])
    assert [w.layer.name for w in collect_wrappers(by_name)] == ["conv1"]
    by_pred = tsp.prune_model(model, tsp.Magnitude(0.5), layers=lambda layer: layer.name != "fc")
    assert [w.layer.name for w in collect_wrappers(by_pred)] == ["conv0", "conv1"]
    report = {r.layer: r.reason for r in tsp.sparsity_report(by_pred)}
    assert report["fc"] == "not selected by layers="
    report = {r.layer: r.reason for r in tsp.sparsity_report(by_name)}
    assert report["conv0"] == "not selected by layers="  # the selection's own reason


def test_default_selection_leaves_stem_classifier_and_1xn_depthwise_dense_with_reasons():
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(32, 3, padding="same", name="stem")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.Conv2D(32, 1, name="pw")(x)
    x = keras.layers.Conv2D(64, 1, name="wide")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(32, name="fc")(x)
    out = keras.layers.Softmax()(keras.layers.Dense(16, name="classifier")(x))
    model = keras.Model(inp, out)

    def reasons(pruner):
        pruned = tsp.prune_model(model, pruner)
        return {r.layer: r.reason for r in tsp.sparsity_report(pruned)}

    got = reasons(tsp.Magnitude(0.8, tsp.OneByN(16)))
    assert got["stem"].startswith("stem: 3 input channels (<= 4)")
    assert got["dw"].startswith("DepthwiseConv2D under 1x16")
    assert got["classifier"].startswith("the classifier")  # found through the Softmax
    # 32 -> 32 at 1x16 keeps rows of 32 blocks, 0.8 is reachable; `fc` too
    assert got["pw"] == got["wide"] == got["fc"] == ""
    # rows of two 16x16 blocks cannot reach 0.7 with one kept: left dense, and said why
    narrow = keras.Sequential(
        [
            keras.Input((4, 4, 64)),
            keras.layers.Conv2D(32, 1, name="a"),
            keras.layers.Conv2D(32, 1, name="b"),
            keras.layers.Conv2D(2, 1, name="out"),
        ]
    )
    pruned = tsp.prune_model(narrow, tsp.Magnitude(0.7, tsp.Block(16, 16)))
    rows = {r.layer: r.reason for r in tsp.sparsity_report(pruned)}
    assert rows["a"] == ""  # rows of four blocks: 0.75 is reachable
    assert "allows at most sparsity 0.5 < 0.7" in rows["b"]
    # a grouped conv with one input channel per group (ConvNeXt) is a depthwise conv
    grouped = keras.Sequential(
        [
            keras.Input((4, 4, 32)),
            keras.layers.Conv2D(32, 3, groups=32, name="g"),
            keras.layers.Conv2D(32, 1, name="after"),
            keras.layers.Dense(16, name="head"),
        ]
    )
    rows = {
        r.layer: r.reason
        for r in tsp.sparsity_report(tsp.prune_model(grouped, tsp.Magnitude(0.5, tsp.OneByN(16))))
    }
    assert rows["g"].startswith("a depthwise conv (groups=32) under 1x16")
    assert rows["after"] == ""
    # element-wise structures still prune depthwise layers by default
    assert reasons(tsp.Magnitude(0.8, tsp.Unstructured()))["dw"] == ""
    # naming a layer, or layers="all", prunes it anyway
    named = tsp.prune_model(model, tsp.Magnitude(0.8, tsp.OneByN(16)), layers=["stem", "dw"])
    assert sorted(w.layer.name for w in collect_wrappers(named)) == ["dw", "stem"]
    everything = tsp.prune_model(model, tsp.Magnitude(0.8, tsp.OneByN(16)), layers="all")
    assert len(collect_wrappers(everything)) == 6


class ScaledDense(keras.layers.Layer):
    """A custom layer made prunable through the get_prunable_weights protocol."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units), name="w")
        self.scale = self.add_weight(shape=(), initializer="ones", name="scale")

    def call(self, x):
        return self.scale * (x @ self.w)

    def get_prunable_weights(self):
        return [self.w]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_a_custom_layer_is_prunable_through_get_prunable_weights():
    model = keras.Sequential([keras.Input((16,)), ScaledDense(32, name="custom")])
    pruner = tsp.Magnitude(0.5, tsp.OneByN(8), schedule=tsp.ConstantSparsity(0.5, 0, frequency=1))
    pruned = tsp.prune_model(model, pruner, layers="all")
    x, _ = random_data(32, (16,))
    pruned.compile("sgd", "mse")
    pruned.fit(x, np.zeros((32, 32)), epochs=1, verbose=0, callbacks=pruner.callbacks())
    row = tsp.sparsity_report(pruned)[0]
    assert row.layer == "custom" and row.pruned and row.sparsity == pytest.approx(0.5)


def test_a_custom_layer_without_the_protocol_is_reported_unsupported():
    class Plain(keras.layers.Layer):
        def build(self, s):
            self.k = self.add_weight(shape=(s[-1], 4))

        def call(self, x):
            return x @ self.k

    with pytest.raises(UnsupportedLayerError, match="get_prunable_weights"):
        tsp.PruneWrapper(Plain(name="p"), tsp.Magnitude(0.5))


@pytest.mark.parametrize("builder", ["resnet20", "mobilenet_v2_small"])
def test_zoo_models_with_residual_adds_prune_and_strip_to_the_same_outputs(builder):
    model = getattr(tsp.models, builder)()
    pruner = tsp.Magnitude(0.5, tsp.OneByN(16))
    pruned = tsp.prune_model(model, pruner)
    wrappers = collect_wrappers(pruned)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(wrappers) >= len(convs) // 2
    pruner.update_masks(wrappers, 0.5)
    x = np.random.default_rng(0).random((2, *model.input_shape[1:])).astype("float32")
    final = tsp.strip_pruning(pruned)
    np.testing.assert_allclose(
        final.predict(x, verbose=0), pruned.predict(x, verbose=0), rtol=1e-4, atol=1e-5
    )
    expected = {r.layer: r.sparsity for r in tsp.sparsity_report(pruned) if r.pruned}
    stripped = {r.layer: r for r in tsp.sparsity_report(final) if r.pruned}
    assert sorted(stripped) == sorted(expected)
    for w in wrappers:
        name, blocks = w.layer.name, int(np.prod(w.masks[0].shape))
        assert stripped[name].sparsity == pytest.approx(expected[name])
        assert stripped[name].structure in ("1x16", "1x32")  # zeros form 1x16 blocks
        # exact up to one block, whatever the layer's block count
        assert abs(expected[name] - 0.5) <= 0.5 / blocks + 1e-9
