"""Monte Carlo inference: predictive uncertainty from the regularizers.

Gal & Ghahramani (2016) read many stochastic passes of a network trained
with dropout as samples of a predictive distribution: their mean is the
prediction and their spread its uncertainty. Keras offers
`model(x, training=True)`, which also switches every BatchNormalization to
the statistics of the batch at hand (and every augmentation layer on).
`mc_predict` keeps the regularizers random and everything else at
inference:

- the model is called with `training=False`, so BatchNormalization uses
  its moving statistics and `Cutout` (a data augmentation) is the identity;
- inside `keras_drop.layers._base.monte_carlo_scope()` every keras_drop
  regularizer still draws its noise;
- Keras' own `Dropout`, `SpatialDropout1D/2D/3D`, `GaussianDropout` and
  `AlphaDropout` of the model get, for the duration of the trace only, an
  instance attribute `call` that calls their class's `call` with
  `training=True`; the attribute is removed afterwards (nothing is changed
  on the classes, and no other instance is touched);
- each input is dropped with each regularizer's rate whatever the batch
  it shares: `StochasticDepthBlock(mode="subset")`, which trains on k
  samples per batch, acts per sample in a pass (see its docstring).

Each pass is a stateless call: the model's variables are inputs of one
compiled function (`jax.jit`, `tf.function`; eager on PyTorch), with the
state of every seed generator replaced by one drawn from `seed`, the sample
index and, unless `fixed_masks`, the batch index. The rates a keras_drop
layer applies are variables too, so a pass uses the rate in force when it
is called. The model itself is left as it was: no variable, seed state
included, is written.

`fixed_masks=True` runs each input row on its own with the seeds of its
sample index only (`_compiled.map_rows`): every row of every batch sees the
same masks, that is one network drawn per sample index, so two copies of
one input anywhere in `x` get the same output within a sample. Masks still
vary over positions within an input (the units of a feature map, the
entries of a kernel); only the batch axis is shared, as if every mask had
been drawn for a batch of one.

Reference: Gal & Ghahramani, "Dropout as a Bayesian Approximation", ICML
2016, arXiv:1506.02142.
"""

from __future__ import annotations

import contextlib
import functools
import os
import weakref
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np

from keras_drop import _compiled, _validation
from keras_drop.layers._base import ScheduledStrength, monte_carlo_scope
from keras_drop.layers._keras_internals import (
    input_signature,
    predict_batches,
    sublayers,
)
from keras_drop.layers.cutout import Cutout

__all__ = ["export_monte_carlo", "mc_predict"]

KERAS_DROPOUTS = (
    keras.layers.Dropout,  # SpatialDropout1D/2D/3D subclass it
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
)
"""Keras' own regularizers that a Monte Carlo pass keeps active."""


def _regularizers(model: keras.Model) -> tuple[list[Any], list[Any]]:
    """(keras_drop regularizers, Keras dropout layers) of `model`, nested
    models and layers held by subclassed layers included; `Cutout` is an
    augmentation and is left out."""
    ours, keras_own = [], []
    for layer in [model, *sublayers(model)]:
        if isinstance(layer, ScheduledStrength) and not isinstance(layer, Cutout):
            ours.append(layer)
        elif isinstance(layer, KERAS_DROPOUTS):
            keras_own.append(layer)
    return ours, keras_own


def _check(model: Any, samples: Any) -> list[Any]:
    """The Keras dropout layers of `model`, after checking the arguments."""
    if not isinstance(model, keras.Model):
        raise ValueError(
            "Monte Carlo inference needs a `keras.Model`. Received: "
            f"model={model!r} of type {type(model).__name__}"
        )
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)):
        raise ValueError(
            "Invalid value received for argument `samples`. Expected an "
            f"integer >= 1. Received: samples={samples!r}"
        )
    if samples < 1:
        raise ValueError(
            "Invalid value received for argument `samples`. Expected an "
            f"integer >= 1. Received: samples={samples}"
        )
    if not model.built:
        raise ValueError(
            f"The model {model.name!r} has not been built: call it on data "
            "(or build it) before Monte Carlo inference."
        )
    ours, keras_own = _regularizers(model)
    if not ours and not keras_own:
        raise ValueError(
            f"The model {model.name!r} holds no regularizer to sample from: "
            "Monte Carlo inference needs at least one keras_drop layer (other "
            "than `Cutout`) or a Keras `Dropout`, `SpatialDropout1D/2D/3D`, "
            "`GaussianDropout` or `AlphaDropout`; every pass would be the "
            "deterministic prediction."
        )
    return keras_own


