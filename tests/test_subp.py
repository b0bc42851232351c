"""SUBP: BPAR, uniform 1xN rows, regrowth counts and decays, soft/hard phases, seeds, resume."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sparse_prune as tsp
from tests.helpers import compile_for_classification, masks_of, random_data, small_cnn
from tf_sparse_prune.algorithms.subp import SUBP, uniform_prune_regrow
from tf_sparse_prune.schedules import REGROW_DECAYS, regrow_factor
from tf_sparse_prune.scoring import BPAR, get_scorer
from tf_sparse_prune.structures import OneByN, StructureError
from tf_sparse_prune.wrappers import PruneWrapper, collect_wrappers


# ---- BPAR ------------------------------------------------------------------------------
def bpar_reference(blocks: np.ndarray, balance: float) -> np.ndarray:
    """SPEC §5 Eq. 4, transcribed loop by loop."""
    rows, c, _ = blocks.shape
    out = np.zeros((rows, c))
    for g in range(rows):
        b = blocks[g].astype(np.float64)
        l1 = np.abs(b).sum(axis=1)
        a = l1 / l1.sum() if l1.sum() > 0 else np.zeros(c)
        cos = np.zeros(c)
        for j in range(c):
            for k in range(c):
                nj, nk = np.linalg.norm(b[j]), np.linalg.norm(b[k])
                if nj > 0 and nk > 0:
                    cos[j] += abs(b[j] @ b[k]) / (nj * nk)
        c_hat = cos / cos.sum() if cos.sum() > 0 else np.ones(c)
        c_hat[cos == 0] = 1.0
        out[g] = a - balance * c_hat
    return out


@pytest.mark.parametrize("balance", [1.0, 0.3, 0.0])
def test_bpar_matches_a_direct_numpy_transcription_of_eq4(balance):
    rng = np.random.default_rng(7)
    blocks = rng.standard_normal((4, 9, 12)).astype(np.float32)
    blocks[0, 3] = 0.0  # a zero block
    blocks[1, 5] = 2.5 * blocks[1, 2]  # two parallel blocks (|cos| = 1)
    blocks[2] = 0.0  # an all-zero row
    got = BPAR(balance)(blocks)
    np.testing.assert_allclose(got, bpar_reference(blocks, balance), rtol=1e-5, atol=1e-6)


def test_bpar_gives_the_same_scores_when_its_rows_are_chunked():
    blocks = np.random.default_rng(1).standard_normal((2, 3, 64, 18)).astype(np.float32)
    whole = BPAR(0.7)(blocks)
    chunked = BPAR(0.7)
    chunked.max_elements = 64 * 64  # one row at a time
    assert whole.shape == (2, 3, 64)
    np.testing.assert_allclose(chunked(blocks), whole, rtol=1e-6, atol=1e-7)


def test_bpar_is_a_named_per_layer_scorer_with_clear_errors():
    assert get_scorer("bpar") == BPAR(1.0)
    with pytest.raises(NotImplementedError, match="per layer"):
        BPAR().comparable(np.zeros((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"balance=-1 .* >= 0"):
        BPAR(-1)
    with pytest.raises(ValueError, match=r"\(rows, blocks, block_size\)"):
        BPAR()(np.ones((4, 3)))


# ---- decays, prune and regrow ---------------------------------------------------------------
EXPECTED_DECAY = {
    "cubic": lambda x: 1 - x**3,
    "linear": lambda x: 1 - x,
    "cosine": lambda x: 0.5 * (1 + math.cos(math.pi * x)),
    "constant": lambda x: 1.0,
}


@pytest.mark.parametrize("decay", sorted(EXPECTED_DECAY))
def test_regrow_factor_follows_each_decay_and_the_final_update_regrows_nothing(decay):
    assert sorted(REGROW_DECAYS) == sorted(EXPECTED_DECAY)
    pruner = SUBP(0.8, regrow_start_epoch=2, regrow_end_epoch=10, initial_regrow=0.4,
                  regrow_decay=decay)  # fmt: skip
    for t in range(0, 13):
        x = min(1.0, max(0.0, (t - 2) / 8))
        expected = 0.4 * EXPECTED_DECAY[decay](x)
        assert regrow_factor(decay, 0.4, t, 2, 10) == pytest.approx(expected, abs=1e-12)
        # SUBP's factor is the same before t_e and 0 from t_e on, whatever the decay
        assert pruner.regrow_factor(t) == pytest.approx(expected if t < 10 else 0.0, abs=1e-12)


def test_an_unknown_decay_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"'exp' is unknown; valid: \['constant', 'cosine', "):
        SUBP(0.5, regrow_decay="exp")
    with pytest.raises(ValueError, match=r"valid: \['constant', 'cosine', 'cubic', 'linear'\]"):
        regrow_factor("exp", 0.5, 1, 0, 3)


@pytest.mark.parametrize("mode", ["importance", "random", "none"])
def test_uniform_prune_keeps_each_rows_top_blocks_and_regrows_k_of_its_pruned(mode):
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((6, 37))
    sparsity, regrow = 0.75, 9
    keep = 37 - math.floor(0.75 * 37)  # 10
    mask = uniform_prune_regrow(scores, sparsity, regrow, np.random.default_rng(0), 1.0, mode)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :keep]
    assert np.all(np.take_along_axis(mask, top, axis=1) == 1)
    expected = keep + (0 if mode == "none" else regrow)
    assert mask.sum(axis=1).tolist() == [expected] * 6
    again = uniform_prune_regrow(scores, sparsity, regrow, np.random.default_rng(0), 1.0, mode)
    np.testing.assert_array_equal(mask, again)


def test_importance_sampling_prefers_high_scores_and_random_sampling_does_not():
    scores = np.array([[9.0, 8.0, 3.0, 0.1, 0.2, 2.9]])  # pruned (p=0.67): 3.0, 2.9, 0.2, 0.1

    def picks(mode, tau):
        counts = np.zeros(6)
        for seed in range(300):
            m = uniform_prune_regrow(scores, 0.67, 1, np.random.default_rng(seed), tau, mode)
            counts += m[0]
        return counts[[2, 5, 4, 3]] / 300  # regrow frequency of the pruned blocks, best first

    sharp = picks("importance", 0.001)
    assert sharp[0] > 0.95  # tau -> 0: the best pruned block
    soft = picks("importance", 1.0)
    # P ∝ exp(S_hat / tau) with S_hat the pruned scores L2-normalised
    s = np.array([3.0, 2.9, 0.2, 0.1])
    p = np.exp(s / np.linalg.norm(s))
    np.testing.assert_allclose(soft, p / p.sum(), atol=0.09)
    uniform = picks("random", 1.0)
    np.testing.assert_allclose(uniform, 0.25, atol=0.09)


# ---- training: uniform rows, counts, phases ----------------------------------------------
class _Snapshots(keras.callbacks.Callback):
    """Kernels, masks and phase of every wrapper at each epoch start (where it sits in the list)."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(
            {
                w.layer.name: (
                    w.layer.kernel.numpy().copy(),
                    w.masks[0].numpy().copy(),
                    float(w.subp_soft.numpy()),
                )
                for w in collect_wrappers(self.model)
            }
        )


