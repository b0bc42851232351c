"""OCSPruner (SPEC §6): saliency, partition, stability, penalty, regulariser, one cycle."""

import math

import keras
import numpy as np
import pytest

import tf_sparse_prune as tsp
from tests.helpers import compile_for_classification, random_data, small_cnn
from tf_sparse_prune.algorithms.ocspruner import (
    OCSPruner,
    _Regularizer,
    _slices,
    auto_start,
    group_saliency,
    jaccard,
    kept_channels,
    max_removal,
    partition,
    penalty,
    stability,
)
from tf_sparse_prune.graph import DependencyGraph, count_flops, remove_channels
from tf_sparse_prune.models import fashion_cnn, resnet20

L = keras.layers


# ---------------------------------------------------------------- stability (Eq. 3-5)


def test_jaccard_averages_per_group_intersection_over_union():
    a = {0: {0, 1, 2, 3}, 1: {0, 1}, 2: {5}}
    b = {0: {2, 3, 4}, 1: {0, 1}, 2: {6}}
    # group 0: |{2,3}| / |{0..4}| = 2/5; group 1: 1; group 2: 0
    assert jaccard(a, b) == pytest.approx((2 / 5 + 1 + 0) / 3)
    assert jaccard(a, a) == 1.0
    with pytest.raises(ValueError, match="different groups"):
        jaccard(a, {0: {0}})


def test_stability_averages_lagged_jaccards_over_the_window():
    sets = [{0}, {1}, {0, 1}, {1, 2}, {1}, {1, 2}]  # one group, epochs 0..5
    history = [{0: s} for s in sets]
    # lag 2, window 3 at t = 5: J(M3, M5) + J(M2, M4) + J(M1, M3)
    expected = (1.0 + 1 / 2 + 1 / 2) / 3
    assert stability(history, lag=2, window=3) == pytest.approx(expected)
    # lag 1, window 2 at t = 5: J(M4, M5) + J(M3, M4)
    assert stability(history, lag=1, window=2) == pytest.approx((1 / 2 + 1 / 2) / 2)


def test_stability_is_undefined_until_lag_plus_window_epochs():
    history = [{0: {0}}] * 4  # t = 3
    assert stability(history, lag=2, window=3) is None  # needs t >= 4
    assert stability([*history, {0: {0}}], lag=2, window=3) == 1.0


def test_auto_start_is_the_first_epoch_whose_gain_over_the_window_is_at_most_tau():
    curve = [None, None, 0.50, 0.70, 0.80, 0.86, 0.87, 0.87005]
    # t=5: 0.86-0.50; t=6: 0.87-0.70; t=7: 0.87005-0.80 (window 3) -> none below 1e-4
    assert auto_start(curve, window=3, tau=1e-4) is None
    # window 1: t=7: 0.87005 - 0.87 = 5e-5 <= 1e-4
    assert auto_start(curve, window=1, tau=1e-4) == 7
    # a drop also counts (the difference is negative)
    assert auto_start([0.9, 0.8], window=1, tau=1e-4) == 1


# ---------------------------------------------------------------- penalty (Eq. 7)


def test_penalty_follows_the_recurrence_of_eq7():
    lam0, delta = 1e-4, 1e-4
    # interval 1: lambda_t = lambda_{t-1} + delta * (t - t_sl)
    got = [penalty(t, 3, lam0, delta, 1) for t in range(0, 8)]
    expected = [0, 0, 0, 1e-4, 2e-4, 4e-4, 7e-4, 11e-4]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    # interval 2: increments floor(u / 2) = 0, 1, 1, 2, 2
    got = [penalty(t, 0, lam0, delta, 2) for t in range(0, 6)]
    np.testing.assert_allclose(got, [1e-4, 1e-4, 2e-4, 3e-4, 5e-4, 7e-4], rtol=1e-12)
    assert penalty(10, None, lam0, delta, 1) == 0.0
    # the closed form
    t, t_sl, dt = 12, 4, 3
    closed = lam0 + delta * sum(u // dt for u in range(1, t - t_sl + 1))
    assert penalty(t, t_sl, lam0, delta, dt) == pytest.approx(closed)


# ---------------------------------------------------------------- saliency and partition


def test_group_saliency_averages_normalized_slice_norms_including_batchnorm():
    inputs = keras.Input((4, 4, 2))
    x = L.Conv2D(3, 1, use_bias=False, name="conv")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(2, use_bias=False, name="fc")(x))
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((1, 1, 2, 3))
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    fc = rng.standard_normal((3, 2))
    model.get_layer("conv").set_weights([kernel])
    model.get_layer("bn").set_weights([gamma, beta, rng.standard_normal(3), np.ones(3) * 9])
    model.get_layer("fc").set_weights([fc])
    graph = DependencyGraph(model)
    got = group_saliency(model, graph)[graph.group_of("conv").id]
    for k in range(3):
        terms = [
            np.linalg.norm(kernel[..., k]) / math.sqrt(2),
            abs(gamma[k]),
            abs(beta[k]),
            np.linalg.norm(fc[k]) / math.sqrt(2),
        ]  # moving statistics are not parameters
        assert got[k] == pytest.approx(sum(terms) / 4)


