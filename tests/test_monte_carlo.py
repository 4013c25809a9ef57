"""Monte Carlo inference: `mc_predict` and `export_monte_carlo`.

- BatchNormalization stays in inference while the regularizers draw: the
  Monte Carlo mean of a Dense-BN-Dropout-Dense model fed inputs far from
  BN's moving statistics is `model(x, training=False)` within 4 sigma,
  where BN on batch statistics would be far off.
- keras_drop layers but `Cutout`, and Keras' `Dropout`,
  `SpatialDropout1D`, `GaussianDropout`, `AlphaDropout`, are active, in
  functional, Sequential and subclassed models, nested models and layers
  held by subclassed layers; with every rate at 0 a pass is the inference
  output.
- Seeds reproduce; `fixed_masks` gives duplicated inputs the same outputs;
  batches go through one trace; the model is left unchanged.
- The exported SavedModel, served with TensorFlow alone, returns the mean
  and variance of `mc_predict` within 4 sigma; with several outputs (a
  list, a dict, of different shapes) one mean and one variance per output.
- A subset StochasticDepthBlock drops each input with its rate at batch
  size 1 and 2, for one input and with `fixed_masks`; a rate applied
  between two calls (as `DropRateScheduler` does) reaches the second.
- `x` in every form `predict` takes (a tuple, list or dict for two inputs,
  datasets, generators); clear errors for other forms, an empty `x` and a
  non-bool `fixed_masks`; samples in chunks of one size, wasting under one
  pass per chunk.
"""

from __future__ import annotations

import contextlib
import json

import keras
import numpy as np
import pytest

import keras_drop
from keras_drop.layers._base import ScheduledStrength
from keras_drop.layers._keras_internals import sublayers
from tests.helpers import BACKEND, ROOT, run_in_fresh_process, to_numpy

EXPORT_BACKENDS = ("tensorflow", "jax")
EXPORT_REASON = (
    "a TensorFlow SavedModel is exported from the TensorFlow and JAX "
    "backends only (PyTorch raises, tested below)"
)


def bn_model() -> keras.Model:
    """Dense -> BN -> Dropout(0.5) -> Dense, BN's moving statistics those of
    standard normal features. The weights come from NumPy, so the model is
    the same on every backend."""
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Dropout(0.5, seed=1)(x)
    outputs = keras.layers.Dense(3)(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(1)
    for weight in model.trainable_weights:
        weight.assign(rng.normal(0.0, 0.5, weight.shape).astype("float32"))
    return model


def far_inputs(n: int = 16) -> np.ndarray:
    """Inputs whose batch statistics are far from BN's moving ones."""
    rng = np.random.default_rng(0)
    return rng.normal(3.0, 2.0, (n, 4)).astype("float32")


@pytest.fixture(scope="module")
def bn_draws():
    model = bn_model()
    x = far_inputs()
    draws = keras_drop.mc_predict(model, x, 2000, batch_size=16, seed=0)
    return model, x, draws


def batch_statistics_output(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """The expected output with BN on the batch's statistics (as with
    `training=True`; the dropout averages out)."""
    dense, bn, _, head = model.layers[1:]
    h = to_numpy(dense(x))
    mean, variance = h.mean(axis=0), h.var(axis=0)
    gamma, beta = to_numpy(bn.gamma), to_numpy(bn.beta)
    normalized = gamma * (h - mean) / np.sqrt(variance + bn.epsilon) + beta
    return to_numpy(head(normalized))


def test_batchnorm_stays_in_inference(bn_draws):
    model, x, draws = bn_draws
    assert draws.shape == (2000, 16, 3)
    inference = to_numpy(model(x, training=False))
    sigma = draws.std(axis=0) / np.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - inference) <= 4 * sigma + 1e-6)
    # BN on batch statistics is far off, in units of the same sigma.
    training = batch_statistics_output(model, x)
    assert np.median(np.abs(training - inference) / sigma) > 20


def test_passes_vary(bn_draws):
    _, _, draws = bn_draws
    assert np.all(draws.var(axis=0) > 0)
    flat = draws.reshape(len(draws), -1)
    assert len(np.unique(flat, axis=0)) == len(draws)


