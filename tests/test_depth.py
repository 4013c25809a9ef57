"""LayerDrop and JoinDropPath: behaviour, measured."""

import json
import warnings

import keras
import numpy as np
import pytest
from keras import ops

import keras_drop
from keras_drop import JoinDropPath, LayerDrop
from tests.helpers import (
    JIT_COMPILE,
    assert_seed_behaviour,
    bits,
    run_layer_test,
    to_numpy,
    zero_fraction,
)

ALMOST_ONE = 1.0 - 2.0**-20
CHANNELS = 4


def sigma(p, n):
    """Standard error of a Bernoulli(p) frequency over n draws."""
    return np.sqrt(p * (1 - p) / n)


def _images(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6, 6, CHANNELS)).astype("float32")


def conv_bn_relu():
    return keras.Sequential(
        [
            keras.layers.Conv2D(CHANNELS, 3, padding="same", use_bias=False),
            keras.layers.BatchNormalization(momentum=0.5),
            keras.layers.ReLU(),
        ]
    )


def residual_block(name=None):
    """A functional sub-model holding its own residual: x + conv_bn_relu(x)."""
    inputs = keras.Input((None, None, CHANNELS))
    outputs = keras.layers.Add()([inputs, conv_bn_relu()(inputs)])
    return keras.Model(inputs, outputs, name=name)


