"""SMART: separate, dynamic, differentiable structured pruning (SPEC §3, Algorithms 1 and 2).

**Mask scores.** Every pruned kernel gets a trainable score per block
(``smart_scores_<i>``, no regularizer), trained by the model's optimizer and
excluded from its weight decay. During the search the kernel the layer computes
with is ``W * expand(f)`` with ``f = sigmoid((m + t) / tau)``, where ``t`` solves
``sum_b s_b f_b = K`` over the blocks ``b`` of **all** pruned layers (``s_b`` the
block's size in weights, ``K = (1 - sparsity) * all pruned weights``): the
size-weighted global :func:`~tf_sparse_prune.ops.soft_topk`, so the per-layer
sparsity is learned.

**Floor.** A global top-k can empty a layer (a stem conv, a depthwise conv, a layer
whose scores all fall behind). The algorithm's :class:`~tf_sparse_prune.Floor` names,
from the current scores, the blocks every layer keeps (each row's best, and the
layer's best up to ``min_fraction`` of its weights): their soft mask is 1, their
sizes leave the sum and the budget ``K``, and the same blocks are kept by the final
hard top-k. The solve is the one global solve over the other blocks.

**Global coupling (design and exactness).** ``t`` couples all layers. It is solved
once per training step, inside the compiled train step, at the start of the first
wrapper's forward pass: when an optimizer step has run since the last solve, the next
search step's temperature is set and ``t`` is solved in float64 over the concatenated
scores of all layers (exactly :func:`soft_topk`'s solver, warm-started at the previous
root) and stored in each wrapper (``smart_threshold``), with the step it serves
(``smart_solved_step``): no scores leave the device and no call runs between batches.
The scores' projection onto the score box is a weight constraint, applied by the
optimizer right after each update. So the stored ``t`` is the root for the scores the
forward pass sees. Before validation and at an epoch's end the callback runs a pending
update at once (``catch_up``), so both see the state of the updated scores. With ``t``
held fixed, autodiff would give ``dL/dm_j = v_j g_j`` only, missing the implicit term
of ``t(m)`` (``dt/dm_j = -s_j v_j / sum s v``, ``v = f (1 - f) / tau``). The grids of
all layers are therefore computed together, once per traced train step (cached per
``FuncGraph``, with the floors the solve also reads), by
:class:`~tf_sparse_prune.algorithms.smart_core.SearchCore`, whose written-out gradient
is ``v_j (g_j - s_j sum_i g_i v_i / sum_i s_i v_i)``: Prop. 2.2's closed form over the
concatenation, exact up to float rounding and the tolerance of ``t`` (``1e-4 * K`` in
the sum). The test compares it with ``soft_topk`` on the concatenated scores. In eager
mode each wrapper recomputes them. The
coupling is installed by the callbacks (``on_train_begin``); a forward pass outside
``fit`` uses the stored ``t`` without the implicit term. The callback sets the step
before every batch, so ``steps_per_execution`` must be 1 (checked).

**Flow (Algorithm 1).** Epochs ``[0, pretrain_epochs)``: dense. The next
``search_epochs``: soft mask, the temperature decaying every batch,
``tau_s = tau_0 (tau_f / tau_0) ** (s / (S - 1))`` for the ``S`` batches of the
search (our choice of ``S - 1`` so the first batch trains at ``tau_0`` and the last at
``tau_f``). Scores are initialised when the search starts as
``||B_b||_2 / mean_b ||B_b||_2`` per layer and projected onto ``[-score_bound,
score_bound]`` after every step. At the end of the last search epoch the mask
becomes the hard global top-k of the scores (weight budget per
:func:`~tf_sparse_prune.structures.select_by_weight_budget`: exact up to one block);
then only the weights train (fine-tune). During the search each epoch end stores the
current hard top-k in the wrappers' masks, so reports and ``strip_pruning`` mid-search
see it.

**N:M (Algorithm 2).** With ``structure=tsp.NM(n, m)`` there are no scores: the
mask of each group of ``m`` input weights is ``soft_topk(|w|, n, tau)`` computed in
the forward pass (no coupling), hard top-``n`` of ``|w|`` at the end.

**Logs** (per epoch, for TensorBoard: put ``pruner.callbacks()`` before the
TensorBoard callback): ``smart_phase`` (0 pretrain, 1 search, 2 fine-tune),
``smart_temperature`` (of the last batch), ``smart_hard_sparsity`` (weights pruned
by the hard mask: the current hard top-k in the search) and ``smart_soft_hard_gap``
(the size-weighted mean ``|f - hard|``; 0 outside the search).

State (all saved with the model): scores, ``smart_temperature`` and
``smart_threshold`` (float64), ``smart_solved_step``, ``smart_phase``, ``smart_epoch``
(epochs begun), ``smart_search_step`` and ``smart_search_length`` (``S``); a resumed
run continues the schedule exactly.

Example:
    >>> import keras, numpy as np, tf_sparse_prune as tsp
    >>> model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32)])
    >>> pruner = tsp.algorithms.SMART(0.75, tsp.OneByN(16), pretrain_epochs=0, search_epochs=1)
    >>> pruned = tsp.prune_model(model, pruner, layers="all")   # a lone Dense is the classifier
    >>> pruned.compile("sgd", "mse")
    >>> hist = pruned.fit(np.ones((32, 16)), np.ones((32, 32)), epochs=2, verbose=0,
    ...                   callbacks=pruner.callbacks())
    >>> hist.history["smart_phase"], hist.history["smart_hard_sparsity"]
    ([2.0, 2.0], [0.75, 0.75])
"""

