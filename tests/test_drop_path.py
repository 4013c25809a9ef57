"""DropPath, StochasticDepth, stochastic_depth_rates and the functional forms
keras_drop.ops.drop_path / stochastic_depth: behaviour, measured."""

import json

import keras
import numpy as np
import pytest
from keras import ops

import keras_drop
from keras_drop import (
    DropPath,
    StochasticDepth,
    StochasticDepthBlock,
    stochastic_depth_rates,
)
from tests.helpers import (
    JIT_COMPILE,
    Ones,
    assert_seed_behaviour,
    bits,
    run_layer_test,
    to_numpy,
    zero_fraction,
)


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


# --------------------------------------------------------------------------
# StochasticDepthBlock: the dropped branch is not computed.

# P(kept) = 2**-20 per step: "always skipped" for a test of a few steps.
ALMOST_ONE = 1.0 - 2.0**-20
CHANNELS = 4


def conv_bn_relu(name=None):
    return keras.Sequential(
        [
            keras.layers.Conv2D(CHANNELS, 3, padding="same", use_bias=False),
            keras.layers.BatchNormalization(momentum=0.5),
            keras.layers.ReLU(),
        ],
        name=name,
    )


def _images(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6, 6, CHANNELS)).astype("float32")


def _block_model(rate, *, shortcut=False, head=True, seed=1):
    inputs = keras.Input((6, 6, CHANNELS))
    block = StochasticDepthBlock(
        conv_bn_relu(),
        rate,
        shortcut=keras.layers.Conv2D(CHANNELS, 1) if shortcut else None,
        seed=seed,
    )
    outputs = block(inputs)
    if head:
        outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(outputs))
    return keras.Model(inputs, outputs), block


def _plain_model(model, block):
    """`shortcut(x) + residual(x)` with the block model's weights."""
    inputs = keras.Input((6, 6, CHANNELS))
    residual = conv_bn_relu()
    outputs = residual(inputs)
    residual.set_weights(block.residual.get_weights())
    shortcut = inputs
    if block.shortcut is not None:
        projection = keras.layers.Conv2D(CHANNELS, 1)
        shortcut = projection(inputs)
        projection.set_weights(block.shortcut.get_weights())
    outputs = keras.layers.Add()([shortcut, outputs])
    head = keras.layers.Dense(1)
    outputs = head(keras.layers.GlobalAveragePooling2D()(outputs))
    head.set_weights(model.layers[-1].get_weights())
    return keras.Model(inputs, outputs)


def _branch_state(model):
    """Every weight of a block model or its plain twin, in one order: the
    residual branch, the projection shortcut, the head."""
    found = [layer for layer in model.layers if isinstance(layer, StochasticDepthBlock)]
    if found:
        block = found[0]
        parts = [block.residual] + ([block.shortcut] if block.shortcut else [])
    else:
        kinds = (keras.Sequential, keras.layers.Conv2D)
        parts = [
            layer for kind in kinds for layer in model.layers if type(layer) is kind
        ]
    parts.append(model.layers[-1])
    return [to_numpy(v) for part in parts for v in part.weights]


def _fit_steps(model, steps, *, learning_rate=0.1):
    x = _images(4 * steps)
    y = np.ones((4 * steps, *model.output_shape[1:]), "float32")
    model.compile(keras.optimizers.SGD(learning_rate), "mse", jit_compile=JIT_COMPILE)
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)


