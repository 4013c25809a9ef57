"""DropRateScheduler: the realized drop fraction in compiled `fit` steps
follows the schedule, step by step or epoch by epoch, in nested layers too;
the configured rate stays the config and comes back after `fit`."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_drop
from tests.helpers import JIT_COMPILE, Ones, to_numpy, zero_fraction

RATE = 0.5
BATCH = 2048  # samples per step: the realized fraction has std <= 0.011
TOLERANCE = 0.05


class StepLosses(keras.callbacks.Callback):
    """The loss of every step (or group of `steps_per_execution` steps),
    recovered from the running epoch mean Keras logs after each batch."""

    def __init__(self):
        super().__init__()
        self.values = []

    def on_epoch_begin(self, epoch, logs=None):
        self._steps, self._total = 0, 0.0

    def on_train_batch_end(self, batch, logs=None):
        steps = batch + 1
        total = float(logs["loss"]) * steps
        self.values.append((total - self._total) / (steps - self._steps))
        self._steps, self._total = steps, total


def _drop_path_model(layer, **compile_kwargs):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layer(Ones()(inputs)))
    model.compile(
        keras.optimizers.SGD(0.0),
        loss=zero_fraction,
        jit_compile=JIT_COMPILE,
        **compile_kwargs,
    )
    return model


def _fit(model, scheduler, *, steps, epochs=1, **kwargs):
    recorder = StepLosses()
    x = np.ones((steps * BATCH, 4), "float32")
    history = model.fit(
        x,
        x[:, :1],
        batch_size=BATCH,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=[*scheduler, recorder]
        if isinstance(scheduler, list)
        else [scheduler, recorder],
        **kwargs,
    )
    return np.array(recorder.values), history.history


def _current_rate(layer):
    return float(to_numpy(layer._current_strength()))


class RateProbe(keras.callbacks.Callback):
    """Records the rate each layer applies in each step."""

    def __init__(self, layers):
        super().__init__()
        self.layers = layers
        self.seen = []

    def on_train_batch_begin(self, batch, logs=None):
        if keras.backend.backend() == "jax":
            # Mid-epoch, JAX's fit holds the variables' values in its state.
            self.model.jax_state_sync()
        self.seen.append({layer.name: _current_rate(layer) for layer in self.layers})


def test_step_ramp_is_linear_from_zero_to_the_rate_in_the_compiled_step():
    layer = keras_drop.DropPath(RATE, seed=1)
    model = _drop_path_model(layer)
    realized, history = _fit(model, keras_drop.DropRateScheduler(), steps=8, epochs=2)
    expected = RATE * np.arange(16) / 15
    assert realized.shape == (16,)
    assert realized[0] == 0.0
    np.testing.assert_allclose(realized, expected, atol=TOLERANCE)
    assert realized[-1] == pytest.approx(RATE, abs=TOLERANCE)
    # Monotone up to sampling noise: each quarter drops more than the last.
    quarters = realized.reshape(4, 4).mean(axis=1)
    assert np.all(np.diff(quarters) > 0.05)
    np.testing.assert_allclose(history["drop_rate_factor"], [7 / 15, 1.0])
    # The configured rate is untouched and applied again after fit.
    assert layer.rate == RATE and layer.get_config()["rate"] == RATE
    assert _current_rate(layer) == pytest.approx(RATE)


def test_constant_zero_schedule_drops_nothing_in_any_step():
    model = _drop_path_model(keras_drop.DropPath(RATE, seed=1))
    realized, _ = _fit(
        model, keras_drop.DropRateScheduler(lambda p: 0.0), steps=4, epochs=2
    )
    np.testing.assert_array_equal(realized, np.zeros(8))


def test_epoch_granularity_holds_the_factor_within_each_epoch():
    model = _drop_path_model(keras_drop.DropPath(RATE, seed=1))
    scheduler = keras_drop.DropRateScheduler(update_freq="epoch")
    realized, history = _fit(model, scheduler, steps=4, epochs=3)
    expected = np.repeat([0.0, RATE / 2, RATE], 4)
    np.testing.assert_array_equal(realized[:4], np.zeros(4))
    np.testing.assert_allclose(realized, expected, atol=TOLERANCE)
    np.testing.assert_allclose(history["drop_rate_factor"], [0.0, 0.5, 1.0])


def test_initial_epoch_is_a_position_in_the_whole_run():
    # Epochs 2 and 3 of 4, as Keras' LearningRateScheduler sees them.
    model = _drop_path_model(keras_drop.DropPath(RATE, seed=1))
    scheduler = keras_drop.DropRateScheduler(update_freq="epoch")
    _, history = _fit(model, scheduler, steps=2, epochs=4, initial_epoch=2)
    np.testing.assert_allclose(history["drop_rate_factor"], [2 / 3, 1.0])


def test_a_second_fit_goes_on_with_the_ramp_from_its_initial_epoch():
    layer = keras_drop.DropPath(RATE, seed=1)
    model = _drop_path_model(layer)
    probe = RateProbe([layer])
    _fit(model, [keras_drop.DropRateScheduler(), probe], steps=2, epochs=2)
    # Steps 2 and 3 of 4 go on where the first epoch ended; a `fit` that
    # starts at epoch 0 starts the ramp again.
    _fit(
        model,
        [keras_drop.DropRateScheduler(), probe],
        steps=2,
        epochs=2,
        initial_epoch=1,
    )
    _fit(model, [keras_drop.DropRateScheduler(), probe], steps=2)
    seen = [rates[layer.name] for rates in probe.seen]
    np.testing.assert_allclose(seen, RATE * np.array([0, 1, 2, 3, 2, 3, 0, 3]) / 3)


class Preempted(Exception):
    pass


class Preempt(keras.callbacks.Callback):
    """Raises after the `after`-th step of this `fit`: the process dies."""

    def __init__(self, after):
        super().__init__()
        self.after = after
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps == self.after:
            raise Preempted


class StepRates(keras.callbacks.Callback):
    """The rate a layer applies in each step, with the optimizer's step
    count (the update the step applies), the epoch and the batch."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer
        self.seen = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if keras.backend.backend() == "jax":
            self.model.jax_state_sync()
        step = int(to_numpy(self.model.optimizer.iterations))
        self.seen.append((step, self.epoch, batch, _current_rate(self.layer)))