def _ranked_saliency(graph, seed=0):
    rng = np.random.default_rng(seed)
    values = rng.permutation(sum(g.size for g in graph.prunable_groups)).astype(float)
    out, start = {}, 0
    for g in graph.prunable_groups:
        out[g.id] = values[start : start + g.size]
        start += g.size
    return out


@pytest.mark.parametrize("target", [0.3, 0.5, 0.7])
def test_partition_reaches_the_flops_target_with_the_lowest_ranked_channels(target):
    graph = DependencyGraph(resnet20())
    saliency = _ranked_saliency(graph)
    removal = partition(saliency, graph, target)
    full = graph.flops_after({})
    assert graph.flops_after(removal) <= (1 - target) * full
    # a threshold: every removed channel ranks below every kept one of an uncapped group
    caps = {g.id: math.floor(0.75 * g.size) for g in graph.prunable_groups}
    removed = [saliency[gid][k] for gid, ks in removal.items() for k in ks]
    kept_uncapped = [
        saliency[g.id][k]
        for g in graph.prunable_groups
        if len(removal.get(g.id, [])) < caps[g.id]
        for k in set(range(g.size)) - set(removal.get(g.id, []))
    ]
    assert max(removed) < min(kept_uncapped)
    # the shortest such prefix: putting back the highest-ranked removed channel misses it
    top = max((saliency[gid][k], gid, k) for gid, ks in removal.items() for k in ks)
    fewer = {gid: [k for k in ks if (gid, k) != top[1:]] for gid, ks in removal.items()}
    assert graph.flops_after({g: ks for g, ks in fewer.items() if ks}) > (1 - target) * full


def test_partition_never_removes_more_than_max_layer_prune_of_a_group():
    graph = DependencyGraph(fashion_cnn())
    # the last conv's channels rank lowest: without the cap it would be emptied first
    saliency = {g.id: np.ones(g.size) for g in graph.prunable_groups}
    last = graph.group_of("conv5").id
    saliency[last] = np.zeros(graph.groups[last].size)
    removal = partition(saliency, graph, 0.5, max_layer_prune=0.5)
    for g in graph.prunable_groups:
        assert len(removal.get(g.id, [])) <= g.size // 2
    assert len(removal[last]) == graph.groups[last].size // 2


def test_unreachable_target_reports_the_largest_reachable_reduction():
    graph = DependencyGraph(fashion_cnn())
    saliency = group_saliency(graph.model, graph)
    with pytest.raises(ValueError, match=r"largest reachable reduction is 0\.\d{4}") as info:
        partition(saliency, graph, 0.9, max_layer_prune=0.25)
    best = float(str(info.value).split("reduction is ")[1][:6])
    assert 0 < best < 0.9
    partition(saliency, graph, best - 0.01, max_layer_prune=0.25)  # just below it works


def _concat_add(widths=(8, 8), name="concat_add"):
    """Convs ``src0``, ``src1``, ... concatenated, added to conv ``c``, then ``d``, GAP, Dense."""
    inputs = keras.Input((8, 8, 3))
    sources = [L.Conv2D(w, 3, padding="same", name=f"src{i}")(inputs) for i, w in enumerate(widths)]
    joined = L.Concatenate(name="cat")(sources)
    wide = L.Conv2D(sum(widths), 3, padding="same", name="c")(inputs)
    x = L.Add(name="add")([joined, wide])
    x = L.Conv2D(16, 3, padding="same", name="d")(L.ReLU(name="relu")(x))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Dense(10, name="fc")(x), name=name)


