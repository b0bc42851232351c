"""Bad input gets a clear error naming the parameter (and the layer) and what is valid."""

import keras
import pytest

import tf_sparse_prune as tsp
from tests.helpers import small_cnn


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5])
def test_sparsity_outside_unit_interval_is_rejected(sparsity):
    with pytest.raises(ValueError, match=r"Magnitude: sparsity=.* is outside \[0, 1\)"):
        tsp.Magnitude(sparsity=sparsity)


def test_sparsity_is_required_unless_the_structure_fixes_it():
    with pytest.raises(ValueError, match="sparsity is required"):
        tsp.Magnitude()
    assert tsp.Magnitude(structure=tsp.NM(2, 4)).sparsity == 0.5
    with pytest.raises(ValueError, match=r"fixes the sparsity at 0.5"):
        tsp.Magnitude(0.8, tsp.NM(2, 4))


def test_schedule_and_sparsity_must_agree():
    with pytest.raises(ValueError, match="differs from the schedule's final sparsity"):
        tsp.Magnitude(0.5, schedule=tsp.ConstantSparsity(0.7))


def test_unknown_scope_and_criterion_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"scope='model' is invalid; valid: \['layer', 'global'\]"):
        tsp.Magnitude(0.5, scope="model")
    with pytest.raises(
        ValueError, match=r"criterion='l3' is unknown; valid: \['bpar', 'l1', 'l2'\]"
    ):
        tsp.Magnitude(0.5, criterion="l3")
    with pytest.raises(ValueError, match="cannot be ranked globally"):
        tsp.Magnitude(structure=tsp.NM(2, 4), scope="global")


def test_structure_must_be_a_structure_object():
    with pytest.raises(TypeError, match=r"structure='1x16' is not a structure"):
        tsp.Magnitude(0.5, structure="1x16")


@pytest.mark.parametrize("n", [0, -4])
def test_non_positive_block_size_is_rejected(n):
    with pytest.raises(
        ValueError, match=rf"OneByN: n={n} is invalid; it must be a positive integer"
    ):
        tsp.OneByN(n)


def test_a_tf_keras_model_gets_a_message_saying_so():
    # A stand-in with tf_keras's module path: tf_keras itself is never installed
    # beside the library (it lives only in the benchmark's own venv).
    fake_cls = type("Functional", (), {"__module__": "tf_keras.src.engine.functional"})
    with pytest.raises(TypeError, match=r"tf_keras \(Keras 2\) model.*needs Keras 3"):
        tsp.prune_model(fake_cls(), tsp.Magnitude(0.5))


def test_a_non_model_is_rejected():
    with pytest.raises(TypeError, match=r"must be a Keras 3 keras\.Model"):
        tsp.prune_model([keras.layers.Dense(3)], tsp.Magnitude(0.5))


def test_a_subclassed_model_gets_the_wrap_it_yourself_advice():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(4)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(keras.ops.ones((1, 3)))
    with pytest.raises(TypeError, match=r"subclassed.*tsp\.PruneWrapper"):
        tsp.prune_model(net, tsp.Magnitude(0.5))


def test_a_missing_layer_name_lists_the_layers():
    with pytest.raises(ValueError, match=r"no layer named \['conv9'\].*'conv0'"):
        tsp.prune_model(small_cnn(), tsp.Magnitude(0.5), layers=["conv9", "conv0"])


def test_bad_layers_argument_type():
    with pytest.raises(TypeError, match="layers=42 is invalid"):
        tsp.prune_model(small_cnn(), tsp.Magnitude(0.5), layers=42)


def test_pruning_an_already_pruned_model_is_refused():
    pruned = tsp.prune_model(small_cnn(), tsp.Magnitude(0.5))
    with pytest.raises(ValueError, match="already pruned"):
        tsp.prune_model(pruned, tsp.Magnitude(0.5))


def test_an_unbuilt_sequential_model_is_refused():
    with pytest.raises(ValueError, match="not built"):
        tsp.prune_model(keras.Sequential([keras.layers.Dense(4)]), tsp.Magnitude(0.5))


def test_a_model_with_nothing_prunable_is_an_error():
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(24, 3, name="c")])
    with pytest.raises(ValueError, match=r"no layer .* can be pruned.*c: kernel"):
        tsp.prune_model(model, tsp.Magnitude(0.5, tsp.OneByN(16)))


def test_training_a_pruned_model_without_its_callbacks_warns_once_with_the_fix():
    import numpy as np

    from tf_sparse_prune.wrappers import UNDRIVEN

    pruner = tsp.Magnitude(0.5, tsp.OneByN(16))
    pruned = tsp.prune_model(small_cnn(channels=(16, 32)), pruner, layers="all")
    pruned.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = np.zeros((8, 12, 12, 3), "float32"), np.zeros(8, "int32")
    with pytest.warns(UserWarning, match=r"callbacks=pruner\.callbacks\(\)") as record:
        pruned.fit(x, y, epochs=2, verbose=0)
    assert sum(str(w.message) == UNDRIVEN for w in record) == 1  # once, not once per layer
    import warnings

    with warnings.catch_warnings():  # driven by its callbacks: silent
        warnings.simplefilter("error", UserWarning)
        pruned.fit(x, y, epochs=1, verbose=0, callbacks=pruner.callbacks())


def test_prune_model_rejects_an_unknown_selection_string():
    with pytest.raises(ValueError, match=r"layers='every' is invalid.*'all'"):
        tsp.prune_model(small_cnn(), tsp.Magnitude(0.5), layers="every")