def _model():
    return small_cnn(channels=(16, 32), dense_units=16)  # conv0 1x3, conv1 2x16, fc 1x32 grids


def _fit(model, pruner, epochs, initial_epoch=0, callbacks_before=(), callbacks_after=()):
    x, y = random_data(64)
    if not model.compiled:
        compile_for_classification(model)
    model.fit(
        x,
        y,
        batch_size=16,
        epochs=epochs,
        initial_epoch=initial_epoch,
        shuffle=False,
        verbose=0,
        callbacks=[*callbacks_before, *pruner.callbacks(), *callbacks_after],
    )
    return model


@pytest.mark.parametrize(
    "regrow,decay,initial",
    [("importance", "cubic", "full"), ("random", "linear", 0.4), ("none", "constant", 0.2)],
)
def test_every_row_keeps_the_same_number_of_blocks_after_each_update(regrow, decay, initial):
    t_s, t_e, p = 1, 5, 0.75
    pruner = SUBP(p, n=16, regrow_start_epoch=t_s, regrow_end_epoch=t_e, initial_regrow=initial,
                  regrow_decay=decay, regrow=regrow)  # fmt: skip
    delta0 = p if initial == "full" else initial
    before, after = _Snapshots(), _Snapshots()
    pruned = _fit(
        tsp.prune_model(_model(), pruner),
        pruner,
        7,
        callbacks_before=[before],
        callbacks_after=[after],
    )
    structure = OneByN(16)
    for t in range(7):
        for name, (kernel, mask_before, _) in before.epochs[t].items():
            _, mask, soft = after.epochs[t][name]
            c = mask.shape[1]
            keep = c - math.floor(p * c)
            counts = mask.sum(axis=1)
            assert np.all(counts == counts[0]), (t, name, counts)  # uniform rows, always
            if t <= t_s:
                assert np.all(mask == 1) and soft == 1.0
                continue
            if t > t_e:
                np.testing.assert_array_equal(mask, mask_before)
                assert soft == 0.0
                continue
            # an update: the top-k of BPAR(W * M) are kept, then K_t regrown per row
            effective = kernel * structure.expand(mask_before, kernel.shape)
            scores = BPAR()(structure.to_blocks(effective))
            top = np.argsort(-scores, axis=1, kind="stable")[:, :keep]
            assert np.all(np.take_along_axis(mask, top, axis=1) == 1), (t, name)
            x = (t - t_s) / (t_e - t_s)
            delta = delta0 * EXPECTED_DECAY[decay](x)
            k = 0 if (t == t_e or regrow == "none") else min(round(delta * c), c - keep)
            assert counts[0] == keep + k, (t, name, counts[0], keep, k)
            assert soft == (0.0 if t == t_e else 1.0)
    # the final mask is hard: masked weights are zero, the stripped model keeps exactly it
    final = tsp.strip_pruning(pruned)
    for w in collect_wrappers(pruned):
        grid = w.masks[0].numpy()
        c = grid.shape[1]
        assert np.all(grid.sum(axis=1) == c - math.floor(p * c))
        kernel = final.get_layer(w.layer.name).kernel.numpy()
        np.testing.assert_array_equal(kernel != 0, structure.expand(grid, kernel.shape) != 0)
    fc = final.get_layer("fc").kernel.numpy()  # Dense: 1x16 along its output units
    assert fc.shape == (32, 16) and set(np.count_nonzero(fc, axis=1)) <= {0, 16}


