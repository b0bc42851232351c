"""Tests of the model zoo in ``tf_sparse_prune.models``: fast, no training."""

from __future__ import annotations

import doctest

import keras
import numpy as np
import pytest

from tf_sparse_prune import models
from tf_sparse_prune.models import count_macs, fashion_cnn, mobilenet_v2_small, resnet20

BUILDERS = {
    "fashion_cnn": (fashion_cnn, (28, 28, 1)),
    "resnet20": (resnet20, (32, 32, 3)),
    "mobilenet_v2_small": (mobilenet_v2_small, (32, 32, 3)),
}


def _layers_of(model: keras.Model, kind: type) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if isinstance(layer, kind)]


def _random_images(shape: tuple[int, ...], n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).random((n, *shape), dtype=np.float32)


@pytest.fixture(scope="module", params=list(BUILDERS))
def built(request: pytest.FixtureRequest) -> tuple[str, keras.Model, tuple[int, ...]]:
    builder, shape = BUILDERS[request.param]
    return request.param, builder(), shape


# --- every model ------------------------------------------------------------------------


def test_forward_pass_returns_one_finite_logit_per_class(built):
    _, model, shape = built
    logits = model(_random_images(shape), training=False)
    assert tuple(logits.shape) == (4, 10)
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(logits)))


def test_classifier_returns_logits_without_softmax(built):
    _, model, _ = built
    classifier = model.get_layer("classifier")
    assert model.layers[-1] is classifier
    assert classifier.activation is keras.activations.linear


def test_num_classes_sets_the_output_width(built):
    name, _, shape = built
    builder, _ = BUILDERS[name]
    model = builder(input_shape=shape, num_classes=7)
    assert model.output_shape == (None, 7)


def test_every_layer_name_is_unique_and_not_auto_generated(built):
    name, model, _ = built
    names = [layer.name for layer in model.layers]
    assert len(names) == len(set(names))
    assert model.name == name
    # Auto-generated Keras names look like "conv2d_3" / "batch_normalization"; ours do not.
    auto_prefixes = ("conv2d", "batch_normalization", "re_lu", "dense", "add", "depthwise")
    assert not [n for n in names if n.startswith(auto_prefixes)]


def test_layer_names_do_not_depend_on_models_built_before(built):
    name, model, _ = built
    builder, _ = BUILDERS[name]
    builder()  # bump Keras' global name counters
    again = builder()
    assert [layer.name for layer in again.layers] == [layer.name for layer in model.layers]


def test_every_conv_is_bias_free_and_followed_by_its_batch_norm(built):
    _, model, _ = built
    convs = _layers_of(model, keras.layers.Conv2D) + _layers_of(model, keras.layers.DepthwiseConv2D)
    assert convs
    for conv in convs:
        assert conv.use_bias is False, conv.name
        assert conv.padding == "same", conv.name
        consumers = [node.operation for node in conv._outbound_nodes]
        assert len(consumers) == 1, conv.name
        assert isinstance(consumers[0], keras.layers.BatchNormalization), conv.name


def test_keras_file_round_trip_gives_identical_outputs(built, tmp_path):
    name, _, shape = built
    builder, _ = BUILDERS[name]
    model = builder()  # a fresh model: the shared fixture's BN statistics stay untouched
    x = _random_images(shape)
    # Non-trivial BN statistics, so a loss of them on reload would show.
    for layer in _layers_of(model, keras.layers.BatchNormalization):
        layer.moving_mean.assign(np.full(layer.moving_mean.shape, 0.1, np.float32))
        layer.moving_variance.assign(np.full(layer.moving_variance.shape, 2.0, np.float32))
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(x, training=False)),
        keras.ops.convert_to_numpy(model(x, training=False)),
    )


# --- fashion_cnn --------------------------------------------------------------------------


def test_fashion_cnn_has_the_named_conv_bn_layers_in_order():
    model = fashion_cnn()
    convs = _layers_of(model, keras.layers.Conv2D)
    assert [c.name for c in convs] == ["stem", "conv2", "conv3", "conv4", "conv5"]
    assert [c.filters for c in convs] == [32, 32, 64, 64, 128]
    assert [c.strides for c in convs] == [(2, 2), (1, 1), (1, 1), (1, 1), (1, 1)]
    assert all(c.kernel_size == (3, 3) for c in convs)
    for conv in convs:
        assert isinstance(model.get_layer(f"{conv.name}_bn"), keras.layers.BatchNormalization)
    assert model.get_layer("conv2").output.shape == (None, 14, 14, 32)
    assert model.get_layer("pool").output.shape == (None, 7, 7, 32)
    assert model.get_layer("conv5").output.shape == (None, 7, 7, 128)


