"""MNIST-1D: choosing the demo's drop rates and DropBlock1D's block size.

The DropBlock paper chose its block size and keep probability by sweeping
them on the task (Ghiasi et al. 2018, sec. 4.1). This script does the same
for the demo's MNIST-1D part, on data the demo never tests on: the first
3,000 of MNIST-1D's 4,000 training sequences train, the other 1,000
validate; the 1,000 test sequences are not touched. Each configuration
trains the demo's `cnn1d` with the demo's `run_mnist1d` (Adam 1e-2, batch
100, `MNIST1D_EPOCHS` epochs); the regularizer follows Conv1D layers 1 and
2. The grid:

- `DropBlock1D(rate, block_size)`: rates 0.1, 0.2, 0.3 times block sizes
  1, 3, 5, 7 (the feature maps are 20 and 10 long);
- `Dropout(rate)` and `SpatialDropout1D(rate)`: rates 0.1, 0.2, 0.3;
- no regularizer.

    python benchmarks/mnist1d_sweep.py                  # seed 0
    python benchmarks/mnist1d_sweep.py --seeds 0 1 2

Run it with the project's virtualenv (`.venv/bin/python`); the backend is
`KERAS_BACKEND`'s. Needs the `demo` extra (mnist1d); nothing is
downloaded. Prints a Markdown table, best validation accuracy first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import keras

# The checkout's keras_drop, also where another copy is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import machine  # noqa: E402

import keras_drop  # noqa: E402
from keras_drop.demo import (  # noqa: E402
    MNIST1D_EPOCHS,
    cnn1d,
    mean_std,
    mnist1d,
    run_mnist1d,
)

TRAIN = 3000
RATES = (0.1, 0.2, 0.3)
BLOCK_SIZES = (1, 3, 5, 7)


def grid() -> dict[str, object]:
    """name -> noise factory `(layer, seed) -> layer` (None: no regularizer)."""
    configs: dict[str, object] = {"no regularizer": None}
    for rate in RATES:
        for block_size in BLOCK_SIZES:
            configs[f"DropBlock1D({rate}, {block_size})"] = (
                lambda i, s, r=rate, b=block_size: keras_drop.DropBlock1D(r, b, seed=s)
            )
    for rate in RATES:
        configs[f"Dropout({rate})"] = lambda i, s, r=rate: keras.layers.Dropout(
            r, seed=s
        )
        configs[f"SpatialDropout1D({rate})"] = lambda i, s, r=rate: (
            keras.layers.SpatialDropout1D(r, seed=s)
        )
    return configs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=MNIST1D_EPOCHS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args(argv)

    start = time.perf_counter()
    x_train, y_train, _, _ = mnist1d()  # the test split stays unused
    data = (x_train[:TRAIN], y_train[:TRAIN], x_train[TRAIN:], y_train[TRAIN:])
    print(
        f"keras_drop {keras_drop.__version__}, Keras {keras.__version__}, "
        f"backend {keras.backend.backend()}, {machine()}"
    )
    print(
        f"MNIST-1D: {TRAIN} training / {len(x_train) - TRAIN} validation "
        f"sequences, both from the training split; {args.epochs} epochs, "
        f"seeds {args.seeds}\n",
        flush=True,
    )
    rows = []
    for name, noise in grid().items():
        results = [
            run_mnist1d(lambda seed, n=noise: cnn1d(n, seed), seed, args.epochs, data)
            for seed in args.seeds
        ]
        rows.append((name, results))
        print(
            f"{name:<24} validation "
            + ", ".join(f"{r['test']:.3f}" for r in results)
            + f" ({time.perf_counter() - start:.0f}s)",
            flush=True,
        )

    print("\n| regularizer | validation accuracy | train − validation |")
    print("|---|---:|---:|")
    rows.sort(key=lambda row: -statistics.mean(r["test"] for r in row[1]))
    for name, results in rows:
        print(
            f"| {name} | {mean_std([r['test'] for r in results])} "
            f"| {mean_std([r['train'] - r['test'] for r in results])} |"
        )
    print(f"\nDone in {time.perf_counter() - start:.0f}s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
