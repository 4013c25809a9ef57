"""Shared test helpers: the smoke test every keras_drop layer gets.

`run_layer_test` is in the spirit of Keras' own `run_layer_test` (which lives
in the private `keras.src.testing` and is not imported here): config and
serialization round trips, a symbolic call with unknown dimensions, eager
training and inference calls, one compiled `fit` step and mixed-precision
calls.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops
from numpy.lib.stride_tricks import sliding_window_view

BACKEND = keras.backend.backend()
# jit_compile=True where the backend compiles the train step (XLA / jax.jit);
# Keras' torch trainer would route it through torch.compile instead.
JIT_COMPILE = BACKEND in ("tensorflow", "jax")


def to_numpy(x: Any) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def bits(x: Any) -> np.ndarray:
    """The raw bits of a float array, for bit-for-bit comparisons."""
    a = to_numpy(x)
    return a.view(f"uint{8 * a.dtype.itemsize}")


def _normalize(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_normalize(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in value.items()}
    return value


def _same_argument(got: Any, given: Any) -> bool:
    """A config value equals the argument given, up to normalization (a
    tuple for a list, an int expanded to a tuple of that int)."""
    got, given = _normalize(got), _normalize(given)
    if isinstance(given, bool) or given is None or isinstance(given, str):
        return got == given
    if isinstance(given, (int, float)):
        if isinstance(got, list):
            return all(g == given for g in got)
        return bool(np.isclose(got, given))
    return got == given


def _random_inputs(shape: Any, dtype: str = "float32", seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    if isinstance(shape, list):
        return [_random_inputs(s, dtype, seed + i) for i, s in enumerate(shape)]
    return ops.convert_to_tensor(
        rng.uniform(0.5, 1.5, size=shape).astype("float32"), dtype=dtype
    )


def _symbolic_inputs(shape: Any) -> Any:
    if isinstance(shape, list):
        return [keras.Input(s) for s in shape]
    return keras.Input(shape)


def _first(x: Any) -> Any:
    return x[0] if isinstance(x, list) else x


def run_layer_test(
    layer_cls: type,
    init_kwargs: dict[str, Any],
    input_shape: tuple[int, ...] | list[tuple[int, ...]],
    *,
    symbolic_shape: tuple | list[tuple] | None = None,
    mixed_precision: bool = True,
    fit: bool = True,
    output_shape: Any = None,
    identity_at_inference: bool = True,
    default_is_inference: bool = True,
) -> None:
    """Smoke-test a layer class.

    Args:
        layer_cls: the layer class.
        init_kwargs: constructor arguments; each must come back in the config.
        input_shape: a concrete input shape with the batch dimension, or a
            list of shapes for a layer called on a list.
        symbolic_shape: shape(s) without the batch dimension for the symbolic
            call, with `None` for unknown sizes. Defaults to `input_shape`
            without the batch dimension.
        mixed_precision: also call under "mixed_float16" and
            "mixed_bfloat16" and check dtype and finiteness.
        fit: run one compiled `fit` step of a model holding the layer.
        output_shape: a function from the input shape (of the first input)
            to the output shape; defaults to the identity.
        identity_at_inference: check that `training=False` returns the
            input bit for bit (single-input layers).
        default_is_inference: check that a call with `training` unset
            behaves as `training=False` (augmentation layers called on their
            own are active instead).
    """
    if output_shape is None:

        def output_shape(shape):
            return tuple(shape)

    multi = isinstance(input_shape, list)
    if symbolic_shape is None:
        symbolic_shape = (
            [tuple(s[1:]) for s in input_shape] if multi else tuple(input_shape[1:])
        )

    # 1. Config round trip: every argument comes back, from_config rebuilds it.
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    for key, value in init_kwargs.items():
        assert _same_argument(config[key], value), (key, config[key], value)
    rebuilt = layer_cls.from_config(config)
    assert _normalize(rebuilt.get_config()) == _normalize(config)

    # 2. Serialization through the registry, with no custom_objects.
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == f"keras_drop>{layer_cls.__name__}"
    restored = keras.saving.deserialize_keras_object(serialized)
    assert type(restored) is layer_cls
    assert _normalize(restored.get_config()) == _normalize(config)

    # 3. Symbolic call with unknown dimensions.
    symbolic = _symbolic_inputs(symbolic_shape)
    layer = layer_cls(**init_kwargs)
    outputs = layer(symbolic)
    expected_shape = output_shape(tuple(_first(symbolic).shape))
    assert tuple(outputs.shape) == tuple(expected_shape), (
        outputs.shape,
        expected_shape,
    )
    keras.Model(symbolic, outputs)

    # 4. Eager calls: training keeps shape and dtype; inference is the identity.
    data = _random_inputs(input_shape)
    layer = layer_cls(**init_kwargs)
    trained = layer(data, training=True)
    reference = _first(data)
    assert tuple(trained.shape) == output_shape(tuple(reference.shape))
    assert keras.backend.standardize_dtype(trained.dtype) == "float32"
    assert np.all(np.isfinite(to_numpy(trained)))
    inferred = layer(data, training=False)
    if identity_at_inference and not multi:
        np.testing.assert_array_equal(bits(inferred), bits(data))
    if default_is_inference:
        default = layer(data)
        np.testing.assert_array_equal(bits(default), bits(inferred))

    # 5. One compiled fit step.
    if fit:
        inputs = _symbolic_inputs(
            [tuple(s[1:]) for s in input_shape] if multi else tuple(input_shape[1:])
        )
        hidden = layer_cls(**init_kwargs)(inputs)
        model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
        model.compile(optimizer="sgd", loss="mse", jit_compile=JIT_COMPILE)
        target = np.zeros(tuple(reference.shape[:-1]) + (1,), "float32")
        history = model.fit(
            data,
            target,
            batch_size=max(1, reference.shape[0] // 2),
            epochs=1,
            verbose=0,
        )
        assert np.isfinite(history.history["loss"][-1])

    # 6. Mixed precision: the compute dtype comes out, finite.
    if mixed_precision:
        for policy, dtype in (
            ("mixed_float16", "float16"),
            ("mixed_bfloat16", "bfloat16"),
        ):
            layer = layer_cls(**init_kwargs, dtype=policy)
            out = layer(_random_inputs(input_shape), training=True)
            assert keras.backend.standardize_dtype(out.dtype) == dtype, (
                policy,
                out.dtype,
            )
            assert np.all(np.isfinite(to_numpy(ops.cast(out, "float32"))))


def assert_seed_behaviour(factory: Any, inputs: Any, functional: Any = None) -> None:
    """The seed contract: two fresh layers with one seed draw the same
    sequence, successive calls of one layer differ, and a functional form
    called twice with one int seed repeats itself.

    Args:
        factory: a function `seed -> layer`.
        inputs: the layer's inputs.
        functional: optionally a function `seed -> output` of the op.
    """
    first, second = factory(7), factory(7)
    a1, a2 = (
        to_numpy(first(inputs, training=True)),
        to_numpy(first(inputs, training=True)),
    )
    np.testing.assert_array_equal(a1, to_numpy(second(inputs, training=True)))
    np.testing.assert_array_equal(a2, to_numpy(second(inputs, training=True)))
    assert not np.array_equal(a1, a2)
    assert not np.array_equal(a1, to_numpy(factory(8)(inputs, training=True)))
    if functional is not None:
        np.testing.assert_array_equal(to_numpy(functional(3)), to_numpy(functional(3)))


class Ones(keras.layers.Layer):
    """x * w with a trainable scalar w = 1: the trainable op a train step
    needs (torch's backward fails on a step with nothing trainable)."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(), initializer="ones")

    def call(self, inputs):
        return inputs * self.w


def zero_fraction(y_true: Any, y_pred: Any) -> Any:
    """A loss that is the fraction of exact zeros in the prediction (the
    zero-weighted term gives the optimizer a zero gradient)."""
    fraction = ops.mean(ops.cast(ops.equal(y_pred, 0.0), "float32"))
    return fraction + 0.0 * ops.mean(y_pred)


def is_union_of_blocks(
    dropped: np.ndarray, block: Any, *, clipped: bool = False
) -> bool:
    """True iff every marked unit lies in a fully marked block (a
    morphological opening leaves the set unchanged).

    `dropped` is a boolean array of shape (maps, *spatial) and `block` one
    side per spatial axis. Blocks lie inside the map, unless `clipped`: then
    a block may cross the border and only its part inside the map is marked
    (Cutout's patches).
    """
    dropped = np.asarray(dropped, bool)
    block = tuple(block)
    source = dropped
    if clipped:
        # Outside the map counts as marked, so a block crossing the border
        # is full when its part inside is.
        pad = [(0, 0)] + [(b - 1, b - 1) for b in block]
        source = np.pad(dropped, pad, constant_values=True)
    spatial = tuple(range(1, dropped.ndim))
    windows = sliding_window_view(source, block, axis=spatial)
    full = windows.all(axis=tuple(range(-len(block), 0)))
    covered = np.zeros(source.shape, bool)
    for offset in itertools.product(*[range(b) for b in block]):
        index = (slice(None),) + tuple(
            slice(o, o + v) for o, v in zip(offset, full.shape[1:], strict=True)
        )
        covered[index] |= full
    if clipped:
        covered = covered[
            (slice(None),) + tuple(slice(b - 1, 1 - b or None) for b in block)
        ]
    return np.array_equal(covered, dropped)


ROOT = Path(__file__).resolve().parent.parent


def fresh_process_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a new interpreter on the current backend, with
    this checkout's `keras_drop` first on the path, plus `env`."""
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {
        **os.environ,
        "KERAS_BACKEND": BACKEND,
        "PYTHONPATH": os.pathsep.join(path),
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        **(env or {}),
    }


def run_in_fresh_process(
    args: list[str], *, env: dict[str, str] | None = None, timeout: float = 600
) -> str:
    """Run `python ARGS` from the repository root in a new interpreter on
    the current backend (this checkout's `keras_drop` first on the path);
    fail with its output if it fails. Returns its stdout."""
    result = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=fresh_process_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, (
        f"python {' '.join(args)} exited with {result.returncode}:\n"
        f"{result.stdout[-2000:]}\n{result.stderr[-6000:]}"
    )
    return result.stdout
