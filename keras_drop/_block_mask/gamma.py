"""gamma: the probability that a position seeds a dropped block.

The expected dropped fraction of a DropBlock mask depends on how many valid
block positions cover each unit (the cover distribution); the exact-rate
solve inverts it for gamma, the paper's closed form ignores the overlap.
Solved in the graph for a rate given as a tensor, once in NumPy for a
Python float rate and static sizes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
from keras import ops

# Newton steps of the exact-rate solve. The solve works on a convex function
# of u = -log(1 - gamma) and starts below its root, so the iterates increase
# monotonically; 3 steps reach a relative error below 1e-9 in the worst cases
# measured (3x3 maps with 2x2 blocks, 8x8x8 volumes with 4x4x4 blocks, rate
# 0.5), far under float32 resolution.
_NEWTON_STEPS = 3


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
