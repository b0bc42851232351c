"""Model plumbing shared by pruning, stripping and reporting: checks, layer walks, cloning.

Example:
    >>> import keras, tf_sparse_prune as tsp
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")])
    >>> [l.name for l in tsp.modeltools.iter_layers(m)]
    ['d']
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import keras

__all__ = [
    "check_keras3_model",
    "clone_layers",
    "copy_variables",
    "is_graph_model",
    "iter_layers",
    "replace_sublayers",
]


def check_keras3_model(model: object, what: str = "model") -> None:
    """Raises a clear ``TypeError`` unless ``model`` is a Keras 3 Sequential/functional model.

    Example:
        >>> import keras, tf_sparse_prune as tsp
        >>> tsp.modeltools.check_keras3_model(keras.layers.Dense(2))
        Traceback (most recent call last):
        TypeError: model must be a Keras 3 keras.Model, got Dense
    """
    if isinstance(model, keras.Model):
        if not (isinstance(model, keras.Sequential) or _is_functional(model)):
            raise TypeError(
                f"{what} {model.name!r} is a subclassed keras.Model ({type(model).__name__}); "
                "tf_sparse_prune rebuilds Sequential and functional models only. For a subclassed "
                "model, wrap its layers yourself in __init__ with tsp.PruneWrapper(layer, pruner), "
                "call it once on a batch, train it with callbacks=pruner.callbacks(); "
                "tsp.strip_pruning and tsp.export_tflite accept such a model"
            )
        if not model.built:
            raise ValueError(
                f"{what} {model.name!r} is not built; give it an Input or call "
                "model.build(input_shape) first"
            )
        return
    module = type(model).__module__
    if module.startswith(("tf_keras", "keras.src.engine", "tensorflow.python.keras")) or (
        module.startswith("keras") and hasattr(model, "_is_graph_network")
    ):
        raise TypeError(
            f"{what} is a tf_keras (Keras 2) model ({module}.{type(model).__name__}); "
            "tf_sparse_prune needs Keras 3: build the model with `import keras` (keras>=3), "
            "not tf.keras with TF_USE_LEGACY_KERAS=1 or tf_keras"
        )
    raise TypeError(f"{what} must be a Keras 3 keras.Model, got {type(model).__name__}")


def _is_functional(model: keras.Model) -> bool:
    try:
        from keras.src.models.functional import Functional
    except ImportError:  # pragma: no cover - private path moved
        return hasattr(model, "_run_through_graph")
    return isinstance(model, Functional)


def iter_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Every leaf layer of ``model`` (nested models expanded; input layers skipped).

    A wrapped layer appears once, as its wrapper. Shared layers appear once.
    """
    seen: set[int] = set()

    def walk(m):
        for layer in m.layers:
            if id(layer) in seen or isinstance(layer, keras.layers.InputLayer):
                continue
            seen.add(id(layer))
            if isinstance(layer, keras.Model):
                yield from walk(layer)
            else:
                yield layer

    yield from walk(model)