def functional_model() -> keras.Model:
    """keras_drop layers in a functional model, one in a nested model."""
    inputs = keras.Input((8, 4))
    x = keras_drop.DropBlock1D(0.2, 3, seed=1)(inputs)
    nested = keras.Sequential(
        [
            keras.layers.Dense(4),
            keras.layers.BatchNormalization(),
            keras_drop.DropPath(0.3, seed=2),
        ],
        name="nested",
    )
    x = nested(x)
    x = keras_drop.StochasticDepth(0.3, mode="row", seed=3)(
        [x, keras.layers.Dense(4)(x)]
    )
    x = keras.layers.Flatten()(x)
    outputs = keras_drop.DropConnectDense(3, 0.2, seed=4)(x)
    return keras.Model(inputs, outputs)


def sequential_model() -> keras.Sequential:
    """Cutout (left off), a Stochastic Depth block around Conv-BN, Uout."""
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras_drop.Cutout(3, seed=5),
            keras.layers.Conv2D(3, 3, padding="same"),
            keras.layers.BatchNormalization(),
            keras_drop.StochasticDepthBlock(
                keras.Sequential(
                    [keras.layers.Conv2D(3, 1), keras.layers.BatchNormalization()]
                ),
                0.3,
                seed=6,
            ),
            keras_drop.UniformDropout(0.3, seed=7),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )


class KerasDropouts(keras.layers.Layer):
    """A layer holding BN, a DropPath and Keras' own dropout layers, one
    output head each."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(12)
        self.bn = keras.layers.BatchNormalization()
        self.drop_path = keras_drop.DropPath(0.3, seed=9)
        self.dropouts = [
            keras.layers.Dropout(0.3),  # unseeded
            keras.layers.SpatialDropout1D(0.3, seed=2),
            keras.layers.GaussianDropout(0.3, seed=4),
            keras.layers.AlphaDropout(0.3, seed=5),
        ]

    def call(self, inputs, training=None):
        h = self.bn(self.dense(inputs), training=training)
        sequence = keras.ops.reshape(h, (-1, 3, 4))
        heads = [
            self.drop_path(h, training=training),
            self.dropouts[0](h, training=training),
            self.dropouts[1](sequence, training=training),
            self.dropouts[2](h, training=training),
            self.dropouts[3](h, training=training),
        ]
        return [keras.ops.reshape(head, (-1, 12)) for head in heads]


class SubclassedModel(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = KerasDropouts()

    def call(self, inputs):  # `training` reaches the layer by the context
        return self.inner(inputs)


def subclassed_model() -> keras.Model:
    model = SubclassedModel()
    model(far_inputs(2))
    return model


MODELS = {
    "functional": (functional_model, lambda: every_layer_like((8, 4))),
    "sequential": (sequential_model, lambda: every_layer_like((6, 6, 2))),
    "subclassed": (subclassed_model, lambda: far_inputs(16)),
}


def every_layer_like(shape: tuple[int, ...], n: int = 6) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.normal(1.0, 2.0, (n, *shape)).astype("float32")


@pytest.fixture(scope="module")
def functional():
    return functional_model()


@pytest.fixture(scope="module")
def subclassed():
    return subclassed_model()


def test_same_seed_same_array(functional):
    x = every_layer_like((8, 4), 5)
    first = keras_drop.mc_predict(functional, x, 3, batch_size=2, seed=7)
    again = keras_drop.mc_predict(functional, x, 3, batch_size=2, seed=7)
    other = keras_drop.mc_predict(functional, x, 3, batch_size=2, seed=8)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_fixed_masks_give_duplicates_one_output(functional):
    x = every_layer_like((8, 4), 4)
    # Copies in other batches and at other positions.
    duplicated = np.concatenate([x, x[::-1], x[2:3]])
    draws = keras_drop.mc_predict(
        functional, duplicated, 4, batch_size=3, seed=0, fixed_masks=True
    )
    np.testing.assert_allclose(draws[:, 4:8], draws[:, 3::-1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(draws[:, 8], draws[:, 2], rtol=1e-5, atol=1e-6)
    # Still random over samples.
    assert not np.allclose(draws[0], draws[1])
    plain = keras_drop.mc_predict(functional, duplicated, 4, batch_size=3, seed=0)
    assert not np.allclose(plain[:, 4:8], plain[:, 3::-1])


@contextlib.contextmanager
def silenced(model: keras.Model):
    """Every rate of `model` at 0 in the block: keras_drop's through the
    scheduler's hook (compiled steps see it: no new trace), Keras' by
    assignment."""
    ours = [layer for layer in sublayers(model) if isinstance(layer, ScheduledStrength)]
    keras_own = [
        layer
        for layer in sublayers(model)
        if isinstance(layer, keras_drop.monte_carlo.KERAS_DROPOUTS)
    ]
    rates = [layer.rate for layer in keras_own]
    for layer in ours:
        layer._set_current_strength(0.0)
    for layer in keras_own:
        layer.rate = 0.0
    try:
        yield
    finally:
        for layer in ours:
            layer._set_current_strength(layer._get_strength())
        for layer, rate in zip(keras_own, rates, strict=True):
            layer.rate = rate


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_kind(name, functional, subclassed):
    """Functional (with a nested model), Sequential (with a block around
    Conv-BN) and subclassed models (layers held by a layer): at the models'
    rates every pass differs from inference; at rate 0 a pass is the
    inference output (BN on moving statistics, Cutout off)."""
    make, make_inputs = MODELS[name]
    model = {"functional": functional, "subclassed": subclassed}.get(name) or make()
    x = make_inputs()
    inference = keras.tree.map_structure(to_numpy, model(x, training=False))
    draws = keras_drop.mc_predict(model, x, 3, batch_size=4, seed=0)
    for head, reference in zip(
        keras.tree.flatten(draws), keras.tree.flatten(inference), strict=True
    ):
        assert head.shape == (3, *reference.shape)
        for sample in head:
            assert not np.allclose(sample, reference)
        assert not np.allclose(head[0], head[1])
    with silenced(model):
        # (StochasticDepth's inference output depends on its rate.)
        inference = keras.tree.map_structure(to_numpy, model(x, training=False))
        quiet = keras_drop.mc_predict(model, x, 2, batch_size=4, seed=0)
    for head, reference in zip(
        keras.tree.flatten(quiet), keras.tree.flatten(inference), strict=True
    ):
        np.testing.assert_allclose(head, np.stack([reference] * 2), atol=1e-5)


def test_keras_dropouts_leave_the_model_as_it_was(subclassed):
    model = subclassed
    x = far_inputs(6)
    inference = [to_numpy(head) for head in model(x, training=False)]
    state = [to_numpy(v) for v in model.non_trainable_variables]
    draws = keras_drop.mc_predict(model, x, 2, batch_size=4, seed=0)
    again = keras_drop.mc_predict(model, x, 2, batch_size=4, seed=0)
    for head, repeated in zip(draws, again, strict=True):
        np.testing.assert_array_equal(head, repeated)  # the unseeded one too
    assert all("call" not in vars(layer) for layer in model.inner.dropouts)
    after = [to_numpy(head) for head in model(x, training=False)]
    for head, reference in zip(after, inference, strict=True):
        np.testing.assert_array_equal(head, reference)
    for before, variable in zip(state, model.non_trainable_variables, strict=True):
        np.testing.assert_array_equal(before, to_numpy(variable))


class CountingLayer(keras.layers.Layer):
    """Counts the Python executions of its `call` (traces, when compiled)."""

    calls = 0

    def call(self, inputs):
        CountingLayer.calls += 1
        return inputs


def test_batches_go_through_one_trace():
    model = keras.Sequential(
        [keras.Input((4,)), keras_drop.DropPath(0.5, seed=0), CountingLayer()]
    )
    CountingLayer.calls = 0
    keras_drop.mc_predict(model, far_inputs(10), 3, batch_size=2, seed=0)
    if BACKEND == "torch":  # eager there, as Keras' own predict
        assert CountingLayer.calls == 3 * 5
        return
    # One trace (TensorFlow's `map` runs its body twice to trace it) for 3
    # samples x 5 batches, none for more batches.
    assert CountingLayer.calls in (1, 2)
    traced = CountingLayer.calls
    keras_drop.mc_predict(model, far_inputs(20), 3, batch_size=2, seed=1)
    assert CountingLayer.calls == traced


def test_errors():
    x = far_inputs(4)
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="holds no regularizer"):
        keras_drop.mc_predict(plain, x)
    augmenting = keras.Sequential(
        [keras.Input((4, 4, 1)), keras_drop.Cutout(2, seed=0), keras.layers.Flatten()]
    )
    with pytest.raises(ValueError, match="holds no regularizer"):
        keras_drop.mc_predict(augmenting, x.reshape(1, 4, 4, 1))
    model = bn_model()
    for samples in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="samples"):
            keras_drop.mc_predict(model, x, samples)
    with pytest.raises(ValueError, match="samples=0"):
        keras_drop.export_monte_carlo(model, "unused", samples=0)
    with pytest.raises(ValueError, match="batch_size"):
        keras_drop.mc_predict(model, x, batch_size=0)
    with pytest.raises(ValueError, match="seed"):
        keras_drop.mc_predict(model, x, seed=-1)


@pytest.mark.backends("torch", reason="the error of the backend without export")
def test_export_raises_on_torch(tmp_path):
    with pytest.raises(NotImplementedError, match="TensorFlow and JAX"):
        keras_drop.export_monte_carlo(bn_model(), tmp_path / "mc")


@pytest.mark.backends(*EXPORT_BACKENDS, reason=EXPORT_REASON)
def test_exported_statistics_match_mc_predict(bn_draws, tmp_path):
    model, x, draws = bn_draws
    samples = 200
    np.save(tmp_path / "inputs.npy", x)
    keras_drop.export_monte_carlo(
        model, tmp_path / "saved_model" / "mc", samples=samples
    )
    run_in_fresh_process([str(ROOT / "tests" / "serve_exported.py"), str(tmp_path)])
    served = np.load(tmp_path / "served.npz")
    report = json.loads((tmp_path / "served.json").read_text())
    assert not report["keras_drop_imported"]
    mean, variance = served["saved_model.mc.0"]
    np.testing.assert_array_equal(served["saved_model.mc.1"], [mean, variance])
    # Standard errors of both estimates (the variance's from the fourth
    # central moment), combined.
    mc_mean, mc_variance = draws.mean(axis=0), draws.var(axis=0)
    fourth = ((draws - mc_mean) ** 4).mean(axis=0)
    mean_error = np.sqrt(mc_variance / samples + mc_variance / len(draws))
    variance_error = np.sqrt(
        (fourth - mc_variance**2) / samples + (fourth - mc_variance**2) / len(draws)
    )
    assert np.all(np.abs(mean - mc_mean) <= 4 * mean_error)
    assert np.all(np.abs(variance - mc_variance) <= 4 * variance_error)


def ones_model() -> keras.Model:
    """Two heads on zero inputs, each 0 (dropped) or 1.25 (kept, scaled by
    1 / (1 - 0.2)): a subset block whose branch is constant ones, and a
    DropPath on ones."""
    inputs = keras.Input((3,))
    ones = keras.layers.Dense(3, kernel_initializer="zeros", bias_initializer="ones")
    block = keras_drop.StochasticDepthBlock(
        ones, 0.2, mode="subset", rescale_at="training", seed=1, name="block"
    )
    drop_path = keras_drop.DropPath(0.2, seed=2, name="drop_path")
    constant = keras.layers.Dense(
        3, kernel_initializer="zeros", bias_initializer="ones"
    )(inputs)
    return keras.Model(inputs, [block(inputs), drop_path(constant)])


@pytest.fixture(scope="module")
def ones():
    return ones_model()


def dropped(draws: np.ndarray, rate: float) -> np.ndarray:
    """Whether each (sample, input) was dropped; every entry of an input is
    0 or the kept value 1 / (1 - rate)."""
    kept = np.isclose(draws, 1.0 / (1.0 - rate), rtol=1e-5)
    assert np.all(kept | (draws == 0.0))
    assert np.all(kept.all(axis=-1) | ~kept.any(axis=-1))  # whole inputs
    return ~kept[..., 0]


@pytest.mark.parametrize(
    "inputs, samples, options, tolerance",
    [
        # Tolerances: about 4 standard deviations of the frequency.
        (4, 160, dict(batch_size=1), 0.065),  # 640 draws
        (1, 512, dict(), 0.07),  # one input
        (4, 160, dict(batch_size=2), 0.065),
        # One draw per sample, shared by every input: 256 draws.
        (2, 256, dict(fixed_masks=True), 0.1),
    ],
    ids=["batch_size=1", "one input", "batch_size=2", "fixed_masks"],
)
def test_subset_block_drops_each_input_with_its_rate_whatever_the_batch(
    ones, inputs, samples, options, tolerance
):
    """k = max(1, floor((1 - rate) B)) kept per batch would never drop a
    batch of one and drop half of a batch of two at rate 0.2: in a Monte
    Carlo pass every input's branch is dropped with probability `rate`."""
    x = np.zeros((inputs, 3), "float32")
    block_draws, _ = keras_drop.mc_predict(ones, x, samples, seed=0, **options)
    assert block_draws.shape == (samples, inputs, 3)
    frequency = dropped(block_draws, 0.2).mean()
    assert abs(frequency - 0.2) < tolerance, frequency
    if options.get("fixed_masks"):  # one network per sample
        assert np.all(block_draws == block_draws[:, :1])


