"""keras_drop demo: structured dropout at work on scikit-learn's digits.

    python -m keras_drop.demo [--backend jax] [--epochs 30] [--quick]
                              [--output demo_output]

Trains a small residual CNN on scikit-learn's 8x8 digits, upsampled to
32x32, from 300 training images (so the unregularized network overfits),
and tests it on the other 1,497. Each variant is trained from seeds 0, 1
and 2 (the seed draws the split, the initial weights and the noise):

- no regularizer;
- `DropBlock2D` after stages 2 and 3 (the paper regularizes the last two
  groups of a ResNet);
- `Cutout` on the input images;
- `StochasticDepth` on the three residual blocks, with the paper's linear
  decay of the rate (`stochastic_depth_rates`);
- `keras.layers.Dropout(0.2)` after every stage, where it sits before the
  next stage's BatchNormalization: the "variance shift" of Li et al. 2019.

It prints a table of held-out accuracy (mean ± std over the seeds) and the
gap between training and held-out accuracy, both measured at inference,
then the same accuracy after `recalibrate_batchnorm(model, x_train)` and
what `variance_shift(model, x_train)` reports per BN layer. It saves the
learning curves and a gallery of masks, each layer applied to a photograph
that ships with scikit-learn (several draws), to `--output`. Needs the
`demo` extra (scikit-learn, matplotlib); nothing is downloaded.

`benchmarks/batchnorm_shift.py` trains and measures the plain CNN
(`cnn` without residual blocks) with the same `digits` and `run`.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

import keras_drop

TRAIN_SIZE = 300
# Keras' default momentum (0.99) leaves moving statistics far from the
# weights of a run this short; 0.9 is what such a run needs (see SPEC).
MOMENTUM = 0.9
EPOCHS = 20
SEEDS = (0, 1, 2)
FILTERS = (16, 32, 64)

# A factory `(stage, seed) -> layer or None` for the layer that follows a
# stage, and one `(stage, seed) -> layer` that joins `[shortcut, branch]`.
StageLayer = Callable[[int, int], Any]


def digits(seed: int) -> tuple[np.ndarray, ...]:
    """300 training and 1,497 test images, 32x32x1 in [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    # 8x8 -> 32x32 by repeating each pixel 4x4: exact on every backend.
    images = np.repeat(np.repeat(data.images, 4, axis=1), 4, axis=2)
    images = (images / 16.0).astype("float32")[..., None]
    order = np.random.default_rng(seed).permutation(len(images))
    train, test = order[:TRAIN_SIZE], order[TRAIN_SIZE:]
    return images[train], data.target[train], images[test], data.target[test]


def _conv_bn(x: Any, filters: int, name: str) -> Any:
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    return keras.layers.BatchNormalization(momentum=MOMENTUM, name=name)(x)


def cnn(
    noise: StageLayer | None = None,
    seed: int = 0,
    dropout_at: str = "before-pool",
    *,
    join: StageLayer | None = None,
    augment: keras.layers.Layer | None = None,
    filters: Sequence[int] = FILTERS,
) -> keras.Model:
    """Three Conv-BN-ReLU stages (16, 32, 64 filters), each followed by a
    2x2 max pool, then global average pooling and a dense layer.

    Args:
        noise: `None`, or a factory `(stage, seed) -> layer or None` for the
            layer after stage 1, 2, 3 (its seed is `seed + stage`).
        seed: the seed the noise layers derive theirs from.
        dropout_at: `"before-pool"` puts the noise right after the stage
            (Conv-BN-ReLU-noise-MaxPool); `"after-pool"` after its pool.
        join: `None` for the plain CNN; otherwise every stage gets a
            residual block, `relu(join([x, Conv-BN-ReLU-Conv-BN(x)]))`, and
            `join(stage, seed)` makes the layer that adds the branch
            (`keras.layers.Add()`, `StochasticDepth`).
        augment: a layer applied to the input images (`Cutout`), or `None`.
    """
    inputs = keras.Input((32, 32, 1))
    x = inputs if augment is None else augment(inputs)
    for stage, width in enumerate(filters, start=1):
        x = keras.layers.ReLU()(_conv_bn(x, width, f"bn{stage}"))
        layer = None if noise is None else noise(stage, seed + stage)
        if layer is not None and dropout_at == "before-pool":
            x = layer(x)
        x = keras.layers.MaxPooling2D()(x)
        if layer is not None and dropout_at == "after-pool":
            x = layer(x)
        if join is not None:
            branch = _conv_bn(x, width, f"block{stage}_bn")
            x = keras.layers.ReLU()(join(stage, seed + stage)([x, branch]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    logits = model.predict(x, batch_size=len(x), verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def run(
    build: Callable[[int], keras.Model],
    seed: int,
    epochs: int,
    *,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> dict[str, Any]:
    """Trains `build(seed)` on the split `digits(seed)` and measures it.

    Adam 2e-3, batch 32, cross-entropy on the logits. Returns the training
    history (accuracy per epoch; held-out accuracy at about ten epochs),
    accuracy on the training and the test images, and `variance_shift` per
    BN on the training images, as trained (`"before"`, `"shift_before"`)
    and after `recalibrate_batchnorm` on the training images (`"after"`,
    `"shift_after"`; training accuracy is measured as trained).
    """
    keras.utils.set_random_seed(seed)
    x_train, y_train, x_test, y_test = digits(seed)
    model = build(seed)
    model.compile(
        keras.optimizers.Adam(2e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(
        x_train,
        y_train,
        batch_size=32,
        epochs=epochs,
        validation_data=(x_test, y_test),
        # All in one batch: one compiled evaluation step, no ragged batch.
        validation_batch_size=len(x_test),
        # Evaluating the held-out images costs more than an epoch of
        # training on 300: about ten points make the curve.
        validation_freq=max(1, epochs // 10),
        callbacks=list(callbacks),
        verbose=0,
    )
    result = {
        "history": history.history,
        "train": accuracy(model, x_train, y_train),
        "before": accuracy(model, x_test, y_test),
        "shift_before": keras_drop.variance_shift(model, x_train),
    }
    keras_drop.recalibrate_batchnorm(model, x_train)
    result["after"] = accuracy(model, x_test, y_test)
    result["shift_after"] = keras_drop.variance_shift(model, x_train)
    keras.backend.clear_session()
    return result


# The variants: each a function `seed -> model`, all the same residual CNN.
DEPTH_RATES = keras_drop.stochastic_depth_rates(len(FILTERS), 0.3)
DROPBLOCK_SIZES = {2: 5, 3: 3}  # stage -> block size on its 16x16, 8x8 maps


def _add(stage: int, seed: int) -> keras.layers.Layer:
    return keras.layers.Add()


def _dropblock(stage: int, seed: int) -> keras.layers.Layer | None:
    if stage not in DROPBLOCK_SIZES:
        return None
    return keras_drop.DropBlock2D(0.1, DROPBLOCK_SIZES[stage], seed=seed)


def _stochastic_depth(stage: int, seed: int) -> keras.layers.Layer:
    return keras_drop.StochasticDepth(DEPTH_RATES[stage - 1], seed=seed)


def _dropout(stage: int, seed: int) -> keras.layers.Layer:
    return keras.layers.Dropout(0.2, seed=seed)


VARIANTS: dict[str, Callable[[int], keras.Model]] = {
    "no regularizer": lambda seed: cnn(seed=seed, join=_add),
    "DropBlock2D(0.1), stages 2-3": lambda seed: cnn(_dropblock, seed, join=_add),
    "Cutout(12)": lambda seed: cnn(
        seed=seed, join=_add, augment=keras_drop.Cutout(12, seed=seed)
    ),
    "StochasticDepth, linear to 0.3": lambda seed: cnn(
        seed=seed, join=_stochastic_depth
    ),
    "Dropout(0.2) before BN": lambda seed: cnn(_dropout, seed, join=_add),
}


class _Progress(keras.callbacks.Callback):
    """A dot per epoch on the current line."""

    def on_epoch_end(self, epoch, logs=None):
        print(".", end="", flush=True)


def mean_std(values: Sequence[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {std:.3f}"


def shifts(results: Sequence[dict], key: str, sep: str = " / ") -> str:
    """Mean over seeds of the shift of each BN layer, in graph order."""
    return sep.join(
        f"{statistics.mean(r[key][name] for r in results):.2f}"
        for name in results[0][key]
    )


def print_tables(table: dict[str, list[dict]]) -> None:
    print(
        "\n| model | held-out accuracy | train − held-out "
        "| after `recalibrate_batchnorm` |"
    )
    print("|---|---:|---:|---:|")
    for name, results in table.items():
        print(
            f"| {name} | {mean_std([r['before'] for r in results])} "
            f"| {mean_std([r['train'] - r['before'] for r in results])} "
            f"| {mean_std([r['after'] for r in results])} |"
        )
    layers = list(next(iter(table.values()))[0]["shift_before"])
    print(f"\n| variance shift | {' | '.join(layers)} |")
    print(f"|---|{'---:|' * len(layers)}")
    for name, results in table.items():
        print(f"| {name} | {shifts(results, 'shift_before', ' | ')} |")
    largest = max(max(r["shift_after"].values()) for rs in table.values() for r in rs)
    print(
        "\nAccuracy: mean ± std over the seeds, at inference; train − held-out "
        "is the gap between accuracy on the training and the held-out images. "
        "Variance shift: `variance_shift(model, x_train)` per BN in graph "
        "order, moving variance ÷ inference variance, mean over the seeds "
        f"(at most {largest:.3f} after `recalibrate_batchnorm`)."
    )


def learning_curves(path: str, table: dict[str, list[dict]]) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for (name, results), color in zip(table.items(), plt.cm.tab10.colors, strict=False):
        for ax, key in zip(axes, ("accuracy", "val_accuracy"), strict=True):
            curves = np.array([r["history"][key] for r in results])
            every = len(results[0]["history"]["accuracy"]) // curves.shape[1]
            epochs = every * np.arange(1, curves.shape[1] + 1)
            ax.plot(epochs, curves.mean(axis=0), color=color, label=name)
            ax.fill_between(
                epochs,
                curves.min(axis=0),
                curves.max(axis=0),
                color=color,
                alpha=0.15,
                lw=0,
            )
    axes[0].set_title("training accuracy (regularizer on)", fontsize=10)
    axes[1].set_title("held-out accuracy (inference)", fontsize=10)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy: mean, min-max over seeds")
    axes[1].legend(fontsize=8, loc="lower right")
    axes[1].xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    fig.tight_layout()
    _save(fig, path)


def _photo(size: int) -> np.ndarray:
    from sklearn.datasets import load_sample_image

    image = load_sample_image("china.jpg").astype("float32") / 255.0
    resized = keras.ops.image.resize(image[None], (size, size))
    return np.asarray(keras.ops.convert_to_numpy(resized))[0]


def gallery(path: str, size: int, draws: int) -> None:
    """Each layer on `draws` copies of a photograph, unscaled, so a dropped
    unit is black and a kept one is the photograph."""
    import matplotlib.pyplot as plt

    photo = _photo(size)
    batch = np.repeat(photo[None], draws, axis=0)
    block = size // 8
    rows = {
        f"DropBlock2D(0.2, {block}, shared_channels=True)": keras_drop.DropBlock2D(
            0.2, block, shared_channels=True, scale_by_keep=False, seed=0
        ),
        f"DropBlock2D(0.2, {block}): a mask per channel": keras_drop.DropBlock2D(
            0.2, block, scale_by_keep=False, seed=1
        ),
        f"Cutout({size // 3}, n_holes=2)": keras_drop.Cutout(
            size // 3, n_holes=2, seed=2
        ),
        "DropPath(0.5): the whole sample": keras_drop.DropPath(
            0.5, scale_by_keep=False, seed=3
        ),
    }
    fig, axes = plt.subplots(
        len(rows), draws + 1, figsize=(1.6 * (draws + 1), 1.75 * len(rows))
    )
    for ax_row, (title, layer) in zip(axes, rows.items(), strict=True):
        out = keras.ops.convert_to_numpy(layer(batch, training=True))
        for ax, image in zip(ax_row, [photo, *out], strict=True):
            ax.imshow(np.clip(image, 0, 1))
            ax.axis("off")
        ax_row[0].set_title("input", fontsize=8)
        ax_row[1].set_title(title, fontsize=8, loc="left")
    fig.tight_layout()
    _save(fig, path)


def _save(fig: Any, path: str) -> None:
    """Saves a figure as a 256-colour PNG: for photographs a quarter of the
    bytes of a true-colour one, for plots the same picture."""
    import matplotlib.pyplot as plt
    from PIL import Image  # a dependency of matplotlib

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    Image.open(buffer).convert("RGB").quantize(colors=256).save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--backend", choices=("tensorflow", "jax", "torch"))
    parser.add_argument(
        "--epochs", type=int, help=f"training epochs (default {EPOCHS}; quick 1)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="one seed, one epoch: a smoke run"
    )
    parser.add_argument("--output", default="demo_output")
    args = parser.parse_args(argv)
    if args.backend and args.backend != keras.backend.backend():
        # The backend is fixed when keras is imported: start again with it set.
        env = {**os.environ, "KERAS_BACKEND": args.backend}
        command = [sys.executable, "-m", "keras_drop.demo", *(argv or sys.argv[1:])]
        os.execve(sys.executable, command, env)

    import matplotlib

    matplotlib.use("Agg")
    epochs = args.epochs or (1 if args.quick else EPOCHS)
    seeds = SEEDS[:1] if args.quick else SEEDS
    start = time.perf_counter()
    print(
        f"keras_drop {keras_drop.__version__}, Keras {keras.__version__}, "
        f"backend {keras.backend.backend()}, {os.cpu_count()} CPUs"
    )
    print(
        f"digits 32x32, {TRAIN_SIZE} training / {1797 - TRAIN_SIZE} held-out "
        f"images; a residual CNN of 3 stages ({', '.join(map(str, FILTERS))} "
        f"filters); {epochs} epochs, Adam 2e-3, batch 32; seeds {list(seeds)}\n"
    )
    table = {name: [] for name in VARIANTS}
    runs = [(name, seed) for name in VARIANTS for seed in seeds]
    for count, (name, seed) in enumerate(runs, start=1):
        print(f"[{count:>2}/{len(runs)}] {name:<30} seed {seed} ", end="", flush=True)
        result = run(VARIANTS[name], seed, epochs, callbacks=[_Progress()])
        table[name].append(result)
        print(
            f" train {result['train']:.3f}, held-out {result['before']:.3f}, "
            f"recalibrated {result['after']:.3f} ({time.perf_counter() - start:.0f}s)",
            flush=True,
        )
    print_tables(table)
    os.makedirs(args.output, exist_ok=True)
    curves = os.path.join(args.output, "learning_curves.png")
    learning_curves(curves, table)
    masks = os.path.join(args.output, "mask_gallery.png")
    gallery(masks, 128, 3)
    print(f"\nLearning curves: {curves}\nMask gallery: {masks}")
    print(f"Done in {time.perf_counter() - start:.0f}s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