def clone_layers(
    model: keras.Model,
    replace: Callable[[keras.layers.Layer], keras.layers.Layer | None],
    copy_weights: Callable[[keras.layers.Layer, keras.layers.Layer], None],
    dtype: str | None = None,
) -> keras.Model:
    """Clones ``model`` layer by layer, replacing some layers, and copies all weights.

    Clones whatever ``keras.models.clone_model`` clones: layers are rebuilt with
    ``from_config(get_config())`` (custom layers need a complete ``get_config``), a
    shared layer stays shared, nested Sequential and functional models are cloned
    recursively, and the operations that ``keras.ops`` calls (or ``a + b``) on Keras
    tensors add to the graph are rebuilt from their config like ``clone_model`` does;
    they hold no weights.

    Args:
        model: A built Sequential or functional model.
        replace: Called with each original layer (never with a ``keras.ops``
            operation); returns its new layer (which ``copy_weights`` fills later) or
            ``None`` for a plain copy.
        copy_weights: Called with ``(original, new)`` for each replaced layer once
            the clone is built.
        dtype: If given, the dtype policy of every plain copy (e.g. ``"float32"`` to
            turn a mixed-precision model into a float32 one); ``replace`` handles its
            own layers. ``None`` keeps each layer's policy.

    Returns:
        The new model; the original is untouched and shares no variables with it.

    Example:
        >>> import keras, tf_sparse_prune as tsp
        >>> inp = keras.Input((4,))
        >>> d = keras.layers.Dense(4, name="d")
        >>> m = keras.Model(inp, keras.ops.relu(d(inp) + d(inp)))
        >>> c = tsp.modeltools.clone_layers(m, lambda layer: None, None)
        >>> bool((c.get_layer("d").kernel.numpy() == d.kernel.numpy()).all())
        True
        >>> c.get_layer("d").kernel is d.kernel
        False
    """
    clones: dict[int, tuple[keras.layers.Layer, keras.layers.Layer, bool]] = {}

    def clone_function(layer):
        if id(layer) in clones:  # a shared layer stays shared
            return clones[id(layer)][1]
        # keras.ops calls on Keras tensors become bare Operations (no weights, no dtype
        # policy): clone_model's own default rebuilds them from their config.
        is_layer = isinstance(layer, keras.layers.Layer)
        new = replace(layer) if is_layer else None
        replaced = new is not None
        if new is None:
            config = layer.get_config()
            if dtype is not None and is_layer and "dtype" in config:
                config["dtype"] = dtype
            new = layer.__class__.from_config(config)
            if is_layer and layer.weights and not isinstance(layer, keras.Model):
                seed_weights(new, layer.weights)
        clones[id(layer)] = (layer, new, replaced)
        return new

    # The models clone_model creates (outer and nested) take the global policy.
    previous = keras.config.dtype_policy()
    if dtype is not None:
        keras.config.set_dtype_policy(dtype)
    try:
        new_model = keras.models.clone_model(model, clone_function=clone_function, recursive=True)
    finally:
        keras.config.set_dtype_policy(previous)
        for _, new, _ in clones.values():  # the seeding hooks (seed_weights) are spent
            for layer in new._flatten_layers() if isinstance(new, keras.layers.Layer) else []:
                if getattr(layer.__dict__.get("add_weight"), "_tsp_seed", False):
                    del layer.__dict__["add_weight"]
    for original, new, replaced in clones.values():
        if replaced:
            copy_weights(original, new)
        elif isinstance(original, keras.layers.Layer) and original.weights:
            _copy_plain_weights(original, new)
    return new_model


def seed_weights(layer: keras.layers.Layer, sources: Sequence[keras.Variable]) -> None:
    """Makes the next build of ``layer`` create its weights from ``sources``' values.

    For :func:`clone_layers` and ``prune_model``, not a public API. A copy of a layer
    (``from_config(get_config())``) builds its weights with their initializers, random
    ones included, only for :func:`copy_variables` to overwrite them; on ResNet50 the
    random kernels cost a third of a clone. Seeded, each weight that
    ``layer.add_weight`` creates with the name and shape of one of ``sources`` (names
    unique among them) starts with that source's value, cast to its dtype; any other
    weight is initialized as usual. The copy that follows stays (it is cheap, and covers
    whatever was not seeded). :func:`clone_layers` removes the hooks once the clone is
    built.
    """
    named: dict[str, keras.Variable | None] = {}
    for source in sources:
        named[source.name] = None if source.name in named else source  # ambiguous: skip
    build_weight = type(layer).add_weight

    def add_weight(*args, **kwargs):
        source = None if args else named.pop(kwargs.get("name"), None)
        shape = kwargs.get("shape")
        if source is None or shape is None or tuple(shape) != tuple(source.shape):
            return build_weight(layer, *args, **kwargs)

        def initializer(shape, dtype=None):
            value = source.value
            return value if dtype is None else keras.ops.cast(value, dtype)

        return build_weight(layer, **{**kwargs, "initializer": initializer})

    add_weight._tsp_seed = True
    object.__setattr__(layer, "add_weight", add_weight)


def _copy_plain_weights(original: keras.layers.Layer, new: keras.layers.Layer) -> None:
    theirs = [tuple(w.shape) for w in original.weights]
    ours = [tuple(w.shape) for w in new.weights]
    if theirs != ours:
        raise ValueError(
            f"layer {original.name!r} ({type(original).__name__}) cannot be copied: rebuilt "
            f"from its get_config() it has weights of shapes {ours}, the original {theirs}; "
            "its get_config() must return every argument of its __init__"
        )
    copy_variables(original.weights, new.weights)


def copy_variables(sources: list[keras.Variable], targets: list[keras.Variable]) -> None:
    """Assigns each source variable's value to its target, cast to the target's dtype.

    Variable to variable, without the round trip through numpy that
    ``set_weights(get_weights())`` makes (three times faster on ResNet50's weights).

    Raises:
        ValueError: if the lists differ in length or a pair differs in shape.

    Example:
        >>> import keras, numpy as np, tf_sparse_prune as tsp
        >>> a, b = keras.Variable(np.ones((2, 2))), keras.Variable(np.zeros((2, 2)))
        >>> tsp.modeltools.copy_variables([a], [b])
        >>> float(b.numpy().sum())
        4.0
    """
    if len(sources) != len(targets):
        raise ValueError(f"copy_variables: {len(sources)} sources but {len(targets)} targets")
    for src, dst in zip(sources, targets, strict=True):
        if tuple(src.shape) != tuple(dst.shape):
            raise ValueError(
                f"copy_variables: {src.path!r} has shape {tuple(src.shape)}, its target "
                f"{dst.path!r} {tuple(dst.shape)}"
            )
        value = src.value
        if src.dtype != dst.dtype:
            value = keras.ops.cast(value, dst.dtype)
        dst.assign(value)