def test_fashion_cnn_macs_match_the_hand_computation():
    # MACs of a conv = output height * width * out channels * kh * kw * in channels.
    stem = 14 * 14 * 32 * 3 * 3 * 1  # stride 2: 28x28 -> 14x14
    conv2 = 14 * 14 * 32 * 3 * 3 * 32
    conv3 = 7 * 7 * 64 * 3 * 3 * 32  # after the 2x2 max pool
    conv4 = 7 * 7 * 64 * 3 * 3 * 64
    conv5 = 7 * 7 * 128 * 3 * 3 * 64
    classifier = 128 * 10  # after global average pooling
    expected = stem + conv2 + conv3 + conv4 + conv5 + classifier
    assert expected == 8_186_240  # "about 8M MACs per image"
    assert count_macs(fashion_cnn()) == expected


def test_fashion_cnn_width_scales_every_conv():
    convs = _layers_of(fashion_cnn(width=2), keras.layers.Conv2D)
    assert [c.filters for c in convs] == [64, 64, 128, 128, 256]
    with pytest.raises(ValueError, match="width"):
        fashion_cnn(width=0)


# --- resnet20 -------------------------------------------------------------------------------


def test_resnet20_has_19_3x3_convs_and_2_projection_convs():
    model = resnet20()
    convs = _layers_of(model, keras.layers.Conv2D)
    three = [c for c in convs if c.kernel_size == (3, 3)]
    projections = [c for c in convs if c.kernel_size == (1, 1)]
    assert len(three) == 19  # stem + 3 stages * 3 blocks * 2 convs
    assert [c.name for c in projections] == ["s2b1_proj", "s3b1_proj"]
    assert all(c.strides == (2, 2) for c in projections)
    for proj in projections:
        assert isinstance(model.get_layer(f"{proj.name}_bn"), keras.layers.BatchNormalization)
    # 19 3x3 convs + the dense classifier = the 20 weight layers of "ResNet-20".
    assert len(three) + len(_layers_of(model, keras.layers.Dense)) == 20


def test_resnet20_has_three_residual_adds_per_stage():
    adds = [layer.name for layer in _layers_of(resnet20(), keras.layers.Add)]
    for stage in (1, 2, 3):
        assert [a for a in adds if a.startswith(f"s{stage}")] == [
            f"s{stage}b{block}_add" for block in (1, 2, 3)
        ]
    assert len(adds) == 9


def test_resnet20_stages_halve_the_resolution_and_double_the_channels():
    model = resnet20()
    assert model.get_layer("s1b3_relu2").output.shape == (None, 32, 32, 16)
    assert model.get_layer("s2b3_relu2").output.shape == (None, 16, 16, 32)
    assert model.get_layer("s3b3_relu2").output.shape == (None, 8, 8, 64)


def test_resnet20_parameter_count_is_the_known_0_27m():
    model = resnet20()
    # Option A ResNet-20 (identity shortcuts, the paper's 0.27M): bias-free 3x3 convs,
    # BN gamma/beta and the classifier.
    convs = 3 * 3 * (3 * 16 + 6 * 16 * 16 + 32 * 16 + 5 * 32 * 32 + 64 * 32 + 5 * 64 * 64)
    bn_trainable = 2 * (16 + 6 * 16 + 6 * 32 + 6 * 64)
    classifier = 64 * 10 + 10
    option_a = convs + bn_trainable + classifier
    assert option_a == 269_722
    # Option B adds the two 1x1 projection convs and their BN (gamma, beta).
    projections = 16 * 32 + 32 * 64 + 2 * (32 + 64)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == option_a + projections
    assert abs(trainable - 270_000) / 270_000 < 0.01


# --- mobilenet_v2_small ----------------------------------------------------------------------


def test_mobilenet_v2_small_is_small_and_uses_multiples_of_16_channels():
    model = mobilenet_v2_small()
    assert model.count_params() < 1_000_000
    convs = _layers_of(model, keras.layers.Conv2D)
    assert all(c.filters % 16 == 0 for c in convs), [(c.name, c.filters) for c in convs]
    assert model.get_layer("head").output.shape == (None, 4, 4, 512)