from __future__ import annotations

import copy
import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tf_sparse_prune.algorithms.base import PruningAlgorithm
from tf_sparse_prune.algorithms.smart_core import SearchCore
from tf_sparse_prune.callbacks import PruningCallback
from tf_sparse_prune.floors import Floor
from tf_sparse_prune.ops import soft_topk
from tf_sparse_prune.schedules import _check_fraction
from tf_sparse_prune.structures import NM, select_by_weight_budget

__all__ = [
    "PHASES",
    "SMART",
    "MaskScoreOptimizer",
    "TemperatureSchedule",
    "exclude_from_weight_decay",
    "temperature_at",
]

#: phase codes stored in ``smart_phase``
PHASES = {"pretrain": 0, "search": 1, "finetune": 2}


def temperature_at(step: int, length: int, initial: float, final: float) -> float:
    """``tau_0 (tau_f / tau_0) ** (s / (S - 1))``, clamped to ``[0, S - 1]``.

    Example:
        >>> from tf_sparse_prune.algorithms.smart import temperature_at
        >>> [temperature_at(s, 3, 10.0, 0.1) for s in range(3)]
        [10.0, 1.0, 0.1]
    """
    if length <= 1:
        return float(final)
    frac = min(max(step, 0), length - 1) / (length - 1)
    return float(initial * (final / initial) ** frac)


def _temperature_tensor(step, length, initial: float, final: float) -> tf.Tensor:
    """:func:`temperature_at` on int64 tensors, in float64 (the same operations, so the
    same values: an exact quotient of integers, then ``initial * ratio ** frac``)."""
    last = tf.maximum(length - 1, 1)
    frac = tf.cast(tf.clip_by_value(step, 0, last), tf.float64) / tf.cast(last, tf.float64)
    tau = tf.constant(initial, tf.float64) * tf.pow(tf.constant(final / initial, tf.float64), frac)
    return tf.where(length <= 1, tf.constant(final, tf.float64), tau)


class _ScoreBox(keras.constraints.Constraint):
    """The projection of mask scores onto ``[-bound, bound]`` (a weight constraint, so
    the optimizer applies it right after each update, inside the train step)."""

    def __init__(self, bound: float):
        self.bound = float(bound)

    def __call__(self, w):
        return keras.ops.clip(w, -self.bound, self.bound)

    def get_config(self) -> dict:
        return {"bound": self.bound}


def _check_number(name: str, value: Any, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"SMART: {name}={value!r} is invalid; it must be a number > 0")
    if not math.isfinite(float(value)) or (positive and not float(value) > 0):
        raise ValueError(f"SMART: {name}={value!r} is invalid; it must be a finite number > 0")
    return float(value)


def _check_epochs(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"SMART: {name}={value!r} is invalid; it must be an integer >= {minimum}")
    return int(value)


