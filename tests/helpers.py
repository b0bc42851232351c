"""Shared test helpers: small models, random data, brute-force references."""

from __future__ import annotations

import keras
import numpy as np

KERNEL_CASES = {
    # name: (layer factory, input shape, depthwise)
    "conv2d": (lambda: keras.layers.Conv2D(32, 3, padding="same", name="conv"), (6, 6, 8), False),
    "dense": (lambda: keras.layers.Dense(32, name="dense"), (16,), False),
    "depthwise": (
        lambda: keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw"),
        (6, 6, 16),
        True,
    ),
}


def built_layer(case: str):
    """A built layer for one of KERNEL_CASES, with its kernel and depthwise flag."""
    make, shape, depthwise = KERNEL_CASES[case]
    layer = make()
    layer.build((None, *shape))
    return layer, depthwise


def small_cnn(channels=(32, 32), dense_units=10, input_shape=(12, 12, 3), name="small_cnn"):
    """A small functional CNN: conv blocks, GAP, Dense."""
    inp = keras.Input(input_shape, name="image")
    x = inp
    for i, c in enumerate(channels):
        x = keras.layers.Conv2D(c, 3, padding="same", name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(dense_units, name="fc")(x)
    return keras.Model(inp, out, name=name)


def export_cnn():
    """A Sequential model with every kernel type an export meets: a conv whose BatchNorm
    the converter folds (``c0``), a depthwise conv (``dw``), a 1x1 conv (``pw``) and a
    dense layer (``fc``), on 10x10x3 inputs, 16 outputs."""
    return keras.Sequential(
        [
            keras.Input((10, 10, 3)),
            keras.layers.Conv2D(32, 3, padding="same", name="c0"),
            keras.layers.BatchNormalization(name="bn0"),
            keras.layers.ReLU(),
            keras.layers.DepthwiseConv2D(3, padding="same", name="dw"),
            keras.layers.Conv2D(32, 1, name="pw"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(16, name="fc"),
        ]
    )


def random_data(n=64, input_shape=(12, 12, 3), classes=10, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *input_shape)).astype("float32")
    y = rng.integers(0, classes, n)
    return x, y


def compile_for_classification(model, lr=0.05):
    model.compile(
        optimizer=keras.optimizers.SGD(lr, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def kernel_view(kernel: np.ndarray, depthwise: bool) -> np.ndarray:
    """Brute-force canonical (taps, C_in, C_out) view."""
    if depthwise:
        kh, kw, c, m = kernel.shape
        return kernel.reshape(kh * kw, 1, c * m)
    if kernel.ndim == 2:
        return kernel[None]
    return kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1])


def masks_of(model) -> dict[str, np.ndarray]:
    """name -> numpy grid mask of every wrapper in the model."""
    from tf_sparse_prune.wrappers import collect_wrappers

    return {w.layer.name: w.masks[0].numpy() for w in collect_wrappers(model)}


def _sublayer(model, path: str):
    """The layer at ``path`` (``"nested_model/layer"`` for nested models)."""
    layer = model
    for part in path.split("/"):
        layer = layer.get_layer(part)
    return layer


def masked_output(model, graph, removal, x) -> np.ndarray:
    """``model(x)`` with the removed channels masked: their consumers' input rows zeroed.

    The reference that channel surgery must reproduce: every weight slice with role
    ``"input"`` (kernel rows of Conv/Dense/SeparableConv pointwise that read a channel) is
    zeroed for the removed channels, so those channels contribute nothing downstream. The
    model's weights are restored afterwards.
    """
    saved = [w.numpy().copy() for w in model.weights]
    try:
        for gid, channels in removal.items():
            for s in graph.groups[gid].slices:
                if s.role != "input":
                    continue
                var = next(w for w in _sublayer(model, s.layer).weights if w.name == s.weight)
                value = var.numpy()
                index = [slice(None)] * value.ndim
                index[s.axis] = s.indices(channels)
                value[tuple(index)] = 0
                var.assign(value)
        return keras.ops.convert_to_numpy(model(x, training=False))
    finally:
        for w, v in zip(model.weights, saved, strict=True):
            w.assign(v)


def randomize_batchnorm(model, seed=0) -> None:
    """Gives every BatchNormalization non-trivial gamma, beta and moving statistics (those
    it has: ``scale=False`` or ``center=False`` layers have no gamma or beta)."""
    rng = np.random.default_rng(seed)
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            draws = {  # in the layer's weight order, so full layers draw as before
                "gamma": (rng.uniform, 0.5, 1.5),
                "beta": (rng.normal, 0, 0.5),
                "moving_mean": (rng.normal, 0, 0.5),
                "moving_variance": (rng.uniform, 0.5, 1.5),
            }
            for var in layer.weights:
                draw, a, b = draws[var.name]
                var.assign(draw(a, b, n).astype(var.dtype))


def _all_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
        else:
            yield layer


def save_and_resume(model, path, x, y, epochs, initial_epoch, **fit_kwargs):
    """Saves ``model`` to ``path``, reloads it and continues ``fit`` with its own pruner.

    Returns the reloaded, further-trained model (the resume half of the resume tests).
    """
    import tf_sparse_prune as tsp

    model.save(path)
    resumed = keras.models.load_model(path)
    fit_kwargs.setdefault("shuffle", False)
    fit_kwargs.setdefault("verbose", 0)
    resumed.fit(
        x,
        y,
        epochs=epochs,
        initial_epoch=initial_epoch,
        callbacks=tsp.get_pruner(resumed).callbacks(),
        **fit_kwargs,
    )
    return resumed
