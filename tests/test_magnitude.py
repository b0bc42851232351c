"""Magnitude (GMP): exact per-layer sparsity, global ranking, schedule, monotone masks."""

import itertools

import keras
import numpy as np
import pytest

import tf_sparse_prune as tsp
from tests.helpers import compile_for_classification, masks_of, random_data, small_cnn
from tf_sparse_prune.wrappers import collect_wrappers


def _train(model, pruner, epochs=3, n=64, batch=16, extra_callbacks=()):
    x, y = random_data(n)
    compile_for_classification(model)
    return model.fit(
        x,
        y,
        batch_size=batch,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=[*pruner.callbacks(), *extra_callbacks],
    )


@pytest.mark.parametrize(
    "structure,sparsity",
    [
        (tsp.OneByN(16), 0.75),
        (tsp.Unstructured(), 0.8),
        (tsp.OutputChannel(), 0.5),
        (tsp.Block(16, 8), 0.5),
        (tsp.NM(2, 4), 0.5),
    ],
)
def test_layer_scope_reaches_the_exact_target_in_every_layer(structure, sparsity):
    model = small_cnn(channels=(32, 32), dense_units=16)
    pruner = tsp.Magnitude(
        sparsity, structure, schedule=tsp.PolynomialDecay(0.0, sparsity, 1, 7, frequency=2)
    )
    pruned = tsp.prune_model(model, pruner, layers=["conv1", "fc"])
    _train(pruned, pruner)
    rows = {r.layer: r for r in tsp.sparsity_report(pruned) if r.pruned}
    assert sorted(rows) == ["conv1", "fc"]
    for w in collect_wrappers(pruned):
        row = rows[w.layer.name]
        block = w.structure.block_sizes(tuple(w.layer.kernel.shape)).max()
        # exact up to the granularity of one block (the budget is rounded to whole weights)
        assert abs(row.sparsity - sparsity) <= block / row.weights / 2 + 1e-12, row
    final = tsp.strip_pruning(pruned)
    kernel = final.get_layer("conv1").kernel.numpy()
    assert np.mean(kernel == 0) == pytest.approx(rows["conv1"].sparsity)


def test_global_scope_meets_the_total_and_learns_per_layer_sparsity():
    model = small_cnn(channels=(32, 64), dense_units=16)
    # make conv1 much smaller in magnitude than the others: global ranking prunes it harder
    w = model.get_layer("conv1").get_weights()
    model.get_layer("conv1").set_weights([w[0] * 0.05, w[1]])
    pruner = tsp.Magnitude(
        0.6, tsp.OneByN(16), scope="global", schedule=tsp.ConstantSparsity(0.6, 0, frequency=100)
    )
    pruned = tsp.prune_model(model, pruner, layers=["conv0", "conv1", "fc"])
    _train(pruned, pruner, epochs=1)
    rows = {r.layer: r for r in tsp.sparsity_report(pruned) if r.pruned}
    total = sum(r.sparsity * r.weights for r in rows.values()) / sum(
        r.weights for r in rows.values()
    )
    assert total == pytest.approx(0.6, abs=0.01)
    assert rows["conv1"].sparsity > 0.6 > rows["conv0"].sparsity


def test_masks_stay_ones_before_begin_step_and_never_regrow():
    model = small_cnn()
    pruner = tsp.Magnitude(0.9, tsp.OneByN(16), schedule=tsp.PolynomialDecay(0.0, 0.9, 6, 14, 2))
    pruned = tsp.prune_model(model, pruner)
    history = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            history.append(
                (int(collect_wrappers(pruned)[0].pruning_step.numpy()), masks_of(pruned))
            )

    _train(pruned, pruner, epochs=4, extra_callbacks=[Record()])
    for step, masks in history:
        if step < 6:
            assert all(m.min() == 1 for m in masks.values()), step
    for (_, a), (_, b) in itertools.pairwise(history):
        for name in a:
            assert np.all(b[name] <= a[name]), "a pruned block came back"
    assert history[-1][0] == 15
    assert np.mean(history[-1][1]["conv1"] == 0) == pytest.approx(0.9, abs=0.02)


def test_masked_weights_are_zeroed_in_the_kernel_like_tfmot():
    model = small_cnn()
    pruner = tsp.Magnitude(0.5, tsp.OneByN(16), schedule=tsp.ConstantSparsity(0.5, 0, frequency=50))
    pruned = tsp.prune_model(model, pruner)
    _train(pruned, pruner, epochs=2)
    for w in collect_wrappers(pruned):
        kernel = w.layer.kernel.numpy()
        assert np.all(kernel[w.expanded_mask_numpy(0) == 0] == 0)


