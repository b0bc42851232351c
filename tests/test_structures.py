"""Structures: block grids, exact zero patterns, selection, padding, errors."""

import itertools

import keras
import numpy as np
import pytest

import tf_sparse_prune as tsp
from tests.helpers import built_layer, kernel_view
from tf_sparse_prune.structures import StructureError, select_by_weight_budget

STRUCTURES = {
    "unstructured": tsp.Unstructured(),
    "1x4": tsp.OneByN(4),
    "1x16": tsp.OneByN(16),
    "block8x4": tsp.Block(8, 4),
    "channel": tsp.OutputChannel(),
    "2:4": tsp.NM(2, 4),
}


def expected_owner(structure, t, i, o, grid):
    """Brute force: the grid cell that owns weight (t, i, o) of the canonical view."""
    if isinstance(structure, tsp.Unstructured):
        return None
    if isinstance(structure, tsp.Block):  # includes OneByN
        return grid[o // structure.n_out, i // structure.n_in]
    if isinstance(structure, tsp.OutputChannel):
        return grid[o]
    if isinstance(structure, tsp.NM):
        return grid[t, i // structure.m, o, i % structure.m]
    raise AssertionError(structure)


@pytest.mark.parametrize("case", ["conv2d", "dense", "depthwise"])
@pytest.mark.parametrize("sname", list(STRUCTURES))
def test_expand_gives_the_exact_zero_pattern_of_each_block(case, sname):
    structure = STRUCTURES[sname]
    layer, depthwise = built_layer(case)
    shape = tuple(layer.kernel.shape)
    reason = structure.applies_to(shape, depthwise)
    if reason is not None:
        # Only NM and Block(8,4) cannot apply to depthwise kernels (one input per channel).
        assert depthwise and sname in ("2:4", "block8x4"), reason
        with pytest.raises(StructureError):
            structure.grid_shape(shape, depthwise)
        return
    rng = np.random.default_rng(0)
    grid = (rng.random(structure.grid_shape(shape, depthwise)) > 0.5).astype(np.float32)
    full = np.asarray(structure.expand(grid, shape, depthwise))
    assert full.shape == shape
    view = kernel_view(full, depthwise)
    if isinstance(structure, tsp.Unstructured):
        np.testing.assert_array_equal(full, grid)
        return
    t_, i_, o_ = view.shape
    for t, i, o in itertools.product(range(t_), range(i_), range(o_)):
        assert view[t, i, o] == expected_owner(structure, t, i, o, grid), (t, i, o)


APPLICABLE = [
    (c, s)
    for c in ("conv2d", "dense", "depthwise")
    for s in STRUCTURES
    if not (c == "depthwise" and s in ("2:4", "block8x4"))
]


@pytest.mark.parametrize(("case", "sname"), APPLICABLE)
def test_to_blocks_and_expand_round_trip(case, sname):
    structure = STRUCTURES[sname]
    layer, depthwise = built_layer(case)
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    assert structure.applies_to(kernel.shape, depthwise) is None
    blocks = np.asarray(structure.to_blocks(kernel, depthwise))
    grid = structure.grid_shape(kernel.shape, depthwise)
    assert blocks.shape[:-1] == grid
    # Every weight is in exactly one block.
    np.testing.assert_allclose(np.sort(blocks.reshape(-1)), np.sort(kernel.reshape(-1)))
    # Masking whole blocks then regrouping gives blocks that are entirely zero or untouched.
    rng = np.random.default_rng(1)
    mask = (rng.random(grid) > 0.5).astype(np.float32)
    masked = kernel * np.asarray(structure.expand(mask, kernel.shape, depthwise))
    regrouped = np.asarray(structure.to_blocks(masked, depthwise))
    np.testing.assert_array_equal(regrouped[mask == 0], 0.0)
    np.testing.assert_array_equal(regrouped[mask == 1], blocks[mask == 1])
    np.testing.assert_array_equal(
        structure.block_sizes(kernel.shape, depthwise), np.full(grid, blocks.shape[-1], np.float32)
    )


@pytest.mark.parametrize(
    ("case", "sname"), [*APPLICABLE, ("padded", "1x16"), ("padded", "block8x4")]
)
def test_apply_is_the_kernel_times_the_expanded_mask_in_value_and_gradient(case, sname):
    import tensorflow as tf

    structure = STRUCTURES[sname]
    rng = np.random.default_rng(2)
    if case == "padded":  # 20 output channels, 6 inputs: partial last row and column
        structure = type(structure).from_config({**structure.get_config(), "pad": True})
        kernel, depthwise = rng.standard_normal((3, 3, 6, 20)).astype(np.float32), False
    else:
        layer, depthwise = built_layer(case)
        kernel = keras.ops.convert_to_numpy(layer.kernel)
    grid = rng.random(structure.grid_shape(kernel.shape, depthwise)).astype(np.float32)
    reference = kernel * np.asarray(structure.expand(grid, kernel.shape, depthwise))
    np.testing.assert_array_equal(structure.apply(kernel, grid, depthwise), reference)
    k, g = tf.Variable(kernel), tf.Variable(grid)
    upstream = rng.standard_normal(kernel.shape).astype(np.float32)
    with tf.GradientTape(persistent=True) as tape:
        mine = tf.reduce_sum(structure.apply(k, g, depthwise) * upstream)
        ref = tf.reduce_sum(k * structure.expand(g, kernel.shape, depthwise) * upstream)
    np.testing.assert_allclose(mine.numpy(), ref.numpy(), rtol=1e-5)
    for var in (k, g):
        np.testing.assert_allclose(
            tape.gradient(mine, var), tape.gradient(ref, var), rtol=1e-5, atol=1e-6
        )


def test_tensor_and_numpy_paths_agree():
    structure = tsp.Block(8, 4)
    kernel = np.random.default_rng(0).standard_normal((3, 3, 8, 16)).astype(np.float32)
    mask = (np.random.default_rng(1).random((2, 2)) > 0.5).astype(np.float32)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(
            structure.expand(keras.ops.convert_to_tensor(mask), kernel.shape)
        ),
        structure.expand(mask, kernel.shape),
    )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(structure.to_blocks(keras.ops.convert_to_tensor(kernel))),
        structure.to_blocks(kernel),
    )


