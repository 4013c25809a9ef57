"""add_stochastic_depth and add_dropblock on keras.applications.ResNet50, on
a small hand-built ResNet, on small members of keras.applications' ConvNeXt
and EfficientNet families and on keras-hub backbones: where layers go,
which input is the shortcut, drops replaced rather than stacked, unchanged
inference output, training, saving and export, and bad input."""

import logging

import keras
import numpy as np
import pytest
from keras import layers

import keras_drop
from keras_drop import (
    DropBlock2D,
    DropPath,
    StochasticDepth,
    add_dropblock,
    add_stochastic_depth,
    stochastic_depth_rates,
)
from keras_drop.layers._keras_internals import sublayers
from keras_drop.recipes import resnet50_groups_3_4
from tests.helpers import JIT_COMPILE, bits, to_numpy

# (stage, blocks) of ResNet-50, named conv{stage}_block{n}_* in Keras.
RESNET50_STAGES = ((2, 3), (3, 4), (4, 6), (5, 3))


@pytest.fixture(scope="module")
def resnet50():
    return keras.applications.ResNet50(
        weights=None, input_shape=(64, 64, 3), classes=10
    )


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")


def resnet50_blocks(stages=(2, 3, 4, 5)):
    """(block name, name of the layer whose output is its shortcut)."""
    blocks, previous = [], None
    for stage, count in RESNET50_STAGES:
        for n in range(1, count + 1):
            name = f"conv{stage}_block{n}"
            shortcut = f"{name}_0_bn" if n == 1 else f"{previous}_out"
            if stage in stages:
                blocks.append((name, shortcut))
            previous = name
    return blocks


def residual_block(x, filters, stride, name, *, projection, shortcut_first):
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", name=f"{name}_c1")(x)
    y = layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = layers.ReLU(name=f"{name}_relu")(y)
    y = layers.Conv2D(filters, 3, padding="same", name=f"{name}_c2")(y)
    y = layers.BatchNormalization(name=f"{name}_bn2")(y)
    shortcut = x
    if projection:
        shortcut = layers.Conv2D(filters, 1, strides=stride, name=f"{name}_proj")(x)
        shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    pair = [shortcut, y] if shortcut_first else [y, shortcut]
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")(pair))


# Each block's residual ends in {name}_bn2; the shortcut is the output of:
SMALL_SHORTCUTS = {
    "block1": "block1_proj_bn",
    "block2": "block1_out",
    "block3": "block2_out",
    "block4": "block4_proj_bn",
}


