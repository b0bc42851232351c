"""Thin Keras callbacks that drive a pruning algorithm's hooks during ``fit``.

Example:
    >>> import tf_sparse_prune as tsp
    >>> pruner = tsp.Magnitude(sparsity=0.5)
    >>> [type(c).__name__ for c in pruner.callbacks()]
    ['PruningCallback']
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from tf_sparse_prune.algorithms.base import PruningAlgorithm
from tf_sparse_prune.wrappers import PruneWrapper, collect_wrappers

__all__ = ["PruningCallback", "attach", "model_sparsity"]


def attach(algorithm: PruningAlgorithm, model: keras.Model) -> list[PruneWrapper]:
    """Makes ``algorithm`` the one instance every wrapper of ``model`` uses.

    A model loaded from disk has one deserialized copy of the algorithm per
    wrapper; training hooks need a single instance. It also marks the wrappers as
    driven: a wrapper that trains without being attached warns once
    (:data:`~tf_sparse_prune.wrappers.UNDRIVEN`). A custom training loop calls it
    before its first step, then the pruner's hooks itself.

    Raises:
        ValueError: if the model has no wrappers, or was pruned with another
            method or configuration.
    """
    wrappers = collect_wrappers(model)
    if not wrappers:
        raise ValueError(
            f"model {model.name!r} has no PruneWrapper layers: prune it first with "
            f"tsp.prune_model(model, pruner)"
        )
    for w in wrappers:
        if w.algorithm is not algorithm and not w.algorithm.same_config(algorithm):
            raise ValueError(
                f"layer {w.layer.name!r} was pruned with {w.algorithm!r}, but the callbacks "
                f"come from {algorithm!r}; use tsp.get_pruner(model).callbacks() to continue "
                f"with the model's own pruner"
            )
        w.algorithm = algorithm
        w.driven = True
    return wrappers


def model_sparsity(wrappers: list[PruneWrapper]) -> float:
    """The fraction of zero weights over all pruned kernels (from the masks)."""
    zeros = total = 0
    for w in wrappers:
        for i in range(len(w.targets)):
            m = w.expanded_mask_numpy(i)
            zeros += int(m.size - np.count_nonzero(m))
            total += m.size
    return zeros / max(total, 1)


class PruningCallback(keras.callbacks.Callback):
    """Counts pruning steps and calls the algorithm's hooks.

    The step is stored in every wrapper (``pruning_step``), so training resumed
    from a saved model continues the schedule where it stopped. At each epoch end
    the achieved sparsity is added to the logs as ``pruning_sparsity``.

    Args:
        algorithm: The pruning algorithm whose hooks to call.
    """

    def __init__(self, algorithm: PruningAlgorithm):
        super().__init__()
        self.algorithm = algorithm
        self.wrappers: list[PruneWrapper] = []
        self.step = -1

    def on_train_begin(self, logs=None):
        self.wrappers = attach(self.algorithm, self.model)
        self.step = int(self.wrappers[0].pruning_step.numpy())
        self._set_step = _step_setter([w.pruning_step for w in self.wrappers])
        self.algorithm.on_train_begin(self.wrappers, dict(self.params or {}))

    def on_train_end(self, logs=None):
        for w in self.wrappers:  # a later fit without the callbacks is warned about again
            w.driven = False

    def on_train_batch_begin(self, batch, logs=None):
        self.step += 1
        self._set_step(self.step)
        self.algorithm.on_train_batch_begin(self.wrappers, self.step)

    def on_train_batch_end(self, batch, logs=None):
        self.algorithm.on_train_batch_end(self.wrappers, self.step)

    def on_epoch_begin(self, epoch, logs=None):
        self.algorithm.on_epoch_begin(self.wrappers, epoch)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            logs = {}
        self.algorithm.on_epoch_end(self.wrappers, epoch, logs)
        logs["pruning_sparsity"] = model_sparsity(self.wrappers)


def _step_setter(variables: list) -> Callable[[int], None]:
    """``step -> None`` assigning ``step`` to every variable (or state slot) in one
    compiled call.

    One call per batch instead of one eager assignment per wrapper (53 on ResNet50).
    """

    @tf.function(autograph=False)
    def assign(step):
        for var in variables:
            var.assign(step)

    return lambda step: assign(tf.constant(step, tf.int64))