def test_masked_weights_get_gradients_while_soft_and_none_once_hard():
    pruner = SUBP(0.5, n=16, regrow_start_epoch=0, regrow_end_epoch=2)
    wrapper = PruneWrapper(keras.layers.Dense(32, use_bias=False), pruner)
    x = np.random.default_rng(0).standard_normal((4, 16)).astype("float32")
    r = np.random.default_rng(1).standard_normal((4, 32)).astype("float32")
    wrapper(x)
    grid = (np.random.default_rng(2).random((2, 16)) < 0.5).astype("float32")
    wrapper.set_mask(0, grid)
    mask = OneByN(16).expand(grid, (16, 32))
    kernel = wrapper.layer.kernel
    dense_grad = x.T @ r

    def grads():
        with tf.GradientTape(persistent=True) as tape:
            y = wrapper(x, training=True)
            objective = tf.reduce_sum(y * r)
            extra = pruner.loss(wrapper)
        np.testing.assert_allclose(y, x @ (kernel.numpy() * mask), rtol=1e-6)
        return tape.gradient(objective, kernel).numpy(), extra, tape.gradient(extra, kernel)

    g, extra, g_decay = grads()  # soft: straight-through, every weight gets its gradient
    np.testing.assert_allclose(g, dense_grad, rtol=1e-5, atol=1e-6)
    w = kernel.numpy()
    assert float(extra) == pytest.approx(1e-4 * np.sum((1 - mask) * w**2), rel=1e-5)
    np.testing.assert_allclose(g_decay.numpy(), 2e-4 * (1 - mask) * w, rtol=1e-5, atol=1e-12)
    assert [float(v) for v in wrapper.losses] == pytest.approx([float(extra)])

    wrapper.subp_soft.assign(0.0)  # hard: masked weights get exactly zero gradient, no decay
    g, extra, _ = grads()
    np.testing.assert_allclose(g, dense_grad * mask, rtol=1e-5, atol=1e-6)
    assert np.all(g[mask == 0] == 0) and float(extra) == 0.0