def test_mobilenet_v2_small_blocks_are_inverted_residuals():
    model = mobilenet_v2_small()
    for i in range(2, 9):  # block 1 has expansion 1: no expand conv, as in MobileNetV2
        expand = model.get_layer(f"block{i}_expand")
        dw = model.get_layer(f"block{i}_dw")
        project = model.get_layer(f"block{i}_project")
        assert isinstance(dw, keras.layers.DepthwiseConv2D)
        assert expand.kernel_size == project.kernel_size == (1, 1)
        assert expand.filters == 6 * expand.input.shape[-1]
        assert model.get_layer(f"block{i}_expand_relu").max_value == 6.0
        assert model.get_layer(f"block{i}_dw_relu").max_value == 6.0
    assert "block1_expand" not in [layer.name for layer in model.layers]
    # The projection is linear: BN, then straight to the Add or the next block.
    consumers = [n.operation for n in model.get_layer("block3_project_bn")._outbound_nodes]
    assert [type(c) for c in consumers] == [keras.layers.Add]


def test_mobilenet_v2_small_adds_residuals_only_where_stride_1_and_channels_match():
    model = mobilenet_v2_small()
    adds = [layer.name for layer in _layers_of(model, keras.layers.Add)]
    assert adds == ["block3_add", "block5_add", "block7_add"]
    for name in adds:
        block = name.removesuffix("_add")
        assert model.get_layer(f"{block}_dw").strides == (1, 1)


def test_mobilenet_v2_small_alpha_scales_the_width():
    small = mobilenet_v2_small(alpha=0.5)
    large = mobilenet_v2_small(alpha=1.0)
    assert small.count_params() < large.count_params()
    assert all(c.filters % 16 == 0 for c in _layers_of(small, keras.layers.Conv2D))
    with pytest.raises(ValueError, match="alpha"):
        mobilenet_v2_small(alpha=0)


# --- count_macs ------------------------------------------------------------------------------


def test_count_macs_counts_grouped_depthwise_and_dense_layers_only():
    inputs = keras.Input((10, 10, 8))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="valid", groups=2, name="g")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Dense(5, name="dense_3d")(x)  # applied per spatial position
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    grouped = 4 * 4 * 16 * 3 * 3 * (8 // 2)
    depthwise = 4 * 4 * 32 * 3 * 3
    dense_3d = 2 * 2 * 5 * 32
    dense = 2 * 2 * 5 * 3
    assert count_macs(model) == grouped + depthwise + dense_3d + dense


def test_count_macs_counts_a_shared_layer_once_per_call_and_recurses_into_submodels():
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, keras.layers.Dense(3)(inner_in), name="inner")
    shared = keras.layers.Dense(4, name="shared")
    inputs = keras.Input((4,))
    outputs = inner(shared(shared(inputs)))
    assert count_macs(keras.Model(inputs, outputs)) == 2 * 4 * 4 + 4 * 3
    # The model is counted through its own graph, not every model its layers are used in.
    assert count_macs(keras.Model(inputs, shared(inputs))) == 4 * 4


def test_count_macs_rejects_unknown_spatial_dimensions():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="c")(inputs))
    with pytest.raises(ValueError, match="'c'"):
        count_macs(model)


def test_count_macs_counts_wrapped_layers_as_the_layer_they_wrap():
    class Passthrough(keras.layers.Wrapper):
        def call(self, inputs):
            return self.layer(inputs)

    inputs = keras.Input((6,))
    outputs = Passthrough(keras.layers.Dense(5), name="wrapped")(inputs)
    assert count_macs(keras.Model(inputs, outputs)) == 6 * 5


def test_count_macs_walks_sequential_models_and_rejects_unbuilt_or_subclassed_ones():
    built_model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)]
    )
    assert count_macs(built_model) == 4 * 3 + 3 * 2
    with pytest.raises(ValueError, match="not built"):
        count_macs(keras.Sequential([keras.layers.Dense(3)]))

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, inputs):
            return self.dense(inputs)

    subclassed = Subclassed()
    subclassed(np.zeros((1, 4), np.float32))
    with pytest.raises(TypeError, match="functional or Sequential"):
        count_macs(subclassed)


def test_docstring_examples_run():
    results = doctest.testmod(models, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert results.attempted > 0
    assert results.failed == 0
