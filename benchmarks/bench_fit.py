"""Train-step benchmarks: what users pay per `fit` step, on every backend.

Each study trains variants of one residual CNN (32x32x3 inputs, batch 64,
blocks of two 3x3 convolutions with BatchNormalization) with `fit` as users
run it (`jit_compile="auto"`: XLA on JAX and TensorFlow, eager on torch),
times every step with a callback that waits for the step's loss, and prints
the median step time and its ratio to the study's first variant, one
backend per process. Every variant is compiled and warmed up by one epoch
first; then the variants alternate, one epoch each, for three rounds, so
that drifting machine load hits them alike.

Studies:
    skip       StochasticDepth (multiply by zero) vs StochasticDepthBlock
               (the dropped branch is not computed); linear decay to
               final_rate=0.5 over the blocks.
    scheduler  no scheduler vs DropRateScheduler per step (the rate changes
               before every step) vs per epoch; DropBlock2D and
               StochasticDepth in every block.
    overhead   what the regularizers cost in a model: no regularizer vs
               Cutout(8) on the input, DropBlock2D(0.1, 3) closing every
               block of the last two of four stages (stages halve the map:
               32, 16, 8, 4) and StochasticDepth with the linear decay to
               0.2 on every block, as the papers place them.

Besides the step time, each variant reports the peak resident memory of
the process (VmRSS sampled every 5 ms) during its timed epochs; all the
variants' models are built before the first is trained, so each peak
holds the same models and data.

    python benchmarks/bench_fit.py skip                  # every backend
    python benchmarks/bench_fit.py scheduler --backend jax --blocks 4
    python benchmarks/bench_fit.py overhead --blocks 8
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

from _common import BACKENDS, machine, run_worker, step_rows

STUDIES = ("skip", "scheduler", "overhead")


def residual_cnn(blocks: int, channels: int, block_factory, augment=None) -> object:
    import keras

    inputs = keras.Input((32, 32, 3))
    x = inputs if augment is None else augment(inputs)
    x = keras.layers.Conv2D(channels, 3, padding="same")(x)
    for index in range(blocks):
        x = block_factory(index, x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def conv_branch(channels: int, dropblock: bool = False):
    import keras

    import keras_drop

    layers = [
        keras.layers.Conv2D(channels, 3, padding="same", use_bias=False),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Conv2D(channels, 3, padding="same", use_bias=False),
        keras.layers.BatchNormalization(),
    ]
    if dropblock:
        layers.append(keras_drop.DropBlock2D(0.1, 3))
    return keras.Sequential(layers)


def variants(study: str, blocks: int, channels: int) -> dict:
    """name -> (block factory, callbacks factory, input augmentation)."""
    import keras

    import keras_drop

    if study == "overhead":
        per_stage = max(1, blocks // 4)
        overhead_rates = keras_drop.stochastic_depth_rates(blocks, 0.2)

        def staged(regularized):
            def block(index, x):
                stage = index // per_stage
                if index and index % per_stage == 0 and x.shape[1] > 1:
                    x = keras.layers.MaxPooling2D()(x)
                dropblock = regularized and stage >= 2
                branch = conv_branch(channels, dropblock=dropblock)(x)
                if not regularized:
                    return keras.layers.Add()([x, branch])
                rate = overhead_rates[index]
                return keras_drop.StochasticDepth(rate, seed=index)([x, branch])

            return block

        return {
            "no regularizer": (staged(False), list, None),
            "Cutout + DropBlock2D + StochasticDepth": (
                staged(True),
                list,
                keras_drop.Cutout(8, seed=0),
            ),
        }

    rates = keras_drop.stochastic_depth_rates(blocks, 0.5)

    def multiply(index, x):
        branch = conv_branch(channels)(x)
        return keras_drop.StochasticDepth(rates[index], seed=index)([x, branch])

    def skip(index, x):
        block = keras_drop.StochasticDepthBlock(
            conv_branch(channels), rates[index], seed=index
        )
        return block(x)

    def scheduled(index, x):
        branch = conv_branch(channels, dropblock=True)(x)
        return keras_drop.StochasticDepth(rates[index], seed=index)([x, branch])

    if study == "skip":
        return {
            "StochasticDepth (multiply)": (multiply, list, None),
            "StochasticDepthBlock (skip)": (skip, list, None),
        }
    return {
        "no scheduler": (scheduled, list, None),
        "DropRateScheduler per step": (
            scheduled,
            lambda: [keras_drop.DropRateScheduler()],
            None,
        ),
        "DropRateScheduler per epoch": (
            scheduled,
            lambda: [keras_drop.DropRateScheduler(update_freq="epoch")],
            None,
        ),
    }


class PeakRSS:
    """The process's peak resident memory while the context is open,
    sampled from /proc/self/status (Linux) by a thread; 0 elsewhere."""

    def __enter__(self):
        self.peak_mib = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()

    def _sample(self):
        while True:
            try:
                with open("/proc/self/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            rss = int(line.split()[1]) / 1024
                            self.peak_mib = max(self.peak_mib, rss)
            except OSError:
                return
            if self._done.wait(0.005):
                return


def step_timer():
    """A Keras callback that records each train step's seconds in `.times`
    (built when called: the worker imports Keras after choosing the
    backend)."""
    import keras

    class StepTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_train_batch_begin(self, batch, logs=None):
            self._start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # wait for the step itself
            self.times.append(time.perf_counter() - self._start)

    return StepTimes()


def bench_backend(study: str, blocks: int, channels: int, steps: int) -> list[dict]:
    import keras
    import numpy as np

    rounds = 3
    per_round = max(1, -(-steps // rounds))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64 * per_round, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=(64 * per_round,))
    models = {}
    for name, (block, callbacks, augment) in variants(study, blocks, channels).items():
        keras.utils.set_random_seed(0)
        model = residual_cnn(blocks, channels, block, augment)
        model.compile(
            keras.optimizers.SGD(0.01, momentum=0.9),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        models[name] = (model, callbacks, step_timer())
    peaks = dict.fromkeys(models, 0.0)

    def fit(name, timed):
        model, callbacks, timer = models[name]
        extra = [timer] if timed else []
        with PeakRSS() as rss:
            model.fit(x, y, batch_size=64, verbose=0, callbacks=[*callbacks(), *extra])
        if timed:
            peaks[name] = max(peaks[name], rss.peak_mib)

    for name in models:  # compile and warm up
        fit(name, timed=False)
    # Variants alternate in rounds, so drifting machine load hits them alike.
    for _ in range(rounds):
        for name in models:
            fit(name, timed=True)
    times = {name: timer.times for name, (_, _, timer) in models.items()}
    return step_rows(times, peak_rss_mib=peaks)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("study", choices=STUDIES)
    parser.add_argument("--backend", choices=(*BACKENDS, "all"), default="all")
    parser.add_argument("--blocks", type=int, default=16)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--json", help="write the raw rows to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [args.study, "--blocks", str(args.blocks), "--channels"]
    sizes += [str(args.channels), "--steps", str(args.steps)]
    if args.worker:
        rows = bench_backend(args.study, args.blocks, args.channels, args.steps)
        json.dump(rows, sys.stdout)
        return
    backends = BACKENDS if args.backend == "all" else (args.backend,)
    rows = [row for b in backends for row in run_worker(__file__, b, sizes)]
    print(
        f"{time.strftime('%Y-%m-%d')}, {machine()}; {args.blocks} blocks of two "
        f"{args.channels}-channel convs, 32x32x3, batch 64; median of "
        f"{args.steps} or more steps per variant after a warm-up epoch\n"
    )
    print(
        "| backend | variant | step ms | ratio | peak RSS MiB |\n"
        "|---|---|---:|---:|---:|"
    )
    for r in rows:
        print(
            f"| {r['backend']} | {r['variant']} | {r['step_ms']:.1f} "
            f"| {r['ratio']:.2f} | {r['peak_rss_mib']:.0f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
