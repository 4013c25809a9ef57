"""Property-based tests: the contract of every layer, on random arguments.

Hypothesis draws shapes (1-pixel maps, odd and even blocks, blocks larger
than the map), rates, data formats, dtypes and seeds for every layer and
checks what must hold for all of them: shape and dtype kept, no NaN or Inf,
the identity at inference (and at rate 0), dropped units forming whole
blocks (DropBlock) or whole samples (DropPath, StochasticDepth), Cutout's
patches no larger than `length`, PatchDropout keeping its prefix and k
distinct tokens (its output has k tokens, not the input's shape), a
symbolic call with an unknown batch size, and bad arguments raising a
ValueError that names the argument.

The number of examples per test comes from the Hypothesis profile
(`tests/conftest.py`); `pytest --hypothesis-profile=thorough` searches
longer.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from keras import ops

import keras_drop
from keras_drop import ops as drop_ops
from keras_drop._block_mask.gamma import (
    _block_seed_probability,
    _static_block_seed_probability,
)
from tests.helpers import is_union_of_blocks, to_numpy

MAX_SEED = 2**31 - 1
POLICIES = {
    "float32": "float32",
    "float16": "mixed_float16",
    "bfloat16": "mixed_bfloat16",
}
# Relative error of a value rescaled once in the compute dtype: two
# roundings (of the scale and of the product), with room to spare. float32
# also carries the rounding of 1 / kept over up to a few thousand units.
RTOL = {"float32": 1e-4, "float16": 3e-3, "bfloat16": 3e-2}
DROPBLOCKS = {1: keras_drop.DropBlock1D, 2: keras_drop.DropBlock2D}
DROPBLOCKS[3] = keras_drop.DropBlock3D

dtypes = st.sampled_from(sorted(POLICIES))
seeds = st.integers(0, MAX_SEED)
# Every rate in [0, 1) that stays below 1 in float32, where layers apply it.
rates = st.floats(0.0, 1.0 - 2**-24)
data_formats = st.sampled_from(["channels_last", "channels_first"])


def as_float32(x):
    """A tensor as a float32 NumPy array: exact for 16-bit floats, so equal
    arrays mean equal values in the original dtype."""
    return to_numpy(ops.cast(x, "float32"))


def dtype_of(x) -> str:
    return keras.backend.standardize_dtype(x.dtype)


def uniform_inputs(shape, seed, low=0.5, high=1.5):
    rng = np.random.default_rng(seed)
    return rng.uniform(low, high, size=shape).astype("float32")


def in_dtype(x, dtype):
    """`x` rounded to `dtype`, as float32: what a layer computing in
    `dtype` receives."""
    return as_float32(ops.cast(x, dtype))


def assert_same_values(actual, expected):
    np.testing.assert_array_equal(
        np.asarray(actual).view("uint32"), np.asarray(expected).view("uint32")
    )


def check_symbolic(layer, shape, dtype):
    """A training-mode call on a symbolic input with an unknown batch size
    keeps the shape and gives the compute dtype."""
    inputs = keras.Input(batch_shape=(None, *shape[1:]))
    outputs = layer(inputs, training=True)
    assert tuple(outputs.shape) == (None, *shape[1:])
    assert dtype_of(outputs) == dtype


# ---------------------------------------------------------------------------
# DropBlock1D / 2D / 3D


@st.composite
def dropblock_cases(draw):
    rank = draw(st.integers(1, 3))
    largest = (12, 7, 4)[rank - 1]
    sizes = draw(st.lists(st.integers(1, largest), min_size=rank, max_size=rank))
    sides = st.integers(1, largest + 2)
    block = draw(
        st.one_of(sides, st.lists(sides, min_size=rank, max_size=rank).map(tuple))
    )
    batch = draw(st.integers(1, 3))
    channels = draw(st.integers(1, 3))
    data_format = draw(data_formats)
    if data_format == "channels_last":
        shape = (batch, *sizes, channels)
    else:
        shape = (batch, channels, *sizes)
    return rank, tuple(sizes), block, shape, data_format


@given(
    case=dropblock_cases(),
    rate=rates,
    dtype=dtypes,
    seed=seeds,
    shared_channels=st.booleans(),
    exact_rate=st.booleans(),
    scale_by_keep=st.booleans(),
)
@example(  # a 1-pixel map, a block larger than it, every unit dropped
    case=(2, (1, 1), 3, (2, 1, 1, 1), "channels_last"),
    rate=0.9,
    dtype="float16",
    seed=MAX_SEED,
    shared_channels=False,
    exact_rate=True,
    scale_by_keep=True,
)
def test_dropblock(case, rate, dtype, seed, shared_channels, exact_rate, scale_by_keep):
    rank, sizes, block, shape, data_format = case
    kwargs = dict(
        rate=rate,
        block_size=block,
        shared_channels=shared_channels,
        exact_rate=exact_rate,
        scale_by_keep=scale_by_keep,
        data_format=data_format,
        seed=seed,
        dtype=POLICIES[dtype],
    )
    x = uniform_inputs(shape, seed)
    expected_in = in_dtype(x, dtype)
    layer = DROPBLOCKS[rank](**kwargs)

    trained = layer(x, training=True)
    assert tuple(trained.shape) == shape
    assert dtype_of(trained) == dtype
    out = as_float32(trained)
    assert np.all(np.isfinite(out))
    assert_same_values(as_float32(layer(x, training=False)), expected_in)
    if rate == 0.0:
        assert_same_values(out, expected_in)

    # Inputs are positive, so a zero is a dropped unit.
    dropped = out == 0.0
    channel_axis = -1 if data_format == "channels_last" else 1
    maps = np.moveaxis(dropped, channel_axis, 1).reshape(-1, *sizes)
    blocks = (block,) * rank if isinstance(block, int) else block
    clipped = tuple(min(b, n) for b, n in zip(blocks, sizes, strict=True))
    assert is_union_of_blocks(maps, clipped)
    if shared_channels:
        assert np.all(dropped == np.take(dropped, [0], axis=channel_axis))

    kept = ~dropped
    if scale_by_keep:
        # One scale for the batch: units / kept units.
        fraction = dropped.mean()
        scale = 0.0 if fraction == 1.0 else 1.0 / (1.0 - fraction)
        np.testing.assert_allclose(
            out[kept], expected_in[kept] * scale, rtol=RTOL[dtype]
        )
    else:
        assert_same_values(out[kept], expected_in[kept])

    # with_noise: the same seed drops the same blocks, which get finite
    # noise; kept units are as without noise.
    noisy = as_float32(DROPBLOCKS[rank](**kwargs, with_noise=True)(x, training=True))
    assert np.all(np.isfinite(noisy))
    assert_same_values(noisy[kept], out[kept])

    check_symbolic(DROPBLOCKS[rank](**kwargs), shape, dtype)


@given(case=dropblock_cases(), rate=rates, exact_rate=st.booleans())
def test_drop_block_gamma_does_not_depend_on_knowing_the_sizes(case, rate, exact_rate):
    """The seed probability for sizes known only at run time (a graph traced
    with unknown sizes) is the one for the same sizes known while tracing,
    blocks larger than the map included."""
    rank, sizes, block, shape, data_format = case
    blocks = (block,) * rank if isinstance(block, int) else block
    clipped = [min(b, n) for b, n in zip(blocks, sizes, strict=True)]
    static = _block_seed_probability(rate, sizes, clipped, exact_rate)
    dynamic = _block_seed_probability(
        rate, [ops.convert_to_tensor(n) for n in sizes], blocks, exact_rate
    )
    # atol: a rate near float32's smallest normal number (1e-38) leaves
    # gamma with no relative precision (intermediate products underflow),
    # far below the 2**-24 steps of the uniform draws it is compared with.
    np.testing.assert_allclose(
        to_numpy(dynamic), to_numpy(static), rtol=1e-5, atol=1e-30
    )
    # And the float64 NumPy solve used for a rate given as a Python float.
    solved = _static_block_seed_probability(
        float(rate), tuple(sizes), tuple(clipped), exact_rate
    )
    np.testing.assert_allclose(solved, to_numpy(static), rtol=1e-5, atol=1e-30)


@pytest.mark.backends("tensorflow")
@given(case=dropblock_cases(), rate=rates, seed=seeds)
def test_drop_block_traced_with_unknown_sizes(case, rate, seed):
    """Only a TensorFlow graph runs with sizes unknown while tracing (XLA
    and jax.jit need them, PyTorch is eager): there the dynamic path of
    `drop_block` must drop whole blocks, clipped to the map, too."""
    import tensorflow as tf

    rank, sizes, block, shape, data_format = case
    layer = DROPBLOCKS[rank](rate, block, data_format=data_format, seed=seed)
    signature = [tf.TensorSpec((None,) * len(shape), tf.float32)]
    step = tf.function(lambda x: layer(x, training=True), input_signature=signature)
    out = to_numpy(step(uniform_inputs(shape, seed)))
    assert out.shape == shape
    assert np.all(np.isfinite(out))
    channel_axis = -1 if data_format == "channels_last" else 1
    maps = np.moveaxis(out == 0.0, channel_axis, 1).reshape(-1, *sizes)
    blocks = (block,) * rank if isinstance(block, int) else block
    clipped = tuple(min(b, n) for b, n in zip(blocks, sizes, strict=True))
    assert is_union_of_blocks(maps, clipped)


# ---------------------------------------------------------------------------
# Cutout


@st.composite
def cutout_cases(draw):
    height, width = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    channels = draw(st.integers(1, 3))
    data_format = draw(data_formats)
    image = (
        (height, width, channels)
        if data_format == "channels_last"
        else (channels, height, width)
    )
    batched = draw(st.booleans())
    shape = (draw(st.integers(1, 3)), *image) if batched else image
    length = draw(
        st.one_of(st.integers(1, 12), st.floats(0.0, 1.0, exclude_min=True, width=32))
    )
    return shape, data_format, length, height, width


def cutout_sides(length, height, width):
    """The patch sides `length` may give: a float is rounded to pixels, in
    float32 by the layer, so both float32 and float64 rounding count."""
    if isinstance(length, int):
        return {length}
    shorter = min(height, width)
    return {
        max(math.floor(length * shorter + 0.5), 1),
        max(int(np.floor(np.float32(length) * np.float32(shorter) + 0.5)), 1),
    }


@given(
    case=cutout_cases(),
    n_holes=st.integers(1, 3),
    fill_value=st.floats(-1.0, 1.0),
    dtype=dtypes,
    seed=seeds,
)
@example(  # a 1-pixel image, a patch larger than it
    case=((1, 1, 1, 2), "channels_last", 3, 1, 1),
    n_holes=1,
    fill_value=0.0,
    dtype="float32",
    seed=0,
)
def test_cutout(case, n_holes, fill_value, dtype, seed):
    shape, data_format, length, height, width = case
    kwargs = dict(
        length=length,
        n_holes=n_holes,
        fill_value=fill_value,
        data_format=data_format,
        seed=seed,
        dtype=POLICIES[dtype],
    )
    # Pixels in [2, 3], the fill in [-1, 1]: a changed pixel is a filled one.
    x = uniform_inputs(shape, seed, low=2.0, high=3.0)
    expected_in = in_dtype(x, dtype)
    layer = keras_drop.Cutout(**kwargs)

    trained = layer(x, training=True)
    assert tuple(trained.shape) == shape
    assert dtype_of(trained) == dtype
    out = as_float32(trained)
    assert np.all(np.isfinite(out))
    assert_same_values(as_float32(layer(x, training=False)), expected_in)

    filled = out != expected_in
    np.testing.assert_array_equal(out[filled], in_dtype(fill_value, dtype))
    images = filled if len(shape) == 4 else filled[None]
    channel_axis = -1 if data_format == "channels_last" else 1
    # Patches cover every channel.
    assert np.all(images == np.take(images, [0], axis=channel_axis))
    masks = np.take(images, 0, axis=channel_axis)  # (batch, height, width)
    sides = cutout_sides(length, height, width)
    side = max(sides)
    for mask in masks:
        # A patch always holds its centre, a pixel of the image.
        assert mask.any()
        assert mask.sum() <= n_holes * side**2
        assert is_union_of_blocks(mask[None], (min(sides),) * 2, clipped=True)
        if n_holes == 1:
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            assert mask.sum() == rows.size * cols.size  # one rectangle
            for extent, size in ((rows, height), (cols, width)):
                assert extent.size <= side
                if extent[0] > 0 and extent[-1] < size - 1:  # not clipped
                    assert extent.size in sides

    if len(shape) == 4:
        check_symbolic(keras_drop.Cutout(**kwargs), shape, dtype)


# ---------------------------------------------------------------------------
# DropPath, StochasticDepth, StochasticDepthBlock


sample_shapes = st.integers(2, 4).flatmap(
    lambda rank: st.tuples(
        st.integers(1, 6), *[st.integers(1, 4) for _ in range(rank - 1)]
    )
)


@given(
    shape=sample_shapes,
    rate=rates,
    scale_by_keep=st.booleans(),
    dtype=dtypes,
    seed=seeds,
)
def test_drop_path(shape, rate, scale_by_keep, dtype, seed):
    x = uniform_inputs(shape, seed)
    expected_in = in_dtype(x, dtype)
    kwargs = dict(rate=rate, scale_by_keep=scale_by_keep, seed=seed)
    layer = keras_drop.DropPath(**kwargs, dtype=POLICIES[dtype])

    trained = layer(x, training=True)
    assert tuple(trained.shape) == shape
    assert dtype_of(trained) == dtype
    out = as_float32(trained)
    assert np.all(np.isfinite(out))
    assert_same_values(as_float32(layer(x, training=False)), expected_in)

    scale = 1.0 / (1.0 - np.float32(rate)) if scale_by_keep else 1.0
    for sample, reference in zip(out, expected_in, strict=True):
        if np.all(sample == 0.0):  # dropped whole
            continue
        assert np.all(sample != 0.0)  # kept whole
        np.testing.assert_allclose(sample, reference * scale, rtol=RTOL[dtype])
    if rate == 0.0:
        assert_same_values(out, expected_in)

    check_symbolic(keras_drop.DropPath(**kwargs, dtype=POLICIES[dtype]), shape, dtype)


@given(
    shape=sample_shapes,
    rate=rates,
    mode=st.sampled_from(["batch", "row"]),
    rescale_at=st.sampled_from(["inference", "training"]),
    dtype=dtypes,
    seed=seeds,
)
def test_stochastic_depth(shape, rate, mode, rescale_at, dtype, seed):
    # The residual (in [10, 11]) dwarfs the shortcut (in [0, 1]): a kept
    # residual is plain to see.
    shortcut = uniform_inputs(shape, seed, low=0.0, high=1.0)
    residual = uniform_inputs(shape, seed + 1, low=10.0, high=11.0)
    s, r = in_dtype(shortcut, dtype), in_dtype(residual, dtype)
    kwargs = dict(rate=rate, mode=mode, rescale_at=rescale_at, seed=seed)
    layer = keras_drop.StochasticDepth(**kwargs, dtype=POLICIES[dtype])

    trained = layer([shortcut, residual], training=True)
    assert tuple(trained.shape) == shape
    assert dtype_of(trained) == dtype
    out = as_float32(trained)
    assert np.all(np.isfinite(out))

    rate32 = np.float32(rate)
    scale = 1.0 / (1.0 - rate32) if rescale_at == "training" else 1.0
    kept = []
    for sample, s_i, r_i in zip(out, s, r, strict=True):
        kept.append(bool(np.any(np.abs(sample - s_i) > 1.0)))
        if kept[-1]:
            np.testing.assert_allclose(sample, s_i + scale * r_i, rtol=RTOL[dtype])
        else:
            assert_same_values(sample, s_i)
    if mode == "batch":
        assert len(set(kept)) == 1  # one draw for the whole batch
    if rate == 0.0:
        assert all(kept)

    inferred = as_float32(layer([shortcut, residual], training=False))
    factor = 1.0 if rescale_at == "training" else 1.0 - rate32
    np.testing.assert_allclose(inferred, s + factor * r, rtol=RTOL[dtype])

    inputs = [keras.Input(batch_shape=(None, *shape[1:])) for _ in range(2)]
    outputs = keras_drop.StochasticDepth(**kwargs, dtype=POLICIES[dtype])(
        inputs, training=True
    )
    assert tuple(outputs.shape) == (None, *shape[1:])
    assert dtype_of(outputs) == dtype


@given(
    batch=st.integers(1, 4),
    features=st.integers(1, 4),
    rate=rates,
    projection=st.booleans(),
    rescale_at=st.sampled_from(["inference", "training"]),
    dtype=dtypes,
    seed=seeds,
)
def test_stochastic_depth_block(
    batch, features, rate, projection, rescale_at, dtype, seed
):
    policy = POLICIES[dtype]
    # A residual branch whose output (>= 10) dwarfs the shortcut's (<= 1).
    residual = keras.layers.Dense(
        features,
        kernel_initializer="ones",
        bias_initializer=keras.initializers.Constant(10.0),
        dtype=policy,
    )
    shortcut = (
        keras.layers.Dense(
            features,
            kernel_initializer=keras.initializers.Constant(0.1),
            bias_initializer="zeros",
            dtype=policy,
        )
        if projection
        else None
    )
    block = keras_drop.StochasticDepthBlock(
        residual,
        rate,
        shortcut=shortcut,
        rescale_at=rescale_at,
        seed=seed,
        dtype=policy,
    )
    x = uniform_inputs((batch, features), seed, low=0.0, high=1.0)
    trained = block(x, training=True)
    assert tuple(trained.shape) == (batch, features)
    assert dtype_of(trained) == dtype
    out = as_float32(trained)
    assert np.all(np.isfinite(out))

    s = as_float32(shortcut(x)) if projection else in_dtype(x, dtype)
    r = as_float32(residual(x))
    rate32 = np.float32(rate)
    if np.all(np.abs(out - s) < 1.0):  # the branch was skipped
        assert_same_values(out, s)
        assert rate > 0.0
    else:
        scale = 1.0 / (1.0 - rate32) if rescale_at == "training" else 1.0
        np.testing.assert_allclose(out, s + scale * r, rtol=RTOL[dtype])

    inferred = as_float32(block(x, training=False))
    factor = 1.0 if rescale_at == "training" else 1.0 - rate32
    np.testing.assert_allclose(inferred, s + factor * r, rtol=RTOL[dtype])


# ---------------------------------------------------------------------------
# DropConnectDense and UniformDropout


@given(
    input_dim=st.integers(1, 5),
    units=st.integers(1, 5),
    rate=rates,
    dtype=dtypes,
    seed=seeds,
)
def test_drop_connect_dense(input_dim, units, rate, dtype, seed):
    policy = POLICIES[dtype]
    layer = keras_drop.DropConnectDense(
        units, rate, use_bias=False, seed=seed, dtype=policy
    )
    # Two identity matrices: every output row is a row of the dropped
    # kernel, and both copies must see the same mask.
    x = np.concatenate([np.eye(input_dim, dtype="float32")] * 2)
    trained = layer(x, training=True)
    assert tuple(trained.shape) == (2 * input_dim, units)
    assert dtype_of(trained) == dtype
    out = as_float32(trained)
    assert np.all(np.isfinite(out))
    assert_same_values(out[:input_dim], out[input_dim:])

    kernel = in_dtype(layer.kernel, dtype)
    dropped = (out[:input_dim] == 0.0) & (kernel != 0.0)
    scale = 1.0 / (1.0 - np.float32(rate))
    np.testing.assert_allclose(
        out[:input_dim][~dropped], kernel[~dropped] * scale, rtol=RTOL[dtype]
    )

    dense = keras.layers.Dense(units, use_bias=False, dtype=policy)
    dense.build((None, input_dim))
    dense.set_weights(layer.get_weights())
    data = uniform_inputs((3, input_dim), seed)
    assert_same_values(as_float32(layer(data, training=False)), as_float32(dense(data)))

    inputs = keras.Input(batch_shape=(None, input_dim))
    symbolic = keras_drop.DropConnectDense(units, rate, dtype=policy)(
        inputs, training=True
    )
    assert tuple(symbolic.shape) == (None, units)


@given(
    shape=st.lists(st.integers(1, 4), max_size=4).map(tuple),
    beta=st.floats(0.0, 2.0),
    dtype=dtypes,
    seed=seeds,
)
def test_uniform_dropout(shape, beta, dtype, seed):
    x = uniform_inputs(shape, seed)
    expected_in = in_dtype(x, dtype)
    layer = keras_drop.UniformDropout(beta, seed=seed, dtype=POLICIES[dtype])

    trained = layer(x, training=True)
    assert tuple(trained.shape) == shape
    assert dtype_of(trained) == dtype
    out = as_float32(trained)
    assert np.all(np.isfinite(out))
    assert_same_values(as_float32(layer(x, training=False)), expected_in)
    if beta == 0.0:
        assert_same_values(out, expected_in)
    # Each unit is multiplied by a factor in [1 - beta, 1 + beta].
    tolerance = RTOL[dtype] * (1.0 + beta) * np.abs(expected_in)
    assert np.all(out >= (1.0 - beta) * expected_in - tolerance)
    assert np.all(out <= (1.0 + beta) * expected_in + tolerance)

    if shape:
        check_symbolic(
            keras_drop.UniformDropout(beta, dtype=POLICIES[dtype]), shape, dtype
        )


# ---------------------------------------------------------------------------
# PatchDropout


@given(
    batch=st.integers(1, 3),
    prefix=st.integers(0, 3),
    patches=st.integers(1, 12),
    rate=rates,
    ordered=st.booleans(),
    dtype=dtypes,
    seed=seeds,
)
def test_patch_dropout(batch, prefix, patches, rate, ordered, dtype, seed):
    layer = keras_drop.PatchDropout(
        rate,
        num_prefix_tokens=prefix,
        ordered=ordered,
        return_indices=True,
        seed=seed,
        dtype=POLICIES[dtype],
    )
    # Token t holds t + 1 in every channel: a kept token shows its position.
    x = np.broadcast_to(
        np.arange(1.0, prefix + patches + 1.0, dtype="float32")[None, :, None],
        (batch, prefix + patches, 2),
    )
    k = max(1, math.floor((1.0 - rate) * patches + 1e-9))
    trained, indices = layer(x, training=True)
    out, indices = as_float32(trained), to_numpy(indices)
    assert out.shape == (batch, prefix + k, 2)
    assert dtype_of(trained) == dtype
    np.testing.assert_array_equal(out[:, :prefix], in_dtype(x[:, :prefix], dtype))
    # Positions up to 15 are exact in every dtype.
    np.testing.assert_array_equal(out[:, prefix:, 0], prefix + indices + 1.0)
    assert all(len(set(row)) == k for row in indices.tolist())
    assert indices.min() >= 0 and indices.max() < patches
    if ordered:
        assert np.all(np.diff(indices, axis=1) > 0)
    inferred, every = layer(x, training=False)
    assert_same_values(as_float32(inferred), in_dtype(x, dtype))
    np.testing.assert_array_equal(
        to_numpy(every), np.broadcast_to(np.arange(patches), (batch, patches))
    )


# ---------------------------------------------------------------------------
# Bad arguments: a ValueError that names the argument and the value.

not_a_number = st.one_of(
    st.text(max_size=3), st.none(), st.booleans(), st.lists(st.integers(), max_size=2)
)
bad_rates = st.one_of(
    st.floats(max_value=0.0, exclude_max=True),
    st.floats(min_value=1.0 - 2**-25),  # 1 or more in float32
    st.just(float("nan")),
    not_a_number,
)
FLOAT32_MAX = float(np.finfo(np.float32).max)
bad_non_negative = st.one_of(
    st.floats(max_value=0.0, exclude_max=True),
    st.floats(min_value=FLOAT32_MAX, exclude_min=True),  # inf in float32
    st.just(float("nan")),
    not_a_number,
)
bad_positive_ints = st.one_of(
    st.integers(max_value=0), st.floats(allow_nan=False), st.booleans(), st.none()
)
bad_seeds = st.one_of(
    st.integers(max_value=-1),
    st.integers(min_value=MAX_SEED + 1),
    st.floats(),
    st.booleans(),
    st.text(max_size=3),
)
bad_bools = st.one_of(st.integers(), st.none(), st.text(max_size=3))
bad_non_negative_ints = st.one_of(
    st.integers(max_value=-1), st.floats(allow_nan=False), st.booleans(), st.none()
)


def bad_choices(*choices):
    return st.one_of(
        st.text(max_size=12).filter(lambda s: s.lower() not in choices),
        st.integers(),
    )


def bad_block_sizes(rank):
    return st.one_of(
        st.integers(max_value=0),
        st.booleans(),
        st.floats(),
        st.lists(st.integers(1, 5), min_size=rank + 1, max_size=rank + 2),
        st.lists(st.integers(max_value=0), min_size=rank, max_size=rank),
    )


bad_lengths = st.one_of(
    st.integers(max_value=0),
    st.floats(max_value=0.0),
    st.floats(min_value=1.0, exclude_min=True),
    st.just(float("nan")),
    not_a_number,
)
bad_fill_values = st.one_of(
    st.just(float("nan")),
    st.floats(min_value=FLOAT32_MAX, exclude_min=True),
    st.floats(max_value=-FLOAT32_MAX, exclude_max=True),
    not_a_number,
)
image = np.ones((1, 4, 4, 2), "float32")
tokens = np.ones((1, 4, 2), "float32")

# (what is called, its valid keyword arguments, {argument: bad values})
CALLS = {
    "DropBlock2D": (
        keras_drop.DropBlock2D,
        dict(rate=0.1, block_size=3),
        dict(
            rate=bad_rates,
            block_size=bad_block_sizes(2),
            shared_channels=bad_bools,
            exact_rate=bad_bools,
            scale_by_keep=bad_bools,
            with_noise=bad_bools,
            data_format=bad_choices("channels_last", "channels_first"),
            seed=bad_seeds,
        ),
    ),
    "DropBlock1D": (
        keras_drop.DropBlock1D,
        dict(rate=0.1, block_size=3),
        dict(block_size=bad_block_sizes(1)),
    ),
    "DropBlock3D": (
        keras_drop.DropBlock3D,
        dict(rate=0.1, block_size=3),
        dict(block_size=bad_block_sizes(3)),
    ),
    "Cutout": (
        keras_drop.Cutout,
        dict(length=2),
        dict(
            length=bad_lengths,
            n_holes=bad_positive_ints,
            fill_value=bad_fill_values,
            data_format=bad_choices("channels_last", "channels_first"),
            seed=bad_seeds,
        ),
    ),
    "DropPath": (
        keras_drop.DropPath,
        dict(rate=0.1),
        dict(rate=bad_rates, scale_by_keep=bad_bools, seed=bad_seeds),
    ),
    "StochasticDepth": (
        keras_drop.StochasticDepth,
        dict(rate=0.1),
        dict(
            rate=bad_rates,
            mode=bad_choices("batch", "row"),
            rescale_at=bad_choices("inference", "training"),
            seed=bad_seeds,
        ),
    ),
    "StochasticDepthBlock": (
        keras_drop.StochasticDepthBlock,
        dict(residual=keras.layers.Identity(), rate=0.1),
        dict(
            residual=not_a_number,
            shortcut=st.one_of(st.text(max_size=3), st.integers()),
            rate=bad_rates,
            rescale_at=bad_choices("inference", "training"),
            seed=bad_seeds,
        ),
    ),
    "LayerDrop": (
        keras_drop.LayerDrop,
        dict(layer=keras.layers.Identity(), rate=0.1),
        dict(layer=not_a_number, rate=bad_rates, seed=bad_seeds),
    ),
    "JoinDropPath": (
        keras_drop.JoinDropPath,
        dict(rate=0.1),
        dict(rate=bad_rates, per_sample=bad_bools, seed=bad_seeds),
    ),
    "DropConnectDense": (
        keras_drop.DropConnectDense,
        dict(units=2, rate=0.1),
        dict(rate=bad_rates, seed=bad_seeds),
    ),
    "UniformDropout": (
        keras_drop.UniformDropout,
        dict(beta=0.1),
        dict(beta=bad_non_negative, seed=bad_seeds),
    ),
    "PatchDropout": (
        keras_drop.PatchDropout,
        dict(rate=0.1),
        dict(
            rate=bad_rates,
            num_prefix_tokens=bad_non_negative_ints,
            ordered=bad_bools,
            return_indices=bad_bools,
            seed=bad_seeds,
        ),
    ),
    "DropRateScheduler": (
        keras_drop.DropRateScheduler,
        dict(),
        dict(
            schedule=st.one_of(st.integers(), st.text(max_size=3)),
            update_freq=bad_choices("step", "epoch"),
            verbose=st.one_of(st.floats(), st.text(max_size=3), st.booleans()),
        ),
    ),
    "stochastic_depth_rates": (
        keras_drop.stochastic_depth_rates,
        dict(num_blocks=4, final_rate=0.2),
        dict(num_blocks=bad_positive_ints, final_rate=bad_rates),
    ),
    "ops.drop_block": (
        lambda **kwargs: drop_ops.drop_block(image, **kwargs),
        dict(rate=0.1, block_size=3),
        dict(
            rate=bad_rates,
            block_size=bad_block_sizes(2),
            data_format=bad_choices("channels_last", "channels_first"),
            seed=bad_seeds,
        ),
    ),
    "ops.drop_path": (
        lambda **kwargs: drop_ops.drop_path(image, **kwargs),
        dict(rate=0.1),
        dict(rate=bad_rates, scale_by_keep=bad_bools, seed=bad_seeds),
    ),
    "ops.drop_connect": (
        lambda **kwargs: drop_ops.drop_connect(image, **kwargs),
        dict(rate=0.1),
        dict(rate=bad_rates, seed=bad_seeds),
    ),
    "ops.stochastic_depth": (
        lambda **kwargs: drop_ops.stochastic_depth(image, image, **kwargs),
        dict(rate=0.1),
        dict(
            rate=bad_rates,
            mode=bad_choices("batch", "row"),
            scale_by_keep=bad_bools,
            seed=bad_seeds,
        ),
    ),
    "ops.uniform_dropout": (
        lambda **kwargs: drop_ops.uniform_dropout(image, **kwargs),
        dict(beta=0.1),
        dict(beta=bad_non_negative, seed=bad_seeds),
    ),
    "ops.patch_dropout": (
        lambda **kwargs: drop_ops.patch_dropout(tokens, **kwargs),
        dict(rate=0.1),
        dict(
            rate=bad_rates,
            # At least one token must be left after the prefix.
            num_prefix_tokens=st.one_of(
                bad_non_negative_ints, st.integers(min_value=4)
            ),
            ordered=bad_bools,
            seed=bad_seeds,
        ),
    ),
    "ops.cutout": (
        lambda **kwargs: drop_ops.cutout(image, **kwargs),
        dict(length=2),
        dict(
            length=bad_lengths,
            n_holes=bad_positive_ints,
            fill_value=bad_fill_values,
            data_format=bad_choices("channels_last", "channels_first"),
            seed=bad_seeds,
        ),
    ),
}


@given(data=st.data())
def test_bad_arguments_raise_value_errors_naming_them(data):
    """Each example gives every argument of every callable one bad value
    (one test, not one per argument: Keras' session reset between tests
    costs more than all the calls)."""
    for name, (function, valid, bad) in CALLS.items():
        for argument, values in bad.items():
            value = data.draw(values, label=f"{name}({argument}=...)")
            with pytest.raises(ValueError) as info:
                function(**{**valid, argument: value})
            message = str(info.value)
            assert f"`{argument}`" in message, (name, argument, message)
            assert f"{argument}=" in message, (name, argument, message)
