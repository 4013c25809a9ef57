"""keras_drop against timm's native PyTorch DropBlock and DropPath.

On the torch backend, eager (as `fit` runs torch), on one (32, 64, 56, 56)
NCHW float32 tensor in one process: keras_drop's `DropBlock2D(0.1, 7,
data_format="channels_first")` per channel and with `shared_channels=True`
against timm's `drop_block_2d(x, 0.1, 7, couple_channels=False / True)`,
and `DropPath(0.1)` against timm's `drop_path`. keras_drop's DropBlock runs
twice: with its default exact rate (gamma solved for overlapping blocks)
and with `exact_rate=False`, timm's closed-form gamma. Each pair alternates
in rounds after a warm-up; the ratio of medians is keras_drop ÷ timm.

timm is read from its installed package by path: its `layers/drop.py`
imports only torch, but `import timm` imports torchvision, which does not
import beside the project's torch pin. Install it without its
dependencies: `.venv/bin/python -m pip install --no-deps timm`.

    .venv/bin/python benchmarks/bench_timm.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import statistics
import time

os.environ["KERAS_BACKEND"] = "torch"

import keras  # noqa: E402
import torch  # noqa: E402
from _common import machine  # noqa: E402

import keras_drop  # noqa: E402

SHAPE = (32, 64, 56, 56)


def timm_drop():
    """timm's `layers/drop.py`, loaded as a module of its own."""
    spec = importlib.util.find_spec("timm")
    if spec is None:
        raise SystemExit("timm is not installed: pip install --no-deps timm")
    path = os.path.join(spec.submodule_search_locations[0], "layers", "drop.py")
    module_spec = importlib.util.spec_from_file_location("timm_layers_drop", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def cases(timm):
    def layer(cls, *args, **kwargs):
        instance = cls(*args, seed=0, **kwargs)
        return lambda x: instance(x, training=True)

    block = dict(data_format="channels_first")
    return [
        (
            "DropBlock2D(0.1, 7) per channel",
            layer(keras_drop.DropBlock2D, 0.1, 7, **block),
            lambda x: timm.drop_block_2d(x, 0.1, 7, couple_channels=False),
        ),
        (
            "  the same, exact_rate=False",
            layer(keras_drop.DropBlock2D, 0.1, 7, exact_rate=False, **block),
            lambda x: timm.drop_block_2d(x, 0.1, 7, couple_channels=False),
        ),
        (
            "DropBlock2D(0.1, 7) shared_channels=True",
            layer(keras_drop.DropBlock2D, 0.1, 7, shared_channels=True, **block),
            lambda x: timm.drop_block_2d(x, 0.1, 7, couple_channels=True),
        ),
        (
            "  the same, exact_rate=False",
            layer(
                keras_drop.DropBlock2D,
                0.1,
                7,
                shared_channels=True,
                exact_rate=False,
                **block,
            ),
            lambda x: timm.drop_block_2d(x, 0.1, 7, couple_channels=True),
        ),
        (
            "DropPath(0.1)",
            layer(keras_drop.DropPath, 0.1),
            lambda x: timm.drop_path(x, 0.1, training=True),
        ),
    ]


def timed(fn, x) -> float:
    start = time.perf_counter()
    out = fn(x)
    if out.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    timm = timm_drop()
    x = keras.ops.convert_to_tensor(keras.random.normal(SHAPE, seed=0), dtype="float32")
    device = x.device
    print(
        f"{time.strftime('%Y-%m-%d')}, {machine()}, device {device}, torch "
        f"{torch.__version__}, Keras {keras.__version__}, timm "
        f"{importlib.metadata.version('timm')}; {SHAPE} NCHW float32, eager; "
        f"median of {args.repeats} alternating calls after 3 warm-up rounds\n"
    )
    print("| layer | keras_drop ms | timm ms | ratio |\n|---|---:|---:|---:|")
    for name, ours, theirs in cases(timm):
        times = {"ours": [], "timm": []}
        for round_ in range(args.repeats + 3):
            for key, fn in (("ours", ours), ("timm", theirs)):
                elapsed = timed(fn, x)
                if round_ >= 3:
                    times[key].append(elapsed)
        mine, peer = (1e3 * statistics.median(times[k]) for k in ("ours", "timm"))
        print(f"| {name} | {mine:.1f} | {peer:.1f} | {mine / peer:.2f} |", flush=True)


if __name__ == "__main__":
    main()
