"""Dropout before BatchNorm on scikit-learn's digits: the collapse and its repair.

A small CNN of three Conv-BN-ReLU stages (16, 32, 64 filters; a 2x2 max
pool after each stage, global average pooling and a dense layer at the end)
learns scikit-learn's 8x8 digits upsampled to 32x32 from 300 training images
and is tested on the other 1,497. Variants:

- "no dropout": the baseline;
- "Dropout(0.2)": `keras.layers.Dropout(0.2)` after each stage, so the BNs
  of stages 2 and 3 follow a dropout;
- "UniformDropout(0.866)" (with `--uout`): Uout with the same noise
  variance as Dropout(0.2), beta^2 / 3 = p / (1 - p).

`--dropout-at before-pool` (the default) puts the dropout right after the
ReLU, before the max pool: Conv-BN-ReLU-Dropout-MaxPool. The max of a window
of noisy units is biased upwards, so the pool turns the noise into a shift
of both the mean and the variance of what the next BN sees. `after-pool`
puts it after the max pool: Conv-BN-ReLU-MaxPool-Dropout.

For each, over several seeds (the seed draws the train/test split, the
initial weights and the noise), the script reports test accuracy as
trained, then after `keras_drop.recalibrate_batchnorm(model, x_train)`,
and `keras_drop.variance_shift(model, x_train)` per BN layer before and
after. Recalibration uses the training images only.

    python benchmarks/batchnorm_shift.py --uout           # 30 epochs, seeds 0 1 2
    python benchmarks/batchnorm_shift.py --uout --dropout-at after-pool
    python benchmarks/batchnorm_shift.py --epochs 100

Run it with the project's virtualenv (`.venv/bin/python`); the backend is
`KERAS_BACKEND`'s. Needs scikit-learn (the `demo` extra); nothing is
downloaded. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import keras
import numpy as np

# The checkout's keras_drop, also where another copy is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras_drop  # noqa: E402

TRAIN_SIZE = 300
# Keras' default momentum (0.99) leaves moving statistics far from the
# weights of a run this short; 0.9 is what such a run needs (see SPEC).
MOMENTUM = 0.9
RATE = 0.2
# Uout's noise variance beta^2 / 3 equals Dropout's p / (1 - p).
BETA = float(np.sqrt(3 * RATE / (1 - RATE)))
VARIANTS = {
    "no dropout": None,
    f"Dropout({RATE})": lambda seed: keras.layers.Dropout(RATE, seed=seed),
    f"UniformDropout({BETA:.3f})": lambda seed: keras_drop.UniformDropout(
        BETA, seed=seed
    ),
}


def digits(seed: int) -> tuple[np.ndarray, ...]:
    """300 training and 1,497 test images, 32x32x1 in [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    # 8x8 -> 32x32 by repeating each pixel 4x4: exact on every backend.
    images = np.repeat(np.repeat(data.images, 4, axis=1), 4, axis=2)
    images = (images / 16.0).astype("float32")[..., None]
    order = np.random.default_rng(seed).permutation(len(images))
    train, test = order[:TRAIN_SIZE], order[TRAIN_SIZE:]
    return images[train], data.target[train], images[test], data.target[test]


def cnn(noise, seed: int, dropout_at: str = "before-pool") -> keras.Model:
    inputs = keras.Input((32, 32, 1))
    x = inputs
    for stage, filters in enumerate((16, 32, 64), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization(momentum=MOMENTUM, name=f"bn{stage}")(x)
        x = keras.layers.ReLU()(x)
        if noise is not None and dropout_at == "before-pool":
            x = noise(seed + stage)(x)
        x = keras.layers.MaxPooling2D()(x)
        if noise is not None and dropout_at == "after-pool":
            x = noise(seed + stage)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    logits = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def run(name: str, seed: int, epochs: int, dropout_at: str) -> dict:
    keras.utils.set_random_seed(seed)
    x_train, y_train, x_test, y_test = digits(seed)
    model = cnn(VARIANTS[name], seed, dropout_at)
    model.compile(
        keras.optimizers.Adam(2e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x_train, y_train, batch_size=32, epochs=epochs, verbose=0)
    result = {
        "before": accuracy(model, x_test, y_test),
        "shift_before": keras_drop.variance_shift(model, x_train),
    }
    keras_drop.recalibrate_batchnorm(model, x_train)
    result["after"] = accuracy(model, x_test, y_test)
    result["shift_after"] = keras_drop.variance_shift(model, x_train)
    return result


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {std:.3f}"


def shifts(results: list[dict], key: str) -> str:
    names = list(results[0][key])
    return " / ".join(
        f"{statistics.mean(r[key][n] for r in results):.2f}" for n in names
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--uout", action="store_true", help="also the UniformDropout variant"
    )
    parser.add_argument(
        "--dropout-at", choices=("before-pool", "after-pool"), default="before-pool"
    )
    args = parser.parse_args(argv)

    names = [n for n in VARIANTS if args.uout or not n.startswith("Uniform")]
    start = time.perf_counter()
    print(
        f"keras_drop {keras_drop.__version__}, Keras {keras.__version__}, "
        f"backend {keras.backend.backend()}, {platform.processor() or 'cpu'}, "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"digits 32x32, {TRAIN_SIZE} training / {1797 - TRAIN_SIZE} test images, "
        f"{args.epochs} epochs, Adam 2e-3, batch 32, BN momentum {MOMENTUM}, "
        f"seeds {args.seeds}; dropout {args.dropout_at}: "
        + (
            "Conv-BN-ReLU-Dropout-MaxPool\n"
            if args.dropout_at == "before-pool"
            else "Conv-BN-ReLU-MaxPool-Dropout\n"
        )
    )
    table = []
    for name in names:
        results = []
        for seed in args.seeds:
            result = run(name, seed, args.epochs, args.dropout_at)
            results.append(result)
            print(
                f"{name:<22} seed {seed}: test accuracy {result['before']:.3f} -> "
                f"{result['after']:.3f} after recalibrate_batchnorm; shift "
                + ", ".join(f"{k} {v:.2f}" for k, v in result["shift_before"].items()),
                flush=True,
            )
        table.append((name, results))

    print(
        "\n| model | test accuracy | after `recalibrate_batchnorm` "
        "| shift bn1 / bn2 / bn3 | after |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, results in table:
        print(
            f"| {name} | {mean_std([r['before'] for r in results])} "
            f"| {mean_std([r['after'] for r in results])} "
            f"| {shifts(results, 'shift_before')} | {shifts(results, 'shift_after')} |"
        )
    print(
        f"\nAccuracy: mean ± std over seeds {args.seeds}; shift: "
        "`variance_shift(model, x_train)`, the median over channels of moving "
        "variance ÷ inference variance, mean over seeds."
    )
    print(f"Done in {time.perf_counter() - start:.0f}s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