@keras.saving.register_keras_serializable(package="tf_sparse_prune")
class SMART(PruningAlgorithm):
    """Differentiable global structured pruning with learned mask scores (module doc).

    Args:
        sparsity: Fraction of all pruned layers' weights to prune, in [0, 1). For
            ``NM(n, m)`` it is fixed at ``1 - n/m`` (pass that or ``None``).
        structure: The block: ``tsp.Block(16, 8)`` (the paper's), ``tsp.OneByN(n)``,
            ``tsp.OutputChannel()``, ``tsp.Unstructured()`` or ``tsp.NM(n, m)``
            (Algorithm 2). ``None``: ``Block(16, 8)``.
        pretrain_epochs: ``T_pre``, dense epochs first (>= 0).
        search_epochs: ``T_se``, epochs of soft-mask search (>= 1).
            ``pretrain_epochs + search_epochs`` must not exceed ``fit``'s epochs.
        initial_temperature: ``tau_0`` (> 0).
        final_temperature: ``tau_f`` (> 0, <= ``tau_0``).
        mask_optimizer: ``None``: the model's optimizer trains the mask scores (excluded
            from its weight decay). A Keras optimizer: it trains the scores instead; at the
            start of ``fit`` the callback replaces ``model.optimizer`` by a
            :class:`MaskScoreOptimizer` routing the scores to (a fresh copy of) it and
            every other variable to the model's optimizer, which saves and loads with
            the model, so a resumed ``fit`` continues both optimizers exactly.
        score_bound: ``c``: scores are projected onto ``[-c, c]`` after each step (> 0).
        floor: What every layer keeps (``None``: :class:`~tf_sparse_prune.Floor`'s default).
            The floor's blocks (each row's best block, and the layer's best blocks up to
            ``min_fraction`` of its weights, by score) hold a soft mask of 1 and leave the
            threshold's budget, so the global solve itself honours the per-layer floor.
        jit_compile: Compile the search's per-step math (floors, threshold solve, soft
            grids and their gradient, over all kernels at once) with XLA, which fuses its
            many small passes; ``False`` runs them as plain TensorFlow ops (same values up
            to float rounding). The model's own ``compile(jit_compile=...)`` is separate.

    Raises:
        ValueError: for an argument outside its valid values (the message names it).

    Example:
        >>> import tf_sparse_prune as tsp
        >>> pruner = tsp.algorithms.SMART(0.7, tsp.Block(16, 8), search_epochs=20)
        >>> pruner.temperature(0, 100), pruner.temperature(99, 100)
        (10.0, 0.0001)
    """

    def __init__(
        self,
        sparsity: float | None = None,
        structure=None,
        pretrain_epochs: int = 0,
        search_epochs: int = 20,
        initial_temperature: float = 10.0,
        final_temperature: float = 1e-4,
        mask_optimizer: Any = None,
        score_bound: float = 10.0,
        floor: Floor | None = None,
        jit_compile: bool = True,
    ):
        from tf_sparse_prune.structures import Block

        super().__init__(Block(16, 8) if structure is None else structure, floor)
        fixed = self.structure.fixed_sparsity()
        if sparsity is None:
            if fixed is None:
                raise ValueError("SMART: sparsity is required (a fraction in [0, 1), e.g. 0.7)")
            sparsity = fixed
        sparsity = _check_fraction("SMART", "sparsity", sparsity)
        self.floor.check_sparsity("SMART", sparsity)
        if fixed is not None and abs(sparsity - fixed) > 1e-9:
            raise ValueError(
                f"SMART: structure {self.structure!r} fixes the sparsity at {fixed}; pass "
                f"sparsity={fixed} or leave it None"
            )
        self.sparsity = sparsity
        self.pretrain_epochs = _check_epochs("pretrain_epochs", pretrain_epochs, 0)
        self.search_epochs = _check_epochs("search_epochs", search_epochs, 1)
        self.initial_temperature = _check_number("initial_temperature", initial_temperature)
        self.final_temperature = _check_number("final_temperature", final_temperature)
        if self.initial_temperature < self.final_temperature:
            raise ValueError(
                f"SMART: initial_temperature={initial_temperature!r} is below "
                f"final_temperature={final_temperature!r}; the temperature decays, so pass "
                f"initial_temperature >= final_temperature (paper: 10 and 1e-4)"
            )
        if isinstance(mask_optimizer, (str, dict)):  # get() edits a config in place
            mask_optimizer = keras.optimizers.get(copy.deepcopy(mask_optimizer))
        if mask_optimizer is not None and not isinstance(
            mask_optimizer, keras.optimizers.Optimizer
        ):
            raise ValueError(
                f"SMART: mask_optimizer={mask_optimizer!r} is not a Keras optimizer; pass None "
                f"(the model's optimizer trains the scores) or e.g. keras.optimizers.Adam(1e-2)"
            )
        self.mask_optimizer = mask_optimizer
        self.score_bound = _check_number("score_bound", score_bound)
        if not isinstance(jit_compile, (bool, np.bool_)):
            raise ValueError(f"SMART: jit_compile={jit_compile!r} must be True or False")
        self.jit_compile = bool(jit_compile)
        self._coupled: list = []  # wrappers whose forward pass carries the coupling
        self._driven: list = []  # wrappers whose training steps advance the search
        # (graph, {key: tensor}): what one traced graph computes once and shares
        self._memo: tuple | None = None
        self._compiled: tuple | None = None
        self._core_memo: tuple | None = None

    # ---- properties ----------------------------------------------------------------
    @property
    def nm(self) -> bool:
        """Whether this is the N:M variant (Algorithm 2)."""
        return isinstance(self.structure, NM)

    @property
    def global_budget(self) -> bool:
        return not self.nm

    def temperature(self, step: int, length: int) -> float:
        """The temperature of search batch ``step`` of ``length``."""
        return temperature_at(step, length, self.initial_temperature, self.final_temperature)

    # ---- state -----------------------------------------------------------------------
    def build(self, wrapper):
        wrapper.add_state("smart_phase", 0.0)
        wrapper.add_state("smart_epoch", 0, "int64")
        wrapper.add_state("smart_search_step", 0, "int64")
        wrapper.add_state("smart_search_length", 0, "int64")
        wrapper.add_state("smart_temperature", self.initial_temperature, "float64")
        wrapper.add_state("smart_threshold", 0.0, "float64")
        # the pruning step whose forward pass the stored threshold and temperature serve
        wrapper.add_state("smart_solved_step", -1, "int64")
        scores, sizes, rows = [], [], []
        for i, (var, depthwise) in enumerate(wrapper.targets):
            if self.nm:
                break
            shape = tuple(int(d) for d in var.shape)
            scores.append(
                wrapper.add_weight(
                    name=f"smart_scores_{i}",
                    shape=wrapper.structure.grid_shape(shape, depthwise),
                    initializer="ones",
                    regularizer=None,
                    # the projection onto the score box, applied by the optimizer right
                    # after each update, inside the train step
                    constraint=_ScoreBox(self.score_bound),
                    trainable=True,
                    dtype="float32",
                )
            )
            sizes.append(np.asarray(wrapper.structure.block_sizes(shape, depthwise), np.float64))
            rows.append(wrapper.structure.row_ids(shape, depthwise))
        wrapper.smart_scores = scores
        wrapper.smart_sizes = sizes
        wrapper.smart_rows = rows

    def _graph_memo(self) -> dict | None:
        """The memo of the graph being traced (``None`` when executing eagerly).

        The forward pass of every wrapper, the coupling and the per-batch solve read the same
        scores; inside one traced graph what they share is computed once.
        """
        if tf.executing_eagerly():
            return None
        graph = tf.compat.v1.get_default_graph()
        if self._memo is None or self._memo[0] is not graph:
            self._memo = (graph, {})
        return self._memo[1]

    def _kept(self, wrapper, index, scores):
        """The floor's blocks (mask 1 whatever the threshold) for ``scores`` (a tensor)."""
        memo = self._graph_memo()
        key = ("kept", id(wrapper), index)
        if memo is not None and key in memo:
            return memo[key]
        kept = self.floor.protected(scores, wrapper.smart_sizes[index], wrapper.smart_rows[index])
        if memo is not None:
            memo[key] = kept
        return kept

    # ---- forward -------------------------------------------------------------------------
    def _soft_grid(self, wrapper, index, training):
        """The soft mask grid of kernel ``index`` (float32).

        Training a coupled wrapper, the grid comes from the step's one computation of all
        kernels' grids (:meth:`_coupled_grids`), whose gradient carries the implicit term
        of the global threshold; otherwise it is the sigmoid at the stored threshold.
        """
        if training and any(w is wrapper for w in self._coupled):
            return self._coupled_grids()[(id(wrapper), index)]
        m32 = tf.convert_to_tensor(wrapper.smart_scores[index])
        kept = tf.stop_gradient(self._kept(wrapper, index, m32))
        tau = keras.ops.convert_to_tensor(wrapper.smart_temperature)
        t = keras.ops.convert_to_tensor(wrapper.smart_threshold)
        f = tf.sigmoid((tf.cast(m32, tf.float64) + t) / tau)
        return tf.cast(tf.where(kept, tf.ones_like(f), f), tf.float32)

    def _core(self, wrappers) -> SearchCore:
        """The :class:`SearchCore` of ``wrappers``' kernels (built once per list)."""
        key = tuple(id(w) for w in wrappers)
        if self._core_memo is None or self._core_memo[0] != key:
            entries = self._entries(wrappers)
            core = SearchCore(
                self.floor,
                [w.smart_sizes[i] for w, i in entries],
                [w.smart_rows[i] for w, i in entries],
                self._budget(wrappers),
                jit_compile=self.jit_compile,
            )
            self._core_memo = (key, core)
        return self._core_memo[1]

    def _step_kept(self, wrappers):
        """The floor's blocks of every kernel of ``wrappers`` for the current scores
        (computed once per traced step)."""
        memo = self._graph_memo()
        key = ("kept", tuple(id(w) for w in wrappers))
        if memo is not None and key in memo:
            return memo[key]
        scores = [
            tf.stop_gradient(tf.convert_to_tensor(w.smart_scores[i]))
            for w, i in self._entries(wrappers)
        ]
        kept = self._core(wrappers).kept(scores)
        if memo is not None:
            memo[key] = kept
        return kept

    def _coupled_grids(self):
        """``{(id(wrapper), index): grid}`` over all coupled wrappers, at this step's
        threshold and temperature, differentiable in every score (the coupling)."""
        memo = self._graph_memo()
        if memo is not None and "grids" in memo:
            return memo["grids"]
        t, tau = self._step_state()  # first: the step's solve may update the state
        entries = self._entries(self._coupled)
        scores = [tf.convert_to_tensor(w.smart_scores[i]) for w, i in entries]
        kept = self._step_kept(self._coupled)
        grids = self._core(self._coupled).grids(scores, kept, t, tau)
        out = {(id(w), i): g for (w, i), g in zip(entries, grids, strict=True)}
        if memo is not None:
            memo["grids"] = out
        return out

    def _step_state(self):
        """``(t, tau)`` for this training step's forward pass (float64, no gradient).

        The state is brought up to date first, inside the train step: when an optimizer
        step has run since the last solve (the wrappers' ``pruning_step``, set before
        each batch, is past ``smart_solved_step``) and the search is on, the next search
        step's temperature is set and ``t`` is solved for the updated scores. The floor's
        blocks come from the same per-kernel computation the forward pass uses.
        """
        memo = self._graph_memo()
        if memo is not None and "step" in memo:
            return memo["step"]
        wrappers = self._driven
        w0 = wrappers[0]
        step = w0.pruning_step.value
        need = tf.logical_and(
            tf.equal(w0.smart_phase.value, float(PHASES["search"])),
            w0.smart_solved_step.value < step,
        )
        s = w0.smart_search_step.value + 1
        length = w0.smart_search_length.value
        initial, final = self.initial_temperature, self.final_temperature
        kept = None if self.nm else self._step_kept(wrappers)

        def advance():
            tau = _temperature_tensor(s, length, initial, final)
            t = self._solve_and_store(wrappers, kept, tau, s, step)
            return t, tau

        def keep():
            return w0.smart_threshold.value, w0.smart_temperature.value

        t, tau = tf.cond(need, advance, keep)
        result = (tf.stop_gradient(t), tf.stop_gradient(tau))
        if memo is not None:
            memo["step"] = result
        return result

    def _solve_and_store(self, wrappers, kept, tau, step, solved):
        """Stores ``tau``, the search ``step`` and ``solved`` in every wrapper, and for a
        global budget solves ``t`` (float64, warm-started at the stored one) with the
        floor's blocks (``kept``, one grid per kernel) held at 1: their sizes leave the
        budget and the sum (one solve, so the threshold honours the floor). Returns ``t``.
        """
        w0 = wrappers[0]
        states = {"smart_temperature": tau, "smart_search_step": step, "smart_solved_step": solved}
        if self.nm:
            t = tf.constant(0.0, tf.float64)
        else:
            scores = [
                tf.stop_gradient(tf.convert_to_tensor(w.smart_scores[i]))
                for w, i in self._entries(wrappers)
            ]
            # warm start: one batch moves the root by little
            t = self._core(wrappers).threshold(scores, kept, tau, w0.smart_threshold.value)
            states["smart_threshold"] = t
        for w in wrappers:  # one update of each wrapper's state vector
            w.assign_states(states)
        return t

    def _nm_soft_grid(self, wrapper, index, kernel, tau=None):
        _var, depthwise = wrapper.targets[index]
        blocks = wrapper.structure.to_blocks(kernel, depthwise)[..., 0]  # (t, g, o, m)
        if tau is None:
            tau = keras.ops.convert_to_tensor(wrapper.smart_temperature)
        return soft_topk(keras.ops.abs(blocks), self.structure.n, tau)

    def effective_kernel(self, wrapper, index, kernel, training):
        """``W * expand(M)``: ``M`` = the soft mask in the search, the stored mask otherwise."""
        if self.nm:  # the bisection runs only while searching
            in_search = keras.ops.equal(wrapper.smart_phase, 1.0)
            tau = None
            if training and any(w is wrapper for w in self._driven):
                _, tau = self._step_state()
            soft = tf.cond(
                in_search,
                lambda: self._nm_soft_grid(wrapper, index, kernel, tau),
                lambda: tf.zeros_like(wrapper.masks[index]),
            )
        else:
            soft = self._soft_grid(wrapper, index, training)
        search = keras.ops.cast(keras.ops.equal(wrapper.smart_phase, 1.0), "float32")
        mask = keras.ops.convert_to_tensor(wrapper.masks[index])
        grid = search * keras.ops.cast(soft, "float32") + (1.0 - search) * mask
        return wrapper.structure.apply(kernel, grid, wrapper.targets[index][1])

    # ---- numpy helpers (callbacks) -------------------------------------------------------
    def _entries(self, wrappers):
        return [(w, i) for w in wrappers for i in range(len(w.targets))]

    def _budget(self, wrappers) -> float:
        total = sum(float(s.sum()) for w in wrappers for s in w.smart_sizes)
        return (1.0 - self.sparsity) * total

    def refresh_threshold(self, wrappers) -> float:
        """Solves ``t`` for the current scores and temperature and stores it in every
        wrapper, current for the next batch."""
        w0 = wrappers[0]
        return float(
            self._advance(wrappers)(
                w0.smart_temperature.value, w0.smart_search_step.value, w0.pruning_step.value + 1
            )
        )

    def catch_up(self, wrappers) -> None:
        """Runs the update the next training step would begin with, if one is pending
        (an optimizer step since the last solve, in the search): before validation and
        at an epoch's end, so they see the state of the updated scores."""
        w0 = wrappers[0]
        if int(w0.smart_phase.numpy()) != PHASES["search"]:
            return
        step = int(w0.pruning_step.numpy())
        if int(w0.smart_solved_step.numpy()) > step:
            return
        s = int(w0.smart_search_step.numpy()) + 1
        length = int(w0.smart_search_length.numpy())
        tau = _temperature_tensor(
            tf.constant(s, tf.int64),
            tf.constant(length, tf.int64),
            self.initial_temperature,
            self.final_temperature,
        )
        self._advance(wrappers)(tau, tf.constant(s, tf.int64), tf.constant(step + 1, tf.int64))

    def _advance(self, wrappers):
        """The compiled host-side update over all ``wrappers`` (the search's start, and
        :meth:`catch_up`): ``(tau, step, solved) -> t`` by :meth:`_solve_and_store`."""
        key = tuple(id(w) for w in wrappers)
        if self._compiled is not None and self._compiled[0] == key:
            return self._compiled[1]

        @tf.function
        def advance(tau, step, solved):
            kept = None if self.nm else self._step_kept(wrappers)
            return self._solve_and_store(wrappers, kept, tau, step, solved)

        self._compiled = (key, advance)
        return advance

    def init_scores(self, wrappers) -> None:
        """``m_b = ||B_b||_2 / mean_b ||B_b||_2`` per kernel, clipped to the score box."""
        for w in wrappers:
            for i, (var, depthwise) in enumerate(w.targets):
                norms = w.structure.reduce(var.numpy(), depthwise)
                mean = float(np.mean(norms))
                scores = norms / mean if mean > 0 else np.ones_like(norms)
                w.smart_scores[i].assign(
                    np.clip(scores, -self.score_bound, self.score_bound).astype(np.float32)
                )

    def hard_masks(self, wrappers) -> list[np.ndarray]:
        """The hard top-k grid masks, one per (wrapper, kernel) in order."""
        entries = self._entries(wrappers)
        if self.nm:
            out = []
            for w, i in entries:
                var, depthwise = w.targets[i]
                scores = np.abs(np.asarray(w.structure.to_blocks(var.numpy(), depthwise))[..., 0])
                out.append(w.structure.select(scores, self.sparsity))
            return out
        flat = [w.smart_scores[i].numpy() for w, i in entries]
        sizes = [w.smart_sizes[i] for w, i in entries]
        kept = [self._kept(w, i, f) for (w, i), f in zip(entries, flat, strict=True)]
        mask = select_by_weight_budget(
            np.concatenate([f.ravel() for f in flat]),
            self.sparsity,
            np.concatenate([s.ravel() for s in sizes]),
            np.concatenate([k.ravel() for k in kept]),
        )
        out, start = [], 0
        for f in flat:
            out.append(mask[start : start + f.size].reshape(f.shape))
            start += f.size
        return out

    def soft_masks(self, wrappers) -> list[np.ndarray]:
        """The soft grid masks ``f`` at the current temperature and scores."""
        out = []
        for w, i in self._entries(wrappers):
            if self.nm:
                var, _ = w.targets[i]
                out.append(np.asarray(self._nm_soft_grid(w, i, var.value)))
            else:
                out.append(np.asarray(self._soft_grid(w, i, training=False)))
        return out

    def _sizes(self, wrappers) -> list[np.ndarray]:
        if self.nm:
            return [np.ones(w.masks[i].shape) for w, i in self._entries(wrappers)]
        return [w.smart_sizes[i] for w, i in self._entries(wrappers)]

    def _set_all(self, wrappers, name, value):
        for w in wrappers:
            getattr(w, name).assign(value)

    # ---- training hooks ----------------------------------------------------------------
    def on_train_begin(self, wrappers, params):
        epochs = params.get("epochs")
        needed = self.pretrain_epochs + self.search_epochs
        if epochs is not None and needed > epochs:
            raise ValueError(
                f"SMART: pretrain_epochs={self.pretrain_epochs} + search_epochs="
                f"{self.search_epochs} = {needed} epochs, but fit runs epochs={epochs}; "
                f"train for at least {needed} epochs or lower search_epochs"
            )
        self._steps = params.get("steps")
        self._driven = list(wrappers)
        self._coupled = [] if self.nm else list(wrappers)
        self._memo = None

    def on_epoch_begin(self, wrappers, epoch):
        e = int(wrappers[0].smart_epoch.numpy())
        self._set_all(wrappers, "smart_epoch", e + 1)
        phase = int(wrappers[0].smart_phase.numpy())
        if e < self.pretrain_epochs or phase == PHASES["finetune"]:
            return
        if e >= self.pretrain_epochs + self.search_epochs:
            self.finalize(wrappers)  # a search that ended without its final epoch end
            return
        if phase == PHASES["pretrain"]:
            self.start_search(wrappers)

    def start_search(self, wrappers) -> None:
        """Enters the search: scores from the kernels, ``S``, ``tau_0`` and ``t``."""
        steps = getattr(self, "_steps", None)
        if not steps:
            raise ValueError(
                "SMART decays the temperature every batch and needs the number of batches per "
                f"epoch, but fit reported steps={steps}; pass steps_per_epoch to fit"
            )
        self._set_all(wrappers, "smart_search_length", int(steps) * self.search_epochs)
        self._set_all(wrappers, "smart_search_step", 0)
        self._set_all(wrappers, "smart_temperature", self.initial_temperature)
        self._set_all(wrappers, "smart_phase", float(PHASES["search"]))
        if not self.nm:
            self.init_scores(wrappers)
        self.refresh_threshold(wrappers)

    def on_epoch_end(self, wrappers, epoch, logs):
        self.catch_up(wrappers)
        phase = int(wrappers[0].smart_phase.numpy())
        e = int(wrappers[0].smart_epoch.numpy())  # epochs begun, this one included
        gap = 0.0
        if phase == PHASES["search"]:
            hard = self.hard_masks(wrappers)
            sizes = self._sizes(wrappers)
            soft = self.soft_masks(wrappers)
            total = sum(float(s.sum()) for s in sizes)
            gap = sum(
                float(np.sum(s * np.abs(f - h))) for s, f, h in zip(sizes, soft, hard, strict=True)
            )
            gap /= max(total, 1.0)
            logs["smart_temperature"] = float(wrappers[0].smart_temperature.numpy())
            for (w, i), h in zip(self._entries(wrappers), hard, strict=True):
                w.set_mask(i, h)
            if e >= self.pretrain_epochs + self.search_epochs:
                self.finalize(wrappers, hard)
        else:
            logs["smart_temperature"] = float(wrappers[0].smart_temperature.numpy())
        logs["smart_phase"] = float(wrappers[0].smart_phase.numpy())
        logs["smart_soft_hard_gap"] = gap
        from tf_sparse_prune.callbacks import model_sparsity

        logs["smart_hard_sparsity"] = model_sparsity(wrappers)

    def finalize(self, wrappers, hard: list[np.ndarray] | None = None) -> None:
        """Freezes the hard global top-k mask and starts the fine-tune phase."""
        if hard is None:
            hard = self.hard_masks(wrappers)
        for (w, i), h in zip(self._entries(wrappers), hard, strict=True):
            w.set_mask(i, h)
        self._set_all(wrappers, "smart_temperature", self.final_temperature)
        self._set_all(wrappers, "smart_phase", float(PHASES["finetune"]))

    def callbacks(self) -> list[keras.callbacks.Callback]:
        """``[TemperatureSchedule(self)]``: the pruning hooks and the temperature decay."""
        return [TemperatureSchedule(self)]

    # ---- serialization -------------------------------------------------------------------
    def get_config(self) -> dict:
        return {
            "sparsity": self.sparsity,
            "structure": keras.saving.serialize_keras_object(self.structure),
            "pretrain_epochs": self.pretrain_epochs,
            "search_epochs": self.search_epochs,
            "initial_temperature": self.initial_temperature,
            "final_temperature": self.final_temperature,
            "mask_optimizer": None
            if self.mask_optimizer is None
            else keras.optimizers.serialize(self.mask_optimizer),
            "score_bound": self.score_bound,
            "floor": keras.saving.serialize_keras_object(self.floor),
            "jit_compile": self.jit_compile,
        }