def is_graph_model(model: object) -> bool:
    """Whether ``model`` is a Sequential or functional model (one ``clone_layers`` can clone).

    Example:
        >>> import keras, tf_sparse_prune as tsp
        >>> tsp.modeltools.is_graph_model(keras.Sequential([keras.Input((2,))]))
        True
        >>> tsp.modeltools.is_graph_model(keras.layers.Dense(2))
        False
    """
    return isinstance(model, keras.Sequential) or (
        isinstance(model, keras.Model) and _is_functional(model)
    )


def replace_sublayers(root: keras.layers.Layer, mapping: dict[int, keras.layers.Layer]) -> None:
    """Replaces sublayers of a (subclassed) model in place: ``id(old) -> new``.

    Every reference that ``root`` or any of its sublayers holds to an old layer, as an
    attribute or inside a list, tuple or dict attribute, and in Keras's layer tracking
    (what ``layers``, ``weights`` and saving see) is pointed at its new layer. The old
    and new layers themselves are not edited (so a wrapper and the layer it wraps can
    be swapped back and forth). Compiled ``fit``/``predict`` functions of the models found
    are dropped so the next call traces the new layers. A functional or Sequential
    model's graph is not rewritten; use :func:`clone_layers` for those.

    Args:
        root: The layer or model to edit in place.
        mapping: ``id(old_layer) -> new_layer``.

    Example:
        >>> import keras, tf_sparse_prune as tsp
        >>> class Net(keras.Model):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.blocks = [keras.layers.Dense(3, name="a")]
        ...     def call(self, x):
        ...         return self.blocks[0](x)
        >>> net = Net(); _ = net(keras.ops.ones((1, 2)))
        >>> new = keras.layers.Dense(3, name="b"); new.build((None, 2))
        >>> tsp.modeltools.replace_sublayers(net, {id(net.blocks[0]): new})
        >>> [layer.name for layer in net.layers]
        ['b']
    """
    if not mapping:
        return
    seen: set[int] = {id(new) for new in mapping.values()}
    containers: set[int] = set()

    def substitute(value):
        if isinstance(value, keras.layers.Layer):
            return mapping.get(id(value), value)
        if id(value) in containers:
            return value
        if isinstance(value, list):
            containers.add(id(value))
            for i, item in enumerate(value):
                new = substitute(item)
                if new is not item:
                    list.__setitem__(value, i, new)  # in place, bypassing re-tracking
            return value
        if isinstance(value, dict):
            containers.add(id(value))
            for key, item in list(value.items()):
                new = substitute(item)
                if new is not item:
                    dict.__setitem__(value, key, new)
            return value
        # TensorFlow wraps tuple attributes in a proxy (not of type tuple); namedtuples
        # are left alone, they hold framework records.
        if isinstance(value, tuple) and not hasattr(value, "_fields"):
            items = tuple(substitute(item) for item in value)
            if any(a is not b for a, b in zip(items, value, strict=True)):
                return items
        return value

    def visit(layer):
        if id(layer) in seen or id(layer) in mapping:  # old and new layers stay as they are
            return
        seen.add(id(layer))
        tracker = getattr(layer, "_tracker", None)
        locked = bool(tracker is not None and tracker.locked)
        if tracker is not None and "layers" in tracker.config:
            for old_id, new in mapping.items():
                if old_id in tracker.stored_ids["layers"]:
                    old = next(x for x in tracker.config["layers"][1] if id(x) == old_id)
                    tracker.replace_tracked_value("layers", old, new)
        for name, value in list(vars(layer).items()):
            # Keras's tracker and TensorFlow's checkpoint records are updated through
            # the tracker above and setattr below, never edited directly.
            if name == "_tracker" or name.startswith("_self_"):
                continue
            new = substitute(value)
            if new is not value:
                if tracker is not None:
                    tracker.unlock()
                try:
                    setattr(layer, name, new)
                finally:
                    if locked:
                        tracker.lock()
        if isinstance(layer, keras.Model):
            for fn in ("train_function", "test_function", "predict_function"):
                if getattr(layer, fn, None) is not None:
                    setattr(layer, fn, None)
        for child in list(getattr(layer, "_layers", [])):
            visit(child)

    visit(root)
