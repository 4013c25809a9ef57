"""`add_stochastic_depth`: Stochastic Depth on the residual blocks of a
model users already have."""

from __future__ import annotations

from typing import Any

import keras

from keras_drop import _validation
from keras_drop.layers import StochasticDepth, stochastic_depth_rates
from keras_drop.layers._keras_internals import AddOperation, sublayers
from keras_drop.recipes._dataflow import Dataflow, two_addends
from keras_drop.recipes._drop_paths import drop_path_hooks, replace_drop_paths
from keras_drop.recipes._rewrite import (
    Rewriter,
    check_model,
    dtype_next_to,
    graph_operations,
    is_sample_drop,
    log_changes,
    merge_dtype,
)

__all__ = ["add_stochastic_depth"]


class _StochasticDepthRewriter(Rewriter):
    """Replaces each residual merge with a `StochasticDepth` layer, and the
    per-sample drop that ends its branch, if any, with it."""

    def __init__(self, model, *, mode: str, rescale_at: str, seed: int | None):
        super().__init__(model, seed=seed)
        self.mode = mode
        self.rescale_at = rescale_at

    def call_layer(self, layer, original, args, kwargs, flow):
        if isinstance(original, StochasticDepth):
            # Already a Stochastic Depth merge: a new one takes its place.
            pair, replaced = _stochastic_depth_inputs(args, kwargs), original
            name = original.name
        else:
            addends = two_addends(layer, args, kwargs)
            pair = None if addends is None else flow.shortcut_and_residual(*addends)
            replaced, name = None, None
        if pair is None:
            return layer(*args, **kwargs)
        shortcut, residual = pair
        dtype = merge_dtype(original, flow, pair)
        producer = flow.producer(residual)
        if replaced is None and producer is not None and is_sample_drop(producer[0]):
            # The branch ends in a drop of its own: merge what it drops.
            replaced, residual = producer
        if isinstance(replaced, StochasticDepth):
            residual = self._keep_inference_scale(replaced, residual)
        if name is None:
            name = self.fresh_name(
                f"{_merge_name(original, flow, pair[1])}_stochastic_depth"
            )
        # The rate is set once every block is known: it depends on the count.
        block = StochasticDepth(
            0.0,
            mode=self.mode,
            rescale_at=self.rescale_at,
            seed=self.next_seed(),
            name=name,
            dtype=dtype,
        )
        self.insert(block, [] if replaced is None else [replaced])
        return block([shortcut, residual])

    def _keep_inference_scale(self, replaced: StochasticDepth, residual: Any) -> Any:
        """`residual` as the merge `replaced` adds it at inference.

        A merge with `rescale_at="inference"` adds `(1 - rate) * residual`
        at inference, which the inference output of the new merge (a
        plain sum with `rescale_at="training"`) would lose. That scale
        becomes a fixed multiply of the branch, computed as `replaced`
        computes it (`1 - rate` in float32, at the rate it applies now,
        cast to its compute dtype), so the inference output is unchanged bit
        for bit. The offset -0.0 adds nothing, the sign of a zero included.
        """
        if replaced.rescale_at != "inference":
            return residual
        scale = float(keras.ops.convert_to_numpy(1.0 - replaced._current_strength()))
        if scale == 1.0:
            return residual
        rescaling = keras.layers.Rescaling(
            scale,
            offset=-0.0,
            name=self.fresh_name(f"{replaced.name}_inference_scale"),
            dtype=dtype_next_to(replaced),
        )
        return rescaling(residual)


def _stochastic_depth_inputs(args: tuple, kwargs: dict) -> list[Any] | None:
    if len(args) != 1 or not isinstance(args[0], (list, tuple)) or len(args[0]) != 2:
        return None
    if any(value is not None for key, value in kwargs.items() if key != "training"):
        return None
    return list(args[0])


def _merge_name(original: Any, flow: Dataflow, residual: Any) -> str:
    """The name an inserted merge is called after: the `Add` layer's, or for
    an add operation (auto-named `add_N`), the layer that ends the branch."""
    if isinstance(original, keras.layers.Layer):
        return original.name
    producer = flow.producer(residual)
    if producer is not None and isinstance(producer[0], keras.layers.Layer):
        return producer[0].name
    return original.name


