"""Mixed precision: every method trains under ``mixed_float16`` and ``mixed_bfloat16``.

Under a mixed policy Keras layers keep float32 variables and compute in the 16-bit
dtype. Masks and scores must stay float32 (SMART's temperature and threshold float64),
the loss finite, and each method must reach the sparsity it promises.
"""

import keras
import numpy as np
import pytest

import tf_sparse_prune as tsp
from tests.helpers import compile_for_classification, random_data, small_cnn
from tf_sparse_prune.algorithms.ocspruner import OCSPruner
from tf_sparse_prune.algorithms.pdp import PDP
from tf_sparse_prune.algorithms.smart import SMART
from tf_sparse_prune.algorithms.subp import SUBP
from tf_sparse_prune.callbacks import model_sparsity
from tf_sparse_prune.graph import count_flops
from tf_sparse_prune.wrappers import PruneWrapper, collect_wrappers

POLICIES = ["mixed_float16", "mixed_bfloat16"]
COMPUTE = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}

# conv1 (8 -> 16, 3x3) and fc (16 -> 16) are pruned (1152 + 256 weights): every row of
# both holds an even number of 1x16 blocks, so the per-layer methods reach 0.5 exactly.
CHANNELS, CLASSES, PRUNED = (8, 16), 16, ["conv1", "fc"]
EPOCHS, SAMPLES, BATCH = 2, 32, 16


@pytest.fixture(params=POLICIES)
def policy(request):
    """Sets the global dtype policy for one test (before any model is built) and restores it."""
    keras.mixed_precision.set_global_policy(request.param)
    try:
        yield request.param
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _model():
    return small_cnn(channels=CHANNELS, dense_units=CLASSES)


def _fit(model, callbacks, eager=False):
    # Eager steps skip the train-step trace (seconds on 2 cores); the graph-mode tests
    # below run the traced path of the methods whose forward pass does the most math.
    model.run_eagerly = eager
    x, y = random_data(SAMPLES, classes=CLASSES)
    history = model.fit(
        x, y, epochs=EPOCHS, batch_size=BATCH, shuffle=False, verbose=0, callbacks=callbacks
    )
    return history.history


def _layer_sparsity(pruned) -> dict[str, float]:
    return {r.layer: r.sparsity for r in tsp.sparsity_report(pruned) if r.pruned}


# name -> (pruner factory, check of the reached sparsity on the trained model)
def _per_layer_half(pruned, pruner, history):
    assert _layer_sparsity(pruned) == {"conv1": 0.5, "fc": 0.5}


def _smart_global_half(pruned, pruner, history):
    wrappers = collect_wrappers(pruned)
    assert history["smart_phase"][-1] == 2.0  # fine-tune: the hard mask is final
    largest = max(float(s.max()) for w in wrappers for s in w.smart_sizes)
    total = sum(float(s.sum()) for w in wrappers for s in w.smart_sizes)
    # the global top-k meets the weight budget up to one block
    assert abs(model_sparsity(wrappers) - 0.5) <= largest / total
    assert history["smart_hard_sparsity"][-1] == pytest.approx(model_sparsity(wrappers))


def _subp_final(pruned, pruner, history):
    _per_layer_half(pruned, pruner, history)
    assert all(float(w.subp_soft.numpy()) == 0.0 for w in collect_wrappers(pruned))


METHODS = {
    "magnitude": (lambda: tsp.Magnitude(0.5, tsp.OneByN(16)), _per_layer_half),
    "subp": (lambda: SUBP(0.5, n=16, regrow_start_epoch=0, regrow_end_epoch=1), _subp_final),
    "smart_block": (
        lambda: SMART(0.5, tsp.Block(16, 4), pretrain_epochs=0, search_epochs=1),
        _smart_global_half,
    ),
    "smart_nm": (
        lambda: SMART(None, tsp.NM(2, 4), pretrain_epochs=0, search_epochs=1),
        _per_layer_half,
    ),
    "pdp": (lambda: PDP(0.5, tsp.OneByN(16), ramp=0.5), _per_layer_half),
}


def _train_and_check(policy, method, eager):
    make, check = METHODS[method]
    pruner = make()
    pruned = tsp.prune_model(_model(), pruner, layers=PRUNED)
    compile_for_classification(pruned, lr=0.01)
    history = _fit(pruned, pruner.callbacks(), eager=eager)

    assert np.all(np.isfinite(history["loss"]))
    wrappers = collect_wrappers(pruned)
    assert [w.layer.name for w in wrappers] == PRUNED
    for w in wrappers:
        assert w.dtype_policy.name == policy  # the wrapped layer's policy
        assert w.layer.compute_dtype == COMPUTE[policy]
        for var in w.masks + list(getattr(w, "smart_scores", [])):
            assert var.dtype == "float32", var.name
        for var, _ in w.targets:
            assert var.dtype == "float32"
            assert np.all(np.isfinite(var.numpy()))
        for name in ("smart_temperature", "smart_threshold"):
            if hasattr(w, name):
                assert getattr(w, name).dtype == "float64"
        for i in range(len(w.masks)):
            assert set(np.unique(w.masks[i].numpy())) <= {0.0, 1.0}
    check(pruned, pruner, history)
    out = pruned(random_data(2, classes=CLASSES)[0], training=False)
    assert keras.backend.standardize_dtype(out.dtype) == COMPUTE[policy]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_wrapper_methods_train_to_their_sparsity_under_mixed_policy(policy, method):
    _train_and_check(policy, method, eager=True)


