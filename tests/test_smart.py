"""SMART: the global coupling's exact gradient, temperature schedule, phases, scores (init,
box, weight decay), logs, exact final sparsity, N:M variant, errors, save/resume."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sparse_prune as tsp
from tests.helpers import (
    compile_for_classification,
    masks_of,
    random_data,
    save_and_resume,
    small_cnn,
)
from tf_sparse_prune.algorithms.smart import SMART, temperature_at
from tf_sparse_prune.ops import soft_topk
from tf_sparse_prune.structures import StructureError
from tf_sparse_prune.wrappers import PruneWrapper, collect_wrappers


def _mixed_model():
    """A conv (blocks of 3*3*4*8 = 288 weights) and two Dense layers (blocks of 32)."""
    inp = keras.Input((5, 5, 8))
    x = keras.layers.Conv2D(16, 3, padding="same", name="conv")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(16, activation="tanh", name="fc1")(x)
    out = keras.layers.Dense(8, name="fc2")(x)
    return keras.Model(inp, out)


def _enter_search(pruner, pruned, steps=4, epochs=3):
    wrappers = collect_wrappers(pruned)
    for w in wrappers:
        w.algorithm = pruner
    pruner.on_train_begin(wrappers, {"epochs": epochs, "steps": steps})
    pruner.on_epoch_begin(wrappers, 0)
    return wrappers


# ---- the global coupling -----------------------------------------------------------------
NO_FLOOR = tsp.Floor(min_fraction=0.0, keep_rows=False)


@pytest.mark.parametrize(
    ("tau", "graph", "floor", "jit"),
    [
        (2.0, False, NO_FLOOR, True),
        (0.3, False, NO_FLOOR, True),
        (0.3, True, NO_FLOOR, True),
        (2.0, False, tsp.Floor(min_fraction=0.05, keep_rows=False), True),
        (0.3, True, tsp.Floor(min_fraction=0.05, keep_rows=False), True),
        (0.3, True, tsp.Floor(min_fraction=0.05, keep_rows=False), False),
    ],
)
def test_score_gradients_of_all_layers_equal_soft_topk_on_the_concatenation(tau, graph, floor, jit):
    """With a floor, the reference is soft_topk over the unprotected blocks with the
    protected ones' sizes taken out of the budget, and 1 on the protected ones."""
    model = _mixed_model()
    pruner = SMART(
        0.6,
        tsp.Block(8, 4),
        search_epochs=2,
        initial_temperature=tau,
        floor=floor,
        jit_compile=jit,
    )
    pruned = tsp.prune_model(model, pruner)
    wrappers = _enter_search(pruner, pruned)
    rng = np.random.default_rng(0)
    for w in wrappers:
        w.smart_scores[0].assign(rng.uniform(-1, 1, w.smart_scores[0].shape).astype("float32"))
    pruner.refresh_threshold(wrappers)
    x = rng.standard_normal((6, 5, 5, 8)).astype("float32")
    y = rng.standard_normal((6, 8)).astype("float32")

    scores = [w.smart_scores[0] for w in wrappers]

    def loss_and_grads(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(pruned(x, training=True) - y))
        return loss, tape.gradient(loss, scores)

    if graph:  # one traced step: the wrappers share one coupling term
        loss_and_grads = tf.function(loss_and_grads)
    loss, grads = loss_and_grads(x, y)
    got = np.concatenate([g.numpy().ravel() for g in grads])

    # reference: one soft_topk over all layers' scores, kernels mapped in the plain model
    flat = tf.Variable(np.concatenate([s.numpy().ravel() for s in scores]).astype("float64"))
    sizes = np.concatenate([w.smart_sizes[0].ravel() for w in wrappers])
    kept = np.concatenate(
        [
            floor.protected(w.smart_scores[0].numpy(), w.smart_sizes[0], w.smart_rows[0]).ravel()
            for w in wrappers
        ]
    )
    assert kept.any() == (floor != NO_FLOOR)
    budget = 0.4 * sizes.sum() - sizes[kept].sum()
    assert budget > 0.1 * sizes.sum()  # the floor leaves most of the budget to the solve
    with tf.GradientTape() as tape:
        f = soft_topk(flat, budget, tau, np.where(kept, 0.0, sizes))
        f = tf.cast(tf.where(kept, tf.ones_like(f), f), tf.float32)
        mapping, start = [], 0
        for w in wrappers:
            n = int(np.prod(w.smart_scores[0].shape))
            grid = tf.reshape(f[start : start + n], w.smart_scores[0].shape)
            start += n
            kernel = model.get_layer(w.layer.name).kernel
            mapping.append((kernel, kernel * w.structure.expand(grid, tuple(kernel.shape))))
        with keras.StatelessScope(state_mapping=mapping):
            ref_loss = tf.reduce_sum(tf.square(model(x, training=True) - y))
    want = tape.gradient(ref_loss, flat).numpy()

    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-5)
    assert np.abs(want).max() > 1e-3  # the comparison is not between zeros
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-4 * np.abs(want).max())

    # without the coupling term (t held fixed) the gradient is measurably different
    pruner._coupled = []
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(pruned(x, training=True) - y))
    local = np.concatenate([g.numpy().ravel() for g in tape.gradient(loss, scores)])
    assert np.abs(local - want).max() > 1e-2 * np.abs(want).max()