class TemperatureSchedule(PruningCallback):
    """SMART's callback: the pruning hooks, the per-batch temperature decay and the
    exclusion of the mask scores from the optimizer's weight decay.

    Its state (temperature, search step, phase) lives in the wrappers' weights, so it
    survives ``save``/``load_model`` and a resumed ``fit`` continues exactly.
    """

    def on_train_begin(self, logs=None):
        spe = getattr(self.model, "steps_per_execution", 1) or 1
        if int(spe) > 1:
            raise ValueError(
                f"SMART updates the temperature and the global threshold after every batch, "
                f"but the model was compiled with steps_per_execution={spe}; compile it with "
                f"steps_per_execution=1"
            )
        super().on_train_begin(logs)
        scores = [v for w in self.wrappers for v in getattr(w, "smart_scores", [])]
        optimizer = getattr(self.model, "optimizer", None)
        if scores and optimizer is not None:
            if self.algorithm.mask_optimizer is not None:
                optimizer = install_mask_optimizer(self.model, self.algorithm.mask_optimizer)
                optimizer = optimizer.main
            exclude_from_weight_decay(optimizer, scores)

    def on_test_begin(self, logs=None):
        if self.wrappers:  # validation inside fit sees the state of the updated scores
            self.algorithm.catch_up(self.wrappers)