def add_stochastic_depth(
    model: keras.Model,
    final_rate: float,
    *,
    mode: str = "batch",
    rescale_at: str = "training",
    seed: int | None = None,
) -> keras.Model:
    """Returns `model` with Stochastic Depth on every residual block.

    Every two-input addition that merges a residual branch into its
    shortcut, a `keras.layers.Add` layer or an add operation (`x + y`,
    `keras.ops.add(x, y)` in a functional model, as keras.applications
    ConvNeXt writes `inputs + branch`), becomes a `StochasticDepth` layer
    called on `[shortcut, residual]`, which skips the branch with its
    block's rate during training. Rates follow the paper's linear decay
    rule in depth order: block l of L (in topological order of the graph,
    nested models included) gets `stochastic_depth_rates(L, final_rate)[l -
    1]`, so the first blocks are almost always kept and the last is dropped
    with probability `final_rate`.

    Never two drops on one branch: where a residual branch already ends in
    a per-sample drop (a `keras.layers.Dropout` whose `noise_shape` keeps
    only the batch axis, as keras.applications and keras-hub EfficientNet
    build it; a keras_drop `DropPath`; a layer whose class is named
    `...DropPath` or `StochasticDepth`, as keras.applications ConvNeXt's
    and keras-hub's), the `StochasticDepth` merges the branch before that
    drop, which leaves the model: it is replaced, at the decay rule's rate.
    A keras_drop `StochasticDepth` already in the model is replaced by a
    new one under the same name, so a second call re-rates the blocks. One
    with `rescale_at="inference"` scaled its branch by (1 - rate) at
    inference; that scale stays in the model as a fixed multiply of the
    branch (a `keras.layers.Rescaling` named `<merge>_inference_scale`,
    computed as the replaced layer computed it), so the inference output
    is unchanged bit for bit.

    The shortcut is told from the residual by the structure of the graph:
    it is the input that is an ancestor of the other (an identity
    shortcut), or else the one with the shorter path from their nearest
    common ancestor (a projection shortcut). Argument order and layer names
    play no part. An addition is left as it is when it has more than two
    inputs, when its inputs have different shapes (a broadcast, such as
    `x + 3.0`) or no common ancestor, or when both paths have the same
    length. Any other two-input addition whose inputs share an ancestor is
    read as a residual merge, the top-down additions of a feature pyramid
    included: rewrite the backbone, not the detector.

    Transformer blocks add their residuals inside their `call`, which no
    graph rewrite sees. A model whose layers hold a drop-path sublayer (an
    attribute `drop_path`: a layer, or the identity function some blocks
    keep there at rate 0; keras-hub's DINOv2, DINOv3, Swin Transformer,
    MiT and MobileNetV5 blocks) comes back as a copy of the same class,
    built from its config with its weights, in which every such sublayer is
    a seeded keras_drop `DropPath` at the decay rule's rate of its block
    (in the order the model tracks its blocks). `DropPath` always drops per
    sample (`mode` does not apply) and rescales in training (only
    `rescale_at="training"` is accepted). A `.keras` file of that copy
    holds the backbone's config, which builds the backbone's own drop
    paths: reloaded, it is the keras-hub backbone with the saved weights,
    and `add_stochastic_depth` has to be applied again to train on. A model
    with neither additions in its graph nor a drop-path sublayer (keras-hub
    `ViTBackbone`) raises a `ValueError` that says so.

    What was done is logged at level INFO on the `keras_drop.recipes`
    logger (`logging.getLogger("keras_drop.recipes").setLevel("INFO")` to
    see it): the record's attributes `inserted` (names of the drops added
    where there was none) and `replaced` (a dict from each replaced drop to
    what replaced it).

    With the default `rescale_at="training"` (timm, torchvision), kept
    branches are scaled by 1 / (1 - rate) during training and the model adds
    plainly at inference, so the returned model's inference output is the
    original's, bit for bit: fine-tuning a pretrained model starts from its
    accuracy. `rescale_at="inference"` (the paper) scales the branch by
    (1 - rate) at inference instead, which changes a trained model's output.
    Each merge computes in the dtype of the addition it replaces: an `Add`
    layer's dtype policy, or for an add operation its inputs' promoted
    dtype (float32 for a float32 model input plus a float16 branch under
    `mixed_float16`), so output dtypes are unchanged under mixed precision
    too.

    The returned model holds copies of the original layers with the
    original weights (the original model is left untouched); nested
    functional and Sequential models are rewritten too and come back as
    functional models, and a subclass of the functional `keras.Model` (a
    keras-hub CNN backbone, say) comes back as a plain functional model, as
    from `keras.models.clone_model`: its config would rebuild it without
    the inserted layers.

    Args:
        model: a functional or built Sequential `keras.Model`.
        final_rate: float in [0, 1), the drop rate of the last block.
        mode: `"batch"` (default, the paper: one draw per batch) or `"row"`
            (one draw per sample, timm's drop path), see `StochasticDepth`.
            `"subset"` raises `ValueError`: the rewrite keeps the branch's
            layers in the graph, so they would still run on every sample;
            build the model with `StochasticDepthBlock(mode="subset")`.
        rescale_at: `"training"` (default) or `"inference"`, see above.
        seed: int in [0, 2**31 - 1] or `None`. With an int, block l (counted
            from 0 in depth order) gets seed `seed + l` (modulo 2**31), so
            that blocks draw independent masks and the same call gives the
            same masks.

    Returns:
        A new `keras.Model`, compiled as `model` was if it was: a
        functional model, or a copy of `model`'s class for a model whose
        blocks hold drop paths.

    Raises:
        ValueError: for a bad argument, a subclassed or unbuilt model, or a
            model with no residual merge and no drop-path sublayer.

    Example:

    >>> base = keras.applications.ConvNeXtTiny(weights="imagenet")
    >>> model = keras_drop.add_stochastic_depth(base, 0.1, mode="row", seed=0)
    >>> len([l for l in model.layers if isinstance(l, keras_drop.StochasticDepth)])
    18

    Reference:
        - [Huang et al., 2016](https://arxiv.org/abs/1603.09382)
    """
    final_rate = _validation.validate_rate(final_rate, "final_rate")
    if mode == "subset":
        raise ValueError(
            "`add_stochastic_depth` cannot use mode='subset': it rewrites the "
            "`Add` that merges a residual branch, and the branch's layers stay "
            "where they are in the graph, so they run on every sample. Running "
            "a branch on a subset of the batch needs the branch as one layer: "
            "wrap it in `keras_drop.StochasticDepthBlock(branch, rate, "
            "mode='subset')` where the model is built."
        )
    mode = _validation.validate_choice(mode, ("batch", "row"), "mode")
    rescale_at = _validation.validate_choice(
        rescale_at, ("training", "inference"), "rescale_at"
    )
    seed = _validation.validate_seed(seed)
    check_model(model, "add_stochastic_depth")
    if drop_path_hooks(model):
        return replace_drop_paths(model, final_rate, rescale_at, seed)
    _check_has_additions(model)
    rewriter = _StochasticDepthRewriter(
        model, mode=mode, rescale_at=rescale_at, seed=seed
    )
    new_model = rewriter.rewrite(model)
    blocks = rewriter.inserted
    if not blocks:
        raise ValueError(
            "`add_stochastic_depth` found no residual `Add` layer or add "
            f"operation in model '{model.name}': no two-input "
            "`keras.layers.Add` or `x + y` whose shortcut could be told from "
            "its residual branch (see the docstring)."
        )
    for block, rate in zip(
        blocks, stochastic_depth_rates(len(blocks), final_rate), strict=True
    ):
        block.rate = rate
    inserted, replaced = rewriter.changes(new_model)
    log_changes(
        "add_stochastic_depth",
        model,
        inserted,
        replaced,
        blocks=f"{len(inserted) + len(replaced)} residual blocks, ",
    )
    return new_model


