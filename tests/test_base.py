"""The schedulable strength every rate (or beta) layer shares: assigning it
reaches an already compiled train step; the scheduler hook leaves the config;
the strength variable is state, not a weight."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_drop
from keras_drop.layers._base import ScheduledStrength
from keras_drop.layers._replicas import SeedGenerator
from tests.helpers import JIT_COMPILE, Ones, bits, to_numpy, zero_fraction


def _variance(y_true, y_pred):
    return ops.var(y_pred)


def _drop_path_model(layer):
    inputs = keras.Input((16,))
    return keras.Model(inputs, layer(Ones()(inputs))), zero_fraction


def _stochastic_depth_model(layer):
    inputs = keras.Input((16,))
    hidden = Ones()(inputs)
    return keras.Model(inputs, layer([hidden * 0.0, hidden])), zero_fraction


def _join_model(layer):
    # [0, x]: the output is 0 where the zero input was kept alone.
    inputs = keras.Input((16,))
    hidden = Ones()(inputs)
    return keras.Model(inputs, layer([hidden * 0.0, hidden])), zero_fraction


def _drop_connect_model(layer):
    # Inputs are one-hot rows, so the outputs are the dropped kernel's rows.
    inputs = keras.Input((16,))
    return keras.Model(inputs, layer(inputs)), zero_fraction


def _uniform_model(layer):
    inputs = keras.Input((16,))
    return keras.Model(inputs, layer(Ones()(inputs))), _variance


# (layer factory, model builder, inputs, loss as a function of the strength).
# LayerDrop draws once per batch, too few draws in these few steps: its rate
# is assigned after compile over 300 steps in tests/test_depth.py.
CASES = {
    "DropPath": (
        lambda s: keras_drop.DropPath(s, seed=0),
        _drop_path_model,
        np.ones((2048, 16), "float32"),
        lambda s: s,
    ),
    "StochasticDepth": (
        lambda s: keras_drop.StochasticDepth(s, mode="row", seed=0),
        _stochastic_depth_model,
        np.ones((2048, 16), "float32"),
        lambda s: s,
    ),
    # P(the zero input kept alone) = s (1 - s) + s**2 / 2 (both dropped, it
    # is revived half the time).
    "JoinDropPath": (
        lambda s: keras_drop.JoinDropPath(s, seed=0),
        _join_model,
        np.ones((2048, 16), "float32"),
        lambda s: s - s**2 / 2,
    ),
    "DropConnectDense": (
        lambda s: keras_drop.DropConnectDense(
            256, s, use_bias=False, kernel_initializer="ones", seed=0
        ),
        _drop_connect_model,
        np.tile(np.eye(16, dtype="float32"), (128, 1)),
        lambda s: s,
    ),
    "UniformDropout": (
        lambda s: keras_drop.UniformDropout(s, seed=0),
        _uniform_model,
        np.ones((2048, 16), "float32"),
        lambda s: s**2 / 3.0,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_strength_assigned_after_compile_reaches_the_compiled_step(name):
    factory, build, x, expected = CASES[name]
    layer = factory(0.1)
    model, loss = build(layer)
    model.compile(keras.optimizers.SGD(0.0), loss=loss, jit_compile=JIT_COMPILE)

    def measure():
        history = model.fit(x, x[:, :1], batch_size=512, epochs=1, verbose=0)
        return history.history["loss"][-1]

    before = measure()
    traced = model.train_function
    strength = 0.5
    setattr(layer, layer._strength_name, strength)
    after = measure()
    assert model.train_function is traced  # the same compiled step
    assert before == pytest.approx(expected(0.1), rel=0.25)
    assert after == pytest.approx(expected(strength), rel=0.1)
    assert layer.get_config()[layer._strength_name] == strength


@pytest.mark.parametrize("name", sorted(CASES))
def test_scheduler_hook_changes_applied_strength_not_config(name):
    factory, _, x, _ = CASES[name]
    layer = factory(0.3)
    reference = factory(0.0)
    inputs = x[:64]
    if name in ("StochasticDepth", "JoinDropPath"):
        inputs = [inputs, inputs]
    layer._set_current_strength(0.0)
    if name == "DropConnectDense":
        layer.build(x.shape)
        reference.build(x.shape)
        reference.set_weights(layer.get_weights())
    np.testing.assert_array_equal(
        bits(layer(inputs, training=True)), bits(reference(inputs, training=True))
    )
    assert layer.get_config()[layer._strength_name] == 0.3
    assert getattr(layer, layer._strength_name) == 0.3


@pytest.mark.parametrize("name", sorted(CASES))
def test_strength_variable_is_state_not_a_weight(name):
    factory, _, x, _ = CASES[name]
    layer = factory(0.3)
    two_inputs = name in ("StochasticDepth", "JoinDropPath")
    layer.build([x.shape, x.shape] if two_inputs else x.shape)
    assert isinstance(layer, ScheduledStrength)
    assert not any("current_" in w.path for w in layer.weights)
    assert any(f"current_{layer._strength_name}" in v.path for v in layer.variables)
    expected_params = 16 * 256 if name == "DropConnectDense" else 0
    assert layer.count_params() == expected_params


def test_invalid_assignment_names_the_argument_and_keeps_the_value():
    layer = keras_drop.DropPath(0.2)
    with pytest.raises(ValueError, match="`rate`.*rate=1.5"):
        layer.rate = 1.5
    assert layer.rate == 0.2
    assert float(to_numpy(layer._current_strength())) == pytest.approx(0.2)
    uniform = keras_drop.UniformDropout(0.2)
    with pytest.raises(ValueError, match="`beta`.*beta=-1"):
        uniform.beta = -1


# --------------------------------------------------------------------------
# Seeds and configs every layer shares.


def test_seeds_on_one_device_are_keras_own():
    # The replica fold-in (keras_drop.layers._replicas) changes nothing
    # outside a multi-replica strategy: the masks one device draws are the
    # ones a `keras.random.SeedGenerator` would give.
    ours, theirs = SeedGenerator(42), keras.random.SeedGenerator(42)
    for _ in range(3):
        np.testing.assert_array_equal(to_numpy(ours.next()), to_numpy(theirs.next()))
    for layer in (keras_drop.DropPath(0.1), keras_drop.Cutout(4)):
        assert isinstance(layer.seed_generator, SeedGenerator)


@pytest.mark.parametrize(
    "cls, config, argument",
    [
        (keras_drop.DropPath, {"rate": 2.0}, "rate"),
        (keras_drop.UniformDropout, {"beta": -1.0}, "beta"),
        (keras_drop.DropConnectDense, {"units": 2, "rate": 1.0}, "rate"),
        (keras_drop.Cutout, {"length": 0}, "length"),
        (keras_drop.DropBlock2D, {"rate": 0.1, "block_size": 3, "mode": 1}, "mode"),
    ],
)
def test_from_config_raises_the_argument_error(cls, config, argument):
    # Keras' from_config would turn it into a TypeError "could not be
    # deserialized"; a saved model with a bad value must say which value.
    with pytest.raises(ValueError, match=f"`{argument}`|'{argument}'") as error:
        cls.from_config({**config, "name": "bad"})
    assert "'bad'" in str(error.value)


@pytest.mark.backends("tensorflow", reason="AutoGraph is TensorFlow's")
def test_functional_forms_in_a_tf_function_convert_without_autograph_warnings(
    caplog,
):
    # AutoGraph converts whatever a `tf.function` calls; a function it cannot
    # convert runs as-is after a warning asking users to report a TF bug.
    import tensorflow as tf

    drop = keras_drop.ops
    x, kernel = tf.ones((2, 16, 16, 3)), tf.ones((4, 5))
    calls = [
        lambda: drop.drop_block(x, 0.1, 3, seed=1),
        lambda: drop.drop_block(
            x, 0.1, (3, 2), shared_channels=True, data_format="channels_first"
        ),
        lambda: drop.drop_block(tf.ones((2, 16, 3)), 0.1, 3, seed=1),
        lambda: drop.drop_block(tf.ones((2, 8, 8, 8, 3)), 0.1, 3, with_noise=True),
        lambda: drop.drop_path(x, 0.1, seed=1),
        lambda: drop.drop_connect(kernel, 0.1, seed=1),
        lambda: drop.stochastic_depth(x, x, 0.1, seed=1),
        lambda: drop.stochastic_depth(x, x, 0.1, mode="row", seed=1),
        lambda: drop.uniform_dropout(x, 0.1, seed=1),
        lambda: drop.cutout(x, 4, seed=1),
    ]
    with caplog.at_level("WARNING", logger="tensorflow"):
        for call in calls:
            tf.function(call)()
    assert not [r for r in caplog.records if "AutoGraph" in r.getMessage()]