def test_the_search_core_gives_the_same_floors_threshold_grids_and_gradients_with_xla():
    """XLA fuses the search's per-step math; the values it computes are those of the
    plain TensorFlow graphs (kernels of 1xN rows and unequal rows, both floors)."""
    from tf_sparse_prune.algorithms.smart_core import SearchCore

    shapes = [(3, 3, 8, 32), (1, 1, 32, 16), (40, 10)]
    structures = [tsp.OneByN(16), tsp.OneByN(8), tsp.Block(8, 4, pad=True)]
    sizes = [st.block_sizes(sh) for st, sh in zip(structures, shapes, strict=True)]
    rows = [st.row_ids(sh) for st, sh in zip(structures, shapes, strict=True)]
    floor = tsp.Floor(min_fraction=0.1)
    budget = 0.3 * sum(float(s.sum()) for s in sizes)
    rng = np.random.default_rng(3)
    scores = [tf.constant(rng.uniform(-1, 1, s.shape).astype("float32")) for s in sizes]
    upstream = [tf.constant(rng.standard_normal(s.shape).astype("float32")) for s in sizes]
    tau = tf.constant(0.2, tf.float64)
    results = []
    for jit in (True, False):
        core = SearchCore(floor, sizes, rows, budget, jit_compile=jit)
        kept = core.kept(scores)
        t = core.threshold(scores, kept, tau, tf.constant(0.0, tf.float64))
        with tf.GradientTape() as tape:
            tape.watch(scores)
            grids = core.grids(scores, kept, t, tau)
            loss = tf.add_n([tf.reduce_sum(g * u) for g, u in zip(grids, upstream, strict=True)])
        grads = tape.gradient(loss, scores)
        results.append((kept, float(t), grids, grads))
        # the budget holds: the floor's weights plus the soft mass of the rest
        mass = sum(float(tf.reduce_sum(g * s)) for g, s in zip(grids, sizes, strict=True))
        np.testing.assert_allclose(mass, budget, rtol=1e-4)
    (k1, t1, g1, d1), (k2, t2, g2, d2) = results
    assert all(np.array_equal(a, b) for a, b in zip(k1, k2, strict=True))
    assert any(np.asarray(k).any() for k in k1)  # the floor protects some blocks
    assert t1 == pytest.approx(t2, rel=1e-12, abs=1e-12)
    for a, b in zip(g1, g2, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    for a, b in zip(d1, d2, strict=True):
        assert np.abs(np.asarray(b)).max() > 1e-3
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "structure", [tsp.Block(8, 4), tsp.OneByN(8), tsp.OutputChannel(), tsp.Unstructured()]
)
def test_the_soft_mask_keeps_the_weight_budget_over_all_layers(structure):
    pruner = SMART(0.6, structure, search_epochs=2, initial_temperature=0.5, floor=NO_FLOOR)
    pruned = tsp.prune_model(_mixed_model(), pruner)
    wrappers = _enter_search(pruner, pruned)
    kept = sum(
        float(np.sum(s * f))
        for s, f in zip(pruner._sizes(wrappers), pruner.soft_masks(wrappers), strict=True)
    )
    total = sum(float(s.sum()) for s in pruner._sizes(wrappers))
    assert abs(kept - 0.4 * total) <= 1e-3 * total


