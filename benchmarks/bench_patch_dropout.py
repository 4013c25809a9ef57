"""PatchDropout's train step against the full step and against its limit.

A ViT-Tiny-shaped model: 196 patches of 16x16x3 embedded to width 192
(plus a class token and a learned position embedding), 4 pre-norm encoder
blocks (3-head self-attention, an MLP of width 768), the class token
pooled into a 10-way head; batch 32. Three variants, trained with `fit` as
users run it (XLA on TensorFlow, `jax.jit` on JAX, eager on torch):

- full: the encoder on all 197 tokens;
- `PatchDropout(0.5)` after the embedding: the encoder on 1 + 98 tokens,
  a random 98 of the 196 patches per sample;
- the limit: the same model whose embedded tokens are sliced to their
  first 1 + 98 (no random choice, no gather): what keeping half the
  tokens can save at best.

Every step is timed with a callback that waits for the step's loss; each
variant is compiled and warmed up by a short fit first, then the variants
alternate, a few steps each, for several rounds, so that drifting machine
load hits them alike. Printed: the median step time and its ratio to the
full step and to the limit.

    python benchmarks/bench_patch_dropout.py                 # every backend
    python benchmarks/bench_patch_dropout.py --backend jax --steps 10
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from _common import BACKENDS, machine, run_worker, step_rows
from bench_fit import step_timer

PATCHES, PATCH, WIDTH, HEADS, HIDDEN, BATCH, RATE = 196, 768, 192, 3, 768, 32, 0.5
KEPT = 98  # max(1, floor((1 - RATE) * PATCHES))
VARIANTS = ("full (197 tokens)", "PatchDropout(0.5)", "limit (99 tokens, sliced)")


def vit(blocks: int, variant: str):
    import keras

    import keras_drop

    class Embedding(keras.layers.Layer):
        """Class token first, then the patches; position embedding added."""

        def build(self, input_shape):
            self.cls = self.add_weight(shape=(1, 1, WIDTH), name="cls")
            self.position = self.add_weight(
                shape=(1, PATCHES + 1, WIDTH), name="position"
            )

        def call(self, patches):
            batch = keras.ops.shape(patches)[0]
            cls = keras.ops.broadcast_to(self.cls, (batch, 1, WIDTH))
            return keras.ops.concatenate([cls, patches], axis=1) + self.position

    def block(x):
        h = keras.layers.LayerNormalization()(x)
        x = x + keras.layers.MultiHeadAttention(HEADS, WIDTH // HEADS)(h, h)
        h = keras.layers.LayerNormalization()(x)
        h = keras.layers.Dense(HIDDEN, activation="gelu")(h)
        return x + keras.layers.Dense(WIDTH)(h)

    inputs = keras.Input((PATCHES, PATCH))
    x = Embedding()(keras.layers.Dense(WIDTH)(inputs))
    if variant == VARIANTS[1]:
        x = keras_drop.PatchDropout(RATE, seed=0)(x)
    elif variant == VARIANTS[2]:
        x = x[:, : 1 + KEPT]
    for _ in range(blocks):
        x = block(x)
    x = keras.layers.LayerNormalization()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x[:, 0]))


def bench_backend(blocks: int, steps: int, rounds: int) -> list[dict]:
    import keras
    import numpy as np

    per_round = max(1, -(-steps // rounds))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * per_round, PATCHES, PATCH)).astype("float32")
    y = rng.integers(0, 10, size=(BATCH * per_round,))
    jit_compile = keras.backend.backend() != "torch"
    models = {}
    for name in VARIANTS:
        keras.utils.set_random_seed(0)
        model = vit(blocks, name)
        model.compile(
            keras.optimizers.AdamW(1e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit_compile,
        )
        models[name] = (model, step_timer())
    for model, _ in models.values():  # compile and warm up
        model.fit(x[: 2 * BATCH], y[: 2 * BATCH], batch_size=BATCH, verbose=0)
    for _ in range(rounds):
        for model, timer in models.values():
            model.fit(x, y, batch_size=BATCH, verbose=0, callbacks=[timer])
    rows = step_rows({name: timer.times for name, (_, timer) in models.items()})
    limit = rows[2]["step_ms"]
    for row in rows:
        row["to_limit"] = row["step_ms"] / limit
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--backend", choices=(*BACKENDS, "all"), default="all")
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12, help="timed steps")
    parser.add_argument("--rounds", type=int, default=4)
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
        f"{time.strftime('%Y-%m-%d')}, {machine()}; ViT-Tiny-shaped, "
        f"{args.blocks} blocks, {PATCHES} patches + class token, width {WIDTH}, "
        f"{HEADS} heads, MLP {HIDDEN}, batch {BATCH}; median of {args.steps} "
        "or more steps per variant after a warm-up\n"
    )
    print(
        "| backend | variant | step ms | ratio to full | ratio to limit |\n"
        "|---|---|---:|---:|---:|"
    )
    for r in rows:
        print(
            f"| {r['backend']} | {r['variant']} | {r['step_ms']:.1f} "
            f"| {r['ratio']:.2f} | {r['to_limit']:.2f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
