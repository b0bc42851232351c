"""End to end on real Fashion-MNIST: prune during fit, strip, export, check TFLite accuracy."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

import tf_sparse_prune as tsp


def _tflite_accuracy(flat, x, y, batch=500):
    interp = Interpreter(model_content=flat)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.resize_tensor_input(inp["index"], (batch, *x.shape[1:]))
    interp.allocate_tensors()
    correct = 0
    for i in range(0, len(x), batch):
        interp.set_tensor(inp["index"], x[i : i + batch])
        interp.invoke()
        correct += int((interp.get_tensor(out["index"]).argmax(-1) == y[i : i + batch]).sum())
    return correct / len(x)


@pytest.mark.slow
def test_pruned_cnn_learns_fashion_mnist_far_above_chance_and_tflite_agrees():
    (x, y), (xt, yt) = tsp.load_fashion_mnist()
    assert x.shape == (60000, 28, 28, 1) and x.dtype == np.float32 and 0 <= x.min() <= x.max() <= 1
    x, y, xt, yt = x[:6144], y[:6144], xt[:2000], yt[:2000]
    keras.utils.set_random_seed(0)
    steps = 6144 // 128
    pruner = tsp.Magnitude(
        0.75, tsp.OneByN(16), schedule=tsp.PolynomialDecay(0.0, 0.75, steps // 2, 2 * steps, 8)
    )
    pruned = tsp.prune_model(
        tsp.models.fashion_cnn(),
        pruner,
        layers=lambda layer: layer.name not in ("stem", "classifier"),
    )
    pruned.compile(
        keras.optimizers.Adam(2e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(6144, seed=0).batch(128)
    pruned.fit(ds, epochs=4, verbose=0, callbacks=pruner.callbacks())

    final = tsp.strip_pruning(pruned)
    for name in ("conv2", "conv3", "conv4", "conv5"):
        assert np.mean(final.get_layer(name).kernel.numpy() == 0) == pytest.approx(0.75)
    final.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    keras_acc = final.evaluate(xt, yt, verbose=0)[1]
    assert keras_acc > 0.7, keras_acc  # chance is 0.1

    flat = tsp.export_tflite(final)
    assert all(c.preserved for c in tsp.check_tflite_sparsity(final, flat))
    assert _tflite_accuracy(flat, xt, yt) == pytest.approx(keras_acc, abs=0.003)