def test_l1_and_l2_criteria_rank_blocks_differently():
    layer = keras.layers.Dense(2, use_bias=False)
    model = keras.Sequential([keras.Input((2,)), layer])
    # block 0 (input 0): many small weights -> big L1, small L2; block 1 the reverse.
    layer.set_weights([np.array([[0.6, 0.6], [1.0, 0.0]], np.float32)])
    kept = {}
    for criterion in ("l1", "l2"):
        pruner = tsp.Magnitude(
            0.5,
            tsp.OneByN(2),
            criterion=criterion,
            schedule=tsp.ConstantSparsity(0.5, 0, frequency=1),
        )
        pruned = tsp.prune_model(model, pruner, layers="all")
        pruner.update_masks(collect_wrappers(pruned), 0.5)
        kept[criterion] = masks_of(pruned)[layer.name][0].tolist()
    assert kept["l1"] == [1.0, 0.0]  # L1: 1.2 vs 1.0
    assert kept["l2"] == [0.0, 1.0]  # L2: 0.85 vs 1.0


def test_automatic_schedule_reaches_the_target_by_70_percent_of_training():
    model = small_cnn()
    pruner = tsp.Magnitude(0.75, tsp.OneByN(16))
    pruned = tsp.prune_model(model, pruner)
    logs = _train(pruned, pruner, epochs=5).history
    sched = pruner.resolve_schedule({"epochs": 5, "steps": 4})
    assert (sched.begin_step, sched.final_sparsity) == (0, 0.75)
    assert sched.end_step <= 14
    assert logs["pruning_sparsity"][-1] == pytest.approx(0.75, abs=0.01)


def test_automatic_schedule_needs_known_steps():
    with pytest.raises(ValueError, match="steps_per_epoch"):
        tsp.Magnitude(0.5).resolve_schedule({"epochs": 3, "steps": None})


class _NumpyL2(tsp.scoring.Scorer):
    """L2Norm without the tensor path: forces the numpy mask update."""

    def __call__(self, blocks):
        return tsp.scoring.L2Norm()(np.asarray(blocks))

    def comparable(self, scores, sizes):
        return tsp.scoring.L2Norm().comparable(np.asarray(scores), sizes)


@pytest.mark.parametrize(
    ("structure", "scope"),
    [
        (tsp.OneByN(16), "layer"),
        (tsp.OneByN(16), "global"),
        (tsp.Block(16, 8), "global"),
        (tsp.Unstructured(), "layer"),
        (tsp.OutputChannel(), "global"),
        (tsp.NM(2, 4), "layer"),
    ],
)
def test_the_compiled_mask_update_selects_exactly_what_the_numpy_one_does(structure, scope):
    """The in-graph update (tensor scorers) and the numpy update agree bit for bit, floor
    included, across two successive updates (the second scores the masked kernel)."""
    inp = keras.Input((6, 6, 16))
    x = keras.layers.Conv2D(32, 3, padding="same", name="a")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.Conv2D(48, 1, name="b")(x)
    out = keras.layers.Dense(16, name="fc")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)
    names = ["a", "b", "fc"] + (["dw"] if structure.prunes_depthwise_by_default else [])
    if isinstance(structure, tsp.NM):
        names = ["b", "fc"]
    results = []
    for criterion in ("l2", _NumpyL2()):
        pruner = tsp.Magnitude(
            structure=structure,
            sparsity=None if isinstance(structure, tsp.NM) else 0.7,
            scope=scope,
            criterion=criterion,
        )
        pruned = tsp.prune_model(model, pruner, layers=names)
        wrappers = collect_wrappers(pruned)
        pruner.update_masks(wrappers, 0.4 if not isinstance(structure, tsp.NM) else 0.25)
        pruner.update_masks(wrappers, pruner.sparsity)
        results.append([(w.masks[0].numpy(), w.targets[0][0].numpy()) for w in wrappers])
    assert pruner._compiled is None  # the numpy scorer never compiled
    for (mask_t, kernel_t), (mask_n, kernel_n) in zip(*results, strict=True):
        np.testing.assert_array_equal(mask_t, mask_n)
        np.testing.assert_array_equal(kernel_t, kernel_n)
    assert 0.0 < np.mean([m.mean() for m, _ in results[0]]) < 1.0
