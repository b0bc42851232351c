"""PDP baseline: the midpoint threshold, the ratio ramp, N:M groups, the final hard mask."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sparse_prune as tsp
from tests.helpers import compile_for_classification, random_data, save_and_resume, small_cnn
from tf_sparse_prune.algorithms.pdp import PDP, pdp_mask
from tf_sparse_prune.wrappers import collect_wrappers


def test_the_mask_is_a_sigmoid_around_the_midpoint_of_kept_and_pruned_scores():
    scores = np.array([0.5, 0.1, 0.9, 0.3, 0.7, 0.2], np.float32)
    got = pdp_mask(scores, 0.5, 0.05).numpy()
    t2 = (0.5 + 0.3) / 2  # smallest kept 0.5, largest pruned 0.3
    np.testing.assert_allclose(got, 1 / (1 + np.exp(-(scores - t2) / 0.05)), rtol=1e-5)
    assert np.array_equal(pdp_mask(scores, 0.0, 0.05).numpy(), np.ones(6, np.float32))


def test_nm_groups_get_their_own_threshold_and_keep_at_least_n():
    scores = np.array([[4.0, 1.0, 3.0, 2.0], [10.0, 40.0, 20.0, 30.0]], np.float32)
    hard = pdp_mask(scores, 0.5, 1e-4, group=4, keep_min=2).numpy() >= 0.5
    assert hard.tolist() == [[True, False, True, False], [False, True, False, True]]
    never_below_n = pdp_mask(scores, 0.99, 1e-4, group=4, keep_min=2).numpy() >= 0.5
    assert never_below_n.sum(-1).tolist() == [2, 2]


def test_weights_get_the_mask_gradient_through_their_own_scores_with_t_held_fixed():
    w = tf.Variable([[0.5, 0.52, 0.1, 0.9]])
    with tf.GradientTape() as tape:
        m = pdp_mask(tf.square(w), 0.5, 0.05)
        loss = tf.reduce_sum(m * [1.0, 2.0, 3.0, 4.0])
    g = tape.gradient(loss, w).numpy()[0]
    x = np.array([0.5, 0.52, 0.1, 0.9])
    t2 = (0.52**2 + 0.5**2) / 2
    sig = 1 / (1 + np.exp(-(x**2 - t2) / 0.05))
    want = np.array([1.0, 2.0, 3.0, 4.0]) * sig * (1 - sig) / 0.05 * 2 * x
    np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-5)  # float32 in the tail


def test_the_ratio_ramps_per_epoch_and_the_final_mask_is_hard_and_exact():
    pruner = PDP(0.75, tsp.OneByN(16), temperature=1e-3, ramp=0.25)
    model = small_cnn(channels=(16, 32))
    pruned = tsp.prune_model(model, pruner, layers="all")
    compile_for_classification(pruned, lr=0.02)
    x, y = random_data(32)
    hist = pruned.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=pruner.callbacks())
    assert hist.history["pdp_ratio"] == pytest.approx([0.1875, 0.375, 0.5625, 0.75])
    rows = [r for r in tsp.sparsity_report(pruned) if r.pruned]
    assert [r.sparsity for r in rows] == pytest.approx([2 / 3, 0.75], abs=1e-9)  # 3 blocks
    final = tsp.strip_pruning(pruned)
    for w in collect_wrappers(pruned):
        kernel = final.get_layer(w.layer.name).kernel.numpy()
        assert np.array_equal(kernel == 0, w.expanded_mask_numpy() == 0)
    assert float(collect_wrappers(pruned)[0].pdp_soft.numpy()) == 0.0


def test_a_ramp_short_of_the_target_warns_and_the_final_mask_still_reaches_it():
    pruner = PDP(0.5, tsp.NM(2, 4), ramp=0.1)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="d")])
    pruned = tsp.prune_model(model, pruner, layers="all")
    pruned.compile("sgd", "mse")
    with pytest.warns(UserWarning, match=r"ramp at ratio 0.1 < sparsity=0.5"):
        pruned.fit(
            np.ones((8, 8)), np.ones((8, 4)), epochs=2, verbose=0, callbacks=pruner.callbacks()
        )
    assert np.all(collect_wrappers(pruned)[0].masks[0].numpy().sum(-1) == 2)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"temperature": 0.0}, r"temperature=0.0 .* > 0"),
        ({"ramp": 1.5}, r"ramp=1.5 .* \(0, 1\]"),
        ({"sparsity": None}, r"sparsity is required"),
    ],
)
def test_invalid_arguments_are_refused_with_the_parameter_named(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        PDP(**{"sparsity": 0.5, **kwargs})


class _StopAfter(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            self.model.stop_training = True


def test_resume_from_a_saved_model_matches_an_unbroken_run(tmp_path):
    initial = small_cnn(channels=(16, 32)).get_weights()
    x, y = random_data(32)
    common = {"x": x, "y": y, "batch_size": 16, "shuffle": False, "verbose": 0}

    def make():
        model = small_cnn(channels=(16, 32))
        model.set_weights(initial)
        pruned = tsp.prune_model(model, PDP(0.75, tsp.OneByN(16), temperature=1e-3, ramp=0.25))
        return compile_for_classification(pruned, lr=0.02)

    straight = make()
    straight.fit(epochs=4, callbacks=tsp.get_pruner(straight).callbacks(), **common)
    first = make()
    first.fit(epochs=4, callbacks=[*tsp.get_pruner(first).callbacks(), _StopAfter()], **common)
    resumed = save_and_resume(first, tmp_path / "mid.keras", x, y, 4, 2, batch_size=16)
    for a, b in zip(collect_wrappers(straight), collect_wrappers(resumed), strict=True):
        np.testing.assert_array_equal(b.masks[0].numpy(), a.masks[0].numpy())
        assert float(b.pdp_ratio.numpy()) == float(a.pdp_ratio.numpy()) == 0.75
    for va, vb in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_allclose(vb, va, rtol=1e-4, atol=1e-5)