def test_the_applied_rate_is_the_one_in_force_when_called(ones):
    """The rate `DropRateScheduler` applies (the layers' hook), changed
    between two calls that share a compiled step, reaches the second."""
    x = np.zeros((8, 3), "float32")
    layers = [ones.get_layer("block"), ones.get_layer("drop_path")]
    keras_drop.mc_predict(ones, x, 16, batch_size=2, seed=0)  # compiled at 0.2
    for layer in layers:
        layer._set_current_strength(0.7)
    try:
        draws = keras_drop.mc_predict(ones, x, 128, batch_size=2, seed=1)
    finally:
        for layer in layers:
            layer._set_current_strength(layer._get_strength())
    for head in draws:  # 1,024 draws each
        frequency = dropped(head, 0.7).mean()
        assert abs(frequency - 0.7) < 0.06, frequency


@pytest.mark.backends(*EXPORT_BACKENDS, reason=EXPORT_REASON)
def test_exported_subset_block_drops_each_served_row_with_its_rate(ones, tmp_path):
    """Served one row at a time or two, each row's branch is dropped with
    probability 0.2: its mean is 1.25 (1 - f), its variance
    1.25**2 f (1 - f) for a drop frequency f near 0.2."""
    import tensorflow as tf

    samples = 400
    keras_drop.export_monte_carlo(ones, tmp_path / "mc", samples=samples)
    artifact = tf.saved_model.load(str(tmp_path / "mc"))
    for rows in (1, 2):
        served = artifact.serve(np.zeros((rows, 3), "float32"))
        for head in (0, 1):  # the block, the DropPath
            mean = served[f"mean_{head}"].numpy()
            frequency = 1.0 - mean / 1.25
            np.testing.assert_allclose(
                served[f"variance_{head}"].numpy(),
                1.25**2 * frequency * (1.0 - frequency),
                rtol=1e-3,
                atol=1e-5,
            )
            # 4 standard deviations of a frequency over 400 draws: 0.08.
            assert np.all(np.abs(frequency - 0.2) < 0.08), frequency