def test_scores_start_as_block_norms_over_the_layer_mean():
    model = _mixed_model()
    pruner = SMART(0.5, tsp.Block(8, 4), search_epochs=1)
    pruned = tsp.prune_model(model, pruner)
    wrappers = _enter_search(pruner, pruned)
    for w in wrappers:
        norms = np.linalg.norm(
            np.asarray(tsp.Block(8, 4).to_blocks(w.layer.kernel.numpy())), axis=-1
        )
        np.testing.assert_allclose(w.smart_scores[0].numpy(), norms / norms.mean(), rtol=1e-5)


# ---- schedule, phases, logs, final mask ---------------------------------------------------
def test_temperature_decays_geometrically_from_initial_to_final():
    taus = [temperature_at(s, 5, 10.0, 1e-4) for s in range(5)]
    assert taus[0] == 10.0 and taus[-1] == pytest.approx(1e-4)
    ratios = np.array(taus[1:]) / np.array(taus[:-1])
    np.testing.assert_allclose(ratios, (1e-5) ** 0.25, rtol=1e-9)


class _Record(keras.callbacks.Callback):
    """The phase and temperature each batch trained with (set inside its train step)."""

    def __init__(self):
        super().__init__()
        self.taus = []

    def on_train_batch_end(self, batch, logs=None):
        w = collect_wrappers(self.model)[0]
        self.taus.append((int(w.smart_phase.numpy()), float(w.smart_temperature.numpy())))


def _fit_cnn(pruner, epochs=4, callbacks=(), seed_weights=None, **kw):
    model = small_cnn(channels=(16, 32))
    if seed_weights is not None:
        model.set_weights(seed_weights)
    pruned = tsp.prune_model(model, pruner)
    compile_for_classification(pruned, lr=0.02)
    x, y = random_data(64)
    hist = pruned.fit(
        x,
        y,
        batch_size=16,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=[*pruner.callbacks(), *callbacks],
        **kw,
    )
    return pruned, hist


def test_phases_temperature_per_batch_logs_and_an_exact_final_mask():
    pruner = SMART(0.7, tsp.OneByN(16), pretrain_epochs=1, search_epochs=2)
    record = _Record()
    pruned, hist = _fit_cnn(pruner, epochs=4, callbacks=[record])
    phases = [p for p, _ in record.taus]
    assert phases == [0] * 4 + [1] * 8 + [2] * 4
    search = [t for p, t in record.taus if p == 1]
    np.testing.assert_allclose(search, [temperature_at(s, 8, 10.0, 1e-4) for s in range(8)])
    h = hist.history
    assert h["smart_phase"] == [0.0, 1.0, 2.0, 2.0]
    assert h["smart_temperature"][2] == pytest.approx(1e-4)
    assert h["smart_hard_sparsity"][0] == 0.0
    assert h["smart_hard_sparsity"][1:] == pytest.approx([0.7] * 3, abs=144 / 5040)  # a block
    assert h["smart_soft_hard_gap"][1] > 0.0 and h["smart_soft_hard_gap"][3] == 0.0
    # the final mask: the global weight budget, exact up to one block (16*9 = 144 weights)
    wrappers = collect_wrappers(pruned)
    total = sum(w.layer.kernel.numpy().size for w in wrappers)
    pruned_weights = sum(int(np.sum(w.expanded_mask_numpy() == 0)) for w in wrappers)
    assert abs(pruned_weights - round(0.7 * total)) <= 144
    final = tsp.strip_pruning(pruned)
    for w in wrappers:
        kernel = final.get_layer(w.layer.name).kernel.numpy()
        assert np.array_equal(kernel == 0, w.expanded_mask_numpy() == 0)