@pytest.mark.parametrize(
    ("policy", "method"),
    [("mixed_bfloat16", "smart_block"), ("mixed_float16", "smart_nm")],
    indirect=["policy"],
)
def test_smart_trains_in_a_traced_fit_under_mixed_policy(policy, method):
    _train_and_check(policy, method, eager=False)


def test_ocspruner_trains_and_removes_channels_under_mixed_policy(policy):
    model = compile_for_classification(_model(), lr=0.01)
    pruner = OCSPruner(flops_reduction=0.3, start_epoch=0, last_search_epoch=EPOCHS - 1)
    history = _fit(model, pruner.callbacks())

    assert np.all(np.isfinite(history["loss"]))
    assert history["ocs_penalty"][-1] > 0  # the regulariser ran in the last epoch
    small = pruner.prune(model)
    assert count_flops(small) <= 0.7 * pruner.state["flops_before"]
    assert all(v.dtype == "float32" for v in small.weights)
    out = small(random_data(2, classes=CLASSES)[0], training=False)
    assert keras.backend.standardize_dtype(out.dtype) == COMPUTE[policy]
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(out)))


def test_mixed_wrapper_output_equals_the_layer_with_the_masked_kernel(policy):
    """The float32 masked kernel reaches the layer, which casts it like its own kernel."""
    layer = keras.layers.Dense(16, name="dense")
    wrapper = PruneWrapper(layer, tsp.Magnitude(0.5, tsp.OneByN(16)))
    x = random_data(4, input_shape=(32,))[0]
    wrapper(x)
    mask = np.zeros(wrapper.masks[0].shape, np.float32)
    mask[:, ::2] = 1.0
    wrapper.set_mask(0, mask)
    masked = layer.kernel.numpy() * wrapper.expanded_mask_numpy(0)

    reference = keras.layers.Dense(16)
    reference.build((None, 32))
    reference.set_weights([masked, layer.bias.numpy()])
    got = keras.ops.convert_to_numpy(wrapper(x))
    expected = keras.ops.convert_to_numpy(reference(x))
    assert keras.backend.standardize_dtype(got.dtype) == COMPUTE[policy]
    np.testing.assert_array_equal(got, expected)


def test_float32_layer_in_a_mixed_model_keeps_float32_through_its_wrapper(policy):
    layer = keras.layers.Dense(16, dtype="float32", name="head")
    wrapper = PruneWrapper(layer, tsp.Magnitude(0.5, tsp.OneByN(16)))
    x = keras.ops.cast(random_data(4, input_shape=(32,))[0], COMPUTE[policy])
    out = wrapper(x)
    assert wrapper.dtype_policy.name == "float32"
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    restored = PruneWrapper.from_config(wrapper.get_config())
    assert restored.dtype_policy.name == "float32"


# ---- SMART's optimizers under mixed_float16 (compile wraps the optimizer in a
# LossScaleOptimizer: the loss is scaled, and the wrapper unscales the gradients and
# applies them with its inner optimizer)


def _smart_one_step(mask_optimizer, optimizer):
    pruner = SMART(0.5, tsp.Block(16, 4), search_epochs=1, mask_optimizer=mask_optimizer)
    pruned = tsp.prune_model(_model(), pruner, layers=PRUNED)
    pruned.compile(
        optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    pruned.run_eagerly = True
    x, y = random_data(BATCH, classes=CLASSES)
    pruned.fit(x, y, epochs=1, batch_size=BATCH, verbose=0, callbacks=pruner.callbacks())
    return pruned


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
def test_smart_scores_escape_the_inner_optimizers_weight_decay_under_loss_scaling(policy):
    pruned = _smart_one_step(None, keras.optimizers.AdamW(1e-3, weight_decay=0.1))
    optimizer = pruned.optimizer
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    scores = [v for w in collect_wrappers(pruned) for v in w.smart_scores]
    decayed = [v.name for v in scores if optimizer.inner_optimizer._use_weight_decay(v)]
    assert decayed == []


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
def test_smart_mask_optimizer_leaves_the_weight_updates_unchanged_under_loss_scaling(policy):
    updates = []
    for mask_optimizer in (None, keras.optimizers.SGD(0.1)):
        keras.utils.set_random_seed(0)
        pruned = _smart_one_step(mask_optimizer, keras.optimizers.SGD(0.1))
        updates.append(pruned.get_layer("conv0").kernel.numpy())
    # conv0 is not pruned: its update comes from the model's optimizer in both runs
    np.testing.assert_allclose(updates[1], updates[0], rtol=1e-5, atol=1e-7)