@contextlib.contextmanager
def _keras_dropouts_active(layers: list[Any]) -> Iterator[None]:
    """Each Keras dropout layer in `layers` calls its class's `call` with
    `training=True` until the block ends (an instance attribute, removed
    afterwards; `Operation.__call__` looks `call` up on the instance)."""
    patched = []
    try:
        for layer in layers:
            if "call" in vars(layer):  # already patched (a layer used twice)
                continue
            object.__setattr__(layer, "call", _active_call(layer))
            patched.append(layer)
        yield
    finally:
        for layer in patched:
            object.__delattr__(layer, "call")


def _active_call(layer: Any) -> Any:
    """`layer.call` with `training=True`.

    A plain `Dropout` gets its full noise shape: Keras' PyTorch backend
    draws an unseeded `Dropout` (no `seed`, no `noise_shape`) from torch's
    global generator, which the seed states of a pass would not reach. With
    a noise shape, every backend draws from the layer's seed generator; the
    maths is the same.
    """
    method = type(layer).call.__get__(layer)
    plain = (
        isinstance(layer, keras.layers.Dropout)
        and layer.noise_shape is None
        and not hasattr(layer, "_get_noise_shape")  # SpatialDropout passes one
    )

    def call(inputs, *args, training=None, **kwargs):
        if plain and layer.rate > 0:
            return keras.random.dropout(
                inputs,
                layer.rate,
                noise_shape=keras.ops.shape(inputs),
                seed=layer.seed_generator,
            )
        return method(inputs, *args, training=True, **kwargs)

    return call


@contextlib.contextmanager
def _monte_carlo_mode(keras_dropouts: list[Any]) -> Iterator[None]:
    with monte_carlo_scope(), _keras_dropouts_active(keras_dropouts):
        yield


class _Passes:
    """One stochastic pass of `model` as a function of its variables' values
    (seed states replaced) and the inputs."""

    def __init__(self, model: keras.Model, keras_dropouts: list[Any]):
        self.model = model
        self.keras_dropouts = keras_dropouts
        self.variables = list(model.trainable_variables) + list(
            model.non_trainable_variables
        )
        generators = {}
        for layer in [model, *sublayers(model)]:
            for value in vars(layer).values():
                if isinstance(value, keras.random.SeedGenerator):
                    generators[id(value.state)] = value.state
        self.seed_positions = [
            index
            for index, variable in enumerate(self.variables)
            if id(variable) in generators
        ]

    def seed_states(self, samples: range, *entropy: int) -> list[np.ndarray]:
        """Per seed generator, a state for each of `samples`: drawn from
        the sample index and `entropy` (seed, batch), `(len(samples), 2)`."""
        keys = np.stack(
            [
                np.random.default_rng([entropy[0], sample, *entropy[1:]]).integers(
                    0, 2**31 - 1, size=len(self.seed_positions)
                )
                for sample in samples
            ],
            axis=-1,
        ).reshape(len(self.seed_positions), len(samples))
        return [
            np.stack([key, np.zeros_like(key)], axis=-1).astype(
                self.variables[position].dtype
            )
            for key, position in zip(keys, self.seed_positions, strict=True)
        ]

    def values(self) -> list[Any]:
        """The variables' current values."""
        return [variable.value for variable in self.variables]

    def __call__(self, values: list[Any], args: tuple[Any, ...]) -> Any:
        """One pass: `model(*args, training=False)` with the regularizers
        active and the variables holding `values`."""
        mapping = list(zip(self.variables, values, strict=True))
        with _monte_carlo_mode(self.keras_dropouts):
            with keras.StatelessScope(state_mapping=mapping):
                return self.model(*args, training=False)

    def per_row(self, values: list[Any], args: tuple[Any, ...]) -> Any:
        """The pass on each row of the batch on its own, every row with the
        same seed states: the same masks for every row."""

        def row(row_args):
            batch_of_one = keras.tree.map_structure(lambda t: t[None], row_args)
            outputs = self(values, batch_of_one)
            return keras.tree.map_structure(lambda t: t[0], outputs)

        return _compiled.map_rows(row, args)

    def draws(
        self,
        values: list[Any],
        seed_states: list[Any],
        args: tuple[Any, ...],
        fixed_masks: bool = False,
    ) -> Any:
        """One pass per row of `seed_states` (per generator, `(k, 2)`),
        stacked: `(k, batch, ...)`."""

        def one_pass(states):
            current = list(values)
            for position, state in zip(self.seed_positions, states, strict=True):
                current[position] = state
            run = self.per_row if fixed_masks else self
            return run(current, args)

        if not self.seed_positions:  # only Keras dropouts at rate 0
            return keras.tree.map_structure(lambda t: t[None], one_pass([]))
        return keras.ops.map(one_pass, seed_states)


