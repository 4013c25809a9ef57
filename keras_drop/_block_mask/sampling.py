"""Block seeds: where dropped blocks start, drawn densely or sparsely.

Dense sampling draws one uniform per valid position. Sparse sampling draws
the number of seeds of each sample (a Poisson count under a static cap),
then their positions, and writes them with one scatter-add; both give
every valid position a seed independently with probability gamma. Also
the seeds of the random ops themselves (`_seeds`, `_branch_seeds`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

# Sparse sampling draws the seeds of each sample into a static number of
# slots (the cap): at most 1/32 of the sample's valid positions (all
# channels), at least 16; it needs at least 512 valid positions per sample
# (smaller masks are cheap to sample densely).
_SPARSE_CAP_FRACTION = 32
_SPARSE_MIN_CAP = 16
_SPARSE_MIN_POSITIONS = 512
# Probability, per sample and call, that its seeds outnumber the cap (the
# Chernoff bound in `_poisson_tail_exponent` keeps it under this).
_SPARSE_TAIL = 1e-9
# TensorFlow's segment sum slows fivefold past about 8.4M outputs (see
# `_scatter_add`).
_TF_SEGMENT_SUM_SIZE = 2**23
# Relative headroom of the cap over the largest gamma a call is planned for:
# the graph solves gamma in float32, a few ulps from the float64 plan.
_SPARSE_GAMMA_HEADROOM = 1.01


def _seeds(seed: Any, count: int) -> list[Any]:
    """Independent seeds for `count` draws made in one call.

    A `SeedGenerator` (or `None`) advances on every draw already. An int seed
    would give correlated draws if reused (a uniform and a normal from one key
    share their bits on JAX), so it is offset per draw.
    """
    if isinstance(seed, int) and not isinstance(seed, bool):
        return [seed + i for i in range(count)]
    return [seed] * count


class _DrawnSeed(keras.random.SeedGenerator):
    """A seed already drawn, for random ops inside an `ops.cond` branch.

    A `SeedGenerator` advances its state when it draws; under JAX that
    assignment must not happen inside a traced branch, so the layer's
    generator draws once outside and each branch reads the result here,
    offset per draw (as the generator itself advances: [s0, s1 + i]).
    """

    def __init__(self, value: Any):
        # No state variable: nothing here is tracked or saved.
        self._value = value

    def offset(self, i: int) -> _DrawnSeed:
        step = ops.convert_to_tensor(np.array([0, i]), dtype=self._value.dtype)
        return _DrawnSeed(self._value + step)

    def next(self, ordered: bool = True) -> Any:
        return self._value


def _branch_seeds(seed: Any, count: int) -> list[Any]:
    """`count` seeds usable inside `ops.cond` branches (see `_DrawnSeed`)."""
    if isinstance(seed, keras.random.SeedGenerator):
        drawn = _DrawnSeed(seed.next())
        return [drawn.offset(i) for i in range(count)]
    return _seeds(seed, count)


def _mask_channels(mask_shape: Sequence[Any], spatial_axes: Sequence[int]) -> Any:
    """The mask's channel size: 1 for a shared-channel mask, `None` if
    unknown while tracing."""
    (channel_axis,) = [a for a in range(1, len(mask_shape)) if a not in spatial_axes]
    return mask_shape[channel_axis]


def _valid_positions(
    mask_shape: Sequence[Any], spatial_axes: Sequence[int], blocks: Sequence[int]
) -> int:
    count = 1
    for axis, b in zip(spatial_axes, blocks, strict=True):
        count *= mask_shape[axis] - b + 1
    return count


def _sparse_positions(
    mask_shape: Sequence[Any], spatial_axes: Sequence[int], blocks: Sequence[int]
) -> int:
    """Valid seed positions of one sample: over its spatial axes and the
    mask's channels (static sizes only)."""
    channels = _mask_channels(mask_shape, spatial_axes)
    return channels * _valid_positions(mask_shape, spatial_axes, blocks)


