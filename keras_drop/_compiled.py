"""Compiling a pure function of tensors, per backend: the one place
`keras_drop.monte_carlo` imports TensorFlow or JAX, and why.

Keras compiles its own train, test and predict steps (`tf.function`,
`jax.jit`) but offers no public way to compile another function. Monte
Carlo inference runs many stochastic passes of a model with the model's
variables (their values, seed states replaced) as inputs, so one trace
serves every pass: `jax.jit` on JAX, `tf.function` on TensorFlow. PyTorch
runs eagerly, as Keras' own `predict` does there.

`map_rows` runs a function on each row of a batch separately, every row
seeing the same random draws: `jax.vmap` draws once for every row when the
seed is not batched, TensorFlow's `vectorized_map` leaves a draw whose seed
and shape do not depend on the row outside the loop (one draw), and on
PyTorch a loop reseeds each row's generator from the same seed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras


def compile_function(fn: Callable) -> Callable:
    """`fn` traced once per input signature (eager on PyTorch)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(fn)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, reduce_retracing=True, autograph=False)
    return fn


def map_rows(fn: Callable, rows: Any) -> Any:
    """`fn` on each row of `rows` (a tensor or a structure of tensors),
    stacked; random draws seeded alike are the same for every row."""
    if keras.backend.backend() in ("jax", "tensorflow"):
        return keras.ops.vectorized_map(fn, rows)
    return keras.ops.map(fn, rows)
