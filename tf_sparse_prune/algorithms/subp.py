"""SUBP: soft uniform block pruning for 1xN sparse CNNs (Xiang et al., NeurIPS 2023; SPEC §5).

Once per epoch in the pruning-regrowing stage every layer's 1xN mask is rebuilt:
the blocks of each row (a group of ``n`` output channels) are scored (BPAR by
default) on the currently masked kernel ``W * M``, the top
``C_in - floor(p * C_in)`` of every row are kept (*uniform*: each row keeps the
same count, which balances the threads of the 1xN kernel), and then
``K_t = round(delta_t * C_in)`` of the row's pruned blocks are regrown, sampled
without replacement with probability proportional to ``exp(S_hat / tau)``.
Between updates the pruning is *soft*: masked weights keep receiving gradients
(straight-through) plus a decay ``2e-4 * (1 - M) * W``. From ``t_e`` on the mask
is final and hard (masked weights are zeroed and get zero gradient).

When masks update (Algorithm 1 and the official code): at the **start** of epoch
``t`` (0-based, as Keras counts), for ``t_s < t <= t_e``, so the mask rebuilt from
the weights trained in epoch ``t - 1`` is the one epoch ``t`` trains with; this
is Algorithm 1's "train epoch t, then update if t_s < t <= t_e" with its epochs
counted from 1. The update at ``t_e`` regrows nothing, whatever the decay, so the
final mask meets the target exactly.

Each epoch's logs get ``subp_regrow_factor``, the ``delta_t`` of the update at its
start (0 without one, and at the final update).

State: ``t`` is SUBP's own count of epochs begun, ``subp_epoch`` in every wrapper,
and the phase is ``subp_soft`` (1 soft, 0 final); both are weights saved with the
model, like the masks. Regrowth draws come from a generator seeded by
``(seed, t, layer index, kernel index)``, so no random state needs saving: a
resumed run rebuilds exactly the masks an unbroken run would.

Example:
    >>> import keras, numpy as np, tf_sparse_prune as tsp
    >>> from tf_sparse_prune.algorithms.subp import SUBP
    >>> model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32)])
    >>> pruner = SUBP(sparsity=0.75, n=16, regrow_start_epoch=0, regrow_end_epoch=2)
    >>> pruned = tsp.prune_model(model, pruner, layers="all")   # a lone Dense is the classifier
    >>> pruned.compile("sgd", "mse")
    >>> _ = pruned.fit(np.ones((32, 16)), np.ones((32, 32)), epochs=3, verbose=0,
    ...                callbacks=pruner.callbacks())
    >>> tsp.sparsity_report(pruned)[0].sparsity      # each row keeps 4 of its 16 blocks
    0.75
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tf_sparse_prune.algorithms.base import PruningAlgorithm
from tf_sparse_prune.floors import Floor
from tf_sparse_prune.schedules import REGROW_DECAYS, _check_fraction, regrow_factor
from tf_sparse_prune.scoring import BPAR, Scorer, get_scorer
from tf_sparse_prune.structures import OneByN, StructureError

__all__ = ["REGROW_MODES", "SCORE_ON", "SUBP", "pruned_per_row", "uniform_prune_regrow"]

#: how pruned blocks are regrown: importance-sampled (the method), uniformly, or not at all
REGROW_MODES = ("importance", "random", "none")

#: what the block scores are computed on: the masked kernel ``W * M`` (SPEC §5, the
#: official code) or the whole trained kernel ``W`` (Algorithm 1 line 9 resets the mask
#: to 1 before scoring, so blocks pruned softly compete again with their trained weights)
SCORE_ON = ("masked", "weights")

#: fraction of fit's epochs used as t_e when ``regrow_end_epoch=None``
AUTO_END_FRACTION = 0.6


def pruned_per_row(sparsity: float, blocks: int) -> int:
    """Blocks pruned in every row: ``floor(sparsity * blocks)`` (a 1e-9 guard absorbs
    float error, e.g. ``0.7 * 10``)."""
    return math.floor(sparsity * blocks + 1e-9)


def uniform_prune_regrow(
    scores: np.ndarray,
    sparsity: float,
    regrow: int,
    rng: np.random.Generator,
    temperature: float = 1.0,
    mode: str = "importance",
) -> np.ndarray:
    """One SUBP mask update of a layer (Eq. 5, then Algorithm 1 lines 13-16).

    Every row keeps its top ``C - floor(sparsity * C)`` blocks by score (ties: lower
    index first), then ``regrow`` of its pruned blocks come back, drawn without
    replacement with ``P ∝ exp(S_hat / temperature)`` where ``S_hat`` are the pruned
    blocks' scores L2-normalised over the row (as the official code does;
    ``mode="random"``: uniform ``P``; ``mode="none"``: nothing regrows). The draw
    is Gumbel-top-k, which is exactly successive sampling without replacement, for
    all rows at once.

    Args:
        scores: ``(rows, C)`` block scores, higher is more important.
        sparsity: ``p``, the fraction of each row's blocks to prune.
        regrow: ``K_t``, blocks regrown per row (at most ``floor(p * C)``).
        rng: The generator of the draw.
        temperature: ``tau`` (> 0).
        mode: One of :data:`REGROW_MODES`.

    Returns:
        A float32 ``(rows, C)`` mask in which every row holds the same number of ones,
        ``C - floor(p * C) + regrow``.

    Example:
        >>> import numpy as np
        >>> from tf_sparse_prune.algorithms.subp import uniform_prune_regrow
        >>> scores = np.array([[4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
        >>> uniform_prune_regrow(scores, 0.5, 0, np.random.default_rng(0))
        array([[1., 1., 0., 0.],
               [0., 0., 1., 1.]], dtype=float32)
        >>> uniform_prune_regrow(scores, 0.5, 1, np.random.default_rng(0)).sum(1)
        array([3., 3.], dtype=float32)
    """
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2:
        raise ValueError(f"uniform_prune_regrow: scores must be (rows, C), got {scores.shape}")
    if mode not in REGROW_MODES:
        raise ValueError(f"uniform_prune_regrow: mode={mode!r} is unknown; valid: {REGROW_MODES}")
    _rows, c = scores.shape
    n_prune = pruned_per_row(sparsity, c)
    if not 0 <= regrow <= n_prune:
        raise ValueError(
            f"uniform_prune_regrow: regrow={regrow} must be in [0, {n_prune}] (the blocks "
            f"pruned per row)"
        )
    order = np.argsort(-scores, axis=1, kind="stable")  # best first, ties by position
    mask = np.zeros(scores.shape, np.float32)
    np.put_along_axis(mask, order[:, : c - n_prune], 1.0, axis=1)
    if regrow == 0 or mode == "none":
        return mask
    candidates = order[:, c - n_prune :]  # (rows, n_prune), the pruned blocks
    if mode == "importance":
        s = np.take_along_axis(scores, candidates, axis=1)
        norm = np.linalg.norm(s, axis=1, keepdims=True)
        logits = np.divide(s, norm, out=np.zeros_like(s), where=norm > 0) / temperature
    else:
        logits = np.zeros(candidates.shape)
    keys = logits + rng.gumbel(size=candidates.shape)
    chosen = np.argsort(-keys, axis=1, kind="stable")[:, :regrow]
    np.put_along_axis(mask, np.take_along_axis(candidates, chosen, axis=1), 1.0, axis=1)
    return mask


def _check_epoch(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"SUBP: {name}={value!r} is invalid; it must be an epoch index >= 0")
    return int(value)


@keras.saving.register_keras_serializable(package="tf_sparse_prune")
class SUBP(PruningAlgorithm):
    """Soft uniform 1xN block pruning with importance-sampled regrowth (see the module doc).

    Conv2D and Dense layers are pruned as ``OneByN(n)`` along their output
    channels/units; DepthwiseConv2D layers stay dense (each of their rows would
    hold one block) and :func:`~tf_sparse_prune.sparsity_report` says so.

    Args:
        sparsity: ``p``, the fraction of every row's blocks (so of every layer's
            weights, up to ``floor``) to prune, in [0, 1).
        n: Output channels per block (N of 1xN).
        criterion: Block score: ``"bpar"`` (Eq. 4, the default), ``"l1"``, ``"l2"`` or
            a :class:`~tf_sparse_prune.scoring.Scorer` that returns one score per block
            of a row.
        balance: ``lambda`` of BPAR (used by ``criterion="bpar"`` only).
        sampling_temperature: ``tau`` of the regrowth distribution (> 0).
        regrow_start_epoch: ``t_s``; masks update at the start of epochs ``t_s < t <= t_e``.
        regrow_end_epoch: ``t_e`` (> ``t_s``), the epoch from whose start the mask is
            final and hard. ``None``: ``round(0.6 * epochs)`` of ``fit`` (resolved when
            training starts; a resumed ``fit(epochs=E, initial_epoch=k)`` gives the same).
        initial_regrow: ``delta_0``, the fraction of a row's blocks regrown at ``t_s``:
            ``"full"`` (= ``sparsity``) or a float in (0, sparsity].
        regrow_decay: How ``delta_t`` decays to 0 at ``t_e``: ``"cubic"`` (Eq. 6),
            ``"linear"``, ``"cosine"`` or ``"constant"`` (see
            :func:`~tf_sparse_prune.schedules.regrow_factor`).
        regrow: ``"importance"`` (the method), ``"random"`` (uniform sampling) or
            ``"none"`` (ablations).
        seed: Seed of the regrowth draws (an integer >= 0).
        pad: Allow ``C_out`` not divisible by ``n`` (the last row is narrower).
        masked_decay: The decay added to masked weights' gradients in the soft phase
            (``masked_decay * (1 - M) * W``, i.e. a loss ``masked_decay / 2 * sum((1 - M) W^2)``).
        score_on: ``"masked"`` scores ``W * M`` (SPEC §5; a block pruned and not regrown
            scores as a zero block); ``"weights"`` scores the trained ``W`` (Algorithm 1
            line 9 resets the mask first), so softly pruned blocks compete again.
        floor: What every layer keeps (``None``: :class:`~tf_sparse_prune.Floor`'s default).
            Uniform rows honour it by construction: every row keeps
            ``C_in - floor(p * C_in) >= 1`` blocks, and ``p <= 1 - min_fraction`` is checked.

    Raises:
        ValueError: for an argument outside its valid values (the message names it).

    Example:
        >>> from tf_sparse_prune.algorithms.subp import SUBP
        >>> pruner = SUBP(sparsity=0.75, n=16, regrow_start_epoch=1, regrow_end_epoch=5)
        >>> [round(pruner.regrow_factor(t, 5), 4) for t in range(2, 6)]
        [0.7383, 0.6562, 0.4336, 0.0]
        >>> pruner.regrow_count(pruner.regrow_factor(2, 5), 64)   # blocks regrown per row
        47
    """

    def __init__(
        self,
        sparsity: float,
        n: int = 16,
        criterion: str | Scorer = "bpar",
        balance: float = 1.0,
        sampling_temperature: float = 1.0,
        regrow_start_epoch: int = 1,
        regrow_end_epoch: int | None = None,
        initial_regrow: str | float = "full",
        regrow_decay: str = "cubic",
        regrow: str = "importance",
        seed: int = 0,
        pad: bool = False,
        masked_decay: float = 2e-4,
        score_on: str = "masked",
        floor: Floor | None = None,
    ):
        super().__init__(OneByN(n, pad=pad), floor)
        name = "SUBP"
        self.sparsity = _check_fraction(name, "sparsity", sparsity)
        self.floor.check_sparsity(name, self.sparsity)
        bpar = BPAR(balance)  # validates balance whatever the criterion
        if isinstance(criterion, str) and criterion.lower() == "bpar":
            self.scorer: Scorer = bpar
        else:
            self.scorer = get_scorer(criterion, name)
            if isinstance(self.scorer, BPAR) and self.scorer.balance != float(balance):
                raise ValueError(
                    f"{name}: balance={balance!r} differs from the BPAR criterion's balance "
                    f"{self.scorer.balance}; give it once (criterion='bpar', balance=...)"
                )
        self.balance = self.scorer.balance if isinstance(self.scorer, BPAR) else bpar.balance
        if (
            isinstance(sampling_temperature, bool)
            or not isinstance(sampling_temperature, (int, float))
            or not sampling_temperature > 0
        ):
            raise ValueError(
                f"{name}: sampling_temperature={sampling_temperature!r} is invalid; it must be "
                f"a number > 0"
            )
        self.sampling_temperature = float(sampling_temperature)
        self.regrow_start_epoch = _check_epoch("regrow_start_epoch", regrow_start_epoch)
        if regrow_end_epoch is not None:
            regrow_end_epoch = _check_epoch("regrow_end_epoch", regrow_end_epoch)
            if regrow_end_epoch <= self.regrow_start_epoch:
                raise ValueError(
                    f"{name}: regrow_end_epoch={regrow_end_epoch} must be larger than "
                    f"regrow_start_epoch={self.regrow_start_epoch} (t_e > t_s)"
                )
        self.regrow_end_epoch = regrow_end_epoch
        if isinstance(initial_regrow, str):
            if initial_regrow != "full":
                raise ValueError(
                    f"{name}: initial_regrow={initial_regrow!r} is invalid; pass 'full' "
                    f"(= sparsity) or a float in (0, sparsity={self.sparsity}]"
                )
        elif (
            isinstance(initial_regrow, bool)
            or not isinstance(initial_regrow, (int, float))
            or not 0.0 < float(initial_regrow) <= self.sparsity
        ):
            raise ValueError(
                f"{name}: initial_regrow={initial_regrow!r} is outside (0, sparsity="
                f"{self.sparsity}]; pass 'full' or a fraction of the row's blocks in that range"
            )
        else:
            initial_regrow = float(initial_regrow)
        self.initial_regrow = initial_regrow
        if regrow_decay not in REGROW_DECAYS:
            raise ValueError(
                f"{name}: regrow_decay={regrow_decay!r} is unknown; valid: {sorted(REGROW_DECAYS)}"
            )
        self.regrow_decay = regrow_decay
        if regrow not in REGROW_MODES:
            raise ValueError(f"{name}: regrow={regrow!r} is unknown; valid: {list(REGROW_MODES)}")
        self.regrow = regrow
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"{name}: seed={seed!r} is invalid; it must be an integer >= 0")
        self.seed = int(seed)
        self.pad = bool(pad)
        if isinstance(masked_decay, bool) or not isinstance(masked_decay, (int, float)):
            raise ValueError(f"{name}: masked_decay={masked_decay!r} must be a number >= 0")
        if masked_decay < 0:
            raise ValueError(f"{name}: masked_decay={masked_decay!r} must be a number >= 0")
        self.masked_decay = float(masked_decay)
        if score_on not in SCORE_ON:
            raise ValueError(f"{name}: score_on={score_on!r} is unknown; valid: {list(SCORE_ON)}")
        self.score_on = score_on
        self._end: int | None = regrow_end_epoch
        self._epochs: int | None = None
        self._last_factor = 0.0

    # ---- layers ----------------------------------------------------------------------
    @property
    def n(self) -> int:
        """Output channels per block."""
        return self.structure.n

    def check_layer(self, layer, kernel_shape, depthwise):
        if depthwise:
            raise StructureError(
                "SUBP leaves DepthwiseConv2D dense: each output channel sees one input channel, "
                "so a 1xN row holds a single block and uniform row pruning cannot thin it"
            )
        super().check_layer(layer, kernel_shape, depthwise)

    # ---- state and forward pass ----------------------------------------------------------
    def build(self, wrapper):
        wrapper.add_state("subp_epoch", 0, "int64")
        wrapper.add_state("subp_soft", 1.0)

    def effective_kernel(self, wrapper, index, kernel, training):
        """``kernel * mask`` in value; gradient 1 everywhere while soft, ``mask`` once final."""
        grid = keras.ops.convert_to_tensor(wrapper.masks[index])
        soft = keras.ops.greater(wrapper.subp_soft, 0.5)
        structure, depthwise = wrapper.structure, wrapper.targets[index][1]

        # A custom gradient, not the straight-through identity
        # ``k * through + stop_gradient(k * mask - k * through)``: one kernel-sized product
        # forward, and backward none while soft (the gradient passes through) or one.
        @tf.custom_gradient
        def straight_through(k):
            def grad(upstream):
                return tf.cond(
                    soft, lambda: upstream, lambda: structure.apply(upstream, grid, depthwise)
                )

            return structure.apply(k, grid, depthwise), grad

        # a tensor, not the variable Keras passes as its value (custom_gradient would
        # then ask for the variable's gradient separately)
        return straight_through(tf.convert_to_tensor(kernel))

    def loss(self, wrapper) -> Any | None:
        """``masked_decay / 2 * sum((1 - M) * W^2)`` in the soft phase (0 once final)."""
        if self.masked_decay == 0:
            return None
        total = 0.0
        for i, (var, depthwise) in enumerate(wrapper.targets):
            kernel = tf.convert_to_tensor(var)
            unmasked = 1.0 - keras.ops.convert_to_tensor(wrapper.masks[i])

            # value and gradient (``(1 - M) * W``) from one kernel-sized product: with a 0/1
            # mask, ``(1 - M) W^2 = ((1 - M) W)^2``
            @tf.custom_gradient
            def half_square(k, unmasked=unmasked, depthwise=depthwise):
                uk = wrapper.structure.apply(k, unmasked, depthwise)

                def grad(upstream):
                    return upstream * uk

                return tf.nn.l2_loss(uk), grad

            total = total + half_square(kernel)
        return self.masked_decay * keras.ops.cast(wrapper.subp_soft, "float32") * total

    # ---- schedule ----------------------------------------------------------------------
    @property
    def initial_factor(self) -> float:
        """``delta_0`` as a fraction."""
        return self.sparsity if self.initial_regrow == "full" else float(self.initial_regrow)

    def resolve_end_epoch(self, params: dict) -> int:
        """``t_e``: the given one, or ``round(0.6 * epochs)`` of ``fit``'s ``params``."""
        if self.regrow_end_epoch is not None:
            return self.regrow_end_epoch
        epochs = params.get("epochs")
        if not epochs:
            raise ValueError(
                "SUBP(regrow_end_epoch=None) takes t_e as 60% of fit's epochs, but fit reported "
                f"epochs={epochs}; pass regrow_end_epoch"
            )
        end = round(AUTO_END_FRACTION * epochs)
        if end <= self.regrow_start_epoch:
            raise ValueError(
                f"SUBP(regrow_end_epoch=None): 60% of fit's {epochs} epochs gives t_e={end}, "
                f"not after regrow_start_epoch={self.regrow_start_epoch}; train for more epochs, "
                f"or pass regrow_start_epoch and regrow_end_epoch"
            )
        return end

    def regrow_factor(self, epoch: int, end: int | None = None) -> float:
        """``delta_t`` at the update of epoch ``t`` (0 at ``t_e``: the final mask regrows none)."""
        end = self._end if end is None else end
        if end is None:
            raise ValueError("SUBP.regrow_factor: t_e is unknown before fit starts; pass end")
        if epoch >= end:
            return 0.0
        return regrow_factor(
            self.regrow_decay, self.initial_factor, epoch, self.regrow_start_epoch, end
        )

    def regrow_count(self, factor: float, blocks: int) -> int:
        """``K_t = round(factor * C_in)`` blocks per row, at most the ``floor(p * C_in)`` pruned."""
        if self.regrow == "none":
            return 0
        return min(round(factor * blocks), pruned_per_row(self.sparsity, blocks))

    # ---- training hooks ------------------------------------------------------------------
    def on_train_begin(self, wrappers, params):
        self._end = self.resolve_end_epoch(params)
        self._epochs = params.get("epochs")

    def on_epoch_begin(self, wrappers, epoch):
        if self._end is None:
            raise RuntimeError("SUBP: on_epoch_begin before on_train_begin")
        t = int(wrappers[0].subp_epoch.numpy())
        for w in wrappers:
            w.subp_epoch.assign(t + 1)
        self._last_factor = 0.0
        if float(wrappers[0].subp_soft.numpy()) == 0.0:
            return  # the mask is final: it never changes again
        if t >= self._end:
            self.update_masks(wrappers, t, final=True)
        elif t > self.regrow_start_epoch:
            self.update_masks(wrappers, t, final=False)

    def on_epoch_end(self, wrappers, epoch, logs):
        logs["subp_regrow_factor"] = self._last_factor
        if (
            self._epochs is not None
            and epoch == self._epochs - 1
            and float(wrappers[0].subp_soft.numpy()) != 0.0
        ):
            warnings.warn(
                f"SUBP: fit ended before the final mask (it comes at the start of epoch "
                f"t_e={self._end}): the masks are still soft. Resume training to reach t_e; "
                f"strip_pruning now would keep the current mask",
                UserWarning,
                stacklevel=2,
            )

    # ---- masks -------------------------------------------------------------------------
    def update_masks(self, wrappers, epoch: int, final: bool = False) -> None:
        """Rebuilds every wrapper's masks for the update at the start of epoch ``epoch``.

        Args:
            wrappers: The model's wrappers, in model order (the order seeds the draws).
            epoch: ``t``.
            final: The last update (``t >= t_e``): no regrowth, masked weights are
                zeroed and the phase becomes hard.
        """
        factor = 0.0 if final else self.regrow_factor(epoch)
        self._last_factor = factor
        for layer_index, w in enumerate(wrappers):
            for i, (var, depthwise) in enumerate(w.targets):
                kernel = var.numpy()
                effective = kernel
                if self.score_on == "masked":
                    effective = kernel * w.expanded_mask_numpy(i)
                scores = self.scorer(np.asarray(w.structure.to_blocks(effective, depthwise)))
                k = self.regrow_count(factor, scores.shape[-1])
                rng = np.random.default_rng([self.seed, epoch, layer_index, i])
                mask = uniform_prune_regrow(
                    scores, self.sparsity, k, rng, self.sampling_temperature, self.regrow
                )
                w.set_mask(i, mask)
                if final:
                    keep = w.expanded_mask_numpy(i) != 0
                    var.assign(np.where(keep, kernel, np.zeros_like(kernel)))
            w.subp_soft.assign(0.0 if final else 1.0)

    # ---- serialization -----------------------------------------------------------------
    def get_config(self) -> dict:
        return {
            "sparsity": self.sparsity,
            "n": self.n,
            "criterion": keras.saving.serialize_keras_object(self.scorer),
            "balance": self.balance,
            "sampling_temperature": self.sampling_temperature,
            "regrow_start_epoch": self.regrow_start_epoch,
            "regrow_end_epoch": self.regrow_end_epoch,
            "initial_regrow": self.initial_regrow,
            "regrow_decay": self.regrow_decay,
            "regrow": self.regrow,
            "seed": self.seed,
            "pad": self.pad,
            "masked_decay": self.masked_decay,
            "score_on": self.score_on,
            "floor": keras.saving.serialize_keras_object(self.floor),
        }
