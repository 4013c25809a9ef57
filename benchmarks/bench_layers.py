"""Time each keras_drop layer against keras.layers.Dropout(0.1), same tensor.

Each layer runs in training mode the way `fit` runs it: `jax.jit` over the
layer's `stateless_call` on JAX, `tf.function` on TensorFlow (with XLA, the
default of `fit(jit_compile="auto")`, and without), eagerly on torch. The
layer and Dropout are timed in alternating rounds in one process (after
three warm-up rounds; five rounds under TF's XLA, where Keras' Dropout takes
over a second per call on CPU); the ratio of medians is what to compare
across machines. A "floor" row times one elementwise multiply, the least any
layer that touches every unit can cost.

    python benchmarks/bench_layers.py                 # every backend, one table
    python benchmarks/bench_layers.py --backend jax   # one backend
    python benchmarks/bench_layers.py --repeats 30 --only DropBlock2D

Run it with the project's virtualenv (`.venv/bin/python`). Prints a Markdown
table; `--json FILE` also writes the raw numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from _common import BACKENDS, machine, run_worker

SHAPE = (32, 56, 56, 64)


def cases():
    """(name, layer factory, input shape): all shapes hold the same units."""
    import keras

    import keras_drop

    class OnBranch(keras.layers.Layer):
        """Calls a [shortcut, residual] layer on [x, x]: the residual add
        is part of the work, as it is of Dropout(x) + x in a network."""

        def __init__(self, layer):
            super().__init__()
            self.layer = layer

        def build(self, input_shape):
            self.layer.build([input_shape, input_shape])

        def call(self, inputs, training=None):
            return self.layer([inputs, inputs], training=training)

    class Scale(keras.layers.Layer):
        """One elementwise multiply: the floor any masking layer pays."""

        def call(self, inputs, training=None):
            return inputs * 2.0

    return [
        ("floor: x * 2 (one elementwise pass)", Scale, SHAPE),
        ("DropBlock2D(0.1, 7)", lambda: keras_drop.DropBlock2D(0.1, 7, seed=0), SHAPE),
        (
            "DropBlock2D(0.1, 7, shared_channels)",
            lambda: keras_drop.DropBlock2D(0.1, 7, shared_channels=True, seed=0),
            SHAPE,
        ),
        (
            "DropBlock2D(0.1, 7, exact_rate=False)",
            lambda: keras_drop.DropBlock2D(0.1, 7, exact_rate=False, seed=0),
            SHAPE,
        ),
        (
            "DropBlock1D(0.1, 7)",
            lambda: keras_drop.DropBlock1D(0.1, 7, seed=0),
            (32, 56 * 56, 64),
        ),
        (
            "DropBlock3D(0.1, 3)",
            lambda: keras_drop.DropBlock3D(0.1, 3, seed=0),
            (32, 14, 16, 14, 64),
        ),
        ("Cutout(16)", lambda: keras_drop.Cutout(16, seed=0), SHAPE),
        (
            "Cutout(8, n_holes=4)",
            lambda: keras_drop.Cutout(8, n_holes=4, seed=0),
            SHAPE,
        ),
        ("DropPath(0.1)", lambda: keras_drop.DropPath(0.1, seed=0), SHAPE),
        (
            "StochasticDepth(0.1) [x, branch]",
            lambda: OnBranch(keras_drop.StochasticDepth(0.1, seed=0)),
            SHAPE,
        ),
        (
            "StochasticDepth(0.1, row) [x, branch]",
            lambda: OnBranch(keras_drop.StochasticDepth(0.1, mode="row", seed=0)),
            SHAPE,
        ),
        ("UniformDropout(0.1)", lambda: keras_drop.UniformDropout(0.1, seed=0), SHAPE),
    ]


def compiled_runners(layer, x, backend):
    """{mode: zero-argument callable running one training call, synced}."""
    import keras

    layer.build(x.shape)
    if backend == "jax":
        import jax

        @jax.jit
        def step(trainable, non_trainable, inputs):
            return layer.stateless_call(trainable, non_trainable, inputs, training=True)

        state = {"nt": [v.value for v in layer.non_trainable_variables]}
        trainable = [v.value for v in layer.trainable_variables]

        def run():
            out, state["nt"] = step(trainable, state["nt"], x)
            out.block_until_ready()

        return {"jax.jit": run}
    if backend == "tensorflow":
        import tensorflow as tf

        runners = {}
        for mode, jit in (("tf.function+XLA", True), ("tf.function", False)):
            fn = tf.function(
                lambda inputs: layer(inputs, training=True), jit_compile=jit
            )

            def run(fn=fn):
                fn(x).numpy  # noqa: B018  (CPU execution is synchronous)
                if tf.config.list_physical_devices("GPU"):
                    tf.experimental.sync_devices()

            runners[mode] = run
        return runners
    import torch

    def run():
        with torch.no_grad():
            layer(x, training=True)
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    del keras
    return {"eager": run}


def bench_backend(backend, repeats, only):
    import keras

    from keras_drop import __version__

    rows = []
    for name, factory, shape in cases():
        if only and only not in name:
            continue
        x = keras.random.normal(shape, seed=0)
        layer_runs = compiled_runners(factory(), x, backend)
        dropout_runs = compiled_runners(keras.layers.Dropout(0.1, seed=0), x, backend)
        for mode, run in layer_runs.items():
            base = dropout_runs[mode]
            for _ in range(3):  # warm-up: tracing, compilation, caches
                run(), base()
            # Keras' Dropout under TF's XLA takes ~1.7 s per call on CPU (its
            # RNG lowers badly); five rounds are enough to show that.
            rounds = min(repeats, 5) if mode == "tf.function+XLA" else repeats
            layer_t, base_t = [], []
            for _ in range(rounds):
                t0 = time.perf_counter()
                base()
                t1 = time.perf_counter()
                run()
                t2 = time.perf_counter()
                base_t.append(t1 - t0)
                layer_t.append(t2 - t1)
            layer_ms = statistics.median(layer_t) * 1e3
            base_ms = statistics.median(base_t) * 1e3
            rows.append(
                {
                    "backend": backend,
                    "mode": mode,
                    "case": name,
                    "shape": list(shape),
                    "layer_ms": layer_ms,
                    "dropout_ms": base_ms,
                    "ratio": layer_ms / base_ms,
                    "repeats": rounds,
                    "keras": keras.__version__,
                    "keras_drop": __version__,
                }
            )
            print(
                f"  {backend:<10} {mode:<16} {name:<40} {layer_ms:8.2f} ms "
                f"Dropout {base_ms:8.2f} ms  ratio {layer_ms / base_ms:5.2f}",
                file=sys.stderr,
                flush=True,
            )
    return rows


def table(rows):
    lines = [
        "| backend | compiled as | layer | layer ms | Dropout ms | ratio |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['mode']} | {r['case']} | {r['layer_ms']:.2f} "
            f"| {r['dropout_ms']:.2f} | {r['ratio']:.2f} |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--backend", choices=(*BACKENDS, "all"), default="all")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--only", default="", help="substring of the case names")
    parser.add_argument("--json", help="write the raw rows to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        json.dump(bench_backend(args.backend, args.repeats, args.only), sys.stdout)
        return
    backends = BACKENDS if args.backend == "all" else (args.backend,)
    rows = []
    for backend in backends:
        rows.extend(
            run_worker(
                __file__,
                backend,
                ["--repeats", str(args.repeats), "--only", args.only],
            )
        )
    print(
        f"{time.strftime('%Y-%m-%d')}, {machine()}, input {SHAPE} float32, "
        f"median of {args.repeats} runs\n"
    )
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
