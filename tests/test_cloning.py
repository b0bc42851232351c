"""prune_model and strip_pruning clone what keras.models.clone_model clones.

The model below has what hand-written residual nets (ConvNeXt, ResNets written with
``h = a + b``) contain: operators and ``keras.ops`` calls on Keras tensors (graph
operations without weights or ``set_weights``), a layer called twice, a nested
Sequential and custom layers with ``get_config``, one of them prunable.
"""

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

import tf_sparse_prune as tsp
from tests.helpers import compile_for_classification, random_data
from tf_sparse_prune.modeltools import clone_layers
from tf_sparse_prune.wrappers import PruneWrapper, collect_wrappers

L = keras.layers


@keras.saving.register_keras_serializable(package="tsp_tests")  # not the library's package
class ChannelScale(L.Layer):
    """A learned per-channel scale, initialised away from 1 so a lost copy shows."""

    def __init__(self, init: float = 1.5, **kwargs):
        super().__init__(**kwargs)
        self.init = init

    def build(self, input_shape):
        self.scale = self.add_weight(
            shape=(input_shape[-1],), initializer=keras.initializers.Constant(self.init)
        )

    def call(self, x):
        return x * self.scale

    def get_config(self):
        return {**super().get_config(), "init": self.init}


@keras.saving.register_keras_serializable(package="tsp_tests")  # not the library's package
class BiasFreeDense(L.Layer):
    """A custom prunable layer (through get_prunable_weights) with a get_config."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units))

    def call(self, x):
        return keras.ops.matmul(x, self.kernel)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_prunable_weights(self):
        return [self.kernel]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class ForgetfulScale(ChannelScale):
    """A custom layer whose get_config loses an argument that shapes its weights."""

    def __init__(self, channels: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(self.channels,), initializer="ones")

    def call(self, x):
        return x * keras.ops.mean(self.scale)

    def get_config(self):
        config = super().get_config()
        config.pop("channels", None)
        return config


# Named explicitly so the default selection's rules (stem, classifier) do not decide.
PRUNED = ["branch", "custom_fc", "fc", "inner", "shared", "stem"]


def residual_net() -> keras.Model:
    keras.utils.set_random_seed(3)
    inp = keras.Input((6, 6, 8), name="image")
    stem = L.Conv2D(32, 3, padding="same", name="stem")(inp)
    branch = L.Conv2D(32, 3, padding="same", name="branch")(keras.ops.relu(stem))
    h = stem + branch  # an Add operation, not a layer
    h = keras.ops.relu(h) * 0.5
    shared = L.Conv2D(32, 1, name="shared")
    h = shared(h) + shared(keras.ops.relu(h))  # one layer, two calls
    nested = keras.Sequential(
        [
            keras.Input((6, 6, 32)),
            L.Conv2D(32, 1, name="inner"),
            L.BatchNormalization(name="inner_bn"),
        ],
        name="nested",
    )
    h = nested(h)
    h = ChannelScale(name="scale")(h)
    h = keras.ops.mean(h, axis=(1, 2))
    h = BiasFreeDense(32, name="custom_fc")(h)
    out = L.Dense(16, name="fc")(keras.ops.tanh(h))
    model = keras.Model(inp, out, name="residual")
    bn = model.get_layer("nested").get_layer("inner_bn")
    rng = np.random.default_rng(0)
    bn.set_weights([rng.uniform(0.5, 1.5, 32), rng.normal(0, 0.5, 32), rng.normal(0, 0.5, 32),
                    rng.uniform(0.5, 1.5, 32)])  # fmt: skip
    return model


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The residual net pruned 1x16 at 0.5, trained two steps, stripped and exported."""
    model = residual_net()
    pruner = tsp.Magnitude(0.5, tsp.OneByN(16), schedule=tsp.ConstantSparsity(0.5, 0, frequency=1))
    pruned = tsp.prune_model(model, pruner, layers=PRUNED)
    x, y = random_data(16, (6, 6, 8), classes=16)
    compile_for_classification(pruned, lr=0.01)
    pruned.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=pruner.callbacks())
    final = tsp.strip_pruning(pruned)
    path = tmp_path_factory.mktemp("cloning") / "final.keras"
    final.save(path)
    return model, pruned, final, keras.models.load_model(path), x


def test_prune_model_clones_operator_layers_shared_layers_nested_models_and_custom_layers():
    model = residual_net()
    reference = keras.models.clone_model(model)  # Keras clones the same model
    assert len(reference.layers) == len(model.layers)
    pruned = tsp.prune_model(model, tsp.Magnitude(0.5, tsp.OneByN(16)), layers=PRUNED)
    wrapped = sorted(w.layer.name for w in collect_wrappers(pruned))
    assert wrapped == PRUNED
    # the shared layer is one wrapper called twice
    assert len([w for w in collect_wrappers(pruned) if w.layer.name == "shared"]) == 1
    assert isinstance(pruned.get_layer("pruned_shared"), PruneWrapper)
    assert isinstance(pruned.get_layer("pruned_custom_fc").layer, BiasFreeDense)
    scale = pruned.get_layer("scale")
    assert scale is not model.get_layer("scale")
    np.testing.assert_array_equal(scale.scale.numpy(), np.full(32, 1.5, np.float32))
    # masks start full: the copy computes what the original computes, with its own variables
    x, _ = random_data(4, (6, 6, 8))
    np.testing.assert_allclose(pruned(x), model(x), rtol=1e-5, atol=1e-5)
    original = {id(v) for v in model.weights}
    assert not original & {id(v) for v in pruned.weights}


