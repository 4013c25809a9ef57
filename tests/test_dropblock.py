"""DropBlock1D/2D/3D and keras_drop.ops.drop_block: behaviour, measured."""

import math
import re

import keras
import numpy as np
import pytest
from keras import ops

import keras_drop
from keras_drop import DropBlock1D, DropBlock2D, DropBlock3D
from keras_drop import ops as drop_ops
from keras_drop._block_mask.construction import (
    _DILATIONS,
    _SAMPLINGS,
    _force_construction,
    _mask_construction,
)
from keras_drop._block_mask.gamma import (
    _block_seed_probability,
    _static_block_seed_probability,
)
from keras_drop._block_mask.sampling import (
    _SPARSE_TAIL,
    _sparse_cap,
    _sparse_gamma_limit,
    _sparse_seeds,
)
from tests.helpers import (
    JIT_COMPILE,
    assert_seed_behaviour,
    bits,
    is_union_of_blocks,
    run_layer_test,
    to_numpy,
    zero_fraction,
)

LAYERS = {1: DropBlock1D, 2: DropBlock2D, 3: DropBlock3D}

# Every mask construction `drop_block` can choose, whatever it picks on this
# backend: behaviour tests taking the `construction` fixture run on each.
CONSTRUCTIONS = [
    (sampling, dilation) for sampling in _SAMPLINGS for dilation in _DILATIONS
]


# The dilations give identical masks from identical seeds (tested exactly
# below), so the costly statistical tests run each sampling and each
# dilation once.
SAMPLING_CONSTRUCTIONS = [("dense", "max_pool"), ("sparse", "box")]


@pytest.fixture(params=CONSTRUCTIONS, ids="-".join)
def construction(request):
    with _force_construction(*request.param):
        yield request.param


@pytest.fixture(params=SAMPLING_CONSTRUCTIONS, ids="-".join)
def sampling_construction(request):
    with _force_construction(*request.param):
        yield request.param


# --------------------------------------------------------------------------
# NumPy references, written independently of the implementation.


def reference_cover(sizes, blocks):
    """Number of valid (fully inside) blocks covering each position."""
    per_axis = []
    for n, b in zip(sizes, blocks, strict=True):
        b = min(b, n)
        starts = range(n - b + 1)
        per_axis.append(
            np.array([sum(s <= i < s + b for s in starts) for i in range(n)], float)
        )
    grid = per_axis[0]
    for cover in per_axis[1:]:
        grid = np.multiply.outer(grid, cover)
    return grid


def expected_fraction(gamma, sizes, blocks):
    return 1.0 - np.mean((1.0 - gamma) ** reference_cover(sizes, blocks))


def paper_gamma(rate, sizes, blocks):
    factor = np.prod(
        [
            n / (min(b, n) * (n - min(b, n) + 1))
            for n, b in zip(sizes, blocks, strict=True)
        ]
    )
    return rate * factor


