"""A DropBlock mask, built the way this backend and shape build it fastest.

`_mask_construction` picks a sampling (`sampling`) and a dilation
(`dilation`) per backend and static shape, with the measurements behind
the choice; `_block_drop_mask` builds the mask with them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import keras
from keras import ops

from keras_drop import _jax_tracing
from keras_drop._block_mask.dilation import (
    _cover_from_corners,
    _dilate,
    _left_padding,
)
from keras_drop._block_mask.sampling import (
    _branch_seeds,
    _dense_seeds,
    _sparse_applies,
    _sparse_cap,
    _sparse_gamma_limit,
    _sparse_positions,
    _sparse_seeds,
)

# Mask constructions. A DropBlock mask is built in two steps, each with two
# implementations that give identically distributed masks:
#   sampling: "dense" draws one uniform per valid position; "sparse" draws
#     the number of seeds per feature map, then their positions, and writes
#     them with a scatter (cheap when a map holds few seeds);
#   dilation: "max_pool" grows seeds into blocks with stride-1 max-pools;
#     "box" counts the seeds in each block window with prefix sums (O(1) per
#     unit whatever the block size) and drops where the count is positive.
_SAMPLINGS = ("dense", "sparse")
_DILATIONS = ("max_pool", "box")


# Tests set this (through `_force_construction`) to run every construction on
# every backend, whatever `_mask_construction` would pick.
_FORCED_CONSTRUCTION: tuple[str, str] | None = None

# The same from outside the package, for benchmarks and for measuring a new
# host: "SAMPLING,DILATION" (for example "sparse,box"), read when a DropBlock
# call is traced.
CONSTRUCTION_VARIABLE = "KERAS_DROP_MASK_CONSTRUCTION"


def _construction_from_environment() -> tuple[str, str] | None:
    value = os.environ.get(CONSTRUCTION_VARIABLE)
    if not value:
        return None
    parts = tuple(part.strip() for part in value.split(","))
    if len(parts) != 2 or parts[0] not in _SAMPLINGS or parts[1] not in _DILATIONS:
        raise ValueError(
            f"Invalid value received for the environment variable "
            f"{CONSTRUCTION_VARIABLE}. Expected 'SAMPLING,DILATION' with "
            f"SAMPLING in {_SAMPLINGS} and DILATION in {_DILATIONS}. "
            f"Received: {value!r}"
        )
    return parts


@contextlib.contextmanager
def _force_construction(sampling: str, dilation: str):
    """Use one mask construction wherever it applies (static shapes); tests only."""
    if sampling not in _SAMPLINGS or dilation not in _DILATIONS:
        raise ValueError(f"Unknown construction: {sampling!r}, {dilation!r}")
    global _FORCED_CONSTRUCTION
    previous = _FORCED_CONSTRUCTION
    _FORCED_CONSTRUCTION = (sampling, dilation)
    try:
        yield
    finally:
        _FORCED_CONSTRUCTION = previous


class _Construction(NamedTuple):
    sampling: str  # "dense" or "sparse"
    dilation: str  # "max_pool" or "box"


def _mask_construction(
    mask_shape: Sequence[Any],
    spatial_axes: Sequence[int],
    blocks: Sequence[int],
    gamma_bound: float | None = None,
) -> _Construction:
    """The fastest construction of this mask on this backend.

    Chosen once per trace from the backend, the static shape and
    `gamma_bound` (see `_block_drop_mask`). Ratios to
    `keras.layers.Dropout(0.1)` in the same process, DropBlock2D(0.1, 7) on
    (32, 56, 56, 64) float32, each construction forced, CPU (AMD EPYC, 2
    cores, 2026-12-02; the TensorFlow column on host A of the README's
    "TensorFlow on two host types", whose pooling is fast), per-channel
    masks (shared-channel masks in brackets):

    | construction | JAX (jit) | TF (tf.function) | torch (eager) |
    |---|---|---|---|
    | dense + max_pool | 0.95 (0.05) | 1.34 (0.32) | 2.38 (0.10) |
    | sparse + max_pool | 0.43 (0.05) | 0.91 (0.32) | 1.99 (0.10) |
    | dense + box | - | 4.78 (0.38) | 1.36 (0.05) |
    | sparse + box | - | 3.81 (0.33) | 0.91 (0.06) |

    - Sampling: sparse for per-channel masks where it applies (see
      `_sparse_applies`), on every backend; dense for shared-channel masks,
      C times smaller than the input, where neither is faster.
    - Dilation: max-pools on JAX (its cumsum is a slow reduce-window on
      CPU) and TensorFlow (whose cumsum is slow too); on torch the box
      filter, whose sparse form scatters the blocks' corners and needs
      only prefix sums (torch's CPU max-pool is slow). Host B (AMD EPYC,
      2 cores, AVX2 without AVX-512) runs TensorFlow's pooling kernels
      slower (two float32 pools of (32, 62, 62, 64) in 25 ms at rest, 107
      ms in an earlier run; 9 ms on host A). Per channel, sparse + max_pool
      is the fastest there too (2026-12-02 at rest: 1.28 against 1.73,
      3.16 and 4.65); for shared-channel masks under plain `tf.function`
      the box filter is (0.35 against 1.22 at rest), while on host A the
      max-pools are, in every run (shared-channel layer in a `tf.function`:
      4.5 against 5.1 ms, Dropout 21 ms), and so are they under XLA on
      host B at rest (11.5 against 12.3 ms). No construction wins
      everywhere: the max-pools stay.

    Under XLA (TensorFlow's `fit` default) every construction compiles;
    sparse + max_pool took 28 ms there on host A, dense + max_pool 47 ms
    (Keras' Dropout: 2 s on CPU); on host B at rest 53 against 105 ms,
    and shared-channel max-pools 11.5 against 12.3 ms for the box filter.
    Masks stay float32: pooling uint8 masks was faster under plain
    `tf.function` on host B but took the XLA-compiled step from 0.18 s to
    5 s.

    With a dynamic spatial size every backend samples densely and
    max-pools (the one construction written for dynamic sizes, always
    correct).
    """
    backend = keras.backend.backend()
    static = all(isinstance(mask_shape[a], int) for a in spatial_axes)
    if not static:
        return _Construction("dense", "max_pool")
    forced = _FORCED_CONSTRUCTION or _construction_from_environment()
    if forced is not None:
        return _Construction(*forced)
    sampling = (
        "sparse"
        if _sparse_applies(mask_shape, spatial_axes, blocks, gamma_bound)
        else "dense"
    )
    return _Construction(sampling, "box" if backend == "torch" else "max_pool")


def _block_drop_mask(
    mask_shape: Sequence[Any],
    spatial_axes: Sequence[int],
    blocks: Sequence[int],
    gamma: Any,
    gamma_bound: float | None,
    data_format: str,
    seed: Any,
) -> Any:
    """Boolean tensor of `mask_shape`, true where a unit falls in a dropped block.

    Block seeds are Bernoulli(gamma) over the valid start positions; a block
    grows from its seed over the `block - 1` positions after it (padded
    with zeros, so a unit is dropped if a seed lies in the block - 1
    positions before it or at it). `gamma_bound` is a static upper bound
    on gamma where one is known (a rate given as a Python float, or a
    layer's configured rate, which a scheduler only scales down);
    `_mask_construction` picks how.
    """
    construction = _mask_construction(mask_shape, spatial_axes, blocks, gamma_bound)
    left = [_left_padding(b, construction.dilation) for b in blocks]
    if construction.sampling == "dense":
        seeds = _dense_seeds(mask_shape, spatial_axes, blocks, gamma, seed, left)
        return _dilate(seeds, spatial_axes, blocks, construction.dilation, data_format)

    positions = _sparse_positions(mask_shape, spatial_axes, blocks)
    cap = _sparse_cap(positions, gamma_bound)
    limit = _sparse_gamma_limit(positions, cap)
    dense_seed, count_seed, position_seed = _branch_seeds(seed, 3)

    def sparse():
        box = construction.dilation == "box"
        seeds = _sparse_seeds(
            mask_shape,
            spatial_axes,
            blocks,
            gamma,
            (count_seed, position_seed),
            None if box else left,
            cap,
        )
        if box:
            return _cover_from_corners(seeds, mask_shape, spatial_axes, blocks) > 0
        return _dilate(seeds, spatial_axes, blocks, construction.dilation, data_format)

    def dense():
        seeds = _dense_seeds(mask_shape, spatial_axes, blocks, gamma, dense_seed, left)
        return _dilate(seeds, spatial_axes, blocks, construction.dilation, data_format)

    if isinstance(gamma, float):
        return sparse() if gamma <= limit else dense()
    if limit >= 1.0:
        return sparse()
    if keras.backend.backend() == "jax" and not _jax_tracing.is_tracer(gamma):
        # Eager JAX: lax.cond would recompile both branches on every call.
        return sparse() if bool(gamma <= limit) else dense()
    return ops.cond(gamma <= limit, sparse, dense)