def _crossed_concats():
    """One group of 16 channels whose sources overlap without nesting (4 + 12 vs 12 + 4)."""
    inputs = keras.Input((8, 8, 3))
    widths = (("a", 4), ("b", 12), ("p", 12), ("q", 4))
    convs = {n: L.Conv2D(w, 3, padding="same", name=n) for n, w in widths}
    left = L.Concatenate(name="left")([convs["a"](inputs), convs["b"](inputs)])
    right = L.Concatenate(name="right")([convs["p"](inputs), convs["q"](inputs)])
    x = L.Conv2D(16, 3, padding="same", name="d")(L.Add(name="add")([left, right]))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Dense(10, name="fc")(x), name="crossed_concats")


def _assert_every_layer_keeps_its_share(graph, removal, max_layer_prune=0.75):
    """No weight slice loses more than the cap of the channels it holds, nor all of them."""
    for g in graph.prunable_groups:
        chosen = set(removal.get(g.id, []))
        for s in g.slices:
            held = {k for k, positions in enumerate(s.positions) if positions}
            lost = len(held & chosen)
            cap = min(len(held) - 1, math.floor(max_layer_prune * len(held)))
            assert lost <= cap, (s.layer, s.weight, lost, len(held))


@pytest.mark.parametrize("widths", [(8, 8), (3, 13), (1, 15), (2, 6, 8)])
def test_ocspruner_keeps_channels_of_every_concat_source(widths):
    model = _concat_add(widths)
    graph = DependencyGraph(model)
    joined = graph.group_of("src0")
    assert set(joined.producers) == {*(f"src{i}" for i in range(len(widths))), "c"}
    # the first source's channels rank lowest: a group-wide cap alone would empty it
    saliency = {g.id: np.ones(g.size) for g in graph.prunable_groups}
    saliency[joined.id] = np.linspace(0.0, 0.5, joined.size)
    removal = partition(saliency, graph, 0.5)
    _assert_every_layer_keeps_its_share(graph, removal)
    assert graph.flops_after(removal) <= 0.5 * graph.flops_after({})
    small = remove_channels(model, removal, graph=graph)
    # the lowest-ranked source stops at its own cap; the target is met from the others
    first = widths[0]
    assert small.get_layer("src0").filters == first - min(first - 1, math.floor(0.75 * first))
    assert small.output_shape == model.output_shape


def test_max_removal_takes_each_concat_source_to_its_own_cap():
    graph = DependencyGraph(_concat_add((3, 13)))
    removal = max_removal(graph, 0.75)
    joined = graph.group_of("src0").id
    # src0 holds channels 0-2 (cap 2), src1 channels 3-15 (cap 9): 11 of 16, not the group's 12
    assert removal[joined] == [0, 1, *range(3, 12)]
    _assert_every_layer_keeps_its_share(graph, removal)
    graph.flops_after(removal)  # a valid removal: no layer is left without channels


@pytest.mark.parametrize("seed", range(4))
def test_partition_caps_each_layer_where_concatenated_sources_overlap(seed):
    model = _crossed_concats()
    graph = DependencyGraph(model)
    group = graph.group_of("a")
    assert set(group.producers) == {"a", "b", "p", "q"} and group.size == 16
    saliency = _ranked_saliency(graph, seed)
    for target in (0.3, 0.6):
        removal = partition(saliency, graph, target, max_layer_prune=0.75)
        _assert_every_layer_keeps_its_share(graph, removal)
        assert graph.flops_after(removal) <= (1 - target) * graph.flops_after({})
    remove_channels(model, removal, graph=graph)


def test_ocspruner_fit_prunes_a_model_whose_concat_meets_an_add():
    model = compile_for_classification(_concat_add((4, 12)), lr=0.01)
    x, y = random_data(32, input_shape=(8, 8, 3))
    pruner = OCSPruner(0.5, 1, 1, start_epoch=0, last_search_epoch=0)
    small, history = pruner.fit(model, x, y, epochs=2, batch_size=16, verbose=0)
    _assert_every_layer_keeps_its_share(DependencyGraph(model), history["removal"])
    assert history["flops_after"] <= 0.5 * history["flops_before"]
    assert small.get_layer("src0").filters >= 1 and small.get_layer("src1").filters >= 3
    assert len(history["finetune"]["loss"]) == 1


