"""Subset drop path against the multiply form, on a ViT-style encoder.

Per-sample drop path as ViT, DeiT, Swin and DINOv2 train it computes every
residual branch for every sample and multiplies the dropped ones by zero
(`StochasticDepth(mode="row")`). `StochasticDepthBlock(mode="subset")` runs
each branch on k = floor((1 - rate) B) samples only. This script trains
both on the same encoder with `fit` as users run it (XLA on TensorFlow,
`jax.jit` on JAX, eager on torch): 8 pre-norm blocks of 64 tokens of width
128 (4-head self-attention, an MLP of width 512), batch 64, rate 0.4 on
every attention and every MLP branch, `rescale_at="training"` in both.

Every step is timed with a callback that waits for the step's loss; each
variant is compiled and warmed up by a short fit first, then the variants
alternate, a few steps each, for several rounds, so that drifting machine
load hits them alike. Printed: the median step time, its ratio to the
multiply form, and memory: the process's peak resident memory (VmRSS
sampled every 5 ms) during the variant's timed fits, and its growth over
the resident memory at the start of each fit (what a step allocates and
frees again: activations and gradients, on CPU), the largest over rounds.

    python benchmarks/bench_subset.py                 # every backend
    python benchmarks/bench_subset.py --backend jax --steps 10
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from _common import BACKENDS, machine, run_worker, step_rows
from bench_fit import PeakRSS, step_timer

TOKENS, WIDTH, HIDDEN, HEADS, BATCH, RATE = 64, 128, 512, 4, 64, 0.4
VARIANTS = (
    "StochasticDepth(mode='row') (multiply)",
    "StochasticDepthBlock(mode='subset')",
)


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def encoder(blocks: int, subset: bool):
    import keras

    import keras_drop

    class SelfAttention(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.norm = keras.layers.LayerNormalization()
            self.attention = keras.layers.MultiHeadAttention(HEADS, WIDTH // HEADS)

        def build(self, input_shape):
            self.norm.build(input_shape)
            self.attention.build(input_shape, input_shape)

        def call(self, inputs):
            hidden = self.norm(inputs)
            return self.attention(hidden, hidden)

    def mlp():
        return keras.Sequential(
            [
                keras.layers.LayerNormalization(),
                keras.layers.Dense(HIDDEN, activation="gelu"),
                keras.layers.Dense(WIDTH),
            ]
        )

    inputs = keras.Input((TOKENS, 48))  # 4x4x3 patches of a 32x32x3 image
    x = keras.layers.Dense(WIDTH)(inputs)
    seed = 0
    for _ in range(blocks):
        for branch in (SelfAttention(), mlp()):
            seed += 1
            if subset:
                x = keras_drop.StochasticDepthBlock(
                    branch, RATE, mode="subset", rescale_at="training", seed=seed
                )(x)
            else:
                x = keras_drop.StochasticDepth(
                    RATE, mode="row", rescale_at="training", seed=seed
                )([x, branch(x)])
    x = keras.layers.LayerNormalization()(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def bench_backend(blocks: int, steps: int, rounds: int) -> list[dict]:
    import keras
    import numpy as np

    per_round = max(1, -(-steps // rounds))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * per_round, TOKENS, 48)).astype("float32")
    y = rng.integers(0, 10, size=(BATCH * per_round,))
    jit_compile = keras.backend.backend() != "torch"
    models = {}
    for index, name in enumerate(VARIANTS):
        keras.utils.set_random_seed(0)
        model = encoder(blocks, subset=index == 1)
        model.compile(
            keras.optimizers.AdamW(1e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit_compile,
        )
        models[name] = (model, step_timer())
    peaks = dict.fromkeys(models, 0.0)
    growth = dict.fromkeys(models, 0.0)

    for model, _ in models.values():  # compile and warm up
        model.fit(x[: 2 * BATCH], y[: 2 * BATCH], batch_size=BATCH, verbose=0)
    for _ in range(rounds):
        for name, (model, timer) in models.items():
            start = _rss_mib()
            with PeakRSS() as rss:
                model.fit(x, y, batch_size=BATCH, verbose=0, callbacks=[timer])
            peaks[name] = max(peaks[name], rss.peak_mib)
            growth[name] = max(growth[name], rss.peak_mib - start)
    times = {name: timer.times for name, (_, timer) in models.items()}
    return step_rows(times, peak_rss_mib=peaks, step_rss_growth_mib=growth)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--backend", choices=(*BACKENDS, "all"), default="all")
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--json", help="write the raw rows to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = ["--blocks", str(args.blocks), "--steps", str(args.steps)]
    sizes += ["--rounds", str(args.rounds)]
    if args.worker:
        rows = bench_backend(args.blocks, args.steps, args.rounds)
        json.dump(rows, sys.stdout)
        return
    backends = BACKENDS if args.backend == "all" else (args.backend,)
    rows = [row for b in backends for row in run_worker(__file__, b, sizes)]
    print(
        f"{time.strftime('%Y-%m-%d')}, {machine()}; ViT-style encoder, "
        f"{args.blocks} blocks, {TOKENS} tokens, width {WIDTH}, MLP {HIDDEN}, "
        f"batch {BATCH}, rate {RATE} on every branch; median of "
        f"{args.steps} or more steps per variant after a warm-up\n"
    )
    print(
        "| backend | variant | step ms | ratio | peak RSS MiB | step RSS growth MiB |\n"
        "|---|---|---:|---:|---:|---:|"
    )
    for r in rows:
        print(
            f"| {r['backend']} | {r['variant']} | {r['step_ms']:.1f} "
            f"| {r['ratio']:.2f} | {r['peak_rss_mib']:.0f} "
            f"| {r['step_rss_growth_mib']:.0f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
