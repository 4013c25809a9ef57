"""One worker of a two-process `tf.distribute.MultiWorkerMirroredStrategy`
run on this host's CPU; `TF_CONFIG` names the cluster and this worker.

    python -m tests.multiprocess_tf DIR RANK
"""

from __future__ import annotations

import sys

import keras
import tensorflow as tf

from tests import multiprocess_worker as worker


def main(directory: str, rank: int) -> None:
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    assert strategy.num_replicas_in_sync == 2
    worker.seed_everything()
    with strategy.scope():
        model = worker.every_layer_model()
        probes, names, batches = worker.probe_model()
    x, y = worker.training_data(rank)
    # Each worker feeds its own samples: no auto-sharding of the dataset.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.OFF
    )
    dataset = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .batch(worker.PER_PROCESS)
        .repeat()
        .with_options(options)
    )
    # Two bugs of Keras 3.15's `fit` under this strategy (known since
    # Keras 3.0: tensorflow/tensorflow#72388), worked around here. It
    # reduces one distributed (x, y) batch with `strategy.reduce`, which
    # refuses a tuple, to build the training state symbolically: build it
    # from a local batch. And it reduces each scalar log with
    # `strategy.reduce("MEAN", log, axis=0)`: give each log that axis.
    with strategy.scope():
        model._symbolic_build(data_batch=(x, y))
    model._maybe_symbolic_build = lambda **kwargs: None
    train_step = model.train_step
    model.train_step = lambda data: {
        name: keras.ops.reshape(log, (1,)) for name, log in train_step(data).items()
    }
    rates = worker.fit(model, x=dataset, steps_per_epoch=worker.STEPS)

    @tf.function
    def forward(inputs):
        return strategy.run(probes, args=(inputs,))

    masks = worker.masks(
        lambda: strategy.experimental_local_results(forward(batches))[0], names
    )
    worker.write_report(directory, rank, model, rates, masks)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
