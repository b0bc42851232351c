"""No pruner empties a layer or a block row unless asked: the Floor, in every method."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tf_sparse_prune as tsp
from tf_sparse_prune.algorithms.pdp import PDP
from tf_sparse_prune.algorithms.subp import SUBP
from tf_sparse_prune.wrappers import collect_wrappers

NO_FLOOR = tsp.Floor(min_fraction=0.0, keep_rows=False)


def _weak_layer_model():
    """Three 1x16-prunable convs; the middle one's weights are 1e-4 of the others', so a
    global ranking would take all of its blocks first."""
    inp = keras.Input((6, 6, 16))
    x = keras.layers.Conv2D(32, 3, padding="same", name="a")(inp)
    x = keras.layers.Conv2D(32, 1, name="weak")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", name="c")(x)
    out = keras.layers.Dense(16, name="fc")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)
    weak = model.get_layer("weak")
    weak.kernel.assign(weak.kernel.numpy() * 1e-4)
    return model


class _SinkWeakScores(keras.callbacks.Callback):
    """SMART's scores are scale-free (``||B|| / mean ||B||`` per layer), so a small layer
    does not look weak to it: push the weak layer's scores to the bottom of the box once
    the search has started, as a search that turned against that layer would."""

    def on_epoch_begin(self, epoch, logs=None):
        for w in collect_wrappers(self.model):
            if w.layer.name == "weak" and hasattr(w, "smart_scores"):
                w.smart_scores[0].assign(np.full(w.smart_scores[0].shape, -10.0, "float32"))


def _fit(pruned, pruner, epochs=3, steps=4):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8 * steps, 6, 6, 16)).astype("float32")
    y = rng.standard_normal((8 * steps, 16)).astype("float32")
    pruned.compile(keras.optimizers.SGD(1e-3), "mse")
    callbacks = [*pruner.callbacks(), _SinkWeakScores()]
    pruned.fit(x, y, batch_size=8, epochs=epochs, verbose=0, callbacks=callbacks)


def _rows_alive(kernel: np.ndarray, n: int = 16) -> np.ndarray:
    """Kept 1xN blocks per row of a conv/dense kernel."""
    c_in, c_out = kernel.shape[-2:]
    alive = np.abs(kernel.reshape(-1, c_in, c_out)).sum(0) != 0  # (C_in, C_out)
    return alive.reshape(c_in, c_out // n, n).any(-1).sum(0)


METHODS = {
    "magnitude_global": lambda floor: tsp.Magnitude(
        0.9,
        tsp.OneByN(16),
        scope="global",
        floor=floor,
        schedule=tsp.ConstantSparsity(0.9, frequency=1),
    ),
    "smart": lambda floor: tsp.SMART(
        0.9, tsp.OneByN(16), search_epochs=2, initial_temperature=0.05, floor=floor
    ),
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_global_methods_keep_the_floor_of_a_layer_they_would_empty(method):
    floor = tsp.Floor(min_fraction=0.05)
    pruner = METHODS[method](floor)
    pruned = tsp.prune_model(_weak_layer_model(), pruner, layers=["a", "weak", "c"])
    _fit(pruned, pruner)
    final = tsp.strip_pruning(pruned)
    kernel = final.get_layer("weak").kernel.numpy()
    kept = np.count_nonzero(kernel) / kernel.size
    assert kept >= 0.05 - 1e-9
    assert (_rows_alive(kernel) >= 1).all()
    # the budget moved to the other layers: the model as a whole still meets the target
    rows = [r for r in tsp.sparsity_report(pruned) if r.pruned]
    achieved = sum(r.sparsity * r.weights for r in rows) / sum(r.weights for r in rows)
    assert achieved == pytest.approx(0.9, abs=0.01)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_lifted_floor_lets_a_global_method_empty_the_weak_layer(method):
    pruner = METHODS[method](NO_FLOOR)
    pruned = tsp.prune_model(_weak_layer_model(), pruner, layers=["a", "weak", "c"])
    _fit(pruned, pruner)
    kernel = tsp.strip_pruning(pruned).get_layer("weak").kernel.numpy()
    assert np.count_nonzero(kernel) == 0  # what the floor prevents, when it is on


@pytest.mark.parametrize(
    "pruner",
    [
        tsp.Magnitude(0.8, tsp.OneByN(16), schedule=tsp.ConstantSparsity(0.8, frequency=1)),
        PDP(0.8, tsp.OneByN(16), ramp=1.0),
        tsp.SMART(0.8, tsp.OneByN(16), search_epochs=2, initial_temperature=0.05),
    ],
    ids=["magnitude", "pdp", "smart"],
)
def test_a_named_32_channel_depthwise_layer_keeps_every_row(pruner):
    """0.8 of a 1x16 depthwise layer's two blocks rounds to two: the floor keeps one per row."""
    inp = keras.Input((6, 6, 32))
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(inp)
    x = keras.layers.Conv2D(32, 1, name="pw")(x)
    out = keras.layers.Dense(16, name="fc")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)
    pruned = tsp.prune_model(model, pruner, layers=["dw", "pw"])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 6, 6, 32)).astype("float32")
    y = rng.standard_normal((32, 16)).astype("float32")
    pruned.compile(keras.optimizers.SGD(1e-3), "mse")
    pruned.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=pruner.callbacks())
    kernel = tsp.strip_pruning(pruned).get_layer("dw").kernel.numpy()  # (3, 3, 32, 1)
    assert (np.abs(kernel).reshape(9, 2, 16).sum((0, 2)) > 0).all()
    pw = tsp.strip_pruning(pruned).get_layer("pw").kernel.numpy()
    assert (_rows_alive(pw) >= 1).all()