class Counted(keras.layers.Layer):
    """x * w + 1 (w = 1, trainable), counting its runs in a non-trainable
    variable: on zero inputs its output is 1 when it ran."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(), initializer="ones")
        self.runs = self.add_weight(shape=(), initializer="zeros", trainable=False)

    def call(self, inputs):
        self.runs.assign_add(1.0)
        return inputs * self.w + 1.0


class Masked(keras.layers.Layer):
    """x * scale, zeroed where `padding_mask` is false, + 1 in training:
    its output shows every argument it received."""

    def call(self, inputs, padding_mask=None, scale=1.0, flip=False, training=None):
        outputs = -inputs * scale if flip else inputs * scale
        if padding_mask is not None:
            outputs = outputs * ops.cast(padding_mask[..., None], outputs.dtype)
        if training:
            outputs = outputs + 1.0
        return outputs


# --------------------------------------------------------------------------
# LayerDrop.


def test_layer_drop_skips_at_the_rate_in_compiled_fit_and_follows_a_new_rate():
    # On zero inputs the output is 1 when the layer ran and 0 when it was
    # skipped: the zero-fraction loss of a step is 1 exactly when it skips.
    # The layer counts its own runs: a skipped step runs nothing.
    steps = 300
    counted = Counted()
    drop = LayerDrop(counted, 0.3, seed=3)
    inputs = keras.Input((CHANNELS,))
    model = keras.Model(inputs, drop(inputs))
    model.compile(keras.optimizers.SGD(0.0), zero_fraction, jit_compile=JIT_COMPILE)
    x = np.zeros((steps, CHANNELS), "float32")

    def skipped_fraction():
        runs = float(to_numpy(counted.runs))
        history = model.fit(x, x, batch_size=1, shuffle=False, verbose=0)
        skipped = history.history["loss"][-1]
        ran = float(to_numpy(counted.runs)) - runs
        assert ran == pytest.approx((1.0 - skipped) * steps, abs=1e-3)
        return skipped

    assert skipped_fraction() == pytest.approx(0.3, abs=4 * sigma(0.3, steps))
    traced = model.train_function
    drop.rate = 0.7  # as DropRateScheduler sets it
    assert skipped_fraction() == pytest.approx(0.7, abs=4 * sigma(0.7, steps))
    assert model.train_function is traced


def test_layer_drop_returns_the_input_or_the_layer_unscaled():
    layer = keras.layers.Dense(CHANNELS)
    drop = LayerDrop(layer, 0.5, seed=0)
    x = np.random.default_rng(0).normal(size=(4, CHANNELS)).astype("float32")
    ran = bits(layer(x, training=True))
    outcomes = [bits(drop(x, training=True)) for _ in range(16)]
    skipped = [np.array_equal(got, bits(x)) for got in outcomes]
    for got, was_skipped in zip(outcomes, skipped, strict=True):
        np.testing.assert_array_equal(got, bits(x) if was_skipped else ran)
    assert 0 < sum(skipped) < len(skipped)


def test_layer_drop_at_inference_is_the_layer():
    layer = residual_block()
    x = _images()
    expected = bits(layer(x, training=False))
    for rate in (0.0, 0.5, ALMOST_ONE):
        drop = LayerDrop(layer, rate, seed=1)
        np.testing.assert_array_equal(bits(drop(x, training=False)), expected)
        np.testing.assert_array_equal(bits(drop(x)), expected)
    # Rate 0 in training: the layer in training mode, BatchNorm on the batch.
    np.testing.assert_allclose(
        to_numpy(LayerDrop(layer, 0.0)(x, training=True)),
        to_numpy(layer(x, training=True)),
        rtol=1e-6,
        atol=1e-6,
    )


def test_layer_drop_passes_extra_arguments_and_training_to_the_layer():
    x = np.ones((2, 3, CHANNELS), "float32")
    mask = np.array([[True, True, False], [True, False, False]])
    drop = LayerDrop(Masked(), 0.0)
    expected = -x * 2.0 * mask[..., None]
    # Inference, and a kept training step (through the conditional); a
    # tensor and Python values among the keyword arguments.
    np.testing.assert_array_equal(
        to_numpy(drop(x, padding_mask=mask, scale=2.0, flip=True)), expected
    )
    np.testing.assert_array_equal(
        to_numpy(drop(x, padding_mask=mask, scale=2.0, flip=True, training=True)),
        expected + 1,
    )
    # In a functional model whose mask is an input, in a compiled step.
    tokens = keras.Input((3, CHANNELS))
    padding = keras.Input((3,), dtype="bool")
    model = keras.Model(
        [tokens, padding], LayerDrop(Masked(), 0.0)(tokens, padding_mask=padding)
    )
    np.testing.assert_array_equal(
        to_numpy(model.predict([x, mask], verbose=0)), x * mask[..., None]
    )


def test_layer_drop_lets_a_keras_mask_flow_as_the_layer_does():
    # Pooling after the layer averages the unmasked tokens only when the
    # `Embedding`'s mask reaches it.
    tokens = keras.Input((4,), dtype="int32")
    embedded = keras.layers.Embedding(10, CHANNELS, mask_zero=True)(tokens)
    dense = keras.layers.Dense(CHANNELS)
    pool = keras.layers.GlobalAveragePooling1D()
    plain = keras.Model(tokens, pool(dense(embedded)))
    with warnings.catch_warnings():
        # Keras warns when a layer that does not support masking drops one.
        warnings.simplefilter("error")
        drop = LayerDrop(dense, 0.5, seed=0)
        wrapped = keras.Model(tokens, pool(drop(embedded)))
    ids = np.array([[1, 2, 0, 0], [3, 4, 5, 0]], "int32")
    np.testing.assert_array_equal(
        to_numpy(wrapped(ids, training=False)), to_numpy(plain(ids, training=False))
    )


class Encoder(keras.layers.Layer):
    """A pre-norm transformer encoder block (attention, then a Dense MLP on
    the token sequence), residuals inside, called with `padding_mask` as
    keras-hub's `TransformerEncoder` is."""

    def __init__(self, width=8, **kwargs):
        super().__init__(**kwargs)
        self.norm1 = keras.layers.LayerNormalization()
        self.attention = keras.layers.MultiHeadAttention(2, width // 2)
        self.norm2 = keras.layers.LayerNormalization()
        self.mlp = keras.Sequential(
            [
                keras.layers.Dense(2 * width, activation="gelu"),
                keras.layers.Dense(width),
            ]
        )

    def call(self, inputs, padding_mask=None, training=None):
        mask = None
        if padding_mask is not None:
            mask = ops.logical_and(padding_mask[:, None, :], padding_mask[:, :, None])
        h = self.norm1(inputs)
        x = inputs + self.attention(h, h, attention_mask=mask, training=training)
        return x + self.mlp(self.norm2(x), training=training)


def test_layer_drop_wraps_a_transformer_block_with_its_padding_mask():
    x = np.random.default_rng(0).normal(size=(8, 6, 8)).astype("float32")
    mask = np.ones((8, 6), bool)
    mask[:, 4:] = False
    tokens = keras.Input((6, 8))
    padding = keras.Input((6,), dtype="bool")
    block = Encoder()
    drop = LayerDrop(block, 0.5, seed=0)
    model = keras.Model(
        [tokens, padding], keras.layers.Dense(1)(drop(tokens, padding_mask=padding))
    )
    got = to_numpy(drop(x, padding_mask=mask))
    np.testing.assert_array_equal(got, to_numpy(block(x, padding_mask=mask)))
    assert not np.allclose(got, to_numpy(block(x)), atol=1e-3)
    # The compiled step; under XLA on TensorFlow too (see the docstring).
    model.compile(keras.optimizers.SGD(0.01), "mse", jit_compile=JIT_COMPILE)
    history = model.fit(
        [x, mask], np.zeros((8, 6, 1), "float32"), batch_size=2, epochs=2, verbose=0
    )
    assert np.all(np.isfinite(history.history["loss"]))


def _wrapped_model(rate, *, seed=1):
    inputs = keras.Input((6, 6, CHANNELS))
    drop = LayerDrop(residual_block(), rate, seed=seed)
    pooled = keras.layers.GlobalAveragePooling2D()(drop(inputs))
    return keras.Model(inputs, keras.layers.Dense(1)(pooled)), drop


def _plain_model(model, drop):
    """The wrapped block itself, with the same weights."""
    inputs = keras.Input((6, 6, CHANNELS))
    block = residual_block()
    outputs = block(inputs)
    block.set_weights(drop.layer.get_weights())
    head = keras.layers.Dense(1)
    outputs = head(keras.layers.GlobalAveragePooling2D()(outputs))
    head.set_weights(model.layers[-1].get_weights())
    return keras.Model(inputs, outputs), block


def _fit_steps(model, steps):
    x = _images(4 * steps)
    y = np.ones((4 * steps, 1), "float32")
    model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=JIT_COMPILE)
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)


