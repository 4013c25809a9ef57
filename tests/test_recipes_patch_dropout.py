"""`add_patch_dropout`: PatchDropout after a token embedding, in a keras-hub
ViT and in a functional model."""

import logging

import keras
import numpy as np
import pytest
from keras import layers

from keras_drop import PatchDropout, add_patch_dropout
from keras_drop.layers._keras_internals import sublayers
from tests.helpers import JIT_COMPILE, bits, to_numpy


@pytest.fixture(scope="module")
def keras_hub():
    import keras_hub

    return keras_hub


def images(n=4, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, 32, 32, 3)).astype("float32")


def vit(keras_hub, **kwargs):
    config = dict(
        image_shape=(32, 32, 3),
        patch_size=8,  # 16 patches
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
    )
    return keras_hub.models.ViTBackbone(**{**config, **kwargs})


def patch_dropouts(model):
    return [layer for layer in sublayers(model) if isinstance(layer, PatchDropout)]


def assert_same_inference(model, original, x):
    np.testing.assert_array_equal(
        bits(model(x, training=False)), bits(original(x, training=False))
    )
    np.testing.assert_array_equal(
        bits(model.predict(x, verbose=0)), bits(original.predict(x, verbose=0))
    )


def test_keras_hub_vit_drops_patch_tokens_and_keeps_the_class_token(keras_hub, caplog):
    backbone = vit(keras_hub)
    x = images()
    with caplog.at_level(logging.INFO, logger="keras_drop.recipes"):
        model = add_patch_dropout(backbone, 0.5, seed=3)
    assert type(model) is type(backbone) and model is not backbone
    assert caplog.records[-1].inserted == ["vit_encoder/dropout"]
    [layer] = patch_dropouts(model)
    assert (layer.rate, layer.num_prefix_tokens, layer.seed) == (0.5, 1, 3)
    assert not patch_dropouts(backbone)
    assert_same_inference(model, backbone, x)
    # In training the encoder sees the class token and 8 of the 16 patches.
    assert tuple(model(x, training=True).shape) == (4, 9, 16)

    # Applied again: the PatchDropout is replaced, never stacked.
    with caplog.at_level(logging.INFO, logger="keras_drop.recipes"):
        again = add_patch_dropout(model, 0.25, seed=5)
    [layer] = patch_dropouts(again)
    assert (layer.rate, layer.seed) == (0.25, 5)
    assert caplog.records[-1].replaced == {
        "vit_encoder/dropout": "vit_encoder_patch_dropout"
    }
    assert tuple(again(x, training=True).shape) == (4, 1 + 12, 16)
    assert_same_inference(again, backbone, x)


def test_keras_hub_vit_without_class_token_has_no_prefix(keras_hub):
    backbone = vit(keras_hub, use_class_token=False, num_layers=1)
    model = add_patch_dropout(backbone, 0.75, seed=0)
    assert patch_dropouts(model)[0].num_prefix_tokens == 0
    assert tuple(model(images(), training=True).shape) == (4, 4, 16)


@pytest.mark.parametrize("pooling", ["token", "gap"])
def test_vit_classifier_trains_saves_and_reloads(keras_hub, pooling, tmp_path):
    classifier = keras_hub.models.ViTImageClassifier(
        backbone=vit(keras_hub, num_layers=1), num_classes=3, pooling=pooling
    )
    x, y = images(8), np.arange(8) % 3
    model = add_patch_dropout(classifier, 0.5, seed=0)
    assert type(model) is type(classifier)
    assert_same_inference(model, classifier, x)
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=JIT_COMPILE,
    )
    before = [np.array(to_numpy(w)) for w in model.trainable_weights]
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    after = [np.array(to_numpy(w)) for w in model.trainable_weights]
    assert any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))
    # The `.keras` file holds the classifier's config, which builds
    # keras-hub's own encoder: the trained weights come back, without
    # PatchDropout, and infer as the trained model does (its `predict` is
    # compiled as the task compiles itself, XLA or not: equal within float
    # rounding).
    path = str(tmp_path / "vit.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert not patch_dropouts(restored)
    saved = {w.path: w for w in model.weights}
    assert len(saved) == len(restored.weights)
    for w in restored.weights:
        np.testing.assert_array_equal(bits(w), bits(saved[w.path]), err_msg=w.path)
    np.testing.assert_allclose(
        to_numpy(restored(x, training=False)),
        to_numpy(model(x, training=False)),
        rtol=1e-6,
        atol=1e-6,
    )


def token_model(prefix=1):
    """A small functional transformer: a patch embedding named `embed`,
    `prefix` learned tokens in front, one attention block, mean pooling."""
    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(16, 8, strides=8)(inputs)
    x = layers.Reshape((16, 16))(x)
    if prefix:
        x = layers.Concatenate(axis=1)(
            [layers.Dense(16)(layers.Reshape((prefix, 16 * 16 // prefix))(x)), x]
        )
    x = layers.Identity(name="embed")(x)
    y = layers.LayerNormalization()(x)
    x = layers.Add()([x, layers.MultiHeadAttention(2, 8)(y, y)])
    outputs = layers.Dense(2)(layers.GlobalAveragePooling1D()(x))
    return keras.Model(inputs, outputs)


def test_functional_model_after_a_named_layer(tmp_path):
    original = token_model()
    x = images(8)
    model = add_patch_dropout(original, 0.5, after="embed", num_prefix_tokens=1, seed=1)
    [layer] = patch_dropouts(model)
    assert layer.name == "embed_patch_dropout"
    assert model.get_layer("embed").output is not original.get_layer("embed").output
    assert_same_inference(model, original, x)
    features = keras.Model(model.input, model.get_layer("embed_patch_dropout").output)
    assert tuple(features(x, training=True).shape) == (8, 1 + 8, 16)
    model.compile(optimizer="sgd", loss="mse", jit_compile=JIT_COMPILE)
    model.fit(x, np.zeros((8, 2)), batch_size=4, epochs=1, verbose=0)
    path = str(tmp_path / "tokens.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert len(patch_dropouts(restored)) == 1
    assert_same_inference(restored, model, x)
    again = add_patch_dropout(model, 0.25, after="embed", num_prefix_tokens=1)
    assert [layer.rate for layer in patch_dropouts(again)] == [0.25]


def test_bad_arguments_and_models_are_refused(keras_hub):
    model = token_model(prefix=0)
    with pytest.raises(ValueError, match="found no keras-hub `ViTEncoder`.*`after`"):
        add_patch_dropout(model, 0.5)
    with pytest.raises(ValueError, match="argument `num_prefix_tokens`"):
        add_patch_dropout(model, 0.5, after="embed")
    with pytest.raises(ValueError, match="argument `num_prefix_tokens`"):
        add_patch_dropout(model, 0.5, after="embed", num_prefix_tokens=-1)
    with pytest.raises(ValueError, match="argument `after`.*Received: after='nope'"):
        add_patch_dropout(model, 0.5, after="nope", num_prefix_tokens=0)
    with pytest.raises(ValueError, match="argument `rate`"):
        add_patch_dropout(vit(keras_hub), 1.0)
    flat = model.layers[1].name  # the patch convolution: rank 4 output
    with pytest.raises(ValueError, match=f"output of layer '{flat}'.*rank|tokens"):
        add_patch_dropout(model, 0.5, after=flat, num_prefix_tokens=0)
    with pytest.raises(ValueError, match="subclassed"):
        add_patch_dropout(keras_drop_model(), 0.5, after="x", num_prefix_tokens=0)


def keras_drop_model():
    class Subclassed(keras.Model):
        def call(self, x):
            return x

    return Subclassed()
