"""DropPath, StochasticDepth, stochastic_depth_rates and the functional forms
keras_drop.ops.drop_path / stochastic_depth: behaviour, measured."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_drop
from keras_drop import DropPath, StochasticDepth, stochastic_depth_rates
from tests.helpers import assert_seed_behaviour, bits, run_layer_test, to_numpy


def sigma(rate, n):
    """Standard error of a Bernoulli(rate) frequency over n draws."""
    return np.sqrt(rate * (1 - rate) / n)


# --------------------------------------------------------------------------
# Smoke coverage.


@pytest.mark.parametrize(
    "kwargs, shape, symbolic",
    [
        ({"rate": 0.3, "seed": 1}, (4, 6, 5), (None, 5)),
        ({"rate": 0.2, "scale_by_keep": False, "seed": 2}, (4, 8, 8, 3), None),
        ({"rate": 0.1}, (4, 5), None),
    ],
)
def test_drop_path_smoke(kwargs, shape, symbolic):
    run_layer_test(DropPath, kwargs, shape, symbolic_shape=symbolic)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate": 0.3, "seed": 1},
        {"rate": 0.2, "mode": "row", "rescale_at": "training", "seed": 2},
    ],
)
def test_stochastic_depth_smoke(kwargs):
    run_layer_test(
        StochasticDepth,
        kwargs,
        [(4, 6, 5), (4, 6, 5)],
        symbolic_shape=[(None, 5), (None, 5)],
    )


# --------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize(
    "cls, kwargs, argument",
    [
        (DropPath, {"rate": 1.0}, "rate"),
        (DropPath, {"rate": -0.1}, "rate"),
        (DropPath, {"rate": "0.1"}, "rate"),
        (DropPath, {"rate": True}, "rate"),
        (DropPath, {"rate": 0.1, "scale_by_keep": 1}, "scale_by_keep"),
        (DropPath, {"rate": 0.1, "seed": 1.5}, "seed"),
        (StochasticDepth, {"rate": 1.0}, "rate"),
        (StochasticDepth, {"mode": "col"}, "mode"),
        (StochasticDepth, {"rescale_at": "both"}, "rescale_at"),
        (StochasticDepth, {"seed": "0"}, "seed"),
    ],
)
def test_invalid_arguments_name_the_argument_and_value(cls, kwargs, argument):
    with pytest.raises(ValueError) as error:
        cls(**kwargs)
    message = str(error.value)
    assert f"`{argument}`" in message
    assert f"{argument}={kwargs[argument]!r}" in message


def test_drop_path_needs_a_batch_axis_and_more():
    with pytest.raises(ValueError, match=r"rank >= 2.*inputs.shape=\(4,\)"):
        DropPath(0.1)(ops.ones((4,)), training=True)
    with pytest.raises(ValueError, match="rank >= 2"):
        keras_drop.ops.drop_path(ops.ones((4,)), 0.1)
    with pytest.raises(ValueError, match="`rate`"):
        keras_drop.ops.drop_path(ops.ones((4, 2)), 1.5)


@pytest.mark.parametrize("count", [1, 3])
def test_stochastic_depth_needs_exactly_two_inputs(count):
    tensors = [ops.ones((2, 4))] * count
    inputs = tensors[0] if count == 1 else tensors
    with pytest.raises(ValueError, match=f"two tensors.*Received {count} input"):
        StochasticDepth(0.1)(inputs, training=True)
    symbolic = [keras.Input((4,))] * count
    with pytest.raises(ValueError, match=f"Received {count} input"):
        StochasticDepth(0.1)(symbolic[0] if count == 1 else symbolic)


def test_stochastic_depth_builds_from_backend_shapes():
    # TensorFlow's TensorShape and torch's Size are shapes too.
    x = ops.ones((2, 4))
    layer = StochasticDepth(0.1)
    layer.build([x.shape, x.shape])
    assert layer.built
    with pytest.raises(ValueError, match="Received 1 input"):
        StochasticDepth(0.1).build(x.shape)


def test_stochastic_depth_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"shortcut.shape=\(2, 4\).*\(2, 5\)"):
        StochasticDepth(0.1)([ops.ones((2, 4)), ops.ones((2, 5))], training=True)
    with pytest.raises(ValueError, match="same shape"):
        StochasticDepth(0.1)([keras.Input((4,)), keras.Input((5,))])
    with pytest.raises(ValueError, match="same shape"):
        keras_drop.ops.stochastic_depth(ops.ones((2, 4)), ops.ones((3, 4)), 0.1)


@pytest.mark.parametrize(
    "args, argument",
    [((0, 0.5), "num_blocks"), ((2.0, 0.5), "num_blocks"), ((4, 1.0), "final_rate")],
)
def test_stochastic_depth_rates_bad_arguments(args, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        stochastic_depth_rates(*args)


# --------------------------------------------------------------------------
# DropPath behaviour.


@pytest.mark.parametrize("rate", [0.1, 0.5])
@pytest.mark.parametrize("scale_by_keep", [True, False])
def test_drop_path_drops_whole_samples_at_the_rate(rate, scale_by_keep):
    n = 20_000
    layer = DropPath(rate, scale_by_keep=scale_by_keep, seed=3)
    y = to_numpy(layer(ops.ones((n, 3, 4)), training=True)).reshape(n, -1)
    dropped = np.all(y == 0, axis=1)
    kept_value = 1.0 / (1.0 - rate) if scale_by_keep else 1.0
    assert np.all(dropped | np.all(np.isclose(y, kept_value, rtol=1e-6), axis=1))
    assert abs(dropped.mean() - rate) < 5 * sigma(rate, n)


@pytest.mark.parametrize(
    "shape", [(512, 7), (512, 5, 3), (512, 4, 4, 2), (512, 3, 3, 3, 2)]
)
def test_drop_path_any_rank_keeps_mean(shape):
    x = np.random.default_rng(0).uniform(1.0, 2.0, shape).astype("float32")
    y = to_numpy(DropPath(0.3, seed=1)(x, training=True))
    per_sample = y.reshape(shape[0], -1)
    assert np.all(np.all(per_sample == 0, axis=1) | np.all(per_sample != 0, axis=1))
    # Mean of the per-sample keep/scale factor: 1 +- 5 standard errors.
    n = shape[0]
    tolerance = 5 * np.sqrt(0.3 / 0.7 / n)
    assert y.mean() / x.mean() == pytest.approx(1.0, abs=tolerance)


def test_drop_path_identity_at_inference_and_zero_rate():
    x = np.random.default_rng(0).normal(size=(8, 5, 3)).astype("float32")
    x[0, 0, 0] = -0.0
    np.testing.assert_array_equal(bits(DropPath(0.5)(x)), bits(x))
    zero = DropPath(0.0, seed=0)(x, training=True)
    np.testing.assert_array_equal(bits(zero), bits(x))


def test_drop_path_seeds():
    x = ops.ones((64, 4))
    assert_seed_behaviour(
        lambda seed: DropPath(0.5, seed=seed),
        x,
        lambda seed: keras_drop.ops.drop_path(x, 0.5, seed=seed),
    )


# --------------------------------------------------------------------------
# StochasticDepth behaviour.


def test_batch_mode_drops_the_whole_batch_at_the_rate():
    rate, calls = 0.3, 400
    layer = StochasticDepth(rate, seed=5)
    shortcut, residual = ops.zeros((16, 3)), ops.ones((16, 3))
    dropped = 0
    for _ in range(calls):
        y = to_numpy(layer([shortcut, residual], training=True))
        assert np.all(y == 0) or np.all(y == 1), y  # all or none of the batch
        dropped += bool(np.all(y == 0))
    assert abs(dropped / calls - rate) < 5 * sigma(rate, calls)


@pytest.mark.parametrize("rescale_at, kept", [("inference", 1.0), ("training", 2.0)])
def test_row_mode_drops_samples_at_the_rate(rescale_at, kept):
    rate, n = 0.5, 20_000
    layer = StochasticDepth(rate, mode="row", rescale_at=rescale_at, seed=5)
    y = to_numpy(layer([ops.zeros((n, 3)), ops.ones((n, 3))], training=True))
    dropped = np.all(y == 0, axis=1)
    assert np.all(dropped | np.all(y == kept, axis=1))
    assert abs(dropped.mean() - rate) < 5 * sigma(rate, n)


def test_inference_rescale_rules():
    rng = np.random.default_rng(0)
    shortcut = rng.normal(size=(4, 6)).astype("float32")
    residual = rng.normal(size=(4, 6)).astype("float32")
    paper = StochasticDepth(0.25)([shortcut, residual])
    np.testing.assert_allclose(to_numpy(paper), shortcut + 0.75 * residual, rtol=1e-6)
    plain = StochasticDepth(0.25, rescale_at="training")([shortcut, residual])
    np.testing.assert_array_equal(bits(plain), bits(shortcut + residual))
    for rescale_at in ("inference", "training"):
        zero = StochasticDepth(0.0, rescale_at=rescale_at, seed=0)
        for training in (True, False):
            y = zero([shortcut, residual], training=training)
            np.testing.assert_array_equal(bits(y), bits(shortcut + residual))


@pytest.mark.parametrize("rescale_at", ["inference", "training"])
def test_training_expectation_matches_inference_output(rescale_at):
    n = 40_000
    layer = StochasticDepth(0.4, mode="row", rescale_at=rescale_at, seed=9)
    shortcut = np.full((n, 2), 0.5, "float32")
    residual = np.full((n, 2), 2.0, "float32")
    trained = to_numpy(layer([shortcut, residual], training=True)).mean()
    inferred = to_numpy(layer([shortcut, residual], training=False)).mean()
    # The residual term's standard error: 2 * scale * sigma(0.4, n).
    scale = 1.0 / 0.6 if rescale_at == "training" else 1.0
    assert trained == pytest.approx(inferred, abs=5 * 2.0 * scale * sigma(0.4, n))


def test_stochastic_depth_functional_form():
    a, b = ops.zeros((8, 2)), ops.ones((8, 2))
    y1 = to_numpy(keras_drop.ops.stochastic_depth(a, b, 0.5, seed=1))
    y2 = to_numpy(keras_drop.ops.stochastic_depth(a, b, 0.5, seed=1))
    np.testing.assert_array_equal(y1, y2)
    with pytest.raises(ValueError, match="`mode`"):
        keras_drop.ops.stochastic_depth(a, b, 0.5, mode="sample")


def test_stochastic_depth_in_a_residual_model_trains_and_saves(tmp_path):
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(8)(inputs)
    branch = keras.layers.Dense(8)(hidden)
    outputs = StochasticDepth(0.3, mode="row", seed=1)([hidden, branch])
    model = keras.Model(inputs, keras.layers.Dense(1)(outputs))
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(32, 8)).astype("float32")
    model.fit(x, x[:, :1], epochs=1, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(
        to_numpy(restored.predict(x, verbose=0)),
        to_numpy(model.predict(x, verbose=0)),
        rtol=1e-6,
    )


# --------------------------------------------------------------------------
# The decay rule.


def test_stochastic_depth_rates_is_the_linear_rule():
    rates = stochastic_depth_rates(4, 0.2)
    assert rates == pytest.approx([0.05, 0.1, 0.15, 0.2])
    assert stochastic_depth_rates(1, 0.5) == [0.5]
    assert stochastic_depth_rates(3, 0.0) == [0.0, 0.0, 0.0]
    # The paper's survival probabilities p_l = 1 - l / L (1 - p_L), p_L = 0.5.
    survival = [1 - r for r in stochastic_depth_rates(54, 0.5)]
    assert survival[0] == pytest.approx(1 - 0.5 / 54)
    assert survival[-1] == pytest.approx(0.5)
    assert all(isinstance(r, float) for r in rates)
