"""Growing block seeds into dropped blocks: stride-1 max-pools, or box
sums by prefix sums (of padded seeds, or of the blocks' signed corners).

The dilations know nothing of how a construction is chosen: the choice
(`construction.py`) uses them, never the other way round."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keras import ops


def _left_padding(block: int, dilation: str) -> int:
    """Zeros before the valid region of the seeds, along an axis of static
    size: block - 1 for the dilation to be "valid" (then it gives the map's
    size), and one more for the box filter, whose window sums are then
    differences of two slices of the prefix sums (see `_box_sum_along`)."""
    return block if dilation == "box" and block > 1 else block - 1


def _dilate(
    seeds: Any,
    spatial_axes: Sequence[int],
    blocks: Sequence[int],
    dilation: str,
    data_format: str,
) -> Any:
    """Valid stride-1 dilation of padded seeds by the block, axis by axis,
    with max-pools (`dilation="max_pool"`, O(sum of block sizes) per unit)
    or the box filter (`"box"`, O(1) per unit and axis). Returns the
    boolean dropped mask."""
    dropped = seeds
    if dilation == "max_pool":
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
