"""PDP: parameter-free differentiable pruning (Cho et al. 2023; SPEC §4), a baseline.

Every forward pass in training computes a soft mask from the weights themselves::

    m(B) = sigmoid((||B||^2 - t^2) / tau)

per block ``B`` (one weight for ``Unstructured``, so ``||B||^2 = w^2``), where ``t^2`` is
the midpoint between the smallest kept and the largest pruned squared score of the
layer at the current pruning ratio ``r`` (per group of ``m`` for ``NM(n, m)``). The
ratio ramps per epoch, ``r = min(1, ramp * (epoch + 1)) * sparsity``. ``t`` is held
fixed in the backward pass (``stop_gradient``, our choice): the weights receive the
mask's gradient through their own scores. Ratios count blocks, which is the weight
fraction when a layer's blocks have equal sizes (no padding).

At the end of the last epoch of ``fit`` the mask becomes hard, ``m >= 0.5``: the top
blocks at the full ``sparsity`` (a ramp still short of it at that point is completed
then, with a warning). Each epoch end in the soft phase stores the current hard mask
(``m >= 0.5`` at the current ratio) in the wrappers' masks, for reports.

State in every wrapper: ``pdp_ratio`` (``r``), ``pdp_epoch`` (epochs begun) and
``pdp_soft`` (1 soft, 0 final). Logs per epoch: ``pdp_ratio``.

Example:
    >>> import keras, numpy as np, tf_sparse_prune as tsp
    >>> from tf_sparse_prune.algorithms.pdp import PDP
    >>> model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32)])
    >>> pruner = PDP(sparsity=0.75, structure=tsp.OneByN(16), ramp=0.5)
    >>> pruned = tsp.prune_model(model, pruner, layers="all")   # a lone Dense is the classifier
    >>> pruned.compile("sgd", "mse")
    >>> hist = pruned.fit(np.ones((32, 16)), np.ones((32, 32)), epochs=2, verbose=0,
    ...                   callbacks=pruner.callbacks())
    >>> hist.history["pdp_ratio"], tsp.sparsity_report(pruned)[0].sparsity
    ([0.375, 0.75], 0.75)
"""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np
import tensorflow as tf

from tf_sparse_prune.algorithms.base import PruningAlgorithm
from tf_sparse_prune.floors import Floor
from tf_sparse_prune.schedules import _check_fraction
from tf_sparse_prune.structures import NM

__all__ = ["PDP", "pdp_mask"]


def pdp_mask(scores, ratio, temperature, group: int | None = None, keep_min: int = 0, kept=None):
    """The PDP soft mask of a grid of squared block scores (a tensor; float32).

    Args:
        scores: Squared block norms, any shape (the last axis is the group for N:M).
        ratio: Fraction of blocks (of each group when ``group``) to prune.
        temperature: ``tau`` (> 0).
        group: ``m`` for N:M: prune within each group of the last axis.
        keep_min: At least this many kept per group (``n`` of N:M).
        kept: Grid-shaped booleans held at 1 whatever their score (a floor's blocks).

    Example:
        >>> import numpy as np
        >>> from tf_sparse_prune.algorithms.pdp import pdp_mask
        >>> np.round(pdp_mask(np.array([4.0, 1.0, 9.0, 0.0]), 0.5, 1e-4).numpy(), 3)
        array([1., 0., 1., 0.], dtype=float32)
    """
    s = tf.cast(tf.convert_to_tensor(scores), tf.float32)
    r = tf.cast(tf.convert_to_tensor(ratio), tf.float32)
    if group is None:
        flat = tf.reshape(s, [-1])
        n = int(flat.shape[0])
        ranked = tf.sort(tf.stop_gradient(flat), direction="DESCENDING")[None]
    else:
        n = group
        ranked = tf.sort(tf.stop_gradient(s), axis=-1, direction="DESCENDING")
        ranked = tf.reshape(ranked, [-1, n])
    pruned = tf.cast(tf.round(r * n), tf.int32)
    pruned = tf.clip_by_value(pruned, 0, n - max(1, keep_min))
    keep = n - pruned  # >= 1
    upper = tf.gather(ranked, tf.maximum(keep - 1, 0), axis=-1)
    lower = tf.gather(ranked, tf.minimum(keep, n - 1), axis=-1)
    t2 = 0.5 * (upper + lower)
    # one threshold per layer, or per group (broadcast over the group's last axis)
    t2 = tf.reshape(t2, []) if group is None else tf.reshape(t2, tf.shape(s)[:-1])[..., None]
    soft = tf.sigmoid((s - t2) / tf.cast(temperature, tf.float32))
    soft = tf.where(pruned > 0, soft, tf.ones_like(soft))
    if kept is not None:
        soft = tf.where(tf.convert_to_tensor(kept), tf.ones_like(soft), soft)
    return soft


