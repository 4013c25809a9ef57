"""Small models holding every keras_drop layer, for the saving, export and
distributed tests.

Three models with several instances of each layer and non-default
arguments: a functional model (every layer), a `Sequential` (every layer
that takes one input) and a subclassed model. `functional_twin` builds,
from the same layer objects, the functional model with every keras_drop
layer replaced by what its inference documents (the identity; the
rescaled sum for Stochastic Depth with `rescale_at="inference"`; `Dense`
for `DropConnectDense`; the wrapped layer for `LayerDrop`; the mean for
`JoinDropPath`).

Run as a script, it is the fresh process that reloads saved models with
nothing but `import keras_drop` (and this module, for the subclassed
model's own class):

    python -m tests.every_layer DIR

reads `DIR/inputs.npy` and every `DIR/*.keras`, and writes
`DIR/loaded.npz` (`predict` outputs) and `DIR/loaded.json` (the model's
config and each keras_drop layer's).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

import keras_drop
from keras_drop.layers._keras_internals import sublayers

IMAGE_SHAPE = (8, 8, 3)


def inputs(n: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, (n, *IMAGE_SHAPE)).astype("float32")


def conv_bn(filters: int, name: str | None = None) -> keras.Sequential:
    """Conv-BN-ReLU; `name` also names the three layers (`NAME_conv`, ...)."""

    def named(part):
        return {"name": f"{name}_{part}"} if name else {}

    return keras.Sequential(
        [
            keras.layers.Conv2D(
                filters, 3, padding="same", use_bias=False, **named("conv")
            ),
            keras.layers.BatchNormalization(momentum=0.5, **named("bn")),
            keras.layers.ReLU(**named("relu")),
        ],
        name=name,
    )


def _layers() -> dict[str, keras.layers.Layer]:
    """The functional model's layers by name, keras_drop ones `drop_...`."""
    layers = [
        keras_drop.Cutout(3, n_holes=2, fill_value=0.5, seed=11, name="drop_cutout"),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1"),
        keras_drop.DropBlock2D(
            0.2,
            3,
            shared_channels=True,
            exact_rate=False,
            seed=12,
            name="drop_block_shared",
        ),
        keras.layers.Conv2D(4, 3, padding="same", name="conv2"),
        keras_drop.StochasticDepth(0.25, mode="row", seed=13, name="drop_depth_row"),
        keras.layers.Conv2D(4, 1, name="conv3"),
        keras_drop.DropPath(0.3, scale_by_keep=False, seed=14, name="drop_path"),
        keras.layers.Add(name="residual_add"),
        keras.layers.Conv2D(4, 1, name="conv4"),
        keras_drop.StochasticDepth(
            0.1, rescale_at="training", seed=15, name="drop_depth_timm"
        ),
        keras_drop.StochasticDepthBlock(
            conv_bn(4), 0.3, seed=16, name="drop_block_paper"
        ),
        keras_drop.StochasticDepthBlock(
            conv_bn(6),
            0.2,
            shortcut=keras.layers.Conv2D(6, 1),
            rescale_at="training",
            seed=17,
            name="drop_block_projection",
        ),
        keras_drop.LayerDrop(conv_bn(6), 0.25, seed=24, name="drop_layer"),
        keras.layers.Conv2D(6, 1, name="conv5"),
        keras_drop.JoinDropPath(0.2, seed=25, name="drop_join"),
        keras.layers.Permute((3, 1, 2), name="channels_first"),
        keras_drop.DropBlock2D(
            0.1,
            (2, 3),
            data_format="channels_first",
            with_noise=True,
            scale_by_keep=False,
            seed=18,
            name="drop_block_first",
        ),
        keras.layers.Reshape((48, 8), name="to_sequence"),
        keras_drop.DropBlock1D(0.15, 4, seed=19, name="drop_block_1d"),
        keras.layers.Reshape((4, 4, 3, 8), name="to_volume"),
        keras_drop.DropBlock3D(0.2, 2, seed=20, name="drop_block_3d"),
        keras.layers.Reshape((6, 64), name="to_tokens"),
        keras_drop.PatchDropout(
            0.25, num_prefix_tokens=2, ordered=True, seed=24, name="drop_tokens"
        ),
        keras.layers.GlobalAveragePooling1D(name="token_pool"),
        keras_drop.UniformDropout(0.4, seed=21, name="drop_uniform"),
        keras.layers.GlobalAveragePooling3D(name="pool"),
        keras.layers.Concatenate(name="join"),
        keras_drop.DropConnectDense(
            5, 0.3, activation="tanh", seed=22, name="drop_connect_tanh"
        ),
        keras_drop.DropConnectDense(
            2, 0.2, use_bias=False, seed=23, name="drop_connect_head"
        ),
    ]
    return {layer.name: layer for layer in layers}