@pytest.mark.parametrize("shortcut", [False, True], ids=["identity", "projection"])
def test_kept_block_trains_exactly_as_the_plain_block(shortcut):
    model, block = _block_model(0.0, shortcut=shortcut)
    plain = _plain_model(model, block)
    x = _images()
    np.testing.assert_allclose(
        to_numpy(model(x, training=True)),
        to_numpy(plain(x, training=True)),
        rtol=1e-5,
        atol=1e-6,
    )
    # Three compiled SGD steps: equal weights after them mean equal gradients,
    # equal BatchNormalization statistics mean equal state updates.
    before = _branch_state(model)
    _fit_steps(model, 3)
    _fit_steps(plain, 3)
    after = _branch_state(model)
    for got, expected in zip(after, _branch_state(plain), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # Every weight and statistic of the block moved (the comparison bites).
    assert all(not np.allclose(a, b) for a, b in zip(after, before, strict=True))


@pytest.mark.parametrize("shortcut", [False, True], ids=["identity", "projection"])
def test_skipped_block_is_the_shortcut_and_leaves_the_branch_untouched(shortcut):
    model, block = _block_model(ALMOST_ONE, shortcut=shortcut)
    x = _images()
    expected = x if block.shortcut is None else to_numpy(block.shortcut(x))
    np.testing.assert_array_equal(to_numpy(block(x, training=True)), expected)
    branch_before = [to_numpy(v) for v in block.residual.variables]
    head_before = to_numpy(model.layers[-1].kernel)
    _fit_steps(model, 3)
    # Zero gradient (plain SGD: unchanged weights), untouched moving statistics.
    for got, before in zip(
        [to_numpy(v) for v in block.residual.variables], branch_before, strict=True
    ):
        np.testing.assert_array_equal(got, before)
    # The step did train the rest of the model.
    assert not np.allclose(to_numpy(model.layers[-1].kernel), head_before)


def test_a_step_that_skips_every_block_still_trains():
    # The loss depends on no branch weight in such a step; every backend must
    # still run it (PyTorch's autograd needs something to differentiate).
    model, block = _block_model(ALMOST_ONE, head=False)
    before = [to_numpy(v) for v in block.residual.trainable_variables]
    _fit_steps(model, 2)
    for got, expected in zip(
        [to_numpy(v) for v in block.residual.trainable_variables], before, strict=True
    ):
        np.testing.assert_array_equal(got, expected)


def test_block_skips_at_the_rate_in_compiled_fit():
    # Output 0 when skipped (zero input, a branch of constant ones), 1 when
    # kept: the zero-fraction loss of a step is 1 exactly when it skips.
    rate, steps = 0.3, 400
    branch = keras.layers.Dense(
        CHANNELS, kernel_initializer="zeros", bias_initializer="ones"
    )
    inputs = keras.Input((CHANNELS,))
    block = StochasticDepthBlock(branch, rate, rescale_at="training", seed=3)
    model = keras.Model(inputs, block(Ones()(inputs)))
    model.compile(keras.optimizers.SGD(0.0), zero_fraction, jit_compile=JIT_COMPILE)
    x = np.zeros((steps, CHANNELS), "float32")
    history = model.fit(x, x, batch_size=1, verbose=0, shuffle=False)
    skipped = history.history["loss"][-1]
    assert skipped == pytest.approx(rate, abs=4 * sigma(rate, steps))


@pytest.mark.parametrize("rescale_at", ["inference", "training"])
def test_block_inference_rules_match_stochastic_depth(rescale_at):
    branch = keras.layers.Dense(CHANNELS)
    block = StochasticDepthBlock(branch, 0.25, rescale_at=rescale_at)
    x = np.random.default_rng(0).normal(size=(4, CHANNELS)).astype("float32")
    out = to_numpy(block(x))
    residual = to_numpy(branch(x))
    scale = 0.75 if rescale_at == "inference" else 1.0
    np.testing.assert_allclose(out, x + scale * residual, rtol=1e-6)
    np.testing.assert_array_equal(to_numpy(block(x, training=False)), out)
    # A kept training step under timm's rule scales the branch by 1 / 0.75.
    kept_scale = 1 / 0.75 if rescale_at == "training" else 1.0
    outcomes = [to_numpy(block(x, training=True)) for _ in range(12)]
    for got in outcomes:
        skipped = np.array_equal(got, x)
        if not skipped:
            np.testing.assert_allclose(got, x + kept_scale * residual, rtol=1e-5)
    assert any(np.array_equal(got, x) for got in outcomes)
    assert not all(np.array_equal(got, x) for got in outcomes)


def test_block_with_the_decay_rule_trains_and_round_trips(tmp_path):
    rates = stochastic_depth_rates(4, 0.5)
    inputs = keras.Input((6, 6, CHANNELS))
    hidden = inputs
    for index, rate in enumerate(rates):
        hidden = StochasticDepthBlock(conv_bn_relu(), rate, seed=index)(hidden)
    hidden = StochasticDepthBlock(
        conv_bn_relu(),
        0.1,
        shortcut=keras.layers.Conv2D(CHANNELS, 1),
        rescale_at="training",
        name="projection",
    )(hidden)
    model = keras.Model(
        inputs, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(hidden))
    )
    blocks = [
        layer for layer in model.layers if isinstance(layer, StochasticDepthBlock)
    ]
    assert [block.rate for block in blocks[:4]] == pytest.approx(
        [0.125, 0.25, 0.375, 0.5]
    )
    _fit_steps(model, 3, learning_rate=0.01)
    x = _images()
    path = tmp_path / "blocks.keras"
    model.save(path)
    restored = keras.saving.load_model(path)  # registration suffices
    np.testing.assert_array_equal(
        bits(restored.predict(x, verbose=0)), bits(model.predict(x, verbose=0))
    )
    for got, expected in zip(restored.layers, model.layers, strict=True):
        # As JSON: a reloaded Sequential holds lists where the original held
        # tuples (its build input shape).
        assert json.dumps(got.get_config()) == json.dumps(expected.get_config())