def test_strip_pruning_keeps_the_graph_and_gives_the_pruned_outputs(pipeline):
    _, pruned, final, _, x = pipeline
    assert not collect_wrappers(final)
    for name in ("stem", "branch", "shared", "custom_fc", "fc"):
        kernel = final.get_layer(name).kernel.numpy()
        assert (kernel == 0).mean() == pytest.approx(0.5, abs=0.02), name
    inner = final.get_layer("nested").get_layer("inner").kernel.numpy()
    assert (inner == 0).mean() == pytest.approx(0.5, abs=0.02)
    np.testing.assert_allclose(
        final.predict(x, verbose=0), pruned.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )


def test_stripped_model_round_trips_through_a_keras_file(pipeline):
    _, _, final, loaded, x = pipeline
    assert not collect_wrappers(loaded)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), final.predict(x, verbose=0))


def test_export_tflite_of_the_stripped_net_keeps_zeros_and_outputs(pipeline):
    _, _, final, loaded, x = pipeline
    flat = tsp.export_tflite(loaded)
    checks = tsp.check_tflite_sparsity(loaded, flat)
    assert sorted(c.layer for c in checks) == [
        "branch",
        "custom_fc",
        "fc",
        "inner",
        "shared",
        "stem",
    ]
    assert all(c.preserved for c in checks), checks
    interp = Interpreter(model_content=flat)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.resize_tensor_input(inp["index"], x[:2].shape)
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], x[:2])
    interp.invoke()
    np.testing.assert_allclose(
        interp.get_tensor(out["index"]), final.predict(x[:2], verbose=0), rtol=1e-4, atol=1e-5
    )


def test_clone_layers_copies_weights_and_shares_no_variables():
    inp = keras.Input((4,))
    model = keras.Model(inp, ChannelScale(name="scale")(L.Dense(4, name="d")(inp)))
    copy = clone_layers(model, lambda layer: None, None)
    np.testing.assert_array_equal(copy.get_layer("d").kernel, model.get_layer("d").kernel)
    np.testing.assert_array_equal(copy.get_layer("scale").scale, np.full(4, 1.5, np.float32))
    assert not {id(v) for v in model.weights} & {id(v) for v in copy.weights}


def test_clone_layers_names_a_layer_whose_get_config_is_incomplete():
    inp = keras.Input((4,))
    model = keras.Model(inp, ForgetfulScale(channels=5, name="forgetful")(inp))
    # rebuilt from its config the layer gets 3 scales, not 5
    with pytest.raises(ValueError, match=r"'forgetful'.*\(3,\).*\(5,\).*every argument"):
        clone_layers(model, lambda layer: None, None)


@keras.saving.register_keras_serializable(package="tsp_tests")
class CountingInitializer(keras.initializers.Initializer):
    """Counts its calls (class-wide), so a test sees whether a copy ran its initializer."""

    calls = 0

    def __call__(self, shape, dtype=None):
        CountingInitializer.calls += 1
        return keras.ops.ones(shape, dtype=dtype)


def _leaf(model, name):
    """The layer ``name`` of ``model``, or the layer inside its wrapper ``pruned_<name>``."""
    for layer in model._flatten_layers(include_self=False):
        if layer.name == name and not isinstance(layer, PruneWrapper):
            return layer
    raise KeyError(name)


def test_copies_start_from_the_originals_values_without_running_their_initializers():
    inp = keras.Input((4,))
    dense = L.Dense(16, kernel_initializer=CountingInitializer(), name="d")
    model = keras.Model(inp, L.Dense(2, name="head")(L.BatchNormalization(name="bn")(dense(inp))))
    rng = np.random.default_rng(0)
    model.set_weights([rng.standard_normal(w.shape) for w in model.get_weights()])
    CountingInitializer.calls = 0
    copies = [
        clone_layers(model, lambda layer: None, None),
        tsp.prune_model(model, tsp.Magnitude(0.5, tsp.OneByN(4)), layers=["d"]),
    ]
    assert CountingInitializer.calls == 0
    copies.append(tsp.strip_pruning(copies[1]))  # its layers start from the masked kernels
    for copy in copies:
        for name in ("d", "bn", "head"):
            mine, theirs = _leaf(copy, name).weights, model.get_layer(name).weights
            assert len(mine) == len(theirs)
            for a, b in zip(mine, theirs, strict=True):
                np.testing.assert_array_equal(a.numpy(), b.numpy())
        assert all("add_weight" not in layer.__dict__ for layer in copy._flatten_layers())
    # each copy holds its own values
    model.get_layer("d").kernel.assign(np.zeros((4, 16)))
    assert all(np.all(_leaf(copy, "d").kernel.numpy() != 0) for copy in copies)


def test_a_weight_the_source_does_not_fit_is_initialized_then_copied():
    from tf_sparse_prune.modeltools import copy_variables, seed_weights

    source = L.Dense(3, name="d")
    source.build((None, 5))
    source.bias.assign(np.arange(3.0))
    other = L.Dense(3, kernel_initializer="zeros", name="d")
    seed_weights(other, source.weights)
    other.build((None, 2))  # kernel (2, 3), not the source's (5, 3): its own initializer
    np.testing.assert_array_equal(other.kernel.numpy(), np.zeros((2, 3)))
    np.testing.assert_array_equal(other.bias.numpy(), np.arange(3.0))  # seeded
    source.bias.assign(np.full(3, 7.0))  # no clone_layers around: copy_variables copies
    copy_variables([source.bias], [other.bias])
    np.testing.assert_array_equal(other.bias.numpy(), np.full(3, 7.0))
