"""variance_shift and recalibrate_batchnorm: measured against NumPy.

The test model is built so that the inputs of every BatchNormalization at
inference can be recomputed in NumPy from the weights alone (1x1
convolutions are matrix products over the channel axis; dropout-type layers
are the identity at inference), so the references below share no code with
the probe that keras_drop builds.
"""

import keras
import numpy as np
import pytest

import keras_drop
from tests.helpers import BACKEND, to_numpy

RNG = np.random.default_rng(7)
X_TRAIN = RNG.normal(0.3, 1.0, (128, 8, 8, 3)).astype("float32")
Y_TRAIN = RNG.integers(0, 3, 128)
X = RNG.normal(0.3, 1.0, (100, 8, 8, 3)).astype("float32")
Y = RNG.integers(0, 3, 100)
BN_NAMES = ("bn_first", "bn_nested", "bn_last")


def build_model() -> keras.Model:
    """Conv-BN-ReLU, Dropout, a nested Sequential block (Conv-BN-ReLU, its
    BN on channels first: axis 1 of a (batch, 6, 8, 8) tensor), DropPath,
    Conv-BN, head. Only bn_first has no dropout before it."""
    block = keras.Sequential(
        [
            keras.Input((8, 8, 8)),
            keras.layers.Conv2D(6, 1, name="conv_nested"),
            keras.layers.Permute((3, 1, 2)),
            keras.layers.BatchNormalization(axis=1, momentum=0.5, name="bn_nested"),
            keras.layers.Permute((2, 3, 1)),
            keras.layers.ReLU(),
        ],
        name="block",
    )
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 1, name="conv_first")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.5, name="bn_first")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Dropout(0.5, seed=1)(x)
    x = block(x)
    x = keras_drop.DropPath(0.3, seed=2)(x)
    x = keras.layers.Conv2D(8, 1, name="conv_last")(x)
    x = keras.layers.BatchNormalization(momentum=0.5, name="bn_last")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3)(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def trained_weights():
    """A few training steps with momentum 0.5: the moving statistics are
    those of dropped-out activations."""
    keras.utils.set_random_seed(0)
    model = build_model()
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        # The quickest fit of this tiny model per backend: XLA compilation
        # costs TensorFlow more than it saves; an eager JAX step is slower.
        jit_compile=BACKEND == "jax",
    )
    model.fit(X_TRAIN, Y_TRAIN, batch_size=16, epochs=2, verbose=0)
    return model.get_weights()


@pytest.fixture
def model(trained_weights):
    model = build_model()
    model.set_weights(trained_weights)
    return model


def layer(model: keras.Model, name: str) -> keras.layers.Layer:
    if name.endswith("nested"):
        return model.get_layer("block").get_layer(name)
    return model.get_layer(name)


def weights64(model: keras.Model, name: str) -> list[np.ndarray]:
    return [w.astype("float64") for w in layer(model, name).get_weights()]


def bn_inputs_numpy(model, x, stats=None):
    """Each BN's inputs at inference, in NumPy float64.

    `stats` maps a BN name to the (mean, variance) it normalizes with;
    missing names use the layer's moving statistics. Returns the inputs of
    bn_first, bn_nested, bn_last.
    """
    stats = stats or {}

    def conv(name, h):
        kernel, bias = weights64(model, name)
        return h @ kernel[0, 0] + bias

    def bn(name, h):
        gamma, beta, mean, variance = weights64(model, name)
        mean, variance = stats.get(name, (mean, variance))
        eps = layer(model, name).epsilon
        return (h - mean) / np.sqrt(variance + eps) * gamma + beta

    inputs = {}
    h = x.astype("float64")
    inputs["bn_first"] = h = conv("conv_first", h)
    h = np.maximum(bn("bn_first", h), 0.0)  # ReLU; Dropout is the identity
    # bn_nested normalizes axis 1 of the permuted tensor: here the same
    # channels, kept last.
    inputs["bn_nested"] = h = conv("conv_nested", h)
    h = np.maximum(bn("bn_nested", h), 0.0)  # DropPath is the identity
    inputs["bn_last"] = conv("conv_last", h)
    return inputs