def two_input_model() -> keras.Model:
    a, b = keras.Input((2,), name="a"), keras.Input((3,), name="b")
    x = keras.layers.Concatenate()([a, b])
    x = keras.layers.Dense(4, kernel_initializer="ones")(x)
    return keras.Model([a, b], keras_drop.DropPath(0.5, seed=3)(x))


def test_every_input_form_predict_takes():
    """A tuple, list or dict of arrays for a two-input model (the model's
    inputs, not positional arguments), and datasets or generators of
    batches, targets ignored, all give the arrays' draws."""
    import tensorflow as tf

    model = two_input_model()
    rng = np.random.default_rng(0)
    xa = rng.normal(size=(6, 2)).astype("float32")
    xb = rng.normal(size=(6, 3)).astype("float32")
    y = np.zeros((6, 1), "float32")

    def run(x):
        return keras_drop.mc_predict(model, x, 3, batch_size=4, seed=5)

    reference = run([xa, xb])
    assert reference.shape == (3, 6, 4)
    assert not np.allclose(reference[0], reference[1])

    def generator():
        for start in (0, 4):
            yield ((xa[start : start + 4], xb[start : start + 4]),)

    forms = {
        "tuple": (xa, xb),
        "dict": {"a": xa, "b": xb},
        "dataset": tf.data.Dataset.from_tensor_slices(((xa, xb), y)).batch(4),
        # Batches of 6 cut to `batch_size`.
        "dataset of x": tf.data.Dataset.from_tensor_slices(((xa, xb),)).batch(6),
        "generator": generator(),
    }
    for name, x in forms.items():
        np.testing.assert_allclose(run(x), reference, rtol=1e-6, err_msg=name)


