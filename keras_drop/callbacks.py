"""`DropRateScheduler`: ramp the drop rate of every keras_drop layer in `fit`.

How a new rate reaches a step that is already compiled, per backend: every
keras_drop layer reads the rate it applies from a float32 state variable
(`layers/_base.py`), and the scheduler assigns that variable.

- TensorFlow (`tf.function`, with or without XLA): the step captures the
  variable by reference and reads its current value on every run.
- JAX (`jax.jit`): the step is a pure function of the model's state, which
  `fit` threads from step to step without writing it back to the variables
  until the epoch ends. Before a step-level change the scheduler calls
  `model.jax_state_sync()`, Keras' public hook for callbacks that touch
  variables mid-epoch: it writes the threaded state back into the variables
  and marks it stale, so `fit` reads every variable again, the new rate
  included, before the next step. Epoch-level changes need no sync (`fit`
  reads the state at the start of every epoch), and a step whose factor did
  not change costs nothing.
- PyTorch: the step is eager; the variable is updated in place.

Two exceptions: `StochasticDepthBlock(mode="subset")` runs its branch on
k samples and `PatchDropout` keeps k tokens, and k, a shape, is fixed when
the step is traced. When a new rate changes k, the scheduler has `fit`
trace the train step again (`model.make_train_function(force=True)`), so
the next step compiles for the new k. Any layer that sizes a shape by its
rate says so through a `_traced_shapes_changed()` method.
"""

from __future__ import annotations

import logging
import math
import numbers
import weakref
from collections.abc import Callable

import keras

from keras_drop import _validation
from keras_drop.layers._base import ScheduledStrength
from keras_drop.layers._keras_internals import sublayers

_LOGGER = logging.getLogger("keras_drop")


def _linear(progress: float) -> float:
    return progress


def _print(message: str) -> None:
    # Where Keras' own callbacks print: stdout, or the log when interactive
    # logging is off.
    if keras.config.is_interactive_logging_enabled():
        print(message, flush=True)
    else:
        _LOGGER.info(message)


