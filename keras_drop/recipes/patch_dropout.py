"""`add_patch_dropout`: token dropout in a vision transformer users already
have, after its token embedding."""

from __future__ import annotations

from typing import Any

import keras

from keras_drop import _validation
from keras_drop.layers import PatchDropout
from keras_drop.layers._keras_internals import (
    held_attribute,
    replace_sublayer,
    sublayers_in_order,
)
from keras_drop.recipes._rewrite import (
    Rewriter,
    all_layers,
    check_model,
    compile_like,
    copy_model,
    dtype_next_to,
    log_changes,
    offset_seed,
)

__all__ = ["add_patch_dropout"]


def add_patch_dropout(
    model: keras.Model,
    rate: float,
    *,
    after: str | None = None,
    num_prefix_tokens: int | None = None,
    seed: int | None = None,
) -> keras.Model:
    """Returns `model` with `PatchDropout` after its token embedding.

    Two kinds of model:

    - A keras-hub ViT (`ViTBackbone`, or a model holding one, such as
      `ViTImageClassifier`), with `after=None`. Its transformer blocks run
      inside one `ViTEncoder` layer, not as graph nodes, and its embedding
      layer cannot be rebuilt from its config (keras-hub 0.32), so the
      graph is not rewritten: a copy of the model (rebuilt from the model's
      own config, with the original weights) gets `PatchDropout` in front
      of its encoder's input dropout, after the class token and the
      position embeddings are added, as timm places it. The class token is
      the prefix (`num_prefix_tokens=1`; 0 with `use_class_token=False`).
      The copy is of the model's class. Its `.keras` file holds the
      model's config, which builds keras-hub's own encoder: it reloads
      with the trained weights and without `PatchDropout` (an inference
      model; apply `add_patch_dropout` again to train on).
    - Any functional or Sequential model, with `after` naming the layer
      whose output is the token sequence `(batch, tokens, channels)`, with
      position embeddings added; `num_prefix_tokens` (the class and
      register tokens at its front) must be given. The graph is rebuilt as
      `add_dropblock` rebuilds it (copies of the layers, with the original
      weights) into a functional model.

    `PatchDropout` is the identity at inference, so the returned model's
    inference output is the original's, bit for bit. In training every
    layer after it sees `num_prefix_tokens + k` tokens: attention, MLPs,
    normalization and pooling by the class token or by a mean over tokens
    take any count (a `ViTImageClassifier` with `pooling="token"` reads the
    class token, always kept; with `pooling="gap"` it averages the kept
    tokens); a layer that needs the count (a `Reshape` to the patch grid,
    a position embedding added after `after`) fails in the training step:
    place the layer after those. A `PatchDropout` already in that place
    (from an earlier call) is replaced, never stacked.

    Args:
        model: a built `keras.Model`.
        rate: float in [0, 1), the fraction of non-prefix tokens dropped.
        after: the name of the layer whose output `PatchDropout` follows;
            `None` for a keras-hub ViT.
        num_prefix_tokens: tokens at the front that are always kept; `None`
            reads it from a keras-hub ViT (required with `after`).
        seed: int in [0, 2**31 - 1] or `None`. With several encoders, the
            inserted layers get `seed`, `seed + 1`, ...

    Returns:
        A new `keras.Model`, compiled as `model` was if it was.

    Raises:
        ValueError: for a bad argument, an `after` that names no layer or a
            layer whose output is not rank 3, a model that is neither a
            keras-hub ViT nor given `after`, or a subclassed model.

    Example:

    >>> backbone = keras_hub.models.ViTBackbone.from_preset(
    ...     "vit_base_patch16_224_imagenet"
    ... )
    >>> backbone = keras_drop.add_patch_dropout(backbone, 0.5, seed=0)

    Reference:
        - [Liu et al., 2022](https://arxiv.org/abs/2208.07220) (PatchDropout)
        - [Li et al., 2023](https://arxiv.org/abs/2212.00794) (FLIP)
    """
    rate = _validation.validate_rate(rate)
    seed = _validation.validate_seed(seed)
    if num_prefix_tokens is not None:
        num_prefix_tokens = _validation.validate_non_negative_int(
            num_prefix_tokens, "num_prefix_tokens"
        )
    check_model(model, "add_patch_dropout")
    if after is None:
        encoders = _vit_encoders(model)
        if not encoders:
            raise ValueError(
                "`add_patch_dropout` found no keras-hub `ViTEncoder` in model "
                f"'{model.name}': name the layer whose output is the token "
                "sequence (position embeddings added) with `after`, and the "
                "number of class and register tokens at its front with "
                "`num_prefix_tokens`."
            )
        return _into_vit_encoders(model, rate, num_prefix_tokens, seed)
    if not isinstance(after, str):
        raise _validation.invalid_value("after", "a layer name or None", after)
    if after not in {layer.name for layer in all_layers(model)}:
        raise _validation.invalid_value(
            "after", f"the name of a layer of model '{model.name}'", after
        )
    if num_prefix_tokens is None:
        raise _validation.invalid_value(
            "num_prefix_tokens",
            "the number of class and register tokens at the front of the "
            f"output of '{after}' (0 if none), an integer >= 0",
            num_prefix_tokens,
        )
    rewriter = _PatchDropoutRewriter(
        model, after=after, rate=rate, num_prefix_tokens=num_prefix_tokens, seed=seed
    )
    new_model = rewriter.rewrite(model)
    inserted, replaced = rewriter.changes(new_model)
    log_changes("add_patch_dropout", model, inserted, replaced)
    if model.compiled:
        new_model.compile_from_config(model.get_compile_config())
    return new_model