def moments(values, axis=-1):
    axes = tuple(i for i in range(values.ndim) if i != axis % values.ndim)
    return values.mean(axis=axes), values.var(axis=axes)  # biased, as BN


def recalibrated_numpy(model, x):
    """Precise BN in NumPy: each BN's statistics computed with its
    predecessors already recalibrated."""
    stats = {}
    for name in BN_NAMES:
        stats[name] = moments(bn_inputs_numpy(model, x, stats)[name])
    return stats


def moving(model, name):
    bn = layer(model, name)
    return to_numpy(bn.moving_mean), to_numpy(bn.moving_variance)


def assert_statistics(model, expected, rtol=2e-5):
    for name in BN_NAMES:
        mean, variance = moving(model, name)
        want_mean, want_variance = expected[name]
        scale = np.sqrt(want_variance)
        np.testing.assert_allclose(mean, want_mean, rtol=0, atol=rtol * scale.max())
        np.testing.assert_allclose(variance, want_variance, rtol=rtol)


def test_exported_at_the_top_level():
    assert keras_drop.variance_shift is keras_drop.batchnorm.variance_shift
    assert "recalibrate_batchnorm" in keras_drop.__all__
    assert "variance_shift" in keras_drop.__all__


def test_variance_shift_equals_the_numpy_ratio_and_changes_nothing(model):
    before = [to_numpy(v).copy() for v in model.variables]
    shift = keras_drop.variance_shift(model, X)
    assert list(shift) == list(BN_NAMES)
    reference = bn_inputs_numpy(model, X)
    for name in BN_NAMES:
        eps = layer(model, name).epsilon
        _, variance = moments(reference[name])
        ratio = (moving(model, name)[1] + eps) / (variance + eps)
        assert shift[name] == pytest.approx(np.median(ratio), rel=1e-5)
    # Dropout(0.5) and DropPath(0.3) inflated the training variance; the
    # first BN has no dropout before it.
    assert shift["bn_nested"] > 1.3 and shift["bn_last"] > 1.3
    assert 0.8 < shift["bn_first"] < 1.25
    for old, new in zip(before, model.variables, strict=True):
        np.testing.assert_array_equal(to_numpy(new), old)


def test_recalibration_gives_the_population_statistics_in_graph_order(model):
    expected = recalibrated_numpy(model, X)
    keras_drop.recalibrate_batchnorm(model, X)
    assert_statistics(model, expected)
    shift = keras_drop.variance_shift(model, X)
    assert shift == pytest.approx(dict.fromkeys(BN_NAMES, 1.0), abs=1e-5)


def test_recalibration_changes_only_the_moving_statistics(model):
    moving_ids = {
        id(v)
        for name in BN_NAMES
        for v in (layer(model, name).moving_mean, layer(model, name).moving_variance)
    }
    trainable = [to_numpy(v).copy() for v in model.trainable_weights]
    before = [to_numpy(v).copy() for v in model.variables]
    keras_drop.recalibrate_batchnorm(model, X)
    for old, new in zip(trainable, model.trainable_weights, strict=True):
        np.testing.assert_array_equal(to_numpy(new), old)
    changed = {
        id(v)
        for old, v in zip(before, model.variables, strict=True)
        if not np.array_equal(to_numpy(v), old)
    }
    assert changed == moving_ids


def ragged_batches(x, sizes):
    edges = np.cumsum((0, *sizes))
    assert edges[-1] == len(x)
    return [x[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True)]


@pytest.mark.parametrize("sizes", [(45, 45, 10), (97, 3), (100,)])
def test_ragged_batches_give_the_statistics_of_the_whole_array(trained_weights, sizes):
    # A tiny last batch weighed as a whole batch would move the mean far
    # off: every sample must count once.
    expected = None
    for data in (X, ragged_batches(X, sizes)):
        model = build_model()
        model.set_weights(trained_weights)
        expected = expected or recalibrated_numpy(model, X)
        keras_drop.recalibrate_batchnorm(model, data)
        assert_statistics(model, expected)