class _RootCheck(keras.callbacks.Callback):
    """At each batch's begin, the scores its forward pass will see; at its end, the stored
    threshold and temperature: ``sum(s f) = K`` must hold for those scores."""

    def __init__(self, pruner):
        super().__init__()
        self.pruner = pruner
        self.errors = []

    def on_train_batch_begin(self, batch, logs=None):
        wrappers = collect_wrappers(self.model)
        self.scores = [v.numpy().copy() for w in wrappers for v in w.smart_scores]

    def on_train_batch_end(self, batch, logs=None):
        wrappers = collect_wrappers(self.model)
        w0 = wrappers[0]
        if int(w0.smart_phase.numpy()) != 1:
            return
        t, tau = float(w0.smart_threshold.numpy()), float(w0.smart_temperature.numpy())
        kept = soft = 0.0
        for w, m in zip(wrappers, self.scores, strict=True):
            protected = self.pruner.floor.protected(m, w.smart_sizes[0], w.smart_rows[0])
            f = 0.5 + 0.5 * np.tanh((m.astype(np.float64) + t) / (2 * tau))  # the sigmoid
            f = np.where(protected, 1.0, f)
            soft += float(np.sum(w.smart_sizes[0] * f))
            kept += float(np.sum(w.smart_sizes[0]))
        self.errors.append(abs(soft - (1 - self.pruner.sparsity) * kept) / kept)


def test_each_step_solves_the_threshold_in_the_train_step_for_the_scores_it_sees():
    """No callback runs between batches: the train step itself advances the temperature
    and solves t for the scores its forward pass reads (updated by the previous step)."""
    pruner = SMART(0.6, tsp.OneByN(16), search_epochs=2, initial_temperature=0.5)
    check = _RootCheck(pruner)
    assert "on_train_batch_end" not in vars(SMART)  # nothing runs between batches
    pruned, _ = _fit_cnn(pruner, epochs=2, callbacks=[check])
    assert len(check.errors) == 8
    assert max(check.errors) < 2e-4  # the solver's tolerance, 1e-4 of K
    # the scores did move between batches, so each step's solve had work to do
    w = collect_wrappers(pruned)[0]
    assert not np.array_equal(w.smart_scores[0].numpy(), check.scores[0])


def test_training_under_xla_gives_finite_weights_and_the_final_mask():
    pruner = SMART(0.5, tsp.OneByN(16), search_epochs=1, initial_temperature=1.0)
    model = small_cnn(channels=(16, 32))
    pruned = tsp.prune_model(model, pruner)
    pruned.compile(
        keras.optimizers.SGD(0.01),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    x, y = random_data(32)
    hist = pruned.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=pruner.callbacks())
    assert all(np.all(np.isfinite(v)) for v in pruned.get_weights())
    assert hist.history["smart_phase"] == [2.0, 2.0]
    assert hist.history["smart_hard_sparsity"][-1] == pytest.approx(0.5, abs=144 / 5040)


def test_per_layer_sparsity_is_learned_not_uniform():
    pruner = SMART(0.5, tsp.OneByN(16), search_epochs=1)
    model = small_cnn(channels=(16, 32))
    pruned = tsp.prune_model(model, pruner, layers="all")  # the stem conv0 too
    wrappers = _enter_search(pruner, pruned)
    wrappers[0].smart_scores[0].assign(np.full(wrappers[0].smart_scores[0].shape, 5.0))
    pruner.finalize(wrappers)
    rows = {r.layer: r.sparsity for r in tsp.sparsity_report(pruned) if r.pruned}
    assert rows["conv0"] == 0.0 and max(rows.values()) > 0.5


def test_fine_tune_freezes_the_mask_and_scores_stay_in_the_box():
    pruner = SMART(0.6, tsp.Block(16, 8), search_epochs=1, initial_temperature=0.1)
    record = []

    class Boxed(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            for w in collect_wrappers(self.model):
                record.append(np.abs(w.smart_scores[0].numpy()).max())

    model = small_cnn(channels=(16, 32))
    pruned = tsp.prune_model(model, pruner)
    pruned.compile(keras.optimizers.SGD(50.0), "mse")  # huge steps push scores out
    x = np.random.default_rng(0).standard_normal((32, 12, 12, 3)).astype("float32")
    y = np.random.default_rng(1).standard_normal((32, 10)).astype("float32")
    pruned.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[*pruner.callbacks(), Boxed()])
    assert max(record) <= 10.0
    masks = masks_of(pruned)
    pruned.fit(
        x, y, batch_size=8, epochs=2, initial_epoch=1, verbose=0, callbacks=pruner.callbacks()
    )
    for name, mask in masks_of(pruned).items():
        np.testing.assert_array_equal(mask, masks[name])