def _check_has_additions(model: keras.Model) -> None:
    """Refuses, with what to do instead, a model whose graph holds no
    addition at all: its residual blocks (if any) add inside layers."""
    operations = graph_operations(model)
    additions = (keras.layers.Add, AddOperation, StochasticDepth)
    if any(isinstance(op, additions) for op in operations):
        return
    opaque = sorted(
        {
            op.name
            for op in operations
            if isinstance(op, keras.layers.Layer)
            and not isinstance(op, keras.Model)
            and sublayers(op)
        }
    )
    inside = (
        f" Layers that hold layers of their own, where residual blocks "
        f"could hide: {opaque}."
        if opaque
        else ""
    )
    raise ValueError(
        "`add_stochastic_depth` found no residual `Add` layer or add "
        f"operation in model '{model.name}', and no block holding a "
        "drop-path sublayer (an attribute `drop_path`) to replace: its graph "
        "has no addition at all, and the additions inside a layer's `call` "
        f"are Python code that a graph rewrite cannot see into.{inside} "
        "Instead, build the blocks with `keras_drop.StochasticDepth` or "
        "`keras_drop.DropPath` in their `call`, or use a model whose blocks "
        "hold a drop path (keras-hub's DINOv2, DINOv3, Swin, MiT, "
        "MobileNetV5 backbones)."
    )
