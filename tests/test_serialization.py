"""Keras serialization of every registered class, .keras save/load, exact resume."""

import keras
import numpy as np
import pytest

import tf_sparse_prune as tsp
from tests.helpers import (
    compile_for_classification,
    masks_of,
    random_data,
    save_and_resume,
    small_cnn,
)
from tf_sparse_prune.algorithms.smart import MaskScoreOptimizer
from tf_sparse_prune.wrappers import collect_wrappers

EXAMPLES = {
    "Unstructured": lambda: tsp.Unstructured(),
    "OneByN": lambda: tsp.OneByN(16, pad=True),
    "Block": lambda: tsp.Block(16, 8),
    "OutputChannel": lambda: tsp.OutputChannel(),
    "NM": lambda: tsp.NM(2, 4),
    "PolynomialDecay": lambda: tsp.PolynomialDecay(0.1, 0.8, 10, 110, 5, power=2.0),
    "ConstantSparsity": lambda: tsp.ConstantSparsity(0.5, 3, 40, 7),
    "Floor": lambda: tsp.Floor(min_fraction=0.03, keep_rows=False),
    "L1Norm": lambda: tsp.scoring.L1Norm(),
    "L2Norm": lambda: tsp.scoring.L2Norm(),
    "Magnitude": lambda: tsp.Magnitude(
        0.7,
        tsp.Block(16, 8),
        scope="global",
        criterion="l1",
        schedule=tsp.PolynomialDecay(0.0, 0.7, 1, 9, 2),
        floor=tsp.Floor(min_fraction=0.05),
    ),
    "BPAR": lambda: tsp.scoring.BPAR(balance=0.5),
    "SUBP": lambda: tsp.SUBP(
        0.6,
        n=8,
        balance=0.5,
        sampling_temperature=2.0,
        regrow_start_epoch=2,
        regrow_end_epoch=9,
        initial_regrow=0.3,
        regrow_decay="cosine",
        regrow="random",
        seed=3,
        pad=True,
        score_on="weights",
    ),
    "SMART": lambda: tsp.SMART(
        0.7,
        tsp.Block(16, 8),
        pretrain_epochs=2,
        search_epochs=5,
        initial_temperature=5.0,
        final_temperature=1e-3,
        mask_optimizer=keras.optimizers.Adam(3e-3, beta_1=0.8),
        score_bound=4.0,
    ),
    "MaskScoreOptimizer": lambda: MaskScoreOptimizer(
        keras.optimizers.SGD(0.05, momentum=0.9), keras.optimizers.Adam(1e-2), name="route"
    ),
    "PDP": lambda: tsp.PDP(0.6, tsp.OneByN(8), temperature=1e-3, ramp=0.05),
    "OCSPruner": lambda: tsp.OCSPruner(
        0.3,
        stability_lag=1,
        stability_window=2,
        start_epoch=4,
        stability_epsilon=1e-2,
        last_search_epoch=9,
        penalty_initial=2e-4,
        penalty_step=3e-4,
        penalty_interval=2,
        max_layer_prune=0.6,
        start_threshold=1e-3,
        shrink=False,
    ),
    "PruneWrapper": lambda: tsp.PruneWrapper(
        keras.layers.Dense(16, name="d"), tsp.Magnitude(0.5, tsp.OneByN(8))
    ),
}


def _registered():
    return sorted(
        name.split(">", 1)[1]
        for name in keras.saving.get_custom_objects()
        if name.startswith("tf_sparse_prune>")
    )


def test_every_registered_class_has_a_round_trip_example():
    assert _registered() == sorted(EXAMPLES), "add an example for each new registered class"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_get_config_round_trips_exactly(name):
    obj = EXAMPLES[name]()
    config = obj.get_config()
    clone = type(obj).from_config(config)
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(obj)
    again = keras.saving.deserialize_keras_object(serialized)
    assert type(again) is type(obj)
    assert keras.saving.serialize_keras_object(again) == serialized


def _make(seed_weights=None):
    model = small_cnn()
    if seed_weights is not None:
        model.set_weights(seed_weights)
    pruner = tsp.Magnitude(0.75, tsp.OneByN(16), schedule=tsp.PolynomialDecay(0.0, 0.75, 2, 14, 3))
    return tsp.prune_model(model, pruner), pruner


def test_save_and_load_restores_masks_step_and_outputs(tmp_path):
    pruned, pruner = _make()
    x, y = random_data(64)
    compile_for_classification(pruned)
    pruned.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=pruner.callbacks())
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    loaded = keras.models.load_model(path)
    for name, mask in masks_of(pruned).items():
        np.testing.assert_array_equal(masks_of(loaded)[name], mask)
    assert int(collect_wrappers(loaded)[0].pruning_step.numpy()) == 7
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0))
    assert tsp.get_pruner(loaded).same_config(pruner)


def test_resume_mid_schedule_gives_the_same_masks_and_weights_as_an_unbroken_run(tmp_path):
    x, y = random_data(64)
    initial = small_cnn().get_weights()

    straight, pruner = _make(initial)
    compile_for_classification(straight)
    straight.fit(
        x, y, batch_size=16, epochs=4, shuffle=False, verbose=0, callbacks=pruner.callbacks()
    )

    first, pruner2 = _make(initial)
    compile_for_classification(first)
    first.fit(
        x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=pruner2.callbacks()
    )
    resumed = save_and_resume(first, tmp_path / "mid.keras", x, y, 4, 2, batch_size=16)

    assert int(collect_wrappers(resumed)[0].pruning_step.numpy()) == 15
    for name, mask in masks_of(straight).items():
        np.testing.assert_array_equal(masks_of(resumed)[name], mask)
    for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_callbacks_from_a_different_pruner_are_refused():
    pruned, _ = _make()
    other = tsp.Magnitude(0.5, tsp.OneByN(16))
    x, y = random_data(32)
    compile_for_classification(pruned)
    with pytest.raises(ValueError, match=r"was pruned with .*get_pruner"):
        pruned.fit(x, y, epochs=1, verbose=0, callbacks=other.callbacks())