def test_fit_applies_the_decay_to_masked_weights_only_while_soft():
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, use_bias=False)])
    pruner = SUBP(0.5, regrow_start_epoch=0, regrow_end_epoch=5, masked_decay=0.5)
    wrapper = collect_wrappers(tsp.prune_model(model, pruner, layers="all"))[0]
    pruned = keras.Sequential([keras.Input((16,)), wrapper])
    grid = np.zeros((2, 16), np.float32)
    grid[:, :8] = 1
    wrapper.set_mask(0, grid)
    mask = OneByN(16).expand(grid, (16, 32))
    pruned.compile(keras.optimizers.SGD(1.0), "mse")
    zeros_in, zeros_out = np.zeros((8, 16)), np.zeros((8, 32))  # the data gradient is zero
    before = wrapper.layer.kernel.numpy().copy()
    pruned.fit(zeros_in, zeros_out, batch_size=8, epochs=1, verbose=0)  # one SGD step, soft
    after = wrapper.layer.kernel.numpy()
    np.testing.assert_allclose(after[mask == 0], 0.5 * before[mask == 0], rtol=1e-6)
    np.testing.assert_array_equal(after[mask == 1], before[mask == 1])
    wrapper.subp_soft.assign(0.0)
    pruned.fit(zeros_in, zeros_out, batch_size=8, epochs=1, verbose=0)  # hard: no decay
    np.testing.assert_array_equal(wrapper.layer.kernel.numpy(), after)


# ---- seeds and resume ------------------------------------------------------------------
def _run(seed, initial, epochs=3):
    model = _model()
    model.set_weights(initial)
    pruner = SUBP(0.75, n=16, regrow_start_epoch=0, regrow_end_epoch=4, seed=seed)
    snaps = _Snapshots()
    with pytest.warns(UserWarning, match="before the final mask"):
        _fit(tsp.prune_model(model, pruner), pruner, epochs, callbacks_after=[snaps])
    return [{k: v[1] for k, v in e.items()} for e in snaps.epochs]


def test_the_same_seed_gives_identical_masks_and_another_seed_other_ones():
    initial = _model().get_weights()
    first, second, other = _run(0, initial), _run(0, initial), _run(5, initial)
    for a, b in zip(first, second, strict=True):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
    assert any(not np.array_equal(a[n], b[n]) for a, b in zip(first, other, strict=True) for n in a)


def test_resume_from_a_saved_model_gives_the_same_masks_and_weights_as_an_unbroken_run(
    tmp_path,
):
    initial = _model().get_weights()

    def make():
        model = _model()
        model.set_weights(initial)
        pruner = SUBP(0.75, n=16, regrow_start_epoch=0, regrow_end_epoch=3, seed=11)
        return tsp.prune_model(model, pruner), pruner

    straight, pruner = make()
    _fit(straight, pruner, 5)

    first, pruner2 = make()
    with pytest.warns(UserWarning, match="before the final mask"):
        _fit(first, pruner2, 2)  # stops in the soft phase, after one regrowth
    first.save(tmp_path / "mid.keras")
    resumed = keras.models.load_model(tmp_path / "mid.keras")
    assert int(collect_wrappers(resumed)[0].subp_epoch.numpy()) == 2
    _fit(resumed, tsp.get_pruner(resumed), 5, initial_epoch=2)

    for w in collect_wrappers(resumed):
        assert int(w.subp_epoch.numpy()) == 5 and float(w.subp_soft.numpy()) == 0.0
    for name, mask in masks_of(straight).items():
        np.testing.assert_array_equal(masks_of(resumed)[name], mask)
    for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ---- layers, errors, config -----------------------------------------------------------
def test_depthwise_layers_stay_dense_and_the_report_says_why():
    inp = keras.Input((8, 8, 16))
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(inp)
    x = keras.layers.Conv2D(32, 1, name="pw")(x)
    model = keras.Model(inp, x)
    pruned = tsp.prune_model(model, SUBP(0.5), layers="all")
    rows = {r.layer: r for r in tsp.sparsity_report(pruned)}
    assert rows["pw"].pruned and rows["pw"].structure == "1x16"
    assert not rows["dw"].pruned and "SUBP leaves DepthwiseConv2D dense" in rows["dw"].reason