def _resumable_fit(backup_dir, update_freq, *, preempt_after=None, save_freq=None):
    """A fresh process's model and `fit(epochs=3)` of 4 steps each; with
    `save_freq`, under BackupAndRestore (epoch-level or every N steps)."""
    layer = keras_drop.DropPath(RATE, seed=1)
    model = _drop_path_model(layer)
    probe = StepRates(layer)
    callbacks = [keras_drop.DropRateScheduler(update_freq=update_freq), probe]
    if save_freq is not None:
        backup = keras.callbacks.BackupAndRestore(backup_dir, save_freq=save_freq)
        callbacks.insert(0, backup)
    if preempt_after is not None:
        callbacks.append(Preempt(preempt_after))
    x = np.ones((4 * 8, 4), "float32")
    try:
        model.fit(x, x[:, :1], batch_size=8, epochs=3, verbose=0, callbacks=callbacks)
    except Preempted:
        pass
    return probe.seen


@pytest.mark.parametrize("update_freq", ["epoch", "step"])
@pytest.mark.parametrize(
    "save_freq, preempt_after, resumed_at",
    [("epoch", 6, (4, 1)), (3, 8, (6, 1))],
    ids=["epoch_backup", "mid_epoch_backup"],
)
def test_a_run_resumed_by_backup_and_restore_applies_the_uninterrupted_factors(
    tmp_path, update_freq, save_freq, preempt_after, resumed_at
):
    uninterrupted = _resumable_fit(None, update_freq)
    assert [step for step, _, _, _ in uninterrupted] == list(range(12))
    rate_at = {(epoch, batch): rate for _, epoch, batch, rate in uninterrupted}
    if update_freq == "step":
        np.testing.assert_allclose(list(rate_at.values()), RATE * np.arange(12) / 11)
    else:
        np.testing.assert_allclose(
            list(rate_at.values()), np.repeat([0, RATE / 2, RATE], 4)
        )

    # Killed after `preempt_after` steps, then a new model in a new fit.
    preempted = _resumable_fit(
        tmp_path, update_freq, preempt_after=preempt_after, save_freq=save_freq
    )
    resumed = _resumable_fit(tmp_path, update_freq, save_freq=save_freq)
    assert len(preempted) == preempt_after
    # The new fit restarts from the backup: the optimizer's step count and
    # the epoch, whose batches Keras replays from the first (after a
    # mid-epoch backup, at the factors the uninterrupted run gave them).
    assert resumed[0][:3] == (*resumed_at, 0)
    assert [seen[1:3] for seen in resumed] == list(rate_at)[4 * resumed_at[1] :]
    for _, epoch, batch, rate in preempted + resumed:
        assert rate == rate_at[(epoch, batch)]


