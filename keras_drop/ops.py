"""Functional forms of the keras_drop regularizers.

Each function is the maths of one method, written on `keras.ops` and
`keras.random` only, so it runs on every Keras backend, eagerly and inside
`tf.function` / `jax.jit`. There is no `training` flag: calling a function
applies the regularizer. `seed` follows `keras.random.dropout`: an int (the
same mask on every call), a `keras.random.SeedGenerator` (a new mask on every
call) or `None` (Keras' global generator; not usable under `jax.jit`).

`rate` may be a Python float or a scalar tensor, so a layer can keep its rate
in a variable that a compiled step reads on every call.

The functions follow the README's feature table. `drop_block`'s mask (the
gamma solve, the seed sampling, the dilation and the choice among their
constructions per backend) lives in the private `keras_drop._block_mask`,
with `_drop_block`, the body that `drop_block` and the DropBlock layers
share.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_drop import _validation
from keras_drop._block_mask import _drop_block

__all__ = [
    "cutout",
    "drop_block",
    "drop_connect",
    "drop_path",
    "drop_path_subset",
    "patch_dropout",
    "stochastic_depth",
    "uniform_dropout",
]


def drop_block(
    inputs: Any,
    rate: Any,
    block_size: int | Sequence[int],
    *,
    shared_channels: bool = False,
    exact_rate: bool = True,
    scale_by_keep: bool = True,
    with_noise: bool = False,
    data_format: str | None = None,
    seed: Any = None,
) -> Any:
    """DropBlock: drops contiguous blocks of a feature map.

    The spatial rank follows the input's rank: 3 for 1D `(batch, steps,
    channels)`, 4 for 2D, 5 for 3D (channels first with
    `data_format="channels_first"`).

    Block seeds are drawn with probability gamma over the valid region (the
    positions where a whole block fits), each grown to a `block_size` block,
    and the kept units are rescaled by count / kept (the TensorFlow DropBlock
    design). `exact_rate=True` solves gamma so that the expected dropped
    fraction equals `rate` although blocks overlap; `exact_rate=False` uses
    the paper's closed form, which under-drops. A block larger than the map
    is clipped to it. Masks and the scale are computed in float32 and cast
    once to the input's dtype; a batch whose every unit is dropped gives
    zeros, never NaN.

    Args:
        inputs: a rank 3, 4 or 5 float tensor.
        rate: probability that a unit is dropped, in [0, 1); a Python float
            or a scalar tensor.
        block_size: int, or one int per spatial axis.
        shared_channels: one mask per sample, shared by all channels.
        exact_rate: solve gamma for the exact dropped fraction.
        scale_by_keep: rescale kept units by count / kept.
        with_noise: fill dropped units with standard normal noise instead of
            zeros.
        data_format: `"channels_last"`, `"channels_first"` or `None` (the
            Keras default).
        seed: int in [0, 2**31 - 1], `keras.random.SeedGenerator` or `None`.

    Returns:
        A tensor of the input's shape and dtype.

    Reference:
        [Ghiasi et al., 2018](https://arxiv.org/abs/1810.12890)
    """
    if isinstance(rate, np.ndarray) and rate.ndim == 0:
        rate = rate.item()
    rate_bound = float(rate) if isinstance(rate, (int, float)) else None
    return _drop_block(
        inputs,
        rate,
        block_size,
        rate_bound=rate_bound,
        shared_channels=shared_channels,
        exact_rate=exact_rate,
        scale_by_keep=scale_by_keep,
        with_noise=with_noise,
        data_format=data_format,
        seed=seed,
    )


# The few tensor functions `_cutout` uses, under the names a Keras backend
# module gives them. `cutout` passes this namespace; the `Cutout` layer in a
# `tf.data` pipeline passes the TensorFlow backend instead (see
# `keras_drop.layers._keras_internals`).
_KERAS_OPS = types.SimpleNamespace(
    numpy=ops, random=keras.random, shape=ops.shape, cast=ops.cast
)


def cutout(
    inputs: Any,
    length: int | float,
    *,
    n_holes: int = 1,
    fill_value: float = 0.0,
    data_format: str | None = None,
    seed: Any = None,
) -> Any:
    """Cutout: fills `n_holes` square patches of each image with `fill_value`.

    Each patch has side `length` and a centre drawn uniformly over the
    image's pixels, independently per image and per hole; a patch that
    crosses the border is clipped (smaller), as in the paper, so an image
    loses on average less than `n_holes * length^2` pixels. Patches cover
    all channels. The patch spans rows `centre - length // 2` to
    `centre - length // 2 + length - 1` (for an odd `length`, the paper's
    code cuts `length - 1`).

    Args:
        inputs: an image `(height, width, channels)` or a batch `(batch,
            height, width, channels)`; channels first with
            `data_format="channels_first"`.
        length: the patch side: an int number of pixels, or a float in
            (0, 1], a fraction of the image's shorter side (rounded, at least
            one pixel).
        n_holes: patches per image, a positive int.
        fill_value: the value written into the patches.
        data_format: `"channels_last"`, `"channels_first"` or `None` (the
            Keras default).
        seed: int in [0, 2**31 - 1], `keras.random.SeedGenerator` or `None`.

    Returns:
        A tensor of the input's shape and dtype.

    Reference:
        [DeVries & Taylor, 2017](https://arxiv.org/abs/1708.04552)
    """
    length = _validation.validate_length(length)
    n_holes = _validation.validate_positive_int(n_holes, "n_holes")
    fill_value = _validation.validate_finite(fill_value, "fill_value")
    data_format = _validation.standardize_data_format(data_format)
    seed = _validation.validate_op_seed(seed)
    inputs = ops.convert_to_tensor(inputs)
    _validation.check_image_rank(inputs.shape, "cutout", data_format)
    return _cutout(inputs, length, n_holes, fill_value, data_format, seed, _KERAS_OPS)


def _cutout(
    inputs: Any,
    length: int | float,
    n_holes: int,
    fill_value: float,
    data_format: str,
    seed: Any,
    backend: Any,
) -> Any:
    """`cutout` on validated arguments, with the tensor functions of
    `backend` (`_KERAS_OPS`, or a Keras backend module)."""
    xp = backend.numpy
    single = len(inputs.shape) == 3
    images = xp.expand_dims(inputs, 0) if single else inputs
    shape = backend.shape(images)
    if data_format == "channels_last":
        batch, height, width = shape[0], shape[1], shape[2]
    else:
        batch, height, width = shape[0], shape[2], shape[3]
    rows = backend.cast(xp.arange(height), "float32")
    cols = backend.cast(xp.arange(width), "float32")
    height = backend.cast(height, "float32")
    width = backend.cast(width, "float32")
    if isinstance(length, float):
        side = xp.maximum(xp.floor(length * xp.minimum(height, width) + 0.5), 1.0)
    else:
        side = float(length)

    # Centres uniform over the pixels; row/column membership per hole as
    # (batch, holes, height) and (batch, holes, width) masks, whose outer
    # product is the hole. Rows outside the image do not exist: clipping.
    uniform = backend.random.uniform((batch, n_holes, 2), dtype="float32", seed=seed)
    top = xp.floor(uniform[..., 0] * height) - xp.floor(side / 2.0)
    left = xp.floor(uniform[..., 1] * width) - xp.floor(side / 2.0)
    in_rows = (rows >= top[..., None]) & (rows < top[..., None] + side)
    in_cols = (cols >= left[..., None]) & (cols < left[..., None] + side)
    holes = in_rows[..., :, None] & in_cols[..., None, :]
    hole = holes[:, 0] if n_holes == 1 else xp.any(holes, axis=1)
    hole = hole[..., None] if data_format == "channels_last" else hole[:, None]

    fill = backend.cast(fill_value, images.dtype)
    outputs = xp.where(hole, fill, images)
    return outputs[0] if single else outputs


def _keep_multiplier(shape: Any, rate: Any, scale_by_keep: bool, seed: Any) -> Any:
    """A float32 tensor of `shape` holding 0 (dropped, with probability
    `rate`) or the keep scale: 1 / (1 - rate) with `scale_by_keep`, else 1.

    `uniform >= rate` keeps with probability exactly 1 - rate, and at rate 0
    every entry is exactly 1.0, so the output is the input bit for bit.
    """
    uniform = keras.random.uniform(shape, dtype="float32", seed=seed)
    scale = 1.0 / (1.0 - rate) if scale_by_keep else 1.0
    return ops.where(uniform >= rate, scale, 0.0)


def drop_path(
    inputs: Any, rate: Any, *, scale_by_keep: bool = True, seed: Any = None
) -> Any:
    """DropPath: zeroes each sample's whole input with probability `rate`.

    Meant for a residual branch (`x + drop_path(branch(x), rate)`): a sample
    whose branch is dropped passes through the shortcut alone. Kept samples
    are scaled by 1 / (1 - rate) with `scale_by_keep`, so the expected output
    is the input.

    Args:
        inputs: a float tensor of rank >= 2, batch first.
        rate: probability that a sample is dropped, in [0, 1); a Python
            float or a scalar tensor.
        scale_by_keep: scale kept samples by 1 / (1 - rate).
        seed: int in [0, 2**31 - 1], `keras.random.SeedGenerator` or `None`.

    Returns:
        A tensor of the input's shape and dtype.

    Reference:
        [Larsson et al., 2016](https://arxiv.org/abs/1605.07648) (FractalNet);
        timm's `drop_path`.
    """
    inputs = ops.convert_to_tensor(inputs)
    rank = len(inputs.shape)
    _validation.check_min_rank(inputs.shape, 2, "drop_path")
    _validation.validate_strength(rate)
    _validation.validate_bool(scale_by_keep, "scale_by_keep")
    seed = _validation.validate_op_seed(seed)
    shape = (ops.shape(inputs)[0],) + (1,) * (rank - 1)
    multiplier = _keep_multiplier(shape, rate, scale_by_keep, seed)
    return inputs * ops.cast(multiplier, inputs.dtype)


def _is_symbolic(size: Any) -> bool:
    """Whether a static dimension is a symbol (JAX's shape-polymorphic
    tracing), neither an int nor unknown (`None`)."""
    return not isinstance(size, (int, type(None)))


def _subset_size(rate: float, batch_size: Any) -> Any:
    """k = max(1, floor((1 - rate) * batch_size)): the number of samples
    whose branch `drop_path_subset` runs.

    A Python int for a static batch size; for a batch size known only at
    run time (a scalar tensor), an int32 scalar tensor. A tolerance of 1e-9
    absorbs float error, so that (1 - 0.9) * 10 counts as 1.
    """
    keep = 1.0 - rate
    if isinstance(batch_size, int):
        return max(1, math.floor(keep * batch_size + 1e-9))
    kept = ops.floor(ops.cast(batch_size, "float64") * keep + 1e-9)
    return ops.maximum(ops.cast(kept, "int32"), 1)


def _run_branch(branch: Callable[[Any], Any], subset: Any, batch_size: Any) -> Any:
    """`branch(subset)`, checked to return one row per sample of `subset`
    where both counts are known when traced: other rows would be padded
    and gathered into the wrong samples (or NaN ones), or broadcast."""
    outputs = branch(subset)
    rows = subset.shape[0]
    shape = getattr(outputs, "shape", None)
    shape = None if shape is None else tuple(shape)
    known = shape and isinstance(rows, int) and isinstance(shape[0], int)
    if not shape or (known and shape[0] != rows):
        raise ValueError(
            "The `branch` of `drop_path_subset` must return one row per "
            f"sample it is given ({rows} of the batch's {batch_size} here). "
            f"Received: branch output shape={shape} for branch input "
            f"shape={tuple(subset.shape)}"
        )
    return outputs


def drop_path_subset(
    inputs: Any,
    branch: Callable[[Any], Any],
    rate: float,
    *,
    shortcut: Any = None,
    scale_by_keep: bool = True,
    seed: Any = None,
) -> Any:
    """Per-sample drop path that runs `branch` on the kept samples only.

    Picks a uniformly random subset of exactly
    k = max(1, floor((1 - rate) B)) of the B samples, without replacement
    (the first k of a random permutation), runs `branch` on those k samples
    and returns `shortcut + branch output` for them, the branch output
    scaled by B / k with `scale_by_keep`; every other sample returns its
    shortcut exactly. The expected output is `shortcut + branch(inputs)`
    (or `shortcut + k / B * branch(inputs)` without the scale), and the
    branch costs k / B of its full-batch price, forward and backward: the
    subset form of DINOv2's `drop_add_residual_stochastic_depth`.

    The realized drop rate, 1 - k / B, is `rate` only where (1 - rate) B is
    a whole number: the floor rounds it up to a multiple of 1 / B, and
    k >= 1 caps it at 1 - 1 / B, so a batch of 1 always runs the branch
    (rate 0.2: B = 1 drops 0, B = 2 drops 0.5, B = 4 drops 0.25, B = 64
    drops 0.203). `StochasticDepthBlock` tabulates it and warns where it
    strays from `rate` by more than half of `rate`.

    The shapes are static (k is a Python int) and there is no conditional,
    so it compiles under XLA and `jax.jit`. The branch output goes back to
    its positions with gathers only: padded with zeros to B rows and taken
    by the inverse permutation (a `scatter` write-back gained nothing on
    PyTorch). A batch size unknown when traced (a `tf.function` whose input
    batch is `None`) gives a run-time k, which XLA resolves when it
    compiles for a concrete batch; the JAX and PyTorch backends always know
    the batch size. A branch with BatchNormalization normalizes over the
    k samples it sees.

    A batch size that is a symbol (JAX's shape-polymorphic tracing, as in
    `model.export`, and Keras' shape inference for a subclassed model)
    cannot size a slice: there the branch runs on all B samples and the
    same k random samples keep its (scaled) output. The outputs are those
    of the subset form, without the saving, as long as the branch treats
    samples independently (BatchNormalization at inference; in training
    mode it would normalize over all B samples).

    Args:
        inputs: a float tensor of rank >= 1, batch first: the branch input.
        branch: a callable taking a batch of inputs (k samples) and
            returning a batch of k outputs of the shortcut's sample shape;
            another number of rows raises a `ValueError` (where both
            counts are known when traced).
        rate: probability that a sample skips the branch, a Python float in
            [0, 1): k is a shape, so it cannot come from a tensor.
        shortcut: the tensor each sample's branch output is added to, B
            samples; `None` (default) is `inputs` (an identity shortcut).
        scale_by_keep: scale the branch outputs by B / k.
        seed: int in [0, 2**31 - 1], `keras.random.SeedGenerator` or `None`.

    Returns:
        A tensor of the shortcut's shape and dtype.

    Reference:
        [Oquab et al., 2023](https://arxiv.org/abs/2304.07193) (DINOv2);
        [Huang et al., 2016](https://arxiv.org/abs/1603.09382).
    """
    inputs = ops.convert_to_tensor(inputs)
    _validation.check_min_rank(inputs.shape, 1, "drop_path_subset")
    if not callable(branch):
        raise _validation.invalid_value("branch", "a callable", branch)
    if isinstance(rate, keras.Variable) or ops.is_tensor(rate):
        raise _validation.invalid_value(
            "rate", "a Python float (k is a shape, fixed when traced)", rate
        )
    rate = _validation.validate_rate(rate, "rate")
    _validation.validate_bool(scale_by_keep, "scale_by_keep")
    seed = _validation.validate_op_seed(seed)
    shortcut = inputs if shortcut is None else ops.convert_to_tensor(shortcut)
    batch_size = inputs.shape[0]
    if batch_size is None:
        if keras.backend.backend() != "tensorflow":
            raise ValueError(
                "`drop_path_subset` needs the batch size to pick k samples: "
                f"received inputs of shape {tuple(inputs.shape)} on the "
                f"{keras.backend.backend()} backend, which cannot trace a "
                "run-time k. Call it with a known batch size."
            )
        batch_size = ops.shape(inputs)[0]
    k = _subset_size(rate, batch_size)
    if isinstance(k, int) and k == batch_size:
        return shortcut + _run_branch(branch, inputs, batch_size)
    order = ops.argsort(keras.random.uniform((batch_size,), seed=seed))
    position = ops.argsort(order)  # the inverse permutation
    symbolic = _is_symbolic(inputs.shape[0])
    subset = inputs if symbolic else ops.take(inputs, order[:k], axis=0)
    residual = _run_branch(branch, subset, batch_size)
    if scale_by_keep:
        scale = ops.cast(batch_size, "float32") / ops.cast(k, "float32")
        residual = residual * ops.cast(scale, residual.dtype)
    if symbolic:
        kept = ops.reshape(position < k, (-1,) + (1,) * (len(residual.shape) - 1))
        return shortcut + ops.where(kept, residual, ops.zeros_like(residual))
    rest = (batch_size - k, *ops.shape(residual)[1:])
    padded = ops.concatenate([residual, ops.zeros(rest, residual.dtype)], axis=0)
    return shortcut + ops.take(padded, position, axis=0)


def stochastic_depth(
    shortcut: Any,
    residual: Any,
    rate: Any,
    *,
    mode: str = "batch",
    scale_by_keep: bool = False,
    seed: Any = None,
) -> Any:
    """Stochastic Depth in training: `shortcut + b * residual`.

    b ~ Bernoulli(1 - rate) is drawn once for the whole batch
    (`mode="batch"`, the paper) or once per sample (`mode="row"`). With
    `scale_by_keep`, a kept residual is scaled by 1 / (1 - rate) (timm and
    torchvision); without it, the network is meant to scale the residual by
    1 - rate at inference (the paper). The `StochasticDepth` layer applies
    the matching inference rule.

    Args:
        shortcut: the identity (or projection) path, a float tensor.
        residual: the residual branch, same shape as `shortcut`.
        rate: probability that the residual is dropped, in [0, 1); a Python
            float or a scalar tensor.
        mode: `"batch"` or `"row"`.
        scale_by_keep: scale kept residuals by 1 / (1 - rate).
        seed: int in [0, 2**31 - 1], `keras.random.SeedGenerator` or `None`.

    Returns:
        A tensor of the inputs' shape and dtype.

    Reference:
        [Huang et al., 2016](https://arxiv.org/abs/1603.09382)
    """
    shortcut = ops.convert_to_tensor(shortcut)
    residual = ops.convert_to_tensor(residual)
    _validation.check_same_shape(shortcut.shape, residual.shape, "stochastic_depth")
    _validation.validate_strength(rate)
    _validation.validate_choice(mode, ("batch", "row"), "mode")
    _validation.validate_bool(scale_by_keep, "scale_by_keep")
    seed = _validation.validate_op_seed(seed)
    rank = len(residual.shape)
    # No annotation on `shape`: TensorFlow's AutoGraph cannot convert an
    # annotated name assigned in an `if` (it warns, then runs this as-is).
    if mode == "batch":
        shape = ()
    else:
        shape = (ops.shape(residual)[0],) + (1,) * (rank - 1)
    multiplier = _keep_multiplier(shape, rate, scale_by_keep, seed)
    return shortcut + residual * ops.cast(multiplier, residual.dtype)


def drop_connect(kernel: Any, rate: Any, *, seed: Any = None) -> Any:
    """DropConnect on a weight tensor: each entry zeroed with probability
    `rate`, kept entries scaled by 1 / (1 - rate).

    The same maths as `keras.random.dropout`, with `rate` allowed to be a
    tensor (a layer's schedulable rate); one mask for the whole tensor, so a
    dropped kernel is shared by the batch.

    Args:
        kernel: a float tensor, typically a layer's kernel.
        rate: probability that an entry is dropped, in [0, 1); a Python
            float or a scalar tensor.
        seed: int in [0, 2**31 - 1], `keras.random.SeedGenerator` or `None`.

    Returns:
        A tensor of the kernel's shape and dtype.

    Reference:
        [Wan et al., 2013](https://proceedings.mlr.press/v28/wan13.html)
    """
    kernel = ops.convert_to_tensor(kernel)
    _validation.validate_strength(rate)
    seed = _validation.validate_op_seed(seed)
    multiplier = _keep_multiplier(ops.shape(kernel), rate, True, seed)
    return kernel * ops.cast(multiplier, kernel.dtype)


def uniform_dropout(inputs: Any, beta: Any, *, seed: Any = None) -> Any:
    """Uout: multiplies every unit by 1 + U(-beta, beta) noise.

    The noise has mean 1 (the expected output is the input) and variance
    beta^2 / 3. At `beta == 0` the multiplier is exactly 1 and the output
    is the input bit for bit.

    Args:
        inputs: a float tensor.
        beta: the noise half-width, >= 0; a Python float or a scalar tensor.
        seed: int in [0, 2**31 - 1], `keras.random.SeedGenerator` or `None`.

    Returns:
        A tensor of the input's shape and dtype.

    Reference:
        [Li et al., 2019](https://arxiv.org/abs/1801.05134)
    """
    inputs = ops.convert_to_tensor(inputs)
    _validation.validate_strength(beta, _validation.validate_non_negative, "beta")
    seed = _validation.validate_op_seed(seed)
    noise = keras.random.uniform(
        ops.shape(inputs), minval=-1.0, maxval=1.0, dtype="float32", seed=seed
    )
    return inputs * ops.cast(1.0 + beta * noise, inputs.dtype)


def _patch_count(inputs: Any, num_prefix_tokens: int, name: str) -> Any:
    """L, the number of non-prefix tokens: a Python int when the token axis
    is known, a scalar tensor on TensorFlow when it is not, and a
    ValueError elsewhere (a shape that only exists at run time cannot size
    a slice under `jax.jit`, and PyTorch always knows it)."""
    tokens = inputs.shape[1]
    if isinstance(tokens, int):
        if not num_prefix_tokens < tokens:
            raise _validation.invalid_value(
                "num_prefix_tokens",
                f"an integer >= 0 and less than the number of tokens ({tokens})",
                num_prefix_tokens,
            )
        return tokens - num_prefix_tokens
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"`{name}` needs the number of tokens to keep k of them: received "
            f"inputs of shape {tuple(inputs.shape)} on the "
            f"{keras.backend.backend()} backend, which cannot trace a "
            "run-time k. Give the model input a known number of tokens."
        )
    return ops.shape(inputs)[1] - num_prefix_tokens


def _gather_tokens(tokens: Any, indices: Any) -> Any:
    """`tokens[b, indices[b, j]]` for every sample b: (B, L, C) and (B, k)
    to (B, k, C).

    One `take` of rows from the (B * L, C) flattened tokens. Measured for
    B, L, C, k = 32, 196, 192, 98 (the gradient of a sum of squares of the
    gathered tokens, compiled as `fit` compiles, 2-core AMD EPYC):
    `take_along_axis` 5.6-13 ms under XLA on TensorFlow against 1.2-1.5 ms
    for this, the same on JAX (about 1.2 ms), and on PyTorch 12.5 against
    10.9 ms; a one-hot matmul 10-20 ms everywhere.
    """
    batch_size, patches, channels = (ops.shape(tokens)[i] for i in range(3))
    k = ops.shape(indices)[1]
    offsets = ops.arange(0, batch_size, dtype="int32")[:, None] * patches
    rows = ops.reshape(indices + offsets, (-1,))
    flat = ops.reshape(tokens, (-1, channels))
    return ops.reshape(ops.take(flat, rows, axis=0), (-1, k, channels))


def patch_dropout(
    inputs: Any,
    rate: float,
    *,
    num_prefix_tokens: int = 1,
    ordered: bool = False,
    seed: Any = None,
) -> tuple[Any, Any]:
    """Token dropout: keeps the prefix tokens and k random tokens of the rest.

    Of the L tokens after the first `num_prefix_tokens` (a class token,
    register tokens), each sample keeps exactly
    k = max(1, floor((1 - rate) L)), a uniformly random subset drawn
    without replacement (the positions of the k largest of L uniform
    draws), independently per sample. The prefix tokens are always
    kept, first. Nothing is rescaled: a token is kept whole or removed, so
    the encoder after it runs on `num_prefix_tokens + k` tokens and costs
    about k / L of its price. With `ordered=True` the kept tokens keep their
    order of position (the default order is the random one, which a
    transformer without position-dependent layers after the position
    embedding does not see; ordered output helps debugging and
    visualization).

    At `rate == 0` (and whenever k = L) the output is the input, bit for
    bit, with indices `arange(L)` for every sample.

    k is a shape: it is a Python int whenever the token count is known, so
    shapes are static under `tf.function`, XLA and `jax.jit`. A token count
    unknown when traced (a `tf.function` whose input has `None` tokens)
    gives a run-time k on TensorFlow, which XLA resolves when it compiles
    for a concrete shape; the JAX and PyTorch backends raise a ValueError
    there. The batch size may be unknown on every backend.

    Args:
        inputs: tokens `(batch, tokens, channels)`, prefix tokens first.
        rate: fraction of the non-prefix tokens dropped, a Python float in
            [0, 1) (k is a shape, so it cannot come from a tensor).
        num_prefix_tokens: int >= 0, the leading tokens always kept (1 for
            a class token; 0 for none; 1 + registers for DINOv2-style
            register tokens).
        ordered: keep the kept tokens in their order of position.
        seed: int in [0, 2**31 - 1], `keras.random.SeedGenerator` or `None`.

    Returns:
        A pair `(tokens, indices)`: `tokens` of shape
        `(batch, num_prefix_tokens + k, channels)` and the inputs' dtype;
        `indices`, int32 of shape `(batch, k)`, the positions of the kept
        tokens among the L non-prefix tokens (`inputs[:, num_prefix_tokens
        + indices]`), to gather anything aligned with them (rotary position
        embeddings, a padding mask) with the same choice.

    Reference:
        [Liu et al., 2022](https://arxiv.org/abs/2208.07220) (PatchDropout);
        [Li et al., 2023](https://arxiv.org/abs/2212.00794) (FLIP); timm's
        `patch_dropout_forward`.
    """
    inputs = ops.convert_to_tensor(inputs)
    _validation.check_rank(
        inputs.shape, 3, "patch_dropout", "(batch, tokens, channels)"
    )
    if isinstance(rate, keras.Variable) or ops.is_tensor(rate):
        raise _validation.invalid_value(
            "rate", "a Python float (k is a shape, fixed when traced)", rate
        )
    rate = _validation.validate_rate(rate, "rate")
    num_prefix_tokens = _validation.validate_non_negative_int(
        num_prefix_tokens, "num_prefix_tokens"
    )
    _validation.validate_bool(ordered, "ordered")
    seed = _validation.validate_op_seed(seed)
    patches = _patch_count(inputs, num_prefix_tokens, "patch_dropout")
    batch_size = ops.shape(inputs)[0]
    k = _subset_size(rate, patches)
    if isinstance(k, int) and k == patches:
        every = ops.arange(0, patches, dtype="int32")[None, :]
        return inputs, ops.broadcast_to(every, (batch_size, patches))
    # The k largest of L uniform draws are a uniform k-subset; `top_k`
    # costs half a full argsort under `jax.jit` (0.6 against 1.3 ms with
    # the gather, measured as in `_gather_tokens`) and as much elsewhere.
    noise = keras.random.uniform((batch_size, patches), seed=seed)
    indices = ops.cast(ops.top_k(noise, k)[1], "int32")
    if ordered:
        indices = ops.sort(indices, axis=-1)
    kept = _gather_tokens(inputs[:, num_prefix_tokens:], indices)
    if num_prefix_tokens:
        kept = ops.concatenate([inputs[:, :num_prefix_tokens], kept], axis=1)
    return kept, indices