def test_mask_scores_are_excluded_from_weight_decay_also_after_reloading(tmp_path):
    pruner = SMART(0.5, tsp.OneByN(16), search_epochs=1)
    model = small_cnn(channels=(16, 32))
    pruned = tsp.prune_model(model, pruner)
    opt = keras.optimizers.SGD(0.05, weight_decay=0.5)  # no momentum: zero gradient, no move
    opt.exclude_from_weight_decay(var_names=["bias"])
    pruned.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = random_data(16)
    pruned.fit(x, y, epochs=2, verbose=0, callbacks=pruner.callbacks())
    w = collect_wrappers(pruned)[0]
    assert not opt._use_weight_decay(w.smart_scores[0])
    assert opt._use_weight_decay(w.layer.kernel)
    assert not opt._use_weight_decay(w.layer.bias)  # the user's own exclusions survive
    assert any(v is w.smart_scores[0] for v in pruned.trainable_weights)
    # the decay really skips them: in fine-tune their gradient is 0, so they must not move
    before = w.smart_scores[0].numpy()
    pruned.fit(x, y, epochs=3, initial_epoch=2, verbose=0, callbacks=pruner.callbacks())
    np.testing.assert_allclose(w.smart_scores[0].numpy(), before, rtol=1e-6)

    pruned.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    loaded.fit(
        x, y, epochs=4, initial_epoch=3, verbose=0, callbacks=tsp.get_pruner(loaded).callbacks()
    )
    lw = collect_wrappers(loaded)[0]
    assert not loaded.optimizer._use_weight_decay(lw.smart_scores[0])
    np.testing.assert_allclose(lw.smart_scores[0].numpy(), before, rtol=1e-6)


# ---- N:M (Algorithm 2) ---------------------------------------------------------------------
def test_nm_variant_has_no_scores_and_ends_with_n_of_every_m():
    pruner = SMART(structure=tsp.NM(2, 4), search_epochs=1, initial_temperature=1.0)
    pruned, hist = _fit_cnn(pruner, epochs=1)  # the mask is final at the end of epoch 0
    for w in collect_wrappers(pruned):
        assert w.smart_scores == []
        grid = w.masks[0].numpy()
        assert np.all(grid.sum(-1) == 2)
        kernel = w.layer.kernel.numpy()
        blocks = np.abs(np.asarray(w.structure.to_blocks(kernel))[..., 0])
        kept = np.where(grid == 1, blocks, np.inf).min(-1)
        dropped = np.where(grid == 0, blocks, -np.inf).max(-1)
        assert np.all(kept >= dropped)  # hard top-2 of |w| per group
    assert hist.history["smart_hard_sparsity"][-1] == pytest.approx(0.5)


def test_nm_soft_mask_keeps_n_per_group_during_the_search():
    pruner = SMART(structure=tsp.NM(2, 4), search_epochs=1, initial_temperature=0.5)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="d")])
    pruned = tsp.prune_model(model, pruner, layers="all")
    wrappers = _enter_search(pruner, pruned)
    (soft,) = pruner.soft_masks(wrappers)
    assert soft.shape == (1, 2, 4, 4)
    np.testing.assert_allclose(soft.sum(-1), 2.0, rtol=1e-4)


def test_nm_needs_input_channels_that_are_a_multiple_of_m():
    layer = keras.layers.Dense(8, name="odd")
    with pytest.raises(StructureError, match=r"C_in must be a multiple of 4, got 6"):
        PruneWrapper(layer, SMART(structure=tsp.NM(2, 4))).build((None, 6))