def _entropy_seed(seed: int | None) -> int:
    if seed is None:
        return int.from_bytes(os.urandom(4), "little") >> 1
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(
            "Invalid value received for argument `seed`. Expected a "
            f"non-negative integer or None. Received: seed={seed!r}"
        )
    return int(seed)


def mc_predict(
    model: keras.Model,
    x: Any,
    samples: int = 30,
    *,
    batch_size: int | None = None,
    seed: int | None = None,
    fixed_masks: bool = False,
) -> Any:
    """Monte Carlo predictions: `samples` stochastic passes over `x`.

    Every regularizer of the model is active, as in training: the keras_drop
    layers but `Cutout` (an augmentation, left off), and Keras' `Dropout`,
    `SpatialDropout1D/2D/3D`, `GaussianDropout` and `AlphaDropout`. Every
    other layer runs as at inference: BatchNormalization normalizes with
    its moving statistics, not those of the batch. The mean over the first
    axis is the Monte Carlo estimate of the prediction (MC Dropout, MC
    DropBlock); the spread measures the model's uncertainty.

    Each regularizer drops each input with its own rate whatever the batch
    the input shares: a `StochasticDepthBlock(mode="subset")`, whose
    training step runs its branch on a fixed number of a batch's samples,
    acts per sample here (each input's branch dropped with probability
    `rate`, as `StochasticDepth(mode="row")`), so batch size, `fixed_masks`
    and a single input leave its drop rate unchanged. The rates are those
    in force when `mc_predict` is called, a rate set by `DropRateScheduler`
    included, on every backend.

    Batches go through one compiled function (`jax.jit` on JAX,
    `tf.function` on TensorFlow; eager on PyTorch) that takes the model's
    variables as inputs. The model is not changed: no weight, statistic or
    seed state is written. The passes run in chunks of one size, at most
    16 passes per call of the compiled function, in as few chunks as
    there can be, so that one trace serves the call: 30 samples run as
    2 x 15 passes, 17 as 2 x 9, the one pass past 17 computed and dropped
    (at most one pass per chunk, under 1/16 of the passes). A remainder
    chunk would run exactly `samples` passes but compile a second
    function, which costs more where compiling dominates: 17 samples of
    512 inputs through a small MLP took 3.1-4.3 s on first use on JAX
    that way, 1.6-1.7 s as 2 x 9 (2-core AMD EPYC, loaded).

    Args:
        model: a built `keras.Model` (functional, Sequential or subclassed,
            with nested models and layers) holding at least one regularizer.
        x: the inputs, in any form `model.predict` takes: an array, or a
            structure of arrays as the model takes its inputs (a list or
            tuple for a model of several inputs, a dict for named inputs),
            whose first axis indexes N inputs; or a `tf.data.Dataset`, a
            Python generator, a `keras.utils.PyDataset` or a torch
            `DataLoader` yielding batches of inputs (`(x,)`, or `(x, y)` and
            `(x, y, sample_weight)`, whose targets and weights are ignored).
        samples: number of stochastic passes, an integer >= 1.
        batch_size: inputs per pass at most, 32 by default; the batches a
            dataset or generator yields are cut to it.
        seed: a non-negative integer: the same seed gives the same array.
            `None` draws one.
        fixed_masks: if `True`, one set of masks per sample index, used for
            every input (one network drawn per sample): two copies of one
            input anywhere in `x` get identical outputs within a sample.
            Masks still vary within an input (over units, positions,
            kernel entries); each input is run as a batch of one with the
            sample's seeds, so a draw made per batch (`StochasticDepth`'s
            batch mode) is also made once per sample. If `False` (default),
            masks are independent over inputs, batches and samples.

    Returns:
        A NumPy array of shape `(samples, N, ...)` (a structure of them, in
        the model's output structure, for a model with several outputs).

    Example:

    >>> probs = keras_drop.mc_predict(model, x_test, samples=50, seed=0)
    >>> mean = probs.mean(axis=0)
    >>> entropy = -(mean * np.log(mean + 1e-12)).sum(axis=-1)

    Reference:
    - [Gal & Ghahramani, 2016](https://arxiv.org/abs/1506.02142)
    """
    keras_dropouts = _check(model, samples)
    if batch_size is None:
        batch_size = 32
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ValueError(
            "Invalid value received for argument `batch_size`. Expected an "
            f"integer >= 1 or None. Received: batch_size={batch_size!r}"
        )
    seed = _entropy_seed(seed)
    fixed_masks = _validation.validate_bool(fixed_masks, "fixed_masks")
    passes, step = _compiled_passes(model, keras_dropouts, fixed_masks)
    chunks = _chunks(samples)
    values = passes.values()
    # Every batch padded to the size of the first, and samples drawn in
    # chunks of one size: one trace. Rows do not interact at inference
    # (BatchNormalization uses its moving statistics), so padding changes
    # no real row's distribution; the few passes past `samples` that the
    # last chunk runs are dropped.
    size, index, outputs = None, 0, []
    for inputs in _input_batches(x, int(batch_size)):
        count = _rows(inputs)
        size = size or min(count, batch_size)
        for start in range(0, count, size):
            stop = min(size, count - start)
            batch = keras.tree.map_structure(
                lambda t, s=start, n=size: _padded(t[s : s + n], n), inputs
            )
            index += 1
            entropy = (seed,) if fixed_masks else (seed, index)
            draws = [
                step(values, passes.seed_states(chunk, *entropy), (batch,))
                for chunk in chunks
            ]
            outputs.append(
                keras.tree.map_structure(
                    lambda *parts, stop=stop: np.concatenate(
                        [keras.ops.convert_to_numpy(p)[:, :stop] for p in parts]
                    )[:samples],
                    *draws,
                )
            )
    if not outputs:
        raise ValueError(
            "Invalid value received for argument `x`. Expected at least one "
            f"input. Received: x holding no input ({_described(x)})"
        )
    return keras.tree.map_structure(
        lambda *parts: np.concatenate(parts, axis=1), *outputs
    )


