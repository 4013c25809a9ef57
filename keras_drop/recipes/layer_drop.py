"""`add_layer_drop`: LayerDrop around the blocks of a model users already
have, so that it can be pruned to fewer blocks at inference."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras

from keras_drop import _validation
from keras_drop.layers import LayerDrop
from keras_drop.layers._keras_internals import (
    held_attribute,
    replace_list_entry,
    sublayers_in_order,
)
from keras_drop.recipes._rewrite import (
    Rewriter,
    all_layers,
    check_model,
    compile_like,
    copy_from_config,
    dtype_next_to,
    log_changes,
    nothing_selected,
    offset_seed,
    selector,
)

__all__ = ["add_layer_drop"]

_EXAMPLE = "`['transformer_layer_0', 'transformer_layer_1']`"


def add_layer_drop(
    model: keras.Model,
    rate: float,
    *,
    where: Callable[[keras.layers.Layer], bool] | Sequence[str],
    seed: int | None = None,
) -> keras.Model:
    """Returns `model` with the layers `where` selects wrapped in `LayerDrop`.

    Each selected layer is replaced by `LayerDrop(copy_of_layer, rate)`,
    called with the layer's own arguments (a keras-hub `BertBackbone`'s
    `transformer_layer_i` keep their `padding_mask`). In training, each
    wrapped layer is skipped for the whole batch with probability `rate`;
    at inference it runs as if unwrapped, so the returned model's
    inference output is the original's, bit for bit. Trained this way, the
    model can be cut to fewer layers with `prune_layers` (Fan et al. keep
    every other layer at half depth).

    Select layers that hold their own residual connection and whose output
    has their input's shape: a transformer block, a residual block built as
    a sub-model. A layer whose output shape differs from its input's raises
    a ValueError. A selected layer already wrapped in `LayerDrop` (from an
    earlier call) gets the new rate and seed, never a second wrapper; name
    the wrapper or its layer to select it.

    Two kinds of model:

    - A functional or Sequential model (nested models included, their
      layers too): the graph is rebuilt as `add_dropblock` rebuilds it
      (copies of the layers, with the original weights) into a functional
      model. Its `.keras` file reloads with the `LayerDrop` layers.
    - A keras-hub ViT (`ViTBackbone`, or a model holding one): its blocks
      run in a Python loop inside one `ViTEncoder` layer, not as graph
      nodes. When `where` selects blocks of `encoder.encoder_layers` (by
      name, such as `"transformer_block_1"`, or by a predicate on the
      blocks), a copy of the model (rebuilt from its own config, with the
      original weights) gets the selected blocks wrapped in place. The
      copy is of the model's class. Its `.keras` file holds the model's
      config, which builds keras-hub's own blocks: it reloads with the
      trained weights and without `LayerDrop` (an inference model, as
      `add_patch_dropout` documents; apply `add_layer_drop` again to train
      on).

    What was inserted and replaced (a re-rated wrapper) is logged at level
    INFO on the `keras_drop.recipes` logger.

    Args:
        model: a functional or built Sequential `keras.Model`, or a
            keras-hub ViT.
        rate: float in [0, 1), the probability that a wrapped layer is
            skipped in a training step. Fan et al. use 0.2 and, for models
            to be pruned to half depth or less, 0.5.
        where: a callable `where(layer) -> bool`, called with the original
            model's layers (with a ViT's blocks), or a list of layer names.
        seed: int in [0, 2**31 - 1] or `None`. With an int, the wrappers
            get seeds `seed`, `seed + 1`, ... (modulo 2**31) in depth order.

    Returns:
        A new `keras.Model`, compiled as `model` was if it was.

    Raises:
        ValueError: for a bad argument, names in `where` that name no layer,
            a `where` that selects nothing, a selected layer whose output
            shape differs from its input's or that is called on several
            tensors, or a subclassed or unbuilt model.

    Example:

    >>> backbone = keras_hub.models.BertBackbone.from_preset("bert_tiny_en_uncased")
    >>> backbone = keras_drop.add_layer_drop(
    ...     backbone, 0.2, where=lambda layer: "transformer_layer" in layer.name
    ... )

    Reference:
        - [Fan et al., 2019](https://arxiv.org/abs/1909.11556) (LayerDrop)
    """
    rate = _validation.validate_rate(rate)
    seed = _validation.validate_seed(seed)
    check_model(model, "add_layer_drop")
    blocks = _vit_blocks(model)
    select = selector(
        where,
        model,
        _EXAMPLE,
        extra_names=[
            name
            for layer in [*all_layers(model), *(block for _, block in blocks)]
            for name in _names(layer)
        ],
    )
    if any(_selected(select, block) for _, block in blocks):
        return _into_vit_encoders(model, rate, select, seed)
    if blocks:
        raise _validation.invalid_value(
            "where",
            f"a selection of blocks of model '{model.name}': its blocks run "
            "inside a keras-hub `ViTEncoder` layer, not as graph nodes (and "
            "its graph cannot be rebuilt); select them by name (such as "
            f"{[block.name for _, block in blocks[:2]]}) or with a predicate "
            "on them; it selected none",
            where,
        )
    rewriter = _LayerDropRewriter(model, select=select, rate=rate, seed=seed)
    new_model = rewriter.rewrite(model)
    if not rewriter.inserted:
        raise nothing_selected(where, model)
    inserted, replaced = rewriter.changes(new_model)
    log_changes("add_layer_drop", model, inserted, replaced)
    if model.compiled:
        new_model.compile_from_config(model.get_compile_config())
    return new_model


def _names(layer: Any) -> list[str]:
    """The names that select `layer`: a LayerDrop's and its layer's."""
    if isinstance(layer, LayerDrop):
        return [layer.name, layer.layer.name]
    return [layer.name]


def _selected(select: Callable[[Any], bool], layer: Any) -> bool:
    """Whether `where` selects `layer`, or the layer a LayerDrop wraps."""
    if select(layer):
        return True
    return isinstance(layer, LayerDrop) and bool(select(layer.layer))


class _LayerDropRewriter(Rewriter):
    """Wraps the selected layers in LayerDrop; a selected LayerDrop is
    replaced by one of the new rate around the same layer."""

    def __init__(self, model, *, select, rate, seed):
        super().__init__(model, seed=seed)
        self.select = select
        self.rate = rate

    def call_layer(self, layer, original, args, kwargs, flow):
        if not isinstance(original, keras.layers.Layer) or not _selected(
            self.select, original
        ):
            return layer(*args, **kwargs)
        if not args or not isinstance(args[0], keras.KerasTensor):
            raise ValueError(
                "`add_layer_drop` wraps a layer in `LayerDrop`, which skips "
                "it by returning its input, so the layer must be called on "
                f"one tensor, but `where` selected layer '{original.name}', "
                f"called on: {args[0] if args else args}"
            )
        if isinstance(original, LayerDrop):
            # The copy's layer goes into the new wrapper; the copy itself
            # is never called, and its weights are the layer's.
            self.leave_out(original)
            self.copy_weights(original.layer, layer.layer)
            wrapped, name, replaced = layer.layer, original.name, [original]
        else:
            wrapped, replaced = layer, []
            name = self.fresh_name(f"{original.name}_layer_drop")
        wrapper = LayerDrop(
            wrapped,
            self.rate,
            seed=self.next_seed(),
            name=name,
            dtype=dtype_next_to(original),
        )
        self.insert(wrapper, replaced)
        try:
            return wrapper(*args, **kwargs)
        except ValueError as error:
            if "needs a layer whose output has the shape" not in str(error):
                raise
            raise ValueError(
                "`add_layer_drop` wraps a layer in `LayerDrop`, which skips "
                "it by returning its input, so the layer's output must have "
                f"its input's shape, but `where` selected layer "
                f"'{original.name}', whose shapes differ. Select whole "
                "blocks instead (a residual block or transformer block whose "
                "output is its input plus a branch, as a layer or a "
                f"sub-model). ({error})"
            ) from error


def _vit_blocks(model: keras.Model) -> list[tuple[Any, Any]]:
    """`(encoder, block)` for each block of each keras-hub `ViTEncoder` in
    `model`, in depth order."""
    return [
        (layer, block)
        for layer in sublayers_in_order(model)
        if type(layer).__name__ == "ViTEncoder" and hasattr(layer, "encoder_layers")
        for block in layer.encoder_layers
    ]


def _into_vit_encoders(
    model: keras.Model, rate: float, select: Callable[[Any], bool], seed: int | None
) -> keras.Model:
    """A copy of `model` whose selected ViT blocks are wrapped in LayerDrop."""
    copy = copy_from_config(
        model, "model", ", which wrapping the blocks of its encoder needs."
    )
    inserted, replaced = [], {}
    originals = _vit_blocks(model)
    for index, (encoder, block) in enumerate(_vit_blocks(copy)):
        original = originals[index][1]
        if _selected(select, original):
            rate_here = rate
            seed_here = offset_seed(seed, len(inserted) + len(replaced))
            if isinstance(original, LayerDrop):
                replaced[original.name] = original.name
            else:
                inserted.append(f"{block.name}_layer_drop")
        elif isinstance(original, LayerDrop):
            # Wrapped by an earlier call and not selected now: it stays.
            rate_here, seed_here = original.rate, original.seed
        else:
            continue
        wrapper = _saved_as(block)(
            block,
            rate_here,
            seed=seed_here,
            name=f"{block.name}_layer_drop",
            dtype=dtype_next_to(block),
        )
        wrapper.build(block.get_build_config()["input_shape"])
        position = encoder.encoder_layers.index(block)
        replace_list_entry(encoder, encoder.encoder_layers, position, wrapper)
    _copy_weights_by_path(model, copy)
    if not model.trainable:
        copy.trainable = False
    log_changes("add_layer_drop", model, inserted, replaced)
    compile_like(model, copy)
    return copy


def _copy_weights_by_path(model: keras.Model, copy: keras.Model) -> None:
    """Sets `copy`'s weights to `model`'s, matched by variable path: a
    variable's path is fixed when its layer is built, so wrapping a block
    in LayerDrop leaves it as it was, where the order of `get_weights`
    changes."""
    weights = {weight.path: weight for weight in model.weights}
    paths = [weight.path for weight in copy.weights]
    if sorted(paths) != sorted(weights) or len(set(paths)) != len(paths):
        raise ValueError(
            f"`add_layer_drop` could not match the weights of model "
            f"'{model.name}' to those of its copy from config by path."
        )
    for weight in copy.weights:
        weight.assign(keras.ops.convert_to_numpy(weights[weight.path]))


class _SavedAsBlock(LayerDrop):
    """A LayerDrop in a keras-hub encoder's block list that saves as the
    block it wraps. The model's `.keras` file holds the model's config,
    which builds keras-hub's own blocks, and Keras reads their weights at
    the paths the saved objects had: a list entry is named after its class,
    its sublayers after the attributes holding them. So this class is named
    after the block's class (`_saved_as`), lists the block's attributes as
    its own, and saves the block's own variables as its own."""

    def __dir__(self):
        return dir(held_attribute(self, "layer"))

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            layer = held_attribute(self, "layer")
            if layer is None:
                raise
            return getattr(layer, name)

    def save_own_variables(self, store):
        self.layer.save_own_variables(store)


def _saved_as(block: Any) -> type:
    """A `_SavedAsBlock` class with the name of `block`'s class."""
    return type(type(block).__name__, (_SavedAsBlock,), {})