def test_subp_rows_keep_blocks_by_construction_and_the_floor_is_checked():
    assert SUBP(0.9, n=16).floor == tsp.Floor()
    with pytest.raises(ValueError, match="min_fraction"):
        SUBP(0.995, n=16)
    SUBP(0.995, n=16, floor=tsp.Floor(min_fraction=0.001))  # a lower floor allows it


@pytest.mark.parametrize("make", [tsp.Magnitude, tsp.SMART, PDP], ids=["mag", "smart", "pdp"])
def test_a_sparsity_above_the_floor_is_refused_with_the_fix(make):
    with pytest.raises(ValueError, match=r"min_fraction=0.01.*sparsity to <= 0.99"):
        make(0.995, tsp.OneByN(16))


def test_floor_protects_each_rows_best_block_and_the_layers_best_fraction():
    scores = np.array([[5.0, 4.0, 0.1], [0.3, 0.2, 0.1]])
    rows = tsp.OneByN(4).row_ids((3, 8))  # a Dense 3 -> 8: two rows of three blocks
    sizes = np.ones((2, 3))
    got = tsp.Floor(min_fraction=0.0).protected(scores, sizes, rows)
    np.testing.assert_array_equal(got, [[True, False, False], [True, False, False]])
    got = tsp.Floor(min_fraction=0.5, keep_rows=False).protected(scores, sizes, rows)
    np.testing.assert_array_equal(got, [[True, True, False], [True, False, False]])  # 5, 4, 0.3
    # ties (an all-equal layer) protect one block per row, the first, not the whole row
    got = tsp.Floor(min_fraction=0.0).protected(np.zeros((2, 3)), sizes, rows)
    np.testing.assert_array_equal(got, [[True, False, False], [True, False, False]])
    # the same rule on tensors (the compiled train step) gives the same set
    tensor = tsp.Floor(min_fraction=0.3).protected(keras.ops.convert_to_tensor(scores), sizes, rows)
    np.testing.assert_array_equal(
        np.asarray(tensor), tsp.Floor(min_fraction=0.3).protected(scores, sizes, rows)
    )


def _protected_reference(scores, sizes, rows, floor):
    """The floor's rule written plainly in numpy: per row the first best block; then the
    best blocks (ties by position) until their sizes reach min_fraction of the total."""
    flat, w = scores.ravel(), sizes.ravel().astype(np.float32)
    keep = np.zeros(flat.size, bool)
    if floor.keep_rows:
        for r in np.unique(rows):
            members = np.flatnonzero(rows.ravel() == r)
            keep[members[np.argmax(flat[members])]] = True  # argmax: the first of ties
    if floor.min_fraction > 0:
        need = np.float32(floor.min_fraction) * np.float32(w.sum())
        order = np.argsort(-flat, kind="stable")
        cum = np.cumsum(w[order], dtype=np.float32)
        keep[order[: min(int((cum < need).sum()), flat.size - 1) + 1]] = True
    return keep.reshape(scores.shape)


