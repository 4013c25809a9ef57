"""`add_layer_drop`: LayerDrop around the blocks of a functional model, a
keras-hub BertBackbone and a keras-hub ViT."""

import logging

import keras
import numpy as np
import pytest
from keras import layers

from keras_drop import LayerDrop, add_layer_drop
from keras_drop.layers._keras_internals import sublayers
from tests.helpers import JIT_COMPILE, bits, to_numpy


@pytest.fixture(scope="module")
def keras_hub():
    import keras_hub

    return keras_hub


def residual_block(width, name):
    """A functional sub-model holding its residual: x + dense(relu(dense(x)))."""
    inputs = keras.Input((width,))
    branch = layers.Dense(width, activation="relu")(inputs)
    branch = layers.Dense(width)(branch)
    return keras.Model(inputs, layers.Add()([inputs, branch]), name=name)


def residual_stack(blocks=3, width=8):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((width,))
    x = layers.Dense(width, name="embed")(inputs)
    for i in range(blocks):
        x = residual_block(width, f"block_{i}")(x)
    outputs = layers.Dense(3, name="head")(x)
    return keras.Model(inputs, outputs)


def layer_drops(model):
    return [layer for layer in sublayers(model) if isinstance(layer, LayerDrop)]


def assert_same_inference(model, original, x):
    for got, want in zip(
        keras.tree.flatten(model.predict(x, verbose=0)),
        keras.tree.flatten(original.predict(x, verbose=0)),
        strict=True,
    ):
        np.testing.assert_array_equal(bits(got), bits(want))


def fit_changes_weights(model, x, y, loss="mse"):
    model.compile(optimizer="sgd", loss=loss, jit_compile=JIT_COMPILE)
    before = [np.array(to_numpy(w)) for w in model.trainable_weights]
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    after = [np.array(to_numpy(w)) for w in model.trainable_weights]
    assert any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))


def test_functional_stack_wraps_selected_blocks_trains_and_reloads(caplog, tmp_path):
    model = residual_stack()
    x = np.random.default_rng(0).normal(size=(8, 8)).astype("float32")
    with caplog.at_level(logging.INFO, logger="keras_drop.recipes"):
        new = add_layer_drop(
            model, 0.5, where=lambda layer: layer.name.startswith("block_"), seed=4
        )
    wrappers = layer_drops(new)
    assert [w.name for w in wrappers] == [f"block_{i}_layer_drop" for i in range(3)]
    assert [(w.rate, w.seed) for w in wrappers] == [(0.5, 4), (0.5, 5), (0.5, 6)]
    assert [w.layer.name for w in wrappers] == ["block_0", "block_1", "block_2"]
    assert caplog.records[-1].inserted == [w.name for w in wrappers]
    assert not layer_drops(model)
    assert_same_inference(new, model, x)

    fit_changes_weights(new, x, np.zeros((8, 3), "float32"))
    path = str(tmp_path / "stack.keras")
    new.save(path)
    restored = keras.saving.load_model(path)
    assert [w.name for w in layer_drops(restored)] == [w.name for w in wrappers]
    assert_same_inference(restored, new, x)


def test_reapplication_rerates_and_never_double_wraps(caplog):
    model = residual_stack(blocks=2)
    x = np.random.default_rng(1).normal(size=(4, 8)).astype("float32")
    once = add_layer_drop(model, 0.5, where=["block_0", "block_1"], seed=0)
    # By the wrapped layer's name or the wrapper's.
    with caplog.at_level(logging.INFO, logger="keras_drop.recipes"):
        twice = add_layer_drop(once, 0.2, where=["block_0", "block_1_layer_drop"])
    assert [(w.name, w.rate) for w in layer_drops(twice)] == [
        ("block_0_layer_drop", 0.2),
        ("block_1_layer_drop", 0.2),
    ]
    assert [w.layer.name for w in layer_drops(twice)] == ["block_0", "block_1"]
    assert caplog.records[-1].replaced == {
        "block_0_layer_drop": "block_0_layer_drop",
        "block_1_layer_drop": "block_1_layer_drop",
    }
    assert_same_inference(twice, model, x)


def test_sequential_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8,)), residual_block(8, "inner"), layers.Dense(2)]
    )
    new = add_layer_drop(model, 0.3, where=["inner"], seed=0)
    [wrapper] = layer_drops(new)
    assert wrapper.layer.name == "inner"
    assert_same_inference(new, model, np.ones((2, 8), "float32"))


def bert(keras_hub):
    keras.utils.set_random_seed(0)
    return keras_hub.models.BertBackbone(
        vocabulary_size=50,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=8,
    )


def bert_inputs(n=8):
    rng = np.random.default_rng(0)
    lengths = np.arange(n) % 8 + 1
    return {
        "token_ids": rng.integers(1, 50, (n, 8)).astype("int32"),
        "segment_ids": np.zeros((n, 8), "int32"),
        "padding_mask": (np.arange(8) < lengths[:, None]).astype("int32"),
    }


