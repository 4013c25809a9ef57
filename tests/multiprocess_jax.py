"""One process of a two-process JAX run on this host's CPU:
`jax.distributed` on a loopback coordinator, and
`keras.distribution.DataParallel` over the global devices.

    python -m tests.multiprocess_jax DIR RANK   (KERAS_DROP_COORDINATOR=host:port)
"""

from __future__ import annotations

import os
import sys

import jax
import keras
import numpy as np

import keras_drop
from tests import multiprocess_worker as worker


def main(directory: str, rank: int) -> None:
    jax.distributed.initialize(
        coordinator_address=os.environ["KERAS_DROP_COORDINATOR"],
        num_processes=2,
        process_id=rank,
    )
    devices = jax.devices()
    assert len(devices) == 2 and len(jax.local_devices()) == 1
    keras.distribution.set_distribution(
        # Each process feeds its own samples: numpy arrays, already sharded.
        keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
    )
    worker.seed_everything()
    # The probes (every keras_drop layer) are the model trained: XLA
    # compiles one train step, not two programs.
    probes, names, batches = worker.probe_model()
    probes.compile(keras.optimizers.SGD(0.05), "mse")
    x = [np.concatenate([batch] * worker.STEPS) for batch in batches]
    y = [np.zeros_like(a) for a in x]
    rates = worker.fit(probes, x=x, y=y, batch_size=worker.PER_PROCESS)

    sharding = jax.sharding.NamedSharding(
        jax.sharding.Mesh(np.array(devices), ("batch",)),
        jax.sharding.PartitionSpec("batch"),
    )
    global_batches = [
        jax.make_array_from_process_local_data(sharding, batch) for batch in batches
    ]
    # One compiled forward pass (op-by-op calls on global arrays crawl),
    # its seed states threaded from call to call.
    forward = jax.jit(probes.stateless_call)
    trainable = [v.value for v in probes.trainable_variables]
    state = [v.value for v in probes.non_trainable_variables]

    def call():
        nonlocal state
        outputs, state = forward(trainable, state, global_batches)
        return outputs

    masks = worker.masks(call, names)
    worker.write_report(directory, rank, probes, rates, masks)


def _residual_model() -> keras.Model:
    x = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", name="conv")(x)
    dropped = keras_drop.DropBlock2D(0.3, 3, seed=1, name="drop_block")(h)
    branch = keras.layers.Conv2D(4, 1, name="branch")(dropped)
    y = keras_drop.StochasticDepth(0.5, mode="row", seed=2, name="depth")(
        [dropped, branch]
    )
    head = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(y))
    return keras.Model(x, [head, dropped, y])


def model_parallel(directory: str) -> None:
    """`ModelParallel` over this process's two host devices, the conv's
    kernel split over them; then the same model, weights and seed states
    on one device."""
    devices = jax.devices()
    assert len(devices) == 2
    mesh = keras.distribution.DeviceMesh((1, 2), ["batch", "model"], devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map["conv/kernel"] = (None, None, None, "model")
    keras.distribution.set_distribution(
        keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
    )
    worker.seed_everything()
    model = _residual_model()
    model.compile(keras.optimizers.SGD(0.05), ["mse", None, None])
    x = np.random.default_rng(0).uniform(size=(16, 8, 8, 3)).astype("float32")
    before = [np.asarray(w) for w in model.trainable_weights]
    history = model.fit(x, np.zeros((16, 2), "float32"), batch_size=8, verbose=0)
    kernel = model.get_layer("conv").kernel.value
    report = {
        "loss": np.array(history.history["loss"]),
        "trained": np.array(
            [
                not np.array_equal(np.asarray(w), b)
                for w, b in zip(model.trainable_weights, before, strict=True)
            ]
        ),
        "kernel_shards": np.array([s.data.shape for s in kernel.addressable_shards]),
    }
    weights = model.get_weights()
    seeds = {
        name: np.asarray(model.get_layer(name).seed_generator.state.value)
        for name in ("drop_block", "depth")
    }
    report["sharded"] = np.stack(
        [np.asarray(y) for y in model(x[:4], training=True)[1:]]
    )
    keras.distribution.set_distribution(None)
    single = _residual_model()
    single.set_weights(weights)
    for name, state in seeds.items():
        single.get_layer(name).seed_generator.state.assign(state)
    report["single"] = np.stack(
        [np.asarray(y) for y in single(x[:4], training=True)[1:]]
    )
    report["single_devices"] = np.array(
        len(single.get_layer("conv").kernel.value.sharding.device_set)
    )
    np.savez(f"{directory}/model_parallel.npz", **report)


if __name__ == "__main__":
    if sys.argv[2] == "model_parallel":
        model_parallel(sys.argv[1])
    else:
        main(sys.argv[1], int(sys.argv[2]))