ACCEPTED_INPUTS = (
    "an array or a structure of arrays (a list, tuple or dict, as the "
    "model takes its inputs), a `tf.data.Dataset`, a Python generator, a "
    "`keras.utils.PyDataset` or a torch `DataLoader`"
)


def _input_batches(x: Any, batch_size: int) -> Iterator[Any]:
    """The batches of `x` that `model.predict` would run, checked."""
    try:
        batches = predict_batches(x, batch_size)
        yield from batches
    except ValueError as error:
        if "Unrecognized data type" not in str(error):
            raise
        raise ValueError(
            "Invalid value received for argument `x`. Expected what "
            f"`model.predict` takes: {ACCEPTED_INPUTS}. Received: "
            f"{_described(x)}"
        ) from None


def _described(x: Any) -> str:
    """`x`'s type and its arrays' shapes (its repr could be huge)."""
    if hasattr(x, "shape"):
        return f"x of type {type(x).__name__} and shape {tuple(x.shape)}"
    if isinstance(x, (list, tuple, dict)):
        leaves = [
            tuple(leaf.shape) if hasattr(leaf, "shape") else type(leaf).__name__
            for leaf in keras.tree.flatten(x)[:4]
        ]
        return f"x of type {type(x).__name__} holding {leaves}"
    return f"x of type {type(x).__name__}"


def _rows(inputs: Any) -> int:
    """The number of inputs in a batch (the first axis)."""
    return int(keras.tree.flatten(inputs)[0].shape[0])


