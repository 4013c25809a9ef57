"""The private Keras APIs of keras_drop.layers._keras_internals still behave
as Cutout, the model rewrites and the BatchNorm tools rely on: this file
fails first if a Keras release moves them."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_drop.layers._keras_internals import (
    AddOperation,
    DataLayer,
    Functional,
    call_like,
    called_on_its_own,
    functional_graph,
    graph_call_inputs,
    graph_calls,
    held_attribute,
    input_signature,
    predict_batches,
    replace_sublayer,
    sublayers,
    sublayers_in_order,
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


def test_sublayers_walks_nested_models_and_subclassed_layers():
    class Holder(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.inner = [keras.layers.Dense(2, name="held")]

        def call(self, inputs):
            return self.inner[0](inputs)

    inner = keras.Sequential([keras.Input((2,)), Holder(name="holder")], name="inner")
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="top")(inner(inputs)))
    names = [layer.name for layer in sublayers(model)]
    assert {"inner", "holder", "held", "top"} <= set(names)
    assert model.name not in names and len(names) == len(set(names))


def test_graph_walk_finds_every_call_and_its_input_nested_models_included():
    block = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(4), keras.layers.BatchNormalization()],
        name="block",
    )
    inputs = keras.Input((4,))
    first = keras.layers.Dense(4, name="first")
    x = first(inputs)
    y = block(x)
    z = block(keras.layers.Add(name="add")([x, y]))
    model = keras.Model(inputs, z)

    assert functional_graph(model) is model
    inner = functional_graph(block)
    assert inner is not None and inner is not block
    calls = graph_calls(model)
    assert [layer.name for layer, _ in calls] == ["first", "block", "add", "block"]
    assert calls[0][1] is inputs and calls[1][1] is x and calls[3][1] is not x
    assert [t is u for t, u in zip(calls[2][1], [x, y], strict=True)] == [True, True]
    # Every tensor of a call, also the second argument of an operation.
    difference = keras.Model(inputs, keras.ops.subtract(x, z))
    operation, tensors = graph_call_inputs(difference)[-1]
    assert type(operation).__name__ == "Subtract"
    assert [t is u for t, u in zip(tensors, [x, z], strict=True)] == [True, True]
    # The nested graph's own calls take its own input, not the outer tensor.
    inner_calls = graph_calls(inner)
    assert [type(layer).__name__ for layer, _ in inner_calls] == [
        "Dense",
        "BatchNormalization",
    ]
    assert inner_calls[0][1] is inner.input

    names = [layer.name for layer in sublayers(model)]
    assert block.layers[-1].name in names and model.name not in names

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    assert functional_graph(Subclassed()) is None
    assert functional_graph(keras.Sequential([keras.layers.Dense(2)])) is None


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


def test_add_operations_are_graph_nodes_of_one_class():
    x = keras.Input((3,))
    y = keras.layers.Dense(3)(x)
    model = keras.Model(x, [x + y, keras.ops.add(y, x), y + 1.0])
    adds = [op for op, _ in graph_calls(model) if isinstance(op, AddOperation)]
    assert len(adds) == 3
    assert not any(isinstance(op, keras.layers.Layer) for op in adds)
    assert [len(op._inbound_nodes[0].arguments.args) for op in adds] == [2, 2, 2]


class Block(keras.layers.Layer):
    def __init__(self, plain_function=False, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(2, name="dense")
        # keras-hub's MobileNetV5 blocks hold a plain function at rate 0.
        if plain_function:
            self.drop_path = lambda x: x
        else:
            self.drop_path = keras.layers.Identity(name="drop_path")
        self.out = keras.layers.Dense(2, name="out")

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.out.build(input_shape)

    def call(self, inputs):
        return inputs + self.drop_path(self.out(self.dense(inputs)))


def test_replace_sublayer_swaps_a_tracked_layer_in_a_built_layer():
    stack = keras.Sequential([keras.Input((2,)), Block(name="b0"), Block(name="b1")])
    names = [layer.name for layer in sublayers_in_order(stack)]
    b0 = names.index("b0")
    assert names[b0 : b0 + 5] == ["b0", "dense", "drop_path", "out", "b1"]
    block = stack.layers[0]
    weights = [w.path for w in stack.weights]
    new = keras.layers.Dropout(0.5, name="new_drop")
    replace_sublayer(block, "drop_path", new)
    assert block.drop_path is new
    assert [layer.name for layer in block._flatten_layers(include_self=False)] == [
        "dense",
        "new_drop",
        "out",
    ]
    assert [w.path for w in stack.weights] == weights
    # A plain function in place of a layer: the new layer is tracked too.
    plain = Block(name="plain", plain_function=True)
    plain.build((None, 2))
    assert held_attribute(plain, "drop_path")(1.0) == 1.0
    replace_sublayer(plain, "drop_path", keras.layers.Dropout(0.1, name="d2"))
    assert plain.drop_path.name == "d2"
    assert [layer.name for layer in sublayers(plain)] == ["dense", "out", "d2"]


def test_input_signature_describes_functional_sequential_and_subclassed():
    inputs = keras.Input((3,))
    functional = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    sequential = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, inputs):
            return self.dense(inputs)

    subclassed = Subclassed()
    subclassed(np.zeros((1, 3), "float32"))
    for model in (functional, sequential, subclassed):
        (spec,) = input_signature(model)
        spec = keras.tree.flatten(spec)[0]
        assert tuple(spec.shape) == (None, 3)


def test_predict_batches_reads_what_predict_reads():
    import tensorflow as tf

    x = np.arange(10, dtype="float32").reshape(5, 2)
    batches = list(predict_batches(x, 2))
    assert [batch.shape for batch in batches] == [(2, 2), (2, 2), (1, 2)]
    np.testing.assert_array_equal(np.concatenate(batches), x)
    pair = list(predict_batches((x, x[:, :1]), 4))  # a two-input structure
    assert [[t.shape for t in batch] for batch in pair] == [
        [(4, 2), (4, 1)],
        [(1, 2), (1, 1)],
    ]
    # A dataset's own batches, its targets left out.
    dataset = tf.data.Dataset.from_tensor_slices((x, x[:, 0])).batch(3)
    assert [batch.shape for batch in predict_batches(dataset, 2)] == [(3, 2), (2, 2)]
    # `mc_predict` turns this message into its own.
    with pytest.raises(ValueError, match="Unrecognized data type"):
        list(predict_batches([[1.0, 2.0]], 2))


class Options(keras.layers.Layer):
    def call(self, inputs, padding_mask=None, flip=False):
        outputs = -inputs if flip else inputs
        return outputs * ops.cast(padding_mask[:, :, None], outputs.dtype)


class Wrapper(keras.layers.Layer):
    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer

    def call(self, inputs, *args, training=None, **kwargs):
        self.training_seen = training
        return self.layer(inputs, *args, **kwargs)


def test_call_like_binds_a_wrapper_call_as_the_wrapped_layer_binds_it():
    x = np.ones((2, 3, 1), "float32")
    mask = np.array([[True, False, True], [False, True, True]])
    expected = -x * mask[:, :, None]
    # A tensor and a Python value among one `**kwargs`: Keras refuses them.
    with pytest.raises(ValueError, match="cannot mix tensors and non-tensors"):
        Wrapper(Options())(x, padding_mask=mask, flip=True)
    wrapper = Wrapper(Options())
    call_like(wrapper, wrapper.layer)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(wrapper(x, padding_mask=mask, flip=True)), expected
    )
    # `training` still reaches the wrapper, which the layer does not take.
    np.testing.assert_array_equal(
        ops.convert_to_numpy(wrapper(x, padding_mask=mask, flip=True, training=True)),
        expected,
    )
    assert wrapper.training_seen is True
