"""Cutout and keras_drop.ops.cutout: behaviour, measured."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_drop
from keras_drop import Cutout
from tests.helpers import (
    Ones,
    assert_seed_behaviour,
    bits,
    run_layer_test,
    to_numpy,
    zero_fraction,
)


def hole_masks(y, fill=0.0):
    """(images, height, width) boolean masks of filled pixels, channels_last."""
    filled = y == fill
    # Patches cover all channels: every channel agrees.
    assert np.array_equal(filled, np.broadcast_to(filled[..., :1], filled.shape))
    return filled[..., 0]


def coverage_probability(size, length):
    """P(index i of an axis of `size` lies in a patch), centre uniform over
    the axis, patch [centre - length // 2, centre - length // 2 + length)."""
    index = np.arange(size)
    low = np.maximum(index + length // 2 - length + 1, 0)
    high = np.minimum(index + length // 2, size - 1)
    return (high - low + 1) / size


# --------------------------------------------------------------------------
# Smoke coverage.


@pytest.mark.parametrize(
    "kwargs, shape, symbolic",
    [
        ({"length": 4, "seed": 1}, (4, 12, 10, 3), (None, None, 3)),
        (
            {"length": 0.5, "n_holes": 2, "fill_value": 0.5, "seed": 2},
            (4, 8, 8, 2),
            None,
        ),
        ({"length": 3, "data_format": "channels_first"}, (4, 2, 9, 7), (2, None, None)),
    ],
)
def test_smoke(kwargs, shape, symbolic):
    run_layer_test(
        Cutout, kwargs, shape, symbolic_shape=symbolic, default_is_inference=False
    )


# --------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"length": 0}, "length"),
        ({"length": -3}, "length"),
        ({"length": 0.0}, "length"),
        ({"length": 1.5}, "length"),
        ({"length": True}, "length"),
        ({"length": "8"}, "length"),
        ({"length": 8, "n_holes": 0}, "n_holes"),
        ({"length": 8, "n_holes": 1.0}, "n_holes"),
        ({"length": 8, "fill_value": float("nan")}, "fill_value"),
        ({"length": 8, "fill_value": "black"}, "fill_value"),
        ({"length": 8, "data_format": "NHWC"}, "data_format"),
        ({"length": 8, "seed": 0.5}, "seed"),
    ],
)
def test_invalid_arguments_name_the_argument_and_value(kwargs, argument):
    with pytest.raises(ValueError) as error:
        Cutout(**kwargs)
    message = str(error.value)
    assert f"`{argument}`" in message
    assert f"{argument}={kwargs[argument]!r}" in message
    with pytest.raises(ValueError, match=f"`{argument}`"):
        keras_drop.ops.cutout(ops.ones((1, 8, 8, 1)), **{"length": 8, **kwargs})


@pytest.mark.parametrize("shape", [(8, 8), (2, 8, 8, 3, 1)])
def test_wrong_rank_names_the_ranks_and_shape(shape):
    pattern = rf"rank 3.*rank 4.*inputs.shape={tuple(shape)}".replace("(", r"\(")
    pattern = pattern.replace(")", r"\)")
    with pytest.raises(ValueError, match=pattern):
        Cutout(4)(ops.ones(shape), training=True)
    with pytest.raises(ValueError, match="rank 3"):
        Cutout(4)(keras.Input(shape[1:]))
    with pytest.raises(ValueError, match="rank 3"):
        keras_drop.ops.cutout(ops.ones(shape), 4)


# --------------------------------------------------------------------------
# The patches.


@pytest.mark.parametrize("length", [5, 6])
def test_one_hole_is_a_length_square_clipped_at_the_border(length):
    size = (14, 11)
    y = to_numpy(Cutout(length, seed=3)(ops.ones((400, *size, 2)), training=True))
    masks = hole_masks(y)
    touches = {"top": 0, "inner": 0}
    for mask in masks:
        rows, cols = np.nonzero(mask)
        assert rows.size > 0  # every image gets its hole
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert mask[r0:r1, c0:c1].all() and mask.sum() == (r1 - r0) * (c1 - c0)
        # A side shorter than `length` only where the patch meets the border.
        assert r1 - r0 == length or r0 == 0 or r1 == size[0]
        assert c1 - c0 == length or c0 == 0 or c1 == size[1]
        assert r1 - r0 <= length and c1 - c0 <= length
        touches["top" if r0 == 0 else "inner"] += 1
    assert touches["top"] > 0 and touches["inner"] > 0  # clipping happened


@pytest.mark.parametrize("n_holes", [1, 3])
def test_centres_uniform_over_the_whole_image(n_holes):
    # The per-pixel probability of being cut, 1 - (1 - p_row p_col)^n_holes,
    # is lower near the border than inside: the centre ranges over the whole
    # image (patches clipped), not only where a full patch fits.
    size, length, images = (16, 12), 8, 20_000
    layer = Cutout(length, n_holes=n_holes, seed=11)
    y = to_numpy(layer(ops.ones((images, *size, 1)), training=True))
    frequency = hole_masks(y).mean(axis=0)
    single = np.outer(
        coverage_probability(size[0], length), coverage_probability(size[1], length)
    )
    expected = 1.0 - (1.0 - single) ** n_holes
    tolerance = 5 * np.sqrt(expected * (1 - expected) / images) + 1e-9
    assert np.all(np.abs(frequency - expected) <= tolerance), np.max(
        np.abs(frequency - expected) / tolerance
    )


def test_fractional_length_is_a_fraction_of_the_shorter_side():
    y = to_numpy(Cutout(0.5, seed=1)(ops.ones((300, 10, 20, 1)), training=True))
    masks = hole_masks(y)
    heights = masks.any(axis=2).sum(axis=1)
    widths = masks.any(axis=1).sum(axis=1)
    assert heights.max() == 5 and widths.max() == 5
    assert np.all(heights <= 5) and np.all(widths <= 5)
    full = Cutout(1.0, seed=1)(ops.ones((50, 10, 20, 1)), training=True)
    assert hole_masks(to_numpy(full)).any(axis=2).sum(axis=1).max() == 10


def test_images_get_independent_holes_and_fill_value():
    layer = Cutout(4, fill_value=-2.5, seed=1)
    y = to_numpy(layer(ops.ones((64, 16, 16, 3)), training=True))
    masks = hole_masks(y, fill=-2.5)
    assert np.all((y == 1.0) | (y == -2.5))
    assert len({m.tobytes() for m in masks}) > 32


def test_channels_first_is_channels_last_transposed():
    x = np.random.default_rng(0).uniform(size=(8, 12, 10, 3)).astype("float32")
    last = Cutout(5, n_holes=2, data_format="channels_last", seed=4)
    first = Cutout(5, n_holes=2, data_format="channels_first", seed=4)
    y_last = to_numpy(last(x, training=True))
    y_first = to_numpy(first(np.transpose(x, (0, 3, 1, 2)), training=True))
    np.testing.assert_array_equal(np.transpose(y_first, (0, 2, 3, 1)), y_last)
    assert (y_last == 0).any()


def test_single_image_and_integer_images():
    image = ops.ones((12, 12, 3))
    y = to_numpy(Cutout(4, seed=0)(image, training=True))
    assert y.shape == (12, 12, 3) and (y == 0).any()
    pixels = ops.cast(ops.full((2, 12, 12, 3), 200), "uint8")
    z = keras_drop.ops.cutout(pixels, 4, fill_value=7, seed=0)
    assert keras.backend.standardize_dtype(z.dtype) == "uint8"
    assert set(np.unique(to_numpy(z))) == {7, 200}


def test_seeds():
    x = ops.ones((16, 12, 12, 1))
    assert_seed_behaviour(
        lambda seed: Cutout(4, seed=seed),
        x,
        lambda seed: keras_drop.ops.cutout(x, 4, seed=seed),
    )


# --------------------------------------------------------------------------
# When it is active: Keras' augmentation convention, without its export trap.


def test_active_on_its_own_inert_in_a_model_with_training_unset():
    x = np.random.default_rng(0).uniform(1.0, 2.0, (8, 12, 12, 3)).astype("float32")
    layer = Cutout(4, seed=0)
    assert (to_numpy(layer(x)) == 0).any()  # on its own: active
    np.testing.assert_array_equal(bits(layer(x, training=False)), bits(x))
    model = keras.Sequential([keras.Input((12, 12, 3)), Cutout(4, seed=0)])
    np.testing.assert_array_equal(bits(model(x)), bits(x))  # as export traces it
    np.testing.assert_array_equal(bits(model.predict(x, verbose=0)), bits(x))
    assert (to_numpy(model(x, training=True)) == 0).any()


def test_active_during_fit_inert_in_evaluate():
    inputs = keras.Input((12, 12, 1))
    model = keras.Model(inputs, Cutout(6, seed=0)(Ones()(inputs)))
    model.compile(keras.optimizers.SGD(0.0), loss=zero_fraction)
    x = np.ones((1024, 12, 12, 1), "float32")
    fitted = model.fit(x, x, batch_size=256, verbose=0).history["loss"][-1]
    expected = coverage_probability(12, 6).mean() ** 2
    assert fitted == pytest.approx(expected, rel=0.05)
    assert model.evaluate(x, x, verbose=0) == 0.0


@pytest.mark.parametrize("batched", [True, False])
def test_dataset_map_under_every_backend(batched):
    tf = pytest.importorskip("tensorflow")
    images = np.ones((8, 12, 12, 3), "float32")
    dataset = tf.data.Dataset.from_tensor_slices(images)
    if batched:
        dataset = dataset.batch(4)
    dataset = dataset.map(Cutout(4, n_holes=2, seed=1))
    outputs = [np.asarray(element) for element in dataset]
    assert all(o.shape == ((4, 12, 12, 3) if batched else (12, 12, 3)) for o in outputs)
    stacked = np.concatenate(outputs) if batched else np.stack(outputs)
    masks = hole_masks(stacked)
    assert masks.reshape(len(masks), -1).any(axis=1).all()  # every image cut
    assert len({m.tobytes() for m in masks}) == len(masks)  # independently
    # A second pass over the dataset draws new holes.
    again = [np.asarray(element) for element in dataset]
    assert not np.array_equal(np.concatenate(outputs), np.concatenate(again))