@pytest.mark.parametrize(
    ("structure", "shape", "depthwise"),
    [
        (tsp.OneByN(16), (3, 3, 24, 64), False),
        (tsp.Block(16, 8, pad=True), (3, 3, 20, 40), False),
        (tsp.Unstructured(), (3, 3, 6, 10), False),
        (tsp.Unstructured(), (3, 3, 8, 2), True),
        (tsp.OutputChannel(), (1, 1, 8, 12), False),
    ],
)
def test_the_floor_follows_its_rule_on_every_structure_with_ties(structure, shape, depthwise):
    rng = np.random.default_rng(1)
    grid = structure.grid_shape(shape, depthwise)
    scores = rng.integers(0, 4, grid).astype(np.float32)  # many ties
    sizes = np.asarray(structure.block_sizes(shape, depthwise))
    rows = structure.row_ids(shape, depthwise)
    for floor in (tsp.Floor(), tsp.Floor(0.0), tsp.Floor(0.3, keep_rows=False)):
        want = _protected_reference(scores, sizes, rows, floor)
        np.testing.assert_array_equal(floor.protected(scores, sizes, rows), want)


@pytest.mark.parametrize("min_fraction", [0.01, 0.2, 0.9])
def test_the_floors_top_k_of_known_sizes_equals_the_full_sort(min_fraction):
    # numpy sizes take a top_k of the few blocks that can be needed, tensor sizes sort
    # the layer: the same set, ties included (many equal scores, padded block sizes)
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, (12, 40)).astype(np.float32)
    sizes = np.full((12, 40), 16.0)
    sizes[-1] = 5.0  # a padded last row
    rows = np.repeat(np.arange(12, dtype=np.int32)[:, None], 40, 1)
    floor = tsp.Floor(min_fraction=min_fraction)
    fast = floor.protected(scores, sizes, rows)
    full = np.asarray(floor.protected(scores, keras.ops.convert_to_tensor(sizes), rows))
    np.testing.assert_array_equal(fast, full)
    assert sizes[fast].sum() >= min_fraction * sizes.sum()


@pytest.mark.parametrize(
    ("structure", "shape", "depthwise", "rows"),
    [
        (tsp.OneByN(4), (3, 3, 2, 8), False, [[0, 0], [1, 1]]),
        (tsp.Block(4, 2), (1, 1, 4, 8), False, [[0, 0], [1, 1]]),
        (tsp.OutputChannel(), (1, 1, 2, 3), False, [0, 0, 0]),
        (tsp.Unstructured(), (2, 3), False, [[0, 1, 2], [0, 1, 2]]),
        (tsp.Unstructured(), (1, 1, 2, 2), True, [[[[0, 1], [2, 3]]]]),
    ],
)
def test_row_ids_name_the_output_group_of_every_block(structure, shape, depthwise, rows):
    np.testing.assert_array_equal(structure.row_ids(shape, depthwise), rows)
    assert tsp.NM(2, 4).row_ids((3, 3, 8, 8)) is None


def test_floor_round_trips_and_rejects_bad_values():
    floor = tsp.Floor(min_fraction=0.02, keep_rows=False)
    assert tsp.Floor.from_config(floor.get_config()) == floor
    assert (
        keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(floor)) == floor
    )
    with pytest.raises(ValueError, match=r"min_fraction=1\.0 is outside"):
        tsp.Floor(min_fraction=1.0)
    with pytest.raises(ValueError, match="keep_rows"):
        tsp.Floor(keep_rows="yes")
    with pytest.raises(TypeError, match=r"floor=0\.1 is not a floor"):
        tsp.Magnitude(0.5, floor=0.1)


def test_sparsity_report_flags_all_zero_kernels_and_the_layers_they_cut_off():
    inp = keras.Input((6, 6, 8))
    a = keras.layers.Conv2D(16, 3, padding="same", name="a")(inp)
    b = keras.layers.Conv2D(16, 1, name="b")(a)
    side = keras.layers.Conv2D(16, 1, name="side")(inp)
    c = keras.layers.Conv2D(16, 1, name="c")(b)
    joined = keras.layers.Add(name="add")([c, side])
    out = keras.layers.Dense(4, name="fc")(keras.layers.GlobalAveragePooling2D()(joined))
    model = keras.Model(inp, out)
    assert tsp.sparsity_report(model).warnings == []
    model.get_layer("b").kernel.assign(np.zeros((1, 1, 16, 16), "float32"))
    report = tsp.sparsity_report(model)
    by_name = {r.layer: r for r in report}
    assert by_name["b"].warning == "all-zero kernel"
    assert by_name["c"].warning.startswith("cut off from the input")
    assert by_name["fc"].warning == ""  # still reached through `side`
    assert "WARNING b: all-zero kernel" in str(report)
    model.get_layer("side").kernel.assign(np.zeros((1, 1, 8, 16), "float32"))
    assert tsp.sparsity_report(model)[-1].warning.startswith("cut off from the input")