def test_tf_data_and_tuples_of_x_y_and_generators(trained_weights):
    tf = pytest.importorskip("tensorflow")
    weights = np.ones(len(X), "float32")
    sources = {
        "tf.data (x, y), ragged": tf.data.Dataset.from_tensor_slices((X, Y)).batch(48),
        "tf.data x": tf.data.Dataset.from_tensor_slices(X).batch(32),
        "list of (x, y, w)": [
            (X[a : a + 30], Y[a : a + 30], weights[a : a + 30]) for a in (0, 30, 60, 90)
        ],
        # A generator is read once and kept for the following passes.
        "generator of [x, y]": (
            [x, y]
            for x, y in zip(
                ragged_batches(X, (64, 36)), ragged_batches(Y, (64, 36)), strict=True
            )
        ),
    }
    for description, data in sources.items():
        model = build_model()
        model.set_weights(trained_weights)
        keras_drop.recalibrate_batchnorm(model, data)
        try:
            assert_statistics(model, recalibrated_numpy(model, X))
        except AssertionError as error:
            raise AssertionError(description) from error


def test_steps_caps_the_batches_read(trained_weights):
    model = build_model()
    model.set_weights(trained_weights)
    expected = recalibrated_numpy(model, X[:64])
    keras_drop.recalibrate_batchnorm(model, X, steps=2)  # arrays: batches of 32
    assert_statistics(model, expected)
    model.set_weights(trained_weights)
    batches = iter(ragged_batches(X, (40, 24, 36)))
    keras_drop.recalibrate_batchnorm(model, batches, steps=2)
    assert_statistics(model, expected)
    assert len(next(batches)) == 36  # the third batch was never read


def test_shared_names_in_nested_models_get_their_path():
    def block(name):
        return keras.Sequential(
            [keras.Input((3,)), keras.layers.BatchNormalization(name="bn")], name=name
        )

    inputs = keras.Input((3,))
    model = keras.Model(inputs, block("second")(block("first")(inputs)))
    shift = keras_drop.variance_shift(model, np.ones((4, 3), "float32"))
    assert list(shift) == ["first/bn", "second/bn"]


def test_a_bn_right_after_the_input_and_a_mean_check():
    # The BN's input is the model's input: its statistics are the data's.
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.BatchNormalization()(inputs))
    data = np.random.default_rng(0).normal(5.0, 2.0, (1000, 3))
    keras_drop.recalibrate_batchnorm(model, data.astype("float32"))
    bn = model.layers[-1]
    mean, variance = moments(data.astype("float32").astype("float64"))
    np.testing.assert_allclose(to_numpy(bn.moving_mean), mean, rtol=1e-6)
    np.testing.assert_allclose(to_numpy(bn.moving_variance), variance, rtol=1e-6)


@pytest.mark.parametrize("function", ["variance_shift", "recalibrate_batchnorm"])
@pytest.mark.parametrize("steps", [0, -1, 1.5, True, "2"])
def test_invalid_steps_names_the_argument_and_value(function, steps):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.BatchNormalization()(inputs))
    with pytest.raises(ValueError) as error:
        getattr(keras_drop, function)(model, np.ones((4, 3)), steps=steps)
    assert "`steps`" in str(error.value) and f"steps={steps!r}" in str(error.value)


@pytest.mark.parametrize("function", ["variance_shift", "recalibrate_batchnorm"])
def test_errors(model, function):
    run = getattr(keras_drop, function)

    inputs = keras.Input((3,))
    no_bn = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="no BatchNormalization"):
        run(no_bn, np.ones((4, 3)))

    for empty in ([], X[:0], iter([])):
        with pytest.raises(ValueError, match="no samples"):
            run(model, empty)

    with pytest.raises(ValueError, match="`data`"):
        run(model, 3)

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.bn = keras.layers.BatchNormalization()

        def call(self, x):
            return self.bn(x)

    subclassed = Subclassed()
    subclassed(np.ones((2, 3)))
    with pytest.raises(ValueError, match="Cannot probe.*functional or Sequential"):
        run(subclassed, np.ones((4, 3)))

    class Hidden(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.norm = keras.layers.BatchNormalization(name="hidden_bn")

        def call(self, x):
            return self.norm(x)

    inputs = keras.Input((3,))
    x = keras.layers.BatchNormalization()(inputs)
    hidden = keras.Model(inputs, Hidden()(x))
    with pytest.raises(ValueError, match="hidden_bn"):
        run(hidden, np.ones((4, 3)))
