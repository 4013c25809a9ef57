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

import contextlib
import functools
import math
import types
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import keras
import numpy as np
from keras import ops

from keras_drop import _jax_tracing, _validation

__all__ = [
    "cutout",
    "drop_block",
    "drop_connect",
    "drop_path",
    "drop_path_subset",
    "stochastic_depth",
    "uniform_dropout",
]

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


def _validate_strength(
    value: Any, check: Any = _validation.validate_rate, name: str = "rate"
) -> None:
    """A rate (or `beta`) given as a number is checked against its range; a
    scalar tensor (a layer's variable) was checked when it was assigned.
    Anything else is refused."""
    if isinstance(value, keras.Variable) or ops.is_tensor(value):
        if len(value.shape) == 0:
            return
        raise _validation.invalid_value(name, "a float or a scalar tensor", value)
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    check(value, name)


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
    if all(isinstance(n, int) for n in sizes):
        values, probs = _static_cover_distribution(tuple(sizes), tuple(blocks))
        return ops.convert_to_tensor(values), ops.convert_to_tensor(probs)
    covers = [_axis_cover(n, b) for n, b in zip(sizes, blocks, strict=True)]
    grid = ops.ones((), dtype="float32")
    for axis, cover in enumerate(covers):
        cover = ops.convert_to_tensor(cover, dtype="float32")
        shape = [1] * len(covers)
        shape[axis] = -1
        grid = grid * ops.reshape(cover, shape)
    grid = ops.reshape(grid, (-1,))
    probs = ops.ones_like(grid) / ops.cast(ops.shape(grid)[0], "float32")
    return grid, probs