def _forward(x: Any, layer: dict[str, Any], plain: bool) -> Any:
    """The functional graph; `plain=True` puts each keras_drop layer's
    documented inference in its place."""

    def drop(name, tensor):
        return tensor if plain else layer[name](tensor)

    x = drop("drop_cutout", x)
    x = drop("drop_block_shared", layer["conv1"](x))
    branch = layer["conv2"](x)
    if plain:  # shortcut + (1 - rate) * residual, in float32
        x = _rescaled_sum(0.25)([x, branch])
    else:
        x = layer["drop_depth_row"]([x, branch])
    x = layer["residual_add"]([x, drop("drop_path", layer["conv3"](x))])
    branch = layer["conv4"](x)
    if plain:
        x = keras.layers.Add()([x, branch])
    else:
        x = layer["drop_depth_timm"]([x, branch])
    block = layer["drop_block_paper"]
    x = _rescaled_sum(0.3)([x, block.residual(x)]) if plain else block(x)
    block = layer["drop_block_projection"]
    if plain:
        x = keras.layers.Add()([block.shortcut(x), block.residual(x)])
    else:
        x = block(x)
    x = layer["drop_layer"].layer(x) if plain else layer["drop_layer"](x)
    branch = layer["conv5"](x)
    if plain:
        x = keras.layers.Average()([x, branch])
    else:
        x = layer["drop_join"]([x, branch])
    x = drop("drop_block_first", layer["channels_first"](x))
    # Token dropout changes the token count: a branch of its own, pooled.
    # Few tokens (2 + 4), so that a scheduled rate changes k seldom.
    tokens = layer["token_pool"](drop("drop_tokens", layer["to_tokens"](x)))
    x = drop("drop_block_1d", layer["to_sequence"](x))
    x = drop("drop_block_3d", layer["to_volume"](x))
    x = layer["join"]([layer["pool"](drop("drop_uniform", x)), tokens])
    x = layer["dense_tanh" if plain else "drop_connect_tanh"](x)
    return layer["dense_head" if plain else "drop_connect_head"](x)


def _rescaled_sum(rate: float) -> keras.layers.Layer:
    keep = np.float32(1.0) - np.float32(rate)  # as the layer computes it
    return keras.layers.Lambda(lambda t: t[0] + t[1] * keep)


def functional_model() -> keras.Model:
    x = keras.Input(IMAGE_SHAPE, name="image")
    return keras.Model(x, _forward(x, _layers(), plain=False), name="functional")


def functional_twin(model: keras.Model) -> keras.Model:
    """`model` (from `functional_model`) with its keras_drop layers absent:
    the same layer objects and weights, `Dense` for `DropConnectDense`."""
    layer = {layer.name: layer for layer in model.layers}
    for name, source in (
        ("dense_tanh", "drop_connect_tanh"),
        ("dense_head", "drop_connect_head"),
    ):
        drop_connect = layer[source]
        config = drop_connect.get_config()
        for key in ("rate", "seed", "name"):
            config.pop(key)
        layer[name] = keras.layers.Dense.from_config(config)
    x = keras.Input(IMAGE_SHAPE)
    twin = keras.Model(x, _forward(x, layer, plain=True))
    for name, source in (
        ("dense_tanh", "drop_connect_tanh"),
        ("dense_head", "drop_connect_head"),
    ):
        layer[name].set_weights(layer[source].get_weights())
    return twin


def sequential_model() -> keras.Sequential:
    return keras.Sequential(
        [
            keras.Input(IMAGE_SHAPE),
            keras_drop.Cutout(0.375, fill_value=-1.0, seed=41),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
            keras_drop.DropBlock2D(0.15, 3, seed=42),
            keras_drop.StochasticDepthBlock(
                conv_bn(4), 0.4, mode="subset", rescale_at="training", seed=43
            ),
            keras_drop.DropPath(0.2, seed=44),
            keras_drop.LayerDrop(conv_bn(4), 0.3, seed=49),
            keras_drop.UniformDropout(0.25, seed=45),
            keras.layers.Reshape((64, 4)),
            keras_drop.DropBlock1D(0.1, 5, shared_channels=True, seed=46),
            keras.layers.Reshape((4, 4, 4, 4)),
            keras_drop.DropBlock3D(0.2, (1, 2, 2), exact_rate=False, seed=47),
            keras.layers.Reshape((64, 4)),
            keras_drop.PatchDropout(0.3, num_prefix_tokens=0, seed=49),
            keras.layers.GlobalAveragePooling1D(),
            keras_drop.DropConnectDense(3, 0.25, seed=48),
        ],
        name="sequential",
    )