def test_kept_layer_trains_exactly_as_the_layer():
    model, drop = _wrapped_model(0.0)
    plain, block = _plain_model(model, drop)
    before = [to_numpy(v) for v in drop.layer.weights]
    _fit_steps(model, 3)
    _fit_steps(plain, 3)
    after = [to_numpy(v) for v in drop.layer.weights]
    # Equal weights after three SGD steps: equal gradients; equal BatchNorm
    # statistics: equal state updates. Every one of them moved.
    for got, expected in zip(after, [to_numpy(v) for v in block.weights], strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert all(not np.allclose(a, b) for a, b in zip(after, before, strict=True))


def test_skipped_layer_leaves_batchnorm_statistics_and_weights_untouched():
    model, drop = _wrapped_model(ALMOST_ONE)
    x = _images()
    np.testing.assert_array_equal(to_numpy(drop(x, training=True)), x)
    before = [to_numpy(v) for v in drop.layer.variables]
    assert any("moving_mean" in v.path for v in drop.layer.variables)
    head_before = to_numpy(model.layers[-1].kernel)
    _fit_steps(model, 3)
    for got, expected in zip(
        [to_numpy(v) for v in drop.layer.variables], before, strict=True
    ):
        np.testing.assert_array_equal(got, expected)
    # The step did train the rest of the model.
    assert not np.allclose(to_numpy(model.layers[-1].kernel), head_before)


def test_layer_drop_losses_count_only_on_kept_steps():
    def make(rate):
        layer = keras.layers.Dense(
            CHANNELS,
            kernel_initializer="ones",
            activity_regularizer=keras.regularizers.L1(1.0),
        )
        return LayerDrop(layer, rate, seed=0)

    x = np.ones((2, CHANNELS), "float32")
    kept = make(0.0)
    kept(x, training=True)
    assert float(to_numpy(kept.losses[0])) > 0
    skipped = make(ALMOST_ONE)
    skipped(x, training=True)
    assert sum(float(to_numpy(loss)) for loss in skipped.losses) == 0.0


def test_layer_drop_draws_follow_the_seed():
    def draws(drop, n=16):
        x = np.zeros((1, CHANNELS), "float32")
        return [bool(to_numpy(drop(x, training=True)).any()) for _ in range(n)]

    def make(seed):
        return LayerDrop(Counted(), 0.5, seed=seed)

    first = draws(make(7))
    assert first == draws(make(7))
    assert first != draws(make(8)) or first != draws(make(9))
    assert 0 < sum(first) < len(first)


def test_layer_drop_config_round_trip_and_symbolic_unknown_sizes():
    drop = LayerDrop(residual_block(name="block"), 0.35, seed=5, name="drop")
    symbolic = keras.Input((None, None, CHANNELS))
    assert tuple(drop(symbolic).shape) == (None, None, None, CHANNELS)
    config = drop.get_config()
    assert (config["rate"], config["seed"]) == (0.35, 5)
    for rebuilt in (
        LayerDrop.from_config(config),
        keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(drop)
        ),
    ):
        assert type(rebuilt) is LayerDrop
        assert rebuilt.layer is not drop.layer
        assert rebuilt.layer.name == "block"
        assert json.dumps(rebuilt.get_config()) == json.dumps(config)
    serialized = keras.saving.serialize_keras_object(drop)
    assert serialized["registered_name"] == "keras_drop>LayerDrop"


