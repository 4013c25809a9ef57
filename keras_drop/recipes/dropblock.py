"""`add_dropblock`: DropBlock where the DropBlock paper puts it, in a model
users already have, and the paper's ResNet-50 placement."""

from __future__ import annotations

import collections
import re
from collections.abc import Callable, Sequence
from typing import Any

import keras

from keras_drop import _validation
from keras_drop.layers import DropBlock1D, DropBlock2D, DropBlock3D
from keras_drop.layers._keras_internals import graph_call_inputs
from keras_drop.recipes._dataflow import two_addends
from keras_drop.recipes._rewrite import (
    Rewriter,
    check_model,
    data_format_next_to,
    dtype_next_to,
    graphs,
    log_changes,
    nothing_selected,
    selector,
)

__all__ = ["add_dropblock", "resnet50_groups_3_4"]


_DROPBLOCKS = (DropBlock1D, DropBlock2D, DropBlock3D)


class _DropBlockRewriter(Rewriter):
    """Inserts `DropBlock2D` after the selected layers. A DropBlock already
    where one goes (from an earlier `add_dropblock`: a notebook cell run
    twice) is replaced, never stacked: two layers with one seed draw one
    mask, and the kept units would be scaled twice."""

    def __init__(
        self,
        model,
        *,
        select: Callable[[Any], bool],
        seed: int | None,
        **dropblock_kwargs,
    ):
        super().__init__(model, seed=seed)
        self.select = select
        self.dropblock_kwargs = dropblock_kwargs
        # id(tensor of the new graph) -> index of the inserted DropBlock
        # that computed it.
        self._dropped: dict[int, int] = {}
        self._after, self._alone = _dropblock_neighbours(model)

    def call_layer(self, layer, original, args, kwargs, flow):
        if isinstance(original, _DROPBLOCKS) and args:
            index = self._dropped.get(id(args[0]))
            if index is not None:
                # Right after an inserted DropBlock: one it replaces.
                self.replaces[index].append(original)
                return args[0]
        if not isinstance(original, keras.layers.Layer) or not self.select(original):
            return layer(*args, **kwargs)
        if isinstance(original, _DROPBLOCKS):
            # A selected DropBlock: a new one takes its place.
            return self._drop(
                original, args[0], "output", original.name, [original], flow, args
            )
        addends = two_addends(layer, args, kwargs)
        pair = None if addends is None else flow.shortcut_and_residual(*addends)
        if pair is not None:
            shortcut = source = pair[0]
            replaced, producer = [], flow.producer(shortcut)
            while producer is not None and isinstance(producer[0], _DROPBLOCKS):
                replaced.append(producer[0])
                source = producer[1]
                producer = flow.producer(source)
            # The replaced drops' name, where none of them stays in the model.
            if replaced and all(id(d) in self._alone for d in replaced):
                name = replaced[0].name
            else:
                name = self.fresh_name(f"{original.name}_shortcut_dropblock")
            dropped = self._drop(
                original, source, "shortcut input", name, replaced, flow, [source]
            )
            return layer([dropped if t is shortcut else t for t in addends])
        outputs = layer(*args, **kwargs)
        # An original DropBlock on this output is replaced when it is
        # called (on the new one's output); the new one takes its name.
        old = self._after.get(id(_first_output(original)))
        if old is not None:
            name = old.name
        else:
            name = self.fresh_name(f"{original.name}_dropblock")
        return self._drop(original, outputs, "output", name, [], flow, args)

    def _drop(self, original, tensor, what, name, replaced, flow, sources):
        """`tensor` (`original`'s `what`) through a new DropBlock2D called
        `name`, which replaces the original DropBlocks `replaced`. Its data
        format is that of `original` for its output, else of the nearest
        layer upstream of `sources` that declares one."""
        if not isinstance(tensor, keras.KerasTensor) or len(tensor.shape) != 4:
            shape = tensor.shape if isinstance(tensor, keras.KerasTensor) else tensor
            raise ValueError(
                "`add_dropblock` inserts `DropBlock2D`, which needs a rank 4 "
                f"feature map, but `where` selected layer '{original.name}', "
                f"whose {what} is: {shape}"
            )
        layer = DropBlock2D(
            seed=self.next_seed(),
            name=name,
            data_format=data_format_next_to(
                [original] if what == "output" else [],
                flow,
                keras.tree.flatten(sources),
            ),
            dtype=dtype_next_to(original),
            **self.dropblock_kwargs,
        )
        index = self.insert(layer, replaced)
        outputs = layer(tensor)
        self._dropped[id(outputs)] = index
        return outputs


