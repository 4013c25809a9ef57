"""DropConnectDense and keras_drop.ops.drop_connect: behaviour, measured."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_drop
from keras_drop import DropConnectDense
from tests.helpers import bits, run_layer_test, to_numpy


def _dense_shape(units):
    return lambda shape: (*shape[:-1], units)


@pytest.mark.parametrize(
    "kwargs, shape, symbolic",
    [
        ({"units": 3, "rate": 0.3, "activation": "relu", "seed": 1}, (4, 5), None),
        ({"units": 2, "rate": 0.1, "use_bias": False}, (4, 6, 5), (None, 5)),
    ],
)
def test_smoke(kwargs, shape, symbolic):
    run_layer_test(
        DropConnectDense,
        kwargs,
        shape,
        symbolic_shape=symbolic,
        output_shape=_dense_shape(kwargs["units"]),
        identity_at_inference=False,
    )


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"rate": 1.0}, "rate"),
        ({"rate": -0.5}, "rate"),
        ({"rate": None}, "rate"),
        ({"rate": 0.1, "seed": "1"}, "seed"),
    ],
)
def test_invalid_arguments_name_the_argument_and_value(kwargs, argument):
    with pytest.raises(ValueError) as error:
        DropConnectDense(4, **kwargs)
    assert f"`{argument}`" in str(error.value)
    assert f"{argument}={kwargs[argument]!r}" in str(error.value)


def test_config_holds_every_dense_argument_and_round_trips():
    kwargs = {
        "units": 7,
        "activation": "tanh",
        "use_bias": False,
        "kernel_initializer": "he_normal",
        "kernel_regularizer": "l2",
        "kernel_constraint": "non_neg",
        "name": "connect",
    }
    layer = DropConnectDense(rate=0.25, seed=3, **kwargs)
    config = layer.get_config()
    assert set(keras.layers.Dense(**kwargs).get_config()) <= set(config)
    assert config["rate"] == 0.25 and config["seed"] == 3
    rebuilt = DropConnectDense.from_config(config)
    assert rebuilt.get_config() == config


def test_inference_is_exactly_dense():
    x = np.random.default_rng(0).normal(size=(6, 5)).astype("float32")
    layer = DropConnectDense(4, 0.5, activation="relu", seed=0)
    dense = keras.layers.Dense(4, activation="relu")
    layer.build(x.shape)
    dense.build(x.shape)
    dense.set_weights(layer.get_weights())
    np.testing.assert_array_equal(bits(layer(x)), bits(dense(x)))
    zero = DropConnectDense(4, 0.0, activation="relu", seed=0)
    zero.build(x.shape)
    zero.set_weights(layer.get_weights())
    np.testing.assert_array_equal(bits(zero(x, training=True)), bits(dense(x)))


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_kernel_dropped_at_rate_one_mask_shared_by_the_batch(rate):
    units, inputs = 512, 64
    layer = DropConnectDense(
        units, rate, use_bias=False, kernel_initializer="ones", seed=2
    )
    eye = np.eye(inputs, dtype="float32")
    y = to_numpy(layer(np.concatenate([eye, eye]), training=True))
    kernel = y[:inputs]  # row i of the output is row i of the dropped kernel
    np.testing.assert_array_equal(kernel, y[inputs:])  # one mask for the batch
    assert np.all((kernel == 0) | np.isclose(kernel, 1 / (1 - rate), rtol=1e-6))
    n = kernel.size
    assert abs((kernel == 0).mean() - rate) < 5 * np.sqrt(rate * (1 - rate) / n)
    again = to_numpy(layer(eye, training=True))
    assert not np.array_equal(again, kernel)  # a new mask per call


def test_expected_output_is_the_dense_output():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 32)).astype("float32")
    layer = DropConnectDense(8, 0.3, seed=4)
    layer.build(x.shape)
    mean = np.mean([to_numpy(layer(x, training=True)) for _ in range(400)], axis=0)
    exact = to_numpy(layer(x))
    # Each output sums 32 dropped terms; 400 draws: the standard error is a
    # fraction of the output scale.
    spread = np.sqrt(0.3 / 0.7 / 400) * np.sqrt((x**2) @ (to_numpy(layer.kernel) ** 2))
    assert np.all(np.abs(mean - exact) <= 5 * spread + 1e-5)


def test_functional_form_and_seeds():
    kernel = ops.ones((32, 32))
    a = to_numpy(keras_drop.ops.drop_connect(kernel, 0.5, seed=1))
    np.testing.assert_array_equal(
        a, to_numpy(keras_drop.ops.drop_connect(kernel, 0.5, seed=1))
    )
    assert set(np.unique(a)) == {0.0, 2.0}
    with pytest.raises(ValueError, match="`rate`"):
        keras_drop.ops.drop_connect(kernel, 1.0)
    x = ops.ones((2, 32))
    first, second = DropConnectDense(4, 0.5, seed=9), DropConnectDense(4, 0.5, seed=9)
    first.build(x.shape)
    second.build(x.shape)
    second.set_weights(first.get_weights())
    np.testing.assert_array_equal(
        to_numpy(first(x, training=True)), to_numpy(second(x, training=True))
    )


def test_saved_model_reloads_with_its_rate(tmp_path):
    inputs = keras.Input((5,))
    model = keras.Model(inputs, DropConnectDense(3, 0.2, seed=1)(inputs))
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.layers[-1].rate == 0.2
    x = np.ones((2, 5), "float32")
    np.testing.assert_array_equal(
        to_numpy(restored.predict(x, verbose=0)), to_numpy(model.predict(x, verbose=0))
    )
