"""State: the Keras ``Wrapper`` that holds a layer's pruning masks.

:class:`PruneWrapper` wraps one prunable layer. It owns, as non-trainable
weights saved with the model, one block-grid mask per pruned kernel and one
float64 vector, ``pruning_state``, that packs the pruning step and every scalar the
algorithm declares (:meth:`PruneWrapper.add_state`: SMART's temperature, SUBP's epoch);
the algorithm may add more weights (SMART's scores). One vector instead of a
variable per scalar: a Keras variable costs about a millisecond to create, and a
ResNet50's 52 SMART wrappers would otherwise create 364 of them. Its
forward pass runs the wrapped layer unchanged except that the kernel is replaced
by the algorithm's ``effective_kernel`` (by default ``kernel * expand(mask)``)
through a ``keras.StatelessScope`` state mapping, so any layer works without
re-implementing its ``call`` (SPEC §8).

Mixed precision: the wrapper takes the wrapped layer's dtype policy, and the
algorithm's hooks (``effective_kernel``, ``loss``) run with Keras autocasting off,
so they see every variable in its stored dtype (kernels, masks and scores float32,
SMART's temperature and threshold float64). The effective kernel therefore stays
float32 in the state mapping, and the wrapped layer casts it to its compute dtype
(float16 or bfloat16) exactly as it casts its own kernel.

Example:
    >>> import keras, tf_sparse_prune as tsp
    >>> w = tsp.PruneWrapper(keras.layers.Dense(32), tsp.Magnitude(0.5, tsp.OneByN(16)))
    >>> y = w(keras.ops.ones((2, 64)))
    >>> [v.name for v in w.non_trainable_weights]
    ['mask_0', 'pruning_state']
    >>> int(w.pruning_step.numpy())
    -1
    >>> tuple(w.masks[0].shape)
    (2, 64)
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any

import keras
import numpy as np
import tensorflow as tf

# Keras has no public way to read a variable in its stored dtype inside a mixed-precision
# layer call; the autocast scope is pinned with the Keras version (pyproject: keras<3.16).
from keras.src.backend import AutocastScope

from tf_sparse_prune.algorithms.base import PruningAlgorithm
from tf_sparse_prune.prunable import UnsupportedLayerError, prunable_weights, why_not_prunable
from tf_sparse_prune.structures import StructureError

__all__ = ["UNDRIVEN", "PruneWrapper", "StateSlot", "collect_wrappers"]

#: the warning of a pruned model trained without its pruner's callbacks. A warning, not an
#: error: a custom training loop may drive the hooks itself (after ``attach``).
UNDRIVEN = (
    "a pruned model is training without its pruner's callbacks: the masks never update, so "
    "it trains dense. Pass callbacks=pruner.callbacks() to fit (for a loaded model: "
    "tsp.get_pruner(model).callbacks()); a custom training loop calls "
    "tsp.callbacks.attach(pruner, model) and the pruner's hooks itself"
)
_WARNED: weakref.WeakSet = weakref.WeakSet()


@keras.saving.register_keras_serializable(package="tf_sparse_prune")
class PruneWrapper(keras.layers.Wrapper):
    """Masks the kernel(s) of a wrapped layer for a pruning algorithm.

    Args:
        layer: A prunable layer (see :mod:`tf_sparse_prune.prunable`).
        algorithm: The pruning algorithm (shared by all wrappers of a model).
        **kwargs: Keras layer arguments (``name`` defaults to ``"pruned_" + layer.name``).

    Attributes:
        masks: One block-grid mask variable per pruned kernel (1 keeps a block).
        pruning_step: The global pruning step (-1 before the first batch), a
            :class:`StateSlot`.
        pruning_state: The float64 vector holding every :class:`StateSlot`.
    """

    def __init__(self, layer: keras.layers.Layer, algorithm: PruningAlgorithm, **kwargs):
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(f"PruneWrapper: layer={layer!r} is not a Keras 3 layer")
        if isinstance(algorithm, dict):
            algorithm = keras.saving.deserialize_keras_object(algorithm)
        if not isinstance(algorithm, PruningAlgorithm):
            raise TypeError(
                f"PruneWrapper({layer.name!r}): algorithm={algorithm!r} is not a pruning "
                f"algorithm (e.g. tsp.Magnitude(...))"
            )
        reason = why_not_prunable(layer)
        if reason is not None:
            raise UnsupportedLayerError(f"layer {layer.name!r} cannot be pruned: {reason}")
        kwargs.setdefault("name", f"pruned_{layer.name}")
        # The wrapped layer's policy, not the global one, so a float32 layer in a
        # mixed-precision model keeps float32 inputs and outputs through its wrapper.
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(layer, **kwargs)
        self.algorithm = algorithm
        self.masks: list[keras.Variable] = []
        # set by tsp.callbacks.attach (the pruner's callbacks at train begin, or a custom loop)
        self.driven = False

    # ---- build --------------------------------------------------------------------------
    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
            self.layer.built = True
        self.structure = self.algorithm.structure_for(self.layer)
        self._targets = prunable_weights(self.layer)
        masks = []
        for i, (var, depthwise) in enumerate(self._targets):
            shape = tuple(int(d) for d in var.shape)
            try:
                self.algorithm.check_layer(self.layer, shape, depthwise)
            except StructureError as e:
                raise StructureError(
                    f"layer {self.layer.name!r} ({type(self.layer).__name__}, kernel {shape}): {e}"
                ) from None
            masks.append(
                self.add_weight(
                    name=f"mask_{i}",
                    shape=self.structure.grid_shape(shape, depthwise),
                    initializer=_filled(1.0),
                    trainable=False,
                    dtype="float32",
                )
            )
        self.masks = masks
        self._slots: list[StateSlot] = []
        self.pruning_state = None
        self.add_state("pruning_step", -1, "int64")
        self.algorithm.build(self)
        initial = [slot.initial for slot in self._slots]
        self.pruning_state = self.add_weight(
            name="pruning_state",
            shape=(len(initial),),
            dtype="float64",
            initializer=lambda shape, dtype=None: np.asarray(initial, np.float64),
            trainable=False,
            autocast=False,
        )
        self.built = True

    # ---- accessors ----------------------------------------------------------------------
    @property
    def targets(self) -> list[tuple[keras.Variable, bool]]:
        """``(kernel variable, depthwise)`` for each pruned kernel."""
        return self._targets

    def expanded_mask_numpy(self, index: int = 0) -> np.ndarray:
        """The kernel-shaped mask of kernel ``index`` as a numpy array."""
        var, depthwise = self._targets[index]
        grid = self.masks[index].numpy()
        return np.asarray(self.structure.expand(grid, tuple(var.shape), depthwise))

    def add_state(self, name: str, value: float, dtype: str = "float32") -> StateSlot:
        """Declares a named scalar of per-layer state, saved with the model.

        Call it from :meth:`PruningAlgorithm.build`; prefix ``name`` with the method's
        name. The scalar is a slot of the wrapper's packed ``pruning_state`` vector,
        reached as the attribute ``name`` (e.g. ``wrapper.subp_epoch``) with a
        variable's interface: ``value``, ``numpy()``, ``assign()``, and conversion to a
        tensor. Values are held in ``dtype`` (every int64 below 2**53 is exact).
        """
        if getattr(self, "pruning_state", None) is not None:
            raise RuntimeError(
                f"PruneWrapper({self.layer.name!r}).add_state({name!r}): state is declared "
                "in PruningAlgorithm.build, before the wrapper packs it"
            )
        if hasattr(self, name):
            raise ValueError(f"PruneWrapper({self.layer.name!r}): state {name!r} exists already")
        slot = StateSlot(self, len(self._slots), name, dtype, value)
        self._slots.append(slot)
        setattr(self, name, slot)
        return slot

    def read_states(self) -> dict[str, np.ndarray]:
        """Every state slot's value (numpy scalars of their dtypes) from one read."""
        packed = self.pruning_state.numpy()
        return {slot.name: np.asarray(packed[slot.index], slot.dtype) for slot in self._slots}

    def assign_states(self, values: dict[str, Any]) -> None:
        """Assigns several state slots (``{name: value}``) in one update of
        ``pruning_state``: one scatter instead of one per slot, for compiled per-batch
        updates over many wrappers."""
        slots = [getattr(self, name) for name in values]
        updates = [slot.stored(value) for slot, value in zip(slots, values.values(), strict=True)]
        state = self.pruning_state
        state.assign(
            keras.ops.scatter_update(
                state.value, [[slot.index] for slot in slots], keras.ops.stack(updates)
            )
        )

    def set_mask(self, index: int, grid_mask: np.ndarray) -> None:
        """Assigns the block-grid mask of kernel ``index``."""
        self.masks[index].assign(np.asarray(grid_mask, np.float32))

    # ---- forward ------------------------------------------------------------------------
    def call(self, inputs, *args, training=None, **kwargs):
        if training is True and not self.driven and self.algorithm not in _WARNED:
            _WARNED.add(self.algorithm)  # once per pruner, not once per layer
            warnings.warn(UNDRIVEN, UserWarning, stacklevel=2)
        # Autocasting off: the hooks compute in the variables' own dtypes, and the state
        # mapping keeps the float32 effective kernel (the scope casts a mapped value to the
        # variable's dtype as autocast reports it); the wrapped layer casts it when it reads it.
        with AutocastScope(None):
            mapping = [
                (var, self.algorithm.effective_kernel(self, i, var.value, training))
                for i, (var, _) in enumerate(self._targets)
            ]
            extra = self.algorithm.loss(self) if training else None
            scope = keras.StatelessScope(state_mapping=mapping)
        if extra is not None:
            self.add_loss(extra)
        with scope:
            outputs = self.layer(inputs, *args, **kwargs)
        # Keep state updates the wrapped layer made inside the scope (none for the
        # built-in layers; a custom prunable layer may have some).
        mapped = {id(v) for v, _ in mapping}
        for var in self.layer.non_trainable_variables:
            if id(var) not in mapped:
                value = scope.get_current_value(var)
                if value is not None:
                    var.assign(value)
        return outputs

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    # ---- serialization ------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["algorithm"] = keras.saving.serialize_keras_object(self.algorithm)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(
            config.pop("layer"), custom_objects=custom_objects
        )
        algorithm = keras.saving.deserialize_keras_object(
            config.pop("algorithm"), custom_objects=custom_objects
        )
        return cls(layer, algorithm, **config)


