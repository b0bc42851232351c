"""When to update masks and how much to prune (tfmot's step semantics).

A schedule is called with the training step (0 for the first batch) and returns
``(should_prune, sparsity)``: whether masks are recomputed at this step and the
target sparsity then. Masks update when ``begin_step <= step <= end_step`` and
``(step - begin_step) % frequency == 0``, exactly as tfmot's
``prune_low_magnitude``; in addition (our choice) the ``end_step`` itself is
always an update step, so the final sparsity is reached even when ``frequency``
does not divide the ramp.

Example:
    >>> import tf_sparse_prune as tsp
    >>> s = tsp.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100, frequency=10)
    >>> s(0), s(5), s(100)
    ((True, 0.0), (False, 0.114...), (True, 0.8))
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras

from tf_sparse_prune.configurable import Configurable

__all__ = [
    "REGROW_DECAYS",
    "ConstantSparsity",
    "PolynomialDecay",
    "PruningSchedule",
    "get_regrow_decay",
    "regrow_factor",
]


def _check_fraction(owner: str, name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ValueError(
            f"{owner}: {name}={value!r} is outside [0, 1); pass the fraction of weights to "
            f"prune, e.g. 0.75"
        )
    return float(value)


def _check_step(owner: str, name: str, value: int, allow_minus_one: bool = False) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or (value < 0 and not (allow_minus_one and value == -1))
    ):
        valid = "a step >= 0 (or -1 for 'never ends')" if allow_minus_one else "a step >= 0"
        raise ValueError(f"{owner}: {name}={value!r} is invalid; it must be {valid}")
    return value


class PruningSchedule(Configurable):
    """Base class: ``schedule(step) -> (should_prune, sparsity)``."""

    begin_step: int
    end_step: int
    frequency: int

    def sparsity(self, step: int) -> float:
        raise NotImplementedError

    @property
    def final_sparsity(self) -> float:
        raise NotImplementedError

    def should_prune(self, step: int) -> bool:
        """Whether masks are recomputed at ``step``."""
        if step < self.begin_step:
            return False
        if self.end_step != -1 and step > self.end_step:
            return False
        return (step - self.begin_step) % self.frequency == 0 or step == self.end_step

    def __call__(self, step: int) -> tuple[bool, float]:
        return self.should_prune(step), self.sparsity(step)


@keras.saving.register_keras_serializable(package="tf_sparse_prune")
class PolynomialDecay(PruningSchedule):
    """Gradual pruning (Zhu & Gupta 2017): ``s_t = s_f + (s_i - s_f)(1 - p)^power``.

    ``p = clip((step - begin_step) / (end_step - begin_step), 0, 1)``.

    Args:
        initial_sparsity: Sparsity at ``begin_step``, in [0, 1).
        final_sparsity: Sparsity from ``end_step`` on, in [0, 1).
        begin_step: First step at which masks update.
        end_step: Step at which the final sparsity is reached (> begin_step).
        frequency: Steps between mask updates (positive).
        power: Exponent of the decay (3 as in the paper and tfmot).

    Example:
        >>> import tf_sparse_prune as tsp
        >>> tsp.PolynomialDecay(0.0, 0.5, 0, 10, 1).sparsity(10)
        0.5
    """

    def __init__(
        self,
        initial_sparsity: float,
        final_sparsity: float,
        begin_step: int,
        end_step: int,
        frequency: int = 100,
        power: float = 3.0,
    ):
        owner = "PolynomialDecay"
        self.initial_sparsity = _check_fraction(owner, "initial_sparsity", initial_sparsity)
        self.final_sparsity_ = _check_fraction(owner, "final_sparsity", final_sparsity)
        if self.final_sparsity_ < self.initial_sparsity:
            raise ValueError(
                f"{owner}: final_sparsity={final_sparsity!r} is below initial_sparsity="
                f"{initial_sparsity!r}; pruning never reverses (a pruned weight stays zero), so "
                f"the sparsity must not decrease: pass final_sparsity >= initial_sparsity"
            )
        self.begin_step = _check_step(owner, "begin_step", begin_step)
        self.end_step = _check_step(owner, "end_step", end_step)
        if self.end_step <= self.begin_step:
            raise ValueError(
                f"{owner}: end_step={end_step} must be larger than begin_step={begin_step}"
            )
        self.frequency = _check_step(owner, "frequency", frequency)
        if self.frequency == 0:
            raise ValueError(f"{owner}: frequency=0 is invalid; it must be a positive step count")
        if not isinstance(power, (int, float)) or power <= 0:
            raise ValueError(f"{owner}: power={power!r} must be a positive number")
        self.power = float(power)

    @property
    def final_sparsity(self) -> float:
        return self.final_sparsity_

    def sparsity(self, step: int) -> float:
        p = (step - self.begin_step) / (self.end_step - self.begin_step)
        p = min(1.0, max(0.0, p))
        s_i, s_f = self.initial_sparsity, self.final_sparsity_
        return s_f + (s_i - s_f) * (1.0 - p) ** self.power

    def get_config(self) -> dict:
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity_,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
            "power": self.power,
        }


@keras.saving.register_keras_serializable(package="tf_sparse_prune")
class ConstantSparsity(PruningSchedule):
    """One sparsity from ``begin_step`` on, masks refreshed every ``frequency`` steps.

    Args:
        sparsity: The target sparsity, in [0, 1).
        begin_step: First update step.
        end_step: Last update step, or -1 to keep updating for the whole run.
        frequency: Steps between updates (positive).

    Example:
        >>> import tf_sparse_prune as tsp
        >>> tsp.ConstantSparsity(0.5)(0)
        (True, 0.5)
    """

    def __init__(
        self, sparsity: float, begin_step: int = 0, end_step: int = -1, frequency: int = 100
    ):
        owner = "ConstantSparsity"
        self.target = _check_fraction(owner, "sparsity", sparsity)
        self.begin_step = _check_step(owner, "begin_step", begin_step)
        self.end_step = _check_step(owner, "end_step", end_step, allow_minus_one=True)
        if self.end_step != -1 and self.end_step < self.begin_step:
            raise ValueError(f"{owner}: end_step={end_step} is before begin_step={begin_step}")
        self.frequency = _check_step(owner, "frequency", frequency)
        if self.frequency == 0:
            raise ValueError(f"{owner}: frequency=0 is invalid; it must be a positive step count")

    @property
    def final_sparsity(self) -> float:
        return self.target

    def sparsity(self, step: int) -> float:
        return self.target

    def get_config(self) -> dict:
        return {
            "sparsity": self.target,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }


# ---- regrowth-rate decays (SUBP, SPEC §5) --------------------------------------------------
# Each maps the progress p in [0, 1] of the pruning-regrowing stage to the fraction of the
# initial regrowth factor delta_0 still in force; SUBP's delta_t = delta_0 * decay(p).

REGROW_DECAYS: dict[str, Callable[[float], float]] = {
    "cubic": lambda p: 1.0 - p**3,  # Eq. 6, the paper's default
    "linear": lambda p: 1.0 - p,
    "cosine": lambda p: 0.5 * (1.0 + math.cos(math.pi * p)),
    "constant": lambda p: 1.0,
}


def get_regrow_decay(name: str, owner: str = "SUBP") -> Callable[[float], float]:
    """The regrowth decay called ``name`` (a key of :data:`REGROW_DECAYS`).

    Raises:
        ValueError: for an unknown name; the message lists the valid ones.
    """
    if isinstance(name, str) and name in REGROW_DECAYS:
        return REGROW_DECAYS[name]
    raise ValueError(f"{owner}: regrow_decay={name!r} is unknown; valid: {sorted(REGROW_DECAYS)}")


def regrow_factor(decay: str, initial: float, epoch: int, start: int, end: int) -> float:
    """SUBP's regrowth factor ``delta_t = delta_0 * decay(clip((t - t_s) / (t_e - t_s), 0, 1))``.

    Args:
        decay: ``"cubic"`` (Eq. 6), ``"linear"``, ``"cosine"`` or ``"constant"``.
        initial: ``delta_0``, the fraction of a row's blocks regrown at ``t_s``.
        epoch: ``t``.
        start: ``t_s``.
        end: ``t_e`` (> ``t_s``).

    Example:
        >>> from tf_sparse_prune.schedules import regrow_factor
        >>> [round(regrow_factor("cubic", 0.5, t, 0, 4), 4) for t in range(5)]
        [0.5, 0.4922, 0.4375, 0.2891, 0.0]
        >>> regrow_factor("constant", 0.5, 4, 0, 4)
        0.5
    """
    if end <= start:
        raise ValueError(f"regrow_factor: end={end} must be larger than start={start}")
    progress = min(1.0, max(0.0, (epoch - start) / (end - start)))
    return float(initial) * get_regrow_decay(decay)(progress)