def test_one_by_n_pad_makes_a_narrower_last_row():
    s = tsp.OneByN(16, pad=True)
    shape = (3, 3, 5, 24)
    assert s.grid_shape(shape) == (2, 5)
    sizes = s.block_sizes(shape)
    np.testing.assert_array_equal(sizes[0], 16 * 9)
    np.testing.assert_array_equal(sizes[1], 8 * 9)
    grid = np.ones((2, 5), np.float32)
    grid[1, 2] = 0
    full = s.expand(grid, shape)
    assert full.shape == shape
    np.testing.assert_array_equal(full[:, :, 2, 16:], 0)
    assert full.sum() == full.size - 9 * 8


def test_one_by_n_without_pad_names_the_sizes():
    with pytest.raises(StructureError, match=r"C_out to be a multiple of 16, got 24.*pad=True"):
        tsp.OneByN(16).check((3, 3, 8, 24))


def test_nm_requires_c_in_multiple_of_m():
    with pytest.raises(StructureError, match=r"multiple of 4, got 6"):
        tsp.NM(2, 4).check((3, 3, 6, 8))


def test_select_prunes_the_weight_budget_lowest_first():
    scores = np.array([[5.0, 1.0, 3.0, 2.0], [4.0, 0.5, 6.0, 7.0]])
    mask = select_by_weight_budget(scores, 0.5)
    assert mask.sum() == 4
    kept = sorted(scores[mask == 1].tolist())
    assert kept == [4.0, 5.0, 6.0, 7.0]


def test_select_counts_weights_for_unequal_block_sizes():
    scores = np.array([1.0, 2.0, 3.0, 4.0])
    sizes = np.array([10.0, 10.0, 40.0, 40.0])
    mask = select_by_weight_budget(scores, 0.2, sizes)  # 20 of 100 weights
    np.testing.assert_array_equal(mask, [0, 0, 1, 1])


def test_nm_select_keeps_n_of_every_m():
    s = tsp.NM(2, 4)
    rng = np.random.default_rng(0)
    scores = rng.random(s.grid_shape((3, 3, 8, 16)))
    mask = s.select(scores, 0.5)
    np.testing.assert_array_equal(mask.sum(-1), 2)
    top2 = np.argsort(-scores, axis=-1)[..., :2]
    assert np.take_along_axis(mask, top2, -1).all()


def test_nm_ramp_keeps_more_before_the_final_sparsity():
    s = tsp.NM(2, 4)
    scores = np.random.default_rng(0).random(s.grid_shape((1, 1, 8, 4)))
    assert s.select(scores, 0.0).mean() == 1.0
    assert s.select(scores, 0.25).sum(-1).max() == 3
    assert s.select(scores, 0.9).sum(-1).min() == 2  # never below n


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "16"])
def test_one_by_n_rejects_non_positive_or_non_integer_n(bad):
    with pytest.raises(ValueError, match=r"OneByN: n=.* positive integer"):
        tsp.OneByN(bad)


def test_block_and_nm_reject_bad_sizes():
    with pytest.raises(ValueError, match="n_in"):
        tsp.Block(16, 0)
    with pytest.raises(ValueError, match="smaller than m"):
        tsp.NM(4, 4)


def test_reduce_scores_each_block_by_its_norm():
    kernel = np.zeros((3, 3, 2, 8), np.float32)
    kernel[:, :, 1, 4:8] = 2.0  # block (row 1, input 1) of OneByN(4): 36 weights of 2
    kernel[0, 0, 0, 0] = -3.0  # block (row 0, input 0): one weight of -3
    scores = tsp.OneByN(4).reduce(kernel)
    np.testing.assert_allclose(scores, [[3.0, 0.0], [0.0, 12.0]])
    l1 = tsp.OneByN(4).reduce(kernel, scorer=tsp.scoring.L1Norm())
    np.testing.assert_allclose(l1, [[3.0, 0.0], [0.0, 72.0]])
