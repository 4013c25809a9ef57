"""Whether a JAX value is being traced (inside `jax.jit`) or is concrete.

`keras.ops.cond` on JAX is `jax.lax.cond`, which outside `jax.jit` compiles
both branches again on every call (18 s per eager `drop_block` call on CPU,
measured, against 20 ms). An eager call can instead read the predicate and
run one branch in Python. Keras offers no public way to ask whether a value
is a tracer, so this one small module asks JAX.
"""

from __future__ import annotations

from typing import Any


def is_tracer(value: Any) -> bool:
    import jax

    return isinstance(value, jax.core.Tracer)