def test_block_smoke_symbolic_unknown_sizes_and_mixed_precision():
    block = StochasticDepthBlock(conv_bn_relu(), 0.3, seed=0)
    symbolic = keras.Input((None, None, CHANNELS))
    assert tuple(block(symbolic).shape) == (None, None, None, CHANNELS)
    for policy, dtype in (("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")):
        keras.config.set_dtype_policy(policy)
        mixed = StochasticDepthBlock(conv_bn_relu(), 0.3, seed=0)
        out = mixed(_images(), training=True)
        keras.config.set_dtype_policy("float32")
        assert keras.backend.standardize_dtype(out.dtype) == dtype
        assert np.all(np.isfinite(to_numpy(ops.cast(out, "float32"))))


def test_block_draws_follow_the_seed():
    def draws(block, n=16):
        x = np.zeros((1, CHANNELS), "float32")
        return [bool(to_numpy(block(x, training=True)).any()) for _ in range(n)]

    def make(seed):
        branch = keras.layers.Dense(
            CHANNELS, kernel_initializer="zeros", bias_initializer="ones"
        )
        return StochasticDepthBlock(branch, 0.5, seed=seed)

    first = draws(make(7))
    assert first == draws(make(7))
    assert first != draws(make(8)) or first != draws(make(9))
    assert 0 < sum(first) < len(first)


def test_block_regularization_losses_count_only_on_kept_steps():
    def make(rate):
        branch = keras.layers.Dense(
            CHANNELS,
            kernel_initializer="ones",
            activity_regularizer=keras.regularizers.L1(1.0),
        )
        return StochasticDepthBlock(branch, rate, seed=0)

    x = np.ones((2, CHANNELS), "float32")
    kept = make(0.0)
    kept(x, training=True)
    assert len(kept.losses) == 1
    assert float(to_numpy(kept.losses[0])) > 0
    skipped = make(ALMOST_ONE)
    skipped(x, training=True)
    assert sum(float(to_numpy(loss)) for loss in skipped.losses) == 0.0


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"residual": "conv"}, "residual"),
        ({"residual": None}, "residual"),
        ({"shortcut": 3}, "shortcut"),
        ({"rate": 1.0}, "rate"),
        ({"rescale_at": "never"}, "rescale_at"),
    ],
)
def test_block_invalid_arguments_name_the_argument(kwargs, argument):
    arguments = {"residual": keras.layers.Dense(2), **kwargs}
    with pytest.raises(ValueError, match=f"`{argument}`"):
        StochasticDepthBlock(**arguments)


@pytest.mark.parametrize("mode", ["batch", "subset"])
def test_block_needs_a_batch_axis(mode):
    block = StochasticDepthBlock(keras.layers.Identity(), 0.5, mode=mode)
    message = r"`StochasticDepthBlock` must be of rank >= 1.*inputs.shape=\(\)"
    with pytest.raises(ValueError, match=message):
        block(ops.ones(()), training=True)
    block(ops.ones((2, 3)), training=True)  # built: the call checks too
    with pytest.raises(ValueError, match=message):
        block(ops.ones(()), training=True)


def test_block_shape_mismatch_names_both_shapes():
    block = StochasticDepthBlock(keras.layers.Dense(3))
    with pytest.raises(
        ValueError, match=r"residual output shape \(None, 3\).*\(None, 5\)"
    ):
        block(keras.Input((5,)))


@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 3)])
def test_block_on_token_sequences_trains(shape):
    # Dense on rank >= 3 inputs (a transformer MLP). TensorFlow's XLA cannot
    # compile the conditional's gradient there (see the docstring), so the
    # TensorFlow run goes without XLA, as the docstring advises.
    inputs = keras.Input(shape)
    block = StochasticDepthBlock(keras.layers.Dense(shape[-1]), 0.5, seed=0)
    model = keras.Model(inputs, block(inputs))
    jit_compile = JIT_COMPILE and keras.backend.backend() != "tensorflow"
    model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=jit_compile)
    x = np.ones((8, *shape), "float32")
    history = model.fit(x, 2 * x, batch_size=2, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