def _first_output(layer: Any) -> Any:
    """The output of `layer`'s first call, or None for a nested model
    (whose `output` is its own graph's, not the call's)."""
    if isinstance(layer, keras.Model):
        return None
    return layer.output


def _dropblock_neighbours(model: keras.Model) -> tuple[dict[int, Any], set[int]]:
    """For the DropBlock layers called once in `model` (nested models
    included): `{id(input tensor): layer}`, and the ids of those whose
    output feeds one call and is no model output, which leave the model
    when bypassed."""
    calls: collections.Counter = collections.Counter()
    uses: collections.Counter = collections.Counter()
    dropblocks = []
    for graph in graphs(model):
        for operation, tensors in graph_call_inputs(graph):
            calls[id(operation)] += 1
            uses.update(id(t) for t in tensors)
            if isinstance(operation, _DROPBLOCKS):
                dropblocks.append(operation)
        uses.update(id(t) for t in keras.tree.flatten(graph.outputs))
    once = [d for d in dropblocks if calls[id(d)] == 1]
    after = {id(d.input): d for d in once}
    alone = {id(d) for d in once if uses[id(d.output)] == 1}
    return after, alone


_RESNET_GROUPS_3_4 = re.compile(r"conv[45]_block\d+_(1_relu|2_relu|3_bn|add)")


def resnet50_groups_3_4(layer: keras.layers.Layer) -> bool:
    """The DropBlock paper's ResNet-50 placement, as a `where` predicate.

    The paper's best ResNet-50 result applies DropBlock in groups 3 and 4
    (Keras' `conv4_*` and `conv5_*` stages) after every convolution's batch
    norm (and ReLU) of each bottleneck branch and on each skip connection,
    as the reference TPU implementation does. In `keras.applications`
    naming, this selects `conv4_blockN_1_relu`, `_2_relu`, `_3_bn` and
    `_add`; for a selected residual `Add`, `add_dropblock` drops the
    shortcut input, the skip connection. That is four DropBlock layers per
    block, 36 in ResNet-50. The names are the same in `ResNet101` and
    `ResNet152`, so the predicate serves them too.

    Args:
        layer: a layer of the model.

    Returns:
        Whether DropBlock goes after `layer` (or on its skip connection).

    Example:

    >>> base = keras.applications.ResNet50(weights="imagenet")
    >>> model = keras_drop.add_dropblock(
    ...     base, 0.1, 7, where=keras_drop.recipes.resnet50_groups_3_4, seed=0
    ... )

    Reference:
        - [Ghiasi et al., 2018](https://arxiv.org/abs/1810.12890), sec. 4.1.
    """
    return _RESNET_GROUPS_3_4.fullmatch(layer.name) is not None


