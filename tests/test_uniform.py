"""UniformDropout ("Uout") and keras_drop.ops.uniform_dropout: measured."""

import numpy as np
import pytest
from keras import ops

import keras_drop
from keras_drop import UniformDropout
from tests.helpers import assert_seed_behaviour, bits, run_layer_test, to_numpy


@pytest.mark.parametrize(
    "kwargs, shape", [({"beta": 0.3, "seed": 1}, (4, 6, 5)), ({"beta": 0.0}, (3, 2))]
)
def test_smoke(kwargs, shape):
    run_layer_test(UniformDropout, kwargs, shape)


@pytest.mark.parametrize("beta", [-0.1, float("inf"), float("nan"), "0.1", True, None])
def test_invalid_beta_names_the_argument_and_value(beta):
    with pytest.raises(ValueError) as error:
        UniformDropout(beta)
    assert "`beta`" in str(error.value) and f"beta={beta!r}" in str(error.value)
    if isinstance(beta, float):
        with pytest.raises(ValueError, match="`beta`"):
            keras_drop.ops.uniform_dropout(ops.ones((2,)), beta)


@pytest.mark.parametrize("beta", [0.1, 0.5, 1.5])
def test_noise_is_uniform_with_mean_one(beta):
    n = 1_000_000
    y = to_numpy(UniformDropout(beta, seed=2)(ops.ones((n // 100, 100)), training=True))
    assert y.min() >= 1 - beta and y.max() <= 1 + beta
    se = beta / np.sqrt(3 * n)
    assert abs(y.mean() - 1.0) < 5 * se
    assert y.var() == pytest.approx(beta**2 / 3, rel=0.01)
    # Uniform: each tenth of [1 - beta, 1 + beta] holds a tenth of the draws.
    counts = np.histogram(y, bins=10, range=(1 - beta, 1 + beta))[0] / n
    assert np.all(np.abs(counts - 0.1) < 5 * np.sqrt(0.09 / n))


def test_second_moment_grows_by_one_plus_beta_squared_over_three():
    # The variance shift: a unit of mean m and variance v has training
    # variance (v + m^2)(1 + beta^2 / 3) - m^2; Dropout at rate p gives
    # (v + m^2) / (1 - p) - m^2.
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 0.5, (10_000, 100)).astype("float32")
    beta, rate = 0.3, 0.1
    second = np.mean(x.astype("float64") ** 2)
    uout = to_numpy(UniformDropout(beta, seed=3)(x, training=True))
    assert np.mean(uout.astype("float64") ** 2) / second == pytest.approx(
        1 + beta**2 / 3, rel=0.003
    )
    dropout = to_numpy(keras_drop.ops.drop_path(x.reshape(-1, 1), rate, seed=3))
    assert np.mean(dropout.astype("float64") ** 2) / second == pytest.approx(
        1 / (1 - rate), rel=0.01
    )


def test_identity_at_inference_and_zero_beta():
    x = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
    x[0, 0] = -0.0
    np.testing.assert_array_equal(bits(UniformDropout(0.5)(x)), bits(x))
    np.testing.assert_array_equal(
        bits(UniformDropout(0.0, seed=0)(x, training=True)), bits(x)
    )


def test_seeds():
    x = ops.ones((16, 8))
    assert_seed_behaviour(
        lambda seed: UniformDropout(0.2, seed=seed),
        x,
        lambda seed: keras_drop.ops.uniform_dropout(x, 0.2, seed=seed),
    )