class OverflowAt(keras.losses.Loss):
    """A loss whose scaled float16 gradient overflows in the steps whose
    targets are nonzero (there the LossScaleOptimizer skips the update),
    and is zero in the others."""

    def call(self, y_true, y_pred):
        return ops.mean(ops.cast(y_pred, "float32")) * ops.mean(y_true)


def test_steps_the_loss_scale_optimizer_skips_still_advance_the_ramp():
    layer = keras_drop.DropPath(RATE, seed=1, dtype="mixed_float16")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layer(Ones(dtype="mixed_float16")(inputs)))
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.0))
    model.compile(optimizer, loss=OverflowAt(), jit_compile=JIT_COMPILE)
    probe = RateProbe([layer])
    # Two epochs of 4 steps; the first two steps of each overflow.
    y = np.zeros((4 * 8, 1), "float32")
    y[: 2 * 8] = 1e4
    model.fit(
        np.ones((4 * 8, 4), "float32"),
        y,
        batch_size=8,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[keras_drop.DropRateScheduler(), probe],
    )
    assert int(to_numpy(optimizer.iterations)) == 4  # 4 of 8 steps skipped
    seen = [rates[layer.name] for rates in probe.seen]
    np.testing.assert_allclose(seen, RATE * np.arange(8) / 7, rtol=1e-6)


def test_steps_per_execution_changes_the_rate_once_per_execution():
    if keras.backend.backend() == "torch":
        # No such granularity on torch: Keras' torch trainer refuses it.
        model = _drop_path_model(keras_drop.DropPath(RATE), steps_per_execution=4)
        with pytest.raises(ValueError, match="steps_per_execution"):
            _fit(model, keras_drop.DropRateScheduler(), steps=16)
        return
    model = _drop_path_model(keras_drop.DropPath(RATE, seed=1), steps_per_execution=4)
    realized, _ = _fit(model, keras_drop.DropRateScheduler(), steps=16)
    # One value per execution of 4 steps, at the progress of its first step.
    expected = RATE * np.array([0, 4, 8, 12]) / 15
    assert realized.shape == (4,)
    assert realized[0] == 0.0
    np.testing.assert_allclose(realized, expected, atol=TOLERANCE)


