"""`prune_layers`: a shallower inference copy of a model with LayerDrop or
stochastic depth."""

import logging

import keras
import numpy as np
import pytest
from keras import layers

from keras_drop import (
    LayerDrop,
    StochasticDepth,
    StochasticDepthBlock,
    prune_layers,
)
from keras_drop.layers._keras_internals import sublayers
from keras_drop.recipes.pruning import _kept_names
from tests.helpers import bits

WIDTH = 8


def residual_block(name):
    inputs = keras.Input((WIDTH,))
    branch = layers.Dense(WIDTH, activation="relu")(inputs)
    return keras.Model(
        inputs, layers.Add()([inputs, layers.Dense(WIDTH)(branch)]), name=name
    )


def layer_drop_stack(blocks=4):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((WIDTH,))
    x = layers.Dense(WIDTH, name="embed")(inputs)
    for i in range(blocks):
        x = LayerDrop(residual_block(f"block_{i}"), 0.5, seed=i, name=f"drop_{i}")(x)
    return keras.Model(inputs, layers.Dense(3, name="head")(x))


def inputs(n=16, seed=0):
    return np.random.default_rng(seed).normal(size=(n, WIDTH)).astype("float32")


def assert_bitwise(model, other, x):
    np.testing.assert_array_equal(
        bits(model.predict(x, verbose=0)), bits(other.predict(x, verbose=0))
    )


def test_fraction_keeps_layers_spread_over_depth():
    names = [str(i) for i in range(8)]
    kept = lambda f, n=8: sorted(int(x) for x in _kept_names(f, names[:n], None))  # noqa: E731
    assert kept(0.5) == [0, 2, 4, 6]
    assert kept(0.25) == [0, 4]
    assert kept(1.0) == list(range(8))
    assert kept(0.01) == [0]
    assert kept(1 / 3, 6) == [0, 3]
    # ceil(f * n) layers, in exact arithmetic (10 * 0.7 is 7.000000000000001).
    assert len(_kept_names(0.7, [str(i) for i in range(10)], None)) == 7
    assert len(_kept_names(0.9, names[:3], None)) == 3


def test_layer_drop_stack_pruned_equals_the_kept_blocks_composed(caplog, tmp_path):
    model = layer_drop_stack()
    x = inputs()
    with caplog.at_level(logging.INFO, logger="keras_drop.recipes"):
        half = prune_layers(model, 0.5)
    assert caplog.records[-1].pruned == ["drop_1", "drop_3"]
    assert caplog.records[-1].kept == ["drop_0", "drop_2"]
    names = {layer.name for layer in sublayers(half)}
    assert {"drop_0", "drop_2", "block_0", "block_2"} <= names
    assert not names & {"drop_1", "drop_3", "block_1", "block_3"}
    assert len(half.weights) == len(model.weights) - 2 * 4
    # Kept wrappers stay, with their rates.
    assert [layer.rate for layer in half.layers if isinstance(layer, LayerDrop)] == [
        0.5,
        0.5,
    ]

    # The kept blocks composed by hand, from the original's layers.
    composed_in = keras.Input((WIDTH,))
    y = model.get_layer("embed")(composed_in)
    for name in ("block_0", "block_2"):
        y = model.get_layer(f"drop_{name[-1]}").layer(y)
    composed = keras.Model(composed_in, model.get_layer("head")(y))
    assert_bitwise(half, composed, x)

    path = str(tmp_path / "half.keras")
    half.save(path)
    restored = keras.saving.load_model(path)
    assert_bitwise(restored, half, x)

    by_name = prune_layers(model, ["drop_3"])
    assert [layer.name for layer in by_name.layers if isinstance(layer, LayerDrop)] == [
        "drop_3"
    ]


def test_stochastic_depth_merges_and_blocks_and_nested_models():
    keras.utils.set_random_seed(0)
    x_in = keras.Input((WIDTH,))
    # A StochasticDepth merge: its branch leaves with it.
    branch = layers.Dense(WIDTH, name="branch")(x_in)
    x = StochasticDepth(0.2, name="merge")([x_in, branch])
    # A block with a projection shortcut: the shortcut stays.
    x = StochasticDepthBlock(
        layers.Dense(WIDTH, name="residual"),
        0.2,
        shortcut=layers.Dense(WIDTH, name="projection"),
        name="projected",
    )(x)
    # A nested model holding an identity StochasticDepthBlock.
    inner_in = keras.Input((WIDTH,))
    inner_out = StochasticDepthBlock(
        layers.Dense(WIDTH, name="inner_residual"), 0.2, name="identity"
    )(inner_in)
    x = keras.Model(inner_in, inner_out, name="inner")(x)
    model = keras.Model(x_in, layers.Dense(2, name="head")(x))
    x = inputs()

    none_kept = prune_layers(model, ["merge"])
    names = {layer.name for layer in sublayers(none_kept)}
    assert not names & {"projected", "residual", "identity", "inner_residual"}
    assert {"merge", "branch", "projection"} <= names

    pruned = prune_layers(model, 0.01)  # keeps the first: "merge"
    assert {layer.name for layer in sublayers(pruned)} == names
    composed_in = keras.Input((WIDTH,))
    y = model.get_layer("merge")([composed_in, model.get_layer("branch")(composed_in)])
    y = model.get_layer("projected").shortcut(y)
    composed = keras.Model(composed_in, model.get_layer("head")(y))
    assert_bitwise(pruned, composed, x)

    only_inner = prune_layers(model, ["identity"])
    names = {layer.name for layer in sublayers(only_inner)}
    assert "branch" not in names and "projection" in names
    assert "identity" in names and "merge" not in names
    assert len(only_inner.weights) < len(model.weights)


def test_errors():
    keras.utils.set_random_seed(0)
    x_in = keras.Input((WIDTH,))
    plain = keras.Model(x_in, layers.Dense(2)(x_in))
    with pytest.raises(ValueError, match=r"nothing to prune.*LayerDrop"):
        prune_layers(plain, 0.5)
    model = layer_drop_stack(blocks=2)
    with pytest.raises(ValueError, match=r"`keep`.*\['drop_0', 'drop_1'\].*\['nope'\]"):
        prune_layers(model, ["nope"])
    for keep in (0, 1.5, "drop_0", True):
        with pytest.raises(ValueError, match=r"Invalid value.*`keep`"):
            prune_layers(model, keep)
