"""The private Keras APIs of keras_drop.layers._keras_internals still behave
as Cutout and the model rewrites rely on: this file fails first if a Keras
release moves them."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_drop.layers._keras_internals import (
    DataLayer,
    Functional,
    called_on_its_own,
)


class Probe(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.entries = []

    def call(self, inputs):
        self.entries.append(called_on_its_own(self))
        return inputs

    def compute_output_shape(self, input_shape):
        # As Cutout: a symbolic call never runs `call`.
        return input_shape


def test_called_on_its_own_tells_a_lone_call_from_a_call_inside_a_model():
    probe = Probe()
    probe(ops.ones((1, 2)))
    model = keras.Sequential([keras.Input((2,)), probe])
    model(ops.ones((1, 2)))
    model.predict(np.ones((1, 2)), verbose=0)
    assert probe.entries[0] is True
    assert len(probe.entries) == 3 and not any(probe.entries[1:])

    class Outer(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.inner = Probe()

        def call(self, inputs):
            return self.inner(inputs)

    outer = Outer()
    outer(ops.ones((1, 2)))
    # (An earlier symbolic run may build `outer`; the concrete call is last.)
    assert outer.inner.entries[-1] is False  # inside another layer's call


def test_data_layer_switches_to_tensorflow_inside_tf_data():
    tf = pytest.importorskip("tensorflow")

    class BackendName(DataLayer):
        def call(self, inputs):
            names.append(self.backend.name)
            return self.backend.numpy.add(inputs, 1.0)

        def compute_output_shape(self, input_shape):
            return input_shape

    names = []
    layer = BackendName()
    assert issubclass(DataLayer, keras.layers.Layer)
    dataset = tf.data.Dataset.from_tensor_slices(np.zeros((2, 3), "float32"))
    values = [np.asarray(v) for v in dataset.map(layer)]
    np.testing.assert_array_equal(np.stack(values), np.ones((2, 3)))
    assert names == ["tensorflow"]
    layer(ops.zeros((1, 3)))
    assert names[-1] == keras.backend.backend()


def test_functional_is_the_class_of_models_with_a_graph():
    inputs = keras.Input((2,))
    outputs = keras.layers.Dense(1)(inputs)
    functional = keras.Model(inputs, outputs)

    class FunctionalSubclass(keras.Model):
        def __init__(self, **kwargs):
            x = keras.Input((2,))
            super().__init__(x, keras.layers.Dense(1)(x), **kwargs)

    class Subclassed(keras.Model):
        def call(self, inputs):
            return inputs

    sequential = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    assert isinstance(functional, Functional)
    assert isinstance(FunctionalSubclass(), Functional)
    assert not isinstance(Subclassed(), Functional)
    assert not isinstance(sequential, Functional)
    assert issubclass(Functional, keras.Model)
    # What the recipes rely on: clone_model rebuilds a Functional through
    # `call_function`, one call per layer call of the graph.
    called = []

    def call_function(layer, *args, **kwargs):
        called.append(layer.name)
        return layer(*args, **kwargs)

    keras.models.clone_model(
        functional, clone_function=lambda layer: layer, call_function=call_function
    )
    assert called == [functional.layers[1].name]
