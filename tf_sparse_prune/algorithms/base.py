"""The one hook interface every pruning method implements.

A :class:`PruningAlgorithm` is a configuration object; all of its *state* lives
in the weights of the :class:`~tf_sparse_prune.wrappers.PruneWrapper` layers it
builds (masks, steps, scores, temperatures), so a saved model restores it
exactly. The wrappers call the algorithm in the forward pass
(``effective_kernel``, ``loss``); the callbacks from :meth:`callbacks` call its
training hooks with the list of wrappers of the model being trained.

Hooks (override what a method needs):

* ``structure_for(layer)`` / ``check_layer(...)``: which structure a layer uses,
  and whether it applies (raise :class:`~tf_sparse_prune.structures.StructureError`).
* ``build(wrapper)``: create extra per-layer state with ``wrapper.add_state``
  (scalars) or ``wrapper.add_weight``.
* ``effective_kernel(wrapper, index, kernel, training)``: the kernel the layer
  computes with (default ``kernel * expand(mask)``: masked weights get zero gradient).
* ``loss(wrapper)``: an extra loss term or ``None``.
* ``final_kernel(wrapper, index)``: the numpy kernel ``strip_pruning`` keeps.
* ``on_train_begin(wrappers, params)``, ``on_train_batch_begin(wrappers, step)``,
  ``on_train_batch_end(wrappers, step)``, ``on_epoch_begin(wrappers, epoch)``,
  ``on_epoch_end(wrappers, epoch, logs)``: driven by the callbacks.
* ``get_config()`` / ``from_config()``: exact round trip (Keras serialization).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from tf_sparse_prune.floors import Floor
from tf_sparse_prune.structures import Structure, Unstructured

if TYPE_CHECKING:
    from tf_sparse_prune.wrappers import PruneWrapper

__all__ = ["PruningAlgorithm"]


class PruningAlgorithm:
    """Base class of pruning methods (see the module docstring for the hooks).

    Args:
        structure: The pruning unit; ``None`` gives :class:`~tf_sparse_prune.Unstructured`.
        floor: What every pruned layer keeps whatever its scores (``None``: the default
            :class:`~tf_sparse_prune.Floor`, 1% of its weights and one block per row).
    """

    def __init__(self, structure: Structure | None = None, floor: Floor | None = None):
        if floor is None:
            floor = Floor()
        if isinstance(floor, dict):
            floor = keras.saving.deserialize_keras_object(floor)
        if not isinstance(floor, Floor):
            raise TypeError(
                f"{type(self).__name__}: floor={floor!r} is not a floor; pass None (the default) "
                f"or tsp.Floor(min_fraction=..., keep_rows=...)"
            )
        self.floor = floor
        if structure is None:
            structure = Unstructured()
        if not isinstance(structure, Structure):
            raise TypeError(
                f"{type(self).__name__}: structure={structure!r} is not a structure; pass one of "
                f"tsp.Unstructured(), tsp.OneByN(n), tsp.Block(n_out, n_in), "
                f"tsp.OutputChannel(), tsp.NM(n, m)"
            )
        self.structure = structure

    # ---- which layers, which structure ---------------------------------------------
    def structure_for(self, layer: keras.layers.Layer) -> Structure:
        """The structure used for ``layer`` (default: the algorithm's one)."""
        return self.structure

    def check_layer(
        self, layer: keras.layers.Layer, kernel_shape: tuple[int, ...], depthwise: bool
    ) -> None:
        """Raises ``StructureError`` if this algorithm cannot prune that kernel."""
        self.structure_for(layer).check(kernel_shape, depthwise)

    @property
    def global_budget(self) -> bool:
        """Whether the sparsity target holds over all pruned layers together (each layer's
        own sparsity is then chosen by the method), rather than in every layer."""
        return False

    def max_sparsity(self, layer: keras.layers.Layer, kernel_shape, depthwise: bool) -> float:
        """The highest sparsity the floor lets this algorithm reach in that kernel."""
        structure = self.structure_for(layer)
        return self.floor.max_sparsity(structure.row_length(kernel_shape, depthwise))

    def protected(self, wrapper: PruneWrapper, index: int, scores):
        """The floor's protected blocks of kernel ``index`` for grid-shaped ``scores``."""
        var, depthwise = wrapper.targets[index]
        shape = tuple(int(d) for d in var.shape)
        structure = wrapper.structure
        rows = structure.row_ids(shape, depthwise)
        if rows is None:  # the structure keeps every group alive itself (N:M)
            return None
        return self.floor.protected(scores, structure.block_sizes(shape, depthwise), rows)

    # ---- state and forward pass ----------------------------------------------------
    def build(self, wrapper: PruneWrapper) -> None:
        """Creates per-layer state on ``wrapper`` (default: nothing beyond the masks)."""

    def effective_kernel(
        self, wrapper: PruneWrapper, index: int, kernel: Any, training: bool | None
    ) -> Any:
        """The kernel the wrapped layer computes with (default: hard mask, zero gradient)."""
        grid = keras.ops.convert_to_tensor(wrapper.masks[index])
        return wrapper.structure.apply(kernel, grid, wrapper.targets[index][1])

    def loss(self, wrapper: PruneWrapper) -> Any | None:
        """An extra loss term added by the wrapper in training, or ``None``."""
        return None

    def final_kernel(self, wrapper: PruneWrapper, index: int) -> np.ndarray:
        """The kernel ``strip_pruning`` keeps: exact (+0.0) zeros where masked."""
        kernel = wrapper.targets[index][0].numpy()
        mask = np.asarray(wrapper.expanded_mask_numpy(index))
        return np.where(mask != 0, kernel, np.zeros_like(kernel))

    # ---- training hooks (called by the callbacks) --------------------------------------
    def on_train_begin(self, wrappers: list[PruneWrapper], params: dict) -> None:
        """Start of ``fit`` (``params`` is Keras's callback params: epochs, steps)."""

    def on_train_batch_begin(self, wrappers: list[PruneWrapper], step: int) -> None:
        """Before the batch of global pruning step ``step`` (0 for the first batch)."""

    def on_train_batch_end(self, wrappers: list[PruneWrapper], step: int) -> None:
        """After the optimizer step of global pruning step ``step``."""

    def on_epoch_begin(self, wrappers: list[PruneWrapper], epoch: int) -> None:
        """Start of an epoch."""

    def on_epoch_end(self, wrappers: list[PruneWrapper], epoch: int, logs: dict) -> None:
        """End of an epoch; may add entries to ``logs``."""

    def callbacks(self) -> list[keras.callbacks.Callback]:
        """The Keras callbacks that drive this algorithm during ``fit``."""
        from tf_sparse_prune.callbacks import PruningCallback

        return [PruningCallback(self)]

    # ---- serialization ----------------------------------------------------------------
    def get_config(self) -> dict:
        return {
            "structure": keras.saving.serialize_keras_object(self.structure),
            "floor": keras.saving.serialize_keras_object(self.floor),
        }

    @classmethod
    def from_config(cls, config: dict) -> PruningAlgorithm:
        config = dict(config)
        for key, value in config.items():
            if isinstance(value, dict) and "class_name" in value:
                config[key] = keras.saving.deserialize_keras_object(value)
        return cls(**config)

    def same_config(self, other: PruningAlgorithm) -> bool:
        """Whether ``other`` is the same method with the same configuration."""
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.get_config()})"
