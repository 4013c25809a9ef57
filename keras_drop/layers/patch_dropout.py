"""PatchDropout: token dropout for vision transformers."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_drop import _validation
from keras_drop import ops as drop_ops
from keras_drop.layers._base import RateLayer, RateSizesShape


@keras.saving.register_keras_serializable(package="keras_drop")
class PatchDropout(RateSizesShape, RateLayer):
    """Token dropout: a random subset of a vision transformer's patch tokens.

    Placed after the patch embedding (position embedding added, class
    token prepended), during training each sample keeps its first
    `num_prefix_tokens` tokens (the class token, register tokens) and
    exactly k = max(1, floor((1 - rate) L)) of the other L tokens, a
    uniformly random subset drawn without replacement, independently per
    sample and per step (`keras_drop.ops.patch_dropout`). The dropped
    tokens are removed, not zeroed, and nothing is rescaled: the encoder
    runs on `num_prefix_tokens + k` tokens, so attention and MLPs cost
    about k / L of their full price (quadratically less in attention).
    Liu et al. halve (at least) the FLOPs and memory of ViT training on
    ImageNet this way, and FLIP trains CLIP with 50% or 75% of the patches
    removed, faster and more accurately than without.

    With `ordered=True` the kept tokens stay in their order of position;
    the default random order makes no difference to a transformer whose
    position information was added before the layer (useful for debugging
    and visualization). With `return_indices=True` the layer also returns
    the positions of the kept tokens among the L non-prefix tokens, int32
    of shape `(batch, k)`, to gather anything aligned with the tokens
    (rotary position embeddings, a padding mask) with the same choice. A
    Keras mask on the input is not carried through (the layer does not
    support masking): gather it with the indices.

    At inference, and at rate 0, the layer is the identity, bit for bit;
    with `return_indices=True` the indices are then `arange(L)` for every
    sample.

    Output shape: training gives `num_prefix_tokens + k` tokens and
    inference the input's count, so when `rate > 0` the layer's symbolic
    output has an unknown (`None`) token axis, which both modes fit: a
    functional model built on it traces each step with the real shapes.
    Layers after it must therefore accept any number of tokens, as a
    transformer encoder does (attention, MLP, LayerNormalization, pooling
    by the class token or by a mean over tokens); a layer that needs the
    token count (a `Reshape` to a patch grid, a position embedding added
    after it) must come before it. Heads pooling the class token see it
    whatever the rate (it is a prefix token); a mean over tokens averages
    the kept tokens. Keras' own layers all keep one output shape across
    modes: this layer, like timm's, does not.

    `rate` is schedulable (`DropRateScheduler`). k is a shape, fixed when
    the train step is traced, so the layer keeps the applied rate as a
    Python value beside its rate variable, and `DropRateScheduler` traces
    and compiles the train step again whenever a new rate changes k (on
    TensorFlow with a token count unknown when traced, whenever the rate
    changes): with `update_freq="step"` and the default linear ramp that
    is up to L - k + 1 compilations over a run (196 patches at rate 0.5:
    99), one per epoch with `update_freq="epoch"`; a schedule of a few
    constant stages costs one compilation per stage. Eager steps (PyTorch's
    `fit`, `run_eagerly=True`) read the new k at once. A rate assigned by
    hand after the train step is compiled reaches it after
    `model.make_train_function(force=True)` or a new `compile`. To end
    training on full images, as FLIP's unmasked tuning does, schedule the
    rate down to 0: the last steps then run the identity.

    A token count unknown when traced gives a run-time k on TensorFlow and
    a ValueError on JAX and PyTorch; the batch size may be unknown.

    Args:
        rate: float in [0, 1), the fraction of the non-prefix tokens
            dropped in training.
        num_prefix_tokens: int >= 0, the leading tokens always kept: 1
            (default) for a class token (keras-hub's `ViTBackbone` puts it
            at index 0), 0 for none, 1 + the number of register tokens.
        ordered: if `True`, kept tokens stay in their order of position.
        return_indices: if `True`, the layer returns `(tokens, indices)`.
        seed: int in [0, 2**31 - 1] or `None`, the seed of the layer's
            random generator.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: a float tensor `(batch, tokens, channels)`, prefix tokens
            first.
        training: Python boolean, whether the layer should behave in training
            mode (dropping tokens) or in inference mode (returning `inputs`
            unchanged).

    Input shape:
        `(batch, tokens, channels)`, `tokens > num_prefix_tokens`.

    Output shape:
        `(batch, num_prefix_tokens + k, channels)` in training, the input
        shape at inference; symbolically `(batch, None, channels)` when
        `rate > 0`. With `return_indices=True`, also `(batch, k)` int32
        indices (`(batch, L)` at inference; `(batch, None)` symbolically).

    Example:

    A ViT trained on half of its 196 patches; keras-hub's `ViTBackbone`
    embeds them in its `vit_patching_and_embedding` layer, class token
    first:

    >>> tokens = keras.Input((197, 192))  # the embedding's output
    >>> kept = keras_drop.PatchDropout(0.5, seed=0)(tokens)
    >>> kept.shape
    (None, None, 192)

    `kept` then goes through the encoder blocks; the head pools its class
    token, `kept[:, 0]`, or its mean over tokens.

    Reference:
        - [Liu et al., 2022](https://arxiv.org/abs/2208.07220),
          "PatchDropout: Economizing Vision Transformers Using Patch
          Dropout" (WACV 2023).
        - [Li et al., 2023](https://arxiv.org/abs/2212.00794), "Scaling
          Language-Image Pre-training via Masking" (FLIP).
    """

    def __init__(
        self,
        rate: float,
        *,
        num_prefix_tokens: int = 1,
        ordered: bool = False,
        return_indices: bool = False,
        seed: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(rate, seed=seed, **kwargs)
        self.num_prefix_tokens = _validation.validate_non_negative_int(
            num_prefix_tokens, "num_prefix_tokens"
        )
        self.ordered = _validation.validate_bool(ordered, "ordered")
        self.return_indices = _validation.validate_bool(
            return_indices, "return_indices"
        )
        # The output changes shape: a Keras mask on the input cannot follow.
        self.supports_masking = False
        # The applied rate as a Python float (k is a shape), the token
        # counts training calls were traced with, and whether a new rate
        # changed k for one of them since.
        self._init_sized()

    def build(self, input_shape):
        _validation.check_rank(
            input_shape, 3, "PatchDropout", "(batch, tokens, channels)"
        )
        tokens = input_shape[1]
        if tokens is not None and not self.num_prefix_tokens < tokens:
            raise _validation.invalid_value(
                "num_prefix_tokens",
                f"an integer >= 0 and less than the number of tokens ({tokens})",
                self.num_prefix_tokens,
            )
        self.built = True

    def call(self, inputs, training=False):
        if self._drops(training):
            tokens = inputs.shape[1]
            # A symbolic size (JAX shape inference or export) traces no
            # train step that a new rate would have to retrace.
            if not drop_ops._is_symbolic(tokens):
                self._subset.batch_sizes.add(
                    None if tokens is None else tokens - self.num_prefix_tokens
                )
            if self._subset.rate > 0.0:
                outputs, indices = drop_ops.patch_dropout(
                    inputs,
                    self._subset.rate,
                    num_prefix_tokens=self.num_prefix_tokens,
                    ordered=self.ordered,
                    seed=self.seed_generator,
                )
                return (outputs, indices) if self.return_indices else outputs
        if not self.return_indices:
            return inputs
        batch_size, tokens = ops.shape(inputs)[0], ops.shape(inputs)[1]
        patches = tokens - self.num_prefix_tokens
        every = ops.arange(0, patches, dtype="int32")[None, :]
        return inputs, ops.broadcast_to(every, (batch_size, patches))

    def compute_output_shape(self, input_shape):
        batch, tokens, channels = input_shape
        patches = None if tokens is None else tokens - self.num_prefix_tokens
        if self.rate > 0.0:
            tokens = patches = None
        if self.return_indices:
            return (batch, tokens, channels), (batch, patches)
        return (batch, tokens, channels)

    def compute_output_spec(self, inputs, training=None):
        shape = self.compute_output_shape(inputs.shape)
        if not self.return_indices:
            return keras.KerasTensor(shape, dtype=self.compute_dtype)
        return (
            keras.KerasTensor(shape[0], dtype=self.compute_dtype),
            keras.KerasTensor(shape[1], dtype="int32"),
        )

    def get_config(self) -> dict[str, Any]:
        base_config = super().get_config()
        config = {
            "num_prefix_tokens": self.num_prefix_tokens,
            "ordered": self.ordered,
            "return_indices": self.return_indices,
        }
        return {**base_config, **config}