class _PatchDropoutRewriter(Rewriter):
    """Inserts `PatchDropout` after the layer named `after`; a PatchDropout
    that already follows it is replaced."""

    def __init__(self, model, *, after, rate, num_prefix_tokens, seed):
        super().__init__(model, seed=seed)
        self.after = after
        self.rate = rate
        self.num_prefix_tokens = num_prefix_tokens
        self._dropped: dict[int, int] = {}  # id(output) -> inserted index

    def call_layer(self, layer, original, args, kwargs, flow):
        if isinstance(original, PatchDropout) and args:
            index = self._dropped.get(id(args[0]))
            if index is not None:
                self.replaces[index].append(original)
                return args[0]
        outputs = layer(*args, **kwargs)
        if not isinstance(original, keras.layers.Layer) or original.name != self.after:
            return outputs
        if not isinstance(outputs, keras.KerasTensor) or len(outputs.shape) != 3:
            shape = getattr(outputs, "shape", outputs)
            raise ValueError(
                "`add_patch_dropout` inserts `PatchDropout`, which needs a "
                "token sequence (batch, tokens, channels), but the output of "
                f"layer '{self.after}' (`after`) is: {shape}"
            )
        dropout = PatchDropout(
            self.rate,
            num_prefix_tokens=self.num_prefix_tokens,
            seed=self.next_seed(),
            name=self.fresh_name(f"{self.after}_patch_dropout"),
            dtype=dtype_next_to(original),
        )
        index = self.insert(dropout)
        tokens = dropout(outputs)
        self._dropped[id(tokens)] = index
        return tokens


def _vit_encoders(model: keras.Model) -> list[Any]:
    """keras-hub `ViTEncoder` layers inside `model`, in depth order: layers
    that run their blocks on `self.dropout(inputs)`."""
    return [
        layer
        for layer in sublayers_in_order(model)
        if type(layer).__name__ == "ViTEncoder"
        and held_attribute(layer, "dropout") is not None
        and hasattr(layer, "encoder_layers")
    ]


def _vit_prefix(model: keras.Model) -> int:
    """1 for a keras-hub ViT with a class token, else 0."""
    for layer in [model, *sublayers_in_order(model)]:
        if type(layer).__name__ in ("ViTBackbone", "ViTPatchingAndEmbedding"):
            return int(bool(layer.use_class_token))
    return 1


def _into_vit_encoders(
    model: keras.Model, rate: float, num_prefix_tokens: int | None, seed: int | None
) -> keras.Model:
    """A copy of `model` whose ViT encoders drop tokens before their input
    dropout."""
    copy = copy_model(model, ", which inserting PatchDropout into its encoder needs.")
    prefix = _vit_prefix(copy) if num_prefix_tokens is None else num_prefix_tokens
    inserted, replaced = [], {}
    # The copy is built from the model's config, so its encoders hold
    # keras-hub's own input dropout: a PatchDropout of an earlier call is
    # not carried over (it is replaced, never stacked).
    originals = _vit_encoders(model)
    for index, encoder in enumerate(_vit_encoders(copy)):
        dropout = held_attribute(encoder, "dropout")
        if isinstance(dropout, _TokenDropout):
            dropout = dropout.dropout
        old = held_attribute(originals[index], "dropout")
        patch_dropout = PatchDropout(
            rate,
            num_prefix_tokens=prefix,
            seed=offset_seed(seed, index),
            name=f"{encoder.name}_patch_dropout",
            dtype=dtype_next_to(dropout),
        )
        token_dropout = _TokenDropout(patch_dropout, dropout, name=dropout.name)
        token_dropout.build(encoder.get_build_config()["input_shape"])
        replace_sublayer(encoder, "dropout", token_dropout)
        where = f"{encoder.path}/dropout"
        if not isinstance(old, _TokenDropout):
            inserted.append(where)
        else:
            replaced[where] = patch_dropout.name
    log_changes("add_patch_dropout", model, inserted, replaced)
    compile_like(model, copy)
    return copy


class _TokenDropout(keras.layers.Layer):
    """`dropout(patch_dropout(x))`: what a ViT encoder calls as its input
    dropout after `add_patch_dropout`. Not registered for saving: the model
    that holds it saves the config keras-hub rebuilds it from."""

    def __init__(self, patch_dropout, dropout, **kwargs):
        super().__init__(dtype=dropout.dtype_policy, **kwargs)
        self.patch_dropout = patch_dropout
        self.dropout = dropout

    def build(self, input_shape):
        self.patch_dropout.build(input_shape)
        if not self.dropout.built:
            self.dropout.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        tokens = self.patch_dropout(inputs, training=training)
        return self.dropout(tokens, training=training)

    def compute_output_shape(self, input_shape):
        return self.patch_dropout.compute_output_shape(input_shape)
