"""Gradual magnitude pruning (GMP; Zhu & Gupta 2017) with tfmot's semantics.

The control for every claim: blocks with the smallest norm are masked on the
schedule's update steps; masked weights are zeroed (as tfmot does) and get zero
gradient, so pruning never reverses.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tf_sparse_prune.algorithms.base import PruningAlgorithm
from tf_sparse_prune.floors import Floor
from tf_sparse_prune.schedules import PolynomialDecay, PruningSchedule, _check_fraction
from tf_sparse_prune.scoring import Scorer, get_scorer
from tf_sparse_prune.structures import Structure

__all__ = ["Magnitude"]

_SCOPES = ("layer", "global")


@keras.saving.register_keras_serializable(package="tf_sparse_prune")
class Magnitude(PruningAlgorithm):
    """Magnitude pruning of blocks on a polynomial schedule.

    Args:
        sparsity: Final fraction of weights to prune, in [0, 1). May be ``None``
            when the structure fixes it (``NM``) or a schedule is given.
        structure: The pruning unit (``None``: :class:`~tf_sparse_prune.Unstructured`).
        schedule: When and how much (``None``: automatic, resolved at the start of
            ``fit`` from its epochs and steps: a cubic ramp from 0 to ``sparsity``
            over the first 70% of the steps, about 10 updates, our choice).
        scope: ``"layer"`` ranks blocks within each layer (every layer reaches the
            target); ``"global"`` ranks all pruned layers together, with scores
            made comparable across block sizes (``Scorer.comparable``).
        criterion: Block score: ``"l2"`` (default), ``"l1"`` or a ``Scorer``.
        floor: What every layer keeps (``None``: :class:`~tf_sparse_prune.Floor`'s default,
            1% of its weights and the best block of every row), in both scopes.

    Example:
        >>> import keras, numpy as np, tf_sparse_prune as tsp
        >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(32)])
        >>> pruner = tsp.Magnitude(sparsity=0.5, structure=tsp.OneByN(16))
        >>> pruned = tsp.prune_model(model, pruner, layers="all")   # a lone Dense is the classifier
        >>> pruned.compile("sgd", "mse")
        >>> _ = pruned.fit(np.ones((64, 8)), np.ones((64, 32)), epochs=2, verbose=0,
        ...                callbacks=pruner.callbacks())
        >>> round(tsp.sparsity_report(pruned)[0].sparsity, 2)
        0.5
    """

    def __init__(
        self,
        sparsity: float | None = None,
        structure: Structure | None = None,
        schedule: PruningSchedule | None = None,
        scope: str = "layer",
        criterion: str | Scorer | None = None,
        floor: Floor | None = None,
    ):
        super().__init__(structure, floor)
        name = "Magnitude"
        fixed = self.structure.fixed_sparsity()
        if sparsity is None:
            if fixed is not None:
                sparsity = fixed
            elif schedule is not None:
                sparsity = schedule.final_sparsity
            else:
                raise ValueError(f"{name}: sparsity is required (a fraction in [0, 1), e.g. 0.75)")
        sparsity = _check_fraction(name, "sparsity", sparsity)
        self.floor.check_sparsity(name, sparsity)
        if fixed is not None and abs(sparsity - fixed) > 1e-9:
            raise ValueError(
                f"{name}: structure {self.structure!r} fixes the sparsity at {fixed}; pass "
                f"sparsity={fixed} or leave it None"
            )
        if schedule is not None:
            if not isinstance(schedule, PruningSchedule):
                raise TypeError(
                    f"{name}: schedule={schedule!r} is not a schedule; pass "
                    f"tsp.PolynomialDecay(...) or tsp.ConstantSparsity(...) or None"
                )
            if abs(schedule.final_sparsity - sparsity) > 1e-9:
                raise ValueError(
                    f"{name}: sparsity={sparsity} differs from the schedule's final sparsity "
                    f"{schedule.final_sparsity}; give one of them or make them equal"
                )
        if scope not in _SCOPES:
            raise ValueError(f"{name}: scope={scope!r} is invalid; valid: {list(_SCOPES)}")
        if scope == "global" and not self.structure.supports_global:
            raise ValueError(
                f"{name}: {self.structure!r} fixes a per-group pattern and cannot be ranked "
                f"globally; use scope='layer'"
            )
        self.sparsity = sparsity
        self.schedule = schedule
        self.scope = scope
        self.scorer = get_scorer(criterion, name)
        self._active_schedule: PruningSchedule | None = schedule
        self._compiled: tuple | None = None

    @property
    def global_budget(self) -> bool:
        return self.scope == "global"

    # ---- schedule -------------------------------------------------------------------
    def resolve_schedule(self, params: dict) -> PruningSchedule:
        """The schedule in force: the given one, or the automatic one for ``params``."""
        if self.schedule is not None:
            return self.schedule
        epochs, steps = params.get("epochs"), params.get("steps")
        if not epochs or not steps:
            raise ValueError(
                "Magnitude(schedule=None) derives its schedule from fit's epochs and steps per "
                f"epoch, but fit reported epochs={epochs}, steps={steps} (a dataset of unknown "
                "length?); pass steps_per_epoch to fit or an explicit schedule, e.g. "
                "tsp.PolynomialDecay(0.0, sparsity, begin_step, end_step, frequency)"
            )
        ramp = max(1, round(0.7 * epochs * steps))
        frequency = max(1, min(100, ramp // 10))
        end = frequency * max(1, ramp // frequency)
        return PolynomialDecay(0.0, self.sparsity, begin_step=0, end_step=end, frequency=frequency)

    def on_train_begin(self, wrappers, params):
        self._active_schedule = self.resolve_schedule(params)

    def on_train_batch_begin(self, wrappers, step):
        schedule = self._active_schedule
        if schedule is None:
            raise RuntimeError("Magnitude: on_train_batch_begin before on_train_begin")
        should, sparsity = schedule(step)
        if should:
            self.update_masks(wrappers, sparsity)

    # ---- masks ----------------------------------------------------------------------
    def _block_scores(self, wrapper, index):
        var, depthwise = wrapper.targets[index]
        kernel = var.numpy()
        effective = kernel * wrapper.expanded_mask_numpy(index)
        scores = wrapper.structure.reduce(effective, depthwise, self.scorer)
        sizes = wrapper.structure.block_sizes(kernel.shape, depthwise)
        return scores, sizes

    def update_masks(self, wrappers, sparsity: float) -> None:
        """Recomputes every wrapper's masks for ``sparsity`` and zeroes masked weights.

        With a scorer that takes tensors (``"l1"``, ``"l2"``) the update is one compiled
        function over all layers (traced once per model): no kernel leaves the device.
        Other scorers (e.g. a numpy :class:`~tf_sparse_prune.scoring.Scorer` of your own)
        run the same selection in numpy.

        Args:
            wrappers: The wrappers of the model (``tsp.wrappers.collect_wrappers``).
            sparsity: The fraction of weights to prune now.
        """
        if self.scorer.supports_tensors:
            self._compiled_update(wrappers)(tf.constant(sparsity, tf.float64))
            return
        items = [(w, i) for w in wrappers for i in range(len(w.targets))]
        scored = [self._block_scores(w, i) for w, i in items]
        kept = [self.protected(w, i, s) for (w, i), (s, _) in zip(items, scored, strict=True)]
        if self.scope == "layer":
            masks = [
                w.structure.select(s, sparsity, z, p)
                for (w, _), (s, z), p in zip(items, scored, kept, strict=True)
            ]
        else:
            masks = self._select_global(scored, sparsity, kept)
        for (w, i), mask in zip(items, masks, strict=True):
            w.set_mask(i, mask)
            var, _ = w.targets[i]
            kernel = var.numpy()
            var.assign(np.where(w.expanded_mask_numpy(i) != 0, kernel, np.zeros_like(kernel)))

    def _compiled_update(self, wrappers):
        """The tensor form of :meth:`update_masks` over ``wrappers``, compiled once."""
        key = tuple(id(w) for w in wrappers)
        if self._compiled is not None and self._compiled[0] == key:
            return self._compiled[1]
        items = [(w, i) for w in wrappers for i in range(len(w.targets))]

        @tf.function
        def update(sparsity):
            kernels, scored = [], []
            for w, i in items:
                var, depthwise = w.targets[i]
                shape = tuple(int(d) for d in var.shape)
                kernel = tf.convert_to_tensor(var)
                mask = w.structure.expand(tf.convert_to_tensor(w.masks[i]), shape, depthwise)
                scores = self.scorer(w.structure.to_blocks(kernel * mask, depthwise))
                sizes = w.structure.block_sizes(shape, depthwise)
                kernels.append(kernel)
                scored.append((scores, sizes, self.protected(w, i, scores)))
            if self.scope == "layer":
                masks = [
                    w.structure.select(s, sparsity, z, p)
                    for (w, _), (s, z, p) in zip(items, scored, strict=True)
                ]
            else:
                masks = self._select_global(
                    [(s, z) for s, z, _ in scored], sparsity, [p for _, _, p in scored]
                )
            for (w, i), kernel, mask in zip(items, kernels, masks, strict=True):
                var, depthwise = w.targets[i]
                w.masks[i].assign(mask)
                keep = w.structure.expand(mask, tuple(int(d) for d in var.shape), depthwise)
                var.assign(tf.where(keep != 0, kernel, tf.zeros_like(kernel)))

        self._compiled = (key, update)
        return update

    def _select_global(self, scored, sparsity, kept):
        from tf_sparse_prune.structures import select_by_weight_budget

        flat = [self.scorer.comparable(s, z) for s, z in scored]
        sizes = np.concatenate([z.reshape(-1) for _, z in scored])
        counts = [int(np.prod(z.shape)) for _, z in scored]
        if tf.is_tensor(flat[0]):
            mask = select_by_weight_budget(
                tf.concat([tf.reshape(f, [-1]) for f in flat], 0),
                sparsity,
                sizes,
                tf.concat([tf.reshape(k, [-1]) for k in kept], 0),
            )
            parts = tf.split(mask, counts)
            return [tf.reshape(p, z.shape) for p, (_, z) in zip(parts, scored, strict=True)]
        mask = select_by_weight_budget(
            np.concatenate([f.reshape(-1) for f in flat]),
            sparsity,
            sizes,
            np.concatenate([k.reshape(-1) for k in kept]),
        )
        out, start = [], 0
        for count, (_, z) in zip(counts, scored, strict=True):
            out.append(mask[start : start + count].reshape(z.shape))
            start += count
        return out

    # ---- serialization ----------------------------------------------------------------
    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "sparsity": self.sparsity,
                "schedule": None
                if self.schedule is None
                else keras.saving.serialize_keras_object(self.schedule),
                "scope": self.scope,
                "criterion": keras.saving.serialize_keras_object(self.scorer),
            }
        )
        return config