def add_dropblock(
    model: keras.Model,
    rate: float,
    block_size: int | tuple[int, int],
    *,
    where: Callable[[keras.layers.Layer], bool] | Sequence[str],
    shared_channels: bool = False,
    seed: int | None = None,
) -> keras.Model:
    """Returns `model` with `DropBlock2D` after the layers `where` selects.

    `where` is a predicate called on every layer of the model (nested
    functional and Sequential models included, their layers too), or a list
    of layer names. A `DropBlock2D(rate, block_size)` is inserted on the
    output of each selected layer, which must be a rank 4 feature map. It
    takes the data format of the layer it follows: that layer's
    `data_format`, or for a `BatchNormalization` its axis (1 is channels
    first); else, for a layer that has neither (`ReLU`, `Add`), that of
    the nearest layer upstream that has one; else
    `keras.config.image_data_format()`. A selected `Add` that merges a
    residual branch into its shortcut gets the DropBlock on its shortcut
    input instead, the skip connection, where the paper puts it (the
    shortcut is told from the residual by the structure of the graph, as in
    `add_stochastic_depth`); select the layer after the `Add` to drop the
    block's output. An addition written `x + y` (keras.applications
    ConvNeXt's residuals) is an operation, not a layer, and is not offered
    to `where`: select the layers of the branch or after the merge.

    Never two DropBlocks in one place: a DropBlock layer (1D, 2D or 3D)
    right after a selected layer, or ending a selected `Add`'s shortcut,
    is replaced by the new one under its name, so `add_dropblock` applied
    again with the same `where` (a notebook cell run twice) gives the model
    it gave once. What was inserted and replaced is logged at level INFO on
    the `keras_drop.recipes` logger, as `add_stochastic_depth` logs it.

    `keras_drop.recipes.resnet50_groups_3_4` is the paper's ResNet-50
    placement (groups 3 and 4, after convolutions and on skip connections)
    for `keras.applications.ResNet50`. The paper uses `block_size=7` at
    224 x 224 and a keep probability ramped from 1 to 0.9 during training
    (`rate` 0.1).

    DropBlock is the identity at inference, so the returned model's
    inference output is the original's, bit for bit. It holds copies of the
    original layers with the original weights (the original model is left
    untouched), as `add_stochastic_depth` does.

    Args:
        model: a functional or built Sequential `keras.Model`.
        rate: float in [0, 1), the fraction of units each layer drops.
        block_size: int or a tuple of 2 ints, the side of a dropped block;
            a block larger than a feature map is clipped to it.
        where: a callable `where(layer) -> bool`, called with the original
            model's layers, or a list of layer names.
        shared_channels: if `True`, one mask per sample shared by all
            channels; see `DropBlock2D`.
        seed: int in [0, 2**31 - 1] or `None`. With an int, the inserted
            layers get seeds `seed`, `seed + 1`, ... (modulo 2**31) in depth
            order, so that no two draw the same masks.

    Returns:
        A new functional `keras.Model`, compiled as `model` was if it was.

    Raises:
        ValueError: for a bad argument, names in `where` that name no layer,
            a `where` that selects nothing, a selected layer whose output is
            not rank 4, or a subclassed or unbuilt model.

    Example:

    >>> base = keras.applications.ResNet50(weights="imagenet")
    >>> model = keras_drop.add_dropblock(
    ...     base, 0.1, 7, where=keras_drop.recipes.resnet50_groups_3_4, seed=0
    ... )
    >>> len([l for l in model.layers if isinstance(l, keras_drop.DropBlock2D)])
    36

    Reference:
        - [Ghiasi et al., 2018](https://arxiv.org/abs/1810.12890), sec. 4.1.
    """
    rate = _validation.validate_rate(rate)
    block_size = _validation.validate_int_tuple(block_size, 2, "block_size")
    shared_channels = _validation.validate_bool(shared_channels, "shared_channels")
    seed = _validation.validate_seed(seed)
    check_model(model, "add_dropblock")
    select = selector(
        where,
        model,
        "`keras_drop.recipes.resnet50_groups_3_4` or `['conv4_block1_out']`",
    )
    rewriter = _DropBlockRewriter(
        model,
        select=select,
        rate=rate,
        block_size=block_size,
        shared_channels=shared_channels,
        seed=seed,
    )
    new_model = rewriter.rewrite(model)
    if not rewriter.inserted:
        raise nothing_selected(where, model)
    inserted, replaced = rewriter.changes(new_model)
    log_changes("add_dropblock", model, inserted, replaced)
    return new_model
