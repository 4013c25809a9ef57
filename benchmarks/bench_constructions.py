"""TensorFlow: DropBlock2D(0.1, 7) with each mask construction forced.

TensorFlow's CPU pooling kernels run about 12x apart on hosts of the same
name, and DropBlock's max-pool dilation follows them, so which construction
is fastest under plain `tf.function` depends on the host. This times every
construction, per-channel and shared-channel, against
`keras.layers.Dropout(0.1)` in alternating rounds in one process, and the
two 7-wide float32 max-pools of the dilation alone (the host's pooling
speed). With `--xla` it times the same under XLA, in milliseconds only
(Keras' Dropout takes seconds per call there on CPU).

    python benchmarks/bench_constructions.py [--rounds 15] [--xla]

Run it with the project's virtualenv (`.venv/bin/python`); it sets
KERAS_BACKEND=tensorflow itself. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from _common import machine  # noqa: E402

import keras_drop  # noqa: E402

# DropBlock reads this when a call is traced: which mask construction to use
# (sampling, dilation) instead of the one it picks for the backend and host.
CONSTRUCTION_VARIABLE = "KERAS_DROP_MASK_CONSTRUCTION"

SHAPE = (32, 56, 56, 64)
CONSTRUCTIONS = (
    ("dense", "max_pool"),
    ("sparse", "max_pool"),
    ("dense", "box"),
    ("sparse", "box"),
)


def runners(xla: bool) -> dict:
    """{name: zero-argument callable running one call}; each DropBlock
    traced once with its construction forced."""
    x = keras.random.normal(SHAPE, seed=0)

    def compiled(layer, inputs=x):
        layer.build(inputs.shape)
        fn = tf.function(lambda t: layer(t, training=True), jit_compile=xla)
        return lambda: fn(inputs).numpy()

    runs = {}
    if not xla:
        runs["Dropout(0.1)"] = compiled(keras.layers.Dropout(0.1, seed=0))
    for shared in (False, True):
        for sampling, dilation in CONSTRUCTIONS:
            if shared and sampling == "sparse":
                continue  # shared-channel masks are always drawn densely
            run = compiled(
                keras_drop.DropBlock2D(0.1, 7, shared_channels=shared, seed=0)
            )
            os.environ[CONSTRUCTION_VARIABLE] = f"{sampling},{dilation}"
            try:
                run()  # traced here, with this construction
            finally:
                del os.environ[CONSTRUCTION_VARIABLE]
            kind = "shared" if shared else "per channel"
            runs[f"{kind}, {sampling} + {dilation}"] = run
    pools = keras.random.uniform((32, 62, 62, 64), seed=1)
    pool = tf.function(
        lambda t: keras.ops.max_pool(
            keras.ops.max_pool(t, (7, 1), 1, "valid"), (1, 7), 1, "valid"
        ),
        jit_compile=xla,
    )
    runs["two 7-wide max-pools of (32, 62, 62, 64)"] = lambda: pool(pools).numpy()
    return runs


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--xla", action="store_true")
    args = parser.parse_args()
    # One tf.function per construction: TF's retracing warning is expected.
    tf.get_logger().setLevel("ERROR")

    runs = runners(args.xla)
    for run in runs.values():  # warm-up
        run(), run()
    times = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    base = medians.get("Dropout(0.1)")
    print(
        f"{datetime.date.today()}, {machine()}, Keras {keras.__version__}, "
        f"TensorFlow {tf.__version__}, {'XLA' if args.xla else 'tf.function'}, "
        f"median of {args.rounds} alternating rounds\n"
    )
    print("| case | ms | ratio to Dropout |\n|---|---:|---:|")
    for name, ms in medians.items():
        ratio = f"{ms / base:.2f}" if base else "-"
        print(f"| {name} | {ms:.2f} | {ratio} |")


if __name__ == "__main__":
    main()