def test_input_and_fixed_masks_errors():
    model = two_input_model()
    single = bn_model()
    with pytest.raises(ValueError, match="`x`.*model.predict"):
        keras_drop.mc_predict(single, [[1.0, 2.0, 3.0, 4.0]])
    with pytest.raises(ValueError, match="`x`.*at least one input"):
        keras_drop.mc_predict(single, np.zeros((0, 4), "float32"))
    with pytest.raises(ValueError, match="`x`.*at least one input"):
        keras_drop.mc_predict(
            model, (np.zeros((0, 2), "float32"), np.zeros((0, 3), "float32"))
        )
    with pytest.raises(ValueError, match="`fixed_masks`.*Received: fixed_masks='yes'"):
        keras_drop.mc_predict(single, far_inputs(4), fixed_masks="yes")


@pytest.mark.parametrize("samples, chunks", [(17, [9, 9]), (30, [15, 15])])
def test_chunks_of_one_size_waste_under_one_pass_each(samples, chunks, monkeypatch):
    """17 samples run 18 passes (2 x 9: one trace), not two chunks of 16;
    30 run 30. At most one pass per chunk is computed and dropped."""
    compiled = keras_drop.monte_carlo._compiled_passes
    run = []

    def counting(*args):
        passes, step = compiled(*args)

        def counted(values, states, batch):
            run.append(len(states[0]))
            return step(values, states, batch)

        return passes, counted

    monkeypatch.setattr(keras_drop.monte_carlo, "_compiled_passes", counting)
    model = keras.Sequential([keras.Input((4,)), keras_drop.DropPath(0.5, seed=0)])
    draws = keras_drop.mc_predict(model, far_inputs(6), samples, batch_size=4, seed=0)
    assert draws.shape == (samples, 6, 4)
    assert run == chunks * 2  # two batches
    assert 0 <= sum(chunks) - samples < len(chunks)


def multi_output_model(kind: str) -> keras.Model:
    """Two heads of different shapes (3 and 2 wide) behind a Dropout and a
    DropPath, as a list or a dict; NumPy weights."""
    inputs = keras.Input((4,))
    h = keras.layers.Dense(6)(inputs)
    first = keras.layers.Dense(3)(keras.layers.Dropout(0.5, seed=1)(h))
    second = keras.layers.Dense(2)(keras_drop.DropPath(0.3, seed=2)(h))
    outputs = [first, second] if kind == "list" else {"p": first, "q": second}
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(3)
    for weight in model.trainable_weights:
        weight.assign(rng.normal(0.0, 0.5, weight.shape).astype("float32"))
    return model


@pytest.mark.backends(*EXPORT_BACKENDS, reason=EXPORT_REASON)
@pytest.mark.parametrize("kind", ["list", "dict"])
def test_exported_statistics_of_several_outputs(kind, tmp_path):
    """One mean and one variance per output, of the output's shape, named by
    its place in the output structure, each `mc_predict`'s within 4 sigma."""
    import tensorflow as tf

    model = multi_output_model(kind)
    x = far_inputs(6)
    samples = 200
    keras_drop.export_monte_carlo(model, tmp_path / "mc", samples=samples)
    artifact = tf.saved_model.load(str(tmp_path / "mc"))
    served = artifact.serve(x)
    draws = keras_drop.mc_predict(model, x, 400, batch_size=6, seed=0)
    keys = [0, 1] if kind == "list" else ["p", "q"]
    assert sorted(served) == sorted(
        f"{statistic}_{key}" for statistic in ("mean", "variance") for key in keys
    )
    for key, width in zip(keys, (3, 2), strict=True):
        head = draws[key]
        mean = served[f"mean_{key}"].numpy()
        variance = served[f"variance_{key}"].numpy()
        assert mean.shape == variance.shape == (6, width)
        mc_mean, mc_variance = head.mean(axis=0), head.var(axis=0)
        fourth = ((head - mc_mean) ** 4).mean(axis=0)
        mean_error = np.sqrt(mc_variance / samples + mc_variance / len(head))
        variance_error = np.sqrt(
            (fourth - mc_variance**2) / samples + (fourth - mc_variance**2) / len(head)
        )
        assert np.all(mc_variance > 0)
        assert np.all(np.abs(mean - mc_mean) <= 4 * mean_error + 1e-6)
        assert np.all(np.abs(variance - mc_variance) <= 4 * variance_error + 1e-6)
