"""Realized dropped fraction of DropBlock2D with the exact and the paper's
gamma, on the current backend (set KERAS_BACKEND):

    python benchmarks/dropblock_rate.py [--units 4000000]

Prints the README's table: for each map and block size, the fraction of
units a training call sets to zero, averaged over `--units` units.
"""

from __future__ import annotations

import argparse
import datetime

import keras
import numpy as np
from _common import machine

import keras_drop

CASES = ((56, 7), (16, 8))
RATES = (0.05, 0.1, 0.2, 0.3)
CHANNELS = 16


def realized(size: int, block: int, rate: float, exact: bool, units: int) -> float:
    x = keras.ops.ones(
        (max(1, units // (size * size * CHANNELS)), size, size, CHANNELS)
    )
    layer = keras_drop.DropBlock2D(rate, block, exact_rate=exact, seed=0)
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    return float(np.mean(y == 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--units", type=int, default=4_000_000)
    args = parser.parse_args()
    print(
        f"{datetime.date.today()}, {machine()}, Keras {keras.__version__}, "
        f"backend {keras.backend.backend()}, {args.units:,} units per row\n"
    )
    print("| map | block | rate | exact gamma | paper gamma |")
    print("|---|---:|---:|---:|---:|")
    for size, block in CASES:
        for rate in RATES:
            exact = realized(size, block, rate, True, args.units)
            paper = realized(size, block, rate, False, args.units)
            print(
                f"| {size}×{size} | {block} | {rate:.2f} | {exact:.4f} "
                f"| {paper:.4f} ({100 * (paper - rate) / rate:+.0f}%) |"
            )


if __name__ == "__main__":
    main()
