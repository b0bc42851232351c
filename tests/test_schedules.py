"""Schedules: values, update steps (tfmot semantics), errors, config round trips."""

import pytest

import tf_sparse_prune as tsp


def test_polynomial_decay_follows_the_cubic_formula():
    s = tsp.PolynomialDecay(0.1, 0.8, begin_step=10, end_step=110, frequency=10)
    for step in (0, 10, 35, 60, 109, 110, 500):
        p = min(1.0, max(0.0, (step - 10) / 100))
        assert s.sparsity(step) == pytest.approx(0.8 + (0.1 - 0.8) * (1 - p) ** 3)


def test_polynomial_decay_updates_on_frequency_steps_and_at_the_end():
    s = tsp.PolynomialDecay(0.0, 0.5, begin_step=5, end_step=30, frequency=10)
    updates = [step for step in range(0, 60) if s.should_prune(step)]
    assert updates == [5, 15, 25, 30]  # 30: the end step is always an update (our choice)
    assert s(30) == (True, 0.5)
    assert s(4) == (False, pytest.approx(0.0))


def test_constant_sparsity_updates_forever_when_end_is_minus_one():
    s = tsp.ConstantSparsity(0.6, begin_step=3, frequency=4)
    assert [st for st in range(20) if s.should_prune(st)] == [3, 7, 11, 15, 19]
    assert s.sparsity(0) == 0.6
    bounded = tsp.ConstantSparsity(0.6, begin_step=0, end_step=5, frequency=2)
    assert [st for st in range(20) if bounded.should_prune(st)] == [0, 2, 4, 5]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"initial_sparsity": -0.1}, "initial_sparsity"),
        ({"final_sparsity": 1.0}, r"final_sparsity=1.0 is outside \[0, 1\)"),
        ({"end_step": 5}, "end_step=5 must be larger than begin_step=5"),
        ({"frequency": 0}, "frequency"),
        ({"begin_step": -2}, "begin_step"),
        ({"initial_sparsity": 0.6}, "final_sparsity=0.5 is below initial_sparsity=0.6"),
    ],
)
def test_polynomial_decay_rejects_bad_arguments(kwargs, match):
    args = {
        "initial_sparsity": 0.0,
        "final_sparsity": 0.5,
        "begin_step": 5,
        "end_step": 10,
        "frequency": 1,
        **kwargs,
    }
    with pytest.raises(ValueError, match=match):
        tsp.PolynomialDecay(**args)


def test_constant_sparsity_rejects_end_before_begin():
    with pytest.raises(ValueError, match="end_step=2 is before begin_step=5"):
        tsp.ConstantSparsity(0.5, begin_step=5, end_step=2)