def small_resnet(nested=False):
    """Four blocks, projection (strided) and identity shortcuts, each passed
    to `Add` first and second; with `nested`, blocks 3 and 4 are a nested
    model. Few distinct weight shapes: JAX compiles an initializer per shape."""
    inputs = keras.Input((16, 16, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = residual_block(x, 8, 2, "block1", projection=True, shortcut_first=False)
    x = residual_block(x, 8, 1, "block2", projection=False, shortcut_first=True)

    def stage(x):
        x = residual_block(x, 8, 1, "block3", projection=False, shortcut_first=False)
        return residual_block(x, 8, 2, "block4", projection=True, shortcut_first=True)

    if nested:
        stage_inputs = keras.Input(x.shape[1:])
        x = keras.Model(stage_inputs, stage(stage_inputs), name="stage2")(x)
    else:
        x = stage(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(3, name="head")(x)
    return keras.Model(inputs, outputs, name="small_resnet")


def small_images(n=4):
    return np.random.default_rng(1).normal(size=(n, 16, 16, 3)).astype("float32")


def of_type(model, cls):
    found = []
    for layer in model.layers:
        if isinstance(layer, cls):
            found.append(layer)
        if isinstance(layer, keras.Model):
            found.extend(of_type(layer, cls))
    return found


def zero_residuals(model, names):
    """Zero gamma and beta of each residual branch's last batch norm: the
    branch then outputs exact zeros, in training too."""
    for name in names:
        bn = model.get_layer(name)
        bn.set_weights(
            [np.zeros_like(w) for w in bn.get_weights()[:2]] + bn.get_weights()[2:]
        )


def assert_shortcut_passes_alone(model, pairs, x):
    """With every residual branch zeroed, a StochasticDepth layer in training
    returns its shortcut exactly (shortcut + b * 0). Had it taken the
    residual as the shortcut, it would return b * shortcut / (1 - rate):
    zero or rescaled, never the shortcut itself.

    `pairs`: (name of a StochasticDepth layer, its shortcut tensor in
    `model`'s graph)."""
    probe = keras.Model(
        model.input,
        [model.get_layer(name).output for name, _ in pairs]
        + [shortcut for _, shortcut in pairs],
    )
    outputs = [to_numpy(y) for y in probe(x, training=True)]
    for (name, _), got, expected in zip(
        pairs, outputs[: len(pairs)], outputs[len(pairs) :], strict=True
    ):
        assert np.any(expected != 0), name  # a test that can fail
        np.testing.assert_array_equal(got, expected, err_msg=name)


# --------------------------------------------------------------------------
# add_stochastic_depth.


def test_stochastic_depth_replaces_resnet50_adds_with_the_decay_rule(resnet50):
    adds = [layer.name for layer in resnet50.layers if isinstance(layer, layers.Add)]
    assert len(adds) == 16
    model = add_stochastic_depth(resnet50, 0.2, seed=10)

    blocks = of_type(model, StochasticDepth)
    assert [b.name for b in blocks] == [f"{a}_stochastic_depth" for a in adds]
    assert not of_type(model, layers.Add)
    assert [b.rate for b in blocks] == stochastic_depth_rates(16, 0.2)
    assert blocks[0].rate == pytest.approx(0.2 / 16) and blocks[-1].rate == 0.2
    assert [b.seed for b in blocks] == list(range(10, 26))
    assert {(b.mode, b.rescale_at) for b in blocks} == {("batch", "training")}

    # Called on [shortcut, residual]: the projection's batch norm or the
    # previous block's output, then the branch's last batch norm (Keras
    # passes them to `Add` in that order too; the small ResNet below swaps
    # them and measures the outputs).
    for name, shortcut in resnet50_blocks():
        inputs = model.get_layer(f"{name}_add_stochastic_depth").input
        assert inputs[0] is model.get_layer(shortcut).output, name
        assert inputs[1] is model.get_layer(f"{name}_3_bn").output, name

    # Copies of the layers: no variable shared, the original untouched.
    assert not {id(v) for v in model.weights} & {id(v) for v in resnet50.weights}
    assert len(of_type(resnet50, layers.Add)) == 16


def test_shortcut_is_read_from_structure_not_argument_order():
    original = small_resnet()
    model = add_stochastic_depth(original, 0.4, rescale_at="training", seed=3)
    blocks = of_type(model, StochasticDepth)
    assert [b.name for b in blocks] == [
        f"block{i}_add_stochastic_depth" for i in range(1, 5)
    ]
    assert [b.rate for b in blocks] == stochastic_depth_rates(4, 0.4)
    zero_residuals(model, [f"{name}_bn2" for name in SMALL_SHORTCUTS])
    pairs = [
        (f"{block}_add_stochastic_depth", model.get_layer(shortcut).output)
        for block, shortcut in SMALL_SHORTCUTS.items()
    ]
    assert_shortcut_passes_alone(model, pairs, small_images(8))


def test_rescale_at_inference_is_the_papers_rule():
    original = small_resnet()
    model = add_stochastic_depth(original, 0.5, rescale_at="inference")
    x = small_images()
    assert {b.rescale_at for b in of_type(model, StochasticDepth)} == {"inference"}
    # shortcut + (1 - rate) * residual differs from the plain sum.
    assert not np.array_equal(
        to_numpy(model.predict(x, verbose=0)), to_numpy(original.predict(x, verbose=0))
    )


def test_nested_models_are_rewritten_in_depth_order():
    original = small_resnet(nested=True)
    original.get_layer("stage2").trainable = False
    model = add_stochastic_depth(original, 0.4, seed=0)

    stage = model.get_layer("stage2")
    assert isinstance(stage, keras.Model) and stage is not original.get_layer("stage2")
    outer = [layer for layer in model.layers if isinstance(layer, StochasticDepth)]
    inner = [layer for layer in stage.layers if isinstance(layer, StochasticDepth)]
    rates = stochastic_depth_rates(4, 0.4)
    assert [b.rate for b in outer + inner] == rates
    assert [b.seed for b in outer + inner] == [0, 1, 2, 3]
    assert [b.name for b in inner] == [
        "block3_add_stochastic_depth",
        "block4_add_stochastic_depth",
    ]
    assert not stage.trainable
    assert len(model.trainable_weights) == len(original.trainable_weights)

    x = small_images()
    np.testing.assert_array_equal(
        bits(model.predict(x, verbose=0)), bits(original.predict(x, verbose=0))
    )
    # Inside the nested model: an identity shortcut (its input) and a
    # projection one.
    zero_residuals(stage, ["block3_bn2", "block4_bn2"])
    stage_input = keras.Model(model.input, model.get_layer("block2_out").output)(x)
    pairs = [
        ("block3_add_stochastic_depth", stage.input),
        ("block4_add_stochastic_depth", stage.get_layer("block4_proj_bn").output),
    ]
    assert_shortcut_passes_alone(stage, pairs, stage_input)


def test_adds_that_are_not_residual_merges_are_left_alone():
    x = keras.Input((4,), name="x")
    other = keras.Input((4,), name="other")
    shared = layers.Dense(4, name="shared")
    h = layers.Dense(4, name="h")(x)
    no_common_ancestor = layers.Add(name="inputs_add")([x, other])
    same_length = layers.Add(name="twin_add")([shared(h), shared(h)])
    three = layers.Add(name="three_add")([h, no_common_ancestor, same_length])
    same_tensor = layers.Add(name="double_add")([three, three])
    broadcast = layers.Add(name="broadcast_add")(
        [same_tensor, layers.Dense(1, name="gate")(same_tensor)]
    )
    residual = layers.Add(name="residual_add")(
        [layers.Dense(4, name="branch")(broadcast), broadcast]
    )
    original = keras.Model([x, other], residual)
    model = add_stochastic_depth(original, 0.3)

    left = {a.name for a in of_type(model, layers.Add)}
    assert left == {
        "inputs_add",
        "twin_add",
        "three_add",
        "double_add",
        "broadcast_add",
    }
    assert [b.name for b in of_type(model, StochasticDepth)] == [
        "residual_add_stochastic_depth"
    ]
    # A layer called twice is copied once and still shared.
    assert [layer.name for layer in model.layers].count("shared") == 1
    data = [np.random.default_rng(2).normal(size=(8, 4)).astype("float32")] * 2
    np.testing.assert_array_equal(
        bits(model.predict(data, verbose=0)), bits(original.predict(data, verbose=0))
    )


def test_replacing_an_inference_rescaled_merge_keeps_inference_output(tmp_path):
    original = small_resnet()
    paper = add_stochastic_depth(original, 0.5, rescale_at="inference")
    model = add_stochastic_depth(paper, 0.2, seed=0)
    blocks = of_type(model, StochasticDepth)
    assert [b.name for b in blocks] == [b.name for b in of_type(paper, StochasticDepth)]
    assert [b.rate for b in blocks] == stochastic_depth_rates(4, 0.2)
    assert {b.rescale_at for b in blocks} == {"training"}
    # The paper's inference scale of each branch, (1 - 0.5 l / 4), is now a
    # fixed multiply of the residual: the same arithmetic, the same bits.
    x = small_images()
    expected = bits(paper.predict(x, verbose=0))
    np.testing.assert_array_equal(bits(model.predict(x, verbose=0)), expected)
    path = str(tmp_path / "folded.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(bits(restored.predict(x, verbose=0)), expected)
    # Applied once more, nothing is folded twice.
    again = add_stochastic_depth(restored, 0.3, seed=0)
    np.testing.assert_array_equal(bits(again.predict(x, verbose=0)), expected)
    assert len(of_type(again, layers.Rescaling)) == 4


def test_merges_compute_in_the_dtype_of_the_addition_they_replace():
    keras.config.set_dtype_policy("mixed_float16")  # reset by clean_session
    image = keras.Input((8, 8, 4), name="image")  # float32: an input
    branch = layers.Conv2D(4, 3, padding="same", name="conv_a")(image)
    summed = image + branch  # float16 + float32 computes in float32
    branch = layers.Conv2D(4, 3, padding="same", name="conv_b")(summed)
    added = layers.Add(name="merge")([summed, branch])  # a float16 layer
    original = keras.Model(image, [summed, added])
    keras.config.set_dtype_policy("float32")
    model = add_stochastic_depth(original, 0.2)
    assert len(of_type(model, StochasticDepth)) == 2
    assert [t.dtype for t in model.outputs] == ["float32", "float16"]
    x = np.random.default_rng(4).normal(size=(2, 8, 8, 4)).astype("float32")
    for got, expected in zip(
        model.predict(x, verbose=0), original.predict(x, verbose=0), strict=True
    ):
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(bits(got), bits(expected))


# --------------------------------------------------------------------------
# add_dropblock.


def test_dropblock_resnet50_recipe_places_the_papers_layers(resnet50):
    model = add_dropblock(resnet50, 0.1, 3, where=resnet50_groups_3_4, seed=5)
    dropblocks = of_type(model, DropBlock2D)
    assert len(dropblocks) == 36  # 9 blocks of groups 3 and 4, 4 places each
    assert all(d.name.startswith(("conv4_", "conv5_")) for d in dropblocks)
    assert sorted(d.seed for d in dropblocks) == list(range(5, 41))
    assert {(d.rate, d.block_size) for d in dropblocks} == {(0.1, (3, 3))}

    def output(name):
        return model.get_layer(name).output

    for name, shortcut in resnet50_blocks(stages=(4, 5)):
        # After the batch norm (and ReLU) of each convolution of the branch.
        for after in ("1_relu", "2_relu", "3_bn"):
            dropblock = model.get_layer(f"{name}_{after}_dropblock")
            assert dropblock.input is output(f"{name}_{after}")
        # On the skip connection only: the branch still starts from the
        # undropped block input.
        skip = model.get_layer(f"{name}_add_shortcut_dropblock")
        assert skip.input is output(shortcut)
        addends = model.get_layer(f"{name}_add").input
        assert addends[0] is skip.output
        assert addends[1] is output(f"{name}_3_bn_dropblock")


def test_dropblock_on_a_sequential_model_by_names_and_predicate():
    original = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_a"),
            layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_b"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(2),
        ],
        name="cnn",
    )
    model = add_dropblock(original, 0.3, 3, where=["conv_a"], seed=0)
    assert [d.name for d in of_type(model, DropBlock2D)] == ["conv_a_dropblock"]
    assert model.get_layer("conv_a_dropblock").input is model.get_layer("conv_a").output

    x = np.abs(small_images(8)) + 0.1
    np.testing.assert_array_equal(
        bits(model.predict(x, verbose=0)), bits(original.predict(x, verbose=0))
    )
    # In training it drops blocks of the feature map.
    dropblock = model.get_layer("conv_a_dropblock")
    probe = keras.Model(model.input, [dropblock.input, dropblock.output])
    before, after = (to_numpy(y) for y in probe(x, training=True))
    assert np.any((after == 0) & (before != 0))

    by_type = add_dropblock(
        original, 0.1, 3, where=lambda layer: isinstance(layer, layers.Conv2D)
    )
    assert [d.name for d in of_type(by_type, DropBlock2D)] == [
        "conv_a_dropblock",
        "conv_b_dropblock",
    ]

    # Inside a nested Sequential model too.
    inputs = keras.Input((16, 16, 3))
    outer = keras.Model(inputs, layers.Dense(1, name="out")(original(inputs)))
    nested = add_dropblock(outer, 0.1, 3, where=["conv_b"])
    assert [d.name for d in of_type(nested, DropBlock2D)] == ["conv_b_dropblock"]
    np.testing.assert_array_equal(
        bits(nested.predict(x, verbose=0)), bits(outer.predict(x, verbose=0))
    )


def test_dropblock_applied_again_replaces_its_drops(caplog):
    original = small_resnet()
    where = ["block1_relu", "block2_add"]
    with caplog.at_level(logging.INFO, logger="keras_drop.recipes"):
        once = add_dropblock(original, 0.3, 3, where=where, seed=0)
        twice = add_dropblock(once, 0.3, 3, where=where, seed=0)
    names = ["block1_relu_dropblock", "block2_add_shortcut_dropblock"]
    assert [d.name for d in of_type(twice, DropBlock2D)] == names
    assert [d.seed for d in of_type(twice, DropBlock2D)] == [0, 1]
    skip = twice.get_layer("block2_add_shortcut_dropblock")
    assert skip.input is twice.get_layer("block1_out").output
    assert twice.get_layer("block2_add").input[0] is skip.output
    assert [(r.inserted, r.replaced) for r in caplog.records] == [
        (names, {}),
        ([], {name: name for name in names}),
    ]

    # One DropBlock after the layer, not two drawing the same mask: the
    # training mean stays the input's (two would scale it by 1 / 0.7).
    inputs = keras.Input((32, 32, 4))
    features = layers.Identity(name="features")(inputs)
    model = keras.Model(inputs, layers.Identity(name="head")(features))
    for _ in range(2):
        model = add_dropblock(model, 0.3, 3, where=["features"], seed=0)
    assert len(of_type(model, DropBlock2D)) == 1
    out = to_numpy(model(np.ones((16, 32, 32, 4), "float32"), training=True))
    assert abs(np.mean(out) - 1.0) < 0.05
    assert abs(np.mean(out == 0) - 0.3) < 0.05


def test_dropblock_takes_the_data_format_of_the_layer_it_follows():
    image = keras.Input((4, 16, 16), name="image")
    first = layers.Conv2D(
        4, 3, padding="same", data_format="channels_first", name="conv"
    )(image)
    x = layers.BatchNormalization(axis=1, name="bn")(first)
    x = layers.ReLU(name="relu")(x)  # no data format: the conv's, upstream
    x = layers.Add(name="add")([first, x])  # its shortcut follows the conv
    hinted = layers.BatchNormalization(axis=1, name="bn_input")(image)
    plain = layers.ReLU(name="relu_input")(image)  # nothing upstream
    original = keras.Model(image, [x, hinted, plain])
    model = add_dropblock(
        original, 0.1, 3, where=["conv", "bn", "relu", "add", "bn_input", "relu_input"]
    )
    formats = {d.name: d.data_format for d in of_type(model, DropBlock2D)}
    assert formats == {
        "conv_dropblock": "channels_first",
        "bn_dropblock": "channels_first",
        "relu_dropblock": "channels_first",
        "add_shortcut_dropblock": "channels_first",
        "bn_input_dropblock": "channels_first",
        "relu_input_dropblock": keras.config.image_data_format(),
    }


def test_inserted_layers_compute_in_the_dtype_of_their_neighbours():
    keras.config.set_dtype_policy("mixed_float16")  # reset by clean_session
    original = small_resnet()
    keras.config.set_dtype_policy("float32")
    model = add_dropblock(original, 0.1, 3, where=["block1_relu", "block2_add"])
    model = add_stochastic_depth(model, 0.2)
    inserted = of_type(model, DropBlock2D) + of_type(model, StochasticDepth)
    assert len(inserted) == 6
    assert {layer.dtype_policy.name for layer in inserted} == {"mixed_float16"}
    x = small_images()
    np.testing.assert_array_equal(
        bits(model.predict(x, verbose=0)), bits(original.predict(x, verbose=0))
    )


# --------------------------------------------------------------------------
# Training, saving, export.


def test_rewritten_resnet50_keeps_its_output_and_saves(resnet50, images, tmp_path):
    model = add_dropblock(resnet50, 0.1, 3, where=resnet50_groups_3_4, seed=1)
    model = add_stochastic_depth(model, 0.2, seed=2)
    assert len(of_type(model, DropBlock2D)) == 36
    assert len(of_type(model, StochasticDepth)) == 16
    # Inference output unchanged, bit for bit (DropBlock is the identity,
    # StochasticDepth adds plainly).
    predicted = bits(model.predict(images, verbose=0))
    np.testing.assert_array_equal(predicted, bits(resnet50.predict(images, verbose=0)))

    path = str(tmp_path / "resnet50.keras")
    model.save(path)
    restored = keras.saving.load_model(path)  # no custom_objects
    for cls in (DropBlock2D, StochasticDepth):
        assert [(d.name, d.get_config()) for d in of_type(restored, cls)] == [
            (d.name, d.get_config()) for d in of_type(model, cls)
        ]
    # Same weights under the same paths (the small model below compares
    # the restored model's predictions; a ResNet-50 predict compiles slowly).
    saved = {w.path: w for w in model.weights}
    assert len(saved) == len(model.weights) == len(restored.weights)
    for w in restored.weights:
        np.testing.assert_array_equal(bits(w), bits(saved[w.path]), err_msg=w.path)


def test_rewritten_model_trains_saves_and_reloads(tmp_path):
    original = small_resnet(nested=True)
    model = add_dropblock(
        original, 0.2, 3, where=["block1_relu", "block3_add", "block4_bn2"], seed=0
    )
    model = add_stochastic_depth(model, 0.3, mode="row", seed=1)
    assert len(of_type(model, DropBlock2D)) == 3
    assert len(of_type(model, StochasticDepth)) == 4
    model.compile(optimizer="sgd", loss="mse", jit_compile=JIT_COMPILE)
    x = small_images(16)
    # (Copies: a TensorFlow variable's numpy view follows its updates.)
    before = {w.path: np.array(w) for w in model.weights}
    history = model.fit(x, np.ones((16, 3)), batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    kernel = model.get_layer("stem_conv").kernel
    assert not np.array_equal(to_numpy(kernel), before[kernel.path])
    # The original is not trained along with it. (Compared by path: a
    # clone may list parallel branches' layers in another order.)
    assert {w.path for w in original.weights} == set(before)
    for w in original.weights:
        np.testing.assert_array_equal(to_numpy(w), before[w.path], err_msg=w.path)

    path = str(tmp_path / "small.keras")
    model.save(path)
    restored = keras.saving.load_model(path)  # no custom_objects
    assert len(of_type(restored, DropBlock2D)) == 3
    assert [b.rate for b in of_type(restored, StochasticDepth)] == (
        stochastic_depth_rates(4, 0.3)
    )
    np.testing.assert_array_equal(
        bits(restored.predict(x, verbose=0)), bits(model.predict(x, verbose=0))
    )


@pytest.mark.backends("tensorflow", "jax")
def test_rewritten_model_exports_what_predict_returns(tmp_path):
    tf = pytest.importorskip("tensorflow")
    model = add_dropblock(small_resnet(), 0.2, 3, where=["block2_relu", "block3_add"])
    model = add_stochastic_depth(model, 0.3)
    path = str(tmp_path / "exported")
    model.export(path, verbose=False)
    exported = tf.saved_model.load(path)  # held: `serve` needs its variables
    served = exported.serve(small_images())
    np.testing.assert_allclose(
        np.asarray(served),
        to_numpy(model.predict(small_images(), verbose=0)),
        rtol=1e-6,
    )


# --------------------------------------------------------------------------
# Bad input.


class Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.Dense(2)

    def call(self, inputs):
        return self.dense(inputs)


# (One test per function rather than one per case: every test pays for
# two `clear_session` calls, slow with a ResNet-50 alive in the module.)


def test_models_without_a_graph_are_refused():
    subclassed = Subclassed()
    subclassed(np.ones((1, 3), "float32"))
    for rewrite in (
        lambda m: add_stochastic_depth(m, 0.1),
        lambda m: add_dropblock(m, 0.1, 3, where=["dense"]),
    ):
        with pytest.raises(ValueError, match="subclassed model.*Received: model"):
            rewrite(subclassed)
        with pytest.raises(ValueError, match="unbuilt Sequential"):
            rewrite(keras.Sequential([layers.Dense(2)]))
        with pytest.raises(ValueError, match="expects a `keras.Model`"):
            rewrite(layers.Dense(2))


def test_add_stochastic_depth_bad_arguments():
    model = small_resnet()
    for kwargs, argument in [
        ({"final_rate": 1.0}, "final_rate"),
        ({"final_rate": "0.1"}, "final_rate"),
        ({"final_rate": 0.1, "mode": "sample"}, "mode"),
        ({"final_rate": 0.1, "rescale_at": "never"}, "rescale_at"),
        ({"final_rate": 0.1, "seed": 1.5}, "seed"),
    ]:
        with pytest.raises(ValueError, match=f"argument `{argument}`.*Received"):
            add_stochastic_depth(model, **kwargs)

    inputs = keras.Input((4,))
    mlp = keras.Model(inputs, layers.Dense(2)(inputs), name="mlp")
    with pytest.raises(ValueError, match="no residual `Add`.*'mlp'"):
        add_stochastic_depth(mlp, 0.1)


def test_add_dropblock_bad_arguments():
    model = small_resnet()
    for kwargs, match in [
        ({"rate": 1.2}, "argument `rate`"),
        ({"block_size": 0}, "argument `block_size`"),
        ({"block_size": (3, 3, 3)}, "argument `block_size`"),
        ({"shared_channels": "yes"}, "argument `shared_channels`"),
        ({"seed": "0"}, "argument `seed`"),
        ({"where": "block1_c1"}, "argument `where`.*callable"),
        ({"where": None}, "argument `where`.*callable"),
        ({"where": ["block1_c1", "conv9", "image"]}, r"no layer: \['conv9', 'image'\]"),
        ({"where": []}, "argument `where`.*selected none"),
        ({"where": lambda layer: False}, "argument `where`.*selected none"),
        ({"where": ["head"]}, "rank 4.*'head'.*output"),
        ({"where": ["pool"]}, r"rank 4.*'pool'.*\(None, 8\)"),
    ]:
        arguments = {"rate": 0.1, "block_size": 3, "where": ["block1_c1"], **kwargs}
        with pytest.raises(ValueError, match=match):
            add_dropblock(model, **arguments)


def test_recipes_are_exported():
    assert keras_drop.add_stochastic_depth is add_stochastic_depth
    assert keras_drop.recipes.add_dropblock is add_dropblock
    assert {"add_dropblock", "add_stochastic_depth"} <= set(keras_drop.__all__)


# --------------------------------------------------------------------------
# The families trained with stochastic depth today: keras.applications'
# ConvNeXt (residuals written `inputs + branch`) and EfficientNet (a
# per-sample Dropout ending each residual branch), built by keras.applications'
# own builders at small depths and widths (ConvNeXtTiny and EfficientNetB0
# take minutes to build on JAX: an initializer is compiled per weight shape;
# benchmarks/recipe_compatibility.py rewrites every family's smallest member),
# and keras-hub backbones.


@pytest.fixture(scope="module")
def convnext():
    from keras.src.applications.convnext import ConvNeXt

    return ConvNeXt(
        depths=[2, 1, 1, 1],
        projection_dims=[8, 8, 8, 8],
        default_size=32,
        name="convnext_small",
        weights=None,
        input_shape=(32, 32, 3),
        classes=3,
    )


# Two stages of two blocks; block 1a has an identity shortcut and no drop
# (its drop rate is 0 in keras.applications), 1b and 2b end in a drop.
EFFICIENTNET_BLOCKS = [
    {
        "kernel_size": 3,
        "repeats": 2,
        "filters_in": 32,
        "filters_out": 16,
        "expand_ratio": 1,
        "id_skip": True,
        "strides": 1,
        "se_ratio": 0.25,
    },
    {
        "kernel_size": 3,
        "repeats": 2,
        "filters_in": 16,
        "filters_out": 24,
        "expand_ratio": 2,
        "id_skip": True,
        "strides": 2,
        "se_ratio": 0.25,
    },
]


@pytest.fixture(scope="module")
def efficientnet():
    from keras.src.applications.efficientnet import EfficientNet

    return EfficientNet(
        0.25,
        1.0,
        32,
        blocks_args=EFFICIENTNET_BLOCKS,
        name="efficientnet_small",
        weights=None,
        input_shape=(32, 32, 3),
        classes=3,
    )


@pytest.fixture(scope="module")
def tiny_images():
    return np.random.default_rng(3).uniform(0, 255, (4, 32, 32, 3)).astype("float32")


def add_operations(model):
    """The `x + y` nodes of `model`'s graph on two tensors of one shape."""
    found = []
    for layer in model.operations:
        if type(layer).__name__ == "Add" and not isinstance(layer, keras.layers.Layer):
            args = layer._inbound_nodes[0].arguments.args
            if len(args) == 2 and args[0].shape == args[1].shape:
                found.append(layer)
    return found


def assert_same_inference(model, original, x):
    for got, expected in zip(
        keras.tree.flatten(model(x, training=False)),
        keras.tree.flatten(original(x, training=False)),
        strict=True,
    ):
        np.testing.assert_array_equal(bits(got), bits(expected))


def fit_one_step(model, x):
    """One compiled training step; returns whether the first kernel moved."""
    outputs = model.outputs[0] if not isinstance(model.outputs, dict) else None
    trained = model
    if outputs is None or len(outputs.shape) != 2:
        inputs = keras.Input(model.inputs[0].shape[1:])
        features = keras.tree.flatten(model(inputs))[0]
        pooled = layers.Flatten()(features)
        trained = keras.Model(inputs, layers.Dense(2)(pooled))
    trained.compile(optimizer="sgd", loss="mse", jit_compile=JIT_COMPILE)
    kernel = next(w for w in model.trainable_weights if len(w.shape) >= 2)
    before = np.array(to_numpy(kernel))
    n = x.shape[0]
    width = trained.outputs[0].shape[-1]
    history = trained.fit(x, np.ones((n, width)), batch_size=n, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert not np.array_equal(to_numpy(kernel), before)


def test_convnext_operator_residuals_get_stochastic_depth(
    convnext, tiny_images, tmp_path, caplog
):
    merges = add_operations(convnext)
    assert len(merges) == 5  # one `inputs + branch` per block
    with caplog.at_level(logging.INFO, logger="keras_drop.recipes"):
        model = add_stochastic_depth(convnext, 0.5, mode="row", seed=4)
    blocks = of_type(model, StochasticDepth)
    assert len(blocks) == 5
    assert [b.rate for b in blocks] == stochastic_depth_rates(5, 0.5)
    record = caplog.records[-1]
    assert (len(record.inserted), record.replaced) == (5, {})
    assert not add_operations(model)
    # The shortcut is the block's input, the residual its layer-scaled branch.
    first = model.get_layer("convnext_small_stage_0_block_0_identity_stochastic_depth")
    depthwise = model.get_layer("convnext_small_stage_0_block_0_depthwise_conv")
    shortcut, residual = first.input
    assert shortcut is depthwise.input
    assert residual is model.get_layer("convnext_small_stage_0_block_0_identity").output
    assert_same_inference(model, convnext, tiny_images)

    # A branch forced to drop (almost surely, per sample): a dropped sample
    # returns its shortcut exactly, a kept one shortcut + residual / 0.01.
    first.rate = 0.99
    x = np.repeat(tiny_images, 4, axis=0)
    probe = keras.Model(model.input, [first.output, shortcut, residual])
    got, short, branch = (to_numpy(y) for y in probe(x, training=True))
    dropped = [np.array_equal(g, s) for g, s in zip(got, short, strict=True)]
    assert sum(dropped) >= 8  # 16 samples at rate 0.99
    for g, s, r, d in zip(got, short, branch, dropped, strict=True):
        if not d:
            np.testing.assert_allclose(g, s + r / 0.01, rtol=1e-4, atol=1e-5)
    first.rate = blocks[0].rate

    fit_one_step(model, tiny_images)
    path = str(tmp_path / "convnext.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert [b.rate for b in of_type(restored, StochasticDepth)] == [
        b.rate for b in of_type(model, StochasticDepth)
    ]
    assert_same_inference(restored, model, tiny_images)

    # `where` still selects layers of a model whose residuals are operations.
    dropped = add_dropblock(
        convnext, 0.1, 3, where=lambda layer: layer.name.endswith("_depthwise_conv")
    )
    assert len(of_type(dropped, DropBlock2D)) == 5
    assert_same_inference(dropped, convnext, tiny_images)


def is_batch_drop(layer):
    return isinstance(layer, layers.Dropout) and layer.noise_shape == (None, 1, 1, 1)


def test_efficientnet_branch_drops_are_replaced_not_stacked(
    efficientnet, tiny_images, tmp_path, caplog
):
    adds = [
        layer.name for layer in efficientnet.layers if isinstance(layer, layers.Add)
    ]
    drops = [layer.name for layer in efficientnet.layers if is_batch_drop(layer)]
    assert adds == ["block1a_add", "block1b_add", "block2b_add"]
    assert drops == ["block1b_drop", "block2b_drop"]
    with caplog.at_level(logging.INFO, logger="keras_drop.recipes"):
        model = add_stochastic_depth(efficientnet, 0.3, seed=0)
    record = caplog.records[-1]
    assert record.inserted == ["block1a_add_stochastic_depth"]
    assert record.replaced == {
        "block1b_drop": "block1b_add_stochastic_depth",
        "block2b_drop": "block2b_add_stochastic_depth",
    }
    blocks = of_type(model, StochasticDepth)
    assert [b.name for b in blocks] == [f"{a}_stochastic_depth" for a in adds]
    assert [b.rate for b in blocks] == stochastic_depth_rates(3, 0.3)
    # No drop of the original branches left; each branch has one drop, the
    # StochasticDepth merge, fed by the branch's last batch norm.
    assert not [layer for layer in model.layers if is_batch_drop(layer)]
    assert not of_type(model, layers.Add)
    for block in ("block1a", "block1b", "block2b"):
        merge = model.get_layer(f"{block}_add_stochastic_depth")
        assert merge.input[1] is model.get_layer(f"{block}_project_bn").output
    # The classifier's plain dropout is not a branch drop: it stays.
    assert isinstance(model.get_layer("top_dropout"), layers.Dropout)
    assert_same_inference(model, efficientnet, tiny_images)

    fit_one_step(model, tiny_images)
    path = str(tmp_path / "efficientnet.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert_same_inference(restored, model, tiny_images)
    # Applied again, the Stochastic Depth merges are replaced in place.
    again = add_stochastic_depth(model, 0.6, seed=1)
    assert [b.name for b in of_type(again, StochasticDepth)] == [b.name for b in blocks]
    assert [b.rate for b in of_type(again, StochasticDepth)] == (
        stochastic_depth_rates(3, 0.6)
    )


@pytest.fixture(scope="module")
def keras_hub():
    import keras_hub

    return keras_hub


def test_keras_hub_cnn_backbone_gets_both_recipes(keras_hub, tiny_images, tmp_path):
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 64],
        stackwise_num_blocks=[2, 1],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
        image_shape=(32, 32, 3),
    )
    adds = [layer.name for layer in backbone.layers if isinstance(layer, layers.Add)]
    assert len(adds) == 3
    model = add_dropblock(backbone, 0.1, 3, where=adds, seed=10)
    model = add_stochastic_depth(model, 0.2, seed=0)
    assert len(of_type(model, StochasticDepth)) == 3
    assert len(of_type(model, DropBlock2D)) == 3
    # A functional model, as from `clone_model`: a Backbone's config holds
    # its constructor's arguments, which would rebuild it without them.
    assert type(model) is keras.Model or type(model).__name__ == "Functional"
    assert not isinstance(model, keras_hub.models.Backbone)
    assert_same_inference(model, backbone, tiny_images)
    fit_one_step(model, tiny_images)
    path = str(tmp_path / "resnet_backbone.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert len(of_type(restored, StochasticDepth)) == 3
    assert_same_inference(restored, model, tiny_images)


def test_keras_hub_dinov2_drop_paths_become_keras_drop_drop_paths(
    keras_hub, tiny_images, tmp_path, caplog
):
    backbone = keras_hub.models.DINOV2Backbone(
        patch_size=8,
        num_layers=3,
        hidden_dim=16,
        num_heads=2,
        intermediate_dim=32,
        image_shape=(32, 32, 3),
        position_embedding_shape=(32, 32, 3),
        drop_path_rate=0.5,
    )
    x = tiny_images / 255.0
    with caplog.at_level(logging.INFO, logger="keras_drop.recipes"):
        model = add_stochastic_depth(backbone, 0.3, seed=7)
    assert type(model) is type(backbone) and model is not backbone
    blocks = model.get_layer(f"{backbone.name}_encoder").layers
    assert [type(b.drop_path) for b in blocks] == [DropPath] * 3
    assert [b.drop_path.rate for b in blocks] == stochastic_depth_rates(3, 0.3)
    assert [b.drop_path.seed for b in blocks] == [7, 8, 9]
    assert not [
        layer for layer in sublayers(model) if type(layer).__name__ == "DINOV2DropPath"
    ]
    assert len(caplog.records[-1].replaced) == 3  # each block's two merges
    assert_same_inference(model, backbone, x)

    # Each sample is dropped or rescaled, never multiplied by noise.
    ones = np.ones((256, 5, 16), "float32")
    for block in blocks:
        rate = block.drop_path.rate
        out = to_numpy(block.drop_path(ones, training=True)).reshape(256, -1)
        assert set(np.unique(out)) <= {0.0, np.float32(1.0) / np.float32(1 - rate)}
        assert np.all(out == out[:, :1])
        assert abs(np.mean(out[:, 0] == 0) - rate) < 0.12

    fit_one_step(model, x)
    # `.keras` keeps the backbone's config, which builds keras-hub's own
    # drop paths: the weights come back, the replacement does not.
    path = str(tmp_path / "dinov2.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored) is type(backbone)
    restored_block = restored.get_layer(f"{backbone.name}_encoder").layers[0]
    assert type(restored_block.drop_path).__name__ == "DINOV2DropPath"
    # keras-hub re-interpolates DINOv2's position embeddings on load (lossy
    # once they have trained): every other weight comes back exactly.
    saved = {w.path: w for w in model.weights}
    assert len(saved) == len(restored.weights)
    for w in restored.weights:
        if "position_embeddings" not in w.path:
            np.testing.assert_array_equal(bits(w), bits(saved[w.path]), err_msg=w.path)

    with pytest.raises(ValueError, match="argument `rescale_at`.*drop path"):
        add_stochastic_depth(backbone, 0.3, rescale_at="inference")


def test_a_model_with_neither_merges_nor_drop_paths_is_refused(keras_hub):
    vit = keras_hub.models.ViTBackbone(
        image_shape=(16, 16, 3),
        patch_size=8,
        num_layers=1,
        num_heads=1,
        hidden_dim=8,
        mlp_dim=8,
    )
    with pytest.raises(
        ValueError, match="no block holding a drop-path sublayer.*vit_encoder"
    ):
        add_stochastic_depth(vit, 0.1)