class Wrapper(keras.layers.Layer):
    """A subclassed layer that owns a keras_drop layer."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.drop = keras_drop.DropPath(RATE, seed=2)

    def call(self, inputs, training=None):
        return self.drop(inputs, training=training)


class SubclassedModel(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.scale = Ones()
        self.block = keras.Sequential([Wrapper()])

    def call(self, inputs, training=None):
        return self.block(self.scale(inputs), training=training)


def _nested_functional_model():
    inner = keras.Sequential([keras.Input((4,)), Wrapper()])
    inputs = keras.Input((4,))
    return keras.Model(inputs, inner(Ones()(inputs)))


@pytest.mark.parametrize(
    "build",
    [_nested_functional_model, SubclassedModel],
    ids=["functional", "subclassed"],
)
def test_nested_layers_are_reached(build):
    model = build()
    model.compile(
        keras.optimizers.SGD(0.0), loss=zero_fraction, jit_compile=JIT_COMPILE
    )
    # Unscheduled, the nested layer drops at its rate; scheduled at zero it
    # drops nothing, so the scheduler reached it.
    unscheduled, _ = _fit(model, keras.callbacks.Callback(), steps=2)
    scheduled, _ = _fit(model, keras_drop.DropRateScheduler(lambda p: 0.0), steps=2)
    np.testing.assert_allclose(unscheduled, RATE, atol=TOLERANCE)
    np.testing.assert_array_equal(scheduled, np.zeros(2))


def test_every_scheduled_layer_kind_is_set_to_factor_times_its_own_strength():
    inputs = keras.Input((8, 8, 3))
    hidden = keras_drop.DropBlock2D(0.2, 3, name="block")(Ones()(inputs))
    hidden = keras_drop.UniformDropout(0.4, name="uout")(hidden)
    hidden = keras_drop.StochasticDepth(0.3, name="depth")([hidden, hidden])
    hidden = keras.layers.Flatten()(hidden)
    hidden = keras_drop.StochasticDepthBlock(
        keras.layers.Dense(8 * 8 * 3), 0.6, name="skip"
    )(hidden)
    outputs = keras_drop.DropConnectDense(2, 0.1, name="connect")(hidden)
    model = keras.Model(inputs, outputs)
    probe = RateProbe(
        [model.get_layer(n) for n in ("block", "uout", "depth", "skip", "connect")]
    )
    model.compile(keras.optimizers.SGD(0.0), loss="mse", jit_compile=JIT_COMPILE)
    model.fit(
        np.ones((4, 8, 8, 3), "float32"),
        np.zeros((4, 2), "float32"),
        verbose=0,
        callbacks=[keras_drop.DropRateScheduler(lambda p: 0.5), probe],
    )
    expected = {
        "block": 0.1,
        "uout": 0.2,
        "depth": 0.15,
        "skip": 0.3,
        "connect": 0.05,
    }
    assert probe.seen == [pytest.approx(expected)]


def test_the_configured_rate_is_what_a_saved_model_reloads_with(tmp_path):
    layer = keras_drop.DropPath(RATE, seed=1)
    model = _drop_path_model(layer)
    probe = RateProbe([layer])
    scheduled, _ = _fit(
        model, [keras_drop.DropRateScheduler(lambda p: 0.3), probe], steps=3, epochs=2
    )
    assert [seen[layer.name] for seen in probe.seen] == pytest.approx([0.3 * RATE] * 6)
    np.testing.assert_allclose(scheduled, 0.3 * RATE, atol=TOLERANCE)
    # fit has ended: the layer applies its configured rate again.
    assert _current_rate(layer) == pytest.approx(RATE)
    unscheduled, _ = _fit(model, keras.callbacks.Callback(), steps=3)
    np.testing.assert_allclose(unscheduled, RATE, atol=TOLERANCE)
    path = tmp_path / "scheduled.keras"
    model.save(path)
    reloaded = keras.saving.load_model(
        path, custom_objects={"Ones": Ones}, compile=False
    )
    loaded_layer = reloaded.layers[-1]
    assert loaded_layer.get_config()["rate"] == RATE
    assert _current_rate(loaded_layer) == pytest.approx(RATE)


def test_verbose_prints_the_factor_of_each_epoch(capsys):
    model = _drop_path_model(keras_drop.DropPath(RATE, seed=1))
    _fit(
        model,
        keras_drop.DropRateScheduler(update_freq="epoch", verbose=1),
        steps=1,
        epochs=3,
    )
    out = capsys.readouterr().out
    assert "Epoch 1: DropRateScheduler setting the drop-rate factor to 0." in out
    assert "Epoch 2: DropRateScheduler setting the drop-rate factor to 0.5." in out
    assert "Epoch 3: DropRateScheduler setting the drop-rate factor to 1." in out


@pytest.mark.parametrize("value", [1.5, -0.1, float("nan"), "half"])
def test_a_schedule_value_outside_zero_one_is_an_error_naming_it(value):
    model = _drop_path_model(keras_drop.DropPath(RATE))
    with pytest.raises(ValueError, match=f"Received: {value!r}"):
        _fit(model, keras_drop.DropRateScheduler(lambda p: value), steps=1)


def test_a_failed_fit_still_restores_the_configured_rate():
    layer = keras_drop.DropPath(RATE)
    model = _drop_path_model(layer)

    def schedule(progress):
        return 0.2 if progress < 1.0 else 2.0

    with pytest.raises(ValueError, match="Received: 2.0"):
        _fit(model, keras_drop.DropRateScheduler(schedule), steps=3)
    assert _current_rate(layer) == pytest.approx(RATE)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"schedule": 0.5}, "`schedule`.*schedule=0.5"),
        ({"update_freq": "batch"}, "`update_freq`.*update_freq='batch'"),
        ({"verbose": "yes"}, "`verbose`.*verbose='yes'"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_drop.DropRateScheduler(**kwargs)


def test_two_schedulers_in_one_fit_are_an_error_before_the_first_step():
    layer = keras_drop.DropPath(RATE, seed=1)
    model = _drop_path_model(layer)
    first = keras_drop.DropRateScheduler()
    second = keras_drop.DropRateScheduler(lambda p: 1.0)
    probe = RateProbe([layer])
    with pytest.raises(ValueError, match=r"2 DropRateScheduler.*one callable"):
        _fit(model, [first, second, probe], steps=2)
    assert probe.seen == []
    assert _current_rate(layer) == pytest.approx(RATE)
    # Nothing of that fit is left: each alone runs its own schedule.
    _fit(model, [second, probe], steps=2)
    assert [seen[layer.name] for seen in probe.seen] == pytest.approx([RATE] * 2)


def test_a_scheduler_runs_again_after_a_fit_that_crashed():
    layer = keras_drop.DropPath(RATE, seed=1)
    model = _drop_path_model(layer)
    scheduler = keras_drop.DropRateScheduler()
    with pytest.raises(Preempted):
        _fit(model, [scheduler, Preempt(1)], steps=2)
    # No `on_train_end` ran; a new scheduler, then the same one, fit alone.
    for again in (keras_drop.DropRateScheduler(), scheduler):
        probe = RateProbe([layer])
        _fit(model, [again, probe], steps=2)
        assert [seen[layer.name] for seen in probe.seen] == pytest.approx([0, RATE])


def test_a_model_without_keras_drop_layers_is_an_error():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dropout(0.5)(Ones()(inputs)))
    model.compile(keras.optimizers.SGD(0.0), loss=zero_fraction)
    with pytest.raises(ValueError, match="no keras_drop layer"):
        _fit(model, keras_drop.DropRateScheduler(), steps=1)


def test_unknown_steps_per_epoch_needs_epoch_updates_or_steps_per_epoch():
    import tensorflow as tf  # tf.data feeds fit on every backend

    x = np.ones((4 * BATCH, 4), "float32")
    # `filter` hides the dataset's cardinality from Keras.
    dataset = (
        tf.data.Dataset.from_tensor_slices((x, x[:, :1]))
        .batch(BATCH)
        .filter(lambda a, b: True)
    )
    model = _drop_path_model(keras_drop.DropPath(RATE, seed=1))
    with pytest.raises(ValueError, match="steps_per_epoch"):
        model.fit(dataset, verbose=0, callbacks=[keras_drop.DropRateScheduler()])
    history = model.fit(
        dataset,
        epochs=2,
        verbose=0,
        callbacks=[keras_drop.DropRateScheduler(update_freq="epoch")],
    )
    assert history.history["drop_rate_factor"] == [0.0, 1.0]