# ---------------------------------------------------------------- regulariser (Eq. 8-9)


def test_regularizer_takes_the_group_lasso_step_then_shrinks_the_prune_set():
    inputs = keras.Input((4,))
    x = L.Dense(3, name="a")(inputs)
    x = L.Dense(3, name="b")(x)
    model = keras.Model(inputs, L.Dense(2, name="c")(x))
    rng = np.random.default_rng(0)
    model.set_weights([rng.standard_normal(w.shape) for w in model.get_weights()])
    before = {n: [w.copy() for w in model.get_layer(n).get_weights()] for n in "abc"}
    graph = DependencyGraph(model)
    ga, gb = graph.group_of("a").id, graph.group_of("b").id
    lam, lr = 0.5, 0.1
    eta = lam * lr
    _Regularizer(_slices(model, graph), {ga: [1], gb: [0]}).apply(lam, lr)

    (ak, ab), (bk, bb), (ck, cb) = (before[n] for n in "abc")
    exp_ak, exp_ab, exp_bk, exp_bb, exp_ck = ak.copy(), ab.copy(), bk.copy(), bb.copy(), ck.copy()
    n_a = np.linalg.norm(ak[:, 1])  # kernel column of channel a1
    exp_ak[:, 1] *= (1 - eta / n_a) * (1 - eta)
    exp_ab[1] *= (1 - eta / abs(ab[1])) * (1 - eta)
    row, col = np.linalg.norm(bk[1, :]), np.linalg.norm(bk[:, 0])  # a1's input row, b0's filter
    for j in range(3):
        for i in range(3):
            inv = (1 / row if i == 1 else 0) + (1 / col if j == 0 else 0)
            if inv:
                exp_bk[i, j] = bk[i, j] * (1 - eta * inv) * (1 - eta)
    exp_bb[0] *= (1 - eta / abs(bb[0])) * (1 - eta)
    exp_ck[0, :] *= (1 - eta / np.linalg.norm(ck[0, :])) * (1 - eta)  # b0's input row
    got = {n: model.get_layer(n).get_weights() for n in "abc"}
    for g, e in zip(
        [*got["a"], *got["b"], *got["c"]], [exp_ak, exp_ab, exp_bk, exp_bb, exp_ck, cb], strict=True
    ):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


def test_regularizer_after_an_sgd_step_approximates_the_loss_term_to_second_order():
    import tensorflow as tf

    inputs = keras.Input((6,))
    x = L.BatchNormalization(name="bn0")(L.Dense(5, name="a")(inputs))
    model = keras.Model(inputs, L.Dense(3, name="b")(x))
    graph = DependencyGraph(model)
    gid = graph.group_of("a").id
    removal = {gid: [0, 3]}
    rng = np.random.default_rng(1)
    xb = rng.standard_normal((16, 6)).astype("float32")
    yb = rng.standard_normal((16, 3)).astype("float32")
    for v in model.trainable_variables:  # no zero biases: ||w|| of a bias entry is |b|
        v.assign(rng.choice([-1, 1], v.shape) * rng.uniform(0.5, 1.5, v.shape))
    w0 = [v.numpy().copy() for v in model.trainable_variables]
    lam, lr = 0.05, 0.01

    def data_loss():
        return tf.reduce_mean(tf.square(model(xb, training=False) - yb))

    def group_term():  # sum over the prune set's slices of ||w||_2
        total = 0.0
        for s in graph.groups[gid].slices:
            var = next(w for w in model.get_layer(s.layer).weights if w.name == s.weight)
            if var.trainable:
                for k in removal[gid]:
                    total += tf.norm(tf.gather(var.value, list(s.positions[k]), axis=s.axis))
        return total

    # ours: a plain SGD step on the data loss, then the regulariser
    with tf.GradientTape() as tape:
        loss = data_loss()
    grads = tape.gradient(loss, model.trainable_variables)
    for v, g in zip(model.trainable_variables, grads, strict=True):
        v.assign_sub(lr * g)
    _Regularizer(_slices(model, graph), removal).apply(lam, lr)
    ours = [v.numpy() for v in model.trainable_variables]

    # reference: SGD on loss + lambda * sum ||w||, then Eq. 9's shrink of the prune set
    for v, w in zip(model.trainable_variables, w0, strict=True):
        v.assign(w)
    with tf.GradientTape() as tape:
        loss = data_loss() + lam * group_term()
    grads = tape.gradient(loss, model.trainable_variables)
    shrink = {"a/kernel": (1, [0, 3]), "a/bias": (0, [0, 3]), "bn0/gamma": (0, [0, 3])}
    shrink |= {"bn0/beta": (0, [0, 3]), "b/kernel": (0, [0, 3])}
    for v, g in zip(model.trainable_variables, grads, strict=True):
        new = v.numpy() - lr * g.numpy()
        if v.path in shrink:
            axis, rows = shrink[v.path]
            index = [slice(None)] * new.ndim
            index[axis] = rows
            new[tuple(index)] *= 1 - lam * lr
        v.assign(new)
    reference = [v.numpy() for v in model.trainable_variables]

    # the regulariser moves the prune set's entries by about lr * lam * (1 + |w|) ~ 1e-3;
    # the two orders of operations differ by O(lr^2) terms, 20x less
    for a, b in zip(ours, reference, strict=True):
        np.testing.assert_allclose(a, b, atol=5e-5)


