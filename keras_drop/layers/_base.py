"""The base of every keras_drop layer: seed handling and a schedulable rate.

A rate read as a Python float inside `call` is frozen into a traced
`tf.function` / `jax.jit` step: assigning a new value later changes nothing
until the step is retraced. Each layer therefore keeps the rate it applies in
a float32 `keras.Variable` that the compiled step reads on every call.

That variable is state, not a weight, like a `SeedGenerator`'s state: it is
part of `layer.variables` (so JAX's stateless train step receives it as an
input and TensorFlow captures it by reference), but not of `layer.weights`,
so it is never written to a `.keras` file and not counted by `summary()`.
The configured rate (the constructor argument) stays a Python float and is
what `get_config()` returns; a scheduler changes only the variable.

Seeds come from `keras_drop.layers._replicas.SeedGenerator`, Keras' own
generator that draws a different seed on each replica of a `tf.distribute`
strategy (Keras' own gives every replica the same seed, so the same mask).

Monte Carlo inference (`keras_drop.mc_predict`) calls a model with
`training=False`, so that BatchNormalization and every other layer run as
at inference, inside `monte_carlo_scope()`: there every layer of this base
draws its noise as in training (`_drops(training)` is true). The scope is
read when a call is traced, so a compiled function traced inside it keeps
the regularizers active and one traced outside keeps them off.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import keras

from keras_drop import _validation
from keras_drop import ops as drop_ops
from keras_drop.layers._replicas import SeedGenerator

_monte_carlo = threading.local()


@contextlib.contextmanager
def monte_carlo_scope() -> Iterator[None]:
    """Inside, every `ScheduledStrength` layer drops as in training, whatever
    its `training` argument (the layers it holds still receive that
    argument). Nests; thread-local, as Keras' own call context is."""
    depth = getattr(_monte_carlo, "depth", 0)
    _monte_carlo.depth = depth + 1
    try:
        yield
    finally:
        _monte_carlo.depth = depth


def in_monte_carlo_scope() -> bool:
    """Whether a call made now is part of a Monte Carlo pass."""
    return getattr(_monte_carlo, "depth", 0) > 0


class _StateHolder:
    """Keeps a variable out of Layer's attribute tracking (so not a weight)."""

    __slots__ = ("variable",)

    def __init__(self, variable: keras.Variable):
        self.variable = variable


class ArgumentErrorsOnLoad:
    """Mixin: a bad argument in a saved config raises the constructor's
    `ValueError` when the layer is deserialized.

    Keras' `Operation.from_config` turns every exception the constructor
    raises into a `TypeError` ("could not be deserialized properly") that a
    functional model's loader wraps again, so a `.keras` file whose config
    holds `rate=2.0` would read as a broken file. The `ValueError` that names
    the argument and the value is raised instead, with the layer's name.
    """

    @classmethod
    def from_config(cls, config: dict[str, Any]):
        try:
            return super().from_config(config)
        except TypeError as error:
            cause = error.__context__
            if not isinstance(cause, ValueError):
                raise
            name = config.get("name")
            raise ValueError(
                f"{cause} (in the config of {cls.__name__} {name!r})"
            ) from cause