@keras.saving.register_keras_serializable(package="keras_drop_tests")
class EveryLayerModel(keras.Model):
    """A subclassed model holding keras_drop layers as attributes."""

    def __init__(self, units: int = 3, rate: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.rate = rate
        # Named: a fresh process numbers unnamed layers differently.
        self.cutout = keras_drop.Cutout(
            3, n_holes=3, fill_value=-1.0, seed=31, name="cutout"
        )
        self.conv = keras.layers.Conv2D(4, 3, padding="same", name="conv")
        self.drop_block = keras_drop.DropBlock2D(
            rate, 2, scale_by_keep=False, seed=32, name="drop_block"
        )
        self.branch = conv_bn(4, name="branch")
        self.depth = keras_drop.StochasticDepth(
            rate, mode="row", rescale_at="training", seed=33, name="depth"
        )
        self.block = keras_drop.StochasticDepthBlock(
            conv_bn(4, name="block_branch"),
            rate,
            shortcut=keras.layers.Conv2D(4, 1, name="block_shortcut"),
            seed=34,
            name="block",
        )
        self.drop_path = keras_drop.DropPath(rate, seed=35, name="drop_path")
        self.layer_drop = keras_drop.LayerDrop(
            conv_bn(4, name="layer_drop_branch"), rate, seed=39, name="layer_drop"
        )
        self.join = keras_drop.JoinDropPath(
            rate, per_sample=False, seed=40, name="join"
        )
        self.uniform = keras_drop.UniformDropout(2 * rate, seed=36, name="uniform")
        self.drop_block_1d = keras_drop.DropBlock1D(
            rate, 3, shared_channels=True, seed=37, name="drop_block_1d"
        )
        self.tokens = keras_drop.PatchDropout(
            2 * rate, return_indices=True, seed=39, name="tokens"
        )
        self.head = keras_drop.DropConnectDense(units, rate, seed=38, name="head")

    def call(self, inputs, training=None):
        x = self.cutout(inputs, training=training)
        x = self.drop_block(self.conv(x), training=training)
        x = self.depth([x, self.branch(x, training=training)], training=training)
        x = self.block(x, training=training)
        x = x + self.drop_path(x, training=training)
        x = self.join([x, self.layer_drop(x, training=training)], training=training)
        x = self.uniform(x, training=training)
        x = ops.reshape(x, (-1, 64, 4))
        x = self.drop_block_1d(x, training=training)
        x, _ = self.tokens(x, training=training)
        x = ops.mean(x, axis=1)
        return self.head(x, training=training)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "rate": self.rate}


def subclassed_model() -> keras.Model:
    model = EveryLayerModel(units=3, rate=0.15, name="subclassed")
    model(inputs(2))
    return model


MODELS = {
    "functional": functional_model,
    "sequential": sequential_model,
    "subclassed": subclassed_model,
}


def config_json(model: keras.Model) -> str:
    """A model's config as JSON: tuples and lists compare equal."""
    return json.dumps(model.get_config(), sort_keys=True)


def drop_layers(model: keras.Model) -> list[str]:
    """The config of every keras_drop layer in `model`, nested ones too, as
    JSON with its class name."""
    # A nested Sequential built anew (in a subclassed model's __init__)
    # numbers its input layer by what the process created before.
    return [
        re.sub(
            r'"input_layer_\d+"',
            '"input_layer"',
            json.dumps([type(layer).__name__, layer.get_config()], sort_keys=True),
        )
        for layer in sublayers(model)
        if type(layer).__module__.startswith("keras_drop.")
    ]


def reload_in_this_process(directory: Path) -> None:
    x = np.load(directory / "inputs.npy")
    outputs, configs = {}, {}
    for path in sorted(directory.glob("*.keras")):
        model = keras.saving.load_model(path)  # no custom_objects
        outputs[path.stem] = model.predict(x, verbose=0)
        configs[path.stem] = {
            "model": config_json(model),
            "drop_layers": drop_layers(model),
        }
    np.savez(directory / "loaded.npz", **outputs)
    (directory / "loaded.json").write_text(json.dumps(configs))


if __name__ == "__main__":
    reload_in_this_process(Path(sys.argv[1]))
