"""StochasticDepthBlock(mode="subset") and keras_drop.ops.drop_path_subset:
the branch runs on exactly k = max(1, floor((1 - rate) B)) samples, measured
in compiled steps."""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

import keras_drop
from keras_drop import StochasticDepthBlock
from keras_drop.layers._base import monte_carlo_scope
from tests.helpers import JIT_COMPILE, assert_seed_behaviour, to_numpy

BATCH, WIDTH = 10, 4


def k_of(rate, batch=BATCH):
    return max(1, int(np.floor((1.0 - rate) * batch + 1e-9)))


def ones_branch():
    """A branch whose output is 1 everywhere, whatever its input."""
    return keras.layers.Dense(
        WIDTH, kernel_initializer="zeros", bias_initializer="ones"
    )


class Recorder(keras.layers.Layer):
    """Called on `[shortcut, block output]` in a compiled step; records, per
    batch position, how often the branch was added (output != shortcut),
    the fewest and most samples given the branch in one step, the largest
    error of a selected sample against `shortcut + added`, the largest
    difference of a non-selected sample from its shortcut, and the last
    step's selection. Returns the block output."""

    def __init__(self, added, **kwargs):
        super().__init__(**kwargs)
        self.added = added

    def build(self, input_shape):
        def state(name, shape, value):
            return self.add_weight(
                shape=shape,
                initializer=keras.initializers.Constant(value),
                trainable=False,
                name=name,
            )

        self.counts = state("counts", (BATCH,), 0.0)
        self.fewest = state("fewest", (), 1e9)
        self.most = state("most", (), -1.0)
        self.selected_error = state("selected_error", (), 0.0)
        self.other_error = state("other_error", (), 0.0)
        self.last = state("last", (BATCH,), 0.0)

    def call(self, inputs):
        shortcut, outputs = inputs
        difference = outputs - shortcut
        selected = ops.cast(ops.any(ops.not_equal(difference, 0.0), axis=1), "float32")
        count = ops.sum(selected)
        error = ops.max(ops.abs(difference - self.added), axis=1)
        self.counts.assign(self.counts + selected)
        self.fewest.assign(ops.minimum(self.fewest, count))
        self.most.assign(ops.maximum(self.most, count))
        self.selected_error.assign(
            ops.maximum(self.selected_error, ops.max(error * selected))
        )
        self.other_error.assign(
            ops.maximum(
                self.other_error,
                ops.max(ops.max(ops.abs(difference), axis=1) * (1.0 - selected)),
            )
        )
        self.last.assign(selected)
        return outputs

    def compute_output_shape(self, input_shape):
        return input_shape[1]


def recorded_model(block, added):
    inputs = keras.Input((WIDTH,))
    recorder = Recorder(added)
    outputs = recorder([inputs, block(inputs)])
    return keras.Model(inputs, outputs), recorder


def fit(model, steps, *, learning_rate=0.0, callbacks=(), seed=0):
    """`steps` compiled SGD steps of batch BATCH; compiles the model the
    first time only, so later calls reuse the traced train step."""
    x = np.random.default_rng(seed).normal(size=(steps * BATCH, WIDTH))
    if not model.compiled:
        model.compile(
            keras.optimizers.SGD(learning_rate), "mse", jit_compile=JIT_COMPILE
        )
    model.fit(
        x.astype("float32"),
        np.zeros((steps * BATCH, WIDTH), "float32"),
        batch_size=BATCH,
        shuffle=False,
        verbose=0,
        callbacks=list(callbacks),
    )


def test_compiled_steps_give_the_branch_to_exactly_k_uniform_samples():
    rate, steps = 0.35, 200
    k = k_of(rate)
    block = StochasticDepthBlock(
        ones_branch(), rate, mode="subset", rescale_at="training", seed=5
    )
    model, recorder = recorded_model(block, BATCH / k)
    fit(model, steps)
    assert to_numpy(recorder.fewest) == k
    assert to_numpy(recorder.most) == k
    assert to_numpy(recorder.selected_error) <= 1e-6
    assert to_numpy(recorder.other_error) == 0.0  # the shortcut, exactly
    frequency = to_numpy(recorder.counts) / steps
    p = k / BATCH
    np.testing.assert_allclose(frequency, p, atol=4 * np.sqrt(p * (1 - p) / steps))