def test_n_must_divide_the_output_channels_unless_pad_is_true():
    with pytest.raises(StructureError, match=r"multiple of 16, got 24.*pad=True"):
        PruneWrapper(keras.layers.Conv2D(24, 3), SUBP(0.5, n=16)).build((None, 6, 6, 8))
    padded = PruneWrapper(keras.layers.Conv2D(24, 3), SUBP(0.5, n=16, pad=True))
    padded.build((None, 6, 6, 8))
    assert tuple(padded.masks[0].shape) == (2, 8)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"regrow_start_epoch": 3, "regrow_end_epoch": 3}, r"regrow_end_epoch=3 must be larger"),
        ({"regrow_start_epoch": 4, "regrow_end_epoch": 2}, r"\(t_e > t_s\)"),
        ({"initial_regrow": 0.0}, r"initial_regrow=0.0 is outside \(0, sparsity=0.5\]"),
        ({"initial_regrow": 0.6}, r"initial_regrow=0.6 is outside \(0, sparsity=0.5\]"),
        ({"initial_regrow": "half"}, r"initial_regrow='half' .* 'full'"),
        ({"regrow_decay": "step"}, r"regrow_decay='step' is unknown; valid: \["),
        ({"regrow": "gradient"}, r"regrow='gradient' is unknown; valid: \['importance'"),
        ({"sampling_temperature": 0}, r"sampling_temperature=0 .* > 0"),
        ({"criterion": "l3"}, r"criterion='l3' is unknown"),
        ({"seed": -1}, r"seed=-1"),
        ({"regrow_start_epoch": -1}, r"regrow_start_epoch=-1 .* >= 0"),
        ({"criterion": BPAR(0.5), "balance": 2.0}, r"balance=2.0 differs"),
    ],
)
def test_invalid_arguments_raise_errors_naming_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SUBP(0.5, **kwargs)


def test_regrow_end_none_is_60_percent_of_the_fit_epochs():
    pruner = SUBP(0.5)
    assert pruner.resolve_end_epoch({"epochs": 10}) == 6
    assert pruner.resolve_end_epoch({"epochs": 8}) == 5
    with pytest.raises(ValueError, match=r"t_e=1, not after regrow_start_epoch=1"):
        pruner.resolve_end_epoch({"epochs": 2})
    assert SUBP(0.5, regrow_end_epoch=3).resolve_end_epoch({"epochs": 100}) == 3


def test_config_round_trips_exactly():
    pruner = SUBP(0.6, n=8, criterion="bpar", balance=0.5, sampling_temperature=2.0,
                  regrow_start_epoch=2, regrow_end_epoch=9, initial_regrow=0.3,
                  regrow_decay="cosine", regrow="random", seed=42, pad=True)  # fmt: skip
    config = pruner.get_config()
    clone = SUBP.from_config(config)
    assert clone.get_config() == config and clone.same_config(pruner)
    assert clone.scorer == BPAR(0.5) and clone.structure == OneByN(8, pad=True)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(pruner))
    assert type(again) is SUBP and again.get_config() == config
    l1 = SUBP(0.5, criterion="l1")
    assert SUBP.from_config(l1.get_config()).get_config() == l1.get_config()


def test_score_on_weights_lets_softly_pruned_blocks_compete_again():
    """Algorithm 1 line 9: with score_on="weights" a pruned block whose trained weights
    grew large is kept at the next update; with "masked" it scores as a zero block."""
    from tf_sparse_prune.wrappers import collect_wrappers

    kept = {}
    for score_on in ("masked", "weights"):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, use_bias=False)])
        pruner = SUBP(
            0.5,
            n=2,
            criterion="l2",
            regrow="none",
            regrow_start_epoch=0,
            regrow_end_epoch=5,
            score_on=score_on,
        )
        pruned = tsp.prune_model(model, pruner, layers="all")
        (w,) = collect_wrappers(pruned)
        w.layer.kernel.assign(
            np.array([[1.0, 1.0], [0.9, 0.9], [0.1, 0.1], [0.2, 0.2]], np.float32)
        )
        pruner._end = 5
        pruner.update_masks([w], 1)  # keeps inputs 0 and 1
        np.testing.assert_array_equal(w.masks[0].numpy(), [[1, 1, 0, 0]])
        # soft phase: the pruned input 3 trained to a large weight meanwhile
        w.layer.kernel.assign(
            np.array([[1.0, 1.0], [0.9, 0.9], [0.1, 0.1], [5.0, 5.0]], np.float32)
        )
        pruner.update_masks([w], 2)
        kept[score_on] = w.masks[0].numpy().tolist()
    assert kept["masked"] == [[1, 1, 0, 0]]
    assert kept["weights"] == [[1, 0, 0, 1]]