def _chunks(samples: int) -> list[range]:
    """Sample indices in as few chunks of at most `SAMPLES_PER_CALL` as
    there can be, all of one size (one trace), the last running past
    `samples - 1` by fewer passes than there are chunks (17: 2 x 9)."""
    count = -(-samples // SAMPLES_PER_CALL)
    size = -(-samples // count)
    return [range(first, first + size) for first in range(0, count * size, size)]


def _padded(batch: Any, size: int) -> Any:
    """`batch` with zero rows appended up to `size` rows."""
    batch = np.asarray(keras.ops.convert_to_numpy(batch))
    missing = size - batch.shape[0]
    if missing == 0:
        return batch
    padding = np.zeros((missing, *batch.shape[1:]), dtype=batch.dtype)
    return np.concatenate([batch, padding])


SAMPLES_PER_CALL = 16
"""Samples drawn per call of the compiled function at most (a loop
inside it)."""

_steps: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled_passes(
    model: keras.Model, keras_dropouts: list[Any], fixed_masks: bool
) -> tuple[_Passes, Any]:
    """The passes of `model` and their compiled step, traced once per model
    and kind: kept while the model lives, traced again if its variables or
    its configured rates change. Keras' own rates and the configured
    keras_drop rates are Python floats, frozen in a trace (DropBlock bounds
    its mask construction by its configured rate); the rate a keras_drop
    layer applies (the value `DropRateScheduler` sets) is a variable, an
    input of the step like every other, so a new applied rate needs no new
    trace."""
    passes = _Passes(model, keras_dropouts)
    key = (
        bool(fixed_masks),
        tuple(id(variable) for variable in passes.variables),
        tuple(layer.rate for layer in keras_dropouts),
        tuple(layer._get_strength() for layer in _regularizers(model)[0]),
    )
    cached = _steps.setdefault(model, {})
    if key not in cached:
        cached[key] = (
            passes,
            _compiled.compile_function(
                functools.partial(passes.draws, fixed_masks=bool(fixed_masks))
            ),
        )
    return cached[key]


def export_monte_carlo(
    model: keras.Model, filepath: str | os.PathLike, samples: int = 30
) -> None:
    """Write a TensorFlow SavedModel that serves Monte Carlo statistics.

    Its serving function (`serve`, also the `serving_default` signature)
    takes the model's inputs and returns the mean and variance over
    `samples` stochastic passes made as in `mc_predict`: every regularizer
    active, each input's drops independent of the batch it is served in (a
    `StochasticDepthBlock(mode="subset")` drops each input's branch with
    probability `rate`, one row at a time too), BatchNormalization on its
    moving statistics, the rates in force when the model is exported. The
    artifact needs TensorFlow only (no Keras, no keras_drop) to load and
    serve. Its seeds are fixed when it is written, so it serves the same
    statistics for the same batch; masks differ over the rows of a batch
    and over samples.

    What `serve` returns, each statistic of its output's shape:

    - a model with one output tensor: the pair `(mean, variance)`;
    - a model whose output is a structure (a list, tuple or dict, nested
      or not): one flat dict holding `mean_KEY` and `variance_KEY` for
      every output, KEY being the output's place in the structure (its
      index in a list or tuple, its key in a dict, joined by `_` when
      nested: `mean_0`, `variance_0`, `mean_1`, ... for a list of two,
      `mean_probs`, `variance_probs` for a dict output `"probs"`). A
      serving signature returns a flat dict of tensors, so the structure
      is written into the names.

    Available on the TensorFlow and JAX backends (on JAX through `jax2tf`,
    as `model.export` does); the PyTorch backend raises.

    Args:
        model: a built `keras.Model` holding at least one regularizer.
        filepath: the directory to write the SavedModel to.
        samples: number of stochastic passes per call, an integer >= 1.

    Example:

    >>> keras_drop.export_monte_carlo(model, "mc_model", samples=30)
    >>> served = tf.saved_model.load("mc_model")
    >>> mean, variance = served.serve(x)

    A model with outputs `[probs, embedding]`:

    >>> statistics = served.serve(x)
    >>> statistics["mean_0"], statistics["variance_1"]
    """
    keras_dropouts = _check(model, samples)
    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax"):
        raise NotImplementedError(
            "`export_monte_carlo` writes a TensorFlow SavedModel, which Keras "
            "exports from the TensorFlow and JAX backends only. Received: "
            f"backend={backend!r}"
        )
    passes = _Passes(model, keras_dropouts)
    states = passes.seed_states(range(samples), 0)

    def serve(*args):
        draws = passes.draws(passes.values(), states, args)
        if not keras.tree.is_nested(draws):
            return keras.ops.mean(draws, axis=0), keras.ops.var(draws, axis=0)
        # A serving signature returns flat outputs: one entry per output
        # and statistic, named by the output's place in the structure.
        served = {}
        for path, output in keras.tree.flatten_with_path(draws):
            key = "_".join(str(part) for part in path)
            served[f"mean_{key}"] = keras.ops.mean(output, axis=0)
            served[f"variance_{key}"] = keras.ops.var(output, axis=0)
        return served

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve, input_signature(model))
    archive.write_out(str(filepath), verbose=False)