def test_selected_samples_get_the_scaled_branch_others_the_shortcut():
    rate = 0.45
    k = k_of(rate)
    branch = keras.layers.Dense(WIDTH, kernel_initializer="glorot_normal")
    block = StochasticDepthBlock(
        branch, rate, mode="subset", rescale_at="training", seed=2
    )
    x = np.random.default_rng(0).normal(size=(BATCH, WIDTH)).astype("float32")
    y = to_numpy(block(x, training=True))
    residual = to_numpy(branch(x))
    selected = np.any(y != x, axis=1)
    assert selected.sum() == k
    np.testing.assert_array_equal(y[~selected], x[~selected])
    np.testing.assert_allclose(
        y[selected], x[selected] + BATCH / k * residual[selected], rtol=1e-5, atol=1e-6
    )


def test_projection_shortcut_and_unscaled_branch():
    rate = 0.5
    branch = keras.layers.Dense(3)
    shortcut = keras.layers.Dense(3)
    block = StochasticDepthBlock(branch, rate, shortcut=shortcut, mode="subset", seed=1)
    x = np.random.default_rng(1).normal(size=(BATCH, WIDTH)).astype("float32")
    y = to_numpy(block(x, training=True))
    projected, residual = to_numpy(shortcut(x)), to_numpy(branch(x))
    selected = np.any(y != projected, axis=1)
    assert selected.sum() == k_of(rate)
    np.testing.assert_array_equal(y[~selected], projected[~selected])
    np.testing.assert_allclose(
        y[selected], projected[selected] + residual[selected], rtol=1e-5, atol=1e-6
    )


def test_branch_weights_get_gradients_from_the_selected_samples_only():
    rate, learning_rate = 0.5, 0.5
    k = k_of(rate)
    rng = np.random.default_rng(3)
    kernel = rng.normal(size=(WIDTH, WIDTH)).astype("float32")
    branch = keras.layers.Dense(WIDTH, use_bias=False)
    block = StochasticDepthBlock(
        branch, rate, mode="subset", rescale_at="training", seed=4
    )
    model, recorder = recorded_model(block, 0.0)
    branch.kernel.assign(kernel)
    fit(model, 1, learning_rate=learning_rate, seed=6)
    x = np.random.default_rng(6).normal(size=(BATCH, WIDTH)).astype("float32")
    selected = to_numpy(recorder.last).astype(bool)
    assert selected.sum() == k
    # y_i = x_i + s x_i W for a selected sample, x_i otherwise, s = B / k;
    # mse over B * WIDTH entries against 0: dL/dy = 2 y / (B WIDTH), and
    # dL/dW = s * sum over selected i of x_i^T dL/dy_i.
    scale = BATCH / k
    y = x + scale * (x @ kernel) * selected[:, None]
    grad_y = 2.0 * y / (BATCH * WIDTH)
    gradient = scale * x[selected].T @ grad_y[selected]
    np.testing.assert_allclose(
        to_numpy(branch.kernel), kernel - learning_rate * gradient, rtol=1e-4, atol=1e-6
    )
    every = scale * x.T @ (2.0 * (x + scale * x @ kernel) / (BATCH * WIDTH))
    assert not np.allclose(to_numpy(branch.kernel), kernel - learning_rate * every)


