"""Model zoo: small Keras 3 functional CNNs with deterministic layer names.

Every layer of every model is named explicitly, so tests, pruning configurations and
benchmarks can refer to layers by name (``"conv3"``, ``"s2b1_conv1"``, ``"block4_dw"``)
and the names do not depend on how many models were built before in the process.

Convolutions are followed by batch normalization and therefore have no bias. Every model
ends in a ``Dense`` layer named ``"classifier"`` that returns logits (no softmax).

Example:
    >>> model = fashion_cnn()
    >>> model.output_shape
    (None, 10)
    >>> count_macs(model)
    8186240
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import layers

__all__ = ["count_macs", "fashion_cnn", "mobilenet_v2_small", "resnet20"]

_CONV_INIT = "he_normal"


#: BatchNormalization momentum of every zoo model: 0.9 (PyTorch's 0.1 in its
#: convention) rather than Keras's 0.99, so the moving statistics track the
#: weights within the few hundred steps of a short run or a test.
BN_MOMENTUM = 0.9


def _scaled(channels: int, multiplier: float, divisor: int = 1) -> int:
    """Scales a channel count and rounds it to the nearest positive multiple of ``divisor``.

    As in MobileNetV2's ``_make_divisible``, the result never drops below 90% of the
    scaled value.
    """
    value = channels * multiplier
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _conv_bn(
    x: keras.KerasTensor,
    filters: int,
    name: str,
    *,
    kernel_size: int = 3,
    strides: int = 1,
    bn_name: str | None = None,
) -> keras.KerasTensor:
    """A bias-free ``Conv2D`` (padding "same") followed by ``BatchNormalization``."""
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=_CONV_INIT,
        name=name,
    )(x)
    return layers.BatchNormalization(momentum=BN_MOMENTUM, name=bn_name or f"{name}_bn")(x)


def fashion_cnn(
    input_shape: Sequence[int] = (28, 28, 1),
    num_classes: int = 10,
    width: float = 1,
) -> keras.Model:
    """The small Fashion-MNIST CNN used by the benchmarks (about 8.2M MACs per image).

    Five 3x3 Conv2D-BN-ReLU blocks, a 2x2 max pool after the second, global average
    pooling and a linear classifier:

    ======  ============  ========  ======================  ===================
    name    channels      stride    output (28x28 input)    then
    ======  ============  ========  ======================  ===================
    stem    32 * width    2         14x14                   stem_bn, stem_relu
    conv2   32 * width    1         14x14                   ..., pool (2x2)
    conv3   64 * width    1         7x7                     conv3_bn, conv3_relu
    conv4   64 * width    1         7x7                     conv4_bn, conv4_relu
    conv5   128 * width   1         7x7                     conv5_bn, conv5_relu
    ======  ============  ========  ======================  ===================

    followed by ``gap`` (GlobalAveragePooling2D) and ``classifier`` (Dense, logits).
    The convolutions use padding "same" and no bias; each is followed by a
    ``BatchNormalization`` named ``<conv>_bn`` and a ReLU named ``<conv>_relu``.

    Args:
        input_shape: Shape of one image, channels last.
        num_classes: Number of output logits.
        width: Channel multiplier applied to every convolution (rounded, at least 1).

    Returns:
        An uncompiled functional ``keras.Model`` named ``"fashion_cnn"``.

    Example:
        >>> model = fashion_cnn(num_classes=10)
        >>> [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
        ['stem', 'conv2', 'conv3', 'conv4', 'conv5']
        >>> model.get_layer("conv5").output.shape
        (None, 7, 7, 128)
    """
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = inputs
    plan = (
        ("stem", 32, 2),
        ("conv2", 32, 1),
        ("conv3", 64, 1),
        ("conv4", 64, 1),
        ("conv5", 128, 1),
    )
    for name, channels, strides in plan:
        x = _conv_bn(x, max(1, round(channels * width)), name, strides=strides)
        x = layers.ReLU(name=f"{name}_relu")(x)
        if name == "conv2":
            x = layers.MaxPooling2D(pool_size=2, name="pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name="fashion_cnn")


def _basic_block(x: keras.KerasTensor, filters: int, strides: int, name: str) -> keras.KerasTensor:
    """ResNet basic block; a 1x1 conv + BN projection when the shape changes (option B)."""
    shortcut = x
    y = _conv_bn(x, filters, f"{name}_conv1", strides=strides, bn_name=f"{name}_bn1")
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = _conv_bn(y, filters, f"{name}_conv2", bn_name=f"{name}_bn2")
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(
            x, filters, f"{name}_proj", kernel_size=1, strides=strides, bn_name=f"{name}_proj_bn"
        )
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_relu2")(y)


def resnet20(
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
) -> keras.Model:
    """CIFAR-style ResNet-20 (He et al. 2016, section 4.2) with projection shortcuts.

    A 3x3 stem conv with 16 channels, then three stages of three basic blocks with 16,
    32 and 64 channels (the first block of stages 2 and 3 has stride 2), global average
    pooling and a linear classifier: 19 3x3 convolutions plus 2 1x1 projection
    convolutions (option B, each followed by BN) where the shape changes, and 9
    residual ``Add`` layers, 3 per stage. About 0.27M parameters and 41M MACs for a
    32x32 image.

    Layer names: ``stem``, ``stem_bn``, ``stem_relu``; for stage ``s`` and block ``b``
    (both from 1) ``s{s}b{b}_conv1``, ``_bn1``, ``_relu1``, ``_conv2``, ``_bn2``,
    ``_proj``, ``_proj_bn`` (projection blocks only), ``_add``, ``_relu2``; then ``gap``
    and ``classifier``.

    Args:
        input_shape: Shape of one image, channels last.
        num_classes: Number of output logits.

    Returns:
        An uncompiled functional ``keras.Model`` named ``"resnet20"``.

    Example:
        >>> model = resnet20()
        >>> model.get_layer("s3b1_proj").output.shape
        (None, 8, 8, 64)
        >>> sum(isinstance(layer, keras.layers.Add) for layer in model.layers)
        9
    """
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = _conv_bn(inputs, 16, "stem")
    x = layers.ReLU(name="stem_relu")(x)
    for stage, filters in enumerate((16, 32, 64), start=1):
        for block in range(1, 4):
            strides = 2 if stage > 1 and block == 1 else 1
            x = _basic_block(x, filters, strides, f"s{stage}b{block}")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name="resnet20")


# (expansion, output channels, repeats, stride of the first repeat) for 32x32 inputs.
_MOBILENET_V2_SMALL_PLAN = (
    (1, 16, 1, 1),
    (6, 32, 2, 2),
    (6, 48, 2, 2),
    (6, 64, 2, 2),
    (6, 96, 1, 1),
)


def _inverted_residual(
    x: keras.KerasTensor, expansion: int, filters: int, strides: int, name: str
) -> keras.KerasTensor:
    """MobileNetV2 inverted residual block (linear bottleneck)."""
    in_channels = x.shape[-1]
    y = x
    if expansion != 1:
        y = _conv_bn(y, in_channels * expansion, f"{name}_expand", kernel_size=1)
        y = layers.ReLU(max_value=6.0, name=f"{name}_expand_relu")(y)
    y = layers.DepthwiseConv2D(
        3,
        strides=strides,
        padding="same",
        use_bias=False,
        depthwise_initializer=_CONV_INIT,
        name=f"{name}_dw",
    )(y)
    y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_dw_bn")(y)
    y = layers.ReLU(max_value=6.0, name=f"{name}_dw_relu")(y)
    y = _conv_bn(y, filters, f"{name}_project", kernel_size=1)
    if strides == 1 and in_channels == filters:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def mobilenet_v2_small(
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    alpha: float = 1.0,
) -> keras.Model:
    """A small MobileNetV2-style network for 32x32 inputs (about 0.3M parameters).

    A 3x3 stem conv (32 * alpha channels, stride 1), eight inverted-residual blocks
    (expansion, output channels, repeats, first stride)::

        (1, 16, 1, 1), (6, 32, 2, 2), (6, 48, 2, 2), (6, 64, 2, 2), (6, 96, 1, 1)

    a final 1x1 conv (512 * alpha channels), global average pooling and a linear
    classifier. Each block is a 1x1 expand Conv2D-BN-ReLU6 (left out when the expansion
    is 1, as in MobileNetV2), a 3x3 DepthwiseConv2D-BN-ReLU6 and a linear 1x1 project
    Conv2D-BN, with a residual ``Add`` when the stride is 1 and the channel counts
    match. Channel counts are scaled by ``alpha`` and rounded to multiples of 16 (the
    expanded widths, 6x the block's input channels, are then multiples of 16 too).

    Layer names: ``stem``, ``stem_bn``, ``stem_relu``; for block ``i`` (from 1)
    ``block{i}_expand``, ``_expand_bn``, ``_expand_relu``, ``_dw``, ``_dw_bn``,
    ``_dw_relu``, ``_project``, ``_project_bn``, ``_add``; then ``head``, ``head_bn``,
    ``head_relu``, ``gap`` and ``classifier``.

    Args:
        input_shape: Shape of one image, channels last.
        num_classes: Number of output logits.
        alpha: Width multiplier applied to every channel count.

    Returns:
        An uncompiled functional ``keras.Model`` named ``"mobilenet_v2_small"``.

    Example:
        >>> model = mobilenet_v2_small(alpha=1.0)
        >>> model.get_layer("block8_project").output.shape
        (None, 4, 4, 96)
        >>> model.count_params() < 1_000_000
        True
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = _conv_bn(inputs, _scaled(32, alpha, 16), "stem")
    x = layers.ReLU(max_value=6.0, name="stem_relu")(x)
    index = 0
    for expansion, channels, repeats, first_stride in _MOBILENET_V2_SMALL_PLAN:
        for repeat in range(repeats):
            index += 1
            strides = first_stride if repeat == 0 else 1
            x = _inverted_residual(
                x, expansion, _scaled(channels, alpha, 16), strides, f"block{index}"
            )
    x = _conv_bn(x, _scaled(512, alpha, 16), "head", kernel_size=1)
    x = layers.ReLU(max_value=6.0, name="head_relu")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2_small")


def _macs_per_output(layer: keras.layers.Layer) -> int:
    """Length of the dot product behind one output element; 0 for uncounted layers."""
    while isinstance(layer, layers.Wrapper):  # e.g. a pruning wrapper: count the inner layer
        layer = layer.layer
    if isinstance(layer, layers.DepthwiseConv2D):
        return math.prod(layer.kernel_size)
    if isinstance(layer, (layers.Conv1D, layers.Conv2D, layers.Conv3D, layers.Dense)):
        # Kernel (*window, in_channels / groups, out_channels) or (in_features, units):
        # every output element is a dot product over all but the last kernel axis.
        return math.prod(layer.kernel.shape[:-1])
    return 0


def _graph_nodes(model: keras.Model) -> list:
    """The call nodes of ``model``'s own graph (not of other models sharing its layers)."""
    if isinstance(model, keras.Sequential):
        if model._functional is None:
            raise ValueError(
                f"Sequential model {model.name!r} is not built: give it a keras.Input or call "
                "build() with an input shape first"
            )
        model = model._functional
    by_depth = getattr(model, "_nodes_by_depth", None)
    if by_depth is None:
        raise TypeError(
            f"count_macs needs a functional or Sequential model; {model.name!r} is a "
            f"{type(model).__name__} without a layer graph"
        )
    return [node for depth in sorted(by_depth) for node in by_depth[depth]]


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates for one example through ``model``.

    Counts ``Conv2D`` (and ``Conv1D``/``Conv3D``, grouped convolutions included),
    ``DepthwiseConv2D`` and ``Dense`` layers from their output shapes: output elements
    times the length of the dot product behind each (``kh * kw * in_channels / groups``
    for a convolution, ``kh * kw`` for a depthwise convolution, ``in_features`` for a
    dense layer). Batch normalization, activations, pooling, additions and biases are
    not counted. A layer called more than once counts once per call; nested models are
    counted recursively; a layer inside a ``keras.layers.Wrapper`` (such as a pruning
    wrapper) counts as the wrapped layer, densely: zeros in the weights are not skipped.

    Args:
        model: A built Keras model with fixed (non-``None``) spatial dimensions.

    Returns:
        The MAC count per example, as an ``int``.

    Raises:
        ValueError: If a counted layer has an output dimension other than the batch that
            is unknown, or if a Sequential model is not built.
        TypeError: If ``model`` is a subclassed model (it has no layer graph to walk).

    Example:
        >>> inputs = keras.Input((8, 8, 3))
        >>> x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
        >>> outputs = keras.layers.Dense(2)(keras.layers.Flatten()(x))
        >>> count_macs(keras.Model(inputs, outputs))  # 8*8*4*3*3*3 + 256*2
        7424
    """
    total = 0
    for node in _graph_nodes(model):
        layer = node.operation
        if isinstance(layer, keras.Model):
            total += count_macs(layer)
            continue
        per_output = _macs_per_output(layer)
        if not per_output:
            continue
        for tensor in node.outputs:
            dims = tuple(tensor.shape[1:])
            if any(dim is None for dim in dims):
                raise ValueError(
                    f"layer {layer.name!r} has an output shape {tuple(tensor.shape)} with "
                    "unknown dimensions; build the model with a fixed input shape"
                )
            total += math.prod(dims) * per_output
    return total