class ScheduledStrength(ArgumentErrorsOnLoad):
    """Mixin for a random Keras layer with one schedulable strength argument.

    The strength is a drop probability `rate` in [0, 1) (or `beta` for
    `UniformDropout`). Subclasses call `_init_strength` in `__init__` after
    the Layer constructor, which also sets up the seed (`self.seed`, and
    `self.seed_generator` for every random op), and read the value to apply
    with `self._current_strength()` inside `call`. The strength and the seed
    come back in `get_config()`. `DropRateScheduler` finds layers through
    this class.
    """

    _strength_name = "rate"

    def _init_strength(self, strength: Any, seed: int | None) -> None:
        self.seed = _validation.validate_seed(seed)
        self.seed_generator = SeedGenerator(self.seed)
        value = self._validate_strength(strength)
        with keras.name_scope(self.name, caller=self):
            variable = keras.Variable(
                value,
                dtype="float32",
                trainable=False,
                autocast=False,
                name=f"current_{self._strength_name}",
            )
        self._strength_state = _StateHolder(variable)
        self._strength = value

    def _validate_strength(self, value: Any) -> float:
        return _validation.validate_rate(value, self._strength_name)

    # The configured strength: a constructor argument, in the config.
    def _get_strength(self) -> float:
        return self._strength

    def _set_strength(self, value: Any) -> None:
        """Set the configured strength; compiled steps see it on their next run."""
        value = self._validate_strength(value)
        self._strength = value
        self._strength_state.variable.assign(value)

    def _drops(self, training: Any) -> bool:
        """Whether this call applies the regularizer: in training, and in a
        Monte Carlo pass (`monte_carlo_scope`) at inference."""
        return bool(training) or in_monte_carlo_scope()

    def _current_strength(self) -> Any:
        """The strength the next call applies, as a float32 scalar tensor."""
        return self._strength_state.variable.value

    def _set_current_strength(self, value: float) -> None:
        """Change only the applied strength (a scheduler's hook): the
        configured value and the config are left as they are."""
        self._strength_state.variable.assign(self._validate_strength(value))

    @property
    def variables(self) -> list[keras.Variable]:
        return super().variables + [self._strength_state.variable]

    def get_config(self) -> dict[str, Any]:
        base_config = super().get_config()
        config = {self._strength_name: self._strength, "seed": self.seed}
        return {**base_config, **config}


def strength_property(doc: str) -> property:
    """The public name of a layer's strength (`rate`, `beta`): reads the
    configured value; assigning validates it and reaches compiled steps."""
    return property(
        lambda self: self._get_strength(),
        lambda self, value: self._set_strength(value),
        doc=doc,
    )


class RateProperty:
    """Mixin: the public `rate` of a `ScheduledStrength` layer."""

    rate = strength_property(
        "The configured drop probability; assigning it takes effect in "
        "already compiled steps."
    )


class DropLayer(ScheduledStrength, keras.layers.Layer):
    """A layer with a seed generator and one schedulable strength argument."""

    def __init__(self, strength: Any, *, seed: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.supports_masking = True
        self._init_strength(strength, seed)

    def compute_output_shape(self, input_shape):
        return input_shape


class RateLayer(RateProperty, DropLayer):
    """A `DropLayer` whose strength is a drop probability `rate` in [0, 1)."""


class _SizedState:
    """The Python-side bookkeeping of a rate that sizes a shape (kept out of
    Layer's attribute tracking: it holds no variable)."""

    __slots__ = ("batch_sizes", "rate", "stale", "warned")

    def __init__(self, rate: float):
        self.rate = rate
        # The sizes n training calls were traced with (None: unknown then).
        self.batch_sizes: set[int | None] = set()
        self.stale = False
        # Whether a small training batch has been warned about.
        self.warned = False

    def apply(self, rate: float) -> None:
        """A size unknown when traced (a TensorFlow step) gives a run-time
        k from the rate frozen then: any new rate makes it stale."""
        for size in self.batch_sizes:
            if size is None:
                self.stale = self.stale or rate != self.rate
            elif drop_ops._subset_size(rate, size) != drop_ops._subset_size(
                self.rate, size
            ):
                self.stale = True
        self.rate = rate


class RateSizesShape:
    """Mixin for a `ScheduledStrength` layer whose rate sizes a shape: the
    k = max(1, floor((1 - rate) n)) samples (`StochasticDepthBlock`'s subset
    mode) or tokens (`PatchDropout`) it keeps of n.

    k is fixed when a step is traced, so it cannot come from the rate
    variable: the layer keeps the applied rate as a Python float
    (`self._subset.rate`), records the sizes n its training calls were
    traced with (`self._subset.batch_sizes`), and `DropRateScheduler` asks
    `_traced_shapes_changed()` whether a new rate changed k for one of them
    (the train step is then traced again). Subclasses call `_init_sized()`
    after `_init_strength`.
    """

    def _init_sized(self) -> None:
        self._subset = _SizedState(self._strength)

    def _set_strength(self, value: Any) -> None:
        super()._set_strength(value)
        self._subset.apply(self._strength)

    def _set_current_strength(self, value: float) -> None:
        super()._set_current_strength(value)
        self._subset.apply(_validation.validate_rate(value, "rate"))

    def _traced_shapes_changed(self) -> bool:
        """Whether a rate set since the train step was traced changed k
        (the step must then be traced again); resets the flag."""
        changed, self._subset.stale = self._subset.stale, False
        return changed
