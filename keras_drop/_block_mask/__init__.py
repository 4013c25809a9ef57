"""DropBlock's mask, and `_drop_block`, the op that applies it.

`_drop_block` is the body of `keras_drop.ops.drop_block` and of the
DropBlock layers: it checks the arguments, builds the mask and rescales
the kept units. The mask is built in parts:

- `gamma`: the seed probability that gives the requested drop rate.
- `sampling`: block seeds drawn densely or sparsely.
- `dilation`: seeds grown into blocks.
- `construction`: the choice of sampling and dilation per backend and
  shape (with its measurements), and the mask built with it.

Private: only `keras_drop.ops` imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from keras_drop import _validation
from keras_drop._block_mask.construction import _block_drop_mask
from keras_drop._block_mask.gamma import (
    _block_seed_probability,
    _static_block_seed_probability,
)
from keras_drop._block_mask.sampling import _seeds


def _drop_block(
    inputs: Any,
    rate: Any,
    block_size: int | Sequence[int],
    *,
    rate_bound: float | None,
    shared_channels: bool,
    exact_rate: bool,
    scale_by_keep: bool,
    with_noise: bool,
    data_format: str | None,
    seed: Any,
) -> Any:
    """`drop_block`, told `rate_bound`: a Python float no smaller than any
    rate this call (or the compiled step it is traced into) will apply, or
    `None`. A layer passes its configured rate, which a scheduler only
    scales down; it sizes the sparse sampler (see `_block_drop_mask`)."""
    inputs = ops.convert_to_tensor(inputs)
    data_format = _validation.standardize_data_format(data_format)
    rank = len(inputs.shape)
    if rank not in (3, 4, 5):
        raise ValueError(
            "`drop_block` expects a rank 3, 4 or 5 input (batch, spatial "
            f"axes, channels). Received: inputs.shape={tuple(inputs.shape)}"
        )
    spatial_rank = rank - 2
    block = _validation.validate_int_tuple(block_size, spatial_rank, "block_size")
    _validation.validate_strength(rate)
    seed = _validation.validate_op_seed(seed)

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

    static = all(isinstance(n, int) for n in sizes)
    gamma_bound = None
    if static and rate_bound is not None:
        gamma_bound = _static_block_seed_probability(
            rate_bound, tuple(sizes), tuple(blocks), exact_rate
        )
    if static and isinstance(rate, (int, float)):
        # Solved once per trace, not in every step.
        gamma = _static_block_seed_probability(
            float(rate), tuple(sizes), tuple(blocks), exact_rate
        )
    else:
        gamma = _block_seed_probability(rate, sizes, blocks, exact_rate)
    mask_shape = list(shape)
    if shared_channels:
        mask_shape[channel_axis] = 1
    # An int seed is offset per draw: the mask may take seed .. seed + 2.
    seeds = _seeds(seed, 4)
    mask_seed, noise_seed = seeds[0], seeds[3]
    is_dropped = _block_drop_mask(
        mask_shape, spatial_axes, blocks, gamma, gamma_bound, data_format, mask_seed
    )

    scale = 1.0
    if scale_by_keep:
        # Mean per sample, then over the batch: no float32 sum ever grows
        # past one sample's size. divide_no_nan: a fully dropped batch has a
        # zero kept fraction and gives zeros, not NaN.
        non_batch = tuple(range(1, rank))
        dropped_units = ops.cast(is_dropped, "float32")
        kept_fraction = 1.0 - ops.mean(ops.mean(dropped_units, axis=non_batch))
        scale = ops.divide_no_nan(1.0, kept_fraction)

    # One select builds the float32 multiplier (0 or scale); at rate 0 it is
    # exactly 1.0, so the output is the input bit for bit.
    dtype = keras.backend.standardize_dtype(inputs.dtype)
    if with_noise:
        noise = keras.random.normal(shape, dtype="float32", seed=noise_seed)
        return ops.where(
            is_dropped, ops.cast(noise, dtype), inputs * ops.cast(scale, dtype)
        )
    multiplier = ops.where(is_dropped, 0.0, scale)
    return inputs * ops.cast(multiplier, dtype)