@keras.saving.register_keras_serializable(package="tf_sparse_prune")
class PDP(PruningAlgorithm):
    """Parameter-free differentiable pruning (see the module doc).

    Args:
        sparsity: Target fraction to prune, in [0, 1) (for ``NM(n, m)``: ``1 - n/m`` or ``None``).
        structure: Any structure (default ``Unstructured``); blocks are scored by their
            squared L2 norm.
        temperature: ``tau`` (> 0; paper: 1e-4).
        ramp: ``epsilon`` of the ratio ramp ``min(1, epsilon (epoch + 1))`` (in (0, 1]).
        floor: What every layer keeps (``None``: :class:`~tf_sparse_prune.Floor`'s default):
            the floor's blocks hold a mask of 1 in the soft and the hard phase.

    Raises:
        ValueError: for an argument outside its valid values (the message names it).

    Example:
        >>> from tf_sparse_prune.algorithms.pdp import PDP
        >>> PDP(0.7, ramp=0.25).ratio_at(1)
        0.35
    """

    def __init__(
        self,
        sparsity=None,
        structure=None,
        temperature: float = 1e-4,
        ramp=0.015,
        floor: Floor | None = None,
    ):
        super().__init__(structure, floor)
        fixed = self.structure.fixed_sparsity()
        if sparsity is None:
            if fixed is None:
                raise ValueError("PDP: sparsity is required (a fraction in [0, 1), e.g. 0.7)")
            sparsity = fixed
        self.sparsity = _check_fraction("PDP", "sparsity", sparsity)
        self.floor.check_sparsity("PDP", self.sparsity)
        if fixed is not None and abs(self.sparsity - fixed) > 1e-9:
            raise ValueError(
                f"PDP: structure {self.structure!r} fixes the sparsity at {fixed}; pass "
                f"sparsity={fixed} or leave it None"
            )
        for name, value, upper in (("temperature", temperature, math.inf), ("ramp", ramp, 1.0)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 < value <= upper
            ):
                valid = "a number > 0" if upper == math.inf else "a number in (0, 1]"
                raise ValueError(f"PDP: {name}={value!r} is invalid; it must be {valid}")
        self.temperature = float(temperature)
        self.ramp = float(ramp)
        self._epochs: int | None = None

    def ratio_at(self, epoch: int) -> float:
        """``r`` during epoch ``epoch`` (0-based)."""
        return round(min(1.0, self.ramp * (epoch + 1)) * self.sparsity, 12)

    # ---- state and forward ------------------------------------------------------------
    def build(self, wrapper):
        wrapper.add_state("pdp_ratio", 0.0)
        wrapper.add_state("pdp_epoch", 0, "int64")
        wrapper.add_state("pdp_soft", 1.0)

    def _soft_grid(self, wrapper, index, kernel, ratio):
        _var, depthwise = wrapper.targets[index]
        blocks = wrapper.structure.to_blocks(kernel, depthwise)
        scores = keras.ops.sum(keras.ops.square(blocks), axis=-1)
        if isinstance(self.structure, NM):
            return pdp_mask(scores, ratio, self.temperature, self.structure.m, self.structure.n)
        kept = self.protected(wrapper, index, tf.stop_gradient(scores))
        return pdp_mask(scores, ratio, self.temperature, kept=kept)

    def effective_kernel(self, wrapper, index, kernel, training):
        """``W * expand(m)``: the soft PDP mask while soft, the stored hard mask after."""
        soft_flag = keras.ops.cast(wrapper.pdp_soft, "float32")
        soft = self._soft_grid(wrapper, index, kernel, wrapper.pdp_ratio)
        mask = keras.ops.convert_to_tensor(wrapper.masks[index])
        grid = soft_flag * keras.ops.cast(soft, "float32") + (1.0 - soft_flag) * mask
        return wrapper.structure.apply(kernel, grid, wrapper.targets[index][1])

    def hard_masks(self, wrappers, ratio: float) -> None:
        """Stores ``m >= 0.5`` at ``ratio`` in every wrapper's masks."""
        for w in wrappers:
            for i, (var, _) in enumerate(w.targets):
                soft = self._soft_grid(w, i, tf.convert_to_tensor(var.numpy()), ratio)
                w.set_mask(i, (soft.numpy() >= 0.5).astype(np.float32))

    # ---- training hooks -----------------------------------------------------------------
    def on_train_begin(self, wrappers, params):
        self._epochs = params.get("epochs")

    def on_epoch_begin(self, wrappers, epoch):
        e = int(wrappers[0].pdp_epoch.numpy())
        for w in wrappers:
            w.pdp_epoch.assign(e + 1)
            w.pdp_ratio.assign(self.ratio_at(e))

    def on_epoch_end(self, wrappers, epoch, logs):
        ratio = float(wrappers[0].pdp_ratio.numpy())
        logs["pdp_ratio"] = ratio
        if float(wrappers[0].pdp_soft.numpy()) == 0.0:
            return
        if self._epochs is not None and epoch == self._epochs - 1:
            if ratio < self.sparsity - 1e-6:
                warnings.warn(
                    f"PDP: fit ended with the ramp at ratio {ratio:.4g} < sparsity="
                    f"{self.sparsity}; the final hard mask prunes to the full sparsity "
                    f"(ramp={self.ramp} reaches it after {math.ceil(1 / self.ramp)} epochs)",
                    UserWarning,
                    stacklevel=2,
                )
            self.hard_masks(wrappers, self.sparsity)
            for w in wrappers:
                w.pdp_soft.assign(0.0)
        else:
            self.hard_masks(wrappers, ratio)

    # ---- serialization ------------------------------------------------------------------
    def get_config(self) -> dict:
        return {
            "sparsity": self.sparsity,
            "structure": keras.saving.serialize_keras_object(self.structure),
            "temperature": self.temperature,
            "ramp": self.ramp,
            "floor": keras.saving.serialize_keras_object(self.floor),
        }
