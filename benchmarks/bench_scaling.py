"""How each layer's cost grows with the input: time per training call on
(32, S, S, 64) float32 for S = 14, 28, 56, 112 (16x the units from the
first to the last), compiled as `fit` runs it: `jax.jit` on JAX,
`tf.function` on TensorFlow (without XLA), eager on torch.

Prints milliseconds per call and nanoseconds per unit; a cost linear in
the number of units keeps the second constant from size to size (the
smallest size also carries the fixed cost of a call). Keras' Dropout(0.1)
is a row of its own, for reference.

    python benchmarks/bench_scaling.py                 # every backend
    python benchmarks/bench_scaling.py --backend torch --repeats 11
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from _common import BACKENDS, machine, run_worker
from bench_layers import compiled_runners

SIZES = (14, 28, 56, 112)
BATCH, CHANNELS = 32, 64


def cases():
    import keras

    import keras_drop

    return [
        ("keras Dropout(0.1)", lambda: keras.layers.Dropout(0.1, seed=0)),
        ("DropBlock2D(0.1, 7)", lambda: keras_drop.DropBlock2D(0.1, 7, seed=0)),
        (
            "DropBlock2D(0.1, 7, shared_channels)",
            lambda: keras_drop.DropBlock2D(0.1, 7, shared_channels=True, seed=0),
        ),
        ("Cutout(0.3)", lambda: keras_drop.Cutout(0.3, seed=0)),
        ("DropPath(0.1)", lambda: keras_drop.DropPath(0.1, seed=0)),
        ("UniformDropout(0.1)", lambda: keras_drop.UniformDropout(0.1, seed=0)),
    ]


def bench_backend(backend: str, repeats: int) -> list[dict]:
    import keras

    rows = []
    for name, factory in cases():
        for size in SIZES:
            shape = (BATCH, size, size, CHANNELS)
            x = keras.random.normal(shape, seed=0)
            runners = compiled_runners(factory(), x, backend)
            mode = "tf.function" if backend == "tensorflow" else next(iter(runners))
            run = runners[mode]
            for _ in range(3):
                run()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
            ms = 1e3 * statistics.median(times)
            units = BATCH * size * size * CHANNELS
            rows.append(
                {
                    "backend": backend,
                    "mode": mode,
                    "case": name,
                    "size": size,
                    "ms": ms,
                    "ns_per_unit": 1e6 * ms / units,
                }
            )
            print(
                f"  {backend:<10} {name:<40} {size:>4} {ms:9.2f} ms",
                file=sys.stderr,
                flush=True,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--backend", choices=(*BACKENDS, "all"), default="all")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--json", help="write the raw rows to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        json.dump(bench_backend(args.backend, args.repeats), sys.stdout)
        return
    backends = BACKENDS if args.backend == "all" else (args.backend,)
    rows = [
        row
        for backend in backends
        for row in run_worker(__file__, backend, ["--repeats", str(args.repeats)])
    ]
    print(
        f"{time.strftime('%Y-%m-%d')}, {machine()}, ({BATCH}, S, S, {CHANNELS}) "
        f"float32, median of {args.repeats} calls; ms per call (ns per unit)\n"
    )
    header = " | ".join(f"S = {s}" for s in SIZES)
    print(f"| backend | layer | {header} |")
    print(f"|---|---|{'---:|' * len(SIZES)}")
    table: dict[tuple[str, str], list[str]] = {}  # rows come in order
    for r in rows:
        cell = f"{r['ms']:.2f} ({r['ns_per_unit']:.2f})"
        table.setdefault((r["backend"], r["case"]), []).append(cell)
    for (backend, name), cells in table.items():
        print(f"| {backend} | {name} | {' | '.join(cells)} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
