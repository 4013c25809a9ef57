"""PatchDropout and keras_drop.ops.patch_dropout: each sample keeps its
prefix tokens and exactly k = max(1, floor((1 - rate) L)) of its other L
tokens, uniformly and independently, measured eagerly and in compiled
steps."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_drop
from keras_drop import PatchDropout
from tests.helpers import (
    BACKEND,
    JIT_COMPILE,
    assert_seed_behaviour,
    bits,
    run_layer_test,
    to_numpy,
)


def k_of(rate, patches):
    return max(1, int(np.floor((1.0 - rate) * patches + 1e-9)))


def numbered_tokens(batch, tokens, channels=2):
    """Token t of sample b holds b * 1000 + t in every channel (+ 0.25 in
    the second): a kept token shows where it came from."""
    values = np.arange(batch)[:, None] * 1000.0 + np.arange(tokens)[None, :]
    x = np.repeat(values[:, :, None], channels, axis=2)
    x[:, :, 1:] += 0.25
    return x.astype("float32")


def check_selection(x, y, indices, prefix, k):
    """`y` is the prefix of `x` then k distinct tokens of `x` at `indices`."""
    y, indices = to_numpy(y), to_numpy(indices)
    batch, tokens, _ = x.shape
    assert y.shape == (batch, prefix + k, x.shape[2])
    assert indices.shape == (batch, k) and indices.dtype == np.int32
    np.testing.assert_array_equal(y[:, :prefix], x[:, :prefix])
    assert indices.min() >= 0 and indices.max() < tokens - prefix
    assert all(len(set(row)) == k for row in indices.tolist())
    gathered = np.take_along_axis(x[:, prefix:], indices[:, :, None], axis=1)
    np.testing.assert_array_equal(y[:, prefix:], gathered)


def token_shape(shape, prefix, rate):
    """The output shape for an input shape: symbolic (batch unknown) the
    token axis unknown, eager the training shape."""
    batch, tokens, channels = shape
    if batch is None:
        return (None, None, channels)
    return (batch, prefix + k_of(rate, tokens - prefix), channels)


def test_smoke():
    kwargs = {"rate": 0.5, "num_prefix_tokens": 2, "ordered": True, "seed": 3}
    # The compiled fit step, whose target must match the dropped tokens, is
    # in test_vision_transformer_trains_and_predicts below.
    run_layer_test(
        PatchDropout,
        kwargs,
        (4, 10, 3),
        fit=False,
        output_shape=lambda shape: token_shape(shape, 2, 0.5),
    )


def test_smoke_at_rate_zero_keeps_the_shape():
    run_layer_test(PatchDropout, {"rate": 0.0, "return_indices": False}, (4, 6, 3))


@pytest.mark.parametrize(
    "rate, prefix, ordered",
    [
        (0.5, 1, False),
        (0.25, 0, True),
        (0.9, 5, False),  # (1 - 0.9) * 10 is one token, not zero
        (0.99, 1, True),  # k is at least one
    ],
)
def test_prefix_kept_and_exactly_k_original_tokens(rate, prefix, ordered):
    patches = 10
    x = numbered_tokens(16, prefix + patches)
    y, indices = keras_drop.ops.patch_dropout(
        x, rate, num_prefix_tokens=prefix, ordered=ordered, seed=1
    )
    check_selection(x, y, indices, prefix, k_of(rate, patches))
    layer = PatchDropout(
        rate, num_prefix_tokens=prefix, ordered=ordered, return_indices=True, seed=1
    )
    y, indices = layer(x, training=True)
    check_selection(x, y, indices, prefix, k_of(rate, patches))
    if ordered:
        assert np.all(np.diff(to_numpy(indices), axis=1) > 0)


class AlwaysTraining(keras.Model):
    """Calls its layer in training mode, also inside `predict`."""

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer

    def call(self, inputs):
        return self.layer(inputs, training=True)


def test_compiled_steps_keep_exactly_k_original_tokens():
    # `predict` on a model calling the layer in training mode: jax.jit, XLA
    # on TensorFlow, eager PyTorch; several batches, so several draws.
    prefix, patches, rate = 2, 12, 0.4
    layer = PatchDropout(rate, num_prefix_tokens=prefix, return_indices=True, seed=5)
    model = AlwaysTraining(layer)
    model.compile(jit_compile=JIT_COMPILE)
    x = numbered_tokens(24, prefix + patches)
    y, indices = model.predict(x, batch_size=8, verbose=0)
    check_selection(x, y, indices, prefix, k_of(rate, patches))
    assert len({tuple(row) for row in indices.tolist()}) > 20


def test_choice_is_uniform_and_independent_per_sample():
    # 2,048 draws of 10 of 20 tokens: each position is kept with frequency
    # k / L = 0.5 (sd 0.011), each pair with k (k - 1) / (L (L - 1)), and
    # two samples of one batch are independent.
    patches, rate, batch, calls = 20, 0.5, 512, 4
    k = k_of(rate, patches)
    layer = PatchDropout(rate, return_indices=True, seed=2)
    x = np.zeros((batch, 1 + patches, 1), "float32")
    kept = np.concatenate(
        [
            np.eye(patches, dtype=bool)[to_numpy(layer(x, training=True)[1])].any(1)
            for _ in range(calls)
        ]
    )
    n = len(kept)
    frequency = kept.mean(axis=0)
    assert np.all(np.abs(frequency - k / patches) < 5 * np.sqrt(0.25 / n))
    pairs = (kept.T.astype(float) @ kept.astype(float)) / n
    pair = k * (k - 1) / (patches * (patches - 1))
    off_diagonal = pairs[~np.eye(patches, dtype=bool)]
    assert abs(off_diagonal.mean() - pair) < 0.01
    assert np.all(np.abs(off_diagonal - pair) < 6 * np.sqrt(pair / n))
    # Sample 2i and 2i + 1 of each batch: as often equal at a position as
    # two independent draws (1/2), not always.
    agree = (kept[0::2] == kept[1::2]).mean()
    assert abs(agree - 0.5) < 0.02
    # Subsets repeat only as chance has it: n^2 / (2 C(20, 10)) = 11 pairs.
    assert n - len({row.tobytes() for row in kept}) < 35


def test_inference_and_rate_zero_are_the_identity():
    x = numbered_tokens(3, 7) * np.float32(0.1)
    every = np.broadcast_to(np.arange(6, dtype=np.int32), (3, 6))
    for layer, training in (
        (PatchDropout(0.5, return_indices=True), False),
        (PatchDropout(0.5, return_indices=True), None),
        (PatchDropout(0.0, return_indices=True), True),
    ):
        y, indices = layer(x, training=training)
        np.testing.assert_array_equal(bits(y), bits(x))
        np.testing.assert_array_equal(to_numpy(indices), every)
        assert keras.backend.standardize_dtype(indices.dtype) == "int32"
    y, indices = keras_drop.ops.patch_dropout(x, 0.0)
    np.testing.assert_array_equal(bits(y), bits(x))
    np.testing.assert_array_equal(to_numpy(indices), every)
    layer = PatchDropout(0.5)
    np.testing.assert_array_equal(bits(layer(x)), bits(x))
    layer._set_current_strength(0.0)  # a schedule at 0
    np.testing.assert_array_equal(bits(layer(x, training=True)), bits(x))


def test_seeds_are_reproducible():
    x = numbered_tokens(8, 17)
    assert_seed_behaviour(
        lambda seed: PatchDropout(0.5, seed=seed),
        x,
        functional=lambda seed: keras_drop.ops.patch_dropout(x, 0.5, seed=seed)[1],
    )


def test_symbolic_outputs():
    tokens = keras.Input((17, 8))
    y, indices = PatchDropout(0.5, return_indices=True)(tokens)
    assert tuple(y.shape) == (None, None, 8) and y.dtype == "float32"
    assert tuple(indices.shape) == (None, None) and indices.dtype == "int32"
    y, indices = PatchDropout(0.0, num_prefix_tokens=2, return_indices=True)(tokens)
    assert tuple(y.shape) == (None, 17, 8)
    assert tuple(indices.shape) == (None, 15)
    assert PatchDropout(0.3).compute_output_shape((4, 17, 8)) == (4, None, 8)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"rate": 1.0}, "rate"),
        ({"rate": -0.1}, "rate"),
        ({"rate": 0.5, "num_prefix_tokens": -1}, "num_prefix_tokens"),
        ({"rate": 0.5, "num_prefix_tokens": 1.0}, "num_prefix_tokens"),
        ({"rate": 0.5, "num_prefix_tokens": True}, "num_prefix_tokens"),
        ({"rate": 0.5, "ordered": 1}, "ordered"),
        ({"rate": 0.5, "return_indices": "yes"}, "return_indices"),
        ({"rate": 0.5, "seed": -1}, "seed"),
    ],
)
def test_bad_arguments_name_the_argument_and_value(kwargs, argument):
    pattern = f"`{argument}`.*{argument}="
    with pytest.raises(ValueError, match=pattern):
        PatchDropout(**kwargs)
    if argument != "return_indices":  # the op always returns them
        with pytest.raises(ValueError, match=pattern):
            keras_drop.ops.patch_dropout(np.zeros((2, 5, 3), "float32"), **kwargs)


def test_prefix_must_leave_a_token_and_input_must_be_rank_3():
    with pytest.raises(ValueError, match=r"`num_prefix_tokens`.*\(5\).*=5"):
        PatchDropout(0.5, num_prefix_tokens=5)(keras.Input((5, 3)))
    with pytest.raises(ValueError, match=r"`num_prefix_tokens`.*\(5\).*=6"):
        keras_drop.ops.patch_dropout(np.zeros((2, 5, 3)), 0.5, num_prefix_tokens=6)
    with pytest.raises(ValueError, match=r"rank 3.*\(None, 5\)"):
        PatchDropout(0.5)(keras.Input((5,)))
    with pytest.raises(ValueError, match=r"rank 3.*\(2, 5\)"):
        keras_drop.ops.patch_dropout(np.zeros((2, 5)), 0.5)
    with pytest.raises(ValueError, match="`rate`.*Python float"):
        keras_drop.ops.patch_dropout(np.zeros((2, 5, 3)), ops.convert_to_tensor(0.5))


@pytest.mark.backends(
    "tensorflow", reason="only TensorFlow traces a step with an unknown shape"
)
def test_unknown_token_count_gives_a_run_time_k_on_tensorflow():
    import tensorflow as tf

    layer = PatchDropout(0.5, num_prefix_tokens=1, return_indices=True, seed=3)

    @tf.function(input_signature=[tf.TensorSpec((None, None, 2))])
    def step(x):
        return layer(x, training=True)

    for tokens in (5, 11, 17):
        x = numbered_tokens(4, tokens)
        y, indices = step(tf.constant(x))
        check_selection(x, y, indices, 1, k_of(0.5, tokens - 1))


@pytest.mark.backends(
    "jax", reason="a batch size that is a symbol is JAX's shape polymorphism"
)
def test_symbolic_batch_size_keeps_exactly_k_tokens():
    # jax.export with a polymorphic batch, as `model.export` and
    # `export_monte_carlo` trace.
    import jax

    layer = PatchDropout(0.5, return_indices=True, seed=1)
    layer.build((None, 11, 2))
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b, 11, 2"), "float32")
    exported = jax.export.export(jax.jit(lambda x: layer(x, training=True)))(spec)
    for batch in (3, 7):
        x = numbered_tokens(batch, 11)
        y, indices = exported.call(x)
        check_selection(x, np.asarray(y), np.asarray(indices), 1, 5)


@pytest.mark.backends("jax", "torch", reason="TensorFlow traces a run-time k")
def test_unknown_token_count_raises_elsewhere():
    # Only a traced shape can be unknown: jax.jit with a polymorphic token
    # axis on JAX, a KerasTensor given to the op on PyTorch.
    if BACKEND == "jax":
        import jax

        layer = PatchDropout(0.5)
        layer.build((None, None, 2))
        spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b, t, 2"), "float32")
        with pytest.raises(ValueError, match="number of tokens.*jax backend"):
            jax.export.export(jax.jit(lambda x: layer(x, training=True)))(spec)
    else:
        with pytest.raises(ValueError, match="number of tokens.*torch backend"):
            keras_drop.ops.patch_dropout(keras.KerasTensor((2, None, 3)), 0.5)


def vision_transformer(rate=0.5, tokens=17, width=8, seed=0):
    """Embedded tokens -> PatchDropout -> one encoder block -> two heads:
    one on the class token, one on the mean over tokens."""
    inputs = keras.Input((tokens, width))
    hidden = PatchDropout(rate, seed=seed, name="patch_dropout")(inputs)
    attention = keras.layers.MultiHeadAttention(2, width // 2)(hidden, hidden)
    hidden = keras.layers.LayerNormalization()(hidden + attention)
    hidden = hidden + keras.layers.Dense(width, activation="gelu")(hidden)
    pooled = keras.layers.GlobalAveragePooling1D()(hidden)
    heads = [keras.layers.Dense(1)(hidden[:, 0]), keras.layers.Dense(1)(pooled)]
    return keras.Model(inputs, heads)


def test_vision_transformer_trains_and_predicts():
    model = vision_transformer()
    model.compile("sgd", ["mse", "mse"], jit_compile=JIT_COMPILE)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 17, 8)).astype("float32")
    y = np.ones((16, 1), "float32")
    history = model.fit(x, [y, y], batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    # predict runs every token, as an eager call at inference does.
    for predicted, eager in zip(
        model.predict(x, verbose=0), model(x, training=False), strict=True
    ):
        assert predicted.shape == (16, 1)
        np.testing.assert_allclose(predicted, to_numpy(eager), rtol=1e-5, atol=1e-5)


class TokenCount(keras.layers.Layer):
    """Records the number of tokens it saw in the last step."""

    def build(self, input_shape):
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False)

    def call(self, inputs):
        self.count.assign(ops.cast(ops.shape(inputs)[1], "float32"))
        return inputs


class CountsPerEpoch(keras.callbacks.Callback):
    def __init__(self, recorder):
        super().__init__()
        self.recorder, self.counts = recorder, []

    def on_epoch_end(self, epoch, logs=None):
        self.counts.append(int(to_numpy(self.recorder.count)))


def test_scheduled_rate_changes_k_in_the_compiled_step():
    # The linear ramp from factor 0: the first epoch traces the identity
    # (rate 0), the next ones must be traced again for their k.
    patches, rate = 20, 0.5
    inputs = keras.Input((1 + patches, 2))
    recorder = TokenCount()
    hidden = recorder(PatchDropout(rate, seed=0)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden[:, 0]))
    model.compile(keras.optimizers.SGD(0.0), "mse", jit_compile=JIT_COMPILE)
    x = np.zeros((8, 1 + patches, 2), "float32")
    counts = CountsPerEpoch(recorder)
    scheduler = keras_drop.DropRateScheduler(update_freq="epoch")
    model.fit(
        x,
        np.zeros((8, 1)),
        batch_size=4,
        epochs=3,
        verbose=0,
        callbacks=[scheduler, counts],
    )
    expected = [1 + k_of(rate * factor, patches) for factor in (0.0, 0.5, 1.0)]
    assert counts.counts == expected  # 21, 16, 11
    # The scheduler restores the configured rate when fit ends.
    model.fit(x, np.zeros((8, 1)), batch_size=4, verbose=0, callbacks=[counts])
    assert counts.counts[-1] == 1 + k_of(rate, patches)


def test_keras_hub_vit_backbone_takes_it_after_its_embedding():
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(16, 16, 3),
        patch_size=4,
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        mlp_dim=16,
    )
    embedding = backbone.get_layer("vit_patching_and_embedding")
    encoder = backbone.get_layer("vit_encoder")
    images = keras.Input((16, 16, 3))
    tokens = embedding(images)  # (batch, 1 + 16, 8), class token first
    hidden = encoder(PatchDropout(0.5, seed=0)(tokens))
    assert tuple(hidden.shape) == (None, None, 8)
    x = np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype("float32")
    model = keras.Model(images, hidden)
    # Compiled training is tested above on an encoder of the same layers.
    assert tuple(model(x, training=True).shape) == (8, 1 + 8, 8)
    np.testing.assert_array_equal(to_numpy(model(x)), to_numpy(encoder(embedding(x))))


def test_monte_carlo_passes_drop_tokens_per_input():
    # mc_predict runs the layer as in training: passes vary, and with
    # `fixed_masks` an input and its copy keep the same tokens.
    inputs = keras.Input((9, 4))
    hidden = keras.layers.Dense(4)(PatchDropout(0.5, seed=1)(inputs))
    pooled = keras.layers.GlobalAveragePooling1D()(hidden)
    model = keras.Model(inputs, keras.layers.Dense(2)(pooled))
    x = np.random.default_rng(0).normal(size=(5, 9, 4)).astype("float32")
    draws = keras_drop.mc_predict(
        model, np.concatenate([x, x]), 4, batch_size=3, seed=0, fixed_masks=True
    )
    assert draws.shape == (4, 10, 2)
    np.testing.assert_allclose(draws[:, :5], draws[:, 5:], rtol=1e-5, atol=1e-6)
    assert np.all(draws.var(axis=0) > 0)