def test_regularizer_step_never_flips_a_sign():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Dense(2, name="o")(L.Dense(3, use_bias=False, name="a")(inputs)))
    graph = DependencyGraph(model)
    _Regularizer(_slices(model, graph), {graph.group_of("a").id: [0]}).apply(100.0, 1.0)
    kernel = model.get_layer("a").kernel.numpy()
    assert np.all(kernel[:, 0] == 0) and np.all(kernel[:, 1:] != 0)


def _regularized_reference(slices, removal, eta):
    """Eq. 8-9 channel by channel in plain numpy: ``{variable id: updated value}``."""
    values = {id(s.var): s.var.numpy().astype("float64") for s in slices}
    scale = {key: np.zeros_like(v) for key, v in values.items()}
    covered = {key: np.zeros_like(v) for key, v in values.items()}
    for s in slices:
        value = np.moveaxis(values[id(s.var)], s.axis, 0)
        for k in removal.get(s.group, []):
            positions = np.flatnonzero(s.channel_of == k)
            norm = np.sqrt(np.sum(value[positions] ** 2))
            for target, add in ((scale, 1.0 / norm if norm > 0 else 0.0), (covered, None)):
                view = np.moveaxis(target[id(s.var)], s.axis, 0)
                if add is None:
                    view[positions] = 1.0
                else:
                    view[positions] += add
    return {
        key: v * np.maximum(0.0, 1 - eta * scale[key]) * (1 - eta * covered[key])
        for key, v in values.items()
    }


def test_regularizer_matches_a_channel_by_channel_reference_where_a_concat_meets_an_add():
    model = _concat_add((4, 12))
    rng = np.random.default_rng(5)
    model.set_weights([rng.standard_normal(w.shape) for w in model.get_weights()])
    graph = DependencyGraph(model)
    slices = _slices(model, graph)
    group = graph.group_of("src0").id  # src0 holds channels 0-3 of it, src1 4-15, c all 16
    removal = {group: [1, 5, 15], graph.group_of("d").id: [0, 7]}
    lam, lr = 3.0, 0.1
    expected = _regularized_reference(slices, removal, lam * lr)
    _Regularizer(slices, removal).apply(lam, lr)
    for s in slices:
        np.testing.assert_allclose(s.var.numpy(), expected[id(s.var)], rtol=1e-5, atol=1e-6)
    assert any(not np.array_equal(s.channel_of, np.arange(len(s.counts))) for s in slices)


def test_regularizer_traces_no_constant_larger_than_the_model():
    import tensorflow as tf

    model = _concat_add((4, 12))
    graph = DependencyGraph(model)
    regularizer = _Regularizer(_slices(model, graph), {graph.group_of("src0").id: [0]})
    traced = regularizer._update.get_concrete_function(np.float32(0.1), regularizer._pruned)
    constants = [
        tf.make_ndarray(node.attr["value"].tensor).nbytes
        for node in traced.graph.as_graph_def().node
        if node.op == "Const"
    ]
    weights = sum(int(np.prod(w.shape)) for w in model.weights)
    # a per-slice (positions, channels) one-hot matrix would be positions x channels each
    assert sum(constants) < 4 * weights