# ---- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"initial_temperature": 0.0}, r"initial_temperature=0.0 .* > 0"),
        ({"final_temperature": -1.0}, r"final_temperature=-1.0 .* > 0"),
        ({"initial_temperature": 1e-3, "final_temperature": 1e-2}, r"below final_temperature"),
        ({"search_epochs": 0}, r"search_epochs=0 .* >= 1"),
        ({"pretrain_epochs": -1}, r"pretrain_epochs=-1"),
        ({"score_bound": 0}, r"score_bound=0"),
        ({"sparsity": 1.0}, r"sparsity=1.0 is outside \[0, 1\)"),
        ({"jit_compile": "yes"}, r"jit_compile='yes' must be True or False"),
    ],
)
def test_invalid_arguments_are_refused_with_the_parameter_named(kwargs, pattern):
    args = {"sparsity": 0.5, "structure": tsp.OneByN(16), **kwargs}
    with pytest.raises(ValueError, match=pattern):
        SMART(**args)


def test_nm_sparsity_must_match_and_mask_optimizer_must_be_an_optimizer():
    with pytest.raises(ValueError, match=r"fixes the sparsity at 0.5"):
        SMART(0.7, tsp.NM(2, 4))
    with pytest.raises(ValueError, match=r"mask_optimizer=0.1 is not a Keras optimizer"):
        SMART(0.5, mask_optimizer=0.1)


# ---- a separate mask optimizer ------------------------------------------------------------
def _scores(model):
    return [v.numpy().copy() for w in collect_wrappers(model) for v in w.smart_scores]


class _ScoresAtSearchStart(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        w = collect_wrappers(self.model)[0]
        if int(w.smart_phase.numpy()) == 1 and int(w.smart_search_step.numpy()) == 0:
            self.start = _scores(self.model)


def test_mask_optimizer_trains_the_scores_and_the_model_optimizer_the_rest():
    from tf_sparse_prune.algorithms.smart import MaskScoreOptimizer

    initial = small_cnn(channels=(16, 32)).get_weights()
    runs = {}
    for name, mask_lr in (("frozen", 0.0), ("fast", 1.0)):
        pruner = SMART(
            0.6, tsp.OneByN(16), search_epochs=2, mask_optimizer=keras.optimizers.SGD(mask_lr)
        )
        probe = _ScoresAtSearchStart()
        pruned, _ = _fit_cnn(pruner, epochs=2, seed_weights=initial, callbacks=[probe])
        assert isinstance(pruned.optimizer, MaskScoreOptimizer)
        assert float(pruned.optimizer.learning_rate) == pytest.approx(0.02)
        assert int(pruned.optimizer.main.iterations.numpy()) == 8
        assert int(pruned.optimizer.masks.iterations.numpy()) == 8
        runs[name] = (probe.start, _scores(pruned), pruned)
    start, end, frozen = runs["frozen"]
    for a, b in zip(start, end, strict=True):  # a learning rate of 0: the scores stay put
        np.testing.assert_array_equal(a, b)
    start, end, _ = runs["fast"]
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(start, end, strict=True)) > 1e-3
    # the model's optimizer still trained the layers: the first conv kernel moved
    assert not np.array_equal(frozen.get_layer(index=1).get_weights()[0], initial[0])


