"""Independent masks per replica under `tf.distribute`: the one place the
layers import TensorFlow, and why.

Under `tf.distribute.MirroredStrategy` every replica runs the same traced
step with its own copy of each variable, all holding the same value. A
`keras.random.SeedGenerator` therefore hands every replica the same seed,
and a layer draws the same mask on every replica: two replicas fed the same
samples drop the same units, and the per-replica batches are no longer
independent samples of the noise (Keras' own `Dropout` does this, seeded or
not). Keras offers no public way to know the replica, and `keras.random`
accepts a tensor seed in a TensorFlow graph only through a `SeedGenerator`.

`SeedGenerator` here is Keras' generator whose `next()` folds the id of the
current replica (`tf.distribute.get_replica_context()`) into the seed it
returns, with `tf.random.experimental.stateless_fold_in` (a hash, so no
replica's seed sequence is a shifted copy of another's), when more than one
replica runs in sync. The generator's state advances as before, identically
on every replica. On one device, in a cross-replica context and on the JAX
and PyTorch backends the seeds are Keras' own, unchanged, and TensorFlow is
not imported. JAX's `keras.distribution.DataParallel` needs nothing: it
runs one SPMD program over the batch-sharded global batch, so a mask drawn
per sample for the global batch already differs from shard to shard (and a
draw made once per batch is made once for the global batch, as on one
device).
"""

from __future__ import annotations

from typing import Any

import keras


class SeedGenerator(keras.random.SeedGenerator):
    """`keras.random.SeedGenerator` that draws a different seed on each
    replica of a `tf.distribute` strategy."""

    def next(self, ordered: bool = True) -> Any:
        seed = super().next(ordered=ordered)
        if keras.backend.backend() != "tensorflow":
            return seed
        return _fold_in_replica(seed)


def _fold_in_replica(seed: Any) -> Any:
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return seed
    replica = tf.cast(context.replica_id_in_sync_group, seed.dtype)
    return tf.random.experimental.stateless_fold_in(seed, replica)
