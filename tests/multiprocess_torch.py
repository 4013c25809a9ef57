"""One rank of a two-process PyTorch DistributedDataParallel run on this
host's CPU (gloo), around a Keras model as Keras' own torch-DDP guide
does, trained with `fit`.

    python -m tests.multiprocess_torch DIR RANK   (KERAS_DROP_COORDINATOR=host:port)
"""

from __future__ import annotations

import os
import sys

import keras
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from tests import multiprocess_worker as worker


class _Untracked:
    """Hides the DDP wrapper from Keras' and torch's attribute tracking
    (the wrapped model's weights are the model's own)."""

    def __init__(self, module):
        self.module = module


class DistributedModel(keras.Model):
    """`model` called through `DistributedDataParallel`, so that `fit`'s
    backward pass averages the gradients over the ranks."""

    def __init__(self, model: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.model = model
        # A skipped StochasticDepthBlock branch leaves weights unused.
        self._ddp = _Untracked(
            DistributedDataParallel(model, find_unused_parameters=True)
        )

    def call(self, inputs, training=None):
        return self._ddp.module(inputs, training=training)


def main(directory: str, rank: int) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://{os.environ['KERAS_DROP_COORDINATOR']}",
        rank=rank,
        world_size=2,
    )
    worker.seed_everything()
    model = worker.every_layer_model()
    distributed = DistributedModel(model)
    distributed.compile(keras.optimizers.SGD(0.05), "mse")
    x, y = worker.training_data(rank)  # this rank's samples
    rates = worker.fit(
        distributed,
        x=x,
        y=y,
        batch_size=worker.PER_PROCESS,
        shuffle=False,
    )
    probes, names, batches = worker.probe_model()
    masks = worker.masks(lambda: probes(batches), names)
    worker.write_report(directory, rank, model, rates, masks)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
    # Seen here: the interpreter, its work done, hung while finalizing
    # (in native code, after the process group was destroyed).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
