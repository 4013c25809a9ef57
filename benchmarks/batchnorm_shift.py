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

The data, the model and the training are `keras_drop.demo`'s (`digits`,
`cnn`, `run`), which also puts this collapse in the demo's table.

Run it with the project's virtualenv (`.venv/bin/python`); the backend is
`KERAS_BACKEND`'s. Needs scikit-learn (the `demo` extra); nothing is
downloaded. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import sys
import time

import keras
import numpy as np

# The checkout's keras_drop, also where another copy is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras_drop  # noqa: E402
from keras_drop.demo import (  # noqa: E402
    MOMENTUM,
    TRAIN_SIZE,
    cnn,
    mean_std,
    run,
    shifts,
)

RATE = 0.2
# Uout's noise variance beta^2 / 3 equals Dropout's p / (1 - p).
BETA = float(np.sqrt(3 * RATE / (1 - RATE)))
VARIANTS = {
    "no dropout": None,
    f"Dropout({RATE})": lambda stage, seed: keras.layers.Dropout(RATE, seed=seed),
    f"UniformDropout({BETA:.3f})": lambda stage, seed: keras_drop.UniformDropout(
        BETA, seed=seed
    ),
}


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
            build = functools.partial(cnn, VARIANTS[name], dropout_at=args.dropout_at)
            result = run(build, seed, args.epochs)
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