@pytest.mark.parametrize(
    "policy, dtype", [("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")]
)
def test_layer_drop_under_mixed_precision(policy, dtype):
    x = _images()
    keras.config.set_dtype_policy(policy)
    try:
        drop = LayerDrop(residual_block(), 0.5, seed=0)
    finally:
        keras.config.set_dtype_policy("float32")
    # A float32 layer inside a mixed-precision wrapper: a skipped step
    # returns the input in the compute dtype, so a kept one does too.
    mixed_outside = LayerDrop(keras.layers.Dense(CHANNELS), 0.5, seed=0, dtype=policy)
    for layer in (drop, mixed_outside):
        for training in (True, True, True, False):
            out = layer(x, training=training)
            assert keras.backend.standardize_dtype(out.dtype) == dtype
            assert np.all(np.isfinite(to_numpy(ops.cast(out, "float32"))))


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"layer": "dense"}, "layer"),
        ({"layer": None}, "layer"),
        ({"rate": 1.0}, "rate"),
        ({"rate": -0.1}, "rate"),
        ({"seed": -1}, "seed"),
    ],
)
def test_layer_drop_invalid_arguments_name_the_argument(kwargs, argument):
    arguments = {"layer": keras.layers.Dense(2), **kwargs}
    with pytest.raises(ValueError, match=f"`{argument}`.*{argument}="):
        LayerDrop(**arguments)


def test_layer_drop_needs_a_shape_preserving_layer():
    drop = LayerDrop(keras.layers.Dense(3, name="narrow"))
    with pytest.raises(ValueError, match=r"'narrow'.*\(None, 5\).*\(None, 3\)"):
        drop(keras.Input((5,)))


# --------------------------------------------------------------------------
# JoinDropPath.


@pytest.mark.parametrize(
    "kwargs, shapes",
    [
        # Per batch and on images: the model that saves below.
        ({"rate": 0.3, "seed": 1}, [(4, 5)] * 3),
    ],
)
def test_join_smoke(kwargs, shapes):
    run_layer_test(JoinDropPath, kwargs, shapes)


class Active(keras.layers.Layer):
    """Calls a join in training mode on n one-hot columns of its input, so
    that a compiled `predict` shows the join's training output: column i
    of the output is 1 / count where input i was kept, else 0."""

    def __init__(self, join, n, **kwargs):
        super().__init__(**kwargs)
        self.join, self.n = join, n

    def call(self, inputs):
        columns = [inputs * ops.one_hot(i, self.n) for i in range(self.n)]
        return self.join(columns, training=True)


def _join_outputs(join, n, *, samples, batch_size):
    inputs = keras.Input((n,))
    model = keras.Model(inputs, Active(join, n)(inputs))
    model.compile(jit_compile=JIT_COMPILE)
    x = np.ones((samples, n), "float32")
    return to_numpy(model.predict(x, batch_size=batch_size, verbose=0))


def _check_mean_of_kept(outputs):
    kept = outputs > 0
    count = kept.sum(axis=1, keepdims=True)
    assert count.min() >= 1  # never all dropped
    np.testing.assert_allclose(outputs, kept / count, rtol=1e-6)
    return kept


@pytest.mark.parametrize("rate, n", [(0.6, 3), (0.8, 2)])
def test_join_per_sample_keeps_each_input_at_the_derived_probability(rate, n):
    samples = 8192
    outputs = _join_outputs(
        JoinDropPath(rate, seed=3), n, samples=samples, batch_size=1024
    )
    kept = _check_mean_of_kept(outputs)
    keep = (1 - rate) + rate**n / n
    for i in range(n):
        assert kept[:, i].mean() == pytest.approx(keep, abs=4 * sigma(keep, samples))
    # Independent per sample: all n kept as often as the product says.
    all_kept = kept.all(axis=1).mean()
    expected = (1 - rate) ** n
    assert all_kept == pytest.approx(expected, abs=4 * sigma(expected, samples) + 1e-3)


