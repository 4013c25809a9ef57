"""Multi-device training on one CPU: JAX `keras.distribution.DataParallel`
over two host devices, TensorFlow `tf.distribute.MirroredStrategy` over two
logical CPUs.

Each backend's run happens in a fresh process (this module run as a
script), so that the device setup does not leak into other tests. It builds
one model holding every keras_drop layer, each on an input of ones and in
training mode (also inside `predict`), fits it under the strategy, then
predicts global batches whose two halves are identical: each replica (or
shard) gets the same samples, so equal halves mean the replicas drew the
same mask.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import ops

import keras_drop
from tests import every_layer
from tests.helpers import run_in_fresh_process

BACKEND = keras.backend.backend()

# Per sample: a mask per sample (or per unit), so per replica too.
PER_SAMPLE = [
    "DropBlock1D",
    "DropBlock2D",
    "DropBlock2D(shared_channels)",
    "DropBlock3D",
    "Cutout",
    "DropPath",
    "StochasticDepth(row)",
    "UniformDropout",
    "JoinDropPath",
    # k samples get the branch: k of each replica's batch (MirroredStrategy),
    # k of the global batch (DataParallel).
    "StochasticDepthBlock(subset)",
    "PatchDropout",
]
# One draw per batch: a kernel mask, or a branch kept or skipped.
PER_BATCH = [
    "StochasticDepth(batch)",
    "StochasticDepthBlock",
    "LayerDrop",
    "DropConnectDense",
]
PER_REPLICA = 4  # samples per replica in a step
STEPS = 16  # global batches compared


def probes() -> dict:
    """name -> (layer, one replica's batch): every layer, with inputs of
    ones, so that its output shows its mask."""
    images = np.ones((PER_REPLICA, 8, 8, 2), "float32")
    vectors = np.ones((PER_REPLICA, 3), "float32")
    return {
        "DropBlock1D": (
            keras_drop.DropBlock1D(0.3, 3, seed=1),
            np.ones((PER_REPLICA, 16, 2), "float32"),
        ),
        "DropBlock2D": (keras_drop.DropBlock2D(0.3, 3, seed=2), images),
        "DropBlock2D(shared_channels)": (
            keras_drop.DropBlock2D(0.3, 3, shared_channels=True, seed=3),
            images,
        ),
        "DropBlock3D": (
            keras_drop.DropBlock3D(0.3, 2, seed=4),
            np.ones((PER_REPLICA, 4, 4, 4, 2), "float32"),
        ),
        "Cutout": (keras_drop.Cutout(3, seed=5), images),
        "DropPath": (keras_drop.DropPath(0.5, seed=6), vectors),
        "StochasticDepth(row)": (
            OnResidual(keras_drop.StochasticDepth(0.5, mode="row", seed=7)),
            vectors,
        ),
        "UniformDropout": (keras_drop.UniformDropout(0.5, seed=8), vectors),
        "StochasticDepth(batch)": (
            OnResidual(keras_drop.StochasticDepth(0.5, seed=9)),
            vectors,
        ),
        "StochasticDepthBlock": (
            keras_drop.StochasticDepthBlock(every_layer.conv_bn(2), 0.5, seed=10),
            images,
        ),
        "StochasticDepthBlock(subset)": (
            keras_drop.StochasticDepthBlock(
                every_layer.conv_bn(2), 0.5, mode="subset", seed=12
            ),
            images,
        ),
        # Numbered tokens: the output shows which were kept.
        "PatchDropout": (
            KeptTokens(keras_drop.PatchDropout(0.5, seed=13)),
            np.broadcast_to(
                np.arange(1.0, 10.0, dtype="float32")[None, :, None],
                (PER_REPLICA, 9, 2),
            ).copy(),
        ),
        "LayerDrop": (
            keras_drop.LayerDrop(every_layer.conv_bn(2), 0.5, seed=13),
            images,
        ),
        "JoinDropPath": (Joined(keras_drop.JoinDropPath(0.5, seed=14)), vectors),
        # Rows of the identity: the output is the dropped kernel itself.
        "DropConnectDense": (
            keras_drop.DropConnectDense(
                PER_REPLICA, 0.5, kernel_initializer="ones", use_bias=False, seed=11
            ),
            np.eye(PER_REPLICA, dtype="float32"),
        ),
    }


class OnResidual(keras.layers.Layer):
    """`StochasticDepth([0, x])`: b * x, the draw itself."""

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer

    def call(self, inputs, training=None):
        return self.layer([ops.zeros_like(inputs), inputs], training=training)


class KeptTokens(keras.layers.Layer):
    """PatchDropout's kept tokens padded with zeros to the input's token
    count, so that the probe's output has the shape of its input."""

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer

    def call(self, inputs, training=None):
        kept = self.layer(inputs, training=training)
        missing = ops.shape(inputs)[1] - ops.shape(kept)[1]
        return ops.pad(kept, [(0, 0), (0, missing), (0, 0)])

    def compute_output_shape(self, input_shape):
        return input_shape


class Joined(keras.layers.Layer):
    """`JoinDropPath([x, 3 x])`: x, 2 x or 3 x shows which inputs it kept."""

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer

    def call(self, inputs, training=None):
        return self.layer([inputs, 3.0 * inputs], training=training)


class Scale(keras.layers.Layer):
    """x * w, a trainable scalar: every probe has a weight to train."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(), initializer="ones")

    def call(self, inputs):
        return inputs * self.w


class TrainingModeProbes(keras.Model):
    """Every probe layer on its own input, in training mode also inside
    `predict`'s step."""

    def __init__(self, layers, **kwargs):
        super().__init__(**kwargs)
        self.probes = list(layers)
        self.scales = [Scale() for _ in self.probes]

    def call(self, inputs):
        return [
            layer(scale(x), training=True)
            for layer, scale, x in zip(self.probes, self.scales, inputs, strict=True)
        ]


# --------------------------------------------------------------------------
# The fresh process.


def _setup() -> dict:
    """Two devices and a strategy scope; what the run sees of them."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        return {"scope": strategy.scope, "replicas": strategy.num_replicas_in_sync}
    devices = keras.distribution.list_devices("cpu")
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices)
    )
    return {"scope": contextlib.nullcontext, "replicas": len(devices)}


def _devices_holding(variable) -> int:
    """On how many devices the variable lives (its replicas, or shards)."""
    if BACKEND == "tensorflow":
        return len(getattr(variable.value, "values", [variable.value]))
    return len(variable.value.sharding.device_set)


def _in_sync(variable) -> bool:
    if BACKEND == "tensorflow":
        copies = [np.asarray(v) for v in variable.value.values]
    else:
        copies = [np.asarray(s.data) for s in variable.value.addressable_shards]
    return all(np.array_equal(copies[0], copy) for copy in copies[1:])


def _run_probes(scope, replicas: int) -> dict:
    """`fit` on every layer, then `STEPS` prediction steps whose global
    batches are `replicas` copies of one replica's batch."""
    names, batches = [], []
    with scope():
        layers = []
        for name, (layer, batch) in probes().items():
            names.append(name)
            layers.append(layer)
            batches.append(batch)
        model = TrainingModeProbes(layers)
        # Built symbolically (no eager training step), to read its weights.
        model([keras.Input(batch.shape[1:]) for batch in batches])
        model.compile(keras.optimizers.SGD(0.01), "mse")
    global_batch = replicas * PER_REPLICA
    initial = [np.asarray(w) for w in model.trainable_weights]
    x = [np.concatenate([batch] * replicas * STEPS) for batch in batches]
    history = model.fit(
        [a[: 2 * global_batch] for a in x],
        [np.zeros_like(a[: 2 * global_batch]) for a in x],
        batch_size=global_batch,
        verbose=0,
    )
    weights = model.trainable_weights
    report = {
        "fit": {
            "loss": history.history["loss"],
            "weights": len(weights),
            "trained": sum(
                not np.array_equal(np.asarray(w), before)
                for w, before in zip(weights, initial, strict=True)
            ),
            "devices": sorted({_devices_holding(w) for w in weights}),
            "in_sync": all(_in_sync(w) for w in weights),
        }
    }
    outputs = model.predict(x, batch_size=global_batch, verbose=0)
    masks = {}
    for name, y in zip(names, outputs, strict=True):
        y = np.asarray(y).reshape(STEPS, replicas, -1)  # replicas == 2
        masks[name] = {
            "same_across_replicas": bool(np.array_equal(y[:, 0], y[:, 1])),
            "same_across_steps": bool(all(np.array_equal(y[0], s) for s in y[1:])),
        }
    report["masks"] = masks
    return report


def _run(path: Path) -> None:
    setup = _setup()
    report = {"backend": BACKEND, "replicas": setup["replicas"]}
    report.update(_run_probes(setup["scope"], setup["replicas"]))
    path.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    _run(Path(sys.argv[1]))


# --------------------------------------------------------------------------
# The tests.

pytestmark = pytest.mark.backends(
    "tensorflow",
    "jax",
    reason="Keras offers multi-device training on TensorFlow "
    "(tf.distribute) and JAX (keras.distribution); its PyTorch backend has "
    "neither",
)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    path = tmp_path_factory.mktemp("distributed") / "report.json"
    env = {}
    if BACKEND == "jax":  # two host devices, in that process only
        flags = os.environ.get("XLA_FLAGS", "")
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=2"
    run_in_fresh_process(["-m", "tests.test_distributed", str(path)], env=env)
    return json.loads(path.read_text())


def test_runs_on_two_devices_and_fit_trains_every_layer(report):
    assert report["replicas"] == 2
    fit = report["fit"]
    assert np.all(np.isfinite(fit["loss"]))
    assert fit["trained"] == fit["weights"] > len(PER_SAMPLE + PER_BATCH)
    assert fit["devices"] == [2]  # every weight on both devices
    assert fit["in_sync"]  # and equal on both after the steps


@pytest.mark.parametrize("name", PER_SAMPLE)
def test_replicas_draw_independent_per_sample_masks(report, name):
    # Both replicas (shards) were fed the same samples in every step.
    masks = report["masks"][name]
    assert not masks["same_across_replicas"]
    assert not masks["same_across_steps"]


@pytest.mark.backends(
    "tensorflow",
    reason="MirroredStrategy runs one step per replica; a JAX DataParallel "
    "step is one program over the global batch (see the next test)",
)
@pytest.mark.parametrize("name", PER_BATCH)
def test_mirrored_replicas_draw_independent_batch_level_draws(report, name):
    # Each replica's batch is a batch of its own: its branch is kept or
    # skipped, its kernel dropped, independently of the other replica's.
    masks = report["masks"][name]
    assert not masks["same_across_replicas"]
    assert not masks["same_across_steps"]


@pytest.mark.backends(
    "jax", reason="DataParallel is the JAX backend's; MirroredStrategy is tested above"
)
@pytest.mark.parametrize("name", PER_BATCH)
def test_data_parallel_batch_level_draws_are_one_per_global_batch(report, name):
    # The jitted step is the single-device step over the global batch, so a
    # draw made once per batch is made once for the global batch and shared
    # by its shards, as on one device; it still changes from step to step.
    masks = report["masks"][name]
    assert masks["same_across_replicas"]
    assert not masks["same_across_steps"]