def _sparse_applies(
    mask_shape: Sequence[Any],
    spatial_axes: Sequence[int],
    blocks: Sequence[int],
    gamma_bound: float | None,
) -> bool:
    """Whether a per-channel mask's seeds are few enough to be drawn
    sparsely: a sample's cap (`_sparse_cap`) within 1/32 of its valid
    positions, with at least `_SPARSE_MIN_POSITIONS` of them. Past that
    (small maps, high rates) dense draws cost about the same and need no
    scatter: on (64, 8, 8, 32), block 3, torch took 2.5 ms dense and 3.0
    ms sparse. A shared-channel mask is C times smaller than the input and
    cheap either way (dense and sparse within 0.5 ms on every backend for
    (32, 56, 56, 1), block 7): it is drawn densely."""
    channels = _mask_channels(mask_shape, spatial_axes)
    if not isinstance(channels, int) or channels == 1:
        return False
    positions = _sparse_positions(mask_shape, spatial_axes, blocks)
    return positions >= _SPARSE_MIN_POSITIONS and _sparse_cap(
        positions, gamma_bound
    ) <= max(_SPARSE_MIN_CAP, positions // _SPARSE_CAP_FRACTION)


def _sparse_cap(positions: int, gamma_bound: float | None) -> int:
    """Seed slots per sample: enough for a seed probability up to
    `gamma_bound` (with `_SPARSE_GAMMA_HEADROOM`) but for a tail of
    probability `_SPARSE_TAIL`; 1/32 of the positions when no bound is
    known (a rate given as a tensor)."""
    if gamma_bound is None:
        return max(_SPARSE_MIN_CAP, positions // _SPARSE_CAP_FRACTION)
    gamma = min(gamma_bound * _SPARSE_GAMMA_HEADROOM, 1.0 - 1e-6)
    return max(_SPARSE_MIN_CAP, _poisson_cap(-positions * math.log1p(-gamma)))


def _poisson_tail_exponent(k: int, mean: float) -> float:
    """log of the Chernoff bound P(X >= k) <= exp(-mean) (e mean / k)^k,
    X ~ Poisson(mean), for k > mean (0 where the bound is trivial)."""
    if k <= mean:
        return 0.0
    if mean <= 0.0:
        return -math.inf
    return k - mean + k * math.log(mean / k)


@functools.lru_cache(maxsize=256)
def _poisson_cap(mean: float) -> int:
    """The least cap that Poisson(mean) seeds exceed with probability under
    `_SPARSE_TAIL` (by the Chernoff bound): about mean + 6.4 sqrt(mean)."""
    target = math.log(_SPARSE_TAIL)
    cap = math.floor(mean)
    while _poisson_tail_exponent(cap + 1, mean) > target:
        cap += 1
    return cap


@functools.lru_cache(maxsize=256)
def _sparse_gamma_limit(positions: int, cap: int) -> float:
    """Largest gamma for which the sparse sampler's cap is safe.

    A sample's seeds number X ~ Poisson(mean), mean = -positions *
    log(1 - gamma) (see `_sparse_seeds`); the sampler keeps at most `cap`.
    The largest mean whose Chernoff bound on P(X > cap) stays under
    `_SPARSE_TAIL` = 1e-9 (fewer than one truncated sample in 10^9 calls,
    and a truncated sample loses only the seeds past the cap) is found by
    bisection and turned into gamma. Larger gammas take the dense path.
    Static: computed once per shape.
    """
    target = math.log(_SPARSE_TAIL)
    low, high = 0.0, float(cap + 1)
    for _ in range(100):
        mid = 0.5 * (low + high)
        if _poisson_tail_exponent(cap + 1, mid) <= target:
            low = mid
        else:
            high = mid
    return -math.expm1(-low / positions)


def _dense_seeds(
    mask_shape: Sequence[Any],
    spatial_axes: Sequence[int],
    blocks: Sequence[int],
    gamma: Any,
    seed: Any,
    left: Sequence[int],
) -> Any:
    """Bernoulli(gamma) seeds (float32 0 or 1) from one uniform per valid
    position, padded.

    Static sizes: the valid region is drawn and padded by `left` zeros
    before it and block - 1 after it (see `_left_padding`). Dynamic
    sizes: drawn everywhere, positions past the valid region zeroed (at
    least one start per axis, so a block larger than the map covers all
    of it), padded by block - 1 zeros on the left only.
    """
    sizes = [mask_shape[a] for a in spatial_axes]
    paddings = [[0, 0] for _ in mask_shape]
    if all(isinstance(n, int) for n in sizes):
        draw_shape = list(mask_shape)
        for axis, n, b, pad in zip(spatial_axes, sizes, blocks, left, strict=True):
            draw_shape[axis] = n - b + 1
            paddings[axis] = [pad, b - 1]
        noise = keras.random.uniform(draw_shape, dtype="float32", seed=seed)
        return ops.pad(ops.cast(noise < gamma, "float32"), paddings)
    noise = keras.random.uniform(mask_shape, dtype="float32", seed=seed)
    seeds = noise < gamma
    for axis, n, b in zip(spatial_axes, sizes, blocks, strict=True):
        last_start = ops.maximum(n - b, 0)
        valid = ops.arange(n) <= last_start
        shape = [1] * len(mask_shape)
        shape[axis] = -1
        seeds = ops.logical_and(seeds, ops.reshape(valid, shape))
        paddings[axis] = [b - 1, 0]
    return ops.pad(ops.cast(seeds, "float32"), paddings)


def _sparse_seeds(
    mask_shape: Sequence[Any],
    spatial_axes: Sequence[int],
    blocks: Sequence[int],
    gamma: Any,
    seeds: tuple[Any, Any],
    left: Sequence[int] | None,
    cap: int,
) -> Any:
    """Seeds drawn sparsely (static sizes): the padded seeds of
    `_dense_seeds` for `left` paddings, or for `left=None` the corners of
    their blocks (see `_cover_from_corners`).

    Per sample, X ~ Poisson(mean) seeds fall on its N valid positions (all
    channels), each uniformly and independently, written with a
    scatter-add (a position hit twice counts 2, still a seed: the dilation
    only asks whether a window holds any). By Poisson splitting the hits
    of the positions are then independent Poisson(mean / N) counts, so
    with mean = -N log(1 - gamma) every position is a seed independently
    with probability exactly gamma: the same law as dense draws. X is
    drawn by inverse CDF from one uniform per sample (the binomial sampler
    of `keras.random` has no XLA kernel on TensorFlow), over
    0 .. cap: the law is truncated at the cap, whose tail
    `_sparse_gamma_limit` bounds by 1e-9 per sample. The CDF is computed
    in float32 from log-weights k log(mean) - log(k!); rounding moves it
    by at most 3e-4 (measured against float64 for caps up to 10^4), which
    shifts the mean count by under 1e-4 of itself.
    """
    count_seed, position_seed = seeds
    rank = len(mask_shape)
    batch = mask_shape[0]
    positions = _sparse_positions(mask_shape, spatial_axes, blocks)
    # Per non-batch axis: the valid size (the seeds' region) and the zeros
    # before it in the padded mask (`left` on spatial axes, none on the
    # channel axis).
    valid = {a: mask_shape[a] for a in range(1, rank)}
    before = {a: 0 for a in range(1, rank)}
    padded = list(mask_shape)
    for i, (axis, b) in enumerate(zip(spatial_axes, blocks, strict=True)):
        valid[axis] = mask_shape[axis] - b + 1
        if left is None:
            # Corners at s and s + b, s <= n - b: n + 1 positions.
            padded[axis] = mask_shape[axis] + (1 if b > 1 else 0)
        else:
            # n - b + 1 valid positions, `left` zeros before them, b - 1 after.
            before[axis] = left[i]
            padded[axis] = mask_shape[axis] + left[i]
    strides = [1] * rank
    for axis in range(rank - 2, -1, -1):
        strides[axis] = strides[axis + 1] * padded[axis + 1]

    mean = -float(positions) * ops.log1p(-ops.cast(gamma, "float32"))
    k = ops.arange(cap + 1, dtype="float32")
    log_factorials = ops.convert_to_tensor(_log_factorials(cap))
    log_weights = k * ops.log(ops.maximum(mean, 1e-30)) - log_factorials
    weights = ops.exp(log_weights - ops.max(log_weights))
    cdf = ops.cumsum(weights) / ops.sum(weights)
    u = keras.random.uniform((batch, 1), dtype="float32", seed=count_seed)
    counts = ops.sum(ops.cast(cdf[:-1] < u, "float32"), axis=1, keepdims=True)
    position = keras.random.randint(
        (batch, cap), 0, positions, dtype="int32", seed=position_seed
    )
    active = ops.cast(ops.arange(cap, dtype="float32") < counts, "float32")

    # Flat index into the padded mask: the sample's row, then the position
    # split over the non-batch axes (C order), each offset by its padding.
    flat = ops.reshape(ops.arange(batch, dtype="int32") * strides[0], (-1, 1))
    remaining = position
    for axis in range(rank - 1, 0, -1):
        coordinate = remaining % valid[axis]
        remaining = remaining // valid[axis]
        flat = flat + (coordinate + before[axis]) * strides[axis]

    if left is None:
        # Each block's 2^d corners, signed: +1 at the seed, -1 one block
        # past it along one axis, +1 along two, ...
        indices, values = [flat], [active]
        for axis, b in zip(spatial_axes, blocks, strict=True):
            if b > 1:
                indices += [i + b * strides[axis] for i in indices]
                values += [-v for v in values]
        flat = ops.concatenate(indices, axis=1)
        active = ops.concatenate(values, axis=1)
    seeds = _scatter_add(
        ops.reshape(flat, (-1,)), ops.reshape(active, (-1,)), strides[0] * batch
    )
    return ops.reshape(seeds, padded)


def _scatter_add(indices: Any, values: Any, size: Any) -> Any:
    """A float32 vector of `size` zeros with `values` added at `indices`
    (duplicates summed).

    TensorFlow has two kernels that write their output once, each slow
    somewhere (CPU, milliseconds, K values into N zeros): its unsorted
    segment sum is cheap per value but 5x slower past about 8.4M zeros
    (K = 18,000: 5.1 at N = 8.3M, 28.6 at 9.4M), `tf.scatter_nd` costs
    0.15-0.2 us per value (K = 100,000, N = 7.8M: 21.6 against 7.1 for the
    segment sum). So: the segment sum below 2^23 zeros of static size,
    `scatter` (`tf.scatter_nd`) otherwise. Elsewhere `scatter_update` with
    "add" (one `index_put_` on torch, where Keras' `scatter` loops in
    Python)."""
    if keras.backend.backend() == "tensorflow":
        if isinstance(size, int) and size < _TF_SEGMENT_SUM_SIZE:
            return ops.segment_sum(values, indices, num_segments=size)
        return ops.scatter(ops.reshape(indices, (-1, 1)), values, (size,))
    return ops.scatter_update(
        ops.zeros((size,), dtype="float32"),
        ops.reshape(indices, (-1, 1)),
        values,
        reduction="add",
    )


@functools.lru_cache(maxsize=256)
def _log_factorials(cap: int) -> np.ndarray:
    """log(k!) for k = 0 .. cap, float32."""
    logs = np.log(np.arange(1, cap + 1, dtype=np.float64))
    return np.concatenate([[0.0], np.cumsum(logs)]).astype(np.float32)
