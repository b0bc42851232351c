"""soft_topk: sum = k, hard limit (Thm 2.1), closed-form gradient vs finite differences,
shift invariance, rows (N:M), the size-weighted form, edge cases, graph mode and XLA."""

import itertools
import math

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tf_sparse_prune.ops import T_TOLERANCE, soft_topk, soft_topk_threshold


def _f(x, k, tau, sizes=None, **kw):
    return soft_topk(np.asarray(x, np.float64), k, tau, sizes, **kw).numpy()


def _grad(x, k, tau, weights, sizes=None, **kw):
    x = tf.constant(x, tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(x)
        f = soft_topk(x, k, tau, sizes, **kw)
        loss = tf.reduce_sum(weights * f) + 0.5 * tf.reduce_sum(f * f)
    return tape.gradient(loss, x).numpy()


def _finite_differences(x, k, tau, weights, sizes=None, h=1e-6):
    # traced once: the 2n evaluations of a fully converged solve are many times faster
    forward = tf.function(lambda z: soft_topk(z, k, tau, sizes, tolerance=0.0))

    def loss(z):
        f = forward(tf.constant(z, tf.float64)).numpy()
        return float(np.sum(weights * f) + 0.5 * np.sum(f * f))

    out = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += h
        down[idx] -= h
        out[idx] = (loss(up) - loss(down)) / (2 * h)
    return out


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def _brute_force_threshold(x, k, tau, sizes=None) -> float:
    """The root of ``sum s sigmoid((x + t) / tau) = k`` by bisection down to adjacent floats.

    The sum is the count above ``t`` minus ``k`` plus the tails, summed exactly
    (``math.fsum``), so its sign is right even where the tails are 1e-20.
    """
    x = np.asarray(x, np.float64).ravel()
    s = np.ones_like(x) if sizes is None else np.asarray(sizes, np.float64).ravel()

    def excess(t):
        terms = [-float(k)]
        for xi, si in zip(x, s, strict=True):
            z = (xi + t) / tau
            terms += [si, -si * _sigmoid(-z)] if z >= 0 else [si * _sigmoid(z)]
        return math.fsum(terms)

    lo, hi = -x.max() - 40 * tau, -x.min() + 40 * tau
    while lo < (mid := 0.5 * lo + 0.5 * hi) < hi:
        lo, hi = (mid, hi) if excess(mid) < 0 else (lo, mid)
    return 0.5 * lo + 0.5 * hi


def _implicit_gradient(x, t, tau, weights):
    """Prop. 2.2 at the threshold ``t``, for the loss ``sum(weights * f)``."""
    e = np.array([_sigmoid(-abs((xi + t) / tau)) for xi in x])
    v = e * (1 - e) / tau
    return v * (weights - np.sum(weights * v) / np.sum(v))


def _gapped_scores(gap, seed=0, tau=0.1):
    """Four scores ``gap`` temperatures above six others: the sum is flat around ``t``."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.uniform(0, 1, 4) + gap * tau, rng.uniform(-1, 0, 6)])


# ---- forward ---------------------------------------------------------------------------
@pytest.mark.parametrize("tau", [10.0, 1.0, 0.1, 1e-3, 1e-6])
@pytest.mark.parametrize("k", [1, 3, 6.5])
def test_the_sum_equals_k_within_the_solver_tolerance(tau, k):
    x = np.random.default_rng(0).standard_normal(11)
    f = _f(x, k, tau)
    assert abs(f.sum() - k) <= 1e-4 * k
    assert np.all((f >= 0) & (f <= 1))


@pytest.mark.parametrize("tau", [10.0, 1.0, 1e-2, 1e-4, 1e-6])
def test_nm_rows_meet_k_within_three_solver_steps(tau):
    # 2:4 groups start from the sorted-scores guess, then Newton: a budget of 3 steps
    # (bisection alone needs 15-30 at these temperatures) already meets the tolerance
    x = np.random.default_rng(1).standard_normal((2048, 4))
    f = _f(x, 2, tau, max_steps=3)
    assert np.max(np.abs(f.sum(axis=-1) - 2)) <= 2e-4


def test_long_smooth_rows_meet_k_within_five_solver_steps():
    # at a temperature comparable to the score spread Newton converges quadratically
    # (bisection needs about 20 steps here)
    x = np.random.default_rng(2).standard_normal((64, 300))
    f = _f(x, 75, 1.0, max_steps=5)
    assert np.max(np.abs(f.sum(axis=-1) - 75)) <= 75e-4


def test_it_converges_to_the_hard_top_k_as_the_temperature_falls():
    x = np.random.default_rng(1).standard_normal(20)
    hard = np.zeros(20)
    hard[np.argsort(-x)[:5]] = 1.0
    gaps = [np.abs(_f(x, 5, tau) - hard).sum() for tau in (1.0, 0.1, 0.01, 1e-3, 1e-5)]
    assert all(a > b for a, b in itertools.pairwise(gaps)), gaps
    assert gaps[-1] < 1e-6


@given(
    st.lists(st.floats(-5, 5), min_size=3, max_size=12),
    st.floats(-50, 50),
    st.floats(0.05, 5.0),
)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_shifting_every_score_changes_nothing(scores, shift, tau):
    x = np.array(scores)
    k = len(scores) // 2
    np.testing.assert_allclose(_f(x + shift, k, tau), _f(x, k, tau), atol=2e-4)


def test_rows_are_independent_with_one_k_per_row():
    x = np.random.default_rng(2).standard_normal((3, 5, 4))
    k = np.array([[1, 2, 3, 2, 1]] * 3)
    f = _f(x, k, 0.3)
    for idx in np.ndindex(3, 5):
        np.testing.assert_allclose(f[idx], _f(x[idx], k[idx], 0.3), atol=1e-12)
    np.testing.assert_allclose(f.sum(-1), k, rtol=1e-4)


def test_the_threshold_is_per_row():
    t = soft_topk_threshold(np.array([[1.0, 1.0], [3.0, 3.0]]), 1, 0.5).numpy()
    np.testing.assert_allclose(t, [-1.0, -3.0], atol=1e-9)


def test_the_size_weighted_form_keeps_k_weights_and_reduces_to_the_plain_one():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(9)
    sizes = rng.integers(1, 20, 9).astype(np.float64)
    f = _f(x, 40.0, 0.2, sizes)
    assert abs(np.sum(sizes * f) - 40.0) <= 1e-4 * 40
    np.testing.assert_allclose(_f(x, 12.0, 0.2, np.full(9, 4.0)), _f(x, 3, 0.2), atol=1e-4)


# ---- backward --------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("tau", [2.0, 0.3])
def test_the_gradient_matches_central_finite_differences(seed, tau):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(8)
    weights = rng.standard_normal(8)
    got = _grad(x, 3, tau, weights, tolerance=0.0)
    np.testing.assert_allclose(got, _finite_differences(x, 3, tau, weights), atol=1e-6)


def test_the_size_weighted_gradient_matches_finite_differences():
    rng = np.random.default_rng(5)
    x = rng.standard_normal(7)
    sizes = rng.integers(1, 9, 7).astype(np.float64)
    weights = rng.standard_normal(7)
    got = _grad(x, 13.0, 0.5, weights, sizes, tolerance=0.0)
    want = _finite_differences(x, 13.0, 0.5, weights, sizes)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_the_gradient_of_rows_matches_finite_differences():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 4))
    weights = rng.standard_normal((3, 4))
    got = _grad(x, 2, 0.4, weights, tolerance=0.0)
    np.testing.assert_allclose(got, _finite_differences(x, 2, 0.4, weights), atol=1e-6)


def test_float32_inputs_give_float32_outputs_and_gradients():
    x = tf.constant(np.random.default_rng(7).standard_normal(6), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        f = soft_topk(x, 2, 0.5)
        loss = tf.reduce_sum(f * tf.range(6, dtype=tf.float32))
    g = tape.gradient(loss, x)
    assert f.dtype == tf.float32 and g.dtype == tf.float32
    assert abs(float(tf.reduce_sum(g))) < 1e-5  # a shift of x is not seen


# ---- edge cases ----------------------------------------------------------------------
EDGE_CASES = {
    "ties": (np.array([1.0, 2.0, 2.0, 2.0, 0.0]), 2),
    "all_equal": (np.full(6, 0.7), 4),
    "k_zero": (np.arange(5.0), 0),
    "k_n": (np.arange(5.0), 5),
    "huge": (np.array([1e300, -1e300, 0.0, 5.0]), 2),
    "large": (np.array([3e8, -2e8, 1e8, 5.0]), 2),
    "tiny": (np.array([1e-30, 2e-30, 0.0, 5e-30]), 2),
}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
@pytest.mark.parametrize("tau", [1.0, 1e-6])
def test_edge_cases_never_give_nan_or_inf_values_or_gradients(case, tau):
    x, k = EDGE_CASES[case]
    f = _f(x, k, tau)
    g = _grad(x, k, tau, np.linspace(-1, 1, x.size))
    assert np.all(np.isfinite(f)) and np.all((f >= 0) & (f <= 1))
    assert np.all(np.isfinite(g))


def test_k_zero_and_k_n_are_exact_with_zero_gradient():
    x = np.arange(5.0)
    assert np.array_equal(_f(x, 0, 0.5), np.zeros(5))
    assert np.array_equal(_f(x, 5, 0.5), np.ones(5))
    assert np.array_equal(_grad(x, 0, 0.5, np.ones(5)), np.zeros(5))
    assert np.array_equal(_grad(x, 5, 0.5, np.ones(5)), np.zeros(5))


def test_ties_share_the_kept_mass_equally():
    np.testing.assert_allclose(_f(np.full(6, 0.7), 4, 1e-6), np.full(6, 4 / 6), rtol=1e-4)
    f = _f(EDGE_CASES["ties"][0], 2, 1e-6)
    np.testing.assert_allclose(f, [0, 2 / 3, 2 / 3, 2 / 3, 0], atol=1e-4)


def test_saturated_scores_give_an_exactly_zero_gradient():
    g = _grad(np.array([10.0, 9.0, -9.0, -10.0]), 2, 1e-6, np.arange(4.0))
    assert np.array_equal(g, np.zeros(4))


def test_a_non_positive_temperature_is_refused():
    with pytest.raises(ValueError, match=r"temperature=0 .* > 0"):
        soft_topk(np.ones(3), 1, 0)
    with pytest.raises(ValueError, match=r"temperature=-1.0"):
        soft_topk(np.ones(3), 1, -1.0)


# ---- graph mode and XLA -------------------------------------------------------------
@pytest.mark.parametrize("jit", [False, True])
def test_graph_mode_and_xla_give_the_eager_values_and_gradients(jit):
    x = tf.constant(np.random.default_rng(8).standard_normal((4, 8)), tf.float32)
    weights = tf.constant(np.random.default_rng(9).standard_normal((4, 8)), tf.float32)

    def run(x, tau):
        with tf.GradientTape() as tape:
            tape.watch(x)
            f = soft_topk(x, 3, tau)
            loss = tf.reduce_sum(weights * f)
        return f, tape.gradient(loss, x)

    compiled = tf.function(run, jit_compile=jit)
    for tau in (1.0, 0.05):  # a tensor temperature: one trace for both
        f_eager, g_eager = run(x, tf.constant(tau))
        f_graph, g_graph = compiled(x, tf.constant(tau))
        np.testing.assert_allclose(f_graph.numpy(), f_eager.numpy(), atol=1e-6)
        np.testing.assert_allclose(g_graph.numpy(), g_eager.numpy(), atol=1e-5)


# ---- the threshold is pinned where the sum is flat ------------------------------------
@pytest.mark.parametrize("gap", [20, 30])
@pytest.mark.parametrize("seed", range(2))
def test_the_gradient_matches_finite_differences_where_the_sum_is_flat(gap, seed):
    # the k-th and (k+1)-th scores many temperatures apart: the sum meets 1e-4 * k over
    # several temperatures of t, yet f's tails and the gradient depend on where t lies
    tau = 0.1
    x = _gapped_scores(gap, seed, tau)
    weights = np.random.default_rng(seed + 10).standard_normal(x.size)
    got = _grad(x, 4, tau, weights)  # loss = sum(weights * f) + sum(f^2) / 2

    def loss(z):  # the forward function as called, default tolerance
        f = _f(z, 4, tau)
        return np.sum(weights * f) + 0.5 * np.sum(f * f)

    h = 1e-3 * tau
    steps = h * np.eye(x.size)
    want = np.array([(loss(x + d) - loss(x - d)) / (2 * h) for d in steps])
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))


@pytest.mark.parametrize("gap", [20, 60, 100])
def test_the_gradient_is_the_implicit_one_at_the_exact_root_where_the_sum_is_flat(gap):
    # beyond about 40 temperatures finite differences of float64 f drown in rounding;
    # the closed form at the brute-force root is the reference there
    tau = 0.1
    x = _gapped_scores(gap, 1, tau)
    weights = np.random.default_rng(7).standard_normal(x.size)
    x_t = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x_t)
        loss = tf.reduce_sum(weights * soft_topk(x_t, 4, tau))
    got = tape.gradient(loss, x_t).numpy()
    want = _implicit_gradient(x, _brute_force_threshold(x, 4, tau), tau, weights)
    assert np.max(np.abs(got - want)) <= 1e-9 * np.max(np.abs(want))


THRESHOLD_CASES = {
    # name: (scores, k, tau, sizes)
    "flat_gap_30": (_gapped_scores(30), 4, 0.1, None),
    "flat_gap_100": (_gapped_scores(100, 2), 4, 0.1, None),
    "smooth": (np.random.default_rng(3).standard_normal(40), 13, 1.0, None),
    "cold": (np.random.default_rng(4).standard_normal(40), 13, 1e-3, None),
    "fractional_k": (np.random.default_rng(5).standard_normal(25), 6.5, 0.05, None),
    "sizes": (
        np.random.default_rng(6).standard_normal(30),
        77.0,
        0.02,
        np.random.default_rng(7).integers(1, 9, 30).astype(np.float64),
    ),
    "sizes_flat": (_gapped_scores(40, 3), 10.0, 0.1, np.array([1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10])),
}


@pytest.mark.parametrize("case", sorted(THRESHOLD_CASES))
def test_the_threshold_is_the_brute_force_root_within_the_threshold_tolerance(case):
    x, k, tau, sizes = THRESHOLD_CASES[case]
    got = float(soft_topk_threshold(x, k, tau, sizes))
    want = _brute_force_threshold(x, k, tau, sizes)
    assert abs(got - want) <= T_TOLERANCE * tau + 1e-15 * abs(want), (got, want)


@pytest.mark.parametrize("case", sorted(THRESHOLD_CASES))
@pytest.mark.parametrize("offset", [0.0, 3.0, -50.0, 1e6])
def test_a_warm_start_reaches_the_same_root_from_near_or_far(case, offset):
    x, k, tau, sizes = THRESHOLD_CASES[case]
    want = _brute_force_threshold(x, k, tau, sizes)
    got = float(soft_topk_threshold(x, k, tau, sizes, start=want + offset * tau))
    assert abs(got - want) <= T_TOLERANCE * tau + 1e-15 * abs(want), (got, want)


def test_rows_of_a_batch_each_meet_their_brute_force_root():
    x = np.stack([_gapped_scores(gap, gap) for gap in (5, 25, 50, 80)])
    got = soft_topk_threshold(x, 4, 0.1).numpy()
    want = [_brute_force_threshold(row, 4, 0.1) for row in x]
    np.testing.assert_allclose(got, want, rtol=0, atol=T_TOLERANCE * 0.1)


# ---- k out of range --------------------------------------------------------------------
@pytest.mark.parametrize("k", [-1, 6, 5.5, float("nan")])
def test_a_k_outside_zero_to_n_is_refused_naming_k_and_the_range(k):
    with pytest.raises(ValueError, match=r"soft_topk: k=.* must be in \[0, n\] with n = 5"):
        soft_topk(np.arange(5.0), k, 0.5)
    with pytest.raises(ValueError, match=r"k=.*\[0, n\]"):
        soft_topk_threshold(np.arange(5.0), k, 0.5)


def test_a_per_row_k_outside_the_range_names_its_row():
    with pytest.raises(ValueError, match=r"k\[1\]=7\.0 .* n = 4"):
        soft_topk(np.zeros((2, 4)), np.array([2, 7]), 0.5)


def test_with_sizes_k_may_reach_the_total_size_and_no_further():
    sizes = np.array([3.0, 1.0, 4.0])
    np.testing.assert_array_equal(_f(np.arange(3.0), 8.0, 0.5, sizes), np.ones(3))
    with pytest.raises(ValueError, match=r"k=8\.5 .* n = 8\.0, the total size of the row"):
        soft_topk(np.arange(3.0), 8.5, 0.5, sizes)


def test_an_eager_tensor_k_is_checked_too():
    with pytest.raises(ValueError, match=r"k=9\.0"):
        soft_topk(np.arange(5.0), tf.constant(9.0), 0.5)


def test_a_traced_k_is_not_checked_and_clamps_to_all_or_nothing():
    # inside tf.function (SMART's threshold) k is a placeholder: no check, no error
    solve = tf.function(lambda x, k: soft_topk(x, k, 0.5))
    x = tf.constant(np.arange(5.0))
    np.testing.assert_array_equal(solve(x, tf.constant(9.0)).numpy(), np.ones(5))
    np.testing.assert_array_equal(solve(x, tf.constant(-1.0)).numpy(), np.zeros(5))
