"""`add_stochastic_depth` for blocks that add their residuals inside their
`call`: each block's drop-path sublayer becomes a keras_drop `DropPath`.

Transformer blocks (keras-hub's DINOv2, DINOv3, Swin, MiT, MobileNetV5)
hold a drop path as the attribute `drop_path` and add its output to the
shortcut in Python code that no graph rewrite sees; this swaps the
sublayer in a copy of the model instead.
"""

from __future__ import annotations

import types
from typing import Any

import keras

from keras_drop import _validation
from keras_drop.layers import DropPath, stochastic_depth_rates
from keras_drop.layers._keras_internals import (
    held_attribute,
    replace_sublayer,
    sublayers_in_order,
)
from keras_drop.recipes._rewrite import (
    compile_like,
    copy_model,
    dtype_next_to,
    is_sample_drop,
    log_changes,
    offset_seed,
)

__all__ = ["drop_path_hooks", "replace_drop_paths"]


def drop_path_hooks(model: keras.Model) -> list[tuple[Any, Any]]:
    """`(block, its drop path)` for every layer inside `model` that holds a
    drop path as the attribute `drop_path`: a layer, or the plain function
    some keras-hub blocks hold there at rate 0. In the order the model
    tracks its layers, which is depth order for a stack of blocks."""
    hooks = []
    for layer in sublayers_in_order(model):
        drop_path = held_attribute(layer, "drop_path")
        if isinstance(drop_path, keras.layers.Layer) or isinstance(
            drop_path, types.FunctionType
        ):
            hooks.append((layer, drop_path))
    return hooks


def replace_drop_paths(
    model: keras.Model, final_rate: float, rescale_at: str, seed: int | None
) -> keras.Model:
    """A copy of `model` whose blocks' drop paths are keras_drop `DropPath`
    layers at the linear decay rule's rates."""
    if rescale_at != "training":
        raise _validation.invalid_value(
            "rescale_at",
            f"'training' for model '{model.name}', whose blocks add a drop "
            "path to their shortcut inside their `call`: a `DropPath` "
            "rescales kept samples in training and is the identity at "
            "inference",
            rescale_at,
        )
    copy = copy_model(model, ", which replacing its blocks' drop paths needs.")
    hooks = drop_path_hooks(copy)
    rates = stochastic_depth_rates(len(hooks), final_rate)
    inserted, replaced = [], {}
    for index, ((block, old), rate) in enumerate(zip(hooks, rates, strict=True)):
        drop_path = DropPath(
            rate,
            seed=offset_seed(seed, index),
            name=f"{block.name}_drop_path",
            dtype=dtype_next_to(block),
        )
        if isinstance(old, keras.layers.Layer) and old.built:
            drop_path.build_from_config(old.get_build_config())
        replace_sublayer(block, "drop_path", drop_path)
        # Block names repeat across stages (Swin): named by their path.
        where = f"{block.path}/drop_path"
        if is_sample_drop(old):
            replaced[where] = drop_path.name
        else:
            inserted.append(where)
    log_changes(
        "add_stochastic_depth",
        model,
        inserted,
        replaced,
        blocks=f"{len(inserted) + len(replaced)} residual blocks, ",
    )
    compile_like(model, copy)
    return copy
