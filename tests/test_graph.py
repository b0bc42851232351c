"""Channel dependency graph, physical channel removal and FLOP counting."""

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from tests.helpers import masked_output, randomize_batchnorm
from tf_sparse_prune.export import export_tflite
from tf_sparse_prune.graph import DependencyGraph, count_flops, count_params, remove_channels
from tf_sparse_prune.models import count_macs, mobilenet_v2_small, resnet20

L = keras.layers


def _x(shape, n=4, seed=0):
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype("float32")


def _random_removal(graph, seed=0, fraction=0.5):
    rng = np.random.default_rng(seed)
    return {
        g.id: rng.choice(g.size, max(1, int(g.size * fraction)), replace=False).tolist()
        for g in graph.prunable_groups
        if g.size > 1
    }


def _check_surgery(model, removal=None, seed=0, graph=None):
    """Removes channels and checks the small model against the masked original."""
    graph = graph or DependencyGraph(model)
    removal = _random_removal(graph, seed) if removal is None else removal
    small = remove_channels(model, removal, graph=graph)
    x = _x(model.input_shape[1:], seed=seed)
    expected = masked_output(model, graph, removal, x)
    got = keras.ops.convert_to_numpy(small(x, training=False))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # The graph's analytic counts agree with counting the small model.
    assert graph.flops_after(removal, by_layer=True) == count_flops(small, by_layer=True)
    assert graph.params_after(removal) == count_params(small)
    assert graph.params_after(removal, trainable_only=True) == count_params(
        small, trainable_only=True
    )
    return small, graph, removal


def _producers(graph):
    return [g.producers for g in graph.groups]


# ---------------------------------------------------------------- test models


def _concat_model():
    inp = keras.Input((8, 8, 3), name="image")
    a = L.ReLU(name="relu_a")(L.BatchNormalization(name="bn_a")(L.Conv2D(4, 3, name="a")(inp)))
    b = L.BatchNormalization(name="bn_b")(L.Conv2D(6, 3, name="b")(inp))
    x = L.Concatenate(name="cat")([a, b])
    x = L.Conv2D(5, 1, name="c")(x)
    out = L.Dense(3, name="fc")(L.GlobalAveragePooling2D(name="gap")(x))
    return keras.Model(inp, out, name="concat_net")


def _flatten_model(reshape=False):
    inp = keras.Input((8, 8, 3), name="image")
    x = L.Conv2D(4, 3, strides=2, padding="same", name="conv")(inp)
    x = L.BatchNormalization(name="bn")(x)
    x = L.MaxPooling2D(2, name="pool")(L.ReLU(name="relu")(x))  # 2x2x4
    x = L.Reshape((-1,), name="flat")(x) if reshape else L.Flatten(name="flat")(x)
    x = L.Dense(7, activation="relu", name="hidden")(L.Dropout(0.5, name="drop")(x))
    return keras.Model(inp, L.Dense(3, name="fc")(x), name="flatten_net")


def _nested_model():
    block_in = keras.Input((8, 8, 8), name="block_in")
    y = L.Conv2D(8, 3, padding="same", name="conv")(block_in)
    y = L.BatchNormalization(name="bn")(y)
    block = keras.Model(block_in, L.Add(name="add")([block_in, y]), name="block")
    head = keras.Sequential(
        [keras.Input((8, 8, 8)), L.Conv2D(6, 1, name="conv"), L.GlobalMaxPooling2D(name="gmp")],
        name="head",
    )
    inp = keras.Input((8, 8, 3), name="image")
    x = L.ReLU(name="relu")(L.Conv2D(8, 3, padding="same", name="stem")(inp))
    x = block(block(x))  # a nested model shared by two calls
    return keras.Model(inp, L.Dense(2, name="fc")(head(x)), name="nested_net")