@pytest.mark.parametrize("loss_term, shrink", [(True, False), (False, True)])
def test_regularizer_ablation_applies_only_the_switched_on_part(loss_term, shrink):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Dense(2, name="o")(L.Dense(3, use_bias=False, name="a")(inputs)))
    rng = np.random.default_rng(3)
    model.set_weights([rng.standard_normal(w.shape) for w in model.get_weights()])
    graph = DependencyGraph(model)
    before = model.get_layer("a").kernel.numpy().copy()
    lam, lr = 0.5, 0.1
    eta = lam * lr
    removal = {graph.group_of("a").id: [2]}
    _Regularizer(_slices(model, graph), removal, loss_term=loss_term, shrink=shrink).apply(lam, lr)
    after = model.get_layer("a").kernel.numpy()
    factor = (1 - eta / np.linalg.norm(before[:, 2])) if loss_term else 1.0
    factor *= (1 - eta) if shrink else 1.0
    np.testing.assert_allclose(after[:, 2], before[:, 2] * factor, rtol=1e-5)
    np.testing.assert_array_equal(after[:, :2], before[:, :2])


def test_pruner_without_any_regulariser_part_is_rejected():
    with pytest.raises(ValueError, match="loss_term=False and shrink=False"):
        OCSPruner(loss_term=False, shrink=False)
    with pytest.raises(ValueError, match="shrink=1 must be True or False"):
        OCSPruner(shrink=1)


# ---------------------------------------------------------------- errors and config


@pytest.mark.parametrize("alpha", [0, 1, -0.1, 1.5, True])
def test_flops_reduction_outside_the_open_unit_interval_is_rejected(alpha):
    with pytest.raises(ValueError, match=r"flops_reduction=.* is outside \(0, 1\)"):
        OCSPruner(flops_reduction=alpha)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"stability_lag": 0}, "stability_lag=0"),
        ({"stability_window": 1.5}, "stability_window=1.5"),
        ({"start_epoch": "late"}, "start_epoch='late'"),
        ({"stability_epsilon": 1.0}, "stability_epsilon=1.0"),
        ({"penalty_interval": 0}, "penalty_interval=0"),
        ({"max_layer_prune": 0}, r"max_layer_prune=0 is outside \(0, 1\]"),
        ({"last_search_epoch": -1}, "last_search_epoch=-1"),
    ],
)
def test_invalid_settings_name_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OCSPruner(**kwargs)


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = L.Conv2D(8, 3)
        self.fc = L.Dense(10)

    def call(self, x):
        return self.fc(keras.ops.mean(self.conv(x), axis=(1, 2)))


def test_subclassed_model_is_refused_with_the_masking_only_reason():
    model = _Subclassed()
    model(np.zeros((1, 12, 12, 3), "float32"))
    compile_for_classification(model)
    x, y = random_data(16)
    with pytest.raises(TypeError, match=r"OCSPruner needs a Sequential.*masking only"):
        OCSPruner(0.5).fit(model, x, y, epochs=1, verbose=0)
    with pytest.raises(TypeError, match="masking only"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=OCSPruner(0.5).callbacks())


def test_uncompiled_model_and_unreachable_target_are_refused_before_training():
    model = small_cnn()
    x, y = random_data(16)
    with pytest.raises(ValueError, match="is not compiled"):
        OCSPruner(0.5).fit(model, x, y, epochs=1)
    compile_for_classification(model)
    with pytest.raises(ValueError, match=r"flops_reduction=0.95 cannot be reached.*largest"):
        OCSPruner(0.95).fit(model, x, y, epochs=1, verbose=0)


def test_prune_before_any_search_says_how_to_run_one():
    with pytest.raises(RuntimeError, match=r"callbacks=pruner.callbacks\(\)"):
        OCSPruner(0.5).prune(small_cnn())


def test_get_config_round_trips():
    pruner = OCSPruner(0.3, 1, 2, start_epoch=4, last_search_epoch=9, penalty_interval=2)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(pruner))
    assert again.get_config() == pruner.get_config() and again.same_config(pruner)


# ---------------------------------------------------------------- training


