"""Argument checks shared by the functional ops and the layers.

Every check raises `ValueError` with one message pattern, the one Keras' own
layers use:

    Invalid value received for argument `rate`. Expected a float value
    between 0 and 1 (1 excluded). Received: rate=1.5

The module sits at the package top level (not in `layers/`) because the
functional forms in `keras_drop.ops` validate their arguments too, and ops
must not import layers.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np


def invalid_value(name: str, expected: str, value: Any) -> ValueError:
    """The one message template for a bad argument."""
    return ValueError(
        f"Invalid value received for argument `{name}`. Expected {expected}. "
        f"Received: {name}={value!r}"
    )


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# Layers apply their rates and values in float32 (a rate is a float32
# variable): a value must keep its meaning there.
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def validate_rate(value: Any, name: str = "rate") -> float:
    """A drop probability in [0, 1), also once rounded to float32 (a rate
    above 1 - 2**-25 is 1 there). Returns it as a Python float."""
    if not _is_real(value) or not 0.0 <= float(value) < 1.0:
        raise invalid_value(name, "a float value between 0 and 1 (1 excluded)", value)
    if np.float32(value) == 1.0:
        raise invalid_value(
            name, "a float value between 0 and 1 (1 excluded, also in float32)", value
        )
    return float(value)


def validate_non_negative(value: Any, name: str) -> float:
    """A float >= 0, finite in float32. Returns it as a Python float."""
    if not _is_real(value) or not 0.0 <= float(value) <= _FLOAT32_MAX:
        raise invalid_value(name, "a float value >= 0, finite in float32", value)
    return float(value)


def validate_strength(
    value: Any, check: Any = validate_rate, name: str = "rate"
) -> None:
    """A rate (or `beta`) given as a number is checked against its range; a
    scalar tensor (a layer's variable) was checked when it was assigned.
    Anything else is refused."""
    if isinstance(value, keras.Variable) or keras.ops.is_tensor(value):
        if len(value.shape) == 0:
            return
        raise invalid_value(name, "a float or a scalar tensor", value)
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    check(value, name)


def validate_finite(value: Any, name: str) -> float:
    """A float that is finite in float32. Returns it as a Python float."""
    if not _is_real(value) or not abs(float(value)) <= _FLOAT32_MAX:
        raise invalid_value(name, "a float value, finite in float32", value)
    return float(value)


def validate_length(value: Any, name: str = "length") -> int | float:
    """A patch side: an int >= 1 (pixels) or a float in (0, 1] (a fraction).

    An int stays an int and a float a float: `1` is one pixel, `1.0` the
    whole shorter side.
    """
    expected = "an integer >= 1 (pixels) or a float in (0, 1] (a fraction)"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if value < 1:
            raise invalid_value(name, expected, value)
        return int(value)
    if _is_real(value) and 0.0 < float(value) <= 1.0:
        return float(value)
    raise invalid_value(name, expected, value)


def validate_positive_int(value: Any, name: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise invalid_value(name, "a positive integer", value)
    if value < 1:
        raise invalid_value(name, "a positive integer", value)
    return int(value)


def validate_non_negative_int(value: Any, name: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise invalid_value(name, "an integer >= 0", value)
    return int(value)


def validate_optional_positive_int(value: Any, name: str) -> int | None:
    """A positive int or None (such as a number of steps: None for all)."""
    if value is None:
        return None
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise invalid_value(name, "a positive integer or None", value)
    return int(value)


def validate_int_tuple(value: Any, n: int, name: str) -> tuple[int, ...]:
    """A positive int or a sequence of `n` positive ints, as an `n`-tuple."""
    expected = (
        "a positive integer"
        if n == 1
        else f"a positive integer or a tuple of {n} positive integers"
    )
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        # No annotation on `values`: TensorFlow's AutoGraph, which converts
        # this function when `drop_block` is called in a `tf.function`,
        # cannot convert an annotated name assigned in an `if` and warns.
        values = (value,) * n
    elif isinstance(value, Sequence) and not isinstance(value, str):
        values = tuple(value)
    else:
        raise invalid_value(name, expected, value)
    if len(values) != n or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1
        for v in values
    ):
        raise invalid_value(name, expected, value)
    return tuple(int(v) for v in values)


def validate_choice(value: Any, choices: Sequence[str], name: str) -> str:
    if value not in choices:
        options = ", ".join(f'"{c}"' for c in choices)
        raise invalid_value(name, f"one of {options}", value)
    return value


def validate_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise invalid_value(name, "a boolean", value)
    return value


def standardize_data_format(value: Any) -> str:
    """`None` means `keras.config.image_data_format()`."""
    if value is None:
        return keras.config.image_data_format()
    if isinstance(value, str):
        lowered = value.lower()
        if lowered in ("channels_last", "channels_first"):
            return lowered
    raise invalid_value(
        "data_format", '"channels_last", "channels_first" or None', value
    )


# The seeds every backend accepts: a `keras.random.SeedGenerator` keeps its
# seed in a uint32 (JAX) or int32 (PyTorch) state variable, so a negative seed
# fails on JAX and one of 2**31 or more on PyTorch, at the first draw.
MAX_SEED = 2**31 - 1


def validate_seed(value: Any) -> int | None:
    """A layer's seed: an int in [0, 2**31 - 1] or None (a generator is
    built from it)."""
    if value is None:
        return None
    if (
        not isinstance(value, numbers.Integral)
        or isinstance(value, bool)
        or not 0 <= value <= MAX_SEED
    ):
        raise invalid_value("seed", f"an integer in [0, {MAX_SEED}] or None", value)
    return int(value)


def validate_op_seed(value: Any) -> Any:
    """A functional form's seed: an int in [0, 2**31 - 1], a
    `keras.random.SeedGenerator` or None."""
    if value is None or isinstance(value, keras.random.SeedGenerator):
        return value
    if (
        not isinstance(value, numbers.Integral)
        or isinstance(value, bool)
        or not 0 <= value <= MAX_SEED
    ):
        raise invalid_value(
            "seed",
            f"an integer in [0, {MAX_SEED}], a `keras.random.SeedGenerator` or None",
            value,
        )
    return int(value)


def check_rank(shape: Sequence[Any], expected: int, layer: str, layout: str) -> None:
    """Raise a ValueError naming the expected rank and the received shape."""
    if len(shape) != expected:
        raise ValueError(
            f"Input to `{layer}` must be of rank {expected}, {layout}. "
            f"Received: inputs.shape={tuple(shape)}"
        )


def check_min_rank(shape: Sequence[Any], minimum: int, name: str) -> None:
    """A batch-first input of rank `minimum` or more."""
    if len(shape) < minimum:
        raise ValueError(
            f"Input to `{name}` must be of rank >= {minimum}, batch first. "
            f"Received: inputs.shape={tuple(shape)}"
        )


def check_same_shape(first: Sequence[Any], second: Sequence[Any], name: str) -> None:
    """Two shapes that must match where both are known (None matches)."""
    first, second = tuple(first), tuple(second)
    if len(first) != len(second) or any(
        a is not None and b is not None and a != b
        for a, b in zip(first, second, strict=True)
    ):
        raise ValueError(
            f"`{name}` expects a shortcut and a residual of the same shape. "
            f"Received: shortcut.shape={first}, residual.shape={second}"
        )


def check_image_rank(shape: Sequence[Any], name: str, data_format: str) -> None:
    """An image (rank 3) or a batch of images (rank 4)."""
    if len(shape) not in (3, 4):
        layout = (
            "(height, width, channels)"
            if data_format == "channels_last"
            else "(channels, height, width)"
        )
        raise ValueError(
            f"Input to `{name}` must be of rank 3, {layout}, or rank 4 with a "
            f"batch axis first. Received: inputs.shape={tuple(shape)}"
        )