def test_join_per_batch_draws_once_for_the_batch():
    rate, n, batches, batch_size = 0.6, 3, 512, 4
    outputs = _join_outputs(
        JoinDropPath(rate, per_sample=False, seed=4),
        n,
        samples=batches * batch_size,
        batch_size=batch_size,
    )
    kept = _check_mean_of_kept(outputs).reshape(batches, batch_size, n)
    assert (kept == kept[:, :1]).all()  # one draw per batch
    keep = (1 - rate) + rate**n / n
    for i in range(n):
        frequency = kept[:, 0, i].mean()
        assert frequency == pytest.approx(keep, abs=4 * sigma(keep, batches))


def test_join_at_inference_and_rate_zero_is_the_mean_of_all():
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(4, 3, 5)).astype("float32") for _ in range(3)]
    join = JoinDropPath(0.5, seed=0)
    mean = to_numpy(join(inputs, training=False))
    np.testing.assert_allclose(mean, sum(inputs) / 3, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(bits(join(inputs)), bits(mean))
    np.testing.assert_array_equal(
        bits(JoinDropPath(0.0)(inputs, training=True)), bits(mean)
    )


def test_join_draws_follow_the_seed():
    x = np.ones((64, 2), "float32")
    assert_seed_behaviour(lambda seed: JoinDropPath(0.5, seed=seed), [x, 3 * x])


@pytest.mark.parametrize(
    "inputs, shapes",
    [
        (lambda: np.ones((2, 3), "float32"), r"1 input.*\(2, 3\)"),
        (lambda: [np.ones((2, 3), "float32")], r"1 input.*\(2, 3\)"),
        (
            lambda: [np.ones((2, 3), "float32"), np.ones((2, 4), "float32")],
            r"2 input.*\(2, 3\), \(2, 4\)",
        ),
    ],
)
def test_join_needs_two_or_more_tensors_of_one_shape(inputs, shapes):
    with pytest.raises(ValueError, match=shapes):
        JoinDropPath(0.2)(inputs())
    symbolic = keras.tree.map_structure(lambda a: keras.Input(a.shape[1:]), inputs())
    with pytest.raises(ValueError, match="two or more tensors of the same shape"):
        JoinDropPath(0.2)(symbolic)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"rate": 1.0}, "rate"),
        ({"rate": "0.2"}, "rate"),
        ({"per_sample": "yes"}, "per_sample"),
        ({"seed": 2**31}, "seed"),
    ],
)
def test_join_invalid_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`.*{argument}="):
        JoinDropPath(**{"rate": 0.2, **kwargs})


# --------------------------------------------------------------------------
# Both, in a model that trains, saves and reloads.


def test_depth_layers_in_a_model_train_save_and_reload(tmp_path):
    inputs = keras.Input((6, 6, CHANNELS))
    x = LayerDrop(residual_block(), 0.3, seed=1, name="drop_block")(inputs)
    x = LayerDrop(conv_bn_relu(), 0.2, seed=2, name="drop_sequential")(x)
    shallow = keras.layers.Conv2D(CHANNELS, 1)(x)
    deep = keras.layers.Conv2D(CHANNELS, 3, padding="same")(
        keras.layers.Conv2D(CHANNELS, 3, padding="same")(x)
    )
    x = JoinDropPath(0.15, per_sample=False, seed=3, name="join")([x, shallow, deep])
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(pooled))
    model.compile(keras.optimizers.SGD(0.01), "mse", jit_compile=JIT_COMPILE)
    images = _images(16)
    history = model.fit(
        images,
        np.ones((16, 1), "float32"),
        batch_size=4,
        epochs=2,
        verbose=0,
        callbacks=[keras_drop.DropRateScheduler()],
    )
    assert np.all(np.isfinite(history.history["loss"]))
    path = tmp_path / "depth.keras"
    model.save(path)
    restored = keras.saving.load_model(path)  # registration suffices
    np.testing.assert_array_equal(
        bits(restored.predict(images, verbose=0)),
        bits(model.predict(images, verbose=0)),
    )
    for got, expected in zip(restored.layers, model.layers, strict=True):
        assert json.dumps(got.get_config()) == json.dumps(expected.get_config())
    assert isinstance(restored.get_layer("drop_block").layer, keras.Model)
    # Monte Carlo passes skip layers and drop join inputs.
    samples = keras_drop.mc_predict(model, images[:4], samples=8, seed=0)
    assert np.isfinite(samples).all()
    assert not all(np.array_equal(samples[0], s) for s in samples[1:])