def test_bert_backbone_keeps_padding_mask_trains_and_reloads(keras_hub, tmp_path):
    backbone = bert(keras_hub)
    x = bert_inputs()
    model = add_layer_drop(
        backbone, 0.5, where=lambda layer: "transformer_layer" in layer.name, seed=0
    )
    assert [w.layer.name for w in layer_drops(model)] == [
        "transformer_layer_0",
        "transformer_layer_1",
    ]
    # The padding mask still reaches the blocks: changing the padded tokens
    # leaves the unpadded positions' outputs as they were.
    assert_same_inference(model, backbone, x)
    other = dict(x, token_ids=np.where(x["padding_mask"], x["token_ids"], 7))
    got = to_numpy(model.predict(other, verbose=0)["sequence_output"])
    want = to_numpy(model.predict(x, verbose=0)["sequence_output"])
    mask = x["padding_mask"].astype(bool)
    np.testing.assert_allclose(got[mask], want[mask], rtol=1e-5, atol=1e-5)

    head = keras.Model(model.input, model.output["pooled_output"])
    fit_changes_weights(head, x, np.zeros((8, 16), "float32"))
    path = str(tmp_path / "bert.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert [w.name for w in layer_drops(restored)] == [
        w.name for w in layer_drops(model)
    ]
    assert_same_inference(restored, model, x)


def vit(keras_hub, **kwargs):
    keras.utils.set_random_seed(0)
    config = dict(
        image_shape=(16, 16, 3),
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
    )
    return keras_hub.models.ViTBackbone(**{**config, **kwargs})


def encoder_blocks(model):
    [encoder] = [
        layer for layer in sublayers(model) if type(layer).__name__ == "ViTEncoder"
    ]
    return list(encoder.encoder_layers)


def test_keras_hub_vit_blocks_are_wrapped_in_the_encoder(keras_hub, caplog, tmp_path):
    backbone = vit(keras_hub)
    x = np.random.default_rng(0).uniform(0, 1, (8, 16, 16, 3)).astype("float32")
    with caplog.at_level(logging.INFO, logger="keras_drop.recipes"):
        model = add_layer_drop(backbone, 0.5, where=["transformer_block_2"], seed=3)
    assert type(model) is type(backbone)
    blocks = encoder_blocks(model)
    assert not isinstance(blocks[0], LayerDrop)
    assert isinstance(blocks[1], LayerDrop) and blocks[1].seed == 3
    assert caplog.records[-1].inserted == ["transformer_block_2_layer_drop"]
    # The wrapper's state is the model's: JAX's compiled step needs it.
    assert {id(v) for v in blocks[1].variables} <= {id(v) for v in model.variables}
    assert_same_inference(model, backbone, x)
    fit_changes_weights(model, x, np.zeros((8, 5, 16), "float32"))

    # Again, with a predicate: the earlier wrapper is re-rated, the other
    # block wrapped; the trained weights come along.
    again = add_layer_drop(
        model, 0.25, where=lambda b: b.name.startswith("transformer_block_")
    )
    assert [(b.name, b.rate) for b in encoder_blocks(again)] == [
        ("transformer_block_1_layer_drop", 0.25),
        ("transformer_block_2_layer_drop", 0.25),
    ]
    assert_same_inference(again, model, x)

    # The `.keras` file holds the backbone's config: no LayerDrop, the
    # trained weights.
    path = str(tmp_path / "vit.keras")
    again.save(path)
    restored = keras.saving.load_model(path)
    assert not layer_drops(restored)
    np.testing.assert_allclose(
        to_numpy(restored.predict(x, verbose=0)),
        to_numpy(again.predict(x, verbose=0)),
        rtol=1e-6,
        atol=1e-6,
    )


def test_errors(keras_hub):
    model = residual_stack(blocks=1)
    with pytest.raises(ValueError, match=r"`where`.*name no layer: \['nope'\]"):
        add_layer_drop(model, 0.5, where=["nope"])
    with pytest.raises(ValueError, match=r"`where`.*selected none"):
        add_layer_drop(model, 0.5, where=lambda layer: False)
    with pytest.raises(ValueError, match=r"'head'.*shapes differ.*Select whole"):
        add_layer_drop(model, 0.5, where=["head"])
    with pytest.raises(ValueError, match=r"Invalid value.*`rate`"):
        add_layer_drop(model, 1.5, where=["block_0"])
    with pytest.raises(ValueError, match=r"`where`.*callable"):
        add_layer_drop(model, 0.5, where="block_0")
    with pytest.raises(ValueError, match=r"ViTEncoder.*transformer_block_1"):
        add_layer_drop(vit(keras_hub, num_layers=1), 0.5, where=lambda layer: False)
