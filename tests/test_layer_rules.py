"""Layer rules: one rule per layer type, found by isinstance, in a registry users extend."""

import doctest
import re
from pathlib import Path

import keras
import numpy as np
import pytest

import tf_sparse_prune as tsp
from tests.helpers import masked_output
from tf_sparse_prune import layer_rules
from tf_sparse_prune.graph import DependencyGraph, count_flops, count_params, remove_channels
from tf_sparse_prune.prunable import UnsupportedLayerError, prunable_weights, why_not_prunable
from tf_sparse_prune.wrappers import collect_wrappers

L = keras.layers
README = Path(__file__).resolve().parents[1] / "README.md"


def _check_surgery(model, removal, graph):
    """The small model computes the masked original; the graph's counts match it."""
    small = remove_channels(model, removal, graph=graph)
    x = np.random.default_rng(0).standard_normal((2, *model.input_shape[1:])).astype("float32")
    got = keras.ops.convert_to_numpy(small(x, training=False))
    np.testing.assert_allclose(got, masked_output(model, graph, removal, x), rtol=1e-5, atol=1e-5)
    assert graph.flops_after(removal, by_layer=True) == count_flops(small, by_layer=True)
    assert graph.params_after(removal) == count_params(small)
    return small


class Projection(L.Layer):
    """A kernel on the channel axis: what a user layer with its own rule looks like."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, shape):
        self.kernel = self.add_weight(shape=(shape[-1], self.units), name="kernel")
        self.gain = self.add_weight(shape=(self.units,), initializer="ones", name="gain")

    def call(self, x):
        return (x @ self.kernel) * self.gain

    def compute_output_shape(self, shape):
        return (*shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class ProjectionRule(layer_rules.LayerRule):
    prunable = True

    def prunable_weights(self, layer):
        return [(layer.kernel, False)]

    def channel_map(self, layer, ctx):
        x = ctx.single_input()
        out = ctx.new_channels(layer.units)
        ctx.weight_axis(layer.kernel, 0, "input", x)
        ctx.weight_axis(layer.kernel, 1, "output", out)
        ctx.weight_axis(layer.gain, 0, "output", out)
        ctx.config_key("units", out)
        return [out]

    def flops(self, layer, inputs, outputs):
        out = layer_rules.known_dims(outputs[0], layer)
        return 2 * out * inputs[0][-1] + out


@pytest.fixture
def projection_rule():
    layer_rules.register_rule(Projection, ProjectionRule())
    yield
    layer_rules.unregister_rule(Projection)


def test_a_dense_subclass_is_prunable_and_understood_by_the_graph():
    class MyDense(L.Dense):
        pass

    inp = keras.Input((6, 6, 3))
    x = L.GlobalAveragePooling2D()(L.Conv2D(8, 3, name="conv")(inp))
    model = keras.Model(inp, L.Dense(2, name="fc")(MyDense(16, name="hidden")(x)))
    hidden = model.get_layer("hidden")
    assert why_not_prunable(hidden) is None
    assert prunable_weights(hidden) == [(hidden.kernel, False)]
    graph = DependencyGraph(model)
    assert not graph.unsupported_layers and graph.group_of("hidden").prunable
    small = _check_surgery(model, {graph.group_of("hidden").id: [0, 5, 9]}, graph)
    assert small.get_layer("hidden").units == 13
    assert count_flops(model, by_layer=True)["hidden"] == 2 * 8 * 16 + 16


def test_a_rule_registered_for_a_subclass_wins_over_its_parents_rule():
    class OddConv(L.Conv2D):
        pass

    assert layer_rules.register_rule(OddConv, None) is None
    try:
        inp = keras.Input((6, 6, 3))
        x = OddConv(4, 3, name="odd")(L.Conv2D(5, 1, name="c0")(inp))
        model = keras.Model(inp, L.Dense(2)(L.Flatten()(x)))
        graph = DependencyGraph(model)
        assert "no layer rule" in graph.unsupported_layers["odd"]
        assert not graph.group_of("c0").prunable
        assert "OddConv is not supported" in why_not_prunable(model.get_layer("odd"))
        assert why_not_prunable(model.get_layer("c0")) is None  # the parent keeps its rule
        assert "odd" not in count_flops(model, by_layer=True)
    finally:
        assert layer_rules.unregister_rule(OddConv) is None
    assert layer_rules.rule_for(OddConv) is layer_rules.rule_for(L.Conv2D)


def test_a_custom_layer_with_a_registered_rule_is_masked_grouped_and_shrunk(projection_rule):
    inp = keras.Input((4, 4, 3))
    x = L.ReLU(name="relu")(L.Conv2D(16, 1, name="conv")(inp))
    x = Projection(16, name="proj")(x)
    model = keras.Model(inp, L.Dense(2, name="fc")(L.GlobalAveragePooling2D()(x)))
    # Masking: prune_model wraps the custom layer through its rule.
    pruner = tsp.Magnitude(0.5, tsp.OneByN(8))
    pruned = tsp.prune_model(model, pruner)
    assert "proj" in [w.layer.name for w in collect_wrappers(pruned)]
    pruner.update_masks(collect_wrappers(pruned), 0.5)
    (row,) = [r for r in tsp.sparsity_report(pruned) if r.layer == "proj"]
    assert row.pruned and row.sparsity == pytest.approx(0.5)
    # Channel pruning: its input rows join conv's group; its outputs make a group.
    graph = DependencyGraph(model)
    conv, proj = graph.group_of("conv"), graph.group_of("proj")
    assert conv.prunable and proj.prunable and not graph.unsupported_layers
    assert {(s.layer, s.weight, s.role) for s in proj.slices} == {
        ("proj", "kernel", "output"),
        ("proj", "gain", "output"),
        ("fc", "kernel", "input"),
    }
    small = _check_surgery(model, {conv.id: [0, 1, 2], proj.id: [3]}, graph)
    assert small.get_layer("proj").kernel.shape == (13, 15)
    assert small.get_layer("proj").gain.shape == (15,)
    assert count_flops(model, by_layer=True)["proj"] == 2 * 16 * 16 * 16 + 16 * 16


def test_a_layer_type_without_a_rule_is_left_dense_and_reported_with_the_reason():
    class Plain(L.Layer):
        def build(self, shape):
            self.k = self.add_weight(shape=(shape[-1], 4))

        def call(self, x):
            return x @ self.k

    inp = keras.Input((4, 4, 3))
    x = Plain(name="plain")(L.Conv2D(6, 1, name="conv")(inp))
    x = L.GroupNormalization(2, name="gn")(L.Conv2D(8, 1, name="c2")(x))
    model = keras.Model(inp, L.Dense(2, name="fc")(L.Flatten()(x)))
    graph = DependencyGraph(model)
    assert set(graph.unsupported_layers) == {"plain", "gn"}
    assert "'plain' (Plain) is not supported" in graph.unsupported_layers["plain"]
    assert "register_rule" in graph.unsupported_layers["gn"]
    assert not graph.group_of("conv").prunable and not graph.group_of("c2").prunable
    assert "register_rule" in why_not_prunable(model.get_layer("plain"))
    with pytest.raises(UnsupportedLayerError, match=r"'plain'.*Plain is not supported"):
        prunable_weights(model.get_layer("plain"))
    assert "plain" not in count_flops(model, by_layer=True)


def test_separable_convolutions_are_grouped_shrunk_and_masked_on_their_pointwise_kernel():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 1, name="c0")(inp)
    x = L.SeparableConv2D(8, 3, depth_multiplier=2, name="sep")(x)
    model = keras.Model(inp, L.Dense(2, name="fc")(L.GlobalAveragePooling2D()(x)))
    graph = DependencyGraph(model)
    c0, sep = graph.group_of("c0"), graph.group_of("sep")
    small = _check_surgery(model, {c0.id: [2], sep.id: [0, 7]}, graph)
    assert small.get_layer("sep").depthwise_kernel.shape == (3, 3, 5, 2)
    assert small.get_layer("sep").pointwise_kernel.shape == (1, 1, 10, 6)
    layer = model.get_layer("sep")
    assert why_not_prunable(layer) is None
    assert prunable_weights(layer) == [(layer.pointwise_kernel, False)]
    assert "SeparableConv1D" in why_not_prunable(L.SeparableConv1D(4, 3))


def test_a_pruned_separable_conv_exports_its_pointwise_kernel_to_the_delegate():
    """The pointwise kernel is a 1x1 CONV_2D in TFLite: masked 1x16, claimed, exact."""
    from ai_edge_litert.interpreter import Interpreter

    inp = keras.Input((8, 8, 64))  # rows long enough for the delegate's cost model
    x = L.SeparableConv2D(64, 3, padding="same", name="sep")(inp)
    x = L.SeparableConv2D(64, 3, padding="same", name="sep2")(x)
    model = keras.Model(inp, L.Dense(10, name="fc")(L.GlobalAveragePooling2D()(x)))
    pruner = tsp.Magnitude(0.75, tsp.OneByN(16))
    pruned = tsp.prune_model(model, pruner)
    assert sorted(w.layer.name for w in collect_wrappers(pruned)) == ["sep", "sep2"]
    pruner.update_masks(collect_wrappers(pruned), 0.75)
    final = tsp.strip_pruning(pruned)
    assert np.mean(final.get_layer("sep2").pointwise_kernel.numpy() == 0) == 0.75
    assert np.all(final.get_layer("sep2").depthwise_kernel.numpy() != 0)  # stays dense
    flat = tsp.export_tflite(final)
    assert all(c.preserved for c in tsp.check_tflite_sparsity(final, flat))
    sparse = tsp.SparseInterpreter(model_content=flat, num_threads=1)
    claimed = [n.filter for n in tsp.delegated_nodes(sparse).claimed if n.op == "CONV_2D"]
    assert len(claimed) == 2 and all("sep" in name for name in claimed)
    stock = Interpreter(model_content=flat)
    x = np.random.default_rng(0).standard_normal((1, 8, 8, 64)).astype("float32")
    outs = []
    for interp in (sparse, stock):
        interp.allocate_tensors()
        interp.set_tensor(interp.get_input_details()[0]["index"], x)
        interp.invoke()
        outs.append(interp.get_tensor(interp.get_output_details()[0]["index"]))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)


def test_a_grouped_convolution_with_one_channel_per_group_passes_channels_through():
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 1, name="c0")(inp)
    x = L.Conv2D(8, 3, groups=4, name="dwlike")(x)  # two filters per input channel
    model = keras.Model(inp, L.Dense(2, name="fc")(L.Flatten()(x)))
    graph = DependencyGraph(model)
    c0 = graph.group_of("c0")
    assert c0.size == 4 and [g.producers for g in graph.prunable_groups] == [("c0",)]
    (filters,) = [s for s in c0.slices if s.layer == "dwlike" and s.weight == "kernel"]
    assert filters.role == "channel" and filters.positions[1] == (2, 3)
    small = _check_surgery(model, {c0.id: [0, 2]}, graph)
    layer = small.get_layer("dwlike")
    assert (layer.groups, layer.filters, layer.kernel.shape) == (2, 4, (3, 3, 1, 4))


def test_layernorm_over_channels_is_reported_unless_allowed():
    inp = keras.Input((4, 4, 3))
    x = L.LayerNormalization(name="ln")(L.Conv2D(6, 1, name="conv")(inp))
    model = keras.Model(inp, L.Dense(2, name="fc")(L.Flatten()(x)))
    assert "allow_layernorm=True" in DependencyGraph(model).unsupported_layers["ln"]
    graph = DependencyGraph(model, allow_layernorm=True)
    small = remove_channels(model, {graph.group_of("conv").id: [0]}, graph=graph)
    assert small.get_layer("ln").beta.shape == (5,)


def test_cropping_padding_and_per_channel_rescaling_follow_their_channels():
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 3, name="conv")(inp)
    x = L.Rescaling([1.0, 2.0, 3.0, 4.0], offset=[0.0, 0.5, 1.0, 1.5], name="scale")(x)
    x = L.Cropping2D(1, name="crop")(L.ZeroPadding2D(2, name="pad")(x))
    x = L.Rescaling(0.5, name="half")(x)
    model = keras.Model(inp, L.Dense(2, name="fc")(L.Flatten()(x)))
    graph = DependencyGraph(model)
    assert not graph.unsupported_layers
    small = _check_surgery(model, {graph.group_of("conv").id: [0, 2]}, graph)
    assert small.get_layer("scale").scale == [2.0, 4.0]
    assert small.get_layer("scale").offset == [0.5, 1.5]
    broadcast = keras.Model(inp, L.Rescaling(np.ones((6, 1)).tolist(), name="b")(inp))
    assert "not one value per channel" in DependencyGraph(broadcast).unsupported_layers["b"]


def test_normalization_statistics_are_sliced_with_their_channels():
    inp = keras.Input((4, 4, 3))
    conv = L.Conv2D(4, 1, name="conv")(inp)
    adapted = L.Normalization(name="adapted")
    adapted.adapt(np.random.default_rng(0).standard_normal((8, 4, 4, 4)).astype("float32"))
    x = adapted(conv)
    x = L.Normalization(mean=[0.0, 1.0, 2.0, 3.0], variance=[1.0, 2.0, 3.0, 4.0], name="given")(x)
    model = keras.Model(inp, L.Dense(2, name="fc")(L.Flatten()(x)))
    graph = DependencyGraph(model)
    assert not graph.unsupported_layers
    small = _check_surgery(model, {graph.group_of("conv").id: [1]}, graph)
    np.testing.assert_array_equal(
        small.get_layer("adapted").get_weights()[0], adapted.get_weights()[0][[0, 2, 3]]
    )
    assert np.ravel(small.get_layer("given").get_config()["mean"]).tolist() == [0.0, 2.0, 3.0]


def test_elementwise_ops_calls_pass_or_couple_channels_as_in_mobilenet_v3():
    inp = keras.Input((6, 6, 3))
    x = L.BatchNormalization(name="bn")(L.Conv2D(8, 1, name="expand")(inp))
    x = x * keras.ops.relu6(x + 3.0) / 6.0  # MobileNetV3's hard swish, as ops calls
    y = L.Conv2D(8, 3, padding="same", name="conv")(x)
    x = keras.ops.add(x, y)  # a residual written as an ops call (ConvNeXt does this)
    scaled = keras.ops.multiply(x, np.linspace(0.5, 1.5, 8).astype("float32"))
    model = keras.Model(inp, L.Dense(2, name="fc")(L.GlobalAveragePooling2D()(x)))
    graph = DependencyGraph(model)
    assert not graph.unsupported_layers
    group = graph.group_of("expand")
    assert group.producers == ("expand", "conv") and group.prunable
    small = _check_surgery(model, {group.id: [0, 3, 4]}, graph)
    assert small.get_layer("conv").kernel.shape == (3, 3, 5, 5)
    # A constant with one value per channel would have to be sliced: refused, with why.
    per_channel = keras.Model(inp, L.Dense(2)(L.Flatten()(scaled)))
    (reason,) = DependencyGraph(per_channel).unsupported_layers.values()
    assert "is a keras.ops call" not in reason and "constant of shape (8,)" in reason


def test_convnext_layer_scale_and_layernorm_are_pruned_with_allow_layernorm():
    from keras.src.applications.convnext import LayerScale

    inp = keras.Input((4, 4, 3))
    x = L.Conv2D(8, 1, name="stem")(inp)
    y = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = L.LayerNormalization(epsilon=1e-6, name="ln")(y)
    y = L.Dense(16, activation="gelu", name="pw1")(y)
    y = LayerScale(1e-2, 8, name="scale")(L.Dense(8, name="pw2")(y))
    x = keras.ops.add(x, y)
    model = keras.Model(inp, L.Dense(2, name="fc")(L.GlobalAveragePooling2D()(x)))
    assert set(DependencyGraph(model).unsupported_layers) == {"ln"}
    graph = DependencyGraph(model, allow_layernorm=True)
    assert not graph.unsupported_layers
    stem = graph.group_of("stem")
    assert stem.producers == ("stem", "pw2")
    gamma = model.get_layer("scale").gamma.name
    assert ("scale", gamma, "channel") in {(s.layer, s.weight, s.role) for s in stem.slices}
    small = remove_channels(model, {stem.id: [1, 2], graph.group_of("pw1").id: [0]}, graph=graph)
    assert small.get_layer("scale").projection_dim == 6
    assert small.get_layer("scale").gamma.shape == (6,)
    assert small.get_layer("pw1").kernel.shape == (6, 15)


def test_inception_resnet_scaled_residual_couples_its_two_inputs():
    from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

    inp = keras.Input((5, 5, 3))
    x = L.Conv2D(6, 1, name="trunk")(inp)
    branch = L.Conv2D(6, 3, padding="same", name="branch")(L.Conv2D(4, 1, name="b0")(x))
    x = CustomScaleLayer(0.17, name="scaled_add")([x, branch])
    model = keras.Model(inp, L.Dense(2, name="fc")(L.GlobalAveragePooling2D()(x)))
    graph = DependencyGraph(model)
    group = graph.group_of("trunk")
    assert group.producers == ("trunk", "branch") and not graph.unsupported_layers
    assert count_flops(model, by_layer=True)["scaled_add"] == 2 * 5 * 5 * 6  # add + multiply
    _check_surgery(model, {group.id: [1, 4], graph.group_of("b0").id: [0]}, graph)


def test_a_rule_that_gives_up_leaves_no_channels_behind():
    class Picky(L.Layer):
        def call(self, x):
            return x

    class PickyRule(layer_rules.LayerRule):
        def channel_map(self, layer, ctx):
            made = ctx.new_channels(ctx.output_shapes[0][-1])
            ctx.unite(ctx.inputs[0], made)
            ctx.unsupported("gives up after making channels")

    layer_rules.register_rule(Picky, PickyRule())
    try:
        inp = keras.Input((4, 4, 3))
        x = Picky(name="picky")(L.Conv2D(4, 1, name="conv")(inp))
        model = keras.Model(inp, L.Dense(2, name="fc")(L.Flatten()(x)))
        graph = DependencyGraph(model)
    finally:
        layer_rules.unregister_rule(Picky)
    assert graph.unsupported_layers == {
        "picky": "layer 'picky' (Picky) gives up after making channels"
    }
    assert [g.producers for g in graph.groups[1:]] == [("conv",), ("picky",), ("fc",)]
    assert len(graph.groups) == 4 and not any(g.prunable for g in graph.groups)


def test_rule_mistakes_are_errors_naming_the_layer():
    class Echo(L.Layer):
        def call(self, x):
            return x

    class WrongLength(layer_rules.LayerRule):
        def channel_map(self, layer, ctx):
            return [ctx.inputs[0][:1]]

    inp = keras.Input((4, 4, 3))
    model = keras.Model(inp, Echo(name="echo")(L.Conv2D(4, 1)(inp)))
    layer_rules.register_rule(Echo, WrongLength())
    try:
        with pytest.raises(ValueError, match=r"'echo' \(Echo\): WrongLength.channel_map .*\[1\]"):
            DependencyGraph(model)
    finally:
        layer_rules.unregister_rule(Echo)
    with pytest.raises(TypeError, match=r"not a keras\.layers\.Layer subclass \(or a keras"):
        layer_rules.register_rule(int, layer_rules.LayerRule())
    with pytest.raises(TypeError, match="not a LayerRule instance"):
        layer_rules.register_rule(Echo, ProjectionRule)  # the class, not an instance


def test_the_readme_layer_rule_example_runs():
    text = README.read_text()
    section = text[text.index("**Rules for your own layers.**") :]
    (example,) = re.findall(r"```pycon\n(.*?)```", section, flags=re.S)[:1]
    test = doctest.DocTestParser().get_doctest(example, {}, "README", str(README), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