def _sequence_model():
    """Two dict inputs, a grouped conv, a keras.ops call, Conv1D and Dense on sequences."""
    a, b = keras.Input((8, 8, 4), name="a"), keras.Input((8, 8, 3), name="b")
    x = L.Conv2D(8, 3, padding="same", groups=2, name="gconv")(a)
    z = L.Concatenate(axis=1, name="cat_h")([x, L.Conv2D(8, 1, name="cb")(b)])  # 16x8x8
    z = L.Conv2D(5, 1, name="c3")(L.Conv2D(6, 1, name="c2")(z) * 2.0)
    z = L.Dense(7, name="d3")(L.Reshape((16 * 8, 5), name="rs")(z))  # channel axis kept
    z = L.GlobalAveragePooling1D(name="gap1")(L.Conv1D(4, 3, name="c1d")(z))
    return keras.Model({"a": a, "b": b}, L.Dense(2, name="fc")(z), name="sequence_net")


# ---------------------------------------------------------------- group structure


def test_resnet20_residual_adds_couple_each_stage_into_one_group():
    graph = DependencyGraph(resnet20())
    assert len(graph.groups) == 14 and len(graph.prunable_groups) == 12
    stage1 = graph.group_of("stem")
    assert set(stage1.producers) == {"stem", "s1b1_conv2", "s1b2_conv2", "s1b3_conv2"}
    assert stage1.size == 16
    for stage, size in ((2, 32), (3, 64)):
        group = graph.group_of(f"s{stage}b1_proj")
        expected = {f"s{stage}b1_proj"} | {f"s{stage}b{b}_conv2" for b in (1, 2, 3)}
        assert set(group.producers) == expected and group.size == size
    for stage in (1, 2, 3):
        for block in (1, 2, 3):
            assert graph.group_of(f"s{stage}b{block}_conv1").producers == (
                f"s{stage}b{block}_conv1",
            )
    # Stage 3's group: the four convs' filters, their BNs, and every consumer's input rows.
    roles = {(s.layer, s.weight, s.role) for s in graph.group_of("s3b1_proj").slices}
    assert ("s3b1_proj_bn", "gamma", "channel") in roles
    assert ("s3b2_conv1", "kernel", "input") in roles
    assert ("classifier", "kernel", "input") in roles
    assert ("s3b1_conv2", "kernel", "output") in roles
    unprunable = [g for g in graph.groups if not g.prunable]
    assert [g.producers for g in unprunable] == [("input",), ("classifier",)]
    assert "model input 'input'" in unprunable[0].reason
    assert "model output 'classifier'" in unprunable[1].reason


def test_concatenate_offsets_the_consumer_rows_of_each_input():
    model = _concat_model()
    graph = DependencyGraph(model)
    a, b = graph.group_of("a"), graph.group_of("b")
    (rows_a,) = [s for s in a.slices if s.layer == "c"]
    (rows_b,) = [s for s in b.slices if s.layer == "c"]
    assert (rows_a.weight, rows_a.axis, rows_a.role) == ("kernel", 2, "input")
    assert rows_a.positions == ((0,), (1,), (2,), (3,))
    assert rows_b.positions == tuple((4 + k,) for k in range(6))
    small, _, _ = _check_surgery(model, {a.id: [1, 3], b.id: [0, 4, 5]}, graph=graph)
    assert small.get_layer("cat").output.shape[-1] == 5
    assert small.get_layer("c").kernel.shape == (1, 1, 5, 5)


def test_concatenate_then_add_couples_all_three_producers_in_order():
    inp = keras.Input((6, 6, 3))
    cat = L.Concatenate(name="cat")([L.Conv2D(2, 1, name="a")(inp), L.Conv2D(3, 1, name="b")(inp)])
    x = L.Add(name="add")([cat, L.Conv2D(5, 1, name="d")(inp)])
    model = keras.Model(inp, L.Dense(2, name="fc")(L.Flatten(name="flat")(x)))
    graph = DependencyGraph(model)
    group = graph.group_of("d")
    assert group.producers == ("a", "b", "d") and group.size == 5
    (d_out,) = [s for s in group.slices if s.layer == "d" and s.weight == "kernel"]
    assert d_out.positions == tuple((k,) for k in range(5))  # channel k of the group is d's k
    small, _, _ = _check_surgery(model, {group.id: [1, 2]}, graph=graph)
    assert [small.get_layer(n).filters for n in "abd"] == [1, 2, 3]
    with pytest.raises(ValueError, match=r"leaves layer 'a' no channels .*keep at least one"):
        remove_channels(model, {group.id: [0, 1]}, graph=graph)  # all of a's, not all of d's


