"""Independent masks per replica under `tf.distribute` and per process
under `torch.distributed`: the one place the layers import TensorFlow or
torch, and why.

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
on every replica. On one device and in a cross-replica context the seeds
are Keras' own, unchanged; on the other backends TensorFlow is not
imported. `MultiWorkerMirroredStrategy` needs nothing more: its replica
ids run over every worker's replicas.

PyTorch's DistributedDataParallel runs one process per replica, each with
its own copy of the model, and every process built with the same seed
draws the same masks. When `torch.distributed` is initialized with more
than one process, `next()` returns a hash of the seed and the process's
rank instead (the same 32-bit mix as MurmurHash3's finalizer, in Python on
the two seed words: Keras' torch backend reads the seed as a Python int
anyway). Without `torch.distributed`, seeds are Keras' own.

JAX's `keras.distribution.DataParallel` needs nothing, in one process or
several (`jax.distributed`): it runs one SPMD program over the
batch-sharded global batch, so a mask drawn per sample for the global
batch already differs from shard to shard (and a draw made once per batch
is made once for the global batch, as on one device).
"""

from __future__ import annotations

from typing import Any

import keras


class SeedGenerator(keras.random.SeedGenerator):
    """`keras.random.SeedGenerator` that draws a different seed on each
    replica of a `tf.distribute` strategy."""

    def next(self, ordered: bool = True) -> Any:
        seed = super().next(ordered=ordered)
        backend = keras.backend.backend()
        if backend == "tensorflow":
            return _fold_in_replica(seed)
        if backend == "torch":
            return _fold_in_process(seed)
        return seed


def _fold_in_replica(seed: Any) -> Any:
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return seed
    replica = tf.cast(context.replica_id_in_sync_group, seed.dtype)
    return tf.random.experimental.stateless_fold_in(seed, replica)


def _fold_in_process(seed: Any) -> Any:
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return seed
    if dist.get_world_size() == 1:
        return seed
    first, second = (word & 0xFFFFFFFF for word in seed.tolist())
    mixed = _mix32(_mix32(_mix32(first) ^ second) ^ dist.get_rank())
    # Keras' torch backend seeds its generator with the sum of the words.
    mixed = (mixed ^ 0x80000000) - 0x80000000  # the bits as an int32
    return keras.ops.convert_to_tensor([mixed, 0], dtype=seed.dtype)


def _mix32(value: int) -> int:
    """MurmurHash3's 32-bit finalizer: every input bit flips about half of
    the output bits."""
    value &= 0xFFFFFFFF
    value ^= value >> 16
    value = (value * 0x85EBCA6B) & 0xFFFFFFFF
    value ^= value >> 13
    value = (value * 0xC2B2AE35) & 0xFFFFFFFF
    return value ^ (value >> 16)