def is_mask_score(variable) -> bool:
    """Whether a variable is one of SMART's mask-score grids (named ``smart_scores_<i>``)."""
    return str(getattr(variable, "name", "")).startswith("smart_scores_")


@keras.saving.register_keras_serializable(package="tf_sparse_prune")
class MaskScoreOptimizer(keras.optimizers.Optimizer):
    """Trains SMART's mask scores with one optimizer and every other variable with another.

    Installed by SMART's callback when ``SMART(mask_optimizer=...)`` is given (you do not
    build it yourself). ``main`` is built over all the model's trainable variables (as it
    was before the swap, so its state carries over), ``masks`` over the score grids;
    ``learning_rate`` and ``iterations`` are ``main``'s, so schedules and callbacks that
    read them see the model's optimizer.

    Args:
        main: The model's optimizer.
        masks: The optimizer of the mask scores.

    Example:
        >>> import keras
        >>> from tf_sparse_prune.algorithms.smart import MaskScoreOptimizer
        >>> opt = MaskScoreOptimizer(keras.optimizers.SGD(0.5), keras.optimizers.Adam(0.01))
        >>> float(opt.learning_rate), type(opt.masks).__name__
        (0.5, 'Adam')
    """

    def __init__(self, main, masks, name: str | None = None, **kwargs) -> None:
        kwargs.pop("learning_rate", None)
        super().__init__(learning_rate=0.0, name=name, **kwargs)
        self.main = keras.optimizers.get(main)
        self.masks = keras.optimizers.get(masks)

    def build(self, var_list):
        if not self.main.built:
            self.main.build(var_list)
        scores = [v for v in var_list if is_mask_score(v)]
        if not self.masks.built:
            self.masks.build(scores)
        super().build(var_list)

    @property
    def variables(self):
        return self._variables + self.main.variables + self.masks.variables

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        variables = list(trainable_variables or self._trainable_variables)
        grads = list(grads)
        rest = [(g, v) for g, v in zip(grads, variables, strict=True) if not is_mask_score(v)]
        score = [(g, v) for g, v in zip(grads, variables, strict=True) if is_mask_score(v)]
        if rest:
            self.main.apply([g for g, _ in rest], [v for _, v in rest])
        if score:
            self.masks.apply([g for g, _ in score], [v for _, v in score])

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        raise NotImplementedError(
            "MaskScoreOptimizer runs with the TensorFlow backend's stateful apply only"
        )

    @property
    def learning_rate(self):
        return self.main.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.main.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.main.iterations

    def finalize_variable_values(self, var_list):
        self.main.finalize_variable_values(var_list)

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "main": keras.optimizers.serialize(self.main),
            "masks": keras.optimizers.serialize(self.masks),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = copy.deepcopy(config)  # deserialize() edits a config in place
        main = keras.optimizers.deserialize(config.pop("main"), custom_objects=custom_objects)
        masks = keras.optimizers.deserialize(config.pop("masks"), custom_objects=custom_objects)
        return cls(main, masks, **config)


