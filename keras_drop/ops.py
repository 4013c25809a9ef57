"""Functional forms of the keras_drop regularizers.

Each function is the maths of one method, written on `keras.ops` and
`keras.random` only, so it runs on every Keras backend, eagerly and inside
`tf.function` / `jax.jit`. There is no `training` flag: calling a function
applies the regularizer. `seed` follows `keras.random.dropout`: an int (the
same mask on every call), a `keras.random.SeedGenerator` (a new mask on every
call) or `None` (Keras' global generator; not usable under `jax.jit`).

`rate` may be a Python float or a scalar tensor, so a layer can keep its rate
in a variable that a compiled step reads on every call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_drop import _validation

__all__ = ["drop_block"]

# Newton steps of the exact-rate solve. The solve works on a convex function
# of u = -log(1 - gamma) and starts below its root, so the iterates increase
# monotonically; 3 steps reach a relative error below 1e-9 in the worst cases
# measured (3x3 maps with 2x2 blocks, 8x8x8 volumes with 4x4x4 blocks, rate
# 0.5), far under float32 resolution.
_NEWTON_STEPS = 3


def _seeds(seed: Any, count: int) -> list[Any]:
    """Independent seeds for `count` draws made in one call.

    A `SeedGenerator` (or `None`) advances on every draw already. An int seed
    would give correlated draws if reused (a uniform and a normal from one key
    share their bits on JAX), so it is offset per draw.
    """
    if isinstance(seed, int) and not isinstance(seed, bool):
        return [seed + i for i in range(count)]
    return [seed] * count


def _axis_cover(size: Any, block: int) -> Any:
    """How many valid block positions cover each index of one spatial axis.

    Blocks start at 0 .. size - block (the valid region, so a block lies
    inside the map); index i is covered by starts max(0, i-block+1) ..
    min(i, size-block). A block at least as large as the axis has one
    position covering everything. Returns a NumPy vector for a static size,
    a float32 tensor for a dynamic one.
    """
    if isinstance(size, int):
        index = np.arange(size, dtype=np.float64)
        last_start = max(size - block, 0)
        return (
            np.minimum(index, last_start) - np.maximum(0.0, index - (block - 1)) + 1.0
        )
    index = ops.arange(size, dtype="float32")
    last_start = ops.maximum(ops.cast(size, "float32") - block, 0.0)
    return ops.minimum(index, last_start) - ops.maximum(0.0, index - (block - 1)) + 1.0


def _cover_distribution(sizes: Sequence[Any], blocks: Sequence[int]):
    """Distribution of the cover count over all positions of a feature map.

    The cover of a position is the product of its per-axis covers. Returns
    `(values, probabilities)`: for static sizes the distinct values and their
    frequencies (a few dozen numbers, computed once while tracing); for
    dynamic sizes the full grid with uniform weights.
    """
    covers = [_axis_cover(n, b) for n, b in zip(sizes, blocks, strict=True)]
    if all(isinstance(n, int) for n in sizes):
        grid = covers[0]
        for cover in covers[1:]:
            grid = np.multiply.outer(grid, cover)
        values, counts = np.unique(grid, return_counts=True)
        probs = counts / counts.sum()
        return (
            ops.convert_to_tensor(values.astype("float32")),
            ops.convert_to_tensor(probs.astype("float32")),
        )
    grid = ops.ones((), dtype="float32")
    for axis, cover in enumerate(covers):
        cover = ops.convert_to_tensor(cover, dtype="float32")
        shape = [1] * len(covers)
        shape[axis] = -1
        grid = grid * ops.reshape(cover, shape)
    grid = ops.reshape(grid, (-1,))
    probs = ops.ones_like(grid) / ops.cast(ops.shape(grid)[0], "float32")
    return grid, probs


def _block_seed_probability(
    rate: Any,
    sizes: Sequence[Any],
    blocks: Sequence[int],
    exact_rate: bool,
) -> Any:
    """gamma, the probability that a valid position seeds a dropped block.

    A position covered by `c` valid block positions is dropped with
    probability 1 - (1 - gamma)^c, so the expected dropped fraction is
    E(gamma) = 1 - mean_positions (1 - gamma)^c.

    `exact_rate=True` solves E(gamma) = rate. With u = -log(1 - gamma),
    f(u) = log(mean exp(-u c)) + a, a = -log(1 - rate), is convex and
    decreasing; Newton from u0 = a / mean(c) (the root if every position had
    the mean cover) climbs monotonically to the root.

    `exact_rate=False` is the closed form of the DropBlock paper (eq. 1,
    generalised per axis): gamma = rate * prod_a n_a / (b_a (n_a - b_a + 1)).
    It ignores that blocks overlap and under-drops by 5-19% at rates
    0.1-0.3 (more for large blocks on small maps).
    """
    rate = ops.clip(ops.cast(rate, "float32"), 0.0, 1.0 - 1e-6)
    if not exact_rate:
        factor = 1.0
        for n, b in zip(sizes, blocks, strict=True):
            if isinstance(n, int):
                factor = factor * (n / (b * max(n - b + 1, 1)))
            else:
                n = ops.cast(n, "float32")
                factor = factor * (n / (b * ops.maximum(n - b + 1.0, 1.0)))
        return ops.clip(rate * factor, 0.0, 1.0)

    values, probs = _cover_distribution(sizes, blocks)
    a = -ops.log1p(-rate)
    u = a / ops.sum(probs * values)
    for _ in range(_NEWTON_STEPS):
        weights = probs * ops.exp(-u * values)
        m0 = ops.sum(weights)
        m1 = ops.sum(weights * values)
        u = u + (ops.log(m0) + a) * m0 / m1
    return -ops.expm1(-u)


def _block_drop_mask(
    mask_shape: Sequence[Any],
    spatial_axes: Sequence[int],
    blocks: Sequence[int],
    gamma: Any,
    data_format: str,
    seed: Any,
) -> Any:
    """float32 tensor of `mask_shape`, 1 where a unit falls in a dropped block.

    Block seeds are Bernoulli(gamma) over the valid start positions; a block
    grows from its seed by a stride-1 max-pool over the seeds padded by
    block - 1 zeros on the left ("a unit is dropped if a seed lies in the
    block - 1 positions before it"), done one axis at a time (separable
    pools cost O(sum of block sizes) per unit, not their product).
    """
    sizes = [mask_shape[a] for a in spatial_axes]
    paddings = [[0, 0] for _ in mask_shape]
    if all(isinstance(n, int) for n in sizes):
        # Draw only the valid region, then pad it back: fewer random numbers.
        draw_shape = list(mask_shape)
        for axis, n, b in zip(spatial_axes, sizes, blocks, strict=True):
            draw_shape[axis] = n - b + 1
            paddings[axis] = [b - 1, b - 1]
        noise = keras.random.uniform(draw_shape, dtype="float32", seed=seed)
        seeds = ops.cast(noise < gamma, "float32")
    else:
        # Dynamic sizes: draw everywhere and zero the positions past the
        # valid region (at least one start per axis, so a block larger than
        # the map covers all of it).
        noise = keras.random.uniform(mask_shape, dtype="float32", seed=seed)
        seeds = noise < gamma
        for axis, n, b in zip(spatial_axes, sizes, blocks, strict=True):
            last_start = ops.maximum(n - b, 0)
            valid = ops.arange(n) <= last_start
            shape = [1] * len(mask_shape)
            shape[axis] = -1
            seeds = ops.logical_and(seeds, ops.reshape(valid, shape))
            paddings[axis] = [b - 1, 0]
        seeds = ops.cast(seeds, "float32")

    dropped = ops.pad(seeds, paddings)
    for i, b in enumerate(blocks):
        if b == 1:
            continue
        pool_size = [1] * len(blocks)
        pool_size[i] = b
        dropped = ops.max_pool(
            dropped,
            pool_size=tuple(pool_size),
            strides=1,
            padding="valid",
            data_format=data_format,
        )
    return dropped


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
        seed: int, `keras.random.SeedGenerator` or `None`.

    Returns:
        A tensor of the input's shape and dtype.

    Reference:
        [Ghiasi et al., 2018](https://arxiv.org/abs/1810.12890)
    """
    data_format = _validation.standardize_data_format(data_format)
    rank = len(inputs.shape)
    if rank not in (3, 4, 5):
        raise ValueError(
            "`drop_block` expects a rank 3, 4 or 5 input (batch, spatial "
            f"axes, channels). Received: inputs.shape={tuple(inputs.shape)}"
        )
    spatial_rank = rank - 2
    block = _validation.validate_int_tuple(block_size, spatial_rank, "block_size")
    if isinstance(rate, (int, float)):
        _validation.validate_rate(rate)

    shape = list(ops.shape(inputs))
    if data_format == "channels_last":
        spatial_axes, channel_axis = list(range(1, rank - 1)), rank - 1
    else:
        spatial_axes, channel_axis = list(range(2, rank)), 1
    sizes = [shape[a] for a in spatial_axes]
    blocks = [
        min(b, n) if isinstance(n, int) else b
        for b, n in zip(block, sizes, strict=True)
    ]

    gamma = _block_seed_probability(rate, sizes, blocks, exact_rate)
    mask_shape = list(shape)
    if shared_channels:
        mask_shape[channel_axis] = 1
    mask_seed, noise_seed = _seeds(seed, 2)
    keep = 1.0 - _block_drop_mask(
        mask_shape, spatial_axes, blocks, gamma, data_format, mask_seed
    )

    if scale_by_keep:
        # Mean per sample, then over the batch: no float32 sum ever grows
        # past one sample's size. divide_no_nan: a fully dropped batch has a
        # zero kept fraction and gives zeros, not NaN.
        non_batch = tuple(range(1, rank))
        kept_fraction = ops.mean(ops.mean(keep, axis=non_batch))
        keep = keep * ops.divide_no_nan(1.0, kept_fraction)

    dtype = keras.backend.standardize_dtype(inputs.dtype)
    if with_noise:
        noise = keras.random.normal(shape, dtype="float32", seed=noise_seed)
        return ops.where(
            keep > 0, inputs * ops.cast(keep, dtype), ops.cast(noise, dtype)
        )
    return inputs * ops.cast(keep, dtype)
