"""Dropping depth: LayerDrop skips a whole layer for the batch; JoinDropPath
drops the inputs of a FractalNet join."""

from __future__ import annotations

import copy
from typing import Any

import keras
from keras import ops

from keras_drop import _validation
from keras_drop.layers._base import RateLayer
from keras_drop.layers._keras_internals import call_like
from keras_drop.layers.drop_path import _run_branch_if, _validate_sublayer


@keras.saving.register_keras_serializable(package="keras_drop")
class LayerDrop(RateLayer):
    """Skips a whole layer for the batch with probability `rate`.

    Wraps a layer whose output has its input's shape and holds its own
    residual connection: a transformer block, a residual block, a
    `keras.Sequential` or functional sub-model. During training the batch
    skips the layer with probability `rate` (the input is returned as it
    is) and otherwise runs it; nothing is rescaled. At inference the layer
    runs as if unwrapped. Trained this way, a network can be pruned to a
    shallower one at inference ("every other layer") with little loss.

    ```python
    if training and uniform() < rate:
        return inputs
    return layer(inputs, *args, training=training, **kwargs)
    ```

    The skip is a real conditional in the compiled step (`keras.ops.cond`):
    a skipped layer costs nothing, its BatchNormalization statistics and
    other non-trainable state are left as they were, its weights get a zero
    gradient and the losses it adds count only on kept steps, all as in
    `StochasticDepthBlock(mode="batch")`, whose machinery this layer shares
    (JAX on CPU computes the layer and selects, for the reason given
    there).

    TensorFlow with XLA (`jit_compile=True`): `StochasticDepthBlock`
    records that XLA failed to compile the gradient of a conditional whose
    branch computes shapes at run time ("must be a compile-time constant",
    a `Dense` on token sequences of unknown batch size). With TensorFlow
    2.21 and Keras 3.15 a wrapped transformer block (attention with a
    padding mask, a `Dense` MLP on the tokens) compiles and trains under
    XLA (tested); should a TensorFlow version fail there, compile with
    `jit_compile=False`.

    Extra call arguments (`padding_mask`, `attention_mask`, any keyword
    argument) and `training` are passed to the wrapped layer, and a Keras
    mask passes through where the wrapped layer supports masking. The output
    has the input's dtype (a cast of the layer's output if its dtype
    policy differs from this layer's: a skipped step returns the input).
    The wrapped layer is `layer`, for tools that prune the model.

    Args:
        layer: a `keras.layers.Layer` (a layer or a model) whose output has
            the shape of its input.
        rate: float in [0, 1), the probability that the layer is skipped.
        seed: int in [0, 2**31 - 1] or `None`, the seed of the layer's
            random generator.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: the wrapped layer's input tensor.
        *args: further positional arguments of the wrapped layer.
        training: Python boolean, whether the layer should behave in
            training mode (skipping) or in inference mode.
        **kwargs: further keyword arguments of the wrapped layer, such as
            `padding_mask`.

    Input shape:
        Any shape `layer` accepts.

    Output shape:
        Same as the input.

    Example:

    >>> x = keras.Input((128, 64))
    >>> for _ in range(6):
    ...     block = keras_hub.layers.TransformerEncoder(256, 4)
    ...     x = keras_drop.LayerDrop(block, 0.2)(x)

    Reference:
        - [Fan et al., 2019](https://arxiv.org/abs/1909.11556) (LayerDrop);
          fairseq's `LayerDropModuleList`, Hugging Face's `layerdrop`.
    """

    def __init__(
        self,
        layer: keras.layers.Layer,
        rate: float = 0.2,
        *,
        seed: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(rate, seed=seed, **kwargs)
        self.layer = _validate_sublayer(layer, "layer")
        # A Keras mask (`Embedding(mask_zero=True)`) passes through where
        # the layer lets it (a layer that keeps the shape keeps the mask).
        self.supports_masking = self.layer.supports_masking
        # Keras binds call arguments to `call`'s signature and refuses a
        # `**kwargs` mixing tensors and other values (`padding_mask=mask,
        # use_causal_mask=True`): bind them as the wrapped layer does.
        call_like(self, self.layer)

    def build(self, input_shape):
        # The layer's variables must exist before a training call reaches
        # it inside the conditional. As on a first call, Keras' rule: its
        # own `build` if it has one, else a symbolic run of its `call`
        # (`compute_output_spec` below) builds its sublayers.
        layer = self.layer
        if not layer.built and type(layer).build is not keras.layers.Layer.build:
            layer.build(input_shape)
        output_shape = layer.compute_output_spec(keras.KerasTensor(input_shape)).shape
        if tuple(output_shape) != tuple(input_shape):
            raise ValueError(
                "`LayerDrop` needs a layer whose output has the shape of its "
                f"input. Received: layer {layer.name!r} with input shape "
                f"{tuple(input_shape)} and output shape {tuple(output_shape)}."
            )
        self.built = True

    def call(self, inputs, *args, training=None, **kwargs):
        def run():
            outputs = self.layer(inputs, *args, training=training, **kwargs)
            if outputs.dtype != inputs.dtype:
                outputs = ops.cast(outputs, inputs.dtype)
            return outputs

        if not self._drops(training):
            return run()
        keep = keras.random.uniform((), seed=self.seed_generator) >= (
            self._current_strength()
        )
        return _run_branch_if(self, self.layer, keep, run, inputs)

    def get_config(self) -> dict[str, Any]:
        base_config = super().get_config()
        return {
            **base_config,
            "layer": keras.saving.serialize_keras_object(self.layer),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LayerDrop:
        config = dict(config)
        # A copy: deserializing a functional model consumes its config.
        config["layer"] = keras.saving.deserialize_keras_object(
            copy.deepcopy(config["layer"])
        )
        return super().from_config(config)


@keras.saving.register_keras_serializable(package="keras_drop")
class JoinDropPath(RateLayer):
    """FractalNet's join with local drop path: the mean of the kept inputs.

    Called on a list of n >= 2 tensors of one shape (the columns that meet
    at a join). During training each input is dropped with probability
    `rate`, independently, and the output is the mean of the inputs kept:
    their sum divided by their number. At least one input is always kept:
    where every input was dropped, one of them, chosen uniformly at random,
    is kept instead (the authors' Caffe layer does this). Input i is
    therefore kept with probability exactly

        (1 - rate) + rate**n / n,

    and the number kept is never 0. At inference the output is the mean of
    all inputs.

    `per_sample=True` (default) draws the drops independently for each
    sample of the batch; `per_sample=False` draws once for the whole batch,
    as the authors' Caffe layer does.

    Global drop path (the paper's other half: one column of the whole
    fractal kept for a mini-batch) is not this layer's. Every join would
    have to agree on one column for the step, and Keras' random ops draw
    afresh at every call (a `SeedGenerator` shared by joins advances
    between them), so the joins would need a draw made once per step and
    read by all, and each join would have to know which columns its inputs
    come from (a fractal block's joins have different widths). What to use
    instead: a column is a chain of its own layers; calling the same layer
    objects in order, without the joins, in a second functional model
    gives that column as a model sharing the fractal's weights, to train
    on the batches given to global drop path.

    Args:
        rate: float in [0, 1), the probability that an input is dropped.
        per_sample: if `True` (default), independent drops per sample; if
            `False`, one draw for the batch.
        seed: int in [0, 2**31 - 1] or `None`, the seed of the layer's
            random generator.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: a list of two or more float tensors of the same shape,
            batch first.
        training: Python boolean, whether the layer should behave in
            training mode (dropping inputs) or in inference mode (the mean
            of all inputs).

    Input shape:
        A list of n >= 2 tensors of one shape, batch first.

    Output shape:
        That shape.

    Example:

    >>> x = keras.Input((32, 32, 16))
    >>> shallow = keras.layers.Conv2D(16, 3, padding="same")(x)
    >>> deep = keras.layers.Conv2D(16, 3, padding="same")(x)
    >>> deep = keras.layers.Conv2D(16, 3, padding="same")(deep)
    >>> y = keras_drop.JoinDropPath(0.15)([shallow, deep])

    Reference:
        - [Larsson et al., 2017](https://arxiv.org/abs/1605.07648)
          (FractalNet, "local drop-path").
    """

    def __init__(
        self,
        rate: float,
        *,
        per_sample: bool = True,
        seed: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(rate, seed=seed, **kwargs)
        self.supports_masking = False
        self.per_sample = _validation.validate_bool(per_sample, "per_sample")

    def build(self, input_shape):
        _check_join_shapes(input_shape)
        self.built = True

    def call(self, inputs, training=False):
        if isinstance(inputs, (list, tuple)):
            _check_join_shapes([tuple(x.shape) for x in inputs])
        else:
            _check_join_shapes(tuple(inputs.shape))
        n = len(inputs)
        dtype = inputs[0].dtype
        if not self._drops(training):
            return _sum(inputs) / ops.cast(n, dtype)
        shape = (ops.shape(inputs[0])[0] if self.per_sample else 1, n)
        kept = keras.random.uniform(shape, seed=self.seed_generator) >= (
            self._current_strength()
        )
        # Where every input was dropped, one chosen uniformly is kept.
        revived = ops.one_hot(
            keras.random.randint(shape[:1], 0, n, seed=self.seed_generator), n
        )
        none_kept = ops.logical_not(ops.any(kept, axis=1, keepdims=True))
        kept = ops.logical_or(kept, ops.logical_and(none_kept, revived > 0.5))
        # (B or 1, n) masks, broadcast over each input's other axes; the
        # count (1 to n) summed in float32.
        broadcast = (shape[0], n) + (1,) * (len(inputs[0].shape) - 1)
        mask = ops.reshape(ops.cast(kept, dtype), broadcast)
        count = ops.sum(ops.cast(kept, "float32"), axis=1, keepdims=True)
        count = ops.cast(ops.reshape(count, broadcast[:1] + broadcast[2:]), dtype)
        return _sum([x * mask[:, i] for i, x in enumerate(inputs)]) / count

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self) -> dict[str, Any]:
        base_config = super().get_config()
        return {**base_config, "per_sample": self.per_sample}


def _sum(tensors: list[Any]) -> Any:
    total = tensors[0]
    for x in tensors[1:]:
        total = total + x
    return total


def _check_join_shapes(input_shape: Any) -> None:
    """A list of two or more shapes, equal where both are known."""
    # One tensor's shape is a sequence of dimensions (ints or None); a list
    # of shapes holds sequences (tuples, TensorShapes, torch.Sizes).
    is_list = isinstance(input_shape, (list, tuple)) and not any(
        s is None or isinstance(s, int) for s in input_shape
    )
    shapes = [tuple(s) for s in input_shape] if is_list else [tuple(input_shape)]
    same = len(shapes) >= 2 and all(
        len(s) == len(shapes[0])
        and all(
            a is None or b is None or a == b for a, b in zip(s, shapes[0], strict=True)
        )
        for s in shapes
    )
    if not same:
        raise ValueError(
            "`JoinDropPath` must be called on a list of two or more tensors "
            f"of the same shape. Received {len(shapes)} input(s) of shape(s): "
            f"{shapes}"
        )
    _validation.check_min_rank(shapes[0], 2, "JoinDropPath")