def install_mask_optimizer(model: keras.Model, mask_optimizer) -> MaskScoreOptimizer:
    """Makes ``model.optimizer`` route through a :class:`MaskScoreOptimizer` (once; kept
    on save/load).

    The mask optimizer is a fresh copy of ``mask_optimizer`` (its config), so one SMART
    object can prune several models. Under loss scaling (``mixed_float16``) the router
    goes *inside* the ``LossScaleOptimizer``, so both optimizers see unscaled gradients;
    the loss scale carries over. The compile configuration is updated too, so
    ``model.save`` records the router and ``load_model`` restores both optimizers' state.
    """
    current = model.optimizer
    scaled = isinstance(current, keras.optimizers.LossScaleOptimizer)
    inner = current.inner_optimizer if scaled else current
    if isinstance(inner, MaskScoreOptimizer):
        return inner
    masks = keras.optimizers.deserialize(keras.optimizers.serialize(mask_optimizer))
    router = MaskScoreOptimizer(inner, masks)
    router.build(model.trainable_variables)
    outer = router
    if scaled:
        scale = current.initial_scale
        if current.built:
            scale = float(keras.ops.convert_to_numpy(current.dynamic_scale))
        outer = keras.optimizers.LossScaleOptimizer(
            router, initial_scale=scale, dynamic_growth_steps=current.dynamic_growth_steps
        )
        outer.build(model.trainable_variables)
    model.optimizer = outer
    compile_config = getattr(model, "_compile_config", None)
    if compile_config is not None and "optimizer" in getattr(compile_config, "config", {}):
        compile_config.config["optimizer"] = outer
    model.make_train_function(force=True)
    return router


def exclude_from_weight_decay(optimizer: keras.optimizers.Optimizer, variables: list) -> None:
    """Adds ``variables`` to ``optimizer``'s weight-decay exclusions, keeping the others.

    ``Optimizer.exclude_from_weight_decay`` replaces the exclusions and refuses a built
    optimizer (e.g. one restored by ``load_model``); the exclusion set is read when the
    train step is traced, so adding to it (and clearing its cache) works in both cases.
    """
    # under loss scaling the inner optimizer applies the decay
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    keys = {optimizer._var_key(v) for v in variables}
    optimizer._exclude_from_weight_decay = (
        set(getattr(optimizer, "_exclude_from_weight_decay", set())) | keys
    )
    optimizer._exclude_from_weight_decay_cache = {}