def test_flatten_into_dense_maps_a_channel_to_its_strided_units():
    model = _flatten_model()
    graph = DependencyGraph(model)
    conv = graph.group_of("conv")
    (rows,) = [s for s in conv.slices if s.layer == "hidden" and s.weight == "kernel"]
    assert rows.role == "input" and rows.axis == 0
    assert rows.positions[1] == (1, 5, 9, 13)  # 2x2 positions, 4 channels: unit = pos*4 + c
    small, _, _ = _check_surgery(model, {conv.id: [1, 2], graph.group_of("hidden").id: [0, 6]})
    assert small.get_layer("hidden").kernel.shape == (8, 5)


def test_a_one_dimensional_reshape_into_dense_gets_its_new_target_shape():
    small, graph, removal = _check_surgery(_flatten_model(reshape=True))
    kept = 4 - len(removal[graph.group_of("conv").id])
    assert small.get_layer("flat").target_shape == (4 * kept,)


def test_a_nested_model_called_twice_is_followed_through_and_rebuilt():
    model = _nested_model()
    graph = DependencyGraph(model)
    assert ("stem", "block/conv") in _producers(graph)  # the inner residual couples them
    assert graph.group_of("head/conv").prunable
    for seed in (0, 1):
        small, _, removal = _check_surgery(model, seed=seed, graph=graph)
    kept = 8 - len(removal[graph.group_of("stem").id])
    assert small.get_layer("block").get_layer("conv").kernel.shape == (3, 3, kept, kept)
    assert small.get_layer("head").get_layer("conv").filters == 3


def test_a_shared_layer_couples_the_inputs_of_its_calls():
    inp = keras.Input((6, 6, 3))
    shared = L.Conv2D(5, 3, name="shared")
    y1 = shared(L.Conv2D(4, 1, name="a")(inp))
    y2 = shared(L.ReLU(name="relu")(L.Conv2D(4, 1, name="b")(inp)))
    out = L.Dense(2, name="fc")(L.GlobalAveragePooling2D()(L.Concatenate(name="cat")([y1, y2])))
    model = keras.Model(inp, out)
    graph = DependencyGraph(model)
    assert set(graph.group_of("a").producers) == {"a", "b"}
    shared_group = graph.group_of("shared")
    (fc_rows,) = [s for s in shared_group.slices if s.layer == "fc"]
    assert fc_rows.positions[2] == (2, 7)  # both calls' channel 2 reach the dense layer
    small, _, _ = _check_surgery(model, {graph.group_of("a").id: [0], shared_group.id: [2, 4]})
    assert small.get_layer("shared").kernel.shape == (3, 3, 3, 3)


def test_an_unsupported_layer_makes_its_groups_unprunable_and_names_itself():
    class Scale(L.Layer):
        def call(self, x):
            return x * 2.0

    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 3, name="c1")(inp)
    x = Scale(name="scale")(x)
    x = L.Conv2D(5, 3, name="c2")(x)
    x = L.Activation("softmax", name="soft")(L.Conv2D(6, 1, name="c3")(x))
    model = keras.Model(inp, L.Dense(2, name="fc")(L.Flatten()(x)))
    graph = DependencyGraph(model)
    c1, c2, c3 = (graph.group_of(n) for n in ("c1", "c2", "c3"))
    assert not c1.prunable and "'scale' (Scale) is not supported" in c1.reason
    assert not graph.group_of("scale").prunable
    assert not c3.prunable and "applies softmax across channels" in c3.reason
    assert c2.prunable
    assert set(graph.unsupported_layers) == {"scale", "soft"}
    with pytest.raises(ValueError, match=r"group \d+ \(produced by c1\) is not prunable: .*scale"):
        remove_channels(model, {c1.id: [0]}, graph=graph)
    _check_surgery(model, {c2.id: [0, 3]}, graph=graph)


