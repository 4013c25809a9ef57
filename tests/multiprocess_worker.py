"""What every process of a multi-process test runs, whatever the engine.

`tests/multiprocess_tf.py`, `multiprocess_jax.py` and `multiprocess_torch.py`
set up their engine (the process group, the strategy or the distribution)
and call these with it. Each process writes `DIR/rank<R>.npz`: its copy of
every trainable weight after `fit` (`weight_<i>`), its output of every
probe layer on inputs of ones (`mask_<name>`), and the rate every keras_drop
layer applied in each step (`rates`, steps x layers), which the test
compares across processes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

import keras_drop
from keras_drop.layers._base import ScheduledStrength
from keras_drop.layers._keras_internals import sublayers
from tests import every_layer
from tests.test_distributed import PER_REPLICA, TrainingModeProbes, probes

SEED = 1337  # the same in every process
STEPS = 3  # steps per epoch
EPOCHS = 2
PER_PROCESS = 4  # samples per process in a step
MASK_CALLS = 8  # calls compared: a draw per batch differs in some of them


def local_numpy(x: Any) -> np.ndarray:
    """This process's copy of a tensor (one shard of a JAX global array)."""
    value = x.value if isinstance(x, keras.Variable) else x
    if getattr(value, "is_fully_addressable", True) or value.is_fully_replicated:
        return np.asarray(keras.ops.convert_to_numpy(value))
    return np.asarray(value.addressable_shards[0].data)


class StepRates(keras.callbacks.Callback):
    """The rate every keras_drop layer applies in each step."""

    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        if keras.backend.backend() == "jax":
            self.model.jax_state_sync()  # mid-epoch, fit holds the state
        self.rates.append(
            [
                float(local_numpy(layer._strength_state.variable))
                for layer in sublayers(self.model)
                if isinstance(layer, ScheduledStrength)
            ]
        )


def every_layer_model() -> keras.Model:
    """The functional model holding every keras_drop layer, compiled."""
    model = every_layer.functional_model()
    model.compile(keras.optimizers.SGD(0.05), "mse")
    return model


def training_data(rank: int) -> tuple[np.ndarray, np.ndarray]:
    """This process's samples for `EPOCHS * STEPS` steps (its own)."""
    x = every_layer.inputs(STEPS * PER_PROCESS, seed=rank)
    y = np.random.default_rng(rank).normal(size=(len(x), 2)).astype("float32")
    return x, y


def fit(model: keras.Model, fit_fn: Callable[..., Any] | None = None, **kwargs) -> list:
    """`model.fit` with a step-level DropRateScheduler; the rates seen."""
    recorder = StepRates()
    callbacks = [keras_drop.DropRateScheduler(), recorder]
    (fit_fn or model.fit)(epochs=EPOCHS, verbose=0, callbacks=callbacks, **kwargs)
    return recorder.rates


def probe_model() -> tuple[keras.Model, list[str], list[np.ndarray]]:
    """Every keras_drop layer on its own input (`TrainingModeProbes`), its
    names and one process's batch of ones for each."""
    named = probes()
    model = TrainingModeProbes([layer for layer, _ in named.values()])
    batches = [batch for _, batch in named.values()]
    model([keras.Input(batch.shape[1:]) for batch in batches])
    assert all(len(batch) == PER_REPLICA for batch in batches)
    return model, list(named), batches


def masks(forward: Callable[[], list], names: list[str]) -> dict:
    """This process's outputs of `MASK_CALLS` successive training-mode
    calls of every probe (`forward()` returns one call's)."""
    calls = [[local_numpy(y) for y in forward()] for _ in range(MASK_CALLS)]
    return {
        name: np.stack(outputs)
        for name, outputs in zip(names, zip(*calls, strict=True), strict=True)
    }


def write_report(
    directory: str, rank: int, model: keras.Model, rates: list, masks: dict
) -> None:
    arrays = {
        f"weight_{i}": local_numpy(w) for i, w in enumerate(model.trainable_weights)
    }
    arrays.update({f"mask_{name}": y for name, y in masks.items()})
    np.savez(Path(directory) / f"rank{rank}.npz", rates=np.array(rates), **arrays)


def seed_everything() -> None:
    keras.utils.set_random_seed(SEED)
