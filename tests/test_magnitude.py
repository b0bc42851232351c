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