def test_batchnorm_in_the_branch_sees_only_the_subset():
    rate = 0.5
    norm = keras.layers.BatchNormalization(momentum=0.0, center=False, scale=False)
    block = StochasticDepthBlock(norm, rate, mode="subset", seed=8)
    x = np.random.default_rng(2).normal(size=(BATCH, WIDTH)).astype("float32")
    x[:, 0] += np.arange(BATCH)  # samples differ in mean
    selected = np.any(to_numpy(block(x, training=True)) != x, axis=1)
    assert selected.sum() == k_of(rate)
    np.testing.assert_allclose(
        to_numpy(norm.moving_mean), x[selected].mean(axis=0), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("rescale_at, factor", [("inference", 0.7), ("training", 1.0)])
def test_inference_follows_rescale_at(rescale_at, factor):
    branch = keras.layers.Dense(WIDTH)
    block = StochasticDepthBlock(
        branch, 0.3, mode="subset", rescale_at=rescale_at, seed=0
    )
    x = np.random.default_rng(0).normal(size=(BATCH, WIDTH)).astype("float32")
    out = to_numpy(block(x))
    np.testing.assert_array_equal(out, to_numpy(block(x, training=False)))
    np.testing.assert_allclose(out, x + factor * to_numpy(branch(x)), rtol=1e-6)


def test_monte_carlo_pass_drops_each_sample_with_the_rate_whatever_the_batch():
    """In a Monte Carlo pass (inference inside `monte_carlo_scope`) the block
    acts per sample: shortcut + b * residual * scale, b ~ Bernoulli(1 - rate)
    per sample, BatchNorm in the branch on its moving statistics, the rate
    read from the rate variable. k samples per batch would never drop a
    batch of one and drop half of a batch of two at rate 0.3."""
    x = np.random.default_rng(0).normal(size=(2, WIDTH)).astype("float32")
    blocks, residuals = {}, {}
    for rescale_at in ("training", "inference"):
        norm = keras.layers.BatchNormalization(beta_initializer="ones")
        blocks[rescale_at] = StochasticDepthBlock(
            norm, 0.3, mode="subset", rescale_at=rescale_at, seed=4
        )
        blocks[rescale_at](x)
        residuals[rescale_at] = to_numpy(norm(x, training=False))  # about x + 1

    def frequencies(rate, batch, calls):
        """Per block, the fraction of `calls` x `batch` samples dropped."""
        found = []
        with monte_carlo_scope():
            for rescale_at, block in blocks.items():
                scale = 1.0 / (1.0 - rate) if rescale_at == "training" else 1.0
                kept = x[:batch] + scale * residuals[rescale_at][:batch]
                outputs = [
                    to_numpy(block(x[:batch], training=False)) for _ in range(calls)
                ]
                drops = [np.all(np.isclose(y, x[:batch]), axis=1) for y in outputs]
                keeps = [np.all(np.isclose(y, kept), axis=1) for y in outputs]
                assert np.all(np.logical_xor(drops, keeps))
                found.append(np.mean(drops))
        return found

    # 200 draws per block and case: 4 standard deviations are 0.13.
    for frequency in frequencies(0.3, 1, 200) + frequencies(0.3, 2, 100):
        assert abs(frequency - 0.3) < 0.13, frequency
    for block in blocks.values():
        block._set_current_strength(0.7)  # as DropRateScheduler does
    for frequency in frequencies(0.7, 1, 200):
        assert abs(frequency - 0.7) < 0.13, frequency


def test_seeds_are_reproducible():
    x = np.random.default_rng(0).normal(size=(BATCH, WIDTH)).astype("float32")

    def make(seed):
        branch = keras.layers.Dense(WIDTH, kernel_initializer="ones")
        return StochasticDepthBlock(branch, 0.5, mode="subset", seed=seed)

    def functional(seed):
        return keras_drop.ops.drop_path_subset(x, lambda s: s * 2.0, 0.5, seed=seed)

    assert_seed_behaviour(make, x, functional)


def test_functional_form_and_its_arguments():
    x = np.ones((BATCH, WIDTH), "float32")
    y = to_numpy(keras_drop.ops.drop_path_subset(x, lambda s: s, 0.75, seed=1))
    k = k_of(0.75)
    np.testing.assert_array_equal(np.sort(y[:, 0]), [1.0] * (BATCH - k) + [6.0] * k)
    # At rate 0 every sample is kept: the plain residual sum.
    z = to_numpy(keras_drop.ops.drop_path_subset(x, lambda s: s * 3.0, 0.0, seed=1))
    np.testing.assert_array_equal(z, np.full_like(x, 4.0))
    with pytest.raises(ValueError, match="`rate`"):
        keras_drop.ops.drop_path_subset(x, lambda s: s, keras.Variable(0.5))
    with pytest.raises(ValueError, match="`branch`"):
        keras_drop.ops.drop_path_subset(x, None, 0.5)
    with pytest.raises(ValueError, match="`mode`.*'row'"):
        StochasticDepthBlock(ones_branch(), 0.5, mode="row")


@pytest.mark.parametrize(
    "rate, branch, rows",
    [
        (0.5, lambda s: s[:1], "(1, 4) for branch input shape=(5, 4)"),
        (0.5, lambda s: ops.concatenate([s, s]), "(10, 4) for branch input shape=(5"),
        (0.0, lambda s: s[:1], "(1, 4) for branch input shape=(10, 4)"),
        (0.5, lambda s: ops.sum(s), "() for branch input shape=(5, 4)"),
    ],
    ids=["fewer", "more", "rate_zero", "scalar"],
)
def test_a_branch_returning_other_rows_is_an_error_naming_the_shapes(
    rate, branch, rows
):
    x = np.ones((BATCH, WIDTH), "float32")
    with pytest.raises(ValueError, match="one row per sample") as error:
        keras_drop.ops.drop_path_subset(x, branch, rate, seed=1)
    assert f"Received: branch output shape={rows}" in str(error.value)


def _subset_warnings(batch, rate, *, calls=2, training=True):
    """The small-batch warnings of `calls` calls of a subset block."""
    block = StochasticDepthBlock(ones_branch(), rate, mode="subset", seed=1)
    x = np.ones((batch, WIDTH), "float32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(calls):
            block(x, training=training)
        model = keras.Sequential([keras.Input((WIDTH,)), block])
        keras_drop.mc_predict(model, x, samples=2)
    return [w for w in caught if "StochasticDepthBlock" in str(w.message)]


def test_a_batch_that_skews_the_realized_rate_warns_once():
    # B = 1 always runs the branch: a realized rate of 0 where rate=0.2.
    (warning,) = _subset_warnings(1, 0.2)
    assert warning.category is UserWarning
    assert "= 1 of the B = 1 samples" in str(warning.message)
    assert "a drop rate of 0 where rate=0.2" in str(warning.message)
    # 1 - 51 / 64 = 0.203 is close to 0.2; inference and Monte Carlo
    # passes (each sample at its own rate) do not warn.
    assert _subset_warnings(64, 0.2) == []
    assert _subset_warnings(1, 0.2, training=False) == []


@pytest.mark.backends(
    "tensorflow", reason="only TensorFlow traces a step with an unknown batch size"
)
def test_unknown_batch_size_gives_a_run_time_k():
    import tensorflow as tf

    block = StochasticDepthBlock(ones_branch(), 0.4, mode="subset", seed=3)

    @tf.function(input_signature=[tf.TensorSpec((None, WIDTH))])
    def step(x):
        return block(x, training=True)

    for batch in (7, 10, 16):
        y = step(tf.zeros((batch, WIDTH))).numpy()
        assert np.any(y != 0.0, axis=1).sum() == k_of(0.4, batch)


@pytest.mark.backends(
    "jax", reason="a batch size that is a symbol is JAX's shape polymorphism"
)
def test_symbolic_batch_size_keeps_the_branch_of_exactly_k_samples():
    # jax.export with a polymorphic batch, as `model.export` traces: no
    # slice can have k rows there.
    import jax

    rate = 0.45
    branch = keras.layers.Dense(WIDTH, kernel_initializer="glorot_normal")
    block = StochasticDepthBlock(
        branch, rate, mode="subset", rescale_at="training", seed=2
    )
    block.build((None, WIDTH))
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape(f"b, {WIDTH}"), "float32")
    exported = jax.export.export(jax.jit(lambda x: block(x, training=True)))(spec)
    for batch in (7, BATCH, 16):
        x = np.random.default_rng(batch).normal(size=(batch, WIDTH)).astype("float32")
        y = np.asarray(exported.call(x))
        k = k_of(rate, batch)
        selected = np.any(y != x, axis=1)
        assert selected.sum() == k
        np.testing.assert_array_equal(y[~selected], x[~selected])
        residual = to_numpy(branch(x))
        np.testing.assert_allclose(
            y[selected],
            x[selected] + batch / k * residual[selected],
            rtol=1e-5,
            atol=1e-6,
        )


class AlwaysTraining(keras.Model):
    """Calls its block in training mode, also when Keras infers shapes."""

    def __init__(self, block, **kwargs):
        super().__init__(**kwargs)
        self.block = block

    def call(self, inputs):
        return self.block(inputs, training=True)


def test_scheduler_runs_after_a_symbolic_shape_inference():
    # JAX infers a subclassed model's shapes with a symbolic batch size;
    # the scheduler must not ask that symbol for k.
    model = AlwaysTraining(StochasticDepthBlock(ones_branch(), 0.5, mode="subset"))
    model(keras.Input((WIDTH,)))
    fit(model, 2, callbacks=[keras_drop.DropRateScheduler()])
    assert to_numpy(model.block.rate) == pytest.approx(0.5)


def test_scheduled_rate_changes_k_in_the_compiled_step():
    rate = 0.6
    block = StochasticDepthBlock(ones_branch(), rate, mode="subset", seed=3)
    model, recorder = recorded_model(block, 1.0)
    fit(model, 2)  # traced and compiled with k for the configured rate
    assert to_numpy(recorder.most) == k_of(rate)
    for variable in (recorder.fewest, recorder.most):
        variable.assign(1e9 if variable is recorder.fewest else -1.0)
    schedule = keras_drop.DropRateScheduler(lambda progress: 0.5)
    fit(model, 3, callbacks=[schedule])
    assert to_numpy(recorder.fewest) == to_numpy(recorder.most) == k_of(rate / 2)
    # The scheduler restores the configured rate, and k, when fit ends.
    recorder.most.assign(-1.0)
    fit(model, 1)
    assert to_numpy(recorder.most) == k_of(rate)


class SelfAttention(keras.layers.Layer):
    def __init__(self, heads=2, **kwargs):
        super().__init__(**kwargs)
        self.heads = heads
        self.norm = keras.layers.LayerNormalization()

    def build(self, input_shape):
        width = input_shape[-1]
        self.norm.build(input_shape)
        self.attention = keras.layers.MultiHeadAttention(
            self.heads, width // self.heads
        )
        self.attention.build(input_shape, input_shape)

    def call(self, inputs):
        hidden = self.norm(inputs)
        return self.attention(hidden, hidden)

    def get_config(self):
        return {**super().get_config(), "heads": self.heads}


def encoder_model(tokens=6, width=8, rate=0.4):
    inputs = keras.Input((tokens, width))
    mlp = keras.Sequential(
        [
            keras.layers.LayerNormalization(),
            keras.layers.Dense(2 * width, activation="gelu"),
            keras.layers.Dense(width),
        ]
    )
    hidden = StochasticDepthBlock(SelfAttention(), rate, mode="subset", seed=1)(inputs)
    hidden = StochasticDepthBlock(
        mlp, rate, mode="subset", rescale_at="training", seed=2
    )(hidden)
    outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(hidden))
    return keras.Model(inputs, outputs)