def test_grouped_convolutions_couple_each_position_across_their_groups():
    inp = keras.Input((6, 6, 4))
    x = L.Conv2D(4, 1, name="c0")(inp)
    x = L.Conv2D(8, 3, groups=2, name="gconv")(x)
    x = L.Conv2D(6, 1, name="c1")(x)
    model = keras.Model(inp, L.Dense(2, name="fc")(L.GlobalAveragePooling2D()(x)))
    graph = DependencyGraph(model)
    c0, gconv = graph.group_of("c0"), graph.group_of("gconv")
    assert c0.prunable and gconv.prunable and not graph.unsupported_layers
    assert (c0.size, gconv.size) == (2, 4)  # positions per group, shared by both groups
    (rows,) = [s for s in c0.slices if s.layer == "gconv"]
    assert (rows.role, rows.positions) == ("input", ((0,), (1,)))
    (c0_out,) = [s for s in c0.slices if s.layer == "c0" and s.weight == "kernel"]
    assert c0_out.positions == ((0, 2), (1, 3))  # channel r of each group goes together
    small, _, _ = _check_surgery(model, {c0.id: [1], gconv.id: [0, 3]}, graph=graph)
    assert small.get_layer("gconv").kernel.shape == (3, 3, 1, 4)
    assert small.get_layer("gconv").groups == 2


def test_keras_ops_calls_without_a_rule_make_their_groups_unprunable():
    inp = keras.Input((6, 6, 4))
    x = keras.ops.flip(L.Conv2D(6, 1, name="c1")(inp), axis=-1)
    model = keras.Model(inp, L.Dense(2, name="fc")(L.GlobalAveragePooling2D()(x)))
    graph = DependencyGraph(model)
    assert "is a keras.ops call, not a layer" in graph.group_of("c1").reason


def test_layernorm_on_channels_is_unprunable_unless_allowed():
    inp = keras.Input((4, 4, 3))
    x = L.LayerNormalization(name="ln")(L.Conv2D(6, 1, name="conv")(inp))
    model = keras.Model(inp, L.Dense(2, name="fc")(L.GlobalAveragePooling2D()(x)))
    group = DependencyGraph(model).group_of("conv")
    assert not group.prunable and "'ln'" in group.reason and "allow_layernorm" in group.reason
    graph = DependencyGraph(model, allow_layernorm=True)
    group = graph.group_of("conv")
    assert group.prunable and ("ln", "gamma", "channel") in {
        (s.layer, s.weight, s.role) for s in group.slices
    }
    small = remove_channels(model, {group.id: [0, 1]}, graph=graph)
    np.testing.assert_array_equal(
        small.get_layer("ln").gamma.numpy(), model.get_layer("ln").gamma.numpy()[2:]
    )


# ---------------------------------------------------------------- surgery equivalence


@pytest.mark.parametrize("seed", [0, 1])
def test_removing_channels_from_resnet20_matches_the_masked_model(seed):
    model = resnet20()
    randomize_batchnorm(model, seed)
    small, _, _ = _check_surgery(model, seed=seed)
    assert count_params(small) < count_params(model) / 2


def test_removing_channels_from_mobilenet_v2_small_matches_the_masked_model():
    model = mobilenet_v2_small()
    randomize_batchnorm(model)
    graph = DependencyGraph(model)
    dw = graph.group_of("block4_expand")  # expand conv, its depthwise conv and BNs
    assert {(s.layer, s.role) for s in dw.slices} >= {("block4_dw", "channel"),
                                                       ("block4_project", "input")}  # fmt: skip
    small, _, _ = _check_surgery(model, graph=graph)
    assert count_flops(small) < count_flops(model) / 2


def test_removing_channels_from_a_sequential_model_with_separable_and_multiplier_convs():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            L.Conv2D(6, 3, padding="same", name="c1"),
            L.PReLU(shared_axes=[1, 2], name="prelu"),
            L.DepthwiseConv2D(3, depth_multiplier=2, name="dw"),  # 12 channels: 2 per input
            L.BatchNormalization(name="bn"),
            L.SeparableConv2D(5, 3, depth_multiplier=2, padding="same", name="sep"),
            L.UpSampling2D(name="up"),
            L.AveragePooling2D(2, name="avg"),
            L.Flatten(name="flat"),
            L.Dense(3, name="fc"),
        ],
        name="seq",
    )
    randomize_batchnorm(model)
    graph = DependencyGraph(model)
    c1 = graph.group_of("c1")
    (bn,) = {s for s in c1.slices if s.layer == "bn" and s.weight == "gamma"}
    assert bn.positions[1] == (2, 3)  # depthwise output channels 2c, 2c + 1 follow input c
    small, _, _ = _check_surgery(model, {c1.id: [1, 4], graph.group_of("sep").id: [0]})
    assert small.get_layer("dw").kernel.shape == (3, 3, 4, 2)
    assert small.get_layer("sep").pointwise_kernel.shape == (1, 1, 16, 4)