@functools.lru_cache(maxsize=256)
def _static_cover_distribution(
    sizes: tuple[int, ...], blocks: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """`_cover_distribution` of static sizes as float32 NumPy arrays, once
    per shape (eager torch calls would otherwise redo it on every call)."""
    covers = [_axis_cover(n, b) for n, b in zip(sizes, blocks, strict=True)]
    grid = covers[0]
    for cover in covers[1:]:
        grid = np.multiply.outer(grid, cover)
    values, counts = np.unique(grid, return_counts=True)
    probs = counts / counts.sum()
    return values.astype("float32"), probs.astype("float32")


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

    `exact_rate=True` solves E(gamma) = rate (see `_solve_seed_exponent`).
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
                factor = factor * _paper_axis_factor(n, b)
            else:
                # A size known only at run time: clip the block here, as
                # `drop_block` clips it against a static size.
                n = ops.cast(n, "float32")
                b = ops.minimum(float(b), n)
                factor = factor * (n / (b * (n - b + 1.0)))
        return ops.clip(rate * factor, 0.0, 1.0)

    values, probs = _cover_distribution(sizes, blocks)
    u = _solve_seed_exponent(-ops.log1p(-rate), values, probs, ops)
    return -ops.expm1(-u)


@functools.lru_cache(maxsize=256)
def _static_block_seed_probability(
    rate: float, sizes: tuple[int, ...], blocks: tuple[int, ...], exact_rate: bool
) -> float:
    """`_block_seed_probability` of a Python float rate and static sizes,
    solved once in float64 NumPy."""
    rate = min(max(rate, 0.0), 1.0 - 1e-6)
    if not exact_rate:
        factor = 1.0
        for n, b in zip(sizes, blocks, strict=True):
            factor *= _paper_axis_factor(n, b)
        return min(rate * factor, 1.0)
    values, probs = _static_cover_distribution(sizes, blocks)
    values, probs = values.astype(np.float64), probs.astype(np.float64)
    u = _solve_seed_exponent(-np.log1p(-rate), values, probs, np)
    return float(-np.expm1(-u))


def _paper_axis_factor(size: int, block: int) -> float:
    """One axis's factor n / (b (n - b + 1)) of the paper's gamma, for a
    static size (the block already clipped to it)."""
    return size / (block * max(size - block + 1, 1))


def _solve_seed_exponent(a: Any, values: Any, probs: Any, xp: Any) -> Any:
    """u = -log(1 - gamma) solving E(gamma) = rate, a = -log(1 - rate), on
    the cover distribution `(values, probs)`; `xp` is `keras.ops` (in the
    graph) or NumPy (static shapes, once per trace).

    f(u) = log(mean exp(-u c)) + a is convex and decreasing; Newton from
    u0 = a / mean(c) (the root if every position had the mean cover) climbs
    monotonically to the root. f is evaluated without cancellation:
    log(mean exp(-u c)) is taken as log1p(mean expm1(-u c)), against the
    weights' own sum (1 up to rounding). log() of a mean near 1 would carry
    an absolute error of 1e-7 into u in float32, a relative error of
    1e-7 / rate in gamma (3e-5 at rate 0.002), and leave a tiny negative
    gamma at rate 0.
    """
    total = xp.sum(probs)
    u = a * total / xp.sum(probs * values)
    for _ in range(_NEWTON_STEPS):
        decay = xp.expm1(-u * values)
        weights = probs * (1.0 + decay)
        m0 = xp.sum(weights)
        m1 = xp.sum(weights * values)
        u = u + (xp.log1p(xp.sum(probs * decay) / total) + a) * m0 / m1
    return u


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
    cores, 2026-12-02), per-channel masks (shared-channel masks in
    brackets):

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
      only prefix sums (torch's CPU max-pool is slow). An earlier 2-core
      AMD EPYC ran TensorFlow's pooling kernels far slower (two float32
      pools of (32, 62, 62, 64) in 107 ms, 9 ms here), and there the box
      filter was faster for shared-channel masks (9.4 against 26.5 ms);
      here the max-pools are, in every run (shared-channel layer in a
      `tf.function`: 4.5 against 5.1 ms, Dropout 21 ms).

    Under XLA (TensorFlow's `fit` default) every construction compiles;
    sparse + max_pool took 28 ms there, dense + max_pool 47 ms (Keras'
    Dropout: 2 s on CPU). Masks stay float32: pooling uint8 masks was
    faster under plain `tf.function` on the earlier machine but took the
    XLA-compiled step from 0.18 s to 5 s.

    With a dynamic spatial size every backend samples densely and
    max-pools (the one construction written for dynamic sizes, always
    correct).
    """
    backend = keras.backend.backend()
    static = all(isinstance(mask_shape[a], int) for a in spatial_axes)
    if not static:
        return _Construction("dense", "max_pool")
    if _FORCED_CONSTRUCTION is not None:
        return _Construction(*_FORCED_CONSTRUCTION)
    sampling = (
        "sparse"
        if _sparse_applies(mask_shape, spatial_axes, blocks, gamma_bound)
        else "dense"
    )
    return _Construction(sampling, "box" if backend == "torch" else "max_pool")


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
        return _dilate(seeds, spatial_axes, blocks, construction, data_format)

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
        return _dilate(seeds, spatial_axes, blocks, construction, data_format)

    def dense():
        seeds = _dense_seeds(mask_shape, spatial_axes, blocks, gamma, dense_seed, left)
        return _dilate(seeds, spatial_axes, blocks, construction, data_format)

    if isinstance(gamma, float):
        return sparse() if gamma <= limit else dense()
    if limit >= 1.0:
        return sparse()
    if keras.backend.backend() == "jax" and not _jax_tracing.is_tracer(gamma):
        # Eager JAX: lax.cond would recompile both branches on every call.
        return sparse() if bool(gamma <= limit) else dense()
    return ops.cond(gamma <= limit, sparse, dense)


def _left_padding(block: int, dilation: str) -> int:
    """Zeros before the valid region of the seeds, along an axis of static
    size: block - 1 for the dilation to be "valid" (then it gives the map's
    size), and one more for the box filter, whose window sums are then
    differences of two slices of the prefix sums (see `_box_sum_along`)."""
    return block if dilation == "box" and block > 1 else block - 1


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


def _cover_from_corners(
    corners: Any,
    mask_shape: Sequence[Any],
    spatial_axes: Sequence[int],
    blocks: Sequence[int],
) -> Any:
    """How many seeds' blocks cover each unit, from the signed corners of
    the blocks (`_sparse_seeds` with `left=None`): prefix sums along each
    spatial axis turn them into the blocks' indicators summed (a
    d-dimensional difference array), one pass per axis with nothing to
    subtract. The last position along each axis (where corners one block
    past a block ending at the border fall) is cut off. Counts are small
    integers, exact in float32."""
    cover = corners
    for axis, b in zip(spatial_axes, blocks, strict=True):
        if b > 1:
            cover = ops.cumsum(cover, axis=axis)
    return ops.slice(cover, [0] * len(mask_shape), list(mask_shape))


@functools.lru_cache(maxsize=256)
def _log_factorials(cap: int) -> np.ndarray:
    """log(k!) for k = 0 .. cap, float32."""
    logs = np.log(np.arange(1, cap + 1, dtype=np.float64))
    return np.concatenate([[0.0], np.cumsum(logs)]).astype(np.float32)


def _dilate(
    seeds: Any,
    spatial_axes: Sequence[int],
    blocks: Sequence[int],
    construction: _Construction,
    data_format: str,
) -> Any:
    """Valid stride-1 dilation of padded seeds by the block, axis by axis
    (separable: O(sum of block sizes) per unit for max-pools, O(1) per unit
    and axis for the box filter). Returns the boolean dropped mask."""
    dropped = seeds
    if construction.dilation == "max_pool":
        for axis, b in zip(spatial_axes, blocks, strict=True):
            if b > 1:
                dropped = _max_pool_along(dropped, axis, b, data_format)
    else:
        for axis, b in zip(spatial_axes, blocks, strict=True):
            if b > 1:
                dropped = _box_sum_along(dropped, axis, b)
    return dropped > 0


def _box_sum_along(x: Any, axis: int, size: int) -> Any:
    """Stride-1 window sums of `size` along a static `axis` of seeds padded
    by `size` zeros before the valid region (one more than a "valid"
    dilation needs), by prefix sums: out[i] = cumsum[i + size] - cumsum[i],
    two slices and a subtraction. Seeds are small counts (a sparse draw may
    hit a position twice) and window sums stay far below 2**24, so float32
    sums are exact."""
    out_shape = list(ops.shape(x))
    out_shape[axis] -= size
    prefix = ops.cumsum(x, axis=axis)
    start = [0] * len(out_shape)
    start[axis] = size
    return ops.slice(prefix, start, out_shape) - ops.slice(
        prefix, [0] * len(out_shape), out_shape
    )


def _max_pool_along(x: Any, axis: int, size: int, data_format: str) -> Any:
    """Stride-1 "valid" max-pool of `size` along one spatial `axis`.

    A 3D channels_last mask is pooled as a 2D pool over a reshaped view
    (batch * leading axes, axis, trailing axes, channels): TensorFlow's CPU
    3D pooling kernel is slow (148 ms against 36 ms for the view on a
    (32, 18, 20, 18, 64) mask, three 3-wide pools). Other ranks use the
    pooling op of their rank directly.
    """
    rank = len(x.shape)
    spatial_rank = rank - 2
    if spatial_rank == 3 and data_format == "channels_last":
        shape = ops.shape(x)
        trailing = 1
        for dim in shape[axis + 1 : rank - 1]:
            trailing = trailing * dim
        view = ops.reshape(x, (-1, shape[axis], trailing, shape[-1]))
        pooled = ops.max_pool(view, (size, 1), 1, "valid", "channels_last")
        new_shape = list(shape)
        new_shape[axis] = shape[axis] - size + 1
        return ops.reshape(pooled, new_shape)
    pool_size = [1] * spatial_rank
    first_spatial = 1 if data_format == "channels_last" else 2
    pool_size[axis - first_spatial] = size
    return ops.max_pool(x, tuple(pool_size), 1, "valid", data_format)


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
    _validate_strength(rate)
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
    _validate_strength(rate)
    _validation.validate_bool(scale_by_keep, "scale_by_keep")
    seed = _validation.validate_op_seed(seed)
    shape = (ops.shape(inputs)[0],) + (1,) * (rank - 1)
    multiplier = _keep_multiplier(shape, rate, scale_by_keep, seed)
    return inputs * ops.cast(multiplier, inputs.dtype)


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

    The shapes are static (k is a Python int) and there is no conditional,
    so it compiles under XLA and `jax.jit`. The branch output goes back to
    its positions with gathers only: padded with zeros to B rows and taken
    by the inverse permutation (a `scatter` write-back gained nothing on
    PyTorch). A batch size unknown when traced (a `tf.function` whose input
    batch is `None`) gives a run-time k, which XLA resolves when it
    compiles for a concrete batch; the JAX and PyTorch backends always know
    the batch size. A branch with BatchNormalization normalizes over the
    k samples it sees.

    Args:
        inputs: a float tensor of rank >= 1, batch first: the branch input.
        branch: a callable taking a batch of inputs (k samples) and
            returning a batch of k outputs of the shortcut's sample shape.
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
        return shortcut + branch(inputs)
    order = ops.argsort(keras.random.uniform((batch_size,), seed=seed))
    position = ops.argsort(order)  # the inverse permutation
    residual = branch(ops.take(inputs, order[:k], axis=0))
    if scale_by_keep:
        scale = ops.cast(batch_size, "float32") / ops.cast(k, "float32")
        residual = residual * ops.cast(scale, residual.dtype)
    rest = (batch_size - k, *ops.shape(residual)[1:])
    padded = ops.concatenate([residual, ops.zeros(rest, residual.dtype)], axis=0)
    return shortcut + ops.take(padded, position, axis=0)


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
    _validate_strength(rate)
    seed = _validation.validate_op_seed(seed)
    multiplier = _keep_multiplier(ops.shape(kernel), rate, True, seed)
    return kernel * ops.cast(multiplier, kernel.dtype)


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
    _validate_strength(rate)
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
    _validate_strength(beta, _validation.validate_non_negative, "beta")
    seed = _validation.validate_op_seed(seed)
    noise = keras.random.uniform(
        ops.shape(inputs), minval=-1.0, maxval=1.0, dtype="float32", seed=seed
    )
    return inputs * ops.cast(1.0 + beta * noise, inputs.dtype)


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