class StateSlot:
    """One named scalar of a :class:`PruneWrapper`'s packed ``pruning_state`` vector.

    It reads and writes like a scalar Keras variable of ``dtype``, eagerly and inside a
    compiled step: ``value`` (a tensor), ``numpy()``, ``assign(v)``, and
    ``tf.convert_to_tensor(slot)``.

    Example:
        >>> import keras, tf_sparse_prune as tsp
        >>> w = tsp.PruneWrapper(keras.layers.Dense(32), tsp.Magnitude(0.5, tsp.OneByN(16)))
        >>> w.build((None, 64))
        >>> _ = w.pruning_step.assign(41)
        >>> int(w.pruning_step.numpy()) + 1, w.pruning_step.dtype
        (42, 'int64')
    """

    def __init__(self, wrapper: PruneWrapper, index: int, name: str, dtype: str, initial):
        self._wrapper = wrapper
        self.index = index
        self.name = name
        self.dtype = keras.backend.standardize_dtype(dtype)
        # the initial value as the slot's dtype holds it, so a reset reads back the same
        self.initial = float(np.asarray(initial, self.dtype))
        self.shape = ()

    @property
    def value(self):
        """The current value, a scalar tensor of ``dtype``."""
        return keras.ops.cast(self._wrapper.pruning_state.value[self.index], self.dtype)

    def numpy(self) -> np.ndarray:
        return keras.ops.convert_to_numpy(self.value)

    def stored(self, value):
        """``value`` as the packed vector stores it: rounded to ``dtype``, then float64."""
        if not keras.ops.is_tensor(value):  # a Python float is not rounded to float32 first
            value = np.asarray(value, self.dtype)
        return keras.ops.reshape(keras.ops.cast(keras.ops.cast(value, self.dtype), "float64"), ())

    def assign(self, value) -> StateSlot:
        """Stores ``value`` as ``dtype`` holds it (a float32 slot rounds to float32)."""
        state = self._wrapper.pruning_state
        state.assign(
            keras.ops.scatter_update(
                state.value, [[self.index]], keras.ops.reshape(self.stored(value), (1,))
            )
        )
        return self

    def __repr__(self) -> str:
        return f"<StateSlot {self._wrapper.name}/{self.name} dtype={self.dtype}>"


def _slot_to_tensor(slot, dtype=None, name=None, as_ref=False):
    value = slot.value
    return value if dtype is None else tf.cast(value, dtype)


tf.register_tensor_conversion_function(StateSlot, _slot_to_tensor)


def _filled(value: float):
    """An initializer giving a numpy array: no eager ops, where Keras's ``Constant`` runs
    three for each of the hundreds of small state variables a big model's wrappers
    create."""

    def initializer(shape, dtype=None):
        return np.full(shape, value, dtype=dtype)

    return initializer


def collect_wrappers(model: keras.layers.Layer) -> list[PruneWrapper]:
    """Every :class:`PruneWrapper` in ``model``, nested models included, in layer order."""
    if isinstance(model, PruneWrapper):
        return [model]
    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, PruneWrapper):
            found.append(layer)
    return found