def test_resume_mid_search_restores_the_mask_optimizer_state(tmp_path):
    from tf_sparse_prune.algorithms.smart import MaskScoreOptimizer

    initial = small_cnn(channels=(16, 32)).get_weights()

    def make():
        return SMART(
            0.6,
            tsp.OneByN(16),
            pretrain_epochs=1,
            search_epochs=2,
            mask_optimizer=keras.optimizers.Adam(0.05),
        )

    straight, _ = _fit_cnn(make(), epochs=4, seed_weights=initial)
    interrupted, _ = _fit_cnn(make(), epochs=4, seed_weights=initial, callbacks=[_StopAfter(2)])
    interrupted.save(tmp_path / "mid.keras")
    loaded = keras.models.load_model(tmp_path / "mid.keras")
    assert isinstance(loaded.optimizer, MaskScoreOptimizer)
    for a, b in zip(interrupted.optimizer.variables, loaded.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    x, y = random_data(64)
    resumed = save_and_resume(interrupted, tmp_path / "mid2.keras", x, y, 4, 2, batch_size=16)
    for a, b in zip(_scores(straight), _scores(resumed), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    for va, vb in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_allclose(vb, va, rtol=1e-4, atol=1e-5)


def test_a_search_longer_than_the_run_is_refused_with_the_numbers():
    pruner = SMART(0.5, tsp.OneByN(16), pretrain_epochs=2, search_epochs=3)
    with pytest.raises(ValueError, match=r"pretrain_epochs=2 \+ search_epochs=3 = 5 .*epochs=4"):
        _fit_cnn(pruner, epochs=4)


# ---- save / resume ---------------------------------------------------------------------------
class _StopAfter(keras.callbacks.Callback):
    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            self.model.stop_training = True


def test_resume_mid_search_matches_an_unbroken_run(tmp_path):
    initial = small_cnn(channels=(16, 32)).get_weights()

    def make():
        return SMART(0.6, tsp.OneByN(16), pretrain_epochs=1, search_epochs=2)

    straight, _ = _fit_cnn(make(), epochs=4, seed_weights=initial)
    interrupted, _ = _fit_cnn(make(), epochs=4, seed_weights=initial, callbacks=[_StopAfter(2)])
    w = collect_wrappers(interrupted)[0]
    assert int(w.smart_phase.numpy()) == 1 and int(w.smart_search_step.numpy()) == 4
    x, y = random_data(64)
    resumed = save_and_resume(interrupted, tmp_path / "mid.keras", x, y, 4, 2, batch_size=16)
    a, b = collect_wrappers(straight), collect_wrappers(resumed)
    for wa, wb in zip(a, b, strict=True):
        np.testing.assert_array_equal(wb.masks[0].numpy(), wa.masks[0].numpy())
        assert float(wb.smart_temperature.numpy()) == float(wa.smart_temperature.numpy())
        assert int(wb.smart_search_step.numpy()) == int(wa.smart_search_step.numpy()) == 8
    for va, vb in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_allclose(vb, va, rtol=1e-4, atol=1e-5)


def test_a_dataset_of_unknown_length_is_refused_when_the_search_starts():
    pruner = SMART(0.5, tsp.OneByN(16), search_epochs=1)
    pruned = tsp.prune_model(small_cnn(channels=(16, 32)), pruner)
    compile_for_classification(pruned)
    x, y = random_data(32)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda a, b: True).batch(16)
    with pytest.raises(ValueError, match=r"steps=None; pass steps_per_epoch"):
        pruned.fit(ds, epochs=1, verbose=0, shuffle=False, callbacks=pruner.callbacks())


def test_steps_per_execution_above_one_is_refused():
    pruner = SMART(0.5, tsp.OneByN(16), search_epochs=1)
    pruned = tsp.prune_model(small_cnn(channels=(16, 32)), pruner)
    pruned.compile("sgd", "mse", steps_per_execution=2)
    x, _ = random_data(32)
    with pytest.raises(ValueError, match=r"steps_per_execution=2; compile it with"):
        pruned.fit(x, np.zeros((32, 10)), epochs=1, verbose=0, callbacks=pruner.callbacks())


def test_eager_training_advances_the_search_once_per_step_as_the_compiled_step_does():
    """run_eagerly=True: every wrapper's forward pass asks for the step's threshold, only
    the first solves; the temperature schedule and the final mask equal the compiled run's."""
    initial = small_cnn(channels=(16, 32)).get_weights()
    results = []
    for eager in (False, True):
        pruner = SMART(0.6, tsp.OneByN(16), search_epochs=2)
        record = _Record()
        model = small_cnn(channels=(16, 32))
        model.set_weights(initial)
        pruned = tsp.prune_model(model, pruner)
        compile_for_classification(pruned, lr=0.02)
        pruned.run_eagerly = eager
        x, y = random_data(64)
        pruned.fit(
            x,
            y,
            batch_size=16,
            epochs=3,
            shuffle=False,
            verbose=0,
            callbacks=[*pruner.callbacks(), record],
        )
        results.append((record.taus, masks_of(pruned)))
    (taus_graph, masks_graph), (taus_eager, masks_eager) = results
    np.testing.assert_allclose([t for _, t in taus_eager], [t for _, t in taus_graph])
    assert [p for p, _ in taus_eager] == [1] * 8 + [2] * 4
    for name, mask in masks_graph.items():
        np.testing.assert_array_equal(masks_eager[name], mask)