def test_a_squeeze_and_excitation_multiply_couples_the_gate_with_the_features():
    inp = keras.Input((6, 6, 3))
    x = L.BatchNormalization(name="bn")(L.Conv2D(8, 3, name="conv")(inp))
    gate = L.Dense(2, activation="relu", name="squeeze")(L.GlobalAveragePooling2D()(x))
    gate = L.Reshape((1, 1, 8), name="to_map")(L.Dense(8, activation="sigmoid", name="gate")(gate))
    x = L.Multiply(name="scale")([x, gate])
    model = keras.Model(inp, L.Dense(2, name="fc")(L.GlobalAveragePooling2D()(x)))
    graph = DependencyGraph(model)
    assert graph.group_of("conv").producers == ("conv", "gate")
    small, _, _ = _check_surgery(model, {graph.group_of("conv").id: [0, 5, 6]}, graph=graph)
    assert small.get_layer("to_map").target_shape == (1, 1, 5)


@pytest.mark.parametrize("fraction", [0.25, 0.75])
@pytest.mark.parametrize(
    "make", [_concat_model, _flatten_model, _nested_model], ids=lambda f: f.__name__[1:]
)
def test_random_removals_match_the_masked_model(make, fraction):
    model = make()
    randomize_batchnorm(model)
    graph = DependencyGraph(model)
    for seed in range(3):
        _check_surgery(model, _random_removal(graph, seed, fraction), seed=seed, graph=graph)


def test_removing_channels_around_dict_inputs_ops_calls_and_sequences():
    model = _sequence_model()
    graph = DependencyGraph(model)
    assert [g.producers for g in graph.prunable_groups] == [
        ("gconv", "cb"),  # cat_h is on the height axis: it couples gconv's and cb's channels
        ("c2",),  # through the element-wise ops call "* 2.0"
        ("c3",),
        ("d3",),
        ("c1d",),
    ]
    removal = {g.id: [0, 2] for g in graph.prunable_groups}
    small = remove_channels(model, removal, graph=graph)
    rng = np.random.default_rng(0)
    x = {"a": rng.random((2, 8, 8, 4), "float32"), "b": rng.random((2, 8, 8, 3), "float32")}
    np.testing.assert_allclose(
        small(x).numpy(), masked_output(model, graph, removal, x), rtol=1e-5, atol=1e-5
    )
    assert small.get_layer("rs").target_shape == (128, 3)
    assert small.get_layer("gconv").filters == small.get_layer("cb").filters == 4
    assert graph.flops_after(removal) == count_flops(small)


def test_an_empty_removal_gives_an_equal_copy():
    model = _concat_model()
    copy = remove_channels(model, {})
    assert copy is not model
    x = _x((8, 8, 3))
    np.testing.assert_array_equal(copy(x).numpy(), model(x).numpy())