def test_callbacks_find_auto_start_stop_at_t_star_and_prune_removes_that_partition():
    model = compile_for_classification(small_cnn(), lr=0.01)
    x, y = random_data(64)
    pruner = OCSPruner(
        0.4,
        stability_lag=1,
        stability_window=1,
        start_threshold=1.0,  # Eq. 5 holds as soon as it is defined: t_sl = 2
        stability_epsilon=0.999,  # any J_avg counts as stable: t* = t_sl + 1
        penalty_initial=1e-2,
        penalty_step=1e-2,
    )
    h = model.fit(x, y, batch_size=16, epochs=8, verbose=0, callbacks=pruner.callbacks())
    st = pruner.state
    assert st["t_sl_start"] == 2 and st["t_star"] == 3 and st["stop_reason"] == "stable"
    assert len(h.history["loss"]) == 4  # stopped after t*
    assert h.history["ocs_penalty"] == [0, 0, 0, pytest.approx(2e-2)]
    assert h.history["ocs_jaccard"][0] == -1.0
    assert len(h.history["ocs_group_norm"]) == 4
    small = pruner.prune(model)
    graph = DependencyGraph(model)
    assert st["removal"] == st["removals"][3]
    assert count_flops(small) == graph.flops_after(st["removal"]) == st["flops_after"]
    assert st["flops_after"] <= 0.6 * st["flops_before"]
    assert small.output_shape == model.output_shape


def test_regularized_epoch_shrinks_the_prune_set_more_than_the_kept_channels():
    model = compile_for_classification(small_cnn(), lr=0.01)
    x, y = random_data(64)
    pruner = OCSPruner(0.4, 1, 1, start_epoch=0, last_search_epoch=1, penalty_initial=10.0)
    slices = None
    norms = []

    class Probe(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            nonlocal slices
            graph = pruner._graph
            slices = slices or _slices(self.model, graph)
            removal = pruner.state["removals"][0]
            pruned = kept = 0.0
            for s in slices:
                sq = s.channel_sumsq(s.var.numpy())
                mask = np.zeros(len(sq), bool)
                mask[removal.get(s.group, [])] = True
                pruned += sq[mask].sum() / max(mask.sum(), 1)
                kept += sq[~mask].sum() / max((~mask).sum(), 1)
            norms.append((pruned, kept))

    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[*pruner.callbacks(), Probe()])
    (p0, k0), (p1, k1) = norms
    assert p1 / p0 < 0.5 * (k1 / k0)  # lambda_1 ~ 10, lr 0.01: 4 steps of -0.1 / ||w|| and x0.9


@pytest.mark.slow
def test_one_cycle_on_fashion_mnist_prunes_half_the_flops_and_keeps_training():
    (x, y), (xt, yt) = tsp.load_fashion_mnist()
    x, y, xt, yt = x[:3000], y[:3000], xt[:500], yt[:500]
    model = fashion_cnn(width=0.5)
    steps = math.ceil(3000 / 128)
    model.compile(
        keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(0.05, 6 * steps), 0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    pruner = OCSPruner(
        0.5,
        stability_lag=1,
        stability_window=1,
        start_epoch=1,
        stability_epsilon=0.05,
        last_search_epoch=3,
        penalty_initial=0.05,
        penalty_step=0.05,
    )
    small, history = pruner.fit(
        model, x, y, epochs=6, batch_size=128, validation_data=(xt, yt), verbose=0
    )
    t_star = history["t_star"]
    assert history["t_sl_start"] == 1 and 2 <= t_star <= 3
    assert history["stop_reason"] in ("stable", "last_search_epoch")
    assert len(history["jaccard"]) == t_star + 1 and history["jaccard"][0] is None
    assert len(history["search"]["loss"]) == t_star + 1
    assert len(history["finetune"]["loss"]) == 6 - (t_star + 1)
    assert history["flops_after"] <= 0.5 * history["flops_before"]
    assert history["flops_after"] == count_flops(small)
    assert history["params_after"] < history["params_before"]
    # the optimizer's step count (so the LR schedule) continued on the smaller model
    assert int(small.optimizer.iterations.numpy()) == 6 * steps
    assert isinstance(small.optimizer, keras.optimizers.SGD)
    assert small.evaluate(xt, yt, verbose=0)[1] > 0.6
    assert kept_channels(history["removal"], DependencyGraph(model))  # a sub-network of model