def realized_fraction(spatial, block, rate, *, units, channels=8, seed=0, **kwargs):
    """Dropped fraction of ones over at least `units` units, in chunks."""
    generator = keras.random.SeedGenerator(seed)
    map_units = int(np.prod(spatial))
    batch = max(
        1, min(4_000_000 // (map_units * channels), units // (map_units * channels))
    )
    dropped = total = 0
    while total < units:
        x = ops.ones((batch, *spatial, channels))
        y = keras_drop.ops.drop_block(x, rate, block, seed=generator, **kwargs)
        y = to_numpy(y)
        dropped += int(np.sum(y == 0))
        total += y.size
    return dropped / total


# --------------------------------------------------------------------------
# Smoke coverage through the shared helper.


@pytest.mark.parametrize(
    "cls, kwargs, shape, symbolic",
    [
        (DropBlock1D, {"rate": 0.2, "block_size": 3, "seed": 1}, (4, 16, 3), (None, 3)),
        (
            DropBlock2D,
            {"rate": 0.1, "block_size": (3, 5), "exact_rate": False, "seed": 2},
            (4, 12, 10, 3),
            (None, None, 3),
        ),
        (
            DropBlock2D,
            {
                "rate": 0.3,
                "block_size": 3,
                "shared_channels": True,
                "data_format": "channels_first",
                "scale_by_keep": False,
                "with_noise": True,
                "seed": 3,
                "name": "db",
            },
            (4, 3, 12, 10),
            (3, None, None),
        ),
        (
            DropBlock3D,
            {"rate": 0.25, "block_size": 2, "seed": 4},
            (2, 6, 6, 6, 2),
            (None, None, None, 2),
        ),
    ],
)
def test_layer_smoke(cls, kwargs, shape, symbolic):
    run_layer_test(cls, kwargs, shape, symbolic_shape=symbolic)


# --------------------------------------------------------------------------
# Validation.


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"rate": -0.1}, "rate"),
        ({"rate": 1.0}, "rate"),
        ({"rate": 1.5}, "rate"),
        ({"rate": "0.1"}, "rate"),
        ({"rate": True}, "rate"),
        ({"block_size": 0}, "block_size"),
        ({"block_size": (3,)}, "block_size"),
        ({"block_size": (3, 0)}, "block_size"),
        ({"block_size": 2.5}, "block_size"),
        ({"block_size": "3"}, "block_size"),
        ({"data_format": "NHWC"}, "data_format"),
        ({"shared_channels": 1}, "shared_channels"),
        ({"exact_rate": None}, "exact_rate"),
        ({"scale_by_keep": "yes"}, "scale_by_keep"),
        ({"with_noise": 0}, "with_noise"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_invalid_arguments_name_the_argument_and_value(kwargs, argument):
    arguments = {"rate": 0.1, "block_size": 3, **kwargs}
    with pytest.raises(ValueError) as error:
        DropBlock2D(**arguments)
    message = str(error.value)
    assert f"`{argument}`" in message
    assert f"{argument}={arguments[argument]!r}" in message


@pytest.mark.parametrize(
    "cls, shape, rank",
    [
        (DropBlock1D, (2, 8), 3),
        (DropBlock2D, (2, 8, 8), 4),
        (DropBlock3D, (2, 4, 4, 4), 5),
        (DropBlock2D, (2, 4, 4, 4, 1), 4),
    ],
)
def test_wrong_rank_names_expected_rank_and_shape(cls, shape, rank):
    with pytest.raises(
        ValueError, match=rf"rank {rank}.*{re.escape(f'inputs.shape={tuple(shape)}')}"
    ):
        cls(0.1, 2)(ops.ones(shape), training=True)
    with pytest.raises(ValueError, match=f"rank {rank}"):
        cls(0.1, 2)(keras.Input(shape[1:]))


def test_functional_form_validates():
    with pytest.raises(ValueError, match="`rate`"):
        keras_drop.ops.drop_block(ops.ones((1, 4, 4, 1)), 1.2, 2)
    with pytest.raises(ValueError, match="`block_size`"):
        keras_drop.ops.drop_block(ops.ones((1, 4, 4, 1)), 0.1, (2, 2, 2))
    with pytest.raises(ValueError, match="rank 3, 4 or 5"):
        keras_drop.ops.drop_block(ops.ones((4, 4)), 0.1, 2)


# --------------------------------------------------------------------------
# The exact-rate maths (deterministic) and the realized rate (statistical).

SPEC_CASES = [
    # (spatial sizes, block sizes): square and not, up to half the map.
    ((56, 56), (7, 7)),
    ((16, 16), (8, 8)),
    ((12, 24), (6, 12)),
    ((9, 15), (4, 7)),
    ((7, 7), (3, 3)),
    ((4, 4), (2, 2)),
    ((64,), (32,)),
    ((100,), (5,)),
    ((8, 8, 8), (4, 4, 4)),
    ((6, 10, 8), (3, 5, 2)),
]


@pytest.mark.parametrize("sizes, blocks", SPEC_CASES)
@pytest.mark.parametrize("rate", [0.02, 0.1, 0.3, 0.5])
def test_exact_gamma_gives_the_rate_in_expectation(sizes, blocks, rate):
    gamma = float(to_numpy(_block_seed_probability(rate, sizes, blocks, True)))
    assert expected_fraction(gamma, sizes, blocks) == pytest.approx(rate, rel=1e-4)
    # The same solve in NumPy, once per trace for a rate given as a float.
    static = _static_block_seed_probability(rate, sizes, blocks, True)
    assert expected_fraction(static, sizes, blocks) == pytest.approx(rate, rel=1e-6)


@pytest.mark.parametrize("sizes, blocks", SPEC_CASES[:3])
@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_paper_gamma_is_the_closed_form_and_under_drops(sizes, blocks, rate):
    gamma = float(to_numpy(_block_seed_probability(rate, sizes, blocks, False)))
    assert gamma == pytest.approx(paper_gamma(rate, sizes, blocks), rel=1e-5)
    static = _static_block_seed_probability(rate, sizes, blocks, False)
    assert static == pytest.approx(paper_gamma(rate, sizes, blocks), rel=1e-12)
    assert expected_fraction(gamma, sizes, blocks) < 0.96 * rate


@pytest.mark.parametrize(
    "spatial, block, rate",
    [
        ((16, 16), 8, 0.5),
        ((16, 16), 8, 0.1),
        ((12, 24), (6, 12), 0.1),
        ((56, 56), 7, 0.1),
        ((12, 12), 3, 0.02),
        ((64,), 32, 0.5),
        ((64,), 8, 0.05),
        ((8, 8, 8), 4, 0.1),
        ((8, 8, 8), 4, 0.5),
        # Many seeds per map: sparse sampling falls back to dense draws.
        ((64, 64), 2, 0.5),
    ],
)
def test_realized_rate_matches_rate(spatial, block, rate, sampling_construction):
    blocks = (block,) * len(spatial) if isinstance(block, int) else block
    # At least ~12k block seeds: the relative standard error is under 1%.
    units = int(12_000 * np.prod(blocks) / rate)
    realized = realized_fraction(spatial, block, rate, units=units)
    assert realized == pytest.approx(rate, rel=0.03)


@pytest.mark.parametrize(
    "spatial, block, rate", [((16, 16), 8, 0.3), ((56, 56), 7, 0.1)]
)
def test_realized_rate_paper_mode_matches_paper_expectation(spatial, block, rate):
    blocks = (block,) * len(spatial)
    expected = expected_fraction(paper_gamma(rate, spatial, blocks), spatial, blocks)
    units = int(12_000 * np.prod(blocks) / rate)
    realized = realized_fraction(spatial, block, rate, units=units, exact_rate=False)
    assert realized == pytest.approx(expected, rel=0.03)
    assert realized < 0.97 * rate


def test_block_larger_than_map_is_clipped(construction):
    # A 9x9 block on a 4x6 map is a 4x6 block: whole maps dropped w.p. rate.
    realized = realized_fraction((4, 6), 9, 0.3, units=1_000_000)
    assert realized == pytest.approx(0.3, rel=0.03)
    y = to_numpy(keras_drop.ops.drop_block(ops.ones((64, 4, 6, 8)), 0.3, 9, seed=1))
    per_map = (y == 0).mean(axis=(1, 2))
    assert set(np.unique(per_map)) <= {0.0, 1.0}


# --------------------------------------------------------------------------
# The mask constructions: same distribution, a safe cap on sparse seeds.


def dropped_runs(maps):
    """Lengths of the runs of dropped units along the last axis, and the
    index (along the first axis) of the map each run lies in."""
    padding = [(0, 0)] * (maps.ndim - 1) + [(1, 1)]
    edges = np.diff(np.pad(maps, padding).astype(np.int8), axis=-1)
    starts, ends = np.nonzero(edges == 1), np.nonzero(edges == -1)
    return ends[-1] - starts[-1], starts[0]


def mask_statistics(spatial, block, rate, maps):
    """Dropped fraction and run-length histograms per map (maps x lengths,
    along each spatial axis) of `maps` per-channel masks drawn with a fixed
    seed."""
    x = ops.ones((maps // 8, *spatial, 8))
    y = to_numpy(keras_drop.ops.drop_block(x, rate, block, seed=3)) == 0
    y = np.moveaxis(y, -1, 1).reshape(-1, *spatial)
    longest = 4 * max(spatial)
    histograms = []
    for axis in range(1, y.ndim):
        runs, owner = dropped_runs(np.moveaxis(y, axis, -1))
        counts = np.zeros((maps, longest + 1))
        np.add.at(counts, (owner, np.minimum(runs, longest)), 1)
        histograms.append(counts)
    return y.mean(), histograms


def assert_same_distribution(counts_a, counts_b, z=5.0):
    """Two run-length histograms (maps x lengths) agree bin by bin.

    The runs of one map are not independent (a block of height h makes h
    runs of the same length along the width), so each bin's proportion is
    compared with a standard error from the spread between maps (the
    ratio-estimator variance, maps being independent) rather than a
    binomial one, which understates it by a factor of 2-3 here. Bins with
    few runs are pooled so the normal approximation holds.
    """

    def proportion(counts, rows):
        total = counts.sum(axis=1)
        hits = counts[:, rows].sum(axis=1)
        p = hits.sum() / total.sum()
        variance = ((hits - p * total) ** 2).sum() / total.sum() ** 2
        return p, variance

    # The pooled bins are the lengths start..length; their run count is
    # kept as a running sum (summing the growing slice again each time cost
    # minutes for long maps' many empty bins).
    column_runs = counts_a.sum(axis=0) + counts_b.sum(axis=0)
    start, runs = 0, 0.0
    for length in range(counts_a.shape[1]):
        runs += column_runs[length]
        if runs < 200:
            continue
        pooled = slice(start, length + 1)
        p_a, var_a = proportion(counts_a, pooled)
        p_b, var_b = proportion(counts_b, pooled)
        assert abs(p_a - p_b) < z * math.sqrt(var_a + var_b) + 1e-12, pooled
        start, runs = length + 1, 0.0


@pytest.mark.parametrize(
    "spatial, block, rate",
    [((56, 56), 7, 0.1), ((40, 48), (5, 9), 0.3), ((400,), 9, 0.2)],
)
def test_constructions_draw_identically_distributed_masks(spatial, block, rate):
    statistics = {}
    for construction in SAMPLING_CONSTRUCTIONS:
        with _force_construction(*construction):
            statistics[construction] = mask_statistics(spatial, block, rate, 2048)
    reference_rate, reference_runs = statistics[SAMPLING_CONSTRUCTIONS[0]]
    assert reference_rate == pytest.approx(rate, rel=0.05)
    for construction, (realized, runs) in statistics.items():
        assert realized == pytest.approx(reference_rate, rel=0.05), construction
        for counts, reference in zip(runs, reference_runs, strict=True):
            assert_same_distribution(counts, reference)


# The construction each backend picks (the measurements behind the choice
# are in `_mask_construction`'s docstring).
CHOICES = {
    "jax": {"per_channel": ("sparse", "max_pool"), "shared": ("dense", "max_pool")},
    "tensorflow": {
        "per_channel": ("sparse", "max_pool"),
        "shared": ("dense", "max_pool"),
    },
    "torch": {"per_channel": ("sparse", "box"), "shared": ("dense", "box")},
}


def test_each_backend_picks_its_measured_construction():
    choose = _mask_construction
    picks = CHOICES[keras.backend.backend()]
    # (32, 56, 56, 64) channels_last, block 7: 2500 valid positions per map.
    assert choose([32, 56, 56, 64], [1, 2], [7, 7]) == picks["per_channel"]
    assert choose([32, 56, 56, 1], [1, 2], [7, 7]) == picks["shared"]
    assert choose([32, 64, 56, 56], [2, 3], [7, 7]) == picks["per_channel"]
    # Planned for rate 0.1 (a layer's configured rate) it is the same.
    gamma = _static_block_seed_probability(0.1, (56, 56), (7, 7), True)
    assert choose([32, 56, 56, 64], [1, 2], [7, 7], gamma) == picks["per_channel"]
    # Where a sample's seeds would need more than 1/32 of its positions as
    # slots, sampling is dense: small maps (8x8, block 3: 36 valid positions
    # per map, 1152 per sample) and large maps at a high rate.
    gamma = _static_block_seed_probability(0.1, (8, 8), (3, 3), True)
    small = choose([64, 8, 8, 32], [1, 2], [3, 3], gamma)
    assert small.sampling == "dense"
    assert small.dilation == picks["per_channel"][1]
    gamma = _static_block_seed_probability(0.7, (56, 56), (7, 7), True)
    assert choose([32, 56, 56, 64], [1, 2], [7, 7], gamma).sampling == "dense"
    # An unknown spatial size: the one construction written for it.
    assert choose([None, None, 56, 64], [1, 2], [7, 7]) == ("dense", "max_pool")


def test_the_environment_variable_forces_a_construction(monkeypatch):
    # What benchmarks/bench_constructions.py sets to time each construction.
    monkeypatch.setenv("KERAS_DROP_MASK_CONSTRUCTION", "dense, box")
    assert _mask_construction([32, 56, 56, 64], [1, 2], [7, 7]) == ("dense", "box")
    layer = keras_drop.DropBlock2D(0.2, 3, seed=0)
    y = to_numpy(layer(np.ones((2, 16, 16, 4), "float32"), training=True))
    assert 0 < np.mean(y == 0) < 1
    monkeypatch.setenv("KERAS_DROP_MASK_CONSTRUCTION", "sparse")
    with pytest.raises(ValueError, match="KERAS_DROP_MASK_CONSTRUCTION"):
        _mask_construction([32, 56, 56, 64], [1, 2], [7, 7])


@pytest.mark.parametrize("sampling", _SAMPLINGS)
@pytest.mark.parametrize(
    "shape, block, data_format",
    [
        ((4, 700, 3), 9, "channels_last"),
        ((4, 3, 40, 36), (7, 5), "channels_first"),
        ((2, 12, 14, 10, 2), 3, "channels_last"),
        ((64, 1, 9, 9), 9, "channels_first"),
    ],
)
def test_dilations_give_identical_masks_from_identical_seeds(
    sampling, shape, block, data_format
):
    masks = []
    for dilation in _DILATIONS:
        with _force_construction(sampling, dilation):
            y = keras_drop.ops.drop_block(
                ops.ones(shape), 0.2, block, data_format=data_format, seed=4
            )
            masks.append(to_numpy(y) == 0)
    assert masks[0].any()
    np.testing.assert_array_equal(masks[0], masks[1])


def poisson_tail(mean, k):
    """P(Poisson(mean) > k), summed in log space (k is above the mean, so
    the terms fall geometrically: those 20 standard deviations past k are
    negligible)."""
    terms = [
        i * math.log(mean) - mean - math.lgamma(i + 1)
        for i in range(k + 1, k + 100 + int(20 * math.sqrt(k)))
    ]
    top = max(terms)
    return math.exp(top) * sum(math.exp(t - top) for t in terms)


@pytest.mark.parametrize(
    "positions, gamma_bound",
    [
        (512, None),
        (2500, 0.0027),  # a shared 56x56 map, block 7, rate 0.1
        (160_000, 0.0027),  # the same with 64 channels
        (160_000, None),
        (64 * 50**3, 1e-4),
        (10**6, 0.3),
        (600, 0.0),
    ],
)
def test_sparse_cap_is_exceeded_with_negligible_probability(positions, gamma_bound):
    cap = _sparse_cap(positions, gamma_bound)
    gamma = _sparse_gamma_limit(positions, cap)
    assert 0.0 < gamma < 1.0
    # The planned gamma fits, with headroom for a float32 solve of it.
    if gamma_bound is not None:
        assert gamma >= gamma_bound * 1.005
    mean = -positions * math.log1p(-gamma)
    assert poisson_tail(mean, cap) <= _SPARSE_TAIL
    # And the cap is not needlessly high: the expected seeds at the limit
    # fill a good part of it (the Chernoff bound is loose on small caps).
    assert mean > (0.75 if cap > 400 else 0.1) * cap


def test_sparse_seeds_fall_on_each_valid_position_independently():
    """Sparse sampling seeds each valid position with probability gamma,
    independently: the seeded positions of a sample number Binomial(N,
    gamma) (mean and variance), and none lies in the padding."""
    samples, gamma = 2048, 0.05
    mask_shape, blocks, left = [samples, 20, 20, 8], [3, 3], [2, 2]
    positions = 18 * 18 * 8
    cap = _sparse_cap(positions, gamma)
    seeds = to_numpy(
        _sparse_seeds(mask_shape, [1, 2], blocks, gamma, (5, 6), left, cap)
    )
    assert seeds.shape == (samples, 22, 22, 8)
    valid = np.zeros(seeds.shape, bool)
    valid[:, 2:20, 2:20] = True
    assert not seeds[~valid].any()
    seeded = (seeds > 0).reshape(samples, -1).sum(axis=1)
    mean, variance = positions * gamma, positions * gamma * (1 - gamma)
    # Five standard errors of the sample mean and variance.
    assert abs(seeded.mean() - mean) < 5 * math.sqrt(variance / samples)
    assert abs(seeded.var() - variance) < 5 * variance * math.sqrt(2 / samples)


@pytest.mark.backends("tensorflow")
@pytest.mark.parametrize("jit_compile", [False, True])
def test_sparse_sampling_with_a_batch_size_unknown_while_tracing(jit_compile):
    """`fit` on TensorFlow retraces its step with an unknown batch size: the
    sparse sampler then sizes its draws and its scatter at run time."""
    import tensorflow as tf

    layer = DropBlock2D(0.1, 7, seed=2)
    gamma = _static_block_seed_probability(0.1, (56, 56), (7, 7), True)
    construction = _mask_construction([None, 56, 56, 64], [1, 2], [7, 7], gamma)
    assert construction.sampling == "sparse"
    step = tf.function(
        lambda x: layer(x, training=True),
        input_signature=[tf.TensorSpec((None, 56, 56, 64), tf.float32)],
        jit_compile=jit_compile,
    )
    y = to_numpy(step(tf.ones((24, 56, 56, 64))))
    assert y.shape == (24, 56, 56, 64)
    assert np.mean(y == 0) == pytest.approx(0.1, rel=0.05)
    maps = np.moveaxis(y == 0, -1, 1).reshape(-1, 56, 56)
    assert is_union_of_blocks(maps, (7, 7))


def test_a_rate_above_the_planned_one_takes_the_dense_path():
    """A compiled step sized for a layer's configured rate still drops the
    rate it is given when that is larger (a rate set after tracing)."""
    x = ops.ones((8, 56, 56, 64))
    with _force_construction("sparse", "max_pool"):
        y = drop_ops._drop_block(
            x,
            ops.convert_to_tensor(0.5),
            7,
            rate_bound=0.01,
            shared_channels=False,
            exact_rate=True,
            scale_by_keep=True,
            with_noise=False,
            data_format="channels_last",
            seed=3,
        )
    # A sparse draw capped for rate 0.01 would drop about 0.02.
    assert np.mean(to_numpy(y) == 0) == pytest.approx(0.5, abs=0.03)


# --------------------------------------------------------------------------
# Structure of the masks.


@pytest.mark.parametrize(
    "spatial_rank, spatial, block",
    [
        (1, (40,), (5,)),
        (2, (20, 16), (4, 3)),
        (2, (9, 9), (9, 9)),
        (3, (8, 10, 6), (3, 4, 2)),
    ],
)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_every_dropped_unit_lies_in_a_full_block(
    spatial_rank, spatial, block, data_format, construction
):
    channels = 3
    shape = (
        (16, *spatial, channels)
        if data_format == "channels_last"
        else (16, channels, *spatial)
    )
    layer = LAYERS[spatial_rank](0.3, block, data_format=data_format, seed=7)
    y = to_numpy(layer(ops.ones(shape), training=True))
    if data_format == "channels_first":
        y = np.moveaxis(y, 1, -1)
    maps = np.moveaxis(y, -1, 1).reshape(-1, *spatial) == 0
    assert maps.any() and not maps.all()
    assert is_union_of_blocks(maps, block)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_shared_channels_mask_is_identical_across_channels(data_format, construction):
    shape = (8, 20, 20, 6) if data_format == "channels_last" else (8, 6, 20, 20)
    layer = DropBlock2D(0.2, 5, shared_channels=True, data_format=data_format, seed=3)
    y = to_numpy(layer(ops.ones(shape), training=True)) == 0
    channel_axis = -1 if data_format == "channels_last" else 1
    first = np.take(y, [0], axis=channel_axis)
    assert np.array_equal(y, np.broadcast_to(first, y.shape))
    assert 0.1 < y.mean() < 0.3


def test_per_channel_masks_differ_across_channels(construction):
    y = (
        to_numpy(DropBlock2D(0.2, 5, seed=3)(ops.ones((8, 20, 20, 6)), training=True))
        == 0
    )
    assert not np.array_equal(y[..., 0], y[..., 1])


def test_kept_units_scaled_by_count_over_kept(construction):
    y = to_numpy(DropBlock2D(0.3, 4, seed=5)(ops.ones((16, 16, 16, 4)), training=True))
    kept = y[y != 0]
    assert np.allclose(kept, y.size / kept.size, rtol=1e-5)
    unscaled = DropBlock2D(0.3, 4, scale_by_keep=False, seed=5)
    y = to_numpy(unscaled(ops.ones((16, 16, 16, 4)), training=True))
    assert set(np.unique(y)) == {0.0, 1.0}


def test_with_noise_fills_dropped_blocks_with_standard_normal_noise():
    layer = DropBlock2D(0.3, 4, with_noise=True, scale_by_keep=False, seed=5)
    x = np.full((32, 16, 16, 4), 7.0, "float32")
    y = to_numpy(layer(x, training=True))
    noise = y[y != 7.0]
    assert 0.25 < noise.size / y.size < 0.35
    assert abs(noise.mean()) < 0.02 and noise.std() == pytest.approx(1.0, rel=0.03)


def test_mean_is_preserved(construction):
    rng = np.random.default_rng(0)
    x = rng.uniform(1.0, 2.0, (64, 28, 28, 8)).astype("float32")
    for kwargs in ({}, {"shared_channels": True}, {"with_noise": True}):
        y = to_numpy(DropBlock2D(0.2, 5, seed=11, **kwargs)(x, training=True))
        assert y.mean() == pytest.approx(x.mean(), rel=0.01), kwargs


# --------------------------------------------------------------------------
# Identity, seeds, numerics.


def test_inference_and_zero_rate_are_the_identity_bit_for_bit():
    x = np.random.default_rng(0).normal(size=(4, 12, 12, 3)).astype("float32")
    x[0, 0, 0, 0] = -0.0
    layer = DropBlock2D(0.5, 3, seed=0)
    np.testing.assert_array_equal(bits(layer(x)), bits(x))
    np.testing.assert_array_equal(bits(layer(x, training=False)), bits(x))
    for kwargs in ({}, {"with_noise": True}, {"shared_channels": True}):
        zero = DropBlock2D(0.0, 3, seed=0, **kwargs)
        np.testing.assert_array_equal(bits(zero(x, training=True)), bits(x))


def test_same_seed_same_masks_successive_calls_differ(construction):
    assert_seed_behaviour(
        lambda seed: DropBlock2D(0.2, 3, seed=seed), ops.ones((4, 16, 16, 3))
    )


def test_functional_form_int_seed_is_deterministic_generator_advances():
    x = ops.ones((4, 16, 16, 3))
    a = to_numpy(keras_drop.ops.drop_block(x, 0.2, 3, seed=5))
    b = to_numpy(keras_drop.ops.drop_block(x, 0.2, 3, seed=5))
    np.testing.assert_array_equal(a, b)
    generator = keras.random.SeedGenerator(5)
    c = to_numpy(keras_drop.ops.drop_block(x, 0.2, 3, seed=generator))
    d = to_numpy(keras_drop.ops.drop_block(x, 0.2, 3, seed=generator))
    assert not np.array_equal(c, d)


def test_tensor_rate_is_accepted():
    rate = ops.convert_to_tensor(0.25)
    y = to_numpy(keras_drop.ops.drop_block(ops.ones((64, 16, 16, 8)), rate, 4, seed=1))
    assert (y == 0).mean() == pytest.approx(0.25, rel=0.1)


@pytest.mark.parametrize("spatial, block", [((2, 2), 3), ((1, 1), 1), ((3, 3), 2)])
def test_no_nan_at_high_rate_on_tiny_maps(spatial, block, construction):
    layer = DropBlock2D(0.9, block, seed=0)
    saw_fully_dropped = False
    for _ in range(20):
        y = to_numpy(layer(ops.ones((2, *spatial, 1)), training=True))
        assert np.all(np.isfinite(y))
        saw_fully_dropped |= bool(np.all(y == 0))
    assert saw_fully_dropped  # the all-dropped batch happened, and gave zeros


@pytest.mark.parametrize(
    "policy, dtype", [("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")]
)
def test_mixed_precision_large_tensor_keeps_dtype_without_overflow(policy, dtype):
    keras.config.set_dtype_policy(policy)
    layer = DropBlock2D(0.1, 5, seed=0)
    x = ops.ones((8, 64, 64, 32))  # 1M units: counts would overflow float16
    y = layer(x, training=True)
    assert keras.backend.standardize_dtype(y.dtype) == dtype
    y = to_numpy(ops.cast(y, "float32"))
    assert np.all(np.isfinite(y))
    assert y.mean() == pytest.approx(1.0, rel=0.02)


# --------------------------------------------------------------------------
# Compiled training.


def _zero_fraction_model(layer, channels=1, spatial=(None, None)):
    """Input -> 1x1 conv (ones, a trainable op) -> layer; loss = zero fraction."""
    inputs = keras.Input((*spatial, channels))
    hidden = keras.layers.Conv2D(
        channels, 1, use_bias=False, kernel_initializer="ones"
    )(inputs)
    model = keras.Model(inputs, layer(hidden))
    model.compile(
        optimizer=keras.optimizers.SGD(0.0), loss=zero_fraction, jit_compile=JIT_COMPILE
    )
    return model


def test_fit_with_dynamic_spatial_sizes():
    layer = DropBlock2D(0.2, 5, seed=0)
    model = _zero_fraction_model(layer, channels=4)
    for size in (24, 17):
        x = np.ones((32, size, size, 4), "float32")
        loss = model.fit(x, x, batch_size=16, epochs=2, verbose=0).history["loss"]
        assert loss[-1] == pytest.approx(0.2, rel=0.15), (size, loss)


def test_rate_assigned_after_compile_reaches_the_compiled_step():
    layer = DropBlock2D(0.05, 3, seed=0)
    model = _zero_fraction_model(layer, channels=4, spatial=(16, 16))
    x = np.ones((64, 16, 16, 4), "float32")
    before = model.fit(x, x, batch_size=32, epochs=1, verbose=0).history["loss"][-1]
    traced = model.train_function
    layer.rate = 0.4
    after = model.fit(x, x, batch_size=32, epochs=1, verbose=0).history["loss"][-1]
    assert model.train_function is traced  # the same compiled step
    assert before == pytest.approx(0.05, rel=0.3)
    assert after == pytest.approx(0.4, rel=0.1)
    assert layer.get_config()["rate"] == 0.4
    layer.rate = 0.0
    zero = model.fit(x, x, batch_size=32, epochs=1, verbose=0).history["loss"][-1]
    assert zero == 0.0


def test_scheduler_hook_changes_applied_rate_not_config():
    layer = DropBlock2D(0.3, 3, seed=0)
    layer._set_current_strength(0.0)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 2)).astype("float32")
    np.testing.assert_array_equal(bits(layer(x, training=True)), bits(x))
    assert layer.get_config()["rate"] == 0.3
    assert layer.rate == 0.3


def test_rate_variable_is_state_not_a_weight():
    layer = DropBlock2D(0.3, 3)
    layer.build((None, 8, 8, 2))
    assert layer.weights == []
    assert any("current_rate" in v.path for v in layer.variables)
    assert layer.count_params() == 0