class DropRateScheduler(keras.callbacks.Callback):
    """Ramps the drop rate of every keras_drop layer of the model during `fit`.

    At each update the callback sets every keras_drop layer of the model
    being trained (nested models and layers inside subclassed models
    included) to `factor * rate`, where `rate` is the layer's configured
    rate (`beta` for `UniformDropout`) and `factor = schedule(progress)`.
    `progress` is the absolute position in training, from 0 at the first
    update of the whole run to 1 at its last. With `update_freq="epoch"`,
    epoch `e` of `E` (`fit(epochs=E)`, epochs counted from 0) has
    `progress = e / (E - 1)` whatever `initial_epoch` is:
    `fit(epochs=4, initial_epoch=2)` runs epochs 2 and 3 at 0.667 and 1.
    With `update_freq="step"`, batch `b` of epoch `e` is step
    `s = e * steps_per_epoch + b` of `T = E * steps_per_epoch` and has
    `progress = s / (T - 1)`: the step's position in the run, whether or
    not the optimizer applied its update. (Not `optimizer.iterations`: the
    `LossScaleOptimizer` of a `mixed_float16` model does not count the
    steps it skips on overflowing gradients, and a ramp read from it would
    end short of 1 and fall back at each epoch start.) A `fit` with a
    single update runs it at `progress = 1`. The default schedule is the
    DropBlock paper's linear ramp, `factor = progress`: the keep
    probability falls linearly from 1 to `1 - rate`.

    Progress is read from the epoch `fit` runs (which `initial_epoch` and
    `keras.callbacks.BackupAndRestore` set, the latter from its checkpoint)
    and the batch within it, never from a counter of this process, so a
    run preempted and resumed with `BackupAndRestore` applies exactly the
    factors of the uninterrupted run: after an epoch-level backup, and
    after a mid-epoch one (`save_freq=N`), from which Keras restores the
    weights and replays the interrupted epoch from its first batch, each
    replayed batch at the factor of the same batch of the uninterrupted
    run. A second `fit` of the same model starts its ramp at the epoch it
    starts at, as `keras.callbacks.LearningRateScheduler` does: pass
    `initial_epoch` to go on with the first `fit`'s ramp.

    One scheduler per `fit`: each sets the rate of every keras_drop layer
    of the model, so a second one would overwrite the first's rates from
    step to step. `fit` with two raises a `ValueError` before its first
    step; to combine schedules, pass one callable (`lambda p: f(p) * g(p)`).

    The scheduled rate is applied state, not configuration: `get_config()`
    and a saved model keep the configured rate, and when `fit` returns (or
    stops on a bad schedule value) every layer is set back to its configured
    rate, so a later `fit` or `evaluate` without the scheduler runs exactly
    as configured. (Keras runs no callback when `fit` is interrupted by an
    exception from elsewhere; the layers then keep the last scheduled rate
    until the next `fit` with the scheduler ends.)

    A new rate takes effect in the next step of the already compiled train
    step on every backend (`tf.function` and XLA, `jax.jit`, PyTorch); no
    retracing, except for `StochasticDepthBlock(mode="subset")` and
    `PatchDropout`, whose number of kept samples (tokens) is a shape: when
    a new rate changes it, the train step is traced and compiled again
    (see those classes). With
    `fit(..., steps_per_execution=n)` the callback runs once every `n`
    steps, so the rate changes every `n` steps and holds within each group
    (at the progress of the group's first step).

    `update_freq="step"` needs the number of steps per epoch: Keras knows it
    for arrays, `PyDataset`s and datasets of known cardinality; otherwise
    pass `steps_per_epoch` to `fit` or use `update_freq="epoch"`.

    Args:
        schedule: A callable `progress -> factor`, `progress` a Python float
            in [0, 1], returning a real number in [0, 1]. `None` (the
            default) is the linear ramp `factor = progress`. Use
            `lambda p: 1.0` for a constant rate.
        update_freq: `"step"` (default; the paper's ramp) or `"epoch"`.
        verbose: `0` is silent; `1` prints the factor at the start of every
            epoch.

    Logs:
        `drop_rate_factor`: the factor in force at the end of each epoch,
        added to the epoch logs (and so to `History`).

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((32, 32, 3)),
    ...     keras.layers.Conv2D(16, 3, activation="relu"),
    ...     keras_drop.DropBlock2D(rate=0.1, block_size=5),
    ...     keras.layers.GlobalAveragePooling2D(),
    ...     keras.layers.Dense(10),
    ... ])
    >>> model.compile("adam", "sparse_categorical_crossentropy")
    >>> model.fit(x, y, epochs=20, callbacks=[keras_drop.DropRateScheduler()])

    Reference:
        - [Ghiasi et al., 2018, sec. 3, "Scheduled DropBlock"](
          https://arxiv.org/abs/1810.12890)
    """

    # Every scheduler, to find two in one `fit`: Keras gives the callbacks of
    # a `fit` one `params` dict, a new one per `fit`, so a scheduler that
    # shares this one's is in the same `fit`, and a `fit` that failed before
    # `on_train_end` leaves nothing behind that a later `fit` could trip on.
    _instances: weakref.WeakSet[DropRateScheduler] = weakref.WeakSet()

    def __init__(
        self,
        schedule: Callable[[float], float] | None = None,
        *,
        update_freq: str = "step",
        verbose: int = 0,
    ):
        super().__init__()
        if schedule is not None and not callable(schedule):
            raise _validation.invalid_value(
                "schedule", "a callable `progress -> factor`, or None", schedule
            )
        self.schedule = schedule
        self.update_freq = _validation.validate_choice(
            update_freq, ("step", "epoch"), "update_freq"
        )
        if not isinstance(verbose, numbers.Integral) or isinstance(verbose, bool):
            raise _validation.invalid_value("verbose", "an integer", verbose)
        self.verbose = int(verbose)
        self.factor: float | None = None
        self._layers: list[ScheduledStrength] = []
        DropRateScheduler._instances.add(self)

    # Fit-level bookkeeping -------------------------------------------------

    def on_train_begin(self, logs=None):
        self._check_alone()
        self._layers = [
            layer
            for layer in sublayers(self.model)
            if isinstance(layer, ScheduledStrength)
        ]
        if not self._layers:
            raise ValueError(
                "DropRateScheduler found no keras_drop layer in the model "
                f"'{self.model.name}': there is no rate to schedule."
            )
        self._epochs = self.params.get("epochs") or 1
        self._steps = self.params.get("steps")
        if self.update_freq == "step" and not self._steps:
            raise ValueError(
                "DropRateScheduler(update_freq='step') needs the number of "
                "steps per epoch, which Keras does not know for this data. "
                "Pass `steps_per_epoch` to `fit`, or use update_freq='epoch'."
            )
        self._epoch = 0
        self.factor = None

    def on_epoch_begin(self, epoch, logs=None):
        # `epoch` is absolute: `fit(initial_epoch=k)` and BackupAndRestore
        # (from its checkpoint) start at epoch k.
        self._epoch = epoch
        self._apply(self._progress(batch=0), sync=False)
        if self.verbose > 0:
            _print(
                f"\nEpoch {epoch + 1}: DropRateScheduler setting the drop-rate "
                f"factor to {self.factor:.4g}."
            )

    def on_train_batch_begin(self, batch, logs=None):
        if self.update_freq == "step":
            self._apply(self._progress(batch=batch), sync=True)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.factor is not None:
            logs["drop_rate_factor"] = self.factor

    def on_train_end(self, logs=None):
        self._restore()

    def _restore(self) -> None:
        self._sync_jax_state()
        for layer in self._layers:
            layer._set_current_strength(layer._get_strength())
        self._retrace_if_shapes_changed()
        self._layers = []

    def _check_alone(self) -> None:
        others = [
            other
            for other in DropRateScheduler._instances
            if other is not self and self.params and other.params is self.params
        ]
        if others:
            raise ValueError(
                f"`fit` received {len(others) + 1} DropRateScheduler "
                "callbacks. Each sets the rate of every keras_drop layer of "
                f"the model '{self.model.name}', so they would overwrite each "
                "other's rates from step to step. Pass one DropRateScheduler "
                "per `fit`; to combine schedules, give it one callable, such "
                "as `DropRateScheduler(lambda p: f(p) * g(p))`."
            )

    # The schedule -----------------------------------------------------------

    def _progress(self, batch: int) -> float:
        if self.update_freq == "epoch":
            index, total = self._epoch, self._epochs
        else:
            # The step's position in the run, counted whether or not the
            # optimizer applied its update (a LossScaleOptimizer skips
            # overflowing steps without counting them).
            index = self._epoch * self._steps + batch
            total = self._epochs * self._steps
        if total <= 1:
            return 1.0
        return min(max(index / (total - 1), 0.0), 1.0)

    def _factor(self, progress: float) -> float:
        schedule = self.schedule if self.schedule is not None else _linear
        value = schedule(progress)
        if (
            not isinstance(value, numbers.Real)
            or isinstance(value, bool)
            or not math.isfinite(float(value))
            or not 0.0 <= float(value) <= 1.0
        ):
            self._restore()
            raise ValueError(
                "The `schedule` of DropRateScheduler must return a factor "
                f"between 0 and 1. Received: {value!r} at progress={progress:.6g}"
            )
        return float(value)

    def _apply(self, progress: float, *, sync: bool) -> None:
        factor = self._factor(progress)
        if factor == self.factor:
            return
        if sync:
            self._sync_jax_state()
        for layer in self._layers:
            layer._set_current_strength(factor * layer._get_strength())
        self._retrace_if_shapes_changed()
        self.factor = factor

    def _retrace_if_shapes_changed(self) -> None:
        """A layer whose rate sizes a shape (k samples of a subset
        `StochasticDepthBlock`, k tokens of `PatchDropout`) fixes it when
        the train step is traced: when a new rate changes k, the next step
        is traced (and compiled) again. Every layer is asked (each resets
        its own flag)."""
        changed = [
            layer._traced_shapes_changed()
            for layer in self._layers
            if hasattr(layer, "_traced_shapes_changed")
        ]
        if any(changed):
            self.model.make_train_function(force=True)

    def _sync_jax_state(self) -> None:
        """On JAX, write the state `fit` threads between jitted steps back
        into the variables and have `fit` read them again before its next
        step (and not overwrite what we assign when it ends)."""
        if keras.backend.backend() == "jax":
            self.model.jax_state_sync()