def test_transformer_encoder_block_trains_in_compiled_fit():
    # jit_compile=True on TensorFlow (XLA) and JAX: rank-3 Dense branches.
    model = encoder_model()
    model.compile(keras.optimizers.Adam(0.01), "mse", jit_compile=JIT_COMPILE)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6, 8)).astype("float32")
    y = x.mean(axis=(1, 2))[:, None].astype("float32")
    before = [to_numpy(w) for w in model.trainable_weights]
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    after = [to_numpy(w) for w in model.trainable_weights]
    assert all(not np.array_equal(a, b) for a, b in zip(after, before, strict=True))


def test_keras_round_trip(tmp_path):
    inputs = keras.Input((WIDTH,))
    hidden = StochasticDepthBlock(
        keras.layers.Dense(WIDTH), 0.3, mode="subset", seed=1
    )(inputs)
    outputs = StochasticDepthBlock(
        keras.Sequential(
            [keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)]
        ),
        0.2,
        shortcut=keras.layers.Dense(3),
        mode="subset",
        rescale_at="training",
        seed=2,
    )(hidden)
    model = keras.Model(inputs, outputs)
    path = tmp_path / "subset.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    blocks = [b for b in loaded.layers if isinstance(b, StochasticDepthBlock)]
    assert [b.get_config()["mode"] for b in blocks] == ["subset", "subset"]
    assert [b.rescale_at for b in blocks] == ["inference", "training"]
    x = np.random.default_rng(0).normal(size=(BATCH, WIDTH)).astype("float32")
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(model(x)))
    # Loaded and trained: exactly k samples of a batch get each branch.
    trained = to_numpy(blocks[0](x, training=True))
    assert np.any(trained != x, axis=1).sum() == k_of(0.3)


def test_add_stochastic_depth_refuses_subset_mode_and_says_why():
    inputs = keras.Input((WIDTH,))
    outputs = keras.layers.Add()([inputs, keras.layers.Dense(WIDTH)(inputs)])
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match="StochasticDepthBlock"):
        keras_drop.add_stochastic_depth(model, 0.2, mode="subset")