def test_the_small_model_saves_loads_and_converts_to_tflite(tmp_path):
    model = _nested_model()
    small, _, _ = _check_surgery(model)
    x = _x((8, 8, 3))
    expected = small(x, training=False).numpy()
    small.save(tmp_path / "small.keras")
    loaded = keras.models.load_model(tmp_path / "small.keras")
    np.testing.assert_allclose(loaded(x, training=False).numpy(), expected, rtol=1e-6, atol=1e-6)
    interp = Interpreter(model_content=export_tflite(small))
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.resize_tensor_input(inp["index"], x.shape)
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    np.testing.assert_allclose(interp.get_tensor(out["index"]), expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- FLOPs and parameters


def test_resnet20_flops_match_a_hand_computation():
    # 1 MAC = 2 FLOPs; bias +1 per output element; BN 2 per element; Add 1 per element.
    def conv(hw, k, c_in, c_out):  # bias-free convolution
        return 2 * hw * hw * c_out * k * k * c_in

    def bn(hw, c):
        return 2 * hw * hw * c

    stem = conv(32, 3, 3, 16) + bn(32, 16)  # 884_736 + 32_768
    plain1 = 2 * conv(32, 3, 16, 16) + 2 * bn(32, 16) + 32 * 32 * 16  # per stage-1 block
    first2 = conv(16, 3, 16, 32) + conv(16, 3, 32, 32) + conv(16, 1, 16, 32)
    first2 += 3 * bn(16, 32) + 16 * 16 * 32
    plain2 = 2 * conv(16, 3, 32, 32) + 2 * bn(16, 32) + 16 * 16 * 32
    first3 = conv(8, 3, 32, 64) + conv(8, 3, 64, 64) + conv(8, 1, 32, 64)
    first3 += 3 * bn(8, 64) + 8 * 8 * 64
    plain3 = 2 * conv(8, 3, 64, 64) + 2 * bn(8, 64) + 8 * 8 * 64
    classifier = 2 * 64 * 10 + 10
    expected = stem + 3 * plain1 + first2 + 2 * plain2 + first3 + 2 * plain3 + classifier
    assert expected == 82_113_802
    model = resnet20()
    assert count_flops(model) == expected
    per_layer = count_flops(model, by_layer=True)
    assert per_layer["stem"] == 884_736 and per_layer["s2b1_proj"] == 2 * 16 * 16 * 32 * 16
    assert per_layer["s1b1_add"] == 16_384 and per_layer["classifier"] == 1_290
    # The convolution and dense part is exactly twice the MAC count.
    convs = sum(v for k, v in per_layer.items() if "bn" not in k and "add" not in k)
    assert convs == 2 * count_macs(model) + 10
    assert count_params(model) == model.count_params() == 274_042


def test_flops_and_params_count_nested_models_shared_layers_and_depthwise_once_per_call():
    model = _nested_model()
    per_layer = count_flops(model, by_layer=True)
    assert per_layer["block/conv"] == 2 * (2 * 8 * 8 * 8 * 9 * 8 + 8 * 8 * 8)  # two calls
    assert per_layer["block/add"] == 2 * 8 * 8 * 8
    assert count_params(model) == model.count_params()
    dw = keras.Sequential([keras.Input((4, 4, 3)), L.DepthwiseConv2D(3, use_bias=False)])
    assert count_flops(dw) == 2 * 2 * 2 * 3 * 9


# ---------------------------------------------------------------- errors


def test_a_subclassed_model_is_refused_with_masking_only_advice():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = L.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    for fn in (DependencyGraph, lambda m: remove_channels(m, {}), count_flops):
        with pytest.raises(TypeError, match=r"subclassed.*masking only"):
            fn(net)


def test_invalid_removals_raise_errors_naming_the_group_and_what_is_valid():
    model = _concat_model()
    graph = DependencyGraph(model)
    a = graph.group_of("a")
    cases = [
        ({99: [0]}, ValueError, r"unknown channel group 99: .*groups 0\.\.\d+; prunable groups"),
        ({0: [0]}, ValueError, r"group 0 \(produced by image\) is not prunable: .*model input"),
        (
            {a.id: [4]},
            ValueError,
            r"produced by a\) has 4 channels \(valid indices 0\.\.3\).*\[4\]",
        ),
        ({a.id: [0, 1, 2, 3]}, ValueError, r"removing all 4 channels"),
        ({"a": [0]}, TypeError, r"group ids are ints"),
        ({a.id: [0.5]}, TypeError, r"channel indices must be ints"),
        ([(a.id, [0])], TypeError, r"removal must be a mapping"),
    ]
    for removal, error, message in cases:
        with pytest.raises(error, match=message):
            remove_channels(model, removal, graph=graph)
    with pytest.raises(ValueError, match="graph was built for another model"):
        remove_channels(_flatten_model(), {}, graph=graph)
