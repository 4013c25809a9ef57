"""keras_drop demo: DropBlock on a photograph that ships with scikit-learn.

    python -m keras_drop.demo [--backend jax] [--output demo_output] [--quick]

Prints how close the realized dropped fraction comes to the requested rate
with the exact gamma and with the DropBlock paper's closed form, and saves a
gallery of masks drawn on the photograph. Needs the `demo` extra
(scikit-learn, matplotlib); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import keras
import numpy as np

import keras_drop


def _photo(size: int) -> np.ndarray:
    from sklearn.datasets import load_sample_image

    image = load_sample_image("china.jpg").astype("float32") / 255.0
    resized = keras.ops.image.resize(image[None], (size, size))
    return np.asarray(keras.ops.convert_to_numpy(resized))[0]


def rate_table(units: int) -> list[tuple]:
    rows = []
    for size, block in ((56, 7), (16, 8)):
        x = keras.ops.ones((max(1, units // (size * size * 16)), size, size, 16))
        for rate in (0.05, 0.1, 0.2, 0.3):
            realized = []
            for exact in (True, False):
                layer = keras_drop.DropBlock2D(rate, block, exact_rate=exact, seed=0)
                y = keras.ops.convert_to_numpy(layer(x, training=True))
                realized.append(float(np.mean(y == 0)))
            rows.append((f"{size}x{size}", block, rate, *realized))
    return rows


def gallery(path: str, size: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    photo = _photo(size)
    batch = np.repeat(photo[None], 3, axis=0)
    settings = [
        ("DropBlock2D(0.1, 24)", dict(rate=0.1, block_size=24)),
        ("DropBlock2D(0.3, 24)", dict(rate=0.3, block_size=24)),
        ("DropBlock2D(0.3, 48)", dict(rate=0.3, block_size=48)),
    ]
    fig, axes = plt.subplots(len(settings), 4, figsize=(10, 2.6 * len(settings)))
    for row, (title, kwargs) in enumerate(settings):
        layer = keras_drop.DropBlock2D(
            **kwargs, shared_channels=True, scale_by_keep=False, seed=row
        )
        out = np.asarray(keras.ops.convert_to_numpy(layer(batch, training=True)))
        axes[row, 0].imshow(photo)
        axes[row, 0].set_title("input", fontsize=9)
        for j in range(3):
            axes[row, j + 1].imshow(np.clip(out[j], 0, 1))
            axes[row, j + 1].set_title(f"{title}, draw {j + 1}", fontsize=9)
        for ax in axes[row]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--backend", choices=("tensorflow", "jax", "torch"))
    parser.add_argument("--output", default="demo_output")
    parser.add_argument("--quick", action="store_true", help="fewer draws")
    args = parser.parse_args(argv)
    if args.backend and args.backend != keras.backend.backend():
        # The backend is fixed when keras is imported: start again with it set.
        env = {**os.environ, "KERAS_BACKEND": args.backend}
        command = [sys.executable, "-m", "keras_drop.demo", *(argv or sys.argv[1:])]
        os.execve(sys.executable, command, env)

    start = time.perf_counter()
    print(
        f"keras_drop {keras_drop.__version__}, Keras {keras.__version__}, "
        f"backend {keras.backend.backend()}"
    )
    units = 1_000_000 if args.quick else 4_000_000
    print(f"\nRealized dropped fraction of DropBlock2D over {units:,} units:")
    print(
        f"{'map':>7} {'block':>5} {'rate':>5} {'exact gamma':>12} {'paper gamma':>12}"
    )
    for size, block, rate, exact, paper in rate_table(units):
        print(
            f"{size:>7} {block:>5} {rate:>5.2f} {exact:>12.4f} {paper:>12.4f}"
            f"   (paper {100 * (paper - rate) / rate:+.0f}%)"
        )

    os.makedirs(args.output, exist_ok=True)
    path = os.path.join(args.output, "dropblock_gallery.png")
    gallery(path, 192)
    print(f"\nMask gallery on scikit-learn's china.jpg: {path}")
    print(
        "The training demo (digits, learning curves) is still to come; see "
        "the README's feature table."
    )
    print(f"Done in {time.perf_counter() - start:.1f}s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
